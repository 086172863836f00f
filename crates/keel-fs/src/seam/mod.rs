//! The I/O seam: every operation atomic write and durable append perform, behind one trait, so
//! that tests can make any of them fail (`FailAfter`) or cut the power between any two of them
//! (`CrashSim`) while the production code path stays the one and only code path. The two test
//! doubles are built only for tests: the `testing` feature, which the crates' dev-dependencies
//! turn on, so the shipped binary has neither.
//!
//! # Assumptions about the storage medium (what `CrashSim` models)
//! - Bytes written to a file are durable only after `fsync`/`fdatasync` of that file.
//! - A directory entry (create, rename, unlink) is durable only after `fsync` of its directory.
//! - Either kind of state may *also* reach the disk early, on its own: after a crash, unsynced
//!   names and unsynced data may each survive or vanish. A crash test checks all four mixes.
//! - A file's mode is metadata that survives with the file (not modelled separately).
//! - No torn sectors inside a synced region; no lying fsync (if the disk lies, nothing helps).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

mod os;
pub use os::OsStorage;

#[cfg(any(test, feature = "testing"))]
mod fail;
#[cfg(any(test, feature = "testing"))]
mod sim;
#[cfg(any(test, feature = "testing"))]
pub use fail::FailAfter;
#[cfg(any(test, feature = "testing"))]
pub use sim::{CrashSim, SimDir, SimFile, Survives};

/// Whether a directory `fsync` happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an unsupported directory fsync means the rename may not survive a power loss; log it"]
pub enum DirSync {
    /// The directory was fsynced: the new name is durable.
    Synced,
    /// The file system refused to fsync a directory (`EINVAL`/`ENOTSUP`); the step was skipped.
    Unsupported,
}

/// What kind of thing a name is (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// The facts about a file that the callers of the seam need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Device number: with `ino`, the file's identity.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Length in bytes.
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// What the name is.
    pub kind: FileKind,
}

/// The kinds of operation the seam performs; `FailAfter::only` filters on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Storage::create_new`] and [`Storage::create_new_at`].
    CreateNew,
    /// [`Storage::open_append`].
    OpenAppend,
    /// [`Storage::open_write`].
    OpenWrite,
    /// [`Storage::open_read`] and [`Storage::open_read_at`].
    OpenRead,
    /// [`Storage::open_dir`] and [`Storage::open_dir_at`].
    OpenDir,
    /// [`Storage::write_all`] and [`Storage::write_once`].
    Write,
    /// [`Storage::read_at`].
    ReadAt,
    /// [`Storage::sync_all`].
    SyncAll,
    /// [`Storage::sync_data`].
    SyncData,
    /// [`Storage::file_stat`], [`Storage::path_stat`], [`Storage::link_stat`],
    /// [`Storage::stat_at`] and [`Storage::dir_stat`].
    Stat,
    /// [`Storage::set_mode`].
    SetMode,
    /// [`Storage::rename`], [`Storage::rename_noreplace`] and [`Storage::rename_at`].
    Rename,
    /// [`Storage::sync_dir`] and [`Storage::sync_dir_handle`].
    SyncDir,
    /// [`Storage::remove_file`], [`Storage::unlink_at`] and [`Storage::remove_dir`].
    Remove,
    /// [`Storage::set_len`].
    SetLen,
    /// [`Storage::create_dir`] and [`Storage::create_dir_at`].
    CreateDir,
    /// [`Storage::list_dir`].
    ListDir,
}

