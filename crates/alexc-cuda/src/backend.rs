//! [`CudaBackend`]: the runtime's [`Backend`] on an NVIDIA GPU, through
//! cudarc's driver API.
//!
//! `compile` renders every kernel into one translation unit, compiles it
//! with NVRTC to machine code for the device's architecture, loads it and looks up
//! each launch's function. The [`Executable`] then keeps the plan's memory
//! on the device:
//!
//! - **Resident** (the default, what `Runtime` uses): one device arena for
//!   the plan's intermediates, one workspace, and one device buffer per
//!   external buffer (images, labels, learning rate, masks, parameters,
//!   momentum), allocated at first use with the host's sizes and filled
//!   from the host once. After that the host is copied to the device only
//!   where the runtime says it changed ([`Executable::upload`]: a batch,
//!   labels, the learning rate, masks, loaded state), and results come back
//!   only when read ([`Executable::read`]: the loss, the logits, a
//!   checkpoint). Parameters, gradients and momentum never leave the device
//!   between steps.
//! - **Host-mirrored** ([`CudaBackend::host_mirrored`]): every launch copies
//!   its bound elements in and the ones it writes back, the protocol of the
//!   host backends. The reference suite uses it: its harness checks guard
//!   zones and results in host memory after every kernel.
//!
//! Launches go to one stream in order, so the launches of one kernel (and
//! of consecutive kernels) see each other's writes; reads synchronize.
//!
//! Without a driver (no `libcuda`), `compile` fails with a clear error:
//! cudarc would panic on its first driver call, so
//! `cudarc::driver::sys::is_culib_present()` is checked first.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::Arc;

use alexc_kernel::{Access, DType, Kernel};
use alexc_lower::LowerOptions;
use alexc_runtime::{
    Backend, Binding, Executable, ExternalStore, HostView, Memory, Region, RuntimeError,
};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};

use crate::launch::Dims;
use crate::nvrtc::compile_cubin;
use crate::{render_plan, Arch, CudaError};

/// The CUDA backend: a device and how to compile for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CudaBackend {
    /// The device (`CUDA_VISIBLE_DEVICES` numbering).
    pub ordinal: usize,
    /// The architecture to compile for; `None`: the device's own.
    pub arch: Option<Arch>,
    /// Copy each launch's bindings in and out (see the module docs).
    pub mirror_host: bool,
}

impl CudaBackend {
    /// Device `ordinal`, its own architecture, memory resident on it.
    pub fn new(ordinal: usize) -> CudaBackend {
        CudaBackend {
            ordinal,
            ..CudaBackend::default()
        }
    }

    /// A backend whose launches copy their bindings from and to host
    /// memory: for harnesses that inspect host memory after every kernel.
    pub fn host_mirrored(ordinal: usize) -> CudaBackend {
        CudaBackend {
            ordinal,
            arch: None,
            mirror_host: true,
        }
    }
}

/// Whether a CUDA driver (libcuda) can be loaded on this machine.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether this machine has a usable GPU: a driver and at least one device.
pub fn gpu_available() -> bool {
    driver_available() && CudaContext::device_count().is_ok_and(|n| n > 0)
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(e.to_string())
}

