//! The code-generation target: triple, CPU and feature string. Every emitted
//! function carries the CPU and features as `target-cpu` / `target-features`
//! attributes, because MCJIT ignores host features otherwise (SSE-only code).

use std::sync::OnceLock;

use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;

use crate::LlvmError;

/// What to generate code for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// LLVM target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    /// LLVM CPU name, e.g. `znver4`.
    pub cpu: String,
    /// LLVM feature string, e.g. `+avx512f,+fma,…`.
    pub features: String,
}

/// Registers the native target with LLVM once per process.
pub(crate) fn init_native() -> Result<(), LlvmError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| LlvmTarget::initialize_native(&InitializationConfig::default()))
        .clone()
        .map_err(LlvmError::Llvm)
}

impl Target {
    /// The machine this process runs on.
    pub fn host() -> Result<Target, LlvmError> {
        init_native()?;
        Ok(Target {
            triple: TargetMachine::get_default_triple()
                .as_str()
                .to_string_lossy()
                .into_owned(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        })
    }

    /// f32 lanes of the widest vector registers the features enable: 16
    /// with AVX-512F, 8 with AVX, 4 otherwise (SSE, NEON).
    pub fn vector_width(&self) -> u32 {
        let has = |f: &str| self.features.split(',').any(|x| x == f);
        if has("+avx512f") {
            16
        } else if has("+avx") {
            8
        } else {
            4
        }
    }

    /// An LLVM target machine for this target, at `-O3`.
    pub(crate) fn machine(&self) -> Result<TargetMachine, LlvmError> {
        init_native()?;
        let triple = TargetTriple::create(&self.triple);
        let target = LlvmTarget::from_triple(&triple).map_err(LlvmError::llvm)?;
        target
            .create_target_machine(
                &triple,
                &self.cpu,
                &self.features,
                OptimizationLevel::Aggressive,
                RelocMode::Default,
                CodeModel::Default,
            )
            .ok_or_else(|| {
                LlvmError::Llvm(format!(
                    "cannot create a target machine for {}",
                    self.triple
                ))
            })
    }
}
