//! `ptxas -v` on generated PTX: registers, stack and spills per function.
//! The CI check that the GEMM kernels' register tiles fit (no spills) runs
//! it; `ptxas` comes from the `nvidia-cuda-nvcc-cu12` wheel
//! (`scripts/setup.sh` puts it on PATH). Found as `$ALEXC_PTXAS`, else
//! `ptxas` on PATH.

use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Arch, CudaError};

/// What ptxas reports for one function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionReport {
    pub name: String,
    pub registers: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub shared_bytes: u32,
}

/// The ptxas binary: `$ALEXC_PTXAS`, else `ptxas` (on PATH).
pub fn ptxas_path() -> PathBuf {
    std::env::var_os("ALEXC_PTXAS").map_or_else(|| PathBuf::from("ptxas"), PathBuf::from)
}

/// Whether ptxas can be run.
pub fn ptxas_available() -> bool {
    Command::new(ptxas_path())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Assembles `ptx` for `arch` with `ptxas -v` and parses its report.
pub fn ptxas_report(ptx: &str, arch: Arch) -> Result<Vec<FunctionReport>, CudaError> {
    let dir = std::env::temp_dir().join(format!(
        "alexc-ptxas-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CudaError::Ptxas(format!("{}: {e}", dir.display())))?;
    let input = dir.join("kernels.ptx");
    let output = dir.join("kernels.cubin");
    let result = (|| {
        std::fs::write(&input, ptx)
            .map_err(|e| CudaError::Ptxas(format!("{}: {e}", input.display())))?;
        let out = Command::new(ptxas_path())
            .arg(format!("-arch={arch}"))
            .arg("-v")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .output()
            .map_err(|e| CudaError::Ptxas(format!("running {}: {e}", ptxas_path().display())))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(CudaError::Ptxas(log));
        }
        Ok(parse_report(&log))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The numbers after which `prefix` stands, in `line` (`"40 registers"`).
fn number_before(line: &str, suffix: &str) -> Option<u32> {
    let at = line.find(suffix)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output.
pub fn parse_report(log: &str) -> Vec<FunctionReport> {
    let mut out: Vec<FunctionReport> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line
            .split("Compiling entry function '")
            .nth(1)
            .or_else(|| line.split("Function properties for ").nth(1))
        {
            let name = rest.split('\'').next().unwrap_or(rest).trim().to_string();
            if out.last().is_none_or(|f| f.name != name) {
                out.push(FunctionReport {
                    name,
                    ..FunctionReport::default()
                });
            }
            continue;
        }
        let Some(f) = out.last_mut() else { continue };
        if line.contains("stack frame") {
            f.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            f.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            f.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            f.registers = number_before(line, "registers").unwrap_or(0);
            f.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_verbose_report() {
        let log = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k0_conv_l1' for 'sm_90'
ptxas info    : Function properties for k0_conv_l1
    0 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8448 bytes smem, 424 bytes cmem[0]
ptxas info    : Compiling entry function 'k1_relu_l0' for 'sm_90'
ptxas info    : Function properties for k1_relu_l0
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 0 barriers, 368 bytes cmem[0]
";
        let r = parse_report(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            FunctionReport {
                name: "k0_conv_l1".into(),
                registers: 64,
                stack_bytes: 0,
                spill_stores: 8,
                spill_loads: 12,
                shared_bytes: 8448,
            }
        );
        assert_eq!(r[1].registers, 10);
        assert_eq!(r[1].spill_stores, 0);
    }
}
