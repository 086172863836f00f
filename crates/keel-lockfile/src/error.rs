//! The errors of the lockfile and of the config store: every variant names the operation or the
//! path it concerns, so a message read alone says which document failed and how.

use std::path::PathBuf;

use keel_fs::{ErrorKind, FsError, Release};
use keel_kernel::merge::{DocumentError, SectionNameError};

/// An error from [`crate::Lockfile`].
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    /// The file system failed, or the sidecar lock stayed busy past the timeout
    /// ([`FsError::LockBusy`]).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The document on disk is not a lockfile this code may rewrite (invalid JSON with its
    /// position, not an object, a newer `lock_version`). The file was not written.
    #[error("{op} {}: {source}; the file was left untouched", path.display())]
    Document {
        /// `"open"` or `"flush"`.
        op: &'static str,
        /// The lockfile.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DocumentError,
    },
    /// The document (on disk, or as it would be written) is larger than the limit.
    #[error("{op} {}: document of {bytes} bytes exceeds the limit of {bytes_max} bytes", path.display())]
    TooLarge {
        /// `"open"`, `"flush"` or `"set section"`.
        op: &'static str,
        /// The lockfile.
        path: PathBuf,
        /// The size found (or at least this much).
        bytes: u64,
        /// The limit ([`crate::LockfileOptions::document_bytes_max`]).
        bytes_max: u64,
    },
    /// A section name or digest that cannot be used (empty, too long, reserved).
    #[error("{op} {}: {source}", path.display())]
    Name {
        /// `"read section"`, `"set section"`, `"remove section"` or `"set inputs digest"`.
        op: &'static str,
        /// The lockfile.
        path: PathBuf,
        /// Why.
        #[source]
        source: SectionNameError,
    },
    /// A section's value does not decode into the caller's type.
    #[error("read section {section:?} of {}: {source}", path.display())]
    Decode {
        /// The lockfile.
        path: PathBuf,
        /// The section.
        section: String,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// The caller's value does not encode as JSON (a map with non-string keys, ...).
    #[error("set section {section:?} of {}: {source}", path.display())]
    Encode {
        /// The lockfile.
        path: PathBuf,
        /// The section.
        section: String,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// The document was written, but at release the sidecar lock was no longer this flush's (it
    /// outlived the stale TTL and was reclaimed): another writer may have overwritten the write.
    /// The staged keys stay staged; flush again.
    #[error(
        "flush {}: wrote the document, but the sidecar lock was no longer ours at release ({release:?}); \
         another writer may have overwritten it: flush again",
        path.display()
    )]
    LockLost {
        /// The lockfile.
        path: PathBuf,
        /// What the release found.
        release: Release,
    },
}

/// An error from [`crate::ConfigStore`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file system failed, or the writer lock stayed busy past the timeout
    /// ([`FsError::LockBusy`]).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The caller expected a generation the store is no longer (or not yet) at. Nothing was written.
    #[error("{}: generation conflict: expected {expected}, current {current}", path.display())]
    GenerationConflict {
        /// The config file.
        path: PathBuf,
        /// The generation the caller expected.
        expected: u64,
        /// The generation the store holds.
        current: u64,
    },
    /// The generation counter is at `u64::MAX`.
    #[error("{}: generation {current} cannot increase further", path.display())]
    GenerationExhausted {
        /// The config file.
        path: PathBuf,
        /// The generation the store holds.
        current: u64,
    },
    /// The file on disk is not a config store this code may rewrite. The file was not written.
    #[error("{op} {}: {reason}; the file was left untouched", path.display())]
    Corrupt {
        /// `"read"` or the write being attempted.
        op: &'static str,
        /// The config file.
        path: PathBuf,
        /// What is wrong, with the position for invalid JSON.
        reason: String,
    },
    /// A config (given, or produced by a patch) would not read back once written: it nests
    /// deeper than a JSON reader goes. Nothing was written.
    #[error("{op} {}: the config could not be read back once written ({reason}); nothing was written", path.display())]
    Unreadable {
        /// `"set"` or `"patch"`.
        op: &'static str,
        /// The config file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A config (given, or produced by a patch) is not a JSON object. Nothing was written.
    #[error("{op} {}: the config must be a JSON object, got {found}", path.display())]
    NotAnObject {
        /// `"set"` or `"patch"`.
        op: &'static str,
        /// The config file.
        path: PathBuf,
        /// What it was.
        found: &'static str,
    },
    /// The file (on disk, or as it would be written) is larger than the limit.
    #[error("{op} {}: document of {bytes} bytes exceeds the limit of {bytes_max} bytes", path.display())]
    TooLarge {
        /// `"read"`, `"set"` or `"patch"`.
        op: &'static str,
        /// The config file.
        path: PathBuf,
        /// The size found (or at least this much).
        bytes: u64,
        /// The limit ([`crate::ConfigOptions::document_bytes_max`]).
        bytes_max: u64,
    },
}

impl LockfileError {
    /// The document (or its sidecar lock) the error concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Fs(error) => error.path(),
            Self::Document { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Name { path, .. }
            | Self::Decode { path, .. }
            | Self::Encode { path, .. }
            | Self::LockLost { path, .. } => path,
        }
    }

    /// Whether this is the lock staying busy past the timeout (the CLI's exit 3).
    pub fn is_lock_busy(&self) -> bool {
        matches!(self, Self::Fs(FsError::LockBusy { .. }))
    }

    /// The kind of failure: a busy lock, a bad section name or value, or I/O.
    pub fn kind(&self) -> ErrorKind {
        match self {
            _ if self.is_lock_busy() => ErrorKind::Busy,
            Self::Name { .. } | Self::Encode { .. } => ErrorKind::Usage,
            _ => ErrorKind::Io,
        }
    }
}

impl ConfigError {
    /// The config (or its lock) the error concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Fs(error) => error.path(),
            Self::GenerationConflict { path, .. }
            | Self::GenerationExhausted { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Unreadable { path, .. }
            | Self::NotAnObject { path, .. }
            | Self::TooLarge { path, .. } => path,
        }
    }

    /// Whether this is the lock staying busy past the timeout (the CLI's exit 3).
    pub fn is_lock_busy(&self) -> bool {
        matches!(self, Self::Fs(FsError::LockBusy { .. }))
    }

    /// The kind of failure: a generation that moved on (refused), a config that is not an object
    /// (usage), a busy lock, or I/O.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::GenerationConflict { .. } => ErrorKind::Refused,
            Self::NotAnObject { .. } | Self::Unreadable { .. } => ErrorKind::Usage,
            _ if self.is_lock_busy() => ErrorKind::Busy,
            _ => ErrorKind::Io,
        }
    }
}
