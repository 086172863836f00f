//! The seam's test doubles, built only for tests (the `testing` feature): [`FailAfter`], which
//! fails a chosen operation, and [`CrashSim`], which cuts the power between any two.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{FileStat, Op, Storage, parent_dir};

/// A storage that passes operations through to `inner` until the `fail_at`-th one (counting from
/// zero, only operations matching the [`FailAfter::only`] filter), which returns an I/O error
/// without being performed. Once: only that operation fails (a transient error); sticky: it and
/// every later counted one fail (a dead disk).
#[derive(Debug)]
pub struct FailAfter<S> {
    inner: S,
    fail_at: u64,
    sticky: bool,
    raw_os_error: i32,
    only: Option<Op>,
    counted: AtomicU64,
    tripped: AtomicBool,
}

impl<S> FailAfter<S> {
    /// Fails only the operation with index `fail_at` (`EIO`).
    pub fn once(inner: S, fail_at: u64) -> Self {
        Self::new(inner, fail_at, false)
    }

    /// Fails the operation with index `fail_at` and every one after it (`EIO`).
    pub fn sticky(inner: S, fail_at: u64) -> Self {
        Self::new(inner, fail_at, true)
    }

    fn new(inner: S, fail_at: u64, sticky: bool) -> Self {
        Self {
            inner,
            fail_at,
            sticky,
            raw_os_error: rustix::io::Errno::IO.raw_os_error(),
            only: None,
            counted: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
        }
    }

    /// Counts (and fails) only operations of kind `op`.
    #[must_use]
    pub fn only(mut self, op: Op) -> Self {
        self.only = Some(op);
        self
    }

    /// Fails with this `errno` instead of `EIO` (e.g. `EINVAL` to mimic a directory fsync the
    /// file system does not support).
    #[must_use]
    pub fn with_raw_os_error(mut self, raw_os_error: i32) -> Self {
        self.raw_os_error = raw_os_error;
        self
    }

    /// Whether an operation was failed: when false after a run, the run saw no injected error.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// How many operations were counted.
    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::SeqCst)
    }

    fn gate(&self, op: Op) -> io::Result<()> {
        if self.only.is_some_and(|only| only != op) {
            return Ok(());
        }
        let index = self.counted.fetch_add(1, Ordering::SeqCst);
        if index == self.fail_at || (self.sticky && index > self.fail_at) {
            self.tripped.store(true, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(self.raw_os_error));
        }
        Ok(())
    }
}

