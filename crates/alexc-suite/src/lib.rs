//! The reference suite: every op and fused op, forward and backward, at
//! several shapes, lowered with several option sets, compiled and run by a
//! backend, and compared with the reference interpreter (`alexc-interp`).
//!
//! Backends are a parameter of the suite, not copies of it: a backend's
//! test is `run_all(&MyBackend, "")` (see `tests/eval.rs` and
//! `tests/llvm.rs`), and every backend runs exactly the same [`cases`].
//!
//! - [`cases`] lists the cases: one-op graphs over deterministic inputs,
//!   fused ops with their unfused twins, elementwise ops in place.
//! - [`run_case`] lowers a case's graph with `alexc_lower::lower_node`,
//!   verifies each kernel, lays the values out in a runtime
//!   [`Memory`](alexc_runtime::Memory), compiles the kernels with the
//!   backend, runs them in order and compares every result with the
//!   interpreter. Guard zones around every buffer, results and workspaces
//!   pre-filled with a sentinel NaN, and a check that inputs stay unchanged
//!   catch out-of-bounds writes, unwritten results and stray writes
//!   (`src/run.rs` describes the layout, aliasing included).
//! - [`run_all`] runs every case under every [`option_sets`] entry and
//!   collects every failure, so that one test run lists all failing cases.
//!   It compiles all kernels of one option set in a single
//!   [`Backend::compile`] call, each distinct kernel once (unfused twins
//!   repeat the plain ops' kernels).
//! - [`KNOWN_ISSUES`] lists the failures that are reported but expected
//!   until a fix lands; [`Summary::expect`] sets them apart, and flags an
//!   entry that no longer matches anything.
//!
//! # Tolerances
//!
//! One tolerance per kind of computation ([`tolerance`] assigns them per
//! op; the reasons are the freedoms the kernel IR gives a backend):
//!
//! | class | ops | bound |
//! |---|---|---|
//! | [`Tolerance::EXACT`] | ReLU, dropout, reshape, flatten, concat, split, add, mul, ReLU-backward, max-pool and its gradient | bit-identical (NaN matches NaN) |
//! | [`Tolerance::ELEMENTWISE`] | SGD step | `≤ 1e-6 + 1e-6·|want|` |
//! | [`Tolerance::FUNCTION`] | softmax, the loss and its gradient, LRN, LRN + max-pool, average pooling and its gradient | `≤ 1e-7 + 4e-6·|want|` |
//! | [`Tolerance::SUMS`] | convolution, linear (plain and fused, forward and backward), LRN gradients, softmax gradient | `≤ 1e-5·max(1, max|want|)` |
//!
//! - **Exact**: these kernels copy or select values, or round once (add,
//!   mul), exactly as the reference does; any difference is a bug.
//! - **Elementwise**: a backend may contract `a·b + c` into an FMA (the
//!   LLVM backend does), which changes the last bit of each step; the SGD
//!   step chains three or four such operations on values in `[-2, 2]`, so
//!   the bound is about eight ulps of the operands.
//! - **Function**: on top of contraction, sums inside `Vectorized` loops may
//!   be reassociated (the kernel IR allows it), and `exp`, `log` and `pow`
//!   are whatever the backend links (the LLVM JIT maps them to Rust's
//!   `std`, like the interpreter; a GPU's are within a few ulps): about 32
//!   ulps of the result, and an absolute floor for results that cancel to
//!   near zero (the loss gradient at the label, `p − 1`).
//! - **Sums**: convolutions and linear layers accumulate in k-blocks and
//!   register tiles, bias gradients in vector lanes, so the order of a sum
//!   of up to a few hundred products differs from the reference's. The
//!   error is relative to the size of the terms rather than of the result
//!   (which may cancel to near zero), hence the bound relative to the
//!   largest reference element. An indexing mistake is an error of O(1).
//!
//! On the LLVM backend (x86-64), the worst errors use 0.19 (SGD), 0.07
//! (LRN; softmax, the loss and pooling are bit-identical) and 0.14 (softmax
//! gradient over 1000 classes; convolutions 0.06) of these bounds, and every
//! exact result is bit-identical. [`Summary`] prints the closest case per
//! bound on every run.
//!
//! Fused ops are also compared with their unfused twins run on the same
//! backend, under the fused op's tolerance.

