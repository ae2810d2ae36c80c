//! The rendered CUDA C run on the CPU: a [`Backend`] that executes exactly
//! the source NVRTC would compile, thread mapping included, without a GPU.
//!
//! The renderer's output is compiled by the host's C++ compiler (`c++`, or
//! `$ALEXC_CXX`) behind a small header (`emulate/cuda_emu.h`) that turns the
//! CUDA keywords into C++: `threadIdx`, `blockIdx`, `blockDim`, `gridDim`
//! become thread-local variables, `__shared__` arrays thread-local statics,
//! and every thread of a block a fiber, so `__syncthreads()` is a real
//! barrier. Launches then run grid by grid, blocks spread over the host's
//! cores, on the runtime's host memory.
//!
//! What this checks that the kernel IR evaluator cannot: the renderer
//! itself — grid-stride loops, thread loops and block-stride loops, which
//! locals become registers and which `__shared__`, barrier placement, 32-bit
//! index narrowing, parameter order, the launch dimensions of
//! [`crate::launch`]. Two checks beyond plain execution:
//!
//! - **Races inside a block**: the threads of a block run in an order that
//!   alternates between barrier phases and between blocks, so a thread that
//!   reads a value another thread writes in the same phase sees a different
//!   value on different blocks, and the result differs from the reference.
//! - **Divergent barriers**: a `__syncthreads()` that some threads of a
//!   block reach while others have returned is an error (it hangs, or is
//!   undefined, on a GPU).
//!
//! What it cannot check: anything about the hardware — timing, occupancy,
//! register limits (`crate::ptxas` checks those on the PTX), the device
//! math library's last-ulp differences (the host's `expf`/`logf` run
//! instead) — and the driver calls of [`crate::CudaBackend`].
#![allow(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use alexc_kernel::{DType, Kernel};
use alexc_lower::LowerOptions;
use alexc_runtime::{Backend, Binding, Executable, Memory, RuntimeError};

use crate::launch::{Dims, Mapping};
use crate::render::{CudaKernel, PRELUDE};
use crate::{render_plan, CudaError};

/// The header every emulated translation unit starts with.
pub const HEADER: &str = include_str!("emulate/cuda_emu.h");

/// Runs the CUDA backend's kernels on the CPU (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CudaEmulator {
    /// OS threads that run a launch's blocks (and compile); 0: one per
    /// core.
    pub threads: usize,
    /// The C++ compiler; `None`: `$ALEXC_CXX`, else `c++`.
    pub compiler: Option<PathBuf>,
}

impl CudaEmulator {
    /// One thread per core, the default compiler (a `const`, for statics).
    pub const fn new() -> CudaEmulator {
        CudaEmulator {
            threads: 0,
            compiler: None,
        }
    }

    /// Whether this emulator's C++ compiler runs here.
    pub fn compiler_runs(&self) -> bool {
        Command::new(self.compiler())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn workers(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn compiler(&self) -> PathBuf {
        self.compiler
            .clone()
            .or_else(|| std::env::var_os("ALEXC_CXX").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("c++"))
    }

    /// Compiles rendered kernels (functions named as in their `launches`)
    /// into a loaded module.
    pub fn load(&self, kernels: &[CudaKernel]) -> Result<EmulatedModule, CudaError> {
        let dir = tempfile::tempdir().map_err(|e| CudaError::Io(e.to_string()))?;
        let parts = split(kernels, self.workers());
        let compiler = self.compiler();
        let mut objects = Vec::new();
        let mut jobs = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let source = dir.path().join(format!("part{j}.cpp"));
            let object = dir.path().join(format!("part{j}.o"));
            std::fs::write(&source, emulation_unit(part))
                .map_err(|e| CudaError::Io(format!("{}: {e}", source.display())))?;
            let child = Command::new(&compiler)
                .args(COMPILE_FLAGS)
                .arg("-c")
                .arg(&source)
                .arg("-o")
                .arg(&object)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| no_compiler(&compiler, e))?;
            jobs.push((source, child));
            objects.push(object);
        }
        for (source, child) in jobs {
            let out = child
                .wait_with_output()
                .map_err(|e| CudaError::Io(e.to_string()))?;
            if !out.status.success() {
                return Err(CudaError::Emulator(format!(
                    "{} failed on {}:\n{}",
                    compiler.display(),
                    source.display(),
                    first_lines(&String::from_utf8_lossy(&out.stderr), 40)
                )));
            }
        }
        let library = dir.path().join("libkernels.so");
        let out = Command::new(&compiler)
            .args(["-shared", "-o"])
            .arg(&library)
            .args(&objects)
            .output()
            .map_err(|e| no_compiler(&compiler, e))?;
        if !out.status.success() {
            return Err(CudaError::Emulator(format!(
                "linking the emulated kernels:\n{}",
                first_lines(&String::from_utf8_lossy(&out.stderr), 40)
            )));
        }
        EmulatedModule::open(&library, kernels, self.workers())
    }
}

