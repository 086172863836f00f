//! The lane-lease service: every state change runs under the writer lock as
//! read the live set → decide with the kernel → append durably → release the lock.
//!
//! # Cost independent of history
//! An operation never replays the whole journal. It resumes the fold from a known position: the
//! in-process cache when this `Journal` did the last operation, else the head snapshot file
//! (`<journal>.head`), validated against the journal's device, inode, length and a hash of the
//! bytes just before its offset; only when neither validates does it replay from the start.
//! Appends never re-read the journal to find the next `seq`: it is part of the folded state.
//!
//! # Crashes and damage
//! A grant is acknowledged only after its record is durable (one write + fdatasync). A writer
//! killed mid-append leaves an unterminated fragment; the next writer terminates it and records a
//! `REVIEW` excusing that line, because nothing in it was ever acknowledged. A *complete* line that
//! does not parse is damage: while any is unreviewed, `acquire` fails closed (a corrupted `ACQUIRE`
//! must not silently free a region) until an operator reviews it ([`Journal::accept_review`]).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_fs::seam::FileStat;
use keel_fs::{
    Appender, ErrorKind, FsError, LINE_BYTES_MAX_DEFAULT, LineReader, OsLock, OsStorage, ReusableLock, Storage,
    write_atomic_with,
};
use keel_kernel::arbiter::{Decision, Mode, Outcome, Request, decide};
use keel_kernel::expiry::{ExpiryPolicy, Verdict, assess, format_utc};
use keel_kernel::json::to_line;
use keel_kernel::line::BadLine;
use keel_kernel::record::{Lease, Refusal, Writer};

use crate::backend::{LeaseBackend, LeaseRef};
use keel_kernel::replay::{CompactError, Excuse, GENERATION_FLOOR, StateSnapshot, review_record};
use keel_kernel::tree;
use keel_kernel::value::casefold;
use keel_kernel::{Identity, LiveState, Object, Replay, Taxonomy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process;

/// keel's state directory in a workspace root: the one directory a journal creates for itself.
pub const STATE_DIR: &str = ".keel";

/// Reads the clock: seconds since the Unix epoch. Injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
}

/// How a [`Journal`] behaves. `Default` is what the CLI uses.
#[derive(Clone)]
pub struct JournalOptions {
    /// The lane taxonomy the arbiter decides under.
    pub taxonomy: Taxonomy,
    /// When a lease is provably dead (reclaimed by the next conflicting `acquire`).
    pub expiry: ExpiryPolicy,
    /// How long an operation waits for the writer lock before failing with "lock busy".
    pub lock_timeout_ms: u64,
    /// Compact in place once the journal is larger than this (and twice its last compacted
    /// size); `None` never compacts by itself.
    pub compact_threshold_bytes: Option<u64>,
    /// Rewrite the head snapshot once the journal has grown this much past the last one.
    pub head_every_bytes: u64,
    /// This host's name, recorded in leases to judge whether a holder process is gone.
    pub host_id: String,
    /// A heartbeat younger than this is not written again unless the caller names its own floor
    /// (the workspace policy's `heartbeat_coalesce_s`; 0 writes every beat).
    pub heartbeat_coalesce_s: u64,
    /// The clock.
    pub clock: Clock,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            taxonomy: Taxonomy::default(),
            expiry: ExpiryPolicy::default(),
            lock_timeout_ms: 10_000,
            compact_threshold_bytes: Some(64 * 1024 * 1024),
            head_every_bytes: 16 * 1024,
            host_id: process::host_id(),
            heartbeat_coalesce_s: 0,
            clock: system_clock(),
        }
    }
}

impl JournalOptions {
    /// The options a workspace's policy sets: its taxonomy, expiry rules and heartbeat floor.
    pub fn from_policy(policy: &crate::policy::Policy) -> Self {
        Self {
            taxonomy: policy.taxonomy(),
            expiry: policy.expiry(),
            heartbeat_coalesce_s: policy.heartbeat_coalesce_s,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for JournalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalOptions")
            .field("taxonomy", &self.taxonomy)
            .field("expiry", &self.expiry)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("compact_threshold_bytes", &self.compact_threshold_bytes)
            .field("head_every_bytes", &self.head_every_bytes)
            .field("host_id", &self.host_id)
            .field("heartbeat_coalesce_s", &self.heartbeat_coalesce_s)
            .finish_non_exhaustive()
    }
}

/// Errors of the lease service. Each names the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system failed (including "lock busy").
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Unreviewed corrupt lines: no new grant until an operator reviews them.
    #[error(
        "{}: line {line_number} is corrupt and unreviewed ({more} more): {:?}; no lease is granted \
         until an operator looks at it (`keel journal verify`) and accepts it with \
         `keel journal review --accept --by NAME`",
        path.display(),
        quote(raw)
    )]
    Damaged {
        /// The journal.
        path: PathBuf,
        /// 1-based line number of the first unreviewed corrupt line.
        line_number: u64,
        /// Its text.
        raw: String,
        /// How many more unreviewed corrupt lines there are.
        more: usize,
    },
    /// The caller named a `loop_ts` whose identity is live: granting would replace another lease.
    #[error("{}: a lease (loop_ts {loop_ts:?}, lane {lane:?}) is already live; a loop_ts names one lease", path.display())]
    IdentityInUse {
        /// The journal.
        path: PathBuf,
        /// The loop timestamp asked for.
        loop_ts: String,
        /// The lane asked for.
        lane: String,
    },
    /// Compaction would change the journal's meaning.
    #[error("{}: not compacted: {source}", path.display())]
    CompactRefused {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: CompactError,
    },
    /// Compaction would write a line (the checkpoint) longer than any reader accepts.
    #[error(
        "{}: not compacted: the checkpoint would be a line of {line_bytes} bytes, over the readers' \
         limit of {line_bytes_max}",
        path.display()
    )]
    CompactTooLong {
        /// The journal.
        path: PathBuf,
        /// The checkpoint line's length.
        line_bytes: usize,
        /// The limit.
        line_bytes_max: usize,
    },
    /// A number the journal hands out (`seq`, or the fencing generation) has reached `u64::MAX`,
    /// which no real journal does (it takes a hand-edited or damaged line). Saturating would hand
    /// out the same value twice, and a repeated generation lets a stale writer pass the fence.
    #[error(
        "{}: the journal's {counter} has reached its limit ({}); nothing more is appended, so no \
         {counter} is handed out twice (a line with an out-of-range value was written by hand or damaged)",
        path.display(),
        u64::MAX
    )]
    Exhausted {
        /// The journal.
        path: PathBuf,
        /// `"seq"` or `"generation"`.
        counter: &'static str,
    },
    /// A request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl JournalError {
    /// The kind of failure: a busy lock, a refused request (an identity in use, a compaction that
    /// would change the journal's meaning), a malformed request or unusable path, damage awaiting
    /// review, or I/O.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Fs(error) => error.kind(),
            Self::IdentityInUse { .. } | Self::CompactRefused { .. } | Self::CompactTooLong { .. } => {
                ErrorKind::Refused
            }
            Self::InvalidRequest(_) => ErrorKind::Usage,
            Self::Damaged { .. } => ErrorKind::Damaged,
            Self::Exhausted { .. } => ErrorKind::Io,
        }
    }
}

/// Most characters of a damaged line an error message quotes.
const QUOTE_CHARS_MAX: usize = 200;

