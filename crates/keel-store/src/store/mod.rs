//! [`FsRuntimeStore`]: one runtime's directory, its snapshots and its two kinds of log.
//!
//! # Writers
//! Every change runs under the runtime's writer lock (`runtimes/<id>.lock`, a [`OsLock`] that
//! dies with its holder) as: lock, bring the cached log tail up to date (rescanning only what
//! other processes appended), remove a torn tail (recording a diagnostic first), append with one
//! `write` + `fdatasync`, extend the index, update the snapshot, unlock. Nothing is acknowledged
//! before it is durable, nor built on a name that is not: a directory made visible by a rename
//! whose directory fsync then fails is renamed back, and `open_or_create` fsyncs the directories
//! it finds rather than makes (their maker may have died before doing it).
//!
//! # Readers
//! Reads take no lock: the logs only grow (except that a writer cuts off a torn tail, which no
//! reader was ever shown), so a reader sees a prefix of what writers acknowledged.
//!
//! # Counters
//! `runtime.json`'s `next_event_id` and `worker.json`'s `next_transcript_seq` are checkpoints,
//! refreshed whenever the snapshot is written for another reason: writing a snapshot per record
//! would triple the syncs of an append. The logs are authoritative and [`FsRuntimeStore::load`]
//! returns live values; a checkpoint ahead of its log is corruption (acknowledged records are
//! missing), so a checkpoint only counts records the writer knows are durable: ones it appended
//! itself, or synced before counting (a record it only scanned may be a failed or dead writer's,
//! not yet on disk). `worker.json`'s `last_event_id` is kept current by every event naming the
//! worker; a crash between the event's append and the snapshot write leaves it one event behind,
//! which the next writer repairs (that event is then the last line of the log), and a snapshot
//! write that failed after the event is written again by the handle's next event append.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use keel_fs::seam::{FileKind, dir_sync_status};
use keel_fs::{Appender, OsLock, OsStorage, Storage, write_atomic_with};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::disk::{is_too_large, read_file, read_whole, remove_tree};
use crate::error::{Result, StoreError};

mod check;
mod layout;
mod open;
mod read;
mod write;

use crate::id::{decode_id, encode_id, validate_id};
use crate::log::{FileIdentity, Keyed, Log, Scanner, Step, Tail, missing_or_io};
use crate::model::{
    DamagedLine, Diagnostic, Event, EventCursor, EventPage, LABEL_BYTES_MAX, Limits, PAGE_LIMIT_CEILING,
    RuntimeSnapshot, SCHEMA_VERSION, StoreState, TranscriptEntry, TranscriptPage, WorkerRef, WorkerSnapshot,
};
use layout::{
    check_word, create_empty_file, encode, exists, now_ms, read_snapshot, remove_leftover, rename_into_place,
    require_dir, sync_dir, to_json_line, write_snapshot,
};
pub use layout::{create_default_root, create_default_root_with, default_root, list_runtimes, list_runtimes_with};

/// The longest snapshot file read, in bytes (diagnostics are bounded; config bundles are small).
pub const SNAPSHOT_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The longest status word, in bytes.
pub const STATUS_BYTES_MAX: usize = 64;

/// How long a change waits for the writer lock by default, in milliseconds.
pub const LOCK_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Where a workspace's store lives, relative to the workspace root ([`default_root`]).
pub const STORE_DIR_DEFAULT: &str = ".keel/store";

const RUNTIMES_DIR: &str = "runtimes";
const RUNTIME_FILE: &str = "runtime.json";
const EVENTS_FILE: &str = "events.jsonl";
const EVENTS_INDEX_FILE: &str = "events.idx";
const WORKERS_DIR: &str = "workers";
const WORKER_FILE: &str = "worker.json";
const TRANSCRIPT_FILE: &str = "transcript.jsonl";
const TRANSCRIPT_INDEX_FILE: &str = "transcript.idx";
/// Prefix of a directory being built before it is renamed into place (ignored when listing).
const CREATING_PREFIX: &str = ".creating-";
/// The suffix of a log's review file: the damaged lines someone looked at and accepted.
const REVIEWED_SUFFIX: &str = ".reviewed";
/// The largest review file read.
const REVIEWED_BYTES_MAX: u64 = 1024 * 1024;

/// One page read from a log.
struct Page<R> {
    items: Vec<R>,
    damaged: Vec<DamagedLine>,
    has_more: bool,
    /// The key after the last line the page took.
    next_key: u64,
}

impl<R> Default for Page<R> {
    fn default() -> Self {
        Self { items: Vec::new(), damaged: Vec::new(), has_more: false, next_key: 0 }
    }
}

/// What a review file holds.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
struct Reviewed {
    /// `(line, BLAKE3 of its text)` of each damaged line accepted.
    excuses: Vec<(u64, String)>,
    /// Who looked, most recent last.
    by: Vec<String>,
}

fn reviewed_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(REVIEWED_SUFFIX);
    PathBuf::from(name)
}

/// The damaged lines of `log` someone accepted; none when there is no review file. A review file
/// that cannot be read excuses nothing (appends keep waiting: fail closed).
fn reviewed_lines<S: Storage>(storage: &S, log: &Path, op: &'static str) -> Result<Vec<(u64, String)>> {
    let path = reviewed_path(log);
    let bytes = match read_file(storage, &path, REVIEWED_BYTES_MAX) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound || is_too_large(&e) => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(op, &path, e)),
    };
    Ok(serde_json::from_slice::<Reviewed>(&bytes).map(|r| r.excuses).unwrap_or_default())
}

