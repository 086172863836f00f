//! The [`Mutator`]: fenced write, delete and rename of workspace files, logged step by step.
//!
//! Every operation runs under the mutator lock (`<root>/.keel/mutator.lock`, an `flock` that
//! dies with its holder) from the intent check to the last log record, so two writers of one
//! workspace are serialised and "check the pre-state, then commit" is atomic among them. The
//! lease journal is read twice per operation: before anything is recorded (a refusal changes
//! nothing) and again right before the commit (the fence is checked at commit time).

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_fs::seam::{FileKind, is_errno, read_to_end};
use keel_fs::{Appender, OsLock, OsStorage, ResolveError, Resolved, Root, Storage};
use keel_journal::{Journal, LeaseBackend, Location};
use keel_kernel::gate::{self, Decision, Holder, LiveGrant, Refusal};
use keel_kernel::tree::Tree;
use rustix::io::Errno;

use crate::error::MutateError;
use crate::log::{Damage, Entry, Index, IntentKey, Record, Standing, Step};
use crate::request::{DirSyncStatus, Expect, IntentId, Op, Outcome, PreState, Request, content_hash};

mod at;
mod fence;
mod ops;
mod recovery;

pub use at::hash_path;
use at::{
    INSIDE_ROOT, bind_journal, dir_identity, dir_sync, exists_at, forbidden_escape, gate_path, hash_in, inode_at,
    journal_place, look, refuse_damage, scratch_name, unlink_at,
};

/// What a stage of an operation gives: `Ok(Ok(t))` to go on with `t`, `Ok(Err(outcome))` to stop
/// with the outcome the caller is told (a refusal is an answer, not an error), `Err` on failure.
type Stage<T> = Result<Result<T, Outcome>, MutateError>;

/// The largest content written or hashed, in bytes.
pub const CONTENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// How long an operation waits for the mutator lock by default, in milliseconds.
pub const LOCK_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Compact the mutation log on open once it is larger than this, in bytes.
pub const LOG_COMPACT_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// How many finished intents compaction remembers (a retry of an older one is a new intent).
pub const INTENTS_REMEMBERED_MAX: usize = 100_000;
/// The directory beneath the root that holds keel's own files; always protected.
pub use keel_journal::STATE_DIR;
/// The mutation log's name in [`STATE_DIR`].
pub const LOG_NAME: &str = "mutations.jsonl";
/// The mutator lock's name in [`STATE_DIR`].
pub const LOCK_NAME: &str = "mutator.lock";
/// The name in [`STATE_DIR`] of the file that binds the workspace to its lease journal.
pub const JOURNAL_BINDING_NAME: &str = "journal-binding";
/// How much of a file name goes into its scratch name, so the scratch name fits `NAME_MAX`.
const SCRATCH_STEM_BYTES_MAX: usize = 64;
/// Read buffer for hashing.
const HASH_BUFFER_BYTES: usize = 64 * 1024;
/// The largest journal binding read back (a path or a service name).
const BINDING_BYTES_MAX: u64 = 64 * 1024;

/// A point in an operation where [`MutatorOptions::on_step`] is called: after an effect
/// (`TempWritten`, `Renamed`, ...) and after the log record that follows it (`...Logged`).
/// Tests crash or race there; production code leaves the hook unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// The intent record is durable.
    IntentLogged,
    /// The `checked` record is durable.
    CheckedLogged,
    /// The temporary file is written and fsynced (write), not yet logged.
    TempWritten,
    /// The `temp_created` record is durable.
    TempLogged,
    /// The last check passed under the journal's writer lock; the commit (rename) comes next,
    /// still under that lock.
    Fenced,
    /// The file was renamed to its trash name (delete), not yet logged.
    Trashed,
    /// The `trashed` record is durable.
    TrashedLogged,
    /// The rename happened (write, rename), not yet logged.
    Renamed,
    /// The `renamed` record is durable.
    RenamedLogged,
    /// The trash name was unlinked (delete), not yet logged.
    Unlinked,
    /// The `unlinked` record is durable.
    UnlinkedLogged,
    /// The directory fsync happened, not yet logged.
    DirSynced,
    /// The `dir_synced` record is durable.
    DirSyncedLogged,
    /// The `complete` record is durable.
    CompleteLogged,
}

