//! Atomic file writes: whatever the user had at a path stays intact until
//! the new contents are complete on disk. Weights, checkpoints and metrics
//! all go through here.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The points of [`write_atomic_with`] at which a hook runs (tests inject a
/// failure there to simulate a crash mid-write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStage {
    /// Half of the bytes are in the temporary file.
    HalfWritten,
    /// The temporary file is complete and synced; not yet renamed.
    Synced,
}

/// A failed atomic write: the file that could not be written or renamed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, renamed over `path`, then the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomic_with(path, bytes, |_| Ok(()))
}

/// [`write_atomic`] with `hook` called at each [`WriteStage`]; an error
/// from the hook aborts the write as a crash would (the temporary file is
/// removed, `path` is untouched).
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mut hook: impl FnMut(WriteStage) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The process id keeps two writers (two runs in one directory) from
    // sharing a temporary file; a leftover from a crash is overwritten by
    // the next write from a process with the same id and is otherwise
    // harmless.
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        let half = bytes.len() / 2;
        f.write_all(&bytes[..half])?;
        hook(WriteStage::HalfWritten)?;
        f.write_all(&bytes[half..])?;
        f.sync_all()?;
        hook(WriteStage::Synced)
    };
    if let Err(source) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(AtomicWriteError { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(AtomicWriteError {
            path: path.to_path_buf(),
            source,
        });
    }
    // Persist the rename itself; not every platform lets a directory be
    // opened for syncing, and the data is already safe, so best-effort.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.bin");
        write_atomic(&path, b"old contents").expect("first write");
        for stage in [WriteStage::HalfWritten, WriteStage::Synced] {
            let err = write_atomic_with(&path, b"new contents!", |s| {
                if s == stage {
                    Err(io::Error::other("simulated crash"))
                } else {
                    Ok(())
                }
            })
            .expect_err("the hook fails the write");
            assert!(err.to_string().contains("simulated crash"));
            assert_eq!(fs::read(&path).expect("read"), b"old contents");
            let names: Vec<_> = fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("w.bin")]);
        }
        write_atomic(&path, b"new").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new");
    }
}
