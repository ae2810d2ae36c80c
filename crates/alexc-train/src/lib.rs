//! Training and evaluation on real data, as a library: the [`Trainer`]
//! (the paper's recipe: SGD with momentum and weight decay, dropout,
//! learning-rate schedules), atomic checkpoints with bit-exact resume,
//! evaluation (top-1/top-5, ten-crop, ensembles), metrics and plots, and
//! the first-layer filter grid (the paper's Figure 3). `alexc train`,
//! `alexc eval` and `alexc filters` are thin layers over this crate.
//!
//! ```no_run
//! use std::sync::Arc;
//! use alexc_data::{IdxDataset, Resize, Split, Transform};
//! use alexc_train::{Control, TrainConfig, Trainer};
//!
//! let model = alexc_frontend::load("models/alexnet-small.ron".as_ref(), 64)
//!     .map_err(|e| format!("{e:?}"))?;
//! let gray = |t: Transform| t.with_resize(Resize::None).with_normalization(vec![0.286], vec![0.353]);
//! let train = IdxDataset::fashion_mnist(Split::Train, gray(Transform::train(1, 28, 28)))?;
//! let val = IdxDataset::fashion_mnist(Split::Val, gray(Transform::eval(1, 28, 28)))?;
//! let config = TrainConfig { epochs: 2, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(
//!     &model,
//!     &alexc_codegen_cranelift::CraneliftBackend,
//!     Arc::new(train),
//!     Some(Arc::new(val)),
//!     config,
//! )?
//! .with_run_dir("runs/small");
//! trainer.on_epoch(|e| {
//!     println!("epoch {}: top-1 error {:?}", e.epoch + 1, e.top1_error);
//!     Control::Continue
//! });
//! let summary = trainer.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod filters;
pub mod metrics;
pub mod plot;
pub mod schedule;
pub mod subset;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use error::TrainError;
pub use metrics::{EpochRecord, History, StepRecord};
pub use schedule::{Schedule, ScheduleState, Scheduler};
pub use subset::Subset;
pub use trainer::{dropout_seed, Control, Outcome, Summary, TrainConfig, Trainer};
