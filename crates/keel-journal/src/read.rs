//! Replaying a journal file: the kernel's fold, fed by parsing on every core.
//!
//! Parsing is almost all of a replay's cost and needs nothing but the line, so the file is read in
//! chunks that end at a newline, the chunks are taken apart on worker threads by the kernel's pure
//! [`ParsedChunk::parse`], and the results are folded in file order on the calling thread. The
//! result is exactly that of pushing every line through [`Replay::push_line`] (the kernel's
//! definition); memory stays bounded by the chunks in flight.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use keel_fs::{FsError, LINE_BYTES_MAX_DEFAULT};
use keel_kernel::{ParsedChunk, Replay, Replayed};

/// Bytes per chunk handed to a parser thread.
const CHUNK_BYTES: usize = 256 * 1024;
/// Parser threads at most (the fold on the calling thread is the next bottleneck past this).
const PARSERS_MAX: usize = 4;
/// Chunks at most in flight per parser (bounds memory to a few chunks per thread).
const IN_FLIGHT_PER_PARSER: usize = 2;

/// A journal replayed from a byte offset to its end.
#[derive(Debug)]
pub struct ReadOutcome {
    /// The fold's result.
    pub replayed: Replayed,
    /// The file's length when it was read (the offset just past its last byte).
    pub end_offset: u64,
    /// Whether the last line is whole: it ended with `\n` (or the file held nothing from the
    /// offset), or it holds a `\r` no writer leaves in a cut-short record
    /// ([`keel_kernel::line::cut_short`]). A torn tail that is whole is a line that does not
    /// parse, not a write cut short.
    pub terminated: bool,
}

/// Replays the whole journal at `path`. A missing file is [`FsError::Io`] with `NotFound`.
pub fn replay_path(path: &Path) -> Result<ReadOutcome, FsError> {
    replay_from(keel_fs::open_read(path)?, path, Replay::new(), 0)
}

/// [`replay_path`], reading a journal that does not exist as an empty one: what every read of a
/// workspace's journal sees before its first grant, unless the command named the file itself.
pub fn replay_path_or_empty(path: &Path) -> Result<ReadOutcome, FsError> {
    match keel_fs::open_read(path) {
        Ok(file) => replay_from(file, path, Replay::new(), 0),
        Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            replay_from(std::io::Cursor::new(Vec::new()), path, Replay::new(), 0)
        }
        Err(error) => Err(error),
    }
}

/// Continues `replay` with the bytes of `file` (opened from `path`, for example with
/// [`keel_fs::open_read`]) from `offset` to its end (`offset` must be the start of a line; the
/// caller vouches that `replay` folded exactly the lines before it).
pub fn replay_from<R: Read + Seek + Send>(
    mut file: R,
    path: &Path,
    replay: Replay,
    offset: u64,
) -> Result<ReadOutcome, FsError> {
    file.seek(SeekFrom::Start(offset)).map_err(|e| FsError::io("seek", path, e))?;
    let parsers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, PARSERS_MAX);
    if parsers == 1 {
        return replay_serial(file, path, replay, offset);
    }
    // The chunked reader gives up on a line over the limit; the serial reader folds one as damage,
    // so a journal that holds one is read again that way (rare: only a damaged journal pays).
    let fallback = replay.clone();
    match replay_parallel(file, path, replay, offset, parsers) {
        Err(FsError::LineTooLong { .. }) => {
            let mut file = keel_fs::open_read(path)?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| FsError::io("seek", path, e))?;
            replay_serial(file, path, fallback, offset)
        }
        other => other,
    }
}

