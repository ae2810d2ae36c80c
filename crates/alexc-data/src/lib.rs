//! The data pipeline: files on disk to `[N, C, H, W]` batches for training
//! and evaluation.
//!
//! Three layers, each usable alone:
//!
//! - **Sources** decode image `i` and its label: [`IdxDataset`] (MNIST,
//!   Fashion-MNIST; raw or gzipped IDX files, [`read_idx`]) and
//!   [`ImageFolder`] (ImageNet-style `train/<class>/*.jpg`, `val/<class>/…`).
//!   Both implement [`Dataset`].
//! - **[`Transform`]** turns a decoded image into the model's input: channel
//!   conversion (gray → replicated RGB, RGB → luminance), resize, random or
//!   centre crop, flip, the paper's PCA colour augmentation
//!   ([`PcaLighting`]), normalization; plus the paper's ten evaluation views
//!   ([`Transform::ten_crop`]). [`estimate_color_stats`] measures the mean,
//!   std and PCA of a training set.
//! - **[`Loader`]** shuffles per epoch, decodes on background threads with
//!   bounded prefetch, skips (and reports) files that fail, and yields
//!   [`Batch`]es that depend only on the seed, the epoch and the data; its
//!   [`LoaderState`] resumes a run bit-exactly.
//!
//! Errors are [`DataError`]s naming the file; nothing here panics on data.
//!
//! ```no_run
//! use std::sync::Arc;
//! use alexc_data::{Dataset, IdxDataset, Loader, LoaderConfig, Split, Transform};
//!
//! let transform = Transform::train(1, 28, 28)
//!     .with_resize(alexc_data::Resize::None)
//!     .with_flip(false)
//!     .with_normalization(vec![0.286], vec![0.353]);
//! let train = IdxDataset::fashion_mnist(Split::Train, transform)?;
//! let mut loader = Loader::new(Arc::new(train), LoaderConfig::train(64, 42))?;
//! for batch in loader.epoch() {
//!     let batch = batch?;
//!     assert_eq!(batch.images.shape(), &[64, 1, 28, 28]);
//! }
//! # Ok::<(), alexc_data::DataError>(())
//! ```

mod dataset;
mod error;
mod folder;
mod idx;
mod loader;
mod resize;
mod stats;
mod transform;

pub use dataset::{sample_rng, shuffle_rng, Dataset, Sample, Split};
pub use error::DataError;
pub use folder::{class_folders, decode_image, is_image_file, ImageFolder};
pub use idx::{
    find_idx_files, parse_idx, read_idx, write_idx, IdxArray, IdxDataset, IdxElement,
    FASHION_MNIST_CLASSES, FASHION_MNIST_DIR,
};
pub use loader::{Batch, Epoch, Loader, LoaderConfig, LoaderState};
pub use stats::{estimate_color_stats, symmetric_eigen, ColorStats, PIXELS_PER_IMAGE};
pub use transform::{Crop, CropWindow, PcaLighting, RawImage, Resize, Transform};