/// Every damaged line of `log`, from its first line.
fn damage_in<R: DeserializeOwned + Keyed, S: Storage + Clone>(
    storage: &S,
    log: &Log,
    op: &'static str,
) -> Result<Vec<crate::log::Damage>> {
    let mut damage = Vec::new();
    let mut scanner = match Scanner::<R, S>::open(storage, log, 0, log.first_key, op) {
        Err(StoreError::Missing { .. }) => return Ok(damage),
        scanner => scanner?,
    };
    loop {
        match scanner.next(op)? {
            Step::Damaged(d) => damage.push(d),
            Step::Record { .. } => {}
            Step::Torn(_) | Step::End => return Ok(damage),
        }
    }
}

/// Appends to a log wait until every damaged line its scans found has been reviewed.
fn refuse_unreviewed<S: Storage>(storage: &S, handle: &LogHandle<S>, op: &'static str) -> Result<()> {
    let Some(tail) = handle.tail.as_ref().filter(|t| !t.damage.is_empty()) else { return Ok(()) };
    let reviewed = reviewed_lines(storage, &handle.log.path, op)?;
    match tail.damage.iter().find(|d| !reviewed.contains(&(d.line, d.raw_blake3.clone()))) {
        Some(d) => Err(StoreError::Damaged {
            op,
            path: handle.log.path.clone(),
            line: d.line,
            key: d.key,
            excerpt: d.excerpt.clone(),
        }),
        None => Ok(()),
    }
}

impl Keyed for Event {
    fn key(&self) -> u64 {
        self.id
    }
}

impl Keyed for TranscriptEntry {
    fn key(&self) -> u64 {
        self.seq
    }
}

/// How to open or create a runtime.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The store's root (it must exist); runtimes live in `<root>/runtimes/`. A workspace's is
    /// [`default_root`] of the workspace root.
    pub root: PathBuf,
    /// The runtime's id.
    pub runtime_id: String,
    /// Its display name when created (default: the id).
    pub display_name: Option<String>,
    /// Its backend when created.
    pub backend: String,
    /// Its limits when created (an existing runtime keeps the limits it was created with).
    pub limits: Limits,
    /// How long a change waits for the writer lock.
    pub lock_timeout_ms: u64,
}

impl StoreOptions {
    /// Options for runtime `runtime_id` under `root`, with default limits.
    pub fn new(root: impl Into<PathBuf>, runtime_id: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            runtime_id: runtime_id.into(),
            display_name: None,
            backend: "local".to_owned(),
            limits: Limits::default(),
            lock_timeout_ms: LOCK_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The runtime checked.
    pub runtime_id: String,
    /// Valid events in the log.
    pub events: u64,
    /// Workers.
    pub workers: u64,
    /// Valid transcript entries, all workers together.
    pub transcript_entries: u64,
    /// Damage: every entry makes the store unclean.
    pub problems: Vec<String>,
    /// Tolerated states that the next append repairs (torn tails, a stale index entry, a
    /// worker snapshot one event behind).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A log with what this handle last knew about its tail and an open appender.
struct LogHandle<S: Storage> {
    log: Log,
    tail: Option<Tail>,
    /// Whether the tail was scanned or written under the writer lock (a tail scanned by a
    /// lock-free open may have raced a writer that crashed before updating a snapshot).
    tail_locked: bool,
    appender: Option<Appender<S>>,
    /// How many records this handle knows to be durable (the key after them): it made them
    /// durable itself. A record it only scanned may be another writer's unsynced write, or its
    /// own failed one, which a power cut can still take away; no counter written to a snapshot
    /// may count it, or the snapshot would claim records the log then lacks.
    durable_next_key: u64,
}

impl<S: Storage> LogHandle<S> {
    fn new(log: Log, tail: Option<Tail>) -> Self {
        let durable_next_key = log.first_key;
        Self { log, tail, tail_locked: false, appender: None, durable_next_key }
    }
}

/// The filesystem runtime store of one runtime. See the crate documentation.
///
/// Every file operation goes through `storage` (keel-fs's [`Storage`] seam: the real file
/// system by default, a failing or crashing one in tests); only the writer lock is always a
/// real [`OsLock`] on the real file system, at the same path names.
pub struct FsRuntimeStore<S: Storage + Clone = OsStorage> {
    storage: S,
    runtime_id: String,
    dir: PathBuf,
    lock_path: PathBuf,
    limits: Limits,
    lock_timeout_ms: u64,
    events: LogHandle<S>,
    transcripts: HashMap<String, LogHandle<S>>,
    /// A worker whose snapshot write after its event failed (and the event's id): the snapshot
    /// may be visible but not durable, so the next event append writes it again.
    stale_worker: Option<(String, u64)>,
}

impl<S: Storage + Clone> std::fmt::Debug for FsRuntimeStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsRuntimeStore")
            .field("runtime_id", &self.runtime_id)
            .field("dir", &self.dir)
            .field("lock_path", &self.lock_path)
            .field("limits", &self.limits)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .finish_non_exhaustive()
    }
}