impl Point {
    /// Every point a write passes, in order.
    pub const WRITE: [Point; 10] = [
        Point::IntentLogged,
        Point::CheckedLogged,
        Point::TempWritten,
        Point::TempLogged,
        Point::Fenced,
        Point::Renamed,
        Point::RenamedLogged,
        Point::DirSynced,
        Point::DirSyncedLogged,
        Point::CompleteLogged,
    ];

    /// Every point a delete passes, in order.
    pub const DELETE: [Point; 10] = [
        Point::IntentLogged,
        Point::CheckedLogged,
        Point::Fenced,
        Point::Trashed,
        Point::TrashedLogged,
        Point::Unlinked,
        Point::UnlinkedLogged,
        Point::DirSynced,
        Point::DirSyncedLogged,
        Point::CompleteLogged,
    ];

    /// The point's name in `snake_case` (what the crash helper takes).
    pub fn name(self) -> &'static str {
        match self {
            Point::IntentLogged => "intent_logged",
            Point::CheckedLogged => "checked_logged",
            Point::TempWritten => "temp_written",
            Point::TempLogged => "temp_logged",
            Point::Fenced => "fenced",
            Point::Trashed => "trashed",
            Point::TrashedLogged => "trashed_logged",
            Point::Renamed => "renamed",
            Point::RenamedLogged => "renamed_logged",
            Point::Unlinked => "unlinked",
            Point::UnlinkedLogged => "unlinked_logged",
            Point::DirSynced => "dir_synced",
            Point::DirSyncedLogged => "dir_synced_logged",
            Point::CompleteLogged => "complete_logged",
        }
    }

    /// The point named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::WRITE.into_iter().chain(Self::DELETE).find(|p| p.name() == name)
    }
}

/// A hook called at each [`Point`].
pub type StepHook = Arc<dyn Fn(Point) + Send + Sync>;

/// How a [`Mutator`] behaves. `Default` is what the CLI uses.
#[derive(Clone)]
pub struct MutatorOptions {
    /// How long an operation waits for the mutator lock before failing with "lock busy".
    pub lock_timeout_ms: u64,
    /// The largest content written or hashed.
    pub content_bytes_max: u64,
    /// Paths no write may touch, on top of the journal taxonomy's protected entries and `.keel/`.
    pub protected: Vec<String>,
    /// Compact the mutation log on open once it is larger than this.
    pub log_compact_bytes: u64,
    /// Called at each [`Point`]; for tests that crash or race an operation.
    pub on_step: Option<StepHook>,
}

impl Default for MutatorOptions {
    fn default() -> Self {
        Self {
            lock_timeout_ms: LOCK_TIMEOUT_MS_DEFAULT,
            content_bytes_max: CONTENT_BYTES_MAX_DEFAULT,
            protected: Vec::new(),
            log_compact_bytes: LOG_COMPACT_BYTES_DEFAULT,
            on_step: None,
        }
    }
}

impl std::fmt::Debug for MutatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutatorOptions")
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("content_bytes_max", &self.content_bytes_max)
            .field("protected", &self.protected)
            .field("log_compact_bytes", &self.log_compact_bytes)
            .field("on_step", &self.on_step.is_some())
            .finish()
    }
}

/// What opening a mutator found in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Incomplete intents finished (their effect had happened).
    pub rolled_forward: usize,
    /// Incomplete intents undone (their temporary or trash files removed).
    pub rolled_back: usize,
    /// Whether the log was compacted.
    pub compacted: bool,
}

/// Fenced, logged, atomic mutation of the files beneath one workspace root, checked against the
/// leases of one [`LeaseBackend`] (the journal by default), doing all its I/O through one
/// [`Storage`] (the real file system by default; tests crash or fail it).
/// `Send + Sync`: share one per process, or open several (they serialise on the lock).
pub struct Mutator<B: LeaseBackend = Journal, S: Storage + Clone = OsStorage> {
    root: Root<S>,
    journal: B,
    options: MutatorOptions,
    protected: Tree,
    log_path: PathBuf,
    lock_path: PathBuf,
    index: Mutex<Index>,
    recovery: Recovery,
}

