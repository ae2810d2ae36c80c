//! The one trait through which the runtime uses backends.
//!
//! A [`Backend`] compiles a plan's kernels once into an [`Executable`]; the
//! runtime then calls kernels by index with [`Binding`]s that say where each
//! kernel parameter lives in the runtime's [`Memory`]. The runtime has
//! checked every binding — region, offset, length, dtype — against the
//! kernel's declarations before the first call, so a backend may pass the
//! addresses to generated code without further checks.
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
