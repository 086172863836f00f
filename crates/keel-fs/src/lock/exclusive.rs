//! An `O_EXCL` lock file for file systems whose OS locks cannot be trusted (NFS).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{FsError, Result};
use crate::lock::holder::{
    HOLDER_BODY_BYTES_MAX, Holder, Release, describe_body, is_stale, mtime_unix_s, read_body, with_suffix,
};

/// A steal claim (`<lock>.claim.<inode>`) older than this many seconds belongs to a stealer
/// that died mid-steal (a steal takes microseconds) and is removed so stealing can resume.
pub const CLAIM_TTL_S: u64 = 30;

/// A held `O_EXCL` lock file whose body names this holder. Dropping it releases it (if the body
/// is still ours); [`ExclusiveFileLock::release`] says how the release went.
///
/// # Protocol
/// - Acquire: create the lock file with `O_CREAT|O_EXCL`, write the [`Holder`] body, fsync.
/// - Busy: the file exists. Its body's `acquired_unix_s` (or, for a body that does not parse,
///   the file's mtime) older than `ttl_s` makes it stale.
/// - Steal, a compare-and-swap on the exact bytes `B` observed:
///   1. create `<lock>.claim.<inode of B>` with `O_EXCL`; only its creator continues, so stealers
///      of the same body never act at once;
///   2. re-read the lock file: if it is no longer `B`, give up (nothing was touched);
///   3. rename the lock file to `<lock>.steal.<our nonce>` and re-read that: if it is not
///      byte-identical to `B` (its holder released and a newcomer locked in between), put it
///      back with a no-replace `link` and give up;
///   4. delete `B`, then create our lock with `O_EXCL`. A plain acquirer may get there first:
///      then it won and we report busy. Either way exactly one party holds the lock.
/// - Release: only if the body is still ours, by the same rename-and-compare.
///
/// No directory fsync: after a power loss every lock is stale anyway.
#[derive(Debug)]
#[must_use = "dropping the lock releases it at once"]
pub struct ExclusiveFileLock {
    path: PathBuf,
    holder: Holder,
    body: Vec<u8>,
    stolen_from: Option<String>,
    released: bool,
}

/// The lock body seen when the lock was busy, with the facts needed to judge and claim it.
struct Observed {
    bytes: Vec<u8>,
    ino: u64,
    mtime_unix_s: u64,
}

impl ExclusiveFileLock {
    /// Takes the lock at `path` for `owner`, stealing it if its holder's body is older than
    /// `ttl_s` at `now_unix_s` (pass [`crate::lock::unix_now_s`] outside tests). Never waits.
    pub fn try_acquire(path: &Path, owner: &str, ttl_s: u64, now_unix_s: u64) -> Result<Self> {
        let holder = Holder::new(owner, now_unix_s, path)?;
        let body = holder.to_bytes();
        if create_lock(path, &body)? {
            return Ok(Self::held(path, holder, body, None));
        }
        let Some(observed) = observe(path)? else {
            // Released between our create and our read: one more plain attempt, no loop.
            if create_lock(path, &body)? {
                return Ok(Self::held(path, holder, body, None));
            }
            return Err(busy(path, "unknown (it changed while being read)".to_owned()));
        };
        let parsed = Holder::parse(&observed.bytes);
        let gone = parsed.as_ref().is_some_and(Holder::is_gone);
        let acquired_unix_s = parsed.map_or(observed.mtime_unix_s, |h| h.acquired_unix_s);
        // A holder provably gone from this host is reclaimed at once; any other by age.
        if !gone && !is_stale(acquired_unix_s, ttl_s, now_unix_s) {
            return Err(busy(path, describe_body(&observed.bytes)));
        }

        let claim_path = with_suffix(path, &format!(".claim.{}", observed.ino));
        let Some(_claim) = Claim::take(&claim_path, now_unix_s)? else {
            return Err(busy(path, format!("{} (being stolen by another process)", describe_body(&observed.bytes))));
        };
        match read_body(path) {
            Ok(now) if now == observed.bytes => {}
            Ok(now) => return Err(busy(path, describe_body(&now))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(busy(path, "unknown (released during the steal)".to_owned()));
            }
            Err(e) => return Err(FsError::io("read lock", path, e)),
        }
        let aside = with_suffix(path, &format!(".steal.{}", holder.nonce));
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(busy(path, "unknown (released during the steal)".to_owned()));
            }
            Err(e) => return Err(FsError::io("rename lock aside", path, e)),
        }
        let moved = read_body(&aside).map_err(|e| FsError::io("read lock", &aside, e))?;
        if moved != observed.bytes {
            put_back(&aside, path, &moved)?;
            return Err(busy(path, describe_body(&moved)));
        }
        fs::remove_file(&aside).map_err(|e| FsError::io("remove stolen lock", &aside, e))?;
        if create_lock(path, &body)? {
            return Ok(Self::held(path, holder, body, Some(describe_body(&observed.bytes))));
        }
        Err(busy(path, "a newcomer that locked during the steal".to_owned()))
    }

    fn held(path: &Path, holder: Holder, body: Vec<u8>, stolen_from: Option<String>) -> Self {
        Self { path: path.to_owned(), holder, body, stolen_from, released: false }
    }

    /// The body this lock wrote.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who held the lock before, when it was stolen as stale (worth a journal record).
    pub fn stolen_from(&self) -> Option<&str> {
        self.stolen_from.as_deref()
    }

    /// Whether the lock file still carries our body (false once stolen).
    pub fn is_still_held(&self) -> Result<bool> {
        match read_body(&self.path) {
            Ok(bytes) => Ok(bytes == self.body),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(FsError::io("read lock", &self.path, e)),
        }
    }

    /// Removes the lock if its body is still ours.
    pub fn release(mut self) -> Result<Release> {
        self.released = true;
        self.release_once()
    }

    fn release_once(&self) -> Result<Release> {
        match read_body(&self.path) {
            Ok(bytes) if bytes == self.body => {}
            Ok(_) => return Ok(Release::NotOurs),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Release::Missing),
            Err(e) => return Err(FsError::io("read lock", &self.path, e)),
        }
        // Compare after moving aside, so a lock that changed hands since the read above is
        // never deleted.
        let aside = with_suffix(&self.path, &format!(".release.{}", self.holder.nonce));
        match fs::rename(&self.path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Release::Missing),
            Err(e) => return Err(FsError::io("rename lock aside", &self.path, e)),
        }
        let moved = read_body(&aside).map_err(|e| FsError::io("read lock", &aside, e))?;
        if moved == self.body {
            fs::remove_file(&aside).map_err(|e| FsError::io("remove lock", &aside, e))?;
            Ok(Release::Removed)
        } else {
            put_back(&aside, &self.path, &moved)?;
            Ok(Release::NotOurs)
        }
    }
}

