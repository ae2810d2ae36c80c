//! The CUDA backend: kernel IR rendered to CUDA C, compiled to PTX by NVRTC,
//! loaded and launched through cudarc's driver API.
//!
//! The stages live apart, so that everything but execution is checked on
//! machines without a GPU (CI included):
//!
//! - [`mod@render`] (pure): a kernel → CUDA C source and its launches (how grid
//!   and block derive from the kernel's loops). Snapshot-tested.
//! - [`launch`] (pure): the launch-dimension arithmetic.
//! - [`nvrtc`]: one translation unit → PTX (for `--emit ptx` and ptxas) or
//!   machine code (what the backend loads) for an architecture (NVRTC
//!   needs no GPU, only `libnvrtc`); the compile log becomes the error.
//! - [`ptxas`]: runs `ptxas -v` on PTX and parses registers and spills per
//!   function (the CI check that the GEMM tiles fit in registers).
//! - [`plan`]: the kernels of a model's plan without compiling them, and
//!   [`compile_plan`] (render + NVRTC for all of them as one unit).
//! - [`backend`]: [`CudaBackend`], the runtime's `Backend` on a GPU: one
//!   device arena per plan, state kept on the device.
//! - [`emulate`]: [`CudaEmulator`], the same rendered CUDA C compiled by the
//!   host's C++ compiler and run on the CPU with CUDA's execution model
//!   (fibers for threads, real barriers): the thread mapping tested without
//!   a GPU.
//!
//! The GPU-shaped kernel IR itself comes from the lowering
//! (`alexc_lower::LowerOptions::gpu()`), and is proven against the
//! reference interpreter on the CPU, by the reference suite on the kernel
//! IR evaluator (`tests/suite_gpu_lowering.rs`); the rendering's thread
//! mapping by the same suite on the emulator (`tests/suite_emulated.rs`),
//! and on a real GPU by `tests/suite_cuda.rs` (`scripts/gpu-check.sh`).

pub mod backend;
pub mod emulate;
pub mod launch;
pub mod nvrtc;
pub mod plan;
pub mod ptxas;
pub mod render;

pub use backend::CudaBackend;
pub use emulate::CudaEmulator;
pub use launch::{Dims, Mapping};
pub use nvrtc::{compile_cubin, compile_ptx, nvrtc_available, Arch};
pub use plan::{compile_plan, plan_kernels, render_plan, CudaModule};
pub use ptxas::{ptxas_report, FunctionReport};
pub use render::{render, render_as, CudaKernel, Launch, Param, PRELUDE};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("rendering `{kernel}` to CUDA C: {message}")]
    Render { kernel: String, message: String },
    #[error("NVRTC is not available ({0}); run `source scripts/setup.sh`, which installs the `nvidia-cuda-nvrtc-cu12` wheel and puts it on LD_LIBRARY_PATH")]
    NoNvrtc(String),
    #[error("NVRTC failed for {arch}:\n{log}")]
    Nvrtc { arch: String, log: String },
    #[error("writing the CUDA module: {0}")]
    Io(String),
    #[error("ptxas: {0}")]
    Ptxas(String),
    #[error("no CUDA driver: libcuda could not be loaded (is this a machine with an NVIDIA GPU and its driver?)")]
    NoDriver,
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("CUDA emulator: {0}")]
    Emulator(String),
    #[error("{0}")]
    Runtime(#[from] alexc_runtime::RuntimeError),
}
