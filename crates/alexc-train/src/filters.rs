//! The first-layer filter grid: the paper's Figure 3.
//!
//! Each kernel of the first convolution (`[O, C, kh, kw]`) becomes one tile.
//! A kernel is normalized on its own, its minimum to 0 and its maximum to
//! 255 over all its channels together, because the kernels' scales differ
//! by orders of magnitude and a shared scale would leave most of them flat
//! grey; a constant kernel has no contrast to stretch and is drawn mid
//! grey. Three input channels are drawn as RGB (the paper's colour
//! kernels), one as grey; for any other channel count the tile shows the
//! mean over the channels, in grey, since there is no faithful colour
//! mapping for it.
//!
//! Tiles are upscaled by an integer factor with nearest-neighbour sampling
//! (so every weight stays a crisp square; 11×11 kernels become 44 px, 5×5
//! become 45 px) and laid out in a near-square grid (96 kernels: 12×8, as
//! in the paper; 32: 8×4) with white 2 px gaps and border.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use alexc_tensor::Tensor;
use image::{ImageFormat, Rgb, RgbImage};

use crate::TrainError;

/// Pixels between tiles and around the grid.
const GAP: u32 = 2;
/// Tiles are upscaled until they are at least this many pixels wide.
const MIN_TILE: usize = 44;
/// The colour of the gaps and the empty cells.
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// `(columns, rows)` for `n` tiles: the most square exact factorization with
/// at most twice as many columns as rows (96 → 12×8, 32 → 8×4, 64 → 8×8),
/// or, when there is none (primes), `⌈√n⌉` columns and as many rows as
/// needed.
pub fn grid_shape(n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let exact = (1..=n)
        .filter(|c| n % c == 0)
        .map(|c| (c, n / c))
        .find(|&(c, r)| c >= r && c <= 2 * r);
    exact.unwrap_or_else(|| {
        let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
        (cols, n.div_ceil(cols))
    })
}

/// The filter grid of first-layer weights `[O, C, kh, kw]` (see the module
/// documentation for the layout and the normalization).
pub fn filter_grid(weights: &Tensor<f32>) -> Result<RgbImage, TrainError> {
    let &[o, c, kh, kw] = weights.shape() else {
        return Err(TrainError::Filters(format!(
            "expected convolution weights [out, in, kh, kw], got shape {:?}",
            weights.shape()
        )));
    };
    if o == 0 || c == 0 || kh == 0 || kw == 0 {
        return Err(TrainError::Filters(format!(
            "the weights {:?} hold no kernel to draw",
            weights.shape()
        )));
    }
    if let Some(i) = weights.data().iter().position(|w| !w.is_finite()) {
        return Err(TrainError::Filters(format!(
            "kernel {} holds a non-finite weight ({}); did training diverge?",
            i / (c * kh * kw),
            weights.data()[i]
        )));
    }
    let scale = MIN_TILE.div_ceil(kh.max(kw)).max(1);
    let (tile_w, tile_h) = (kw * scale, kh * scale);
    let (cols, rows) = grid_shape(o);
    let side = |cells: usize, tile: usize| -> Option<u32> {
        let cells = u32::try_from(cells).ok()?;
        let tile = u32::try_from(tile).ok()?;
        cells.checked_mul(tile + GAP)?.checked_add(GAP)
    };
    let (Some(width), Some(height)) = (side(cols, tile_w), side(rows, tile_h)) else {
        return Err(TrainError::Filters(format!(
            "{o} kernels of {kh}×{kw} make too large an image"
        )));
    };
    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    let plane = kh * kw;
    for (k, kernel) in weights.data().chunks_exact(c * plane).enumerate() {
        let pixels = kernel_pixels(kernel, c, plane);
        // Top left corner of the tile.
        let x0 = GAP as usize + (k % cols) * (tile_w + GAP as usize);
        let y0 = GAP as usize + (k / cols) * (tile_h + GAP as usize);
        for y in 0..tile_h {
            for x in 0..tile_w {
                let px = pixels[(y / scale) * kw + x / scale];
                // In range by construction of `width` and `height`.
                if let (Ok(x), Ok(y)) = (u32::try_from(x0 + x), u32::try_from(y0 + y)) {
                    if x < width && y < height {
                        img.put_pixel(x, y, Rgb(px));
                    }
                }
            }
        }
    }
    Ok(img)
}

/// One kernel `[C, kh, kw]` as `kh·kw` RGB pixels, normalized to 0..=255.
fn kernel_pixels(kernel: &[f32], c: usize, plane: usize) -> Vec<[u8; 3]> {
    // The planes to show: R, G, B, or one grey plane (the mean over
    // channels, which is the channel itself when C = 1).
    let planes: Vec<Vec<f32>> = if c == 3 {
        kernel.chunks_exact(plane).map(<[f32]>::to_vec).collect()
    } else {
        let mean = (0..plane)
            .map(|i| (0..c).map(|ch| kernel[ch * plane + i]).sum::<f32>() / c as f32)
            .collect();
        vec![mean]
    };
    let (lo, hi) = planes
        .iter()
        .flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    let to_byte = |v: f32| -> u8 {
        if range > 0.0 && range.is_finite() {
            ((v - lo) / range * 255.0).round().clamp(0.0, 255.0) as u8
        } else {
            128
        }
    };
    (0..plane)
        .map(|i| {
            let value = |p: usize| to_byte(planes[p.min(planes.len() - 1)][i]);
            [value(0), value(1), value(2)]
        })
        .collect()
}

/// Writes [`filter_grid`] of `weights` to `path` as PNG, atomically.
pub fn write_filter_grid(weights: &Tensor<f32>, path: &Path) -> Result<(), TrainError> {
    let img = filter_grid(weights)?;
    write_png_atomic(&img, path)?;
    tracing::info!(path = %path.display(), kernels = ?weights.shape().first(), "wrote the filter grid");
    Ok(())
}

/// Encodes `img` as PNG into a temporary file next to `path`, syncs it and
/// renames it over `path`, so a reader (or a crash) never sees half a file.
pub(crate) fn write_png_atomic(img: &RgbImage, path: &Path) -> Result<(), TrainError> {
    let io = |path: &Path, source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| TrainError::Config(format!("{} does not name a file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let written = (|| {
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|source| TrainError::Image {
                path: path.to_path_buf(),
                source,
            })?;
        let mut out = BufWriter::new(File::create(&tmp).map_err(|e| io(&tmp, e))?);
        out.write_all(&bytes).map_err(|e| io(&tmp, e))?;
        let file = out.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    })();
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_shapes_are_near_square() {
        assert_eq!(grid_shape(96), (12, 8));
        assert_eq!(grid_shape(32), (8, 4));
        assert_eq!(grid_shape(64), (8, 8));
        assert_eq!(grid_shape(48), (8, 6));
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (2, 1));
        assert_eq!(grid_shape(7), (3, 3));
        assert_eq!(grid_shape(0), (0, 0));
    }
}