/// `raw`, cut to [`QUOTE_CHARS_MAX`] characters for a message.
fn quote(raw: &str) -> String {
    match raw.char_indices().nth(QUOTE_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &raw[..at]),
        None => raw.to_owned(),
    }
}

/// A request for a lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// The lane (empty: let the arbiter pick).
    pub lane: String,
    /// `keyword` (default), `cluster`, `global` or an exclusive lane's name.
    pub kind: String,
    /// The region: paths, globs, `lock://NAME` entries.
    pub tree: Vec<String>,
    /// `shared` or `exclusive` (default).
    pub mode: String,
    /// Who holds the lease (an agent's name).
    pub owner: String,
    /// TTL in minutes; `None` uses the expiry policy's backstop.
    pub ttl_minutes: Option<f64>,
    /// The lease's loop timestamp (its unique key with the lane); `None` generates one.
    pub loop_ts: Option<String>,
    /// A run id to record.
    pub run_id: Option<String>,
    /// Acquire whatever else is live (never past an exclusive lane).
    pub force: bool,
    /// The process whose exit frees the lease early.
    #[serde(default)]
    pub holder_pid: HolderPid,
}

/// The process a lease's life is tied to. Once it is provably gone (same host, no such process
/// or a reused pid), the lease may be reclaimed as soon as it is past the grace instead of
/// waiting out its TTL. It must be the process doing the work: naming one that exits at once
/// (like a `keel lease acquire` command) lets the next requester take a live agent's region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderPid {
    /// This process: a program that holds leases through this library, or `keel lease run`.
    #[default]
    This,
    /// Another process on this host, such as the agent that ran `keel lease acquire --pid`.
    Pid(u32),
    /// A process that leads its own process group, and every process of that group: the lease
    /// lives while any of them runs (`keel lease run` ties its command's whole tree to its lease
    /// this way, so a grandchild still editing keeps the region held).
    Group(u32),
    /// No process: only the TTL frees the lease.
    None,
}

/// What a lease records of its holder process.
#[derive(Debug, Clone, Copy, Default)]
struct Recorded {
    pid: Option<u32>,
    start: Option<u64>,
    pgid: Option<u32>,
}

impl HolderPid {
    /// The pid, start time and process group to record; `Err` if it names no running process.
    fn recorded(self) -> Result<Recorded, JournalError> {
        let running = |pid: u32| match process::start_time(pid) {
            Some(start) if pid != 0 => Ok(start),
            _ => Err(JournalError::InvalidRequest(format!("no process {pid} is running on this host"))),
        };
        Ok(match self {
            Self::This => Recorded { pid: Some(std::process::id()), start: process::own_start_time(), pgid: None },
            Self::Pid(pid) => Recorded { pid: Some(pid), start: Some(running(pid)?), pgid: None },
            Self::Group(pid) => Recorded { pid: Some(pid), start: Some(running(pid)?), pgid: Some(pid) },
            Self::None => Recorded::default(),
        })
    }
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    /// The lease body as recorded.
    pub lease: Object,
    /// Its identity.
    pub identity: Identity,
    /// Its fencing generation.
    pub generation: u64,
    /// The arbiter's decision.
    pub decision: Decision,
    /// Dead leases reclaimed to make room, as `(identity, verdict)`.
    pub reclaimed: Vec<(Identity, Verdict)>,
}

/// What `acquire` came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum AcquireOutcome {
    /// Granted and durable.
    Acquire(Grant),
    /// Refused; the decision's reason names the blocking lease.
    Refuse {
        /// The arbiter's decision.
        decision: Decision,
        /// Whether the forensic `REFUSE` record could be written (a failure never changes the answer).
        recorded: bool,
    },
}

/// A live lease with what the service knows about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveLease {
    /// Its identity.
    pub identity: Identity,
    /// Its body.
    pub lease: Object,
    /// Its generation.
    pub generation: Option<u64>,
    /// Whether it is provably dead now.
    pub verdict: Verdict,
}

/// A lease that changed holder: its identity and the new holder's fencing generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adopted {
    /// The lease.
    pub identity: Identity,
    /// The new holder's generation (above every token the old holder could present).
    pub generation: u64,
}

/// What accepting a review did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    /// The damaged lines the review excuses, as corrupt sentinels.
    pub lines: Vec<Object>,
    /// The generation counter before and after the review raised it past every token the
    /// damaged lines could have issued; `None` when there was nothing to excuse.
    pub generations_raised: Option<(u64, u64)>,
}

/// The first unreviewed damaged line, which stops grants until an operator reviews it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stopped {
    /// Its 1-based line number.
    pub line_number: u64,
    /// The start of its text.
    pub raw: String,
    /// How many more unreviewed damaged lines there are.
    pub more: usize,
}

/// The live leases, and whether grants are stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveView {
    /// The live leases, in first-acquired order.
    pub leases: Vec<LiveLease>,
    /// What stops new grants, if anything.
    pub grants_stopped: Option<Stopped>,
}

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Beat {
    /// Recorded at this time.
    Beaten {
        /// The lease.
        identity: Identity,
        /// The new `heartbeat_at`.
        heartbeat_at: String,
    },
    /// Skipped: the last beat is younger than the coalescing floor.
    Coalesced {
        /// The lease.
        identity: Identity,
        /// Its last `heartbeat_at`.
        heartbeat_at: String,
    },
}

/// The journal's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Records folded (corrupt sentinels included).
    pub records: u64,
    /// Bytes in the journal.
    pub bytes: u64,
    /// Live leases.
    pub live_leases: usize,
    /// Corrupt lines.
    pub corrupt: usize,
    /// Corrupt lines no review has excused.
    pub unreviewed_corrupt: usize,
    /// Records per op.
    pub ops: std::collections::BTreeMap<String, u64>,
    /// The last compaction this service knows of.
    pub last_compaction: Option<Compaction>,
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// When (UTC).
    pub ts: String,
    /// Journal size before.
    pub bytes_before: u64,
    /// Journal size after.
    pub bytes_after: u64,
    /// Records written.
    pub records_after: u64,
    /// Whether the rename was made durable by a directory fsync (false where the file system
    /// does not support one).
    pub dir_synced: bool,
}

/// The state folded up to a resumable position, with what lies past it.
#[derive(Debug)]
struct Folded {
    state: LiveState,
    /// Start of the first line not in `state` (only a held-back unparseable line can follow).
    safe_offset: u64,
    safe_lines: u64,
    end_offset: u64,
    dev: u64,
    ino: u64,
    /// An unparseable last line, and whether it lacked its `\n` (a crashed writer's fragment).
    tail: Option<(BadLine, bool)>,
}

struct Cache<S: Storage> {
    /// The writer lock's file, opened once per process.
    lock: Option<ReusableLock>,
    /// A read handle on the journal, kept while its identity (device, inode) holds.
    reader: Option<(S::File, u64, u64)>,
    folded: Option<Folded>,
    appender: Option<(Appender<S>, u64, u64)>,
    head_offset: u64,
    compacted_bytes: u64,
    last_compaction: Option<Compaction>,
}

/// The head snapshot file: the fold up to `offset`, so a process need not replay the history.
///
/// It is derived data a reader trusts instead of the journal, so it proves itself twice before
/// it is used: its own bytes (the file is `HEAD_MAGIC <blake3 of the body>\n<body>`, so a flipped
/// bit, a cut or an addition anywhere fails), and its place in the journal (device, inode, and
/// BLAKE3s of the journal's first bytes and of the bytes just before `offset`). Anything that
/// does not validate means "replay from the journal". An older snapshot of the same journal
/// validates and is correct: it describes a prefix, and the records after it are folded on top.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    version: u32,
    dev: u64,
    ino: u64,
    offset: u64,
    lines: u64,
    window_blake3: String,
    prefix_blake3: String,
    state: StateSnapshot,
    last_compaction: Option<Compaction>,
}

