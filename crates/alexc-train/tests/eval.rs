//! `evaluate` against a direct computation: a tiny model (1×8×8 input, one
//! convolution, a linear layer, 3 classes) on the kernel IR evaluator, and
//! seven 10×10 IDX images (the centre crop and the ten views are 8×8).
//!
//! The reference runs each view alone (in the last row of an otherwise zero
//! batch, so it also checks that evaluate's batching and zero padding do not
//! leak between rows), takes the softmax in the test, and averages by hand.
//! Lowered kernels may sum in another order for another row, so losses are
//! compared to 1e-6; error counts exactly.

use std::path::Path;
use std::sync::Arc;

use alexc_data::{sample_rng, Dataset, IdxDataset, Resize, Transform};
use alexc_runtime::{EvalBackend, Options, Runtime};
use alexc_tensor::Tensor;
use alexc_train::eval::{evaluate, EvalResult, Views};
use alexc_train::TrainError;
use indicatif::ProgressBar;

const MODEL: &str = r#"
Model(
    name: "tiny",
    inputs: [Input(name: "image", shape: ["N", 1, 8, 8])],
    init: (weight: Normal(mean: 0.0, std: 0.5), bias: Constant(0.1)),
    layers: [
        Conv2d(name: "conv1", in_channels: 1, out_channels: 2, kernel: 3, padding: 1),
        Relu(name: "relu1"),
        Flatten(name: "flat"),
        Linear(name: "fc", in_features: 128, out_features: 3),
    ],
)
"#;

const IMAGES: usize = 7;
const SIDE: usize = 10;

fn runtime(batch: usize, seed: u64, train: bool) -> Runtime {
    let model = alexc_frontend::parse(MODEL, "tiny.ron", batch).expect("model parses");
    let options = Options {
        train,
        ..Options::default()
    };
    let mut rt = Runtime::new(&model, &options, &EvalBackend).expect("compiles");
    rt.init_state(seed, Path::new(".")).expect("initializes");
    rt
}

/// Deterministic pixels with structure (so the corner crops differ).
fn pixels() -> Vec<u8> {
    (0..IMAGES * SIDE * SIDE)
        .map(|i| {
            let (img, y, x) = (i / (SIDE * SIDE), (i / SIDE) % SIDE, i % SIDE);
            ((x * 23 + y * y * 7 + img * 41 + (x * y * img) % 13) % 256) as u8
        })
        .collect()
}

/// Writes the IDX files and opens them with the `crop`×`crop` evaluation
/// transform and `classes` class names.
fn dataset(dir: &Path, labels: &[u8], crop: usize, classes: usize) -> Arc<dyn Dataset> {
    let (images, label_file) = (dir.join("images.idx"), dir.join("labels.idx"));
    alexc_data::write_idx(&images, &[IMAGES, SIDE, SIDE], &pixels(), false).expect("images");
    alexc_data::write_idx(&label_file, &[IMAGES], labels, true).expect("labels");
    let transform = Transform::eval(1, crop, crop).with_resize(Resize::None);
    let names = (0..classes).map(|k| format!("class {k}")).collect();
    let data = IdxDataset::open(&images, &label_file, transform)
        .expect("opens")
        .with_class_names(names)
        .expect("class names");
    Arc::new(data)
}

fn softmax(z: &[f32]) -> Vec<f64> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The softmax of one `[1, 8, 8]` view, run in the last row of a zero batch.
fn view_probs(rt: &mut Runtime, view: &Tensor<f32>) -> Vec<f64> {
    let shape = rt.image_shape().expect("shape");
    let n = shape[0];
    let mut data = vec![0.0; shape.iter().product()];
    let len = view.len();
    data[(n - 1) * len..].copy_from_slice(view.data());
    let logits = rt
        .infer(&Tensor::new(shape, data).expect("batch"))
        .expect("infers");
    let c = rt.classes();
    softmax(&logits.data()[(n - 1) * c..n * c])
}

fn views_of(data: &dyn Dataset, index: usize, views: Views) -> (Vec<Tensor<f32>>, i64) {
    match views {
        Views::Center => {
            let s = data.get(index, &mut sample_rng(0, 0, index)).expect("get");
            (vec![s.image], s.label)
        }
        Views::TenCrop => data.ten_crop(index).expect("ten crop"),
    }
}

