//! Following a journal as it grows, for a live view of the fleet (`keel top`): the whole lines
//! appended since the last look, at most a budget of bytes per look; the records such a view
//! shows beyond the live set (grants and refusals); and what a live lease's expiry verdict means
//! to the person watching.
//!
//! It reads without a lock and writes nothing. The live set, its verdicts and whether grants are
//! stopped come from [`crate::LeaseBackend::live_view`], whose fold already resumes where it
//! left off; this module only adds the records that fold to nothing (a `REFUSE`) or whose time
//! the live set forgets (when each grant was made).

use std::io;
use std::path::{Path, PathBuf};

use keel_fs::seam::{FileStat, read_range};
use keel_fs::{FsError, OsStorage, Storage};
use keel_kernel::Object;
use keel_kernel::expiry::{Verdict, format_utc, grace_s, parse_utc};
use keel_kernel::record::COUNTER_MAX;
use serde_json::Value;

use crate::service::{JournalOptions, LiveLease};

/// A journal file followed by byte offset: each [`poll`](Self::poll) reads only what was appended
/// since the last one, and only whole lines (a record still being written has no `\n` yet and is
/// read again next time).
pub struct Follower {
    path: PathBuf,
    storage: OsStorage,
    /// The file followed, with its device and inode: a rename over the path (compaction) is a
    /// new file, whatever its length.
    file: Option<(<OsStorage as Storage>::File, u64, u64)>,
    /// The start of the first line not yet handed out.
    offset: u64,
    /// Inside a line longer than a poll's budget: its bytes are dropped up to its `\n`.
    skipping: bool,
}

/// What one [`Follower::poll`] read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Whole lines, each ending with `\n`.
    pub bytes: Vec<u8>,
    /// The file is not the one the last poll read (replaced by compaction, cut shorter, removed or
    /// recreated): `bytes` start at its first byte, and what was read before described a file that
    /// is gone.
    pub restarted: bool,
    /// Whether this poll reached the end of the file (false: the budget ran out; poll again).
    pub caught_up: bool,
    /// Lines longer than the budget that were dropped unread (the journal's own fold reads them
    /// as damage; a view has no use for them).
    pub skipped_long_lines: u64,
}

impl Follower {
    /// Follows the journal at `path` from its first byte. Nothing is read until the first poll; a
    /// missing journal reads as an empty one.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), storage: OsStorage, file: None, offset: 0, skipping: false }
    }

    /// The offset of the first byte not yet handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The whole lines appended since the last poll, at most `bytes_max` bytes of the file read
    /// (at least 1).
    pub fn poll(&mut self, bytes_max: u64) -> Result<Appended, FsError> {
        let bytes_max = bytes_max.max(1);
        let mut appended = Appended::default();
        let Some(stat) = self.path_stat()? else {
            appended.restarted = self.file.take().is_some() && self.offset > 0;
            self.offset = 0;
            self.skipping = false;
            appended.caught_up = true;
            return Ok(appended);
        };
        let same = matches!(&self.file, Some((_, dev, ino)) if (*dev, *ino) == (stat.dev, stat.ino));
        if !same || stat.len < self.offset {
            appended.restarted = self.offset > 0;
            let file = self.storage.open_read(&self.path).map_err(|e| FsError::io("open", &self.path, e))?;
            // The file opened may not be the one just stat'ed (a rename in between): follow it as
            // what it is.
            let opened = self.storage.file_stat(&file).map_err(|e| FsError::io("stat", &self.path, e))?;
            self.file = Some((file, opened.dev, opened.ino));
            self.offset = 0;
            self.skipping = false;
        }
        let (file, _, _) = self.file.as_ref().expect("a file is open once the path exists");
        let len = self.storage.file_stat(file).map_err(|e| FsError::io("stat", &self.path, e))?.len;
        let available = len.saturating_sub(self.offset);
        let want = available.min(bytes_max);
        let mut bytes =
            read_range(&self.storage, file, self.offset, want, want).map_err(|e| FsError::io("read", &self.path, e))?;
        appended.caught_up = available <= bytes_max;
        if self.skipping {
            let Some(end) = memchr::memchr(b'\n', &bytes) else {
                self.offset += bytes.len() as u64;
                return Ok(appended);
            };
            bytes.drain(..=end);
            self.offset += end as u64 + 1;
            self.skipping = false;
        }
        match memchr::memrchr(b'\n', &bytes) {
            Some(last) => bytes.truncate(last + 1),
            // A line longer than the whole budget would be waited for forever: drop it.
            None if want == bytes_max && bytes.len() as u64 == bytes_max => {
                self.offset += bytes.len() as u64;
                self.skipping = true;
                appended.skipped_long_lines += 1;
                bytes.clear();
            }
            None => bytes.clear(),
        }
        self.offset += bytes.len() as u64;
        appended.bytes = bytes;
        Ok(appended)
    }

    fn path_stat(&self) -> Result<Option<FileStat>, FsError> {
        match self.storage.path_stat(&self.path) {
            Ok(stat) => Ok(Some(stat)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::io("stat", &self.path, e)),
        }
    }
}