impl<B: LeaseBackend, S: Storage + Clone> std::fmt::Debug for Mutator<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutator").field("root", &self.root.path()).field("log", &self.log_path).finish_non_exhaustive()
    }
}

/// An open `*at()` target: parent directory and name.
struct Target<D> {
    resolved: Resolved<D>,
    path: String,
}

impl<D> Target<D> {
    fn parent(&self) -> &D {
        self.resolved.parent()
    }

    fn name(&self) -> &std::ffi::OsStr {
        self.resolved.name()
    }
}

/// A file as checked: its state, and the inode that state was read from.
#[derive(Debug, Clone)]
struct Observed {
    state: PreState,
    inode: Option<(u64, u64)>,
    mode: Option<u32>,
}

/// What looking at a path found.
enum Look {
    Seen(Observed),
    /// A symlink where a file should be.
    Symlink,
}

/// Everything one operation holds: the lock, the index and an appender on the log.
struct Session<'a, S: Storage> {
    _lock: OsLock,
    index: MutexGuard<'a, Index>,
    appender: Appender<S>,
    storage: &'a S,
    log_path: &'a Path,
}

impl<S: Storage> Session<'_, S> {
    fn log(&mut self, record: &Record) -> Result<(), MutateError> {
        let line = serde_json::to_vec(record)?;
        let report = self.appender.append(&line)?;
        self.index.appended(self.storage, &line, &report, self.log_path)
    }
}

impl<B: LeaseBackend> Mutator<B, OsStorage> {
    /// Opens the mutator of the workspace at `root`, checking writes against `backend`.
    /// Creates `<root>/.keel/` if needed, then replays the mutation log under the lock: every
    /// incomplete intent is rolled forward (its effect had happened) or back (its temporary or
    /// trash file removed), and an oversized log is compacted.
    pub fn open(root: &Path, backend: B, options: MutatorOptions) -> Result<Self, MutateError> {
        Self::open_with(OsStorage, root, backend, options)
    }
}

impl Mutator {
    /// The mutation log's damaged lines that no review has excused (the reason
    /// [`MutateError::LogDamaged`] refuses every operation). With `accept_by` (who reviewed
    /// them), also records an `excused` record after them, so operations run again. Without it,
    /// changes nothing. Needs no open [`Mutator`], since opening is refused while damage stands;
    /// takes the mutator lock like any operation.
    pub fn review_log(root: &Path, accept_by: Option<&str>, options: &MutatorOptions) -> Result<Damage, MutateError> {
        let storage = OsStorage;
        let state_dir = root.join(STATE_DIR);
        let log_path = state_dir.join(LOG_NAME);
        match storage.link_stat(&log_path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Damage::default()),
            Err(e) => return Err(MutateError::io("stat mutation log", &log_path, e)),
        }
        if accept_by.is_some_and(|by| by.trim().is_empty()) {
            return Err(MutateError::InvalidRequest {
                what: "reviewer".to_owned(),
                reason: "must name who reviewed the damage",
            });
        }
        let _lock = OsLock::acquire_timeout(&state_dir.join(LOCK_NAME), options.lock_timeout_ms)?;
        let mut index = Index::default();
        index.catch_up(&storage, &log_path)?;
        if let Some(by) = accept_by.filter(|_| !index.damage.is_empty()) {
            index.cut_torn_tail(&storage, &log_path)?;
            let line = serde_json::to_vec(&Record::noted("", Step::Excused, by))?;
            // The log exists and its torn tail is cut: the report has nothing to say.
            let _report = Appender::open(&log_path)?.append(&line)?;
        }
        Ok(index.damage)
    }
}

