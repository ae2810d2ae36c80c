//! Ahead-of-time artifacts: the kernels compiled into an object file and a
//! shared library, with a manifest, and the loader that calls them.
//!
//! [`write_aot`] writes three files into a directory:
//!
//! - `kernels.o`: the optimized module (the same [`emit_module`] +
//!   [`optimize`] as the JIT), as position-independent code;
//! - `libkernels.so`: that object linked by the system C compiler
//!   (`cc -shared … -lm -Wl,-z,defs`: libm provides `expf`, `powf`, …,
//!   and `-z defs` makes any other unresolved symbol a link error instead of
//!   a crash at the first call);
//! - `manifest.json` ([`AotManifest`]): format version, alexc version,
//!   target, and per kernel its parameters and a hash of its printed text.
//!
//! [`AotLibrary::open`] refuses a directory whose manifest does not describe
//! exactly the kernels the caller lowered now, for the target it runs on
//! ([`LlvmError::StaleArtifacts`]), so a stale or foreign library is never
//! called with the wrong buffers; then it loads the library and checks the
//! fingerprint compiled into it, which catches a library that does not
//! belong to its manifest.
//!
//! # The parallel-for hook
//!
//! JIT code calls `alexc_parallel_for` through a global mapping to the
//! Rust function. A shared library must not find it by name in the host
//! process (the host may not export it, or may export another one), so AOT
//! mode adds a small interface to the emitted module before optimizing it
//! (`add_aot_interface`); [`emit_module`] itself is unchanged and the JIT
//! pays nothing:
//!
//! - the `alexc_parallel_for` declaration becomes an internal function that
//!   calls through an internal pointer `alexc.parallel_for.impl` (O3 inlines
//!   it into every kernel: one load and an indirect call per parallel loop);
//! - that pointer starts at an internal serial fallback, so the library is
//!   correct (single-threaded) even if nobody initializes it;
//! - the exported `void alexc_init(const void *const *table)` stores
//!   `table[0]`, the host's parallel-for, into the pointer (atomically, so
//!   re-opening the library while it runs is not a data race);
//! - the exported `const char alexc_fingerprint[]` holds the manifest's
//!   fingerprint.
//!
//! # Hashes
//!
//! Hashes are FNV-1a 128 of the kernel's text form
//! ([`alexc_kernel::print::to_text`]), written as hex. They detect staleness,
//! not an adversary: a library one would not trust runs its own code as soon
//! as it is loaded, so a cryptographic hash would add a dependency and no
//! safety.
//!
//! A process that has loaded a directory's library keeps that copy mapped
//! (the dynamic loader hands out the loaded copy again by path), so after
//! rewriting the directory, a re-open in the same process fails the
//! fingerprint check instead of running the old code.

// Loading a shared library and calling into it are `unsafe`; each use
// states its invariant.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;

use alexc_kernel::{DType, Kernel};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::targets::{
    CodeModel, FileType, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple,
};
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue};
use inkwell::{AddressSpace, AtomicOrdering, IntPredicate, OptimizationLevel};
use serde::{Deserialize, Serialize};

use crate::emit::{emit_module, optimize, PARALLEL_FOR};
use crate::jit::{BufferArg, Entries, KernelFn};
use crate::parallel::{self, PforFn};
use crate::{LlvmError, Target};

/// The manifest format this alexc writes and reads; bump it whenever the
/// files, the manifest or the library's interface change meaning.
pub const AOT_FORMAT: u32 = 1;
/// The object file's name inside an AOT directory.
pub const AOT_OBJECT: &str = "kernels.o";
/// The shared library's name inside an AOT directory.
pub const AOT_LIBRARY: &str = "libkernels.so";
/// The manifest's name inside an AOT directory.
pub const AOT_MANIFEST: &str = "manifest.json";

/// Exported by the library: `void alexc_init(const void *const *table)`.
const INIT: &str = "alexc_init";
/// Exported by the library: the manifest's fingerprint, NUL-terminated.
const FINGERPRINT: &str = "alexc_fingerprint";
/// The pointer generated code calls `alexc_parallel_for` through.
const PFOR_IMPL: &str = "alexc.parallel_for.impl";

