//! From a decoded image to the `[C, H, W]` tensor a model takes.
//!
//! A [`Transform`] is the whole per-image pipeline of the paper (section 4.1),
//! scaled to the model's input size:
//!
//! 1. **Channels.** RGB images fed to a 1-channel model become luminance (the
//!    `image` crate's conversion, as `alexc run` does); grayscale images fed to
//!    a 3-channel model are replicated into three equal channels (after
//!    resizing, so the resize works on one channel).
//! 2. **Resize** ([`Resize`]), bilinear (a triangle filter that also
//!    low-passes when it shrinks, see `resize.rs`). The ImageNet rule resizes the
//!    shorter side to 256 for a 224×224 model, i.e. to `256/224` of the
//!    input side ([`Transform::resize_side`]); the other side keeps the
//!    aspect ratio and is never made smaller than the crop.
//! 3. **Crop** ([`Crop`]): a uniformly random `H×W` window for training, the
//!    centre one for evaluation; then, for training, a horizontal flip with
//!    probability ½.
//! 4. **Scale** bytes to [0, 1], add the **PCA colour shift**
//!    ([`PcaLighting`]: `Σ αᵢλᵢpᵢ` with `αᵢ ~ N(0, 0.1)`, one draw per image),
//!    and **normalize** `(x − mean) / std` per channel.
//!
//! Steps 3 and 4 are one pass over the crop only: every output value is
//! `(byte / 255 + shift[c] − mean[c]) / std[c]`, looked up in a 256-entry
//! table per channel, so a 224×224 crop costs ~150k table reads.
//!
//! Randomness comes only from the `rng` passed to [`Transform::apply`], in a
//! fixed order (crop x, crop y, flip, then the three α's), and only for the
//! steps that are switched on; the loader gives every (seed, epoch, image) its
//! own stream, which is what makes augmentation independent of threads.

use std::borrow::Cow;

use alexc_tensor::Tensor;
use image::{DynamicImage, GrayImage, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::resize::resize_u8;
use crate::DataError;

/// A decoded image before any transform: 8-bit grayscale or 8-bit RGB.
#[derive(Debug, Clone, PartialEq)]
pub enum RawImage {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl RawImage {
    /// Keeps grayscale images grayscale (one channel, alpha dropped) and
    /// turns every other colour type into 8-bit RGB.
    pub fn from_dynamic(image: DynamicImage) -> Self {
        if image.color().has_color() {
            RawImage::Rgb(image.into_rgb8())
        } else {
            RawImage::Gray(image.into_luma8())
        }
    }

    pub fn width(&self) -> usize {
        match self {
            RawImage::Gray(g) => g.width() as usize,
            RawImage::Rgb(c) => c.width() as usize,
        }
    }

    pub fn height(&self) -> usize {
        match self {
            RawImage::Gray(g) => g.height() as usize,
            RawImage::Rgb(c) => c.height() as usize,
        }
    }

    /// 1 for grayscale, 3 for RGB.
    pub fn channels(&self) -> usize {
        match self {
            RawImage::Gray(_) => 1,
            RawImage::Rgb(_) => 3,
        }
    }

    /// The pixels, row-major, channels interleaved.
    pub fn bytes(&self) -> &[u8] {
        match self {
            RawImage::Gray(g) => g.as_raw(),
            RawImage::Rgb(c) => c.as_raw(),
        }
    }

    /// The image with `channels` channels (1 or 3): luminance or replicated gray.
    pub fn to_channels(&self, channels: usize) -> Cow<'_, RawImage> {
        match (self, channels) {
            (RawImage::Rgb(c), 1) => Cow::Owned(RawImage::Gray(image::imageops::grayscale(c))),
            (RawImage::Gray(g), 3) => Cow::Owned(RawImage::Rgb(
                DynamicImage::ImageLuma8(g.clone()).into_rgb8(),
            )),
            _ => Cow::Borrowed(self),
        }
    }

    /// Resized with a triangle (bilinear) filter; `None` only if a size is 0.
    fn resize(&self, width: usize, height: usize) -> Option<RawImage> {
        if width == 0 || height == 0 || self.width() == 0 || self.height() == 0 {
            return None;
        }
        let bytes = resize_u8(
            self.bytes(),
            self.width(),
            self.height(),
            self.channels(),
            width,
            height,
        );
        let (w, h) = (u32::try_from(width).ok()?, u32::try_from(height).ok()?);
        match self {
            RawImage::Gray(_) => GrayImage::from_raw(w, h, bytes).map(RawImage::Gray),
            RawImage::Rgb(_) => RgbImage::from_raw(w, h, bytes).map(RawImage::Rgb),
        }
    }
}

/// How an image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resize {
    /// Not at all: the image must be at least as large as the crop.
    None,
    /// To exactly the model's input size (the crop is then the whole image).
    Exact,
    /// The shorter side to this many pixels, keeping the aspect ratio (and
    /// never making either side smaller than the crop).
    ShorterSide(u32),
}

