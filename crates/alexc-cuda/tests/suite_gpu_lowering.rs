//! The GPU lowering (`LowerOptions::gpu()`) proven on the CPU: every case of
//! the reference suite, lowered for the GPU, run on the kernel IR
//! evaluator and compared with the reference interpreter. This is what
//! makes the kernels the CUDA backend renders correct without a GPU; only
//! the rendering's thread mapping is left to `suite_cuda.rs` on a GPU.
//! `ALEXC_SUITE_FILTER=<substring>` runs only matching cases.

use alexc_lower::LowerOptions;
use alexc_runtime::EvalBackend;

#[test]
fn every_case_matches_the_reference_with_the_gpu_lowering() {
    let filter = std::env::var("ALEXC_SUITE_FILTER").unwrap_or_default();
    let options = LowerOptions::gpu();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in alexc_suite::cases() {
        if !case.name.contains(&filter) {
            continue;
        }
        ran += 1;
        match alexc_suite::run_case(&EvalBackend, &case, &options) {
            Ok(report) => {
                for (kind, message) in report.failures() {
                    failures.push(format!("{} {kind:?}: {message}", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    println!("{ran} cases, {} failures", failures.len());
    assert!(ran > 0, "no case matches `{filter}`");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
