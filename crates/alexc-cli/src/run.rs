//! `alexc run`: classify inputs with a compiled (today: interpreted) model.
//!
//! The batch size comes from the input: one image, every image of a folder,
//! or the first dimension of a `.npy` tensor (fed as-is, without
//! preprocessing). Weights come from a safetensors file — checked against
//! the model, every difference reported at once — or from the model's
//! initializers with `--seed`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use alexc_interp::{Mode, Value};
use alexc_ir::Op;
use alexc_tensor::{check_weights, expected_parameters, Tensor};
use anyhow::{anyhow, bail, Context};

use crate::images::{self, ImageSpec};
use crate::{CliError, RunArgs};

/// Inputs ready for the model, with a label per sample for printing.
struct Batch {
    data: Tensor<f32>,
    labels: Vec<String>,
}

fn load_batch(input: &Path, spec: &ImageSpec) -> anyhow::Result<Batch> {
    let want = [spec.channels, spec.height, spec.width];
    if input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let t = alexc_tensor::read_npy(input)?.to_f32();
        let shape = t.shape().to_vec();
        let n = match shape.as_slice() {
            [c, h, w] if [*c, *h, *w] == want => 1,
            [n, c, h, w] if [*c, *h, *w] == want => *n,
            _ => bail!(
                "{} has shape {:?}, but the model takes [N, {}, {}, {}] (or one sample [{}, {}, {}])",
                input.display(),
                shape,
                want[0],
                want[1],
                want[2],
                want[0],
                want[1],
                want[2]
            ),
        };
        if n == 0 {
            bail!("{} holds an empty batch", input.display());
        }
        let data = t.reshape(vec![n, want[0], want[1], want[2]])?;
        let stem = input
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let labels = (0..n).map(|i| format!("{stem}[{i}]")).collect();
        return Ok(Batch { data, labels });
    }
    let files: Vec<PathBuf> = if input.is_dir() {
        images::list_images(input)?
    } else if input.is_file() {
        vec![input.to_path_buf()]
    } else {
        bail!("{} does not exist", input.display());
    };
    let mut data = Vec::with_capacity(files.len() * want.iter().product::<usize>());
    for f in &files {
        data.extend(images::load_image(f, spec)?);
    }
    let data = Tensor::new(vec![files.len(), want[0], want[1], want[2]], data)?;
    let labels = files.iter().map(|f| f.display().to_string()).collect();
    Ok(Batch { data, labels })
}

/// Softmax of one row, in f64 for a clean sum.
fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

