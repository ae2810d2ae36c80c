//! The filter grid (layout, size, per-kernel normalization, colour) and the
//! training plots (written, decodable, with real content), on synthetic
//! weights and a synthetic history.
//!
//! Set `ALEXC_TRAIN_PNG_DIR=/some/dir` to keep the PNGs for a look: the
//! Gabor-like filter grid and the plots of the synthetic run are copied
//! there.

use std::collections::HashSet;
use std::path::Path;

use alexc_tensor::Tensor;
use alexc_train::filters::{filter_grid, write_filter_grid};
use alexc_train::metrics::{EpochRecord, History, StepRecord};
use alexc_train::plot::write_plots;
use alexc_train::TrainError;
use image::RgbImage;

fn keep(path: &Path, prefix: &str) {
    if let Some(dir) = std::env::var_os("ALEXC_TRAIN_PNG_DIR") {
        let name = path.file_name().expect("file name").to_string_lossy();
        std::fs::create_dir_all(&dir).expect("keep dir");
        std::fs::copy(path, Path::new(&dir).join(format!("{prefix}{name}"))).expect("copy");
    }
}

/// Pixel `(x, y)` of the tile of kernel `k` in a grid of `cols` columns of
/// `tile`-pixel tiles with 2 px gaps.
fn tile_pixel(img: &RgbImage, k: usize, cols: usize, tile: usize, x: usize, y: usize) -> [u8; 3] {
    let x0 = 2 + (k % cols) * (tile + 2);
    let y0 = 2 + (k / cols) * (tile + 2);
    img.get_pixel((x0 + x) as u32, (y0 + y) as u32).0
}

#[test]
fn grey_grid_layout_size_and_normalization() {
    // 32 kernels 1×5×5: kernel k holds k·0.01 + i·(k + 1)·1e-3 at position i,
    // except kernel 3, constant.
    let w = Tensor::from_fn(vec![32, 1, 5, 5], |idx| {
        let (k, i) = (idx[0], idx[2] * 5 + idx[3]);
        if k == 3 {
            0.7
        } else {
            k as f32 * 0.01 + i as f32 * (k + 1) as f32 * 1e-3
        }
    })
    .expect("weights");
    let img = filter_grid(&w).expect("grid");
    if let Some(dir) = std::env::var_os("ALEXC_TRAIN_PNG_DIR") {
        std::fs::create_dir_all(&dir).expect("keep dir");
        img.save(Path::new(&dir).join("grey-32.png")).expect("save");
    }
    // 8×4 tiles of 5·9 = 45 px, 2 px gaps and border.
    assert_eq!(img.dimensions(), (8 * 47 + 2, 4 * 47 + 2));
    for k in [0, 9, 31] {
        // Each kernel on its own scale: its first weight is its minimum, its
        // last its maximum, whatever the kernel's magnitude.
        assert_eq!(tile_pixel(&img, k, 8, 45, 0, 0), [0, 0, 0], "kernel {k}");
        assert_eq!(tile_pixel(&img, k, 8, 45, 44, 44), [255; 3], "kernel {k}");
        // Position 6 (row 1, column 1; pixels 9..18) is 6/24 of the way.
        assert_eq!(tile_pixel(&img, k, 8, 45, 12, 12), [64; 3], "kernel {k}");
        // Nearest-neighbour upscaling: a 9×9 block per weight.
        assert_eq!(
            tile_pixel(&img, k, 8, 45, 9, 0),
            tile_pixel(&img, k, 8, 45, 17, 8)
        );
        assert_ne!(
            tile_pixel(&img, k, 8, 45, 8, 0),
            tile_pixel(&img, k, 8, 45, 9, 0)
        );
    }
    assert_eq!(
        tile_pixel(&img, 3, 8, 45, 10, 30),
        [128; 3],
        "constant kernel"
    );
    // Gaps and border are white.
    assert_eq!(img.get_pixel(0, 0).0, [255; 3]);
    assert_eq!(img.get_pixel(47, 10).0, [255; 3]);
}

