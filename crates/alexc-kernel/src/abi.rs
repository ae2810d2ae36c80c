//! The host side of the calling convention every CPU backend compiles a
//! kernel to: `fn(args: *const *mut u8)`, where `args[i]` is the base
//! pointer of the kernel's `i`-th parameter buffer. A [`BufferArg`] is one
//! such buffer as a caller holds it.
//!
//! Generated code does no bounds checks: it trusts that buffer `i` holds
//! exactly the elements parameter `i` declares. Every backend's checked call
//! therefore compares its arguments with the kernel's [`Signature`] first
//! ([`Signature::check`]); the check and its error ([`ArgError`], which
//! each backend's error type wraps) live here, once, so that the backends
//! cannot drift apart on what "fits" means or how a misfit is reported.

use crate::{DType, Kernel};

/// One argument buffer of a kernel call.
#[derive(Debug)]
pub enum BufferArg<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
}

impl BufferArg<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            BufferArg::F32(_) => DType::F32,
            BufferArg::I64(_) => DType::I64,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            BufferArg::F32(b) => b.len(),
            BufferArg::I64(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base pointer generated code receives.
    pub fn as_ptr(&mut self) -> *mut u8 {
        match self {
            BufferArg::F32(b) => b.as_mut_ptr().cast(),
            BufferArg::I64(b) => b.as_mut_ptr().cast(),
        }
    }
}

/// One kernel parameter as a caller must supply it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSig {
    pub name: String,
    pub dtype: DType,
    /// Elements.
    pub len: usize,
}

/// A kernel's parameters in calling-convention order: what a backend keeps
/// of a kernel after compiling it, to check calls against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub kernel: String,
    pub params: Vec<ParamSig>,
}

/// Why the arguments of a call do not fit the kernel's parameters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("kernel `{kernel}` takes {expected} buffers, got {got}")]
    Count {
        kernel: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "kernel `{kernel}`, parameter {index} (`{name}`): expected \
         {expected_dtype}[{expected_len}], got {got_dtype}[{got_len}]"
    )]
    Mismatch {
        kernel: String,
        index: usize,
        name: String,
        expected_dtype: DType,
        expected_len: usize,
        got_dtype: DType,
        got_len: usize,
    },
}

impl Signature {
    /// The signature of `kernel`: its `Param` buffers in declaration order.
    pub fn of(kernel: &Kernel) -> Signature {
        Signature {
            kernel: kernel.name.clone(),
            params: kernel
                .params()
                .map(|(_, d)| ParamSig {
                    name: d.name.clone(),
                    dtype: d.dtype,
                    len: d.elements(),
                })
                .collect(),
        }
    }

    /// A call passes `got` buffers: the one check possible on raw pointers.
    pub fn check_count(&self, got: usize) -> Result<(), ArgError> {
        if got == self.params.len() {
            Ok(())
        } else {
            Err(ArgError::Count {
                kernel: self.kernel.clone(),
                expected: self.params.len(),
                got,
            })
        }
    }

    /// `args` fit the parameters: as many, each of the declared dtype and
    /// length. The first difference is the error.
    pub fn check(&self, args: &[BufferArg<'_>]) -> Result<(), ArgError> {
        self.check_count(args.len())?;
        for (index, (arg, sig)) in args.iter().zip(&self.params).enumerate() {
            if arg.dtype() != sig.dtype || arg.len() != sig.len {
                return Err(ArgError::Mismatch {
                    kernel: self.kernel.clone(),
                    index,
                    name: sig.name.clone(),
                    expected_dtype: sig.dtype,
                    expected_len: sig.len,
                    got_dtype: arg.dtype(),
                    got_len: arg.len(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, KernelBuilder, Schedule};

    fn signature() -> Signature {
        let mut k = KernelBuilder::new("k");
        k.param("x", DType::F32, &[2, 3], Access::Read);
        k.local("tile", DType::F32, &[4]);
        k.param("labels", DType::I64, &[2], Access::Write);
        Signature::of(&k.finish(Vec::new(), Schedule::default()))
    }

    #[test]
    fn the_signature_lists_parameters_not_locals() {
        let sig = signature();
        assert_eq!(sig.kernel, "k");
        let params: Vec<_> = sig
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.dtype, p.len))
            .collect();
        assert_eq!(params, [("x", DType::F32, 6), ("labels", DType::I64, 2)]);
    }

    #[test]
    fn arguments_are_checked_in_count_dtype_and_length() {
        let sig = signature();
        let (mut x, mut labels) = (vec![0f32; 6], vec![0i64; 2]);
        assert_eq!(
            sig.check(&[BufferArg::F32(&mut x), BufferArg::I64(&mut labels)]),
            Ok(())
        );
        assert_eq!(
            sig.check(&[BufferArg::F32(&mut x)]),
            Err(ArgError::Count {
                kernel: "k".into(),
                expected: 2,
                got: 1
            })
        );
        let mut short = vec![0f32; 5];
        assert_eq!(
            sig.check(&[BufferArg::F32(&mut short), BufferArg::I64(&mut labels)]),
            Err(ArgError::Mismatch {
                kernel: "k".into(),
                index: 0,
                name: "x".into(),
                expected_dtype: DType::F32,
                expected_len: 6,
                got_dtype: DType::F32,
                got_len: 5,
            })
        );
        let mut wrong = vec![0f32; 2];
        let err = sig
            .check(&[BufferArg::F32(&mut x), BufferArg::F32(&mut wrong)])
            .expect_err("an f32 buffer for an i64 parameter");
        assert!(matches!(err, ArgError::Mismatch { index: 1, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "kernel `k`, parameter 1 (`labels`): expected i64[2], got f32[2]"
        );
        assert_eq!(sig.check_count(2), Ok(()));
    }
}
