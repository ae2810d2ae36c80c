//! The host tensor: a row-major shape and a flat vector of elements.
//!
//! [`Tensor`] is deliberately plain — no strides, no views, no device — because
//! it is the exchange type between file formats, the reference interpreter
//! and the runtime's host side, and everything that reads it can then index
//! `data[((n * C + c) * H + h) * W + w]` without asking how it is laid out.
//!
//! The one invariant, `data.len() == product(shape)`, is checked by every
//! constructor, which returns an error instead of panicking, because shapes
//! and data come from files. Constructors that allocate also refuse more than
//! [`alexc_ir::MAX_ELEMENTS`] elements, the same limit the graph IR puts on
//! every tensor, so a hostile header cannot make us allocate terabytes.

use num_traits::{AsPrimitive, Zero};

/// Why a tensor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has {expected} elements, but {found} values were given")]
    LengthMismatch {
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error(
        "shape {shape:?} has more than {} elements, the limit per tensor",
        alexc_ir::MAX_ELEMENTS
    )]
    TooLarge { shape: Vec<usize> },
}

/// The number of elements of `shape`, or an error if it overflows or exceeds
/// [`alexc_ir::MAX_ELEMENTS`]. The empty shape is a scalar with one element.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= alexc_ir::MAX_ELEMENTS)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
        })
}

/// A dense row-major tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T> Tensor<T> {
    /// Wraps `data` as a tensor of `shape`; fails unless the lengths agree.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<T>) -> Result<Self, TensorError> {
        let shape = shape.into();
        let expected = element_count(&shape)?;
        if data.len() != expected {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                found: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: T) -> Self {
        Tensor {
            shape: Vec::new(),
            data: vec![value],
        }
    }

    /// A tensor whose element at flat (row-major) index `i` is `f(i)`.
    pub fn from_flat_fn(
        shape: impl Into<Vec<usize>>,
        f: impl FnMut(usize) -> T,
    ) -> Result<Self, TensorError> {
        let shape = shape.into();
        let n = element_count(&shape)?;
        Ok(Tensor {
            shape,
            data: (0..n).map(f).collect(),
        })
    }

    /// A tensor whose element at multi-index `idx` is `f(idx)`; indices are
    /// visited in row-major order.
    pub fn from_fn(
        shape: impl Into<Vec<usize>>,
        mut f: impl FnMut(&[usize]) -> T,
    ) -> Result<Self, TensorError> {
        let shape = shape.into();
        let n = element_count(&shape)?;
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            data.push(f(&idx));
            // Odometer increment: the last axis moves fastest.
            for axis in (0..shape.len()).rev() {
                idx[axis] += 1;
                if idx[axis] < shape[axis] {
                    break;
                }
                idx[axis] = 0;
            }
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of `shape` with every element equal to `value`.
    pub fn full(shape: impl Into<Vec<usize>>, value: T) -> Result<Self, TensorError>
    where
        T: Clone,
    {
        let shape = shape.into();
        let n = element_count(&shape)?;
        Ok(Tensor {
            shape,
            data: vec![value; n],
        })
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: impl Into<Vec<usize>>) -> Result<Self, TensorError>
    where
        T: Zero + Clone,
    {
        Self::full(shape, T::zero())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, Vec<T>) {
        (self.shape, self.data)
    }

    /// The row-major flat index of `idx`, or `None` if it has the wrong rank
    /// or is out of bounds.
    pub fn offset(&self, idx: &[usize]) -> Option<usize> {
        if idx.len() != self.shape.len() {
            return None;
        }
        let mut off = 0;
        for (&i, &d) in idx.iter().zip(&self.shape) {
            if i >= d {
                return None;
            }
            off = off * d + i;
        }
        Some(off)
    }

    /// The element at multi-index `idx`, if in bounds.
    pub fn get(&self, idx: &[usize]) -> Option<&T> {
        self.offset(idx).map(|o| &self.data[o])
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self, TensorError> {
        Tensor::new(shape, self.data)
    }

    /// Applies `f` to every element.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(f).collect(),
        }
    }

    /// Converts every element with Rust's `as` semantics (f64 → f32 rounds to
    /// nearest; out-of-range values become ±inf).
    pub fn cast<U>(&self) -> Tensor<U>
    where
        T: AsPrimitive<U>,
        U: Copy + 'static,
    {
        self.map(|&x| x.as_())
    }
}
