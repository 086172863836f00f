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
//! `first_key + i * INDEX_EVERY_RECORDS`, at byte `16 * i`. It is derived data: written with
//! positional writes after the record is durable (no fsync: a lost or damaged entry is found
//! and rewritten from the log), and every entry is checked against the record it points to
//! before it is trusted. A reader with no usable entry scans from the start of the log: slower,
//! never wrong.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use keel_fs::{FsError, LineReader};
use keel_kernel::line::{LineClass, LineDecoder, classify};
use rustix::fs::{Mode, OFlags};
use serde::de::DeserializeOwned;

use crate::error::{Result, StoreError};

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
    /// The identity of the file at `path`.
    pub fn of(path: &Path, op: &'static str) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| missing_or_io(op, path, e))?;
        Ok(Self { dev: meta.dev(), ino: meta.ino(), len: meta.len() })
    }
}

/// `Missing` for a missing file, `Fs` otherwise.
pub fn missing_or_io(op: &'static str, path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::NotFound {
        StoreError::Missing { op, path: path.to_owned() }
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

/// Reads records in order from a known position, checking each line and each key.
pub struct Scanner<R> {
    path: PathBuf,
    reader: LineReader<File>,
    decoder: LineDecoder,
    /// 1-based line number of the first line this scanner reads.
    first_line: u64,
    next_key: u64,
    /// Offset and length of the unparseable line held back by the decoder.
    held: Option<(u64, u64)>,
    peeked: Option<Step<R>>,
    /// The line read after a held unparseable line (which it proved damage), to be taken next:
    /// its bytes, offset, whether it ended with `\n`, its index and its line number.
    stash: Option<(Vec<u8>, u64, bool, u64, u64)>,
    /// Device and inode of the file this scanner reads.
    file_id: (u64, u64),
}

impl<R: DeserializeOwned + Keyed> Scanner<R> {
    /// A scanner at byte `offset` of `log`, where the record with key `key` starts.
    pub fn open(log: &Log, offset: u64, key: u64, op: &'static str) -> Result<Self> {
        let mut file = File::open(&log.path).map_err(|e| missing_or_io(op, &log.path, e))?;
        let meta = file.metadata().map_err(|e| StoreError::io(op, &log.path, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| StoreError::io(op, &log.path, e))?;
        let reader = LineReader::new(file, &log.path, offset).with_line_bytes_max(log.line_bytes_max);
        Ok(Self {
            path: log.path.clone(),
            reader,
            decoder: LineDecoder::new(),
            first_line: key - log.first_key + 1,
            next_key: key,
            held: None,
            peeked: None,
            stash: None,
            file_id: (meta.dev(), meta.ino()),
        })
    }

    /// The file as this scanner has read it: its device and inode, and the length it read
    /// through. Never a length read afterwards, which could count another writer's record the
    /// scan did not see.
    fn seen(&self) -> FileIdentity {
        FileIdentity { dev: self.file_id.0, ino: self.file_id.1, len: self.reader.offset() }
    }

    /// The key of the record the next call to [`next`](Self::next) returns (if it returns one).
    pub fn next_key(&self) -> u64 {
        match &self.peeked {
            Some(Step::Record { record, .. }) => record.key(),
            _ => self.next_key,
        }
    }

    /// The next step without consuming it.
    pub fn peek(&mut self, op: &'static str) -> Result<&Step<R>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read(op)?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    /// The next step.
    pub fn next(&mut self, op: &'static str) -> Result<Step<R>> {
        match self.peeked.take() {
            Some(step) => Ok(step),
            None => self.read(op),
        }
    }

    /// Skips one complete line without parsing it (the caller checks the key of a later record,
    /// which proves the count right). Returns false at the end of the valid log.
    pub fn skip(&mut self, op: &'static str) -> Result<bool> {
        if let Some(step) = self.peeked.take() {
            if matches!(step, Step::Record { .. }) {
                return Ok(true);
            }
            self.peeked = Some(step);
            return Ok(false);
        }
        let line_number = self.first_line + self.decoder.lines_seen();
        let line = match self.reader.next_line() {
            Ok(line) => line,
            Err(e) => return Err(fs_error(&self.path, op, e, line_number)),
        };
        match line {
            Some(line) if line.terminated => {
                self.decoder.start_line();
                self.next_key += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn read(&mut self, op: &'static str) -> Result<Step<R>> {
        loop {
            if let Some((bytes, offset, terminated, index, line_number)) = self.stash.take() {
                let mut fields = self.fields();
                if let Some(step) = fields.classify_line(&bytes, offset, terminated, index, line_number, op)? {
                    return Ok(step);
                }
                continue;
            }
            let line_number = self.first_line + self.decoder.lines_seen();
            let line = match self.reader.next_line() {
                Ok(line) => line,
                Err(e) => return Err(fs_error(&self.path, op, e, line_number)),
            };
            let Some(line) = line else {
                return Ok(match (self.decoder.pending(), self.held) {
                    (Some(bad), Some((offset, bytes))) => Step::Torn(Torn {
                        offset,
                        bytes,
                        line: self.first_line + bad.line,
                        excerpt: excerpt(bad.raw.as_bytes()),
                    }),
                    _ => Step::End,
                });
            };
            let (index, previous) = self.decoder.start_line();
            if let Some(bad) = previous {
                // A line followed the held one, so it was no torn tail: damage, standing for
                // the next key. The line just read is taken on the next call.
                self.stash = Some((line.bytes.to_vec(), line.offset, line.terminated, index, line_number));
                self.held = None;
                let damage = Damage {
                    line: self.first_line + bad.line,
                    key: self.next_key,
                    excerpt: excerpt(bad.raw.as_bytes()),
                    raw_blake3: blake3::hash(bad.raw.as_bytes()).to_hex().to_string(),
                };
                self.next_key += 1;
                return Ok(Step::Damaged(damage));
            }
            let mut fields = Fields {
                path: &self.path,
                decoder: &mut self.decoder,
                held: &mut self.held,
                next_key: &mut self.next_key,
                _record: std::marker::PhantomData,
            };
            if let Some(step) =
                fields.classify_line(line.bytes, line.offset, line.terminated, index, line_number, op)?
            {
                return Ok(step);
            }
        }
    }

    fn fields(&mut self) -> Fields<'_, R> {
        Fields {
            path: &self.path,
            decoder: &mut self.decoder,
            held: &mut self.held,
            next_key: &mut self.next_key,
            _record: std::marker::PhantomData,
        }
    }
}

/// The parts of a [`Scanner`] that taking one line apart changes, borrowed apart from its reader
/// (whose buffer holds the line).
struct Fields<'a, R> {
    path: &'a Path,
    decoder: &'a mut LineDecoder,
    held: &'a mut Option<(u64, u64)>,
    next_key: &'a mut u64,
    _record: std::marker::PhantomData<R>,
}

impl<R: DeserializeOwned + Keyed> Fields<'_, R> {
    /// What one line is: a record, damage, the torn tail, or (`None`) an unparseable line held
    /// back until the next line says whether it was the tail.
    fn classify_line(
        &mut self,
        bytes: &[u8],
        offset: u64,
        terminated: bool,
        index: u64,
        line_number: u64,
        op: &'static str,
    ) -> Result<Option<Step<R>>> {
        let line_bytes = bytes.len() as u64;
        if !terminated {
            return Ok(Some(Step::Torn(Torn {
                offset,
                bytes: line_bytes,
                line: line_number,
                excerpt: excerpt(bytes),
            })));
        }
        match serde_json::from_slice::<R>(bytes) {
            Ok(record) => {
                if record.key() != *self.next_key {
                    return Err(StoreError::corrupt(
                        op,
                        self.path,
                        Some(line_number),
                        format!("key {} where {} was expected (keys are contiguous)", record.key(), *self.next_key),
                    ));
                }
                *self.next_key += 1;
                Ok(Some(Step::Record { record, line: line_number, offset, end: offset + line_bytes + 1 }))
            }
            Err(_) => match classify(bytes) {
                LineClass::Unparseable(raw) => {
                    *self.held = Some((offset, line_bytes + 1));
                    self.decoder.hold_unparseable(index, raw);
                    Ok(None)
                }
                LineClass::Blank => Err(StoreError::corrupt(op, self.path, Some(line_number), "blank line")),
                LineClass::NotObject | LineClass::Record(_) => {
                    let text = keel_kernel::line::line_text(bytes);
                    let damage = Damage {
                        line: line_number,
                        key: *self.next_key,
                        excerpt: excerpt(bytes),
                        raw_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
                    };
                    *self.next_key += 1;
                    Ok(Some(Step::Damaged(damage)))
                }
            },
        }
    }
}

/// A reader error: a line over the limit is corruption at that line, anything else is I/O.
fn fs_error(path: &Path, op: &'static str, error: FsError, line: u64) -> StoreError {
    match error {
        FsError::LineTooLong { line_bytes_max, .. } => StoreError::corrupt(
            op,
            path,
            Some(line),
            format!("line is longer than the record limit of {line_bytes_max} bytes"),
        ),
        other => StoreError::fs(op, other),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(TORN_EXCERPT_BYTES_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

/// One index entry: the indexed key and the log offset of its record, little-endian.
fn decode_entry(entry: &[u8]) -> (u64, u64) {
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    (word(&entry[..8]), word(&entry[8..16]))
}

impl Log {
    /// How many whole entries the index file holds (0 when it is missing).
    pub fn index_entries(&self, op: &'static str) -> Result<u64> {
        match std::fs::metadata(&self.index_path) {
            Ok(meta) => Ok(meta.len() / INDEX_ENTRY_BYTES),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(op, &self.index_path, e)),
        }
    }

    /// Entry `i` as stored, or `None` when it is not there.
    fn read_entry(&self, file: &File, i: u64, op: &'static str) -> Result<Option<(u64, u64)>> {
        let mut entry = [0_u8; INDEX_ENTRY_BYTES as usize];
        match file.read_exact_at(&mut entry, i * INDEX_ENTRY_BYTES) {
            Ok(()) => Ok(Some(decode_entry(&entry))),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(StoreError::io(op, &self.index_path, e)),
        }
    }

    /// The first `entries` entries of the index (fewer if it is shorter), read in one go.
    pub fn read_index(&self, entries: u64, op: &'static str) -> Result<Vec<(u64, u64)>> {
        if entries == 0 {
            return Ok(Vec::new());
        }
        let mut bytes = Vec::new();
        File::open(&self.index_path)
            .and_then(|file| file.take(entries.saturating_mul(INDEX_ENTRY_BYTES)).read_to_end(&mut bytes))
            .map_err(|e| StoreError::io(op, &self.index_path, e))?;
        Ok(bytes.chunks_exact(INDEX_ENTRY_BYTES as usize).map(decode_entry).collect())
    }

    /// Writes entries for consecutive indexed keys, the first being entry `first_entry`.
    pub fn write_index(&self, first_entry: u64, entries: &[(u64, u64)], op: &'static str) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES as usize);
        for (key, offset) in entries {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        // Readers write the index too (it is derived data), so it must never follow a link out
        // of the store, nor block on a FIFO put in its place.
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = rustix::fs::open(&self.index_path, flags, Mode::from_raw_mode(0o644))
            .map(File::from)
            .map_err(|e| StoreError::io(op, &self.index_path, std::io::Error::from(e)))?;
        let meta = file.metadata().map_err(|e| StoreError::io(op, &self.index_path, e))?;
        if !meta.is_file() {
            return Err(StoreError::io(op, &self.index_path, std::io::Error::other("not a regular file")));
        }
        file.write_all_at(&bytes, first_entry * INDEX_ENTRY_BYTES).map_err(|e| StoreError::io(op, &self.index_path, e))
    }

    /// Whether `key` gets an index entry, and which.
    pub fn entry_for(&self, key: u64) -> Option<u64> {
        let ordinal = key - self.first_key;
        ordinal.is_multiple_of(INDEX_EVERY_RECORDS).then_some(ordinal / INDEX_EVERY_RECORDS)
    }

    /// A scanner positioned at the indexed record nearest before `key`, checked against the log,
    /// and how many index entries are known good (those before and including the one used).
    pub fn scanner_near<R: DeserializeOwned + Keyed>(&self, key: u64, op: &'static str) -> Result<(Scanner<R>, u64)> {
        let count = self.index_entries(op)?;
        if count > 0 {
            let file = File::open(&self.index_path).map_err(|e| StoreError::io(op, &self.index_path, e))?;
            let wanted = (key.max(self.first_key) - self.first_key) / INDEX_EVERY_RECORDS;
            let mut entry = Some(wanted.min(count - 1));
            for _ in 0..LOCATE_ATTEMPTS_MAX {
                let Some(i) = entry else { break };
                if let Some((stored_key, offset)) = self.read_entry(&file, i, op)?
                    && stored_key == self.first_key + i * INDEX_EVERY_RECORDS
                    && let Ok(mut scanner) = Scanner::<R>::open(self, offset, stored_key, op)
                    && matches!(scanner.peek(op), Ok(Step::Record { .. }))
                {
                    return Ok((scanner, i + 1));
                }
                entry = i.checked_sub(1);
            }
        }
        Ok((Scanner::open(self, 0, self.first_key, op)?, 0))
    }

    /// Scans from the last good index entry to the end, calling `visit` on each record, and
    /// writes the index entries that were missing. Reads at most `INDEX_EVERY_RECORDS` records
    /// plus whatever the index is behind by.
    pub fn scan_tail<R: DeserializeOwned + Keyed>(
        &self,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<Tail> {
        let (scanner, good_entries) = self.scanner_near::<R>(u64::MAX, op)?;
        self.finish_scan(scanner, good_entries, 0, op, visit)
    }

    /// Scans from a known valid position (`offset`, where key `key` starts) to the end.
    pub fn scan_from<R: DeserializeOwned + Keyed>(
        &self,
        offset: u64,
        key: u64,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<Tail> {
        let scanner = Scanner::<R>::open(self, offset, key, op)?;
        self.finish_scan(scanner, 0, offset, op, visit)
    }

    fn finish_scan<R: DeserializeOwned + Keyed>(
        &self,
        mut scanner: Scanner<R>,
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
            let _ = self.write_index(first_entry, &new_entries, op);
        }
        Ok(Tail { next_key: scanner.next_key(), valid_end, torn, damage, identity: scanner.seen() })
    }

    /// Cuts a torn tail off: truncates the log to `valid_end` and makes that durable.
    pub fn truncate(&self, valid_end: u64, op: &'static str) -> Result<()> {
        let file = OpenOptions::new().write(true).open(&self.path).map_err(|e| StoreError::io(op, &self.path, e))?;
        file.set_len(valid_end).map_err(|e| StoreError::io(op, &self.path, e))?;
        file.sync_all().map_err(|e| StoreError::io(op, &self.path, e))
    }
}

#[cfg(test)]
mod tests {
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
        let mut scanner = Scanner::<Rec>::open(&log, 0, 1, "test").expect("open");
        while !matches!(scanner.next("test").expect("scan"), Step::End) {}
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"k\":3}\n"))
            .expect("another writer appends");
        let seen = scanner.seen();
        assert_eq!(seen.len, 16, "{seen:?}");
        assert_eq!(scanner.next_key(), 3);
        assert_ne!(seen, FileIdentity::of(&path, "test").expect("stat"), "the grown file no longer matches");
    }
}
