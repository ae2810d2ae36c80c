//! The data pipeline end to end on files the tests write: IDX files (raw and
//! gzipped) and image folders (PNG and JPEG, one corrupt file), through the
//! loader with 0–3 worker threads, and resumed from a captured state. The
//! last test reads the real Fashion-MNIST when Debian's package is installed.

use std::path::Path;
use std::sync::Arc;

use alexc_data::{
    estimate_color_stats, find_idx_files, write_idx, Batch, DataError, Dataset, IdxDataset,
    ImageFolder, Loader, LoaderConfig, PcaLighting, Resize, Split, Transform, FASHION_MNIST_DIR,
};
use image::{Rgb, RgbImage};

const CLASSES: [&str; 3] = ["cat", "dog", "fish"];

/// The base colour of class `k`.
fn colour(k: usize) -> [u8; 3] {
    [[200, 40, 40], [40, 200, 40], [40, 40, 200]][k]
}

/// `root/{train,val}/{cat,dog,fish}/`: 5 training and 2 validation images
/// per class, alternating PNG and JPEG, of varying sizes, plus one file
/// that is not an image at all (`train/dog/broken.jpg`).
fn write_folder(root: &Path) {
    for (split, count) in [("train", 5), ("val", 2)] {
        for (k, class) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..count {
                let (w, h) = (40 + 8 * i as u32, 48 - 4 * i as u32);
                let base = colour(k);
                let img = RgbImage::from_fn(w, h, |x, y| {
                    let t = ((x + 2 * y) % 16) as u8;
                    Rgb(base.map(|b| b.saturating_add(t)))
                });
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                img.save(dir.join(format!("{i:02}.{ext}"))).expect("save");
            }
        }
    }
    std::fs::write(root.join("train/dog/broken.jpg"), b"this is not a JPEG").expect("write");
    std::fs::write(root.join("train/dog/notes.txt"), b"ignored").expect("write");
}

fn augmenting(size: usize) -> Transform {
    Transform::train(3, size, size)
        .with_pca(Some(PcaLighting::imagenet()))
        .with_normalization(vec![0.5, 0.5, 0.5], vec![0.25, 0.25, 0.25])
}

fn collect(loader: &mut Loader) -> Vec<Batch> {
    loader.epoch().map(|b| b.expect("batch")).collect()
}

#[test]
fn folders_list_classes_and_skip_the_corrupt_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let train = ImageFolder::open_split(tmp.path(), Split::Train, Transform::eval(3, 32, 32))
        .expect("train");
    let val =
        ImageFolder::open_split(tmp.path(), Split::Val, Transform::eval(3, 32, 32)).expect("val");
    assert_eq!(train.classes(), CLASSES);
    assert_eq!(val.classes(), CLASSES);
    // 15 images and the broken one; notes.txt is not an image.
    assert_eq!(train.len(), 16);
    assert_eq!(val.len(), 6);
    let broken = (0..train.len())
        .find(|&i| train.name_of(i).ends_with("broken.jpg"))
        .expect("broken listed");
    assert!(matches!(train.load(broken), Err(DataError::Decode { .. })));

    // The loader skips it, warns, and keeps batches full.
    let config = LoaderConfig::eval(4).with_workers(2);
    let mut loader = Loader::new(Arc::new(train.clone()), config).expect("loader");
    let batches = collect(&mut loader);
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, [4, 4, 4, 3]);
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, (0..16).filter(|&i| i != broken).collect::<Vec<_>>());
    // Labels follow the folders, and the pixels the class colour.
    for b in &batches {
        assert_eq!(b.images.shape()[1..], [3, 32, 32]);
        for (n, (&label, &index)) in b.labels.data().iter().zip(&b.indices).enumerate() {
            assert_eq!(label as usize, train.items()[index].1);
            let red = b.images.data()[n * 3 * 32 * 32];
            assert_eq!(red > 0.5, label == 0, "image {index}");
        }
    }
}

