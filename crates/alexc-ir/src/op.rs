//! The closed set of operations and their attributes.
//!
//! Every op is a variant of [`Op`] holding a named-field attribute struct;
//! passes match on variants, never on strings. Each op declares its
//! [`OpPattern`], the property from which fusion passes derive legality
//! (the classification follows TVM's `OpPatternKind`).
//!
//! Layouts follow PyTorch so that weights exchange without transposes:
//! activations are NCHW, conv weights `[out, in / groups, kh, kw]`, linear
//! weights `[out, in]`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{DType, Shape};

/// How an op's outputs depend on its inputs, coarsest first. Fusion passes
/// decide legality from these classes (a producer may be fused into a consumer
/// when the pair of classes allows it), never from lists of op names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpPattern {
    /// Each output element depends on the input element at the same index
    /// (ReLU, dropout, add).
    ElemWise,
    /// Each output element is one input element at a computable index
    /// (flatten, concat, split).
    Injective,
    /// Each output element reduces a window or an axis of the input
    /// (LRN across channels, softmax, the loss).
    Reduction,
    /// A complex reduction (convolution, matrix product, pooling) whose
    /// outputs can absorb elementwise consumers into its epilogue.
    OutEWiseFusable,
    /// Not fusable: graph sources and sinks.
    Opaque,
}

impl fmt::Display for OpPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpPattern::ElemWise => "elemwise",
            OpPattern::Injective => "injective",
            OpPattern::Reduction => "reduction",
            OpPattern::OutEWiseFusable => "out-elemwise-fusable",
            OpPattern::Opaque => "opaque",
        })
    }
}

/// How a parameter gets its initial value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// Independent samples of N(mean, std²).
    Normal { mean: f64, std: f64 },
    /// Every element set to `value`.
    Constant { value: f64 },
    /// Read from a safetensors file; `tensor` names the entry (default: the
    /// parameter's own name). Relative paths are relative to the model file.
    File {
        path: String,
        tensor: Option<String>,
    },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Normal { mean, std } => write!(f, "normal({mean}, {std})"),
            Init::Constant { value } => write!(f, "constant({value})"),
            Init::File { path, tensor: None } => write!(f, "file({path:?})"),
            Init::File {
                path,
                tensor: Some(t),
            } => write!(f, "file({path:?}, {t:?})"),
        }
    }
}

/// A graph input (images, labels) with its full static shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputAttrs {
    pub dtype: DType,
    pub shape: Shape,
}

/// A learnable tensor, named like PyTorch's state dict (`conv1.weight`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterAttrs {
    pub dtype: DType,
    pub shape: Shape,
    pub init: Init,
}

/// 2-D convolution (cross-correlation, as PyTorch). Operands: input
/// `[N, C, H, W]`, weight `[out_channels, C / groups, kh, kw]`, and when
/// `bias` is set a bias `[out_channels]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dAttrs {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zero padding added to both sides of each spatial dimension.
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

/// How LRN's `alpha` is scaled. The AlexNet paper writes
/// `b = a / (k + α Σ a²)^β`; PyTorch's `nn.LocalResponseNorm` and Caffe use
/// `b = a / (k + (α / n) Σ a²)^β`, which is what the reference AlexNet code
/// (and `models/alexnet.ron`) computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaConvention {
    /// α is divided by the window size `n` (PyTorch, Caffe).
    DividedBySize,
    /// α multiplies the sum directly (the paper's formula).
    Absolute,
}

impl fmt::Display for AlphaConvention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlphaConvention::DividedBySize => "divided-by-size",
            AlphaConvention::Absolute => "absolute",
        })
    }
}

/// Local response normalization across channels:
///
/// `b[c] = a[c] / (k + α' · Σ_{j=lo(c)}^{hi(c)} a[j]²)^β`
///
/// with `lo(c) = max(0, c - size/2)`, `hi(c) = min(C-1, c + (size-1)/2)`
/// (integer division; the window is clipped at the edges, and for odd `size`
/// it is centred), and `α' = α / size` or `α` per [`AlphaConvention`]. With
/// `DividedBySize` the divisor stays `size` at the edges, exactly as PyTorch
/// (which zero-pads and averages over a fixed window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrnAttrs {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
    pub alpha_convention: AlphaConvention,
}

impl LrnAttrs {
    /// The factor that multiplies the windowed sum of squares.
    pub fn effective_alpha(&self) -> f64 {
        match self.alpha_convention {
            AlphaConvention::DividedBySize => self.alpha / self.size as f64,
            AlphaConvention::Absolute => self.alpha,
        }
    }