mod cases;
mod compare;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use alexc_interp::{InterpError, Mode, Value};
use alexc_ir::Op;
use alexc_kernel::{HostBuffer, Kernel};
use alexc_lower::{LowerError, LowerOptions};
use alexc_runtime::{Backend, Executable, RuntimeError};
use alexc_tensor::Tensor;

pub use cases::{cases, tolerance, Case, Fill};
pub use compare::{compare, Comparison, Tolerance, Worst};

/// Why a case could not be run (as opposed to running and mismatching).
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("lowering `{node}`: {source}")]
    Lower { node: String, source: LowerError },
    /// A kernel's parameters cannot be bound as its args say.
    #[error("`{node}`: {message}")]
    Layout { node: String, message: String },
    #[error("{0}")]
    Input(String),
    #[error("compiling with `{backend}`: {source}")]
    Compile {
        backend: &'static str,
        source: RuntimeError,
    },
    #[error("running kernel `{kernel}`: {source}")]
    Run {
        kernel: String,
        source: RuntimeError,
    },
    #[error("the reference interpreter: {0}")]
    Reference(#[from] InterpError),
}

/// The option sets every case is lowered with: 16 lanes with threads (what
/// the runtime uses on AVX-512 hosts) and without, 8 lanes (AVX2), 4 lanes,
/// scalar code.
pub fn option_sets() -> Vec<LowerOptions> {
    vec![
        LowerOptions {
            vector_width: 16,
            parallel: true,
        },
        LowerOptions {
            vector_width: 8,
            parallel: true,
        },
        LowerOptions {
            vector_width: 16,
            parallel: false,
        },
        LowerOptions {
            vector_width: 1,
            parallel: true,
        },
        LowerOptions {
            vector_width: 4,
            parallel: true,
        },
    ]
}

/// `vector width 8, parallel`: an option set as reports print it.
pub fn describe(options: &LowerOptions) -> String {
    format!(
        "vector width {}, {}",
        options.vector_width,
        if options.parallel {
            "parallel"
        } else {
            "serial"
        }
    )
}

/// The outcome of one case under one option set.
#[derive(Clone, Debug)]
pub struct Report {
    pub case: String,
    pub options: LowerOptions,
    /// Kernels launched (fused and unfused graphs together).
    pub kernels: usize,
    /// Every result against the reference (and, for fused ops, the unfused
    /// twin's results against the reference and against the fused ones).
    pub comparisons: Vec<Comparison>,
    /// Kernels the kernel IR verifier rejects, with its errors. They are
    /// run anyway (the evaluator checks every access; guards catch strays).
    pub unverified: Vec<String>,
    /// Out-of-bounds writes, unwritten results, modified inputs.
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Every failed check, with its kind.
    pub fn failures(&self) -> Vec<(FailureKind, String)> {
        let unverified = self
            .unverified
            .iter()
            .map(|m| (FailureKind::Unverified, m.clone()));
        let memory = self
            .problems
            .iter()
            .map(|m| (FailureKind::Memory, m.clone()));
        let mismatches = self
            .comparisons
            .iter()
            .filter(|c| !c.passed())
            .map(|c| (FailureKind::Mismatch, c.to_string()));
        unverified.chain(memory).chain(mismatches).collect()
    }
}