#[test]
fn folder_errors_are_clear() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let t = || Transform::eval(3, 32, 32);
    // An empty class folder.
    std::fs::create_dir_all(tmp.path().join("train/zebra")).expect("mkdir");
    let err = ImageFolder::open(tmp.path().join("train"), t()).expect_err("empty class");
    assert!(
        err.to_string().contains("zebra") && err.to_string().contains("no .jpg"),
        "{err}"
    );
    std::fs::remove_dir(tmp.path().join("train/zebra")).expect("rmdir");
    // A validation class that training does not have.
    std::fs::create_dir_all(tmp.path().join("val/yak")).expect("mkdir");
    std::fs::copy(
        tmp.path().join("val/cat/00.png"),
        tmp.path().join("val/yak/00.png"),
    )
    .expect("copy");
    let err = ImageFolder::open_split(tmp.path(), Split::Val, t()).expect_err("unknown class");
    assert!(
        matches!(err, DataError::UnknownClass { ref class, .. } if class == "yak"),
        "{err}"
    );
    // No class folders at all.
    let empty = tempfile::tempdir().expect("tempdir");
    let err = ImageFolder::open(empty.path(), t()).expect_err("no classes");
    assert!(matches!(err, DataError::NoClasses { .. }), "{err}");
    // A missing folder is an I/O error naming it.
    let err = ImageFolder::open(tmp.path().join("nope"), t()).expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn loader_is_deterministic_across_runs_and_thread_counts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let train =
        Arc::new(ImageFolder::open_split(tmp.path(), Split::Train, augmenting(24)).expect("train"));
    let run = |workers: usize, seed: u64| {
        let config = LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::train(4, seed).with_workers(workers)
        };
        let mut loader = Loader::new(train.clone(), config).expect("loader");
        let epochs: Vec<Vec<Batch>> = (0..3).map(|_| collect(&mut loader)).collect();
        assert_eq!(loader.state().epoch, 3);
        epochs
    };
    let reference = run(0, 7);
    // 15 good images, batches of 4, the last partial batch dropped.
    for epoch in &reference {
        assert_eq!(epoch.len(), 3);
        assert!(epoch.iter().all(|b| b.images.shape() == [4, 3, 24, 24]));
    }
    // Epochs are shuffled differently, and augmentation differs per epoch.
    assert_ne!(reference[0][0].indices, reference[1][0].indices);
    for workers in [0, 1, 2, 3] {
        assert_eq!(run(workers, 7), reference, "{workers} workers");
    }
    assert_ne!(run(2, 8)[0], reference[0]);
}

#[test]
fn resuming_from_a_captured_state_repeats_the_batches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let train =
        Arc::new(ImageFolder::open_split(tmp.path(), Split::Train, augmenting(24)).expect("train"));
    let config = LoaderConfig::train(3, 99);
    let mut full = Loader::new(train.clone(), config.clone()).expect("loader");
    let uninterrupted: Vec<Batch> = (0..2).flat_map(|_| collect(&mut full)).collect();
    assert_eq!(uninterrupted.len(), 10);

    for stop_after in [1, 4, 5, 7] {
        // A run that stops (e.g. is killed) after `stop_after` batches and
        // checkpoints the state of the last one.
        let mut first = Loader::new(train.clone(), config.clone()).expect("loader");
        let mut taken = Vec::new();
        'outer: for _ in 0..2 {
            for batch in first.epoch() {
                taken.push(batch.expect("batch"));
                if taken.len() == stop_after {
                    break 'outer;
                }
            }
        }
        let state = taken.last().expect("one batch").state;
        assert_eq!(first.state(), state);
        // A new process, with another thread count.
        let mut resumed =
            Loader::new(train.clone(), config.clone().with_workers(1)).expect("loader");
        resumed.restore(state).expect("restore");
        let mut rest = Vec::new();
        while resumed.state().epoch < 2 {
            rest.extend(collect(&mut resumed));
        }
        let mut all = taken;
        all.extend(rest);
        assert_eq!(all, uninterrupted, "stopped after {stop_after}");
    }

    let mut loader = Loader::new(train.clone(), config).expect("loader");
    let bad = alexc_data::LoaderState {
        seed: 1,
        epoch: 0,
        position: 17,
    };
    assert!(matches!(loader.restore(bad), Err(DataError::State(_))));
}

