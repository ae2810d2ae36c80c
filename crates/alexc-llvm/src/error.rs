//! The backend's error type: malformed kernels, LLVM failures and bad calls
//! all end here, never in a panic.

use std::path::PathBuf;

use crate::ArgError;
use alexc_kernel::{BufId, DType, VarId};

#[derive(Debug, thiserror::Error)]
pub enum LlvmError {
    #[error("kernel `{kernel}`: {message}")]
    Malformed { kernel: String, message: String },
    #[error("kernel `{kernel}`: unknown buffer {buf}")]
    UnknownBuffer { kernel: String, buf: BufId },
    #[error("kernel `{kernel}`: variable {var} is not declared or not in scope")]
    UnknownVar { kernel: String, var: VarId },
    #[error("kernel `{kernel}`: type mismatch: expected {expected}, found {found} ({context})")]
    TypeMismatch {
        kernel: String,
        expected: DType,
        found: DType,
        context: String,
    },
    #[error("two kernels are named `{0}`")]
    DuplicateKernel(String),
    #[error("LLVM builder error: {0}")]
    Builder(#[from] inkwell::builder::BuilderError),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("no kernel named `{0}` in this module")]
    UnknownKernel(String),
    /// A checked call whose buffers do not fit the kernel's parameters.
    #[error(transparent)]
    BadCall(#[from] ArgError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linking {}: {message}", library.display())]
    Link { library: PathBuf, message: String },
    #[error("{}: not a readable AOT manifest: {message}", path.display())]
    BadManifest { path: PathBuf, message: String },
    #[error("the AOT artifacts in {} do not match the kernels being run: {reason}; rebuild them (`alexc compile MODEL -o DIR`)", dir.display())]
    StaleArtifacts { dir: PathBuf, reason: String },
    #[error("loading {}: {message}", library.display())]
    Load { library: PathBuf, message: String },
}

impl LlvmError {
    pub(crate) fn llvm(message: impl ToString) -> LlvmError {
        LlvmError::Llvm(message.to_string())
    }
}