/// The interpreter's results for `case`, in output order.
pub fn reference(case: &Case) -> Result<Vec<Vec<f32>>, SuiteError> {
    let mut inputs = HashMap::new();
    let mut weights = BTreeMap::new();
    for (name, data) in &case.inputs {
        let node = case
            .graph
            .find(name)
            .map(|id| &case.graph[id])
            .ok_or_else(|| SuiteError::Input(format!("`{name}` is not a source of the graph")))?;
        let shape = node.outputs[0].shape.dims().to_vec();
        let bad = |e: alexc_tensor::TensorError| SuiteError::Input(format!("`{name}`: {e}"));
        match (data, &node.op) {
            // State is bound with the weights, everything else as an input.
            (HostBuffer::F32(v), Op::Parameter(_) | Op::Momentum(_)) => {
                weights.insert(name.clone(), Tensor::new(shape, v.clone()).map_err(bad)?);
            }
            (HostBuffer::F32(v), _) => {
                let t = Tensor::new(shape, v.clone()).map_err(bad)?;
                inputs.insert(name.clone(), Value::Float(t));
            }
            (HostBuffer::I64(v), _) => {
                let t = Tensor::new(shape, v.clone()).map_err(bad)?;
                inputs.insert(name.clone(), Value::Int(t));
            }
        }
    }
    alexc_interp::run::<f32>(&case.graph, &weights, &inputs, Mode::Eval)?
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            v.into_float()
                .map(Tensor::into_data)
                .ok_or_else(|| SuiteError::Input(format!("output {k} is not an f32 tensor")))
        })
        .collect()
}

/// A case lowered and laid out for one option set.
struct Prepared {
    fused: run::Layout,
    unfused: Option<run::Layout>,
}

impl Prepared {
    fn new(case: &Case, options: &LowerOptions, prefix: &str) -> Result<Prepared, SuiteError> {
        Ok(Prepared {
            fused: run::layout(&case.graph, case.alias, options, prefix)?,
            unfused: case
                .unfused
                .as_ref()
                .map(|g| run::layout(g, None, options, &format!("{prefix}unfused_")))
                .transpose()?,
        })
    }

    fn kernels(&self) -> impl Iterator<Item = &Kernel> {
        self.fused
            .kernels
            .iter()
            .chain(self.unfused.iter().flat_map(|u| &u.kernels))
    }

    /// Runs the prepared case on `exec`, where `index[i]` is the compiled
    /// index of `self.kernels()`'s `i`-th kernel, and compares.
    fn check(
        &self,
        case: &Case,
        options: &LowerOptions,
        exec: &dyn Executable,
        index: &[usize],
        reference: &[Vec<f32>],
    ) -> Result<Report, SuiteError> {
        let (own, twin) = index.split_at(self.fused.kernels.len().min(index.len()));
        let fused = run::execute(&self.fused, exec, own, &case.inputs)?;
        let mut report = Report {
            case: case.name.clone(),
            options: options.clone(),
            kernels: self.kernels().count(),
            comparisons: Vec::new(),
            unverified: self
                .fused
                .unverified
                .iter()
                .chain(self.unfused.iter().flat_map(|u| &u.unverified))
                .cloned()
                .collect(),
            problems: fused.problems,
        };
        let results = fused.outputs.iter().zip(reference).zip(&case.tolerances);
        for (k, ((got, want), &tol)) in results.enumerate() {
            report
                .comparisons
                .push(compare(format!("result {k}"), got, want, tol));
        }
        if let Some(layout) = &self.unfused {
            let unfused = run::execute(layout, exec, twin, &case.inputs)?;
            report
                .problems
                .extend(unfused.problems.iter().map(|p| format!("unfused: {p}")));
            let results = unfused
                .outputs
                .iter()
                .zip(reference)
                .zip(&fused.outputs)
                .zip(&case.tolerances);
            for (k, (((got, want), fused), &tol)) in results.enumerate() {
                report
                    .comparisons
                    .push(compare(format!("unfused result {k}"), got, want, tol));
                report.comparisons.push(compare(
                    format!("unfused result {k} vs fused"),
                    got,
                    fused,
                    tol,
                ));
            }
        }
        Ok(report)
    }
}

