//! Training checkpoints: one safetensors file holding the weights, the
//! momentum buffers and everything else a run needs to continue bit-exactly.
//!
//! **Layout.** The tensors are the training runtime's state
//! ([`alexc_runtime::Runtime::state`]: `conv1.weight`, …,
//! `conv1.weight.momentum`, …), so the file also loads anywhere a plain
//! weights file does. The rest goes into the safetensors `__metadata__`
//! string map, one key per item ([`CheckpointMeta`]): JSON for the
//! structured ones (loader position, schedule, history, configuration), so
//! other tools can read them with any safetensors library.
//!
//! **Identity.** The checkpoint records an FNV-1a hash of the model file's
//! bytes ([`model_hash`]); resuming with another model file is refused
//! ([`TrainError::ModelMismatch`]) rather than silently loading weights
//! into a network that differs in some detail the shapes do not show.
//!
//! **Atomicity.** [`write_atomic`] writes a temporary file in the target's
//! directory, flushes it to disk (fsync), renames it over the target and
//! syncs the directory, so a crash at any point leaves the previous file or
//! the new one, never half of one. [`Checkpoint::save_with`] exposes the
//! stages to a hook so tests can inject a failure in the middle.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use alexc_data::LoaderState;
use alexc_tensor::{Tensor, Weights};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::metrics::History;
use crate::schedule::Scheduler;
use crate::trainer::TrainConfig;
use crate::TrainError;

/// The value of the `format` metadata key.
pub const FORMAT: &str = "alexc-checkpoint";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// The file a run directory's latest checkpoint is written to.
pub const LAST: &str = "last.safetensors";

/// The file name of the checkpoint written after `epochs` completed epochs.
pub fn epoch_file_name(epochs: u64) -> String {
    format!("checkpoint-epoch-{epochs}.safetensors")
}

/// The hash identifying a model file: FNV-1a 64 of its bytes, in hex.
pub fn model_hash(bytes: &[u8]) -> String {
    format!("fnv1a64:{:016x}", alexc_tensor::rng::fnv1a64(bytes))
}

/// Everything in a checkpoint besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Global steps completed.
    pub step: u64,
    /// Epochs completed (a mid-epoch checkpoint has `loader.position > 0`).
    pub epoch: u64,
    /// Where the training data loader stands.
    pub loader: LoaderState,
    /// The learning-rate schedule and its state.
    pub scheduler: Scheduler,
    /// The rate the next step runs with.
    pub lr: f32,
    /// The run's seed (initialization, shuffling, augmentation, dropout).
    pub seed: u64,
    /// The compiled batch size (the loader's batches depend on it).
    pub batch: usize,
    /// SGD hyper-parameters the training graph was compiled with.
    pub momentum: f64,
    pub weight_decay: f64,
    pub model_name: String,
    /// [`model_hash`] of the model file.
    pub model_hash: String,
    /// The run's configuration.
    pub config: TrainConfig,
    pub history: History,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Parameters and momentum buffers.
    pub weights: Weights,
    pub meta: CheckpointMeta,
}

pub use alexc_tensor::WriteStage;