/// A record a view of the fleet shows beyond the live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    /// An `ACQUIRE`: a lease was granted.
    Grant {
        /// Its `seq`, if it carries one keel could have written.
        seq: Option<u64>,
        /// When it was written (`ts`), seconds since the Unix epoch.
        at_unix_s: Option<i64>,
        /// Who was granted it.
        holder: String,
        /// On which lane.
        lane: String,
    },
    /// A `REFUSE`: a request the arbiter turned down.
    Refusal(Refused),
    /// A `CHECKPOINT`: the first record of a compacted journal, which numbers the records after it
    /// above `seq_watermark`.
    Checkpoint {
        /// The largest `seq` the compacted journal held.
        seq_watermark: Option<u64>,
    },
}

impl Noted {
    /// The record's `seq`, if it has one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Noted::Grant { seq, .. } => *seq,
            Noted::Refusal(refused) => refused.seq,
            Noted::Checkpoint { .. } => None,
        }
    }
}

/// What a `REFUSE` record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its `seq`, if it carries one keel could have written.
    pub seq: Option<u64>,
    /// When it was written (`ts`), seconds since the Unix epoch.
    pub at_unix_s: Option<i64>,
    /// Who asked (the request's owner).
    pub requester: String,
    /// The lane asked for (`edit:<path>` for an agent's edit that `keel hook` leased for it).
    pub lane: String,
    /// The arbiter's reason.
    pub reason: String,
    /// The arbiter's class of refusal.
    pub reason_class: Option<String>,
    /// The holder of the lease in the way, as the reason names it: a `REFUSE` record carries no
    /// member for it. `None` when the reason names no holder (a protected path, a budget of 0).
    pub blocker: Option<String>,
}

/// The record on `line`, if it is one a view of the fleet shows. Heartbeats and releases, most
/// of a journal, are passed over without being parsed.
pub fn noted(line: &[u8]) -> Option<Noted> {
    let wanted = [&b"ACQUIRE"[..], b"REFUSE", b"CHECKPOINT"];
    if !wanted.iter().any(|op| memchr::memmem::find(line, op).is_some()) {
        return None;
    }
    let record: Object = serde_json::from_slice(line).ok()?;
    let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_owned);
    let counter = |key: &str| record.get(key).and_then(Value::as_u64).filter(|&n| n <= COUNTER_MAX);
    let at_unix_s = text("ts").as_deref().and_then(parse_utc);
    match record.get("op").and_then(Value::as_str)? {
        "ACQUIRE" => {
            let holder = record.get("lease").and_then(|lease| lease.get("holder")).and_then(Value::as_str);
            Some(Noted::Grant {
                seq: counter("seq"),
                at_unix_s,
                holder: holder.unwrap_or_default().to_owned(),
                lane: text("lane").unwrap_or_default(),
            })
        }
        "REFUSE" => {
            let reason = text("reason").unwrap_or_default();
            Some(Noted::Refusal(Refused {
                seq: counter("seq"),
                at_unix_s,
                requester: text("holder").unwrap_or_default(),
                lane: text("lane").unwrap_or_default(),
                blocker: blocker_in(&reason),
                reason,
                reason_class: text("reason_class"),
            }))
        }
        "CHECKPOINT" => Some(Noted::Checkpoint { seq_watermark: counter("seq_watermark") }),
        _ => None,
    }
}