/// Runs `case` on `backend` with `options`: lowers, compiles, runs and
/// compares with the reference interpreter.
pub fn run_case(
    backend: &dyn Backend,
    case: &Case,
    options: &LowerOptions,
) -> Result<Report, SuiteError> {
    let reference = reference(case)?;
    let prepared = Prepared::new(case, options, "")?;
    let kernels: Vec<Kernel> = prepared.kernels().cloned().collect();
    let exec = backend
        .compile(&kernels)
        .map_err(|source| SuiteError::Compile {
            backend: backend.name(),
            source,
        })?;
    let index: Vec<usize> = (0..kernels.len()).collect();
    prepared.check(case, options, exec.as_ref(), &index, &reference)
}

/// Identical kernels (up to their names) compiled once: the distinct
/// kernels, and for each of `kernels` the index of its distinct twin.
/// Unfused twins repeat the plain ops' kernels, so this saves a good part
/// of the compile time.
fn distinct(kernels: Vec<Kernel>) -> (Vec<Kernel>, Vec<usize>) {
    let same = |a: &Kernel, b: &Kernel| {
        a.buffers == b.buffers && a.vars == b.vars && a.schedule == b.schedule && a.body == b.body
    };
    let mut unique: Vec<Kernel> = Vec::new();
    // (parameter count, variable count, body length) → indices in `unique`.
    let mut buckets: HashMap<(usize, usize, usize), Vec<usize>> = HashMap::new();
    let mut index = Vec::with_capacity(kernels.len());
    for k in kernels {
        let bucket = buckets
            .entry((k.buffers.len(), k.vars.len(), k.body.len()))
            .or_default();
        match bucket.iter().copied().find(|&u| same(&unique[u], &k)) {
            Some(u) => index.push(u),
            None => {
                bucket.push(unique.len());
                index.push(unique.len());
                unique.push(k);
            }
        }
    }
    (unique, index)
}

/// What kind of check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A kernel the kernel IR verifier rejects (it is still run).
    Unverified,
    /// A result outside its tolerance.
    Mismatch,
    /// An out-of-bounds write, an unwritten result, a modified input.
    Memory,
    /// Lowering, compiling or running failed, or the reference did.
    Error,
}

/// One failed check of one case under one option set.
#[derive(Clone, Debug)]
pub struct Failure {
    pub case: String,
    pub options: LowerOptions,
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {:?}: {}",
            self.case,
            describe(&self.options),
            self.kind,
            self.message
        )
    }
}

/// A known, reported issue: failures of `kind` in cases of these ops are
/// expected until it is fixed (see [`KNOWN_ISSUES`]).
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// Op names as case names start (`conv2d`, `linear+relu-backward`).
    pub ops: &'static [&'static str],
    pub kind: FailureKind,
    /// What is wrong, where, and what removes the entry.
    pub why: &'static str,
}

impl Known {
    fn matches(&self, f: &Failure) -> bool {
        f.kind == self.kind
            && self
                .ops
                .iter()
                .any(|op| f.case.strip_prefix(op).is_some_and(|r| r.starts_with(" [")))
    }
}

/// Known issues, the same on every backend that shows them. Each entry is
/// a TODO naming the failing ops, the kind of failure and what is wrong;
/// remove it with the fix (a suite test fails when an entry no longer
/// matches anything). For example, while the GEMM kernels could not be
/// proved in bounds by the verifier:
///
/// ```
/// # use alexc_suite::{FailureKind, Known};
/// const KNOWN: &[Known] = &[Known {
///     ops: &["conv2d", "linear"],
///     kind: FailureKind::Unverified,
///     why: "TODO(verify): full-tile guards with coefficient MR ≠ ±1",
/// }];
/// ```
pub const KNOWN_ISSUES: &[Known] = &[];