fn runtime(e: CudaError) -> RuntimeError {
    match e {
        CudaError::Runtime(r) => r,
        other => RuntimeError::Compile(other.to_string()),
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn lower_options(&self) -> LowerOptions {
        LowerOptions::gpu()
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        self.compile_cuda(kernels)
            .map(|e| Box::new(e) as Box<dyn Executable>)
            .map_err(runtime)
    }
}

/// One `__global__` function of a kernel and its launch dimensions (`None`:
/// nothing to run).
struct LoadedLaunch {
    function: CudaFunction,
    dims: Option<Dims>,
}

struct LoadedKernel {
    name: String,
    launches: Vec<LoadedLaunch>,
    /// Per parameter: whether the kernel writes it.
    writes: Vec<bool>,
}

impl CudaBackend {
    fn compile_cuda(&self, kernels: &[Kernel]) -> Result<CudaExecutable, CudaError> {
        if !driver_available() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(self.ordinal).map_err(driver)?;
        // One stream, synchronized explicitly where the host reads: the
        // per-buffer events cudarc records for multi-stream safety would
        // only add work to every launch.
        // SAFETY: no other stream of this context touches these buffers.
        unsafe { ctx.disable_event_tracking() };
        let arch = match self.arch {
            Some(a) => a,
            None => {
                let (major, minor) = ctx.compute_capability().map_err(driver)?;
                Arch {
                    sm: (major * 10 + minor).max(0) as u32,
                }
            }
        };
        // Machine code, not PTX: see `nvrtc::compile_cubin`.
        let (source, rendered) = render_plan(kernels)?;
        let cubin = compile_cubin(&source, arch)?;
        let loaded = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(driver)?;
        let mut out = Vec::with_capacity(kernels.len());
        for (kernel, rendered) in kernels.iter().zip(&rendered) {
            let mut launches = Vec::new();
            for l in &rendered.launches {
                launches.push(LoadedLaunch {
                    function: loaded.load_function(&l.entry).map_err(driver)?,
                    dims: l.mapping.dims(),
                });
            }
            out.push(LoadedKernel {
                name: kernel.name.clone(),
                launches,
                writes: rendered
                    .params
                    .iter()
                    .map(|p| matches!(p.access, Access::Write | Access::ReadWrite))
                    .collect(),
            });
        }
        tracing::info!(kernels = kernels.len(), %arch, "CUDA module loaded");
        let stream = ctx.default_stream();
        Ok(CudaExecutable {
            stream,
            copy_stream: RefCell::new(None),
            kernels: out,
            mirror_host: self.mirror_host,
            memory: RefCell::new(None),
        })
    }
}

/// A device buffer of one dtype.
enum DeviceBuffer {
    F32(CudaSlice<f32>),
    I64(CudaSlice<i64>),
}

impl DeviceBuffer {
    fn len(&self) -> usize {
        match self {
            DeviceBuffer::F32(s) => s.len(),
            DeviceBuffer::I64(s) => s.len(),
        }
    }
}

/// Page-locked host memory of one dtype: copies from it to the device are
/// asynchronous (from pageable memory the driver copies synchronously).
enum PinnedBuffer {
    F32(PinnedHostSlice<f32>),
    I64(PinnedHostSlice<i64>),
}

/// A double-buffered external slot (a batch's images or labels): the next
/// batch is copied into `back` on the copy stream while the kernels read
/// the current one, then the two swap ([`Executable::commit_staged`]).
struct Staging {
    /// The staged host data, page-locked.
    pinned: PinnedBuffer,
    /// Receives the copy; the slot's device buffer after the swap.
    back: DeviceBuffer,
    /// Recorded on the copy stream after the copy into `back` (and from
    /// `pinned`): the compute stream waits for it before the first kernel
    /// that reads the batch; the host, before it overwrites `pinned`.
    copied: Option<CudaEvent>,
    /// Recorded on the compute stream when `back` stopped being the slot's
    /// buffer: after it, no queued kernel reads it and the next copy may
    /// overwrite it.
    free: Option<CudaEvent>,
    /// `back` holds a batch not yet committed.
    ready: bool,
}

/// The plan's memory on the device (resident mode).
struct DeviceMemory {
    arena: CudaSlice<f32>,
    workspace: CudaSlice<f32>,
    external: Vec<DeviceBuffer>,
    /// Staged slots (see [`Staging`]), by external slot.
    staging: std::collections::BTreeMap<usize, Staging>,
    /// Device address and element count of the arena, the workspace and
    /// each external buffer, taken once: launches only add offsets.
    arena_at: (u64, usize),
    workspace_at: (u64, usize),
    external_at: Vec<(u64, usize, usize)>,
}

struct CudaExecutable {
    /// Every kernel and every synchronous copy.
    stream: Arc<CudaStream>,
    /// Staged copies of the next batch ([`Executable::stage`]), which
    /// overlap the kernels on `stream`; created on first use.
    copy_stream: RefCell<Option<Arc<CudaStream>>>,
    kernels: Vec<LoadedKernel>,
    mirror_host: bool,
    /// Allocated at first use, when the host's sizes are known.
    memory: RefCell<Option<DeviceMemory>>,
}

/// The device address of binding `b` in a region at `base` of `len`
/// elements of `size` bytes, or `None` when the binding's dtype or range
/// does not fit the region (generated code does no bounds checks, so this
/// is checked once more before every launch).
pub fn device_address((base, len, size): (u64, usize, usize), b: &Binding) -> Option<u64> {
    let elem = match b.dtype {
        DType::F32 => 4,
        DType::I64 => 8,
    };
    let end = b.offset.checked_add(b.len)?;
    if elem != size || end > len {
        return None;
    }
    base.checked_add(u64::try_from(b.offset.checked_mul(size)?).ok()?)
}

fn kernel_err(kernel: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Kernel {
        kernel: kernel.to_string(),
        message: e.to_string(),
    }
}

fn internal(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Internal(format!("CUDA: {e}"))
}

impl CudaExecutable {
    fn alloc_f32(&self, host: &[f32]) -> Result<CudaSlice<f32>, RuntimeError> {
        // A zero-length allocation is an error in the driver.
        if host.is_empty() {
            return self.stream.alloc_zeros::<f32>(1).map_err(internal);
        }
        self.stream.clone_htod(host).map_err(internal)
    }

    fn alloc_i64(&self, host: &[i64]) -> Result<CudaSlice<i64>, RuntimeError> {
        if host.is_empty() {
            return self.stream.alloc_zeros::<i64>(1).map_err(internal);
        }
        self.stream.clone_htod(host).map_err(internal)
    }

    /// The device memory, allocated and filled from `host` on first use.
    fn ensure_memory(&self, host: &HostView<'_>) -> Result<(), RuntimeError> {
        if self.memory.borrow().is_some() {
            return Ok(());
        }
        let mut external = Vec::with_capacity(host.external.len());
        for e in host.external {
            external.push(match e {
                ExternalStore::F32(v) => DeviceBuffer::F32(self.alloc_f32(v)?),
                ExternalStore::I64(v) => DeviceBuffer::I64(self.alloc_i64(v)?),
            });
        }
        let arena = self
            .stream
            .alloc_zeros::<f32>(host.arena.len().max(1))
            .map_err(internal)?;
        let workspace = self
            .stream
            .alloc_zeros::<f32>(host.workspace.len().max(1))
            .map_err(internal)?;
        tracing::info!(
            arena = host.arena.len() * 4,
            workspace = host.workspace.len() * 4,
            external = external.len(),
            "device memory allocated"
        );
        let external_at = external
            .iter()
            .map(|d| match d {
                DeviceBuffer::F32(s) => (self.base(s), s.len(), 4),
                DeviceBuffer::I64(s) => (self.base(s), s.len(), 8),
            })
            .collect();
        *self.memory.borrow_mut() = Some(DeviceMemory {
            arena_at: (self.base(&arena), arena.len()),
            workspace_at: (self.base(&workspace), workspace.len()),
            arena,
            workspace,
            external,
            staging: std::collections::BTreeMap::new(),
            external_at,
        });
        Ok(())
    }

    /// The stream staged copies go to (created on first use).
    fn copy_stream(&self) -> Result<Arc<CudaStream>, RuntimeError> {
        let mut copy = self.copy_stream.borrow_mut();
        if let Some(s) = copy.as_ref() {
            return Ok(s.clone());
        }
        let s = self.stream.context().new_stream().map_err(internal)?;
        *copy = Some(s.clone());
        Ok(s)
    }

    /// Pinned host memory and a device buffer for staging `len` elements
    /// of `data`'s dtype.
    fn new_staging(&self, data: &ExternalStore, len: usize) -> Result<Staging, RuntimeError> {
        let ctx = self.stream.context();
        let len = len.max(1);
        // SAFETY: pinned memory starts uninitialized; every stage writes
        // the elements it copies before the copy is queued.
        let (pinned, back) = match data {
            ExternalStore::F32(_) => (
                PinnedBuffer::F32(unsafe { ctx.alloc_pinned::<f32>(len) }.map_err(internal)?),
                DeviceBuffer::F32(self.stream.alloc_zeros::<f32>(len).map_err(internal)?),
            ),
            ExternalStore::I64(_) => (
                PinnedBuffer::I64(unsafe { ctx.alloc_pinned::<i64>(len) }.map_err(internal)?),
                DeviceBuffer::I64(self.stream.alloc_zeros::<i64>(len).map_err(internal)?),
            ),
        };
        // The zeroing above runs on the compute stream; the copy stream
        // must not overtake it.
        let free = Some(self.stream.record_event(None).map_err(internal)?);
        Ok(Staging {
            pinned,
            back,
            copied: None,
            free,
            ready: false,
        })
    }

    /// The device address of `b` in resident memory.
    fn address(&self, memory: &DeviceMemory, b: &Binding) -> Result<u64, RuntimeError> {
        let region = match b.region {
            Region::Arena => (memory.arena_at.0, memory.arena_at.1, 4),
            Region::Workspace => (memory.workspace_at.0, memory.workspace_at.1, 4),
            Region::External(i) => *memory
                .external_at
                .get(i)
                .ok_or_else(|| internal(format!("no external buffer {i}")))?,
        };
        device_address(region, b).ok_or_else(|| {
            internal(format!(
                "binding {b:?} does not fit its device region {region:?}"
            ))
        })
    }

    fn base<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (ptr, _sync) = s.device_ptr(&self.stream);
        ptr
    }

    /// Launches kernel `index` with its parameters at `pointers`.
    fn launch(&self, index: usize, pointers: &[u64]) -> Result<(), RuntimeError> {
        let kernel = self
            .kernels
            .get(index)
            .ok_or_else(|| internal(format!("no kernel {index}")))?;
        if pointers.len() != kernel.writes.len() {
            return Err(kernel_err(
                &kernel.name,
                format!(
                    "{} bindings for {} parameters",
                    pointers.len(),
                    kernel.writes.len()
                ),
            ));
        }
        for l in &kernel.launches {
            let Some(dims) = l.dims else { continue };
            let cfg = LaunchConfig {
                grid_dim: (dims.grid, 1, 1),
                block_dim: (dims.block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut args = self.stream.launch_builder(&l.function);
            for p in pointers {
                args.arg(p);
            }
            // SAFETY: the function was generated for exactly these
            // parameters (device pointers, in order); the runtime checked
            // every binding's dtype and length against the kernel, and
            // `address` checked it against the device allocation, and the
            // kernel IR verifier proved every access in bounds.
            unsafe { args.launch(cfg) }.map_err(|e| kernel_err(&kernel.name, e))?;
        }
        Ok(())
    }

    /// Host-mirrored run: each binding copied to a device buffer of its
    /// own, the written ones copied back.
    fn run_mirrored(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        let name = self
            .kernels
            .get(index)
            .map(|k| k.name.clone())
            .ok_or_else(|| internal(format!("no kernel {index}")))?;
        let mut buffers = Vec::with_capacity(bindings.len());
        for b in bindings {
            let range = b.offset..b.offset + b.len;
            let missing = || internal(format!("binding {b:?} is outside host memory"));
            buffers.push(match b.region {
                Region::Arena => {
                    DeviceBuffer::F32(self.alloc_f32(memory.arena.get(range).ok_or_else(missing)?)?)
                }
                Region::Workspace => DeviceBuffer::F32(
                    self.alloc_f32(memory.workspace.get(range).ok_or_else(missing)?)?,
                ),
                Region::External(i) => match memory.external.get(i) {
                    Some(ExternalStore::F32(v)) => {
                        DeviceBuffer::F32(self.alloc_f32(v.get(range).ok_or_else(missing)?)?)
                    }
                    Some(ExternalStore::I64(v)) => {
                        DeviceBuffer::I64(self.alloc_i64(v.get(range).ok_or_else(missing)?)?)
                    }
                    None => return Err(missing()),
                },
            });
        }
        let pointers: Vec<u64> = buffers
            .iter()
            .map(|d| match d {
                DeviceBuffer::F32(s) => self.base(s),
                DeviceBuffer::I64(s) => self.base(s),
            })
            .collect();
        self.launch(index, &pointers)?;
        let writes = self.kernels[index].writes.clone();
        for ((b, d), w) in bindings.iter().zip(&buffers).zip(writes) {
            if !w {
                continue;
            }
            let range = b.offset..b.offset + b.len;
            let missing = || internal(format!("binding {b:?} is outside host memory"));
            let copied = match (b.region, d) {
                (Region::Arena, DeviceBuffer::F32(s)) => self.stream.memcpy_dtoh(
                    &s.slice(0..b.len),
                    memory.arena.get_mut(range).ok_or_else(missing)?,
                ),
                (Region::Workspace, DeviceBuffer::F32(s)) => self.stream.memcpy_dtoh(
                    &s.slice(0..b.len),
                    memory.workspace.get_mut(range).ok_or_else(missing)?,
                ),
                (Region::External(i), DeviceBuffer::F32(s)) => match memory.external.get_mut(i) {
                    Some(ExternalStore::F32(v)) => self
                        .stream
                        .memcpy_dtoh(&s.slice(0..b.len), v.get_mut(range).ok_or_else(missing)?),
                    _ => return Err(missing()),
                },
                (Region::External(i), DeviceBuffer::I64(s)) => match memory.external.get_mut(i) {
                    Some(ExternalStore::I64(v)) => self
                        .stream
                        .memcpy_dtoh(&s.slice(0..b.len), v.get_mut(range).ok_or_else(missing)?),
                    _ => return Err(missing()),
                },
                _ => return Err(missing()),
            };
            copied.map_err(|e| kernel_err(&name, e))?;
        }
        self.stream.synchronize().map_err(|e| kernel_err(&name, e))
    }
}

impl Executable for CudaExecutable {
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        if self.mirror_host {
            return self.run_mirrored(index, memory, bindings);
        }
        let host = HostView {
            arena: memory.arena,
            workspace: memory.workspace,
            external: memory.external,
        };
        self.ensure_memory(&host)?;
        let device = self.memory.borrow();
        let device = device
            .as_ref()
            .ok_or_else(|| internal("device memory is missing"))?;
        let pointers = bindings
            .iter()
            .map(|b| self.address(device, b))
            .collect::<Result<Vec<_>, _>>()?;
        self.launch(index, &pointers)
    }

    fn upload(&mut self, host: &HostView<'_>, slot: usize) -> Result<(), RuntimeError> {
        if self.mirror_host {
            return Ok(());
        }
        if self.memory.borrow().is_none() {
            // The first use copies every buffer, this one included.
            return self.ensure_memory(host);
        }
        let mut device = self.memory.borrow_mut();
        let device = device
            .as_mut()
            .ok_or_else(|| internal("device memory is missing"))?;
        let copied = match (host.external.get(slot), device.external.get_mut(slot)) {
            (Some(ExternalStore::F32(h)), Some(DeviceBuffer::F32(d))) if h.len() <= d.len() => {
                let mut view = d.slice_mut(0..h.len());
                self.stream.memcpy_htod(h.as_slice(), &mut view)
            }
            (Some(ExternalStore::I64(h)), Some(DeviceBuffer::I64(d))) if h.len() <= d.len() => {
                let mut view = d.slice_mut(0..h.len());
                self.stream.memcpy_htod(h.as_slice(), &mut view)
            }
            _ => {
                return Err(internal(format!(
                    "external buffer {slot} does not match the device's"
                )))
            }
        };
        copied.map_err(internal)
    }

    fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(internal)
    }

    fn stage(&mut self, slot: usize, data: &ExternalStore) -> Result<(), RuntimeError> {
        if self.mirror_host || self.memory.borrow().is_none() {
            // Nothing on the device yet: the commit uploads as usual.
            return Ok(());
        }
        let copy = self.copy_stream()?;
        let mut device = self.memory.borrow_mut();
        let device = device
            .as_mut()
            .ok_or_else(|| internal("device memory is missing"))?;
        let len = device
            .external
            .get(slot)
            .map(DeviceBuffer::len)
            .ok_or_else(|| internal(format!("no external buffer {slot}")))?;
        // The whole pinned buffer is copied: it must be exactly the slot.
        if data.len() != len && !(data.is_empty() && len == 1) {
            return Err(internal(format!(
                "staged data for external buffer {slot} has {} elements, the buffer {len}",
                data.len()
            )));
        }
        let staging = match device.staging.entry(slot) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(self.new_staging(data, len)?),
        };
        // The previous copy out of the pinned buffer must be done before
        // the host overwrites it (cudarc's own tracking is off).
        if let Some(copied) = &staging.copied {
            copied.synchronize().map_err(internal)?;
        }
        // Kernels still queued may read `back` until the commit that
        // retired it; the copy waits for them.
        if let Some(free) = &staging.free {
            copy.wait(free).map_err(internal)?;
        }
        let copied = match (&mut staging.pinned, &mut staging.back, data) {
            (PinnedBuffer::F32(p), DeviceBuffer::F32(d), ExternalStore::F32(h)) => {
                p.as_mut_slice().map_err(internal)?[..h.len()].copy_from_slice(h);
                copy.memcpy_htod(p, &mut d.slice_mut(0..p.len()))
            }
            (PinnedBuffer::I64(p), DeviceBuffer::I64(d), ExternalStore::I64(h)) => {
                p.as_mut_slice().map_err(internal)?[..h.len()].copy_from_slice(h);
                copy.memcpy_htod(p, &mut d.slice_mut(0..p.len()))
            }
            _ => {
                return Err(internal(format!(
                    "staged data for external buffer {slot} has another dtype"
                )))
            }
        };
        copied.map_err(internal)?;
        staging.copied = Some(copy.record_event(None).map_err(internal)?);
        staging.ready = true;
        Ok(())
    }

    fn commit_staged(&mut self, host: &HostView<'_>, slot: usize) -> Result<(), RuntimeError> {
        let ready = self
            .memory
            .borrow()
            .as_ref()
            .and_then(|m| m.staging.get(&slot))
            .is_some_and(|s| s.ready);
        if !ready {
            return self.upload(host, slot);
        }
        let mut device = self.memory.borrow_mut();
        let device = device
            .as_mut()
            .ok_or_else(|| internal("device memory is missing"))?;
        let (Some(staging), Some(current)) =
            (device.staging.get_mut(&slot), device.external.get_mut(slot))
        else {
            return Err(internal(format!("no staging for external buffer {slot}")));
        };
        std::mem::swap(current, &mut staging.back);
        staging.ready = false;
        // Kernels from now on read the new buffer once its copy is done;
        // the old one is free once the kernels queued so far are.
        if let Some(copied) = &staging.copied {
            self.stream.wait(copied).map_err(internal)?;
        }
        staging.free = Some(self.stream.record_event(None).map_err(internal)?);
        let at = match current {
            DeviceBuffer::F32(s) => (self.base(s), s.len(), 4),
            DeviceBuffer::I64(s) => (self.base(s), s.len(), 8),
        };
        *device
            .external_at
            .get_mut(slot)
            .ok_or_else(|| internal(format!("no external buffer {slot}")))? = at;
        Ok(())
    }

    fn read(&self, host: &HostView<'_>, binding: &Binding) -> Result<Vec<f32>, RuntimeError> {
        if self.mirror_host {
            return alexc_runtime::read_host(host, binding);
        }
        if binding.dtype != DType::F32 {
            return Err(internal(format!("binding {binding:?} is not f32")));
        }
        self.ensure_memory(host)?;
        let device = self.memory.borrow();
        let device = device
            .as_ref()
            .ok_or_else(|| internal("device memory is missing"))?;
        let slice = match binding.region {
            Region::Arena => &device.arena,
            Region::Workspace => &device.workspace,
            Region::External(i) => match device.external.get(i) {
                Some(DeviceBuffer::F32(s)) => s,
                _ => return Err(internal(format!("external buffer {i} is not f32"))),
            },
        };
        let view = slice
            .try_slice(binding.offset..binding.offset + binding.len)
            .ok_or_else(|| internal(format!("binding {binding:?} is outside its device region")))?;
        let mut out = vec![0.0f32; binding.len];
        self.stream.memcpy_dtoh(&view, &mut out).map_err(internal)?;
        self.stream.synchronize().map_err(internal)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(offset: usize, len: usize, dtype: DType) -> Binding {
        Binding {
            region: Region::Arena,
            offset,
            len,
            dtype,
        }
    }

    #[test]
    fn bindings_address_their_first_element() {
        let arena = (0x7000_0000_0000, 1000, 4);
        assert_eq!(
            device_address(arena, &binding(0, 1000, DType::F32)),
            Some(0x7000_0000_0000)
        );
        assert_eq!(
            device_address(arena, &binding(10, 990, DType::F32)),
            Some(0x7000_0000_0000 + 40)
        );
        let labels = (0x1000, 128, 8);
        assert_eq!(
            device_address(labels, &binding(1, 127, DType::I64)),
            Some(0x1008)
        );
    }

    #[test]
    fn bindings_outside_their_region_or_of_another_dtype_are_refused() {
        let arena = (0x1000, 1000, 4);
        assert_eq!(device_address(arena, &binding(10, 991, DType::F32)), None);
        assert_eq!(
            device_address(arena, &binding(usize::MAX, 2, DType::F32)),
            None
        );
        assert_eq!(device_address(arena, &binding(0, 10, DType::I64)), None);
    }

    #[test]
    fn without_a_driver_compile_is_a_clear_error() {
        if driver_available() {
            eprintln!("SKIPPED: this machine has a CUDA driver");
            return;
        }
        let err = CudaBackend::new(0)
            .compile(&[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no CUDA driver"), "{err}");
    }
}
