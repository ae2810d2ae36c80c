//! Training throughput on the GPU: `models/alexnet.ron` (or the model given
//! as the first argument) at batch 128, fused against unfused, one
//! `train_step` after another with the state resident on the device. Prints
//! one table row per variant. Run by `scripts/gpu-check.sh`.
//!
//! ```text
//! cargo run --release -p alexc-cuda --example cuda_bench -- [MODEL] [BATCH] [STEPS]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use alexc_cuda::CudaBackend;
use alexc_runtime::{Options, Runtime};
use alexc_tensor::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_path = args
        .next()
        .map_or_else(|| root.join("models/alexnet.ron"), PathBuf::from);
    let batch: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let steps: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let model = alexc_frontend::load(&model_path, batch).map_err(|e| e.to_string())?;
    let backend = CudaBackend::new(0);

    println!(
        "| model | batch | variant | kernels | compile s | step ms | img/s | loss first → last |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for no_fuse in [false, true] {
        let options = Options {
            train: true,
            no_fuse,
            ..Options::default()
        };
        let start = Instant::now();
        let mut rt = Runtime::new(&model, &options, &backend)?;
        let compile = start.elapsed().as_secs_f64();
        rt.init_state(0, model.base_dir())?;
        let shape = rt.image_shape()?;
        let classes = rt.classes().max(1);
        let n: usize = shape.iter().product();
        // Deterministic pseudo-images in [0, 1) and labels.
        let images: Vec<f32> = (0..n)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0)
            .collect();
        let images = Tensor::new(shape.clone(), images)?;
        let labels: Vec<i64> = (0..shape[0]).map(|i| (i * 7 % classes) as i64).collect();
        let labels = Tensor::new(vec![shape[0]], labels)?;
        // Warm-up: module load, first-touch allocations.
        let first = rt.train_step(&images, &labels, 0.01, 0)?;
        rt.train_step(&images, &labels, 0.01, 1)?;
        let start = Instant::now();
        let mut last = first;
        for s in 0..steps {
            // Each step returns its loss, a device → host read that waits
            // for the step's kernels.
            last = rt.train_step(&images, &labels, 0.01, 2 + s as u64)?;
        }
        let secs = start.elapsed().as_secs_f64() / steps.max(1) as f64;
        println!(
            "| {} | {batch} | {} | {} | {compile:.1} | {:.1} | {:.0} | {first:.4} → {last:.4} |",
            model.graph.name,
            if no_fuse { "unfused" } else { "fused" },
            rt.kernels().len(),
            secs * 1e3,
            batch as f64 / secs,
        );
    }
    Ok(())
}
