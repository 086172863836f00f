//! [`FsRuntimeStore`]: one runtime's directory, its snapshots and its two kinds of log.
//!
//! # Writers
//! Every change runs under the runtime's writer lock (`runtimes/<id>.lock`, a [`OsLock`] that
//! dies with its holder) as: lock, bring the cached log tail up to date (rescanning only what
//! other processes appended), remove a torn tail (recording a diagnostic first), append with one
//! `write` + `fdatasync`, extend the index, update the snapshot, unlock. Nothing is acknowledged
//! before it is durable.
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
//! missing). `worker.json`'s `last_event_id` is kept current by every event naming the worker; a
//! crash between the event's append and the snapshot write leaves it one event behind, which the
//! next writer repairs (that event is then the last line of the log).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use keel_fs::{Appender, OsLock, write_atomic};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::id::{decode_id, encode_id, validate_id};
use crate::log::{FileIdentity, Keyed, Log, Scanner, Step, Tail, missing_or_io};
use crate::model::{
    DamagedLine, Diagnostic, Event, EventCursor, EventPage, LABEL_BYTES_MAX, Limits, PAGE_LIMIT_CEILING,
    RuntimeSnapshot, SCHEMA_VERSION, StoreState, TranscriptEntry, TranscriptPage, WorkerRef, WorkerSnapshot,
};

/// The longest snapshot file read, in bytes (diagnostics are bounded; config bundles are small).
pub const SNAPSHOT_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The longest status word, in bytes.
pub const STATUS_BYTES_MAX: usize = 64;

/// How long a change waits for the writer lock by default, in milliseconds.
pub const LOCK_TIMEOUT_MS_DEFAULT: u64 = 10_000;

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
fn reviewed_lines(log: &Path, op: &'static str) -> Result<Vec<(u64, String)>> {
    let path = reviewed_path(log);
    match fs::metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(op, &path, e)),
        Ok(meta) if meta.len() > REVIEWED_BYTES_MAX => return Ok(Vec::new()),
        Ok(_) => {}
    }
    let bytes = fs::read(&path).map_err(|e| StoreError::io(op, &path, e))?;
    Ok(serde_json::from_slice::<Reviewed>(&bytes).map(|r| r.excuses).unwrap_or_default())
}

/// Every damaged line of `log`, from its first line.
fn damage_in<R: DeserializeOwned + Keyed>(log: &Log, op: &'static str) -> Result<Vec<crate::log::Damage>> {
    let mut damage = Vec::new();
    if !log.path.exists() {
        return Ok(damage);
    }
    let mut scanner = Scanner::<R>::open(log, 0, log.first_key, op)?;
    loop {
        match scanner.next(op)? {
            Step::Damaged(d) => damage.push(d),
            Step::Record { .. } => {}
            Step::Torn(_) | Step::End => return Ok(damage),
        }
    }
}

/// Appends to a log wait until every damaged line its scans found has been reviewed.
fn refuse_unreviewed(handle: &LogHandle, op: &'static str) -> Result<()> {
    let Some(tail) = handle.tail.as_ref().filter(|t| !t.damage.is_empty()) else { return Ok(()) };
    let reviewed = reviewed_lines(&handle.log.path, op)?;
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
    /// The workspace root; the store lives in `<root>/runtimes/`.
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
#[derive(Debug)]
struct LogHandle {
    log: Log,
    tail: Option<Tail>,
    /// Whether the tail was scanned or written under the writer lock (a tail scanned by a
    /// lock-free open may have raced a writer that crashed before updating a snapshot).
    tail_locked: bool,
    appender: Option<Appender>,
}

impl LogHandle {
    fn new(log: Log, tail: Option<Tail>) -> Self {
        Self { log, tail, tail_locked: false, appender: None }
    }
}

/// The filesystem runtime store of one runtime. See the crate documentation.
#[derive(Debug)]
pub struct FsRuntimeStore {
    runtime_id: String,
    dir: PathBuf,
    lock_path: PathBuf,
    limits: Limits,
    lock_timeout_ms: u64,
    events: LogHandle,
    transcripts: HashMap<String, LogHandle>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode(op: &'static str, kind: &'static str, id: &str) -> Result<String> {
    encode_id(kind, id).map_err(|source| StoreError::InvalidId { op, source })
}

fn check_word(op: &'static str, what: &'static str, word: &str) -> Result<()> {
    let ok = !word.is_empty()
        && word.len() <= STATUS_BYTES_MAX
        && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            op,
            what,
            reason: format!("{word:?} is not 1 to {STATUS_BYTES_MAX} bytes of [a-z0-9_-]"),
        })
    }
}

fn to_json_line<T: Serialize>(value: &T, limits: &Limits, op: &'static str, what: &'static str) -> Result<Vec<u8>> {
    let line = serde_json::to_vec(value).map_err(|e| StoreError::InvalidInput { op, what, reason: e.to_string() })?;
    if line.len() as u64 > limits.record_bytes_max {
        return Err(StoreError::InvalidInput {
            op,
            what,
            reason: format!("{} bytes as a JSON line; the limit is {}", line.len(), limits.record_bytes_max),
        });
    }
    readable_back(&line, op, what)?;
    Ok(line)
}

/// Refuses bytes about to be stored that `serde_json` would not read back: a value nested 127
/// deep is accepted as input, then sits one level deeper in its record, past the reader's limit
/// of 128, and the acknowledged record would read as damage.
fn readable_back(bytes: &[u8], op: &'static str, what: &'static str) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(bytes).map(|_| ()).map_err(|e| StoreError::InvalidInput {
        op,
        what,
        reason: format!("it could not be read back once stored: {e}"),
    })
}

fn write_snapshot<T: Serialize>(path: &Path, snapshot: &T, op: &'static str) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(snapshot).expect("snapshots serialise");
    readable_back(&bytes, op, "snapshot")?;
    bytes.push(b'\n');
    let _report = write_atomic(path, &bytes).map_err(|e| StoreError::fs(op, e))?;
    Ok(())
}