    /// Inclusive channel window `[lo, hi]` for output channel `c` of
    /// `channels` (`c < channels`; shape inference guarantees `size ≥ 1`).
    pub fn window(&self, c: usize, channels: usize) -> (usize, usize) {
        let lo = c.saturating_sub(self.size / 2);
        let hi = c
            .saturating_add(self.size.saturating_sub(1) / 2)
            .min(channels.saturating_sub(1));
        (lo, hi)
    }
}

/// Max pooling over `kernel` windows. Padding is implicit `-inf`, as PyTorch;
/// output size `floor((H + 2p - k) / s) + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2dAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// Average pooling. With `count_include_pad` the divisor is always
/// `kh * kw` (PyTorch's default); otherwise it counts only in-bounds elements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvgPool2dAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub count_include_pad: bool,
}

/// Fully connected layer `y = x Wᵀ + b`. Operands: input `[N, in]`, weight
/// `[out_features, in]`, and when `bias` is set a bias `[out_features]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearAttrs {
    pub out_features: usize,
    pub bias: bool,
}

/// Dropout with drop probability `p`. In training each element is zeroed with
/// probability `p` and the survivors are scaled by `1 / (1 - p)` ("inverted"
/// dropout, as PyTorch); in evaluation it is the identity. The paper instead
/// multiplies by `1 - p` at test time; the two agree in expectation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropoutAttrs {
    pub p: f64,
}

/// Softmax along `axis`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftmaxAttrs {
    pub axis: usize,
}

/// Concatenation of all operands along `axis` (1 = channels).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcatAttrs {
    pub axis: usize,
}

/// Split of one operand along `axis` into consecutive pieces of `sizes`;
/// one result per piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitAttrs {
    pub axis: usize,
    pub sizes: Vec<usize>,
}

/// A reshape to `shape` (same element count); the gradient of flatten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshapeAttrs {
    pub shape: Shape,
}

/// A dropout mask, supplied by the runtime on every training step: each
/// element is 0 with probability `p`, else `1 / (1 - p)`. Masks are inputs
/// rather than generated in kernels so that every backend and the reference
/// interpreter use bit-identical masks: the runtime draws the mask of
/// dropout layer `key` from `alexc_tensor::rng::named_rng(step seed, key)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropoutMaskAttrs {
    pub p: f64,
    pub shape: Shape,
    /// The dropout layer the mask belongs to (its RNG stream).
    pub key: String,
}

/// A momentum buffer of the optimizer: state that persists across steps,
/// zero at the start of training, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MomentumAttrs {
    pub dtype: DType,
    pub shape: Shape,
    /// The parameter whose momentum this is (`conv1.weight`).
    pub of: String,
}

/// LRN followed by max-pooling, fused: the pool's windows read LRN values
/// computed on the fly, never stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrnMaxPoolAttrs {
    pub lrn: LrnAttrs,
    pub pool: Pool2dAttrs,
}

/// Linear + bias + ReLU, fused; with `dropout` the result is also
/// multiplied by a dropout mask (an extra last operand, `[N, out]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearReluAttrs {
    pub linear: LinearAttrs,
    pub dropout: bool,
}

/// Gradients of a convolution. Operands: the forward input `x`, the weight
/// `w` (for the ReLU-fused twin, also the fused output `y`) and the gradient
/// `dy` of the output; results, in order: `dx` (only if `input_grad`),
/// `dw`, and `db` (only if the convolution has a bias).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dBackwardAttrs {
    pub conv: Conv2dAttrs,
    /// Whether `dx` is computed (not for a layer reading the graph input).
    pub input_grad: bool,
}

/// Gradients of a linear layer; operands and results as for
/// [`Conv2dBackwardAttrs`]. With `relu`, the operands are `x, w, y, dy`
/// where `y` is the fused forward output (the ReLU-backward is folded in);
/// with `dropout` (only with `relu`) also the mask: `x, w, y, mask, dy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearBackwardAttrs {
    pub linear: LinearAttrs,
    pub input_grad: bool,
    pub relu: bool,
    pub dropout: bool,
}

/// Which SGD formula the optimizer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SgdConvention {
    /// The paper: `v ← μv − λεw − ε∇`, `w ← w + v`.
    Paper,
    /// PyTorch: `v ← μv + ∇ + λw`, `w ← w − εv`.
    Pytorch,
}

impl fmt::Display for SgdConvention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SgdConvention::Paper => "paper",
            SgdConvention::Pytorch => "pytorch",
        })
    }
}