#[test]
fn colour_kernels_are_rgb_normalized_over_all_channels() {
    // 96 kernels 3×11×11: red ramps up with x, green is constant, blue 0,
    // scaled differently per kernel.
    let w = Tensor::from_fn(vec![96, 3, 11, 11], |idx| {
        let (k, c, x) = (idx[0], idx[1], idx[3]);
        let s = 1.0 + k as f32;
        match c {
            0 => x as f32 * 0.1 * s,
            1 => 0.4 * s,
            _ => 0.0,
        }
    })
    .expect("weights");
    let img = filter_grid(&w).expect("grid");
    // The paper's 12×8 layout; 11×11 kernels become 44 px tiles.
    assert_eq!(img.dimensions(), (12 * 46 + 2, 8 * 46 + 2));
    for k in [0, 50, 95] {
        // Min 0 (blue, red at x = 0), max 1.0·s (red at x = 10), green 0.4·s.
        assert_eq!(tile_pixel(&img, k, 12, 44, 0, 0), [0, 102, 0]);
        assert_eq!(tile_pixel(&img, k, 12, 44, 43, 43), [255, 102, 0]);
        assert_eq!(tile_pixel(&img, k, 12, 44, 8, 5), [51, 102, 0]);
    }
}

#[test]
fn other_channel_counts_show_the_channel_mean_in_grey() {
    // Two channels that cancel everywhere but at the first weight.
    let w = Tensor::from_fn(vec![2, 2, 3, 3], |idx| {
        let v = (idx[2] * 3 + idx[3]) as f32;
        if idx[1] == 0 {
            v
        } else if idx[2] + idx[3] == 0 {
            4.0
        } else {
            -v
        }
    })
    .expect("weights");
    let img = filter_grid(&w).expect("grid");
    // 2 kernels → 2×1; 3×3 kernels scaled by 15 to 45 px.
    assert_eq!(img.dimensions(), (2 * 47 + 2, 47 + 2));
    assert_eq!(tile_pixel(&img, 0, 2, 45, 0, 0), [255; 3]);
    assert_eq!(tile_pixel(&img, 0, 2, 45, 44, 44), [0; 3]);
    assert_eq!(tile_pixel(&img, 1, 2, 45, 30, 30), [0; 3]);
}

#[test]
fn bad_weights_are_errors() {
    let flat = Tensor::new(vec![4, 5, 5], vec![0.0; 100]).expect("tensor");
    let e = filter_grid(&flat).expect_err("3-D weights");
    assert!(matches!(e, TrainError::Filters(_)), "{e}");
    assert!(e.to_string().contains("[4, 5, 5]"), "{e}");
    let empty = Tensor::new(vec![0, 3, 5, 5], vec![]).expect("tensor");
    assert!(filter_grid(&empty).is_err());
    let mut nan = Tensor::new(vec![2, 1, 2, 2], vec![0.5; 8]).expect("tensor");
    nan.data_mut()[6] = f32::NAN;
    let e = filter_grid(&nan).expect_err("NaN");
    assert!(e.to_string().contains("kernel 1"), "{e}");
}

/// 96 colour Gabor-like kernels: oriented gratings under a Gaussian, in
/// several colours and frequencies, like a trained conv1 looks.
fn gabor_bank() -> Tensor<f32> {
    Tensor::from_fn(vec![96, 3, 11, 11], |idx| {
        let (k, c, y, x) = (idx[0], idx[1], idx[2] as f32 - 5.0, idx[3] as f32 - 5.0);
        let theta = (k % 8) as f32 * std::f32::consts::PI / 8.0;
        let freq = 0.4 + 0.25 * ((k / 8) % 3) as f32;
        let u = x * theta.cos() + y * theta.sin();
        let env = (-(x * x + y * y) / 18.0).exp();
        let colour = match (k / 24, c) {
            (0, _) => 1.0,                   // grey
            (1, 0) | (2, 1) | (3, 2) => 1.0, // red / green / blue
            (1, _) => -0.6,
            (2, _) => -0.4,
            _ => 0.2,
        };
        env * (freq * u).cos() * colour * (1.0 + k as f32 * 0.05)
    })
    .expect("weights")
}

#[test]
fn the_filter_grid_is_written_atomically_as_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("filters.png");
    let w = gabor_bank();
    write_filter_grid(&w, &path).expect("writes");
    let decoded = image::open(&path).expect("decodes").into_rgb8();
    assert_eq!(decoded, filter_grid(&w).expect("grid"));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["filters.png"], "no temporary file is left");
    keep(&path, "gabor-");

    let e = write_filter_grid(&w, &dir.path().join("missing/filters.png")).expect_err("no dir");
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
}

