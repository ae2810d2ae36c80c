//! `alexc`: compile and run convolutional networks declared in RON files.
//!
//! Subcommands:
//! - `alexc compile MODEL` — parse, verify and shape-check a model; print a
//!   per-layer summary, or emit the graph IR, DOT or a JSON summary;
//! - `alexc run MODEL --input X` — classify images (or a `.npy` batch) with
//!   the reference interpreter and print the top-K classes.
//!
//! Model-file errors are rendered by miette with file, line, column, the
//! offending snippet and a hint; every other error is one readable message.
//! Nothing the user passes makes this program panic.

mod backend;
mod bench;
mod compile;
mod eval;
mod filters;
mod images;
mod run;
mod step;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A compiler for convolutional networks.
#[derive(Debug, Parser)]
#[command(name = "alexc", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Threads for compiled kernels' parallel loops (default: all cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..1025))]
    threads: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse, verify and shape-check a model; print or emit the result.
    Compile(CompileArgs),
    /// Classify images or a .npy batch and print the top classes.
    Run(RunArgs),
    /// Run training steps on one fixed batch and print the loss per step.
    Step(StepArgs),
    /// Time compiled plans kernel by kernel; compare fused and unfused plans.
    Bench(bench::BenchArgs),
    /// Train a model on a data set (default: Fashion-MNIST): checkpoints,
    /// metrics, plots and the first-layer filters in a run directory.
    Train(train::TrainArgs),
    /// Top-1/top-5 error of trained weights (centre crop or ten views,
    /// one model or an ensemble).
    Eval(eval::EvalArgs),
    /// Draw the first convolution's filters of a checkpoint as a PNG grid.
    Filters(filters::FiltersArgs),
}

/// What `compile --emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The per-layer summary table (the default).
    Summary,
    /// The graph IR in its text form.
    Graph,
    /// The graph in Graphviz DOT.
    Dot,
    /// The summary as JSON.
    SummaryJson,
    /// The memory plan (JSON).
    Plan,
    /// The kernel IR of every kernel, as backends receive it.
    Kernel,
    /// The LLVM IR of the whole model, optimized for this CPU.
    LlvmIr,
    /// The assembly LLVM generates for this CPU.
    Asm,
    /// The Cranelift IR of every kernel (`--backend cranelift`).
    Clif,
    /// The CUDA C of every kernel, one translation unit (`--backend cuda`).
    Cuda,
    /// The PTX NVRTC compiles the CUDA C to (`--backend cuda`; no GPU needed).
    Ptx,
}

#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The model file (RON), e.g. models/alexnet.ron.
    pub model: PathBuf,
    /// The batch size the symbolic batch dimension "N" is bound to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// What to produce, one level or several (comma-separated); default:
    /// the summary. Several levels need `-o DIR`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub emit: Vec<Emit>,
    /// With one `--emit` level: write it to this file instead of standard
    /// output. Otherwise a directory for the compiled plan: native code
    /// (`kernels.o`, `libkernels.so`), `manifest.json`, `plan.json`, the
    /// summary and every `--emit` level.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The code generator: `llvm` compiles every kernel to native code for
    /// this CPU; `none` stops after lowering to kernel IR.
    #[arg(long, value_enum, default_value_t = CompileBackend::DEFAULT)]
    pub backend: CompileBackend,
    /// The GPU architecture for `--backend cuda` (sm_90: H100/H200, sm_80: A100).
    #[arg(long, default_value = "sm_90", value_parser = parse_arch)]
    pub arch: alexc_cuda::Arch,
    /// Build the training graph: forward, loss, backward and SGD updates.
    #[arg(long)]
    pub train: bool,
    /// Run no fusion pass.
    #[arg(long)]
    pub no_fuse: bool,
    /// Skip a pass of the pipeline (repeatable), e.g. `--disable-pass fuse-lrn-pool`.
    #[arg(long = "disable-pass", value_name = "NAME")]
    pub disable_pass: Vec<String>,
    /// Print the IR after a pass, or after `all` (repeatable; to standard error).
    #[arg(long = "print-after", value_name = "NAME|all")]
    pub print_after: Vec<String>,
    /// Print the time each pass took (to standard error).
    #[arg(long)]
    pub timings: bool,
    /// Print every fusion decision: the groups fused and the candidates rejected, with the reason.
    #[arg(long)]
    pub explain_fusion: bool,
}

/// Code generators for `compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompileBackend {
    /// LLVM: native code for this CPU.
    Llvm,
    /// Cranelift: native code, compiled an order of magnitude faster.
    Cranelift,
    /// CUDA: every kernel rendered to CUDA C and compiled to PTX by NVRTC
    /// (no GPU needed to compile).
    Cuda,
    /// No native code: graph and kernel IR only.
    None,
}