#[test]
fn evaluation_keeps_the_last_partial_batch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let val = Arc::new(
        ImageFolder::open_split(tmp.path(), Split::Val, Transform::eval(3, 24, 24)).expect("val"),
    );
    let mut loader = Loader::new(val.clone(), LoaderConfig::eval(4)).expect("loader");
    let sizes: Vec<usize> = collect(&mut loader).iter().map(Batch::len).collect();
    assert_eq!(sizes, [4, 2]);
    assert_eq!(loader.batches_per_epoch(), 2);
    let mut train_like = Loader::new(val, LoaderConfig::train(4, 0)).expect("loader");
    assert_eq!(collect(&mut train_like).len(), 1);
    // Ten crops of one validation image.
    let (views, label) = loader.dataset().ten_crop(3).expect("ten crop");
    assert_eq!(views.len(), 10);
    assert_eq!(label, 1);
    assert!(views.iter().all(|v| v.shape() == [3, 24, 24]));
}

#[test]
fn colour_statistics_of_a_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_folder(tmp.path());
    let train = ImageFolder::open_split(tmp.path(), Split::Train, Transform::eval(3, 32, 32))
        .expect("train");
    let stats = estimate_color_stats(&train, 100).expect("stats");
    assert_eq!(stats.images, 15); // the broken file is skipped
                                  // Each channel is 200 in one class and 40 in two, plus 0..15 of texture.
    let expected = (200.0 + 40.0 + 40.0) / 3.0 / 255.0 + 7.5 / 255.0;
    for m in &stats.mean {
        assert!((m - expected).abs() < 0.02, "{m} vs {expected}");
    }
    let pca = stats.pca.expect("pca");
    assert!(pca.eigenvalues[0] >= pca.eigenvalues[1] && pca.eigenvalues[1] >= pca.eigenvalues[2]);
    // The three class colours span a plane orthogonal to the grey axis, so
    // grey is (nearly) the least-varying direction.
    let grey = 1.0 / 3f32.sqrt();
    let along: f32 = pca.eigenvectors[2].iter().map(|x| x * grey).sum();
    assert!(along.abs() > 0.95, "{:?}", pca.eigenvectors);
    // The estimate feeds straight into a training transform.
    augmenting(32)
        .with_pca(Some(pca))
        .with_normalization(stats.mean, stats.std)
        .validate()
        .expect("valid");
}

