//! Batches from a [`Dataset`]: shuffled, decoded in the background,
//! deterministic, resumable.
//!
//! An epoch is a permutation of the data set ([`Loader::order`], drawn from
//! the seed and the epoch number) read front to back. Positions in it are
//! handed to worker threads in order, each worker decodes and augments its
//! image with that image's own random stream ([`crate::sample_rng`]), and the
//! consumer puts results back in position order before filling batches. So
//! the batches depend on the seed, the epoch and the data only, never on the
//! number of threads or their timing.
//!
//! **Bounded prefetch.** Workers may only claim positions less than `window`
//! ahead of the consumer (`prefetch` batches), so memory stays bounded even
//! when one image is slow and the others run ahead.
//!
//! **Bad files.** An image that fails to decode (or whose decoder panics) is
//! reported with `tracing::warn!` and its path, and skipped: the batch takes
//! the next image instead, so batches stay full (plans are compiled for a
//! fixed batch size). Which files fail is a property of the data, so
//! skipping keeps determinism.
//!
//! **Resuming.** [`LoaderState`] (seed, epoch, position in the permutation)
//! is all the state there is: every [`Batch`] carries the state just after
//! it; save that with a checkpoint, [`Loader::restore`] it, and the next
//! batches are bit-identical to the ones an uninterrupted run would get.
//!
//! The last partial batch of an epoch is dropped when `drop_last` (training)
//! and returned otherwise (evaluation).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use alexc_tensor::Tensor;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::{sample_rng, shuffle_rng, DataError, Dataset, Sample};

/// How a [`Loader`] batches, shuffles and parallelizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// A new permutation every epoch; otherwise data set order.
    pub shuffle: bool,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Drop the last batch of an epoch if it is not full.
    pub drop_last: bool,
    /// Background decoding threads; 0 decodes on the caller's thread.
    pub workers: usize,
    /// How many batches the workers may run ahead.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Shuffled, last partial batch dropped, two workers, two batches ahead.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            drop_last: true,
            workers: 2,
            prefetch: 2,
        }
    }

    /// In order, every image, two workers.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            ..Self::train(batch_size, 0)
        }
    }

    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

/// Where a loader is: enough to continue bit-exactly after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    pub epoch: u64,
    /// Positions of this epoch's permutation already consumed.
    pub position: usize,
}

/// A batch of model inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[N, C, H, W]`.
    pub images: Tensor<f32>,
    /// `[N]`.
    pub labels: Tensor<i64>,
    /// The data set index of each image.
    pub indices: Vec<usize>,
    /// The loader's state just after this batch.
    pub state: LoaderState,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Turns a data set into batches, epoch after epoch.
#[derive(Debug)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
    state: LoaderState,
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::Config(
                "the batch size must be at least 1".into(),
            ));
        }
        if dataset.is_empty() {
            return Err(DataError::Empty);
        }
        let state = LoaderState {
            seed: config.seed,
            epoch: 0,
            position: 0,
        };
        Ok(Loader {
            dataset,
            config,
            state,
        })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Where the next batch starts.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Continues from `state` (taken from [`Batch::state`] or
    /// [`Loader::state`], possibly in another process).
    pub fn restore(&mut self, state: LoaderState) -> Result<(), DataError> {
        let len = self.dataset.len();
        if state.position > len {
            return Err(DataError::State(format!(
                "position {} is past the end of a data set of {len} images",
                state.position
            )));
        }
        self.config.seed = state.seed;
        // A state at the very end of an epoch is the start of the next one,
        // where an uninterrupted run would be once the epoch's iterator ends.
        self.state = if state.position == len {
            LoaderState {
                epoch: state.epoch + 1,
                position: 0,
                ..state
            }
        } else {
            state
        };
        Ok(())
    }

    /// Puts the loader back to `state`, exactly, which it was in earlier
    /// during the current epoch: for a consumer that read a batch ahead
    /// (the trainer's look-ahead) and stops before using it. Unlike
    /// [`Loader::restore`], a state at the end of an epoch stays there.
    pub fn rewind(&mut self, state: LoaderState) {
        self.state = state;
    }

    /// The number of batches in an epoch when no image fails.
    pub fn batches_per_epoch(&self) -> usize {
        let len = self.dataset.len();
        if self.config.drop_last {
            len / self.config.batch_size
        } else {
            len.div_ceil(self.config.batch_size)
        }
    }

    /// The data set indices of `epoch`, in the order they are read.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut shuffle_rng(self.state.seed, epoch));
        }
        order
    }

    /// The rest of the current epoch. When it has been iterated to the end
    /// the loader moves to the next epoch; dropped early, it stays after the
    /// last batch returned.
    pub fn epoch(&mut self) -> Epoch<'_> {
        let order = Arc::new(self.order(self.state.epoch));
        let start = self.state.position;
        let window = self
            .config
            .prefetch
            .max(1)
            .saturating_mul(self.config.batch_size)
            .max(self.config.workers);
        let source = if self.config.workers == 0 {
            Source::Inline
        } else {
            Workers::spawn(self, &order, start, window).map_or(Source::Inline, Source::Workers)
        };
        Epoch {
            next: start,
            order,
            source,
            done: false,
            loader: self,
        }
    }
}

/// Decodes and augments one image, turning a panic into an error.
fn load_sample(
    dataset: &dyn Dataset,
    index: usize,
    seed: u64,
    epoch: u64,
) -> Result<Sample, DataError> {
    let mut rng = sample_rng(seed, epoch, index);
    catch_unwind(AssertUnwindSafe(|| dataset.get(index, &mut rng))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(DataError::DecoderPanicked { message })
    })
}

/// Where the samples of an epoch come from.
#[derive(Debug)]
enum Source {
    /// Decoded on demand by the consumer.
    Inline,
    Workers(Workers),
}

