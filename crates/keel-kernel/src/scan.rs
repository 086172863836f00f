//! The replay fast path's scanner: checks that one line is a JSON object and finds the few
//! top-level members a replay reads, without building a value.
//!
//! It is never the definition of a line's meaning, only a shortcut to it. It accepts a line only
//! when `serde_json` would parse the same text into an object (the general path, [`crate::line`])
//! and it would read the same members from it; anything it is unsure of (an escape in a member
//! it returns, a surrogate escape, a number with an exponent or many digits, deep nesting, a
//! repeated member) makes it return `None`, and the line takes the general path. Being stricter
//! than `serde_json` costs only speed; being looser would let a line count as a record that the
//! general path calls corrupt, so every "accept" below is one `serde_json` also makes.

/// A byte range `start..end` within the scanned text (which is at most `u32::MAX` bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        // The scanner refuses texts longer than `u32::MAX` bytes, so both fit.
        Self { start: start as u32, end: end as u32 }
    }

    /// The text this span covers in `base`, the text it was scanned from.
    pub fn of(self, base: &str) -> &str {
        &base[self.start as usize..self.end as usize]
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The members replay reads, found in one line. A string member is the span of its text between
/// the quotes (never holding an escape); `None` means absent or `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Members {
    pub op: Span,
    pub loop_ts: Option<Span>,
    pub lane: Option<Span>,
    /// The whole JSON text of the value, whatever its type.
    pub lease: Option<Span>,
    pub heartbeat_at: Option<Span>,
    pub ts: Option<Span>,
    pub seq: Option<u64>,
    pub seq_watermark: Option<u64>,
}

/// Nesting depth at most inside a member's value (`serde_json` allows 128 in all).
const DEPTH_MAX: u32 = 64;
/// Digits (and point) a number may have: fewer than 19 parse exactly as `i64`/`u64` and as a
/// finite `f64`, which `serde_json` never refuses.
const NUMBER_CHARS_MAX: usize = 18;

/// Scans one line, already stripped of surrounding white space.
pub(crate) fn members(text: &str) -> Option<Members> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') || u32::try_from(b.len()).is_err() {
        return None;
    }
    let mut m = Members::default();
    let mut op = None;
    // Which of the eight members have been seen: a repeat takes the general path, which keeps
    // the last one as `serde_json` and Python do.
    let mut seen = 0u8;
    let mut first = |bit: u8| -> Option<()> {
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        Some(())
    };
    let mut i = ws(b, 1);
    loop {
        if *b.get(i)? != b'"' {
            return None; // also `{}`: without an `op` the general path decides
        }
        let (key_end, escaped) = string_end(b, i + 1)?;
        if escaped {
            return None; // an escaped key may spell a member we read
        }
        let key = &b[i + 1..key_end - 1];
        i = ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = ws(b, i + 1);
        i = match key {
            b"op" => {
                first(1)?;
                let (end, span) = plain_string(b, i)?;
                op = Some(span);
                end
            }
            b"loop_ts" => string_or_null(b, i, &mut m.loop_ts, first(2))?,
            b"lane" => string_or_null(b, i, &mut m.lane, first(4))?,
            b"lease" => {
                first(8)?;
                let end = skip_value(b, i)?;
                m.lease = Some(Span::new(i, end));
                end
            }
            b"heartbeat_at" => string_or_null(b, i, &mut m.heartbeat_at, first(16))?,
            b"ts" => string_or_null(b, i, &mut m.ts, first(32))?,
            b"seq" => u64_or_null(b, i, &mut m.seq, first(64))?,
            b"seq_watermark" => u64_or_null(b, i, &mut m.seq_watermark, first(128))?,
            _ => skip_value(b, i)?,
        };
        i = ws(b, i);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            // The object must end the line: the text is stripped, so nothing may follow.
            b'}' if i + 1 == b.len() => {
                m.op = op?;
                return Some(m);
            }
            _ => return None,
        }
    }
}

