//! Which code generators this build of `alexc` has, and everything the CLI
//! does with LLVM, in one place.
//!
//! LLVM is an optional Cargo feature (`llvm`, on by default): it gives the
//! fastest code but needs LLVM 19's development files to build, while
//! Cranelift needs nothing outside Cargo. Every use of LLVM in the CLI goes
//! through this module, which has two implementations: with the feature it
//! calls `alexc_llvm` and the runtime's LLVM backends; without it every
//! entry point that needs LLVM returns the same explanation
//! ([`require_llvm`]) instead of compiling anything. So the rest of the CLI
//! has no `cfg`, `--backend llvm`, `--emit llvm-ir|asm`, `-o DIR` and
//! `--aot` still parse in a build without LLVM (and say what is missing
//! rather than "invalid value"), and the default backend is the best one
//! the build has ([`crate::Backend::DEFAULT`]).

use std::path::Path;

use alexc_kernel::Kernel;

use crate::{Backend, CompileBackend};

impl Backend {
    /// The default of `run --backend` and `step --backend`: LLVM where
    /// this build has it (the fastest code), else Cranelift.
    pub const DEFAULT: Backend = if HAS_LLVM {
        Backend::Llvm
    } else {
        Backend::Cranelift
    };
}

impl CompileBackend {
    /// The default of `compile --backend` (as [`Backend::DEFAULT`]).
    pub const DEFAULT: CompileBackend = if HAS_LLVM {
        CompileBackend::Llvm
    } else {
        CompileBackend::Cranelift
    };
}

/// Whether this build has the LLVM backend (the `llvm` feature).
pub const HAS_LLVM: bool = cfg!(feature = "llvm");

/// The default of `bench --backends`, as clap parses it.
pub const DEFAULT_BENCH_BACKENDS: &str = if HAS_LLVM { "llvm" } else { "cranelift" };

/// Why a build without the `llvm` feature cannot do what was asked, and how
/// to get a build that can.
const WITHOUT_LLVM: &str = "this alexc was built without the `llvm` feature (Cranelift is its \
     code generator); build it with default features to get LLVM: `cargo build -p alexc-cli` \
     (needs the LLVM 19 development files: `bash scripts/setup.sh`)";

/// Ok where this build has LLVM; else the error saying that `what` (e.g.
/// `--backend llvm`) needs it and how to build an `alexc` that has it.
pub fn require_llvm(what: &str) -> anyhow::Result<()> {
    if HAS_LLVM {
        Ok(())
    } else {
        Err(without_llvm(what))
    }
}

fn without_llvm(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what} needs LLVM, but {WITHOUT_LLVM}")
}

#[cfg(feature = "llvm")]
mod imp {
    use super::*;
    use anyhow::Context;

    /// The runtime backend of `--backend llvm`: the LLVM JIT for this CPU.
    pub fn llvm() -> &'static dyn alexc_runtime::Backend {
        &alexc_runtime::LlvmBackend
    }

    /// The runtime backend that loads the native code `alexc compile -o
    /// DIR` wrote into `dir` (`run --aot DIR`).
    pub fn aot(dir: &Path) -> anyhow::Result<Box<dyn alexc_runtime::Backend>> {
        Ok(Box::new(alexc_runtime::AotBackend {
            dir: dir.to_path_buf(),
        }))
    }

    /// Compiles `kernels` for this CPU into `dir`: an object file, a
    /// shared library and its manifest (`compile -o DIR`).
    pub fn write_aot(kernels: &[Kernel], dir: &Path) -> anyhow::Result<()> {
        alexc_runtime::write_aot(kernels, dir)?;
        Ok(())
    }

    /// The optimized LLVM IR of `kernels` for this CPU (`--emit llvm-ir`).
    pub fn llvm_ir(kernels: &[Kernel]) -> anyhow::Result<String> {
        let target = alexc_llvm::Target::host().context("the host target")?;
        alexc_llvm::llvm_ir_text(kernels, &target, true).context("emitting LLVM IR")
    }

    /// The assembly LLVM generates for `kernels` on this CPU (`--emit asm`).
    pub fn asm(kernels: &[Kernel]) -> anyhow::Result<String> {
        let target = alexc_llvm::Target::host().context("the host target")?;
        alexc_llvm::asm_text(kernels, &target).context("emitting assembly")
    }

    /// This CPU as `compile` reports it: LLVM's name of the host CPU.
    pub fn host_cpu() -> anyhow::Result<String> {
        Ok(alexc_llvm::Target::host().context("the host target")?.cpu)
    }
}

#[cfg(not(feature = "llvm"))]
mod imp {
    use super::*;

    /// Stands in for the LLVM backend in a build without it: compiling
    /// fails with the explanation, so a caller that did not check
    /// [`require_llvm`] first still gets a clear error, not a panic.
    #[derive(Debug)]
    struct NoLlvm;

    impl alexc_runtime::Backend for NoLlvm {
        fn name(&self) -> &'static str {
            "llvm"
        }

        fn compile(
            &self,
            _kernels: &[Kernel],
        ) -> Result<Box<dyn alexc_runtime::Executable>, alexc_runtime::RuntimeError> {
            Err(alexc_runtime::RuntimeError::Compile(WITHOUT_LLVM.into()))
        }
    }

    pub fn llvm() -> &'static dyn alexc_runtime::Backend {
        &NoLlvm
    }

    pub fn aot(_dir: &Path) -> anyhow::Result<Box<dyn alexc_runtime::Backend>> {
        Err(without_llvm(
            "--aot (native code from `alexc compile -o DIR`)",
        ))
    }

    pub fn write_aot(_kernels: &[Kernel], _dir: &Path) -> anyhow::Result<()> {
        Err(without_llvm("ahead-of-time code (-o DIR)"))
    }

    pub fn llvm_ir(_kernels: &[Kernel]) -> anyhow::Result<String> {
        Err(without_llvm("--emit llvm-ir"))
    }

    pub fn asm(_kernels: &[Kernel]) -> anyhow::Result<String> {
        Err(without_llvm("--emit asm"))
    }

    /// This CPU as `compile` reports it: its architecture (Cranelift
    /// targets the host's features without naming the CPU model).
    pub fn host_cpu() -> anyhow::Result<String> {
        Ok(std::env::consts::ARCH.to_string())
    }
}

pub use imp::{aot, asm, host_cpu, llvm, llvm_ir, write_aot};
