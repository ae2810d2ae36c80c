//! `alexc train`: the paper's training recipe from the command line, a thin
//! layer over [`alexc_train::Trainer`].
//!
//! This file turns flags into a data pipeline and a [`TrainConfig`], draws
//! the progress and the one line per epoch, and connects Ctrl-C to the
//! trainer's stop flag (the first finishes the step and writes a checkpoint,
//! a second one quits at once).
//!
//! **Resuming.** Everything that decides what the run computes — data,
//! limits, preprocessing, batch, learning rate, schedule, SGD
//! hyper-parameters, seed — is recorded in the checkpoint (as
//! [`RunOptions`], in the configuration's notes), and `--resume RUN_DIR`
//! takes it from there; such flags given again are ignored with a warning.
//! Only `--epochs`, `--steps`, `--backend` and `--workers` may change.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use alexc_data::{
    estimate_color_stats, Dataset, IdxDataset, ImageFolder, Resize, Split, Transform,
    FASHION_MNIST_CLASSES, FASHION_MNIST_DIR,
};
use alexc_train::checkpoint::{self, Checkpoint};
use alexc_train::{Control, Outcome, Schedule, Subset, TrainConfig, Trainer};
use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::{Backend, CliError};

/// Learning-rate schedules on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ScheduleKind {
    /// The paper's: divide by 10 when the validation error stops improving.
    Plateau,
    /// Multiply by `--gamma` every `--step-every` epochs.
    Step,
    /// The same rate throughout.
    Constant,
}

/// How images are brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ResizeMode {
    /// `none` when the stored images already have the model's size (IDX
    /// data at its own resolution), `paper` otherwise.
    Auto,
    /// No resizing: random (training) or centre (evaluation) crops of the
    /// stored image.
    None,
    /// Resize to exactly the model's input size.
    Exact,
    /// The paper's: shorter side to 256/224 of the input size, then a
    /// random 224-style crop (centre crop for evaluation).
    Paper,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model file (RON), e.g. models/alexnet-small.ron.
    pub model: PathBuf,
    /// The data: a folder of IDX files (train-*/t10k-*, e.g. MNIST) or an
    /// image folder with train/<class>/ and val/<class>/. Default:
    /// Fashion-MNIST in /usr/share/datasets/fashion-mnist.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train until this many epochs are complete.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// Stop after this many steps in all (a smoke run); writes a checkpoint.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Images per step [default: 64].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// The initial learning rate [default: 0.01].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum [default: the model file's `training` section, 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay [default: the model file's `training` section, 5e-4].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// The learning-rate schedule [default: plateau].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Plateau: epochs without improvement tolerated before dividing by 10
    /// [default: 1].
    #[arg(long)]
    pub patience: Option<u64>,
    /// Step schedule: epochs between reductions [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub step_every: Option<u64>,
    /// Step schedule: the factor of each reduction [default: 0.1].
    #[arg(long)]
    pub gamma: Option<f32>,
    /// Seeds initialization, shuffling, augmentation and dropout [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The run directory: checkpoints, metrics, plots, filters
    /// [default: runs/<model name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last.safetensors.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Validate on the first N validation images only (0: no validation).
    #[arg(long, value_name = "N")]
    pub limit_val: Option<usize>,
    /// How images are resized to the model's input [default: auto]. Gray
    /// images fed to a 3-channel model are replicated to RGB.
    #[arg(long, value_enum)]
    pub resize: Option<ResizeMode>,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// The paper's PCA colour augmentation, estimated from the training set
    /// (3-channel models).
    #[arg(long)]
    pub pca: bool,
    /// Dropout masks of ones (for debugging).
    #[arg(long)]
    pub no_dropout: bool,
    /// Background threads decoding training images.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The code generator.
    #[arg(long, value_enum, default_value_t = Backend::DEFAULT)]
    pub backend: Backend,
}

/// What decides a run's results, recorded in its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    pub data: PathBuf,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    pub patience: u64,
    pub step_every: u64,
    pub gamma: f32,
    pub seed: u64,
    pub limit_train: Option<usize>,
    pub limit_val: Option<usize>,
    pub resize: ResizeMode,
    pub flip: bool,
    pub pca: bool,
    pub dropout: bool,
}

/// The key of [`RunOptions`] in [`TrainConfig::notes`].
const NOTES_KEY: &str = "alexc-train-cli";

