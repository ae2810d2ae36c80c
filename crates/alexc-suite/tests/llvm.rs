//! The reference suite on the LLVM backend (`LlvmBackend`): every case
//! JIT-compiled for the host CPU and compared with the interpreter, with
//! all kernels of one option set in one module. `ALEXC_SUITE_FILTER=<substring>` runs only
//! the cases whose name contains it.

use alexc_runtime::LlvmBackend;

#[test]
fn every_case_matches_the_reference_on_llvm() {
    let filter = std::env::var("ALEXC_SUITE_FILTER").unwrap_or_default();
    let summary = alexc_suite::run_all(&LlvmBackend, &filter).expect(alexc_suite::KNOWN_ISSUES);
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
    assert!(
        filter.is_empty() || summary.cases > 0,
        "no case matches `{filter}`"
    );
    assert!(!filter.is_empty() || summary.stale.is_empty(), "{summary}");
}
