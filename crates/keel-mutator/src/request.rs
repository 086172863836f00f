//! What a caller asks for (a [`Request`] with its [`Expect`]ed pre-state and [`IntentId`]) and
//! what it gets back (an [`Outcome`]).

use std::fmt;

use keel_journal::Grant;
use keel_kernel::gate::{Holder, Refusal};
use serde::{Deserialize, Serialize};

use crate::error::MutateError;

/// The longest intent id accepted, in bytes (it becomes part of temporary file names).
pub const INTENT_BYTES_MAX: usize = 64;

/// An intent id: 1 to [`INTENT_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`, not starting with `.`.
/// A retry presents the same id; the mutation log makes the effect happen once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntentId(String);

impl IntentId {
    /// Validates `text` as an intent id.
    pub fn new(text: &str) -> Result<Self, MutateError> {
        let invalid = |reason| MutateError::InvalidRequest { what: format!("intent id {text:?}"), reason };
        if text.is_empty() || text.len() > INTENT_BYTES_MAX {
            return Err(invalid("must be 1 to 64 bytes"));
        }
        if text.starts_with('.') {
            return Err(invalid("must not start with `.`"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(invalid("may hold only ASCII letters, digits, `.`, `_` and `-`"));
        }
        Ok(Self(text.to_owned()))
    }

    /// A fresh random id (128 bits, hex). Retrying with a fresh id is a new intent.
    pub fn generate() -> Result<Self, MutateError> {
        let mut bytes = [0_u8; 16];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).map_err(|e| MutateError::Io {
            op: "getrandom",
            path: "intent id".into(),
            source: e.into(),
        })?;
        let mut text = String::with_capacity(32);
        for byte in bytes {
            use std::fmt::Write as _;
            let _ = write!(text, "{byte:02x}");
        }
        Ok(Self(text))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The pre-state the caller expects, as it last read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The file exists and its content has this blake3 hash (64 lowercase hex digits).
    Hash(String),
    /// The file does not exist.
    Absent,
    /// Anything: the caller explicitly does not care (a delete still needs a file to delete).
    Any,
}

impl Expect {
    /// The expectation that a file holds the content whose blake3 `hash` a caller read (64 hex
    /// digits, in either case); `None` for anything else.
    pub fn hash(hash: &str) -> Option<Self> {
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self::Hash(hash.to_ascii_lowercase()))
    }

    /// Whether `actual` satisfies the expectation.
    pub fn admits(&self, actual: &PreState) -> bool {
        match (self, actual) {
            (Expect::Any, _) | (Expect::Absent, PreState::Absent) => true,
            (Expect::Hash(expected), PreState::Present { hash }) => expected.eq_ignore_ascii_case(hash),
            _ => false,
        }
    }

    /// The text recorded in the mutation log: the hash, `absent` or `any`.
    pub fn as_log_text(&self) -> &str {
        match self {
            Expect::Hash(hash) => hash,
            Expect::Absent => "absent",
            Expect::Any => "any",
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_log_text())
    }
}

/// What a path held when it was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PreState {
    /// No file.
    Absent,
    /// A regular file with this content hash.
    Present {
        /// blake3 of the content, lowercase hex.
        hash: String,
    },
}

impl fmt::Display for PreState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreState::Absent => f.write_str("absent"),
            PreState::Present { hash } => f.write_str(hash),
        }
    }
}

/// The blake3 hash of `content`, as lowercase hex: what [`Expect::Hash`] compares with.
pub fn content_hash(content: &[u8]) -> String {
    blake3::hash(content).to_hex().to_string()
}

/// A mutation request: whose lease, which fencing token, what the caller last read, which intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The holder: owner, lane, optional exact `loop_ts`, and the generation it was granted.
    pub holder: Holder,
    /// The pre-state the caller expects (of the source, for a rename).
    pub expect: Expect,
    /// The intent id; a retry presents the same one.
    pub intent: IntentId,
}

impl Request {
    /// A request on behalf of the lease `grant` (as `Journal::acquire` returned it), held by
    /// `owner`.
    pub fn for_grant(grant: &Grant, owner: &str, expect: Expect, intent: IntentId) -> Self {
        Self {
            holder: Holder {
                owner: owner.to_owned(),
                lane: grant.identity.lane.clone(),
                loop_ts: Some(grant.identity.loop_ts.clone()),
                generation: grant.generation,
            },
            expect,
            intent,
        }
    }
}