/// For test harnesses: the default emulator, or `None` (with a `SKIPPED`
/// line on standard error) where no C++ compiler runs. Under `CI` a missing
/// compiler is a failure instead: every CI machine has one.
pub fn emulator_or_skip() -> Option<CudaEmulator> {
    let e = CudaEmulator::default();
    if e.compiler_runs() {
        return Some(e);
    }
    let msg = format!(
        "no C++ compiler `{}` for the CUDA emulator (set ALEXC_CXX)",
        e.compiler().display()
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn no_compiler(compiler: &Path, e: std::io::Error) -> CudaError {
    CudaError::Emulator(format!(
        "cannot run the C++ compiler `{}` ({e}); the CUDA emulator needs one (set ALEXC_CXX)",
        compiler.display()
    ))
}

fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[..lines.len().min(n)].join("\n");
    if lines.len() > n {
        let _ = write!(out, "\n… ({} more lines)", lines.len() - n);
    }
    out
}

/// `-O1`: the generated loops are fully unrolled already, and compile
/// time dominates the suite's run. `_FORTIFY_SOURCE` off: see the header.
const COMPILE_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O1",
    "-fPIC",
    "-w",
    "-U_FORTIFY_SOURCE",
    "-D_FORTIFY_SOURCE=0",
];

/// `kernels` in at most `n` consecutive parts of about equal source size
/// (compiled in parallel).
fn split(kernels: &[CudaKernel], n: usize) -> Vec<&[CudaKernel]> {
    let total: usize = kernels.iter().map(|k| k.source.len()).sum();
    let target = total.div_ceil(n.max(1)).max(1);
    let mut parts = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, k) in kernels.iter().enumerate() {
        size += k.source.len();
        if size >= target && parts.len() + 1 < n {
            parts.push(&kernels[start..=i]);
            (start, size) = (i + 1, 0);
        }
    }
    if start < kernels.len() || parts.is_empty() {
        parts.push(&kernels[start..]);
    }
    parts
}

/// The C symbol of launch `entry`'s host-side wrapper.
fn wrapper(entry: &str) -> String {
    format!("alexc_emu_{entry}")
}

/// One translation unit for the emulator: [`HEADER`], [`PRELUDE`], the
/// kernels' functions unchanged, and per launch a C wrapper that runs a
/// share of its blocks (pure; what `load` compiles).
pub fn emulation_unit(kernels: &[CudaKernel]) -> String {
    let mut out = format!("{HEADER}\n{PRELUDE}\n");
    for k in kernels {
        out.push_str(&k.source);
        for l in &k.launches {
            let args: Vec<String> = k
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let ty = match p.dtype {
                        DType::F32 => "float",
                        DType::I64 => "i64",
                    };
                    format!("({ty}*)a[{i}]")
                })
                .collect();
            let _ = writeln!(
                out,
                "static void {w}_body(void* const* a) {{ {entry}({args}); }}\n\
                 extern \"C\" int {w}(void* const* args, unsigned grid, unsigned block, unsigned first, unsigned step, int barriers) {{\n  \
                 return alexc_emu::launch({w}_body, args, grid, block, first, step, barriers);\n}}\n",
                w = wrapper(&l.entry),
                entry = l.entry,
                args = args.join(", "),
            );
        }
    }
    out
}

/// `int wrapper(args, grid, block, first, step, barriers)`.
type LaunchFn = unsafe extern "C" fn(*const *mut u8, u32, u32, u32, u32, i32) -> i32;

struct EmulatedLaunch {
    function: LaunchFn,
    dims: Option<Dims>,
    barriers: bool,
}

struct EmulatedKernel {
    name: String,
    params: usize,
    launches: Vec<EmulatedLaunch>,
}

/// Compiled, loaded emulated kernels.
pub struct EmulatedModule {
    kernels: Vec<EmulatedKernel>,
    threads: usize,
    /// Keeps the functions of `kernels` mapped.
    _library: libloading::Library,
}

impl std::fmt::Debug for EmulatedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedModule")
            .field("kernels", &self.kernels.len())
            .field("threads", &self.threads)
            .finish()
    }
}

/// A pointer array shared by the threads of one launch.
#[derive(Clone, Copy)]
struct Args(*const *mut u8);
// SAFETY: the threads only pass it on to the generated code, which the
// caller of `EmulatedModule::launch` vouches for.
unsafe impl Send for Args {}

impl EmulatedModule {
    fn open(library: &Path, kernels: &[CudaKernel], threads: usize) -> Result<Self, CudaError> {
        let failed =
            |e: libloading::Error| CudaError::Emulator(format!("{}: {e}", library.display()));
        // SAFETY: the library was just built from generated code whose
        // initializers only zero thread-local arrays.
        let lib = unsafe { libloading::Library::new(library) }.map_err(failed)?;
        let mut loaded = Vec::with_capacity(kernels.len());
        for k in kernels {
            let mut launches = Vec::with_capacity(k.launches.len());
            for l in &k.launches {
                let symbol = wrapper(&l.entry);
                // SAFETY: `emulation_unit` defines the symbol with exactly
                // this signature.
                let function: LaunchFn =
                    *unsafe { lib.get::<LaunchFn>(symbol.as_bytes()) }.map_err(failed)?;
                launches.push(EmulatedLaunch {
                    function,
                    dims: l.mapping.dims(),
                    barriers: matches!(l.mapping, Mapping::Blocks { .. }),
                });
            }
            loaded.push(EmulatedKernel {
                name: k.name.clone(),
                params: k.params.len(),
                launches,
            });
        }
        Ok(EmulatedModule {
            kernels: loaded,
            threads,
            _library: lib,
        })
    }