const HEAD_VERSION: u32 = 2;
/// The first word of a head file, before the hash of its body.
const HEAD_MAGIC: &str = "keel-head-v2";
/// Bytes before the head's offset whose hash must match: enough to tell a rewritten journal
/// from the one the snapshot was taken of, without reading its history.
const HEAD_WINDOW_BYTES: u64 = 4096;
/// Largest head file read (a larger one is ignored and the journal replayed).
const HEAD_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest wait between `acquire` retries.
const WAIT_BACKOFF_MS_MAX: u64 = 500;

/// A lane journal and the operations on it. `Send + Sync`: share one per process.
pub struct Journal<S: Storage + Clone = OsStorage> {
    storage: S,
    path: PathBuf,
    lock_path: PathBuf,
    head_path: PathBuf,
    /// `<journal>.torn`: the fragments a repair began to terminate (see [`Journal::append`]).
    torn_path: PathBuf,
    options: JournalOptions,
    cache: Mutex<Cache<S>>,
}

/// The repair sidecar's content, bounded like any file keel reads.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RepairsBegun {
    excuses: Vec<Excuse>,
}

/// Larger than any sidecar a run of repairs leaves (one excuse each, about 100 bytes).
const TORN_BYTES_MAX: u64 = 64 * 1024;

impl Journal<OsStorage> {
    /// A service over the journal at `path` on the real file system. Nothing is read until the
    /// first operation; a missing journal is an empty one.
    pub fn open(path: &Path, options: JournalOptions) -> Self {
        Self::with_storage(OsStorage, path, options)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn now_ts(clock: &Clock) -> String {
    format_utc(clock().floor() as i64)
}

/// A loop timestamp with microseconds, so two grants in one second differ.
fn fresh_loop_ts(now: f64) -> String {
    let seconds = now.floor();
    let micros = ((now - seconds) * 1e6).floor() as u64;
    let base = format_utc(seconds as i64);
    format!("{}.{micros:06}Z", base.trim_end_matches('Z'))
}

struct StorageRead<'a, S: Storage> {
    storage: &'a S,
    file: &'a S::File,
    offset: u64,
}

impl<S: Storage> Read for StorageRead<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.storage.read_at(self.file, self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<S: Storage + Clone> Journal<S> {
    /// A service over the journal at `path` through `storage` (the seam tests crash or fail).
    pub fn with_storage(storage: S, path: &Path, options: JournalOptions) -> Self {
        Self {
            storage,
            path: path.to_owned(),
            lock_path: OsLock::path_for(path),
            head_path: with_suffix(path, ".head"),
            torn_path: with_suffix(path, ".torn"),
            options,
            cache: Mutex::new(Cache {
                lock: None,
                reader: None,
                folded: None,
                appender: None,
                head_offset: 0,
                compacted_bytes: 0,
                last_compaction: None,
            }),
        }
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options in force.
    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    /// Runs `operation` under the writer lock with the state folded to the end of the journal.
    fn locked<T>(
        &self,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.ensure_dir(dir)?;
        }
        let lock = match cache.lock.take() {
            Some(lock) => lock,
            None => ReusableLock::open(&self.lock_path)?,
        };
        self.under(lock, &mut cache, operation)
    }

    /// The journal's directory must exist, except keel's own state directory ([`STATE_DIR`]),
    /// which comes into being with the first operation, in a parent that exists. Creating
    /// whatever directories a path names would let a mistyped journal path start a journal no
    /// one else reads, whose grants exclude no one.
    fn ensure_dir(&self, dir: &Path) -> Result<(), JournalError> {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => return Err(FsError::Invalid { path: dir.to_owned(), reason: "not a directory" }.into()),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(FsError::io("stat", dir, e).into()),
            Err(_) if dir.file_name() != Some(STATE_DIR.as_ref()) => {
                return Err(FsError::Invalid {
                    path: dir.to_owned(),
                    reason: "the journal's directory does not exist (keel creates only a `.keel` directory, \
                             in an existing one)",
                }
                .into());
            }
            Err(_) => {}
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {
                // The new name must outlive a power loss, or so could every grant made in it. A
                // file system that cannot fsync a directory promises no more whatever we do.
                let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let _status = keel_fs::seam::dir_sync_status(self.storage.sync_dir(parent))
                    .map_err(|e| FsError::io("fsync directory", parent, e))?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(FsError::io("create directory", dir, e).into()),
        }
    }

    /// Runs a read-only `operation` on the state folded to the end of the journal, creating
    /// nothing and taking no lock, so a reader never waits behind a writer's fdatasync and never
    /// needs write access. The fold sees the journal as of one moment, which is all a locked read
    /// tells once its lock is released: appends are whole lines (one still in flight is a
    /// fragment without its `\n`, left out as a torn tail and read again next time), and
    /// compaction replaces the file by rename (the fold reads the file it opened, by that file's
    /// own identity and length).
    fn observed<T>(
        &self,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.fold(&mut cache)?;
        operation(self, &mut cache)
    }

    /// Takes `lock`, folds and runs `operation`, and keeps the lock's file open in the cache.
    fn under<T>(
        &self,
        mut lock: ReusableLock,
        cache: &mut Cache<S>,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let result = match lock.acquire_timeout(self.options.lock_timeout_ms) {
            Ok(_guard) => self.fold(cache).and_then(|()| operation(self, cache)),
            Err(error) => Err(error.into()),
        };
        cache.lock = Some(lock);
        result
    }

    fn stat(&self) -> Result<Option<FileStat>, JournalError> {
        match self.storage.path_stat(&self.path) {
            Ok(stat) => Ok(Some(stat)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::io("stat", &self.path, e).into()),
        }
    }

    /// Brings `cache.folded` to the end of the journal, from the cache, the head, or the start.
    fn fold(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        let Some(stat) = self.stat()? else {
            cache.folded = Some(Folded {
                state: LiveState::new(),
                safe_offset: 0,
                safe_lines: 0,
                end_offset: 0,
                dev: 0,
                ino: 0,
                tail: None,
            });
            return Ok(());
        };
        let (file, stat) = match cache.reader.take() {
            Some((file, dev, ino)) if dev == stat.dev && ino == stat.ino => (file, stat),
            _ => {
                // The file opened may not be the one just stat'ed (a compaction renamed a new one
                // in between, which readers do not wait for): read it as what it is.
                let file = self.storage.open_read(&self.path).map_err(|e| FsError::io("open", &self.path, e))?;
                let opened = self.storage.file_stat(&file).map_err(|e| FsError::io("stat", &self.path, e))?;
                (file, opened)
            }
        };
        let resume = match cache.folded.take() {
            Some(f) if f.dev == stat.dev && f.ino == stat.ino && stat.len >= f.safe_offset => {
                Some((f.state, f.safe_offset, f.safe_lines))
            }
            _ => None,
        };
        let (state, offset, lines) = match resume {
            Some(resume) => resume,
            None => self.load_head(&stat, &file, cache).unwrap_or_default(),
        };
        let mut replay = Replay::resume(state, lines);
        let reader = StorageRead { storage: &self.storage, file: &file, offset };
        let mut lines_reader =
            LineReader::new(reader, &self.path, offset).with_expected_bytes(stat.len.saturating_sub(offset));
        let (mut safe_offset, mut safe_lines, mut terminated) = (offset, lines, true);
        while let Some(pushed) = crate::read::push_next(&mut lines_reader, &mut replay)? {
            terminated = pushed.whole;
            // The cache resumes where the state ends: after this line, or at its start while it
            // is held back (an unreadable last line may yet prove a torn write). Everything
            // before a held line is in the state, so resuming before it would fold it twice.
            (safe_offset, safe_lines) = match replay.pending() {
                None => (pushed.end, replay.lines()),
                Some(_) => (pushed.start, replay.lines().saturating_sub(1)),
            };
        }
        let end_offset = lines_reader.offset();
        drop(lines_reader);
        cache.reader = Some((file, stat.dev, stat.ino));
        let tail = replay.pending().cloned().map(|bad| (bad, !terminated));
        let replayed = replay.finish();
        cache.folded = Some(Folded {
            state: replayed.state,
            safe_offset,
            safe_lines,
            end_offset,
            dev: stat.dev,
            ino: stat.ino,
            tail,
        });
        Ok(())
    }

    /// The BLAKE3 of the journal's bytes `[start, end)` (at most [`HEAD_WINDOW_BYTES`] of them).
    fn hash_range(&self, file: &S::File, start: u64, end: u64) -> io::Result<String> {
        let mut window = vec![0u8; (end - start) as usize];
        let mut filled = 0;
        while filled < window.len() {
            let n = self.storage.read_at(file, start + filled as u64, &mut window[filled..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "journal shorter than its head"));
            }
            filled += n;
        }
        Ok(blake3::hash(&window).to_hex().to_string())
    }

    /// The hashes that tie a head at `offset` to this journal: of the bytes just before it, and of
    /// the journal's first bytes (which a rewrite changes however it ends).
    fn place_hashes(&self, file: &S::File, offset: u64) -> io::Result<(String, String)> {
        let window = self.hash_range(file, offset.saturating_sub(HEAD_WINDOW_BYTES), offset)?;
        let prefix = self.hash_range(file, 0, offset.min(HEAD_WINDOW_BYTES))?;
        Ok((window, prefix))
    }

    /// The head snapshot, if its bytes are whole and it describes this very journal; anything
    /// else means "replay" (see [`Head`]).
    fn load_head(&self, stat: &FileStat, file: &S::File, cache: &mut Cache<S>) -> Option<(LiveState, u64, u64)> {
        let bytes = self.read_sidecar(&self.head_path, HEAD_BYTES_MAX)?;
        let newline = memchr::memchr(b'\n', &bytes)?;
        let (header, body) = (std::str::from_utf8(&bytes[..newline]).ok()?, &bytes[newline + 1..]);
        let hash = header.strip_prefix(HEAD_MAGIC)?.strip_prefix(' ')?;
        if hash != blake3::hash(body).to_hex().as_str() {
            return None;
        }
        let head: Head = serde_json::from_slice(body).ok()?;
        let valid = head.version == HEAD_VERSION
            && head.dev == stat.dev
            && head.ino == stat.ino
            && head.offset <= stat.len
            && self.place_hashes(file, head.offset).ok()? == (head.window_blake3.clone(), head.prefix_blake3.clone());
        if !valid {
            return None;
        }
        cache.head_offset = head.offset;
        cache.last_compaction = head.last_compaction;
        Some((LiveState::from_snapshot(head.state), head.offset, head.lines))
    }

    fn write_head(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        let folded = cache.folded.as_ref().expect("folded before writing a head");
        let file = self.storage.open_read(&self.path).map_err(|e| FsError::io("open", &self.path, e))?;
        let (window_blake3, prefix_blake3) =
            self.place_hashes(&file, folded.safe_offset).map_err(|e| FsError::io("read", &self.path, e))?;
        let head = Head {
            version: HEAD_VERSION,
            dev: folded.dev,
            ino: folded.ino,
            offset: folded.safe_offset,
            lines: folded.safe_lines,
            window_blake3,
            prefix_blake3,
            state: folded.state.snapshot(),
            last_compaction: cache.last_compaction.clone(),
        };
        let body = serde_json::to_vec(&head).expect("head snapshots serialise");
        let mut bytes = format!("{HEAD_MAGIC} {}\n", blake3::hash(&body).to_hex()).into_bytes();
        bytes.extend_from_slice(&body);
        self.replace_volatile(&self.head_path, &bytes)?;
        cache.head_offset = folded.safe_offset;
        Ok(())
    }

    /// Replaces `path` by rename, without fsync: for derived data only (the head snapshot), which
    /// a crash may lose or tear, because every reader validates it against the journal and falls
    /// back to replaying when it does not match.
    fn replace_volatile(&self, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
        let temp = with_suffix(path, &format!(".tmp.{}", std::process::id()));
        let _ = self.storage.remove_file(&temp);
        let mut file = self.storage.create_new(&temp).map_err(|e| FsError::io("create", &temp, e))?;
        let written = self.storage.write_all(&mut file, bytes).and_then(|()| self.storage.rename(&temp, path));
        if let Err(e) = written {
            let _ = self.storage.remove_file(&temp);
            return Err(FsError::io("write head snapshot", path, e).into());
        }
        Ok(())
    }

    fn folded(cache: &Cache<S>) -> &Folded {
        cache.folded.as_ref().expect("operations run on a folded cache")
    }

    /// Appends `records` (stamping `seq` and `ts`), durably, then folds them in. A torn tail left
    /// by a crashed writer is terminated by the appender and excused by a `REVIEW` first.
    ///
    /// The newline that terminates the fragment and that `REVIEW` go out in one write; if it is
    /// cut short (a power cut, a full disk), the fragment is left a whole line nobody excused,
    /// which would stop grants until an operator reviews it. So before that write, the fragment's
    /// excuse is made durable in `<journal>.torn`: a later writer excuses the lines it names (as
    /// the cut writer meant to) in the `REVIEW` of its own append, then removes it.
    fn append(&self, cache: &mut Cache<S>, records: Vec<Object>) -> Result<(), JournalError> {
        self.append_records(cache, records, true)
    }

    /// [`append`](Self::append); with `durable` false, without waiting for the fdatasync (a
    /// forensic record nothing is acknowledged on). A torn-tail repair is always durable.
    fn append_records(
        &self,
        cache: &mut Cache<S>,
        mut records: Vec<Object>,
        durable: bool,
    ) -> Result<(), JournalError> {
        let folded = Self::folded(cache);
        let begun = self.repairs_begun(folded);
        // Only a repair cut short leaves a sidecar: without one there is nothing to finish, and
        // the damage list is not scanned on every append.
        let mut excuses: Vec<Excuse> = if begun.is_empty() {
            Vec::new()
        } else {
            unreviewed(folded).iter().filter_map(Excuse::of_sentinel).filter(|e| begun.contains(e)).collect()
        };
        let fragment = match &folded.tail {
            Some((bad, true)) => {
                Some(Excuse::of_sentinel(&bad.sentinel()).expect("a sentinel has a line and raw text"))
            }
            _ => None,
        };
        if let Some(fragment) = &fragment {
            let mut pending = begun.clone();
            pending.push(fragment.clone());
            let bytes = serde_json::to_vec(&RepairsBegun { excuses: pending }).expect("excuses serialise");
            let _report = write_atomic_with(&self.storage, &self.torn_path, &bytes)?;
            excuses.push(fragment.clone());
        }
        if !excuses.is_empty() {
            records.insert(
                0,
                review_record(
                    &excuses,
                    "torn tail: an unterminated fragment a crashed writer left, never acknowledged",
                    &self.writer_name(),
                ),
            );
        }
        let (dev, ino) = (folded.dev, folded.ino);
        let seq = folded.state.next_seq();
        if seq.checked_add(records.len() as u64).is_none_or(|end| end == u64::MAX) {
            return Err(JournalError::Exhausted { path: self.path.clone(), counter: "seq" });
        }
        let ts = now_ts(&self.options.clock);
        // The cached handle is reused only if this process wrote the journal's last byte: after
        // another process appended, its idea of the tail is stale and it must be reopened.
        let end = folded.end_offset;
        let reuse = matches!(&cache.appender, Some((a, d, i)) if !a.is_failed() && *d == dev && *i == ino && dev != 0 && a.len() == end);
        if !reuse {
            let appender = Appender::open_with(self.storage.clone(), &self.path)?;
            let stat = self.storage.path_stat(&self.path).map_err(|e| FsError::io("stat", &self.path, e))?;
            cache.appender = Some((appender, stat.dev, stat.ino));
        }
        let (appender, _, _) = cache.appender.as_mut().expect("opened just above");
        for (n, mut record) in (seq..).zip(records) {
            record.insert("seq".to_owned(), Value::from(n));
            record.entry("ts").or_insert_with(|| Value::from(ts.clone()));
            let line = to_line(&record);
            // A repair (the REVIEW excusing a fragment) is made durable whatever follows it.
            let sync = durable || record.get("op").and_then(Value::as_str) == Some(keel_kernel::replay::REVIEW_OP);
            let appended =
                if sync { appender.append(line.as_bytes()) } else { appender.append_unsynced(line.as_bytes()) };
            if let Err(error) = appended {
                // Fail-stop: the handle that failed is not used again; the next operation
                // reopens, which re-reads the tail.
                cache.appender = None;
                cache.folded = None;
                return Err(error.into());
            }
        }
        if fragment.is_some() || !begun.is_empty() {
            // Every line it named is excused in the journal now (or was not damage after all); a
            // sidecar left by a crash here excuses only those same lines, which were fragments.
            let _ = self.storage.remove_file(&self.torn_path);
        }
        self.fold(cache)?;
        self.after_append(cache)
    }

    /// The excuses in `<journal>.torn` that can still name a fragment a cut repair left; none
    /// when it is missing or unreadable (a sidecar that cannot be read excuses nothing, which
    /// fails closed). Each excuse names its line by number and by the hash of its text, and a run
    /// of `k` cut repairs leaves its fragments among the journal's last `k + 1` lines: an excuse
    /// for any earlier line is not one this sidecar could honestly hold, and is ignored.
    fn repairs_begun(&self, folded: &Folded) -> Vec<Excuse> {
        let mut excuses = self
            .read_sidecar(&self.torn_path, TORN_BYTES_MAX)
            .and_then(|bytes| serde_json::from_slice::<RepairsBegun>(&bytes).ok())
            .map(|repairs| repairs.excuses)
            .unwrap_or_default();
        let lines = folded.safe_lines + u64::from(folded.tail.is_some());
        let reach = excuses.len() as u64 + 1;
        excuses.retain(|excuse| excuse.line.saturating_add(reach) >= lines);
        excuses
    }

    /// The bytes of a sidecar file (head snapshot, repairs begun), if it is there, readable and
    /// at most `bytes_max` long. Its reader treats anything else as "no sidecar".
    fn read_sidecar(&self, path: &Path, bytes_max: u64) -> Option<Vec<u8>> {
        if self.storage.path_stat(path).ok()?.len > bytes_max {
            return None;
        }
        let file = self.storage.open_read(path).ok()?;
        let mut bytes = Vec::new();
        StorageRead { storage: &self.storage, file: &file, offset: 0 }.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Keeps the head fresh and the journal bounded.
    fn after_append(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        let end = Self::folded(cache).end_offset;
        let over = self.options.compact_threshold_bytes.is_some_and(|threshold| end > threshold);
        if over && end > cache.compacted_bytes.saturating_mul(2) && Self::folded(cache).state.is_self_keyed() {
            // The record is durable: a compaction that fails (a full disk: it needs room for a
            // copy) must not make the operation report failure. The next append tries again.
            if self.compact_locked(cache).is_err() && cache.folded.is_none() {
                self.fold(cache)?;
            }
            return Ok(());
        }
        if Self::folded(cache).safe_offset >= cache.head_offset + self.options.head_every_bytes {
            // The head is derived data: failing to refresh it costs speed, never correctness.
            let _ = self.write_head(cache);
        }
        Ok(())
    }

    fn writer_name(&self) -> String {
        format!("keel pid {} on {}", std::process::id(), self.options.host_id)
    }

    /// What stops grants now, if anything: the first unreviewed damaged line (a crashed writer's
    /// fragment that a repair began to excuse does not).
    fn stopped(&self, folded: &Folded) -> Option<Stopped> {
        let begun = self.repairs_begun(folded);
        let mut damage = unreviewed(folded);
        damage.retain(|sentinel| !Excuse::of_sentinel(sentinel).is_some_and(|e| begun.contains(&e)));
        let first = damage.first()?;
        Some(Stopped {
            line_number: first.get("_line").and_then(Value::as_u64).map_or(0, |l| l + 1),
            raw: quote(first.get("_raw").and_then(Value::as_str).unwrap_or("")),
            more: damage.len() - 1,
        })
    }

    fn damage_check(&self, folded: &Folded) -> Result<(), JournalError> {
        match self.stopped(folded) {
            Some(Stopped { line_number, raw, more }) => {
                Err(JournalError::Damaged { path: self.path.clone(), line_number, raw, more })
            }
            None => Ok(()),
        }
    }

    fn verdict(&self, lease: &Object, now: f64) -> Verdict {
        let holder = process::holder_process(lease, &self.options.host_id);
        assess(lease, now.floor() as i64, &self.options.expiry, holder)
    }

    /// The arbiter's decision over the admission view, in which leases that are provably dead do
    /// not block, and the dead leases that would have blocked (a grant scavenges them in the
    /// journal first, so the structural live set never holds two colliding leases). Expiry is
    /// judged only when something blocks (it reads the process table), so an uncontended request
    /// costs nothing extra.
    fn admission(&self, folded: &Folded, request: &Request, now: f64) -> (Decision, Vec<(Identity, Verdict)>) {
        let taxonomy = &self.options.taxonomy;
        let refuses_alone =
            |lease: &Object| decide(request, std::iter::once(lease), taxonomy).outcome == Outcome::Refuse;
        let mut decision = decide(request, folded.state.live(), taxonomy);
        if decision.outcome != Outcome::Refuse {
            return (decision, Vec::new());
        }
        // Judging a lease reads the process table: first only the leases that refuse the request
        // on their own. If one of them is alive the request is refused whatever the rest are (the
        // arbiter never admits more when more is live), and the others need not be judged.
        let blockers: Vec<(&Identity, &Object)> =
            folded.state.live_with_identity().filter(|(_, lease)| refuses_alone(lease)).collect();
        let dead: Vec<&Identity> =
            blockers.iter().filter(|(_, lease)| self.verdict(lease, now).is_dead()).map(|(id, _)| *id).collect();
        if dead.len() < blockers.len() {
            if !dead.is_empty() {
                // Name a live blocker, not one that is provably dead.
                let rest = folded.state.live_with_identity().filter(|(id, _)| !dead.contains(id)).map(|(_, l)| l);
                decision = decide(request, rest, taxonomy);
            }
            return (decision, Vec::new());
        }
        let mut alive = Vec::new();
        let mut dead = Vec::new();
        for (identity, lease) in folded.state.live_with_identity() {
            let verdict = self.verdict(lease, now);
            if verdict.is_dead() {
                dead.push((identity, lease, verdict));
            } else {
                alive.push(lease);
            }
        }
        if dead.is_empty() {
            return (decision, Vec::new());
        }
        let decision = decide(request, alive.iter().copied(), taxonomy);
        let reclaimed = dead
            .iter()
            .filter(|(_, lease, _)| refuses_alone(lease))
            .map(|(identity, _, verdict)| ((*identity).clone(), *verdict))
            .collect();
        (decision, reclaimed)
    }

    fn acquire_locked(
        &self,
        cache: &mut Cache<S>,
        request: &AcquireRequest,
        record_refusal: bool,
    ) -> Result<AcquireOutcome, JournalError> {
        let now = (self.options.clock)();
        let folded = Self::folded(cache);
        self.damage_check(folded)?;
        let (mut decision, mut reclaimed) = self.admission(folded, &arbiter_request(request), now);
        if decision.outcome == Outcome::Refuse {
            // Say why the blocker is not reclaimable, so the requester knows to wait, and how long.
            let blocker =
                decision.blocking.as_ref().map(|b| Identity { loop_ts: b.loop_ts.clone(), lane: b.lane.clone() });
            if let Some(lease) = blocker.and_then(|identity| folded.state.lease(&identity)) {
                let grace_s = keel_kernel::expiry::grace_s(lease, &self.options.expiry);
                let verdict = self.verdict(lease, now);
                decision.reason =
                    format!("{}; the holder is not reclaimable: {verdict} (grace {grace_s}s)", decision.reason);
            }
            let recorded = record_refusal && self.record_refusal(cache, request, &decision, now);
            return Ok(AcquireOutcome::Refuse { decision, recorded });
        }
        if folded.state.next_generation() == u64::MAX {
            return Err(JournalError::Exhausted { path: self.path.clone(), counter: "generation" });
        }
        let identity = self.new_identity(folded, request, &decision.lane, now, &mut reclaimed)?;
        let lease = self.lease_body(request, &decision, &identity, now)?;
        let mut records: Vec<Object> =
            reclaimed.iter().map(|(id, verdict)| Writer::scavenge(id, &format!("reclaimed: {verdict}"))).collect();
        records.push(self.writer().acquire(&identity, &lease));
        self.append(cache, records)?;
        let generation = Self::folded(cache).state.generation(&identity).expect("a grant just folded has a generation");
        Ok(AcquireOutcome::Acquire(Grant { lease, identity, generation, decision, reclaimed }))
    }

    fn record_refusal(&self, cache: &mut Cache<S>, request: &AcquireRequest, decision: &Decision, now: f64) -> bool {
        let loop_ts = request.loop_ts.clone().unwrap_or_else(|| fresh_loop_ts(now));
        let record = self.writer().refuse(&Refusal {
            holder: &request.owner,
            lane: &request.lane,
            loop_ts: &loop_ts,
            reason: &decision.reason,
            reason_class: decision.reason_class,
            run_id: request.run_id.as_deref(),
        });
        // Forensic only: a failed write never turns a refusal into anything else, and nothing
        // waits for it to be durable.
        self.append_records(cache, vec![record], false).is_ok()
    }

    /// The new lease's identity. A `loop_ts` the caller names must be free, or be taken by a
    /// lease being reclaimed, or by this owner's own provably dead lease (an agent restarted with
    /// its old `loop_ts`), which is then reclaimed too (added to `reclaimed`, so it is journaled).
    fn new_identity(
        &self,
        folded: &Folded,
        request: &AcquireRequest,
        lane: &str,
        now: f64,
        reclaimed: &mut Vec<(Identity, Verdict)>,
    ) -> Result<Identity, JournalError> {
        if let Some(loop_ts) = &request.loop_ts {
            let identity = Identity { loop_ts: loop_ts.clone(), lane: lane.to_owned() };
            let free = match folded.state.lease(&identity) {
                None => true,
                Some(_) if reclaimed.iter().any(|(id, _)| *id == identity) => true,
                Some(lease) => {
                    let own = lease.get("holder").and_then(Value::as_str) == Some(request.owner.as_str());
                    let verdict = self.verdict(lease, now);
                    if own && verdict.is_dead() {
                        reclaimed.push((identity.clone(), verdict));
                    }
                    own && verdict.is_dead()
                }
            };
            if identity.loop_ts.is_empty() || !free {
                return Err(JournalError::IdentityInUse {
                    path: self.path.clone(),
                    loop_ts: loop_ts.clone(),
                    lane: lane.to_owned(),
                });
            }
            return Ok(identity);
        }
        let base = fresh_loop_ts(now);
        let mut identity = Identity { loop_ts: base.clone(), lane: lane.to_owned() };
        let mut n = 1;
        while folded.state.lease(&identity).is_some() {
            identity.loop_ts = format!("{base}-{n}");
            n += 1;
        }
        Ok(identity)
    }

    fn lease_body(
        &self,
        request: &AcquireRequest,
        decision: &Decision,
        identity: &Identity,
        now: f64,
    ) -> Result<Object, JournalError> {
        let Recorded { pid, start, pgid } = request.holder_pid.recorded()?;
        // The lease's protection is fixed now, in its body: whoever judges it later reads its own
        // grace and TTL from it, and may only lengthen them.
        let expiry = &self.options.expiry;
        let ttl_minutes =
            request.ttl_minutes.unwrap_or(expiry.default_ttl_s as f64 / 60.0).max(expiry.ttl_floor_s as f64 / 60.0);
        let acquired_at = format_utc(now.floor() as i64);
        let lease = self.writer().lease(&Lease {
            identity,
            holder: &request.owner,
            acquired_at: &acquired_at,
            decision,
            pid,
            proc_starttime: start,
            pgid,
            ttl_minutes,
            grace_s: expiry.grace_s.max(expiry.grace_floor_s),
            forced: request.force,
            run_id: request.run_id.as_deref(),
        });
        Ok(lease)
    }

    /// The writer of this journal's records.
    fn writer(&self) -> Writer<'_> {
        Writer { host_id: &self.options.host_id }
    }

    /// Finds the live lease an owner means: the exact `loop_ts` on `lane`, or the newest lease on
    /// `lane` (case-folded) held by `owner`.
    fn find_owned<'a>(
        state: &'a LiveState,
        lane: &str,
        owner: &str,
        loop_ts: Option<&str>,
    ) -> Option<(&'a Identity, &'a Object)> {
        let lane = casefold(lane);
        state
            .live_with_identity()
            .filter(|(identity, lease)| {
                casefold(&identity.lane) == lane
                    && loop_ts.is_none_or(|ts| identity.loop_ts == ts)
                    && lease.get("holder").and_then(Value::as_str) == Some(owner)
            })
            .last()
    }

