//! The [`Mutator`]: fenced write, delete and rename of workspace files, logged step by step.
//!
//! Every operation runs under the mutator lock (`<root>/.keel/mutator.lock`, an `flock` that
//! dies with its holder) from the intent check to the last log record, so two writers of one
//! workspace are serialised and "check the pre-state, then commit" is atomic among them. The
//! lease journal is read twice per operation: before anything is recorded (a refusal changes
//! nothing) and again right before the commit (the fence is checked at commit time).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_fs::{Appender, OsLock, ResolveError, Resolved, Root};
use keel_journal::{Journal, LeaseBackend};
use keel_kernel::gate::{self, Decision, Holder, LiveGrant, Refusal};
use keel_kernel::tree::Tree;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::MutateError;
use crate::log::{Damage, Entry, Index, IntentKey, Record, Standing, Step};
use crate::request::{DirSyncStatus, Expect, IntentId, Op, Outcome, PreState, Request, content_hash};

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

/// Fenced, logged, atomic mutation of the files beneath one workspace root.
/// `Send + Sync`: share one per process, or open several (they serialise on the lock).
pub struct Mutator {
    root: Root,
    journal: Journal,
    options: MutatorOptions,
    protected: Tree,
    log_path: PathBuf,
    lock_path: PathBuf,
    index: Mutex<Index>,
    recovery: Recovery,
}

impl std::fmt::Debug for Mutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutator").field("root", &self.root.path()).field("log", &self.log_path).finish_non_exhaustive()
    }
}

/// An open `*at()` target: parent directory and name.
struct Target {
    resolved: Resolved,
    path: String,
}

impl Target {
    fn parent(&self) -> BorrowedFd<'_> {
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
struct Session<'a> {
    _lock: OsLock,
    index: MutexGuard<'a, Index>,
    appender: Appender,
    log_path: &'a Path,
}

impl Session<'_> {
    fn log(&mut self, record: &Record) -> Result<(), MutateError> {
        let line = serde_json::to_vec(record)?;
        let report = self.appender.append(&line)?;
        self.index.appended(&line, &report, self.log_path)
    }
}

/// Marks a journal path beneath the workspace root in [`journal_place`].
const INSIDE_ROOT: &str = "root:";

/// Where `journal` is, as the binding records it: `root:<path beneath the root>` or its absolute
/// path, with symbolic links resolved in its directory (the file itself may not exist yet).
fn journal_place(root: &Path, journal: &Path) -> Result<String, MutateError> {
    let canonical = |path: &Path| std::fs::canonicalize(path).map_err(|e| MutateError::io("resolve", path, e));
    let root = canonical(root)?;
    let Some(name) = journal.file_name() else {
        return Err(MutateError::InvalidRequest {
            what: journal.display().to_string(),
            reason: "a journal path needs a file name",
        });
    };
    let dir = journal.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let full = canonical(dir)?.join(name);
    Ok(match full.strip_prefix(&root) {
        Ok(inside) => format!("{INSIDE_ROOT}{}", inside.to_string_lossy()),
        Err(_) => full.to_string_lossy().into_owned(),
    })
}

