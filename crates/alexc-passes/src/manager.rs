//! The pass trait, the context passes share, and the manager that runs them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use alexc_ir::{verify, Graph, GraphError, SgdConvention, VerifyError};
use serde::{Deserialize, Serialize};

/// Why a pass failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PassError {
    /// The pass cannot handle this graph (with the reason).
    #[error("pass `{pass}`: {message}")]
    Unsupported { pass: &'static str, message: String },
    /// Editing the graph failed.
    #[error("pass `{pass}`: {source}")]
    Graph {
        pass: &'static str,
        source: GraphError,
    },
    /// The graph no longer verifies after the pass (a bug in the pass).
    #[error("the graph fails verification after pass `{pass}`: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Verify {
        pass: &'static str,
        errors: Vec<VerifyError>,
    },
    /// `--disable-pass` or `--print-after` named no pass of the pipeline.
    #[error("unknown pass `{name}`; the pipeline has: {}", .known.join(", "))]
    UnknownPass {
        name: String,
        known: Vec<&'static str>,
    },
}

/// A transformation or analysis of the graph.
pub trait Pass {
    /// Stable kebab-case name, used by the CLI, dumps and snapshot files.
    fn name(&self) -> &'static str;

    /// Whether this is a fusion pass (switched off together by `--no-fuse`).
    fn is_fusion(&self) -> bool {
        false
    }

    /// Runs the pass; returns whether the graph changed. On error the
    /// manager restores the graph, so a pass may fail halfway.
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<bool, PassError>;
}

/// Inference or training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineMode {
    Inference,
    Training,
}

/// Optimizer settings for training graphs (from the model file's
/// `training` section; the paper's values by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingOptions {
    pub momentum: f64,
    pub weight_decay: f64,
    pub convention: SgdConvention,
}

impl Default for TrainingOptions {
    fn default() -> Self {
        TrainingOptions {
            momentum: 0.9,
            weight_decay: 5e-4,
            convention: SgdConvention::Paper,
        }
    }
}

/// What the pipeline is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineOptions {
    pub mode: PipelineMode,
    pub training: TrainingOptions,
    /// Run no fusion pass (`--no-fuse`).
    pub no_fuse: bool,
    /// Passes to skip (`--disable-pass`).
    pub disabled: BTreeSet<String>,
    /// Run the verifier after every pass (always on in debug builds).
    pub verify_each: bool,
    pub print_after: PrintAfter,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            mode: PipelineMode::Inference,
            training: TrainingOptions::default(),
            no_fuse: false,
            disabled: BTreeSet::new(),
            verify_each: cfg!(debug_assertions),
            print_after: PrintAfter::None,
        }
    }
}

/// Which passes to dump the IR after.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PrintAfter {
    #[default]
    None,
    All,
    Passes(BTreeSet<String>),
}

/// Time and effect of one pass run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassTiming {
    pub pass: &'static str,
    pub duration: Duration,
    pub changed: bool,
    /// False when the pass was disabled.
    pub ran: bool,
}

/// State shared by the passes of one pipeline run: options, and the reports
/// and analyses passes produce for later stages.
#[derive(Debug, Default)]
pub struct PassContext {
    pub mode: Option<PipelineMode>,
    pub training: TrainingOptions,
    /// IR dumps requested by `--print-after`, as `(pass, text)`.
    pub dumps: Vec<(&'static str, String)>,
    pub timings: Vec<PassTiming>,
    /// Decisions of the fusion passes.
    pub fusion: crate::FusionReport,
    /// The gradient of each parameter, in graph order, as found by
    /// `autodiff` and consumed by `optimizer`.
    pub gradients: Vec<(String, alexc_ir::ValueId)>,
    /// The memory plan (`mem-plan`).
    pub plan: Option<crate::mem_plan::MemoryPlan>,
}

impl PassContext {
    pub fn is_training(&self) -> bool {
        self.mode == Some(PipelineMode::Training)
    }
}

/// Runs a list of passes with verification, timing, dumps and rollback.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    options: PipelineOptions,
}