    fn live_leases(&self, cache: &Cache<S>) -> Vec<LiveLease> {
        let now = (self.options.clock)();
        let state = &Self::folded(cache).state;
        state
            .live_with_identity()
            .map(|(identity, lease)| LiveLease {
                identity: identity.clone(),
                lease: lease.clone(),
                generation: state.generation(identity),
                verdict: self.verdict(lease, now),
            })
            .collect()
    }

    /// The unreviewed damaged lines (as corrupt sentinels): what stops grants. Writes nothing.
    pub fn unreviewed(&self) -> Result<Vec<Object>, JournalError> {
        self.observed(|_, cache| Ok(unreviewed(Self::folded(cache))))
    }

    /// Records a `REVIEW` by `by` excusing every unreviewed damaged line, so grants go on.
    ///
    /// Each damaged line may have been a grant whose token was handed out (a corrupted `ACQUIRE`
    /// was acknowledged once), so the review also raises the generation counter by one per line:
    /// no token is issued twice.
    pub fn accept_review(&self, by: &str) -> Result<Accepted, JournalError> {
        owner_named(by)?;
        self.locked(|this, cache| {
            let folded = Self::folded(cache);
            let damage = unreviewed(folded);
            if damage.is_empty() {
                return Ok(Accepted { lines: damage, generations_raised: None });
            }
            let before = folded.state.next_generation() - 1;
            let after = before.saturating_add(damage.len() as u64);
            let excuses: Vec<Excuse> = damage.iter().filter_map(Excuse::of_sentinel).collect();
            let mut review = review_record(&excuses, "reviewed by an operator", by);
            review.insert(GENERATION_FLOOR.into(), Value::from(after));
            this.append(cache, vec![review])?;
            Ok(Accepted { lines: damage, generations_raised: Some((before, after)) })
        })
    }