fn replay_parallel<R: Read + Send>(
    file: R,
    path: &Path,
    replay: Replay,
    offset: u64,
    parsers: usize,
) -> Result<ReadOutcome, FsError> {
    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<u8>)>(parsers * IN_FLIGHT_PER_PARSER);
    let (parsed_tx, parsed_rx) = sync_channel::<(u64, ParsedChunk)>(parsers * IN_FLIGHT_PER_PARSER);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    std::thread::scope(|scope| {
        for _ in 0..parsers {
            let chunk_rx = Arc::clone(&chunk_rx);
            let parsed_tx = parsed_tx.clone();
            scope.spawn(move || parse_chunks(&chunk_rx, &parsed_tx));
        }
        drop(parsed_tx);
        let reader = scope.spawn(move || read_chunks(file, path, offset, &chunk_tx));
        let folded = fold_in_order(replay, &parsed_rx);
        // Reading ends first (or fails); parsers end when the chunk channel closes.
        let (end_offset, terminated) = reader.join().map_err(|_| reader_panicked(path))??;
        Ok(ReadOutcome { replayed: folded.finish(), end_offset, terminated })
    })
}

fn reader_panicked(path: &Path) -> FsError {
    FsError::io("read", path, std::io::Error::other("journal reader thread panicked"))
}

fn parse_chunks(chunks: &Mutex<Receiver<(u64, Vec<u8>)>>, parsed: &SyncSender<(u64, ParsedChunk)>) {
    loop {
        let next = chunks.lock().map(|rx| rx.recv());
        let Ok(Ok((index, chunk))) = next else { return };
        // Each chunk ends with `\n` except possibly the file's final fragment.
        if parsed.send((index, ParsedChunk::parse(chunk))).is_err() {
            return;
        }
    }
}

fn fold_in_order(mut replay: Replay, parsed: &Receiver<(u64, ParsedChunk)>) -> Replay {
    let mut waiting: BTreeMap<u64, ParsedChunk> = BTreeMap::new();
    let mut next = 0u64;
    for (index, chunk) in parsed {
        waiting.insert(index, chunk);
        while let Some(chunk) = waiting.remove(&next) {
            replay.push_chunk(chunk);
            next += 1;
        }
    }
    replay
}

/// Reads `file` in chunks that end at a newline (the last may be an unterminated fragment) and
/// sends them in order. Returns the end offset and whether the last byte read was `\n`.
fn read_chunks<R: Read>(
    mut file: R,
    path: &Path,
    offset: u64,
    chunks: &SyncSender<(u64, Vec<u8>)>,
) -> Result<(u64, bool), FsError> {
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0u64;
    let mut position = offset;
    loop {
        let mut chunk = std::mem::take(&mut carry);
        chunk.reserve(CHUNK_BYTES);
        let read = read_into_spare(&mut file, &mut chunk, CHUNK_BYTES).map_err(|e| FsError::io("read", path, e))?;
        position += read as u64;
        if read == 0 {
            if chunk.is_empty() {
                return Ok((position, true));
            }
            // The final, unterminated fragment is a line of its own.
            let whole = !keel_kernel::line::cut_short(&chunk, false);
            let _ = chunks.send((index, chunk));
            return Ok((position, whole));
        }
        let Some(last) = memchr::memrchr(b'\n', &chunk) else {
            if chunk.len() > LINE_BYTES_MAX_DEFAULT {
                return Err(FsError::LineTooLong {
                    path: path.to_owned(),
                    offset: position - chunk.len() as u64,
                    line_bytes_max: LINE_BYTES_MAX_DEFAULT,
                });
            }
            carry = chunk;
            continue;
        };
        carry = chunk[last + 1..].to_vec();
        chunk.truncate(last + 1);
        if carry.len() > LINE_BYTES_MAX_DEFAULT {
            return Err(FsError::LineTooLong {
                path: path.to_owned(),
                offset: position - carry.len() as u64,
                line_bytes_max: LINE_BYTES_MAX_DEFAULT,
            });
        }
        if chunks.send((index, chunk)).is_err() {
            // The fold stopped early (it cannot; this only ends the thread cleanly).
            return Ok((position, carry.is_empty()));
        }
        index += 1;
    }
}

