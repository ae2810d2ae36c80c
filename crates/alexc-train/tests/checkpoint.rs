//! Checkpoint files: a round trip keeps everything; a crash while writing
//! leaves the previous checkpoint intact; bad files are clear errors.

mod common;

use std::io;

use alexc_codegen_cranelift::CraneliftBackend;
use alexc_train::checkpoint::{load_tensors, WriteStage};
use alexc_train::{Checkpoint, TrainConfig, TrainError, Trainer};
use common::*;

fn trained(epochs: u64) -> Result<(tempfile::TempDir, Trainer), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let model = load_model(&write_model(dir.path(), "")?)?;
    write_data(dir.path(), 32, 8)?;
    let (train, val) = datasets(dir.path())?;
    let config = TrainConfig {
        epochs,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&model, &CraneliftBackend, train, Some(val), config)?;
    t.run()?;
    Ok((dir, t))
}

#[test]
fn round_trip_keeps_weights_momentum_and_metadata() -> TestResult {
    let (dir, t) = trained(1)?;
    let ckpt = t.checkpoint();
    assert!(ckpt.weights.contains_key("conv1.weight.momentum"));
    let path = dir.path().join("c.safetensors");
    ckpt.save(&path)?;
    let back = Checkpoint::load(&path)?;
    assert_eq!(back, ckpt);
    assert_eq!(back.meta.step, 4);
    assert_eq!(back.meta.history.epochs.len(), 1);
    // The tensors load like any weights file.
    assert_eq!(load_tensors(&path)?, ckpt.weights);
    Ok(())
}

#[test]
fn a_crash_while_writing_leaves_the_previous_checkpoint_intact() -> TestResult {
    let (dir, mut t) = trained(1)?;
    let path = dir.path().join("last.safetensors");
    let before = t.checkpoint();
    before.save(&path)?;
    let bytes_before = std::fs::read(&path)?;

    t.set_limits(2, None);
    t.run()?;
    let after = t.checkpoint();
    assert_ne!(after, before);
    for stage in [WriteStage::HalfWritten, WriteStage::Synced] {
        let err = after
            .save_with(&path, |s| {
                if s == stage {
                    Err(io::Error::other("simulated crash"))
                } else {
                    Ok(())
                }
            })
            .err()
            .ok_or("the failing write succeeded")?;
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert_eq!(std::fs::read(&path)?, bytes_before, "crash at {stage:?}");
        assert_eq!(Checkpoint::load(&path)?, before);
    }
    // No temporary file is left behind, and a good write replaces the file.
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    after.save(&path)?;
    assert_eq!(Checkpoint::load(&path)?, after);
    Ok(())
}

#[test]
fn writing_into_a_missing_folder_fails_cleanly() -> TestResult {
    let (dir, t) = trained(1)?;
    let path = dir.path().join("no/such/folder/last.safetensors");
    let err = t.checkpoint().save(&path).err().ok_or("write succeeded")?;
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
    Ok(())
}

#[test]
fn bad_files_are_clear_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A plain weights file has no training metadata.
    let weights = dir.path().join("w.safetensors");
    let mut w = alexc_tensor::Weights::new();
    w.insert("fc.bias".into(), alexc_tensor::Tensor::zeros(vec![4])?);
    alexc_tensor::save_weights(&weights, &w)?;
    let err = Checkpoint::load(&weights).err().ok_or("loaded")?;
    assert!(err.to_string().contains("not an alexc checkpoint"), "{err}");
    // Garbage and truncation.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors")?;
    let err = Checkpoint::load(&junk).err().ok_or("loaded")?;
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
    let bytes = std::fs::read(&weights)?;
    std::fs::write(&junk, &bytes[..bytes.len() - 3])?;
    assert!(Checkpoint::load(&junk).is_err());
    let err = Checkpoint::load(&dir.path().join("missing.safetensors"))
        .err()
        .ok_or("loaded")?;
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    Ok(())
}