/// Every operation keel performs on files and directories. Paths are used as given; callers
/// pass the directory of a file to [`Storage::sync_dir`]. The `*_at` operations act on a name
/// in an open directory handle, so a path is resolved once (beneath a root, see
/// [`crate::resolve`]) and a renamed directory cannot redirect them; none follows a symlink in
/// the name it acts on. A name that is absent is an error of kind `NotFound`; an `*_at` error
/// carries the operating system's `errno` (`EEXIST`, `ELOOP`, `ENOTDIR`, ...) so callers can
/// tell the cases apart.
pub trait Storage {
    /// An open file.
    type File;
    /// An open directory.
    type Dir;
    /// Creates `path` exclusively (`O_CREAT|O_EXCL`), write-only.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens `path` for reading and `O_APPEND` writing, creating it if missing; `true` when this
    /// call created it.
    fn open_append(&self, path: &Path) -> io::Result<(Self::File, bool)>;
    /// Opens an existing `path` for writing at offset 0 (to cut it with [`Storage::set_len`]).
    fn open_write(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing `path` for reading only: what a reader needs, and all a read-only
    /// mount allows.
    fn open_read(&self, path: &Path) -> io::Result<Self::File>;
    /// Writes all of `bytes` (possibly several `write` calls).
    fn write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()>;
    /// One `write` call (retried only on `EINTR`, which writes nothing); returns bytes written.
    fn write_once(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<usize>;
    /// `pread`: reads at `offset` without moving any cursor.
    fn read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// `fsync`: data and metadata.
    fn sync_all(&self, file: &Self::File) -> io::Result<()>;
    /// `fdatasync`: data and the metadata needed to read it back (the length).
    fn sync_data(&self, file: &Self::File) -> io::Result<()>;
    /// `fstat`.
    fn file_stat(&self, file: &Self::File) -> io::Result<FileStat>;
    /// `stat` (follows symlinks, as `open` does).
    fn path_stat(&self, path: &Path) -> io::Result<FileStat>;
    /// `lstat`: the name itself, a symlink not followed.
    fn link_stat(&self, path: &Path) -> io::Result<FileStat>;
    /// `fchmod`.
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()>;
    /// `rename`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` if `to` exists (also directories).
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Opens the directory `dir` and `fsync`s it.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// `unlink`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `rmdir`: the directory must be empty.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// `mkdir` (mode 0o777 less the umask); `AlreadyExists` if the name exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names in the directory `path` (not `.` or `..`), in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// `ftruncate`: cuts the file to `len` bytes (needs no free space).
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()>;

    /// Opens the directory `path`: a trusted starting point, so symlinks in it are followed.
    fn open_dir(&self, path: &Path) -> io::Result<Self::Dir>;
    /// Opens the directory `name` in `dir` (`O_NOFOLLOW|O_DIRECTORY`: a symlink or a file there
    /// fails with `ELOOP` or `ENOTDIR`).
    fn open_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::Dir>;
    /// Opens the directories `parents` beneath `dir` in one step, never leaving `dir` nor
    /// following a symlink (`openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`); `None` when the
    /// storage has no such call or refuses, and the caller then walks with
    /// [`Storage::open_dir_at`].
    fn open_beneath(&self, dir: &Self::Dir, parents: &Path) -> Option<Self::Dir>;
    /// Creates `name` in `dir` exclusively and without following a symlink, write-only, with
    /// `mode` (less the umask).
    fn create_new_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::File>;
    /// Opens `name` in `dir` for reading, refusing a symlink (`ELOOP`) and never blocking on
    /// a FIFO.
    fn open_read_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;
    /// `fstatat(AT_SYMLINK_NOFOLLOW)`.
    fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<FileStat>;
    /// `fstat` of a directory handle.
    fn dir_stat(&self, dir: &Self::Dir) -> io::Result<FileStat>;
    /// `renameat2`: `from` in `from_dir` to `to` in `to_dir`; without `replace`, fails with
    /// `EEXIST` when `to` exists.
    fn rename_at(
        &self,
        from_dir: &Self::Dir,
        from: &OsStr,
        to_dir: &Self::Dir,
        to: &OsStr,
        replace: bool,
    ) -> io::Result<()>;
    /// `unlinkat` of a file.
    fn unlink_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
    /// `mkdirat`.
    fn create_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
    /// `fsync` of a directory handle: its entries become durable.
    fn sync_dir_handle(&self, dir: &Self::Dir) -> io::Result<()>;
}

/// Forwards every operation of `&S` to `S`.
macro_rules! forward {
    ($($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { (**self).$name($($arg),*) })*
    };
}

impl<S: Storage + ?Sized> Storage for &S {
    type File = S::File;
    type Dir = S::Dir;
    forward! {
        create_new(&self, path: &Path) -> io::Result<Self::File>;
        open_append(&self, path: &Path) -> io::Result<(Self::File, bool)>;
        open_write(&self, path: &Path) -> io::Result<Self::File>;
        open_read(&self, path: &Path) -> io::Result<Self::File>;
        write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()>;
        write_once(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<usize>;
        read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
        sync_all(&self, file: &Self::File) -> io::Result<()>;
        sync_data(&self, file: &Self::File) -> io::Result<()>;
        file_stat(&self, file: &Self::File) -> io::Result<FileStat>;
        path_stat(&self, path: &Path) -> io::Result<FileStat>;
        link_stat(&self, path: &Path) -> io::Result<FileStat>;
        set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()>;
        rename(&self, from: &Path, to: &Path) -> io::Result<()>;
        rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
        sync_dir(&self, dir: &Path) -> io::Result<()>;
        remove_file(&self, path: &Path) -> io::Result<()>;
        remove_dir(&self, path: &Path) -> io::Result<()>;
        create_dir(&self, path: &Path) -> io::Result<()>;
        list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
        set_len(&self, file: &Self::File, len: u64) -> io::Result<()>;
        open_dir(&self, path: &Path) -> io::Result<Self::Dir>;
        open_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::Dir>;
        open_beneath(&self, dir: &Self::Dir, parents: &Path) -> Option<Self::Dir>;
        create_new_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::File>;
        open_read_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;
        stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<FileStat>;
        dir_stat(&self, dir: &Self::Dir) -> io::Result<FileStat>;
        rename_at(&self, from_dir: &Self::Dir, from: &OsStr, to_dir: &Self::Dir, to: &OsStr, replace: bool) -> io::Result<()>;
        unlink_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
        create_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
        sync_dir_handle(&self, dir: &Self::Dir) -> io::Result<()>;
    }
}

/// Classifies the result of a directory fsync: `EINVAL`/`ENOTSUP` mean the file system does not
/// support it (the step is skipped and reported), any other error is a real failure.
pub fn dir_sync_status(result: io::Result<()>) -> io::Result<DirSync> {
    match result {
        Ok(()) => Ok(DirSync::Synced),
        Err(e)
            if e.raw_os_error().is_some_and(|raw| {
                raw == rustix::io::Errno::INVAL.raw_os_error()
                    || raw == rustix::io::Errno::NOTSUP.raw_os_error()
                    || raw == rustix::io::Errno::OPNOTSUPP.raw_os_error()
            }) =>
        {
            Ok(DirSync::Unsupported)
        }
        Err(e) => Err(e),
    }
}

/// The parent directory of `path` as [`Storage::sync_dir`] wants it (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The most one read of [`read_range`] asks for, so a large request never allocates far ahead
/// of the data.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// What [`read_to_end`] asks for first: most files keel reads whole are a few hundred bytes.
const READ_FIRST_BYTES: u64 = 4096;

/// Reads all of `file` through `storage`, refusing more than `bytes_max` bytes (the error's
/// kind is `FileTooLarge`, with no OS error code), so no read is unbounded.
pub fn read_to_end<S: Storage + ?Sized>(storage: &S, file: &S::File, bytes_max: u64) -> io::Result<Vec<u8>> {
    let bytes = read_range(storage, file, 0, bytes_max.saturating_add(1), READ_FIRST_BYTES)?;
    if bytes.len() as u64 > bytes_max {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("longer than {bytes_max} bytes")));
    }
    Ok(bytes)
}

/// Up to `bytes_max` bytes of `file` from `offset`: fewer only where the file ends. The first
/// read asks for `first_bytes` (a caller that knows the length passes it), later ones for twice
/// as much while reads come back full, up to 64 KiB: a small file costs no large buffer.
pub fn read_range<S: Storage + ?Sized>(
    storage: &S,
    file: &S::File,
    offset: u64,
    bytes_max: u64,
    first_bytes: u64,
) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = usize::try_from(first_bytes).unwrap_or(READ_CHUNK_BYTES).clamp(1, READ_CHUNK_BYTES);
    while (bytes.len() as u64) < bytes_max {
        let start = bytes.len();
        let want = usize::try_from(bytes_max - start as u64).unwrap_or(usize::MAX).min(chunk);
        bytes.resize(start + want, 0);
        let n = storage.read_at(file, offset + start as u64, &mut bytes[start..])?;
        bytes.truncate(start + n);
        if n == 0 {
            break;
        }
        if n == want {
            chunk = (chunk * 2).min(READ_CHUNK_BYTES);
        }
    }
    Ok(bytes)
}

