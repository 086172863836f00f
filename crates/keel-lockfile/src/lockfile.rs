//! The section-preserving shared lockfile (seed 001): stage sections in memory, then `flush`
//! re-reads the file under the sidecar-directory lock and re-applies only the staged keys.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use keel_fs::{DirSync, OsStorage, Release, Storage, write_atomic_with};
use keel_kernel::merge::{
    Change, INPUTS_DIGEST_KEY, Staged, check_section_name, fresh_lockfile, merge_sections, parse_lockfile,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::LockfileError;
use crate::lock::acquire_sidecar;
use crate::read::{Found, read_document};

/// The default limit on a lockfile's size: 16 MiB. A larger file is refused unread.
pub const DOCUMENT_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;

/// How a [`Lockfile`] behaves. `Default` is what the CLI uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockfileOptions {
    /// How long `flush` waits for the sidecar lock before failing with "lock busy".
    pub lock_timeout_ms: u64,
    /// A sidecar lock whose holder is older than this is stale and reclaimed (seconds, by the
    /// holder's clock against ours).
    pub stale_ttl_s: u64,
    /// The largest document read or written, in bytes.
    pub document_bytes_max: u64,
    /// The owner name written into the sidecar lock's holder file.
    pub owner: String,
}

impl Default for LockfileOptions {
    fn default() -> Self {
        Self {
            // Longer than the stale age: a writer that waits this long can reclaim a lock its
            // killed holder left, however it is judged.
            lock_timeout_ms: 45_000,
            stale_ttl_s: 30,
            document_bytes_max: DOCUMENT_BYTES_MAX_DEFAULT,
            owner: "keel lockfile".to_owned(),
        }
    }
}

/// What a [`Lockfile::flush`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Whether the file was written (`false`: the document on disk already held every staged
    /// value, nothing was written).
    pub written: bool,
    /// Bytes of the document now on disk.
    pub bytes: u64,
    /// How many staged keys (sections and the digest) were applied.
    pub staged_keys: usize,
    /// The previous holder, when this flush reclaimed a stale sidecar lock.
    pub reclaimed_from: Option<String>,
    /// Whether the directory fsync happened (`None`: nothing was written).
    pub dir_sync: Option<DirSync>,
}

#[derive(Debug)]
struct State {
    /// The document as last read (at open or flush) with this handle's staged changes applied.
    view: Map<String, Value>,
    /// Changes since the last successful flush.
    staged: Staged,
}

/// A shared lockfile: one JSON object of `lock_version`, an optional `inputs_digest` and opaque
/// sections that independent tools own.
///
/// Reads come from this handle's view (the file as last read, plus what it staged). Writes are
/// staged in memory and reach the disk only by [`Lockfile::flush`], which merges them into the
/// file as it is at that moment, so sections other processes wrote meanwhile survive. The handle
/// is `Sync`: share it between threads; calls on one handle serialize, a flush included.
#[derive(Debug)]
pub struct Lockfile<S: Storage = OsStorage> {
    path: PathBuf,
    storage: S,
    options: LockfileOptions,
    state: Mutex<State>,
}

impl Lockfile<OsStorage> {
    /// Opens the lockfile at `path` on the real file system with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LockfileError> {
        Self::open_with(OsStorage, path, LockfileOptions::default())
    }
}

impl<S: Storage> Lockfile<S> {
    /// Opens the lockfile at `path` through `storage` (tests pass a failing or crashing one).
    ///
    /// A missing file is a fresh document holding only `lock_version`; nothing is created until a
    /// flush. A present file must parse as a lockfile this code understands.
    pub fn open_with(storage: S, path: impl AsRef<Path>, options: LockfileOptions) -> Result<Self, LockfileError> {
        // A symlinked lockfile is read, locked and replaced at its target, so the link survives
        // and writers through the link and through the target exclude each other.
        let path = keel_fs::resolve_symlinks(path.as_ref())?;
        let view = read_lockfile(&storage, &path, &options, "open")?.unwrap_or_else(fresh_lockfile);
        Ok(Self { path, storage, options, state: Mutex::new(State { view, staged: Staged::new() }) })
    }

