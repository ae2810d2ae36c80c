//! Loading: emit → `default<O3>` → MCJIT, and calling the kernels.
//!
//! A [`JitModule`] owns its LLVM context and execution engine. inkwell ties
//! the engine's lifetime to a borrowed `Context`; we keep the context boxed
//! (stable address) in the same struct and declare the engine field first,
//! so the engine is always dropped before the context it borrows.
//!
//! External symbols are resolved explicitly with global mappings, never by
//! searching the process: `alexc_parallel_for` and the libm functions that
//! LLVM lowers math intrinsics to (`expf`, `powf`, …, also after
//! scalarizing vector intrinsics) map to Rust functions.
//!
//! Safety: generated code does no bounds checks (DESIGN.md), so
//! [`JitModule::call`] checks each buffer's dtype and length against the
//! kernel's declaration first; the `&mut` borrows guarantee the `noalias`
//! promise made by the emitted parameters. The table of entry points and
//! the checked calls (`Entries`) are shared with the AOT loader
//! ([`crate::AotLibrary`]).

// Calling JIT-compiled code and the context/engine lifetime extension are
// `unsafe`; each use states its invariant.
#![allow(unsafe_code)]

use std::fmt;

use alexc_kernel::abi::Signature;
pub use alexc_kernel::abi::{ArgError, BufferArg};
use alexc_kernel::Kernel;
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::Module;
use inkwell::OptimizationLevel;

use crate::emit::{emit_module, optimize, PARALLEL_FOR};
use crate::{parallel, LlvmError, Target};

/// A kernel's compiled entry point: `args[i]` is parameter buffer `i`.
pub(crate) type KernelFn = unsafe extern "C" fn(args: *const *mut u8);

struct Entry {
    sig: Signature,
    entry: KernelFn,
}

/// The compiled entry points of a set of kernels and the checked calls
/// into them: what [`JitModule`] and [`crate::AotLibrary`] share. The owner
/// keeps the code alive for as long as it holds the table.
#[derive(Default)]
pub(crate) struct Entries {
    kernels: Vec<Entry>,
}

impl Entries {
    /// Adds `kernel`, compiled at `entry`.
    ///
    /// # Safety
    ///
    /// `entry` must be the kernel's compiled wrapper `void k(ptr args)`
    /// (the crate's calling convention), generated from exactly this
    /// kernel, and stay callable as long as this table is used.
    pub(crate) unsafe fn push(&mut self, kernel: &Kernel, entry: KernelFn) {
        self.kernels.push(Entry {
            sig: Signature::of(kernel),
            entry,
        });
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kernels.iter().map(|k| k.sig.kernel.as_str())
    }

    fn kernel(&self, name: &str) -> Result<&Entry, LlvmError> {
        self.kernels
            .iter()
            .find(|k| k.sig.kernel == name)
            .ok_or_else(|| LlvmError::UnknownKernel(name.to_string()))
    }

    /// See [`JitModule::call`].
    pub(crate) fn call(&self, name: &str, args: &mut [BufferArg<'_>]) -> Result<(), LlvmError> {
        let kernel = self.kernel(name)?;
        kernel.sig.check(args)?;
        let pointers: Vec<*mut u8> = args.iter_mut().map(BufferArg::as_ptr).collect();
        // SAFETY: every buffer has the declared dtype and length, the `&mut`
        // slices are disjoint (noalias), `pointers` outlives the call, and
        // `entry` is the kernel's wrapper (`push`'s contract).
        unsafe { (kernel.entry)(pointers.as_ptr()) };
        Ok(())
    }

    /// See [`JitModule::call_raw`].
    ///
    /// # Safety
    ///
    /// As for [`JitModule::call_raw`].
    pub(crate) unsafe fn call_raw(
        &self,
        name: &str,
        pointers: &[*mut u8],
    ) -> Result<(), LlvmError> {
        let kernel = self.kernel(name)?;
        kernel.sig.check_count(pointers.len())?;
        // SAFETY: the caller's contract; `entry` is the kernel's wrapper.
        unsafe { (kernel.entry)(pointers.as_ptr()) };
        Ok(())
    }
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// One LLVM module's worth of compiled kernels: an execution engine and the
/// context it borrows.
struct Part {
    // Field order matters: `_engine` borrows `_context` and must drop first.
    _engine: ExecutionEngine<'static>,
    _context: Box<Context>,
}

/// A compiled part on its way from the thread that built it.
///
/// SAFETY of the `Send`: a `Part` is built on one thread and handed to
/// another exactly once, after which the first thread holds nothing of it.
/// Its LLVM objects (context, engine, the code) are only ever used by one
/// thread at a time; the engine's `Rc`-counted handles are all inside the
/// moved value (the module that shared one was dropped on the building
/// thread before the move), so no reference count is touched from two
/// threads.
struct SendPart(Part, Vec<(usize, usize)>);

// SAFETY: see `SendPart`.
unsafe impl Send for SendPart {}

/// Kernels compiled to native code in this process.
///
/// Compilation is split across threads: the kernels are partitioned into up
/// to [`crate::threads`] groups of similar size (largest first, each to the
/// lightest group), and each group is emitted, optimized and code-generated
/// in its own LLVM context and module on its own thread. Kernels never call
/// each other, so the split changes no generated code.
pub struct JitModule {
    kernels: Entries,
    _parts: Vec<Part>,
}

impl fmt::Debug for JitModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitModule")
            .field("kernels", &self.kernels)
            .finish_non_exhaustive()
    }
}

