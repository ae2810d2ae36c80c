//! Compiling and loading: translate ([`crate::emit_kernel`]) → Cranelift →
//! machine code in this process, and calling the kernels.
//!
//! Translation and compilation run on up to [`alexc_threads::threads`]
//! threads, kernels split into groups of similar estimated size; each
//! thread produces position-independent machine code plus relocations
//! whose targets still use the kernel-local names of the translation
//! (`NS_LOCAL:i`, `NS_EXTERN:i`). The calling thread then declares every
//! function in one [`JITModule`], renames the relocation targets to the
//! module's function ids, defines the code and links it. External symbols
//! are resolved explicitly, never by searching the process:
//! `alexc_parallel_for` and the math functions map to Rust functions
//! ([`crate::math`]).
//!
//! Safety: generated code does no bounds checks (DESIGN.md), so
//! [`JitModule::call`] checks each buffer's dtype and length against the
//! kernel's declaration first; the runtime, which calls
//! [`JitModule::call_raw`], has checked its bindings when it was built.

// Calling generated code, turning code addresses into function pointers and
// freeing the code memory are `unsafe`; each use states its invariant.
#![allow(unsafe_code)]

use std::fmt;

use alexc_kernel::abi;
pub use alexc_kernel::abi::{ArgError, BufferArg};
use alexc_kernel::{Kernel, LoopKind, Stmt};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{types, Signature};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::{settings, Context};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, ModuleRelocTarget};

use crate::emit::{emit_kernel, EmitOptions, Extern, NS_EXTERN, NS_LOCAL};
use crate::{math, CraneliftError};

/// A kernel's compiled entry point: `args[i]` is parameter buffer `i`.
type KernelFn = unsafe extern "C" fn(args: *const *mut u8);

/// Cranelift for this machine: `opt_level=speed`, the host's ISA features
/// (SSE4.1, AVX, FMA… as detected), the verifier in debug builds, and
/// inline stack probes (locals such as packed panels make large frames).
pub(crate) fn host_isa() -> Result<OwnedTargetIsa, CraneliftError> {
    let mut flags = settings::builder();
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    for (name, value) in [
        ("opt_level", "speed"),
        ("enable_verifier", verify),
        ("use_colocated_libcalls", "false"),
        ("is_pic", "false"),
        ("enable_probestack", "true"),
        ("probestack_strategy", "inline"),
    ] {
        use cranelift_codegen::settings::Configurable;
        flags
            .set(name, value)
            .map_err(|e| CraneliftError::Target(format!("setting {name}={value}: {e}")))?;
    }
    let builder = cranelift_native::builder().map_err(|e| CraneliftError::Target(e.to_string()))?;
    let isa = builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| CraneliftError::Target(e.to_string()))?;
    if isa.pointer_type() != types::I64 {
        return Err(CraneliftError::Target(format!(
            "{} has {}-bit pointers; generated code assumes 64",
            isa.triple(),
            isa.pointer_bits()
        )));
    }
    Ok(isa)
}

fn emit_options(isa: &dyn TargetIsa) -> EmitOptions {
    EmitOptions {
        call_conv: isa.default_call_conv(),
        fma: isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true)),
    }
}

/// The translation options for this machine (what [`JitModule::new`] uses).
pub fn host_emit_options() -> Result<EmitOptions, CraneliftError> {
    Ok(emit_options(&*host_isa()?))
}

/// One compiled function, not yet placed in memory.
struct CompiledFn {
    signature: Signature,
    bytes: Vec<u8>,
    alignment: u64,
    /// Targets use the translation's names (`NS_LOCAL`/`NS_EXTERN`).
    relocs: Vec<ModuleReloc>,
}

/// Compiled kernels of one group: (kernel index, its functions).
type GroupCode = Vec<(usize, Vec<CompiledFn>)>;

/// Translates and compiles one kernel's functions.
fn compile_kernel(
    kernel: &Kernel,
    options: &EmitOptions,
    isa: &dyn TargetIsa,
) -> Result<Vec<CompiledFn>, CraneliftError> {
    let functions = emit_kernel(kernel, options)?;
    let mut ctx = Context::new();
    let mut out = Vec::with_capacity(functions.len());
    for func in functions {
        ctx.clear();
        ctx.func = func;
        let name = ctx.func.name.to_string();
        if let Err(e) = ctx.compile(isa, &mut ControlPlane::default()) {
            return Err(CraneliftError::Codegen {
                message: cranelift_codegen::print_errors::pretty_error(e.func, e.inner),
                function: name,
            });
        }
        let code = ctx.compiled_code().ok_or_else(|| CraneliftError::Codegen {
            function: name.clone(),
            message: "no code after compilation".into(),
        })?;
        out.push(CompiledFn {
            signature: ctx.func.signature.clone(),
            bytes: code.code_buffer().to_vec(),
            alignment: u64::from(code.buffer.alignment),
            relocs: code
                .buffer
                .relocs()
                .iter()
                .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, FuncId::from_u32(0)))
                .collect(),
        });
    }
    Ok(out)
}