/// Which operation an intent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Replace or create a file's content.
    Write,
    /// Remove a file.
    Delete,
    /// Move a file to a new, absent path.
    Rename,
}

impl Op {
    /// `write`, `delete` or `rename`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Delete => "delete",
            Op::Rename => "rename",
        }
    }
}

/// Whether the directory fsync after a rename happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirSyncStatus {
    /// Synced: the change survives a power loss.
    Synced,
    /// The file system does not support a directory fsync; the change is visible but its
    /// durability is the file system's.
    Unsupported,
}

impl From<keel_fs::DirSync> for DirSyncStatus {
    fn from(value: keel_fs::DirSync) -> Self {
        match value {
            keel_fs::DirSync::Synced => DirSyncStatus::Synced,
            keel_fs::DirSync::Unsupported => DirSyncStatus::Unsupported,
        }
    }
}

/// What a mutation came to. Every refusal changed nothing: no file, no generation, no counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[must_use = "a refusal is an outcome, not an error: check it"]
pub enum Outcome {
    /// The content landed, durably.
    Written {
        /// The path written.
        path: String,
        /// The new content's hash.
        hash: String,
        /// Bytes written.
        bytes: u64,
        /// Permission bits kept from the replaced file (`None`: it was created).
        mode_kept: Option<u32>,
        /// Whether the directory fsync happened.
        dir_sync: DirSyncStatus,
    },
    /// The file is gone, durably.
    Deleted {
        /// The path deleted.
        path: String,
        /// Whether the directory fsync happened.
        dir_sync: DirSyncStatus,
    },
    /// The file moved, durably.
    Renamed {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
        /// Whether the directory fsyncs happened (the worse of the two).
        dir_sync: DirSyncStatus,
    },
    /// This intent was already applied with the same operation and content: nothing was done.
    Duplicate {
        /// The intent id.
        intent: IntentId,
        /// Its operation.
        op: Op,
    },
    /// The gate refused: escape, outside the holder's tree, protected, or another holder's region.
    Forbidden {
        /// Why, naming the lease tree, entry or holder involved.
        refusal: Refusal,
    },
    /// The holder's fencing token is not the live one.
    StaleGeneration {
        /// The generation presented.
        presented: u64,
        /// The generation in force (`None`: no live lease there, or its generation is unknown).
        live: Option<u64>,
    },
    /// The content is not what the caller last read.
    PreconditionFailed {
        /// The path checked.
        path: String,
        /// What the caller expected.
        expected: Expect,
        /// What the path held.
        actual: PreState,
    },
    /// The file (or a directory on its path) was replaced between the check and the commit.
    InodeSwapped {
        /// The path.
        path: String,
    },
}

impl Outcome {
    /// Whether the caller's intent now holds: applied now or before.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Written { .. } | Outcome::Deleted { .. } | Outcome::Renamed { .. } | Outcome::Duplicate { .. }
        )
    }

    /// The variant's name, as in JSON (`written`, `stale_generation`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Written { .. } => "written",
            Outcome::Deleted { .. } => "deleted",
            Outcome::Renamed { .. } => "renamed",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Forbidden { .. } => "forbidden",
            Outcome::StaleGeneration { .. } => "stale_generation",
            Outcome::PreconditionFailed { .. } => "precondition_failed",
            Outcome::InodeSwapped { .. } => "inode_swapped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written { path, hash, bytes, .. } => write!(f, "wrote {path} ({bytes} bytes, {hash})"),
            Outcome::Deleted { path, .. } => write!(f, "deleted {path}"),
            Outcome::Renamed { from, to, .. } => write!(f, "renamed {from} to {to}"),
            Outcome::Duplicate { intent, op } => write!(f, "intent {intent} ({}) was already applied", op.as_str()),
            Outcome::Forbidden { refusal } => write!(f, "forbidden: {refusal}"),
            Outcome::StaleGeneration { presented, live: Some(live) } => {
                write!(f, "stale generation: presented {presented}, live {live}")
            }
            Outcome::StaleGeneration { presented, live: None } => {
                write!(f, "stale generation: presented {presented}, no live lease")
            }
            Outcome::PreconditionFailed { path, expected, actual } => {
                write!(f, "precondition failed on {path}: expected {expected}, found {actual}")
            }
            Outcome::InodeSwapped { path } => write!(f, "{path} was replaced between the check and the commit"),
        }
    }
}