/// What [`run_all`] did and found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub backend: String,
    pub cases: usize,
    pub option_sets: usize,
    /// Cases × option sets.
    pub runs: usize,
    /// Distinct kernels compiled, over all option sets.
    pub kernels: usize,
    pub reference_time: Duration,
    pub lower_time: Duration,
    pub compile_time: Duration,
    pub run_time: Duration,
    /// Failures not explained by a known issue.
    pub failures: Vec<Failure>,
    /// Failures explained by a known issue (after [`Summary::expect`]):
    /// (index into the known list, failure).
    pub known: Vec<(usize, Failure)>,
    /// Known issues (by `why`) that matched no failure: fixed, so their
    /// entries should go.
    pub stale: Vec<&'static str>,
    /// Per tolerance, the passing comparison closest to its limit.
    pub closest: Vec<Closest>,
}

/// The passing comparison that came closest to its tolerance: how much
/// headroom the bound has on this backend.
#[derive(Clone, Debug)]
pub struct Closest {
    pub case: String,
    pub options: LowerOptions,
    pub comparison: Comparison,
}

impl Summary {
    /// No unexplained failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failing case names (each once), in order.
    pub fn failing_cases(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for f in &self.failures {
            if !names.contains(&f.case.as_str()) {
                names.push(&f.case);
            }
        }
        names
    }

    /// Moves the failures that `known` explains out of `failures`, and
    /// lists the entries of `known` that explain nothing as stale.
    pub fn expect(mut self, known: &[Known]) -> Summary {
        let (explained, unexplained): (Vec<Failure>, Vec<Failure>) = self
            .failures
            .into_iter()
            .partition(|f| known.iter().any(|k| k.matches(f)));
        self.failures = unexplained;
        self.known = explained
            .into_iter()
            .filter_map(|f| Some((known.iter().position(|k| k.matches(&f))?, f)))
            .collect();
        self.stale = known
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.known.iter().any(|(k, _)| k == i))
            .map(|(_, k)| k.why)
            .collect();
        self
    }

    fn fail(&mut self, case: &str, options: &LowerOptions, kind: FailureKind, message: String) {
        self.failures.push(Failure {
            case: case.to_owned(),
            options: options.clone(),
            kind,
            message,
        });
    }

    fn record(&mut self, report: Report) {
        for c in report.comparisons.iter().filter(|c| c.passed()) {
            let slot = self
                .closest
                .iter_mut()
                .find(|k| k.comparison.tolerance == c.tolerance);
            match slot {
                Some(k) if k.comparison.margin >= c.margin => {}
                Some(k) => {
                    k.case.clone_from(&report.case);
                    k.options = report.options.clone();
                    k.comparison = c.clone();
                }
                None => self.closest.push(Closest {
                    case: report.case.clone(),
                    options: report.options.clone(),
                    comparison: c.clone(),
                }),
            }
        }
        for (kind, message) in report.failures() {
            self.fail(&report.case, &report.options, kind, message);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} cases × {} option sets = {} runs, {} distinct kernels; reference {:.1?}, lowering {:.1?}, compiling {:.1?}, running {:.1?}",
            self.backend,
            self.cases,
            self.option_sets,
            self.runs,
            self.kernels,
            self.reference_time,
            self.lower_time,
            self.compile_time,
            self.run_time
        )?;
        for c in &self.closest {
            writeln!(
                f,
                "  closest to {}: {} ({}): {}",
                c.comparison.tolerance,
                c.case,
                describe(&c.options),
                c.comparison
            )?;
        }
        let mut entries: Vec<usize> = self.known.iter().map(|(k, _)| *k).collect();
        entries.sort_unstable();
        entries.dedup();
        for k in entries {
            let hits: Vec<&Failure> = self
                .known
                .iter()
                .filter(|(i, _)| *i == k)
                .map(|(_, f)| f)
                .collect();
            let mut cases: Vec<&str> = hits.iter().map(|f| f.case.as_str()).collect();
            cases.sort_unstable();
            cases.dedup();
            writeln!(
                f,
                "{} known failures in {} cases (known issue {k}); the first: {}",
                hits.len(),
                cases.len(),
                hits[0]
            )?;
        }
        for why in &self.stale {
            writeln!(
                f,
                "STALE known issue (nothing fails this way any more): {why}"
            )?;
        }
        writeln!(
            f,
            "{} unexplained failures in {} cases",
            self.failures.len(),
            self.failing_cases().len()
        )?;
        for x in &self.failures {
            writeln!(f, "FAIL {x}")?;
        }
        Ok(())
    }
}

