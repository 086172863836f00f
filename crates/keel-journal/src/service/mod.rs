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

use keel_fs::seam::{FileStat, StorageRead};
use keel_fs::{
    Appender, ErrorKind, FsError, LINE_BYTES_MAX_DEFAULT, LineReader, OsLock, OsStorage, ReusableLock, Storage,
    write_atomic_with,
};
use keel_kernel::admission::{Admission, admit};
use keel_kernel::arbiter::{Decision, Outcome, Request};
use keel_kernel::expiry::{ExpiryPolicy, Verdict, format_utc};
use keel_kernel::json::to_line;
use keel_kernel::line::BadLine;
use keel_kernel::record::{Refusal, Writer};

use crate::backend::{LeaseBackend, LeaseRef};
use keel_kernel::replay::{CompactError, Excuse, GENERATION_FLOOR, StateSnapshot, review_record};
use keel_kernel::{Identity, LiveState, Object, Replay, Taxonomy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process;

mod append;
mod compact;
mod fold;
mod grant;
mod ops;

use crate::granting::{self, arbiter_request, fresh_loop_ts, owner_named, validate};
use append::{unreviewed, whole_bad_last_line};

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
    /// A lease service reached over the network could not be asked (no quorum, no member
    /// answering): nothing is known to have changed, and nothing is guessed.
    #[error("{service} unavailable: {detail}")]
    Unavailable {
        /// The service, as its backend names it (`etcd` and its endpoints).
        service: String,
        /// What failed, on each endpoint tried.
        detail: String,
    },
}

impl JournalError {
    /// The file the error concerns, when it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Fs(error) => Some(error.path()),
            Self::Damaged { path, .. }
            | Self::IdentityInUse { path, .. }
            | Self::CompactRefused { path, .. }
            | Self::CompactTooLong { path, .. }
            | Self::Exhausted { path, .. } => Some(path),
            Self::InvalidRequest(_) | Self::Unavailable { .. } => None,
        }
    }

    /// The 1-based line of [`Self::path`] the error concerns, when it names one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Damaged { line_number, .. } => Some(*line_number),
            _ => None,
        }
    }

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
            Self::Exhausted { .. } | Self::Unavailable { .. } => ErrorKind::Io,
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

impl AcquireRequest {
    /// The lane of a lease asked for by region with no lane named (the CLI's `acquire --tree`, the
    /// MCP server's `lease_acquire`): `claim:OWNER:TREE`. It names the owner so that two agents
    /// sharing a region do not collide on the lane's name (a live lane is held once), and the
    /// region so that one agent's leases on separate regions do not either.
    pub fn claim_lane(owner: &str, tree: &[String]) -> String {
        format!("claim:{owner}:{}", tree.join("+"))
    }
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
pub struct Recorded {
    /// The process id (`None`: no process, only the TTL frees the lease).
    pub pid: Option<u32>,
    /// Its start time in clock ticks since boot, which tells a reused pid apart.
    pub start: Option<u64>,
    /// The process group it leads, when the whole group holds the lease.
    pub pgid: Option<u32>,
}

impl HolderPid {
    /// The pid, start time and process group to record; `Err` if it names no running process.
    pub fn recorded(self) -> Result<Recorded, JournalError> {
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
}
