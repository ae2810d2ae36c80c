//! Resuming from a checkpoint continues bit-exactly, from an epoch boundary
//! and from the middle of an epoch (the stop flag, as Ctrl-C sets it), and
//! refuses a checkpoint of another model file.

mod common;

use std::path::Path;

use alexc_codegen_cranelift::CraneliftBackend;
use alexc_train::{Control, Outcome, TrainConfig, TrainError, Trainer};
use common::*;

fn config(epochs: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        lr: 0.05,
        seed: 11,
        workers: 2,
        ..TrainConfig::default()
    }
}

fn trainer(model: &Path, data: &Path, epochs: u64) -> Result<Trainer, Box<dyn std::error::Error>> {
    let model = load_model(model)?;
    let (train, val) = datasets(data)?;
    Ok(Trainer::new(
        &model,
        &CraneliftBackend,
        train,
        Some(val),
        config(epochs),
    )?)
}

/// Every step's loss, bit for bit.
fn losses(t: &Trainer) -> Vec<u32> {
    t.history().steps.iter().map(|s| s.loss.to_bits()).collect()
}

#[test]
fn resume_is_bit_exact_at_epoch_boundaries_and_mid_epoch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let model = write_model(dir.path(), "")?;
    write_data(dir.path(), 64, 24)?; // 8 steps per epoch

    // Two epochs straight.
    let mut straight = trainer(&model, dir.path(), 2)?.with_run_dir(dir.path().join("a"));
    assert_eq!(straight.run()?.outcome, Outcome::Finished);
    assert_eq!(straight.step(), 16);
    let expected = losses(&straight);
    let expected_state = straight.runtime().state();

    // One epoch, then a new process (a new trainer) resumes for the second.
    let run_b = dir.path().join("b");
    let mut first = trainer(&model, dir.path(), 1)?.with_run_dir(&run_b);
    first.run()?;
    assert!(run_b.join("checkpoint-epoch-1.safetensors").is_file());
    let mut second = trainer(&model, dir.path(), 2)?.with_run_dir(&run_b);
    second.resume(&run_b.join("last.safetensors"))?;
    assert_eq!(second.run()?.outcome, Outcome::Finished);
    assert_eq!(losses(&second), expected, "epoch-boundary resume diverged");
    assert_eq!(second.runtime().state(), expected_state);
    assert_eq!(second.history().epochs, {
        // Everything but the wall-clock time must match.
        let mut e = straight.history().epochs.clone();
        for (a, b) in e.iter_mut().zip(&second.history().epochs) {
            a.seconds = b.seconds;
        }
        e
    });

    // Stopped by the flag at step 5 (mid-epoch 1) and at step 8 (after the
    // last batch of epoch 1, before its end was processed), then resumed.
    for stop_at in [5u64, 8, 13] {
        let run_c = dir.path().join(format!("c{stop_at}"));
        let mut stopped = trainer(&model, dir.path(), 2)?.with_run_dir(&run_c);
        let flag = stopped.stop_flag();
        stopped.on_step(move |r| {
            if r.step == stop_at {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Control::Continue
        });
        let summary = stopped.run()?;
        assert_eq!(summary.outcome, Outcome::Stopped);
        assert_eq!(summary.steps, stop_at);
        let mut resumed = trainer(&model, dir.path(), 2)?.with_run_dir(&run_c);
        resumed.resume(&run_c.join("last.safetensors"))?;
        resumed.run()?;
        assert_eq!(
            losses(&resumed),
            expected,
            "resume after step {stop_at} diverged"
        );
        assert_eq!(resumed.runtime().state(), expected_state);
        assert_eq!(resumed.history().epochs.len(), 2);
    }
    Ok(())
}

#[test]
fn step_limit_stops_with_a_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let model = write_model(dir.path(), "")?;
    write_data(dir.path(), 64, 16)?;
    let run = dir.path().join("run");
    let mut t = trainer(&model, dir.path(), 3)?.with_run_dir(&run);
    t.set_limits(3, Some(3));
    let summary = t.run()?;
    assert_eq!(summary.outcome, Outcome::StepLimit);
    assert_eq!(summary.steps, 3);
    let meta = alexc_train::Checkpoint::read_meta(&run.join("last.safetensors"))?;
    assert_eq!((meta.step, meta.epoch, meta.loader.position), (3, 0, 24));
    assert!(run.join("steps.csv").is_file() && run.join("filters.png").is_file());
    Ok(())
}

#[test]
fn resuming_with_another_model_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let model = write_model(dir.path(), "")?;
    write_data(dir.path(), 16, 8)?;
    let run = dir.path().join("run");
    trainer(&model, dir.path(), 1)?.with_run_dir(&run).run()?;

    let other_dir = tempfile::tempdir()?;
    let other = write_model(other_dir.path(), "// edited\n")?;
    let mut t = trainer(&other, dir.path(), 2)?;
    let err = t
        .resume(&run.join("last.safetensors"))
        .err()
        .ok_or("resuming with an edited model file succeeded")?;
    assert!(matches!(err, TrainError::ModelMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("different model file") && text.contains("last.safetensors"),
        "{text}"
    );
    Ok(())
}
