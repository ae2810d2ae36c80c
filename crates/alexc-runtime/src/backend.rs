//! The one trait through which the runtime uses backends.
//!
//! A [`Backend`] compiles a plan's kernels once into an [`Executable`]; the
//! runtime then calls kernels by index with [`Binding`]s that say where each
//! kernel parameter lives in the runtime's [`Memory`]. The runtime has
//! checked every binding — region, offset, length, dtype — against the
//! kernel's declarations before the first call, so a backend may pass the
//! addresses to generated code without further checks. Native backends
//! (LLVM, Cranelift) get those addresses from one place,
//! [`Memory::pointers`], in the calling convention of
//! [`alexc_kernel::abi`].
//!
//! [`EvalBackend`] runs kernels on the kernel IR evaluator: slow, obviously
//! correct, and the reference the compiled backends are compared with.

use alexc_kernel::eval::{eval, HostBuffer};
use alexc_kernel::{Access, BufferKind, DType, Kernel};
use alexc_lower::LowerOptions;

use crate::RuntimeError;

/// Where a binding's elements live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The arena of intermediates (f32).
    Arena,
    /// Scratch space for kernels' workspaces (f32).
    Workspace,
    /// An external buffer: input, parameter, momentum, dropout mask.
    External(usize),
}

/// One kernel parameter's memory: `len` elements from element `offset` of
/// `region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub region: Region,
    pub offset: usize,
    pub len: usize,
    pub dtype: DType,
}

/// An external buffer's storage.
#[derive(Clone, Debug, PartialEq)]
pub enum ExternalStore {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl ExternalStore {
    pub fn len(&self) -> usize {
        match self {
            ExternalStore::F32(v) => v.len(),
            ExternalStore::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            ExternalStore::F32(_) => DType::F32,
            ExternalStore::I64(_) => DType::I64,
        }
    }
}

/// All memory of a compiled model.
#[derive(Debug)]
pub struct Memory<'a> {
    pub arena: &'a mut [f32],
    pub workspace: &'a mut [f32],
    pub external: &'a mut [ExternalStore],
}

impl Memory<'_> {
    /// The base pointer of each binding, in order: the arguments of a call
    /// of native code in the kernel calling convention
    /// ([`alexc_kernel::abi`]). Errors name `kernel`.
    ///
    /// `Runtime::new` has checked every binding against the kernel's
    /// declaration and its region; the range and dtype are checked again
    /// here (cheap) so that a backend's call is sound on this function's
    /// result alone. Each region's base pointer is taken once per call, so
    /// the pointers of two bindings into the arena derive from the same
    /// borrow.
    pub fn pointers(
        &mut self,
        kernel: &str,
        bindings: &[Binding],
    ) -> Result<Vec<*mut u8>, RuntimeError> {
        let arena = (self.arena.len(), self.arena.as_mut_ptr());
        let workspace = (self.workspace.len(), self.workspace.as_mut_ptr());
        let mut pointers = Vec::with_capacity(bindings.len());
        for b in bindings {
            let region_len = match b.region {
                Region::Arena => arena.0,
                Region::Workspace => workspace.0,
                Region::External(i) => self.external.get(i).map_or(0, ExternalStore::len),
            };
            if b.offset
                .checked_add(b.len)
                .is_none_or(|end| end > region_len)
            {
                return Err(RuntimeError::Internal(format!(
                    "kernel `{kernel}`: binding {b:?} outside its region"
                )));
            }
            // In bounds (checked above), so `wrapping_add` stays inside the
            // allocation.
            let ptr: *mut u8 = match (b.region, b.dtype) {
                (Region::Arena, DType::F32) => arena.1.wrapping_add(b.offset).cast(),
                (Region::Workspace, DType::F32) => workspace.1.wrapping_add(b.offset).cast(),
                (Region::External(i), dtype) => match (self.external.get_mut(i), dtype) {
                    // `Vec::as_mut_ptr` creates no reference to the
                    // elements, so two bindings of one buffer stay valid.
                    (Some(ExternalStore::F32(v)), DType::F32) => {
                        v.as_mut_ptr().wrapping_add(b.offset).cast()
                    }
                    (Some(ExternalStore::I64(v)), DType::I64) => {
                        v.as_mut_ptr().wrapping_add(b.offset).cast()
                    }
                    _ => return Err(wrong_dtype(kernel, b)),
                },
                _ => return Err(wrong_dtype(kernel, b)),
            };
            pointers.push(ptr);
        }
        Ok(pointers)
    }
}