impl RunOptions {
    /// The options of a new run: flags, else defaults (SGD from the model).
    fn from_args(args: &TrainArgs, model: &alexc_frontend::Model) -> Self {
        RunOptions {
            data: args
                .data
                .clone()
                .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR)),
            batch: args.batch.map_or(64, |b| b as usize),
            lr: args.lr.unwrap_or(0.01),
            momentum: args.momentum.unwrap_or(model.spec.training.momentum),
            weight_decay: args
                .weight_decay
                .unwrap_or(model.spec.training.weight_decay),
            schedule: args.schedule.unwrap_or(ScheduleKind::Plateau),
            patience: args.patience.unwrap_or(1),
            step_every: args.step_every.unwrap_or(3),
            gamma: args.gamma.unwrap_or(0.1),
            seed: args.seed.unwrap_or(0),
            limit_train: args.limit_train,
            limit_val: args.limit_val,
            resize: args.resize.unwrap_or(ResizeMode::Auto),
            flip: !args.no_flip,
            pca: args.pca,
            dropout: !args.no_dropout,
        }
    }

    /// Warns about flags that a resumed run ignores because they differ
    /// from what the run recorded.
    fn warn_ignored(&self, args: &TrainArgs) {
        let mut ignored = Vec::new();
        let mut check = |flag: &str, given: bool, differs: bool| {
            if given && differs {
                ignored.push(flag.to_string());
            }
        };
        check(
            "--data",
            args.data.is_some(),
            args.data.as_ref() != Some(&self.data),
        );
        check(
            "--batch",
            args.batch.is_some(),
            args.batch.map(|b| b as usize) != Some(self.batch),
        );
        check("--lr", args.lr.is_some(), args.lr != Some(self.lr));
        check(
            "--momentum",
            args.momentum.is_some(),
            args.momentum != Some(self.momentum),
        );
        check(
            "--weight-decay",
            args.weight_decay.is_some(),
            args.weight_decay != Some(self.weight_decay),
        );
        check(
            "--schedule",
            args.schedule.is_some(),
            args.schedule != Some(self.schedule),
        );
        check(
            "--patience",
            args.patience.is_some(),
            args.patience != Some(self.patience),
        );
        check("--seed", args.seed.is_some(), args.seed != Some(self.seed));
        check(
            "--limit-train",
            args.limit_train.is_some(),
            args.limit_train != self.limit_train,
        );
        check(
            "--limit-val",
            args.limit_val.is_some(),
            args.limit_val != self.limit_val,
        );
        check(
            "--resize",
            args.resize.is_some(),
            args.resize != Some(self.resize),
        );
        check("--no-flip", args.no_flip, self.flip);
        check("--pca", args.pca, !self.pca);
        check("--no-dropout", args.no_dropout, self.dropout);
        if !ignored.is_empty() {
            eprintln!(
                "warning: resuming with the run's recorded settings; ignoring {}",
                ignored.join(", ")
            );
        }
    }

    fn schedule(&self) -> Schedule {
        match self.schedule {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Step => Schedule::Step {
                every: self.step_every,
                gamma: self.gamma,
            },
            ScheduleKind::Plateau => Schedule::plateau(self.patience, self.lr),
        }
    }
}

/// The model's image input as the data pipeline needs it.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl InputSpec {
    /// From the model's first input (`[N, C, H, W]`, with `mean`/`std`).
    pub fn of(model: &alexc_frontend::Model) -> anyhow::Result<Self> {
        let input = model
            .spec
            .inputs
            .first()
            .ok_or_else(|| anyhow!("model `{}` has no inputs", model.spec.name))?;
        let name = &input.name;
        let id = model
            .graph
            .find(name)
            .ok_or_else(|| anyhow!("model input `{name}` is not in the graph"))?;
        let dims = model.graph[id].outputs[0].shape.dims().to_vec();
        let &[_, channels, height, width] = dims.as_slice() else {
            bail!("model input `{name}` has shape {dims:?}; training needs images [N, C, H, W]");
        };
        Ok(InputSpec {
            channels,
            height,
            width,
            mean: input.mean.iter().map(|&v| v as f32).collect(),
            std: input.std.iter().map(|&v| v as f32).collect(),
        })
    }

    /// The transform for `split` of stored images `native` (height, width;
    /// `None` for image folders, whose sizes vary).
    pub fn transform(
        &self,
        split: Split,
        native: Option<(usize, usize)>,
        resize: ResizeMode,
        flip: bool,
    ) -> Transform {
        let (c, h, w) = (self.channels, self.height, self.width);
        let base = match split {
            Split::Train => Transform::train(c, h, w).with_flip(flip),
            Split::Val => Transform::eval(c, h, w),
        };
        let resize = match resize {
            ResizeMode::Auto if native == Some((h, w)) => Resize::None,
            ResizeMode::Auto | ResizeMode::Paper => {
                Resize::ShorterSide(Transform::resize_side(h, w))
            }
            ResizeMode::None => Resize::None,
            ResizeMode::Exact => Resize::Exact,
        };
        base.with_resize(resize)
            .with_normalization(self.mean.clone(), self.std.clone())
    }
}