impl<S: Storage> Storage for FailAfter<S> {
    type File = S::File;
    fn create_new(&self, path: &Path) -> io::Result<Self::File> {
        self.gate(Op::CreateNew)?;
        self.inner.create_new(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<(Self::File, bool)> {
        self.gate(Op::OpenAppend)?;
        self.inner.open_append(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Self::File> {
        self.gate(Op::OpenRead)?;
        self.inner.open_read(path)
    }
    fn write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()> {
        self.gate(Op::Write)?;
        self.inner.write_all(file, bytes)
    }
    fn write_once(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<usize> {
        self.gate(Op::Write)?;
        self.inner.write_once(file, bytes)
    }
    fn read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.gate(Op::ReadAt)?;
        self.inner.read_at(file, offset, buf)
    }
    fn sync_all(&self, file: &Self::File) -> io::Result<()> {
        self.gate(Op::SyncAll)?;
        self.inner.sync_all(file)
    }
    fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        self.gate(Op::SyncData)?;
        self.inner.sync_data(file)
    }
    fn file_stat(&self, file: &Self::File) -> io::Result<FileStat> {
        self.gate(Op::Stat)?;
        self.inner.file_stat(file)
    }
    fn path_stat(&self, path: &Path) -> io::Result<FileStat> {
        self.gate(Op::Stat)?;
        self.inner.path_stat(path)
    }
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()> {
        self.gate(Op::SetMode)?;
        self.inner.set_mode(file, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.gate(Op::Rename)?;
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.gate(Op::SyncDir)?;
        self.inner.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.gate(Op::Remove)?;
        self.inner.remove_file(path)
    }
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.gate(Op::SetLen)?;
        self.inner.set_len(file, len)
    }
}

/// What survives a simulated crash, for names and for file data separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survives {
    /// Only what was synced (the pessimistic outcome).
    SyncedOnly,
    /// Everything that was done, synced or not (the disk happened to write it all).
    Everything,
}

impl Survives {
    /// Both values, for tests that try every mix.
    pub const ALL: [Survives; 2] = [Survives::SyncedOnly, Survives::Everything];
}

#[derive(Debug, Clone, Default)]
struct Inode {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    mode: u32,
}

#[derive(Debug, Clone, Default)]
struct SimState {
    /// Names as the running program sees them.
    volatile_names: BTreeMap<PathBuf, u64>,
    /// Names as of the last fsync of each one's directory.
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    ops: u64,
    power_cut_at: Option<u64>,
    powered_off: bool,
}

/// An open file of a [`CrashSim`].
#[derive(Debug)]
pub struct SimFile {
    ino: u64,
    append: bool,
    position: u64,
}

/// An in-memory file system that keeps a volatile and a durable image of every file and
/// directory entry, can lose power after any number of operations, and can rebuild what a crash
/// leaves behind ([`CrashSim::crash`]). Directories are implicit (every parent exists); a name
/// belongs to the directory `path.parent()` and becomes durable on `sync_dir` of exactly that path.
#[derive(Debug, Default)]
pub struct CrashSim {
    state: Mutex<SimState>,
}

const SIM_DEFAULT_MODE: u32 = 0o644;

fn power_cut_error() -> io::Error {
    io::Error::new(ErrorKind::BrokenPipe, "simulated power cut")
}

impl CrashSim {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock can only come from a bug in this simulator; the state
        // is plain data, so keep using it rather than cascading the panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates `path` with `bytes`, durably (names and data), as if written long ago.
    pub fn put_durable(&self, path: &Path, bytes: &[u8], mode: u32) {
        let mut state = self.lock();
        state.next_ino += 1;
        let ino = state.next_ino;
        state.inodes.insert(ino, Inode { volatile: bytes.to_vec(), durable: bytes.to_vec(), mode });
        state.volatile_names.insert(path.to_owned(), ino);
        state.durable_names.insert(path.to_owned(), ino);
    }

    /// The current (volatile) content of `path`.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let ino = state.volatile_names.get(path)?;
        state.inodes.get(ino).map(|inode| inode.volatile.clone())
    }

    /// The mode of `path`.
    pub fn mode(&self, path: &Path) -> Option<u32> {
        let state = self.lock();
        let ino = state.volatile_names.get(path)?;
        state.inodes.get(ino).map(|inode| inode.mode)
    }

    /// Every name that currently exists.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().volatile_names.keys().cloned().collect()
    }

    /// Cuts the power before operation number `ops` (counting from zero since creation): that
    /// operation and all later ones fail without effect.
    pub fn cut_power_at(&self, ops: u64) {
        self.lock().power_cut_at = Some(ops);
    }

    /// Whether the power was cut (some operation was refused).
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Operations attempted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The file system a reboot finds: names and data each as `names`/`data` say. The result is
    /// powered on, with everything durable.
    #[must_use = "the crashed image is what a test inspects"]
    pub fn crash(&self, names: Survives, data: Survives) -> CrashSim {
        let state = self.lock();
        let surviving_names = match names {
            Survives::SyncedOnly => state.durable_names.clone(),
            Survives::Everything => state.volatile_names.clone(),
        };
        let mut inodes = BTreeMap::new();
        for ino in surviving_names.values() {
            if let Some(inode) = state.inodes.get(ino) {
                let bytes = match data {
                    Survives::SyncedOnly => inode.durable.clone(),
                    Survives::Everything => inode.volatile.clone(),
                };
                inodes.insert(*ino, Inode { volatile: bytes.clone(), durable: bytes, mode: inode.mode });
            }
        }
        CrashSim {
            state: Mutex::new(SimState {
                volatile_names: surviving_names.clone(),
                durable_names: surviving_names,
                inodes,
                next_ino: state.next_ino,
                ..SimState::default()
            }),
        }
    }

    /// Counts an operation and refuses it once the power is cut.
    fn tick(state: &mut SimState) -> io::Result<()> {
        let index = state.ops;
        state.ops += 1;
        if state.powered_off || state.power_cut_at.is_some_and(|at| index >= at) {
            state.powered_off = true;
            return Err(power_cut_error());
        }
        Ok(())
    }

