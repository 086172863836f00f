//! `journal verify`'s verdict: everything in a journal that is damage, found in one replay, and
//! what is only worth a note.
//!
//! Damage is what the service would not grant past or what the arbiter never admits: a corrupt
//! line (reviewed or not: an operator's review lets grants go on, but the line stays on record),
//! a whole last line that does not parse, and two live leases whose regions collide. A torn tail
//! is not damage: a crashed writer's unterminated fragment was never acknowledged, so it "didn't
//! happen" (the spec), and it stays that once the next writer has terminated it and excused it as
//! a torn tail ([`keel_kernel::replay::TORN_TAIL`]), compaction included. Both are notes.
//!
//! [`Report::damage`] counts what the report lists as damage, so it is nonzero exactly when the
//! journal is not [`Report::clean`].

use std::collections::BTreeMap;
use std::path::Path;

use keel_fs::FsError;
use keel_kernel::audit::Collision;
use keel_kernel::line::LineClass;
use serde::Serialize;
use serde_json::Value;

use crate::read::Progress;

/// Most colliding pairs a report lists.
pub const COLLISIONS_LISTED_MAX: usize = 100;

/// Why a whole last line that does not parse is damage (replay alone would ignore it).
pub const WHOLE_BAD_LAST_LINE: &str = "a whole last line that does not parse: replay ignores it, but `keel lease` \
                                       grants nothing until `keel journal review --accept`";

/// One corrupt line: damage.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptLine {
    /// 1-based.
    pub line_number: Option<u64>,
    /// 0-based.
    pub line_index: Option<u64>,
    /// Its text, as kept in the journal's sentinel.
    pub raw: Option<Value>,
    /// Whether a review excuses it (grants go on past it).
    pub reviewed: bool,
    /// Its length, when it was too long to keep whole.
    pub bytes: Option<Value>,
    /// Why it is damage when its text does not say so: a line that parses but is a record no
    /// keel writes, or a whole last line that does not parse ([`WHOLE_BAD_LAST_LINE`]).
    pub why: Option<&'static str>,
}

/// The unparseable last line.
#[derive(Debug, Clone, Serialize)]
pub struct TornTail {
    /// 1-based.
    pub line_number: u64,
    /// 0-based.
    pub line_index: u64,
    /// Its text.
    pub raw: String,
    /// Whether it is whole (ends with `\n`): then it is damage, not a write cut short.
    pub terminated: bool,
}

/// What a note is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// The last line is a fragment without its `\n`: a write cut short, which the next writer
    /// terminates and excuses.
    TornTail,
    /// A corrupt line that a writer's repair excused as a torn tail.
    ExcusedTornTail,
}

impl NoteKind {
    /// How a text report names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::TornTail => "torn tail",
            Self::ExcusedTornTail => "excused torn tail",
        }
    }

    /// What it means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::TornTail => "an unacknowledged write cut short; it did not happen",
            Self::ExcusedTornTail => {
                "an unacknowledged write cut short, which the next writer terminated and excused; it did not happen"
            }
        }
    }
}

/// A line worth knowing about that is not damage.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    /// What it is.
    pub kind: NoteKind,
    /// 1-based.
    pub line_number: u64,
    /// 0-based.
    pub line_index: u64,
    /// Its text.
    pub raw: String,
    /// [`NoteKind::meaning`].
    pub meaning: &'static str,
}

impl Note {
    fn new(kind: NoteKind, line_index: u64, raw: String) -> Self {
        Self { kind, line_number: line_index + 1, line_index, raw, meaning: kind.meaning() }
    }
}

/// What `journal verify` reports.
#[derive(Debug, Clone, Serialize)]
#[must_use = "a report says whether the journal is damaged"]
pub struct Report {
    /// The journal.
    pub path: String,
    /// Lines, blank ones counted.
    pub lines: u64,
    /// Records folded.
    pub records: u64,
    /// Records per op.
    pub ops: BTreeMap<String, u64>,
    /// Every corrupt line that is damage, a whole bad last line included.
    pub corrupt: Vec<CorruptLine>,
    /// The last line, if it does not parse (whole or not: see [`TornTail::terminated`]).
    pub torn_tail: Option<TornTail>,
    /// Torn tails, excused or not: lines that are not damage.
    pub notes: Vec<Note>,
    /// Live leases.
    pub live_leases: usize,
    /// Why compaction would refuse this journal, if it would.
    pub compaction_refused: Option<String>,
    /// Pairs of live leases whose regions collide (at most [`COLLISIONS_LISTED_MAX`]).
    pub collisions: Vec<Collision>,
    /// Whether there are more than listed.
    pub more_collisions: bool,
    /// How much damage is listed: corrupt lines plus colliding pairs.
    pub damage: usize,
    /// No damage at all.
    pub clean: bool,
}

