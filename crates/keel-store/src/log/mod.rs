//! A JSON-lines log whose records carry contiguous keys (event ids 1, 2, 3, ... or transcript
//! sequence numbers 0, 1, 2, ...), with a sidecar offset index so that a read seeks near its
//! start instead of parsing the log from the beginning.
//!
//! # Lines
//! Line meaning follows the kernel's [`keel_kernel::line`] classification: an unparseable line
//! is corrupt when another line follows it and the torn tail of an interrupted append when it is
//! the last line. An unterminated final line is torn as well, whatever it holds, because a record
//! is acknowledged only after its `\n` is durable. A complete line that is JSON but not a valid
//! record, or whose key is not the next one, is corrupt wherever it is.
//!
//! # Index
//! `<log>.idx` holds fixed-width entries `(key: u64 LE, byte offset: u64 LE)`, entry `i` for key
//! `first_key + i * INDEX_EVERY_RECORDS`, at byte `16 * i`. It is derived data: written at the
//! index's end after the record is durable (no fsync: a lost or damaged entry is found and
//! rewritten from the log), and every entry is checked against the record it points to before
//! it is trusted. A reader with no usable entry scans from the start of the log: slower, never
//! wrong.
//!
//! # I/O
//! Every file operation goes through the [`Storage`] seam that the caller passes in.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use keel_fs::Storage;
use serde::de::DeserializeOwned;

use crate::error::{Result, StoreError};

mod index;
mod scanner;

pub use scanner::Scanner;

/// One index entry per this many records.
pub const INDEX_EVERY_RECORDS: u64 = 64;

/// Bytes per index entry: key and offset, both `u64` little-endian.
pub const INDEX_ENTRY_BYTES: u64 = 16;

/// How many index entries, walking back from the one wanted, are tried before a read falls back
/// to scanning the whole log.
const LOCATE_ATTEMPTS_MAX: u32 = 4;

/// How much of a torn tail is kept as evidence in a diagnostic.
pub const TORN_EXCERPT_BYTES_MAX: usize = 256;

/// A record with a key.
pub trait Keyed {
    /// The record's key: its event id or transcript sequence number.
    fn key(&self) -> u64;
}

/// A log file, its index file and the key of its first record.
#[derive(Debug, Clone)]
pub struct Log {
    /// The JSON-lines file.
    pub path: PathBuf,
    /// The sidecar index.
    pub index_path: PathBuf,
    /// The key of the first record (1 for events, 0 for transcripts).
    pub first_key: u64,
    /// The longest line accepted when reading.
    pub line_bytes_max: usize,
}

/// An unterminated or unparseable last line: an append that never completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Where it starts.
    pub offset: u64,
    /// Its length, through the end of the file.
    pub bytes: u64,
    /// Its 1-based line number.
    pub line: u64,
    /// Its first bytes, lossily decoded.
    pub excerpt: String,
}

/// A complete line that is not a record: damage. Keys are contiguous, so it stands for the
/// record with key `key`; the records around it still read, and appends wait for a review
/// ([`crate::FsRuntimeStore::review`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Its 1-based line number.
    pub line: u64,
    /// The key of the record it stands for.
    pub key: u64,
    /// Its first bytes, lossily decoded.
    pub excerpt: String,
    /// BLAKE3 of the whole line: a review excuses this line with exactly this text.
    pub raw_blake3: String,
}

/// What a scan to the end of a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The key the next record gets.
    pub next_key: u64,
    /// The offset just past the last valid record.
    pub valid_end: u64,
    /// The torn tail after it, if any.
    pub torn: Option<Torn>,
    /// The damaged lines the scan passed (it may have started past earlier ones).
    pub damage: Vec<Damage>,
    /// The file's identity, and the length the scan read through.
    pub identity: FileIdentity,
}