/// Reads and parses a snapshot file, refusing one over [`SNAPSHOT_BYTES_MAX`].
fn read_snapshot<T: DeserializeOwned>(path: &Path, op: &'static str) -> Result<(T, u64)> {
    let file = File::open(path).map_err(|e| missing_or_io(op, path, e))?;
    let meta = file.metadata().map_err(|e| StoreError::io(op, path, e))?;
    if !meta.is_file() {
        return Err(StoreError::corrupt(op, path, None, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(SNAPSHOT_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| StoreError::io(op, path, e))?;
    if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(StoreError::corrupt(op, path, None, format!("larger than {SNAPSHOT_BYTES_MAX} bytes")));
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(op, path, None, format!("not JSON: {e}")))?;
    let version = value
        .get("schema_version")
        .and_then(Value::as_u64)
        .ok_or_else(|| StoreError::corrupt(op, path, None, "no numeric schema_version".to_owned()))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion { op, path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
    }
    // From the bytes again, not from `value`: `from_value` respells numbers (`1.10` as `1.1`),
    // and a worker's request must read back as it was written.
    let snapshot = serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(op, path, None, e.to_string()))?;
    Ok((snapshot, version))
}

/// Fails unless `path` is a directory (not following a symlink).
fn require_dir(path: &Path, op: &'static str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NotADirectory { op, path: path.to_owned() }),
        Err(e) => Err(missing_or_io(op, path, e)),
    }
}

fn sync_dir(path: &Path, op: &'static str) -> Result<()> {
    File::open(path).and_then(|dir| dir.sync_all()).map_err(|e| StoreError::io(op, path, e))
}

fn create_empty_file(path: &Path, op: &'static str) -> Result<()> {
    File::create_new(path).and_then(|f| f.sync_all()).map_err(|e| StoreError::io(op, path, e))
}

/// Removes a half-built directory left by a crash (its name says it was never renamed in).
fn remove_leftover(path: &Path, op: &'static str) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(op, path, e)),
    }
}

