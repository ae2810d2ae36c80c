//! `alexc compile`: parse, verify and infer shapes, run the pass pipeline
//! (inference or, with `--train`, training), and show the result: a summary
//! table, the text IR, DOT, a JSON summary or the memory plan; optionally the
//! per-pass timings, IR dumps after passes and the fusion decisions.

use std::fmt::Write as _;
use std::path::Path;

use alexc_frontend::format::SgdConventionSpec;
use alexc_ir::{node_stats, Graph, NodeId, Op, SgdConvention};
use alexc_passes::{
    default_pipeline, PassContext, PipelineMode, PipelineOptions, PrintAfter, TrainingOptions,
};
use anyhow::Context;
use serde::Serialize;

use crate::{CliError, CompileArgs, Emit};

/// One row of the summary: a layer (or input) of the graph.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub op: String,
    /// Full output shape, batch first (the first result for multi-result ops).
    pub shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

/// One fused group in the JSON summary.
#[derive(Debug, Serialize)]
pub struct FusionSummary {
    pub pass: String,
    pub nodes: Vec<String>,
}

/// The machine-readable summary (`--emit summary-json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub batch: usize,
    /// Whether this is the training graph.
    pub train: bool,
    pub params: u64,
    pub macs: u64,
    pub nodes: Vec<NodeSummary>,
    pub fusions: Vec<FusionSummary>,
    pub arena_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    /// The same graph's memory without fusion, for comparison (when fusion ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfused: Option<MemorySummary>,
}

/// Arena and peak bytes of one plan.
#[derive(Debug, Serialize)]
pub struct MemorySummary {
    pub arena_bytes: u64,
    pub peak_bytes: u64,
}

/// Layers in printing order: everything except parameters, topologically.
fn layer_order(graph: &Graph) -> Vec<NodeId> {
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    order
        .into_iter()
        .filter(|&id| !matches!(graph[id].op, Op::Parameter(_)))
        .collect()
}