/// JSON white space (not Python's: inside a line only these four separate tokens).
#[inline]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is zero, as a mask with the high bit of the first such byte set
/// (bits of later bytes may be set spuriously; only the lowest set bit is meaningful).
#[inline]
fn zero_byte(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The bytes of `word` that stop a string's fast scan, as (quotes, all stops: a quote, a
/// backslash or a control character). Like [`zero_byte`], only each mask's lowest set bit is
/// meaningful.
#[inline]
fn stops(word: u64) -> (u64, u64) {
    let quotes = zero_byte(word ^ (ONES * u64::from(b'"')));
    let others = zero_byte(word ^ (ONES * u64::from(b'\\'))) | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
    (quotes, quotes | others)
}

/// The end (just past the closing quote) of a string whose contents start at `i`, and whether it
/// held an escape. `None` for what `serde_json` refuses (a control character, a bad escape, no
/// closing quote) and for surrogate escapes, which the general path handles.
#[inline]
fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    // The usual string holds no escape: find its quote eight bytes at a time, inline, and leave
    // everything else to the out-of-line loop.
    while let Some(word) = b.get(i..i + 8) {
        let (quotes, hits) = stops(u64::from_le_bytes(word.try_into().ok()?));
        if hits != 0 {
            // Each mask's lowest bit is exact, so the first hit is a quote iff `quotes` has it.
            let first = hits.trailing_zeros();
            let at = i + (first / 8) as usize;
            if quotes & (1 << first) != 0 {
                return Some((at + 1, false));
            }
            return string_end_slow(b, at);
        }
        i += 8;
    }
    string_end_slow(b, i)
}

/// [`string_end`] from `i` onwards, for strings with escapes and the last few bytes of a text.
#[inline(never)]
fn string_end_slow(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        while let Some(word) = b.get(i..i + 8) {
            let (_, hits) = stops(u64::from_le_bytes(word.try_into().ok()?));
            if hits != 0 {
                i += (hits.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match *b.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
                        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                            return None;
                        }
                        let unit = u16::from_str_radix(hex, 16).ok()?;
                        if (0xD800..=0xDFFF).contains(&unit) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
}

/// A string without escapes at `i`: its end and the span of its contents.
fn plain_string(b: &[u8], i: usize) -> Option<(usize, Span)> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let (end, escaped) = string_end(b, i + 1)?;
    if escaped {
        return None;
    }
    Some((end, Span::new(i + 1, end - 1)))
}

fn null_end(b: &[u8], i: usize) -> Option<usize> {
    (b.get(i..i + 4)? == b"null").then_some(i + 4)
}

/// A member read as an optional string: a plain string or `null`. `fresh` is `None` for a repeat.
fn string_or_null(b: &[u8], i: usize, slot: &mut Option<Span>, fresh: Option<()>) -> Option<usize> {
    fresh?;
    if *b.get(i)? == b'n' {
        return null_end(b, i);
    }
    let (end, span) = plain_string(b, i)?;
    *slot = Some(span);
    Some(end)
}

/// A member read as an optional `u64`: a plain non-negative integer or `null`.
fn u64_or_null(b: &[u8], mut i: usize, slot: &mut Option<u64>, fresh: Option<()>) -> Option<usize> {
    fresh?;
    if *b.get(i)? == b'n' {
        return null_end(b, i);
    }
    let start = i;
    let mut value = 0u64;
    while let Some(&digit @ b'0'..=b'9') = b.get(i) {
        value = value * 10 + u64::from(digit - b'0');
        i += 1;
        if i - start > NUMBER_CHARS_MAX {
            return None;
        }
    }
    // No digits, a leading zero, a fraction or an exponent: the general path reads it.
    let leading_zero = b[start] == b'0' && i - start > 1;
    if i == start || leading_zero || matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    // A counter no writer could have issued is damage, which only the general path defines.
    if value > crate::record::COUNTER_MAX {
        return None;
    }
    *slot = Some(value);
    Some(i)
}

/// The end of a number at `i` in the subset of JSON's grammar read here: `-?(0|[1-9][0-9]*)`,
/// then optionally `.[0-9]+`, with no exponent and few digits.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let start = i;
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let fraction = i;
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        if i == fraction {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) || i - start > NUMBER_CHARS_MAX {
        return None;
    }
    Some(i)
}

