//! Taking a journal's lines apart before the fold: the scanner's fast path, or `serde_json`.

use super::REVIEW_OP;
use super::live_set::{IdRef, Key};
use crate::line::{CORRUPT_OP, LineClass, classify_text, split_lines};
use crate::scan::{self, Span};
use crate::value::{Object, python_isspace, python_strip};

/// One line taken apart, ready to fold. A fast record is held as spans of the line's stripped
/// text, so taking a line apart allocates nothing for the common records.
#[derive(Debug, Clone)]
pub(super) enum Parsed {
    /// Empty after stripping.
    Blank,
    /// JSON, but not an object: skipped.
    NotObject,
    /// Not JSON: corrupt, or the torn tail if nothing follows it.
    Unparseable,
    /// A common record, read by the scanner without building a `Value`.
    Fast(FastSpans),
    /// Any other record.
    Record(Object),
}

/// A plainly written `ACQUIRE`/`RECONCILE` (with a `lease` object), `RELEASE`/`SCAVENGE`,
/// `HEARTBEAT`, or a record of another op without effect on state, as spans of its line.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastSpans {
    op: Span,
    loop_ts: Span,
    lane: Span,
    /// The identity's hash, computed here so the fold does not.
    hash: u64,
    seq: u64,
    effect: SpanEffect,
}

#[derive(Debug, Clone, Copy)]
enum SpanEffect {
    /// The `lease` object's text.
    Grant(Span),
    Remove,
    /// The first non-empty of `heartbeat_at` and `ts`.
    Beat(Span),
    None,
}

/// [`FastSpans`] resolved against their line: what
/// [`LiveState::apply_fast`](super::LiveState::apply_fast) folds.
#[derive(Clone, Copy)]
pub(super) struct FastRecord<'a> {
    pub(super) op: &'a str,
    pub(super) key: Key<'a>,
    pub(super) seq: u64,
    pub(super) effect: FastEffect<'a>,
}

#[derive(Clone, Copy)]
pub(super) enum FastEffect<'a> {
    Grant(&'a str),
    Remove,
    Beat(&'a str),
    None,
}

impl FastSpans {
    pub(super) fn resolve(self, line: &str) -> FastRecord<'_> {
        FastRecord {
            op: self.op.of(line),
            key: Key { identity: IdRef { loop_ts: self.loop_ts.of(line), lane: self.lane.of(line) }, hash: self.hash },
            seq: self.seq,
            effect: match self.effect {
                SpanEffect::Grant(body) => FastEffect::Grant(body.of(line)),
                SpanEffect::Remove => FastEffect::Remove,
                SpanEffect::Beat(beat) => FastEffect::Beat(beat.of(line)),
                SpanEffect::None => FastEffect::None,
            },
        }
    }
}

/// Takes apart one line's stripped text.
pub(super) fn parse_stripped(text: &str) -> Parsed {
    if text.is_empty() {
        return Parsed::Blank;
    }
    if let Some(fast) = parse_fast(text) {
        return Parsed::Fast(fast);
    }
    match classify_text(text) {
        LineClass::Record(record) => Parsed::Record(record),
        LineClass::Unparseable(_) => Parsed::Unparseable,
        LineClass::Blank => Parsed::Blank,
        LineClass::NotObject => Parsed::NotObject,
    }
}

/// The fast path: the scanner's members, and the effect they have. Any surprise (a member of
/// another type, an escape in a member read, a duplicate member, an op with a richer effect)
/// returns `None` and the line takes the general path, which defines the meaning.
// `pub(super)`: the replay tests compare it with the general path.
pub(super) fn parse_fast(text: &str) -> Option<FastSpans> {
    let members = scan::members(text)?;
    let effect = match members.op.of(text) {
        "ADOPT" | "CHECKPOINT" | CORRUPT_OP | REVIEW_OP => return None,
        "ACQUIRE" | "RECONCILE" => {
            // The scanner checked the value is JSON; starting with `{`, it is an object.
            SpanEffect::Grant(members.lease.filter(|lease| lease.of(text).starts_with('{'))?)
        }
        "RELEASE" | "SCAVENGE" => SpanEffect::Remove,
        "HEARTBEAT" => [members.heartbeat_at, members.ts]
            .into_iter()
            .flatten()
            .find(|beat| !beat.is_empty())
            .map_or(SpanEffect::None, SpanEffect::Beat),
        _ => SpanEffect::None,
    };
    let (loop_ts, lane) = (members.loop_ts.unwrap_or_default(), members.lane.unwrap_or_default());
    Some(FastSpans {
        op: members.op,
        loop_ts,
        lane,
        hash: Key::new(IdRef { loop_ts: loop_ts.of(text), lane: lane.of(text) }).hash,
        seq: members.seq.unwrap_or(0).max(members.seq_watermark.unwrap_or(0)),
        effect,
    })
}

/// Lines of a journal taken apart ahead of the fold: the pure half of a replay, which needs
/// nothing but the bytes and so can run on other threads.
/// [`Replay::push_chunk`](super::Replay::push_chunk) folds the lines in order; the result is the
/// same as [`Replay::push_line`](super::Replay::push_line) on each of them.
#[derive(Debug, Clone)]
pub struct ParsedChunk {
    pub(super) text: String,
    /// Each line's stripped text as `start..end` in `text`, and what it is.
    pub(super) lines: Vec<(usize, usize, Parsed)>,
}

impl ParsedChunk {
    /// Takes apart the lines of `bytes`, split as [`split_lines`] does:
    /// on `\n`, with a final unterminated fragment as a line of its own.
    pub fn parse(bytes: Vec<u8>) -> Self {
        // Decoding the whole chunk lossily equals decoding each line so: `\n` is never part of
        // an invalid sequence, so no replacement spans two lines.
        let text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let mut lines = Vec::new();
        let mut at = 0;
        for line in split_lines(text.as_bytes()) {
            // Lines come in order, one `\n` apart, so `at` and `at + len` sit next to a `\n` or at
            // an end of `text`: char boundaries.
            let line = &text[at..at + line.len()];
            let stripped = python_strip(line);
            let start = at + (line.len() - line.trim_start_matches(python_isspace).len());
            lines.push((start, start + stripped.len(), parse_stripped(stripped)));
            at += line.len() + 1;
        }
        Self { text, lines }
    }
}
