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

impl LiveState {
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
