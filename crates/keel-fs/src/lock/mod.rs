//! Three locks, named by what they can do.
//!
//! - [`OsLock`]: the default writer lock. An `flock` on a dedicated lock file
//!   (`<journal>.lock`); the kernel releases it when the holder dies, however it dies. Try,
//!   blocking and timeout forms. Use it wherever the file system's locks are honest (local disks).
//! - [`ExclusiveFileLock`]: an `O_EXCL` lock file whose JSON body names its holder, for file
//!   systems where OS locks lie (NFS). Nothing releases it when the holder dies, so a lock older
//!   than a TTL may be stolen, by a rename-based compare-and-swap on the exact body observed.
//! - [`SidecarDirLock`]: `mkdir <path>.lock/` plus a holder file inside, the protocol other tools
//!   speak. Stale reclaim at most once per acquire; release at most once, and only of our own lock.
//!
//! # Limitations
//! The two file-based locks judge staleness by wall clocks (the holder's, written in the body,
//! against the caller's `now`): hosts whose clocks disagree by more than the TTL can steal live
//! locks. A holder that outlives its TTL (stopped, swapped out) may find its lock stolen; it can
//! ask [`ExclusiveFileLock::is_still_held`] before a critical step, but there is no fencing here:
//! fence with the journal's generations. Both file-based locks move a lock aside with `rename`
//! to compare it; if what was moved turns out not to be the lock observed (its holder released
//! and a newcomer took it within those microseconds), it is put back with a no-replace link or
//! rename, and if yet another lock appeared meanwhile the call fails with
//! [`crate::FsError::LockConflict`] and the displaced holder has lost its lock.

mod exclusive;
mod holder;
mod os;
mod sidecar;

pub use exclusive::{CLAIM_TTL_S, ExclusiveFileLock};
pub use holder::{
    HOLDER_BODY_BYTES_MAX, Holder, OWNER_BYTES_MAX, ProcStat, Release, host_name, is_stale, process_start_ticks,
    process_stat, unix_now_s,
};
pub use os::{LOCK_POLL_BACKOFF_MS_MAX, OsLock, ReusableLock, ReusableLockGuard};
pub use sidecar::{HOLDER_FILE_NAME, SidecarDirLock};