/// `--arch`: `sm_90`, `sm_80`, `compute_90` or `90`.
fn parse_arch(s: &str) -> Result<alexc_cuda::Arch, String> {
    s.parse()
}

/// Execution engines for `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference interpreter (plain Rust, the oracle for every backend).
    Interp,
    /// Compiled: the pass pipeline, kernel IR, LLVM (JIT for the host CPU).
    Llvm,
    /// Compiled like `llvm`, with the Cranelift JIT (fast compiles, slower code).
    Cranelift,
    /// Compiled to CUDA (NVRTC) and run on GPU 0; parameters, gradients and
    /// momentum stay on the device. Needs an NVIDIA driver.
    Cuda,
    /// The CUDA backend's kernels (the same CUDA C) compiled by the host C++
    /// compiler and run on the CPU with CUDA's thread model: for checking
    /// generated CUDA without a GPU (slow).
    CudaEmu,
}

/// The CUDA emulator of `--backend cuda-emu`.
pub(crate) static CUDA_EMU: alexc_cuda::CudaEmulator = alexc_cuda::CudaEmulator::new();

/// The CUDA backend of `--backend cuda`: GPU 0, compiled for its own
/// architecture, memory resident on the device.
pub(crate) static CUDA: alexc_cuda::CudaBackend = alexc_cuda::CudaBackend {
    ordinal: 0,
    arch: None,
    mirror_host: false,
};

impl Backend {
    /// The runtime backend that compiles for this choice (the interpreter
    /// runs the runtime's graph, so its kernels stay on the evaluator).
    pub fn runtime(self) -> &'static dyn alexc_runtime::Backend {
        match self {
            Backend::Interp => &alexc_runtime::EvalBackend,
            Backend::Llvm => backend::llvm(),
            Backend::Cranelift => &alexc_codegen_cranelift::CraneliftBackend,
            Backend::Cuda => &CUDA,
            Backend::CudaEmu => &CUDA_EMU,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::Llvm => "llvm",
            Backend::Cranelift => "cranelift",
            Backend::Cuda => "cuda",
            Backend::CudaEmu => "cuda-emu",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model file (RON).
    pub model: PathBuf,
    /// An image (JPEG/PNG), a folder of images, or a .npy tensor [N, C, H, W].
    #[arg(long)]
    pub input: PathBuf,
    /// Weights (safetensors, PyTorch names); default: the model's initializers.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed for the initializers when no weights are given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How many classes to print per input.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Save the logits [N, classes] to this .npy file.
    #[arg(long)]
    pub save_logits: Option<PathBuf>,
    /// The execution engine.
    #[arg(long, value_enum, default_value_t = Backend::DEFAULT)]
    pub backend: Backend,
    /// Run the native code `alexc compile MODEL -o DIR` wrote (checked
    /// against the model's kernels) instead of compiling (`--backend llvm`).
    #[arg(long, value_name = "DIR")]
    pub aot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The model file (RON).
    pub model: PathBuf,
    /// The batch: a .npy tensor [N, C, H, W] (f32, f64 or u8).
    #[arg(long)]
    pub input: PathBuf,
    /// Class labels: a .npy integer vector [N].
    #[arg(long)]
    pub labels: PathBuf,
    /// Initial weights (safetensors; momentum buffers `P.momentum` are read
    /// when present, else start at zero); default: the model's initializers.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed for the initializers and the dropout masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of steps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Turn dropout off (masks of ones).
    #[arg(long)]
    pub no_dropout: bool,
    /// Compile without fusion.
    #[arg(long)]
    pub no_fuse: bool,
    /// Save the final parameters and momentum here (written atomically).
    #[arg(long)]
    pub save_weights: Option<PathBuf>,
    /// The execution engine.
    #[arg(long, value_enum, default_value_t = Backend::DEFAULT)]
    pub backend: Backend,
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error as the user sees it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A model-file error, rendered with its snippet.
    #[error(transparent)]
    Model(#[from] Box<alexc_frontend::ModelError>),
    /// Anything else: one message with its causes.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already contains (some errors print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    if let Some(n) = cli.threads {
        alexc_threads::set_threads(n as usize);
    }
    let result = match cli.command {
        Command::Compile(args) => compile::compile(&args),
        Command::Run(args) => run::run(&args),
        Command::Step(args) => step::step(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Filters(args) => filters::filters(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Model(e)) => {
            eprintln!("{:?}", miette::Report::new(*e));
            ExitCode::FAILURE
        }
        Err(CliError::Other(e)) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