/// The runtime ids stored under `root`, in id order. Entries that are not canonical encodings
/// are reported as corrupt.
pub fn list_runtimes(root: &Path) -> Result<Vec<String>> {
    const OP: &str = "list runtimes";
    let dir = root.join(RUNTIMES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(OP, &dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(OP, &dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with(".lock") {
            continue;
        }
        let id = decode_id(&name)
            .ok_or_else(|| StoreError::corrupt(OP, entry.path(), None, "not the canonical encoding of a runtime id"))?;
        ids.push(id);
    }
    ids.sort();
    Ok(ids)
}

impl FsRuntimeStore {
    /// Opens runtime `options.runtime_id` under `options.root`, creating it (atomically: it is
    /// built under a temporary name and renamed into place) if it does not exist. Opening
    /// validates the snapshots, the workers and the tails of every log.
    pub fn open_or_create(options: &StoreOptions) -> Result<Self> {
        const OP: &str = "open or create runtime";
        let encoded = encode(OP, "runtime id", &options.runtime_id)?;
        if let Some(reason) = options.limits.first_out_of_range() {
            return Err(StoreError::InvalidInput { op: OP, what: "limits", reason });
        }
        let display_name = options.display_name.clone().unwrap_or_else(|| options.runtime_id.clone());
        if display_name.len() > LABEL_BYTES_MAX {
            return Err(StoreError::InvalidInput {
                op: OP,
                what: "display name",
                reason: format!("{} bytes; the limit is {LABEL_BYTES_MAX}", display_name.len()),
            });
        }
        check_word(OP, "backend", &options.backend)?;
        require_dir(&options.root, OP)?;
        let runtimes = options.root.join(RUNTIMES_DIR);
        match fs::create_dir(&runtimes) {
            Ok(()) => sync_dir(&options.root, OP)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(OP, &runtimes, e)),
        }
        require_dir(&runtimes, OP)?;
        let dir = runtimes.join(&encoded);
        if fs::symlink_metadata(&dir).is_err() {
            let lock_path = runtimes.join(format!("{encoded}.lock"));
            let _lock =
                OsLock::acquire_timeout(&lock_path, options.lock_timeout_ms).map_err(|e| StoreError::fs(OP, e))?;
            if fs::symlink_metadata(&dir).is_err() {
                let snapshot = RuntimeSnapshot {
                    schema_version: SCHEMA_VERSION,
                    runtime_id: options.runtime_id.clone(),
                    display_name,
                    backend: options.backend.clone(),
                    status: "active".to_owned(),
                    limits: options.limits,
                    next_worker_seq: 1,
                    next_event_id: 1,
                    next_diagnostic_id: 1,
                    config_bundles: Vec::new(),
                    diagnostics: Vec::new(),
                };
                let building = runtimes.join(format!("{CREATING_PREFIX}{encoded}"));
                remove_leftover(&building, OP)?;
                fs::create_dir(&building).map_err(|e| StoreError::io(OP, &building, e))?;
                write_snapshot(&building.join(RUNTIME_FILE), &snapshot, OP)?;
                create_empty_file(&building.join(EVENTS_FILE), OP)?;
                let workers = building.join(WORKERS_DIR);
                fs::create_dir(&workers).map_err(|e| StoreError::io(OP, &workers, e))?;
                sync_dir(&building, OP)?;
                fs::rename(&building, &dir).map_err(|e| StoreError::io(OP, &dir, e))?;
                sync_dir(&runtimes, OP)?;
            }
        }
        Self::open_with_timeout(&options.root, &options.runtime_id, options.lock_timeout_ms)
    }

    /// Opens an existing runtime ([`StoreError::Missing`] if there is none), validating it.
    pub fn open(root: &Path, runtime_id: &str) -> Result<Self> {
        Self::open_with_timeout(root, runtime_id, LOCK_TIMEOUT_MS_DEFAULT)
    }

    fn open_with_timeout(root: &Path, runtime_id: &str, lock_timeout_ms: u64) -> Result<Self> {
        const OP: &str = "open runtime";
        let encoded = encode(OP, "runtime id", runtime_id)?;
        let runtimes = root.join(RUNTIMES_DIR);
        require_dir(root, OP)?;
        require_dir(&runtimes, OP)?;
        let dir = runtimes.join(&encoded);
        require_dir(&dir, OP)?;
        let (runtime, _) = read_snapshot::<RuntimeSnapshot>(&dir.join(RUNTIME_FILE), OP)?;
        let mut store = Self {
            runtime_id: runtime_id.to_owned(),
            lock_path: runtimes.join(format!("{encoded}.lock")),
            limits: runtime.limits,
            lock_timeout_ms,
            events: LogHandle::new(Self::events_log(&dir, &runtime.limits), None),
            transcripts: HashMap::new(),
            dir,
        };
        store.validate_runtime(&runtime, OP)?;
        let workers = store.validate_workers(&runtime, OP)?;
        let tail = store.scan_events_tail(OP)?;
        store.check_event_checkpoint(&runtime, &tail, OP)?;
        store.check_last_event_ids(&workers, &tail, OP)?;
        store.events.tail = Some(tail);
        for (worker, tail) in workers {
            let log = store.transcript_log(&worker.worker_ref.worker_id, OP)?;
            store.transcripts.insert(worker.worker_ref.worker_id.clone(), LogHandle::new(log, Some(tail)));
        }
        Ok(store)
    }

    fn events_log(dir: &Path, limits: &Limits) -> Log {
        Log {
            path: dir.join(EVENTS_FILE),
            index_path: dir.join(EVENTS_INDEX_FILE),
            first_key: 1,
            line_bytes_max: limits.record_bytes_max as usize,
        }
    }

    /// The runtime's id.
    pub fn runtime_id(&self) -> &str {
        &self.runtime_id
    }

    /// The runtime's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits the runtime was created with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The address of worker `worker_id` in this runtime.
    pub fn worker_ref(&self, worker_id: &str) -> WorkerRef {
        WorkerRef { runtime_id: self.runtime_id.clone(), worker_id: worker_id.to_owned() }
    }

    fn runtime_path(&self) -> PathBuf {
        self.dir.join(RUNTIME_FILE)
    }

    fn worker_dir(&self, worker_id: &str, op: &'static str) -> Result<PathBuf> {
        Ok(self.dir.join(WORKERS_DIR).join(encode(op, "worker id", worker_id)?))
    }

    fn transcript_log(&self, worker_id: &str, op: &'static str) -> Result<Log> {
        let dir = self.worker_dir(worker_id, op)?;
        Ok(Log {
            path: dir.join(TRANSCRIPT_FILE),
            index_path: dir.join(TRANSCRIPT_INDEX_FILE),
            first_key: 0,
            line_bytes_max: self.limits.record_bytes_max as usize,
        })
    }

    fn validate_runtime(&self, runtime: &RuntimeSnapshot, op: &'static str) -> Result<()> {
        let path = self.runtime_path();
        if runtime.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: runtime.runtime_id.clone(),
            });
        }
        if let Some(reason) = runtime.limits.first_out_of_range() {
            return Err(StoreError::corrupt(op, path, None, reason));
        }
        if runtime.diagnostics.len() as u64 > runtime.limits.diagnostics_max {
            return Err(StoreError::corrupt(op, path, None, "more diagnostics than diagnostics_max"));
        }
        if runtime.next_worker_seq == 0 || runtime.next_event_id == 0 || runtime.next_diagnostic_id == 0 {
            return Err(StoreError::corrupt(op, path, None, "a next_* counter is 0 (they start at 1)"));
        }
        // Every increment follows this check, so a counter never wraps to 0 behind a success.
        if [runtime.next_worker_seq, runtime.next_event_id, runtime.next_diagnostic_id].contains(&u64::MAX) {
            return Err(StoreError::corrupt(
                op,
                path,
                None,
                "a next_* counter is at u64::MAX (no id is left to hand out)",
            ));
        }
        if runtime.diagnostics.iter().any(|d| d.id >= runtime.next_diagnostic_id) {
            return Err(StoreError::corrupt(op, path, None, "a diagnostic id is not below next_diagnostic_id"));
        }
        Ok(())
    }

    fn check_event_checkpoint(&self, runtime: &RuntimeSnapshot, tail: &Tail, op: &'static str) -> Result<()> {
        if runtime.next_event_id > tail.next_key {
            return Err(StoreError::corrupt(
                op,
                &self.events.log.path,
                None,
                format!(
                    "runtime.json says {} events were acknowledged, the log holds {}",
                    runtime.next_event_id - 1,
                    tail.next_key - 1
                ),
            ));
        }
        Ok(())
    }

    /// Checks one event against this runtime: its runtime id and a valid worker id.
    fn validate_event(&self, event: &Event, line: u64, op: &'static str) -> Result<()> {
        if event.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path: self.events.log.path.clone(),
                line: Some(line),
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: event.runtime_id.clone(),
            });
        }
        if let Some(worker_id) = &event.worker_id
            && let Err(e) = validate_id("worker id", worker_id)
        {
            return Err(StoreError::corrupt(op, &self.events.log.path, Some(line), e.to_string()));
        }
        Ok(())
    }

    fn scan_events_tail(&self, op: &'static str) -> Result<Tail> {
        let log = self.events.log.clone();
        log.scan_tail::<Event>(op, &mut |event, line| self.validate_event(event, line, op))
    }

    fn validate_entry(
        &self,
        entry: &TranscriptEntry,
        worker_id: &str,
        path: &Path,
        line: u64,
        op: &'static str,
    ) -> Result<()> {
        if entry.worker_ref.runtime_id != self.runtime_id || entry.worker_ref.worker_id != worker_id {
            return Err(StoreError::Misplaced {
                op,
                path: path.to_owned(),
                line: Some(line),
                what: "worker ref",
                expected: format!("{}/{}", self.runtime_id, worker_id),
                found: format!("{}/{}", entry.worker_ref.runtime_id, entry.worker_ref.worker_id),
            });
        }
        Ok(())
    }

    fn scan_transcript_tail(&self, log: &Log, worker_id: &str, op: &'static str) -> Result<Tail> {
        log.scan_tail::<TranscriptEntry>(op, &mut |entry, line| {
            self.validate_entry(entry, worker_id, &log.path, line, op)
        })
    }

    /// Reads `worker.json` of `worker_id` and checks it belongs where it sits.
    fn read_worker(&self, worker_id: &str, op: &'static str) -> Result<WorkerSnapshot> {
        let dir = self.worker_dir(worker_id, op)?;
        require_dir(&dir, op)?;
        let path = dir.join(WORKER_FILE);
        let (worker, _) = read_snapshot::<WorkerSnapshot>(&path, op)?;
        let found = &worker.worker_ref;
        if found.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: found.runtime_id.clone(),
            });
        }
        if found.worker_id != worker_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "worker id",
                expected: worker_id.to_owned(),
                found: found.worker_id.clone(),
            });
        }
        check_word(op, "worker status", &worker.status)
            .map_err(|e| StoreError::corrupt(op, &path, None, e.to_string()))?;
        Ok(worker)
    }

    /// The worker ids present in `workers/`, validating every entry's name and type.
    fn worker_ids(&self, op: &'static str) -> Result<Vec<String>> {
        let workers = self.dir.join(WORKERS_DIR);
        require_dir(&workers, op)?;
        let entries = fs::read_dir(&workers).map_err(|e| StoreError::io(op, &workers, e))?;
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(op, &workers, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Some(id) = decode_id(&name) else {
                return Err(StoreError::corrupt(op, path, None, "not the canonical encoding of a worker id"));
            };
            if !seen.insert(id.clone()) {
                return Err(StoreError::corrupt(op, path, None, format!("duplicate worker {id:?}")));
            }
            require_dir(&path, op)?;
            ids.push(id);
        }
        ids.sort();
        Ok(ids)
    }

    /// Validates every worker: snapshot, placement, transcript tail, counters.
    fn validate_workers(&self, runtime: &RuntimeSnapshot, op: &'static str) -> Result<Vec<(WorkerSnapshot, Tail)>> {
        let ids = self.worker_ids(op)?;
        let workers_dir = self.dir.join(WORKERS_DIR);
        if ids.len() as u64 > runtime.limits.workers_max || ids.len() as u64 >= runtime.next_worker_seq {
            return Err(StoreError::corrupt(
                op,
                workers_dir,
                None,
                format!(
                    "{} workers, but runtime.json counts {} created (limit {})",
                    ids.len(),
                    runtime.next_worker_seq - 1,
                    runtime.limits.workers_max
                ),
            ));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let worker = self.read_worker(&id, op)?;
            let log = self.transcript_log(&id, op)?;
            let tail = self.scan_transcript_tail(&log, &id, op)?;
            let path = self.worker_dir(&id, op)?.join(WORKER_FILE);
            if worker.next_transcript_seq > tail.next_key {
                return Err(StoreError::corrupt(
                    op,
                    path,
                    None,
                    format!(
                        "worker.json counts {} transcript entries, the transcript holds {}",
                        worker.next_transcript_seq, tail.next_key
                    ),
                ));
            }
            out.push((worker, tail));
        }
        Ok(out)
    }

    /// No worker names an event past the end of the event log. `events` must be scanned after
    /// the workers were read: a writer appends the event before it updates `worker.json`, so a
    /// log scanned earlier could lack an event a worker read later rightly names.
    fn check_last_event_ids(&self, workers: &[(WorkerSnapshot, Tail)], events: &Tail, op: &'static str) -> Result<()> {
        for (worker, _) in workers {
            if worker.last_event_id.is_some_and(|last| last >= events.next_key) {
                let path = self.worker_dir(&worker.worker_ref.worker_id, op)?.join(WORKER_FILE);
                return Err(StoreError::corrupt(op, path, None, "last_event_id is past the end of the event log"));
            }
        }
        Ok(())
    }

    /// The whole persisted state (snapshots with live counters), validated as on open. Events
    /// and transcripts are read by page: [`read_events`](Self::read_events),
    /// [`read_transcript`](Self::read_transcript).
    pub fn load(&self) -> Result<StoreState> {
        const OP: &str = "load runtime";
        require_dir(&self.dir, OP)?;
        let (mut runtime, _) = read_snapshot::<RuntimeSnapshot>(&self.runtime_path(), OP)?;
        self.validate_runtime(&runtime, OP)?;
        let workers = self.validate_workers(&runtime, OP)?;
        let tail = self.scan_events_tail(OP)?;
        self.check_event_checkpoint(&runtime, &tail, OP)?;
        self.check_last_event_ids(&workers, &tail, OP)?;
        runtime.next_event_id = tail.next_key;
        let workers = workers
            .into_iter()
            .map(|(mut worker, tail)| {
                worker.next_transcript_seq = tail.next_key;
                worker
            })
            .collect();
        Ok(StoreState { runtime, workers })
    }

    fn lock(&self, op: &'static str) -> Result<OsLock> {
        OsLock::acquire_timeout(&self.lock_path, self.lock_timeout_ms).map_err(|e| StoreError::fs(op, e))
    }

    /// Appends a diagnostic to `runtime.json` (under the lock), dropping the oldest past the limit.
    fn record_diagnostic(&self, kind: &str, file: &Path, detail: String, op: &'static str) -> Result<()> {
        let path = self.runtime_path();
        let (mut runtime, _) = read_snapshot::<RuntimeSnapshot>(&path, op)?;
        self.validate_runtime(&runtime, op)?;
        let file = file.strip_prefix(&self.dir).unwrap_or(file).to_string_lossy().into_owned();
        runtime.diagnostics.push(Diagnostic {
            id: runtime.next_diagnostic_id,
            kind: kind.to_owned(),
            file,
            detail,
            recorded_at_ms: now_ms(),
        });
        runtime.next_diagnostic_id += 1;
        let keep = runtime.limits.diagnostics_max as usize;
        if runtime.diagnostics.len() > keep {
            let excess = runtime.diagnostics.len() - keep;
            runtime.diagnostics.drain(..excess);
        }
        write_snapshot(&path, &runtime, op)
    }

    /// Under the lock: brings `handle`'s tail up to date and removes a torn tail. Returns the
    /// last record scanned, if a scan happened.
    fn refresh<R: DeserializeOwned + Keyed>(
        &self,
        handle: &mut LogHandle,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<bool> {
        let identity = FileIdentity::of(&handle.log.path, op)?;
        let scanned = match &handle.tail {
            Some(tail) if tail.torn.is_none() && tail.identity == identity => false,
            Some(tail)
                if (tail.identity.dev, tail.identity.ino) == (identity.dev, identity.ino)
                    && identity.len >= tail.valid_end =>
            {
                let (valid_end, next_key) = (tail.valid_end, tail.next_key);
                let mut damage = tail.damage.clone();
                let mut rescanned = handle.log.scan_from::<R>(valid_end, next_key, op, visit)?;
                damage.append(&mut rescanned.damage);
                rescanned.damage = damage;
                handle.tail = Some(rescanned);
                true
            }
            _ => {
                handle.tail = Some(handle.log.scan_tail::<R>(op, visit)?);
                true
            }
        };
        if scanned {
            handle.appender = None;
        }
        let tail = handle.tail.as_mut().expect("set above");
        if let Some(torn) = tail.torn.take() {
            let detail = format!(
                "removed {} bytes at offset {} (line {}), never acknowledged: {:?}",
                torn.bytes, torn.offset, torn.line, torn.excerpt
            );
            self.record_diagnostic("torn_tail_removed", &handle.log.path, detail, op)?;
            handle.log.truncate(tail.valid_end, op)?;
            tail.identity = FileIdentity::of(&handle.log.path, op)?;
            handle.appender = None;
        }
        let first_time = !handle.tail_locked;
        handle.tail_locked = true;
        Ok(scanned || first_time)
    }

    /// Under the lock: appends one line durably, extends the index, returns the record's key.
    fn append_line(handle: &mut LogHandle, line: &[u8], op: &'static str) -> Result<u64> {
        if handle.appender.is_none() {
            handle.appender = Some(Appender::open(&handle.log.path).map_err(|e| StoreError::fs(op, e))?);
        }
        let appender = handle.appender.as_mut().expect("opened above");
        let report = match appender.append(line) {
            Ok(report) => report,
            Err(e) => {
                // The record may or may not be on disk: forget everything cached, rescan next time.
                handle.appender = None;
                handle.tail = None;
                return Err(StoreError::fs(op, e));
            }
        };
        let tail = handle.tail.as_mut().expect("refreshed before appending");
        let key = tail.next_key;
        tail.next_key += 1;
        tail.valid_end = report.offset_after;
        tail.identity.len = report.offset_after;
        if let Some(entry) = handle.log.entry_for(key) {
            // Derived data: if this write fails the next scan rewrites the entry.
            let _ = handle.log.write_index(entry, &[(key, report.record_offset)], op);
        }
        Ok(key)
    }

    /// Creates worker `worker_id` with its create `request`, status `created`, an empty
    /// transcript. The worker directory is built under a temporary name and renamed into place.
    pub fn create_worker(&mut self, worker_id: &str, request: Value) -> Result<WorkerSnapshot> {
        const OP: &str = "create worker";
        let dir = self.worker_dir(worker_id, OP)?;
        let worker = WorkerSnapshot {
            schema_version: SCHEMA_VERSION,
            worker_ref: self.worker_ref(worker_id),
            status: "created".to_owned(),
            request,
            next_transcript_seq: 0,
            last_event_id: None,
        };
        to_json_line(&worker.request, &self.limits, OP, "worker request")?;
        let _lock = self.lock(OP)?;
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(StoreError::WorkerExists { op: OP, path: dir, worker_id: worker_id.to_owned() });
        }
        let runtime_path = self.runtime_path();
        let (mut runtime, _) = read_snapshot::<RuntimeSnapshot>(&runtime_path, OP)?;
        self.validate_runtime(&runtime, OP)?;
        let count = self.worker_ids(OP)?.len() as u64;
        if count >= runtime.limits.workers_max {
            return Err(StoreError::LimitTooLarge { op: OP, limit: count + 1, limit_max: runtime.limits.workers_max });
        }
        // The counter goes first: a crash after it leaves a gap in worker sequence numbers,
        // never a worker the runtime did not count.
        runtime.next_worker_seq += 1;
        write_snapshot(&runtime_path, &runtime, OP)?;
        let workers = self.dir.join(WORKERS_DIR);
        let name = dir.file_name().expect("encoded name").to_string_lossy().into_owned();
        let building = workers.join(format!("{CREATING_PREFIX}{name}"));
        remove_leftover(&building, OP)?;
        fs::create_dir(&building).map_err(|e| StoreError::io(OP, &building, e))?;
        write_snapshot(&building.join(WORKER_FILE), &worker, OP)?;
        create_empty_file(&building.join(TRANSCRIPT_FILE), OP)?;
        sync_dir(&building, OP)?;
        fs::rename(&building, &dir).map_err(|e| StoreError::io(OP, &dir, e))?;
        sync_dir(&workers, OP)?;
        let log = self.transcript_log(worker_id, OP)?;
        self.transcripts.insert(worker_id.to_owned(), LogHandle::new(log, None));
        Ok(worker)
    }

    /// Sets worker `worker_id`'s status (a word of `[a-z0-9_-]`), refreshing its snapshot's
    /// transcript checkpoint.
    pub fn set_worker_status(&mut self, worker_id: &str, status: &str) -> Result<WorkerSnapshot> {
        const OP: &str = "set worker status";
        check_word(OP, "worker status", status)?;
        let _lock = self.lock(OP)?;
        let mut worker = self.read_worker(worker_id, OP)?;
        let next_seq = self.refresh_transcript(worker_id, OP)?;
        status.clone_into(&mut worker.status);
        worker.next_transcript_seq = next_seq;
        write_snapshot(&self.worker_dir(worker_id, OP)?.join(WORKER_FILE), &worker, OP)?;
        Ok(worker)
    }

    /// Under the lock: refreshes worker `worker_id`'s transcript tail; returns its next seq.
    fn refresh_transcript(&mut self, worker_id: &str, op: &'static str) -> Result<u64> {
        let mut handle = match self.transcripts.remove(worker_id) {
            Some(handle) => handle,
            None => LogHandle::new(self.transcript_log(worker_id, op)?, None),
        };
        let path = handle.log.path.clone();
        let result = self.refresh::<TranscriptEntry>(&mut handle, op, &mut |entry, line| {
            self.validate_entry(entry, worker_id, &path, line, op)
        });
        let next_key = handle.tail.as_ref().map(|t| t.next_key);
        self.transcripts.insert(worker_id.to_owned(), handle);
        result?;
        Ok(next_key.expect("refreshed"))
    }

    /// Appends an event (about worker `worker_id`, which must exist, if given). The store
    /// assigns the id: one more than the last. Durable when this returns.
    pub fn append_event(&mut self, worker_id: Option<&str>, payload: Value) -> Result<Event> {
        const OP: &str = "append event";
        if let Some(worker_id) = worker_id {
            encode(OP, "worker id", worker_id)?;
        }
        let _lock = self.lock(OP)?;
        let mut worker = worker_id.map(|w| self.read_worker(w, OP)).transpose()?;
        self.refresh_events(OP)?;
        refuse_unreviewed(&self.events, OP)?;
        let id = self.events.tail.as_ref().expect("refreshed").next_key;
        let event = Event {
            id,
            runtime_id: self.runtime_id.clone(),
            worker_id: worker_id.map(str::to_owned),
            recorded_at_ms: now_ms(),
            payload,
        };
        let line = to_json_line(&event, &self.limits, OP, "event")?;
        let appended = Self::append_line(&mut self.events, &line, OP)?;
        debug_assert_eq!(appended, id);
        if let (Some(worker), Some(worker_id)) = (worker.as_mut(), worker_id) {
            worker.last_event_id = Some(id);
            if let Some(tail) = self.transcripts.get(worker_id).and_then(|h| h.tail.as_ref()) {
                worker.next_transcript_seq = worker.next_transcript_seq.max(tail.next_key);
            }
            let snapshot =
                self.worker_dir(worker_id, OP).and_then(|dir| write_snapshot(&dir.join(WORKER_FILE), worker, OP));
            if snapshot.is_err() {
                // The event is durable and its id taken: reporting failure now (a full disk has
                // no room for the snapshot's copy) would have a retry append it twice. The
                // snapshot only caches the log's last event for the worker; the next refresh
                // under the lock, forced here, writes it again.
                self.events.tail_locked = false;
            }
        }
        Ok(event)
    }

    /// Under the lock: refreshes the event tail and, the first time or after another process
    /// appended, makes sure the worker named by the last event has it as `last_event_id`.
    fn refresh_events(&mut self, op: &'static str) -> Result<()> {
        let placeholder = LogHandle::new(self.events.log.clone(), None);
        let mut handle = std::mem::replace(&mut self.events, placeholder);
        let mut last: Option<(u64, Option<String>)> = None;
        let result = self.refresh::<Event>(&mut handle, op, &mut |event, line| {
            self.validate_event(event, line, op)?;
            last = Some((event.id, event.worker_id.clone()));
            Ok(())
        });
        self.events = handle;
        let check_last = result?;
        if !check_last {
            return Ok(());
        }
        let tail = self.events.tail.as_ref().expect("refreshed");
        if last.is_none() && tail.next_key > 1 {
            // Nothing was rescanned: read the last record itself.
            let mut scanner = self.events.log.scanner_near::<Event>(tail.next_key - 1, op)?.0;
            while scanner.next_key() < tail.next_key - 1 {
                scanner.skip(op)?;
            }
            if let Step::Record { record, .. } = scanner.next(op)? {
                last = Some((record.id, record.worker_id));
            }
        }
        if let Some((id, Some(worker_id))) = last {
            let mut worker = self.read_worker(&worker_id, op)?;
            if worker.last_event_id.is_none_or(|last| last < id) {
                worker.last_event_id = Some(id);
                write_snapshot(&self.worker_dir(&worker_id, op)?.join(WORKER_FILE), &worker, op)?;
            }
        }
        Ok(())
    }

    fn check_worker_ref(&self, worker_ref: &WorkerRef, op: &'static str) -> Result<()> {
        if worker_ref.runtime_id != self.runtime_id {
            return Err(StoreError::WrongRuntime {
                op,
                expected: self.runtime_id.clone(),
                found: worker_ref.runtime_id.clone(),
            });
        }
        encode(op, "worker id", &worker_ref.worker_id).map(drop)
    }

    /// Appends an entry to a worker's transcript. The store assigns `seq`: 0, 1, 2, ...
    /// Durable when this returns.
    pub fn append_transcript_entry(&mut self, worker_ref: &WorkerRef, entry: Value) -> Result<TranscriptEntry> {
        const OP: &str = "append transcript entry";
        self.check_worker_ref(worker_ref, OP)?;
        let worker_id = worker_ref.worker_id.as_str();
        let _lock = self.lock(OP)?;
        self.read_worker(worker_id, OP)?;
        let seq = self.refresh_transcript(worker_id, OP)?;
        refuse_unreviewed(self.transcripts.get(worker_id).expect("refreshed above"), OP)?;
        let record = TranscriptEntry { seq, worker_ref: worker_ref.clone(), recorded_at_ms: now_ms(), entry };
        let line = to_json_line(&record, &self.limits, OP, "transcript entry")?;
        let handle = self.transcripts.get_mut(worker_id).expect("refreshed above");
        Self::append_line(handle, &line, OP)?;
        Ok(record)
    }

    fn check_limit(&self, limit: u64, max_limit: u64, op: &'static str) -> Result<()> {
        // A page of nothing never advances its cursor: a client paging until `has_more` is
        // false would ask for the same empty page forever.
        if limit == 0 {
            return Err(StoreError::InvalidInput {
                op,
                what: "limit",
                reason: "a page holds at least 1 record (a limit of 0 never advances the cursor)".into(),
            });
        }
        let limit_max = max_limit.min(self.limits.page_limit_max).min(PAGE_LIMIT_CEILING);
        if limit > limit_max {
            return Err(StoreError::LimitTooLarge { op, limit, limit_max });
        }
        Ok(())
    }

    /// Reads up to `limit` records of `log` from key `start`, validating each.
    fn read_page<R: DeserializeOwned + Keyed>(
        log: &Log,
        start: u64,
        limit: u64,
        op: &'static str,
        validate: &dyn Fn(&R, u64) -> Result<()>,
    ) -> Result<Page<R>> {
        let mut scanner = log.scanner_near::<R>(start, op)?.0;
        while scanner.next_key() < start {
            if !scanner.skip(op)? {
                // No page of this log ever ended there: a follower that took this start as "up
                // to date" would skip every record from the real end up to it.
                return Err(StoreError::InvalidInput {
                    op,
                    what: "start",
                    reason: format!("{start} is past the end of the log, whose next record is {}", scanner.next_key()),
                });
            }
        }
        let mut page = Page { items: Vec::with_capacity(limit.min(PAGE_LIMIT_CEILING) as usize), ..Page::default() };
        // A damaged line counts toward the limit (it stands for one key) and is named, never
        // passed over in silence; the records around it still read.
        loop {
            if (page.items.len() + page.damaged.len()) as u64 >= limit {
                page.has_more = matches!(scanner.peek(op)?, Step::Record { .. } | Step::Damaged(_));
                break;
            }
            match scanner.next(op)? {
                Step::Record { record, line, .. } => {
                    validate(&record, line)?;
                    page.items.push(record);
                }
                Step::Damaged(damage) => {
                    page.damaged.push(DamagedLine { line: damage.line, key: damage.key, excerpt: damage.excerpt });
                }
                Step::Torn(_) | Step::End => break,
            }
        }
        page.next_key = scanner.next_key();
        Ok(page)
    }

    /// One page of events from `cursor` (the start of the log when `None`): at most `limit`
    /// events, refusing a `limit` of 0 or above `max_limit` (or the runtime's `page_limit_max`),
    /// a cursor of another runtime and one past the end of the log. Seeks through the index: the
    /// cost does not grow with the cursor's position.
    pub fn read_events(&self, cursor: Option<&EventCursor>, limit: u64, max_limit: u64) -> Result<EventPage> {
        const OP: &str = "read events";
        if let Some(cursor) = cursor
            && cursor.runtime_id != self.runtime_id
        {
            return Err(StoreError::WrongRuntimeCursor {
                op: OP,
                expected: self.runtime_id.clone(),
                found: cursor.runtime_id.clone(),
            });
        }
        self.check_limit(limit, max_limit, OP)?;
        let start = cursor.map_or(1, |c| c.next_event_id.max(1));
        let page = Self::read_page::<Event>(&self.events.log, start, limit, OP, &|event, line| {
            self.validate_event(event, line, OP)
        })?;
        let next_event_id = page.next_key.max(start);
        Ok(EventPage {
            events: page.items,
            cursor: EventCursor { runtime_id: self.runtime_id.clone(), next_event_id },
            has_more: page.has_more,
            damaged: page.damaged,
        })
    }

    /// One page of a worker's transcript from entry `start` (0-based): at most `limit` entries,
    /// refusing a `limit` of 0 or above `max_limit` (or the runtime's `page_limit_max`), a
    /// worker of another runtime and a `start` past the end of the transcript.
    pub fn read_transcript(
        &self,
        worker_ref: &WorkerRef,
        start: u64,
        limit: u64,
        max_limit: u64,
    ) -> Result<TranscriptPage> {
        const OP: &str = "read transcript";
        self.check_worker_ref(worker_ref, OP)?;
        self.check_limit(limit, max_limit, OP)?;
        let worker_id = worker_ref.worker_id.as_str();
        self.read_worker(worker_id, OP)?;
        let log = self.transcript_log(worker_id, OP)?;
        let tail = self.scan_transcript_tail(&log, worker_id, OP)?;
        let page = Self::read_page::<TranscriptEntry>(&log, start, limit, OP, &|entry, line| {
            self.validate_entry(entry, worker_id, &log.path, line, OP)
        })?;
        let next_start = page.has_more.then_some(page.next_key);
        Ok(TranscriptPage { items: page.items, total_items: tail.next_key, next_start, damaged: page.damaged })
    }

    /// The damaged lines of every log of this runtime (events, then each worker's transcript)
    /// with the log they are in; with `accept_by`, records that `accept_by` looked at them, so
    /// appends go on (`<log>.reviewed`, written atomically under the writer lock). The damaged
    /// lines stay in the logs: a review excuses, it never erases.
    pub fn review(&self, accept_by: Option<&str>) -> Result<Vec<(PathBuf, DamagedLine)>> {
        const OP: &str = "review runtime";
        let _lock = self.lock(OP)?;
        let mut logs = vec![(self.events.log.clone(), damage_in::<Event>(&self.events.log, OP)?)];
        for worker_id in self.worker_ids(OP)? {
            let log = self.transcript_log(&worker_id, OP)?;
            let damage = damage_in::<TranscriptEntry>(&log, OP)?;
            logs.push((log, damage));
        }
        let mut found = Vec::new();
        for (log, damage) in logs {
            if damage.is_empty() {
                continue;
            }
            if let Some(by) = accept_by {
                let path = reviewed_path(&log.path);
                let mut reviewed: Reviewed = match fs::read(&path) {
                    Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                    Err(_) => Reviewed::default(),
                };
                for d in &damage {
                    let excuse = (d.line, d.raw_blake3.clone());
                    if !reviewed.excuses.contains(&excuse) {
                        reviewed.excuses.push(excuse);
                    }
                }
                reviewed.by.push(by.to_owned());
                let bytes = serde_json::to_vec(&reviewed).expect("a review serialises");
                let _report = write_atomic(&path, &bytes).map_err(|e| StoreError::fs(OP, e))?;
            }
            found.extend(
                damage
                    .into_iter()
                    .map(|d| (log.path.clone(), DamagedLine { line: d.line, key: d.key, excerpt: d.excerpt })),
            );
        }
        Ok(found)
    }

    /// Validates everything: snapshots, placement, every line of every log, every index entry,
    /// every counter. Damage is reported, not returned as an error; an error means the check
    /// itself could not run (invalid id, runtime missing).
    pub fn check(root: &Path, runtime_id: &str) -> Result<CheckReport> {
        const OP: &str = "check runtime";
        let encoded = encode(OP, "runtime id", runtime_id)?;
        let dir = root.join(RUNTIMES_DIR).join(&encoded);
        let mut report = CheckReport { runtime_id: runtime_id.to_owned(), ..CheckReport::default() };
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing { op: OP, path: dir }),
            _ => {}
        }
        let store = match Self::open(root, runtime_id) {
            Ok(store) => store,
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
        let mut last_event_of: BTreeMap<String, u64> = BTreeMap::new();
        match Self::check_log::<Event>(&store.events.log, &mut report, &mut |event, line| {
            store.validate_event(event, line, OP)?;
            if let Some(worker_id) = &event.worker_id {
                last_event_of.insert(worker_id.clone(), event.id);
            }
            Ok(())
        }) {
            Ok(count) => report.events = count,
            Err(e) => report.problems.push(e.to_string()),
        }
        let ids = match store.worker_ids(OP) {
            Ok(ids) => ids,
            Err(e) => {
                report.problems.push(e.to_string());
                Vec::new()
            }
        };
        report.workers = ids.len() as u64;
        for worker_id in &ids {
            let worker = match store.read_worker(worker_id, OP) {
                Ok(worker) => worker,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let recorded = worker.last_event_id;
            let actual = last_event_of.remove(worker_id);
            if recorded != actual {
                let last_line = report.events;
                let text = format!(
                    "worker {worker_id:?}: worker.json says last_event_id {recorded:?}, the event log says {actual:?}"
                );
                if actual == Some(last_line) && recorded < actual {
                    report.notes.push(format!("{text} (the last event; the next append repairs it)"));
                } else {
                    report.problems.push(text);
                }
            }
            let log = match store.transcript_log(worker_id, OP) {
                Ok(log) => log,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let path = log.path.clone();
            match Self::check_log::<TranscriptEntry>(&log, &mut report, &mut |entry, line| {
                store.validate_entry(entry, worker_id, &path, line, OP)
            }) {
                Ok(count) => report.transcript_entries += count,
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        for (worker_id, id) in last_event_of {
            report.problems.push(format!("event {id} names worker {worker_id:?}, which does not exist"));
        }
        Ok(report)
    }

    /// Scans a whole log from its first line, validating every record and every index entry.
    fn check_log<R: DeserializeOwned + Keyed>(
        log: &Log,
        report: &mut CheckReport,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<u64> {
        const OP: &str = "check log";
        let mut scanner = Scanner::<R>::open(log, 0, log.first_key, OP)?;
        let mut offsets = Vec::new();
        let mut count = 0;
        loop {
            match scanner.next(OP)? {
                Step::Record { record, line, offset, .. } => {
                    visit(&record, line)?;
                    if log.entry_for(record.key()).is_some() {
                        offsets.push((record.key(), offset));
                    }
                    count += 1;
                }
                Step::Damaged(damage) => {
                    let reviewed = if reviewed_lines(&log.path, OP)?.contains(&(damage.line, damage.raw_blake3.clone()))
                    {
                        " (reviewed)"
                    } else {
                        "; appends wait for `keel store review --accept`"
                    };
                    report.problems.push(format!(
                        "{}: line {} is damaged (it stands for record {}): {:?}{reviewed}",
                        log.path.display(),
                        damage.line,
                        damage.key,
                        damage.excerpt
                    ));
                }
                Step::Torn(torn) => {
                    report.notes.push(format!(
                        "{}: torn tail of {} bytes at line {} (never acknowledged; removed by the next append)",
                        log.path.display(),
                        torn.bytes,
                        torn.line
                    ));
                    break;
                }
                Step::End => break,
            }
        }
        let entries = log.index_entries(OP)?;
        // Only the entries the log accounts for are read: a huge index costs no memory.
        let stored = read_index_file(&log.index_path, entries.min(offsets.len() as u64), OP)?;
        for (i, expected) in offsets.iter().enumerate() {
            match stored.get(i) {
                Some(entry) if entry == expected => {}
                Some(entry) => report.notes.push(format!(
                    "{}: index entry {i} is {entry:?}, expected {expected:?} (reads near it scan from an earlier entry)",
                    log.index_path.display()
                )),
                None => {
                    report.notes.push(format!(
                        "{}: index is behind ({} of {} entries; the next open or append extends it)",
                        log.index_path.display(),
                        stored.len(),
                        offsets.len()
                    ));
                    break;
                }
            }
        }
        if entries > offsets.len() as u64 {
            report.notes.push(format!(
                "{}: {} index entries past the end of the log (ignored)",
                log.index_path.display(),
                entries - offsets.len() as u64
            ));
        }
        Ok(count)
    }
}

/// The first `entries` entries of the index at `path` (fewer if it is shorter).
fn read_index_file(path: &Path, entries: u64, op: &'static str) -> Result<Vec<(u64, u64)>> {
    if entries == 0 {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(entries.saturating_mul(16)).read_to_end(&mut bytes))
        .map_err(|e| StoreError::io(op, path, e))?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
            )
        })
        .collect())
}