fn wrong_dtype(kernel: &str, b: &Binding) -> RuntimeError {
    RuntimeError::Internal(format!(
        "kernel `{kernel}`: binding {b:?} has the wrong dtype"
    ))
}

/// Host memory, read-only.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    pub arena: &'a [f32],
    pub workspace: &'a [f32],
    pub external: &'a [ExternalStore],
}

/// The f32 elements `binding` addresses in host memory.
pub fn read_host(host: &HostView<'_>, b: &Binding) -> Result<Vec<f32>, RuntimeError> {
    let range = b.offset..b.offset + b.len;
    let data = match b.region {
        Region::Arena => host.arena.get(range),
        Region::Workspace => host.workspace.get(range),
        Region::External(i) => match host.external.get(i) {
            Some(ExternalStore::F32(v)) => v.get(range),
            _ => None,
        },
    };
    data.map(<[f32]>::to_vec)
        .ok_or_else(|| RuntimeError::Internal(format!("binding {b:?} is not readable f32 memory")))
}

/// Compiles kernels.
pub trait Backend {
    /// The name used on the command line (`interp-kernels`, `llvm`, …).
    fn name(&self) -> &'static str;

    /// The lowering choices that suit this backend's target (vector width,
    /// threads); used unless the caller sets [`crate::Options::lower`].
    fn lower_options(&self) -> LowerOptions {
        LowerOptions::default()
    }

    /// Compiles `kernels`; the executable runs `kernels[i]` as index `i`.
    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError>;
}

/// Compiled kernels, callable by index.
///
/// Memory protocol: the runtime keeps every buffer in host memory
/// ([`Memory`]) and host backends run on it directly. A backend with memory
/// of its own (a GPU) mirrors it: the runtime calls [`Executable::upload`]
/// after it writes an external buffer on the host (a batch, labels, the
/// learning rate, masks, loaded state), and reads every result through
/// [`Executable::read`], so parameters, gradients and momentum never leave
/// the device between steps.
pub trait Executable {
    /// Runs kernel `index` with its parameters bound as `bindings` (in the
    /// kernel's parameter order; already checked by the runtime).
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError>;

    /// External buffer `slot` changed on the host.
    fn upload(&mut self, host: &HostView<'_>, slot: usize) -> Result<(), RuntimeError> {
        let _ = (host, slot);
        Ok(())
    }

    /// The f32 elements of `binding` as the kernels left them.
    fn read(&self, host: &HostView<'_>, binding: &Binding) -> Result<Vec<f32>, RuntimeError> {
        read_host(host, binding)
    }

    /// Waits until every kernel run so far has finished. Host backends run
    /// synchronously; a GPU queues launches, so per-kernel timing
    /// ([`crate::Runtime::set_profiling`]) waits here after each one.
    fn synchronize(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// `data` will be external buffer `slot`'s next value (the next
    /// training batch): a backend with memory of its own may start copying
    /// it now, overlapping the kernels already launched, as long as those
    /// still see the current value. Host backends have nothing to do.
    fn stage(&mut self, slot: usize, data: &ExternalStore) -> Result<(), RuntimeError> {
        let _ = (slot, data);
        Ok(())
    }

    /// The value last staged for `slot` is now current (the host's copy in
    /// `host` too): launches from now on read it. By default, the ordinary
    /// [`Executable::upload`].
    fn commit_staged(&mut self, host: &HostView<'_>, slot: usize) -> Result<(), RuntimeError> {
        self.upload(host, slot)
    }
}

/// Host data for one external buffer ([`crate::Runtime::stage_batch`]).
#[derive(Clone, Copy, Debug)]
pub enum StageData<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

/// The kernel IR evaluator as a backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct EvalBackend;

struct EvalExecutable {
    kernels: Vec<Kernel>,
}

impl Backend for EvalBackend {
    fn name(&self) -> &'static str {
        "kernel-eval"
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        Ok(Box::new(EvalExecutable {
            kernels: kernels.to_vec(),
        }))
    }
}

