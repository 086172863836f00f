//! [`CrashSim`], the seam's power-loss simulator (built only for tests: the `testing` feature).
//!
//! It models a POSIX file system as a tree of inodes. Each directory keeps two entry tables: the
//! one the running program sees, and the one as of its last `fsync`; each file keeps its current
//! bytes and the bytes as of its last `fsync`. A crash rebuilds the tree from the root through
//! either table, with either bytes ([`Survives`]), so a test sees what a reboot could find.
//! There are no symbolic links, hard links or `..`; ancestors a path names but nobody created
//! exist implicitly and durably (they were there before the test began).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rustix::io::Errno;

use super::{FileKind, FileStat, Storage};

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

#[derive(Debug, Clone)]
enum Node {
    File { volatile: Vec<u8>, durable: Vec<u8>, mode: u32 },
    Dir { volatile: BTreeMap<OsString, u64>, durable: BTreeMap<OsString, u64> },
}

#[derive(Debug, Clone)]
struct SimState {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    ops: u64,
    power_cut_at: Option<u64>,
    powered_off: bool,
}

const ROOT_INO: u64 = 1;
const SIM_DEFAULT_MODE: u32 = 0o644;
const SIM_DIR_MODE: u32 = 0o755;
const SIM_UMASK: u32 = 0o022;

impl Default for SimState {
    fn default() -> Self {
        let root = Node::Dir { volatile: BTreeMap::new(), durable: BTreeMap::new() };
        Self {
            nodes: BTreeMap::from([(ROOT_INO, root)]),
            next_ino: ROOT_INO,
            ops: 0,
            power_cut_at: None,
            powered_off: false,
        }
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn power_cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "simulated power cut")
}

/// The directory and final name of `path`.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| errno(Errno::INVAL))?;
    Ok((path.parent().unwrap_or(Path::new("")), name))
}

impl SimState {
    fn dir(&self, ino: u64) -> io::Result<&BTreeMap<OsString, u64>> {
        match self.nodes.get(&ino) {
            Some(Node::Dir { volatile, .. }) => Ok(volatile),
            Some(Node::File { .. }) => Err(errno(Errno::NOTDIR)),
            None => Err(errno(Errno::NOENT)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut BTreeMap<OsString, u64>> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir { volatile, .. }) => Ok(volatile),
            Some(Node::File { .. }) => Err(errno(Errno::NOTDIR)),
            None => Err(errno(Errno::NOENT)),
        }
    }

    fn lookup(&self, dir: u64, name: &OsStr) -> io::Result<Option<u64>> {
        Ok(self.dir(dir)?.get(name).copied())
    }

    fn new_node(&mut self, node: Node) -> u64 {
        self.next_ino += 1;
        self.nodes.insert(self.next_ino, node);
        self.next_ino
    }

