//! The store's one error type: every variant names the operation and the path (or the cursor)
//! it concerns, so a message alone tells an operator which file to look at.

use std::path::PathBuf;

use keel_fs::FsError;

use crate::id::IdError;

/// An error from the runtime store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An id cannot become a path component (empty, too long, NUL). Nothing was touched.
    #[error("{op}: {source}")]
    InvalidId {
        /// What was being done.
        op: &'static str,
        /// Why the id was refused.
        #[source]
        source: IdError,
    },
    /// A value handed in by the caller is out of bounds or malformed (status word, display name,
    /// record size). Nothing was written.
    #[error("{op}: {what}: {reason}")]
    InvalidInput {
        /// What was being done.
        op: &'static str,
        /// Which value.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A runtime, a worker or a file the store needs does not exist (a runtime or worker never
    /// created). The message names a runtime or worker by its id, never by its encoded directory.
    #[error("{op}: {}", missing_text(path, runtime_id.as_deref(), worker_id.as_deref()))]
    Missing {
        /// What was being done.
        op: &'static str,
        /// The path that is missing.
        path: PathBuf,
        /// The runtime that is missing, or whose worker is.
        runtime_id: Option<String>,
        /// The worker that is missing.
        worker_id: Option<String>,
    },
    /// A worker with this id already exists.
    #[error("{op} {}: worker {worker_id:?} already exists", path.display())]
    WorkerExists {
        /// What was being done.
        op: &'static str,
        /// The worker's directory.
        path: PathBuf,
        /// The worker id.
        worker_id: String,
    },
    /// A path the store expects to be a directory is something else (a file, a symlink).
    #[error("{op} {}: not a directory", path.display())]
    NotADirectory {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A snapshot has a schema version this build does not read.
    #[error("{op} {}: schema version {found}, this build reads version {supported}", path.display())]
    SchemaVersion {
        /// What was being done.
        op: &'static str,
        /// The snapshot file.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// A snapshot or record names another runtime or worker than the place it sits in (a worker
    /// file copied into another worker's directory, a transcript entry of another worker).
    #[error("{op} {}{}: {what} is {found:?} but the file belongs to {expected:?}", path.display(), line_suffix(*line))]
    Misplaced {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// 1-based line number for a JSON-lines file.
        line: Option<u64>,
        /// Which field (`"runtime id"`, `"worker id"`, `"worker ref"`).
        what: &'static str,
        /// What the location says it should be.
        expected: String,
        /// What the file says.
        found: String,
    },
    /// Stored data is damaged: unparseable snapshot, a complete line in the middle of a log that
    /// is not a valid record, ids out of sequence, counters that run ahead of the log.
    #[error("{op} {}{}: corrupt: {detail}", path.display(), line_suffix(*line))]
    Corrupt {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// 1-based line number for a JSON-lines file.
        line: Option<u64>,
        /// What is wrong.
        detail: String,
    },
    /// A log holds a damaged line no review has excused: appends to it wait until someone looks.
    #[error(
        "{op} {}: line {line} is damaged and unreviewed (it stands for record {key}): {excerpt:?}; \
         nothing more is appended to it until someone looks (`keel store check`) and accepts it \
         (`keel store review --accept --by NAME`)",
        path.display()
    )]
    Damaged {
        /// What was being done.
        op: &'static str,
        /// The log.
        path: PathBuf,
        /// Its 1-based line number.
        line: u64,
        /// The key it stands for.
        key: u64,
        /// Its first bytes.
        excerpt: String,
    },
    /// The file system failed, or the writer lock was busy ([`FsError::LockBusy`]). The store's
    /// handles to that file were dropped; the next call reopens them.
    #[error("{op}: {source}")]
    Fs {
        /// What the store was doing.
        op: &'static str,
        /// The file-system error (it names the path).
        #[source]
        source: FsError,
    },
    /// A caller asked about a worker of another runtime than this store's.
    #[error("{op}: worker ref names runtime {found:?}, this store is runtime {expected:?}")]
    WrongRuntime {
        /// What was being done.
        op: &'static str,
        /// This store's runtime.
        expected: String,
        /// The runtime named.
        found: String,
    },
    /// A cursor handed to `read_events` was issued by another runtime.
    #[error("{op}: cursor belongs to runtime {found:?}, this store is runtime {expected:?}")]
    WrongRuntimeCursor {
        /// What was being done.
        op: &'static str,
        /// This store's runtime.
        expected: String,
        /// The cursor's runtime.
        found: String,
    },
    /// A page limit (or a configured maximum) is above what is allowed.
    #[error("{op}: limit {limit} is above the maximum of {limit_max}")]
    LimitTooLarge {
        /// What was being done.
        op: &'static str,
        /// The limit asked for.
        limit: u64,
        /// The maximum in force.
        limit_max: u64,
    },
}

