//! Evaluation: top-1 and top-5 error and the loss of one model or an
//! ensemble, on the centre crop or on the paper's ten views.
//!
//! **What is averaged.** The paper (section 6) predicts with the softmax
//! averaged over the ten views of an image (four corner crops, the centre
//! crop and their mirror images), and an ensemble predicts with the softmax
//! averaged over its CNNs. Both are the same operation, so every image gets
//! one probability vector: the mean over its views *and* the models of the
//! softmax of the logits (computed in `f64` after subtracting the row's
//! maximum, so large logits neither overflow nor lose precision). The loss
//! is the cross-entropy of that averaged vector, and an image counts as a
//! top-k error when its label is not among the k largest probabilities.
//!
//! **Batching.** Runtimes are compiled for a fixed batch `N`. Views are
//! streamed into a buffer of `N` rows whatever image they belong to (ten
//! views rarely divide `N`); each full buffer is run through every model and
//! each row's softmax is added to its image's sum. An image is scored as
//! soon as its last view has been run, so memory stays at one batch plus the
//! images in flight. The final partial buffer is padded with zeros and the
//! padded rows' outputs are ignored (the networks treat rows independently).
//!
//! **Images that fail to load** are skipped with a warning, as the
//! [`Loader`] does in training; [`EvalResult::images`] says how many were
//! actually scored.

use std::collections::VecDeque;
use std::sync::Arc;

use alexc_data::{Dataset, Loader, LoaderConfig};
use alexc_ir::{DType, Op};
use alexc_runtime::Runtime;
use alexc_tensor::Tensor;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::TrainError;

/// Which views of each image the models see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Views {
    /// The data set's evaluation transform (normally the centre crop).
    Center,
    /// The paper's ten views ([`Dataset::ten_crop`]), softmax averaged.
    TenCrop,
}

