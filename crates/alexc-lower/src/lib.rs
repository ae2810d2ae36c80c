//! Lowering: every graph IR node — plain, fused, backward and optimizer
//! update — becomes one or more kernel IR [`Kernel`]s. This is the only
//! place ops are implemented for compiled execution; backends translate
//! kernel IR and know nothing of ops.
//!
//! A lowered kernel comes with its [`Arg`]s: for each kernel parameter,
//! which operand or result of the node (or which scratch workspace) the
//! plan binds to it. Results of in-place ops (the SGD update) are written
//! through the operand they alias, so their kernels take that operand as a
//! `ReadWrite` parameter and no result parameter.
//!
//! Modules: [`elementwise`] (ReLU, mul, add, reshape/flatten, dropout, SGD,
//! ReLU-backward), [`data`] (concat, split), [`reduce`] (softmax, the loss
//! and their gradients, bias gradients), [`window`] (LRN, pooling, the fused
//! LRN + max-pool, and their gradients), [`gemm`] (convolution and linear
//! layers with their fused epilogues, forward and backward).

pub mod data;
pub mod elementwise;
pub mod exec;
pub mod gemm;
pub mod reduce;
pub mod window;

use alexc_ir::{Graph, NodeId, Op};
use alexc_kernel::Kernel;
use serde::{Deserialize, Serialize};

/// What the plan binds to one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    /// Operand `i` of the node.
    Operand(usize),
    /// Result `i` of the node.
    Result(usize),
    /// Scratch memory of this many f32 elements (im2col columns, packed
    /// panels), allocated by the runtime, contents undefined on entry.
    Workspace { elements: usize },
}

/// A kernel and the bindings of its parameters (in parameter order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoweredKernel {
    pub kernel: Kernel,
    pub args: Vec<Arg>,
}

/// Target-dependent choices the lowering makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowerOptions {
    /// f32 lanes of the target's vectors (8 for AVX2, 16 for AVX-512).
    pub vector_width: u32,
    /// Mark outer loops parallel (the runtime splits them across threads).
    pub parallel: bool,
}

impl LowerOptions {
    /// The lowering for a GPU (SIMT) target: convolutions and linear layers
    /// become block-tiled GEMMs with shared-memory tiles and per-thread
    /// register tiles (`gemm/gpu.rs`), LRN and max-pooling (plain, fused,
    /// backward) one thread per element with no thread-private buffers
    /// (`window/gpu.rs`), staging loops and every other op one parallel
    /// iteration (one thread) per element or per line, with no vector loops.
    ///
    /// Spelled `vector_width: 0` ("no SIMD lanes") rather than a new field,
    /// so that the struct keeps the shape every backend and test already
    /// constructs literally; no CPU option set uses width 0, so CPU output
    /// is unchanged. Use this constructor and [`LowerOptions::is_gpu`]
    /// instead of the spelling.
    pub const fn gpu() -> LowerOptions {
        LowerOptions {
            vector_width: 0,
            parallel: true,
        }
    }

    /// Whether these are the GPU options ([`LowerOptions::gpu`]).
    pub const fn is_gpu(&self) -> bool {
        self.vector_width == 0
    }
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            vector_width: 8,
            parallel: true,
        }
    }
}

/// The options of an op without a GPU lowering of its own on a GPU: its CPU
/// loop nest at one lane.
pub(crate) const GPU_SCALAR: LowerOptions = LowerOptions {
    vector_width: 1,
    parallel: true,
};

/// Why a node could not be lowered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("node {0} does not exist")]
    UnknownNode(NodeId),
    #[error("`{node}` ({op}): {message}")]
    Invalid {
        node: String,
        op: &'static str,
        message: String,
    },
}

/// Lowers node `id` of `graph`. Sources (inputs, parameters, masks,
/// momentum) lower to no kernel: the runtime binds them.
pub fn lower_node(
    graph: &Graph,
    id: NodeId,
    options: &LowerOptions,
) -> Result<Vec<LoweredKernel>, LowerError> {
    let node = graph.get(id).ok_or(LowerError::UnknownNode(id))?;
    if node.op.is_source() {
        return Ok(Vec::new());
    }
    // On a GPU the GEMMs and the window ops have lowerings of their own
    // (`gemm/gpu.rs`, `window/gpu.rs`); every other op keeps its CPU loop
    // nest at one lane, whose parallel loop runs one element or line per
    // thread.
    let has_gpu_lowering = matches!(
        node.op,
        Op::Conv2d(_)
            | Op::ConvRelu(_)
            | Op::Linear(_)
            | Op::LinearRelu(_)
            | Op::Conv2dBackward(_)
            | Op::ConvReluBackward(_)
            | Op::LinearBackward(_)
            | Op::Lrn(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::LrnMaxPool(_)
            | Op::LrnBackward(_)
            | Op::MaxPool2dBackward(_)
            | Op::AvgPool2dBackward(_)
            | Op::LrnMaxPoolBackward(_)
    );
    let options = if options.is_gpu() && !has_gpu_lowering {
        &GPU_SCALAR
    } else {
        options
    };
    let ctx = NodeCtx { graph, id, options };
    match &node.op {
        Op::Relu
        | Op::Mul
        | Op::Add
        | Op::Flatten
        | Op::Reshape(_)
        | Op::Dropout(_)
        | Op::ReluBackward
        | Op::SgdUpdate(_) => elementwise::lower(&ctx),
        Op::Concat(_) | Op::Split(_) => data::lower(&ctx),
        Op::Softmax(_)
        | Op::SoftmaxCrossEntropy
        | Op::SoftmaxBackward(_)
        | Op::SoftmaxCrossEntropyBackward => reduce::lower(&ctx),
        Op::Lrn(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::LrnMaxPool(_)
        | Op::LrnBackward(_)
        | Op::MaxPool2dBackward(_)
        | Op::AvgPool2dBackward(_)
        | Op::LrnMaxPoolBackward(_) => window::lower(&ctx),
        Op::Conv2d(_)
        | Op::ConvRelu(_)
        | Op::Linear(_)
        | Op::LinearRelu(_)
        | Op::Conv2dBackward(_)
        | Op::ConvReluBackward(_)
        | Op::LinearBackward(_) => gemm::lower(&ctx),
        Op::Input(_) | Op::Parameter(_) | Op::DropoutMask(_) | Op::Momentum(_) => Ok(Vec::new()),
    }
}

/// What a module's lowering function gets: the node and its surroundings.
#[derive(Clone, Copy, Debug)]
pub struct NodeCtx<'a> {
    pub graph: &'a Graph,
    pub id: NodeId,
    pub options: &'a LowerOptions,
}

impl NodeCtx<'_> {
    pub fn node(&self) -> &alexc_ir::Node {
        &self.graph[self.id]
    }

    /// Shape of operand `i`.
    pub fn operand_shape(&self, i: usize) -> Result<Vec<usize>, LowerError> {
        self.graph
            .operands(self.id)
            .get(i)
            .and_then(|v| self.graph.value_type(*v))
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| self.invalid(format!("operand {i} is missing")))
    }

    /// Shape of result `i`.
    pub fn result_shape(&self, i: usize) -> Result<Vec<usize>, LowerError> {
        self.node()
            .outputs
            .get(i)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| self.invalid(format!("result {i} is missing")))
    }

    pub fn invalid(&self, message: impl Into<String>) -> LowerError {
        let node = self.node();
        LowerError::Invalid {
            node: node.name.clone(),
            op: node.op.name(),
            message: message.into(),
        }
    }
}
