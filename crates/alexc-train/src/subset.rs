//! The first `n` images of a data set, for quick runs (`--limit-train`,
//! `--limit-val`). The first images rather than a random sample so that a
//! limited run reads a prefix of the files and stays deterministic without a
//! seed; Fashion-MNIST's files are already in random class order.

use std::sync::Arc;

use alexc_data::{DataError, Dataset, RawImage, Transform};

/// A prefix of another data set.
#[derive(Debug, Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    len: usize,
}

impl Subset {
    /// The first `n` images of `inner` (all of them if it has fewer).
    pub fn first(inner: Arc<dyn Dataset>, n: usize) -> Self {
        let len = n.min(inner.len());
        Subset { inner, len }
    }

    /// `dataset` limited to `limit` images, or unchanged for `None`.
    pub fn limit(dataset: Arc<dyn Dataset>, limit: Option<usize>) -> Arc<dyn Dataset> {
        match limit {
            Some(n) if n < dataset.len() => Arc::new(Subset::first(dataset, n)),
            _ => dataset,
        }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.len
    }

    fn classes(&self) -> &[String] {
        self.inner.classes()
    }

    fn transform(&self) -> &Transform {
        self.inner.transform()
    }

    fn load(&self, index: usize) -> Result<(RawImage, i64), DataError> {
        if index >= self.len {
            return Err(DataError::Config(format!(
                "image {index} is outside the first {} images of {}",
                self.len,
                self.inner.name_of(0)
            )));
        }
        self.inner.load(index)
    }

    fn name_of(&self, index: usize) -> String {
        self.inner.name_of(index)
    }
}
