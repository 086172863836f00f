//! Durable append of newline-terminated records: one `write` and one `fdatasync` per record, and
//! a record is acknowledged (`Ok`) only once it is durable.
//!
//! # Records
//! A record is handed over *without* its trailing newline and must not contain `\n`
//! ([`FsError::RecordHasNewline`]); the appender adds the `\n`. Record and newline go out in a
//! single `write` on an `O_APPEND` descriptor, so concurrent appenders never interleave inside a
//! record. Records longer than [`RECORD_BYTES_MAX`] are refused ([`FsError::RecordTooLong`]).
//!
//! # Torn tails
//! A crash can leave the file ending in a fragment without `\n`. The appender never truncates
//! (the fragment may be evidence); it puts a `\n` in front of the next record, in the same single
//! `write`, and reports [`AppendReport::repaired_torn_tail`] so the journal can record it. A file
//! whose last byte is `\r` is treated as torn too: lines are split on `\n` only, so appending
//! right after a `\r` would glue the record onto the fragment.
//!
//! # Fail-stop
//! After a failed `write` or `fdatasync` the [`Appender`] latches failed and every later call
//! returns [`FsError::Failed`]: close it and reopen (which re-checks the tail). An `fdatasync`
//! error is never retried into a success, because the kernel may already have dropped the data.
//!
//! # One writer
//! The appender assumes it is the file's only writer, which the journal's writer lock
//! guarantees. It still checks before every record, with one `fstat` of its descriptor and one
//! `stat` of the path, that nobody truncated, extended or replaced the file; if so it refuses
//! ([`FsError::Replaced`]) rather than append to a file whose tail it no longer knows.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{FsError, Result};
use crate::seam::{DirSync, OsStorage, Storage, dir_sync_status, parent_dir};

/// The longest record accepted, in bytes, without its newline. keel's records are a few hundred
/// bytes; the limit keeps a runaway caller from writing a line a reader refuses.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a torn-tail repair or an unsupported directory fsync should be logged"]
pub struct AppendReport {
    /// File length before the write.
    pub offset_before: u64,
    /// Byte offset of the record's first byte (after the repair newline, if any).
    pub record_offset: u64,
    /// File length after the write: where the next record starts.
    pub offset_after: u64,
    /// Whether a `\n` was written first because the file ended in a torn fragment.
    pub repaired_torn_tail: bool,
    /// `Some` when opening created the file (reported with the first append): whether the new
    /// name was made durable by a directory fsync.
    pub dir_sync: Option<DirSync>,
}

/// An open journal file that appends records durably. Not `Clone`: one handle, one writer.
#[derive(Debug)]
pub struct Appender<S: Storage = OsStorage> {
    storage: S,
    path: PathBuf,
    file: S::File,
    dev: u64,
    ino: u64,
    /// File length as this handle last wrote or saw it.
    len: u64,
    /// The file is non-empty and its last byte is not `\n`.
    tail_torn: bool,
    /// The directory fsync done when opening created the file, reported by the first append.
    created_dir_sync: Option<DirSync>,
    /// The operation that failed, once one has.
    failed: Option<&'static str>,
    record_bytes_max: usize,
    /// Reused for every record so appending does not allocate.
    buffer: Vec<u8>,
}

impl Appender<OsStorage> {
    /// Opens (creating if missing) `path` on the real file system.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(OsStorage, path)
    }
}

impl<S: Storage> Appender<S> {
    /// Opens (creating if missing) `path` through `storage`. When the file is created its
    /// directory is fsynced before this returns, so the name survives a power loss. Reads the
    /// last byte once to learn whether the tail is torn.
    pub fn open_with(storage: S, path: &Path) -> Result<Self> {
        let (file, created) = storage.open_append(path).map_err(|e| FsError::io("open for append", path, e))?;
        let created_dir_sync = if created {
            let dir = parent_dir(path);
            Some(dir_sync_status(storage.sync_dir(&dir)).map_err(|e| FsError::io("fsync directory", &dir, e))?)
        } else {
            None
        };
        let stat = storage.file_stat(&file).map_err(|e| FsError::io("fstat", path, e))?;
        let tail_torn = if stat.len == 0 {
            false
        } else {
            let mut last = [0_u8; 1];
            let n =
                storage.read_at(&file, stat.len - 1, &mut last).map_err(|e| FsError::io("read last byte", path, e))?;
            if n != 1 {
                return Err(FsError::Replaced {
                    path: path.to_owned(),
                    detail: format!("shrank while its last byte was read (length {})", stat.len),
                });
            }
            last[0] != b'\n'
        };
        Ok(Self {
            storage,
            path: path.to_owned(),
            file,
            dev: stat.dev,
            ino: stat.ino,
            len: stat.len,
            tail_torn,
            created_dir_sync,
            failed: None,
            record_bytes_max: RECORD_BYTES_MAX,
            buffer: Vec::new(),
        })
    }