impl Drop for ExclusiveFileLock {
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            // Errors cannot be reported from drop; call `release` to see them.
            let _ = self.release_once();
        }
    }
}

/// Creates the lock file with `O_EXCL` and writes `body`; `false` if it already exists.
fn create_lock(path: &Path, body: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(FsError::io("create lock", path, e)),
    };
    if let Err(e) = file.write_all(body).and_then(|()| file.sync_all()) {
        // The file is ours and half-written: remove it rather than leave a lock that only the
        // TTL would clear.
        let _ = fs::remove_file(path);
        return Err(FsError::io("write lock", path, e));
    }
    Ok(true)
}

/// Reads the current lock through one descriptor, so body, inode and mtime belong together;
/// `None` if there is no lock file.
fn observe(path: &Path) -> Result<Option<Observed>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::io("open lock", path, e)),
    };
    let meta = file.metadata().map_err(|e| FsError::io("fstat lock", path, e))?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(HOLDER_BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::io("read lock", path, e))?;
    Ok(Some(Observed { bytes, ino: meta.ino(), mtime_unix_s: u64::try_from(meta.mtime()).unwrap_or(0) }))
}

/// Puts a lock that was moved aside by mistake back, unless another lock took its place.
fn put_back(aside: &Path, path: &Path, moved: &[u8]) -> Result<()> {
    // `link` never replaces an existing name (a `rename` would destroy the newcomer's lock).
    let linked = fs::hard_link(aside, path);
    let _ = fs::remove_file(aside);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(FsError::LockConflict {
            path: path.to_owned(),
            detail: format!(
                "the lock of {} was moved aside and another lock appeared before it could be put back",
                describe_body(moved)
            ),
        }),
        Err(e) => Err(FsError::io("link lock back", path, e)),
    }
}

fn busy(path: &Path, holder: String) -> FsError {
    FsError::LockBusy { path: path.to_owned(), holder, waited_ms: 0 }
}

/// The right to steal one observed lock body; removed on drop.
struct Claim {
    path: PathBuf,
}

impl Claim {
    /// `None` if another stealer holds a live claim (a claim older than [`CLAIM_TTL_S`] is
    /// removed, and the caller still gets `None`: the next attempt proceeds).
    fn take(path: &Path, now_unix_s: u64) -> Result<Option<Self>> {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => Ok(Some(Self { path: path.to_owned() })),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if let Ok(mtime) = mtime_unix_s(path)
                    && is_stale(mtime, CLAIM_TTL_S, now_unix_s)
                {
                    let _ = fs::remove_file(path);
                }
                Ok(None)
            }
            Err(e) => Err(FsError::io("create steal claim", path, e)),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A claim left behind only delays the next steal by CLAIM_TTL_S.
        let _ = fs::remove_file(&self.path);
    }
}
