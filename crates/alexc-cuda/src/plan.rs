//! A model's plan for the GPU, without a GPU: its kernels (lowered with
//! [`LowerOptions::gpu`], as [`crate::CudaBackend`] would get them), rendered
//! into one translation unit and compiled by NVRTC.
//!
//! The kernels come from the runtime itself ([`Runtime::new`] with a backend
//! that only records what it is asked to compile), so they are exactly the
//! ones a GPU run launches: same pipeline, same memory plan, same merging of
//! aliased parameters. One translation unit for the whole plan, because
//! NVRTC's start-up dominates small compiles: AlexNet's kernels compile
//! several times faster together than one by one.

use std::cell::RefCell;

use alexc_kernel::Kernel;
use alexc_lower::LowerOptions;
use alexc_runtime::{Backend, Binding, Executable, Memory, Options, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::render::{render_as, symbol, CudaKernel, PRELUDE};
use crate::{compile_ptx, Arch, CudaError};

/// A compiled plan: its CUDA C, the PTX, and per kernel its launches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaModule {
    pub arch: Arch,
    /// One translation unit: [`PRELUDE`] and every kernel's functions.
    pub source: String,
    pub ptx: String,
    /// `kernels[i]` is the plan's kernel `i`.
    pub kernels: Vec<CudaKernel>,
}

impl CudaModule {
    /// Writes `kernels.cu` (the translation unit), `kernels.ptx` and
    /// `launches.json` (per kernel: its functions, grid mapping and
    /// parameters) into `dir`, which must exist: what `alexc compile
    /// --backend cuda --emit cuda,ptx -o DIR` leaves.
    pub fn write(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, CudaError> {
        let io = |path: &std::path::Path, e: std::io::Error| {
            CudaError::Io(format!("{}: {e}", path.display()))
        };
        let launches = serde_json::to_string_pretty(&serde_json::json!({
            "arch": self.arch.to_string(),
            "kernels": self
                .kernels
                .iter()
                .map(|k| serde_json::json!({
                    "name": k.name,
                    "launches": k.launches,
                    "params": k.params,
                }))
                .collect::<Vec<_>>(),
        }))
        .map_err(|e| CudaError::Io(e.to_string()))?;
        let files = [
            ("kernels.cu", self.source.as_str()),
            ("kernels.ptx", self.ptx.as_str()),
            ("launches.json", launches.as_str()),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Records the kernels it is asked to compile.
#[derive(Debug, Default)]
struct Recorder {
    kernels: RefCell<Vec<Kernel>>,
}

/// Stands in for an executable: the plan is only inspected.
struct NotRunnable;

impl Executable for NotRunnable {
    fn run(&self, _: usize, _: &mut Memory<'_>, _: &[Binding]) -> Result<(), RuntimeError> {
        Err(RuntimeError::Internal(
            "this plan was built to be inspected, not run".into(),
        ))
    }
}

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "cuda-plan"
    }

    fn lower_options(&self) -> LowerOptions {
        LowerOptions::gpu()
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        self.kernels.borrow_mut().extend_from_slice(kernels);
        Ok(Box::new(NotRunnable))
    }
}

/// The kernels of `model`'s plan as the CUDA backend compiles them (GPU
/// lowering unless `options.lower` says otherwise), in launch-index order.
pub fn plan_kernels(
    model: &alexc_frontend::Model,
    options: &Options,
) -> Result<Vec<Kernel>, CudaError> {
    let recorder = Recorder::default();
    Runtime::new(model, options, &recorder)?;
    Ok(recorder.kernels.into_inner())
}

/// Renders `kernels` into one translation unit; kernel `i`'s functions are
/// `k{i}_{name}_l{j}`, unique even where names repeat.
pub fn render_plan(kernels: &[Kernel]) -> Result<(String, Vec<CudaKernel>), CudaError> {
    let mut source = String::from(PRELUDE);
    source.push('\n');
    let mut rendered = Vec::with_capacity(kernels.len());
    for (i, k) in kernels.iter().enumerate() {
        let r = render_as(k, &format!("k{i}_{}", symbol(&k.name)))?;
        source.push_str(&r.source);
        rendered.push(r);
    }
    Ok((source, rendered))
}

/// Renders and compiles `kernels` for `arch` (NVRTC; no GPU needed).
pub fn compile_plan(kernels: &[Kernel], arch: Arch) -> Result<CudaModule, CudaError> {
    let (source, rendered) = render_plan(kernels)?;
    let ptx = compile_ptx(&source, arch)?;
    Ok(CudaModule {
        arch,
        source,
        ptx,
        kernels: rendered,
    })
}