impl Views {
    fn count(self) -> usize {
        match self {
            Views::Center => 1,
            Views::TenCrop => 10,
        }
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Images scored (images that failed to load are not counted).
    pub images: usize,
    /// Mean cross-entropy of the averaged probabilities.
    pub loss: f64,
    /// Fraction of images whose label is not the most probable class.
    pub top1_error: f64,
    /// Fraction of images whose label is not among the five most probable
    /// classes (0 when there are at most five classes).
    pub top5_error: f64,
}

/// The softmax of `logits` in `f64`, numerically stable (the maximum is
/// subtracted first, so the largest exponent is `exp(0) = 1`).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .map(|&l| f64::from(l))
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The 0-based rank of class `label` in `probs` (0: the most probable).
///
/// Ties are broken towards the lower class index, as an `argmax` that keeps
/// the first maximum does; otherwise a model that outputs constant
/// probabilities would score a top-1 error of 0. A label outside the row, or
/// a NaN probability for the label, ranks last (an error at every k).
pub fn rank_of(probs: &[f64], label: i64) -> usize {
    let Some(p) = usize::try_from(label).ok().and_then(|l| probs.get(l)) else {
        return probs.len();
    };
    if p.is_nan() {
        return probs.len();
    }
    let label = label as usize;
    probs
        .iter()
        .enumerate()
        .filter(|&(j, q)| *q > *p || (*q == *p && j < label))
        .count()
}

/// Top-1 and top-5 error counts of a row-major `[labels.len(), classes]`
/// probability (or logit) matrix; see [`rank_of`] for ties and bad labels.
/// Rows beyond `probs.len() / classes` are counted as errors.
pub fn topk_errors(probs: &[f64], classes: usize, labels: &[i64]) -> (usize, usize) {
    let (mut top1, mut top5) = (0, 0);
    for (i, &label) in labels.iter().enumerate() {
        let row = probs.get(i * classes..(i + 1) * classes).unwrap_or(&[]);
        let rank = if row.is_empty() {
            usize::MAX
        } else {
            rank_of(row, label)
        };
        top1 += usize::from(rank >= 1);
        top5 += usize::from(rank >= 5);
    }
    (top1, top5)
}

/// Evaluates `models` (one, or an ensemble whose softmax outputs are
/// averaged) on every image of `dataset`, through the `views` of each image.
///
/// Every model must be an inference runtime (`Options { train: false }`) for
/// the same batch size, taking `dataset.image_shape()` images and predicting
/// `dataset.classes().len()` classes. `progress` advances by one per image
/// scored; if it has no length yet it gets `dataset.len()`.
pub fn evaluate(
    models: &mut [&mut Runtime],
    dataset: Arc<dyn Dataset>,
    views: Views,
    progress: Option<&ProgressBar>,
) -> Result<EvalResult, TrainError> {
    let (batch, classes) = check_models(models, &*dataset)?;
    if let Some(pb) = progress {
        if pb.length().is_none() {
            pb.set_length(dataset.len() as u64);
        }
    }
    tracing::info!(
        images = dataset.len(),
        models = models.len(),
        ?views,
        batch,
        "evaluating"
    );
    let image_len: usize = dataset.image_shape().iter().product();
    let [c, h, w] = dataset.image_shape();
    let mut scorer = Scorer::new(models, vec![batch, c, h, w], classes, progress);
    match views {
        Views::Center => {
            // The loader decodes ahead on background threads and skips (with
            // a warning) images that fail to load.
            let mut loader = Loader::new(dataset.clone(), LoaderConfig::eval(batch))?;
            for b in loader.epoch() {
                let b = b?;
                let rows = b.images.data().chunks_exact(image_len);
                for ((&index, &label), pixels) in b.indices.iter().zip(b.labels.data()).zip(rows) {
                    scorer.add_image(
                        || dataset.name_of(index),
                        label,
                        std::iter::once(pixels),
                        1,
                    )?;
                }
            }
        }
        Views::TenCrop => {
            let shape = dataset.image_shape();
            for index in 0..dataset.len() {
                let (crops, label) = match dataset.ten_crop(index) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(image = %dataset.name_of(index), error = %e,
                            "skipping an image that failed to load");
                        continue;
                    }
                };
                if crops.len() != views.count() || crops.iter().any(|c| c.shape() != shape) {
                    tracing::warn!(image = %dataset.name_of(index), views = crops.len(),
                        expected = ?shape, "skipping an image whose views have the wrong shape");
                    continue;
                }
                scorer.add_image(
                    || dataset.name_of(index),
                    label,
                    crops.iter().map(Tensor::data),
                    crops.len(),
                )?;
            }
        }
    }
    let result = scorer.finish()?;
    tracing::info!(
        images = result.images,
        loss = result.loss,
        top1_error = result.top1_error,
        top5_error = result.top5_error,
        "evaluated"
    );
    Ok(result)
}

/// Checks that the models fit each other and the data; returns the batch
/// size and the number of classes.
fn check_models(
    models: &[&mut Runtime],
    dataset: &dyn Dataset,
) -> Result<(usize, usize), TrainError> {
    if models.is_empty() {
        return Err(TrainError::Config(
            "evaluation needs at least one model".into(),
        ));
    }
    if dataset.is_empty() {
        return Err(alexc_data::DataError::Empty.into());
    }
    let [c, h, w] = dataset.image_shape();
    if c * h * w == 0 {
        return Err(TrainError::Config(format!(
            "the data set's images are empty ({c}×{h}×{w})"
        )));
    }
    let data_classes = dataset.classes().len();
    let mut batch = None;
    for (i, rt) in models.iter().enumerate() {
        let mismatch = |message: String| TrainError::EvalMismatch { model: i, message };
        // A training runtime's `infer` would also run the backward pass and
        // update its weights; the label input is what only training graphs have.
        let graph = rt.graph();
        let training = graph.node_ids().any(|id| {
            matches!(&graph[id].op, Op::Input(a) if a.dtype == DType::I64)
                || matches!(graph[id].op, Op::Momentum(_))
        });
        if training {
            return Err(mismatch(
                "it was compiled for training; evaluation needs an inference runtime \
                 (Options { train: false })"
                    .into(),
            ));
        }
        let shape = rt.image_shape()?;
        let &[n, mc, mh, mw] = shape.as_slice() else {
            return Err(mismatch(format!(
                "it takes inputs of shape {shape:?}, not [N, C, H, W] images"
            )));
        };
        if [mc, mh, mw] != [c, h, w] {
            return Err(mismatch(format!(
                "it takes {mc}×{mh}×{mw} images but the data set gives {c}×{h}×{w}"
            )));
        }
        match batch {
            Some(b) if b != n => {
                return Err(mismatch(format!(
                    "it was compiled for batches of {n}, model 0 for batches of {b}; \
                     an ensemble needs one batch size"
                )))
            }
            _ => batch = Some(n),
        }
        if n == 0 {
            return Err(mismatch("it was compiled for batches of 0".into()));
        }
        if rt.classes() != data_classes {
            return Err(mismatch(format!(
                "it predicts {} classes but the data set has {data_classes}",
                rt.classes()
            )));
        }
    }
    Ok((batch.unwrap_or(1), data_classes))
}

