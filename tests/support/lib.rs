//! Shared helpers for the end-to-end tests in `tests/`.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `path` relative to the repository root.
pub fn repo_path(path: &str) -> PathBuf {
    root().join(path)
}