/// One SGD-with-momentum step for one parameter. Operands: the parameter
/// `w`, its momentum `v`, the gradient `g`, the learning rate `lr` (a scalar
/// graph input, so schedules need no recompilation). Results: the new `w`
/// and `v`, written in place over the operands' buffers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdAttrs {
    pub momentum: f64,
    pub weight_decay: f64,
    pub convention: SgdConvention,
}

/// An operation of the graph IR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// A value supplied by the caller on every run.
    Input(InputAttrs),
    /// A learnable tensor.
    Parameter(ParameterAttrs),
    Conv2d(Conv2dAttrs),
    Relu,
    Lrn(LrnAttrs),
    MaxPool2d(Pool2dAttrs),
    AvgPool2d(AvgPool2dAttrs),
    /// `[N, d1, d2, …] → [N, d1·d2·…]`.
    Flatten,
    Linear(LinearAttrs),
    Dropout(DropoutAttrs),
    Softmax(SoftmaxAttrs),
    Concat(ConcatAttrs),
    Split(SplitAttrs),
    /// Elementwise sum of two operands of the same type.
    Add,
    /// Mean over the batch of `-log softmax(logits)[label]`. Operands: logits
    /// `[N, C]` (f32) and labels `[N]` (i64, each in `0..C`); result: a scalar.
    SoftmaxCrossEntropy,

    // Training graphs: sources supplied by the runtime, and elementwise helpers.
    /// A dropout mask input (training graphs).
    DropoutMask(DropoutMaskAttrs),
    /// An optimizer momentum buffer (training graphs).
    Momentum(MomentumAttrs),
    /// Elementwise product of two operands of the same type.
    Mul,
    Reshape(ReshapeAttrs),

    // Fused forward ops (created by the fusion passes).
    /// conv2d + bias + ReLU in one node; operands as conv2d.
    ConvRelu(Conv2dAttrs),
    /// LRN + max-pool in one node; operand: the LRN input.
    LrnMaxPool(LrnMaxPoolAttrs),
    /// linear + bias + ReLU (+ dropout mask) in one node.
    LinearRelu(LinearReluAttrs),

    // Backward ops (created by autodiff; the *Relu* ones by fusion).
    /// `dx = dy · [y > 0]`; operands `y` (the ReLU output), `dy`.
    ReluBackward,
    Conv2dBackward(Conv2dBackwardAttrs),
    /// Conv backward with the ReLU-backward folded in; operands `x, w, y, dy`.
    ConvReluBackward(Conv2dBackwardAttrs),
    LinearBackward(LinearBackwardAttrs),
    /// Gradient of LRN; operands: the LRN input `x`, `dy`.
    LrnBackward(LrnAttrs),
    /// Gradient of max-pool (ties go to the first maximum in row-major window
    /// order, as PyTorch); operands: the pool input `x`, `dy`.
    MaxPool2dBackward(Pool2dAttrs),
    /// Gradient of avg-pool; operands: the pool input `x` (for its shape), `dy`.
    AvgPool2dBackward(AvgPool2dAttrs),
    /// Gradient of the fused LRN + max-pool; operands: the LRN input `x`, `dy`.
    LrnMaxPoolBackward(LrnMaxPoolAttrs),
    /// Gradient of softmax; operands: the softmax output `y`, `dy`.
    SoftmaxBackward(SoftmaxAttrs),
    /// Gradient of the mean cross-entropy with respect to the logits,
    /// `(softmax(logits) - onehot(labels)) / N`; operands: logits, labels.
    SoftmaxCrossEntropyBackward,
    /// One optimizer step for one parameter, in place.
    SgdUpdate(SgdAttrs),
}