    /// The directory at `path`; with `implicit`, missing directories are created durably.
    fn walk(&mut self, path: &Path, implicit: bool) -> io::Result<u64> {
        let mut current = ROOT_INO;
        for component in path.components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir | Component::Prefix(_) => return Err(errno(Errno::INVAL)),
            };
            current = match self.lookup(current, name)? {
                Some(ino) => {
                    self.dir(ino)?;
                    ino
                }
                None if implicit => {
                    let ino = self.new_node(Node::Dir { volatile: BTreeMap::new(), durable: BTreeMap::new() });
                    if let Some(Node::Dir { volatile, durable }) = self.nodes.get_mut(&current) {
                        volatile.insert(name.to_owned(), ino);
                        durable.insert(name.to_owned(), ino);
                    }
                    ino
                }
                None => return Err(errno(Errno::NOENT)),
            };
        }
        Ok(current)
    }

    /// The parent directory of `path` (implicit) and its final name.
    fn place<'p>(&mut self, path: &'p Path) -> io::Result<(u64, &'p OsStr)> {
        let (parent, name) = split(path)?;
        Ok((self.walk(parent, true)?, name))
    }

    fn stat(&self, ino: u64) -> io::Result<FileStat> {
        match self.nodes.get(&ino) {
            Some(Node::File { volatile, mode, .. }) => {
                Ok(FileStat { dev: 1, ino, len: volatile.len() as u64, mode: *mode, kind: FileKind::File })
            }
            Some(Node::Dir { volatile, .. }) => {
                Ok(FileStat { dev: 1, ino, len: volatile.len() as u64, mode: SIM_DIR_MODE, kind: FileKind::Dir })
            }
            None => Err(errno(Errno::NOENT)),
        }
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<(&mut Vec<u8>, &mut Vec<u8>, &mut u32)> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File { volatile, durable, mode }) => Ok((volatile, durable, mode)),
            Some(Node::Dir { .. }) => Err(errno(Errno::ISDIR)),
            None => Err(errno(Errno::NOENT)),
        }
    }

    fn create_file(&mut self, dir: u64, name: &OsStr, mode: u32) -> io::Result<u64> {
        if self.lookup(dir, name)?.is_some() {
            return Err(errno(Errno::EXIST));
        }
        let ino = self.new_node(Node::File { volatile: Vec::new(), durable: Vec::new(), mode });
        self.dir_mut(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn create_dir(&mut self, dir: u64, name: &OsStr) -> io::Result<()> {
        if self.lookup(dir, name)?.is_some() {
            return Err(errno(Errno::EXIST));
        }
        let ino = self.new_node(Node::Dir { volatile: BTreeMap::new(), durable: BTreeMap::new() });
        self.dir_mut(dir)?.insert(name.to_owned(), ino);
        Ok(())
    }

    fn rename(&mut self, from: (u64, &OsStr), to: (u64, &OsStr), replace: bool) -> io::Result<()> {
        let ino = self.lookup(from.0, from.1)?.ok_or_else(|| errno(Errno::NOENT))?;
        self.dir(to.0)?;
        if let Some(existing) = self.lookup(to.0, to.1)? {
            if existing == ino {
                return Ok(());
            }
            if !replace {
                return Err(errno(Errno::EXIST));
            }
            match (self.stat(ino)?.kind, self.stat(existing)?.kind) {
                (FileKind::Dir, FileKind::Dir) if !self.dir(existing)?.is_empty() => {
                    return Err(errno(Errno::NOTEMPTY));
                }
                (FileKind::Dir, FileKind::File) => return Err(errno(Errno::NOTDIR)),
                (FileKind::File, FileKind::Dir) => return Err(errno(Errno::ISDIR)),
                _ => {}
            }
        }
        self.dir_mut(from.0)?.remove(from.1);
        self.dir_mut(to.0)?.insert(to.1.to_owned(), ino);
        Ok(())
    }

    fn unlink(&mut self, dir: u64, name: &OsStr, want: FileKind) -> io::Result<()> {
        let ino = self.lookup(dir, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        match (want, self.stat(ino)?.kind) {
            (FileKind::File, FileKind::Dir) => return Err(errno(Errno::ISDIR)),
            (FileKind::Dir, FileKind::File) => return Err(errno(Errno::NOTDIR)),
            (FileKind::Dir, _) if !self.dir(ino)?.is_empty() => return Err(errno(Errno::NOTEMPTY)),
            _ => {}
        }
        self.dir_mut(dir)?.remove(name);
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> io::Result<()> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir { volatile, durable }) => {
                durable.clone_from(volatile);
                Ok(())
            }
            Some(Node::File { .. }) => Err(errno(Errno::NOTDIR)),
            None => Err(errno(Errno::NOENT)),
        }
    }

    /// Copies `ino` and everything reachable from it into `into`, as a crash leaves it.
    fn survivor(&self, ino: u64, names: Survives, data: Survives, into: &mut BTreeMap<u64, Node>) {
        if into.contains_key(&ino) {
            return;
        }
        match self.nodes.get(&ino) {
            Some(Node::File { volatile, durable, mode }) => {
                let bytes = if data == Survives::Everything { volatile } else { durable };
                into.insert(ino, Node::File { volatile: bytes.clone(), durable: bytes.clone(), mode: *mode });
            }
            Some(Node::Dir { volatile, durable }) => {
                let entries = if names == Survives::Everything { volatile } else { durable };
                let entries: BTreeMap<OsString, u64> = entries
                    .iter()
                    .filter(|(_, ino)| self.nodes.contains_key(ino))
                    .map(|(n, i)| (n.clone(), *i))
                    .collect();
                into.insert(ino, Node::Dir { volatile: entries.clone(), durable: entries.clone() });
                for child in entries.values() {
                    self.survivor(*child, names, data, into);
                }
            }
            None => {}
        }
    }

    /// Every regular file reachable through the current names, with its path.
    fn files(&self, ino: u64, path: &Path, seen: &mut BTreeSet<u64>, out: &mut Vec<PathBuf>) {
        if !seen.insert(ino) {
            return;
        }
        if let Some(Node::Dir { volatile, .. }) = self.nodes.get(&ino) {
            for (name, child) in volatile {
                let child_path = path.join(name);
                match self.nodes.get(child) {
                    Some(Node::File { .. }) => out.push(child_path),
                    Some(Node::Dir { .. }) => self.files(*child, &child_path, seen, out),
                    None => {}
                }
            }
        }
    }
}

