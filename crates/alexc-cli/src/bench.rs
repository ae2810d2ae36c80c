//! `alexc bench`: time compiled plans kernel by kernel, and compare plans.
//!
//! Every variant (`fused`, `unfused`) is compiled from the same model, given
//! the same initial state and the same random batch, and run: first once to
//! check that the variants compute the same thing (the logits, or the loss
//! and every updated parameter of one training step without dropout), then
//! `--warmup` untimed and `--iters` timed runs. The timed runs record each
//! kernel launch (two clock reads per launch); the table groups launches by
//! graph node — a fused group is one node — and gives time per run, its
//! share, GFLOP/s for convolutions and linear layers (a multiply-accumulate
//! counts two) and the bandwidth of the kernel's buffers (each parameter
//! read or written once: the compulsory traffic). Throughput is the batch
//! over the mean wall time of a run (host work included: for training, the
//! dropout masks drawn on the host).
//!
//! This is a benchmark, not a test: on a shared machine, compare ratios
//! taken in one run, and prefer the minimum for latency.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use alexc_runtime::{Dropout, Options, Profile, Runtime};
use alexc_tensor::{rng::named_rng, Tensor};
use anyhow::Context;
use clap::ValueEnum;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::CliError;

/// A plan to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The default pipeline.
    Fused,
    /// The pipeline without fusion passes.
    Unfused,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Fused => "fused",
            Variant::Unfused => "unfused",
        }
    }
}

/// Compiled backends `bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchBackend {
    /// LLVM, JIT-compiled for this CPU.
    Llvm,
    /// The Cranelift JIT.
    Cranelift,
    /// CUDA on GPU 0 (needs an NVIDIA driver).
    Cuda,
    /// The CUDA kernels on the CPU emulator (a check, not a measurement).
    CudaEmu,
}

impl BenchBackend {
    fn runtime(self) -> &'static dyn alexc_runtime::Backend {
        match self {
            BenchBackend::Llvm => crate::backend::llvm(),
            BenchBackend::Cranelift => &alexc_codegen_cranelift::CraneliftBackend,
            BenchBackend::Cuda => &crate::CUDA,
            BenchBackend::CudaEmu => &crate::CUDA_EMU,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchBackend::Llvm => "llvm",
            BenchBackend::Cranelift => "cranelift",
            BenchBackend::Cuda => "cuda",
            BenchBackend::CudaEmu => "cuda-emu",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model file (RON).
    pub model: PathBuf,
    /// Time training steps (forward, backward, SGD update) instead of inference.
    #[arg(long)]
    pub train: bool,
    /// The batch size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// The plans to run, comma-separated; their outputs are checked to agree.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fused,unfused"
    )]
    pub compare: Vec<Variant>,
    /// The backends, comma-separated: every plan is compiled and run with
    /// each, and compile and run times are shown side by side.
    #[arg(
        long = "backends",
        alias = "backend",
        value_enum,
        value_delimiter = ',',
        default_value = crate::backend::DEFAULT_BENCH_BACKENDS
    )]
    pub backends: Vec<BenchBackend>,
    /// Timed runs per plan.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed runs per plan before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Seed for the initial state and the batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Show only the N slowest rows of each plan (0: all).
    #[arg(long, default_value_t = 0)]
    pub top: usize,
    /// One row per kernel (a backward node's dx, dw and db apart) instead
    /// of one per graph node.
    #[arg(long)]
    pub kernels: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One node's row: its kernels' time summed.
#[derive(Debug, Serialize)]
struct NodeRow {
    node: String,
    op: String,
    kernels: usize,
    ms: f64,
    gflops: Option<f64>,
    gbytes_per_s: f64,
}

/// One plan's results.
#[derive(Debug, Serialize)]
struct PlanResult {
    variant: Variant,
    backend: BenchBackend,
    compile_s: f64,
    kernels: usize,
    /// Mean and minimum wall time of one run.
    mean_ms: f64,
    min_ms: f64,
    /// Sum over kernels of the mean time per run.
    kernel_ms: f64,
    images_per_s: f64,
    /// Arena of intermediates plus kernel workspace.
    working_bytes: u64,
    /// Inputs, parameters, momentum, masks.
    external_bytes: u64,
    gflop_per_run: f64,
    nodes: Vec<NodeRow>,
    #[serde(skip)]
    check: Vec<f32>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    train: bool,
    batch: u32,
    threads: usize,
    iters: u32,
    plans: Vec<PlanResult>,
    /// Largest difference between the plans' checked outputs, relative to
    /// the largest magnitude.
    max_rel_diff: f64,
}

