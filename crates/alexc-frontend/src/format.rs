//! The model file format: serde types mirroring `docs/model-format.md`.
//!
//! These types are what a model file *says*, before any checking: sizes are
//! `i64` so that a zero or negative size reaches the checker (and gets a
//! diagnostic pointing at it) instead of failing inside the RON parser with a
//! generic message. [`crate::lower`] turns them into graph IR.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A whole model file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename = "Model")]
pub struct ModelSpec {
    /// The model's name, used in dumps and summaries.
    pub name: String,
    /// Free text, printed in the header of `alexc compile`'s summary.
    #[serde(default)]
    pub description: String,
    /// Graph inputs; the first one feeds the first layer by default.
    pub inputs: Vec<InputSpec>,
    /// Default initializers for layers that do not set their own.
    #[serde(default)]
    pub init: InitDefaults,
    /// Layers in file order; each takes the previous layer's output unless it
    /// names its `inputs`.
    pub layers: Vec<LayerSpec>,
    /// Layers whose outputs are the graph outputs (default: the last layer).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Human-readable class names, index = class id (optional).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// How the model trains (`alexc compile --train`, `alexc train`).
    #[serde(default)]
    pub training: TrainingSpec,
}

/// The SGD formula; see `alexc_ir::SgdConvention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum SgdConventionSpec {
    /// `v ← μv − λεw − ε∇, w ← w + v` (the paper; the default).
    #[default]
    Paper,
    /// `v ← μv + ∇ + λw, w ← w − εv` (PyTorch).
    Pytorch,
}

/// The `training` section. Defaults are the paper's: SGD with momentum 0.9
/// and weight decay 5e-4, in the paper's formulation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub convention: SgdConventionSpec,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            momentum: default_momentum(),
            weight_decay: default_weight_decay(),
            convention: SgdConventionSpec::Paper,
        }
    }
}

fn default_momentum() -> f64 {
    0.9
}

fn default_weight_decay() -> f64 {
    5e-4
}

/// A graph input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename = "Input")]
pub struct InputSpec {
    pub name: String,
    /// Dimensions, batch first: `["N", 3, 224, 224]`.
    pub shape: Vec<Dim>,
    /// Per-channel mean subtracted from images scaled to [0, 1] (optional).
    #[serde(default)]
    pub mean: Vec<f64>,
    /// Per-channel standard deviation images are divided by (optional).
    #[serde(default)]
    pub std: Vec<f64>,
}

/// One dimension of an input shape: a size, or the symbolic batch `"N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Batch,
    Fixed(i64),
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DimVisitor;
        impl Visitor<'_> for DimVisitor {
            type Value = Dim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dimension size or \"N\" (the batch)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dim, E> {
                Ok(Dim::Fixed(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dim, E> {
                Ok(Dim::Fixed(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dim, E> {
                if v == "N" {
                    Ok(Dim::Batch)
                } else {
                    Err(E::custom(format!(
                        "unknown symbolic dimension \"{v}\": the only one is \"N\", the batch"
                    )))
                }
            }
        }
        d.deserialize_any(DimVisitor)
    }
}

/// A size pair `(h, w)`, written as one integer when both are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair(pub [i64; 2]);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a pair (height, width)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Pair, E> {
                Ok(Pair([v, v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Pair, E> {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                Ok(Pair([v, v]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                let h: i64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let w: i64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<i64>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Pair([h, w]))
            }
        }
        d.deserialize_any(PairVisitor)
    }
}

/// How a parameter starts out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum InitSpec {
    /// `Normal(mean: 0.0, std: 0.01)`.
    Normal { mean: f64, std: f64 },
    /// `Constant(1.0)`.
    Constant(f64),
    /// `File(path: "weights.safetensors")`, optionally `tensor: "name"`.
    File {
        path: String,
        #[serde(default)]
        tensor: Option<String>,
    },
}

/// Model-wide default initializers. The defaults are the paper's: weights
/// N(0, 0.01), biases 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitDefaults {
    #[serde(default = "default_weight_init")]
    pub weight: InitSpec,
    #[serde(default = "default_bias_init")]
    pub bias: InitSpec,
}

impl Default for InitDefaults {
    fn default() -> Self {
        InitDefaults {
            weight: default_weight_init(),
            bias: default_bias_init(),
        }
    }
}

fn default_weight_init() -> InitSpec {
    InitSpec::Normal {
        mean: 0.0,
        std: 0.01,
    }
}

fn default_bias_init() -> InitSpec {
    InitSpec::Constant(0.0)
}

fn one() -> Pair {
    Pair([1, 1])
}

fn zero() -> Pair {
    Pair([0, 0])
}

fn one_i64() -> i64 {
    1
}

fn yes() -> bool {
    true
}

/// A layer. Each variant is written `Kind(name: "…", …)`.
#[derive(Debug, Clone, Deserialize)]
pub enum LayerSpec {
    Conv2d(Conv2dSpec),
    Relu(PlainSpec),
    Lrn(LrnSpec),
    MaxPool2d(MaxPoolSpec),
    AvgPool2d(AvgPoolSpec),
    Flatten(PlainSpec),
    Linear(LinearSpec),
    Dropout(DropoutSpec),
    Softmax(SoftmaxSpec),
    Concat(AxisSpec),
    Split(SplitSpec),
    Add(PlainSpec),
}

/// A layer without attributes (ReLU, flatten, add).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: Pair,
    #[serde(default = "one")]
    pub stride: Pair,
    #[serde(default = "zero")]
    pub padding: Pair,
    #[serde(default = "one")]
    pub dilation: Pair,
    #[serde(default = "one_i64")]
    pub groups: i64,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default)]
    pub weight_init: Option<InitSpec>,
    #[serde(default)]
    pub bias_init: Option<InitSpec>,
}