pub fn run(args: &RunArgs) -> Result<(), CliError> {
    // Before any work, in a build without LLVM: what needs it.
    if args.backend == crate::Backend::Llvm {
        crate::backend::require_llvm("--backend llvm")?;
    }
    if args.aot.is_some() {
        crate::backend::require_llvm("--aot")?;
    }
    // The model at batch 1 tells what its input is.
    let probe = alexc_frontend::load(&args.model, 1)?;
    let inputs: Vec<_> = probe.graph.nodes_where(|op| matches!(op, Op::Input(_)));
    let [input_id] = inputs.as_slice() else {
        return Err(anyhow!(
            "`alexc run` feeds models with exactly one input; this one has {}",
            inputs.len()
        )
        .into());
    };
    let input_node = &probe.graph[*input_id];
    let dims = input_node.outputs[0].shape.dims().to_vec();
    let [_, c, h, w] = dims[..] else {
        return Err(anyhow!(
            "`alexc run` feeds image inputs [N, C, H, W]; `{}` is {}",
            input_node.name,
            input_node.outputs[0]
        )
        .into());
    };
    let input_spec = probe.spec.inputs.iter().find(|i| i.name == input_node.name);
    let spec = ImageSpec {
        channels: c,
        height: h,
        width: w,
        mean: input_spec.map(|i| i.mean.clone()).unwrap_or_default(),
        std: input_spec.map(|i| i.std.clone()).unwrap_or_default(),
    };
    let input_name = input_node.name.clone();
    let input_name_for_llvm = input_name.clone();
    let batch = load_batch(&args.input, &spec)?;
    let n = batch.data.shape()[0];

    let model = if n == 1 {
        probe
    } else {
        alexc_frontend::load(&args.model, n)?
    };
    let graph = &model.graph;

    let weights = match &args.weights {
        Some(path) => {
            let weights = alexc_tensor::load_weights(path).map_err(anyhow::Error::from)?;
            check_weights(&expected_parameters(graph), &weights).map_err(|m| {
                anyhow!("{m}").context(format!(
                    "{} does not fit {}",
                    path.display(),
                    args.model.display()
                ))
            })?;
            weights
        }
        None => alexc_tensor::init_parameters(graph, args.seed, model.base_dir())
            .context("initializing parameters")?,
    };

    let mut start = Instant::now();
    let mut feeds = HashMap::new();
    feeds.insert(input_name, Value::Float(batch.data));
    if args.aot.is_some() && args.backend != crate::Backend::Llvm {
        return Err(anyhow!("--aot runs native code: use it with --backend llvm").into());
    }
    let logits = match args.backend {
        crate::Backend::Interp => alexc_interp::run(graph, &weights, &feeds, Mode::Eval)
            .context("running the reference interpreter")?
            .into_iter()
            .next()
            .and_then(Value::into_float)
            .ok_or_else(|| anyhow!("the model's first output is not a float tensor"))?,
        crate::Backend::Llvm
        | crate::Backend::Cranelift
        | crate::Backend::Cuda
        | crate::Backend::CudaEmu => {
            let options = alexc_runtime::Options::default();
            let mut rt = match &args.aot {
                None => alexc_runtime::Runtime::new(&model, &options, args.backend.runtime())
                    .with_context(|| format!("compiling the model with {}", args.backend.name()))?,
                Some(dir) => {
                    let backend = crate::backend::aot(dir)?;
                    alexc_runtime::Runtime::new(&model, &options, &*backend).with_context(|| {
                        format!("loading the compiled plan in {}", dir.display())
                    })?
                }
            };
            eprintln!(
                "{} {} kernels in {:.2} s",
                if args.aot.is_some() {
                    "loaded"
                } else {
                    "compiled"
                },
                rt.kernels().len(),
                start.elapsed().as_secs_f64()
            );
            rt.load_state(&weights).context("binding the weights")?;
            let Some(Value::Float(images)) = feeds.remove(&input_name_for_llvm) else {
                return Err(anyhow!("internal error: the input batch is missing").into());
            };
            start = Instant::now();
            rt.infer(&images).context("running the compiled model")?
        }
    };
    let elapsed = start.elapsed();
    let [rows, classes] = logits.shape()[..] else {
        return Err(anyhow!(
            "the model's output has shape {:?}; `run` expects logits [N, classes]",
            logits.shape()
        )
        .into());
    };
    eprintln!(
        "ran {} on {rows} input{} with the {} backend in {:.2} s",
        graph.name,
        if rows == 1 { "" } else { "s" },
        args.backend.name(),
        elapsed.as_secs_f64()
    );

    let names: BTreeMap<usize, &str> = model
        .spec
        .class_names
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.as_str()))
        .collect();
    let k = (args.top as usize).min(classes);
    let mut out = String::new();
    for (i, label) in batch.labels.iter().enumerate() {
        let probs = softmax(&logits.data()[i * classes..(i + 1) * classes]);
        let mut ranked: Vec<usize> = (0..classes).collect();
        // Highest probability first; ties by class index, so output is stable.
        ranked.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        out.push_str(&format!("{label}\n"));
        for (rank, &class) in ranked.iter().take(k).enumerate() {
            let name = names
                .get(&class)
                .map(|s| format!("  {s}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:>2}. class {class:>4}  {:>7.3}%{name}\n",
                rank + 1,
                probs[class] * 100.0
            ));
        }
    }
    crate::compile::write_output(None, &out)?;

    if let Some(path) = &args.save_logits {
        alexc_tensor::write_npy(path, &logits)
            .with_context(|| format!("saving logits to {}", path.display()))?;
        eprintln!("saved logits {:?} to {}", logits.shape(), path.display());
    }
    Ok(())
}