/// A file of a [`Storage`] as a [`std::io::Read`] from `offset` on (for [`crate::LineReader`]).
#[derive(Debug)]
pub struct StorageRead<'a, S: Storage + ?Sized> {
    storage: &'a S,
    file: &'a S::File,
    offset: u64,
}

impl<'a, S: Storage + ?Sized> StorageRead<'a, S> {
    /// Reads `file` through `storage`, starting at `offset`.
    pub fn new(storage: &'a S, file: &'a S::File, offset: u64) -> Self {
        Self { storage, file, offset }
    }
}

impl<S: Storage + ?Sized> io::Read for StorageRead<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.storage.read_at(self.file, self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Whether `e` is the operating system's `errno`: how callers tell the `*_at` errors apart.
pub fn is_errno(e: &io::Error, errno: rustix::io::Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_sim_drops_unsynced_data_and_undirsynced_names() {
        let sim = CrashSim::new();
        let path = Path::new("/d/f");
        let mut file = sim.create_new(path).expect("create");
        sim.write_all(&mut file, b"abc").expect("write");
        let lost = sim.crash(Survives::SyncedOnly, Survives::SyncedOnly);
        assert_eq!(lost.read(path), None, "name was never dir-synced");
        let empty = sim.crash(Survives::Everything, Survives::SyncedOnly);
        assert_eq!(empty.read(path), Some(Vec::new()), "data was never synced");
        sim.sync_all(&file).expect("fsync");
        sim.sync_dir(Path::new("/d")).expect("dir fsync");
        let kept = sim.crash(Survives::SyncedOnly, Survives::SyncedOnly);
        assert_eq!(kept.read(path), Some(b"abc".to_vec()));
    }

    #[test]
    fn fail_after_once_fails_exactly_one_counted_operation() {
        let sim = CrashSim::new();
        let failing = FailAfter::once(&sim, 1).only(Op::Stat);
        sim.put_durable(Path::new("/f"), b"x", 0o600);
        assert!(failing.path_stat(Path::new("/f")).is_ok());
        assert!(failing.sync_dir(Path::new("/")).is_ok(), "not counted");
        assert!(failing.path_stat(Path::new("/f")).is_err());
        assert!(failing.path_stat(Path::new("/f")).is_ok());
        assert!(failing.tripped());
    }

    #[test]
    fn dir_sync_einval_and_enotsup_are_unsupported_but_eio_is_an_error() {
        let einval = io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error());
        let enotsup = io::Error::from_raw_os_error(rustix::io::Errno::NOTSUP.raw_os_error());
        let eio = io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        assert_eq!(dir_sync_status(Err(einval)).ok(), Some(DirSync::Unsupported));
        assert_eq!(dir_sync_status(Err(enotsup)).ok(), Some(DirSync::Unsupported));
        assert!(dir_sync_status(Err(eio)).is_err());
    }
}
