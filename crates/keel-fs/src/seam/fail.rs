//! [`FailAfter`], the seam's fault injector (built only for tests: the `testing` feature).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{FileStat, Op, Storage};

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
    type Dir = S::Dir;
    fn create_new(&self, path: &Path) -> io::Result<Self::File> {
        self.gate(Op::CreateNew)?;
        self.inner.create_new(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<(Self::File, bool)> {
        self.gate(Op::OpenAppend)?;
        self.inner.open_append(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Self::File> {
        self.gate(Op::OpenWrite)?;
        self.inner.open_write(path)
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
    fn link_stat(&self, path: &Path) -> io::Result<FileStat> {
        self.gate(Op::Stat)?;
        self.inner.link_stat(path)
    }
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()> {
        self.gate(Op::SetMode)?;
        self.inner.set_mode(file, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.gate(Op::Rename)?;
        self.inner.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.gate(Op::Rename)?;
        self.inner.rename_noreplace(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.gate(Op::SyncDir)?;
        self.inner.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.gate(Op::Remove)?;
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.gate(Op::Remove)?;
        self.inner.remove_dir(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.gate(Op::CreateDir)?;
        self.inner.create_dir(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.gate(Op::ListDir)?;
        self.inner.list_dir(path)
    }
    fn set_len(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.gate(Op::SetLen)?;
        self.inner.set_len(file, len)
    }
    fn open_dir(&self, path: &Path) -> io::Result<Self::Dir> {
        self.gate(Op::OpenDir)?;
        self.inner.open_dir(path)
    }
    fn open_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::Dir> {
        self.gate(Op::OpenDir)?;
        self.inner.open_dir_at(dir, name)
    }
    fn create_new_at(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::File> {
        self.gate(Op::CreateNew)?;
        self.inner.create_new_at(dir, name, mode)
    }
    fn open_read_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File> {
        self.gate(Op::OpenRead)?;
        self.inner.open_read_at(dir, name)
    }
    fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<FileStat> {
        self.gate(Op::Stat)?;
        self.inner.stat_at(dir, name)
    }
    fn dir_stat(&self, dir: &Self::Dir) -> io::Result<FileStat> {
        self.gate(Op::Stat)?;
        self.inner.dir_stat(dir)
    }
    fn rename_at(
        &self,
        from_dir: &Self::Dir,
        from: &OsStr,
        to_dir: &Self::Dir,
        to: &OsStr,
        replace: bool,
    ) -> io::Result<()> {
        self.gate(Op::Rename)?;
        self.inner.rename_at(from_dir, from, to_dir, to, replace)
    }
    fn unlink_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()> {
        self.gate(Op::Remove)?;
        self.inner.unlink_at(dir, name)
    }
    fn create_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()> {
        self.gate(Op::CreateDir)?;
        self.inner.create_dir_at(dir, name)
    }
    fn sync_dir_handle(&self, dir: &Self::Dir) -> io::Result<()> {
        self.gate(Op::SyncDir)?;
        self.inner.sync_dir_handle(dir)
    }
    fn open_beneath(&self, dir: &Self::Dir, parents: &Path) -> Option<Self::Dir> {
        // Counted as a directory open; a failure here is a refusal, and the caller walks.
        self.gate(Op::OpenDir).ok()?;
        self.inner.open_beneath(dir, parents)
    }
}