pub fn summarize(graph: &Graph, ctx: &PassContext, train: bool) -> Summary {
    let nodes: Vec<NodeSummary> = layer_order(graph)
        .into_iter()
        .map(|id| {
            let node = &graph[id];
            let stats = node_stats(graph, id);
            NodeSummary {
                name: node.name.clone(),
                op: node.op.name().to_string(),
                shape: node
                    .outputs
                    .first()
                    .map(|t| t.shape.dims().to_vec())
                    .unwrap_or_default(),
                params: stats.params,
                macs: stats.macs,
            }
        })
        .collect();
    // Each parameter counts once, however many nodes read it.
    let params = graph
        .node_ids()
        .filter(|&id| matches!(graph[id].op, Op::Parameter(_)))
        .filter_map(|id| graph[id].outputs.first())
        .map(|t| t.shape.elements() as u64)
        .sum();
    Summary {
        model: graph.name.clone(),
        batch: graph.batch,
        train,
        params,
        macs: nodes.iter().map(|n| n.macs).sum(),
        nodes,
        fusions: ctx
            .fusion
            .groups
            .iter()
            .map(|g| FusionSummary {
                pass: g.pass.to_string(),
                nodes: g.nodes.clone(),
            })
            .collect(),
        arena_bytes: ctx.plan.as_ref().map(|p| p.arena_bytes),
        peak_bytes: ctx.plan.as_ref().map(|p| p.peak_bytes),
        unfused: None,
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The per-sample shape, `96×55×55`.
fn sample_shape(shape: &[usize]) -> String {
    match shape {
        [] => "scalar".into(),
        [_] => "1".into(),
        [_, rest @ ..] => rest
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×"),
    }
}

/// The full shape, `32×96×55×55`.
fn full_shape(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// The human-readable table.
pub fn summary_table(summary: &Summary, graph: &Graph, description: &str) -> String {
    // Inference graphs show per-sample shapes (the batch is in the header);
    // training graphs also hold weight-shaped values, so they show full shapes.
    let shape_of = |s: &[usize]| {
        if summary.train {
            full_shape(s)
        } else {
            sample_shape(s)
        }
    };
    let mut rows: Vec<[String; 5]> = vec![[
        "layer".into(),
        "op".into(),
        if summary.train {
            "output".into()
        } else {
            "output (per sample)".into()
        },
        "params".into(),
        "MACs".into(),
    ]];
    for n in &summary.nodes {
        rows.push([
            n.name.clone(),
            n.op.clone(),
            shape_of(&n.shape),
            if n.params == 0 {
                String::new()
            } else {
                thousands(n.params)
            },
            if n.macs == 0 {
                String::new()
            } else {
                thousands(n.macs)
            },
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = write!(out, "model {} (batch {})", summary.model, summary.batch);
    if description.is_empty() {
        out.push('\n');
    } else {
        let _ = writeln!(out, ": {description}");
    }
    let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    for (i, row) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        let _ = writeln!(out, "{}", line.trim_end());
        if i == 0 {
            let _ = writeln!(out, "{}", "─".repeat(total_width));
        }
    }
    let _ = writeln!(out, "{}", "─".repeat(total_width));
    let _ = writeln!(
        out,
        "total: {} parameters ({:.1} MiB as f32), {} MACs per {} ({:.2} GMAC per sample)",
        thousands(summary.params),
        summary.params as f64 * 4.0 / (1024.0 * 1024.0),
        thousands(summary.macs),
        if summary.train {
            "training step"
        } else {
            "batch"
        },
        summary.macs as f64 / 1e9 / summary.batch.max(1) as f64
    );
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .filter_map(|v| {
            Some(format!(
                "{} {}",
                graph.get(v.node)?.name,
                graph.value_type(*v)?
            ))
        })
        .collect();
    let _ = writeln!(out, "outputs: {}", outputs.join(", "));
    if let (Some(arena), Some(peak)) = (summary.arena_bytes, summary.peak_bytes) {
        let _ = writeln!(out, "memory: arena {}, peak live {}", mib(arena), mib(peak));
    }
    if let Some(u) = &summary.unfused {
        let _ = writeln!(
            out,
            "unfused: arena {}, peak live {}",
            mib(u.arena_bytes),
            mib(u.peak_bytes)
        );
    }
    if !summary.fusions.is_empty() {
        let _ = writeln!(out, "fused groups: {}", summary.fusions.len());
    }
    out
}

fn mib(bytes: u64) -> String {
    format!(
        "{:.2} MiB ({} bytes)",
        bytes as f64 / (1024.0 * 1024.0),
        thousands(bytes)
    )
}

/// Pipeline options from the command line and the model's training section.
fn pipeline_options(args: &CompileArgs, spec: &alexc_frontend::ModelSpec) -> PipelineOptions {
    let print_after = if args.print_after.iter().any(|p| p == "all") {
        PrintAfter::All
    } else if args.print_after.is_empty() {
        PrintAfter::None
    } else {
        PrintAfter::Passes(args.print_after.iter().cloned().collect())
    };
    PipelineOptions {
        mode: if args.train {
            PipelineMode::Training
        } else {
            PipelineMode::Inference
        },
        training: TrainingOptions {
            momentum: spec.training.momentum,
            weight_decay: spec.training.weight_decay,
            convention: match spec.training.convention {
                SgdConventionSpec::Paper => SgdConvention::Paper,
                SgdConventionSpec::Pytorch => SgdConvention::Pytorch,
            },
        },
        no_fuse: args.no_fuse,
        disabled: args.disable_pass.iter().cloned().collect(),
        verify_each: true,
        print_after,
    }
}

/// Loads a model and runs the pass pipeline over it.
pub fn build(args: &CompileArgs) -> Result<(alexc_frontend::Model, PassContext), CliError> {
    let mut model = alexc_frontend::load(&args.model, args.batch as usize)?;
    let options = pipeline_options(args, &model.spec);
    let ctx = default_pipeline(options)
        .run(&mut model.graph)
        .map_err(anyhow::Error::from)?;
    Ok((model, ctx))
}

/// The memory of the same model compiled without fusion, if fusion fused
/// anything (the graph passes take milliseconds, so this costs nothing).
fn unfused_memory(
    args: &CompileArgs,
    ctx: &PassContext,
) -> Result<Option<MemorySummary>, CliError> {
    if args.no_fuse || ctx.fusion.groups.is_empty() {
        return Ok(None);
    }
    let mut model = alexc_frontend::load(&args.model, args.batch as usize)?;
    let options = PipelineOptions {
        no_fuse: true,
        print_after: PrintAfter::None,
        ..pipeline_options(args, &model.spec)
    };
    let ctx = default_pipeline(options)
        .run(&mut model.graph)
        .map_err(anyhow::Error::from)?;
    Ok(ctx.plan.map(|p| MemorySummary {
        arena_bytes: p.arena_bytes,
        peak_bytes: p.peak_bytes,
    }))
}

fn timings_table(ctx: &PassContext) -> String {
    let mut out = String::from("pass                   time        changed\n");
    let mut total = 0.0;
    for t in &ctx.timings {
        let ms = t.duration.as_secs_f64() * 1e3;
        total += ms;
        let changed = if !t.ran {
            "disabled"
        } else if t.changed {
            "yes"
        } else {
            "no"
        };
        out.push_str(&format!("{:<22} {:>8.3} ms  {changed}\n", t.pass, ms));
    }
    out.push_str(&format!("{:<22} {:>8.3} ms\n", "total", total));
    out
}

pub fn compile(args: &CompileArgs) -> Result<(), CliError> {
    if args.backend == crate::CompileBackend::Llvm {
        crate::backend::require_llvm("--backend llvm")?;
    }
    let (model, ctx) = build(args)?;
    let graph = &model.graph;
    tracing::info!(nodes = graph.len(), "pipeline done");
    for (pass, text) in &ctx.dumps {
        eprintln!("// ----- IR after {pass} -----\n{text}");
    }
    if args.timings {
        eprint!("{}", timings_table(&ctx));
    }
    match (args.output.as_deref(), args.emit.as_slice()) {
        // The main job: the summary, and native code for every kernel.
        (None, []) | (None, [Emit::Summary]) => {
            write_output(None, &level(args, &model, &ctx, Emit::Summary)?)?;
            native(args, None)?;
        }
        (None, [one]) => write_output(None, &level(args, &model, &ctx, *one)?)?,
        (None, _) => {
            return Err(anyhow::anyhow!(
                "several --emit levels need a directory to write them to: add -o DIR"
            )
            .into())
        }
        (Some(path), [one]) => write_output(Some(path), &level(args, &model, &ctx, *one)?)?,
        // A directory: the compiled plan and every level asked for.
        (Some(dir), levels) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut levels = levels.to_vec();
            for always in [Emit::Summary, Emit::Plan] {
                if !levels.contains(&always) {
                    levels.push(always);
                }
            }
            // `--backend cuda` writes the CUDA C and PTX with the compiled
            // module below; emitting them here too would compile twice.
            if args.backend == crate::CompileBackend::Cuda {
                levels.retain(|l| !matches!(l, Emit::Cuda | Emit::Ptx));
            }
            for &l in &levels {
                let path = dir.join(level_file(l));
                write_output(Some(&path), &level(args, &model, &ctx, l)?)?;
            }
            native(args, Some(dir))?;
            eprintln!("wrote the compiled plan to {}", dir.display());
        }
    }
    if args.explain_fusion {
        let report = ctx.fusion.to_text();
        write_output(None, &format!("\nfusion decisions:\n{report}"))?;
    }
    Ok(())
}

/// The file a level is written to in an output directory.
fn level_file(level: Emit) -> &'static str {
    match level {
        Emit::Summary => "summary.txt",
        Emit::Graph => "graph.ir",
        Emit::Dot => "graph.dot",
        Emit::SummaryJson => "summary.json",
        Emit::Plan => "plan.json",
        Emit::Kernel => "kernels.kir",
        Emit::LlvmIr => "kernels.ll",
        Emit::Asm => "kernels.s",
        Emit::Clif => "kernels.clif",
        Emit::Cuda => "kernels.cu",
        Emit::Ptx => "kernels.ptx",
    }
}

/// One level's text.
fn level(
    args: &CompileArgs,
    model: &alexc_frontend::Model,
    ctx: &PassContext,
    level: Emit,
) -> Result<String, CliError> {
    let graph = &model.graph;
    let summary = || -> Result<Summary, CliError> {
        let mut s = summarize(graph, ctx, args.train);
        s.unfused = unfused_memory(args, ctx)?;
        Ok(s)
    };
    Ok(match level {
        Emit::Summary => summary_table(&summary()?, graph, &model.spec.description),
        Emit::Graph => alexc_ir::print::to_text(graph),
        Emit::Dot => alexc_ir::dot::to_dot(graph),
        Emit::SummaryJson => {
            let mut json =
                serde_json::to_string_pretty(&summary()?).context("serializing the summary")?;
            json.push('\n');
            json
        }
        Emit::Kernel | Emit::LlvmIr | Emit::Asm | Emit::Clif | Emit::Cuda | Emit::Ptx => {
            emit_code(args, level)?
        }
        Emit::Plan => {
            let plan = ctx
                .plan
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("no memory plan: the mem-plan pass is disabled"))?;
            let mut json = serde_json::to_string_pretty(plan).context("serializing the plan")?;
            json.push('\n');
            json
        }
    })
}

/// The runtime backend of `--backend`; for `none`, the default code
/// generator's (its lowering: LLVM's where this build has LLVM).
fn code_generator(args: &CompileArgs) -> &'static dyn alexc_runtime::Backend {
    use crate::CompileBackend;
    let backend = match args.backend {
        CompileBackend::None => CompileBackend::DEFAULT,
        chosen => chosen,
    };
    match backend {
        CompileBackend::Cranelift => &alexc_codegen_cranelift::CraneliftBackend,
        CompileBackend::Cuda => &crate::CUDA,
        CompileBackend::Llvm | CompileBackend::None => crate::backend::llvm(),
    }
}

/// The runtime options matching the command line.
fn runtime_options(args: &CompileArgs) -> alexc_runtime::Options {
    alexc_runtime::Options {
        train: args.train,
        no_fuse: args.no_fuse,
        // Lowered as for the code generator (its vector width).
        lower: Some(code_generator(args).lower_options()),
        disabled_passes: args.disable_pass.iter().cloned().collect(),
    }
}

/// Native code for every kernel (`--backend llvm`): JIT-compiled to check
/// and time it, or with a directory, written there as an object file and
/// a shared library with a manifest (`alexc run --aot DIR` loads them).
fn native(args: &CompileArgs, dir: Option<&Path>) -> Result<(), CliError> {
    if args.backend == crate::CompileBackend::None {
        return Ok(());
    }
    let model = alexc_frontend::load(&args.model, args.batch as usize)?;
    let start = std::time::Instant::now();
    let generator = code_generator(args);
    if args.backend == crate::CompileBackend::Cuda {
        return cuda(args, &model, dir, start);
    }
    if dir.is_some() && args.backend != crate::CompileBackend::Llvm {
        crate::backend::require_llvm("ahead-of-time code (-o DIR)")?;
        return Err(anyhow::anyhow!(
            "ahead-of-time code (-o DIR) comes from LLVM: use --backend llvm"
        )
        .into());
    }
    let kernels = match dir {
        None => {
            let rt = alexc_runtime::Runtime::new(&model, &runtime_options(args), generator)
                .with_context(|| format!("compiling the kernels with {}", generator.name()))?;
            rt.kernels().len()
        }
        Some(dir) => {
            let rt = alexc_runtime::Runtime::new(
                &model,
                &runtime_options(args),
                &alexc_runtime::EvalBackend,
            )
            .context("lowering the model to kernels")?;
            crate::backend::write_aot(rt.kernels(), dir)
                .with_context(|| format!("writing native code to {}", dir.display()))?;
            rt.kernels().len()
        }
    };
    eprintln!(
        "compiled {kernels} kernels with {} for {} ({} f32 lanes, {} threads) in {:.2} s",
        generator.name(),
        crate::backend::host_cpu()?,
        generator.lower_options().vector_width,
        alexc_threads::threads(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--backend cuda`: every kernel rendered to CUDA C and compiled by NVRTC
/// to PTX for `--arch` (no GPU needed); with a directory, the CUDA C, the
/// PTX and each kernel's launches (`launches.json`) are written there.
fn cuda(
    args: &CompileArgs,
    model: &alexc_frontend::Model,
    dir: Option<&Path>,
    start: std::time::Instant,
) -> Result<(), CliError> {
    let kernels = alexc_cuda::plan_kernels(model, &runtime_options(args))
        .context("lowering the model to kernels for the GPU")?;
    let module = alexc_cuda::compile_plan(&kernels, args.arch)
        .with_context(|| format!("compiling the CUDA C for {}", args.arch))?;
    if let Some(dir) = dir {
        module
            .write(dir)
            .with_context(|| format!("writing the CUDA module to {}", dir.display()))?;
    }
    let launches: usize = module.kernels.iter().map(|k| k.launches.len()).sum();
    eprintln!(
        "compiled {} kernels ({launches} launches) with NVRTC for {} ({} KiB of PTX) in {:.2} s",
        kernels.len(),
        args.arch,
        module.ptx.len() / 1024,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The kernels of the compiled model — exactly what a backend receives from
/// the runtime (aliased in-place parameters merged) — as kernel IR, LLVM IR
/// or assembly.
fn emit_code(args: &CompileArgs, level: Emit) -> Result<String, CliError> {
    let model = alexc_frontend::load(&args.model, args.batch as usize)?;
    // The evaluator backend "compiles" instantly; only the kernels are used.
    let rt =
        alexc_runtime::Runtime::new(&model, &runtime_options(args), &alexc_runtime::EvalBackend)
            .context("lowering the model to kernels")?;
    let kernels = rt.kernels();
    if matches!(level, Emit::Cuda | Emit::Ptx) {
        if args.backend != crate::CompileBackend::Cuda {
            return Err(anyhow::anyhow!("--emit cuda and ptx need --backend cuda").into());
        }
        return Ok(match level {
            Emit::Cuda => {
                alexc_cuda::render_plan(kernels)
                    .context("rendering CUDA C")?
                    .0
            }
            _ => {
                alexc_cuda::compile_plan(kernels, args.arch)
                    .with_context(|| format!("compiling the CUDA C for {}", args.arch))?
                    .ptx
            }
        });
    }
    match level {
        Emit::LlvmIr => crate::backend::require_llvm("--emit llvm-ir")?,
        Emit::Asm => crate::backend::require_llvm("--emit asm")?,
        _ => {}
    }
    match (level, args.backend) {
        (Emit::LlvmIr | Emit::Asm, crate::CompileBackend::Llvm) => {}
        (Emit::Clif, crate::CompileBackend::Cranelift) | (Emit::Kernel, _) => {}
        (Emit::Clif, _) => {
            return Err(anyhow::anyhow!("--emit clif needs --backend cranelift").into())
        }
        _ => return Err(anyhow::anyhow!("--emit llvm-ir and asm need --backend llvm").into()),
    }
    Ok(match level {
        Emit::LlvmIr => crate::backend::llvm_ir(kernels)?,
        Emit::Asm => crate::backend::asm(kernels)?,
        Emit::Clif => {
            alexc_codegen_cranelift::clif_text(kernels).context("emitting Cranelift IR")?
        }
        _ => kernels
            .iter()
            .map(alexc_kernel::to_text)
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Writes to a file (via a temporary file and a rename, so an interrupted
/// write never leaves a truncated file) or to standard output.
pub fn write_output(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`alexc compile … | head`) is not an error.
            match stdout.write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing to standard output"),
            }
        }
        Some(path) => alexc_tensor::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display())),
    }
}