impl Op {
    /// The op's name in the text IR (`conv2d`, `max-pool2d`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Parameter(_) => "parameter",
            Op::Conv2d(_) => "conv2d",
            Op::Relu => "relu",
            Op::Lrn(_) => "lrn",
            Op::MaxPool2d(_) => "max-pool2d",
            Op::AvgPool2d(_) => "avg-pool2d",
            Op::Flatten => "flatten",
            Op::Linear(_) => "linear",
            Op::Dropout(_) => "dropout",
            Op::Softmax(_) => "softmax",
            Op::Concat(_) => "concat",
            Op::Split(_) => "split",
            Op::Add => "add",
            Op::SoftmaxCrossEntropy => "softmax-cross-entropy",
            Op::DropoutMask(_) => "dropout-mask",
            Op::Momentum(_) => "momentum",
            Op::Mul => "mul",
            Op::Reshape(_) => "reshape",
            Op::ConvRelu(_) => "conv2d+relu",
            Op::LrnMaxPool(_) => "lrn+max-pool2d",
            Op::LinearRelu(a) if a.dropout => "linear+relu+dropout",
            Op::LinearRelu(_) => "linear+relu",
            Op::ReluBackward => "relu-backward",
            Op::Conv2dBackward(_) => "conv2d-backward",
            Op::ConvReluBackward(_) => "conv2d+relu-backward",
            Op::LinearBackward(a) => match (a.relu, a.dropout) {
                (false, _) => "linear-backward",
                (true, false) => "linear+relu-backward",
                (true, true) => "linear+relu+dropout-backward",
            },
            Op::LrnBackward(_) => "lrn-backward",
            Op::MaxPool2dBackward(_) => "max-pool2d-backward",
            Op::AvgPool2dBackward(_) => "avg-pool2d-backward",
            Op::LrnMaxPoolBackward(_) => "lrn+max-pool2d-backward",
            Op::SoftmaxBackward(_) => "softmax-backward",
            Op::SoftmaxCrossEntropyBackward => "softmax-cross-entropy-backward",
            Op::SgdUpdate(_) => "sgd-update",
        }
    }

    /// The op's fusion pattern class.
    pub fn pattern(&self) -> OpPattern {
        match self {
            Op::Input(_) | Op::Parameter(_) | Op::DropoutMask(_) | Op::Momentum(_) => {
                OpPattern::Opaque
            }
            Op::Relu | Op::Dropout(_) | Op::Add | Op::Mul | Op::ReluBackward => OpPattern::ElemWise,
            Op::Flatten | Op::Concat(_) | Op::Split(_) | Op::Reshape(_) => OpPattern::Injective,
            Op::Lrn(_)
            | Op::Softmax(_)
            | Op::SoftmaxCrossEntropy
            | Op::LrnBackward(_)
            | Op::SoftmaxBackward(_)
            | Op::SoftmaxCrossEntropyBackward => OpPattern::Reduction,
            Op::Conv2d(_)
            | Op::Linear(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::ConvRelu(_)
            | Op::LrnMaxPool(_)
            | Op::LinearRelu(_)
            | Op::Conv2dBackward(_)
            | Op::ConvReluBackward(_)
            | Op::LinearBackward(_) => OpPattern::OutEWiseFusable,
            // Scatters: each input gradient element sums over the windows
            // that contain it.
            Op::MaxPool2dBackward(_) | Op::AvgPool2dBackward(_) | Op::LrnMaxPoolBackward(_) => {
                OpPattern::Opaque
            }
            // Elementwise in arithmetic, but it writes persistent state in
            // place: never fused into another op's epilogue.
            Op::SgdUpdate(_) => OpPattern::Opaque,
        }
    }

    /// `(result, operand)` pairs where the result must be written over the
    /// operand's buffer (the optimizer's in-place updates).
    pub fn in_place(&self) -> &'static [(usize, usize)] {
        match self {
            Op::SgdUpdate(_) => &[(0, 0), (1, 1)],
            _ => &[],
        }
    }

    /// Whether the node must run even when nothing reads its results
    /// (in-place state updates).
    pub fn has_side_effects(&self) -> bool {
        matches!(self, Op::SgdUpdate(_))
    }

    /// Number of operands the op takes, or `None` if variadic (concat: ≥ 1).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input(_) | Op::Parameter(_) | Op::DropoutMask(_) | Op::Momentum(_) => Some(0),
            Op::Conv2d(a) | Op::ConvRelu(a) => Some(if a.bias { 3 } else { 2 }),
            Op::Linear(a) => Some(if a.bias { 3 } else { 2 }),
            Op::LinearRelu(a) => Some(2 + a.linear.bias as usize + a.dropout as usize),
            Op::Conv2dBackward(_) => Some(3),
            Op::ConvReluBackward(_) => Some(4),
            Op::LinearBackward(a) => Some(3 + a.relu as usize + a.dropout as usize),
            Op::Reshape(_) | Op::LrnMaxPool(_) => Some(1),
            Op::Mul
            | Op::ReluBackward
            | Op::LrnBackward(_)
            | Op::MaxPool2dBackward(_)
            | Op::AvgPool2dBackward(_)
            | Op::LrnMaxPoolBackward(_)
            | Op::SoftmaxBackward(_)
            | Op::SoftmaxCrossEntropyBackward => Some(2),
            Op::SgdUpdate(_) => Some(4),
            Op::Relu
            | Op::Lrn(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::Flatten
            | Op::Dropout(_)
            | Op::Softmax(_)
            | Op::Split(_) => Some(1),
            Op::Add | Op::SoftmaxCrossEntropy => Some(2),
            Op::Concat(_) => None,
        }
    }

    /// Number of results the op produces.
    pub fn num_results(&self) -> usize {
        match self {
            Op::Split(a) => a.sizes.len(),
            Op::Conv2dBackward(a) | Op::ConvReluBackward(a) => {
                1 + a.input_grad as usize + a.conv.bias as usize
            }
            Op::LinearBackward(a) => 1 + a.input_grad as usize + a.linear.bias as usize,
            Op::SgdUpdate(_) => 2,
            _ => 1,
        }
    }

    /// Whether the op is a graph source (no operands: inputs, parameters,
    /// dropout masks, momentum buffers).
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input(_) | Op::Parameter(_) | Op::DropoutMask(_) | Op::Momentum(_)
        )
    }

    /// Attributes in text-IR form: `kernel=11x11, stride=4x4, …`. Empty for
    /// ops without attributes. Stable: snapshot tests depend on it.
    pub fn attr_string(&self) -> String {
        fn hw(v: [usize; 2]) -> String {
            format!("{}x{}", v[0], v[1])
        }
        match self {
            Op::Input(_)
            | Op::Relu
            | Op::Flatten
            | Op::Add
            | Op::SoftmaxCrossEntropy
            | Op::Mul
            | Op::ReluBackward
            | Op::SoftmaxCrossEntropyBackward => String::new(),
            Op::DropoutMask(a) => format!("p={}, key={:?}", a.p, a.key),
            Op::Momentum(a) => format!("of={:?}", a.of),
            Op::Reshape(a) => format!("shape={}", a.shape),
            Op::ConvRelu(a) => Op::Conv2d(a.clone()).attr_string(),
            Op::LrnMaxPool(a) => format!(
                "{}; {}",
                Op::Lrn(a.lrn.clone()).attr_string(),
                Op::MaxPool2d(a.pool.clone()).attr_string()
            ),
            Op::LinearRelu(a) => Op::Linear(a.linear.clone()).attr_string(),
            Op::Conv2dBackward(a) | Op::ConvReluBackward(a) => format!(
                "{}, input-grad={}",
                Op::Conv2d(a.conv.clone()).attr_string(),
                a.input_grad
            ),
            Op::LinearBackward(a) => format!(
                "{}, input-grad={}",
                Op::Linear(a.linear.clone()).attr_string(),
                a.input_grad
            ),
            Op::LrnBackward(a) => Op::Lrn(a.clone()).attr_string(),
            Op::MaxPool2dBackward(a) => Op::MaxPool2d(a.clone()).attr_string(),
            Op::AvgPool2dBackward(a) => Op::AvgPool2d(a.clone()).attr_string(),
            Op::LrnMaxPoolBackward(a) => Op::LrnMaxPool(a.clone()).attr_string(),
            Op::SoftmaxBackward(a) => Op::Softmax(a.clone()).attr_string(),
            Op::SgdUpdate(a) => format!(
                "momentum={}, weight-decay={}, convention={}",
                a.momentum, a.weight_decay, a.convention
            ),
            Op::Parameter(a) => format!("init={}", a.init),
            Op::Conv2d(a) => format!(
                "out={}, kernel={}, stride={}, padding={}, dilation={}, groups={}, bias={}",
                a.out_channels,
                hw(a.kernel),
                hw(a.stride),
                hw(a.padding),
                hw(a.dilation),
                a.groups,
                a.bias
            ),
            Op::Lrn(a) => format!(
                "size={}, alpha={}, beta={}, k={}, alpha-convention={}",
                a.size, a.alpha, a.beta, a.k, a.alpha_convention
            ),
            Op::MaxPool2d(a) => format!(
                "kernel={}, stride={}, padding={}",
                hw(a.kernel),
                hw(a.stride),
                hw(a.padding)
            ),
            Op::AvgPool2d(a) => format!(
                "kernel={}, stride={}, padding={}, count-include-pad={}",
                hw(a.kernel),
                hw(a.stride),
                hw(a.padding),
                a.count_include_pad
            ),
            Op::Linear(a) => format!("out={}, bias={}", a.out_features, a.bias),
            Op::Dropout(a) => format!("p={}", a.p),
            Op::Softmax(a) => format!("axis={}", a.axis),
            Op::Concat(a) => format!("axis={}", a.axis),
            Op::Split(a) => format!(
                "axis={}, sizes=[{}]",
                a.axis,
                a.sizes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
