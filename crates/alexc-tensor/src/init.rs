//! Materializing a graph's parameters from their `Init` declarations.
//!
//! Every `Op::Parameter` node declares how it starts: `Normal { mean, std }`,
//! `Constant { value }` or `File { path, tensor }`. [`init_parameters`] turns
//! those declarations into a [`Weights`] map. A training graph's optimizer
//! state — its `Op::Momentum` buffers — starts at zero and is part of the
//! same map, so one call initializes the whole state of a training graph,
//! and [`expected_parameters`] lists the buffers too (they are saved and
//! loaded with the weights, as checkpoints need).
//!
//! Normal samples come from a per-parameter ChaCha8 stream
//! ([`crate::rng::named_rng`]) keyed by the seed and the parameter's name, so
//! a parameter's values depend only on (seed, name, shape, init) — not on the
//! order of nodes, not on which other parameters exist. Samples are drawn in
//! f64 and rounded to f32, so the values do not depend on the float type a
//! later consumer computes in.
//!
//! File inits are read from safetensors files relative to `base_dir` (the
//! model file's directory); each file is read once however many parameters
//! point into it, and only the tensors actually named must be F32.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexc_ir::{DType, Graph, Init, Op, Shape};
use rand_distr::{Distribution, Normal};

use crate::rng::named_rng;
use crate::tensor::{Tensor, TensorError};
use crate::weights::{SafetensorsFile, Weights, WeightsError};

/// Why a parameter could not be initialized.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("parameter `{name}` has dtype {dtype}; only f32 parameters and momentum buffers can be initialized")]
    DType { name: String, dtype: DType },
    #[error("parameter `{name}`: normal({mean}, {std}) is not a valid distribution: the mean must be finite and the standard deviation finite and non-negative")]
    BadNormal { name: String, mean: f64, std: f64 },
    #[error("parameter `{name}`: constant {value} is not finite")]
    BadConstant { name: String, value: f64 },
    #[error("parameter `{name}`: {source}")]
    Shape { name: String, source: TensorError },
    #[error("parameter `{name}`: {source}")]
    File { name: String, source: WeightsError },
    #[error(
        "parameter `{name}` is {expected}, but tensor `{tensor}` in {} is {found}",
        path.display()
    )]
    FileShape {
        name: String,
        tensor: String,
        path: PathBuf,
        expected: Shape,
        found: Shape,
    },
}

/// The name and shape of every parameter and momentum buffer of `graph`
/// (the tensors bound with the weights), in node order.
pub fn expected_parameters(graph: &Graph) -> Vec<(String, Shape)> {
    graph
        .node_ids()
        .filter_map(|id| match &graph[id].op {
            Op::Parameter(p) => Some((graph[id].name.clone(), p.shape.clone())),
            Op::Momentum(m) => Some((graph[id].name.clone(), m.shape.clone())),
            _ => None,
        })
        .collect()
}

/// Creates the initial value of every parameter of `graph` from its `Init`,
/// and a zero tensor for every momentum buffer. `File` paths are resolved
/// against `base_dir` unless absolute.
pub fn init_parameters(graph: &Graph, seed: u64, base_dir: &Path) -> Result<Weights, InitError> {
    let mut files: HashMap<PathBuf, SafetensorsFile> = HashMap::new();
    let mut weights = Weights::new();
    for id in graph.node_ids() {
        let node = &graph[id];
        let name = node.name.as_str();
        let p = match &node.op {
            Op::Parameter(p) => p,
            Op::Momentum(m) => {
                if m.dtype != DType::F32 {
                    return Err(InitError::DType {
                        name: name.to_string(),
                        dtype: m.dtype,
                    });
                }
                let zeros =
                    Tensor::zeros(m.shape.dims().to_vec()).map_err(|source| InitError::Shape {
                        name: name.to_string(),
                        source,
                    })?;
                weights.insert(name.to_string(), zeros);
                continue;
            }
            _ => continue,
        };
        if p.dtype != DType::F32 {
            return Err(InitError::DType {
                name: name.to_string(),
                dtype: p.dtype,
            });
        }
        let shape_err = |source| InitError::Shape {
            name: name.to_string(),
            source,
        };
        let dims = p.shape.dims().to_vec();
        let value = match &p.init {
            &Init::Normal { mean, std } => {
                let normal = Normal::new(mean, std)
                    .ok()
                    .filter(|_| mean.is_finite() && std >= 0.0)
                    .ok_or(InitError::BadNormal {
                        name: name.to_string(),
                        mean,
                        std,
                    })?;
                let mut rng = named_rng(seed, name);
                Tensor::from_flat_fn(dims, |_| normal.sample(&mut rng) as f32).map_err(shape_err)?
            }
            &Init::Constant { value } => {
                if !value.is_finite() {
                    return Err(InitError::BadConstant {
                        name: name.to_string(),
                        value,
                    });
                }
                Tensor::full(dims, value as f32).map_err(shape_err)?
            }
            Init::File { path, tensor } => {
                let full = base_dir.join(path);
                let file_err = |source| InitError::File {
                    name: name.to_string(),
                    source,
                };
                let file = match files.entry(full.clone()) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(SafetensorsFile::open(&full).map_err(file_err)?),
                };
                let tensor_name = tensor.as_deref().unwrap_or(name);
                let t = file.tensor(tensor_name).map_err(file_err)?;
                if t.shape() != p.shape.dims() {
                    return Err(InitError::FileShape {
                        name: name.to_string(),
                        tensor: tensor_name.to_string(),
                        path: full,
                        expected: p.shape.clone(),
                        found: Shape::new(t.shape()),
                    });
                }
                t
            }
        };
        weights.insert(name.to_string(), value);
    }
    Ok(weights)
}
