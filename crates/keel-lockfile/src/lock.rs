//! Waiting for the sidecar-directory lock with a bound: retry with jittered backoff until a
//! timeout, reclaiming a stale lock on the way (keel-fs does the reclaim, at most once per try).

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::time::{Duration, Instant};

use keel_fs::lock::unix_now_s;
use keel_fs::{FsError, SidecarDirLock};

/// The longest pause between two attempts, in milliseconds. Attempts start 1 ms apart and double,
/// with jitter so that writers woken together do not retry in lockstep.
pub const LOCK_BACKOFF_MS_MAX: u64 = 16;

/// Takes the sidecar lock on `path` for `owner`, waiting at most `timeout_ms`; a holder older
/// than `stale_ttl_s` is reclaimed. [`FsError::LockBusy`] (with the time waited and the holder)
/// after the deadline.
pub fn acquire_sidecar(path: &Path, owner: &str, stale_ttl_s: u64, timeout_ms: u64) -> Result<SidecarDirLock, FsError> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(timeout_ms);
    let jitter = RandomState::new();
    let mut backoff_ms = 1;
    let mut attempt: u64 = 0;
    loop {
        match SidecarDirLock::try_acquire(path, owner, stale_ttl_s, unix_now_s()) {
            Ok(lock) => return Ok(lock),
            Err(FsError::LockBusy { path, holder, .. }) => {
                let now = Instant::now();
                if now >= deadline {
                    let waited_ms = u64::try_from(now.duration_since(started).as_millis()).unwrap_or(u64::MAX);
                    return Err(FsError::LockBusy { path, holder, waited_ms });
                }
                attempt += 1;
                // Sleep between half the backoff and the whole of it.
                let sleep_us = backoff_ms * 500 + jitter.hash_one(attempt) % (backoff_ms * 500 + 1);
                std::thread::sleep(Duration::from_micros(sleep_us).min(deadline - now));
                backoff_ms = (backoff_ms * 2).min(LOCK_BACKOFF_MS_MAX);
            }
            Err(other) => return Err(other),
        }
    }
}
