//! The host side of the calling convention every CPU backend compiles a
//! kernel to: `fn(args: *const *mut u8)`, where `args[i]` is the base
//! pointer of the kernel's `i`-th parameter buffer. A [`BufferArg`] is one
//! such buffer as a caller holds it; backends check its dtype and length
//! against the parameter's declaration before passing its pointer.

use crate::DType;

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