/// Why a line that parses is damage anyway (a record no keel writes), if it is one.
pub fn why_damaged(raw: &Value) -> Option<&'static str> {
    match keel_kernel::line::classify_text(raw.as_str()?) {
        LineClass::Record(record) => keel_kernel::record::malformed(&record),
        _ => None,
    }
}

/// Replays the journal at `path` and reports its damage.
pub fn verify(path: &Path) -> Result<Report, FsError> {
    verify_observed(path, &mut |_| {})
}

/// [`verify`], telling `progress` how much of the journal has been read.
pub fn verify_observed(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Report, FsError> {
    Ok(verify_read(path, &crate::read::replay_path_observed(path, progress)?))
}

/// The report on the journal at `path`, already read (for example with
/// [`crate::read::replay_path_or_empty`]).
pub fn verify_read(path: &Path, read: &crate::ReadOutcome) -> Report {
    let replayed = &read.replayed;
    let state = &replayed.state;
    let mut corrupt = Vec::new();
    let mut notes = Vec::new();
    for sentinel in state.corrupt() {
        let index = sentinel.get("_line").and_then(Value::as_u64);
        let raw = sentinel.get("_raw");
        if state.is_excused_torn_tail(sentinel) {
            // Excused as a torn tail only if it names its line and text, so both are there.
            let (index, raw) = (index.unwrap_or_default(), raw.and_then(Value::as_str).unwrap_or_default());
            notes.push(Note::new(NoteKind::ExcusedTornTail, index, raw.to_owned()));
            continue;
        }
        corrupt.push(CorruptLine {
            line_number: index.map(|i| i + 1),
            line_index: index,
            raw: raw.cloned(),
            reviewed: state.is_excused(sentinel),
            bytes: sentinel.get("_bytes").cloned(),
            why: raw.and_then(why_damaged),
        });
    }
    // Replay ignores an unparseable last line either way (the spec's torn tail), but only one
    // without its `\n` can be a write cut short; a whole one stops grants until it is reviewed.
    let torn_tail = replayed.torn_tail.as_ref().map(|t| TornTail {
        line_number: t.line + 1,
        line_index: t.line,
        raw: t.raw.clone(),
        terminated: read.terminated,
    });
    match &torn_tail {
        Some(tail) if tail.terminated => corrupt.push(CorruptLine {
            line_number: Some(tail.line_number),
            line_index: Some(tail.line_index),
            raw: Some(Value::from(tail.raw.clone())),
            reviewed: false,
            bytes: None,
            why: Some(WHOLE_BAD_LAST_LINE),
        }),
        Some(tail) => notes.push(Note::new(NoteKind::TornTail, tail.line_index, tail.raw.clone())),
        None => {}
    }
    let live: Vec<_> = state.live_with_identity().collect();
    let (collisions, more_collisions) = keel_kernel::audit::collisions(&live, COLLISIONS_LISTED_MAX);
    let damage = corrupt.len() + collisions.len();
    Report {
        path: path.display().to_string(),
        lines: replayed.lines,
        records: state.record_count(),
        ops: state.op_counts(),
        corrupt,
        torn_tail,
        notes,
        live_leases: state.live_count(),
        compaction_refused: state.compact_checked().err().map(|e| e.to_string()),
        collisions,
        more_collisions,
        damage,
        clean: damage == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::json::to_line;
    use keel_kernel::line::BadLine;
    use keel_kernel::replay::{Excuse, review_record, torn_tail_review};

    const ACQUIRE: &str = r#"{"lane": "a", "lease": {"lane": "a", "loop_ts": "t", "tree": ["a/"]}, "loop_ts": "t", "op": "ACQUIRE", "seq": 1}"#;

    /// The report on a journal holding `text`; its damage count and verdict must agree.
    fn report(text: &str) -> Report {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, text).expect("write journal");
        let report = verify(&path).expect("verify");
        assert_eq!(report.damage, report.corrupt.len() + report.collisions.len());
        assert_eq!(report.damage == 0, report.clean, "the count matches the verdict: {report:?}");
        report
    }

    /// The excuse of line `index` holding `raw`.
    fn excuse(index: u64, raw: &str) -> Excuse {
        Excuse::of_sentinel(&BadLine { line: index, raw: raw.to_owned() }.sentinel()).expect("line and raw")
    }

    fn kinds(report: &Report) -> Vec<(NoteKind, u64)> {
        report.notes.iter().map(|n| (n.kind, n.line_number)).collect()
    }

    #[test]
    fn a_torn_tail_a_writer_excused_is_a_note_not_damage() {
        let fragment = r#"{"op": "ACQUIRE", "lane": "x", "loo"#;
        let review = to_line(&torn_tail_review(&[excuse(1, fragment)], "writer"));
        let report = report(&format!("{ACQUIRE}\n{fragment}\n{review}\n"));
        assert!(report.clean && report.corrupt.is_empty(), "{report:?}");
        assert_eq!(kinds(&report), [(NoteKind::ExcusedTornTail, 2)]);
        assert_eq!(report.notes[0].raw, fragment);
    }

    #[test]
    fn a_torn_tail_excused_and_compacted_is_still_a_note() {
        let fragment = r#"{"op": "ACQ"#;
        let review = to_line(&torn_tail_review(&[excuse(1, fragment)], "writer"));
        let replayed = keel_kernel::replay_bytes(format!("{ACQUIRE}\n{fragment}\n{review}\n").as_bytes());
        let mut compacted: Vec<String> = replayed.state.compact().iter().map(to_line).collect();
        let carried = review_record(&replayed.state.excuses_in_force(), "carried forward by compaction", "writer");
        compacted.push(to_line(&carried));
        let report = report(&(compacted.join("\n") + "\n"));
        assert!(report.clean, "{report:?}");
        assert_eq!(kinds(&report), [(NoteKind::ExcusedTornTail, 2)]);
    }

    #[test]
    fn an_unrepaired_torn_tail_is_a_note_not_damage() {
        let report = report(&format!("{ACQUIRE}\n{{\"op\": \"ACQ"));
        assert!(report.clean, "{report:?}");
        assert_eq!(kinds(&report), [(NoteKind::TornTail, 2)]);
        assert_eq!(report.torn_tail.as_ref().map(|t| t.terminated), Some(false));
    }

    #[test]
    fn a_whole_bad_last_line_is_counted_as_damage() {
        let report = report(&format!("{ACQUIRE}\n{{not json\n"));
        assert_eq!((report.clean, report.damage), (false, 1));
        assert_eq!(report.corrupt[0].line_number, Some(2));
        assert_eq!(report.corrupt[0].why, Some(WHOLE_BAD_LAST_LINE));
        assert!(report.notes.is_empty());
    }

    #[test]
    fn a_line_an_operator_reviewed_stays_damage() {
        let review = to_line(&review_record(&[excuse(1, "garbage")], "reviewed by an operator", "ops"));
        let report = report(&format!("{ACQUIRE}\ngarbage\n{review}\n"));
        assert_eq!((report.clean, report.damage), (false, 1));
        assert!(report.corrupt[0].reviewed);
        assert!(report.notes.is_empty());
    }

    #[test]
    fn the_torn_tail_mark_without_an_excuse_is_damage() {
        let sentinel = r#"{"_line": 1, "_raw": "x", "_torn_tail": true, "op": "_CORRUPT"}"#;
        let report = report(&format!("{ACQUIRE}\n{sentinel}\n"));
        assert_eq!((report.clean, report.damage), (false, 1), "{report:?}");
        assert!(report.notes.is_empty());
    }

    #[test]
    fn colliding_live_leases_are_counted_as_damage() {
        let other =
            ACQUIRE.replace(r#""loop_ts": "t""#, r#""loop_ts": "u""#).replace(r#""lane": "a""#, r#""lane": "b""#);
        let report = report(&format!("{ACQUIRE}\n{other}\n"));
        assert_eq!((report.clean, report.damage, report.collisions.len()), (false, 1, 1), "{report:?}");
    }
}