/// `alpha_convention` of an LRN layer; see [`alexc_ir::AlphaConvention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AlphaConventionSpec {
    /// α / size multiplies the sum (PyTorch, Caffe). The default.
    #[default]
    DividedBySize,
    /// α multiplies the sum (the paper's formula as printed).
    Absolute,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrnSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub size: i64,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
    #[serde(default)]
    pub alpha_convention: AlphaConventionSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPoolSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub kernel: Pair,
    /// Default: the kernel size (non-overlapping), as PyTorch.
    #[serde(default)]
    pub stride: Option<Pair>,
    #[serde(default = "zero")]
    pub padding: Pair,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPoolSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub kernel: Pair,
    #[serde(default)]
    pub stride: Option<Pair>,
    #[serde(default = "zero")]
    pub padding: Pair,
    #[serde(default = "yes")]
    pub count_include_pad: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub in_features: i64,
    pub out_features: i64,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default)]
    pub weight_init: Option<InitSpec>,
    #[serde(default)]
    pub bias_init: Option<InitSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub p: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default = "one_i64")]
    pub axis: i64,
}

/// Concatenation along `axis` (default 1, channels).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default = "one_i64")]
    pub axis: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    pub sizes: Vec<i64>,
    #[serde(default = "one_i64")]
    pub axis: i64,
}

impl LayerSpec {
    /// The layer's name and its explicit inputs (empty = previous layer).
    pub fn common(&self) -> (&str, &[String]) {
        match self {
            LayerSpec::Conv2d(s) => (&s.name, &s.inputs),
            LayerSpec::Relu(s) | LayerSpec::Flatten(s) | LayerSpec::Add(s) => (&s.name, &s.inputs),
            LayerSpec::Lrn(s) => (&s.name, &s.inputs),
            LayerSpec::MaxPool2d(s) => (&s.name, &s.inputs),
            LayerSpec::AvgPool2d(s) => (&s.name, &s.inputs),
            LayerSpec::Linear(s) => (&s.name, &s.inputs),
            LayerSpec::Dropout(s) => (&s.name, &s.inputs),
            LayerSpec::Softmax(s) => (&s.name, &s.inputs),
            LayerSpec::Concat(s) => (&s.name, &s.inputs),
            LayerSpec::Split(s) => (&s.name, &s.inputs),
        }
    }

    /// The layer kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d(_) => "Conv2d",
            LayerSpec::Relu(_) => "Relu",
            LayerSpec::Lrn(_) => "Lrn",
            LayerSpec::MaxPool2d(_) => "MaxPool2d",
            LayerSpec::AvgPool2d(_) => "AvgPool2d",
            LayerSpec::Flatten(_) => "Flatten",
            LayerSpec::Linear(_) => "Linear",
            LayerSpec::Dropout(_) => "Dropout",
            LayerSpec::Softmax(_) => "Softmax",
            LayerSpec::Concat(_) => "Concat",
            LayerSpec::Split(_) => "Split",
            LayerSpec::Add(_) => "Add",
        }
    }
}