    /// Runs every launch of kernel `index` in order.
    ///
    /// # Safety
    ///
    /// `pointers` must be the kernel's parameters in order, each valid for
    /// every element its declaration has (of its dtype) and not aliasing
    /// another, as for native code (`alexc_kernel::abi`).
    pub unsafe fn launch(&self, index: usize, pointers: &[*mut u8]) -> Result<(), CudaError> {
        let kernel = self
            .kernels
            .get(index)
            .ok_or_else(|| CudaError::Emulator(format!("no kernel {index}")))?;
        let fail = |message: String| CudaError::Emulator(format!("`{}`: {message}", kernel.name));
        if pointers.len() != kernel.params {
            return Err(fail(format!(
                "{} pointers for {} parameters",
                pointers.len(),
                kernel.params
            )));
        }
        for (i, l) in kernel.launches.iter().enumerate() {
            let Some(dims) = l.dims else { continue };
            let workers = self.threads.min(dims.grid as usize).max(1) as u32;
            let args = Args(pointers.as_ptr());
            let (function, barriers) = (l.function, i32::from(l.barriers));
            // Fresh threads, so that the module's thread-local storage
            // (the `__shared__` arrays) never outlives the launch.
            let statuses: Vec<Option<i32>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        s.spawn(move || {
                            let args = args;
                            // SAFETY: the caller's contract, and each
                            // thread runs distinct blocks.
                            unsafe { function(args.0, dims.grid, dims.block, w, workers, barriers) }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().ok()).collect()
            });
            for status in statuses {
                match status {
                    Some(0) => {}
                    Some(1) => {
                        return Err(fail(format!(
                            "launch {i}: a __syncthreads() that not every thread of a block reaches"
                        )))
                    }
                    Some(2) => {
                        return Err(fail(format!(
                            "launch {i}: __syncthreads() in a launch without barriers"
                        )))
                    }
                    Some(3) => return Err(fail(format!("launch {i}: no memory for fiber stacks"))),
                    Some(s) => return Err(fail(format!("launch {i}: status {s}"))),
                    None => return Err(fail(format!("launch {i}: a block thread panicked"))),
                }
            }
        }
        Ok(())
    }
}

impl Backend for CudaEmulator {
    fn name(&self) -> &'static str {
        "cuda-emu"
    }

    fn lower_options(&self) -> LowerOptions {
        LowerOptions::gpu()
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        let start = std::time::Instant::now();
        let compiled = render_plan(kernels).and_then(|(_, rendered)| self.load(&rendered));
        let module = compiled.map_err(|e| RuntimeError::Compile(e.to_string()))?;
        tracing::info!(
            kernels = kernels.len(),
            seconds = start.elapsed().as_secs_f64(),
            "CUDA C compiled for the emulator"
        );
        Ok(Box::new(module))
    }
}

impl Executable for EmulatedModule {
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        let name = self
            .kernels
            .get(index)
            .map_or("?", |k| k.name.as_str())
            .to_owned();
        let pointers = memory.pointers(&name, bindings)?;
        // SAFETY: `Memory::pointers` checked each binding against its
        // region; the runtime checked them against the kernel's
        // declarations and merged aliased parameters.
        unsafe { self.launch(index, &pointers) }.map_err(|e| RuntimeError::Kernel {
            kernel: name,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Launch;

    fn kernel(name: &str, bytes: usize) -> CudaKernel {
        CudaKernel {
            name: name.into(),
            source: "x".repeat(bytes),
            launches: vec![Launch {
                entry: format!("{name}_l0"),
                mapping: Mapping::Single,
                shared_bytes: 0,
            }],
            params: Vec::new(),
        }
    }

    #[test]
    fn kernels_split_into_parts_of_about_equal_size_in_order() {
        let ks: Vec<CudaKernel> = (0..6).map(|i| kernel(&format!("k{i}"), 10)).collect();
        let parts = split(&ks, 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len() + parts[1].len(), 6);
        assert_eq!(parts[0][0].name, "k0");
        assert_eq!(split(&ks, 1).len(), 1);
        assert_eq!(split(&ks[..1], 4).len(), 1);
        assert_eq!(split(&[], 4).len(), 1);
    }

    #[test]
    fn every_launch_gets_a_wrapper() {
        let unit = emulation_unit(&[kernel("k0", 0)]);
        assert!(unit.contains("extern \"C\" int alexc_emu_k0_l0("), "{unit}");
        assert!(unit.contains("k0_l0();"), "{unit}");
    }
}
