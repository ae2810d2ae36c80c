//! The suite catches what it claims to: a backend whose kernels do nothing,
//! write past a buffer, or compute a slightly wrong value fails, with a
//! message that says which.

use alexc_kernel::Kernel;
use alexc_runtime::{Backend, Binding, EvalBackend, Executable, Memory, Region, RuntimeError};
use alexc_suite::{cases, option_sets, run_case, FailureKind, Report};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Kernels return without running.
    Skip,
    /// After the kernel, the element just past its last result is written.
    PastTheEnd,
    /// After the kernel, the last element of its last result is off by 1e-3.
    Perturb,
}

/// The kernel evaluator with a fault injected into every launch.
#[derive(Debug)]
struct Broken(Fault);

struct BrokenExec {
    inner: Box<dyn Executable>,
    fault: Fault,
}

impl Backend for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn compile(&self, kernels: &[Kernel]) -> Result<Box<dyn Executable>, RuntimeError> {
        Ok(Box::new(BrokenExec {
            inner: EvalBackend.compile(kernels)?,
            fault: self.0,
        }))
    }
}

fn element<'m>(memory: &'m mut Memory<'_>, b: &Binding, at: usize) -> Option<&'m mut f32> {
    match b.region {
        Region::Arena => memory.arena.get_mut(at),
        Region::Workspace => memory.workspace.get_mut(at),
        Region::External(i) => match memory.external.get_mut(i)? {
            alexc_runtime::ExternalStore::F32(v) => v.get_mut(at),
            alexc_runtime::ExternalStore::I64(_) => None,
        },
    }
}

impl Executable for BrokenExec {
    fn run(
        &self,
        index: usize,
        memory: &mut Memory<'_>,
        bindings: &[Binding],
    ) -> Result<(), RuntimeError> {
        if let Fault::Skip = self.fault {
            return Ok(());
        }
        self.inner.run(index, memory, bindings)?;
        // The suite keeps results in the arena (inputs are external).
        let b = bindings
            .iter()
            .rev()
            .find(|b| b.region == Region::Arena)
            .expect("a result");
        match self.fault {
            Fault::PastTheEnd => {
                *element(memory, b, b.offset + b.len).expect("a guard element") = 0.0;
            }
            Fault::Perturb => {
                *element(memory, b, b.offset + b.len - 1).expect("an element") += 1e-3;
            }
            Fault::Skip => {}
        }
        Ok(())
    }
}

fn report(fault: Fault, case: &str) -> Report {
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with(case))
        .expect("the case exists");
    run_case(&Broken(fault), &case, &option_sets()[0]).expect("the case runs")
}

#[test]
fn a_kernel_that_writes_nothing_fails() {
    let r = report(Fault::Skip, "relu [x=2x3x5x7]");
    assert!(!r.passed());
    assert!(
        r.problems.iter().any(|p| p.contains("never written")),
        "{:?}",
        r.failures()
    );
}

#[test]
fn a_write_past_the_end_fails() {
    let r = report(Fault::PastTheEnd, "relu [x=2x3x5x7]");
    assert!(
        r.failures()
            .iter()
            .any(|(kind, m)| *kind == FailureKind::Memory && m.contains("guard")),
        "{:?}",
        r.failures()
    );
}

#[test]
fn a_small_error_fails_exact_and_sums_tolerances() {
    for case in ["relu [x=2x3x5x7]", "conv2d [x=1x3x6x7"] {
        let r = report(Fault::Perturb, case);
        let mismatch = r
            .failures()
            .into_iter()
            .find(|(k, _)| *k == FailureKind::Mismatch);
        assert!(mismatch.is_some(), "{case}: {:?}", r.failures());
    }
    // Correct kernels pass.
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with("conv2d [x=1x3x6x7"))
        .expect("the case exists");
    let r = run_case(&EvalBackend, &case, &option_sets()[0]).expect("runs");
    assert!(r.passed(), "{:?}", r.failures());
}