    /// Lowers the record limit (it cannot be raised above [`RECORD_BYTES_MAX`]).
    #[must_use]
    pub fn with_record_bytes_max(mut self, record_bytes_max: usize) -> Self {
        self.record_bytes_max = record_bytes_max.min(RECORD_BYTES_MAX);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length as this handle knows it: the offset of the next record.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the handle latched failed (every call now returns [`FsError::Failed`]).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Appends `record` plus `\n` with one `write`, then `fdatasync`s. `Ok` means durable.
    pub fn append(&mut self, record: &[u8]) -> Result<AppendReport> {
        self.append_with(record, true)
    }

    /// [`append`](Self::append) without the `fdatasync`: for a forensic record nothing is
    /// acknowledged on (a refusal's note). A power cut may lose it or leave it torn, which the
    /// next writer repairs as any torn tail; the next durable append makes it durable too.
    pub fn append_unsynced(&mut self, record: &[u8]) -> Result<AppendReport> {
        self.append_with(record, false)
    }

    fn append_with(&mut self, record: &[u8], sync: bool) -> Result<AppendReport> {
        if let Some(op) = self.failed {
            return Err(FsError::Failed { path: self.path.clone(), op });
        }
        if record.len() > self.record_bytes_max {
            return Err(FsError::RecordTooLong {
                path: self.path.clone(),
                record_bytes: record.len(),
                record_bytes_max: self.record_bytes_max,
            });
        }
        if let Some(at) = memchr::memchr(b'\n', record) {
            return Err(FsError::RecordHasNewline { path: self.path.clone(), at });
        }
        self.check_unchanged()?;

        let repaired_torn_tail = self.tail_torn;
        self.buffer.clear();
        if repaired_torn_tail {
            self.buffer.push(b'\n');
        }
        self.buffer.extend_from_slice(record);
        self.buffer.push(b'\n');

        // One write puts the whole record down; a short one (a full disk, a file-size limit) is
        // continued under the same lock, so the record stays contiguous, until it is whole or
        // the file system says why not.
        let mut written = 0;
        let failure = loop {
            match self.storage.write_once(&mut self.file, &self.buffer[written..]) {
                Ok(0) => break Some(std::io::Error::new(std::io::ErrorKind::WriteZero, "no more bytes accepted")),
                Ok(n) => {
                    written += n;
                    if written == self.buffer.len() {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(cause) = failure {
            if written == 0 {
                return Err(self.latch("write", cause));
            }
            return Err(self.cut_back(written, cause));
        }
        if sync && let Err(e) = self.storage.sync_data(&self.file) {
            return Err(self.latch("fdatasync", e));
        }
        let offset_before = self.len;
        self.len += written as u64;
        self.tail_torn = false;
        Ok(AppendReport {
            offset_before,
            record_offset: offset_before + u64::from(repaired_torn_tail),
            offset_after: self.len,
            repaired_torn_tail,
            dir_sync: self.created_dir_sync.take(),
        })
    }

    /// After a write that put down `written` bytes of the record and then failed: cuts them off
    /// again, so no part of a record reported as failed is ever read as a record (one whose JSON
    /// is whole and only the `\n` missing would replay as written). Only when the file is just
    /// this handle's length plus those bytes: anything else appended after them is not ours to
    /// cut, and they stay a torn tail for the next writer to repair. Latches the handle failed.
    fn cut_back(&mut self, written: usize, cause: std::io::Error) -> FsError {
        self.failed = Some("write");
        let ours = self.storage.file_stat(&self.file).is_ok_and(|stat| stat.len == self.len + written as u64);
        let cut_back =
            ours && self.storage.set_len(&self.file, self.len).is_ok() && self.storage.sync_data(&self.file).is_ok();
        FsError::ShortWrite {
            path: self.path.clone(),
            written_bytes: written,
            expected_bytes: self.buffer.len(),
            source: cause,
            cut_back,
        }
    }

    fn latch(&mut self, op: &'static str, e: std::io::Error) -> FsError {
        self.failed = Some(op);
        FsError::io(op, &self.path, e)
    }

    /// Refuses (and latches) if the file under the path is not the one open, or its length is
    /// not what this handle wrote.
    fn check_unchanged(&mut self) -> Result<()> {
        let open = match self.storage.file_stat(&self.file) {
            Ok(stat) => stat,
            Err(e) => return Err(self.latch("fstat", e)),
        };
        let detail = match self.storage.path_stat(&self.path) {
            Ok(named) if (named.dev, named.ino) != (self.dev, self.ino) => {
                Some("the path now names another file".to_owned())
            }
            Ok(_) if open.len != self.len => {
                Some(format!("length is {} bytes, this handle wrote up to {}", open.len, self.len))
            }
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => Some("the path was removed".to_owned()),
            Err(e) => return Err(self.latch("stat", e)),
        };
        match detail {
            None => Ok(()),
            Some(detail) => {
                self.failed = Some("check");
                Err(FsError::Replaced { path: self.path.clone(), detail })
            }
        }
    }
}

/// Opens `path`, appends one record durably, closes it. For one-off appends; a journal keeps an
/// [`Appender`].
pub fn append_record(path: &Path, record: &[u8]) -> Result<AppendReport> {
    append_record_with(&OsStorage, path, record)
}

/// [`append_record`] through any [`Storage`].
pub fn append_record_with<S: Storage>(storage: &S, path: &Path, record: &[u8]) -> Result<AppendReport> {
    Appender::open_with(storage, path)?.append(record)
}
