//! Image files to model inputs: decode, resize, centre-crop, normalize.
//!
//! The preprocessing of the ImageNet evaluation protocol, scaled to the
//! model's input: the shorter side is resized to `256/224` of the input size
//! (256 for a 224×224 model, 32 for 28×28), the centre `H×W` is cropped,
//! pixels are scaled to [0, 1] and normalized per channel with the model
//! input's `mean` and `std`. Three-channel models get RGB, one-channel models
//! luminance.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::imageops::FilterType;
use image::DynamicImage;

/// What the model's image input wants.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Per-channel mean, empty for none.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation, empty for none.
    pub std: Vec<f64>,
}

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `path` has an image extension this loader reads.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The images directly inside `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("reading folder {}", dir.display()))?
            .path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .jpg, .jpeg or .png files", dir.display());
    }
    Ok(files)
}

/// Decodes and preprocesses one image into `C×H×W` floats.
pub fn load_image(path: &Path, spec: &ImageSpec) -> anyhow::Result<Vec<f32>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding {}", path.display()))?;
    preprocess(&img, spec).with_context(|| format!("preprocessing {}", path.display()))
}

/// Resize (shorter side to 256/224 of the input), centre-crop, normalize.
pub fn preprocess(img: &DynamicImage, spec: &ImageSpec) -> anyhow::Result<Vec<f32>> {
    let (h, w) = (spec.height, spec.width);
    let side = (h.max(w) * 256).div_ceil(224) as f64;
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let scale = side / iw.min(ih);
    // Never smaller than the crop, whatever the aspect ratio.
    let rw = ((iw * scale).round() as u32).max(w as u32);
    let rh = ((ih * scale).round() as u32).max(h as u32);
    let resized = img.resize_exact(rw, rh, FilterType::Triangle);
    let x0 = (rw - w as u32) / 2;
    let y0 = (rh - h as u32) / 2;
    let cropped = resized.crop_imm(x0, y0, w as u32, h as u32);

    let plane = h * w;
    let mut out = vec![0f32; spec.channels * plane];
    match spec.channels {
        1 => {
            let gray = cropped.to_luma8();
            for (i, p) in gray.pixels().enumerate() {
                out[i] = p.0[0] as f32 / 255.0;
            }
        }
        3 => {
            let rgb = cropped.to_rgb8();
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = p.0[c] as f32 / 255.0;
                }
            }
        }
        c => bail!("images can feed 1- or 3-channel inputs, but this model's input has {c} channels; pass a .npy tensor"),
    }
    for c in 0..spec.channels {
        let mean = spec.mean.get(c).copied().unwrap_or(0.0) as f32;
        let std = spec.std.get(c).copied().unwrap_or(1.0) as f32;
        for v in &mut out[c * plane..(c + 1) * plane] {
            *v = (*v - mean) / std;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    #[test]
    fn centre_crop_keeps_the_centre() {
        // A 64×32 image, red on the left half, blue on the right: the centre
        // crop of a 16×16 model straddles both.
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let spec = ImageSpec {
            channels: 3,
            height: 16,
            width: 16,
            mean: vec![],
            std: vec![],
        };
        let out = preprocess(&DynamicImage::ImageRgb8(img), &spec).expect("preprocess");
        assert_eq!(out.len(), 3 * 16 * 16);
        // Top-left pixel is red, top-right is blue.
        assert!(out[0] > 0.9 && out[2 * 256] < 0.1);
        assert!(out[15] < 0.1 && out[2 * 256 + 15] > 0.9);
    }

    #[test]
    fn normalization_uses_mean_and_std() {
        let img = RgbImage::from_pixel(8, 8, Rgb([255, 255, 255]));
        let spec = ImageSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.5],
            std: vec![0.25],
        };
        let out = preprocess(&DynamicImage::ImageRgb8(img), &spec).expect("preprocess");
        assert!(out.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }
}
