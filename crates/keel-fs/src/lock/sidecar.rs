//! The sidecar-directory lock: `mkdir <path>.lock/` with a holder file inside.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags};

use crate::error::{FsError, Result};
use crate::lock::holder::{Holder, Release, describe_body, is_stale, mtime_unix_s, read_body, with_suffix};

/// The holder file's name inside the lock directory.
pub const HOLDER_FILE_NAME: &str = "holder.json";

/// A held sidecar-directory lock on some path.
///
/// # Protocol (shared with other tools)
/// - Acquire: `mkdir <path>.lock` succeeds; then write `<path>.lock/holder.json`, one JSON object
///   with `owner`, `pid`, `host`, `acquired_unix_s` and `nonce`.
/// - Stale: the holder's `acquired_unix_s` (or, with no readable holder file, the directory's
///   mtime) is older than the TTL. An acquire reclaims a stale lock at most once: rename the
///   directory aside, check its holder file is byte-identical to the one judged stale (else put
///   it back with a no-replace rename), delete it, `mkdir` again.
/// - Release: once per handle (a flag, so a duplicate release is a no-op), and only if the
///   holder file's bytes are still ours, compared after renaming the directory aside.
#[derive(Debug)]
#[must_use = "dropping the lock releases it at once"]
pub struct SidecarDirLock {
    dir: PathBuf,
    holder: Holder,
    body: Vec<u8>,
    reclaimed_from: Option<String>,
    released: bool,
}

impl SidecarDirLock {
    /// The lock directory for `path`: `<path>.lock`.
    pub fn dir_for(path: &Path) -> PathBuf {
        with_suffix(path, ".lock")
    }

    /// Takes the lock on `path` for `owner`, reclaiming it (at most once) if its holder is older
    /// than `ttl_s` at `now_unix_s`. Never waits.
    pub fn try_acquire(path: &Path, owner: &str, ttl_s: u64, now_unix_s: u64) -> Result<Self> {
        let dir = Self::dir_for(path);
        let holder = Holder::new(owner, now_unix_s, &dir)?;
        let body = holder.to_bytes();
        let mut reclaimed_from = None;
        let mut last_seen = "unknown".to_owned();
        // Two mkdir attempts at most: the first, and one after a reclaim (or after the lock
        // vanished under us).
        for attempt in 0..2 {
            match fs::create_dir(&dir) {
                Ok(()) => {
                    write_holder(&dir, &body)?;
                    return Ok(Self { dir, holder, body, reclaimed_from, released: false });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FsError::io("mkdir lock", &dir, e)),
            }
            if attempt == 1 {
                break;
            }
            let observed = read_holder(&dir)?;
            let parsed = observed.as_deref().and_then(Holder::parse);
            let gone = parsed.as_ref().is_some_and(Holder::is_gone);
            let acquired_unix_s = match parsed {
                Some(h) => h.acquired_unix_s,
                None => match mtime_unix_s(&dir) {
                    Ok(mtime) => mtime,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(FsError::io("stat lock", &dir, e)),
                },
            };
            last_seen = observed.as_deref().map_or_else(|| "unknown (no holder file)".to_owned(), describe_body);
            // A holder provably gone from this host is reclaimed at once; any other by age.
            if !gone && !is_stale(acquired_unix_s, ttl_s, now_unix_s) {
                break;
            }
            let aside = with_suffix(&dir, &format!(".stale.{}", holder.nonce));
            match fs::rename(&dir, &aside) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(FsError::io("rename lock aside", &dir, e)),
            }
            let moved = read_holder(&aside)?;
            if moved != observed {
                put_back(&aside, &dir)?;
                last_seen = moved.as_deref().map_or_else(|| "unknown (no holder file)".to_owned(), describe_body);
                break;
            }
            fs::remove_dir_all(&aside).map_err(|e| FsError::io("remove stale lock", &aside, e))?;
            reclaimed_from = Some(last_seen.clone());
        }
        Err(FsError::LockBusy { path: dir, holder: last_seen, waited_ms: 0 })
    }

    /// The lock directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The holder body this lock wrote.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Who held the lock before, when this acquire reclaimed it as stale.
    pub fn reclaimed_from(&self) -> Option<&str> {
        self.reclaimed_from.as_deref()
    }

    /// Removes the lock if its holder file is still ours. Only the first call does anything;
    /// later calls return [`Release::AlreadyReleased`] without touching the file system, so a
    /// duplicate release can never remove a later holder's lock.
    pub fn release(&mut self) -> Result<Release> {
        if self.released {
            return Ok(Release::AlreadyReleased);
        }
        self.released = true;
        match read_holder(&self.dir)? {
            Some(bytes) if bytes == self.body => {}
            Some(_) => return Ok(Release::NotOurs),
            None if self.dir.exists() => return Ok(Release::NotOurs),
            None => return Ok(Release::Missing),
        }
        let aside = with_suffix(&self.dir, &format!(".release.{}", self.holder.nonce));
        match fs::rename(&self.dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Release::Missing),
            Err(e) => return Err(FsError::io("rename lock aside", &self.dir, e)),
        }
        if read_holder(&aside)?.as_deref() == Some(self.body.as_slice()) {
            fs::remove_dir_all(&aside).map_err(|e| FsError::io("remove lock", &aside, e))?;
            Ok(Release::Removed)
        } else {
            put_back(&aside, &self.dir)?;
            Ok(Release::NotOurs)
        }
    }
}

impl Drop for SidecarDirLock {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; call `release` to see them.
        let _ = self.release();
    }
}

fn write_holder(dir: &Path, body: &[u8]) -> Result<()> {
    let path = dir.join(HOLDER_FILE_NAME);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut file| file.write_all(body).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        // The directory is ours and has no valid holder: take it down rather than leave a lock
        // that only the TTL would clear.
        let _ = fs::remove_file(&path);
        let _ = fs::remove_dir(dir);
        return Err(FsError::io("write lock holder", path, e));
    }
    Ok(())
}

/// The holder file's bytes; `None` if there is none (or no directory).
fn read_holder(dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(HOLDER_FILE_NAME);
    match read_body(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::io("read lock holder", path, e)),
    }
}

/// Renames a lock directory moved aside by mistake back, never over another lock (a plain
/// `rename` would replace an empty directory that a newcomer just made).
fn put_back(aside: &Path, dir: &Path) -> Result<()> {
    match rustix::fs::renameat_with(CWD, aside, CWD, dir, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(errno) => {
            let detail = format!("could not put the lock back from {} ({errno}); it is left there", aside.display());
            Err(FsError::LockConflict { path: dir.to_owned(), detail })
        }
    }
}