/// Runs every case whose name contains `filter` under every option set on
/// `backend`, compiling each option set's kernels in one call, and
/// collects every failure.
pub fn run_all(backend: &dyn Backend, filter: &str) -> Summary {
    run_all_with(backend, filter, &option_sets())
}

/// [`run_all`] under the option sets `sets` (e.g. only the backend's own,
/// `[backend.lower_options()]`).
pub fn run_all_with(backend: &dyn Backend, filter: &str, sets: &[LowerOptions]) -> Summary {
    let all: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name.contains(filter))
        .collect();
    let mut summary = Summary {
        backend: backend.name().to_owned(),
        cases: all.len(),
        option_sets: sets.len(),
        runs: all.len() * sets.len(),
        ..Summary::default()
    };
    let start = Instant::now();
    let references: Vec<Option<Vec<Vec<f32>>>> = all
        .iter()
        .map(|case| match reference(case) {
            Ok(r) => Some(r),
            Err(e) => {
                let options = LowerOptions::default();
                summary.fail(&case.name, &options, FailureKind::Error, e.to_string());
                None
            }
        })
        .collect();
    summary.reference_time = start.elapsed();

    for options in sets {
        let start = Instant::now();
        // (case index, prepared, index of its first kernel in `kernels`)
        let mut prepared = Vec::new();
        let mut kernels: Vec<Kernel> = Vec::new();
        for (i, case) in all.iter().enumerate() {
            if references[i].is_none() {
                continue;
            }
            match Prepared::new(case, options, &format!("c{i}_")) {
                Ok(p) => {
                    let base = kernels.len();
                    kernels.extend(p.kernels().cloned());
                    prepared.push((i, p, base));
                }
                Err(e) => summary.fail(&case.name, options, FailureKind::Error, e.to_string()),
            }
        }
        let (kernels, index) = distinct(kernels);
        summary.lower_time += start.elapsed();
        summary.kernels += kernels.len();

        let start = Instant::now();
        let batch = backend.compile(&kernels);
        summary.compile_time += start.elapsed();
        let batch = match batch {
            Ok(exec) => Some(exec),
            Err(e) => {
                // Find the culprits: each case on its own below.
                summary.fail(
                    &format!("(all {} cases together)", prepared.len()),
                    options,
                    FailureKind::Error,
                    format!("compiling with `{}`: {e}", backend.name()),
                );
                None
            }
        };
        for (i, p, base) in &prepared {
            let case = &all[*i];
            let Some(reference) = &references[*i] else {
                continue;
            };
            let start = Instant::now();
            let alone;
            let count = p.kernels().count();
            let (exec, index) = match &batch {
                Some(exec) => (exec.as_ref(), index[*base..*base + count].to_vec()),
                None => {
                    let own: Vec<Kernel> = p.kernels().cloned().collect();
                    match backend.compile(&own) {
                        Ok(exec) => {
                            alone = exec;
                            (alone.as_ref(), (0..count).collect())
                        }
                        Err(e) => {
                            let message = format!("compiling: {e}");
                            summary.fail(&case.name, options, FailureKind::Error, message);
                            continue;
                        }
                    }
                }
            };
            summary.compile_time += start.elapsed();
            let start = Instant::now();
            match p.check(case, options, exec, &index, reference) {
                Ok(report) => summary.record(report),
                Err(e) => summary.fail(&case.name, options, FailureKind::Error, e.to_string()),
            }
            summary.run_time += start.elapsed();
        }
    }
    summary
}
