//! The folders a run writes to, checked before any work.

use std::path::{Path, PathBuf};

/// A folder a run must write to is unusable: found before any work.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The path exists and is not a folder.
    #[error("{what} {}: is a file, not a folder; pass a folder (created if missing)", path.display())]
    NotAFolder {
        /// Which folder: "output folder (--out)", "cache folder (--cache-dir)".
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The folder cannot be created, or a file cannot be written in it.
    #[error("{what} {}: cannot {op} ({source}); pass a folder you can write to", path.display())]
    NotWritable {
        /// Which folder.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// "create it" or "write in it".
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Makes sure `dir` is a folder this process can write in, creating it
/// (and its parents) when missing: a run checks its output and cache
/// folders so that it fails in its first second, not after training.
///
/// # Errors
/// [`FolderError`] naming the folder and what to do.
pub fn ensure_writable_dir(dir: &Path, what: &'static str) -> Result<(), FolderError> {
    if dir.exists() && !dir.is_dir() {
        return Err(FolderError::NotAFolder {
            what,
            path: dir.to_path_buf(),
        });
    }
    let fail = |op, source| FolderError::NotWritable {
        what,
        path: dir.to_path_buf(),
        op,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        // A regular file somewhere up the path: say so rather than "Not a directory".
        match dir.ancestors().skip(1).find(|a| a.is_file()) {
            Some(file) => FolderError::NotAFolder {
                what,
                path: file.to_path_buf(),
            },
            None => fail("create it", e),
        }
    })?;
    let probe = dir.join(format!(".muq-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| fail("write in it", e))
}
