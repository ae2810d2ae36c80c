//! Pixel statistics of a training set: per-channel mean and std, and the
//! eigen-decomposition of the RGB covariance that PCA lighting needs.
//!
//! The sample is deterministic: `n` images evenly spaced through the data set
//! (`i·len/n`, so every class of a sorted folder is represented), and from
//! each image the pixels of a regular grid, at most [`PIXELS_PER_IMAGE`] of
//! them. Images are read in the channels the transform outputs (gray
//! replicated or RGB turned to luminance) but not resized: resizing barely
//! moves the mean and would only cost time. Sums are in f64, so even
//! 60,000 × 784 Fashion-MNIST pixels lose nothing. An image that fails to
//! decode is skipped with a warning, as in the loader.
//!
//! The 3×3 covariance is diagonalized with cyclic Jacobi rotations, which for
//! a symmetric matrix this small converge to machine precision in a few
//! sweeps and need no linear-algebra dependency.

use serde::{Deserialize, Serialize};

use crate::{DataError, Dataset, PcaLighting};

/// The most pixels read from one image.
pub const PIXELS_PER_IMAGE: usize = 4096;

/// What [`estimate_color_stats`] measured, on pixels in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColorStats {
    /// Per output channel.
    pub mean: Vec<f32>,
    /// Per output channel (population std).
    pub std: Vec<f32>,
    /// The RGB covariance's eigen-decomposition; 3-channel transforms only.
    pub pca: Option<PcaLighting>,
    /// Images that contributed.
    pub images: usize,
    /// Pixels that contributed.
    pub pixels: u64,
}

/// Estimates mean, std and (for RGB) PCA lighting from `max_images` images
/// of `dataset`, in the channels of its transform.
pub fn estimate_color_stats(
    dataset: &dyn Dataset,
    max_images: usize,
) -> Result<ColorStats, DataError> {
    let len = dataset.len();
    let n = max_images.min(len);
    let channels = dataset.transform().channels;
    let mut sum = [0.0f64; 3];
    let mut cross = [[0.0f64; 3]; 3];
    let mut pixels = 0u64;
    let mut images = 0;
    for k in 0..n {
        let index = k * len / n;
        let raw = match dataset.load(index) {
            Ok((raw, _)) => raw,
            Err(e) => {
                tracing::warn!(image = %dataset.name_of(index), error = %e, "skipping an image that failed to load");
                continue;
            }
        };
        let img = raw.to_channels(channels);
        let (w, h, c) = (img.width(), img.height(), img.channels());
        let bytes = img.bytes();
        // The smallest stride that keeps the grid within the budget.
        let stride = (1..)
            .find(|s| w.div_ceil(*s) * h.div_ceil(*s) <= PIXELS_PER_IMAGE)
            .unwrap_or(1);
        for y in (0..h).step_by(stride) {
            for x in (0..w).step_by(stride) {
                let px = &bytes[(y * w + x) * c..(y * w + x + 1) * c];
                let mut v = [0.0f64; 3];
                for (vi, &b) in v.iter_mut().zip(px) {
                    *vi = f64::from(b) / 255.0;
                }
                for i in 0..c {
                    sum[i] += v[i];
                    for j in 0..c {
                        cross[i][j] += v[i] * v[j];
                    }
                }
                pixels += 1;
            }
        }
        images += 1;
    }
    if pixels == 0 {
        return Err(DataError::Empty);
    }
    let count = pixels as f64;
    let mean: Vec<f64> = sum[..channels].iter().map(|s| s / count).collect();
    let mut cov = [[0.0f64; 3]; 3];
    for i in 0..channels {
        for j in 0..channels {
            cov[i][j] = cross[i][j] / count - mean[i] * mean[j];
        }
    }
    let std = (0..channels)
        .map(|i| cov[i][i].max(0.0).sqrt() as f32)
        .collect();
    let pca = (channels == 3).then(|| {
        let (values, vectors) = symmetric_eigen(cov);
        PcaLighting::new(
            values.map(|v| v.max(0.0) as f32),
            vectors.map(|p| p.map(|x| x as f32)),
        )
    });
    Ok(ColorStats {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std,
        pca,
        images,
        pixels,
    })
}

/// Eigenvalues (descending) and unit eigenvectors (`vectors[i]` for
/// `values[i]`, largest component positive) of a symmetric 3×3 matrix.
pub fn symmetric_eigen(matrix: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = matrix;
    // Columns of `v` accumulate the rotations: A = V · diag · Vᵀ.
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..64 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let scale = a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2);
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            // The rotation that zeroes a[p][q] (Golub & Van Loan, 8.5.2).
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A ← A·J (columns p, q), then A ← Jᵀ·A (rows p, q).
            for row in &mut a {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            a[p] = std::array::from_fn(|k| c * rp[k] - s * rq[k]);
            a[q] = std::array::from_fn(|k| s * rp[k] + c * rq[k]);
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut order = [0, 1, 2];
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.map(|i| a[i][i]);
    let vectors = order.map(|i| {
        let mut p = [v[0][i], v[1][i], v[2][i]];
        // A sign convention, so that the result is reproducible.
        let big = p
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            p = p.map(|x| -x);
        }
        p
    });
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalizes_a_covariance() {
        let m = [
            [0.07, 0.06, 0.055],
            [0.06, 0.068, 0.062],
            [0.055, 0.062, 0.071],
        ];
        let (values, vectors) = symmetric_eigen(m);
        assert!(values[0] >= values[1] && values[1] >= values[2]);
        for (lambda, p) in values.iter().zip(&vectors) {
            let norm: f64 = p.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-12);
            for i in 0..3 {
                let mp: f64 = (0..3).map(|j| m[i][j] * p[j]).sum();
                assert!(
                    (mp - lambda * p[i]).abs() < 1e-12,
                    "{mp} vs {}",
                    lambda * p[i]
                );
            }
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - (0.07 + 0.068 + 0.071)).abs() < 1e-12);
        // Already diagonal: returned sorted.
        let (values, _) = symmetric_eigen([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0]]);
        assert_eq!(values, [3.0, 2.0, 1.0]);
    }
}
