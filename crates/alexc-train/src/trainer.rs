//! The training loop: the paper's recipe as a library.
//!
//! A [`Trainer`] owns two compiled runtimes of one model: the training graph
//! (forward, loss, backward, SGD with momentum and weight decay from the
//! model's `training` section) and, when there is a validation set, the
//! inference graph, which has no dropout. After every epoch the parameters
//! are copied from the first to the second and the validation set is scored
//! (top-1/top-5 error, [`crate::eval::evaluate`]).
//!
//! **Determinism.** Everything random is a function of the seed and a
//! position: initialization of the seed; shuffling and augmentation of the
//! seed, the epoch and the image ([`alexc_data::Loader`]); dropout masks of
//! the seed and the global step ([`dropout_seed`]). With the loader state,
//! the schedule's state and the runtime state (weights and momentum) in the
//! checkpoint, a resumed run computes exactly the losses an uninterrupted
//! run computes — on a deterministic backend (the compiled CPU backends
//! are; their parallel loops partition work statically).
//!
//! **Stopping.** A step callback returning [`Control::Stop`], the stop flag
//! ([`Trainer::stop_flag`], set from a Ctrl-C handler) or the step limit end
//! the run after the current step: the trainer writes a mid-epoch checkpoint
//! (the loader state records the position in the epoch), the metrics, the
//! plots and the filter grid, and returns normally. An epoch callback can
//! stop the run between epochs the same way.
//!
//! **Run directory** (when set): `checkpoint-epoch-N.safetensors` after
//! every epoch, `last.safetensors` (the newest checkpoint, what `resume`
//! reads), `metrics.csv` / `steps.csv` / `metrics.json`, `loss.png` and
//! `error.png` ([`crate::plot::write_plots`]) and at the end `filters.png`
//! ([`crate::filters::write_filter_grid`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alexc_data::{Dataset, Loader, LoaderConfig};
use alexc_frontend::Model;
use alexc_runtime::{Backend, Dropout, Options, Runtime};
use alexc_tensor::Weights;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::eval::{evaluate, EvalResult, Views};
use crate::metrics::{EpochRecord, History, StepRecord};
use crate::schedule::{Schedule, Scheduler};
use crate::TrainError;

/// How to train (everything but the model, the data and the backend).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Train until this many epochs are complete (a resumed run counts the
    /// epochs before the checkpoint).
    pub epochs: u64,
    /// The initial learning rate.
    pub lr: f32,
    pub schedule: Schedule,
    /// Seeds initialization, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Stop once this many global steps are complete (smoke runs).
    pub max_steps: Option<u64>,
    /// Dropout in training (off: masks of ones, for debugging).
    pub dropout: bool,
    /// Background threads decoding and augmenting training images.
    pub workers: usize,
    /// Keep `checkpoint-epoch-N.safetensors` for every epoch (otherwise
    /// only `last.safetensors`).
    pub keep_epoch_checkpoints: bool,
    /// Free-form settings the embedding application records with the run
    /// (the CLI keeps its data options here), saved in checkpoints.
    pub notes: BTreeMap<String, String>,
}

impl Default for TrainConfig {
    /// The paper's learning rate (0.01), its plateau schedule, 10 epochs.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            lr: 0.01,
            schedule: Schedule::plateau(1, 0.01),
            seed: 0,
            max_steps: None,
            dropout: true,
            workers: 2,
            keep_epoch_checkpoints: true,
            notes: BTreeMap::new(),
        }
    }
}

/// What a callback tells the trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Finish the current step, write a checkpoint and return.
    Stop,
}

/// Why [`Trainer::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// All epochs are complete.
    Finished,
    /// [`TrainConfig::max_steps`] steps are complete.
    StepLimit,
    /// A callback or the stop flag asked to stop.
    Stopped,
}

/// What [`Trainer::run`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub outcome: Outcome,
    /// Global steps completed.
    pub steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// The last checkpoint written (with a run directory).
    pub checkpoint: Option<PathBuf>,
    /// The last epoch's validation result, if any.
    pub validation: Option<EvalResult>,
}

type StepCallback = Box<dyn FnMut(&StepRecord) -> Control>;
type EpochCallback = Box<dyn FnMut(&EpochRecord) -> Control>;

