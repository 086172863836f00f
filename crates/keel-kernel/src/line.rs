//! Line classification: the one definition of what a journal line is, shared by every reader.
//!
//! A line is the bytes between two `\n` (a trailing `\r` goes with the surrounding white space).
//! It is decoded lossily as UTF-8, stripped as Python's `str.strip` would, and then it is
//! blank, a record (a JSON object), skipped (JSON but not an object), or unparseable. Whether an
//! unparseable line is a corrupt record or a torn tail depends on whether any line follows it,
//! which only a reader that has seen the whole file knows: [`LineDecoder`] keeps that state.

use std::borrow::Cow;

use serde_json::Value;

use crate::value::{Object, python_strip};

/// The `op` of the sentinel record that stands in for a corrupt line.
pub const CORRUPT_OP: &str = "_CORRUPT";

/// What one line of a journal is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineClass {
    /// Empty after stripping white space: skipped, but it still counts as a line.
    Blank,
    /// A JSON object: a record.
    Record(Object),
    /// Valid JSON that is not an object (an array, a string, a number): skipped silently.
    NotObject,
    /// Not JSON. The stripped text is kept for the corrupt sentinel.
    Unparseable(String),
}

/// Decodes a line's bytes (lossy UTF-8) and strips surrounding white space.
pub fn line_text(line: &[u8]) -> Cow<'_, str> {
    // `from_utf8` is the fast check for the usual, valid line; only a bad one pays for the
    // lossy decode.
    if let Ok(text) = std::str::from_utf8(line) {
        return Cow::Borrowed(python_strip(text));
    }
    match String::from_utf8_lossy(line) {
        Cow::Borrowed(s) => Cow::Borrowed(python_strip(s)),
        Cow::Owned(s) => Cow::Owned(python_strip(&s).to_owned()),
    }
}

/// Whether a journal's last line can be a write cut short: it has no `\n`, and no `\r` either.
/// Writers append whole records ending in `\n` and never write a raw `\r` (dos-kernel counts a
/// final `\r` as a terminator), so a last line holding one is a whole line, damage if it does not
/// parse, never a crashed writer's fragment to excuse.
pub fn cut_short(line: &[u8], terminated: bool) -> bool {
    !terminated && memchr::memchr(b'\r', line).is_none()
}

/// Classifies one line (without its `\n`).
pub fn classify(line: &[u8]) -> LineClass {
    classify_text(&line_text(line))
}

/// Classifies the already decoded and stripped text of one line.
pub fn classify_text(text: &str) -> LineClass {
    if text.is_empty() {
        return LineClass::Blank;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(record)) => LineClass::Record(record),
        Ok(_) => LineClass::NotObject,
        Err(_) => LineClass::Unparseable(text.to_owned()),
    }
}

/// Splits a buffer that holds whole lines into lines: on `\n`, with a final unterminated
/// fragment as its own line when it is not empty (Python's `splitlines` for `\n`).
pub fn split_lines(buffer: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = buffer.strip_suffix(b"\n").unwrap_or(buffer);
    let empty = buffer.is_empty();
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    let mut start = 0;
    ends.filter(move |_| !empty).map(move |end| {
        let line = &body[start..end];
        start = end + 1;
        line
    })
}

/// An unparseable line: the text that was there and its 0-based line index (blank lines counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 0-based index of the line in the file, blank lines counted.
    pub line: u64,
    /// The stripped text of the line.
    pub raw: String,
}

impl BadLine {
    /// The sentinel record `{"op": "_CORRUPT", "_raw": ..., "_line": ...}` that stands for this line.
    pub fn sentinel(&self) -> Object {
        let mut record = Object::new();
        record.insert("op".to_owned(), Value::from(CORRUPT_OP));
        record.insert("_raw".to_owned(), Value::from(self.raw.clone()));
        record.insert("_line".to_owned(), Value::from(self.line));
        record
    }
}

/// How many bytes of an oversized line its corrupt sentinel quotes.
pub const OVERSIZED_QUOTE_BYTES: usize = 256;

/// The corrupt sentinel of line `index`, too long to read, of `bytes` bytes beginning with
/// `prefix`: its `_raw` quotes the first [`OVERSIZED_QUOTE_BYTES`] and the length, `_bytes` holds
/// the length.
pub fn oversized_sentinel(index: u64, prefix: &[u8], bytes: u64) -> Object {
    let quoted = &prefix[..prefix.len().min(OVERSIZED_QUOTE_BYTES)];
    let raw = format!("{}… ({bytes} bytes)", String::from_utf8_lossy(quoted));
    let mut sentinel = BadLine { line: index, raw }.sentinel();
    sentinel.insert("_bytes".to_owned(), Value::from(bytes));
    sentinel
}