/// An image whose views are (partly) still in the batch buffer.
#[derive(Debug)]
struct InFlight {
    label: i64,
    /// Sum over views and models of the softmax.
    sum: Vec<f64>,
    /// Views not yet run.
    pending: usize,
    /// Views in all.
    views: usize,
}

/// Streams views into batches, runs them and scores finished images.
struct Scorer<'m, 'r, 'p> {
    models: &'m mut [&'r mut Runtime],
    batch: usize,
    /// `[N, C, H, W]` of a batch.
    input_shape: Vec<usize>,
    image_len: usize,
    classes: usize,
    /// `[batch, image_len]`; rows past `owners.len()` are padding.
    buffer: Vec<f32>,
    /// Which in-flight image (by sequence number) each filled row belongs to.
    owners: Vec<usize>,
    in_flight: VecDeque<InFlight>,
    /// Sequence number of `in_flight[0]`.
    first: usize,
    images: usize,
    loss: f64,
    top1: usize,
    top5: usize,
    progress: Option<&'p ProgressBar>,
}

impl<'m, 'r, 'p> Scorer<'m, 'r, 'p> {
    fn new(
        models: &'m mut [&'r mut Runtime],
        input_shape: Vec<usize>,
        classes: usize,
        progress: Option<&'p ProgressBar>,
    ) -> Self {
        let batch = input_shape.first().copied().unwrap_or(1);
        let image_len = input_shape.iter().skip(1).product();
        Scorer {
            models,
            batch,
            input_shape,
            image_len,
            classes,
            buffer: vec![0.0; batch * image_len],
            owners: Vec::with_capacity(batch),
            in_flight: VecDeque::new(),
            first: 0,
            images: 0,
            loss: 0.0,
            top1: 0,
            top5: 0,
            progress,
        }
    }

    /// Queues the `count` views of one image.
    fn add_image<'v>(
        &mut self,
        name: impl Fn() -> String,
        label: i64,
        views: impl Iterator<Item = &'v [f32]>,
        count: usize,
    ) -> Result<(), TrainError> {
        if usize::try_from(label).map_or(true, |l| l >= self.classes) {
            return Err(TrainError::LabelOutOfRange {
                image: name(),
                label,
                classes: self.classes,
            });
        }
        let id = self.first + self.in_flight.len();
        self.in_flight.push_back(InFlight {
            label,
            sum: vec![0.0; self.classes],
            pending: count,
            views: count,
        });
        for view in views {
            let row = self.owners.len();
            let Some(slot) = self
                .buffer
                .get_mut(row * self.image_len..(row + 1) * self.image_len)
                .filter(|slot| slot.len() == view.len())
            else {
                return Err(TrainError::Config(format!(
                    "image {} has a view of {} values, the models take {}",
                    name(),
                    view.len(),
                    self.image_len
                )));
            };
            slot.copy_from_slice(view);
            self.owners.push(id);
            if self.owners.len() == self.batch {
                self.run()?;
            }
        }
        Ok(())
    }

    /// Runs the buffered rows through every model and scores the images
    /// whose views are now all done.
    fn run(&mut self) -> Result<(), TrainError> {
        if self.owners.is_empty() {
            return Ok(());
        }
        // Padding rows hold whatever the previous batch left; zero them so
        // the inputs are well defined (their outputs are ignored).
        let used = self.owners.len() * self.image_len;
        self.buffer[used..].fill(0.0);
        let input = Tensor::new(self.input_shape.clone(), std::mem::take(&mut self.buffer))
            .map_err(|e| TrainError::Config(format!("building an evaluation batch: {e}")))?;
        for (model, rt) in self.models.iter_mut().enumerate() {
            let logits = rt.infer(&input)?;
            for (row, &owner) in self.owners.iter().enumerate() {
                let Some(z) = logits
                    .data()
                    .get(row * self.classes..(row + 1) * self.classes)
                else {
                    return Err(TrainError::EvalMismatch {
                        model,
                        message: format!(
                            "it returned logits of shape {:?} for {} classes",
                            logits.shape(),
                            self.classes
                        ),
                    });
                };
                let image = &mut self.in_flight[owner - self.first];
                for (s, p) in image.sum.iter_mut().zip(softmax(z)) {
                    *s += p;
                }
            }
        }
        self.buffer = input.into_data();
        for &owner in &self.owners {
            self.in_flight[owner - self.first].pending -= 1;
        }
        self.owners.clear();
        while self.in_flight.front().is_some_and(|i| i.pending == 0) {
            if let Some(image) = self.in_flight.pop_front() {
                self.first += 1;
                self.score(&image);
            }
        }
        Ok(())
    }

    fn score(&mut self, image: &InFlight) {
        let n = (image.views * self.models.len()) as f64;
        let probs: Vec<f64> = image.sum.iter().map(|s| s / n).collect();
        let rank = rank_of(&probs, image.label);
        // Clamped so one confidently wrong image (p = 0 in f64) gives a large
        // but finite loss (~708) instead of making the mean infinite.
        let p = usize::try_from(image.label)
            .ok()
            .and_then(|l| probs.get(l))
            .map_or(0.0, |&p| p)
            .max(f64::MIN_POSITIVE);
        self.loss -= p.ln();
        self.top1 += usize::from(rank >= 1);
        self.top5 += usize::from(rank >= 5);
        self.images += 1;
        if let Some(pb) = self.progress {
            pb.inc(1);
        }
    }

    fn finish(mut self) -> Result<EvalResult, TrainError> {
        self.run()?;
        if self.images == 0 {
            return Err(TrainError::Config(
                "no image of the data set could be loaded for evaluation".into(),
            ));
        }
        let n = self.images as f64;
        Ok(EvalResult {
            images: self.images,
            loss: self.loss / n,
            top1_error: self.top1 as f64 / n,
            top5_error: self.top5 as f64 / n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalized() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.5).abs() < 1e-12);
        assert!(p[2] < 1e-300);
        let q = softmax(&[1.0, 2.0, 3.0]);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f64 = e.iter().sum();
        for (a, b) in q.iter().zip(&e) {
            assert!((a - b / s).abs() < 1e-15);
        }
    }

    #[test]
    fn ranks_break_ties_towards_lower_classes() {
        let p = [0.1, 0.4, 0.4, 0.1];
        assert_eq!(rank_of(&p, 1), 0);
        assert_eq!(rank_of(&p, 2), 1);
        assert_eq!(rank_of(&p, 0), 2);
        assert_eq!(rank_of(&p, 3), 3);
        assert_eq!(rank_of(&p, 4), 4, "out of range ranks last");
        assert_eq!(rank_of(&p, -1), 4);
        assert_eq!(rank_of(&[f64::NAN, 0.5], 0), 2);
        // Constant outputs are not all correct.
        assert_eq!(topk_errors(&[0.25; 8], 4, &[0, 3]), (1, 0));
    }

    #[test]
    fn topk_counts_top1_and_top5() {
        // 7 classes; row 0: label best; row 1: label 3rd; row 2: label 6th.
        let rows = [
            [0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05],
            [0.3, 0.2, 0.1, 0.05, 0.05, 0.25, 0.05],
            [0.2, 0.2, 0.2, 0.2, 0.15, 0.04, 0.01],
        ];
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        assert_eq!(topk_errors(&flat, 7, &[0, 1, 5]), (2, 1));
        assert_eq!(topk_errors(&flat, 7, &[0, 0, 0]), (0, 0));
        // Fewer than five classes: never a top-5 error.
        assert_eq!(topk_errors(&[0.1, 0.2, 0.7], 3, &[0]), (1, 0));
        // Missing rows count as errors, without panicking.
        assert_eq!(topk_errors(&[0.9, 0.1], 2, &[0, 0]), (1, 1));
        assert_eq!(topk_errors(&[], 0, &[0]), (1, 1));
    }
}
