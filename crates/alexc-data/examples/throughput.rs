//! Measures how many images per second the pipeline delivers.
//!
//! `cargo run --release -p alexc-data --example throughput [images]`
//!
//! 1. ImageNet-like: writes `images` (default 256) 500×375 JPEGs (ImageNet's
//!    typical size) to a temporary folder, then loads them for alexnet.ron's
//!    3×224×224 input with the full training augmentation (resize to 256,
//!    random crop, flip, PCA lighting, normalization), with 1 and 2 workers.
//! 2. Fashion-MNIST, if Debian's `dataset-fashion-mnist` is installed: one
//!    epoch for alexnet-small.ron (1×28×28, as-is), and 2,000 images resized
//!    and replicated for alexnet.ron (3×224×224).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use alexc_data::{
    Dataset, IdxDataset, ImageFolder, Loader, LoaderConfig, PcaLighting, Resize, Split, Transform,
    FASHION_MNIST_DIR,
};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

fn main() -> anyhow::Result<()> {
    let images: usize = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    write_jpegs(tmp.path(), images)?;
    let transform = Transform::train(3, 224, 224)
        .with_pca(Some(PcaLighting::imagenet()))
        .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    let folder = Arc::new(ImageFolder::open(tmp.path(), transform)?);
    for workers in [0, 1, 2] {
        measure(
            &format!("JPEG 500×375 → 3×224×224, {workers} workers"),
            folder.clone(),
            32,
            workers,
            1,
        )?;
    }

    if Path::new(FASHION_MNIST_DIR).is_dir() {
        let small = Transform::train(1, 28, 28)
            .with_resize(Resize::None)
            .with_flip(false)
            .with_normalization(vec![0.286], vec![0.353]);
        let train = IdxDataset::fashion_mnist(Split::Train, small)?;
        let train = Arc::new(train);
        for workers in [0, 1, 2] {
            measure(
                &format!("Fashion-MNIST → 1×28×28, {workers} workers"),
                train.clone(),
                128,
                workers,
                1,
            )?;
        }
        let big = IdxDataset::fashion_mnist(Split::Val, Transform::train(3, 224, 224))?;
        let big = Arc::new(big);
        for workers in [1, 2] {
            measure(
                &format!("Fashion-MNIST → 3×224×224, {workers} workers"),
                big.clone(),
                32,
                workers,
                2000,
            )?;
        }
    } else {
        println!("skipped Fashion-MNIST: not installed ({FASHION_MNIST_DIR})");
    }
    Ok(())
}

/// Smooth colour gradients with some texture, so JPEG sizes are realistic.
fn write_jpegs(dir: &Path, count: usize) -> anyhow::Result<()> {
    let class = dir.join("class");
    std::fs::create_dir_all(&class)?;
    for i in 0..count {
        let img = RgbImage::from_fn(500, 375, |x, y| {
            let n = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ i as u32) % 23;
            Rgb([
                ((x / 2 + i as u32) % 256) as u8,
                ((y * 2 / 3) % 256) as u8,
                ((x + y) / 4 % 200 + n) as u8,
            ])
        });
        let file = std::fs::File::create(class.join(format!("{i:05}.jpg")))?;
        JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90).encode_image(&img)?;
    }
    Ok(())
}

/// Loads `limit` batches' worth of images (all if `limit` is 1) and prints
/// the rate.
fn measure(
    what: &str,
    dataset: Arc<dyn Dataset>,
    batch: usize,
    workers: usize,
    limit: usize,
) -> anyhow::Result<()> {
    let config = LoaderConfig::train(batch, 1).with_workers(workers);
    let mut loader = Loader::new(dataset, config)?;
    let want = if limit > 1 { limit } else { usize::MAX };
    let start = Instant::now();
    let mut seen = 0;
    for b in loader.epoch() {
        seen += b?.len();
        if seen >= want {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what}: {seen} images in {secs:.2} s = {:.0} img/s",
        seen as f64 / secs
    );
    Ok(())
}