#[test]
fn idx_datasets_from_standard_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (n, h, w) = (10, 6, 5);
    let images: Vec<u8> = (0..n * h * w).map(|i| (i * 3 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    write_idx(
        tmp.path().join("train-images-idx3-ubyte.gz"),
        &[n, h, w],
        &images,
        true,
    )
    .expect("w");
    write_idx(
        tmp.path().join("train-labels-idx1-ubyte"),
        &[n],
        &labels,
        false,
    )
    .expect("w");
    let (ip, lp) = find_idx_files(tmp.path(), Split::Train).expect("find");
    assert!(ip.ends_with("train-images-idx3-ubyte.gz") && lp.ends_with("train-labels-idx1-ubyte"));
    let err = find_idx_files(tmp.path(), Split::Val).expect_err("no t10k");
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");

    let t = Transform::eval(1, h, w).with_resize(Resize::None);
    let ds = IdxDataset::open_split(tmp.path(), Split::Train, t).expect("open");
    assert_eq!(ds.len(), n);
    assert_eq!(ds.classes(), ["0", "1", "2", "3"]);
    let mut rng = alexc_data::sample_rng(0, 0, 0);
    let s = ds.get(7, &mut rng).expect("get");
    assert_eq!(s.label, 3);
    let want: Vec<f32> = images[7 * h * w..8 * h * w]
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect();
    assert_eq!(s.image.data(), &want[..]);
    assert!(ds.clone().with_class_names(vec!["a".into(); 3]).is_err());

    // Grayscale into a 3-channel 224×224 model: resized and replicated.
    let big = ds
        .with_transform(Transform::train(3, 224, 224))
        .expect("transform");
    let mut loader = Loader::new(Arc::new(big), LoaderConfig::train(4, 1)).expect("loader");
    let batches = collect(&mut loader);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].images.shape(), &[4, 3, 224, 224]);

    // Mismatched counts and ranks.
    write_idx(
        tmp.path().join("t10k-images-idx3-ubyte"),
        &[3, h, w],
        &images[..3 * h * w],
        false,
    )
    .expect("w");
    write_idx(
        tmp.path().join("t10k-labels-idx1-ubyte"),
        &[2],
        &labels[..2],
        false,
    )
    .expect("w");
    let err = IdxDataset::open_split(tmp.path(), Split::Val, Transform::eval(1, h, w))
        .expect_err("count");
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = IdxDataset::open(&lp, &lp, Transform::eval(1, h, w)).expect_err("rank");
    assert!(
        matches!(
            err,
            DataError::IdxRank {
                expected: 3,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fashion_mnist_when_installed() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        println!("skipped: Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; apt-get install dataset-fashion-mnist)");
        return;
    }
    let t = Transform::eval(1, 28, 28).with_resize(Resize::None);
    let train = IdxDataset::fashion_mnist(Split::Train, t.clone()).expect("train");
    let test = IdxDataset::fashion_mnist(Split::Val, t).expect("test");
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.image_size(), (28, 28));
    assert_eq!(train.classes()[9], "Ankle boot");
    for (ds, per_class) in [(&train, 6000), (&test, 1000)] {
        let mut counts = [0usize; 10];
        for &l in ds.labels() {
            counts[usize::try_from(l).expect("a class index")] += 1;
        }
        assert_eq!(counts, [per_class; 10]);
    }
    // The statistics alexnet-small.ron normalizes with.
    let stats = estimate_color_stats(&train, train.len()).expect("stats");
    assert!((stats.mean[0] - 0.286).abs() < 0.001, "{:?}", stats.mean);
    assert!((stats.std[0] - 0.353).abs() < 0.001, "{:?}", stats.std);
    println!("Fashion-MNIST: mean {:?}, std {:?}", stats.mean, stats.std);

    // Into alexnet.ron's 3×224×224 input.
    let big = test
        .with_transform(
            Transform::eval(3, 224, 224).with_normalization(vec![0.286; 3], vec![0.353; 3]),
        )
        .expect("transform");
    let mut loader = Loader::new(Arc::new(big), LoaderConfig::eval(8)).expect("loader");
    let batch = loader.epoch().next().expect("one batch").expect("batch");
    assert_eq!(batch.images.shape(), &[8, 3, 224, 224]);
    assert_eq!(batch.labels.data()[..3], [9, 2, 1]);
}

/// A data set whose image 3 makes the "decoder" panic and image 5 fail.
#[derive(Debug)]
struct Fragile(Transform);

impl Dataset for Fragile {
    fn len(&self) -> usize {
        10
    }
    fn classes(&self) -> &[String] {
        &[]
    }
    fn transform(&self) -> &Transform {
        &self.0
    }
    fn load(&self, index: usize) -> Result<(alexc_data::RawImage, i64), DataError> {
        match index {
            3 => panic!("decoder bug on image 3"),
            5 => Err(DataError::Empty),
            _ => Ok((
                alexc_data::RawImage::Gray(image::GrayImage::from_pixel(
                    4,
                    4,
                    image::Luma([index as u8]),
                )),
                index as i64,
            )),
        }
    }
    fn name_of(&self, index: usize) -> String {
        format!("fragile[{index}]")
    }
}

#[test]
fn failing_and_panicking_images_are_skipped_with_any_thread_count() {
    for workers in [0, 1, 2] {
        let ds = Arc::new(Fragile(Transform::eval(1, 4, 4)));
        let mut loader =
            Loader::new(ds, LoaderConfig::eval(3).with_workers(workers)).expect("loader");
        let batches = collect(&mut loader);
        let indices: Vec<Vec<usize>> = batches.iter().map(|b| b.indices.clone()).collect();
        assert_eq!(
            indices,
            [vec![0, 1, 2], vec![4, 6, 7], vec![8, 9]],
            "{workers} workers"
        );
        assert_eq!(batches[1].labels.data(), &[4, 6, 7]);
    }
}
