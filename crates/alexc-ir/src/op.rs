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
        }
    }

    /// The op's fusion pattern class.
    pub fn pattern(&self) -> OpPattern {
        match self {
            Op::Input(_) | Op::Parameter(_) => OpPattern::Opaque,
            Op::Relu | Op::Dropout(_) | Op::Add => OpPattern::ElemWise,
            Op::Flatten | Op::Concat(_) | Op::Split(_) => OpPattern::Injective,
            Op::Lrn(_) | Op::Softmax(_) | Op::SoftmaxCrossEntropy => OpPattern::Reduction,
            Op::Conv2d(_) | Op::Linear(_) | Op::MaxPool2d(_) | Op::AvgPool2d(_) => {
                OpPattern::OutEWiseFusable
            }
        }
    }

    /// Number of operands the op takes, or `None` if variadic (concat: ≥ 1).
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input(_) | Op::Parameter(_) => Some(0),
            Op::Conv2d(a) => Some(if a.bias { 3 } else { 2 }),
            Op::Linear(a) => Some(if a.bias { 3 } else { 2 }),
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
            _ => 1,
        }
    }

    /// Whether the op is a graph source (input or parameter).
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input(_) | Op::Parameter(_))
    }

    /// Attributes in text-IR form: `kernel=11x11, stride=4x4, …`. Empty for
    /// ops without attributes. Stable: snapshot tests depend on it.
    pub fn attr_string(&self) -> String {
        fn hw(v: [usize; 2]) -> String {
            format!("{}x{}", v[0], v[1])
        }
        match self {
            Op::Input(_) | Op::Relu | Op::Flatten | Op::Add | Op::SoftmaxCrossEntropy => {
                String::new()
            }
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