/// Tracks line numbers and decides, one line late, whether an unparseable line was corrupt
/// (another line followed it) or the torn tail of the file (nothing followed it).
#[derive(Debug, Default, Clone)]
pub struct LineDecoder {
    next_line: u64,
    pending: Option<BadLine>,
}

impl LineDecoder {
    /// A decoder positioned before the first line of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder positioned before line `line` of a file whose earlier lines were all decoded
    /// (and none of them is held back).
    pub fn starting_at(line: u64) -> Self {
        Self { next_line: line, pending: None }
    }

    /// Begins the next line: returns its index, and the previous line if it was unparseable,
    /// which is now known to be corrupt because a line follows it.
    pub fn start_line(&mut self) -> (u64, Option<BadLine>) {
        let index = self.next_line;
        self.next_line += 1;
        (index, self.pending.take())
    }

    /// Marks the current line (index from [`start_line`](Self::start_line)) as unparseable.
    pub fn hold_unparseable(&mut self, line: u64, raw: String) {
        self.pending = Some(BadLine { line, raw });
    }

    /// Classifies one line. Returns a corrupt line that this line proved was not the tail, and
    /// this line's class; an unparseable line is held back and reported later.
    pub fn push(&mut self, line: &[u8]) -> (Option<BadLine>, LineClass) {
        let (index, corrupt) = self.start_line();
        let class = classify(line);
        if let LineClass::Unparseable(raw) = &class {
            self.hold_unparseable(index, raw.clone());
        }
        (corrupt, class)
    }

    /// Ends the file: an unparseable last line is the torn tail (it "didn't happen").
    pub fn finish(self) -> Option<BadLine> {
        self.pending
    }

    /// The unparseable line held back, if the last line was one.
    pub fn pending(&self) -> Option<&BadLine> {
        self.pending.as_ref()
    }

    /// How many lines have been started.
    pub fn lines_seen(&self) -> u64 {
        self.next_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(file: &[u8]) -> (Vec<LineClass>, Vec<BadLine>, Option<BadLine>) {
        let mut decoder = LineDecoder::new();
        let (mut classes, mut corrupt) = (Vec::new(), Vec::new());
        for line in split_lines(file) {
            let (bad, class) = decoder.push(line);
            corrupt.extend(bad);
            classes.push(class);
        }
        (classes, corrupt, decoder.finish())
    }

    #[test]
    fn unparseable_last_line_is_a_torn_tail_whether_or_not_terminated() {
        for file in [&b"{}\n{\"op\": \"A"[..], b"{}\n{\"op\": \"A\n", b"{}\r\n{\"op\r\n"] {
            let (_, corrupt, torn) = decode(file);
            assert!(corrupt.is_empty());
            assert_eq!(torn.map(|t| t.line), Some(1));
        }
    }

    #[test]
    fn unparseable_line_followed_by_anything_is_corrupt_even_a_blank_line() {
        let (_, corrupt, torn) = decode(b"{}\n  not json \n\n");
        assert_eq!(torn, None);
        assert_eq!(corrupt, vec![BadLine { line: 1, raw: "not json".into() }]);
    }

    #[test]
    fn non_objects_and_blanks_are_skipped() {
        let (classes, _, _) = decode(b"[1]\n\"s\"\n \t\n{\"op\": \"X\"}\n");
        assert_eq!(classes[0], LineClass::NotObject);
        assert_eq!(classes[1], LineClass::NotObject);
        assert_eq!(classes[2], LineClass::Blank);
        assert!(matches!(classes[3], LineClass::Record(_)));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let (classes, _, _) = decode(b"{\"k\": \"\xff\"}\n");
        let LineClass::Record(record) = &classes[0] else { panic!("not a record: {classes:?}") };
        assert_eq!(record["k"], "\u{fffd}");
    }

    #[test]
    fn split_lines_matches_python_splitlines_on_newline() {
        assert_eq!(split_lines(b"").count(), 0);
        assert_eq!(split_lines(b"\n").collect::<Vec<_>>(), vec![&b""[..]]);
        assert_eq!(split_lines(b"a\nb").collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
        assert_eq!(split_lines(b"a\n\n").collect::<Vec<_>>(), vec![&b"a"[..], b""]);
    }
}
