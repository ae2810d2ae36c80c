//! The backend's error type.

use crate::ArgError;
use alexc_kernel::{BufId, DType, VarId};

/// Why kernels could not be translated, compiled or called.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CraneliftError {
    /// The kernel breaks a rule of the kernel IR that the verifier checks
    /// (the emitter does not re-verify; it reports what it trips over).
    #[error("kernel `{kernel}`: {message}")]
    Malformed { kernel: String, message: String },
    #[error("kernel `{kernel}`: expected {expected}, found {found} in {context}")]
    TypeMismatch {
        kernel: String,
        expected: DType,
        found: DType,
        context: String,
    },
    #[error("kernel `{kernel}`: no buffer {buf}")]
    UnknownBuffer { kernel: String, buf: BufId },
    #[error("kernel `{kernel}`: variable {var} is not in scope")]
    UnknownVar { kernel: String, var: VarId },
    /// The host is not one Cranelift can generate code for.
    #[error("host target: {0}")]
    Target(String),
    /// Cranelift rejected a function (a verifier error is a bug here).
    #[error("compiling `{function}`: {message}")]
    Codegen { function: String, message: String },
    /// Defining or linking compiled code failed.
    #[error("linking: {0}")]
    Module(String),
    #[error("no kernel {0}")]
    UnknownKernel(usize),
    /// A checked call whose buffers do not fit the kernel's parameters.
    #[error(transparent)]
    BadCall(#[from] ArgError),
}
