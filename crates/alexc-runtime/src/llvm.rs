//! The LLVM backend behind the runtime's [`Backend`] trait.
//!
//! Kernels are JIT-compiled into one module; a launch passes raw pointers
//! into the runtime's memory. That is the one `unsafe` step of the runtime,
//! and it is sound because of what `Runtime::new` established before any
//! kernel runs: every binding lies inside its region and has the kernel
//! parameter's dtype and length, and no two parameters of a launch overlap
//! when one of them is written (aliased in-place parameters were merged).

use alexc_kernel::{DType, Kernel};
use alexc_llvm::{JitModule, Target};

use crate::backend::{Backend, Binding, Executable, ExternalStore, Memory, Region};
use crate::RuntimeError;

/// JIT compilation with LLVM for the host CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlvmBackend;

struct LlvmExecutable {
    module: JitModule,
    names: Vec<String>,
}

impl Backend for LlvmBackend {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        let target = Target::host().map_err(|e| RuntimeError::Compile(e.to_string()))?;
        let module =
            JitModule::new(kernels, &target).map_err(|e| RuntimeError::Compile(e.to_string()))?;
        Ok(Box::new(LlvmExecutable {
            module,
            names: kernels.iter().map(|k| k.name.clone()).collect(),
        }))
    }
}

impl Executable for LlvmExecutable {
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
        let mut pointers = Vec::with_capacity(bindings.len());
        for b in bindings {
            // Re-check the range (cheap) so this function is sound on its own.
            let region_len = match b.region {
                Region::Arena => memory.arena.len(),
                Region::Workspace => memory.workspace.len(),
                Region::External(i) => memory.external.get(i).map_or(0, ExternalStore::len),
            };
            if b.offset
                .checked_add(b.len)
                .is_none_or(|end| end > region_len)
            {
                return Err(RuntimeError::Internal(format!(
                    "kernel `{name}`: binding {b:?} outside its region"
                )));
            }
            let ptr: *mut u8 = match (b.region, b.dtype) {
                (Region::Arena, DType::F32) => {
                    memory.arena.as_mut_ptr().wrapping_add(b.offset).cast()
                }
                (Region::Workspace, DType::F32) => {
                    memory.workspace.as_mut_ptr().wrapping_add(b.offset).cast()
                }
                (Region::External(i), dtype) => match (memory.external.get_mut(i), dtype) {
                    (Some(ExternalStore::F32(v)), DType::F32) => {
                        v.as_mut_ptr().wrapping_add(b.offset).cast()
                    }
                    (Some(ExternalStore::I64(v)), DType::I64) => {
                        v.as_mut_ptr().wrapping_add(b.offset).cast()
                    }
                    _ => {
                        return Err(RuntimeError::Internal(format!(
                            "kernel `{name}`: binding {b:?} has the wrong dtype"
                        )))
                    }
                },
                _ => {
                    return Err(RuntimeError::Internal(format!(
                        "kernel `{name}`: binding {b:?} has the wrong dtype"
                    )))
                }
            };
            pointers.push(ptr);
        }
        // SAFETY: each pointer addresses `len` elements of the binding's
        // dtype inside a live allocation (checked above), which is exactly
        // the kernel parameter's declared length (checked by `Runtime::new`
        // against the declaration); no written parameter overlaps another
        // (`merge_aliases`); `memory` is borrowed mutably for the call.
        #[allow(unsafe_code)]
        unsafe { self.module.call_raw(name, &pointers) }.map_err(|e| RuntimeError::Kernel {
            kernel: name.clone(),
            message: e.to_string(),
        })
    }
}