/// The dropout seed of global step `step` (1-based) under `seed`: a
/// function of both alone, so a resumed run draws the same masks.
pub fn dropout_seed(seed: u64, step: u64) -> u64 {
    // SplitMix64's finalizer over both, so neighbouring steps and seeds
    // give unrelated streams.
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(seed ^ mix(step.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A training run of one model on one data set.
pub struct Trainer {
    train_rt: Runtime,
    /// Inference runtime for validation (`None` without a validation set).
    eval_rt: Option<Runtime>,
    loader: Loader,
    val: Option<Arc<dyn Dataset>>,
    config: TrainConfig,
    scheduler: Scheduler,
    /// Global steps completed.
    step: u64,
    /// Epochs completed.
    epochs_done: u64,
    history: History,
    last_validation: Option<EvalResult>,
    batch: usize,
    momentum: f64,
    weight_decay: f64,
    model_name: String,
    model_hash: String,
    run_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    progress: bool,
    step_callbacks: Vec<StepCallback>,
    epoch_callbacks: Vec<EpochCallback>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model_name)
            .field("step", &self.step)
            .field("epochs_done", &self.epochs_done)
            .field("lr", &self.scheduler.lr())
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Compiles `model` (at the batch size it was loaded with) for training
    /// and, with a validation set, for inference; initializes the
    /// parameters from the model's initializers under `config.seed`.
    ///
    /// The data sets must produce the model's input shape, and their labels
    /// must be classes of the model.
    pub fn new(
        model: &Model,
        backend: &dyn Backend,
        train: Arc<dyn Dataset>,
        val: Option<Arc<dyn Dataset>>,
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        let scheduler = Scheduler::new(config.schedule.clone(), config.lr)?;
        if config.epochs == 0 {
            return Err(TrainError::Config("train for at least one epoch".into()));
        }
        let mut train_rt = Runtime::new(
            model,
            &Options {
                train: true,
                ..Options::default()
            },
            backend,
        )?;
        let shape = train_rt.image_shape()?;
        let (batch, input) = match shape.as_slice() {
            [n, rest @ ..] => (*n, rest.to_vec()),
            [] => return Err(TrainError::Config("the model's input is a scalar".into())),
        };
        let classes = train_rt.classes();
        for (what, data) in [("training", Some(&train)), ("validation", val.as_ref())] {
            let Some(data) = data else { continue };
            if data.image_shape().as_slice() != input.as_slice() {
                return Err(TrainError::Config(format!(
                    "the {what} images are {:?} (C, H, W) but model `{}` takes {input:?}; \
                     set the data transform to the model's input (resize, channels)",
                    data.image_shape(),
                    model.spec.name
                )));
            }
            if data.classes().len() > classes {
                return Err(TrainError::Config(format!(
                    "the {what} data has {} classes but model `{}` predicts {classes}",
                    data.classes().len(),
                    model.spec.name
                )));
            }
        }
        if train.len() < batch {
            return Err(TrainError::Config(format!(
                "the training set has {} images, fewer than one batch of {batch}",
                train.len()
            )));
        }
        let eval_rt = match val {
            Some(_) => Some(Runtime::new(model, &Options::default(), backend)?),
            None => None,
        };
        train_rt.init_state(config.seed, model.base_dir())?;
        let loader = Loader::new(
            train,
            LoaderConfig::train(batch, config.seed).with_workers(config.workers),
        )?;
        Ok(Trainer {
            train_rt,
            eval_rt,
            loader,
            val,
            scheduler,
            step: 0,
            epochs_done: 0,
            history: History::default(),
            last_validation: None,
            batch,
            momentum: model.spec.training.momentum,
            weight_decay: model.spec.training.weight_decay,
            model_name: model.spec.name.clone(),
            model_hash: checkpoint::model_hash(model.source.as_bytes()),
            run_dir: None,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            step_callbacks: Vec::new(),
            epoch_callbacks: Vec::new(),
            config,
        })
    }

    /// Where checkpoints, metrics, plots and the filter grid go (created
    /// if missing). Without one the trainer writes nothing.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Draw progress bars (indicatif, on standard error; hidden when it is
    /// not a terminal).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Calls `f` after every step; returning [`Control::Stop`] ends the run
    /// after that step.
    pub fn on_step(&mut self, f: impl FnMut(&StepRecord) -> Control + 'static) {
        self.step_callbacks.push(Box::new(f));
    }

    /// Calls `f` after every epoch (after validation and the checkpoint).
    pub fn on_epoch(&mut self, f: impl FnMut(&EpochRecord) -> Control + 'static) {
        self.epoch_callbacks.push(Box::new(f));
    }

    /// A flag that, once set (e.g. by a Ctrl-C handler), ends the run after
    /// the current step with a checkpoint.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the number of epochs to train to (e.g. to extend a resumed
    /// run) and the step limit; nothing else can change mid-run without
    /// breaking determinism.
    pub fn set_limits(&mut self, epochs: u64, max_steps: Option<u64>) {
        self.config.epochs = epochs;
        self.config.max_steps = max_steps;
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Global steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Epochs completed.
    pub fn epochs_done(&self) -> u64 {
        self.epochs_done
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f32 {
        self.scheduler.lr()
    }

    /// The compiled batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Steps in one epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    /// The training runtime (its state holds parameters and momentum).
    pub fn runtime(&self) -> &Runtime {
        &self.train_rt
    }

    /// The current state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            weights: self.train_rt.state(),
            meta: CheckpointMeta {
                step: self.step,
                epoch: self.epochs_done,
                loader: self.loader.state(),
                scheduler: self.scheduler.clone(),
                lr: self.scheduler.lr(),
                seed: self.config.seed,
                batch: self.batch,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                model_name: self.model_name.clone(),
                model_hash: self.model_hash.clone(),
                config: self.config.clone(),
                history: self.history.clone(),
            },
        }
    }

    /// Continues from the checkpoint at `path` (see [`Trainer::resume_from`]).
    pub fn resume(&mut self, path: &Path) -> Result<(), TrainError> {
        let ckpt = Checkpoint::load(path)?;
        self.resume_from(&ckpt, path)
    }

    /// Continues from `ckpt` (read from `path`, for messages): weights,
    /// momentum, step, schedule, loader position and history. Refuses a
    /// checkpoint of another model file or batch size. The checkpoint's
    /// seed, schedule and learning rate replace the configured ones (they
    /// must, for the run to continue exactly); the epoch and step limits
    /// stay as configured.
    pub fn resume_from(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<(), TrainError> {
        let m = &ckpt.meta;
        if m.model_hash != self.model_hash {
            return Err(TrainError::ModelMismatch {
                path: path.to_path_buf(),
                model: self.model_name.clone(),
                expected: m.model_hash.clone(),
                found: self.model_hash.clone(),
            });
        }
        if m.batch != self.batch {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "it was trained with batch size {}, this run compiles batch size {}; \
                     resume with the same batch size",
                    m.batch, self.batch
                ),
            });
        }
        if m.momentum != self.momentum || m.weight_decay != self.weight_decay {
            tracing::warn!(
                checkpoint_momentum = m.momentum,
                checkpoint_weight_decay = m.weight_decay,
                momentum = self.momentum,
                weight_decay = self.weight_decay,
                "resuming with other SGD hyper-parameters than the checkpoint was trained with"
            );
        }
        self.train_rt.load_state(&ckpt.weights)?;
        // The loader's restore checks the position against this data set.
        self.loader.restore(m.loader)?;
        self.scheduler = m.scheduler.clone();
        self.config.seed = m.seed;
        self.config.lr = m.config.lr;
        self.config.schedule = m.scheduler.schedule.clone();
        self.config.dropout = m.config.dropout;
        self.step = m.step;
        self.epochs_done = m.epoch;
        self.history = m.history.clone();
        tracing::info!(
            path = %path.display(),
            step = m.step,
            epoch = m.epoch,
            lr = m.lr,
            "resumed"
        );
        Ok(())
    }

    fn progress_bar(&self, len: u64, prefix: String) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_prefix(prefix);
        pb
    }

    /// Trains until the configured epochs are complete, the step limit is
    /// reached or a stop is requested; see the module documentation.
    pub fn run(&mut self) -> Result<Summary, TrainError> {
        if let Some(dir) = &self.run_dir {
            std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let mut checkpoint = None;
        let outcome = loop {
            let epoch = self.epochs_done;
            if epoch >= self.config.epochs {
                break Outcome::Finished;
            }
            if self.config.max_steps.is_some_and(|m| self.step >= m) {
                break Outcome::StepLimit;
            }
            let started = Instant::now();
            // The loader is past this epoch already when a checkpoint was
            // taken after its last batch but before its end was processed.
            if self.loader.state().epoch == epoch {
                if let Some(outcome) = self.train_epoch(epoch)? {
                    checkpoint = self.save_checkpoints(None)?;
                    break outcome;
                }
            }
            let record = self.end_epoch(epoch, started.elapsed())?;
            checkpoint = self.save_checkpoints(Some(epoch + 1))?;
            let mut control = Control::Continue;
            for f in &mut self.epoch_callbacks {
                if f(&record) == Control::Stop {
                    control = Control::Stop;
                }
            }
            if control == Control::Stop || self.stop.load(Ordering::SeqCst) {
                break Outcome::Stopped;
            }
        };
        self.write_filters();
        Ok(Summary {
            outcome,
            steps: self.step,
            epochs: self.epochs_done,
            checkpoint,
            validation: self.last_validation.clone(),
        })
    }

    /// The rest of `epoch`'s steps; `Some` when the run must stop mid-epoch.
    fn train_epoch(&mut self, epoch: u64) -> Result<Option<Outcome>, TrainError> {
        let lr = self.scheduler.lr();
        let per_epoch = self.loader.batches_per_epoch() as u64;
        let done = (self.loader.state().position / self.batch) as u64;
        let pb = self.progress_bar(
            per_epoch,
            format!("epoch {}/{}", epoch + 1, self.config.epochs),
        );
        pb.set_position(done.min(per_epoch));
        let Trainer {
            loader,
            train_rt,
            history,
            step,
            config,
            stop,
            step_callbacks,
            ..
        } = self;
        let mut last = Instant::now();
        let mut smoothed: Option<f64> = None;
        let mut interrupted = None;
        // Pipelined: while a step runs (on a GPU), the loader hands over the
        // next batch and the runtime stages it (copies it towards the
        // device), then the step's loss is read. The look-ahead moves the
        // loader one batch past the step, so a stop rewinds it to where the
        // step left it: checkpoints record the batches trained on.
        let mut batches = loader.epoch();
        let mut upcoming = batches.next();
        if let Some(Ok(b)) = &upcoming {
            train_rt.stage_batch(&b.images, &b.labels)?;
        }
        let mut after_upcoming = batches.state();
        let mut rewind = None;
        while let Some(batch) = upcoming.take() {
            let batch = batch?;
            *step += 1;
            let dropout = if config.dropout {
                Dropout::Seed(dropout_seed(config.seed, *step))
            } else {
                Dropout::Off
            };
            train_rt.launch_train_step(lr, dropout)?;
            let after_step = after_upcoming;
            upcoming = batches.next();
            after_upcoming = batches.state();
            // A data error surfaces at the step that would use the batch.
            if let Some(Ok(b)) = &upcoming {
                train_rt.stage_batch(&b.images, &b.labels)?;
            }
            let loss = train_rt.wait_loss()?;
            if !loss.is_finite() {
                pb.abandon();
                return Err(TrainError::Diverged { step: *step, loss });
            }
            let now = Instant::now();
            let ips = batch.len() as f64 / now.duration_since(last).as_secs_f64().max(1e-9);
            last = now;
            let ema = smoothed.map_or(ips, |s| 0.9 * s + 0.1 * ips);
            smoothed = Some(ema);
            let record = StepRecord {
                step: *step,
                epoch,
                loss,
                lr,
                images_per_second: ips,
            };
            pb.set_message(format!("loss {loss:.4}  {ema:.0} img/s"));
            pb.inc(1);
            let mut control = Control::Continue;
            for f in step_callbacks.iter_mut() {
                if f(&record) == Control::Stop {
                    control = Control::Stop;
                }
            }
            history.steps.push(record);
            if control == Control::Stop || stop.load(Ordering::SeqCst) {
                interrupted = Some(Outcome::Stopped);
                rewind = Some(after_step);
                break;
            }
            if config.max_steps.is_some_and(|m| *step >= m) {
                interrupted = Some(Outcome::StepLimit);
                rewind = Some(after_step);
                break;
            }
        }
        drop(batches);
        if let Some(state) = rewind {
            loader.rewind(state);
        }
        pb.finish_and_clear();
        if let Some(outcome) = interrupted {
            tracing::info!(step = self.step, ?outcome, "stopping mid-epoch");
            self.write_history();
        }
        Ok(interrupted)
    }

    /// Validation, the epoch's record, the schedule's decision.
    fn end_epoch(&mut self, epoch: u64, elapsed: Duration) -> Result<EpochRecord, TrainError> {
        let started = Instant::now();
        let validation = self.validate()?;
        let lr = self.scheduler.lr();
        let train_loss = self.history.epoch_train_loss(epoch);
        // The paper watches the validation error; without a validation set
        // the training loss is the only signal.
        let metric = validation.as_ref().map_or(train_loss, |v| v.top1_error);
        self.scheduler.end_epoch(metric);
        let record = EpochRecord {
            epoch,
            step: self.step,
            train_loss,
            val_loss: validation.as_ref().map(|v| v.loss),
            top1_error: validation.as_ref().map(|v| v.top1_error),
            top5_error: validation.as_ref().map(|v| v.top5_error),
            lr,
            seconds: (elapsed + started.elapsed()).as_secs_f64(),
        };
        self.history.epochs.push(record.clone());
        self.last_validation = validation;
        self.epochs_done = epoch + 1;
        tracing::info!(
            epoch = epoch + 1,
            train_loss,
            top1_error = record.top1_error,
            next_lr = self.scheduler.lr(),
            "epoch complete"
        );
        self.write_history();
        Ok(record)
    }

    /// Scores the validation set with the current parameters.
    fn validate(&mut self) -> Result<Option<EvalResult>, TrainError> {
        let (Some(val), Some(_)) = (self.val.clone(), self.eval_rt.as_ref()) else {
            return Ok(None);
        };
        let pb = self.progress_bar(val.len() as u64, "validate".into());
        let eval_rt = self
            .eval_rt
            .as_mut()
            .ok_or_else(|| TrainError::Config("no inference runtime".into()))?;
        let wanted: BTreeSet<String> = eval_rt.state_shapes().into_iter().map(|(n, _)| n).collect();
        let params: Weights = self
            .train_rt
            .state()
            .into_iter()
            .filter(|(name, _)| wanted.contains(name))
            .collect();
        eval_rt.load_state(&params)?;
        let result = evaluate(&mut [eval_rt], val, Views::Center, Some(&pb));
        pb.finish_and_clear();
        result.map(Some)
    }

    /// Writes `last.safetensors` and, after an epoch, the epoch's
    /// checkpoint; returns the path of the newest.
    fn save_checkpoints(&self, epoch: Option<u64>) -> Result<Option<PathBuf>, TrainError> {
        let Some(dir) = &self.run_dir else {
            return Ok(None);
        };
        let ckpt = self.checkpoint();
        let bytes = ckpt.to_bytes()?;
        if let Some(n) = epoch.filter(|_| self.config.keep_epoch_checkpoints) {
            checkpoint::write_atomic(&dir.join(checkpoint::epoch_file_name(n)), &bytes)?;
        }
        let last = dir.join(checkpoint::LAST);
        checkpoint::write_atomic(&last, &bytes)?;
        tracing::info!(path = %last.display(), step = self.step, "checkpoint written");
        Ok(Some(last))
    }

    /// Metrics files and plots. A failure here is reported, not fatal: a
    /// run must not die over a plot.
    fn write_history(&self) {
        let Some(dir) = &self.run_dir else { return };
        if let Err(e) = self.history.write(dir) {
            tracing::warn!(error = %e, "could not write the metrics");
        }
        if let Err(e) = crate::plot::write_plots(&self.history, dir) {
            tracing::warn!(error = %e, "could not write the plots");
        }
    }

    /// The first-layer filter grid, `filters.png`.
    fn write_filters(&self) {
        let Some(dir) = &self.run_dir else { return };
        let state = self.train_rt.state();
        // Graph order, so "first" means the first layer, not the first name.
        let first = self
            .train_rt
            .state_shapes()
            .into_iter()
            .find(|(name, shape)| shape.dims().len() == 4 && !name.ends_with(".momentum"))
            .and_then(|(name, _)| state.get(&name).map(|t| (name.clone(), t)));
        let Some((name, weights)) = first else {
            tracing::warn!("the model has no 4-D parameter: no filter grid");
            return;
        };
        let path = dir.join("filters.png");
        match crate::filters::write_filter_grid(weights, &path) {
            Ok(()) => tracing::info!(tensor = %name, path = %path.display(), "filter grid written"),
            Err(e) => tracing::warn!(error = %e, "could not write the filter grid"),
        }
    }
}
