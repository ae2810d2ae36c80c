//! Graph passes: the optimizer half of the compiler.
//!
//! Every transformation is a [`Pass`] with a stable kebab-case name, in a
//! file of the same name (`fuse_lrn_pool.rs` / `FuseLrnPool` /
//! `fuse-lrn-pool`). The [`PassManager`] runs an explicit list of passes —
//! the default list is built in one function, [`default_pipeline`] — and
//! around each pass it
//!
//! - skips the pass if the user disabled it (`--disable-pass NAME`),
//! - keeps a copy of the graph and restores it if the pass fails, so a
//!   failing pass leaves the graph as it was,
//! - runs the verifier afterwards (in tests and debug builds, or when asked),
//! - records the time taken and whether the graph changed (`--timings`),
//! - and dumps the IR after it when asked (`--print-after NAME|all`).
//!
//! Analyses and reports that later stages need — the fusion decisions, the
//! memory plan — are written into the [`PassContext`].

pub mod autodiff;
pub mod dce;
pub mod eliminate_dropout;
pub mod fuse_conv_relu;
pub mod fuse_linear_relu;
pub mod fuse_lrn_pool;
pub mod fusion;
mod manager;
pub mod mem_plan;
pub mod optimizer;

pub use fusion::{FusionGroup, FusionKind, FusionRejection, FusionReport};
pub use manager::{
    default_pipeline, Pass, PassContext, PassError, PassManager, PassTiming, PipelineMode,
    PipelineOptions, PrintAfter, TrainingOptions,
};
