//! Compile time and inference time of the Cranelift backend next to LLVM's.
//!
//! ```sh
//! cargo run --release -p alexc-codegen-cranelift --features llvm --example versus_llvm [MODEL.ron] [BATCH] [RUNS]
//! ```
//!
//! 1. Compiles the training graph of the model (default
//!    `models/alexnet.ron`) at batch 1, as `alexc compile MODEL --train`
//!    does, with each backend: the whole `Runtime::new` (passes, lowering,
//!    compilation) and the backend's `compile` of the same kernels alone.
//! 2. Compiles the inference graph at batch `BATCH` (default 32) with each
//!    backend, runs `RUNS` (default 5) inferences after one warm-up on the
//!    same synthetic batch, and prints the median time of each and the
//!    largest difference between their logits. With `ALEXC_PROFILE` set,
//!    also the slowest kernel launches of one more run.
//! 3. Compiles the training graph at batch `BATCH` and times `RUNS`
//!    training steps after a first one, whose loss both backends print.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alexc_codegen_cranelift::CraneliftBackend;
use alexc_runtime::{Backend, LlvmBackend, Options, Runtime};
use alexc_tensor::Tensor;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(args.next().unwrap_or_else(|| "models/alexnet.ron".into()));
    let batch: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let backends: [&dyn Backend; 2] = [&CraneliftBackend, &LlvmBackend];

    println!("{}: training graph, batch 1", model_path.display());
    let model = alexc_frontend::load(&model_path, 1).map_err(|e| format!("{e:?}"))?;
    let train = Options {
        train: true,
        ..Options::default()
    };
    for backend in backends {
        let start = Instant::now();
        let rt = Runtime::new(&model, &train, backend)?;
        let total = start.elapsed();
        let start = Instant::now();
        let exec = backend.compile(rt.kernels())?;
        let compile = start.elapsed();
        drop(exec);
        println!(
            "  {:9} {} kernels: Runtime::new {:7.3} s, backend compile alone {:7.3} s",
            backend.name(),
            rt.kernels().len(),
            total.as_secs_f64(),
            compile.as_secs_f64()
        );
    }

    println!("inference, batch {batch}, median of {runs} runs");
    let model = alexc_frontend::load(&model_path, batch).map_err(|e| format!("{e:?}"))?;
    let input = model.spec.inputs.first().ok_or("the model has no input")?;
    let dims: Vec<usize> = std::iter::once(batch)
        .chain(input.shape.iter().skip(1).map(|d| match d {
            alexc_frontend::format::Dim::Fixed(n) => *n as usize,
            alexc_frontend::format::Dim::Batch => batch,
        }))
        .collect();
    let images = Tensor::from_flat_fn(dims, |i| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0)?;
    let mut logits = Vec::new();
    for backend in backends {
        let start = Instant::now();
        let mut rt = Runtime::new(&model, &Options::default(), backend)?;
        let compile = start.elapsed();
        rt.init_state(0, model.base_dir())?;
        let out = rt.infer(&images)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            rt.infer(&images)?;
            times.push(start.elapsed());
        }
        let profile = std::env::var_os("ALEXC_PROFILE").is_some();
        if profile {
            rt.set_profiling(true);
            rt.infer(&images)?;
        }
        println!(
            "  {:9} compile {:6.3} s, infer {:8.2} ms",
            backend.name(),
            compile.as_secs_f64(),
            median(times).as_secs_f64() * 1e3
        );
        if profile {
            print_profile(&rt);
        }
        logits.push(out);
    }
    if let [a, b] = logits.as_slice() {
        let diff = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        println!("  largest logit difference: {diff:e}");
    }

    println!("training step, batch {batch}, median of {runs} steps");
    let classes = logits.first().map_or(1, |l| l.shape()[1]);
    let labels = Tensor::from_flat_fn(vec![batch], |i| ((i * 7) % classes) as i64)?;
    let mut losses = Vec::new();
    for backend in backends {
        let mut rt = Runtime::new(&model, &train, backend)?;
        rt.init_state(0, model.base_dir())?;
        let first = rt.train_step(&images, &labels, 0.01, 1)?;
        let mut times = Vec::with_capacity(runs);
        for step in 0..runs {
            let start = Instant::now();
            rt.train_step(&images, &labels, 0.01, 2 + step as u64)?;
            times.push(start.elapsed());
        }
        println!(
            "  {:9} step {:8.2} ms, first loss {first}",
            backend.name(),
            median(times).as_secs_f64() * 1e3
        );
        if std::env::var_os("ALEXC_PROFILE").is_some() {
            rt.set_profiling(true);
            rt.train_step(&images, &labels, 0.01, 99)?;
            print_profile(&rt);
        }
        losses.push(first);
    }
    if let [a, b] = losses.as_slice() {
        println!("  loss difference: {:e}", (a - b).abs());
    }
    Ok(())
}

/// The slowest kernel launches of the profiled run.
fn print_profile(rt: &Runtime) {
    let mut launches = rt.profile().launches;
    launches.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    for l in launches.iter().take(12) {
        println!(
            "      {:8.2} ms {:6.1} GFLOP/s  {} ({})",
            l.seconds * 1e3,
            l.flops as f64 / l.seconds / 1e9,
            l.kernel,
            l.op
        );
    }
}
