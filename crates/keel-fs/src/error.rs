//! The one error type of keel-fs: every variant names the operation and the path.

use std::io;
use std::path::PathBuf;

/// An error from the file system layer.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"open"`, `"read"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A line is longer than the reader's limit (the file is not read past it).
    #[error("{}: line starting at byte {offset} is longer than {line_bytes_max} bytes", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// Byte offset where the line starts.
        offset: u64,
        /// The limit.
        line_bytes_max: usize,
    },
}

impl FsError {
    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = FsError> = std::result::Result<T, E>;
