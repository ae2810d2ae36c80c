//! State dicts and their safetensors files.
//!
//! A [`Weights`] map is a PyTorch-style state dict: parameter names such as
//! `conv1.weight` to f32 tensors. It is ordered (a `BTreeMap`) so that files,
//! listings and error messages come out the same on every run.
//!
//! Files are safetensors — a little-endian header length, a JSON header and
//! raw little-endian data — which PyTorch, JAX and NumPy all read and write.
//! Only F32 entries are accepted today; anything else is an error naming the
//! tensor, never a silent conversion. [`save_weights`] writes a temporary file
//! in the destination's directory and renames it over the destination, so a
//! crash mid-write leaves either the old file or the new one, never half of
//! one (a rename within one directory is atomic on POSIX file systems).
//!
//! [`check_weights`] compares a state dict against what a model expects and
//! reports every difference at once — missing, unexpected and mis-shaped
//! tensors — because fixing a converted checkpoint one error per run is
//! miserable.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use alexc_ir::Shape;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::tensor::{Tensor, TensorError};

/// A state dict: parameter name → value.
pub type Weights = BTreeMap<String, Tensor<f32>>;

/// Why a safetensors file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Format {
        path: PathBuf,
        source: SafeTensorError,
    },
    #[error(
        "{}: tensor `{tensor}` has dtype {dtype}; only F32 is supported (convert it with `.float()` before saving)",
        path.display()
    )]
    NotF32 {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        source: TensorError,
    },
    #[error("{}: no tensor named `{tensor}`; the file holds {}", path.display(), list_names(available))]
    NotFound {
        path: PathBuf,
        tensor: String,
        available: Vec<String>,
    },
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 8;
    if names.is_empty() {
        return "no tensors".to_string();
    }
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// A safetensors file held in memory, from which single tensors can be taken
/// without converting the others (a file may mix dtypes; only the tensors a
/// caller asks for must be F32).
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    /// Reads the file and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let bytes = fs::read(&path).map_err(|source| WeightsError::Io {
            path: path.clone(),
            source,
        })?;
        let file = SafetensorsFile { path, bytes };
        file.parse()?;
        Ok(file)
    }

    fn parse(&self) -> Result<SafeTensors<'_>, WeightsError> {
        SafeTensors::deserialize(&self.bytes).map_err(|source| WeightsError::Format {
            path: self.path.clone(),
            source,
        })
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Result<Vec<String>, WeightsError> {
        let mut names: Vec<String> = self
            .parse()?
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The tensor `name` as f32.
    pub fn tensor(&self, name: &str) -> Result<Tensor<f32>, WeightsError> {
        let st = self.parse()?;
        match st.tensor(name) {
            Ok(view) => self.convert(name, view.dtype(), view.shape(), view.data()),
            Err(SafeTensorError::TensorNotFound(_)) => Err(WeightsError::NotFound {
                path: self.path.clone(),
                tensor: name.to_string(),
                available: self.names()?,
            }),
            Err(source) => Err(WeightsError::Format {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Every tensor, as f32.
    pub fn all(&self) -> Result<Weights, WeightsError> {
        let st = self.parse()?;
        st.iter()
            .map(|(name, view)| {
                let t = self.convert(name, view.dtype(), view.shape(), view.data())?;
                Ok((name.to_string(), t))
            })
            .collect()
    }

    fn convert(
        &self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        data: &[u8],
    ) -> Result<Tensor<f32>, WeightsError> {
        if dtype != Dtype::F32 {
            return Err(WeightsError::NotF32 {
                path: self.path.clone(),
                tensor: name.to_string(),
                dtype: format!("{dtype:?}"),
            });
        }
        // The safetensors parser has already checked that the byte range
        // matches the shape, so `chunks_exact` sees no remainder.
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::new(shape.to_vec(), values).map_err(|source| WeightsError::Shape {
            path: self.path.clone(),
            tensor: name.to_string(),
            source,
        })
    }
}

/// Reads every tensor of a safetensors file; all must be F32.
pub fn load_weights(path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
    SafetensorsFile::open(path)?.all()
}

/// Encodes `weights` in safetensors format.
pub fn weights_to_bytes(weights: &Weights) -> Result<Vec<u8>, SafeTensorError> {
    let raw: Vec<(&String, &[usize], Vec<u8>)> = weights
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
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None)
}

/// Writes `weights` to `path` atomically: to a temporary file in the same
/// directory, flushed to disk, then renamed over `path`.
pub fn save_weights(path: impl AsRef<Path>, weights: &Weights) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = weights_to_bytes(weights).map_err(|source| WeightsError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    crate::write_atomic(path, &bytes).map_err(|e| WeightsError::Io {
        path: e.path,
        source: e.source,
    })
}

/// A tensor whose shape is not the one the model expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeDifference {
    pub name: String,
    pub expected: Shape,
    pub found: Shape,
}

/// Every difference between a model's parameters and a state dict.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct WeightsMismatch {
    /// Parameters the model needs that the weights lack, with their shapes.
    pub missing: Vec<(String, Shape)>,
    /// Tensors in the weights that the model has no parameter for.
    pub unexpected: Vec<(String, Shape)>,
    /// Tensors present under the right name but with the wrong shape.
    pub wrong_shape: Vec<ShapeDifference>,
}

impl WeightsMismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }

    pub fn len(&self) -> usize {
        self.missing.len() + self.unexpected.len() + self.wrong_shape.len()
    }
}

impl fmt::Display for WeightsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        write!(
            f,
            "the weights do not match the model's parameters ({n} difference{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.wrong_shape {
            write!(
                f,
                "\n  {}: expected {}, found {}",
                d.name, d.expected, d.found
            )?;
        }
        for (name, shape) in &self.missing {
            write!(f, "\n  {name}: missing (expected {shape})")?;
        }
        for (name, shape) in &self.unexpected {
            write!(
                f,
                "\n  {name}: unexpected (the model has no such parameter; found {shape})"
            )?;
        }
        if !self.missing.is_empty() && !self.unexpected.is_empty() {
            write!(
                f,
                "\n  hint: names must match exactly; look for a renamed layer or a prefix such as `module.`"
            )?;
        }
        Ok(())
    }
}

/// Compares `weights` with the parameters a model expects (name and shape)
/// and returns one error listing every difference. Each list is sorted by
/// name.
pub fn check_weights<T>(
    expected: &[(String, Shape)],
    weights: &BTreeMap<String, Tensor<T>>,
) -> Result<(), WeightsMismatch> {
    let mut mismatch = WeightsMismatch::default();
    let mut wanted: BTreeMap<&str, &Shape> = BTreeMap::new();
    for (name, shape) in expected {
        wanted.insert(name, shape);
    }
    for (&name, &shape) in &wanted {
        match weights.get(name) {
            None => mismatch.missing.push((name.to_string(), shape.clone())),
            Some(t) if t.shape() != shape.dims() => mismatch.wrong_shape.push(ShapeDifference {
                name: name.to_string(),
                expected: shape.clone(),
                found: Shape::new(t.shape()),
            }),
            Some(_) => {}
        }
    }
    for (name, t) in weights {
        if !wanted.contains_key(name.as_str()) {
            mismatch
                .unexpected
                .push((name.clone(), Shape::new(t.shape())));
        }
    }
    if mismatch.is_empty() {
        Ok(())
    } else {
        Err(mismatch)
    }
}