    /// Rewrites the journal as one checkpoint plus its corrupt lines (and the reviews that excuse
    /// them), crash-safely: old or new, never torn. Refused if it would change the live set.
    pub fn compact(&self) -> Result<Compaction, JournalError> {
        self.locked(Self::compact_locked)
    }

    /// The records [`compact`](Self::compact) would write now, writing nothing (for a dry run):
    /// the same plan, so what is shown is what is written, but for the checkpoint's `ts`.
    pub fn compaction_plan(&self) -> Result<Vec<Object>, JournalError> {
        self.observed(|this, cache| this.plan(Self::folded(cache)).map(|(records, _ts)| records))
    }

    /// The compacted journal's records, and the time stamped on its checkpoint.
    fn plan(&self, folded: &Folded) -> Result<(Vec<Object>, String), JournalError> {
        let mut records = folded
            .state
            .compact_fenced()
            .map_err(|source| JournalError::CompactRefused { path: self.path.clone(), source })?;
        let ts = now_ts(&self.options.clock);
        if let Some(checkpoint) = records.first_mut() {
            checkpoint.insert("ts".into(), Value::from(ts.clone()));
        }
        // A whole last line that does not parse is damage the fold holds back as a tail, not a
        // sentinel: carried as one, it stays damage until reviewed instead of vanishing.
        records.extend(whole_bad_last_line(folded).map(BadLine::sentinel));
        let excuses = folded.state.excuses_in_force();
        if !excuses.is_empty() {
            let mut review = review_record(&excuses, "carried forward by compaction", &self.writer_name());
            review.insert("seq".into(), Value::from(folded.state.next_seq().saturating_sub(1)));
            records.push(review);
        }
        Ok((records, ts))
    }

