//! Embedding alexc for training.
//!
//! ```sh
//! cargo run --release --example train
//! ```
//!
//! Compiles the training graph of `models/alexnet-small.ron` (forward, loss,
//! backward, SGD with momentum 0.9 and weight decay 5e-4, fused) with LLVM,
//! trains it for 30 steps on one synthetic batch whose label is determined
//! by the image, printing the loss, and saves the weights and momentum
//! (atomically) to a temporary file.

use std::error::Error;
use std::path::Path;

use alexc_runtime::{LlvmBackend, Options, Runtime};
use alexc_tensor::Tensor;

fn main() -> Result<(), Box<dyn Error>> {
    let batch = 8;
    let model = alexc_frontend::load(Path::new("models/alexnet-small.ron"), batch)
        .map_err(|e| format!("{e:?}"))?;
    let options = Options {
        train: true,
        ..Options::default()
    };
    let mut runtime = Runtime::new(&model, &options, &LlvmBackend)?;
    runtime.init_state(42, model.base_dir())?;

    // Image n is a bright band at row 3n; its label is n.
    let images = Tensor::from_fn(vec![batch, 1, 28, 28], |i| {
        if i[2] / 3 == i[0] {
            2.0
        } else {
            -0.5
        }
    })?;
    let labels = Tensor::new(vec![batch], (0..batch as i64).collect())?;

    let first = runtime.train_step(&images, &labels, 0.01, 0)?;
    println!("step  1  loss {first:.4}");
    let mut last = first;
    for step in 2..=30u64 {
        last = runtime.train_step(&images, &labels, 0.01, step)?;
        if step % 5 == 0 {
            println!("step {step:>2}  loss {last:.4}");
        }
    }
    let path = std::env::temp_dir().join("alexc-example-train.safetensors");
    runtime.save_state(&path)?;
    println!(
        "loss {first:.4} → {last:.4}; weights and momentum saved to {}",
        path.display()
    );
    if last >= first {
        return Err("the loss did not fall".into());
    }
    Ok(())
}