/// Which window of the resized image becomes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Crop {
    /// Uniformly random, for training.
    Random,
    /// The centre (rounded towards the top left), for evaluation.
    Center,
}

/// The paper's "fancy PCA" colour augmentation: to every pixel of an image
/// add `Σᵢ αᵢ λᵢ pᵢ`, where `pᵢ`, `λᵢ` are the eigenvectors and eigenvalues of
/// the 3×3 covariance of RGB pixel values (in [0, 1]) over the training set
/// and `αᵢ ~ N(0, alpha_std²)` is drawn once per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaLighting {
    /// `λ₁ ≥ λ₂ ≥ λ₃`.
    pub eigenvalues: [f32; 3],
    /// `eigenvectors[i]` is `pᵢ` as (r, g, b), unit length.
    pub eigenvectors: [[f32; 3]; 3],
    /// 0.1 in the paper.
    pub alpha_std: f32,
}

impl PcaLighting {
    /// With the paper's `α ~ N(0, 0.1)`.
    pub fn new(eigenvalues: [f32; 3], eigenvectors: [[f32; 3]; 3]) -> Self {
        PcaLighting {
            eigenvalues,
            eigenvectors,
            alpha_std: 0.1,
        }
    }

    /// The ImageNet values fb.resnet.torch uses (pixels in [0, 1]), for when
    /// the training set is too small to estimate its own (see
    /// [`crate::estimate_color_stats`]).
    pub fn imagenet() -> Self {
        PcaLighting::new(
            [0.2175, 0.0188, 0.0045],
            [
                [-0.5675, -0.5808, -0.5836],
                [0.7192, -0.0045, -0.6948],
                [0.4009, -0.8140, 0.4203],
            ],
        )
    }

    /// Draws `α` and returns the per-channel shift `Σᵢ αᵢ λᵢ pᵢ`.
    pub fn sample_shift(&self, rng: &mut ChaCha8Rng) -> [f32; 3] {
        // `validate` rejects a negative or non-finite std; without it, no noise.
        let Ok(normal) = Normal::new(0.0f32, self.alpha_std) else {
            return [0.0; 3];
        };
        let mut shift = [0.0f32; 3];
        for (value, vector) in self.eigenvalues.iter().zip(&self.eigenvectors) {
            let alpha = normal.sample(rng);
            for (s, p) in shift.iter_mut().zip(vector) {
                *s += alpha * value * p;
            }
        }
        shift
    }
}

/// One crop of one image: its top-left corner in the resized image and
/// whether it is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    pub x: usize,
    pub y: usize,
    pub flip: bool,
}

/// The per-image pipeline: channels, resize, crop, flip, colour, normalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Output channels: 1 or 3.
    pub channels: usize,
    /// Output (crop) height.
    pub height: usize,
    /// Output (crop) width.
    pub width: usize,
    pub resize: Resize,
    pub crop: Crop,
    /// Mirror horizontally with probability ½.
    pub flip: bool,
    /// Colour augmentation; 3-channel outputs only.
    pub pca: Option<PcaLighting>,
    /// Per-channel mean subtracted from pixels in [0, 1]; empty for 0.
    pub mean: Vec<f32>,
    /// Per-channel divisor after the mean; empty for 1.
    pub std: Vec<f32>,
}

impl Transform {
    /// The paper's training pipeline at `channels×height×width`: shorter side
    /// to [`Transform::resize_side`], random crop, random flip; no PCA and no
    /// normalization until they are set.
    pub fn train(channels: usize, height: usize, width: usize) -> Self {
        Transform {
            channels,
            height,
            width,
            resize: Resize::ShorterSide(Self::resize_side(height, width)),
            crop: Crop::Random,
            flip: true,
            pca: None,
            mean: Vec::new(),
            std: Vec::new(),
        }
    }