/// `alexc_init`'s signature; `table[0]` is the parallel-for.
type InitFn = unsafe extern "C" fn(table: *const *const c_void);

/// What `manifest.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AotManifest {
    /// [`AOT_FORMAT`] of the writer.
    pub format: u32,
    /// The writer's alexc version.
    pub alexc_version: String,
    pub target: AotTarget,
    /// Hash of everything above and of every kernel (in name order);
    /// compiled into the library as well.
    pub fingerprint: String,
    pub kernels: Vec<AotKernel>,
}

/// The target the library was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AotTarget {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// One kernel of the library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AotKernel {
    /// The exported entry point, `void name(void **args)`.
    pub name: String,
    /// FNV-1a 128 of the kernel's text form, in hex.
    pub hash: String,
    /// The parameters, in the order of `args`.
    pub params: Vec<AotParam>,
}

/// One parameter buffer of a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AotParam {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub elements: usize,
}

impl AotManifest {
    /// The manifest that `kernels` compiled for `target` have.
    pub fn new(kernels: &[Kernel], target: &Target) -> Result<AotManifest, LlvmError> {
        let mut seen = BTreeSet::new();
        for kernel in kernels {
            if !seen.insert(kernel.name.as_str()) {
                return Err(LlvmError::DuplicateKernel(kernel.name.clone()));
            }
        }
        let mut manifest = AotManifest {
            format: AOT_FORMAT,
            alexc_version: env!("CARGO_PKG_VERSION").to_string(),
            target: AotTarget {
                triple: target.triple.clone(),
                cpu: target.cpu.clone(),
                features: target.features.clone(),
            },
            fingerprint: String::new(),
            kernels: kernels
                .iter()
                .map(|k| AotKernel {
                    name: k.name.clone(),
                    hash: hash_hex(alexc_kernel::print::to_text(k).as_bytes()),
                    params: k
                        .params()
                        .map(|(_, d)| AotParam {
                            name: d.name.clone(),
                            dtype: d.dtype,
                            shape: d.shape.clone(),
                            elements: d.elements(),
                        })
                        .collect(),
                })
                .collect(),
        };
        manifest.fingerprint = manifest.compute_fingerprint()?;
        Ok(manifest)
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<AotManifest, LlvmError> {
        let path = dir.join(AOT_MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| LlvmError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| LlvmError::BadManifest {
            path,
            message: e.to_string(),
        })
    }

    /// The hash of the manifest's contents, independent of kernel order.
    fn compute_fingerprint(&self) -> Result<String, LlvmError> {
        let mut kernels: Vec<&AotKernel> = self.kernels.iter().collect();
        kernels.sort_by(|a, b| a.name.cmp(&b.name));
        let text =
            serde_json::to_string(&(self.format, &self.alexc_version, &self.target, kernels))
                .map_err(LlvmError::llvm)?;
        Ok(hash_hex(text.as_bytes()))
    }

    /// Why a library described by `self` cannot serve `want` (every
    /// difference found), or `None` if it can.
    fn mismatch(&self, want: &AotManifest) -> Option<String> {
        let mut reasons = Vec::new();
        if self.format != want.format {
            // Nothing else is comparable across formats.
            return Some(format!(
                "manifest format {}, this alexc reads format {}",
                self.format, want.format
            ));
        }
        if self.alexc_version != want.alexc_version {
            reasons.push(format!(
                "built by alexc {}, this is alexc {}",
                self.alexc_version, want.alexc_version
            ));
        }
        if self.target.triple != want.target.triple {
            reasons.push(format!(
                "built for `{}`, wanted `{}`",
                self.target.triple, want.target.triple
            ));
        }
        if self.target.cpu != want.target.cpu {
            reasons.push(format!(
                "built for CPU `{}`, wanted `{}`",
                self.target.cpu, want.target.cpu
            ));
        }
        if self.target.features != want.target.features {
            let split = |s: &str| -> BTreeSet<String> {
                s.split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let (have, need) = (split(&self.target.features), split(&want.target.features));
            let diff: Vec<String> = have.symmetric_difference(&need).cloned().collect();
            reasons.push(format!(
                "built for other CPU features (differing: {})",
                diff.join(",")
            ));
        }
        let found: BTreeMap<&str, &AotKernel> =
            self.kernels.iter().map(|k| (k.name.as_str(), k)).collect();
        let wanted: BTreeMap<&str, &AotKernel> =
            want.kernels.iter().map(|k| (k.name.as_str(), k)).collect();
        for (name, w) in &wanted {
            match found.get(name) {
                None => reasons.push(format!("kernel `{name}` is missing")),
                Some(f) if f.params != w.params => reasons.push(format!(
                    "kernel `{name}` takes ({}), the library's takes ({})",
                    signature(&w.params),
                    signature(&f.params)
                )),
                Some(f) if f.hash != w.hash => {
                    reasons.push(format!("kernel `{name}` changed (its text hash differs)"))
                }
                Some(_) => {}
            }
        }
        for name in found.keys().filter(|n| !wanted.contains_key(*n)) {
            reasons.push(format!(
                "the library has kernel `{name}`, which is not asked for"
            ));
        }
        if reasons.is_empty() && self.fingerprint != want.fingerprint {
            reasons.push("the manifest's fingerprint does not match its contents".to_string());
        }
        const SHOWN: usize = 5;
        match reasons.len() {
            0 => None,
            n if n <= SHOWN => Some(reasons.join("; ")),
            n => Some(format!(
                "{}; and {} more differences",
                reasons[..SHOWN].join("; "),
                n - SHOWN
            )),
        }
    }
}

fn signature(params: &[AotParam]) -> String {
    params
        .iter()
        .map(|p| format!("{}: {}{:?}", p.name, p.dtype, p.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

/// FNV-1a 128 of `bytes`, as 32 hex digits.
fn hash_hex(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    format!("{hash:032x}")
}

/// The files [`write_aot`] wrote.
#[derive(Clone, Debug)]
pub struct AotArtifacts {
    pub object: PathBuf,
    pub library: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: AotManifest,
}

/// Compiles `kernels` for `target` and writes `kernels.o`, `libkernels.so`
/// and `manifest.json` into `dir` (created if needed). Each file is written
/// under a temporary name and renamed, so a process that has the old
/// library mapped keeps running it unharmed.
pub fn write_aot(
    kernels: &[Kernel],
    target: &Target,
    dir: &Path,
) -> Result<AotArtifacts, LlvmError> {
    let manifest = AotManifest::new(kernels, target)?;
    std::fs::create_dir_all(dir).map_err(|source| LlvmError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let context = Context::create();
    let module = emit_module(&context, kernels, target)?;
    add_aot_interface(&context, &module, &manifest.fingerprint)?;
    optimize(&module, target)?;
    let code = pic_machine(target)?
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(LlvmError::llvm)?;
    let object = dir.join(AOT_OBJECT);
    write_atomically(&object, code.as_slice())?;

    let library = dir.join(AOT_LIBRARY);
    link(&object, &library)?;

    let manifest_path = dir.join(AOT_MANIFEST);
    let mut json = serde_json::to_string_pretty(&manifest).map_err(LlvmError::llvm)?;
    json.push('\n');
    write_atomically(&manifest_path, json.as_bytes())?;
    Ok(AotArtifacts {
        object,
        library,
        manifest_path,
        manifest,
    })
}

/// Writes `path` through a temporary file in the same directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LlvmError> {
    let tmp = temporary(path);
    let io = |source, path: &Path| LlvmError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))
}

/// `dir/.name.tmp` for `dir/name`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// `cc -shared -o library object -lm`, through a temporary output file.
fn link(object: &Path, library: &Path) -> Result<(), LlvmError> {
    let tmp = temporary(library);
    let failed = |message: String| LlvmError::Link {
        library: library.to_path_buf(),
        message,
    };
    let output = Command::new("cc")
        .arg("-shared")
        .arg("-o")
        .arg(&tmp)
        .arg(object)
        .arg("-lm")
        .arg("-Wl,-z,defs")
        .output()
        .map_err(|e| {
            failed(format!(
                "cannot run the C compiler `cc` (needed to link the shared library): {e}"
            ))
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(format!(
            "`cc -shared` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        )));
    }
    std::fs::rename(&tmp, library).map_err(|source| LlvmError::Io {
        path: library.to_path_buf(),
        source,
    })
}

/// A target machine for `target` that generates position-independent code
/// (what a shared library needs; the JIT's machine uses the default model).
fn pic_machine(target: &Target) -> Result<TargetMachine, LlvmError> {
    crate::target::init_native()?;
    let triple = TargetTriple::create(&target.triple);
    LlvmTarget::from_triple(&triple)
        .map_err(LlvmError::llvm)?
        .create_target_machine(
            &triple,
            &target.cpu,
            &target.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            LlvmError::Llvm(format!(
                "cannot create a target machine for {}",
                target.triple
            ))
        })
}

/// Adds the library interface of the module docs to an emitted module:
/// the parallel-for hook, `alexc_init` and `alexc_fingerprint`.
fn add_aot_interface<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    fingerprint: &str,
) -> Result<(), LlvmError> {
    let ptr = cx.ptr_type(AddressSpace::default());
    let i64t = cx.i64_type();
    let void = cx.void_type();
    let pfor_ty = void.fn_type(&[ptr.into(), ptr.into(), i64t.into()], false);
    let body_ty = void.fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
    let builder = cx.create_builder();

    // The fallback: `if (n > 0) body(ctx, 0, n)`.
    let serial = module.add_function("alexc.serial_for", pfor_ty, Some(Linkage::Internal));
    let entry = cx.append_basic_block(serial, "entry");
    let run = cx.append_basic_block(serial, "run");
    let done = cx.append_basic_block(serial, "done");
    builder.position_at_end(entry);
    let (body, ctx, n) = (
        param(serial, 0)?.into_pointer_value(),
        param(serial, 1)?,
        param(serial, 2)?.into_int_value(),
    );
    let positive = builder.build_int_compare(IntPredicate::SGT, n, i64t.const_zero(), "")?;
    builder.build_conditional_branch(positive, run, done)?;
    builder.position_at_end(run);
    builder.build_indirect_call(
        body_ty,
        body,
        &[ctx.into(), i64t.const_zero().into(), n.into()],
        "",
    )?;
    builder.build_unconditional_branch(done)?;
    builder.position_at_end(done);
    builder.build_return(None)?;

    let hook = module.add_global(ptr, None, PFOR_IMPL);
    hook.set_linkage(Linkage::Internal);
    hook.set_alignment(8);
    hook.set_initializer(&serial.as_global_value().as_pointer_value());

    // Generated code's `alexc_parallel_for`, if any kernel has a parallel
    // loop: an internal forwarder through the hook.
    if let Some(pfor) = module.get_function(PARALLEL_FOR) {
        pfor.set_linkage(Linkage::Internal);
        builder.position_at_end(cx.append_basic_block(pfor, "entry"));
        let target = builder.build_load(ptr, hook.as_pointer_value(), "impl")?;
        if let Some(load) = target.as_instruction_value() {
            load.set_alignment(8).map_err(LlvmError::llvm)?;
            load.set_atomic_ordering(AtomicOrdering::Monotonic)
                .map_err(LlvmError::llvm)?;
        }
        let args = (0..3)
            .map(|i| param(pfor, i).map(BasicMetadataValueEnum::from))
            .collect::<Result<Vec<_>, _>>()?;
        builder.build_indirect_call(pfor_ty, target.into_pointer_value(), &args, "")?;
        builder.build_return(None)?;
    }

    // `void alexc_init(const void *const *table)`: hook = table[0].
    let init = module.add_function(INIT, void.fn_type(&[ptr.into()], false), None);
    builder.position_at_end(cx.append_basic_block(init, "entry"));
    let table = param(init, 0)?.into_pointer_value();
    let pfor = builder.build_load(ptr, table, "parallel_for")?;
    if let Some(load) = pfor.as_instruction_value() {
        load.set_alignment(8).map_err(LlvmError::llvm)?;
    }
    let store = builder.build_store(hook.as_pointer_value(), pfor)?;
    store.set_alignment(8).map_err(LlvmError::llvm)?;
    store
        .set_atomic_ordering(AtomicOrdering::Monotonic)
        .map_err(LlvmError::llvm)?;
    builder.build_return(None)?;

    let text = cx.const_string(fingerprint.as_bytes(), true);
    let global = module.add_global(text.get_type(), None, FINGERPRINT);
    global.set_initializer(&text);
    global.set_constant(true);

    module.verify().map_err(LlvmError::llvm)
}

/// Parameter `i` of `f`.
fn param(f: FunctionValue<'_>, i: u32) -> Result<BasicValueEnum<'_>, LlvmError> {
    f.get_nth_param(i)
        .ok_or_else(|| LlvmError::Llvm(format!("internal: parameter {i} missing")))
}

/// Kernels loaded from an AOT directory ([`write_aot`]); the same calls as
/// [`crate::JitModule`].
pub struct AotLibrary {
    kernels: Entries,
    path: PathBuf,
    fingerprint: String,
    // Declared last: the entry points above point into it.
    _library: libloading::Library,
}

impl std::fmt::Debug for AotLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AotLibrary")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .field("kernels", &self.kernels)
            .finish_non_exhaustive()
    }
}

impl AotLibrary {
    /// Opens `dir/libkernels.so` after checking that `dir/manifest.json`
    /// describes exactly `kernels` compiled for `target` (the machine this
    /// process runs on, e.g. [`Target::host`]); connects the library's
    /// parallel loops to this process's thread pool.
    pub fn open(dir: &Path, kernels: &[Kernel], target: &Target) -> Result<AotLibrary, LlvmError> {
        Self::open_with(dir, kernels, target, parallel::alexc_parallel_for)
    }

    /// [`AotLibrary::open`] with the parallel-for to install.
    pub(crate) fn open_with(
        dir: &Path,
        kernels: &[Kernel],
        target: &Target,
        parallel_for: PforFn,
    ) -> Result<AotLibrary, LlvmError> {
        let want = AotManifest::new(kernels, target)?;
        let found = AotManifest::read(dir)?;
        let stale = |reason: String| LlvmError::StaleArtifacts {
            dir: dir.to_path_buf(),
            reason,
        };
        if let Some(reason) = found.mismatch(&want) {
            return Err(stale(reason));
        }

        let path = dir.join(AOT_LIBRARY);
        let library = load(&path)?;
        let load_error = |message: String| LlvmError::Load {
            library: path.clone(),
            message,
        };
        let fingerprint = {
            // SAFETY: a data symbol; we only take its address here.
            let symbol = unsafe { library.get::<*const c_char>(FINGERPRINT.as_bytes()) }
                .map_err(|e| load_error(format!("not an alexc AOT library: {e}")))?;
            // SAFETY: the library passed the manifest check, so it was
            // written by `write_aot`, which defines the symbol as a
            // NUL-terminated string constant; the library stays loaded
            // while we copy it.
            unsafe { CStr::from_ptr(*symbol) }
                .to_string_lossy()
                .into_owned()
        };
        if fingerprint != want.fingerprint {
            return Err(stale(format!(
                "{AOT_LIBRARY} has fingerprint {fingerprint}, the manifest {} (the library was \
                 replaced, or an older copy of it is still loaded in this process)",
                want.fingerprint
            )));
        }

        // SAFETY: `alexc_init` has the `InitFn` signature (it was emitted by
        // `add_aot_interface`, as the fingerprint shows).
        let init = unsafe { library.get::<InitFn>(INIT.as_bytes()) }
            .map_err(|e| load_error(e.to_string()))?;
        let table: [*const c_void; 1] = [parallel_for as *const c_void];
        // SAFETY: `table` has the one entry `alexc_init` reads, a function
        // with the signature generated code calls it with, valid for the
        // life of the process; `init` only stores it.
        unsafe { init(table.as_ptr()) };

        let mut entries = Entries::default();
        for kernel in kernels {
            // SAFETY: the manifest and the fingerprint show that the symbol
            // is `void k(ptr args)` compiled from exactly `kernel`.
            let entry = unsafe { library.get::<KernelFn>(kernel.name.as_bytes()) }
                .map_err(|e| load_error(format!("kernel `{}`: {e}", kernel.name)))?;
            // SAFETY: as above; the library is kept with the table.
            unsafe { entries.push(kernel, *entry) };
        }
        Ok(AotLibrary {
            kernels: entries,
            path,
            fingerprint,
            _library: library,
        })
    }

    /// The kernels' names, in the order given to [`AotLibrary::open`].
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kernels.names()
    }

    /// The fingerprint of the loaded library (as in its manifest).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Runs kernel `name` on `args`; see [`crate::JitModule::call`].
    pub fn call(&self, name: &str, args: &mut [BufferArg<'_>]) -> Result<(), LlvmError> {
        self.kernels.call(name, args)
    }

    /// Runs kernel `name` on raw buffer pointers.
    ///
    /// # Safety
    ///
    /// As for [`crate::JitModule::call_raw`].
    pub unsafe fn call_raw(&self, name: &str, pointers: &[*mut u8]) -> Result<(), LlvmError> {
        // SAFETY: the caller's contract.
        unsafe { self.kernels.call_raw(name, pointers) }
    }
}

/// `dlopen`s `path` with every symbol bound now (a missing one is an error
/// here, not a crash at the first call) and kept local to the library.
fn load(path: &Path) -> Result<libloading::Library, LlvmError> {
    let failed = |e: libloading::Error| LlvmError::Load {
        library: path.to_path_buf(),
        message: e.to_string(),
    };
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: loading runs the library's initializers; a library that
        // passed the manifest check was linked by `write_aot` from our
        // object file and has only the C runtime's.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map(Into::into)
            .map_err(failed)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { libloading::Library::new(path) }.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use alexc_kernel::{Access, Idx, KernelBuilder, LoopKind, Schedule, Stmt};

    use super::*;

    /// `y[i] = x[i] + 1` over a parallel loop.
    fn parallel_kernel() -> Kernel {
        let mut kb = KernelBuilder::new("inc");
        let x = kb.param("x", DType::F32, &[64], Access::Read);
        let y = kb.param("y", DType::F32, &[64], Access::Write);
        let i = kb.var("i", DType::I64);
        let body = vec![Stmt::For {
            var: i,
            extent: Idx::Const(64),
            kind: LoopKind::Parallel,
            body: vec![Stmt::Store {
                buf: y,
                index: vec![Idx::Var(i)],
                value: alexc_kernel::Expr::binary(
                    alexc_kernel::BinOp::Add,
                    alexc_kernel::Expr::load(x, vec![Idx::Var(i)]),
                    alexc_kernel::Expr::F32(1.0),
                ),
            }],
        }];
        kb.finish(body, Schedule::default())
    }

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn counting_pfor(body: parallel::BodyFn, ctx: *mut u8, n: i64) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from generated code.
        unsafe { parallel::alexc_parallel_for(body, ctx, n) }
    }

    /// The library's parallel loops call the function handed to
    /// `alexc_init`, not a symbol found by name.
    #[test]
    fn parallel_loops_call_the_injected_function() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kernels = [parallel_kernel()];
        let target = Target::host().expect("host");
        write_aot(&kernels, &target, dir.path()).expect("writes");
        let lib =
            AotLibrary::open_with(dir.path(), &kernels, &target, counting_pfor).expect("opens");
        let mut x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let mut y = vec![0f32; 64];
        let before = CALLS.load(Ordering::Relaxed);
        lib.call("inc", &mut [BufferArg::F32(&mut x), BufferArg::F32(&mut y)])
            .expect("calls");
        assert_eq!(CALLS.load(Ordering::Relaxed), before + 1);
        assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
    }

    #[test]
    fn fnv_1a_128_matches_the_reference_values() {
        assert_eq!(hash_hex(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(hash_hex(b"a"), "d228cb696f1a8caf78912b704e4a8964");
    }
}