    fn compact_locked(&self, cache: &mut Cache<S>) -> Result<Compaction, JournalError> {
        let folded = Self::folded(cache);
        let (records, ts) = self.plan(folded)?;
        let mut bytes = Vec::new();
        for record in &records {
            let line = to_line(record);
            // A checkpoint holds every live lease on one line: past the readers' line limit it
            // would leave a journal no keel can read, so the rewrite is refused instead.
            if line.len() > LINE_BYTES_MAX_DEFAULT {
                return Err(JournalError::CompactTooLong {
                    path: self.path.clone(),
                    line_bytes: line.len(),
                    line_bytes_max: LINE_BYTES_MAX_DEFAULT,
                });
            }
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let bytes_before = folded.end_offset;
        cache.appender = None;
        cache.folded = None;
        // A compaction killed mid-way leaves a temporary copy of the journal; under the writer
        // lock none is in flight, so any found is such a leftover. Best effort: disk, not meaning.
        let _ = keel_fs::remove_stale_temporaries(&self.path);
        let report = write_atomic_with(&self.storage, &self.path, &bytes)?;
        let compaction = Compaction {
            ts,
            dir_synced: report.dir_sync == keel_fs::DirSync::Synced,
            bytes_before,
            bytes_after: bytes.len() as u64,
            records_after: records.len() as u64,
        };
        cache.compacted_bytes = compaction.bytes_after;
        cache.last_compaction = Some(compaction.clone());
        cache.head_offset = 0;
        self.fold(cache)?;
        let _ = self.write_head(cache);
        Ok(compaction)
    }
}

/// The damage that stops grants, as corrupt sentinels: the unreviewed corrupt lines, then a
/// complete last line that does not parse. Replay calls that line a torn tail, but it was written
/// whole (a crashed writer leaves no `\n`), and the next append would make it a corrupt line; so it
/// is damage to review like any other, and a review's excuse for it holds once the review follows it.
fn unreviewed(folded: &Folded) -> Vec<Object> {
    let mut damage: Vec<Object> = folded.state.damage().into_iter().cloned().collect();
    damage.extend(whole_bad_last_line(folded).map(BadLine::sentinel));
    damage
}

/// The last line, if it does not parse and ends with `\n` (see [`unreviewed`]).
fn whole_bad_last_line(folded: &Folded) -> Option<&BadLine> {
    match &folded.tail {
        Some((bad, false)) => Some(bad),
        _ => None,
    }
}

/// The arbiter's view of a lease request.
fn arbiter_request(request: &AcquireRequest) -> Request {
    Request {
        lane: request.lane.clone(),
        kind: request.kind.clone(),
        tree: request.tree.clone(),
        mode: request.mode.clone(),
        force: request.force,
    }
}

/// Refuses a request that is wrong whatever the journal holds: checked once, before the writer
/// lock, and not again on each retry of a wait. A blank lane would be granted under a name nobody
/// can type, a blank `loop_ts` read as an identity already live, an unknown mode as exclusive, and a
/// tree outside the workspace would collide with nothing.
fn validate(request: &AcquireRequest) -> Result<(), JournalError> {
    if request.owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("a lease needs an owner".into()));
    }
    if request.ttl_minutes.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        return Err(JournalError::InvalidRequest("ttl_minutes must be a positive number".into()));
    }
    if !request.lane.is_empty() && request.lane.trim().is_empty() {
        return Err(JournalError::InvalidRequest(
            "the lane must not be blank (leave it empty to let the arbiter pick)".into(),
        ));
    }
    if request.loop_ts.as_deref().is_some_and(|ts| ts.trim().is_empty()) {
        return Err(JournalError::InvalidRequest("loop_ts must not be blank (omit it to have one generated)".into()));
    }
    if request.loop_ts.as_deref() == Some(keel_kernel::GENERATION_WATERMARK) {
        return Err(JournalError::InvalidRequest(format!(
            "loop_ts {:?} is reserved (it carries the grant counter through compaction)",
            keel_kernel::GENERATION_WATERMARK
        )));
    }
    Mode::requested(&request.mode).map_err(|e| JournalError::InvalidRequest(e.to_string()))?;
    request.holder_pid.recorded()?;
    if request.tree.len() > tree::TREE_ENTRIES_MAX {
        return Err(JournalError::InvalidRequest(format!(
            "a tree of {} entries; at most {} are accepted",
            request.tree.len(),
            tree::TREE_ENTRIES_MAX
        )));
    }
    if let Some((entry, why)) = request.tree.iter().find_map(|e| tree::requestable(e).err().map(|why| (e, why))) {
        return Err(JournalError::InvalidRequest(format!("tree entry {entry:?} cannot be requested: {why}")));
    }
    Ok(())
}

