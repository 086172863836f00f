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

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

#[cfg(any(test, feature = "testing"))]
mod testing;
#[cfg(any(test, feature = "testing"))]
pub use testing::{CrashSim, FailAfter, SimFile, Survives};

/// How many times [`OsStorage::open_append`] retries when the file vanishes between its
/// "create exclusively" and "open existing" attempts (someone deleting it in a loop).
const OPEN_APPEND_ATTEMPTS_MAX: u32 = 4;

/// Whether a directory `fsync` happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an unsupported directory fsync means the rename may not survive a power loss; log it"]
pub enum DirSync {
    /// The directory was fsynced: the new name is durable.
    Synced,
    /// The file system refused to fsync a directory (`EINVAL`/`ENOTSUP`); the step was skipped.
    Unsupported,
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
}

/// The kinds of operation the seam performs; `FailAfter::only` filters on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Storage::create_new`].
    CreateNew,
    /// [`Storage::open_append`].
    OpenAppend,
    /// [`Storage::open_read`].
    OpenRead,
    /// [`Storage::write_all`] and [`Storage::write_once`].
    Write,
    /// [`Storage::read_at`].
    ReadAt,
    /// [`Storage::sync_all`].
    SyncAll,
    /// [`Storage::sync_data`].
    SyncData,
    /// [`Storage::file_stat`] and [`Storage::path_stat`].
    Stat,
    /// [`Storage::set_mode`].
    SetMode,
    /// [`Storage::rename`].
    Rename,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::remove_file`].
    Remove,
    /// [`Storage::set_len`].
    SetLen,
}

/// The operations atomic write and durable append need. Paths are used as given; callers pass
/// the directory of a file to [`Storage::sync_dir`].
pub trait Storage {
    /// An open file.
    type File;
    /// Creates `path` exclusively (`O_CREAT|O_EXCL`), write-only.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens `path` for reading and `O_APPEND` writing, creating it if missing; `true` when this
    /// call created it.
    fn open_append(&self, path: &Path) -> io::Result<(Self::File, bool)>;
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
    /// `fchmod`.
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()>;
    /// `rename`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Opens the directory `dir` and `fsync`s it.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// `unlink`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `ftruncate`: cuts the file to `len` bytes (needs no free space).
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()>;
}

impl<S: Storage + ?Sized> Storage for &S {
    type File = S::File;
    fn create_new(&self, path: &Path) -> io::Result<Self::File> {
        (**self).create_new(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<(Self::File, bool)> {
        (**self).open_append(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Self::File> {
        (**self).open_read(path)
    }
    fn write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()> {
        (**self).write_all(file, bytes)
    }
    fn write_once(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<usize> {
        (**self).write_once(file, bytes)
    }
    fn read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(file, offset, buf)
    }
    fn sync_all(&self, file: &Self::File) -> io::Result<()> {
        (**self).sync_all(file)
    }
    fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        (**self).sync_data(file)
    }
    fn file_stat(&self, file: &Self::File) -> io::Result<FileStat> {
        (**self).file_stat(file)
    }
    fn path_stat(&self, path: &Path) -> io::Result<FileStat> {
        (**self).path_stat(path)
    }
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()> {
        (**self).set_mode(file, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        (**self).sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        (**self).remove_file(path)
    }
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()> {
        (**self).set_len(file, len)
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

/// The real operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsStorage;

fn stat_of(meta: &std::fs::Metadata) -> FileStat {
    FileStat { dev: meta.dev(), ino: meta.ino(), len: meta.len(), mode: meta.mode() & 0o7777 }
}

impl Storage for OsStorage {
    type File = File;

    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<(File, bool)> {
        // Two steps instead of `create(true)` so the caller learns whether the name is new and
        // therefore needs a directory fsync.
        for _ in 0..OPEN_APPEND_ATTEMPTS_MAX {
            match OpenOptions::new().read(true).append(true).create_new(true).open(path) {
                Ok(file) => return Ok((file, true)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match OpenOptions::new().read(true).append(true).open(path) {
                Ok(file) => return Ok((file, false)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("file kept appearing and vanishing while being opened"))
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn write_all(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn write_once(&self, file: &mut File, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match file.write(bytes) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn read_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match file.read_at(buf, offset) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn file_stat(&self, file: &File) -> io::Result<FileStat> {
        Ok(stat_of(&file.metadata()?))
    }

    fn path_stat(&self, path: &Path) -> io::Result<FileStat> {
        Ok(stat_of(&std::fs::metadata(path)?))
    }

    fn set_mode(&self, file: &File, mode: u32) -> io::Result<()> {
        file.set_permissions(Permissions::from_mode(mode & 0o7777))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::fs::fsync(&fd)?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
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
