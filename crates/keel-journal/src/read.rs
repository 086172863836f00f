//! Replaying a journal file: the kernel's fold, fed by parsing on every core.
//!
//! Parsing is almost all of a replay's cost and needs nothing but the line, so the file is read in
//! chunks that end at a newline, the chunks are taken apart on worker threads by the kernel's pure
//! [`ParsedChunk::parse`], and the results are folded in file order on the calling thread. The
//! result is exactly that of pushing every line through [`Replay::push_line`] (the kernel's
//! definition); memory stays bounded by the chunks in flight.
//!
//! A reader that wants to show how far it has come passes a progress callback (the `_observed`
//! functions): it hears the bytes done of the total at most every [`PROGRESS_EVERY_BYTES`] and at
//! the end, never going backwards, so watching costs the fold one comparison per line.

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

/// How far a long read of a journal has come: what a progress display shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The offset read to (a read that resumes from a head snapshot starts past 0).
    pub done_bytes: u64,
    /// The journal's length when the read began, or `done_bytes` once it has grown past that.
    pub total_bytes: u64,
}

/// Bytes read between two progress reports: often enough for a display, rare enough to cost nothing.
pub const PROGRESS_EVERY_BYTES: u64 = 1 << 20;

/// Hands a progress callback the bytes done every [`PROGRESS_EVERY_BYTES`], never backwards (a
/// read that starts over, as the chunked replay's fallback does, is silent until it passes the
/// last report).
pub(crate) struct Reporter<'a> {
    progress: &'a mut dyn FnMut(Progress),
    total_bytes: u64,
    next_bytes: u64,
    last_bytes: Option<u64>,
}

impl<'a> Reporter<'a> {
    /// Reports on a read of a journal `total_bytes` long.
    pub(crate) fn new(progress: &'a mut dyn FnMut(Progress), total_bytes: u64) -> Self {
        Self { progress, total_bytes, next_bytes: 0, last_bytes: None }
    }

    /// The read has come to `done_bytes`: reported if a report is due.
    #[inline]
    pub(crate) fn at(&mut self, done_bytes: u64) {
        if done_bytes >= self.next_bytes {
            self.report(done_bytes);
        }
    }

    /// The read ended at `done_bytes`: always reported (unless it was just now).
    pub(crate) fn finish(&mut self, done_bytes: u64) {
        self.report(done_bytes);
    }

    fn report(&mut self, done_bytes: u64) {
        self.next_bytes = done_bytes.saturating_add(PROGRESS_EVERY_BYTES);
        if self.last_bytes.is_some_and(|last| done_bytes <= last) {
            return;
        }
        self.last_bytes = Some(done_bytes);
        self.total_bytes = self.total_bytes.max(done_bytes);
        (self.progress)(Progress { done_bytes, total_bytes: self.total_bytes });
    }
}

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
    replay_path_observed(path, &mut |_| {})
}