/// Appends up to `want` bytes read from `file` to `buffer` (without zeroing them first).
fn read_into_spare<R: Read>(file: &mut R, buffer: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < want {
        match (&mut *file).take((want - filled) as u64).read_to_end(buffer) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One line pushed by [`push_next`]: where it ended, and whether it was whole (not a write cut
/// short).
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    /// The offset of the line's first byte.
    pub start: u64,
    /// The offset just past the line (and its `\n`).
    pub end: u64,
    /// Whether the line can not be a write cut short (it ended with `\n` or holds a `\r`).
    pub whole: bool,
}

/// Reads the next line from `reader` and folds it into `replay`; `None` at the end. A line over
/// the readers' limit is damage, not an error that stops every command: it is skipped in bounded
/// memory and folded as a corrupt sentinel quoting its first bytes ([`Replay::push_oversized`]).
pub fn push_next<R: Read>(reader: &mut keel_fs::LineReader<R>, replay: &mut Replay) -> Result<Option<Pushed>, FsError> {
    let start = reader.offset();
    match reader.next_line() {
        Ok(Some(line)) => {
            let whole = !keel_kernel::line::cut_short(line.bytes, line.terminated);
            let end = line.offset + line.bytes.len() as u64 + u64::from(line.terminated);
            replay.push_line(line.bytes);
            Ok(Some(Pushed { start: line.offset, end, whole }))
        }
        Ok(None) => Ok(None),
        Err(FsError::LineTooLong { .. }) => {
            let (skipped, prefix) = reader.skip_long_line(keel_kernel::line::OVERSIZED_QUOTE_BYTES)?;
            replay.push_oversized(&prefix, skipped.bytes);
            Ok(Some(Pushed { start, end: reader.offset(), whole: true }))
        }
        Err(error) => Err(error),
    }
}

/// One thread: the same fold, for machines with a single core (and for a journal holding a line
/// over the limit, which the chunked reader does not take apart).
fn replay_serial<R: Read>(file: R, path: &Path, mut replay: Replay, offset: u64) -> Result<ReadOutcome, FsError> {
    let mut reader = keel_fs::LineReader::new(file, path, offset);
    let mut terminated = true;
    while let Some(pushed) = push_next(&mut reader, &mut replay)? {
        terminated = pushed.whole;
    }
    let end_offset = reader.offset();
    Ok(ReadOutcome { replayed: replay.finish(), end_offset, terminated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn whole(bytes: &[u8]) -> Replayed {
        keel_kernel::replay_bytes(bytes)
    }

    #[test]
    fn parallel_replay_equals_the_kernels_line_by_line_replay() {
        let mut journal = Vec::new();
        for i in 0..60_000u32 {
            match i % 5 {
                0 => writeln!(journal, "{{\"op\": \"ACQUIRE\", \"loop_ts\": \"{i}\", \"lane\": \"l\", \"seq\": {i}, \"lease\": {{\"lane\": \"l\", \"loop_ts\": \"{i}\", \"pad\": \"{}\"}}}}", "x".repeat(100)),
                1 => writeln!(journal, "{{\"op\": \"RELEASE\", \"loop_ts\": \"{}\", \"lane\": \"l\"}}", i - 1),
                // Invalid UTF-8, decoded lossily: a record like any other.
                2 if i % 7 == 0 => journal.write_all(b"{\"op\": \"HALT\", \"bad\": \"\xff\xe2\x82\"}\n"),
                2 => writeln!(journal, "not json {i}"),
                3 => writeln!(journal),
                _ => writeln!(journal, "{{\"op\": \"HEARTBEAT\", \"loop_ts\": \"{}\", \"lane\": \"l\", \"ts\": \"T{i}\"}}", i - 4),
            }
            .expect("in-memory write");
        }
        journal.extend_from_slice(b"{\"op\": \"ACQ");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, &journal).expect("write journal");
        let read = replay_path(&path).expect("replay");
        let expected = whole(&journal);
        assert_eq!(read.end_offset, journal.len() as u64);
        assert!(!read.terminated, "the journal ends in a fragment");
        assert_eq!(read.replayed.state.snapshot(), expected.state.snapshot());
        assert_eq!(read.replayed.torn_tail, expected.torn_tail);
        assert_eq!(read.replayed.lines, expected.lines);
        assert!(read.replayed.state.corrupt().len() > 10_000);
    }
}