/// Which positions the workers may claim.
#[derive(Debug)]
struct Claims {
    next: usize,
    /// Positions `< limit` may be claimed.
    limit: usize,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    claims: Mutex<Claims>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Claims> {
        // A poisoned lock only means a worker panicked outside `get`; the
        // counters are still consistent (each update is one assignment).
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Outcome = (usize, Result<Sample, DataError>);

#[derive(Debug)]
struct Workers {
    shared: Arc<Shared>,
    results: Receiver<Outcome>,
    /// Results that arrived before their turn.
    pending: HashMap<usize, Result<Sample, DataError>>,
    handles: Vec<JoinHandle<()>>,
    window: usize,
}

impl Workers {
    /// Starts the threads; `None` if none could be started.
    fn spawn(
        loader: &Loader,
        order: &Arc<Vec<usize>>,
        start: usize,
        window: usize,
    ) -> Option<Workers> {
        let shared = Arc::new(Shared {
            claims: Mutex::new(Claims {
                next: start,
                limit: start + window,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let (tx, results) = channel();
        let mut handles = Vec::new();
        for i in 0..loader.config.workers {
            let (dataset, order, shared, tx) = (
                loader.dataset.clone(),
                order.clone(),
                shared.clone(),
                tx.clone(),
            );
            let (seed, epoch) = (loader.state.seed, loader.state.epoch);
            let spawned = std::thread::Builder::new()
                .name(format!("alexc-data-{i}"))
                .spawn(move || work(&*dataset, &order, &shared, &tx, seed, epoch));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => tracing::warn!(error = %e, "could not start a loader thread"),
            }
        }
        if handles.is_empty() {
            return None;
        }
        Some(Workers {
            shared,
            results,
            pending: HashMap::new(),
            handles,
            window,
        })
    }

    /// The result for `pos`; `None` if every worker is gone.
    fn take(&mut self, pos: usize) -> Option<Result<Sample, DataError>> {
        let result = loop {
            if let Some(result) = self.pending.remove(&pos) {
                break result;
            }
            let (p, result) = self.results.recv().ok()?;
            self.pending.insert(p, result);
        };
        self.shared.lock().limit = pos + 1 + self.window;
        self.shared.wake.notify_all();
        Some(result)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        for handle in self.handles.drain(..) {
            // Workers catch panics from data sets; a join error is a bug
            // here, and there is nothing left to clean up after it.
            let _ = handle.join();
        }
    }
}

/// A worker: claim the next position, decode it, send it, repeat.
fn work(
    dataset: &dyn Dataset,
    order: &[usize],
    shared: &Shared,
    tx: &Sender<Outcome>,
    seed: u64,
    epoch: u64,
) {
    loop {
        let pos = {
            let mut claims = shared.lock();
            loop {
                if claims.stop || claims.next >= order.len() {
                    return;
                }
                if claims.next < claims.limit {
                    claims.next += 1;
                    break claims.next - 1;
                }
                claims = shared
                    .wake
                    .wait(claims)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let result = load_sample(dataset, order[pos], seed, epoch);
        if tx.send((pos, result)).is_err() {
            return;
        }
    }
}

/// The batches of one epoch ([`Loader::epoch`]).
#[derive(Debug)]
pub struct Epoch<'a> {
    loader: &'a mut Loader,
    order: Arc<Vec<usize>>,
    source: Source,
    /// The next position to consume.
    next: usize,
    done: bool,
}

impl Epoch<'_> {
    /// The loader's state after the batches returned so far.
    pub fn state(&self) -> LoaderState {
        self.loader.state
    }

    fn finish(&mut self) {
        self.done = true;
        self.loader.state.epoch += 1;
        self.loader.state.position = 0;
    }
}

impl Iterator for Epoch<'_> {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let dataset = self.loader.dataset.clone();
        let (batch_size, drop_last) = (self.loader.config.batch_size, self.loader.config.drop_last);
        let (seed, epoch) = (self.loader.state.seed, self.loader.state.epoch);
        let shape = dataset.image_shape();
        let mut images = Vec::with_capacity(batch_size * shape.iter().product::<usize>());
        let mut labels = Vec::with_capacity(batch_size);
        let mut indices = Vec::with_capacity(batch_size);

        while indices.len() < batch_size && self.next < self.order.len() {
            let (pos, index) = (self.next, self.order[self.next]);
            let result = match &mut self.source {
                Source::Inline => load_sample(&*dataset, index, seed, epoch),
                Source::Workers(workers) => match workers.take(pos) {
                    Some(result) => result,
                    None => {
                        self.done = true;
                        return Some(Err(DataError::WorkerLost));
                    }
                },
            };
            self.next += 1;
            match result {
                Ok(sample) if sample.image.shape() == shape => {
                    images.extend_from_slice(sample.image.data());
                    labels.push(sample.label);
                    indices.push(index);
                }
                Ok(sample) => tracing::warn!(
                    image = %dataset.name_of(index),
                    shape = ?sample.image.shape(),
                    expected = ?shape,
                    "skipping an image of the wrong shape"
                ),
                Err(e) => tracing::warn!(
                    image = %dataset.name_of(index),
                    error = %e,
                    "skipping an image that failed to load"
                ),
            }
        }

        let n = indices.len();
        if n == 0 || (n < batch_size && drop_last) {
            self.finish();
            return None;
        }
        self.loader.state.position = self.next;
        let [c, h, w] = shape;
        let batch = Tensor::new(vec![n, c, h, w], images).and_then(|images| {
            Ok(Batch {
                images,
                labels: Tensor::new(vec![n], labels)?,
                indices,
                state: self.loader.state,
            })
        });
        Some(batch.map_err(DataError::from))
    }
}
