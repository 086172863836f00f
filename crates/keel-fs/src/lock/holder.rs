//! The JSON body that names a lock's holder, shared by the file-based locks.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{FsError, Result};
use crate::nonce::nonce_hex;

/// The longest owner name accepted, in bytes.
pub const OWNER_BYTES_MAX: usize = 256;

/// The most bytes of a lock body that are read; a longer body is unparsable (and so judged by
/// its file's age), never an unbounded allocation.
pub const HOLDER_BODY_BYTES_MAX: usize = 4096;

/// Who holds a lock: written as one JSON object into the lock file (or holder file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Free-form name the acquirer chose (an agent id, `"keel journal"`, ...).
    pub owner: String,
    /// Process id of the acquirer.
    pub pid: u32,
    /// Host name of the acquirer.
    pub host: String,
    /// When the lock was taken, seconds since the Unix epoch, by the acquirer's clock.
    pub acquired_unix_s: u64,
    /// 128 random bits in hex: tells this acquisition apart from every other.
    pub nonce: String,
    /// The acquirer's start time (clock ticks since boot, from `/proc`): with the pid it names
    /// one process, so a holder provably gone from this host is reclaimed at once. Absent in
    /// bodies other tools write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

impl Holder {
    /// A new body for this process, with a fresh nonce.
    pub(crate) fn new(owner: &str, acquired_unix_s: u64, path: &Path) -> Result<Self> {
        if owner.len() > OWNER_BYTES_MAX {
            return Err(FsError::Invalid {
                path: path.to_owned(),
                reason: "lock owner name longer than OWNER_BYTES_MAX",
            });
        }
        Ok(Self {
            owner: owner.to_owned(),
            pid: std::process::id(),
            host: host_name(),
            acquired_unix_s,
            nonce: nonce_hex(),
            start_ticks: process_start_ticks(std::process::id()),
        })
    }

    /// Whether the holder is provably gone: it names this host, and no process runs with its pid
    /// (or one does with another start time). A holder on another host, or one whose process
    /// cannot be checked, is judged by the lock's age alone.
    pub fn is_gone(&self) -> bool {
        if self.host != host_name() || self.pid == 0 || !Path::new("/proc/self").exists() {
            return false;
        }
        match (process_start_ticks(self.pid), self.start_ticks) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }

    /// The body's bytes (one JSON object, no newline).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a body; `None` if it is not one (torn write, foreign format).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        let since = keel_kernel::expiry::format_utc(i64::try_from(self.acquired_unix_s).unwrap_or(i64::MAX));
        format!("{} (pid {} on {}, since {since})", self.owner, self.pid, self.host)
    }
}

/// Describes a body that may not parse.
pub(crate) fn describe_body(bytes: &[u8]) -> String {
    match Holder::parse(bytes) {
        Some(holder) => holder.describe(),
        None => format!("unknown (unparsable {}-byte body)", bytes.len()),
    }
}

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a release that found someone else's lock means ours was stolen"]
pub enum Release {
    /// Our lock was removed.
    Removed,
    /// This handle had already released; nothing was touched.
    AlreadyReleased,
    /// The lock now belongs to someone else (ours was stolen as stale); it was left alone.
    NotOurs,
    /// There was no lock any more.
    Missing,
}

/// Whether a lock taken at `acquired_unix_s` is older than `ttl_s` at `now_unix_s`. A time in
/// the future (clock skew) is not stale.
pub fn is_stale(acquired_unix_s: u64, ttl_s: u64, now_unix_s: u64) -> bool {
    now_unix_s.saturating_sub(acquired_unix_s) > ttl_s
}

/// What `/proc/<pid>/stat` says of a process: the one reader of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Its command name (field 2).
    pub name: String,
    /// Whether it has ended and waits to be reaped (state `Z`, `X`): it runs nothing.
    pub ended: bool,
    /// Its parent's pid.
    pub parent: u32,
    /// Its process group.
    pub group: u32,
    /// Its start time in clock ticks since boot (field 22): with the pid, it names one process
    /// even after the pid is reused.
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat` read, if there is such a process (Linux).
pub fn process_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        name,
        ended: matches!(fields.first(), Some(&("Z" | "X" | "x"))),
        parent: fields.get(1)?.parse().ok()?,
        group: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The start time of process `pid` ([`ProcStat::start_ticks`]); `None` when no such process
/// runs (none has the pid, or it ended and waits to be reaped: a zombie holds nothing).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    process_stat(pid).filter(|stat| !stat.ended).map(|stat| stat.start_ticks)
}

/// The system clock in seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// This host's name (`uname` nodename, as `/proc/sys/kernel/hostname` shows it), which lock
/// bodies and lease bodies record. One syscall, no file to open.
pub fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// Reads at most [`HOLDER_BODY_BYTES_MAX`] + 1 bytes of `path`.
pub(crate) fn read_body(path: &Path) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    File::open(path)?.take(HOLDER_BODY_BYTES_MAX as u64 + 1).read_to_end(&mut body)?;
    Ok(body)
}

/// Seconds since the Unix epoch of `path`'s modification time.
pub(crate) fn mtime_unix_s(path: &Path) -> io::Result<u64> {
    let modified = std::fs::symlink_metadata(path)?.modified()?;
    Ok(modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// `<path><suffix>` (appending to the file name, unlike `with_extension`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_strictly_older_than_ttl_and_future_times_are_fresh() {
        assert!(!is_stale(100, 10, 110));
        assert!(is_stale(100, 10, 111));
        assert!(!is_stale(200, 10, 100));
    }

    #[test]
    fn holder_body_round_trips_and_garbage_does_not_parse() {
        let holder = Holder::new("agent-7", 42, Path::new("x")).expect("short owner");
        assert_eq!(Holder::parse(&holder.to_bytes()), Some(holder));
        assert_eq!(Holder::parse(b"{\"owner\":"), None);
        assert!(Holder::new(&"x".repeat(OWNER_BYTES_MAX + 1), 0, Path::new("x")).is_err());
    }
}