/// Opens `split` of the data at `path`: an image folder if it has `train/`
/// (and `val/`), else IDX files. Fashion-MNIST's folder gets its class names.
pub fn open_data(
    path: &Path,
    split: Split,
    input: &InputSpec,
    resize: ResizeMode,
    flip: bool,
) -> anyhow::Result<Arc<dyn Dataset>> {
    if !path.exists() {
        if path == Path::new(FASHION_MNIST_DIR) {
            bail!(
                "Fashion-MNIST is not installed in {FASHION_MNIST_DIR}: install it with \
                 `sudo apt-get install dataset-fashion-mnist`, or pass --data PATH"
            );
        }
        bail!("data folder {} does not exist", path.display());
    }
    if path.join("train").is_dir() {
        let transform = input.transform(split, None, resize, flip);
        let data = ImageFolder::open_split(path, split, transform)
            .with_context(|| format!("opening the image folder {}", path.display()))?;
        return Ok(Arc::new(data));
    }
    let provisional = input.transform(split, None, ResizeMode::Paper, flip);
    let mut data = IdxDataset::open_split(path, split, provisional)
        .with_context(|| format!("opening the {split} IDX files in {}", path.display()))?;
    let transform = input.transform(split, Some(data.image_size()), resize, flip);
    data = data.with_transform(transform)?;
    if data.classes().len() <= FASHION_MNIST_CLASSES.len() && is_fashion_mnist(path) {
        data = data.with_class_names(
            FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )?;
    }
    Ok(Arc::new(data))
}

fn is_fashion_mnist(path: &Path) -> bool {
    path.canonicalize().ok() == Path::new(FASHION_MNIST_DIR).canonicalize().ok()
}

/// The compiled-code backend, refusing the interpreter (whose kernels would
/// run on the kernel IR evaluator: hours per epoch).
pub fn compiled_backend(backend: Backend) -> anyhow::Result<&'static dyn alexc_runtime::Backend> {
    if backend == Backend::Llvm {
        crate::backend::require_llvm("--backend llvm")?;
    }
    if backend == Backend::Interp {
        bail!("this command runs compiled code: use --backend llvm or --backend cranelift");
    }
    Ok(backend.runtime())
}

pub fn train(args: &TrainArgs) -> Result<(), CliError> {
    // A resumed run's recorded options decide the batch, so they come first.
    let resumed = match &args.resume {
        Some(dir) => {
            let path = dir.join(checkpoint::LAST);
            let ckpt = Checkpoint::load(&path).map_err(anyhow::Error::from)?;
            let options: RunOptions = ckpt
                .meta
                .config
                .notes
                .get(NOTES_KEY)
                .map(|json| serde_json::from_str(json))
                .transpose()
                .with_context(|| format!("reading the run options recorded in {}", path.display()))?
                .ok_or_else(|| {
                    anyhow!(
                        "{} was not written by `alexc train` (no recorded options); resume it \
                         from the library",
                        path.display()
                    )
                })?;
            options.warn_ignored(args);
            Some((dir.clone(), path, ckpt, options))
        }
        None => None,
    };
    let batch = resumed
        .as_ref()
        .map_or(args.batch.map_or(64, |b| b as usize), |r| r.3.batch);
    let mut model = alexc_frontend::load(&args.model, batch)?;
    let options = match &resumed {
        Some(r) => r.3.clone(),
        None => RunOptions::from_args(args, &model),
    };
    run(args, &mut model, options, resumed.map(|r| (r.0, r.1, r.2)))?;
    Ok(())
}

