//! The [`Dataset`] abstraction and the random streams that feed it.
//!
//! A data set only knows how to *load* image `i` (decode it, with its label)
//! and which [`Transform`] turns it into a model input; [`Dataset::get`] and
//! [`Dataset::ten_crop`] are built on those two. Keeping decoding apart from
//! the transform lets [`crate::estimate_color_stats`] read the raw pixels and
//! lets one set of files serve training and evaluation with two transforms.
//!
//! Randomness: the augmentation of image `i` in epoch `e` under seed `s`
//! draws from [`sample_rng`]`(s, e, i)` and nothing else, so it is the same
//! whichever thread decodes it and whenever; the shuffle of epoch `e` comes
//! from [`shuffle_rng`]`(s, e)`. Both are ChaCha8 keyed by all three numbers
//! at once, so no two (seed, epoch, image) share a stream.

use std::fmt;

use alexc_tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, RawImage, Transform};

/// One model input and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `[C, H, W]`, as [`Dataset::image_shape`] says.
    pub image: Tensor<f32>,
    pub label: i64,
}

/// Which part of a data set on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// `train/` of an image folder, `train-*` IDX files.
    Train,
    /// The held-out part: `val/` of an image folder, `t10k-*` IDX files.
    Val,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
        })
    }
}

/// A finite, indexable set of labelled images.
pub trait Dataset: Send + Sync + fmt::Debug {
    /// The number of images.
    fn len(&self) -> usize;

    /// Class names; label `k` is `classes()[k]`.
    fn classes(&self) -> &[String];

    /// What [`Dataset::get`] does to every image.
    fn transform(&self) -> &Transform;

    /// Image `index`, decoded but not transformed, and its label.
    fn load(&self, index: usize) -> Result<(RawImage, i64), DataError>;

    /// How to name image `index` in a message: its path, or file and index.
    fn name_of(&self, index: usize) -> String;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of every image [`Dataset::get`] returns.
    fn image_shape(&self) -> [usize; 3] {
        self.transform().output_shape()
    }

    /// Image `index` through the transform, drawing its random choices from
    /// `rng` (an evaluation transform draws none).
    fn get(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<Sample, DataError> {
        let (raw, label) = self.load(index)?;
        let image = self.transform().apply(&raw, rng)?;
        Ok(Sample { image, label })
    }

    /// The ten evaluation views of image `index` ([`Transform::ten_crop`])
    /// and its label.
    fn ten_crop(&self, index: usize) -> Result<(Vec<Tensor<f32>>, i64), DataError> {
        let (raw, label) = self.load(index)?;
        Ok((self.transform().ten_crop(&raw)?, label))
    }
}

/// `ChaCha8` keyed by `(seed, a, b, domain)`: distinct tuples, distinct keys.
fn keyed_rng(seed: u64, a: u64, b: u64, domain: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&a.to_le_bytes());
    key[16..24].copy_from_slice(&b.to_le_bytes());
    key[24..].copy_from_slice(domain);
    ChaCha8Rng::from_seed(key)
}

/// The augmentation stream of image `index` in `epoch` under `seed`.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    keyed_rng(seed, epoch, index as u64, b"augment\0")
}

/// The shuffle stream of `epoch` under `seed`.
pub fn shuffle_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    keyed_rng(seed, epoch, 0, b"shuffle\0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_distinct_and_repeatable() {
        let draw = |mut r: ChaCha8Rng| r.random::<u64>();
        let a = draw(sample_rng(1, 0, 5));
        assert_eq!(a, draw(sample_rng(1, 0, 5)));
        assert_ne!(a, draw(sample_rng(1, 0, 6)));
        assert_ne!(a, draw(sample_rng(1, 1, 5)));
        assert_ne!(a, draw(sample_rng(2, 0, 5)));
        assert_ne!(draw(shuffle_rng(1, 0)), draw(sample_rng(1, 0, 0)));
    }
}