/// A rough measure of how long a kernel takes to compile: its statements,
/// with the bodies of small `Unrolled` loops counted once per iteration.
fn cost(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::For {
                kind, body, extent, ..
            } => {
                let times = match (kind, extent) {
                    (LoopKind::Unrolled, alexc_kernel::Idx::Const(n)) => (*n).clamp(1, 64) as usize,
                    (LoopKind::Vectorized { .. }, _) => 2,
                    _ => 1,
                };
                1 + times * cost(body)
            }
            Stmt::If {
                then, otherwise, ..
            } => 1 + cost(then) + cost(otherwise),
            Stmt::Store { .. } | Stmt::Let { .. } | Stmt::Assign { .. } => 1,
        })
        .sum()
}

/// Splits kernel indices into at most `parts` groups of similar cost.
fn partition(kernels: &[Kernel], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.clamp(1, kernels.len().max(1));
    let mut order: Vec<(usize, usize)> = kernels
        .iter()
        .enumerate()
        .map(|(i, k)| (cost(&k.body), i))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    let mut groups = vec![(0usize, Vec::new()); parts];
    for (c, i) in order {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += c;
            g.1.push(i);
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

struct Entry {
    sig: abi::Signature,
    entry: KernelFn,
}

/// Kernels compiled to machine code in this process.
pub struct JitModule {
    kernels: Vec<Entry>,
    /// Owns the code; `None` only while dropping.
    module: Option<JITModule>,
}

impl fmt::Debug for JitModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitModule")
            .field(
                "kernels",
                &self
                    .kernels
                    .iter()
                    .map(|k| &k.sig.kernel)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for JitModule {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the entry points die with `self`; no generated code
            // runs (calls borrow `self`) and none is referenced afterwards.
            unsafe { module.free_memory() };
        }
    }
}

impl JitModule {
    /// Translates and compiles `kernels` for this machine; kernel `i` is
    /// called as index `i`.
    pub fn new(kernels: &[Kernel]) -> Result<JitModule, CraneliftError> {
        let isa = host_isa()?;
        let options = emit_options(&*isa);
        let groups = partition(kernels, alexc_threads::threads());
        let compile_group = |group: &Vec<usize>| -> Result<GroupCode, CraneliftError> {
            group
                .iter()
                .map(|&i| Ok((i, compile_kernel(&kernels[i], &options, &*isa)?)))
                .collect()
        };
        let results: Vec<Result<GroupCode, CraneliftError>> = if groups.len() <= 1 {
            groups.iter().map(compile_group).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|g| scope.spawn(move || compile_group(g)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(CraneliftError::Module("a compiler thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let mut compiled: Vec<Option<Vec<CompiledFn>>> = (0..kernels.len()).map(|_| None).collect();
        for result in results {
            for (i, fns) in result? {
                compiled[i] = Some(fns);
            }
        }
        let compiled = compiled
            .into_iter()
            .map(|c| c.ok_or_else(|| CraneliftError::Module("a kernel was not compiled".into())))
            .collect::<Result<Vec<_>, _>>()?;
        link(isa, kernels, compiled)
    }

    /// The index of the kernel named `name`.
    pub fn kernel_index(&self, name: &str) -> Option<usize> {
        self.kernels.iter().position(|k| k.sig.kernel == name)
    }

    fn entry(&self, index: usize) -> Result<&Entry, CraneliftError> {
        self.kernels
            .get(index)
            .ok_or(CraneliftError::UnknownKernel(index))
    }

    /// Runs kernel `index` on `args` (one per parameter, in order) after
    /// checking every dtype and length against its declaration.
    pub fn call(&self, index: usize, args: &mut [BufferArg<'_>]) -> Result<(), CraneliftError> {
        let kernel = self.entry(index)?;
        kernel.sig.check(args)?;
        let pointers: Vec<*mut u8> = args.iter_mut().map(BufferArg::as_ptr).collect();
        // SAFETY: every buffer has the declared dtype and length, the `&mut`
        // slices are disjoint, `pointers` outlives the call, and `entry` is
        // the kernel's compiled entry function (`link`).
        unsafe { (kernel.entry)(pointers.as_ptr()) };
        Ok(())
    }

    /// Runs kernel `index` on raw buffer pointers (for the runtime's memory).
    ///
    /// # Safety
    ///
    /// `pointers[i]` must point to a live, suitably aligned allocation of at
    /// least the declared length of parameter `i`, and no buffer the kernel
    /// writes may overlap any other buffer.
    pub unsafe fn call_raw(
        &self,
        index: usize,
        pointers: &[*mut u8],
    ) -> Result<(), CraneliftError> {
        let kernel = self.entry(index)?;
        kernel.sig.check_count(pointers.len())?;
        // SAFETY: the caller's contract; `entry` is the kernel's entry.
        unsafe { (kernel.entry)(pointers.as_ptr()) };
        Ok(())
    }
}

fn module_error(e: impl fmt::Display) -> CraneliftError {
    CraneliftError::Module(e.to_string())
}

/// Places the compiled functions in one [`JITModule`], links them and
/// returns the callable table.
fn link(
    isa: OwnedTargetIsa,
    kernels: &[Kernel],
    compiled: Vec<Vec<CompiledFn>>,
) -> Result<JitModule, CraneliftError> {
    let call_conv = isa.default_call_conv();
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for x in Extern::ALL {
        builder.symbol(x.symbol(), math::address(x));
    }
    // The libcall Cranelift falls back to for `fma` without FMA hardware.
    builder.symbol("fmaf", math::fmaf_address());
    let mut module = JITModule::new(builder);
    let externs = Extern::ALL
        .iter()
        .map(|x| {
            module
                .declare_function(x.symbol(), Linkage::Import, &x.signature(call_conv))
                .map_err(module_error)
        })
        .collect::<Result<Vec<FuncId>, _>>()?;
    let mut table = JitModule {
        kernels: Vec::with_capacity(kernels.len()),
        module: None,
    };
    let mut entries = Vec::with_capacity(kernels.len());
    for fns in &compiled {
        let ids = fns
            .iter()
            .map(|f| {
                module
                    .declare_anonymous_function(&f.signature)
                    .map_err(module_error)
            })
            .collect::<Result<Vec<FuncId>, _>>()?;
        for (f, &id) in fns.iter().zip(&ids) {
            let rename = |target: &ModuleRelocTarget| -> Result<ModuleRelocTarget, CraneliftError> {
                let lookup = |table: &[FuncId], i: u32| {
                    table
                        .get(i as usize)
                        .map(|id| ModuleRelocTarget::from(*id))
                        .ok_or_else(|| module_error(format!("relocation to unknown function {i}")))
                };
                match target {
                    ModuleRelocTarget::User {
                        namespace: NS_LOCAL,
                        index,
                    } => lookup(&ids, *index),
                    ModuleRelocTarget::User {
                        namespace: NS_EXTERN,
                        index,
                    } => lookup(&externs, *index),
                    ModuleRelocTarget::FunctionOffset(_, offset) => {
                        Ok(ModuleRelocTarget::FunctionOffset(id, *offset))
                    }
                    other => Ok(other.clone()),
                }
            };
            let relocs = f
                .relocs
                .iter()
                .map(|r| {
                    Ok(ModuleReloc {
                        name: rename(&r.name)?,
                        ..r.clone()
                    })
                })
                .collect::<Result<Vec<_>, CraneliftError>>()?;
            module
                .define_function_bytes(id, f.alignment, &f.bytes, &relocs)
                .map_err(module_error)?;
        }
        entries.push(
            ids.first()
                .copied()
                .ok_or_else(|| module_error("a kernel without code"))?,
        );
    }
    module.finalize_definitions().map_err(module_error)?;
    for (kernel, id) in kernels.iter().zip(entries) {
        let addr = module.get_finalized_function(id);
        // SAFETY: `addr` is the finalized entry function of `kernel`, of
        // signature `fn(args: i64)` in the host's default calling convention
        // (`EmitOptions::entry_signature`), i.e. `KernelFn`; the module that
        // owns the code lives as long as the table (same struct).
        let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(addr) };
        table.kernels.push(Entry {
            sig: abi::Signature::of(kernel),
            entry,
        });
    }
    table.module = Some(module);
    Ok(table)
}