impl std::fmt::Debug for PassManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassManager")
            .field("passes", &self.names())
            .field("options", &self.options)
            .finish()
    }
}

impl PassManager {
    pub fn new(passes: Vec<Box<dyn Pass>>, options: PipelineOptions) -> Self {
        PassManager { passes, options }
    }

    /// The names of the passes, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Checks that every name the user gave refers to a pass of this pipeline.
    fn check_names(&self) -> Result<(), PassError> {
        let known = self.names();
        let mut named: Vec<&String> = self.options.disabled.iter().collect();
        if let PrintAfter::Passes(p) = &self.options.print_after {
            named.extend(p.iter());
        }
        match named.into_iter().find(|n| !known.contains(&n.as_str())) {
            Some(name) => Err(PassError::UnknownPass {
                name: name.clone(),
                known,
            }),
            None => Ok(()),
        }
    }

    fn enabled(&self, pass: &dyn Pass) -> bool {
        !(self.options.disabled.contains(pass.name()) || (self.options.no_fuse && pass.is_fusion()))
    }

    fn wants_dump(&self, name: &str) -> bool {
        match &self.options.print_after {
            PrintAfter::None => false,
            PrintAfter::All => true,
            PrintAfter::Passes(p) => p.contains(name),
        }
    }

    /// Runs every enabled pass over `graph`, in order.
    pub fn run(&self, graph: &mut Graph) -> Result<PassContext, PassError> {
        self.check_names()?;
        let mut ctx = PassContext {
            mode: Some(self.options.mode),
            training: self.options.training.clone(),
            ..PassContext::default()
        };
        for pass in &self.passes {
            let name = pass.name();
            if !self.enabled(pass.as_ref()) {
                ctx.timings.push(PassTiming {
                    pass: name,
                    duration: Duration::ZERO,
                    changed: false,
                    ran: false,
                });
                continue;
            }
            let _span = tracing::info_span!("pass", name).entered();
            let saved = graph.clone();
            let start = Instant::now();
            let changed = match pass.run(graph, &mut ctx) {
                Ok(changed) => changed,
                Err(e) => {
                    *graph = saved;
                    return Err(e);
                }
            };
            let duration = start.elapsed();
            if self.options.verify_each {
                if let Err(errors) = verify(graph) {
                    *graph = saved;
                    return Err(PassError::Verify { pass: name, errors });
                }
            }
            tracing::debug!(changed, ?duration, "pass done");
            ctx.timings.push(PassTiming {
                pass: name,
                duration,
                changed,
                ran: true,
            });
            if self.wants_dump(name) {
                ctx.dumps.push((name, alexc_ir::print::to_text(graph)));
            }
        }
        Ok(ctx)
    }
}

/// The default pipeline: the one list of passes `alexc compile` runs.
///
/// Inference and training share it; the training-only passes (`autodiff`,
/// `optimizer`) do nothing in inference, and `eliminate-dropout` does nothing
/// in training. Autodiff runs before fusion (it differentiates plain ops);
/// the fusion passes then fuse forward pairs together with their backward
/// twins; dead code goes last, then memory is planned over the final graph.
pub fn default_pipeline(options: PipelineOptions) -> PassManager {
    use crate::{
        autodiff, dce, eliminate_dropout, fuse_conv_relu, fuse_linear_relu, fuse_lrn_pool,
        mem_plan, optimizer,
    };
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(eliminate_dropout::EliminateDropout),
        Box::new(autodiff::Autodiff),
        Box::new(optimizer::Optimizer),
        Box::new(fuse_conv_relu::FuseConvRelu),
        Box::new(fuse_lrn_pool::FuseLrnPool),
        Box::new(fuse_linear_relu::FuseLinearRelu),
        Box::new(dce::Dce),
        Box::new(mem_plan::MemPlan),
    ];
    PassManager::new(passes, options)
}