/// Device, inode and length: enough to tell whether a log changed since it was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Length in bytes.
    pub len: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` in `storage`.
    pub fn of<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<Self> {
        let stat = storage.path_stat(path).map_err(|e| missing_or_io(op, path, e))?;
        Ok(Self { dev: stat.dev, ino: stat.ino, len: stat.len })
    }
}

/// `Missing` for a missing file, `Fs` otherwise.
pub fn missing_or_io(op: &'static str, path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::NotFound {
        StoreError::Missing { op, path: path.to_owned(), runtime_id: None, worker_id: None }
    } else {
        StoreError::io(op, path, e)
    }
}

/// One step of a scan.
#[derive(Debug)]
pub enum Step<R> {
    /// A valid record.
    Record {
        /// The record.
        record: R,
        /// Its 1-based line number.
        line: u64,
        /// Where it starts.
        offset: u64,
        /// Where the next line starts.
        end: u64,
    },
    /// A complete line that is not a record, standing for one key.
    Damaged(Damage),
    /// The torn tail: nothing valid follows.
    Torn(Torn),
    /// The end of the file.
    End,
}

impl Log {
    /// Whether `key` gets an index entry, and which.
    pub fn entry_for(&self, key: u64) -> Option<u64> {
        let ordinal = key - self.first_key;
        ordinal.is_multiple_of(INDEX_EVERY_RECORDS).then_some(ordinal / INDEX_EVERY_RECORDS)
    }

    /// A scanner positioned at the indexed record nearest before `key`, checked against the log,
    /// and how many index entries are known good (those before and including the one used).
    pub fn scanner_near<R: DeserializeOwned + Keyed, S: Storage + Clone>(
        &self,
        storage: &S,
        key: u64,
        op: &'static str,
    ) -> Result<(Scanner<R, S>, u64)> {
        let count = self.index_entries(storage, op)?;
        if count > 0 {
            let file = storage.open_read(&self.index_path).map_err(|e| StoreError::io(op, &self.index_path, e))?;
            let wanted = (key.max(self.first_key) - self.first_key) / INDEX_EVERY_RECORDS;
            let mut entry = Some(wanted.min(count - 1));
            for _ in 0..LOCATE_ATTEMPTS_MAX {
                let Some(i) = entry else { break };
                if let Some((stored_key, offset)) = self.read_entry(storage, &file, i, op)?
                    && stored_key == self.first_key + i * INDEX_EVERY_RECORDS
                    && let Ok(mut scanner) = Scanner::<R, S>::open(storage, self, offset, stored_key, op)
                    && matches!(scanner.peek(op), Ok(Step::Record { .. }))
                {
                    return Ok((scanner, i + 1));
                }
                entry = i.checked_sub(1);
            }
        }
        Ok((Scanner::open(storage, self, 0, self.first_key, op)?, 0))
    }

    /// Scans from the last good index entry to the end, calling `visit` on each record, and
    /// writes the index entries that were missing. Reads at most `INDEX_EVERY_RECORDS` records
    /// plus whatever the index is behind by.
    pub fn scan_tail<R: DeserializeOwned + Keyed, S: Storage + Clone>(
        &self,
        storage: &S,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<Tail> {
        let (scanner, good_entries) = self.scanner_near::<R, S>(storage, u64::MAX, op)?;
        self.finish_scan(storage, scanner, good_entries, 0, op, visit)
    }

    /// Scans from a known valid position (`offset`, where key `key` starts) to the end.
    pub fn scan_from<R: DeserializeOwned + Keyed, S: Storage + Clone>(
        &self,
        storage: &S,
        offset: u64,
        key: u64,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<Tail> {
        let scanner = Scanner::<R, S>::open(storage, self, offset, key, op)?;
        self.finish_scan(storage, scanner, 0, offset, op, visit)
    }

    fn finish_scan<R: DeserializeOwned + Keyed, S: Storage + Clone>(
        &self,
        storage: &S,
        mut scanner: Scanner<R, S>,
        good_entries: u64,
        start_offset: u64,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<Tail> {
        let mut valid_end = start_offset;
        let mut new_entries: Vec<(u64, u64)> = Vec::new();
        let mut first_new_entry = None;
        let mut damage = Vec::new();
        let torn = loop {
            match scanner.next(op)? {
                Step::Damaged(found) => damage.push(found),
                Step::Record { record, line, offset, end } => {
                    visit(&record, line)?;
                    if let Some(entry) = self.entry_for(record.key())
                        && entry >= good_entries
                    {
                        first_new_entry.get_or_insert(entry);
                        new_entries.push((record.key(), offset));
                    }
                    valid_end = end;
                }
                Step::Torn(torn) => break Some(torn),
                Step::End => break None,
            }
        };
        if let Some(first_entry) = first_new_entry {
            // Derived data: a failure here leaves the index behind, which the next scan repairs.
            let _ = self.write_index(storage, first_entry, &new_entries, op);
        }
        Ok(Tail { next_key: scanner.next_key(), valid_end, torn, damage, identity: scanner.seen() })
    }

    /// Cuts a torn tail off: truncates the log to `valid_end` and makes that durable.
    pub fn truncate<S: Storage>(&self, storage: &S, valid_end: u64, op: &'static str) -> Result<()> {
        let io = |e| StoreError::io(op, &self.path, e);
        let file = storage.open_write(&self.path).map_err(io)?;
        storage.set_len(&file, valid_end).map_err(io)?;
        storage.sync_all(&file).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use keel_fs::OsStorage;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Rec {
        k: u64,
    }

    impl Keyed for Rec {
        fn key(&self) -> u64 {
            self.k
        }
    }

    /// A scan's tail describes what the scan read, whatever the file holds by the time it is
    /// asked: the tail once carried a length stat-ed after the scan, which could include another
    /// writer's record, and the next append under the lock, trusting it, reused that record's key.
    #[test]
    fn a_scan_reports_the_length_it_read_not_the_length_the_file_has_grown_to() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, b"{\"k\":1}\n{\"k\":2}\n").expect("write");
        let log =
            Log { path: path.clone(), index_path: dir.path().join("events.idx"), first_key: 1, line_bytes_max: 1024 };
        let mut scanner = Scanner::<Rec>::open(&OsStorage, &log, 0, 1, "test").expect("open");
        while !matches!(scanner.next("test").expect("scan"), Step::End) {}
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"k\":3}\n"))
            .expect("another writer appends");
        let seen = scanner.seen();
        assert_eq!(seen.len, 16, "{seen:?}");
        assert_eq!(scanner.next_key(), 3);
        assert_ne!(
            seen,
            FileIdentity::of(&OsStorage, &path, "test").expect("stat"),
            "the grown file no longer matches"
        );
    }
}