    fn inode_mut(state: &mut SimState, ino: u64) -> io::Result<&mut Inode> {
        state.inodes.get_mut(&ino).ok_or_else(|| io::Error::other("simulated inode vanished"))
    }

    fn create(state: &mut SimState, path: &Path) -> u64 {
        state.next_ino += 1;
        let ino = state.next_ino;
        state.inodes.insert(ino, Inode { mode: SIM_DEFAULT_MODE, ..Inode::default() });
        state.volatile_names.insert(path.to_owned(), ino);
        ino
    }

    fn write_at(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let inode = Self::inode_mut(&mut state, file.ino)?;
        let start = if file.append {
            inode.volatile.len()
        } else {
            usize::try_from(file.position).map_err(io::Error::other)?
        };
        let end = start + bytes.len();
        if inode.volatile.len() < end {
            inode.volatile.resize(end, 0);
        }
        inode.volatile[start..end].copy_from_slice(bytes);
        file.position = end as u64;
        Ok(bytes.len())
    }

    fn sync_file(&self, file: &SimFile) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let inode = Self::inode_mut(&mut state, file.ino)?;
        inode.durable.clone_from(&inode.volatile);
        Ok(())
    }
}

impl Storage for CrashSim {
    type File = SimFile;

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        if state.volatile_names.contains_key(path) {
            return Err(io::Error::from(ErrorKind::AlreadyExists));
        }
        let ino = Self::create(&mut state, path);
        Ok(SimFile { ino, append: false, position: 0 })
    }

    fn open_append(&self, path: &Path) -> io::Result<(SimFile, bool)> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let (ino, created) = match state.volatile_names.get(path) {
            Some(ino) => (*ino, false),
            None => (Self::create(&mut state, path), true),
        };
        Ok((SimFile { ino, append: true, position: 0 }, created))
    }

    fn open_read(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let ino = *state.volatile_names.get(path).ok_or_else(|| io::Error::from(ErrorKind::NotFound))?;
        Ok(SimFile { ino, append: false, position: 0 })
    }

    fn write_all(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<()> {
        self.write_at(file, bytes).map(|_| ())
    }

    fn write_once(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<usize> {
        self.write_at(file, bytes)
    }

    fn read_at(&self, file: &SimFile, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let inode = Self::inode_mut(&mut state, file.ino)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?.min(inode.volatile.len());
        let n = buf.len().min(inode.volatile.len() - start);
        buf[..n].copy_from_slice(&inode.volatile[start..start + n]);
        Ok(n)
    }

    fn sync_all(&self, file: &SimFile) -> io::Result<()> {
        self.sync_file(file)
    }

    fn sync_data(&self, file: &SimFile) -> io::Result<()> {
        self.sync_file(file)
    }

    fn file_stat(&self, file: &SimFile) -> io::Result<FileStat> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let inode = Self::inode_mut(&mut state, file.ino)?;
        Ok(FileStat { dev: 1, ino: file.ino, len: inode.volatile.len() as u64, mode: inode.mode })
    }

    fn path_stat(&self, path: &Path) -> io::Result<FileStat> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let ino = *state.volatile_names.get(path).ok_or_else(|| io::Error::from(ErrorKind::NotFound))?;
        let inode = Self::inode_mut(&mut state, ino)?;
        Ok(FileStat { dev: 1, ino, len: inode.volatile.len() as u64, mode: inode.mode })
    }

    fn set_mode(&self, file: &SimFile, mode: u32) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        Self::inode_mut(&mut state, file.ino)?.mode = mode & 0o7777;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let ino = state.volatile_names.remove(from).ok_or_else(|| io::Error::from(ErrorKind::NotFound))?;
        state.volatile_names.insert(to.to_owned(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let in_dir = |path: &Path| parent_dir(path) == dir;
        state.durable_names.retain(|path, _| !in_dir(path));
        let now: Vec<(PathBuf, u64)> = state
            .volatile_names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, ino)| (path.clone(), *ino))
            .collect();
        state.durable_names.extend(now);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        state.volatile_names.remove(path).map(|_| ()).ok_or_else(|| io::Error::from(ErrorKind::NotFound))
    }

    fn set_len(&self, file: &SimFile, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        Self::tick(&mut state)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        Self::inode_mut(&mut state, file.ino)?.volatile.resize(len, 0);
        Ok(())
    }
}