    /// The evaluation pipeline: the same resize, the centre crop, no flip.
    pub fn eval(channels: usize, height: usize, width: usize) -> Self {
        Transform {
            crop: Crop::Center,
            flip: false,
            ..Self::train(channels, height, width)
        }
    }

    /// `256/224` of the larger crop side, rounded up: 256 for 224×224, 32
    /// for 28×28, 74 for 64×64 (the same rule as `alexc run`).
    pub fn resize_side(height: usize, width: usize) -> u32 {
        let side = height.max(width).saturating_mul(256).div_ceil(224);
        u32::try_from(side).unwrap_or(u32::MAX)
    }

    pub fn with_resize(mut self, resize: Resize) -> Self {
        self.resize = resize;
        self
    }

    pub fn with_crop(mut self, crop: Crop) -> Self {
        self.crop = crop;
        self
    }

    pub fn with_flip(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }

    pub fn with_pca(mut self, pca: Option<PcaLighting>) -> Self {
        self.pca = pca;
        self
    }

    /// `(x − mean) / std` per channel, on pixels scaled to [0, 1].
    pub fn with_normalization(mut self, mean: Vec<f32>, std: Vec<f32>) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }

    /// `[C, H, W]` of what [`Transform::apply`] returns.
    pub fn output_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Checks what cannot be checked per image: channel count, sizes,
    /// normalization lengths and values, PCA only on colour.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |msg: String| Err(DataError::Transform(msg));
        if self.channels != 1 && self.channels != 3 {
            return bad(format!(
                "images can feed 1- or 3-channel inputs, not {}",
                self.channels
            ));
        }
        if self.height == 0 || self.width == 0 {
            return bad(format!(
                "the crop size {}×{} must not be empty",
                self.height, self.width
            ));
        }
        if u32::try_from(self.height.max(self.width)).is_err() {
            return bad(format!(
                "the crop size {}×{} is too large",
                self.height, self.width
            ));
        }
        if self.resize == Resize::ShorterSide(0) {
            return bad("the shorter side cannot be resized to 0".into());
        }
        for (name, values) in [("mean", &self.mean), ("std", &self.std)] {
            if !values.is_empty() && values.len() != self.channels {
                return bad(format!(
                    "{} {name} values for {} channels",
                    values.len(),
                    self.channels
                ));
            }
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad("mean values must be finite".into());
        }
        if self.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return bad("std values must be positive".into());
        }
        if let Some(pca) = &self.pca {
            if self.channels != 3 {
                return bad("PCA colour augmentation needs 3 output channels".into());
            }
            let finite = pca.eigenvalues.iter().all(|v| v.is_finite())
                && pca.eigenvectors.iter().flatten().all(|v| v.is_finite());
            if !(finite && pca.alpha_std.is_finite() && pca.alpha_std >= 0.0) {
                return bad(
                    "PCA eigenvalues, eigenvectors and alpha_std must be finite (alpha_std ≥ 0)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The size the image is resized to before cropping.
    pub fn resized_size(&self, width: usize, height: usize) -> Result<(usize, usize), DataError> {
        let (w, h) = (self.width, self.height);
        let size = match self.resize {
            Resize::None => (width, height),
            Resize::Exact => (w, h),
            Resize::ShorterSide(side) => {
                let scale = f64::from(side) / width.min(height).max(1) as f64;
                let rw = ((width as f64 * scale).round() as usize).max(w);
                let rh = ((height as f64 * scale).round() as usize).max(h);
                (rw, rh)
            }
        };
        if size.0 < w || size.1 < h {
            return Err(DataError::ImageTooSmall {
                width,
                height,
                crop_w: w,
                crop_h: h,
            });
        }
        Ok(size)
    }

    /// Step 1 and 2: the image in the output's channels at the resized size.
    pub fn prepare<'a>(&self, image: &'a RawImage) -> Result<Cow<'a, RawImage>, DataError> {
        // Luminance before resizing (cheaper), replication after (likewise).
        let image = if self.channels == 1 {
            image.to_channels(1)
        } else {
            Cow::Borrowed(image)
        };
        let (rw, rh) = self.resized_size(image.width(), image.height())?;
        if (rw, rh) == (image.width(), image.height()) {
            return Ok(image);
        }
        image.resize(rw, rh).map(Cow::Owned).ok_or_else(|| {
            DataError::Transform(format!(
                "cannot resize a {}×{} image to {rw}×{rh}",
                image.width(),
                image.height()
            ))
        })
    }

    /// Draws the crop window of a `width×height` (already resized) image.
    pub fn draw_window(&self, width: usize, height: usize, rng: &mut ChaCha8Rng) -> CropWindow {
        let (mx, my) = (
            width.saturating_sub(self.width),
            height.saturating_sub(self.height),
        );
        let (x, y) = match self.crop {
            Crop::Random => (rng.random_range(0..=mx), rng.random_range(0..=my)),
            Crop::Center => (mx / 2, my / 2),
        };
        let flip = self.flip && rng.random_bool(0.5);
        CropWindow { x, y, flip }
    }

    /// The random transform of one image.
    pub fn apply(&self, image: &RawImage, rng: &mut ChaCha8Rng) -> Result<Tensor<f32>, DataError> {
        let image = self.prepare(image)?;
        let window = self.draw_window(image.width(), image.height(), rng);
        let shift = match &self.pca {
            Some(pca) => pca.sample_shift(rng),
            None => [0.0; 3],
        };
        self.extract(&image, window, shift)
    }

    /// The paper's ten test views: the four corner crops, the centre crop,
    /// then the same five mirrored (order: top-left, top-right, bottom-left,
    /// bottom-right, centre). No random steps and no PCA.
    pub fn ten_crop(&self, image: &RawImage) -> Result<Vec<Tensor<f32>>, DataError> {
        let image = self.prepare(image)?;
        let (mx, my) = (image.width() - self.width, image.height() - self.height);
        let corners = [(0, 0), (mx, 0), (0, my), (mx, my), (mx / 2, my / 2)];
        let mut views = Vec::with_capacity(10);
        for flip in [false, true] {
            for &(x, y) in &corners {
                views.push(self.extract(&image, CropWindow { x, y, flip }, [0.0; 3])?);
            }
        }
        Ok(views)
    }

    /// Steps 3 and 4 for a prepared image: crop `window`, mirror, scale,
    /// shift by `shift` (per channel, in [0, 1] units), normalize.
    pub fn extract(
        &self,
        image: &RawImage,
        window: CropWindow,
        shift: [f32; 3],
    ) -> Result<Tensor<f32>, DataError> {
        let (w, h, c) = (self.width, self.height, self.channels);
        // After this, the source has one channel or as many as the output.
        let image = if c == 1 {
            image.to_channels(1)
        } else {
            Cow::Borrowed(image)
        };
        let (iw, ih, ic) = (image.width(), image.height(), image.channels());
        if window.x + w > iw || window.y + h > ih {
            return Err(DataError::ImageTooSmall {
                width: iw,
                height: ih,
                crop_w: w,
                crop_h: h,
            });
        }
        let src = image.bytes();
        let mut out = vec![0.0f32; c * h * w];
        for (ch, plane) in out.chunks_exact_mut(h * w).enumerate() {
            // A byte has 256 values: a table gives every output value by
            // the plain formula, with no per-pixel arithmetic.
            let std = self.std.get(ch).copied().unwrap_or(1.0);
            let mean = self.mean.get(ch).copied().unwrap_or(0.0);
            let table: [f32; 256] =
                std::array::from_fn(|v| (v as f32 / 255.0 + shift[ch] - mean) / std);
            // A grayscale source feeds every output channel (replication).
            let sc = if ic == 1 { 0 } else { ch };
            for (y, dst) in plane.chunks_exact_mut(w).enumerate() {
                let start = ((window.y + y) * iw + window.x) * ic;
                let row = &src[start..start + w * ic];
                if window.flip {
                    for (d, px) in dst.iter_mut().zip(row.chunks_exact(ic).rev()) {
                        *d = table[usize::from(px[sc])];
                    }
                } else {
                    for (d, px) in dst.iter_mut().zip(row.chunks_exact(ic)) {
                        *d = table[usize::from(px[sc])];
                    }
                }
            }
        }
        Ok(Tensor::new(vec![c, h, w], out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// A 40×30 RGB image whose pixel (x, y) is (x, y, x + y).
    fn ramp() -> RawImage {
        RawImage::Rgb(RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([x as u8, y as u8, (x + y) as u8])
        }))
    }

    fn plain(c: usize, h: usize, w: usize) -> Transform {
        Transform::train(c, h, w).with_resize(Resize::None)
    }

    #[test]
    fn random_crops_stay_inside_the_image() {
        let t = plain(3, 16, 24);
        let img = ramp();
        let mut r = rng(1);
        let (mut seen_x, mut seen_y) = (vec![false; 17], vec![false; 15]);
        for _ in 0..2000 {
            let win = t.draw_window(40, 30, &mut r);
            assert!(win.x + 24 <= 40 && win.y + 16 <= 30, "{win:?}");
            seen_x[win.x] = true;
            seen_y[win.y] = true;
            let out = t.extract(&img, win, [0.0; 3]).expect("extract");
            // The crop's top-left value says where it came from.
            let x0 = if win.flip { win.x + 23 } else { win.x };
            assert!((out.data()[0] - x0 as f32 / 255.0).abs() < 1e-6);
            assert!((out.data()[16 * 24] - win.y as f32 / 255.0).abs() < 1e-6);
        }
        // Every position, including both extremes, is reachable.
        assert!(seen_x.iter().all(|&s| s) && seen_y.iter().all(|&s| s));
    }

    #[test]
    fn flip_is_an_exact_mirror() {
        let t = plain(3, 16, 24);
        let img = ramp();
        let win = CropWindow {
            x: 5,
            y: 7,
            flip: false,
        };
        let a = t.extract(&img, win, [0.01, 0.02, 0.03]).expect("a");
        let b = t
            .extract(&img, CropWindow { flip: true, ..win }, [0.01, 0.02, 0.03])
            .expect("b");
        for row in 0..3 * 16 {
            let ra = &a.data()[row * 24..(row + 1) * 24];
            let rb = &b.data()[row * 24..(row + 1) * 24];
            let mirrored: Vec<f32> = ra.iter().rev().copied().collect();
            assert_eq!(rb, &mirrored[..]);
        }
    }

    #[test]
    fn centre_crop_is_exact_and_normalized() {
        let t = Transform::eval(3, 10, 20)
            .with_resize(Resize::None)
            .with_normalization(vec![0.5, 0.25, 0.0], vec![0.5, 2.0, 1.0]);
        let out = t.apply(&ramp(), &mut rng(0)).expect("apply");
        assert_eq!(out.shape(), &[3, 10, 20]);
        // (40 − 20) / 2 = 10, (30 − 10) / 2 = 10.
        for y in 0..10 {
            for x in 0..20 {
                let (sx, sy) = (x + 10, y + 10);
                let r = (sx as f32 / 255.0 - 0.5) / 0.5;
                let g = (sy as f32 / 255.0 - 0.25) / 2.0;
                let b = (sx + sy) as f32 / 255.0;
                let at = |c: usize| out.data()[(c * 10 + y) * 20 + x];
                assert!((at(0) - r).abs() < 1e-6);
                assert!((at(1) - g).abs() < 1e-6);
                assert!((at(2) - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn shorter_side_rule_matches_the_paper() {
        assert_eq!(Transform::resize_side(224, 224), 256);
        assert_eq!(Transform::resize_side(28, 28), 32);
        assert_eq!(Transform::resize_side(64, 64), 74);
        let t = Transform::train(3, 224, 224);
        assert_eq!(t.resized_size(500, 375).expect("size"), (341, 256));
        assert_eq!(t.resized_size(375, 500).expect("size"), (256, 341));
        // A very wide image is never narrower than the crop.
        assert_eq!(t.resized_size(1000, 10).expect("size"), (25600, 256));
        let none = plain(1, 28, 28);
        assert!(matches!(
            none.resized_size(20, 30),
            Err(DataError::ImageTooSmall { .. })
        ));
    }

    #[test]
    fn grayscale_to_three_channels_resizes_and_replicates() {
        let gray = RawImage::Gray(GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([((x * 9 + y * 3) % 256) as u8])
        }));
        for t in [
            Transform::eval(3, 224, 224),
            Transform::train(3, 224, 224),
            Transform::eval(3, 224, 224).with_resize(Resize::Exact),
        ] {
            let out = t.apply(&gray, &mut rng(3)).expect("apply");
            assert_eq!(out.shape(), &[3, 224, 224]);
            let plane = 224 * 224;
            assert_eq!(out.data()[..plane], out.data()[plane..2 * plane]);
            assert_eq!(out.data()[..plane], out.data()[2 * plane..]);
        }
        // 1-channel data to a 1-channel model: as-is.
        let t = Transform::eval(1, 28, 28).with_resize(Resize::None);
        let out = t.apply(&gray, &mut rng(0)).expect("apply");
        assert_eq!(out.shape(), &[1, 28, 28]);
        assert!((out.data()[28 + 1] - 12.0 / 255.0).abs() < 1e-6);
        // RGB to a 1-channel model: luminance.
        let out = Transform::eval(1, 16, 16)
            .apply(&ramp(), &mut rng(0))
            .expect("apply");
        assert_eq!(out.shape(), &[1, 16, 16]);
    }

    #[test]
    fn pca_noise_has_the_papers_statistics() {
        let pca = PcaLighting::new(
            [0.2, 0.02, 0.004],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        );
        // With unit eigenvectors along the axes, shift[i] = αᵢλᵢ.
        let mut r = rng(11);
        let n = 20000;
        let mut sum = [0.0f64; 3];
        let mut sq = [0.0f64; 3];
        for _ in 0..n {
            let s = pca.sample_shift(&mut r);
            for i in 0..3 {
                sum[i] += f64::from(s[i]);
                sq[i] += f64::from(s[i]).powi(2);
            }
        }
        for i in 0..3 {
            let mean = sum[i] / n as f64;
            let std = (sq[i] / n as f64 - mean * mean).sqrt();
            let expected = 0.1 * f64::from(pca.eigenvalues[i]);
            // 4 standard errors of the mean; 3% for the std.
            assert!(
                mean.abs() < 4.0 * expected / (n as f64).sqrt(),
                "{i}: {mean}"
            );
            assert!(
                (std / expected - 1.0).abs() < 0.03,
                "{i}: {std} vs {expected}"
            );
        }
        // The shift moves every pixel of a channel by the same amount.
        let t = Transform::eval(3, 8, 8)
            .with_resize(Resize::None)
            .with_pca(Some(PcaLighting::imagenet()));
        let img = ramp();
        let base = t
            .extract(
                &img,
                CropWindow {
                    x: 3,
                    y: 4,
                    flip: false,
                },
                [0.0; 3],
            )
            .expect("base");
        let lit = t.apply(&img, &mut rng(5)).expect("lit");
        let d0 = lit.data()[0] - base.data()[0];
        assert!(d0 != 0.0);
        for (l, b) in lit.data()[..64].iter().zip(&base.data()[..64]) {
            assert!((l - b - d0).abs() < 1e-5);
        }
    }

    #[test]
    fn ten_crop_gives_corners_centre_and_mirrors() {
        let t = Transform::eval(3, 10, 20).with_resize(Resize::None);
        let views = t.ten_crop(&ramp()).expect("ten crop");
        assert_eq!(views.len(), 10);
        let top_left = |v: &Tensor<f32>| {
            (
                (v.data()[0] * 255.0).round(),
                (v.data()[200] * 255.0).round(),
            )
        };
        assert_eq!(top_left(&views[0]), (0.0, 0.0));
        assert_eq!(top_left(&views[1]), (20.0, 0.0));
        assert_eq!(top_left(&views[2]), (0.0, 20.0));
        assert_eq!(top_left(&views[3]), (20.0, 20.0));
        assert_eq!(top_left(&views[4]), (10.0, 10.0));
        let centre = t.apply(&ramp(), &mut rng(0)).expect("centre");
        assert_eq!(views[4], centre);
        for i in 0..5 {
            let (a, b) = (&views[i], &views[i + 5]);
            for row in 0..30 {
                let ra: Vec<f32> = a.data()[row * 20..(row + 1) * 20]
                    .iter()
                    .rev()
                    .copied()
                    .collect();
                assert_eq!(&b.data()[row * 20..(row + 1) * 20], &ra[..]);
            }
        }
    }

    #[test]
    fn validation_rejects_bad_settings() {
        let bad = [
            Transform::eval(2, 8, 8),
            Transform::eval(3, 0, 8),
            Transform::eval(3, 8, 8).with_normalization(vec![0.5], vec![]),
            Transform::eval(1, 8, 8).with_normalization(vec![0.5], vec![0.0]),
            Transform::eval(1, 8, 8).with_pca(Some(PcaLighting::imagenet())),
            Transform::eval(3, 8, 8).with_resize(Resize::ShorterSide(0)),
        ];
        for t in bad {
            assert!(
                matches!(t.validate(), Err(DataError::Transform(_))),
                "{t:?}"
            );
        }
        assert!(Transform::train(3, 224, 224)
            .with_pca(Some(PcaLighting::imagenet()))
            .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
            .validate()
            .is_ok());
    }
}
