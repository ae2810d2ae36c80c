//! The reference suite on the kernel IR evaluator (`EvalBackend`): checks
//! the lowering of every op against the interpreter through the runtime's
//! binding of kernels to memory. `ALEXC_SUITE_FILTER=<substring>` runs only
//! the cases whose name contains it.

use alexc_runtime::EvalBackend;

#[test]
fn every_case_matches_the_reference_on_the_kernel_evaluator() {
    let filter = std::env::var("ALEXC_SUITE_FILTER").unwrap_or_default();
    let summary = alexc_suite::run_all(&EvalBackend, &filter).expect(alexc_suite::KNOWN_ISSUES);
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
    assert!(
        filter.is_empty() || summary.cases > 0,
        "no case matches `{filter}`"
    );
    assert!(!filter.is_empty() || summary.stale.is_empty(), "{summary}");
}
