//! A short training run's loss falls: on synthetic data always, and on
//! Fashion-MNIST with `alexnet-small` when the data set is installed.

mod common;

use std::path::Path;
use std::sync::Arc;

use alexc_codegen_cranelift::CraneliftBackend;
use alexc_data::{Dataset, IdxDataset, Resize, Split, Transform, FASHION_MNIST_DIR};
use alexc_train::{Control, Outcome, Schedule, Subset, TrainConfig, Trainer};
use common::*;

#[test]
fn loss_falls_and_validation_error_drops_on_synthetic_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let model = load_model(&write_model(dir.path(), "")?)?;
    write_data(dir.path(), 128, 64)?;
    let (train, val) = datasets(dir.path())?;
    let config = TrainConfig {
        epochs: 4,
        lr: 0.05,
        schedule: Schedule::Constant,
        ..TrainConfig::default()
    };
    let run = dir.path().join("run");
    let mut t =
        Trainer::new(&model, &CraneliftBackend, train, Some(val), config)?.with_run_dir(&run);
    let epochs = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = epochs.clone();
    t.on_epoch(move |_| {
        seen.set(seen.get() + 1);
        Control::Continue
    });
    let summary = t.run()?;
    assert_eq!(summary.outcome, Outcome::Finished);
    assert_eq!(epochs.get(), 4);
    let h = t.history();
    let (first, last) = (h.epochs[0].train_loss, h.epochs[3].train_loss);
    assert!(last < 0.6 * first, "training loss {first} → {last}");
    let top1 = h.epochs[3].top1_error.ok_or("no validation")?;
    assert!(top1 < 0.25, "validation top-1 error {top1}");
    for name in [
        "metrics.csv",
        "metrics.json",
        "steps.csv",
        "last.safetensors",
        "checkpoint-epoch-4.safetensors",
        "filters.png",
    ] {
        assert!(run.join(name).is_file(), "{name} is missing");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv"))?;
    assert_eq!(csv.lines().count(), 5, "{csv}");
    Ok(())
}

#[test]
fn loss_falls_on_fashion_mnist_when_installed() -> TestResult {
    if !Path::new(FASHION_MNIST_DIR)
        .join("train-labels-idx1-ubyte.gz")
        .is_file()
    {
        eprintln!(
            "SKIPPED: Fashion-MNIST is not installed at {FASHION_MNIST_DIR} \
             (apt-get install dataset-fashion-mnist)"
        );
        return Ok(());
    }
    let model = alexc_frontend::load(Path::new("../../models/alexnet-small.ron"), 32)
        .map_err(|e| format!("{e:?}"))?;
    let t = Transform::train(1, 28, 28)
        .with_resize(Resize::None)
        .with_normalization(vec![0.286], vec![0.353]);
    let train: Arc<dyn Dataset> = Arc::new(IdxDataset::fashion_mnist(Split::Train, t)?);
    let config = TrainConfig {
        epochs: 1,
        lr: 0.05,
        schedule: Schedule::Constant,
        max_steps: Some(80),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(
        &model,
        &CraneliftBackend,
        Subset::limit(train, Some(2560)),
        None,
        config,
    )?;
    trainer.run()?;
    let losses: Vec<f32> = trainer.history().steps.iter().map(|s| s.loss).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    let (head, tail) = (mean(&losses[..10]), mean(&losses[70..]));
    eprintln!("Fashion-MNIST, alexnet-small: mean loss of steps 1-10 {head:.3}, 71-80 {tail:.3}");
    assert!(tail < head * 0.85, "loss {head} → {tail}");
    Ok(())
}
