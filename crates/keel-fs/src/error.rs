//! The one error type of keel-fs: every variant names the operation or the path it concerns.
//!
//! Confined path resolution has its own enum, [`crate::resolve::ResolveError`], because its
//! callers branch on *why* a path was refused (escape, symlink, missing), not on an I/O detail.

use std::io;
use std::path::PathBuf;

/// An error from the file system layer.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O call failed. It was not retried: an `fsync` error in particular is never turned
    /// into success (the page cache may already have dropped the dirty data).
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
    /// A caller-supplied path or value cannot be used (no file name, owner name too long, ...).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The path concerned.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A record handed to the appender is longer than the limit; nothing was written.
    #[error("{}: record of {record_bytes} bytes exceeds the limit of {record_bytes_max} bytes", path.display())]
    RecordTooLong {
        /// The journal file.
        path: PathBuf,
        /// Length of the refused record.
        record_bytes: usize,
        /// The limit.
        record_bytes_max: usize,
    },
    /// A record contains a `\n`, which would split it into two lines; nothing was written.
    #[error("{}: record contains a newline at byte {at}", path.display())]
    RecordHasNewline {
        /// The journal file.
        path: PathBuf,
        /// Index of the first `\n` inside the record.
        at: usize,
    },
    /// An append put down part of the record and then failed (a full disk, a file-size limit).
    /// The part was cut off again when nothing else had been appended after it; otherwise it is
    /// a torn tail the next writer repairs. Either way the record did not happen. The handle
    /// latched failed.
    #[error(
        "{}: append: wrote {written_bytes} of {expected_bytes} bytes, then: {source}; {}",
        path.display(),
        if *cut_back { "the partial record was cut off again" } else { "the partial record stays as a torn tail" }
    )]
    ShortWrite {
        /// The file.
        path: PathBuf,
        /// Bytes the kernel accepted.
        written_bytes: usize,
        /// Bytes handed to it.
        expected_bytes: usize,
        /// Why the rest was not written.
        #[source]
        source: std::io::Error,
        /// Whether the partial bytes were removed.
        cut_back: bool,
    },
    /// The handle failed earlier and refuses further use: close it and reopen.
    #[error("{}: handle failed earlier during {op}; close and reopen", path.display())]
    Failed {
        /// The file.
        path: PathBuf,
        /// The operation that failed first.
        op: &'static str,
    },
    /// The file was replaced, removed or resized underneath an open appender (someone wrote
    /// without holding the writer lock). The handle latched failed.
    #[error("{}: changed underneath the appender: {detail}", path.display())]
    Replaced {
        /// The file.
        path: PathBuf,
        /// What changed (inode, length).
        detail: String,
    },
    /// A lock is held by someone else (after waiting `waited_ms`, zero for a try).
    #[error("{}: lock busy, held by {holder} (waited {waited_ms} ms)", path.display())]
    LockBusy {
        /// The lock file or directory.
        path: PathBuf,
        /// Who holds it, as far as the lock's body says (`"unknown"` otherwise).
        holder: String,
        /// How long the caller waited before giving up.
        waited_ms: u64,
    },
    /// A compare-and-swap on a lock moved a lock that was not the one observed and could not put
    /// it back because another lock appeared meanwhile. See the `lock` module's limitations.
    #[error("{}: lock changed during a steal or release and could not be restored: {detail}", path.display())]
    LockConflict {
        /// The lock file or directory.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
}

/// What kind of failure an error is, across keel's libraries: what a caller does next depends on
/// it (retry later, give up, fix the input, call an operator), and the CLI's exit status is it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A lock stayed held past the wait: try again later.
    Busy,
    /// The request was understood and refused (a conflict, a generation that moved on).
    Refused,
    /// The caller's input cannot be used (a malformed value, a path that is not allowed).
    Usage,
    /// Stored data is damaged and needs an operator.
    Damaged,
    /// The operating system failed an operation.
    Io,
}

impl FsError {
    /// The file or directory the error concerns (every variant names one).
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::LineTooLong { path, .. }
            | Self::Invalid { path, .. }
            | Self::RecordTooLong { path, .. }
            | Self::RecordHasNewline { path, .. }
            | Self::ShortWrite { path, .. }
            | Self::Failed { path, .. }
            | Self::Replaced { path, .. }
            | Self::LockBusy { path, .. }
            | Self::LockConflict { path, .. } => path,
        }
    }

    /// The kind of failure: a busy lock, an unusable caller value, or I/O.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::LockBusy { .. } => ErrorKind::Busy,
            Self::Invalid { .. } => ErrorKind::Usage,
            _ => ErrorKind::Io,
        }
    }

    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError::Io { op, path: path.into(), source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = FsError> = std::result::Result<T, E>;