/// Three epochs of 300 steps each: a noisy, decaying loss with a spike at
/// the start, falling validation error.
fn synthetic_history(epochs: u64) -> History {
    let mut h = History::default();
    let mut noise = 12345u64;
    for step in 1..=300 * epochs {
        noise = noise
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (noise >> 33) as f32 / (1u64 << 31) as f32 - 0.5;
        let base = 0.3 + 2.0 * (-(step as f32) / 200.0).exp();
        let loss = if step == 3 {
            9.0
        } else {
            base * (1.0 + 0.6 * r)
        };
        h.steps.push(StepRecord {
            step,
            epoch: (step - 1) / 300,
            loss,
            lr: 0.01,
            images_per_second: 1000.0,
        });
    }
    for e in 0..epochs {
        let f = (e + 1) as f64;
        h.epochs.push(EpochRecord {
            epoch: e,
            step: (e + 1) * 300,
            train_loss: 0.3 + 1.2 / f,
            val_loss: Some(0.35 + 0.9 / f),
            top1_error: Some(0.08 + 0.3 / f),
            top5_error: Some(0.01 + 0.05 / f),
            lr: 0.01,
            seconds: 60.0,
        });
    }
    h
}

/// Distinct colours of an image, and whether any pixel is close to `rgb`.
fn colours(img: &RgbImage) -> HashSet<[u8; 3]> {
    img.pixels().map(|p| p.0).collect()
}

fn has_colour_near(img: &RgbImage, rgb: [u8; 3]) -> bool {
    img.pixels()
        .any(|p| p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 12))
}

#[test]
fn plots_are_written_with_curves_legend_and_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_plots(&synthetic_history(3), dir.path()).expect("plots");
    assert_eq!(
        written,
        vec![dir.path().join("loss.png"), dir.path().join("error.png")]
    );
    for path in &written {
        let img = image::open(path).expect("decodes").into_rgb8();
        assert_eq!(img.dimensions(), (960, 600));
        assert!(
            colours(&img).len() > 20,
            "{} is nearly blank",
            path.display()
        );
        // Text and axes: a good number of near-black pixels.
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(dark > 2000, "{}: {dark} dark pixels", path.display());
        keep(path, "");
    }
    let loss = image::open(&written[0]).expect("decodes").into_rgb8();
    for (what, rgb) in [
        ("smoothed", [31, 90, 180]),
        ("epoch mean", [230, 120, 20]),
        ("validation", [30, 150, 60]),
    ] {
        assert!(
            has_colour_near(&loss, rgb),
            "loss.png lacks the {what} curve"
        );
    }
    let error = image::open(&written[1]).expect("decodes").into_rgb8();
    assert!(has_colour_near(&error, [200, 40, 40]), "no top-1 curve");
    assert!(has_colour_near(&error, [40, 90, 200]), "no top-5 curve");
}

#[test]
fn sparse_histories_plot_what_there_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing recorded: nothing written, no error.
    assert!(write_plots(&History::default(), dir.path())
        .expect("empty")
        .is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    // One epoch, no steps logged.
    let mut one = synthetic_history(1);
    one.steps.clear();
    let sub = dir.path().join("one-epoch");
    let written = write_plots(&one, &sub).expect("one epoch");
    assert_eq!(written.len(), 2);
    for p in &written {
        image::open(p).expect("decodes");
        keep(p, "one-epoch-");
    }

    // Steps only, one of them NaN (a diverged step), no validation.
    let mut steps = synthetic_history(1);
    steps.epochs.clear();
    steps.steps[10].loss = f32::NAN;
    let sub = dir.path().join("steps");
    let written = write_plots(&steps, &sub).expect("steps only");
    assert_eq!(written, vec![sub.join("loss.png")]);

    // A single step.
    steps.steps.truncate(1);
    let written = write_plots(&steps, &sub).expect("one step");
    assert_eq!(written.len(), 1);

    // Epochs without validation: a loss plot only.
    let mut no_val = synthetic_history(2);
    for e in &mut no_val.epochs {
        (e.val_loss, e.top1_error, e.top5_error) = (None, None, None);
    }
    let sub = dir.path().join("no-val");
    assert_eq!(
        write_plots(&no_val, &sub).expect("no validation"),
        vec![sub.join("loss.png")]
    );
}
