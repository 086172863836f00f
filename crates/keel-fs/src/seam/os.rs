//! [`OsStorage`]: the seam's one production implementation, straight onto the system calls.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};

use super::{FileKind, FileStat, Storage};

/// How many times [`OsStorage::open_append`] retries when the file vanishes between its
/// "create exclusively" and "open existing" attempts (someone deleting it in a loop).
const OPEN_APPEND_ATTEMPTS_MAX: u32 = 4;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// The real operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsStorage;

fn kind_of(file_type: FileType) -> FileKind {
    match file_type {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn stat_of(meta: &std::fs::Metadata) -> FileStat {
    let kind = if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else if meta.is_dir() {
        FileKind::Dir
    } else if meta.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat { dev: meta.dev(), ino: meta.ino(), len: meta.len(), mode: meta.mode() & 0o7777, kind }
}

fn stat_of_raw(stat: &rustix::fs::Stat) -> FileStat {
    FileStat {
        dev: stat.st_dev,
        ino: stat.st_ino,
        len: u64::try_from(stat.st_size).unwrap_or(0),
        mode: stat.st_mode & 0o7777,
        kind: kind_of(FileType::from_raw_mode(stat.st_mode)),
    }
}

impl Storage for OsStorage {
    type File = File;
    type Dir = OwnedFd;

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

    fn open_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
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

    fn link_stat(&self, path: &Path) -> io::Result<FileStat> {
        Ok(stat_of(&std::fs::symlink_metadata(path)?))
    }

    fn set_mode(&self, file: &File, mode: u32) -> io::Result<()> {
        file.set_permissions(Permissions::from_mode(mode & 0o7777))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, RenameFlags::NOREPLACE)?)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let fd = rustix::fs::open(dir, DIR_FLAGS, Mode::empty())?;
        rustix::fs::fsync(&fd)?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name())).collect()
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?)
    }

    fn open_dir_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?)
    }

    fn open_beneath(&self, dir: &OwnedFd, parents: &Path) -> Option<OwnedFd> {
        let parents = if parents.as_os_str().as_bytes().is_empty() { Path::new(".") } else { parents };
        rustix::fs::openat2(
            dir,
            parents,
            DIR_FLAGS | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()
    }

    fn create_new_at(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?))
    }

    fn open_read_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        // O_NONBLOCK: a FIFO swapped in after a stat must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?))
    }

    fn stat_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<FileStat> {
        Ok(stat_of_raw(&rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?))
    }

    fn dir_stat(&self, dir: &OwnedFd) -> io::Result<FileStat> {
        Ok(stat_of_raw(&rustix::fs::fstat(dir)?))
    }

    fn rename_at(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
        replace: bool,
    ) -> io::Result<()> {
        let flags = if replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        Ok(rustix::fs::renameat_with(from_dir, from, to_dir, to, flags)?)
    }

    fn unlink_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
    }

    fn create_dir_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777))?)
    }

    fn sync_dir_handle(&self, dir: &OwnedFd) -> io::Result<()> {
        Ok(rustix::fs::fsync(dir)?)
    }
}
