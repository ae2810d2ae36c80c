//! Everything training and evaluation can report.

use std::path::PathBuf;

/// Errors of `alexc-train`.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Runtime(#[from] alexc_runtime::RuntimeError),
    #[error(transparent)]
    Data(#[from] alexc_data::DataError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    /// A checkpoint file that cannot be read or is not one of ours.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Resuming with a model file other than the one the checkpoint trained.
    #[error(
        "checkpoint {} was trained from a different model file (hash {expected}, `{model}` has {found}); resume with the original model file or start a new run",
        path.display()
    )]
    ModelMismatch {
        path: PathBuf,
        model: String,
        expected: String,
        found: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step}: the loss is {loss}; lower the learning rate")]
    Diverged { step: u64, loss: f32 },
    /// A model given to `evaluate` does not fit the data set or the other
    /// models (input shape, batch size, class count, training runtime).
    #[error("evaluation: model {model}: {message}")]
    EvalMismatch { model: usize, message: String },
    /// A label outside `0..classes`: the data set and the model disagree.
    #[error("image {image} has label {label}, outside the model's {classes} classes")]
    LabelOutOfRange {
        image: String,
        label: i64,
        classes: usize,
    },
    /// Weights that cannot be drawn as a filter grid.
    #[error("filter grid: {0}")]
    Filters(String),
    /// plotters failed to draw (a font or backend problem).
    #[error("plotting {what}: {message}")]
    Plot { what: String, message: String },
    /// Encoding or writing an image.
    #[error("writing image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}
