//! Streaming JSON-lines reading: lines with their byte offsets, in bounded memory.
//!
//! What a line *means* (record, blank, corrupt, torn tail) is the kernel's
//! [`keel_kernel::line`] classification; this module only finds the lines.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{FsError, Result};

/// The default limit on one line: far above any record keel writes, low enough that a file of
/// garbage without newlines cannot make a reader allocate without bound.
pub const LINE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// The buffer of a reader that does not know how much it will read. A reader told (by
/// [`LineReader::with_expected_bytes`]) allocates only that much: most reads, a journal's records
/// after its head snapshot, are a few KiB, and zeroing a large buffer costs more than the read.
const BUFFER_BYTES: usize = 1024 * 1024;
const BUFFER_BYTES_MIN: usize = 4096;

/// Reads a file line by line (split on `\n`; the final unterminated fragment is a line too).
pub struct LineReader<R> {
    inner: R,
    path: PathBuf,
    buffer: Vec<u8>,
    /// Start of unread data in `buffer`.
    start: usize,
    /// End of valid data in `buffer`.
    end: usize,
    /// File offset of `buffer[start]`.
    offset: u64,
    line_bytes_max: usize,
    eof: bool,
    /// The size `buffer` gets when the first read allocates it.
    buffer_bytes: usize,
}

/// One line: where it starts in the file, its bytes without the `\n`, and whether it had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// The line's bytes, without the terminating `\n`.
    pub bytes: &'a [u8],
    /// Whether the line ended with `\n` (false only for a final fragment).
    pub terminated: bool,
}

/// A line [`LineReader::skip_line`] discarded unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// The line's length, without the `\n`.
    pub bytes: u64,
    /// Whether the line ended with `\n` (false only for a final fragment).
    pub terminated: bool,
}

impl LineReader<File> {
    /// Opens `path` for reading from its start.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| FsError::io("open", path, e))?;
        Ok(Self::new(file, path, 0))
    }
}

impl<R: Read> LineReader<R> {
    /// Reads lines from `inner`, whose first byte is at file offset `offset`; `path` names it in errors.
    pub fn new(inner: R, path: &Path, offset: u64) -> Self {
        Self {
            inner,
            path: path.to_owned(),
            buffer: Vec::new(),
            start: 0,
            end: 0,
            offset,
            line_bytes_max: LINE_BYTES_MAX_DEFAULT,
            eof: false,
            buffer_bytes: BUFFER_BYTES,
        }
    }

    /// Sizes the buffer for about `bytes` of input (a hint: more is still read, in several reads).
    #[must_use]
    pub fn with_expected_bytes(mut self, bytes: u64) -> Self {
        self.buffer_bytes =
            usize::try_from(bytes.saturating_add(1)).unwrap_or(BUFFER_BYTES).clamp(BUFFER_BYTES_MIN, BUFFER_BYTES);
        self
    }

    /// Sets the longest line accepted; a longer one is [`FsError::LineTooLong`].
    #[must_use]
    pub fn with_line_bytes_max(mut self, line_bytes_max: usize) -> Self {
        self.line_bytes_max = line_bytes_max;
        self
    }