/// An open file of a [`CrashSim`].
#[derive(Debug)]
pub struct SimFile {
    ino: u64,
    append: bool,
    position: u64,
}

/// An open directory of a [`CrashSim`].
#[derive(Debug)]
pub struct SimDir {
    ino: u64,
}

/// An in-memory file system that keeps a volatile and a durable image of every file and
/// directory entry, can lose power after any number of operations, and can rebuild what a crash
/// leaves behind ([`CrashSim::crash`]). See the module documentation for the model.
#[derive(Debug, Default)]
pub struct CrashSim {
    state: Mutex<SimState>,
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

    /// Counts an operation and refuses it once the power is cut.
    fn tick(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let mut state = self.lock();
        let index = state.ops;
        state.ops += 1;
        if state.powered_off || state.power_cut_at.is_some_and(|at| index >= at) {
            state.powered_off = true;
            return Err(power_cut_error());
        }
        Ok(state)
    }

    /// Creates `path` with `bytes`, durably (names and data), as if written long ago.
    pub fn put_durable(&self, path: &Path, bytes: &[u8], mode: u32) {
        let mut state = self.lock();
        let Ok((dir, name)) = state.place(path) else { panic!("put_durable: {} is not a file path", path.display()) };
        let ino = state.new_node(Node::File { volatile: bytes.to_vec(), durable: bytes.to_vec(), mode });
        if let Some(Node::Dir { volatile, durable }) = state.nodes.get_mut(&dir) {
            volatile.insert(name.to_owned(), ino);
            durable.insert(name.to_owned(), ino);
        }
    }

    fn file_at(&self, path: &Path) -> Option<(Vec<u8>, u32)> {
        let state = self.lock();
        let mut current = ROOT_INO;
        for component in path.components() {
            if let Component::Normal(name) = component {
                current = state.lookup(current, name).ok()??;
            }
        }
        match state.nodes.get(&current)? {
            Node::File { volatile, mode, .. } => Some((volatile.clone(), *mode)),
            Node::Dir { .. } => None,
        }
    }

    /// The current (volatile) content of the file at `path`.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        self.file_at(path).map(|(bytes, _)| bytes)
    }

    /// The mode of the file at `path`.
    pub fn mode(&self, path: &Path) -> Option<u32> {
        self.file_at(path).map(|(_, mode)| mode)
    }

    /// Every regular file that currently has a name, by path.
    pub fn paths(&self) -> Vec<PathBuf> {
        let state = self.lock();
        let mut out = Vec::new();
        state.files(ROOT_INO, Path::new("/"), &mut BTreeSet::new(), &mut out);
        out
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
        let mut nodes = BTreeMap::new();
        state.survivor(ROOT_INO, names, data, &mut nodes);
        CrashSim { state: Mutex::new(SimState { nodes, next_ino: state.next_ino, ..SimState::default() }) }
    }

    fn write_at(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.tick()?;
        let (volatile, _, _) = state.file_mut(file.ino)?;
        let start =
            if file.append { volatile.len() } else { usize::try_from(file.position).map_err(io::Error::other)? };
        let end = start + bytes.len();
        if volatile.len() < end {
            volatile.resize(end, 0);
        }
        volatile[start..end].copy_from_slice(bytes);
        file.position = end as u64;
        Ok(bytes.len())
    }

    fn sync_file(&self, file: &SimFile) -> io::Result<()> {
        let mut state = self.tick()?;
        let (volatile, durable, _) = state.file_mut(file.ino)?;
        durable.clone_from(volatile);
        Ok(())
    }

    fn open_file(&self, path: &Path, append: bool) -> io::Result<SimFile> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        let ino = state.lookup(dir, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        Ok(SimFile { ino, append, position: 0 })
    }
}

