//! Element types, static shapes and tensor types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest element count a single tensor may have (2^31 − 1, 8 GiB of
/// f32). Sizes are checked against it before anything is allocated, so a
/// model file cannot make alexc allocate absurd amounts of memory, and
/// generated code may hold any element count, offset or one-past-the-end
/// index of a tensor in a signed 32-bit integer (CUDA's `int`).
pub const MAX_ELEMENTS: u64 = (1 << 31) - 1;

/// The largest rank the IR accepts.
pub const MAX_RANK: usize = 8;

/// Element type. `f32` is what every op computes in today; `i64` carries
/// integer class labels. The enum is the extension point for bf16/f16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

/// A static shape, outermost dimension first (NCHW for images).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of elements, or `None` if the product overflows `u64`.
    pub fn checked_elements(&self) -> Option<u64> {
        self.0
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
    }

    /// Number of elements. Only call on shapes that passed [`Shape::check`]
    /// (every shape in a built graph has).
    pub fn elements(&self) -> usize {
        self.0.iter().product()
    }

    /// Checks that the shape is a legal tensor shape: rank at most
    /// [`MAX_RANK`], no zero dimension, and at most [`MAX_ELEMENTS`] elements.
    pub fn check(&self) -> Result<(), String> {
        if self.rank() > MAX_RANK {
            return Err(format!(
                "rank {} exceeds the limit of {MAX_RANK}",
                self.rank()
            ));
        }
        if let Some(axis) = self.0.iter().position(|&d| d == 0) {
            return Err(format!("dimension {axis} of {self} is zero"));
        }
        match self.checked_elements() {
            Some(n) if n <= MAX_ELEMENTS => Ok(()),
            Some(n) => Err(format!(
                "{self} has {n} elements, more than the limit of {MAX_ELEMENTS} per tensor"
            )),
            None => Err(format!("the element count of {self} overflows 64 bits")),
        }
    }

    /// The dimensions after the batch dimension, written `256×13×13` as in
    /// diagnostics ("pool1 produces 256×13×13"). A rank-1 shape prints its one
    /// dimension, a scalar prints `scalar`.
    pub fn sample(&self) -> String {
        match self.0.as_slice() {
            [] => "scalar".to_string(),
            [d] => d.to_string(),
            [_, rest @ ..] => rest
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×"),
        }
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: element type and static shape, printed `f32[1, 96, 55, 55]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        TensorType::new(DType::F32, Shape(shape.into()))
    }

    /// Size in bytes of a buffer holding this value.
    pub fn size_bytes(&self) -> usize {
        self.shape.elements() * self.dtype.size_bytes()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