/// Relative tolerance for plans' outputs to agree: fused and unfused plans
/// do the same arithmetic in the same order except where a fused epilogue
/// lets LLVM contract differently.
const AGREE: f64 = 1e-4;

pub fn bench(args: &BenchArgs) -> Result<(), CliError> {
    let model = alexc_frontend::load(&args.model, args.batch as usize)?;
    let mut variants = args.compare.clone();
    variants.dedup();
    if variants.is_empty() {
        return Err(anyhow::anyhow!("--compare names no plan").into());
    }
    let mut backends = args.backends.clone();
    backends.dedup();
    if backends.contains(&BenchBackend::Llvm) {
        crate::backend::require_llvm("--backends llvm")?;
    }
    let mut plans = Vec::new();
    for &backend in &backends {
        for &variant in &variants {
            plans.push(run_plan(args, &model, variant, backend)?);
        }
    }
    let max_rel_diff = plans
        .iter()
        .skip(1)
        .map(|p| rel_diff(&plans[0].check, &p.check))
        .fold(0.0, f64::max);
    let report = BenchReport {
        model: args.model.display().to_string(),
        train: args.train,
        batch: args.batch,
        threads: alexc_threads::threads(),
        iters: args.iters,
        plans,
        max_rel_diff,
    };
    print!("{}", render(&report, args.top));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if max_rel_diff > AGREE {
        return Err(anyhow::anyhow!(
            "the plans disagree: relative difference {max_rel_diff:.2e} > {AGREE:.0e}"
        )
        .into());
    }
    Ok(())
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = a.iter().map(|x| x.abs() as f64).fold(1e-30, f64::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x as f64 - *y as f64).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f64::max)
        / scale
}