/// The first holder a refusal's reason names: the arbiter writes a blocking lease as
/// `lane "…" (kind "…", loop_ts "…", holder "…", mode)`, every name quoted as Rust's `{:?}`
/// does, so an unescaped `, holder "` can only open that member.
fn blocker_in(reason: &str) -> Option<String> {
    const OPENING: &str = ", holder \"";
    let start = reason.find(OPENING)? + OPENING.len();
    let mut holder = String::new();
    let mut chars = reason[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(holder),
            '\\' => match chars.next()? {
                'n' => holder.push('\n'),
                't' => holder.push('\t'),
                'r' => holder.push('\r'),
                '0' => holder.push('\0'),
                'u' => {
                    // `\u{hex}`
                    let rest: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let code = u32::from_str_radix(rest.trim_start_matches('{'), 16).ok()?;
                    holder.push(char::from_u32(code)?);
                }
                other => holder.push(other),
            },
            c => holder.push(c),
        }
    }
    None
}

/// A journal timestamp (RFC 3339) as seconds since the Unix epoch, as expiry reads it.
pub fn stamp_unix_s(text: &str) -> Option<i64> {
    parse_utc(text)
}

/// Seconds since the Unix epoch as a journal timestamp (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn stamp(unix_s: i64) -> String {
    format_utc(unix_s)
}

/// What a live lease's expiry verdict means to the person watching the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Standing {
    /// Beaten (or granted) within its grace.
    Alive,
    /// Not beaten within its grace, but not provably dead: its TTL has not passed, and its holder
    /// process is not known to be gone.
    Idle,
    /// Past its grace, and its holder process is gone: the next colliding request reclaims it.
    HolderGone,
    /// A stamp too far ahead of this host's clock was not believed (see the verdict for whether
    /// the lease is reclaimable on its other evidence).
    ClockSkew,
    /// Past its TTL, or with no readable time at all: the next colliding request reclaims it.
    Reclaimable,
}

impl Standing {
    /// The word a view shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Alive => "alive",
            Standing::Idle => "idle",
            Standing::HolderGone => "holder gone",
            Standing::ClockSkew => "clock skew",
            Standing::Reclaimable => "reclaimable",
        }
    }
}

