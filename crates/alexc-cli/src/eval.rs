//! `alexc eval`: top-1 and top-5 error of trained weights on a validation
//! set, on the centre crop or the paper's ten views, for one model or an
//! ensemble whose softmax outputs are averaged ([`alexc_train::eval`]).
//!
//! The weights may be an `alexc train` checkpoint (momentum buffers and
//! metadata are ignored) or any safetensors file with the model's
//! parameter names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alexc_data::{Split, FASHION_MNIST_DIR};
use alexc_runtime::{Options, Runtime};
use alexc_tensor::Weights;
use alexc_train::checkpoint::load_tensors;
use alexc_train::eval::{evaluate, Views};
use alexc_train::Subset;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::train::{compiled_backend, open_data, InputSpec, ResizeMode};
use crate::{Backend, CliError};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model file (RON) the weights belong to.
    pub model: PathBuf,
    /// The weights: a checkpoint of `alexc train` or a safetensors file.
    #[arg(long)]
    pub weights: PathBuf,
    /// The data: IDX files (the t10k-* test split is used) or an image
    /// folder (its val/ split). Default: Fashion-MNIST.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Average the softmax over the paper's ten views (four corners and the
    /// centre, and their mirror images) instead of the centre crop.
    #[arg(long)]
    pub ten_crop: bool,
    /// More weights to average with (comma-separated): the paper's ensemble.
    #[arg(long, value_delimiter = ',', value_name = "CKPT2,CKPT3")]
    pub ensemble: Vec<PathBuf>,
    /// Images per inference batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Evaluate on the first N images only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// How images are resized to the model's input (as `alexc train`).
    #[arg(long, value_enum, default_value_t = ResizeMode::Auto)]
    pub resize: ResizeMode,
    /// The code generator.
    #[arg(long, value_enum, default_value_t = Backend::DEFAULT)]
    pub backend: Backend,
}

pub fn eval(args: &EvalArgs) -> Result<(), CliError> {
    let model = alexc_frontend::load(&args.model, args.batch as usize)?;
    run(args, &model)?;
    Ok(())
}

/// The parameters of `path` that `rt` takes (a checkpoint's momentum
/// buffers are left out; anything else missing or mis-shaped is an error
/// listing every difference).
fn load_parameters(rt: &mut Runtime, path: &Path) -> anyhow::Result<()> {
    let wanted: BTreeSet<String> = rt.state_shapes().into_iter().map(|(n, _)| n).collect();
    let weights: Weights = load_tensors(path)?
        .into_iter()
        .filter(|(name, _)| wanted.contains(name) || !name.ends_with(".momentum"))
        .collect();
    rt.load_state(&weights)
        .with_context(|| format!("loading {}", path.display()))
}

fn run(args: &EvalArgs, model: &alexc_frontend::Model) -> anyhow::Result<()> {
    let backend = compiled_backend(args.backend)?;
    let data_path = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
    let input = InputSpec::of(model)?;
    let data = Subset::limit(
        open_data(&data_path, Split::Val, &input, args.resize, false)?,
        args.limit,
    );
    let files: Vec<&PathBuf> = std::iter::once(&args.weights)
        .chain(&args.ensemble)
        .collect();
    let start = Instant::now();
    let mut runtimes = Vec::with_capacity(files.len());
    for path in &files {
        let mut rt = Runtime::new(model, &Options::default(), backend)
            .context("compiling the inference graph")?;
        load_parameters(&mut rt, path)?;
        runtimes.push(rt);
    }
    eprintln!(
        "compiled {} model{} with {} in {:.1} s",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        args.backend.name(),
        start.elapsed().as_secs_f64()
    );
    let pb = ProgressBar::new(data.len() as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos}/{len} images ({per_sec}, ETA {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix("evaluating");
    let views = if args.ten_crop {
        Views::TenCrop
    } else {
        Views::Center
    };
    let mut models: Vec<&mut Runtime> = runtimes.iter_mut().collect();
    let start = Instant::now();
    let result = evaluate(&mut models, data, views, Some(&pb))?;
    pb.finish_and_clear();
    println!(
        "top-1 error {:.2}%  top-5 error {:.2}%  loss {:.4}  ({} images of {}, {}, {} model{}, {:.1} s)",
        100.0 * result.top1_error,
        100.0 * result.top5_error,
        result.loss,
        result.images,
        data_path.display(),
        if args.ten_crop { "ten views" } else { "centre crop" },
        files.len(),
        if files.len() == 1 { "" } else { "s averaged" },
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
