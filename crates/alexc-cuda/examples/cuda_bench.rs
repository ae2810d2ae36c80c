//! Training throughput on the GPU: `models/alexnet.ron` (or the model given
//! as the first argument) at batch 128, fused against unfused, with the
//! state resident on the device. Two loops per variant over two
//! alternating batches: `train_step` after `train_step` (each waits for its
//! loss before the next batch is copied), and the pipelined loop the
//! trainer runs (the next batch staged through pinned memory on a copy
//! stream while the step computes). Prints one table row per variant, then
//! the fused plan's ten slowest kernels (timed one by one, synchronized).
//! Run by `scripts/gpu-check.sh`. With `ALEXC_BENCH_EMULATE=1` the same
//! loops run on the CUDA emulator (CPU; a smoke test of this program in CI,
//! not a measurement).
//!
//! ```text
//! cargo run --release -p alexc-cuda --example cuda_bench -- [MODEL] [BATCH] [STEPS]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use alexc_cuda::{CudaBackend, CudaEmulator};
use alexc_runtime::{Backend, Dropout, Options, Runtime};
use alexc_tensor::Tensor;

type Batch = (Tensor<f32>, Tensor<i64>);

/// Deterministic pseudo-images in [0, 1) and labels; `k` varies them.
fn batch(rt: &Runtime, k: u64) -> Result<Batch, Box<dyn std::error::Error>> {
    let shape = rt.image_shape()?;
    let classes = rt.classes().max(1);
    let n: usize = shape.iter().product();
    let images: Vec<f32> = (0..n as u64)
        .map(|i| ((i + k).wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0)
        .collect();
    let labels: Vec<i64> = (0..shape[0])
        .map(|i| ((i as u64 * 7 + k) % classes as u64) as i64)
        .collect();
    Ok((
        Tensor::new(shape.clone(), images)?,
        Tensor::new(vec![shape[0]], labels)?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_path = args
        .next()
        .map_or_else(|| root.join("models/alexnet.ron"), PathBuf::from);
    let batch_size: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let steps: usize = args.next().map_or(Ok(10), |s| s.parse::<usize>())?.max(1);
    let model = alexc_frontend::load(&model_path, batch_size).map_err(|e| e.to_string())?;
    let (gpu, emulator) = (CudaBackend::new(0), CudaEmulator::default());
    let backend: &dyn Backend = if std::env::var_os("ALEXC_BENCH_EMULATE").is_some_and(|v| v == "1")
    {
        &emulator
    } else {
        &gpu
    };

    println!(
        "| model | batch | variant | kernels | compile s | step ms | img/s | pipelined step ms | pipelined img/s | loss first → last |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut slowest = Vec::new();
    for no_fuse in [false, true] {
        let options = Options {
            train: true,
            no_fuse,
            ..Options::default()
        };
        let start = Instant::now();
        let mut rt = Runtime::new(&model, &options, backend)?;
        let compile = start.elapsed().as_secs_f64();
        rt.init_state(0, model.base_dir())?;
        let batches = [batch(&rt, 0)?, batch(&rt, 1)?];
        let lr = 0.01;
        // Warm-up: module load, first-touch allocations, the staging
        // buffers.
        let first = rt.train_step(&batches[0].0, &batches[0].1, lr, 0)?;
        rt.train_step(&batches[1].0, &batches[1].1, lr, 1)?;

        let start = Instant::now();
        for s in 0..steps {
            let (x, y) = &batches[s % 2];
            rt.train_step(x, y, lr, 2 + s as u64)?;
        }
        let sequential = start.elapsed().as_secs_f64() / steps as f64;

        let start = Instant::now();
        rt.stage_batch(&batches[0].0, &batches[0].1)?;
        let mut last = first;
        for s in 0..steps {
            rt.launch_train_step(lr, Dropout::Seed(100 + s as u64))?;
            if s + 1 < steps {
                let (x, y) = &batches[(s + 1) % 2];
                rt.stage_batch(x, y)?;
            }
            last = rt.wait_loss()?;
        }
        let pipelined = start.elapsed().as_secs_f64() / steps as f64;
        println!(
            "| {} | {batch_size} | {} | {} | {compile:.1} | {:.1} | {:.0} | {:.1} | {:.0} | {first:.4} → {last:.4} |",
            model.graph.name,
            if no_fuse { "unfused" } else { "fused" },
            rt.kernels().len(),
            sequential * 1e3,
            batch_size as f64 / sequential,
            pipelined * 1e3,
            batch_size as f64 / pipelined,
        );
        if !no_fuse {
            rt.set_profiling(true);
            for s in 0..3 {
                let (x, y) = &batches[s % 2];
                rt.train_step(x, y, lr, 200 + s as u64)?;
            }
            let profile = rt.profile();
            let runs = profile.runs.max(1) as f64;
            slowest = profile
                .launches
                .into_iter()
                .map(|l| {
                    let ms = l.seconds / runs * 1e3;
                    let gflops = l.flops as f64 / (ms * 1e-3).max(1e-12) / 1e9;
                    (l.kernel, ms, gflops)
                })
                .collect();
            slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
            slowest.truncate(10);
        }
    }
    println!();
    println!("| fused kernel (slowest 10) | ms per step | GFLOP/s |");
    println!("|---|---|---|");
    for (kernel, ms, gflops) in slowest {
        println!("| {kernel} | {ms:.2} | {gflops:.0} |");
    }
    Ok(())
}
