//! Separable resampling of 8-bit images with a triangle (bilinear) filter.
//!
//! Why not `image::imageops::resize`: it costs ~15 ms for a 500×375 RGB
//! photo to 341×256, ten times the JPEG decode, which would cap a worker at
//! ~60 images/s. This is the same filter (PIL's and `image`'s "triangle"),
//! done in two passes with weights computed once per axis: ~1 ms.
//!
//! Output pixel `i` of an axis is centred at `(i + ½)·s` in source
//! coordinates, `s = in/out`; the triangle's radius is `max(s, 1)` source
//! pixels, so shrinking averages over the pixels it drops (no aliasing) and
//! enlarging is plain bilinear interpolation. Taps outside the image are
//! dropped and the rest renormalized, which clamps at the borders. The
//! horizontal pass writes f32 rows; the vertical pass rounds to bytes.

/// The taps of one axis: output `i` reads `weights[offsets[i]..offsets[i+1]]`
/// times the source pixels from `starts[i]` on.
struct Taps {
    starts: Vec<usize>,
    offsets: Vec<usize>,
    weights: Vec<f32>,
}

impl Taps {
    fn new(len_in: usize, len_out: usize) -> Taps {
        let scale = len_in as f64 / len_out as f64;
        let radius = scale.max(1.0);
        let mut taps = Taps {
            starts: Vec::with_capacity(len_out),
            offsets: vec![0],
            weights: Vec::new(),
        };
        for i in 0..len_out {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - radius).floor().max(0.0)) as usize;
            let hi = ((centre + radius).ceil() as usize).min(len_in);
            let mut ws: Vec<(usize, f64)> = (lo..hi)
                .map(|j| (j, 1.0 - ((j as f64 + 0.5 - centre).abs() / radius)))
                .filter(|&(_, w)| w > 0.0)
                .collect();
            if ws.is_empty() {
                // Cannot happen for a non-empty axis; the nearest pixel is safe.
                ws.push(((centre as usize).min(len_in - 1), 1.0));
            }
            let total: f64 = ws.iter().map(|&(_, w)| w).sum();
            taps.starts.push(ws[0].0);
            taps.weights
                .extend(ws.iter().map(|&(_, w)| (w / total) as f32));
            taps.offsets.push(taps.weights.len());
        }
        taps
    }

    fn of(&self, i: usize) -> (usize, &[f32]) {
        (
            self.starts[i],
            &self.weights[self.offsets[i]..self.offsets[i + 1]],
        )
    }
}

/// Resizes a row-major, channel-interleaved `width×height×channels` byte
/// image to `new_width×new_height`. All sizes must be at least 1.
pub(crate) fn resize_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<u8> {
    let c = channels;
    let h_taps = Taps::new(width, new_width);
    let v_taps = Taps::new(height, new_height);
    // Only the source rows some output row reads need the horizontal pass.
    let first = v_taps.starts.first().copied().unwrap_or(0);
    let last = (0..new_height)
        .map(|i| {
            let (s, w) = v_taps.of(i);
            s + w.len()
        })
        .max()
        .unwrap_or(0);
    let row_out = new_width * c;
    let mut tmp = vec![0.0f32; (last - first) * row_out];
    for (y, dst) in (first..last).zip(tmp.chunks_exact_mut(row_out)) {
        let row = &src[y * width * c..(y + 1) * width * c];
        match c {
            1 => horizontal::<1>(row, &h_taps, dst),
            3 => horizontal::<3>(row, &h_taps, dst),
            _ => horizontal_any(row, c, &h_taps, dst),
        }
    }
    let mut out = vec![0u8; new_height * row_out];
    let mut acc = vec![0.0f32; row_out];
    for (y, dst) in out.chunks_exact_mut(row_out).enumerate() {
        let (start, ws) = v_taps.of(y);
        acc.fill(0.0);
        for (k, &w) in ws.iter().enumerate() {
            let row = &tmp[(start + k - first) * row_out..][..row_out];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            // `as` saturates; +0.5 rounds the non-negative value.
            *d = (a.max(0.0) + 0.5) as u8;
        }
    }
    out
}

/// One row of the horizontal pass, for `C` channels known at compile time
/// (the common cases, ~3× faster than [`horizontal_any`]).
fn horizontal<const C: usize>(row: &[u8], taps: &Taps, dst: &mut [f32]) {
    for (x, out) in dst.chunks_exact_mut(C).enumerate() {
        let (start, ws) = taps.of(x);
        let pixels = &row[start * C..(start + ws.len()) * C];
        let mut acc = [0.0f32; C];
        for (w, px) in ws.iter().zip(pixels.chunks_exact(C)) {
            for (a, &p) in acc.iter_mut().zip(px) {
                *a += w * f32::from(p);
            }
        }
        out.copy_from_slice(&acc);
    }
}

fn horizontal_any(row: &[u8], c: usize, taps: &Taps, dst: &mut [f32]) {
    for (x, out) in dst.chunks_exact_mut(c).enumerate() {
        let (start, ws) = taps.of(x);
        for (ch, o) in out.iter_mut().enumerate() {
            *o = ws
                .iter()
                .enumerate()
                .map(|(k, w)| w * f32::from(row[(start + k) * c + ch]))
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_constant_and_mean() {
        let src: Vec<u8> = (0..12 * 9 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_u8(&src, 12, 9, 3, 12, 9), src);
        let flat = vec![77u8; 40 * 30];
        assert!(resize_u8(&flat, 40, 30, 1, 13, 7).iter().all(|&v| v == 77));
        assert!(resize_u8(&flat, 40, 30, 1, 91, 64).iter().all(|&v| v == 77));
        // Halving low-passes: alternating 0, 100 becomes 50 (43 and 57 at
        // the borders, where the triangle loses a tap).
        let stripes: Vec<u8> = (0..8 * 2)
            .map(|i| if i % 2 == 0 { 0 } else { 100 })
            .collect();
        let half = resize_u8(&stripes, 8, 2, 1, 4, 2);
        assert_eq!(half, [43, 50, 50, 57, 43, 50, 50, 57]);
        // Any channel count works.
        let four = resize_u8(&[10, 20, 30, 40, 10, 20, 30, 40], 2, 1, 4, 1, 1);
        assert_eq!(four, [10, 20, 30, 40]);
    }

    #[test]
    fn enlarging_interpolates_linearly() {
        // Two pixels 0 and 255 → four: ¼ and ¾ of the way are 64 and 191.
        let out = resize_u8(&[0, 255], 2, 1, 1, 4, 1);
        assert_eq!(out, [0, 64, 191, 255]);
    }

    #[test]
    fn agrees_with_the_image_crates_triangle_filter() {
        let img = image::RgbImage::from_fn(50, 37, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x * y) % 256) as u8])
        });
        for (w, h) in [(34, 25), (50, 37), (120, 90), (17, 60)] {
            let theirs = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
            let ours = resize_u8(img.as_raw(), 50, 37, 3, w as usize, h as usize);
            let worst = ours
                .iter()
                .zip(theirs.as_raw())
                .map(|(&a, &b)| (i16::from(a) - i16::from(b)).abs())
                .max();
            assert!(worst <= Some(2), "{w}×{h}: off by {worst:?}");
        }
    }
}