    /// The file offset just past the last line returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        let mut searched = 0;
        loop {
            let window = &self.buffer[self.start + searched..self.end];
            if let Some(at) = memchr::memchr(b'\n', window) {
                let line_end = self.start + searched + at;
                return Ok(Some(self.take(line_end, 1, true)));
            }
            searched = self.end - self.start;
            if searched > self.line_bytes_max {
                return Err(self.too_long());
            }
            if self.eof {
                if searched == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.take(self.end, 0, false)));
            }
            self.fill()?;
        }
    }

    /// Discards the line [`next_line`](Self::next_line) refused as too long, through its `\n`,
    /// in bounded memory, so a reader that treats such a line as damage can go on past it.
    /// Returns where the line started, its length without the `\n`, and whether it had one.
    pub fn skip_line(&mut self) -> Result<Skipped> {
        let offset = self.offset;
        let mut bytes = 0_u64;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                self.start += at + 1;
                self.offset += at as u64 + 1;
                return Ok(Skipped { offset, bytes: bytes + at as u64, terminated: true });
            }
            let unread = (self.end - self.start) as u64;
            bytes += unread;
            self.offset += unread;
            self.start = self.end;
            if self.eof {
                return Ok(Skipped { offset, bytes, terminated: false });
            }
            self.fill()?;
        }
    }

    /// [`skip_line`](Self::skip_line), keeping the line's first `prefix_bytes` bytes: what a reader
    /// quotes when it reports the line as damage.
    pub fn skip_long_line(&mut self, prefix_bytes: usize) -> Result<(Skipped, Vec<u8>)> {
        let buffered = &self.buffer[self.start..self.end];
        let prefix = buffered[..buffered.len().min(prefix_bytes)].to_vec();
        Ok((self.skip_line()?, prefix))
    }

    fn take(&mut self, line_end: usize, terminator: usize, terminated: bool) -> Line<'_> {
        let line_start = self.start;
        let offset = self.offset;
        let consumed = line_end - line_start + terminator;
        self.start += consumed;
        self.offset += consumed as u64;
        Line { offset, bytes: &self.buffer[line_start..line_end], terminated }
    }

    fn too_long(&self) -> FsError {
        FsError::LineTooLong { path: self.path.clone(), offset: self.offset, line_bytes_max: self.line_bytes_max }
    }

    /// Reads more data, first moving the unread part to the front and growing the buffer when a
    /// single line fills it.
    fn fill(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            self.buffer = vec![0; self.buffer_bytes];
        }
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buffer.len() {
            let grown = (self.buffer.len() * 2).min(self.line_bytes_max + 1).max(self.buffer.len() + 1);
            self.buffer.resize(grown, 0);
        }
        loop {
            match self.inner.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(FsError::io("read", &self.path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], buffer: usize) -> Vec<(u64, Vec<u8>, bool)> {
        let mut reader = LineReader::new(data, Path::new("mem"), 0);
        reader.buffer = vec![0; buffer];
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().expect("in-memory read") {
            out.push((line.offset, line.bytes.to_vec(), line.terminated));
        }
        out
    }

    #[test]
    fn lines_carry_offsets_and_the_final_fragment_is_unterminated() {
        for buffer in [1, 2, 3, 7, 1024] {
            let got = lines(b"ab\n\ncde\nfg", buffer);
            assert_eq!(
                got,
                vec![
                    (0, b"ab".to_vec(), true),
                    (3, b"".to_vec(), true),
                    (4, b"cde".to_vec(), true),
                    (8, b"fg".to_vec(), false)
                ],
                "buffer {buffer}"
            );
        }
    }

    #[test]
    fn a_reader_told_to_expect_little_still_reads_everything() {
        let data: Vec<u8> = (0..2_000).flat_map(|i| format!("{{\"n\": {i}}}\n").into_bytes()).collect();
        let mut reader = LineReader::new(&data[..], Path::new("mem"), 7).with_expected_bytes(10);
        let (mut n, mut offset) = (0, 7);
        while let Some(line) = reader.next_line().expect("in-memory read") {
            assert_eq!((line.offset, line.bytes), (offset, format!("{{\"n\": {n}}}").as_bytes()));
            offset += line.bytes.len() as u64 + 1;
            n += 1;
        }
        assert_eq!(n, 2_000);
        assert_eq!(reader.buffer.len(), BUFFER_BYTES_MIN, "the hint sized the buffer; no line outgrew it");
    }

    #[test]
    fn a_line_over_the_limit_is_a_typed_error_not_an_allocation() {
        let data = [b'x'; 100];
        let mut reader = LineReader::new(&data[..], Path::new("big.jsonl"), 0).with_line_bytes_max(10);
        reader.buffer = vec![0; 4];
        let err = reader.next_line().expect_err("too long");
        assert!(matches!(err, FsError::LineTooLong { offset: 0, line_bytes_max: 10, .. }), "{err}");
        assert!(err.to_string().contains("big.jsonl"));
    }

    #[test]
    fn a_line_over_the_limit_can_be_skipped_in_bounded_memory_and_reading_goes_on() {
        let mut data = vec![b'x'; 100];
        data.extend_from_slice(b"\nok\n");
        data.extend_from_slice(&[b'y'; 50]);
        let mut reader = LineReader::new(&data[..], Path::new("big.jsonl"), 0).with_line_bytes_max(10);
        reader.buffer = vec![0; 4];
        reader.next_line().expect_err("too long");
        assert_eq!(reader.skip_line().expect("skip"), Skipped { offset: 0, bytes: 100, terminated: true });
        assert!(reader.buffer.len() <= 11, "skipping grew the buffer to {}", reader.buffer.len());
        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!((line.offset, line.bytes, line.terminated), (101, &b"ok"[..], true));
        reader.next_line().expect_err("the unterminated tail is too long as well");
        assert_eq!(reader.skip_line().expect("skip"), Skipped { offset: 104, bytes: 50, terminated: false });
        assert_eq!(reader.offset(), 154);
        assert!(reader.next_line().expect("end").is_none());
    }
}
