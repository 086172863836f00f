//! Errors of the mutator: what went wrong, with the operation and the path. A refusal (forbidden,
//! stale, precondition, inode swap) is not an error but an [`Outcome`](crate::Outcome).

use std::io;
use std::path::PathBuf;

use crate::request::IntentId;

/// Errors of the mutator. After one, the workspace holds the old content or the new (never a
/// mix); an incomplete intent is rolled forward or back by the next operation or open.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path (workspace-relative for workspace files).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// keel-fs failed (the mutation log, the mutator lock).
    #[error(transparent)]
    Fs(#[from] keel_fs::FsError),
    /// Resolving a path failed for a reason that is not an escape (a missing directory, I/O).
    #[error(transparent)]
    Resolve(keel_fs::ResolveError),
    /// The lease journal failed.
    #[error(transparent)]
    Journal(#[from] keel_journal::JournalError),
    /// The intent id was used before for a different operation, path or content.
    #[error("intent {intent} was already used for {recorded}; this request is {presented}")]
    IntentConflict {
        /// The intent id.
        intent: IntentId,
        /// What the mutation log records for it.
        recorded: String,
        /// What this request asks.
        presented: String,
    },
    /// The request is malformed (an intent id, an expectation the operation cannot take).
    #[error("{what}: {reason}")]
    InvalidRequest {
        /// What was wrong.
        what: String,
        /// Why.
        reason: &'static str,
    },
    /// The content is larger than the limit.
    #[error("{}: content of {bytes} bytes exceeds the limit of {bytes_max}", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The content's size.
        bytes: u64,
        /// The limit.
        bytes_max: u64,
    },
    /// The path exists but is not a regular file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The path does not exist (for `hash`).
    #[error("{}: does not exist", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The mutation log holds whole lines that are not its records, and no review has excused
    /// them. Every operation (and opening) is refused until one does
    /// ([`Mutator::review_log`](crate::Mutator::review_log)): a lost line may have been an
    /// intent's, and acting without it could apply that intent twice or undo it wrongly.
    #[error(
        "{}: {first} is damaged ({more} more damaged lines); no mutation runs until an operator \
         reviews the log (`keel fs review`, Mutator::review_log)",
        path.display()
    )]
    LogDamaged {
        /// The mutation log.
        path: PathBuf,
        /// The first damaged line.
        first: crate::log::DamagedLine,
        /// How many more there are.
        more: u64,
    },
    /// The workspace is bound to another lease journal than the one given (see
    /// [`JOURNAL_BINDING_NAME`](crate::JOURNAL_BINDING_NAME)).
    #[error(
        "workspace {} is bound to the lease journal {bound}, not {given}: a stale copy or a wrong \
         $KEEL_JOURNAL would let a released lease's generation through the gate (if the journal \
         really moved, remove {})",
        root.display(),
        binding.display()
    )]
    JournalMismatch {
        /// The workspace root.
        root: PathBuf,
        /// The journal it is bound to.
        bound: String,
        /// The journal given.
        given: String,
        /// The binding file.
        binding: PathBuf,
    },
    /// A mutation-log line could not be written as JSON (a bug).
    #[error("encoding a mutation-log record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl MutateError {
    /// The file the error concerns, when it names one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Io { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotAFile { path }
            | Self::NotFound { path }
            | Self::LogDamaged { path, .. } => Some(path),
            Self::JournalMismatch { binding, .. } => Some(binding),
            Self::Fs(error) => Some(error.path()),
            Self::Resolve(error) => Some(error.path()),
            Self::Journal(error) => error.path(),
            Self::IntentConflict { .. } | Self::InvalidRequest { .. } | Self::Encode(_) => None,
        }
    }

    /// The 1-based line of [`Self::path`] the error concerns, when it names one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::LogDamaged { first, .. } => Some(first.line),
            Self::Journal(error) => error.line(),
            _ => None,
        }
    }

    /// The kind of failure: a busy lock, a path the gate refuses (outside the root, through a
    /// symbolic link), a request that cannot be used, or I/O.
    pub fn kind(&self) -> keel_fs::ErrorKind {
        use keel_fs::{ErrorKind, FsError, ResolveError};
        match self {
            Self::Fs(FsError::LockBusy { .. })
            | Self::Journal(keel_journal::JournalError::Fs(FsError::LockBusy { .. })) => ErrorKind::Busy,
            Self::IntentConflict { .. }
            | Self::InvalidRequest { .. }
            | Self::TooLarge { .. }
            | Self::JournalMismatch { .. } => ErrorKind::Usage,
            Self::Resolve(
                ResolveError::Escapes { .. } | ResolveError::Symlink { .. } | ResolveError::Invalid { .. },
            ) => ErrorKind::Refused,
            _ => ErrorKind::Io,
        }
    }

    /// An I/O error on `path` during `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        Self::Io { op, path: path.into(), source: source.into() }
    }
}
