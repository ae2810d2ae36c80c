//! NumPy `.npy` files: test inputs, reference outputs and labels.
//!
//! `.npy` is what a Python reference implementation writes with one call
//! (`np.save`), so it is the format of every numerical fixture. Reading
//! accepts the element types such fixtures use — f32, f64, i64, i32, u8, in
//! either byte order — and returns an [`NpyTensor`] saying which one it was;
//! helpers convert it to f32 activations or i64 labels.
//!
//! The whole file is read into memory first and its length checked against
//! the header before anything is decoded, so a truncated file is reported as
//! such (with both byte counts) and a header that claims a huge array cannot
//! make us allocate more than the file holds. Fortran-ordered arrays are
//! refused rather than silently transposed.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use npyz::{TypeChar, WriterBuilder};

use crate::tensor::{element_count, Tensor, TensorError};

/// Why an `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a valid .npy file: {message}", path.display())]
    Header { path: PathBuf, message: String },
    #[error(
        "{}: unsupported dtype `{dtype}`; expected one of float32, float64, int64, int32, uint8",
        path.display()
    )]
    UnsupportedDtype { path: PathBuf, dtype: String },
    #[error(
        "{}: the array is stored in Fortran order; save it with np.ascontiguousarray(x) first",
        path.display()
    )]
    FortranOrder { path: PathBuf },
    #[error(
        "{}: truncated: the header describes {expected} bytes of data, but the file holds {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{}: {found} bytes of data follow the {expected} that the header describes", path.display())]
    TrailingData {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{}: {source}", path.display())]
    Shape { path: PathBuf, source: TensorError },
    #[error("{}: labels must be integers, but the file holds {dtype}", path.display())]
    NotIntegers { path: PathBuf, dtype: &'static str },
}

/// A tensor read from an `.npy` file, tagged with its element type.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyTensor {
    F32(Tensor<f32>),
    F64(Tensor<f64>),
    I64(Tensor<i64>),
    I32(Tensor<i32>),
    U8(Tensor<u8>),
}

impl NpyTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyTensor::F32(t) => t.shape(),
            NpyTensor::F64(t) => t.shape(),
            NpyTensor::I64(t) => t.shape(),
            NpyTensor::I32(t) => t.shape(),
            NpyTensor::U8(t) => t.shape(),
        }
    }

    /// The NumPy name of the element type (`float32`, `int64`, …).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyTensor::F32(_) => "float32",
            NpyTensor::F64(_) => "float64",
            NpyTensor::I64(_) => "int64",
            NpyTensor::I32(_) => "int32",
            NpyTensor::U8(_) => "uint8",
        }
    }

    /// The values as f32, converting as NumPy's `astype(np.float32)` does
    /// (f64 rounds to nearest; integers beyond 2^24 lose precision).
    pub fn to_f32(&self) -> Tensor<f32> {
        match self {
            NpyTensor::F32(t) => t.clone(),
            NpyTensor::F64(t) => t.cast(),
            NpyTensor::I64(t) => t.cast(),
            NpyTensor::I32(t) => t.cast(),
            NpyTensor::U8(t) => t.cast(),
        }
    }

    /// The values as i64 class labels. Only integer files qualify: a float
    /// file holding labels is almost always a mistake in the script that
    /// wrote it, so it is refused rather than truncated. `path` is only
    /// used in the error.
    pub fn to_labels(&self, path: &Path) -> Result<Tensor<i64>, NpyError> {
        match self {
            NpyTensor::I64(t) => Ok(t.clone()),
            NpyTensor::I32(t) => Ok(t.cast()),
            NpyTensor::U8(t) => Ok(t.cast()),
            NpyTensor::F32(_) | NpyTensor::F64(_) => Err(NpyError::NotIntegers {
                path: path.to_path_buf(),
                dtype: self.dtype_name(),
            }),
        }
    }
}

/// The element types we decode, as parsed from the header's `descr`.
#[derive(Clone, Copy)]
enum Kind {
    F32,
    F64,
    I64,
    I32,
    U8,
}

impl Kind {
    fn size(self) -> u64 {
        match self {
            Kind::F32 | Kind::I32 => 4,
            Kind::F64 | Kind::I64 => 8,
            Kind::U8 => 1,
        }
    }
}

/// Reads an `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyTensor, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.into(),
        source,
    })?;
    decode(path, &bytes)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<NpyTensor, NpyError> {
    let header_err = |message: String| NpyError::Header {
        path: path.into(),
        message,
    };
    // `from_reader` advances the slice to the first data byte.
    let mut rest = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| header_err(e.to_string()))?;
    if header.order() == npyz::Order::Fortran {
        return Err(NpyError::FortranOrder { path: path.into() });
    }
    let dtype = header.dtype();
    let kind = match &dtype {
        npyz::DType::Plain(ts) => match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 4) => Some(Kind::F32),
            (TypeChar::Float, 8) => Some(Kind::F64),
            (TypeChar::Int, 8) => Some(Kind::I64),
            (TypeChar::Int, 4) => Some(Kind::I32),
            (TypeChar::Uint, 1) => Some(Kind::U8),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| NpyError::UnsupportedDtype {
        path: path.into(),
        dtype: dtype.descr(),
    })?;

    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| header_err(format!("shape {:?} does not fit in memory", header.shape())))?;
    let n = element_count(&shape).map_err(|source| NpyError::Shape {
        path: path.into(),
        source,
    })?;
    let expected = n as u64 * kind.size();
    let found = rest.len() as u64;
    if found < expected {
        return Err(NpyError::Truncated {
            path: path.into(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(NpyError::TrailingData {
            path: path.into(),
            expected,
            found: found - expected,
        });
    }

    let file = npyz::NpyFile::with_header(header, rest);
    let data_err = |e: io::Error| header_err(e.to_string());
    let shape_err = |source| NpyError::Shape {
        path: path.into(),
        source,
    };
    Ok(match kind {
        Kind::F32 => NpyTensor::F32(
            Tensor::new(shape, file.into_vec().map_err(data_err)?).map_err(shape_err)?,
        ),
        Kind::F64 => NpyTensor::F64(
            Tensor::new(shape, file.into_vec().map_err(data_err)?).map_err(shape_err)?,
        ),
        Kind::I64 => NpyTensor::I64(
            Tensor::new(shape, file.into_vec().map_err(data_err)?).map_err(shape_err)?,
        ),
        Kind::I32 => NpyTensor::I32(
            Tensor::new(shape, file.into_vec().map_err(data_err)?).map_err(shape_err)?,
        ),
        Kind::U8 => NpyTensor::U8(
            Tensor::new(shape, file.into_vec().map_err(data_err)?).map_err(shape_err)?,
        ),
    })
}

/// Writes `tensor` as a little-endian float32, C-order `.npy` file.
pub fn write_npy(path: impl AsRef<Path>, tensor: &Tensor<f32>) -> Result<(), NpyError> {
    let path = path.as_ref();
    let io_err = |source| NpyError::Io {
        path: path.into(),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io_err)?;
    writer
        .extend(tensor.data().iter().copied())
        .map_err(io_err)?;
    writer.finish().map_err(io_err)
}