/// The averaged probabilities of every image, computed view by view.
fn reference_probs(models: &mut [&mut Runtime], data: &dyn Dataset, views: Views) -> Vec<Vec<f64>> {
    (0..data.len())
        .map(|i| {
            let (crops, _) = views_of(data, i, views);
            let mut sum = [0.0; 3];
            for rt in models.iter_mut() {
                for v in &crops {
                    for (s, p) in sum.iter_mut().zip(view_probs(rt, v)) {
                        *s += p;
                    }
                }
            }
            let n = (crops.len() * models.len()) as f64;
            sum.iter().map(|s| s / n).collect()
        })
        .collect()
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |best, j| if p[j] > p[best] { j } else { best })
}

/// Loss and top-1 error of `probs` against `labels`.
fn reference_result(probs: &[Vec<f64>], labels: &[u8]) -> EvalResult {
    let n = probs.len() as f64;
    let loss = probs
        .iter()
        .zip(labels)
        .map(|(p, &l)| -p[l as usize].ln())
        .sum::<f64>()
        / n;
    let wrong = probs
        .iter()
        .zip(labels)
        .filter(|(p, &l)| argmax(p) != l as usize)
        .count();
    EvalResult {
        images: probs.len(),
        loss,
        top1_error: wrong as f64 / n,
        top5_error: 0.0,
    }
}

fn assert_close(got: &EvalResult, want: &EvalResult) {
    assert_eq!(got.images, want.images);
    assert!(
        (got.loss - want.loss).abs() < 1e-6,
        "loss {} vs {}",
        got.loss,
        want.loss
    );
    assert_eq!(got.top1_error, want.top1_error);
    assert_eq!(got.top5_error, want.top5_error);
}

/// Labels such that the first four images are predicted right and the last
/// three wrong, so the expected top-1 error is exactly 3/7.
fn labels_with_three_errors(probs: &[Vec<f64>]) -> Vec<u8> {
    probs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pred = argmax(p) as u8;
            if i < 4 {
                pred
            } else {
                (pred + 1) % 3
            }
        })
        .collect()
}

#[test]
fn centre_crop_matches_direct_inference_with_a_partial_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rt = runtime(3, 1, false);
    // 7 images in batches of 3: the last batch has one image and two pads.
    let probe = dataset(dir.path(), &[0; IMAGES], 8, 3);
    let probs = reference_probs(&mut [&mut rt], &*probe, Views::Center);
    let labels = labels_with_three_errors(&probs);
    let data = dataset(dir.path(), &labels, 8, 3);

    let bar = ProgressBar::hidden();
    let got = evaluate(&mut [&mut rt], data, Views::Center, Some(&bar)).expect("evaluates");
    let want = reference_result(&probs, &labels);
    assert_eq!(want.top1_error, 3.0 / 7.0);
    assert_close(&got, &want);
    assert_eq!(bar.position(), IMAGES as u64);
    assert_eq!(bar.length(), Some(IMAGES as u64));
}

#[test]
fn ten_crop_averages_the_softmax_over_the_ten_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Batch 4: the ten views of an image straddle batches.
    let mut rt = runtime(4, 2, false);
    let probe = dataset(dir.path(), &[0; IMAGES], 8, 3);
    let probs = reference_probs(&mut [&mut rt], &*probe, Views::TenCrop);
    let labels = labels_with_three_errors(&probs);
    let data = dataset(dir.path(), &labels, 8, 3);

    let got = evaluate(&mut [&mut rt], data.clone(), Views::TenCrop, None).expect("evaluates");
    assert_close(&got, &reference_result(&probs, &labels));
    // The views are really different images: the centre crop alone differs.
    let centre = evaluate(&mut [&mut rt], data, Views::Center, None).expect("evaluates");
    assert!((centre.loss - got.loss).abs() > 1e-6);
}

#[test]
fn an_ensemble_averages_the_models_softmax() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = (runtime(2, 3, false), runtime(2, 4, false));
    let probe = dataset(dir.path(), &[0; IMAGES], 8, 3);
    let probs = reference_probs(&mut [&mut a, &mut b], &*probe, Views::Center);
    let labels = labels_with_three_errors(&probs);
    let data = dataset(dir.path(), &labels, 8, 3);

    let both =
        evaluate(&mut [&mut a, &mut b], data.clone(), Views::Center, None).expect("evaluates");
    assert_close(&both, &reference_result(&probs, &labels));
    let alone = evaluate(&mut [&mut a], data, Views::Center, None).expect("evaluates");
    assert!((alone.loss - both.loss).abs() > 1e-6, "b changed nothing");

    // Ten views of two models: 20 softmax vectors per image.
    let probe = dataset(dir.path(), &labels, 8, 3);
    let probs = reference_probs(&mut [&mut a, &mut b], &*probe, Views::TenCrop);
    let got = evaluate(&mut [&mut a, &mut b], probe, Views::TenCrop, None).expect("evaluates");
    assert_close(&got, &reference_result(&probs, &labels));
}