impl Storage for CrashSim {
    type File = SimFile;
    type Dir = SimDir;

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        let ino = state.create_file(dir, name, SIM_DEFAULT_MODE)?;
        Ok(SimFile { ino, append: false, position: 0 })
    }

    fn open_append(&self, path: &Path) -> io::Result<(SimFile, bool)> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        let (ino, created) = match state.lookup(dir, name)? {
            Some(ino) => {
                state.file_mut(ino)?;
                (ino, false)
            }
            None => (state.create_file(dir, name, SIM_DEFAULT_MODE)?, true),
        };
        Ok((SimFile { ino, append: true, position: 0 }, created))
    }

    fn open_write(&self, path: &Path) -> io::Result<SimFile> {
        self.open_file(path, false)
    }

    fn open_read(&self, path: &Path) -> io::Result<SimFile> {
        self.open_file(path, false)
    }

    fn write_all(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<()> {
        self.write_at(file, bytes).map(|_| ())
    }

    fn write_once(&self, file: &mut SimFile, bytes: &[u8]) -> io::Result<usize> {
        self.write_at(file, bytes)
    }

    fn read_at(&self, file: &SimFile, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.tick()?;
        let (volatile, _, _) = state.file_mut(file.ino)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?.min(volatile.len());
        let n = buf.len().min(volatile.len() - start);
        buf[..n].copy_from_slice(&volatile[start..start + n]);
        Ok(n)
    }

    fn sync_all(&self, file: &SimFile) -> io::Result<()> {
        self.sync_file(file)
    }

    fn sync_data(&self, file: &SimFile) -> io::Result<()> {
        self.sync_file(file)
    }

    fn file_stat(&self, file: &SimFile) -> io::Result<FileStat> {
        self.tick()?.stat(file.ino)
    }

    fn path_stat(&self, path: &Path) -> io::Result<FileStat> {
        self.link_stat(path)
    }

    fn link_stat(&self, path: &Path) -> io::Result<FileStat> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        let ino = state.lookup(dir, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        state.stat(ino)
    }

    fn set_mode(&self, file: &SimFile, mode: u32) -> io::Result<()> {
        let mut state = self.tick()?;
        *state.file_mut(file.ino)?.2 = mode & 0o7777;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let from = state.place(from)?;
        let to = state.place(to)?;
        state.rename(from, to, true)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let from = state.place(from)?;
        let to = state.place(to)?;
        state.rename(from, to, false)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let ino = state.walk(dir, true)?;
        state.sync_dir(ino)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        state.unlink(dir, name, FileKind::File)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        state.unlink(dir, name, FileKind::Dir)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.tick()?;
        let (dir, name) = state.place(path)?;
        state.create_dir(dir, name)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut state = self.tick()?;
        let ino = state.walk(path, true)?;
        Ok(state.dir(ino)?.keys().cloned().collect())
    }

    fn set_len(&self, file: &SimFile, len: u64) -> io::Result<()> {
        let mut state = self.tick()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        state.file_mut(file.ino)?.0.resize(len, 0);
        Ok(())
    }

    fn open_dir(&self, path: &Path) -> io::Result<SimDir> {
        let mut state = self.tick()?;
        Ok(SimDir { ino: state.walk(path, true)? })
    }

    fn open_dir_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<SimDir> {
        let state = self.tick()?;
        if name == "." {
            return Ok(SimDir { ino: dir.ino });
        }
        let ino = state.lookup(dir.ino, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        state.dir(ino)?;
        Ok(SimDir { ino })
    }

    fn open_beneath(&self, _dir: &SimDir, _parents: &Path) -> Option<SimDir> {
        // No one-step resolution: callers walk, one counted `open_dir_at` per component.
        None
    }

    fn create_new_at(&self, dir: &SimDir, name: &OsStr, mode: u32) -> io::Result<SimFile> {
        let mut state = self.tick()?;
        let ino = state.create_file(dir.ino, name, mode & 0o7777 & !SIM_UMASK)?;
        Ok(SimFile { ino, append: false, position: 0 })
    }

    fn open_read_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<SimFile> {
        let state = self.tick()?;
        let ino = state.lookup(dir.ino, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        Ok(SimFile { ino, append: false, position: 0 })
    }

    fn stat_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<FileStat> {
        let state = self.tick()?;
        let ino = state.lookup(dir.ino, name)?.ok_or_else(|| errno(Errno::NOENT))?;
        state.stat(ino)
    }

    fn dir_stat(&self, dir: &SimDir) -> io::Result<FileStat> {
        self.tick()?.stat(dir.ino)
    }

    fn rename_at(&self, from_dir: &SimDir, from: &OsStr, to_dir: &SimDir, to: &OsStr, replace: bool) -> io::Result<()> {
        self.tick()?.rename((from_dir.ino, from), (to_dir.ino, to), replace)
    }

    fn unlink_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<()> {
        self.tick()?.unlink(dir.ino, name, FileKind::File)
    }

    fn create_dir_at(&self, dir: &SimDir, name: &OsStr) -> io::Result<()> {
        self.tick()?.create_dir(dir.ino, name)
    }

    fn sync_dir_handle(&self, dir: &SimDir) -> io::Result<()> {
        self.tick()?.sync_dir(dir.ino)
    }
}
