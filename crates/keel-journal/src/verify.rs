//! `journal verify`'s verdict: everything in a journal that is damage, found in one replay.
//!
//! Damage is what the service would not grant past or what the arbiter never admits: a corrupt
//! line (reviewed or not: a review lets grants go on, but the line stays on record), a whole last
//! line that does not parse, and two live leases whose regions collide.

use std::collections::BTreeMap;
use std::path::Path;

use keel_fs::FsError;
use keel_kernel::audit::Collision;
use keel_kernel::line::LineClass;
use serde::Serialize;
use serde_json::Value;

/// Most colliding pairs a report lists.
pub const COLLISIONS_LISTED_MAX: usize = 100;

/// One corrupt line.
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
    /// Why a line that parses is damage anyway.
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

/// What `journal verify` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The journal.
    pub path: String,
    /// Lines, blank ones counted.
    pub lines: u64,
    /// Records folded.
    pub records: u64,
    /// Records per op.
    pub ops: BTreeMap<String, u64>,
    /// Every corrupt line.
    pub corrupt: Vec<CorruptLine>,
    /// The last line, if it does not parse.
    pub torn_tail: Option<TornTail>,
    /// Live leases.
    pub live_leases: usize,
    /// Why compaction would refuse this journal, if it would.
    pub compaction_refused: Option<String>,
    /// Pairs of live leases whose regions collide (at most [`COLLISIONS_LISTED_MAX`]).
    pub collisions: Vec<Collision>,
    /// Whether there are more than listed.
    pub more_collisions: bool,
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
    Ok(verify_read(path, &crate::replay_path(path)?))
}

/// The report on the journal at `path`, already read (for example with
/// [`crate::read::replay_path_or_empty`]).
pub fn verify_read(path: &Path, read: &crate::ReadOutcome) -> Report {
    let replayed = &read.replayed;
    let state = &replayed.state;
    let corrupt = state
        .corrupt()
        .iter()
        .map(|sentinel| {
            let index = sentinel.get("_line").and_then(Value::as_u64);
            CorruptLine {
                line_number: index.map(|i| i + 1),
                line_index: index,
                raw: sentinel.get("_raw").cloned(),
                reviewed: state.is_excused(sentinel),
                bytes: sentinel.get("_bytes").cloned(),
                why: sentinel.get("_raw").and_then(why_damaged),
            }
        })
        .collect::<Vec<_>>();
    let live: Vec<_> = state.live_with_identity().collect();
    let (collisions, more_collisions) = keel_kernel::audit::collisions(&live, COLLISIONS_LISTED_MAX);
    // Replay ignores an unparseable last line either way (the spec's torn tail), but only one
    // without its `\n` can be a write cut short; a whole one stops grants until it is reviewed.
    let torn_tail = replayed.torn_tail.as_ref().map(|t| TornTail {
        line_number: t.line + 1,
        line_index: t.line,
        raw: t.raw.clone(),
        terminated: read.terminated,
    });
    let clean = corrupt.is_empty() && !torn_tail.as_ref().is_some_and(|t| t.terminated) && collisions.is_empty();
    Report {
        path: path.display().to_string(),
        lines: replayed.lines,
        records: state.record_count(),
        ops: state.op_counts(),
        corrupt,
        torn_tail,
        live_leases: state.live_count(),
        compaction_refused: state.compact_checked().err().map(|e| e.to_string()),
        collisions,
        more_collisions,
        clean,
    }
}
