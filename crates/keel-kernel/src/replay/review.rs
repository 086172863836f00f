//! Reviews of damage: the `REVIEW` record, the excuses it carries, and the damage left unexcused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LiveState;
use crate::line::BadLine;
use crate::value::Object;

/// The `op` of keel's record that excuses corrupt lines: written by the writer that repaired a
/// torn tail (the fragment a crashed writer left was never acknowledged) or by an operator who
/// reviewed the lines. Other readers (dos-kernel) see an unknown op and ignore it.
pub const REVIEW_OP: &str = "REVIEW";

/// Names one corrupt sentinel: its line index and the BLAKE3 hash of its raw text. Stable across
/// compaction, which carries sentinels through unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Excuse {
    /// The sentinel's `_line`.
    pub line: u64,
    /// BLAKE3 of the sentinel's `_raw`, lowercase hex.
    pub raw_blake3: String,
}

impl Excuse {
    /// The excuse key of a `_CORRUPT` sentinel record.
    pub fn of_sentinel(sentinel: &Object) -> Option<Self> {
        let line = sentinel.get("_line")?.as_u64()?;
        let raw = sentinel.get("_raw")?.as_str()?;
        Some(Self { line, raw_blake3: blake3::hash(raw.as_bytes()).to_hex().to_string() })
    }

    pub(super) fn from_json(value: &Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }
}

/// The member of a `REVIEW` whose value `true` says every line it excuses was a torn tail: the
/// unterminated fragment a crashed writer left (never acknowledged), which the writer that found
/// it terminated and excused. Such a line never happened, so `keel journal verify` notes it
/// instead of calling it damage; an operator's review of a whole bad line carries no such member.
pub const TORN_TAIL: &str = "torn_tail";

/// The member a corrupt sentinel gains (`true`) once a torn-tail `REVIEW` names it. It lives on
/// the sentinel, so compaction (which carries sentinels through) and the head snapshot keep it.
pub const TORN_TAIL_SENTINEL: &str = "_torn_tail";

/// The reason of a torn-tail `REVIEW`: also how one written before [`TORN_TAIL`] existed is known.
const TORN_TAIL_REASON: &str = "torn tail: an unterminated fragment a crashed writer left, never acknowledged";

/// The member of a `REVIEW` that raises the generation counter to at least its value: an operator
/// who accepts damage accepts that each damaged line may have been a grant whose token was handed
/// out, so the next grant's token is above all of them.
pub const GENERATION_FLOOR: &str = "generation_floor";

/// A `REVIEW` record excusing these sentinels, with a reason and who wrote it.
pub fn review_record(excuses: &[Excuse], reason: &str, by: &str) -> Object {
    let mut record = Object::new();
    record.insert("op".to_owned(), Value::from(REVIEW_OP));
    record.insert("excuses".to_owned(), serde_json::to_value(excuses).expect("excuses serialise"));
    record.insert("reason".to_owned(), Value::from(reason));
    record.insert("by".to_owned(), Value::from(by));
    record
}

/// The `REVIEW` a writer appends after terminating torn tails (a crashed writer's fragments),
/// excusing them as such ([`TORN_TAIL`]).
pub fn torn_tail_review(excuses: &[Excuse], by: &str) -> Object {
    let mut record = review_record(excuses, TORN_TAIL_REASON, by);
    record.insert(TORN_TAIL.to_owned(), Value::Bool(true));
    record
}

/// Whether a `REVIEW` excuses torn tails: it says so, or it is one a keel writer appended with
/// the same reason before it said so.
fn excuses_torn_tails(review: &Object) -> bool {
    review.get(TORN_TAIL) == Some(&Value::Bool(true))
        || review.get("reason").and_then(Value::as_str) == Some(TORN_TAIL_REASON)
}