/// Splits kernel indices into at most `parts` groups of similar estimated
/// compile cost (the length of the kernel's text form).
fn partition(kernels: &[Kernel], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.clamp(1, kernels.len().max(1));
    let mut order: Vec<(usize, usize)> = kernels
        .iter()
        .enumerate()
        .map(|(i, k)| (alexc_kernel::to_text(k).len(), i))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    let mut groups = vec![(0usize, Vec::new()); parts];
    for (cost, i) in order {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += cost;
            g.1.push(i);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_unstable();
            g
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Emits, optimizes and code-generates `kernels[indices]` in a fresh
/// context; returns the part and each kernel's (index, entry address).
fn compile_part(
    kernels: &[Kernel],
    indices: &[usize],
    target: &Target,
) -> Result<SendPart, LlvmError> {
    let group: Vec<Kernel> = indices.iter().map(|&i| kernels[i].clone()).collect();
    let context = Box::new(Context::create());
    // SAFETY: the context is boxed (its address never changes) and is
    // dropped after `engine` (field order of `Part`), the only holder of
    // `'static` borrows of it; the module is consumed by the engine below.
    let cx: &'static Context = unsafe { &*(context.as_ref() as *const Context) };
    let module = emit_module(cx, &group, target)?;
    optimize(&module, target)?;
    let externs = declare_externs(cx, &module);
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(LlvmError::llvm)?;
    for (func, addr) in externs {
        engine.add_global_mapping(&func, addr);
    }
    let mut addrs = Vec::with_capacity(group.len());
    for (&i, kernel) in indices.iter().zip(&group) {
        // The first lookup generates the machine code, on this thread.
        let addr = engine
            .get_function_address(&kernel.name)
            .map_err(LlvmError::llvm)?;
        if addr == 0 {
            return Err(LlvmError::Llvm(format!(
                "no code for kernel `{}`",
                kernel.name
            )));
        }
        addrs.push((i, addr));
    }
    drop(module);
    Ok(SendPart(
        Part {
            _engine: engine,
            _context: context,
        },
        addrs,
    ))
}

impl JitModule {
    /// Emits, optimizes and JIT-compiles `kernels` for `target` (which must
    /// be this machine, e.g. [`Target::host`]).
    pub fn new(kernels: &[Kernel], target: &Target) -> Result<JitModule, LlvmError> {
        let mut seen = std::collections::HashSet::new();
        if let Some(k) = kernels.iter().find(|k| !seen.insert(k.name.as_str())) {
            return Err(LlvmError::DuplicateKernel(k.name.clone()));
        }
        let groups = partition(kernels, parallel::threads());
        let results: Vec<Result<SendPart, LlvmError>> = if groups.len() <= 1 {
            groups
                .iter()
                .map(|g| compile_part(kernels, g, target))
                .collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|g| scope.spawn(move || compile_part(kernels, g, target)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(LlvmError::Llvm("a compiler thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let mut addrs = vec![0usize; kernels.len()];
        let mut parts = Vec::with_capacity(results.len());
        for result in results {
            let SendPart(part, found) = result?;
            for (i, addr) in found {
                addrs[i] = addr;
            }
            parts.push(part);
        }
        let mut compiled = Entries::default();
        for (kernel, &addr) in kernels.iter().zip(&addrs) {
            if addr == 0 {
                return Err(LlvmError::Llvm(format!(
                    "no code for kernel `{}`",
                    kernel.name
                )));
            }
            // SAFETY: `addr` is the entry of `void k(ptr args)` (crate docs),
            // emitted from `kernel`; the engine that owns the code lives as
            // long as the table (same struct).
            unsafe {
                let entry: KernelFn = std::mem::transmute::<usize, KernelFn>(addr);
                compiled.push(kernel, entry);
            }
        }
        Ok(JitModule {
            kernels: compiled,
            _parts: parts,
        })
    }

    /// The kernels' names, in the order given to [`JitModule::new`].
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kernels.names()
    }

    /// Runs kernel `name` on `args` (one per parameter, in order) after
    /// checking every dtype and length against its declaration.
    pub fn call(&self, name: &str, args: &mut [BufferArg<'_>]) -> Result<(), LlvmError> {
        self.kernels.call(name, args)
    }

    /// Runs kernel `name` on raw buffer pointers (for the runtime's arena).
    ///
    /// # Safety
    ///
    /// `pointers[i]` must point to a live, suitably aligned allocation of at
    /// least the declared length of parameter `i`, and no two buffers that
    /// the kernel writes may overlap any other buffer.
    pub unsafe fn call_raw(&self, name: &str, pointers: &[*mut u8]) -> Result<(), LlvmError> {
        // SAFETY: the caller's contract.
        unsafe { self.kernels.call_raw(name, pointers) }
    }
}

/// Declares (if needed) every external symbol generated code may reference
/// and returns the address each maps to.
fn declare_externs<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
) -> Vec<(inkwell::values::FunctionValue<'ctx>, usize)> {
    let f32t = cx.f32_type();
    let ptr = cx.ptr_type(inkwell::AddressSpace::default());
    let unary = f32t.fn_type(&[f32t.into()], false);
    let binary = f32t.fn_type(&[f32t.into(), f32t.into()], false);
    let ternary = f32t.fn_type(&[f32t.into(), f32t.into(), f32t.into()], false);
    let pfor = cx
        .void_type()
        .fn_type(&[ptr.into(), ptr.into(), cx.i64_type().into()], false);

    let table: [(&str, inkwell::types::FunctionType<'ctx>, usize); 13] = [
        (
            PARALLEL_FOR,
            pfor,
            parallel::alexc_parallel_for as parallel::PforFn as usize,
        ),
        ("expf", unary, math::expf as math::Unary as usize),
        ("exp2f", unary, math::exp2f as math::Unary as usize),
        ("exp10f", unary, math::exp10f as math::Unary as usize),
        ("logf", unary, math::logf as math::Unary as usize),
        ("log2f", unary, math::log2f as math::Unary as usize),
        ("log10f", unary, math::log10f as math::Unary as usize),
        ("sqrtf", unary, math::sqrtf as math::Unary as usize),
        ("powf", binary, math::powf as math::Binary as usize),
        ("fmaxf", binary, math::fmaxf as math::Binary as usize),
        ("fminf", binary, math::fminf as math::Binary as usize),
        ("fmaf", ternary, math::fmaf as math::Ternary as usize),
        (
            "ldexpf",
            cx.f32_type()
                .fn_type(&[f32t.into(), cx.i32_type().into()], false),
            math::ldexpf as extern "C" fn(f32, i32) -> f32 as usize,
        ),
    ];
    table
        .into_iter()
        .map(|(name, ty, addr)| {
            let func = module
                .get_function(name)
                .unwrap_or_else(|| module.add_function(name, ty, None));
            (func, addr)
        })
        .collect()
}

/// libm-compatible f32 functions, implemented by Rust's `std`.
mod math {
    pub(super) type Unary = extern "C" fn(f32) -> f32;
    pub(super) type Binary = extern "C" fn(f32, f32) -> f32;
    pub(super) type Ternary = extern "C" fn(f32, f32, f32) -> f32;

    pub(super) extern "C" fn expf(x: f32) -> f32 {
        x.exp()
    }
    pub(super) extern "C" fn exp2f(x: f32) -> f32 {
        x.exp2()
    }
    pub(super) extern "C" fn exp10f(x: f32) -> f32 {
        10f32.powf(x)
    }
    pub(super) extern "C" fn logf(x: f32) -> f32 {
        x.ln()
    }
    pub(super) extern "C" fn log2f(x: f32) -> f32 {
        x.log2()
    }
    pub(super) extern "C" fn log10f(x: f32) -> f32 {
        x.log10()
    }
    pub(super) extern "C" fn sqrtf(x: f32) -> f32 {
        x.sqrt()
    }
    pub(super) extern "C" fn powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
    pub(super) extern "C" fn fmaxf(x: f32, y: f32) -> f32 {
        x.max(y)
    }
    pub(super) extern "C" fn fminf(x: f32, y: f32) -> f32 {
        x.min(y)
    }
    pub(super) extern "C" fn fmaf(x: f32, y: f32, z: f32) -> f32 {
        x.mul_add(y, z)
    }
    pub(super) extern "C" fn ldexpf(x: f32, e: i32) -> f32 {
        // Two steps keep the scale factor representable for |e| up to 254.
        let half = e / 2;
        x * 2f32.powi(half) * 2f32.powi(e - half)
    }
}