/// [`replay_path`], telling `progress` how much has been read.
pub fn replay_path_observed(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<ReadOutcome, FsError> {
    replay_from_observed(keel_fs::open_read(path)?, path, Replay::new(), 0, progress)
}

/// [`replay_path`], reading a journal that does not exist as an empty one: what every read of a
/// workspace's journal sees before its first grant, unless the command named the file itself.
pub fn replay_path_or_empty(path: &Path) -> Result<ReadOutcome, FsError> {
    replay_path_or_empty_observed(path, &mut |_| {})
}

/// [`replay_path_or_empty`], telling `progress` how much has been read.
pub fn replay_path_or_empty_observed(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<ReadOutcome, FsError> {
    match keel_fs::open_read(path) {
        Ok(file) => replay_from_observed(file, path, Replay::new(), 0, progress),
        Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            replay_from_observed(std::io::Cursor::new(Vec::new()), path, Replay::new(), 0, progress)
        }
        Err(error) => Err(error),
    }
}

/// Continues `replay` with the bytes of `file` (opened from `path`, for example with
/// [`keel_fs::open_read`]) from `offset` to its end (`offset` must be the start of a line; the
/// caller vouches that `replay` folded exactly the lines before it).
pub fn replay_from<R: Read + Seek + Send>(
    file: R,
    path: &Path,
    replay: Replay,
    offset: u64,
) -> Result<ReadOutcome, FsError> {
    replay_from_observed(file, path, replay, offset, &mut |_| {})
}

/// [`replay_from`], telling `progress` how much has been read (of the file's length when the
/// read began, measured on `file` itself).
pub fn replay_from_observed<R: Read + Seek + Send>(
    mut file: R,
    path: &Path,
    replay: Replay,
    offset: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<ReadOutcome, FsError> {
    let total_bytes = file.seek(SeekFrom::End(0)).map_err(|e| FsError::io("seek", path, e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| FsError::io("seek", path, e))?;
    let mut reporter = Reporter::new(progress, total_bytes);
    let parsers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, PARSERS_MAX);
    if parsers == 1 {
        return replay_serial(file, path, replay, offset, &mut reporter);
    }
    // The chunked reader gives up on a line over the limit; the serial reader folds one as damage,
    // so a journal that holds one is read again that way (rare: only a damaged journal pays).
    let fallback = replay.clone();
    match replay_parallel(file, path, replay, offset, parsers, &mut reporter) {
        Err(FsError::LineTooLong { .. }) => {
            let mut file = keel_fs::open_read(path)?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| FsError::io("seek", path, e))?;
            replay_serial(file, path, fallback, offset, &mut reporter)
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
    reporter: &mut Reporter<'_>,
) -> Result<ReadOutcome, FsError> {
    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<u8>)>(parsers * IN_FLIGHT_PER_PARSER);
    let (parsed_tx, parsed_rx) = sync_channel::<Parsed>(parsers * IN_FLIGHT_PER_PARSER);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    std::thread::scope(|scope| {
        for _ in 0..parsers {
            let chunk_rx = Arc::clone(&chunk_rx);
            let parsed_tx = parsed_tx.clone();
            scope.spawn(move || parse_chunks(&chunk_rx, &parsed_tx));
        }
        drop(parsed_tx);
        let reader = scope.spawn(move || read_chunks(file, path, offset, &chunk_tx));
        let folded = fold_in_order(replay, &parsed_rx, offset, reporter);
        // Reading ends first (or fails); parsers end when the chunk channel closes.
        let (end_offset, terminated) = reader.join().map_err(|_| reader_panicked(path))??;
        reporter.finish(end_offset);
        Ok(ReadOutcome { replayed: folded.finish(), end_offset, terminated })
    })
}

fn reader_panicked(path: &Path) -> FsError {
    FsError::io("read", path, std::io::Error::other("journal reader thread panicked"))
}

/// A chunk taken apart: its index in the file, its length in bytes, and its lines.
type Parsed = (u64, u64, ParsedChunk);

fn parse_chunks(chunks: &Mutex<Receiver<(u64, Vec<u8>)>>, parsed: &SyncSender<Parsed>) {
    loop {
        let next = chunks.lock().map(|rx| rx.recv());
        let Ok(Ok((index, chunk))) = next else { return };
        let bytes = chunk.len() as u64;
        // Each chunk ends with `\n` except possibly the file's final fragment.
        if parsed.send((index, bytes, ParsedChunk::parse(chunk))).is_err() {
            return;
        }
    }
}

/// Folds the chunks in file order, from `offset`, reporting the bytes folded.
fn fold_in_order(mut replay: Replay, parsed: &Receiver<Parsed>, offset: u64, reporter: &mut Reporter<'_>) -> Replay {
    let mut waiting: BTreeMap<u64, (u64, ParsedChunk)> = BTreeMap::new();
    let mut next = 0u64;
    let mut done_bytes = offset;
    for (index, bytes, chunk) in parsed {
        waiting.insert(index, (bytes, chunk));
        while let Some((bytes, chunk)) = waiting.remove(&next) {
            replay.push_chunk(chunk);
            next += 1;
            done_bytes += bytes;
            reporter.at(done_bytes);
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
fn replay_serial<R: Read>(
    file: R,
    path: &Path,
    mut replay: Replay,
    offset: u64,
    reporter: &mut Reporter<'_>,
) -> Result<ReadOutcome, FsError> {
    let mut reader = keel_fs::LineReader::new(file, path, offset);
    let mut terminated = true;
    while let Some(pushed) = push_next(&mut reader, &mut replay)? {
        terminated = pushed.whole;
        reporter.at(pushed.end);
    }
    let end_offset = reader.offset();
    reporter.finish(end_offset);
    Ok(ReadOutcome { replayed: replay.finish(), end_offset, terminated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn whole(bytes: &[u8]) -> Replayed {
        keel_kernel::replay_bytes(bytes)
    }

    /// A journal of a little over `bytes`, of grants and releases.
    fn journal_of(bytes: usize) -> Vec<u8> {
        let mut journal = Vec::new();
        for i in 0u64.. {
            if journal.len() >= bytes {
                break;
            }
            writeln!(journal, "{{\"op\": \"ACQUIRE\", \"loop_ts\": \"{i}\", \"lane\": \"l\", \"seq\": {i}, \"lease\": {{\"lane\": \"l\", \"loop_ts\": \"{i}\"}}}}")
                .expect("in-memory write");
            writeln!(journal, "{{\"op\": \"RELEASE\", \"loop_ts\": \"{i}\", \"lane\": \"l\"}}")
                .expect("in-memory write");
        }
        journal
    }

    /// Every report rises, the last is the whole file, and there are several on the way.
    fn assert_progress_reaches_the_total(reports: &[Progress], total_bytes: u64) {
        assert!(reports.len() >= 3, "reports on the way, not only at the end: {reports:?}");
        assert!(reports.windows(2).all(|w| w[0].done_bytes < w[1].done_bytes), "monotone: {reports:?}");
        assert!(reports.windows(2).all(|w| w[0].total_bytes <= w[1].total_bytes), "{reports:?}");
        assert!(reports.iter().all(|p| p.done_bytes <= p.total_bytes), "{reports:?}");
        assert_eq!(reports.last(), Some(&Progress { done_bytes: total_bytes, total_bytes }));
    }

    #[test]
    fn progress_of_a_replay_rises_to_the_journals_length() {
        let journal = journal_of(5 * PROGRESS_EVERY_BYTES as usize);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, &journal).expect("write journal");
        let mut reports = Vec::new();
        let read = replay_path_observed(&path, &mut |p| reports.push(p)).expect("replay");
        assert_eq!(read.replayed.state.snapshot(), whole(&journal).state.snapshot(), "watching changes nothing");
        assert_progress_reaches_the_total(&reports, journal.len() as u64);
        // The one-thread fold reports the same way.
        let mut reports = Vec::new();
        {
            let mut report = |p| reports.push(p);
            let mut reporter = Reporter::new(&mut report, journal.len() as u64);
            let file = keel_fs::open_read(&path).expect("open");
            let _ = replay_serial(file, &path, Replay::new(), 0, &mut reporter).expect("replay");
        }
        assert_progress_reaches_the_total(&reports, journal.len() as u64);
    }

    #[test]
    fn progress_never_goes_back_when_a_read_starts_over() {
        let mut reports = Vec::new();
        {
            let mut report = |p: Progress| reports.push(p.done_bytes);
            let mut reporter = Reporter::new(&mut report, 10 * PROGRESS_EVERY_BYTES);
            let mib = PROGRESS_EVERY_BYTES;
            for done in [0, 3 * mib, 1, mib + 1, 3 * mib, 4 * mib] {
                reporter.at(done);
            }
            reporter.finish(4 * mib);
        }
        assert_eq!(reports, [0, 3 * PROGRESS_EVERY_BYTES, 4 * PROGRESS_EVERY_BYTES]);
    }

    #[test]
    fn an_empty_journal_reports_zero_of_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut reports = Vec::new();
        let _ = replay_path_or_empty_observed(&dir.path().join("none.jsonl"), &mut |p| reports.push(p)).expect("empty");
        assert_eq!(reports, [Progress { done_bytes: 0, total_bytes: 0 }]);
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