/// Binds the workspace to the journal its first mutator used, and refuses any other: the gate
/// checks generations against the journal it is given, so a stale copy of the journal, or a
/// wrong `$KEEL_JOURNAL`, would let a released lease's generation land. Under the mutator lock.
fn bind_journal(binding: &Path, place: &str, root: &Path) -> Result<(), MutateError> {
    match std::fs::read(binding) {
        Ok(bound) if bound == place.as_bytes() => Ok(()),
        Ok(bound) => Err(MutateError::JournalMismatch {
            root: root.to_owned(),
            bound: String::from_utf8_lossy(&bound).into_owned(),
            given: place.to_owned(),
            binding: binding.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let _report = keel_fs::write_atomic(binding, place.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(MutateError::io("read journal binding", binding, e)),
    }
}

fn refuse_damage(index: &Index, log_path: &Path) -> Result<(), MutateError> {
    match index.damage.first.first() {
        Some(first) => Err(MutateError::LogDamaged {
            path: log_path.to_owned(),
            first: first.clone(),
            more: index.damage.count - 1,
        }),
        None => Ok(()),
    }
}

/// The path the gate decides on: a spelling that is not the region keel compares (a backslash,
/// white space at either end, a control character, a `.` or empty segment) is a usage error
/// naming it, since the file system would use another path than the gate judged; an escape
/// (absolute, `..`) is the gate's refusal.
fn gate_path(path: &str) -> Result<Result<String, Outcome>, MutateError> {
    if let Some(reason) = keel_kernel::tree::misspelling(path).filter(|_| gate::escape(path).is_none()) {
        return Err(MutateError::InvalidRequest { what: format!("path {path:?}"), reason });
    }
    Ok(gate::canonical_path(path).map_err(|detail| forbidden_escape(path, detail)))
}

fn forbidden_escape(path: &str, detail: &str) -> Outcome {
    Outcome::Forbidden { refusal: Refusal::Escapes { path: path.to_owned(), detail: detail.to_owned() } }
}

fn scratch_name(path: &str, kind: &str, intent: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut end = name.len().min(SCRATCH_STEM_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.{kind}.{intent}", &name[..end])
}

fn dir_sync(parent: BorrowedFd<'_>, path: &str) -> Result<DirSyncStatus, MutateError> {
    let status = keel_fs::seam::dir_sync_status(rustix::fs::fsync(parent).map_err(std::io::Error::from))
        .map_err(|e| MutateError::io("fsync directory", path, e))?;
    Ok(status.into())
}

fn dir_identity(fd: BorrowedFd<'_>, path: &str) -> Result<(u64, u64), MutateError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| MutateError::io("fstat directory", path, e))?;
    Ok((stat.st_dev, stat.st_ino))
}

fn exists_at(parent: BorrowedFd<'_>, name: &str, path: &str) -> Result<bool, MutateError> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(MutateError::io("stat", path, e)),
    }
}

fn unlink_at(parent: BorrowedFd<'_>, name: &str, path: &str) -> Result<(), MutateError> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(MutateError::io("unlink", path, e)),
    }
}

/// The blake3 hash of a file's content, read through `file` (at most `bytes_max` bytes).
fn hash_file(file: &mut File, path: &str, bytes_max: u64) -> Result<String, MutateError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; HASH_BUFFER_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(MutateError::io("read", path, e)),
        };
        total += n as u64;
        if total > bytes_max {
            return Err(MutateError::TooLarge { path: path.into(), bytes: total, bytes_max });
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Looks at the final component of `resolved` without following a symlink: absent, a symlink,
/// or a regular file with its hash, inode and permission bits.
fn look(resolved: &Resolved, path: &str, bytes_max: u64) -> Result<Look, MutateError> {
    match rustix::fs::statat(resolved.parent(), resolved.name(), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(Look::Seen(Observed { state: PreState::Absent, inode: None, mode: None })),
        Err(e) => return Err(MutateError::io("stat", path, e)),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => return Ok(Look::Symlink),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile => {
            return Err(MutateError::NotAFile { path: path.into() });
        }
        Ok(_) => {}
    }
    // O_NONBLOCK: a FIFO swapped in after the stat must not hang the open.
    let mut file = match resolved.open(OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()) {
        Ok(file) => file,
        Err(ResolveError::Symlink { .. }) => return Ok(Look::Symlink),
        Err(ResolveError::NotFound { .. }) => {
            return Ok(Look::Seen(Observed { state: PreState::Absent, inode: None, mode: None }));
        }
        Err(e) => return Err(MutateError::Resolve(e)),
    };
    let stat = rustix::fs::fstat(&file).map_err(|e| MutateError::io("fstat", path, e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(MutateError::NotAFile { path: path.into() });
    }
    if stat.st_size as u64 > bytes_max {
        return Err(MutateError::TooLarge { path: path.into(), bytes: stat.st_size as u64, bytes_max });
    }
    let hash = hash_file(&mut file, path, bytes_max)?;
    Ok(Look::Seen(Observed {
        state: PreState::Present { hash },
        inode: Some((stat.st_dev, stat.st_ino)),
        mode: Some(stat.st_mode & 0o7777),
    }))
}

/// The content hash of the regular file at `path` beneath `root` (no lease needed: reading).
/// A symlink or an escaping path is refused like any other resolution.
pub fn hash_path(root: &Path, path: &str, bytes_max: u64) -> Result<PreState, MutateError> {
    let canonical = gate::canonical_path(path)
        .map_err(|reason| MutateError::Resolve(ResolveError::Invalid { path: path.into(), reason }))?;
    let root = Root::open(root).map_err(MutateError::Resolve)?;
    let resolved = root.resolve(Path::new(&canonical)).map_err(MutateError::Resolve)?;
    match look(&resolved, &canonical, bytes_max)? {
        Look::Seen(observed) => Ok(observed.state),
        Look::Symlink => Err(MutateError::Resolve(ResolveError::Symlink {
            path: canonical.clone().into(),
            component: canonical.into(),
        })),
    }
}

impl Mutator {
    /// Opens the mutator of the workspace at `root`, checking writes against `journal`.
    /// Creates `<root>/.keel/` if needed, then replays the mutation log under the lock: every
    /// incomplete intent is rolled forward (its effect had happened) or back (its temporary or
    /// trash file removed), and an oversized log is compacted.
    pub fn open(root: &Path, journal: Journal, options: MutatorOptions) -> Result<Self, MutateError> {
        let root_dir = Root::open(root).map_err(MutateError::Resolve)?;
        let state_dir = root.join(STATE_DIR);
        match std::fs::symlink_metadata(&state_dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(MutateError::io(
                    "open state directory",
                    &state_dir,
                    std::io::Error::other("exists but is not a directory (a symlink is refused)"),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => match std::fs::create_dir(&state_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(MutateError::io("create state directory", &state_dir, e)),
            },
            Err(e) => return Err(MutateError::io("stat state directory", &state_dir, e)),
        }
        let place = journal_place(root_dir.path(), journal.path())?;
        let mut protected: Vec<String> = journal.options().taxonomy.protected.clone();
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
            journal,
            log_path: state_dir.join(LOG_NAME),
            lock_path: state_dir.join(LOCK_NAME),
            options,
            index: Mutex::new(Index::default()),
            recovery: Recovery::default(),
        };
        let recovery = {
            let mut session = mutator.session()?;
            bind_journal(&state_dir.join(JOURNAL_BINDING_NAME), &place, root)?;
            let mut recovery = mutator.recover_all(&mut session)?;
            recovery.compacted = mutator.compact_if_large(&mut session)?;
            recovery
        };
        mutator.recovery = recovery;
        Ok(mutator)
    }

    /// The mutation log's damaged lines that no review has excused (the reason
    /// [`MutateError::LogDamaged`] refuses every operation). With `accept_by` (who reviewed
    /// them), also records an `excused` record after them, so operations run again. Without it,
    /// changes nothing. Needs no open [`Mutator`], since opening is refused while damage stands;
    /// takes the mutator lock like any operation.
    pub fn review_log(root: &Path, accept_by: Option<&str>, options: &MutatorOptions) -> Result<Damage, MutateError> {
        let state_dir = root.join(STATE_DIR);
        let log_path = state_dir.join(LOG_NAME);
        match std::fs::symlink_metadata(&log_path) {
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
        index.catch_up(&log_path)?;
        if let Some(by) = accept_by.filter(|_| !index.damage.is_empty()) {
            index.cut_torn_tail(&log_path)?;
            let line = serde_json::to_vec(&Record::noted("", Step::Excused, by))?;
            // The log exists and its torn tail is cut: the report has nothing to say.
            let _report = Appender::open(&log_path)?.append(&line)?;
        }
        Ok(index.damage)
    }

    /// What opening found and did.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The lease journal writes are checked against.
    pub fn journal(&self) -> &Journal {
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
        hash_path(self.root.path(), path, self.options.content_bytes_max)
    }

    fn point(&self, point: Point) {
        if let Some(hook) = &self.options.on_step {
            hook(point);
        }
    }

    /// A step that happened (`done`) and its log record, made durable (`logged`).
    fn step_done(
        &self,
        session: &mut Session<'_>,
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
    fn dir_synced(&self, session: &mut Session<'_>, intent: &str, synced: DirSyncStatus) -> Result<(), MutateError> {
        let record = Record { dir_sync: Some(synced), ..Record::step(intent, Step::DirSynced) };
        self.step_done(session, &record, Point::DirSynced, Point::DirSyncedLogged)
    }

    /// Takes the lock (first: see the lock order below), then the index, then folds the log.
    /// Lock order: the `flock` before the in-process mutex, so threads sharing one mutator and
    /// mutators in other processes queue on the same lock without deadlock.
    fn session(&self) -> Result<Session<'_>, MutateError> {
        let lock = OsLock::acquire_timeout(&self.lock_path, self.options.lock_timeout_ms)?;
        let mut index = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        index.catch_up(&self.log_path)?;
        refuse_damage(&index, &self.log_path)?;
        index.cut_torn_tail(&self.log_path)?;
        let appender = Appender::open(&self.log_path)?;
        Ok(Session { _lock: lock, index, appender, log_path: &self.log_path })
    }

    /// Writes `content` to `path` (workspace-relative) if the gate, the pre-state and the inode
    /// checks allow; atomically (temporary sibling, fsync, rename, directory fsync) and keeping
    /// the replaced file's permission bits.
    pub fn write(&self, path: &str, content: &[u8], request: &Request) -> Result<Outcome, MutateError> {
        let canonical = match gate_path(path)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if content.len() as u64 > self.options.content_bytes_max {
            return Err(MutateError::TooLarge {
                path: canonical.into(),
                bytes: content.len() as u64,
                bytes_max: self.options.content_bytes_max,
            });
        }
        let hash = content_hash(content);
        let key = IntentKey { op: Op::Write, path: canonical.clone(), to: None, hash: Some(hash.clone()) };
        let mut session = self.session()?;
        let target = match self.admit(&mut session, request, &key, &[&canonical])? {
            Ok(mut targets) => targets.remove(0),
            Err(answer) => return Ok(answer),
        };
        let scratch = scratch_name(&canonical, "keel-tmp", request.intent.as_str());
        self.log_intent(&mut session, request, &key, Some(&scratch))?;
        let result = self.write_steps(&mut session, &target, &scratch, content, &hash, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn write_steps(
        &self,
        session: &mut Session<'_>,
        target: &Target,
        scratch: &str,
        content: &[u8],
        hash: &str,
        request: &Request,
    ) -> Result<Result<Outcome, Outcome>, MutateError> {
        let intent = request.intent.as_str();
        let observed = match self.check(session, intent, target, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        // The temporary sibling: a stale one of the same intent (a crashed earlier attempt that
        // recovery could not reach) is replaced.
        unlink_at(target.parent(), scratch, &target.path)?;
        let fd = rustix::fs::openat(
            target.parent(),
            scratch,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| MutateError::io("create temporary", &target.path, e))?;
        let mut file = File::from(fd);
        let written = (|| {
            if let Some(mode) = observed.mode {
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| MutateError::io("fchmod", &target.path, e))?;
            }
            file.write_all(content).map_err(|e| MutateError::io("write temporary", &target.path, e))?;
            file.sync_all().map_err(|e| MutateError::io("fsync temporary", &target.path, e))
        })();
        drop(file);
        if let Err(error) = written {
            let _ = unlink_at(target.parent(), scratch, &target.path);
            return Err(error);
        }
        self.step_done(session, &Record::step(intent, Step::TempCreated), Point::TempWritten, Point::TempLogged)?;
        let flags = if observed.inode.is_none() { RenameFlags::NOREPLACE } else { RenameFlags::empty() };
        let renamed = self.fenced(target, &observed, &[&target.path], &request.holder, || {
            Ok(rustix::fs::renameat_with(target.parent(), scratch, target.parent(), target.name(), flags))
        })?;
        let renamed = match renamed {
            Ok(renamed) => renamed,
            Err(refused) => {
                unlink_at(target.parent(), scratch, &target.path)?;
                return Ok(Err(refused));
            }
        };
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                unlink_at(target.parent(), scratch, &target.path)?;
                return Ok(Err(Outcome::InodeSwapped { path: target.path.clone() }));
            }
            Err(e) => {
                let _ = unlink_at(target.parent(), scratch, &target.path);
                return Err(MutateError::io("rename", &target.path, e));
            }
        }
        self.step_done(session, &Record::step(intent, Step::Renamed), Point::Renamed, Point::RenamedLogged)?;
        let synced = dir_sync(target.parent(), &target.path)?;
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Written {
            path: target.path.clone(),
            hash: hash.to_owned(),
            bytes: content.len() as u64,
            mode_kept: observed.mode,
            dir_sync: synced,
        }))
    }

    /// Deletes the file at `path`: renamed to a trash name first, then unlinked. The pre-state
    /// must be a hash or `any` (and the file must exist).
    pub fn delete(&self, path: &str, request: &Request) -> Result<Outcome, MutateError> {
        let canonical = match gate_path(path)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if request.expect == Expect::Absent {
            return Err(MutateError::InvalidRequest {
                what: format!("delete {canonical}"),
                reason: "a delete cannot expect the file to be absent",
            });
        }
        let key = IntentKey { op: Op::Delete, path: canonical.clone(), to: None, hash: None };
        let mut session = self.session()?;
        let target = match self.admit(&mut session, request, &key, &[&canonical])? {
            Ok(mut targets) => targets.remove(0),
            Err(answer) => return Ok(answer),
        };
        let scratch = scratch_name(&canonical, "keel-trash", request.intent.as_str());
        self.log_intent(&mut session, request, &key, Some(&scratch))?;
        let result = self.delete_steps(&mut session, &target, &scratch, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn delete_steps(
        &self,
        session: &mut Session<'_>,
        target: &Target,
        scratch: &str,
        request: &Request,
    ) -> Result<Result<Outcome, Outcome>, MutateError> {
        let intent = request.intent.as_str();
        let observed = match self.check_present(session, intent, target, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        let trashed = self.fenced(target, &observed, &[&target.path], &request.holder, || {
            rustix::fs::renameat_with(target.parent(), target.name(), target.parent(), scratch, RenameFlags::NOREPLACE)
                .map_err(|e| MutateError::io("rename to trash", &target.path, e))
        })?;
        if let Err(refused) = trashed {
            return Ok(Err(refused));
        }
        self.step_done(session, &Record::step(intent, Step::Trashed), Point::Trashed, Point::TrashedLogged)?;
        unlink_at(target.parent(), scratch, &target.path)?;
        self.step_done(session, &Record::step(intent, Step::Unlinked), Point::Unlinked, Point::UnlinkedLogged)?;
        let synced = dir_sync(target.parent(), &target.path)?;
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Deleted { path: target.path.clone(), dir_sync: synced }))
    }

    /// Moves the file at `from` to `to`, which must be absent (the move never replaces a file).
    /// Both paths pass the gate; the pre-state is the source's and must be a hash or `any`.
    pub fn rename(&self, from: &str, to: &str, request: &Request) -> Result<Outcome, MutateError> {
        let from = match gate_path(from)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        let to = match gate_path(to)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if request.expect == Expect::Absent {
            return Err(MutateError::InvalidRequest {
                what: format!("rename {from}"),
                reason: "a rename cannot expect its source to be absent",
            });
        }
        if from == to {
            return Err(MutateError::InvalidRequest {
                what: format!("rename {from} to {to}"),
                reason: "source and destination are the same path",
            });
        }
        let key = IntentKey { op: Op::Rename, path: from.clone(), to: Some(to.clone()), hash: None };
        let mut session = self.session()?;
        let (source, destination) = match self.admit(&mut session, request, &key, &[&from, &to])? {
            Ok(mut targets) => {
                let destination = targets.pop().expect("admit resolves every path");
                (targets.pop().expect("admit resolves every path"), destination)
            }
            Err(answer) => return Ok(answer),
        };
        self.log_intent(&mut session, request, &key, None)?;
        let result = self.rename_steps(&mut session, &source, &destination, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn rename_steps(
        &self,
        session: &mut Session<'_>,
        source: &Target,
        destination: &Target,
        request: &Request,
    ) -> Result<Result<Outcome, Outcome>, MutateError> {
        let intent = request.intent.as_str();
        let Look::Seen(at_destination) =
            look(&destination.resolved, &destination.path, self.options.content_bytes_max)?
        else {
            session.log(&Record::noted(intent, Step::Aborted, "forbidden"))?;
            return Ok(Err(forbidden_escape(&destination.path, "the destination is a symlink")));
        };
        if at_destination.state != PreState::Absent {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: destination.path.clone(),
                expected: Expect::Absent,
                actual: at_destination.state,
            }));
        }
        let observed = match self.check_present(session, intent, source, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        let paths = [source.path.as_str(), destination.path.as_str()];
        let moved = self.fenced(source, &observed, &paths, &request.holder, || {
            if let Some(refused) = self.recheck_parent(destination)? {
                return Ok(Err(refused));
            }
            Ok(Ok(rustix::fs::renameat_with(
                source.parent(),
                source.name(),
                destination.parent(),
                destination.name(),
                RenameFlags::NOREPLACE,
            )))
        })?;
        let moved = match moved {
            Ok(Ok(moved)) => moved,
            Ok(Err(refused)) | Err(refused) => return Ok(Err(refused)),
        };
        match moved {
            Ok(()) => {}
            Err(Errno::EXIST) => return Ok(Err(Outcome::InodeSwapped { path: destination.path.clone() })),
            Err(e) => return Err(MutateError::io("rename", &source.path, e)),
        }
        self.step_done(session, &Record::step(intent, Step::Renamed), Point::Renamed, Point::RenamedLogged)?;
        let mut synced = dir_sync(destination.parent(), &destination.path)?;
        if dir_identity(source.parent(), &source.path)? != dir_identity(destination.parent(), &destination.path)? {
            let source_synced = dir_sync(source.parent(), &source.path)?;
            if source_synced == DirSyncStatus::Unsupported {
                synced = source_synced;
            }
        }
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Renamed { from: source.path.clone(), to: destination.path.clone(), dir_sync: synced }))
    }

    /// Ends an attempt: `complete` after success, `aborted` after a refusal (the refusal itself
    /// is logged by whoever refused, unless it came from a re-check), or, after an error,
    /// whatever recovery makes of it (best effort; the next operation or open tries again).
    /// What every operation does before its steps: finish interrupted intents, answer a retried
    /// intent, ask the gate about every path, and resolve them beneath the root. `Err` is the
    /// answer to give at once (a duplicate or a refusal); nothing has been logged for it.
    fn admit(
        &self,
        session: &mut Session<'_>,
        request: &Request,
        key: &IntentKey,
        paths: &[&str],
    ) -> Result<Result<Vec<Target>, Outcome>, MutateError> {
        self.recover_all(session)?;
        if let Some(outcome) = Self::prior(session, &request.intent, key)? {
            return Ok(Err(outcome));
        }
        if let Some(refused) = self.gate(paths, &request.holder)? {
            return Ok(Err(refused));
        }
        let mut targets = Vec::with_capacity(paths.len());
        for path in paths {
            match self.resolve(path)? {
                Ok(target) => targets.push(target),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        Ok(Ok(targets))
    }

    fn settle(
        &self,
        session: &mut Session<'_>,
        intent: &str,
        result: Result<Result<Outcome, Outcome>, MutateError>,
    ) -> Result<Outcome, MutateError> {
        match result {
            Ok(Ok(outcome)) => {
                session.log(&Record::step(intent, Step::Complete))?;
                self.point(Point::CompleteLogged);
                Ok(outcome)
            }
            Ok(Err(refused)) => {
                let still_open =
                    session.index.intents.get(intent).is_some_and(|e| e.standing() == Standing::Incomplete);
                if still_open {
                    session.log(&Record::noted(intent, Step::Aborted, refused.name()))?;
                }
                Ok(refused)
            }
            Err(error) => {
                if let Some(entry) = session.index.intents.get(intent).cloned() {
                    let _ = self.recover(session, intent, &entry);
                }
                Err(error)
            }
        }
    }

    /// A finished earlier attempt of this intent: `Duplicate` if it applied the same request,
    /// an error if the id was used for a different one, `None` to go ahead.
    fn prior(session: &Session<'_>, intent: &IntentId, key: &IntentKey) -> Result<Option<Outcome>, MutateError> {
        let Some(entry) = session.index.intents.get(intent.as_str()) else {
            return Ok(None);
        };
        if &entry.key != key {
            return Err(MutateError::IntentConflict {
                intent: intent.clone(),
                recorded: entry.key.to_string(),
                presented: key.to_string(),
            });
        }
        Ok(match entry.standing() {
            Standing::Applied => Some(Outcome::Duplicate { intent: intent.clone(), op: key.op }),
            Standing::NotApplied | Standing::Incomplete => None,
        })
    }

    /// Asks the kernel's gate about every path against the live journal state.
    fn gate(&self, paths: &[&str], holder: &Holder) -> Result<Option<Outcome>, MutateError> {
        let live = self.journal.live()?;
        Ok(self.gate_on(&live, paths, holder))
    }

    /// The gate over a given view of the live leases.
    fn gate_on(&self, live: &[keel_journal::LiveLease], paths: &[&str], holder: &Holder) -> Option<Outcome> {
        let grants: Vec<LiveGrant<'_>> = live
            .iter()
            .map(|l| LiveGrant { identity: &l.identity, lease: &l.lease, generation: l.generation })
            .collect();
        for path in paths {
            match gate::decide(path, holder, &grants, &self.protected) {
                Decision::Allowed { .. } => {}
                Decision::Forbidden(refusal) => return Some(Outcome::Forbidden { refusal }),
                Decision::StaleGeneration { presented, live } => {
                    return Some(Outcome::StaleGeneration { presented, live });
                }
            }
        }
        None
    }

    /// Resolves beneath the root without following symlinks; an escape or a symlink is a
    /// `Forbidden` outcome, a missing directory an error.
    fn resolve(&self, path: &str) -> Result<Result<Target, Outcome>, MutateError> {
        match self.root.resolve(Path::new(path)) {
            Ok(resolved) => Ok(Ok(Target { resolved, path: path.to_owned() })),
            Err(
                error @ (ResolveError::Escapes { .. } | ResolveError::Symlink { .. } | ResolveError::Invalid { .. }),
            ) => Ok(Err(forbidden_escape(path, &error.to_string()))),
            Err(error) => Err(MutateError::Resolve(error)),
        }
    }

    fn log_intent(
        &self,
        session: &mut Session<'_>,
        request: &Request,
        key: &IntentKey,
        scratch: Option<&str>,
    ) -> Result<(), MutateError> {
        let record = Record {
            op: Some(key.op),
            path: Some(key.path.clone()),
            to: key.to.clone(),
            hash: key.hash.clone(),
            expect: Some(request.expect.as_log_text().to_owned()),
            owner: Some(request.holder.owner.clone()),
            lane: Some(request.holder.lane.clone()),
            loop_ts: request.holder.loop_ts.clone(),
            generation: Some(request.holder.generation),
            scratch: scratch.map(str::to_owned),
            ..Record::step(request.intent.as_str(), Step::Intent)
        };
        session.log(&record)?;
        self.point(Point::IntentLogged);
        Ok(())
    }

    /// [`check`](Self::check), then refuses (logging `aborted`) if the file is absent: what a
    /// delete or a rename needs, whatever pre-state the caller allowed.
    fn check_present(
        &self,
        session: &mut Session<'_>,
        intent: &str,
        target: &Target,
        expect: &Expect,
    ) -> Result<Result<Observed, Outcome>, MutateError> {
        let observed = match self.check(session, intent, target, expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        if observed.inode.is_none() {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: target.path.clone(),
                expected: expect.clone(),
                actual: PreState::Absent,
            }));
        }
        Ok(Ok(observed))
    }

    /// Checks the pre-state and logs `checked`, or logs `aborted` and returns the refusal.
    fn check(
        &self,
        session: &mut Session<'_>,
        intent: &str,
        target: &Target,
        expect: &Expect,
    ) -> Result<Result<Observed, Outcome>, MutateError> {
        let observed = match look(&target.resolved, &target.path, self.options.content_bytes_max)? {
            Look::Seen(observed) => observed,
            Look::Symlink => {
                session.log(&Record::noted(intent, Step::Aborted, "forbidden"))?;
                return Ok(Err(forbidden_escape(&target.path, "the final component is a symlink")));
            }
        };
        if !expect.admits(&observed.state) {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: target.path.clone(),
                expected: expect.clone(),
                actual: observed.state,
            }));
        }
        let (dev, ino) = observed.inode.map_or((None, None), |(d, i)| (Some(d), Some(i)));
        session.log(&Record {
            pre: Some(observed.state.to_string()),
            dev,
            ino,
            ..Record::step(intent, Step::Checked)
        })?;
        self.point(Point::CheckedLogged);
        Ok(Ok(observed))
    }

    /// The last check and the commit, as one step under the journal's writer lock (so no lease
    /// can be granted, released or reclaimed in between): the target is still the inode that was
    /// checked (or still absent), its directory is still the one the path resolves to, the gate
    /// still allows; only then does `commit` run.
    fn fenced<T>(
        &self,
        target: &Target,
        observed: &Observed,
        paths: &[&str],
        holder: &Holder,
        commit: impl FnOnce() -> Result<T, MutateError>,
    ) -> Result<Result<T, Outcome>, MutateError> {
        self.journal.with_live(|live| {
            let swapped = Outcome::InodeSwapped { path: target.path.clone() };
            let now = match rustix::fs::statat(target.parent(), target.name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => Some((stat.st_dev, stat.st_ino)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(MutateError::io("stat", &target.path, e)),
            };
            if now != observed.inode {
                return Ok(Err(swapped));
            }
            if let Some(refused) = self.recheck_parent(target)? {
                return Ok(Err(refused));
            }
            if let Some(refused) = self.gate_on(live, paths, holder) {
                return Ok(Err(refused));
            }
            self.point(Point::Fenced);
            commit().map(Ok)
        })?
    }

    /// The path still resolves, through real directories, to the directory we hold open.
    fn recheck_parent(&self, target: &Target) -> Result<Option<Outcome>, MutateError> {
        let swapped = Some(Outcome::InodeSwapped { path: target.path.clone() });
        let again = match self.root.resolve(Path::new(&target.path)) {
            Ok(again) => again,
            Err(ResolveError::Io { op, path, source }) => return Err(MutateError::Io { op, path, source }),
            Err(_) => return Ok(swapped),
        };
        if dir_identity(again.parent(), &target.path)? != dir_identity(target.parent(), &target.path)? {
            return Ok(swapped);
        }
        Ok(None)
    }

    fn recover_all(&self, session: &mut Session<'_>) -> Result<Recovery, MutateError> {
        let mut recovery = Recovery::default();
        let pending: Vec<String> = session.index.incomplete.iter().cloned().collect();
        for intent in pending {
            let Some(entry) = session.index.intents.get(&intent).cloned() else {
                continue;
            };
            if self.recover(session, &intent, &entry)? {
                recovery.rolled_forward += 1;
            } else {
                recovery.rolled_back += 1;
            }
        }
        Ok(recovery)
    }

    /// Finishes or undoes an incomplete attempt; `true` when its effect had happened (rolled
    /// forward). Safe only under the lock: no live operation can be mid-way.
    fn recover(&self, session: &mut Session<'_>, intent: &str, entry: &Entry) -> Result<bool, MutateError> {
        let path = entry.key.path.clone();
        let Ok(resolved) = self.root.resolve(Path::new(&path)) else {
            // The directory is gone or became a symlink: nothing of ours can be in it.
            session.log(&Record::noted(intent, Step::RolledBack, "path no longer resolves"))?;
            return Ok(false);
        };
        let applied = match entry.key.op {
            Op::Write => {
                let scratch = entry.scratch.clone().unwrap_or_default();
                if !scratch.is_empty() && exists_at(resolved.parent(), &scratch, &path)? {
                    unlink_at(resolved.parent(), &scratch, &path)?;
                    false
                } else if entry.has(Step::Renamed) {
                    true
                } else if entry.has(Step::TempCreated) {
                    // The temporary file is gone: either the rename happened (and the target
                    // holds the new content) or nothing did.
                    match look(&resolved, &path, self.options.content_bytes_max)? {
                        Look::Seen(Observed { state: PreState::Present { hash }, .. }) => Some(hash) == entry.key.hash,
                        _ => false,
                    }
                } else {
                    false
                }
            }
            Op::Delete => {
                let scratch = entry.scratch.clone().unwrap_or_default();
                if !scratch.is_empty() && exists_at(resolved.parent(), &scratch, &path)? {
                    unlink_at(resolved.parent(), &scratch, &path)?;
                    true
                } else {
                    entry.has(Step::Trashed)
                }
            }
            Op::Rename => {
                let to = entry.key.to.clone().unwrap_or_default();
                if entry.has(Step::Renamed) {
                    true
                } else if entry.has(Step::Checked)
                    && !exists_at(resolved.parent(), &resolved.name().to_string_lossy(), &path)?
                {
                    let moved =
                        self.root.resolve(Path::new(&to)).ok().map(|r| look(&r, &to, self.options.content_bytes_max));
                    matches!(moved, Some(Ok(Look::Seen(Observed { state: PreState::Present { hash }, .. }))) if Some(&hash) == entry.pre.as_ref())
                } else {
                    false
                }
            }
        };
        if applied {
            let synced = dir_sync(resolved.parent(), &path)?;
            if let Some(to) = entry.key.to.as_deref().and_then(|to| self.root.resolve(Path::new(to)).ok()) {
                let _ = dir_sync(to.parent(), &path)?;
            }
            session.log(&Record { dir_sync: Some(synced), ..Record::step(intent, Step::RolledForward) })?;
        } else {
            session.log(&Record::step(intent, Step::RolledBack))?;
        }
        Ok(applied)
    }

    /// Rewrites an oversized log as one summary line per remembered intent (atomically; the
    /// other processes notice the new inode and re-read).
    fn compact_if_large(&self, session: &mut Session<'_>) -> Result<bool, MutateError> {
        if session.appender.len() <= self.options.log_compact_bytes || !session.index.incomplete.is_empty() {
            return Ok(false);
        }
        let mut bytes = Vec::new();
        for record in session.index.summary(INTENTS_REMEMBERED_MAX) {
            bytes.extend(serde_json::to_vec(&record)?);
            bytes.push(b'\n');
        }
        let _report = keel_fs::write_atomic(&self.log_path, &bytes)?;
        session.index.catch_up(&self.log_path)?;
        session.appender = Appender::open(&self.log_path)?;
        Ok(true)
    }
}
