//! Shared fixtures: a tiny model and a tiny synthetic IDX data set that a
//! test writes into its own temporary folder.
//!
//! The images are 8×8 with one bright horizontal band whose position is the
//! class (4 classes), plus noise: learnable in a few dozen steps, and
//! invariant under the horizontal flips the training transform draws, so
//! augmentation stays on (and is exercised by the resume tests).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexc_data::{write_idx, Dataset, IdxDataset, Resize, Split, Transform};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A conv → ReLU → pool → dropout → linear network on 1×8×8, 4 classes.
pub const TINY_MODEL: &str = r#"
Model(
    name: "tiny",
    inputs: [Input(name: "image", shape: ["N", 1, 8, 8], mean: [0.3], std: [0.3])],
    init: (weight: Normal(mean: 0.0, std: 0.1), bias: Constant(0.0)),
    layers: [
        Conv2d(name: "conv1", in_channels: 1, out_channels: 4, kernel: 3, padding: 1),
        Relu(name: "relu1"),
        MaxPool2d(name: "pool1", kernel: 2, stride: 2),
        Flatten(name: "flatten"),
        Dropout(name: "drop", p: 0.5),
        Linear(name: "fc", in_features: 64, out_features: 4),
    ],
    training: (momentum: 0.9, weight_decay: 5e-4),
)
"#;

pub const BATCH: usize = 8;

/// Writes the tiny model file into `dir` (with `extra` appended, e.g. a
/// comment that changes the file's hash but not the network).
pub fn write_model(dir: &Path, extra: &str) -> std::io::Result<PathBuf> {
    let path = dir.join("tiny.ron");
    std::fs::write(&path, format!("{TINY_MODEL}{extra}"))?;
    Ok(path)
}

pub fn load_model(path: &Path) -> Result<alexc_frontend::Model, Box<dyn std::error::Error>> {
    alexc_frontend::load(path, BATCH).map_err(|e| format!("{e:?}").into())
}

/// Deterministic noise (a 64-bit LCG): no dependency on `rand` versions.
fn noise(state: &mut u64) -> u8 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 61) as u8 * 8
}

/// `train-*` (n_train images) and `t10k-*` (n_val) IDX files in `dir`.
pub fn write_data(dir: &Path, n_train: usize, n_val: usize) -> Result<(), alexc_data::DataError> {
    let mut state = 7u64;
    for (prefix, n) in [("train", n_train), ("t10k", n_val)] {
        let mut images = Vec::with_capacity(n * 64);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i * 7 + i / 3) % 4;
            for y in 0..8 {
                for _ in 0..8 {
                    let base: u8 = if y / 2 == class { 180 } else { 30 };
                    images.push(base + noise(&mut state));
                }
            }
            labels.push(class as u8);
        }
        write_idx(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            &[n, 8, 8],
            &images,
            false,
        )?;
        write_idx(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n],
            &labels,
            false,
        )?;
    }
    Ok(())
}

/// A training set and a validation set.
pub type TrainVal = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// The training and validation sets of `dir`, with the model's
/// normalization; training draws random flips.
pub fn datasets(dir: &Path) -> Result<TrainVal, alexc_data::DataError> {
    let norm = |t: Transform| {
        t.with_resize(Resize::None)
            .with_normalization(vec![0.3], vec![0.3])
    };
    let train = IdxDataset::open_split(dir, Split::Train, norm(Transform::train(1, 8, 8)))?;
    let val = IdxDataset::open_split(dir, Split::Val, norm(Transform::eval(1, 8, 8)))?;
    Ok((Arc::new(train), Arc::new(val)))
}
