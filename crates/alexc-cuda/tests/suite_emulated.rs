//! The reference suite through the CUDA C the backend renders, run on the
//! CPU by the emulator (`alexc_cuda::emulate`): every case, lowered for the
//! GPU, rendered, compiled by the host's C++ compiler and executed with
//! CUDA's thread model (grids, blocks, `__shared__` memory, barriers),
//! compared with the reference interpreter. With `suite_gpu_lowering.rs`
//! (the same kernels on the kernel IR evaluator) this pins the renderer's
//! thread mapping without a GPU. `ALEXC_SUITE_FILTER=<substring>` runs only
//! matching cases.

use alexc_lower::LowerOptions;

#[test]
fn every_case_matches_the_reference_on_the_emulated_gpu() {
    let Some(emulator) = alexc_cuda::emulate::emulator_or_skip() else {
        return;
    };
    let filter = std::env::var("ALEXC_SUITE_FILTER").unwrap_or_default();
    let summary = alexc_suite::run_all_with(&emulator, &filter, &[LowerOptions::gpu()])
        .expect(alexc_suite::KNOWN_ISSUES);
    println!("{summary}");
    assert!(summary.runs > 0, "no case matches `{filter}`");
    assert!(summary.passed(), "{summary}");
}