fn run(
    args: &TrainArgs,
    model: &mut alexc_frontend::Model,
    options: RunOptions,
    resumed: Option<(PathBuf, PathBuf, Checkpoint)>,
) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&options.momentum) {
        bail!("--momentum {} is outside [0, 1)", options.momentum);
    }
    if !(options.weight_decay.is_finite() && options.weight_decay >= 0.0) {
        bail!(
            "--weight-decay {} must be finite and non-negative",
            options.weight_decay
        );
    }
    model.spec.training.momentum = options.momentum;
    model.spec.training.weight_decay = options.weight_decay;
    let backend = compiled_backend(args.backend)?;

    // Data.
    let input = InputSpec::of(model)?;
    let train = open_data(
        &options.data,
        Split::Train,
        &input,
        options.resize,
        options.flip,
    )?;
    let train = if options.pca && input.channels == 3 {
        let stats = estimate_color_stats(&*train, 2000)?;
        eprintln!(
            "PCA lighting from {} training images: {:?}",
            stats.images, stats.pca
        );
        let transform = train.transform().clone().with_pca(stats.pca);
        reopen_with(&options.data, Split::Train, transform)?
    } else {
        train
    };
    let train = Subset::limit(train, options.limit_train);
    let val = match options.limit_val {
        Some(0) => None,
        limit => Some(Subset::limit(
            open_data(&options.data, Split::Val, &input, options.resize, false)?,
            limit,
        )),
    };

    let run_dir = match &resumed {
        Some((dir, ..)) => dir.clone(),
        None => {
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| Path::new("runs").join(&model.spec.name));
            if dir.join(checkpoint::LAST).exists() {
                bail!(
                    "{} already holds a run; continue it with --resume {0}, or pass another --out",
                    dir.display()
                );
            }
            dir
        }
    };

    let mut notes = std::collections::BTreeMap::new();
    notes.insert(NOTES_KEY.to_string(), serde_json::to_string(&options)?);
    let config = TrainConfig {
        epochs: args.epochs,
        lr: options.lr,
        schedule: options.schedule(),
        seed: options.seed,
        max_steps: args.steps,
        dropout: options.dropout,
        workers: args.workers,
        keep_epoch_checkpoints: true,
        notes,
    };
    let start = Instant::now();
    let mut trainer = Trainer::new(model, backend, train.clone(), val.clone(), config)
        .context("setting up training")?
        .with_run_dir(&run_dir)
        .with_progress(true);
    eprintln!(
        "compiled {} for training{} with {} in {:.1} s",
        model.spec.name,
        if val.is_some() { " and inference" } else { "" },
        args.backend.name(),
        start.elapsed().as_secs_f64()
    );
    if let Some((_, path, ckpt)) = &resumed {
        trainer.resume_from(ckpt, path)?;
        eprintln!(
            "resumed {} at step {} (epoch {}), lr {}",
            path.display(),
            trainer.step(),
            trainer.epochs_done() + 1,
            trainer.lr()
        );
    }
    let params: usize = trainer
        .runtime()
        .state_shapes()
        .iter()
        .filter(|(n, _)| !n.ends_with(".momentum"))
        .map(|(_, s)| s.elements())
        .sum();
    eprintln!(
        "training {} ({params} parameters) on {}: {} training images{}, batch {}, {} steps per epoch, \
         lr {} ({:?} schedule), momentum {}, weight decay {}; run directory {}",
        model.spec.name,
        options.data.display(),
        train.len(),
        val.as_ref()
            .map_or_else(String::new, |v| format!(", {} validation images", v.len())),
        trainer.batch(),
        trainer.steps_per_epoch(),
        options.lr,
        options.schedule,
        options.momentum,
        options.weight_decay,
        run_dir.display()
    );

    let stop = trainer.stop_flag();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: quitting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step and writing a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;

    let epochs = args.epochs;
    trainer.on_epoch(move |e| {
        let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.2}%", 100.0 * v));
        println!(
            "epoch {:>3}/{epochs}  step {:>6}  train loss {:.4}  val loss {}  top-1 error {}  top-5 error {}  lr {}  {:.1} s",
            e.epoch + 1,
            e.step,
            e.train_loss,
            e.val_loss.map_or_else(|| "-".into(), |v| format!("{v:.4}")),
            pct(e.top1_error),
            pct(e.top5_error),
            e.lr,
            e.seconds
        );
        Control::Continue
    });
    let summary = trainer.run()?;
    let resume_hint = format!(
        "alexc train {} --resume {}",
        args.model.display(),
        run_dir.display()
    );
    match summary.outcome {
        Outcome::Finished => eprintln!(
            "finished {} epochs ({} steps) in {:.1} min; run directory {}",
            summary.epochs,
            summary.steps,
            start.elapsed().as_secs_f64() / 60.0,
            run_dir.display()
        ),
        Outcome::StepLimit => eprintln!(
            "stopped after {} steps (--steps); continue with `{resume_hint}`",
            summary.steps
        ),
        Outcome::Stopped => eprintln!(
            "stopped at step {}; checkpoint written; continue with `{resume_hint}`",
            summary.steps
        ),
    }
    Ok(())
}

/// The training split again, with `transform` (after estimating PCA).
fn reopen_with(
    path: &Path,
    split: Split,
    transform: Transform,
) -> anyhow::Result<Arc<dyn Dataset>> {
    if path.join("train").is_dir() {
        return Ok(Arc::new(ImageFolder::open_split(path, split, transform)?));
    }
    Ok(Arc::new(IdxDataset::open_split(path, split, transform)?))
}
