//! The LLVM backends behind the runtime's [`Backend`] trait: JIT
//! ([`LlvmBackend`]) and ahead-of-time libraries ([`AotBackend`], written by
//! [`write_aot`]).
//!
//! Either way, kernels are native code called with raw pointers into the
//! runtime's memory. That is the one `unsafe` step of the runtime, and it is
//! sound because of what `Runtime::new` established before any kernel runs:
//! every binding lies inside its region and has the kernel parameter's
//! dtype and length, and no two parameters of a launch overlap when one of
//! them is written (aliased in-place parameters were merged). An AOT
//! library adds one condition, checked when it is opened: it was compiled
//! from exactly the kernels the runtime lowered now, for this CPU (its
//! manifest and fingerprint, see [`alexc_llvm::aot`]).

use std::path::{Path, PathBuf};

use alexc_kernel::Kernel;
use alexc_llvm::{AotLibrary, JitModule, LlvmError, Target};
use alexc_lower::LowerOptions;

pub use alexc_llvm::AotArtifacts;

use crate::backend::{Backend, Binding, Executable, Memory};
use crate::RuntimeError;

/// JIT compilation with LLVM for the host CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlvmBackend;

/// Kernels from an AOT directory written by [`write_aot`] (for the host
/// CPU); `compile` loads the library after checking that its manifest
/// matches the kernels, instead of compiling them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AotBackend {
    pub dir: PathBuf,
}

/// Compiles `kernels` (a runtime's [`crate::Runtime::kernels`]) for the
/// host CPU and writes `kernels.o`, `libkernels.so` and `manifest.json`
/// into `dir`, for [`AotBackend`].
pub fn write_aot(kernels: &[Kernel], dir: &Path) -> Result<AotArtifacts, RuntimeError> {
    alexc_llvm::write_aot(kernels, &host()?, dir).map_err(compile_error)
}

fn host() -> Result<Target, RuntimeError> {
    Target::host().map_err(compile_error)
}

fn compile_error(e: LlvmError) -> RuntimeError {
    RuntimeError::Compile(e.to_string())
}

/// The lowering that suits the host CPU: both LLVM backends lower alike, so
/// a runtime on [`AotBackend`] asks for the kernels a runtime on
/// [`LlvmBackend`] wrote.
fn host_lower_options() -> LowerOptions {
    LowerOptions {
        vector_width: Target::host().map_or(8, |t| t.vector_width()),
        parallel: true,
    }
}

impl Backend for LlvmBackend {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn lower_options(&self) -> LowerOptions {
        host_lower_options()
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        let module = JitModule::new(kernels, &host()?).map_err(compile_error)?;
        Ok(Box::new(NativeExecutable {
            code: Code::Jit(module),
            names: kernels.iter().map(|k| k.name.clone()).collect(),
        }))
    }
}

impl Backend for AotBackend {
    fn name(&self) -> &'static str {
        "llvm-aot"
    }

    fn lower_options(&self) -> LowerOptions {
        host_lower_options()
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        let library = AotLibrary::open(&self.dir, kernels, &host()?).map_err(compile_error)?;
        Ok(Box::new(NativeExecutable {
            code: Code::Aot(library),
            names: kernels.iter().map(|k| k.name.clone()).collect(),
        }))
    }
}

/// Native code from either backend.
enum Code {
    Jit(JitModule),
    Aot(AotLibrary),
}

struct NativeExecutable {
    code: Code,
    names: Vec<String>,
}

impl Executable for NativeExecutable {
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        let name = self
            .names
            .get(index)
            .ok_or_else(|| RuntimeError::Internal(format!("no kernel {index}")))?;
        let pointers = memory.pointers(name, bindings)?;
        // SAFETY: each pointer addresses `len` elements of the binding's
        // dtype inside a live allocation (checked by `Memory::pointers`),
        // which is exactly
        // the kernel parameter's declared length (checked by `Runtime::new`
        // against the declaration); no written parameter overlaps another
        // (`merge_aliases`); `memory` is borrowed mutably for the call.
        #[allow(unsafe_code)]
        let result = unsafe {
            match &self.code {
                Code::Jit(module) => module.call_raw(name, &pointers),
                Code::Aot(library) => library.call_raw(name, &pointers),
            }
        };
        result.map_err(|e| RuntimeError::Kernel {
            kernel: name.clone(),
            message: e.to_string(),
        })
    }
}
