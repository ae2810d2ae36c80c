//! The Cranelift JIT behind the runtime's [`Backend`] trait.
//!
//! Kernels are machine code called with raw pointers into the runtime's
//! memory. That is sound because of what `Runtime::new` established before
//! any kernel runs: every binding lies inside its region and has the kernel
//! parameter's dtype and length, and no two parameters of a launch overlap
//! when one of them is written (aliased in-place parameters were merged).
//! [`Executable::run`] re-checks each binding's range and dtype (cheap,
//! [`Memory::pointers`]) so that it is sound on its own.

use alexc_kernel::Kernel;
use alexc_lower::LowerOptions;
use alexc_runtime::{Backend, Binding, Executable, Memory, RuntimeError};

use crate::emit::LANES;
use crate::JitModule;

/// JIT compilation with Cranelift for the host CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CraneliftBackend;

impl Backend for CraneliftBackend {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    /// Four lanes (`f32x4`, the widest vector Cranelift has on x86-64),
    /// parallel loops on.
    fn lower_options(&self) -> LowerOptions {
        LowerOptions {
            vector_width: LANES as u32,
            parallel: true,
        }
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        let module = JitModule::new(kernels).map_err(|e| RuntimeError::Compile(e.to_string()))?;
        Ok(Box::new(CraneliftExecutable {
            module,
            names: kernels.iter().map(|k| k.name.clone()).collect(),
        }))
    }
}

struct CraneliftExecutable {
    module: JitModule,
    names: Vec<String>,
}

impl Executable for CraneliftExecutable {
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
        // which is exactly the kernel parameter's declared length (checked by
        // `Runtime::new` against the declaration); no written parameter
        // overlaps another (`merge_aliases`); `memory` is borrowed mutably
        // for the call.
        #[allow(unsafe_code)]
        let result = unsafe { self.module.call_raw(index, &pointers) };
        result.map_err(|e| RuntimeError::Kernel {
            kernel: name.clone(),
            message: e.to_string(),
        })
    }
}