fn missing_text(path: &std::path::Path, runtime_id: Option<&str>, worker_id: Option<&str>) -> String {
    // The store's root (the directory holding `runtimes/`), where the ids were looked for.
    let root = || {
        let root = path.ancestors().find(|p| p.file_name().is_some_and(|n| n == "runtimes")).and_then(|p| p.parent());
        root.unwrap_or(path).display().to_string()
    };
    match (runtime_id, worker_id) {
        (Some(runtime_id), Some(worker_id)) => {
            format!("worker {worker_id:?} of runtime {runtime_id:?} not found in the store at {}", root())
        }
        (Some(runtime_id), None) => format!("runtime {runtime_id:?} not found in the store at {}", root()),
        _ => format!("{}: not found", path.display()),
    }
}

fn line_suffix(line: Option<u64>) -> String {
    line.map_or_else(String::new, |line| format!(" line {line}"))
}

impl StoreError {
    /// The file or directory the error concerns, when it names one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Missing { path, .. }
            | Self::WorkerExists { path, .. }
            | Self::NotADirectory { path, .. }
            | Self::SchemaVersion { path, .. }
            | Self::Misplaced { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Damaged { path, .. } => Some(path),
            Self::Fs { source, .. } => Some(source.path()),
            Self::InvalidId { .. }
            | Self::InvalidInput { .. }
            | Self::WrongRuntime { .. }
            | Self::WrongRuntimeCursor { .. }
            | Self::LimitTooLarge { .. } => None,
        }
    }

    /// The 1-based line of [`Self::path`] the error concerns, when it names one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Misplaced { line, .. } | Self::Corrupt { line, .. } => *line,
            Self::Damaged { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// Wraps a keel-fs error with the store operation it interrupted.
    pub fn fs(op: &'static str, source: FsError) -> Self {
        StoreError::Fs { op, source }
    }

    /// Wraps a raw I/O error with the operation and the path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Fs { op, source: FsError::io(op, path, source) }
    }

    /// A corrupt-data error.
    pub fn corrupt(op: &'static str, path: impl Into<PathBuf>, line: Option<u64>, detail: impl Into<String>) -> Self {
        StoreError::Corrupt { op, path: path.into(), line, detail: detail.into() }
    }

    /// This error, if it is [`StoreError::Missing`], as the runtime `runtime_id` (and, with
    /// `worker_id`, its worker) missing: what the caller asked for, not the path it looked at.
    #[must_use = "it returns the renamed error"]
    pub fn naming(self, runtime_id: &str, worker_id: Option<&str>) -> Self {
        match self {
            Self::Missing { op, path, .. } => Self::Missing {
                op,
                path,
                runtime_id: Some(runtime_id.to_owned()),
                worker_id: worker_id.map(str::to_owned),
            },
            other => other,
        }
    }

    /// Whether the error is the writer lock being held by someone else.
    pub fn is_lock_busy(&self) -> bool {
        matches!(self, StoreError::Fs { source: FsError::LockBusy { .. }, .. })
    }

    /// The kind of failure: a busy lock, bad input, something missing or in the wrong place
    /// (refused), damaged data, or I/O.
    pub fn kind(&self) -> keel_fs::ErrorKind {
        use keel_fs::ErrorKind;
        match self {
            _ if self.is_lock_busy() => ErrorKind::Busy,
            Self::InvalidId { .. } | Self::InvalidInput { .. } | Self::LimitTooLarge { .. } => ErrorKind::Usage,
            Self::Missing { .. }
            | Self::WorkerExists { .. }
            | Self::WrongRuntime { .. }
            | Self::WrongRuntimeCursor { .. } => ErrorKind::Refused,
            Self::Corrupt { .. } | Self::Damaged { .. } | Self::Misplaced { .. } | Self::SchemaVersion { .. } => {
                ErrorKind::Damaged
            }
            Self::NotADirectory { .. } | Self::Fs { .. } => ErrorKind::Io,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