    /// The lockfile's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data changed by single assignments; a panic elsewhere cannot leave it
        // half-updated, so keep using it rather than cascading the panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_name(&self, op: &'static str, name: &str) -> Result<(), LockfileError> {
        check_section_name(name).map_err(|source| LockfileError::Name { op, path: self.path.clone(), source })
    }

    /// Decodes section `name` into `T`; `Ok(None)` when there is no such section.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, LockfileError> {
        self.check_name("read section", name)?;
        let Some(value) = self.state().view.get(name).cloned() else {
            return Ok(None);
        };
        serde_json::from_value(value).map(Some).map_err(|source| LockfileError::Decode {
            path: self.path.clone(),
            section: name.to_owned(),
            source,
        })
    }

    /// Section `name` as the JSON value it holds, numbers spelled as in the file (reading it
    /// through [`section`](Self::section) as a `Value` would respell `1.10` as `1.1`).
    pub fn section_value(&self, name: &str) -> Result<Option<Value>, LockfileError> {
        self.check_name("read section", name)?;
        Ok(self.state().view.get(name).cloned())
    }

    /// The names of every section in this handle's view, sorted (reserved keys excluded).
    pub fn section_names(&self) -> Vec<String> {
        self.state().view.keys().filter(|k| check_section_name(k).is_ok()).cloned().collect()
    }

    /// The whole document as this handle sees it (the file as last read plus what it staged).
    pub fn document(&self) -> Value {
        Value::Object(self.state().view.clone())
    }

    /// Stages section `name` with `value`; the next flush writes it.
    pub fn set_section<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), LockfileError> {
        self.check_name("set section", name)?;
        let encoded = serde_json::to_vec(value).map_err(|source| LockfileError::Encode {
            path: self.path.clone(),
            section: name.to_owned(),
            source,
        })?;
        if encoded.len() as u64 > self.options.document_bytes_max {
            return Err(LockfileError::TooLarge {
                op: "set section",
                path: self.path.clone(),
                bytes: encoded.len() as u64,
                bytes_max: self.options.document_bytes_max,
            });
        }
        // The document holds the section one level deeper: it must still read back there (a
        // value nested 127 deep parses alone, and would make the whole lockfile unreadable).
        let nested = [&b"["[..], &encoded, b"]"].concat();
        serde_json::from_slice::<serde_json::Value>(&nested).map_err(|source| LockfileError::Encode {
            path: self.path.clone(),
            section: name.to_owned(),
            source,
        })?;
        let value: Value = serde_json::from_slice(&encoded).map_err(|source| LockfileError::Encode {
            path: self.path.clone(),
            section: name.to_owned(),
            source,
        })?;
        self.stage(name, Change::Set(value))
    }

    /// Stages the removal of section `name` (a no-op on disk if it is absent there at flush).
    pub fn remove_section(&self, name: &str) -> Result<(), LockfileError> {
        self.check_name("remove section", name)?;
        self.stage(name, Change::Remove)
    }

    fn stage(&self, name: &str, change: Change) -> Result<(), LockfileError> {
        let mut state = self.state();
        match &change {
            Change::Set(value) => state.view.insert(name.to_owned(), value.clone()),
            Change::Remove => state.view.remove(name),
        };
        state.staged.stage_section(name, change).map_err(|source| LockfileError::Name {
            op: "set section",
            path: self.path.clone(),
            source,
        })
    }

    /// The inputs digest in this handle's view.
    pub fn inputs_digest(&self) -> Option<String> {
        self.state().view.get(INPUTS_DIGEST_KEY).and_then(Value::as_str).map(str::to_owned)
    }

    /// Stages the inputs digest; an empty `digest` stages its removal.
    pub fn set_inputs_digest(&self, digest: &str) -> Result<(), LockfileError> {
        let mut state = self.state();
        state.staged.stage_inputs_digest(digest).map_err(|source| LockfileError::Name {
            op: "set inputs digest",
            path: self.path.clone(),
            source,
        })?;
        if digest.is_empty() {
            state.view.remove(INPUTS_DIGEST_KEY);
        } else {
            state.view.insert(INPUTS_DIGEST_KEY.to_owned(), Value::String(digest.to_owned()));
        }
        Ok(())
    }

    /// Whether anything is staged and not yet flushed.
    pub fn has_staged(&self) -> bool {
        !self.state().staged.is_empty()
    }

    /// Writes the staged keys into the file without losing anyone else's.
    ///
    /// Under the sidecar-directory lock (`<path>.lock/`, waited for at most
    /// [`LockfileOptions::lock_timeout_ms`], reclaimed when stale): re-read the file, apply only
    /// the staged keys ([`merge_sections`]), write atomically with file and directory fsync,
    /// release. On success the staged set is empty and the view is the file as written; on any
    /// error the file is the old one or the new one and the staged keys stay staged, so calling
    /// `flush` again is always safe.
    pub fn flush(&self) -> Result<FlushReport, LockfileError> {
        let mut state = self.state();
        let mut lock =
            acquire_sidecar(&self.path, &self.options.owner, self.options.stale_ttl_s, self.options.lock_timeout_ms)?;
        let reclaimed_from = lock.reclaimed_from().map(str::to_owned);
        let on_disk = read_lockfile(&self.storage, &self.path, &self.options, "flush")?;
        let merged = merge_sections(on_disk.as_ref().unwrap_or(&Map::new()), &state.staged);
        let staged_keys = state.staged.sections().len() + usize::from(state.staged.inputs_digest().is_some());
        let mut bytes = serde_json::to_vec_pretty(&merged).expect("JSON values serialise into memory");
        bytes.push(b'\n');
        let mut report =
            FlushReport { written: false, bytes: bytes.len() as u64, staged_keys, reclaimed_from, dir_sync: None };
        if on_disk.as_ref() != Some(&merged) {
            if bytes.len() as u64 > self.options.document_bytes_max {
                return Err(LockfileError::TooLarge {
                    op: "flush",
                    path: self.path.clone(),
                    bytes: bytes.len() as u64,
                    bytes_max: self.options.document_bytes_max,
                });
            }
            let written = write_atomic_with(&self.storage, &self.path, &bytes)?;
            report.written = true;
            report.dir_sync = Some(written.dir_sync);
        }
        match lock.release()? {
            Release::Removed => {}
            release => return Err(LockfileError::LockLost { path: self.path.clone(), release }),
        }
        state.view = merged;
        state.staged = Staged::new();
        Ok(report)
    }
}

/// Reads and checks the lockfile; `None` when there is none.
fn read_lockfile<S: Storage>(
    storage: &S,
    path: &Path,
    options: &LockfileOptions,
    op: &'static str,
) -> Result<Option<Map<String, Value>>, LockfileError> {
    match read_document(storage, path, options.document_bytes_max)? {
        Found::Missing => Ok(None),
        Found::TooLarge { bytes } => {
            Err(LockfileError::TooLarge { op, path: path.to_owned(), bytes, bytes_max: options.document_bytes_max })
        }
        Found::Bytes(bytes) => parse_lockfile(&bytes).map(Some).map_err(|source| LockfileError::Document {
            op,
            path: path.to_owned(),
            source,
        }),
    }
}
