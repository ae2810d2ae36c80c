//! What a training run records: one row per step, one per epoch; and the
//! files they are written to (`metrics.csv`, `steps.csv`, `metrics.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::TrainError;

/// One training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based global step.
    pub step: u64,
    /// 0-based epoch the step belongs to.
    pub epoch: u64,
    pub loss: f32,
    pub lr: f32,
    pub images_per_second: f64,
}

/// One epoch's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: u64,
    /// The global step at the end of the epoch.
    pub step: u64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation results (`None` without a validation set).
    pub val_loss: Option<f64>,
    pub top1_error: Option<f64>,
    pub top5_error: Option<f64>,
    /// The learning rate the epoch ran with.
    pub lr: f32,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
}

/// Everything recorded so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub steps: Vec<StepRecord>,
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// The mean training loss of `epoch`'s steps (NaN without steps).
    pub fn epoch_train_loss(&self, epoch: u64) -> f64 {
        let (sum, n) = self
            .steps
            .iter()
            .filter(|s| s.epoch == epoch)
            .fold((0.0f64, 0u64), |(sum, n), s| {
                (sum + f64::from(s.loss), n + 1)
            });
        if n == 0 {
            f64::NAN
        } else {
            sum / n as f64
        }
    }

    /// One row per epoch: `epoch,step,train_loss,val_loss,top1_error,
    /// top5_error,lr,seconds`; missing validation values are empty cells.
    pub fn epochs_csv(&self) -> String {
        let mut out =
            String::from("epoch,step,train_loss,val_loss,top1_error,top5_error,lr,seconds\n");
        let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.6}"));
        for e in &self.epochs {
            out.push_str(&format!(
                "{},{},{:.6},{},{},{},{},{:.3}\n",
                e.epoch + 1,
                e.step,
                e.train_loss,
                opt(e.val_loss),
                opt(e.top1_error),
                opt(e.top5_error),
                e.lr,
                e.seconds
            ));
        }
        out
    }

    /// One row per step: `step,epoch,loss,lr,images_per_second`.
    pub fn steps_csv(&self) -> String {
        let mut out = String::from("step,epoch,loss,lr,images_per_second\n");
        for s in &self.steps {
            out.push_str(&format!(
                "{},{},{},{},{:.1}\n",
                s.step,
                s.epoch + 1,
                s.loss,
                s.lr,
                s.images_per_second
            ));
        }
        out
    }

    /// Writes `metrics.csv` (per epoch), `steps.csv` (per step) and
    /// `metrics.json` (everything) into `dir`, each atomically, so a reader
    /// (or a crash) never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| TrainError::Config(format!("encoding the history: {e}")))?;
        let files = [
            ("metrics.csv", self.epochs_csv()),
            ("steps.csv", self.steps_csv()),
            ("metrics.json", json),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            write_atomic(&path, text.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let step = |step, epoch, loss| StepRecord {
            step,
            epoch,
            loss,
            lr: 0.01,
            images_per_second: 100.0,
        };
        History {
            steps: vec![step(1, 0, 2.0), step(2, 0, 1.0), step(3, 1, 0.5)],
            epochs: vec![EpochRecord {
                epoch: 0,
                step: 2,
                train_loss: 1.5,
                val_loss: None,
                top1_error: Some(0.25),
                top5_error: Some(0.0),
                lr: 0.01,
                seconds: 1.5,
            }],
        }
    }

    #[test]
    fn epoch_means_and_csv() -> Result<(), Box<dyn std::error::Error>> {
        let h = history();
        assert_eq!(h.epoch_train_loss(0), 1.5);
        assert_eq!(h.epoch_train_loss(1), 0.5);
        assert!(h.epoch_train_loss(2).is_nan());
        let csv = h.epochs_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "1,2,1.500000,,0.250000,0.000000,0.01,1.500");
        assert_eq!(h.steps_csv().lines().count(), 4);
        let dir = tempfile::tempdir()?;
        h.write(dir.path())?;
        let back: History =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json"))?)?;
        assert_eq!(back, h);
        Ok(())
    }
}
