//! The writer lock the kernel releases when its holder dies: `flock` on a dedicated lock file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{FsError, Result};
use crate::lock::holder::{Holder, describe_body, read_body, unix_now_s, with_suffix};

/// The longest pause between two attempts of [`OsLock::acquire_timeout`], in milliseconds.
/// Polling starts at 1 ms and doubles: short waits stay short, long waits stay cheap.
pub const LOCK_POLL_BACKOFF_MS_MAX: u64 = 50;

/// A held exclusive `flock` on a lock file. Dropping it (or the process dying) releases it.
///
/// The lock is on a file of its own, never on the data file, so that atomic renames of the data
/// file cannot silently drop it (a lock belongs to an inode, and a rename replaces the inode).
/// The lock file's content is an advisory note naming the holder, for error messages only.
#[derive(Debug)]
#[must_use = "dropping the lock releases it at once"]
pub struct OsLock {
    file: File,
    path: PathBuf,
}

/// Width of the advisory holder note (a holder body is far shorter).
const NOTE_BYTES: usize = 512;

impl OsLock {
    /// The conventional lock file for a data file: `<data>.lock`.
    pub fn path_for(data_path: &Path) -> PathBuf {
        with_suffix(data_path, ".lock")
    }

    /// Takes the lock if it is free; [`FsError::LockBusy`] otherwise.
    pub fn try_acquire(lock_path: &Path) -> Result<Self> {
        let file = open_lock_file(lock_path)?;
        match file.try_lock() {
            Ok(()) => Self::held(file, lock_path),
            Err(TryLockError::WouldBlock) => Err(busy(lock_path, 0)),
            Err(TryLockError::Error(e)) => Err(FsError::io("flock", lock_path, e)),
        }
    }

    /// Waits as long as it takes for the lock.
    pub fn acquire(lock_path: &Path) -> Result<Self> {
        let file = open_lock_file(lock_path)?;
        file.lock().map_err(|e| FsError::io("flock", lock_path, e))?;
        Self::held(file, lock_path)
    }

    /// Waits at most `timeout_ms` for the lock, polling with backoff; [`FsError::LockBusy`]
    /// after the deadline.
    pub fn acquire_timeout(lock_path: &Path, timeout_ms: u64) -> Result<Self> {
        let file = open_lock_file(lock_path)?;
        lock_within(&file, lock_path, timeout_ms)?;
        Self::held(file, lock_path)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn held(mut file: File, lock_path: &Path) -> Result<Self> {
        write_note(&mut file, lock_path)?;
        Ok(Self { file, path: lock_path.to_owned() })
    }
}

impl Drop for OsLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock anyway; unlocking first just makes the
        // release independent of other descriptors sharing this open file description.
        let _ = self.file.unlock();
    }
}

fn open_lock_file(lock_path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|e| FsError::io("open lock file", lock_path, e))
}

fn busy(lock_path: &Path, waited_ms: u64) -> FsError {
    let holder = read_body(lock_path).map_or_else(|_| "unknown".to_owned(), |body| describe_body(&body));
    FsError::LockBusy { path: lock_path.to_owned(), holder, waited_ms }
}

/// Writes the advisory holder note. It only names the holder in other processes' busy errors, so
/// it is neither fsynced nor required to be whole (readers tolerate a torn note). It is written in
/// place at a fixed width, padded with spaces (JSON white space), because truncating the file
/// first costs a metadata journal commit on every acquisition.
fn write_note(file: &mut File, lock_path: &Path) -> Result<()> {
    let mut note = Holder::new("keel kernel lock", unix_now_s(), lock_path)?.to_bytes();
    if note.len() < NOTE_BYTES {
        note.resize(NOTE_BYTES, b' ');
    }
    file.write_all_at(&note, 0).map_err(|e| FsError::io("write lock note", lock_path, e))?;
    file.flush().map_err(|e| FsError::io("write lock note", lock_path, e))
}

/// Takes the `flock` on `file`, polling with backoff for at most `timeout_ms`.
fn lock_within(file: &File, lock_path: &Path, timeout_ms: u64) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(timeout_ms);
    let mut backoff_ms = 1;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(FsError::io("flock", lock_path, e)),
        }
        let now = Instant::now();
        if now >= deadline {
            let waited_ms = u64::try_from(now.duration_since(started).as_millis()).unwrap_or(u64::MAX);
            return Err(busy(lock_path, waited_ms));
        }
        std::thread::sleep(Duration::from_millis(backoff_ms).min(deadline - now));
        backoff_ms = (backoff_ms * 2).min(LOCK_POLL_BACKOFF_MS_MAX);
    }
}

/// A lock file kept open by a process that takes the same [`OsLock`] protocol's lock many
/// times: one `open` and one holder note for the process, then one `flock` per acquisition.
/// Other processes see exactly the lock [`OsLock`] takes (same file, same `flock`).
#[derive(Debug)]
pub struct ReusableLock {
    file: File,
    path: PathBuf,
}

/// A held [`ReusableLock`]; dropping it releases the lock (as does the process dying).
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct ReusableLockGuard<'a> {
    lock: &'a ReusableLock,
}

impl ReusableLock {
    /// Opens (creating if needed) the lock file and writes this process's holder note.
    pub fn open(lock_path: &Path) -> Result<Self> {
        Ok(Self { file: open_lock_file(lock_path)?, path: lock_path.to_owned() })
    }

    /// Takes the lock, waiting at most `timeout_ms`; [`FsError::LockBusy`] after that.
    pub fn acquire_timeout(&mut self, timeout_ms: u64) -> Result<ReusableLockGuard<'_>> {
        lock_within(&self.file, &self.path, timeout_ms)?;
        // The note names the current holder for others' busy errors; it is cheap (no truncate).
        if let Err(error) = write_note(&mut self.file, &self.path) {
            let _ = self.file.unlock();
            return Err(error);
        }
        Ok(ReusableLockGuard { lock: self })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReusableLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.file.unlock();
    }
}