impl Checkpoint {
    /// The checkpoint's bytes: safetensors with the metadata map.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let json = |what: &str, v: &dyn erased::Json| {
            v.to_json()
                .map_err(|e| TrainError::Config(format!("encoding the checkpoint's {what}: {e}")))
        };
        let m = &self.meta;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("version".to_string(), VERSION.to_string());
        meta.insert("step".to_string(), m.step.to_string());
        meta.insert("epoch".to_string(), m.epoch.to_string());
        meta.insert("loader".to_string(), json("loader state", &m.loader)?);
        meta.insert("schedule".to_string(), json("schedule", &m.scheduler)?);
        // Exact decimal round-trip: Rust prints the shortest string that
        // parses back to the same f32/f64.
        meta.insert("lr".to_string(), m.lr.to_string());
        meta.insert("seed".to_string(), m.seed.to_string());
        meta.insert("batch".to_string(), m.batch.to_string());
        meta.insert("momentum".to_string(), m.momentum.to_string());
        meta.insert("weight_decay".to_string(), m.weight_decay.to_string());
        meta.insert("model_name".to_string(), m.model_name.clone());
        meta.insert("model_hash".to_string(), m.model_hash.clone());
        meta.insert("config".to_string(), json("configuration", &m.config)?);
        meta.insert("history".to_string(), json("history", &m.history)?);

        let raw: Vec<(&String, &[usize], Vec<u8>)> = self
            .weights
            .iter()
            .map(|(name, t)| {
                let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, t.shape(), bytes)
            })
            .collect();
        let views = raw
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), bytes)
                    .map(|view| (name.as_str(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Config(format!("encoding the checkpoint: {e}")))?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| TrainError::Config(format!("encoding the checkpoint: {e}")))
    }

    /// Writes the checkpoint to `path` atomically ([`write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.save_with(path, |_| Ok(()))
    }

    /// [`Checkpoint::save`] with a hook called at each [`WriteStage`]; an
    /// error from the hook aborts the write as a crash would (tests).
    pub fn save_with(
        &self,
        path: &Path,
        hook: impl FnMut(WriteStage) -> io::Result<()>,
    ) -> Result<(), TrainError> {
        let bytes = self.to_bytes()?;
        write_atomic_with(path, &bytes, hook)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let bytes = fs::read(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = parse_meta(path, &bytes)?;
        let weights = parse_tensors(path, &bytes)?;
        Ok(Checkpoint { weights, meta })
    }

    /// Only the metadata of the checkpoint at `path` (the tensors are read
    /// but not converted).
    pub fn read_meta(path: &Path) -> Result<CheckpointMeta, TrainError> {
        let bytes = fs::read(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse_meta(path, &bytes)
    }
}

/// Every tensor of a safetensors file (a checkpoint or a plain weights
/// file) as f32, with errors naming the file.
pub fn load_tensors(path: &Path) -> Result<Weights, TrainError> {
    let bytes = fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tensors(path, &bytes)
}

/// The first-layer convolution weight of a state dict: `conv1.weight` if
/// present, else the first 4-D tensor (by name) that is not a momentum
/// buffer.
pub fn first_conv_weight(weights: &Weights) -> Option<(&str, &Tensor<f32>)> {
    if let Some(t) = weights.get("conv1.weight").filter(|t| t.rank() == 4) {
        return Some(("conv1.weight", t));
    }
    weights
        .iter()
        .find(|(name, t)| t.rank() == 4 && !name.ends_with(".momentum"))
        .map(|(name, t)| (name.as_str(), t))
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn parse_tensors(path: &Path, bytes: &[u8]) -> Result<Weights, TrainError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let mut weights = Weights::new();
    for (name, view) in st.iter() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}` is {:?}; only F32 is supported",
                    view.dtype()
                ),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = Tensor::new(view.shape().to_vec(), values)
            .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
        weights.insert(name.to_string(), t);
    }
    Ok(weights)
}

fn parse_meta(path: &Path, bytes: &[u8]) -> Result<CheckpointMeta, TrainError> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let Some(map) = header.metadata() else {
        return Err(bad(
            path,
            "no training metadata: this is a weights file, not an alexc checkpoint",
        ));
    };
    let get = |key: &str| {
        map.get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(path, format!("metadata key `{key}` is missing")))
    };
    if get("format")? != FORMAT {
        return Err(bad(
            path,
            format!("metadata `format` is not `{FORMAT}`; not an alexc checkpoint"),
        ));
    }
    let version: u32 = parse(path, "version", get("version")?)?;
    if version != VERSION {
        return Err(bad(
            path,
            format!("checkpoint format version {version}; this alexc reads version {VERSION}"),
        ));
    }
    // Structured items are JSON strings inside the string map.
    macro_rules! from_json {
        ($key:expr) => {
            serde_json::from_str(get($key)?)
                .map_err(|e| bad(path, format!("metadata `{}`: {e}", $key)))?
        };
    }
    Ok(CheckpointMeta {
        step: parse(path, "step", get("step")?)?,
        epoch: parse(path, "epoch", get("epoch")?)?,
        loader: from_json!("loader"),
        scheduler: from_json!("schedule"),
        lr: parse(path, "lr", get("lr")?)?,
        seed: parse(path, "seed", get("seed")?)?,
        batch: parse(path, "batch", get("batch")?)?,
        momentum: parse(path, "momentum", get("momentum")?)?,
        weight_decay: parse(path, "weight_decay", get("weight_decay")?)?,
        model_name: get("model_name")?.to_string(),
        model_hash: get("model_hash")?.to_string(),
        config: from_json!("config"),
        history: from_json!("history"),
    })
}

fn parse<T: std::str::FromStr>(path: &Path, key: &str, text: &str) -> Result<T, TrainError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| bad(path, format!("metadata `{key}` = `{text}`: {e}")))
}

/// Writes `bytes` to `path` atomically ([`alexc_tensor::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_atomic_with(path, bytes, |_| Ok(()))
}

fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    hook: impl FnMut(WriteStage) -> io::Result<()>,
) -> Result<(), TrainError> {
    alexc_tensor::write_atomic_with(path, bytes, hook).map_err(|e| TrainError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Type-erased JSON encoding for the metadata writer.
mod erased {
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}
