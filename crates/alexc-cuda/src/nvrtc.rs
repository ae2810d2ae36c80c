//! CUDA C → PTX with NVRTC (through cudarc). NVRTC runs on any machine with
//! `libnvrtc.so.12` on the library path — no GPU, no driver — which is what
//! lets CI compile every generated kernel. `scripts/setup.sh` installs it
//! from the `nvidia-cuda-nvrtc-cu12` wheel.
#![allow(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CudaError;

/// A GPU architecture to compile for (`sm_90`: H100/H200; `sm_80`: A100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arch {
    /// Compute capability × 10 (`90` for sm_90).
    pub sm: u32,
}

impl Arch {
    pub const SM_80: Arch = Arch { sm: 80 };
    pub const SM_90: Arch = Arch { sm: 90 };
}

impl Default for Arch {
    fn default() -> Self {
        Arch::SM_90
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}", self.sm)
    }
}

impl FromStr for Arch {
    type Err = String;

    /// `sm_90`, `sm_80`, `compute_90` or `90`.
    fn from_str(s: &str) -> Result<Arch, String> {
        let digits = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))
            .unwrap_or(s);
        match digits.parse::<u32>() {
            Ok(sm) if (50..=120).contains(&sm) => Ok(Arch { sm }),
            _ => Err(format!(
                "`{s}` is not a GPU architecture (expected e.g. sm_90 or sm_80)"
            )),
        }
    }
}

/// Whether `libnvrtc` can be loaded. cudarc panics on first use when it
/// cannot, so every entry point checks this first.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one translation unit to PTX for `arch`.
pub fn compile_ptx(source: &str, arch: Arch) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc(
            "libnvrtc.so.12 is not on the library path".into(),
        ));
    }
    let options = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{}", arch.sm)],
        name: Some("alexc.cu".into()),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, options).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => other.to_string(),
        };
        CudaError::Nvrtc {
            arch: arch.to_string(),
            log,
        }
    })?;
    tracing::debug!(
        bytes = source.len(),
        seconds = start.elapsed().as_secs_f64(),
        "nvrtc"
    );
    Ok(ptx.to_src())
}

/// Compiles one translation unit to a CUBIN (machine code) for the real
/// architecture `arch`. The CUDA backend loads this rather than PTX: PTX
/// from a newer NVRTC than the driver's CUDA version cannot be JIT-compiled
/// by the driver, while machine code runs on any driver of the same major
/// CUDA version (minor-version compatibility), so the wheel's NVRTC works
/// with an older installed driver.
pub fn compile_cubin(source: &str, arch: Arch) -> Result<Vec<u8>, CudaError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc(
            "libnvrtc.so.12 is not on the library path".into(),
        ));
    }
    let fail = |log: String| CudaError::Nvrtc {
        arch: arch.to_string(),
        log,
    };
    let src = std::ffi::CString::new(source)
        .map_err(|_| fail("the source contains a NUL byte".into()))?;
    let name = c"alexc.cu";
    let prog = result::create_program(&src, Some(name)).map_err(|e| fail(e.to_string()))?;
    let options = [format!("--gpu-architecture=sm_{}", arch.sm)];
    // SAFETY: `prog` was created above and is destroyed once, at the end;
    // `src` and `name` outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let out = match compiled {
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| fail(e.to_string()))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                            .result()
                            .map(|()| cubin)
                            .map_err(|e| fail(e.to_string()))
                    })
            }
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l
                            .iter()
                            .take_while(|&&c| c != 0)
                            .map(|&c| c as u8)
                            .collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    })
                    .unwrap_or_else(|_| e.to_string());
                Err(fail(log))
            }
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_compiles_to_machine_code_and_errors_carry_the_log() {
        if !nvrtc_available() {
            eprintln!("SKIPPED: NVRTC is missing; run `source scripts/setup.sh`");
            return;
        }
        let ok = "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] += 1.0f; }";
        let cubin = compile_cubin(ok, Arch::SM_90).expect("compiles");
        assert_eq!(&cubin[..4], b"\x7fELF");
        let ptx = compile_ptx(ok, Arch::SM_80).expect("compiles");
        assert!(ptx.contains(".target sm_80"));
        let bad = "extern \"C\" __global__ void k(float* x) { x[0] = undeclared; }";
        match compile_ptx(bad, Arch::SM_90) {
            Err(CudaError::Nvrtc { log, .. }) => assert!(log.contains("undeclared"), "{log}"),
            other => panic!("{other:?}"),
        }
        match compile_cubin(bad, Arch::SM_90) {
            Err(CudaError::Nvrtc { log, .. }) => assert!(log.contains("undeclared"), "{log}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn architectures_parse_and_print() {
        assert_eq!("sm_90".parse::<Arch>(), Ok(Arch::SM_90));
        assert_eq!("80".parse::<Arch>(), Ok(Arch::SM_80));
        assert_eq!(
            "compute_86".parse::<Arch>().map(|a| a.to_string()),
            Ok("sm_86".into())
        );
        assert!("sm_x".parse::<Arch>().is_err());
        assert!("sm_10".parse::<Arch>().is_err());
    }
}