/// `lease`'s standing, from the verdict the service gave it and the grace it was granted with.
pub fn standing(options: &JournalOptions, lease: &LiveLease) -> Standing {
    match lease.verdict {
        Verdict::Alive { idle_s, .. } if idle_s > grace_s(&lease.lease, &options.expiry) => Standing::Idle,
        Verdict::Alive { .. } => Standing::Alive,
        Verdict::HolderGone { .. } => Standing::HolderGone,
        Verdict::ClockSkew { .. } => Standing::ClockSkew,
        Verdict::Expired { .. } | Verdict::NoTimestamp => Standing::Reclaimable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open for append");
        file.write_all(bytes).expect("append");
    }

    #[test]
    fn a_line_still_being_written_is_handed_out_only_once_its_newline_arrives() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        let mut follower = Follower::new(&path);
        assert_eq!(follower.poll(1024).expect("poll"), Appended { caught_up: true, ..Appended::default() });
        append(&path, b"{\"op\": \"A\"}\n{\"op\": \"B");
        let first = follower.poll(1024).expect("poll");
        assert_eq!(first.bytes, b"{\"op\": \"A\"}\n");
        assert!(first.caught_up && !first.restarted);
        assert!(follower.poll(1024).expect("poll").bytes.is_empty(), "the fragment waits");
        append(&path, b"\"}\n");
        assert_eq!(follower.poll(1024).expect("poll").bytes, b"{\"op\": \"B\"}\n");
        assert_eq!(follower.offset(), std::fs::metadata(&path).expect("stat").len());
    }

    #[test]
    fn a_poll_reads_at_most_its_budget_and_says_when_it_has_not_caught_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        append(&path, "0123456789\n".repeat(10).as_bytes());
        let mut follower = Follower::new(&path);
        let first = follower.poll(25).expect("poll");
        assert_eq!(first.bytes.len(), 22, "two whole lines of 11 bytes fit in 25");
        assert!(!first.caught_up);
        let mut total = first.bytes.len();
        loop {
            let next = follower.poll(25).expect("poll");
            total += next.bytes.len();
            if next.caught_up {
                break;
            }
        }
        assert_eq!(total, 110);
    }

    #[test]
    fn a_line_longer_than_the_budget_is_dropped_and_the_lines_after_it_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        append(&path, format!("{}\nnext\n", "x".repeat(100)).as_bytes());
        let mut follower = Follower::new(&path);
        let mut lines = Vec::new();
        let mut skipped = 0;
        for _ in 0..20 {
            let polled = follower.poll(16).expect("poll");
            lines.extend(polled.bytes);
            skipped += polled.skipped_long_lines;
        }
        assert_eq!(lines, b"next\n");
        assert_eq!(skipped, 1);
    }

    #[test]
    fn a_journal_replaced_by_rename_or_cut_shorter_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        append(&path, b"old 1\nold 2\n");
        let mut follower = Follower::new(&path);
        assert_eq!(follower.poll(1024).expect("poll").bytes, b"old 1\nold 2\n");
        // Compaction: a new file renamed over the journal, here longer than the old one.
        let temp = dir.path().join("journal.tmp");
        std::fs::write(&temp, b"compacted 1\ncompacted 2\n").expect("write");
        std::fs::rename(&temp, &path).expect("rename");
        let after = follower.poll(1024).expect("poll");
        assert!(after.restarted);
        assert_eq!(after.bytes, b"compacted 1\ncompacted 2\n");
        // The same file cut shorter than what was read.
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(4).expect("truncate");
        append(&path, b"\n");
        let cut = follower.poll(1024).expect("poll");
        assert!(cut.restarted);
        assert_eq!(cut.bytes, b"comp\n");
        // Removed, then made again by the next grant.
        std::fs::remove_file(&path).expect("remove");
        assert!(follower.poll(1024).expect("poll").restarted);
        append(&path, b"new\n");
        let new = follower.poll(1024).expect("poll");
        assert!(!new.restarted, "nothing had been read of it");
        assert_eq!(new.bytes, b"new\n");
    }

    #[test]
    fn a_refusal_names_who_asked_and_the_holder_in_the_way() {
        let line = br#"{"op": "REFUSE", "holder": "agent-b", "lane": "edit:src/api/x.rs", "reason": "requested exclusive entry \"src/api/x.rs\" collides with \"src/api/\" held by lane \"api\" (kind \"keyword\", loop_ts \"t\", holder \"agent \\\"a\\\"\", exclusive); the holder is not reclaimable: alive, idle 3s (grace 120s)", "reason_class": "region_conflict", "seq": 7, "ts": "2026-01-01T00:00:10Z"}"#;
        let Some(Noted::Refusal(refused)) = noted(line) else { panic!("a refusal") };
        assert_eq!(refused.requester, "agent-b");
        assert_eq!(refused.blocker.as_deref(), Some("agent \"a\""));
        assert_eq!(refused.lane, "edit:src/api/x.rs");
        assert_eq!(refused.seq, Some(7));
        assert_eq!(refused.at_unix_s, stamp_unix_s("2026-01-01T00:00:10Z"));
        assert_eq!(blocker_in("requested entry \"a\" covers protected path \"a\""), None);
        assert_eq!(noted(br#"{"op": "HEARTBEAT", "lane": "ACQUIRE"}"#), None);
        assert_eq!(noted(b"ACQUIRE but not json"), None);
        assert_eq!(
            noted(br#"{"op": "CHECKPOINT", "leases": [], "seq_watermark": 41}"#),
            Some(Noted::Checkpoint { seq_watermark: Some(41) })
        );
    }

    #[test]
    fn a_lease_past_its_grace_but_not_dead_is_idle_and_the_rest_follow_the_verdict() {
        let options = JournalOptions::default();
        let Value::Object(body) = serde_json::json!({"grace_s": 60}) else { unreachable!() };
        let lease = |verdict| LiveLease {
            identity: keel_kernel::Identity { loop_ts: "t".into(), lane: "l".into() },
            lease: body.clone(),
            generation: Some(1),
            verdict,
        };
        let cases = [
            (Verdict::Alive { idle_s: 60, ttl_s: 600 }, Standing::Alive),
            (Verdict::Alive { idle_s: 61, ttl_s: 600 }, Standing::Idle),
            (Verdict::HolderGone { idle_s: 61 }, Standing::HolderGone),
            (Verdict::ClockSkew { stamp_unix_s: 9, idle_s: None, dead: true }, Standing::ClockSkew),
            (Verdict::Expired { idle_s: 601, ttl_s: 600 }, Standing::Reclaimable),
            (Verdict::NoTimestamp, Standing::Reclaimable),
        ];
        for (verdict, expected) in cases {
            assert_eq!(standing(&options, &lease(verdict)), expected, "{verdict:?}");
        }
    }
}