impl<B: LeaseBackend, S: Storage + Clone> Mutator<B, S> {
    /// [`Mutator::open`] with all file I/O through `storage`.
    pub fn open_with(storage: S, root: &Path, backend: B, options: MutatorOptions) -> Result<Self, MutateError> {
        let root_dir = Root::open_with(storage.clone(), root).map_err(MutateError::Resolve)?;
        let state_dir = root.join(STATE_DIR);
        match storage.link_stat(&state_dir) {
            Ok(stat) if stat.kind == FileKind::Dir => {}
            Ok(_) => {
                return Err(MutateError::io(
                    "open state directory",
                    &state_dir,
                    std::io::Error::other("exists but is not a directory (a symlink is refused)"),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => match storage.create_dir(&state_dir) {
                // Its name made durable before anything inside it is acknowledged.
                Ok(()) => {
                    let _synced = keel_fs::seam::dir_sync_status(storage.sync_dir(root))
                        .map_err(|e| MutateError::io("fsync directory", root, e))?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(MutateError::io("create state directory", &state_dir, e)),
            },
            Err(e) => return Err(MutateError::io("stat state directory", &state_dir, e)),
        }
        let place = journal_place(root_dir.path(), backend.location())?;
        let mut protected: Vec<String> = backend.protected().to_vec();
        protected.extend(options.protected.iter().cloned());
        protected.push(format!("{STATE_DIR}/"));
        if let Some(journal_file) = place.strip_prefix(INSIDE_ROOT) {
            // A journal kept in the workspace, outside `.keel/`: neither it nor its lock, head,
            // repair sidecar or temporaries may be written through the gate, or a holder could
            // erase every lease and the counter with them.
            let (dir, name) = journal_file.rsplit_once('/').map_or(("", journal_file), |(d, n)| (d, n));
            let dir = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            protected.push(format!("{journal_file}*"));
            protected.push(format!("{dir}.{name}*"));
        }
        let mut mutator = Self {
            root: root_dir,
            protected: Tree::new(&protected),
            journal: backend,
            log_path: state_dir.join(LOG_NAME),
            lock_path: state_dir.join(LOCK_NAME),
            options,
            index: Mutex::new(Index::default()),
            recovery: Recovery::default(),
        };
        let recovery = {
            let mut session = mutator.session()?;
            bind_journal(&storage, &state_dir.join(JOURNAL_BINDING_NAME), &place, root)?;
            let mut recovery = mutator.recover_all(&mut session)?;
            recovery.compacted = mutator.compact_if_large(&mut session)?;
            recovery
        };
        mutator.recovery = recovery;
        Ok(mutator)
    }

    /// What opening found and did.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The lease backend writes are checked against.
    pub fn journal(&self) -> &B {
        &self.journal
    }

    /// The mutation log's path.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The content hash of the file at `path` (see [`hash_path`]).
    pub fn hash(&self, path: &str) -> Result<PreState, MutateError> {
        hash_in(&self.root, path, self.options.content_bytes_max)
    }

    fn storage(&self) -> &S {
        self.root.storage()
    }

    fn point(&self, point: Point) {
        if let Some(hook) = &self.options.on_step {
            hook(point);
        }
    }

    /// A step that happened (`done`) and its log record, made durable (`logged`).
    fn step_done(
        &self,
        session: &mut Session<'_, S>,
        record: &Record,
        done: Point,
        logged: Point,
    ) -> Result<(), MutateError> {
        self.point(done);
        session.log(record)?;
        self.point(logged);
        Ok(())
    }

    /// The last step of every mutation: the directory sync, logged with how it went.
    fn dir_synced(&self, session: &mut Session<'_, S>, intent: &str, synced: DirSyncStatus) -> Result<(), MutateError> {
        let record = Record { dir_sync: Some(synced), ..Record::step(intent, Step::DirSynced) };
        self.step_done(session, &record, Point::DirSynced, Point::DirSyncedLogged)
    }

    /// Takes the lock (first: see the lock order below), then the index, then folds the log.
    /// Lock order: the `flock` before the in-process mutex, so threads sharing one mutator and
    /// mutators in other processes queue on the same lock without deadlock.
    fn session(&self) -> Result<Session<'_, S>, MutateError> {
        let lock = OsLock::acquire_timeout(&self.lock_path, self.options.lock_timeout_ms)?;
        let mut index = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let storage = self.storage();
        index.catch_up(storage, &self.log_path)?;
        refuse_damage(&index, &self.log_path)?;
        index.cut_torn_tail(storage, &self.log_path)?;
        let appender = Appender::open_with(storage.clone(), &self.log_path)?;
        Ok(Session { _lock: lock, index, appender, storage, log_path: &self.log_path })
    }
}