impl LiveState {
    /// Folds a `REVIEW`: its excuses, the torn tails among the sentinels it names, and the
    /// generation floor of an accepted review.
    pub(super) fn apply_review(&mut self, record: &Object) {
        if let Some(Value::Array(excuses)) = record.get("excuses") {
            let excuses: Vec<Excuse> = excuses.iter().filter_map(Excuse::from_json).collect();
            if excuses_torn_tails(record) {
                self.mark_torn_tails(&excuses);
            }
            self.excused.extend(excuses);
        }
        // A review that accepts damage raises the counter past every token the damaged lines
        // could have issued, so none is issued again.
        if let Some(floor) = record.get(GENERATION_FLOOR).and_then(Value::as_u64) {
            self.counter = self.counter.max(floor);
        }
    }

    /// Marks the sentinels `excuses` name as torn tails. A repair follows the fragment it excuses
    /// closely, so the search runs from the newest sentinel, and hashes only a sentinel whose line
    /// number matches.
    fn mark_torn_tails(&mut self, excuses: &[Excuse]) {
        let mut left = excuses.len();
        for sentinel in self.corrupt.iter_mut().rev() {
            if left == 0 {
                break;
            }
            let line = sentinel.get("_line").and_then(Value::as_u64);
            if !excuses.iter().any(|e| Some(e.line) == line) {
                continue;
            }
            if Excuse::of_sentinel(sentinel).is_some_and(|e| excuses.contains(&e)) {
                sentinel.insert(TORN_TAIL_SENTINEL.to_owned(), Value::Bool(true));
                left -= 1;
            }
        }
    }

    /// Whether this corrupt sentinel is a torn tail that a writer's repair excused: a fragment a
    /// crashed writer left, never acknowledged, so never damage. A sentinel that merely carries
    /// the mark is not one unless a `REVIEW` in this journal also excuses it.
    pub fn is_excused_torn_tail(&self, sentinel: &Object) -> bool {
        sentinel.get(TORN_TAIL_SENTINEL) == Some(&Value::Bool(true)) && self.is_excused(sentinel)
    }

    /// Corrupt sentinels no `REVIEW` record has excused: damage that must stop new grants, since a
    /// corrupted `ACQUIRE` would otherwise silently free a region.
    pub fn damage(&self) -> Vec<&Object> {
        self.corrupt.iter().filter(|sentinel| !self.is_excused(sentinel)).collect()
    }

    /// The damage awaiting review, as corrupt sentinels in journal order: the corrupt lines no
    /// `REVIEW` excuses, then `whole_bad_tail`, a complete last line that does not parse. Replay
    /// calls that line a torn tail, but it was written whole (a crashed writer leaves no `\n`)
    /// and the next append would make it a corrupt line, so it is damage like any other.
    pub fn unreviewed(&self, whole_bad_tail: Option<&BadLine>) -> Vec<Object> {
        let mut damage: Vec<Object> = self.damage().into_iter().cloned().collect();
        damage.extend(whole_bad_tail.map(BadLine::sentinel));
        damage
    }

    /// What stops grants: the damage awaiting review, less the fragments a writer's repair has
    /// begun to excuse (`repairing`: a crashed writer's lines, never acknowledged).
    pub fn stopping_grants(&self, whole_bad_tail: Option<&BadLine>, repairing: &[Excuse]) -> Vec<Object> {
        let mut damage = self.unreviewed(whole_bad_tail);
        damage.retain(|sentinel| !Excuse::of_sentinel(sentinel).is_some_and(|e| repairing.contains(&e)));
        damage
    }

    /// Whether a `REVIEW` record has excused this corrupt sentinel.
    pub fn is_excused(&self, sentinel: &Object) -> bool {
        Excuse::of_sentinel(sentinel).is_some_and(|e| self.excused.contains(&e))
    }

    /// The excuses recorded so far that still name a sentinel of this journal (what a compaction
    /// must carry forward).
    pub fn excuses_in_force(&self) -> Vec<Excuse> {
        self.corrupt.iter().filter_map(Excuse::of_sentinel).filter(|e| self.excused.contains(e)).collect()
    }
}
