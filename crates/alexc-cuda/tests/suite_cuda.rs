//! The reference suite on a GPU: every case, lowered for the GPU
//! (`LowerOptions::gpu()`), compiled by NVRTC, run by `CudaBackend` and
//! compared with the reference interpreter. With `ALEXC_CUDA_ALL_SETS=1`,
//! the suite's CPU option sets too (their kernels rendered with the flat
//! thread mapping; several minutes of NVRTC, so not by default). Without
//! a GPU these tests print why and pass (skip); `ALEXC_REQUIRE_GPU=1`
//! (`scripts/gpu-check.sh`) makes that a failure.
//! `ALEXC_SUITE_FILTER=<substring>` runs only matching cases.

use alexc_cuda::backend::gpu_available;
use alexc_cuda::CudaBackend;
use alexc_lower::LowerOptions;

/// Whether a GPU is here; prints why not (or fails when one is required).
fn gpu() -> bool {
    let required = std::env::var_os("ALEXC_REQUIRE_GPU").is_some_and(|v| v == "1");
    let (nvrtc, gpu) = (alexc_cuda::nvrtc_available(), gpu_available());
    if !(nvrtc && gpu) {
        let msg = format!(
            "SKIPPED: no {} on this machine (the CUDA suite needs an NVIDIA GPU with its driver, and NVRTC from `source scripts/setup.sh`)",
            if gpu { "NVRTC" } else { "GPU" }
        );
        assert!(!required, "{msg}");
        eprintln!("{msg}");
    }
    nvrtc && gpu
}

fn filter() -> String {
    std::env::var("ALEXC_SUITE_FILTER").unwrap_or_default()
}

#[test]
fn every_case_matches_the_reference_on_cuda_with_the_gpu_lowering() {
    if !gpu() {
        return;
    }
    let backend = CudaBackend::host_mirrored(0);
    let options = LowerOptions::gpu();
    let filter = filter();
    let (mut ran, mut failures) = (0, Vec::new());
    let start = std::time::Instant::now();
    for case in alexc_suite::cases() {
        if !case.name.contains(&filter) {
            continue;
        }
        ran += 1;
        match alexc_suite::run_case(&backend, &case, &options) {
            Ok(report) => {
                for (kind, message) in report.failures() {
                    failures.push(format!("{} {kind:?}: {message}", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    println!(
        "cuda (GPU lowering): {ran} cases in {:.1?}, {} failures",
        start.elapsed(),
        failures.len()
    );
    assert!(ran > 0, "no case matches `{filter}`");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_case_matches_the_reference_on_cuda_with_the_cpu_option_sets() {
    if std::env::var_os("ALEXC_CUDA_ALL_SETS").is_none_or(|v| v != "1") {
        eprintln!("SKIPPED: the CPU option sets on CUDA run with ALEXC_CUDA_ALL_SETS=1");
        return;
    }
    if !gpu() {
        return;
    }
    let filter = filter();
    let summary = alexc_suite::run_all(&CudaBackend::host_mirrored(0), &filter)
        .expect(alexc_suite::KNOWN_ISSUES);
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
}
