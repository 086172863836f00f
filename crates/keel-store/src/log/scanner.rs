//! [`Scanner`]: a log's lines in order from a known position, each classified as a record,
//! damage or the torn tail, with every key checked.

use std::path::{Path, PathBuf};

use keel_fs::{FsError, LineReader, OsStorage, Storage};
use keel_kernel::line::{LineClass, LineDecoder, classify};
use serde::de::DeserializeOwned;

use super::{Damage, FileIdentity, Keyed, Log, Step, TORN_EXCERPT_BYTES_MAX, Torn, missing_or_io};
use crate::disk::FileRead;
use crate::error::{Result, StoreError};

/// Reads records in order from a known position, checking each line and each key.
pub struct Scanner<R, S: Storage = OsStorage> {
    path: PathBuf,
    reader: LineReader<FileRead<S>>,
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

impl<R: DeserializeOwned + Keyed, S: Storage + Clone> Scanner<R, S> {
    /// A scanner at byte `offset` of `log` read through `storage`, where the record with key
    /// `key` starts.
    pub fn open(storage: &S, log: &Log, offset: u64, key: u64, op: &'static str) -> Result<Self> {
        let file = storage.open_read(&log.path).map_err(|e| missing_or_io(op, &log.path, e))?;
        let stat = storage.file_stat(&file).map_err(|e| StoreError::io(op, &log.path, e))?;
        let reader = FileRead::new(storage.clone(), file, offset);
        let reader = LineReader::new(reader, &log.path, offset)
            .with_line_bytes_max(log.line_bytes_max)
            .with_expected_bytes(stat.len.saturating_sub(offset));
        Ok(Self {
            path: log.path.clone(),
            reader,
            decoder: LineDecoder::new(),
            first_line: key - log.first_key + 1,
            next_key: key,
            held: None,
            peeked: None,
            stash: None,
            file_id: (stat.dev, stat.ino),
        })
    }

    /// The file as this scanner has read it: its device and inode, and the length it read
    /// through. Never a length read afterwards, which could count another writer's record the
    /// scan did not see.
    pub(super) fn seen(&self) -> FileIdentity {
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