fn mismatch(result: Result<EvalResult, TrainError>, model: usize, needle: &str) {
    match result {
        Err(TrainError::EvalMismatch { model: m, message }) => {
            assert_eq!(m, model, "{message}");
            assert!(message.contains(needle), "`{message}` lacks `{needle}`");
        }
        other => panic!("expected a mismatch naming `{needle}`, got {other:?}"),
    }
}

#[test]
fn mismatched_models_and_data_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = [0, 1, 2, 0, 1, 2, 0];
    let mut rt = runtime(2, 1, false);

    let big = dataset(dir.path(), &labels, 10, 3);
    let r = evaluate(&mut [&mut rt], big, Views::Center, None);
    mismatch(r, 0, "1×8×8 images but the data set gives 1×10×10");

    let four = dataset(dir.path(), &labels, 8, 4);
    let r = evaluate(&mut [&mut rt], four, Views::Center, None);
    mismatch(r, 0, "3 classes but the data set has 4");

    let data = dataset(dir.path(), &labels, 8, 3);
    let mut other = runtime(3, 1, false);
    let r = evaluate(
        &mut [&mut rt, &mut other],
        data.clone(),
        Views::Center,
        None,
    );
    mismatch(r, 1, "batches of 3");

    let mut training = runtime(2, 1, true);
    let r = evaluate(&mut [&mut training], data.clone(), Views::Center, None);
    mismatch(r, 0, "compiled for training");

    let r = evaluate(&mut [], data, Views::Center, None);
    assert!(matches!(r, Err(TrainError::Config(_))), "{r:?}");
}

/// The first `len` images of a data set.
#[derive(Debug)]
struct Head(Arc<dyn Dataset>, usize);

impl Dataset for Head {
    fn len(&self) -> usize {
        self.1.min(self.0.len())
    }
    fn classes(&self) -> &[String] {
        self.0.classes()
    }
    fn transform(&self) -> &Transform {
        self.0.transform()
    }
    fn load(&self, index: usize) -> Result<(alexc_data::RawImage, i64), alexc_data::DataError> {
        self.0.load(index)
    }
    fn name_of(&self, index: usize) -> String {
        self.0.name_of(index)
    }
}

/// Real data, real model shape: an untrained alexnet-small on 300
/// Fashion-MNIST test images, centre and ten views, on Cranelift. Ignored
/// because it needs `/usr/share/datasets/fashion-mnist` (Debian's
/// `dataset-fashion-mnist`); run with `--ignored`.
#[test]
#[ignore = "needs the Fashion-MNIST files"]
fn fashion_mnist_smoke() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/alexnet-small.ron");
    let model = alexc_frontend::load(&path, 32).expect("model");
    let backend = alexc_codegen_cranelift::CraneliftBackend;
    let mut rt = Runtime::new(&model, &Options::default(), &backend).expect("compiles");
    rt.init_state(1, model.base_dir()).expect("init");
    let transform = Transform::eval(1, 28, 28).with_normalization(vec![0.286], vec![0.353]);
    let test = IdxDataset::fashion_mnist(alexc_data::Split::Val, transform).expect("data");
    let data: Arc<dyn Dataset> = Arc::new(Head(Arc::new(test), 300));
    for views in [Views::Center, Views::TenCrop] {
        let start = std::time::Instant::now();
        let r = evaluate(&mut [&mut rt], data.clone(), views, None).expect("evaluates");
        eprintln!("{views:?}: {r:?} in {:.1?}", start.elapsed());
        assert_eq!(r.images, 300);
        // Untrained: about chance (90% top-1, 50% top-5 error).
        assert!(r.top1_error > 0.6 && r.top5_error > 0.2, "{r:?}");
        assert!((r.loss - 10f64.ln()).abs() < 1.0, "{r:?}");
    }
}
