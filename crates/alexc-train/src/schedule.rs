//! Learning-rate schedules, decided once per epoch.
//!
//! Three policies ([`Schedule`]): a constant rate; a step schedule that
//! multiplies the rate by `gamma` every `every` epochs; and the paper's rule,
//! "divide the learning rate by 10 when the validation error rate stopped
//! improving with the current learning rate" ([`Schedule::Plateau`]), made
//! precise the way `ReduceLROnPlateau` does it: an epoch *improves* when its
//! metric beats the best so far by more than `min_delta`; after more than
//! `patience` epochs in a row without improvement the rate is multiplied by
//! `factor` (never below `min_lr`) and the count restarts.
//!
//! Everything a schedule remembers lives in [`ScheduleState`], a plain serde
//! struct that is written into every checkpoint, so a resumed run takes the
//! same decisions as an uninterrupted one. The rate is recomputed from the
//! base rate (step) or multiplied once per decision (plateau), never
//! accumulated per step, so it is bit-identical across a resume.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// How the learning rate changes from epoch to epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `base · gamma^⌊epoch / every⌋`.
    Step { every: u64, gamma: f32 },
    /// The paper's: multiply by `factor` (0.1) when the validation error
    /// (the training loss without a validation set) has not improved by more
    /// than `min_delta` for more than `patience` epochs; never below `min_lr`.
    Plateau {
        patience: u64,
        factor: f32,
        min_lr: f32,
        min_delta: f64,
    },
}

impl Schedule {
    /// The paper's schedule with the given patience: divide by 10, down to
    /// 1/1000 of `base_lr` (the paper divided three times in all).
    pub fn plateau(patience: u64, base_lr: f32) -> Self {
        Schedule::Plateau {
            patience,
            factor: 0.1,
            min_lr: base_lr * 1e-3,
            min_delta: 1e-4,
        }
    }

    /// The stable name used on the command line and in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Step { .. } => "step",
            Schedule::Plateau { .. } => "plateau",
        }
    }

    /// Rejects values that would make the rate grow, vanish or stall.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, gamma } => {
                if every == 0 {
                    return bad("the step schedule needs `every` ≥ 1 epoch".into());
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return bad(format!(
                        "the step schedule's gamma {gamma} is not in (0, 1]"
                    ));
                }
                Ok(())
            }
            Schedule::Plateau {
                factor,
                min_lr,
                min_delta,
                ..
            } => {
                if !(factor > 0.0 && factor < 1.0) {
                    return bad(format!("the plateau factor {factor} is not in (0, 1)"));
                }
                if !(min_lr.is_finite() && min_lr >= 0.0) {
                    return bad(format!("the minimum learning rate {min_lr} is invalid"));
                }
                if !(min_delta.is_finite() && min_delta >= 0.0) {
                    return bad(format!("min_delta {min_delta} must be finite and ≥ 0"));
                }
                Ok(())
            }
        }
    }
}

/// What a schedule remembers between epochs (saved in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The rate the run started with.
    pub base_lr: f32,
    /// The rate the next epoch runs with.
    pub lr: f32,
    /// Epochs completed (decisions taken).
    pub epochs: u64,
    /// Plateau: the best metric so far.
    pub best: Option<f64>,
    /// Plateau: epochs since the last improvement (or reduction).
    pub bad_epochs: u64,
}

/// A schedule with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    pub schedule: Schedule,
    pub state: ScheduleState,
}