/// Refuses a blank owner: a record that names no one can be traced to no one.
fn owner_named(owner: &str) -> Result<(), JournalError> {
    if owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("the owner must not be blank".into()));
    }
    Ok(())
}

impl<S: Storage + Clone> LeaseBackend for Journal<S> {
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError> {
        validate(request)?;
        self.locked(|this, cache| this.acquire_locked(cache, request, true))
    }

    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError> {
        validate(request)?;
        let arbiter_request = arbiter_request(request);
        self.observed(|this, cache| {
            let folded = Self::folded(cache);
            this.damage_check(folded)?;
            let (decision, _reclaimable) = this.admission(folded, &arbiter_request, (this.options.clock)());
            Ok(decision)
        })
    }

    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError> {
        validate(request)?;
        let started = Instant::now();
        let mut backoff_ms = 10;
        loop {
            let last = started.elapsed() >= timeout;
            let outcome = self.locked(|this, cache| this.acquire_locked(cache, request, last))?;
            if last || matches!(outcome, AcquireOutcome::Acquire(_)) {
                return Ok(outcome);
            }
            let left = timeout.saturating_sub(started.elapsed());
            std::thread::sleep(Duration::from_millis(backoff_ms).min(left));
            backoff_ms = (backoff_ms * 2).min(WAIT_BACKOFF_MS_MAX);
        }
    }

    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError> {
        let LeaseRef { lane, loop_ts } = *lease;
        self.locked(|this, cache| {
            let Some((identity, _)) = Self::find_owned(&Self::folded(cache).state, lane, owner, loop_ts) else {
                return Ok(None);
            };
            let identity = identity.clone();
            let record = this.writer().release(&identity, owner);
            this.append(cache, vec![record])?;
            Ok(Some(identity))
        })
    }

    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError> {
        let LeaseRef { lane, loop_ts } = *lease;
        self.locked(|this, cache| {
            let now = (this.options.clock)();
            let Some((identity, lease)) = Self::find_owned(&Self::folded(cache).state, lane, owner, loop_ts) else {
                return Ok(None);
            };
            let identity = identity.clone();
            let last = ["heartbeat_at", "acquired_at"]
                .iter()
                .filter_map(|k| lease.get(*k).and_then(Value::as_str))
                .filter_map(|t| keel_kernel::expiry::parse_utc(t).map(|s| (s, t.to_owned())))
                .max();
            // A beat is skipped only while the last one is under half a grace old: a floor past
            // that would let the lease fall out of its grace, and a live lease be reclaimed.
            let grace_s = keel_kernel::expiry::grace_s(lease, &this.options.expiry);
            let floor = coalesce_floor_s
                .or(Some(this.options.heartbeat_coalesce_s).filter(|&f| f > 0))
                .map(|floor| floor.min(grace_s / 2));
            if let (Some(floor), Some((at, text))) = (floor, &last)
                && (now.floor() as i64).saturating_sub(*at) < i64::try_from(floor).unwrap_or(i64::MAX)
            {
                return Ok(Some(Beat::Coalesced { identity, heartbeat_at: text.clone() }));
            }
            let heartbeat_at = format_utc(now.floor() as i64);
            let record = this.writer().heartbeat(&identity, &heartbeat_at);
            this.append(cache, vec![record])?;
            Ok(Some(Beat::Beaten { identity, heartbeat_at }))
        })
    }

    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError> {
        owner_named(new_owner)?;
        let Recorded { pid, start, pgid } = holder.recorded()?;
        self.locked(|this, cache| {
            let identity = lease.clone();
            let folded = Self::folded(cache);
            let Some(lease) = folded.state.lease(&identity) else {
                return Ok(None);
            };
            if folded.state.next_generation() == u64::MAX {
                return Err(JournalError::Exhausted { path: this.path.clone(), counter: "generation" });
            }
            let prev_holder = lease.get("holder").cloned().unwrap_or(Value::Null);
            let mut body = lease.clone();
            body.insert("holder".into(), Value::from(new_owner));
            body.insert("host_id".into(), Value::from(this.options.host_id.clone()));
            body.insert("pid".into(), pid.map_or(Value::Null, Value::from));
            for (member, value) in [("proc_starttime", start), ("pgid", pgid.map(u64::from))] {
                match value {
                    Some(value) => body.insert(member.into(), Value::from(value)),
                    None => body.remove(member),
                };
            }
            body.insert("heartbeat_at".into(), Value::from(now_ts(&this.options.clock)));
            let record = this.writer().adopt(&identity, &prev_holder, new_owner, body);
            this.append(cache, vec![record])?;
            let generation =
                Self::folded(cache).state.generation(&identity).expect("an adopted lease just folded has a generation");
            Ok(Some(Adopted { identity, generation }))
        })
    }

    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        self.locked(|this, cache| {
            let record = this.writer().halt(lane, owner, reason);
            this.append(cache, vec![record])
        })
    }

    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        self.locked(|this, cache| {
            let loop_ts = fresh_loop_ts((this.options.clock)());
            let record = this.writer().spawn(lane, &loop_ts, owner, std::process::id(), command);
            this.append(cache, vec![record])
        })
    }

    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError> {
        self.locked(|this, cache| {
            let identity = lease.clone();
            let Some(lease) = Self::folded(cache).state.lease(&identity) else {
                return Ok(None);
            };
            let verdict = this.verdict(lease, (this.options.clock)());
            if only_if_dead && !verdict.is_dead() {
                return Ok(None);
            }
            this.append(cache, vec![Writer::scavenge(&identity, reason)])?;
            Ok(Some(verdict))
        })
    }

    fn live(&self) -> Result<Vec<LiveLease>, JournalError> {
        self.observed(|this, cache| Ok(this.live_leases(cache)))
    }

    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError> {
        self.observed(|this, cache| {
            let stopped = this.stopped(Self::folded(cache));
            Ok(look(&Self::folded(cache).state, stopped))
        })
    }

    fn judge(&self, lease: &Object) -> Verdict {
        self.verdict(lease, (self.options.clock)())
    }

    fn live_view(&self) -> Result<LiveView, JournalError> {
        self.observed(|this, cache| {
            Ok(LiveView { leases: this.live_leases(cache), grants_stopped: this.stopped(Self::folded(cache)) })
        })
    }

    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError> {
        self.locked(|this, cache| Ok(fence(&this.live_leases(cache))))
    }

    fn stats(&self) -> Result<Stats, JournalError> {
        self.observed(|_, cache| {
            let folded = Self::folded(cache);
            Ok(Stats {
                records: folded.state.record_count(),
                bytes: folded.end_offset,
                live_leases: folded.state.live_count(),
                corrupt: folded.state.corrupt().len() + usize::from(whole_bad_last_line(folded).is_some()),
                unreviewed_corrupt: unreviewed(folded).len(),
                ops: folded.state.op_counts(),
                last_compaction: cache.last_compaction.clone(),
            })
        })
    }
}