/// The end of the JSON value at `i` (any type, nested at most [`DEPTH_MAX`] deep).
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    // One bit per open container, innermost lowest: 1 for an object, 0 for an array.
    let mut objects = 0u64;
    let mut depth = 0u32;
    'value: loop {
        match *b.get(i)? {
            b'"' => i = string_end(b, i + 1)?.0,
            open @ (b'{' | b'[') => {
                let is_object = open == b'{';
                i = ws(b, i + 1);
                if *b.get(i)? == if is_object { b'}' } else { b']' } {
                    i += 1;
                } else {
                    depth += 1;
                    if depth > DEPTH_MAX {
                        return None;
                    }
                    objects = (objects << 1) | u64::from(is_object);
                    if is_object {
                        i = member_value_start(b, i)?;
                    }
                    continue 'value;
                }
            }
            b't' => i = (b.get(i..i + 4)? == b"true").then_some(i + 4)?,
            b'f' => i = (b.get(i..i + 5)? == b"false").then_some(i + 5)?,
            b'n' => i = null_end(b, i)?,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => return None,
        }
        // After a value: close containers until one continues with a comma.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = ws(b, i);
            let in_object = objects & 1 == 1;
            match (*b.get(i)?, in_object) {
                (b',', true) => {
                    i = member_value_start(b, ws(b, i + 1))?;
                    continue 'value;
                }
                (b',', false) => {
                    i = ws(b, i + 1);
                    continue 'value;
                }
                (b'}', true) | (b']', false) => {
                    objects >>= 1;
                    depth -= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// From a member's key at `i` (`"key" :`), the start of its value.
fn member_value_start(b: &[u8], i: usize) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let (key_end, _) = string_end(b, i + 1)?;
    let colon = ws(b, key_end);
    if *b.get(colon)? != b':' {
        return None;
    }
    Some(ws(b, colon + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        members(text).is_some()
    }

    #[test]
    fn reads_the_members_of_a_plain_record() {
        let text = r#"{"lane": "api", "lease": {"tree": ["a\\b", 1.5, -0, true, null, {}], "k": []}, "loop_ts": "t", "op": "ACQUIRE", "seq": 12, "ts": null}"#;
        let m = members(text).expect("plain record");
        assert_eq!(m.op.of(text), "ACQUIRE");
        assert_eq!(m.lane.map(|s| s.of(text)), Some("api"));
        assert_eq!(m.loop_ts.map(|s| s.of(text)), Some("t"));
        assert_eq!(m.lease.map(|s| s.of(text)), Some(r#"{"tree": ["a\\b", 1.5, -0, true, null, {}], "k": []}"#));
        assert_eq!((m.seq, m.seq_watermark, m.ts, m.heartbeat_at), (Some(12), None, None, None));
    }

    #[test]
    fn leaves_to_the_general_path_what_it_does_not_fully_understand() {
        for text in [
            r#"{"op": "A", "x": "\ud800"}"#,            // lone surrogate: serde_json refuses it
            r#"{"op": "A", "x": "\ud83d\ude00"}"#,      // a valid pair, left to serde_json too
            r#"{"op": "A", "x": 1e400}"#,               // an exponent: left to serde_json
            r#"{"op": "A", "x": 1234567890123456789}"#, // many digits
            r#"{"op": "A", "lane": "a\"b"}"#,           // escape in a member read
            r#"{"o\u0070": "A"}"#,                      // escaped key
            r#"{"op": "A", "op": "B"}"#,                // repeated member
            r#"{"op": "A", "seq": 1.0}"#,               // seq not a plain integer
            r#"{"op": "A", "seq": 01}"#,                // not JSON
            r#"{"op": "A", "lane": 5}"#,                // identity of another type
            r#"{"op": null}"#,
            r#"{"lane": "x"}"#, // no op
            "{}",
            r#"{"op": "A"} "#, // not stripped
            r#"{"op": "A"}}"#,
            r#"{"op": "A", "x": [1,]}"#,
            r#"{"op": "A", "x": {"k" 1}}"#,
            r#"{"op": "A", "x": "tab	inside"}"#,
            r#"{"op": "A", "x": tru}"#,
            r#"{"op": "A", "x": -}"#,
            r#"{"op": "A", "x": 1.}"#,
            r#"{"op": "A", "x": "\x"}"#,
            r#"{"op": "A", "x": "unterminated}"#,
        ] {
            assert!(!accepts(text), "accepted {text}");
        }
        // The innermost `[]` is empty, so n brackets nest n - 1 open containers.
        let deep = format!(r#"{{"op": "A", "x": {}{}}}"#, "[".repeat(66), "]".repeat(66));
        assert!(!accepts(&deep));
        let fine = format!(r#"{{"op": "A", "x": {}{}}}"#, "[".repeat(65), "]".repeat(65));
        assert!(accepts(&fine));
    }

    #[test]
    fn everything_it_accepts_serde_json_parses_as_an_object() {
        for text in [
            r#"{"op": "A", "x": "\u00e9\n\t\/", "y": [[], {}, [{"a": [0.5]}]]}"#,
            "{\"op\":\"A\",\"seq\":0,\"seq_watermark\":7}",
            "{ \"op\" : \"A\" ,\r\n\"lease\" : \"not an object\" }",
            "{\"op\": \"\u{e9}\u{2028}\"}",
        ] {
            assert!(accepts(text), "refused {text}");
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok());
        }
    }
}
