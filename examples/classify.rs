//! Embedding alexc for inference.
//!
//! ```sh
//! cargo run --release --example classify [MODEL.ron] [WEIGHTS.safetensors]
//! ```
//!
//! Compiles the model (default `models/alexnet-small.ron`) with LLVM for
//! this CPU, binds weights from a safetensors file or, without one, the
//! model's initializers, classifies a batch of synthetic images and prints
//! each one's top three classes.

use std::error::Error;
use std::path::PathBuf;

use alexc_runtime::{LlvmBackend, Options, Runtime};
use alexc_tensor::Tensor;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "models/alexnet-small.ron".into()),
    );
    let weights = args.next().map(PathBuf::from);

    // Parse the model with the batch size bound to 4, and compile it.
    let batch = 4;
    let model = alexc_frontend::load(&model_path, batch).map_err(|e| format!("{e:?}"))?;
    let mut runtime = Runtime::new(&model, &Options::default(), &LlvmBackend)?;
    match &weights {
        Some(path) => runtime.load_state(&alexc_tensor::load_weights(path)?)?,
        None => runtime.init_state(0, model.base_dir())?,
    }

    // A batch shaped like the model's input: [N, C, H, W].
    let input = model.spec.inputs.first().ok_or("the model has no input")?;
    let dims: Vec<usize> = std::iter::once(batch)
        .chain(input.shape.iter().skip(1).map(|d| match d {
            alexc_frontend::format::Dim::Fixed(n) => *n as usize,
            alexc_frontend::format::Dim::Batch => batch,
        }))
        .collect();
    let images = Tensor::from_flat_fn(dims, |i| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0)?;

    let logits = runtime.infer(&images)?;
    let classes = logits.shape()[1];
    for (n, row) in logits.data().chunks(classes).enumerate() {
        let mut ranked: Vec<usize> = (0..classes).collect();
        ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let names: Vec<String> = ranked
            .iter()
            .take(3)
            .map(|&c| {
                model
                    .spec
                    .class_names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class {c}"))
            })
            .collect();
        println!("image {n}: {}", names.join(", "));
    }
    Ok(())
}