impl Scheduler {
    /// A fresh schedule starting at `base_lr`.
    pub fn new(schedule: Schedule, base_lr: f32) -> Result<Self, TrainError> {
        schedule.validate()?;
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(TrainError::Config(format!(
                "the learning rate {base_lr} must be finite and positive"
            )));
        }
        Ok(Scheduler {
            schedule,
            state: ScheduleState {
                base_lr,
                lr: base_lr,
                epochs: 0,
                best: None,
                bad_epochs: 0,
            },
        })
    }

    /// The rate for the current epoch.
    pub fn lr(&self) -> f32 {
        self.state.lr
    }

    /// Records the end of an epoch whose monitored metric (lower is better)
    /// was `metric`, and returns the rate for the next epoch. A non-finite
    /// metric (a diverged run) never counts as an improvement.
    pub fn end_epoch(&mut self, metric: f64) -> f32 {
        let s = &mut self.state;
        s.epochs += 1;
        match self.schedule {
            Schedule::Constant => {}
            Schedule::Step { every, gamma } => {
                // Recomputed from the base, so no rounding accumulates.
                let k = i32::try_from(s.epochs / every.max(1)).unwrap_or(i32::MAX);
                s.lr = s.base_lr * gamma.powi(k);
            }
            Schedule::Plateau {
                patience,
                factor,
                min_lr,
                min_delta,
            } => {
                let improved =
                    metric.is_finite() && s.best.is_none_or(|best| metric < best - min_delta);
                if improved {
                    s.best = Some(metric);
                    s.bad_epochs = 0;
                } else {
                    s.bad_epochs += 1;
                    if s.bad_epochs > patience {
                        let lowered = (s.lr * factor).max(min_lr);
                        if lowered < s.lr {
                            tracing::info!(
                                from = s.lr,
                                to = lowered,
                                "validation error stopped improving: lowering the learning rate"
                            );
                        }
                        s.lr = lowered;
                        s.bad_epochs = 0;
                    }
                }
            }
        }
        s.lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_never_changes() -> Result<(), TrainError> {
        let mut s = Scheduler::new(Schedule::Constant, 0.01)?;
        for m in [1.0, 2.0, 3.0, 4.0] {
            assert_eq!(s.end_epoch(m), 0.01);
        }
        Ok(())
    }

    #[test]
    fn step_multiplies_every_k_epochs() -> Result<(), TrainError> {
        let mut s = Scheduler::new(
            Schedule::Step {
                every: 2,
                gamma: 0.5,
            },
            0.1,
        )?;
        let lrs: Vec<f32> = (0..5).map(|_| s.end_epoch(0.0)).collect();
        assert_eq!(lrs, vec![0.1, 0.05, 0.05, 0.025, 0.025]);
        Ok(())
    }

    #[test]
    fn plateau_divides_after_patience_and_respects_min() -> Result<(), TrainError> {
        let mut s = Scheduler::new(
            Schedule::Plateau {
                patience: 1,
                factor: 0.1,
                min_lr: 0.0005,
                min_delta: 0.0,
            },
            0.01,
        )?;
        assert_eq!(s.end_epoch(0.5), 0.01); // first: improves
        assert_eq!(s.end_epoch(0.4), 0.01); // improves
        assert_eq!(s.end_epoch(0.4), 0.01); // 1 bad epoch: within patience
        assert!((s.end_epoch(0.45) - 0.001).abs() < 1e-9); // 2 bad: divide
        assert!((s.end_epoch(0.3) - 0.001).abs() < 1e-9); // improves again
        s.end_epoch(0.3);
        assert_eq!(s.end_epoch(0.3), 0.0005); // clamped at min_lr
        s.end_epoch(f64::NAN);
        assert_eq!(s.end_epoch(f64::NAN), 0.0005);
        Ok(())
    }

    #[test]
    fn state_round_trips_through_json() -> Result<(), Box<dyn std::error::Error>> {
        let mut s = Scheduler::new(Schedule::plateau(2, 0.01), 0.01)?;
        s.end_epoch(0.3);
        s.end_epoch(0.31);
        let back: Scheduler = serde_json::from_str(&serde_json::to_string(&s)?)?;
        assert_eq!(back, s);
        Ok(())
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        assert!(Scheduler::new(Schedule::Constant, 0.0).is_err());
        assert!(Scheduler::new(Schedule::Constant, f32::NAN).is_err());
        assert!(Scheduler::new(
            Schedule::Step {
                every: 0,
                gamma: 0.1
            },
            0.1
        )
        .is_err());
        assert!(Scheduler::new(
            Schedule::Step {
                every: 1,
                gamma: 2.0
            },
            0.1
        )
        .is_err());
    }
}