fn slice(memory: &Memory<'_>, b: &Binding) -> Result<HostBuffer, RuntimeError> {
    let range = b.offset..b.offset + b.len;
    let bad = || RuntimeError::Internal(format!("binding {b:?} is outside its region"));
    Ok(match (b.region, b.dtype) {
        (Region::Arena, DType::F32) => {
            HostBuffer::F32(memory.arena.get(range).ok_or_else(bad)?.to_vec())
        }
        (Region::Workspace, DType::F32) => {
            HostBuffer::F32(memory.workspace.get(range).ok_or_else(bad)?.to_vec())
        }
        (Region::External(i), _) => match memory.external.get(i) {
            Some(ExternalStore::F32(v)) => HostBuffer::F32(v.get(range).ok_or_else(bad)?.to_vec()),
            Some(ExternalStore::I64(v)) => HostBuffer::I64(v.get(range).ok_or_else(bad)?.to_vec()),
            None => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

fn write_back(memory: &mut Memory<'_>, b: &Binding, data: &HostBuffer) -> Result<(), RuntimeError> {
    let range = b.offset..b.offset + b.len;
    let bad = || RuntimeError::Internal(format!("binding {b:?} is outside its region"));
    match (b.region, data) {
        (Region::Arena, HostBuffer::F32(d)) => memory
            .arena
            .get_mut(range)
            .ok_or_else(bad)?
            .copy_from_slice(d),
        (Region::Workspace, HostBuffer::F32(d)) => memory
            .workspace
            .get_mut(range)
            .ok_or_else(bad)?
            .copy_from_slice(d),
        (Region::External(i), HostBuffer::F32(d)) => match memory.external.get_mut(i) {
            Some(ExternalStore::F32(v)) => v.get_mut(range).ok_or_else(bad)?.copy_from_slice(d),
            _ => return Err(bad()),
        },
        (Region::External(i), HostBuffer::I64(d)) => match memory.external.get_mut(i) {
            Some(ExternalStore::I64(v)) => v.get_mut(range).ok_or_else(bad)?.copy_from_slice(d),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    }
    Ok(())
}

impl Executable for EvalExecutable {
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        let kernel = self
            .kernels
            .get(index)
            .ok_or_else(|| RuntimeError::Internal(format!("no kernel {index}")))?;
        // Copy in, evaluate, copy back what the kernel writes. Reading every
        // parameter before writing any keeps in-place (aliased) bindings
        // correct.
        let mut buffers = bindings
            .iter()
            .map(|b| slice(memory, b))
            .collect::<Result<Vec<_>, _>>()?;
        eval(kernel, &mut buffers).map_err(|e| RuntimeError::Kernel {
            kernel: kernel.name.clone(),
            message: e.to_string(),
        })?;
        for ((_, decl), (b, data)) in kernel.params().zip(bindings.iter().zip(&buffers)) {
            if matches!(
                decl.kind,
                BufferKind::Param(Access::Write | Access::ReadWrite)
            ) {
                write_back(memory, b, data)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_address_each_binding_and_refuse_bad_ones() {
        let (mut arena, mut workspace) = (vec![0f32; 8], vec![0f32; 2]);
        let mut external = vec![ExternalStore::I64(vec![0; 3])];
        let mut memory = Memory {
            arena: &mut arena,
            workspace: &mut workspace,
            external: &mut external,
        };
        let bind = |region, offset, len, dtype| Binding {
            region,
            offset,
            len,
            dtype,
        };
        let ok = [
            bind(Region::Arena, 2, 6, DType::F32),
            bind(Region::External(0), 1, 2, DType::I64),
        ];
        let pointers = memory.pointers("k", &ok).expect("in bounds");
        assert_eq!(pointers.len(), 2);
        let arena_base = memory.arena.as_ptr() as usize;
        assert_eq!(pointers[0] as usize, arena_base + 2 * 4);

        let past_the_end = [bind(Region::Arena, 2, 7, DType::F32)];
        let err = memory.pointers("k", &past_the_end).expect_err("outside");
        assert!(err.to_string().contains("outside its region"), "{err}");
        let wrong = [bind(Region::External(0), 0, 3, DType::F32)];
        let err = memory.pointers("k", &wrong).expect_err("dtype");
        assert!(err.to_string().contains("wrong dtype"), "{err}");
        let missing = [bind(Region::External(1), 0, 0, DType::F32)];
        assert!(memory.pointers("k", &missing).is_err());
    }
}
