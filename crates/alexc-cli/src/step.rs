//! `alexc step`: N training steps on one fixed batch, printing the loss of
//! each — for overfitting a batch, and for cross-checking a step against
//! another framework. Runs the compiled training graph (LLVM or Cranelift)
//! or the reference interpreter on the same graph.

use std::collections::HashMap;
use std::time::Instant;

use alexc_interp::{Mode, Value};
use alexc_runtime::{Dropout, Options, Runtime};
use alexc_tensor::{read_npy, Tensor};
use anyhow::{anyhow, bail, Context};

use crate::{Backend, CliError, StepArgs};

/// The batch and its labels, checked against each other.
fn read_batch(args: &StepArgs) -> anyhow::Result<(Tensor<f32>, Tensor<i64>)> {
    let images = read_npy(&args.input)?.to_f32();
    let labels = read_npy(&args.labels)?.to_labels(&args.labels)?;
    let batch = *images
        .shape()
        .first()
        .ok_or_else(|| anyhow!("{} is a scalar", args.input.display()))?;
    if labels.shape() != [batch] {
        bail!(
            "{} has shape {:?}, but the batch has {batch} samples",
            args.labels.display(),
            labels.shape()
        );
    }
    if !args.lr.is_finite() {
        bail!("the learning rate {} is not finite", args.lr);
    }
    Ok((images, labels))
}

pub fn step(args: &StepArgs) -> Result<(), CliError> {
    if args.backend == Backend::Llvm {
        crate::backend::require_llvm("--backend llvm")?;
    }
    let (images, labels) = read_batch(args)?;
    let model = alexc_frontend::load(&args.model, images.shape()[0])?;
    run_steps(args, &model, &images, &labels)?;
    Ok(())
}

fn run_steps(
    args: &StepArgs,
    model: &alexc_frontend::Model,
    images: &Tensor<f32>,
    labels: &Tensor<i64>,
) -> anyhow::Result<()> {
    let options = Options {
        train: true,
        no_fuse: args.no_fuse,
        ..Options::default()
    };
    let start = Instant::now();
    // The interpreter runs the runtime's training graph; its kernels are
    // then never called, so they stay on the (instant) kernel evaluator.
    let backend = args.backend.runtime();
    let mut rt = Runtime::new(model, &options, backend).context("compiling the training graph")?;
    if args.backend != Backend::Interp {
        eprintln!(
            "compiled {} kernels with {} in {:.2} s",
            rt.kernels().len(),
            args.backend.name(),
            start.elapsed().as_secs_f64()
        );
    }
    match &args.weights {
        Some(path) => rt
            .load_state(&alexc_tensor::load_weights(path)?)
            .with_context(|| format!("loading {}", path.display()))?,
        None => rt
            .init_state(args.seed, model.base_dir())
            .context("initializing parameters")?,
    }
    let mut state = rt.state();
    for step in 0..args.steps {
        let seed = args.seed.wrapping_add(step as u64);
        let t = Instant::now();
        let loss = match args.backend {
            Backend::Llvm | Backend::Cranelift | Backend::Cuda | Backend::CudaEmu => {
                let dropout = if args.no_dropout {
                    Dropout::Off
                } else {
                    Dropout::Seed(seed)
                };
                rt.train_step_with(images, labels, args.lr, dropout)?
            }
            Backend::Interp => interp_step(&rt, &mut state, images, labels, args, seed)?,
        };
        println!(
            "step {:>4}  loss {loss:.6}  ({:.1} ms)",
            step + 1,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    if let Some(path) = &args.save_weights {
        match args.backend {
            Backend::Llvm | Backend::Cranelift | Backend::Cuda | Backend::CudaEmu => {
                rt.save_state(path)?
            }
            Backend::Interp => alexc_tensor::save_weights(path, &state)?,
        }
        eprintln!("saved weights and momentum to {}", path.display());
    }
    Ok(())
}

/// One step of the same training graph on the reference interpreter.
fn interp_step(
    rt: &Runtime,
    state: &mut alexc_tensor::Weights,
    images: &Tensor<f32>,
    labels: &Tensor<i64>,
    args: &StepArgs,
    seed: u64,
) -> anyhow::Result<f32> {
    let graph = rt.graph();
    let mut inputs = HashMap::new();
    inputs.insert("image".to_string(), Value::Float(images.clone()));
    inputs.insert("labels".to_string(), Value::Int(labels.clone()));
    inputs.insert("lr".to_string(), Value::Float(Tensor::scalar(args.lr)));
    if args.no_dropout {
        for id in graph.nodes_where(|op| matches!(op, alexc_ir::Op::DropoutMask(_))) {
            let shape = graph[id].outputs[0].shape.dims().to_vec();
            inputs.insert(
                graph[id].name.clone(),
                Value::Float(Tensor::full(shape, 1.0)?),
            );
        }
    }
    let out = alexc_interp::train_step(graph, state, &inputs, Mode::Train { seed })?;
    out.first()
        .and_then(Value::as_float)
        .and_then(|t| t.data().first().copied())
        .ok_or_else(|| anyhow!("the training graph returned no loss"))
}