fn run_plan(
    args: &BenchArgs,
    model: &alexc_frontend::Model,
    variant: Variant,
    backend: BenchBackend,
) -> anyhow::Result<PlanResult> {
    let options = Options {
        train: args.train,
        no_fuse: variant == Variant::Unfused,
        ..Options::default()
    };
    let start = Instant::now();
    let mut rt = Runtime::new(model, &options, backend.runtime()).with_context(|| {
        format!(
            "compiling the {} plan with {}",
            variant.name(),
            backend.name()
        )
    })?;
    let compile_s = start.elapsed().as_secs_f64();
    eprintln!(
        "{} ({}): compiled {} kernels in {compile_s:.2} s",
        variant.name(),
        backend.name(),
        rt.kernels().len()
    );
    rt.init_state(args.seed, model.base_dir())
        .context("initializing parameters")?;
    let shape = rt.image_shape()?;
    let mut rng = named_rng(args.seed, "bench.images");
    let images = Tensor::from_flat_fn(shape.clone(), |_| rng.sample::<f32, _>(StandardNormal))?;
    let classes = rt.classes().max(1);
    let labels = Tensor::from_flat_fn(vec![shape[0]], |_| rng.random_range(0..classes as i64))?;

    // The check: logits, or one dropout-free step's loss and new state.
    let check = if args.train {
        let loss = rt.train_step_with(&images, &labels, 0.01, Dropout::Off)?;
        let mut out = vec![loss];
        for t in rt.state().values() {
            out.extend_from_slice(t.data());
        }
        out
    } else {
        rt.infer(&images)?.into_data()
    };

    let mut step = 0u64;
    let mut run = |rt: &mut Runtime| -> anyhow::Result<()> {
        step += 1;
        if args.train {
            rt.train_step(&images, &labels, 0.01, args.seed.wrapping_add(step))?;
        } else {
            rt.infer(&images)?;
        }
        Ok(())
    };
    for _ in 0..args.warmup {
        run(&mut rt)?;
    }
    let bar = indicatif::ProgressBar::new(u64::from(args.iters)).with_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} runs, {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(variant.name());
    rt.set_profiling(true);
    let mut times = Vec::with_capacity(args.iters as usize);
    for _ in 0..args.iters {
        let t = Instant::now();
        run(&mut rt)?;
        times.push(t.elapsed().as_secs_f64());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let profile = rt.profile();
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let nodes = node_rows(&profile, args.kernels);
    Ok(PlanResult {
        variant,
        backend,
        compile_s,
        kernels: rt.kernels().len(),
        mean_ms: mean * 1e3,
        min_ms: min * 1e3,
        kernel_ms: nodes.iter().map(|n| n.ms).sum(),
        images_per_s: f64::from(args.batch) / mean,
        working_bytes: rt.working_bytes(),
        external_bytes: rt.external_bytes(),
        gflop_per_run: profile.launches.iter().map(|l| l.flops as f64).sum::<f64>() / 1e9,
        nodes,
        check,
    })
}

/// Launches grouped by node (or one row per kernel), in execution order.
fn node_rows(profile: &Profile, per_kernel: bool) -> Vec<NodeRow> {
    let runs = profile.runs.max(1) as f64;
    let mut rows: Vec<(NodeRow, u64, u64)> = Vec::new();
    for l in &profile.launches {
        let ms = l.seconds / runs * 1e3;
        let name = if per_kernel { &l.kernel } else { &l.node };
        match rows.iter_mut().find(|(r, _, _)| &r.node == name) {
            Some((r, flops, bytes)) => {
                r.kernels += 1;
                r.ms += ms;
                *flops += l.flops;
                *bytes += l.bytes;
            }
            None => rows.push((
                NodeRow {
                    node: name.clone(),
                    op: l.op.clone(),
                    kernels: 1,
                    ms,
                    gflops: None,
                    gbytes_per_s: 0.0,
                },
                l.flops,
                l.bytes,
            )),
        }
    }
    rows.into_iter()
        .map(|(mut r, flops, bytes)| {
            let s = r.ms / 1e3;
            if s > 0.0 {
                r.gflops = (flops > 0).then(|| flops as f64 / s / 1e9);
                r.gbytes_per_s = bytes as f64 / s / 1e9;
            }
            r
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn render(report: &BenchReport, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — {}, batch {}, {} threads, {} timed runs per plan",
        report.model,
        if report.train {
            "training step"
        } else {
            "inference"
        },
        report.batch,
        report.threads,
        report.iters
    );
    for plan in &report.plans {
        let _ = writeln!(
            out,
            "\n{} plan, {} ({} kernels)",
            plan.variant.name(),
            plan.backend.name(),
            plan.kernels
        );
        let _ = writeln!(
            out,
            "  {:<28} {:<24} {:>4} {:>9} {:>6} {:>8} {:>7}",
            "node", "op", "krnl", "ms/run", "%", "GFLOP/s", "GB/s"
        );
        let mut rows: Vec<&NodeRow> = plan.nodes.iter().collect();
        if top > 0 {
            rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
            rows.truncate(top);
        }
        for r in rows {
            let _ = writeln!(
                out,
                "  {:<28} {:<24} {:>4} {:>9.3} {:>5.1}% {:>8} {:>7.1}",
                truncate(&r.node, 28),
                truncate(&r.op, 24),
                r.kernels,
                r.ms,
                100.0 * r.ms / plan.kernel_ms.max(1e-12),
                r.gflops
                    .map_or_else(|| "-".to_string(), |g| format!("{g:.1}")),
                r.gbytes_per_s
            );
        }
        let gflops = plan.gflop_per_run / (plan.kernel_ms / 1e3).max(1e-12);
        let _ = writeln!(
            out,
            "  total: {:.2} ms/run wall (min {:.2}), {:.2} ms in kernels, {:.1} img/s, \
             {:.1} GFLOP/s overall",
            plan.mean_ms, plan.min_ms, plan.kernel_ms, plan.images_per_s, gflops
        );
        let _ = writeln!(
            out,
            "  memory: {:.2} MiB intermediates + workspace, {:.2} MiB inputs and state; \
             compiled in {:.2} s",
            mib(plan.working_bytes),
            mib(plan.external_bytes),
            plan.compile_s
        );
    }
    if report.plans.len() > 1 {
        let _ = writeln!(
            out,
            "\n  {:<10} {:<10} {:>10} {:>10} {:>10}",
            "plan", "backend", "compile s", "ms/run", "img/s"
        );
        for p in &report.plans {
            let _ = writeln!(
                out,
                "  {:<10} {:<10} {:>10.3} {:>10.2} {:>10.1}",
                p.variant.name(),
                p.backend.name(),
                p.compile_s,
                p.mean_ms,
                p.images_per_s
            );
        }
    }
    if let [a, rest @ ..] = report.plans.as_slice() {
        for b in rest {
            let _ = writeln!(
                out,
                "\n{} ({}) / {} ({}): time {:.3}× (min {:.3}×), memory {:.3}×",
                a.variant.name(),
                a.backend.name(),
                b.variant.name(),
                b.backend.name(),
                a.mean_ms / b.mean_ms,
                a.min_ms / b.min_ms,
                a.working_bytes as f64 / b.working_bytes.max(1) as f64
            );
        }
        if !rest.is_empty() {
            let _ = writeln!(
                out,
                "outputs agree: max relative difference {:.2e} (tolerance {AGREE:.0e})",
                report.max_rel_diff
            );
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
