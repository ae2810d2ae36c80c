//! What can go wrong between a data file and a batch.
//!
//! Every variant that comes from a file names the file, because a message
//! like "unexpected end of file" is useless when a data set has a million of
//! them. Nothing in this crate panics on file contents; the loader turns
//! per-image errors into warnings and skips the image (see [`crate::Loader`]).

use std::path::PathBuf;

use alexc_tensor::TensorError;

/// Why a data set, an image or a batch could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not valid gzip data (corrupt or truncated): {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is not an IDX file: it starts with {found:02x?}, but IDX files start with \
         00 00, a type byte and the number of dimensions",
        path.display()
    )]
    IdxMagic { path: PathBuf, found: Vec<u8> },

    #[error(
        "{}: 0x{code:02x} is not an IDX element type (0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, \
         0x0d f32, 0x0e f64)",
        path.display()
    )]
    IdxType { path: PathBuf, code: u8 },

    #[error(
        "{}: {what} must be {expected}, but the file holds {found} elements",
        path.display()
    )]
    IdxElementKind {
        path: PathBuf,
        what: &'static str,
        expected: &'static str,
        found: &'static str,
    },

    #[error("{}: label {label} of sample {index} is negative or too large", path.display())]
    IdxLabel {
        path: PathBuf,
        index: usize,
        label: i64,
    },

    #[error("{}: expected an IDX file with {expected} dimensions ({what}), found {found}", path.display())]
    IdxRank {
        path: PathBuf,
        what: &'static str,
        expected: usize,
        found: usize,
    },

    #[error("{}: IDX dimensions {dims:?} are empty or too large", path.display())]
    IdxDims { path: PathBuf, dims: Vec<usize> },

    #[error(
        "{} is truncated: {what} needs {expected} bytes, but the file holds only {found}",
        path.display()
    )]
    IdxTruncated {
        path: PathBuf,
        what: String,
        expected: usize,
        found: usize,
    },

    #[error(
        "{}: its header {dims:?} promises {expected} bytes of data, but more follow; \
         the header and the data do not match",
        path.display()
    )]
    IdxTrailing {
        path: PathBuf,
        dims: Vec<usize>,
        expected: usize,
    },

    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },

    #[error("{} has {found} class names for labels up to {max_label}", path.display())]
    ClassNames {
        path: PathBuf,
        max_label: usize,
        found: usize,
    },

    #[error("no {name}[.gz] (or {alt}[.gz]) in {}", dir.display())]
    MissingFile {
        dir: PathBuf,
        name: String,
        alt: String,
    },

    #[error("{} has no class folders (expected {}/<class>/*.jpg)", root.display(), root.display())]
    NoClasses { root: PathBuf },

    #[error("class folder {} holds no .jpg, .jpeg or .png files", path.display())]
    EmptyClass { path: PathBuf },

    #[error(
        "{} holds class folder `{class}`, which the training set does not have",
        root.display()
    )]
    UnknownClass { root: PathBuf, class: String },

    #[error("decoding image {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error("the image decoder panicked: {message}")]
    DecoderPanicked { message: String },

    #[error(
        "the image is {width}×{height}, smaller than the {crop_w}×{crop_h} crop, \
         and the transform does not resize"
    )]
    ImageTooSmall {
        width: usize,
        height: usize,
        crop_w: usize,
        crop_h: usize,
    },

    #[error("invalid transform: {0}")]
    Transform(String),

    #[error("invalid loader configuration: {0}")]
    Config(String),

    #[error("cannot resume the loader: {0}")]
    State(String),

    #[error("the data set is empty")]
    Empty,

    #[error("index {index} is out of range for a data set of {len} images")]
    IndexOutOfRange { index: usize, len: usize },

    #[error("a loader worker thread stopped unexpectedly")]
    WorkerLost,

    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
