//! Journal replay: a streaming fold from records to the live lease set, generations and `next_seq`,
//! and compaction of that state back into records.
//!
//! Memory is proportional to the live set (plus the corrupt sentinels, which are never dropped),
//! not to the journal. Every operation on the live set is O(1) amortised, so thousands of live
//! leases cost no more per record than one.
//!
//! The fold and the streaming replay live here; the live set, the parsing of lines, reviews of
//! damage, and snapshots with compaction each have a file of their own.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::line::{BadLine, CORRUPT_OP, LineDecoder, line_text};
use crate::value::{Object, identity_text, python_eq, seq_number, truthy};

// `compact` and `review` add `impl LiveState` blocks; as child modules they see its private
// fields, so those stay private. What the files share with each other is `pub(super)`.
mod compact;
mod live_set;
mod parse;
mod review;

pub use compact::{CompactError, GENERATION_WATERMARK, StateSnapshot};
pub use parse::ParsedChunk;
pub use review::{Excuse, GENERATION_FLOOR, REVIEW_OP, TORN_TAIL, TORN_TAIL_SENTINEL, review_record, torn_tail_review};

use live_set::{Body, IdRef, Key, LiveSet};
use parse::{FastEffect, FastRecord, Parsed, parse_stripped};

/// Hash maps keyed by [`Identity`] and looked up by [`IdRef`] (no allocation per lookup).
type FxMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A lease's identity: `(loop_ts, lane)`, each as Python's `str(value or "")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// The lease's loop timestamp (its unique run key).
    pub loop_ts: String,
    /// The lane name.
    pub lane: String,
}

impl Identity {
    /// The lease at `loop_ts` on `lane`.
    pub fn new(lane: impl Into<String>, loop_ts: impl Into<String>) -> Self {
        Self { loop_ts: loop_ts.into(), lane: lane.into() }
    }

    /// The identity of a record or lease body.
    pub fn of(object: &Object) -> Self {
        Self { loop_ts: identity_text(object.get("loop_ts")), lane: identity_text(object.get("lane")) }
    }

    /// `("", "")`: a state record with this identity is ignored.
    pub fn is_empty(&self) -> bool {
        self.as_ref().is_empty()
    }

    fn as_ref(&self) -> IdRef<'_> {
        IdRef { loop_ts: &self.loop_ts, lane: &self.lane }
    }
}

/// One row of the generation table: the fencing token of a live lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Generation {
    /// The lease's loop timestamp.
    pub loop_ts: String,
    /// The lane name.
    pub lane: String,
    /// The generation: a counter that only rises across grants.
    pub generation: u64,
}

/// Members a lease body is built from when an `ACQUIRE`/`RECONCILE` has no `lease` object.
const BODY_MEMBERS: [&str; 12] = [
    "lane",
    "lane_kind",
    "tree",
    "loop_ts",
    "host_id",
    "pid",
    "acquired_at",
    "heartbeat_at",
    "ttl_minutes",
    "holder",
    "run_id",
    "proc_starttime",
];

/// How many distinct `op` names [`LiveState::op_counts`] tracks before counting the rest as `"*other*"`.
pub const OP_NAMES_MAX: usize = 64;

/// The state a journal folds to. Feed it records in append order with [`apply`](Self::apply).
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    live: LiveSet,
    /// Generation rows of identities that are not live: only a `CHECKPOINT` leaves such rows
    /// (dos-kernel keeps them, so compaction carries them on). Live leases keep theirs in the slot.
    orphan_generations: FxMap<Identity, u64>,
    counter: u64,
    max_seq: u64,
    corrupt: Vec<Object>,
    records: u64,
    /// Hashed, not ordered: it is counted for every record and read rarely.
    op_counts: FxMap<String, u64>,
    excused: BTreeSet<Excuse>,
}

impl LiveState {
    /// The state of an empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one record (a parsed JSON object) into the state.
    pub fn apply(&mut self, record: &Object) {
        self.apply_taking(record, None);
    }

    /// [`apply`](Self::apply), taking the record: a `CHECKPOINT`'s lease bodies move into the
    /// live set instead of being copied, which halves the memory a large checkpoint needs.
    fn apply_owned(&mut self, mut record: Object) {
        let is_checkpoint = record_op(&record) == "CHECKPOINT";
        let leases = match record.get_mut("leases") {
            Some(Value::Array(leases)) if is_checkpoint => Some(std::mem::take(leases)),
            _ => None,
        };
        self.apply_taking(&record, leases);
    }

    /// `checkpoint_leases`: a `CHECKPOINT`'s lease bodies, already taken out of `record`.
    fn apply_taking(&mut self, record: &Object, checkpoint_leases: Option<Vec<Value>>) {
        self.records += 1;
        self.max_seq = self.max_seq.max(seq_number(record.get("seq"))).max(seq_number(record.get("seq_watermark")));
        let op = record_op(record);
        self.count_op(op);
        match op {
            "ACQUIRE" | "RECONCILE" => {
                let identity = Identity::of(record);
                if identity.is_empty() {
                    return;
                }
                let body = match record.get("lease") {
                    Some(Value::Object(lease)) => lease.clone(),
                    _ => {
                        BODY_MEMBERS.iter().filter_map(|&k| record.get(k).map(|v| (k.to_owned(), v.clone()))).collect()
                    }
                };
                self.grant(Key::new(identity.as_ref()), Body::object(body));
            }
            "RELEASE" | "SCAVENGE" => self.remove(Key::new(Identity::of(record).as_ref())),
            "HEARTBEAT" => {
                if let Some(slot) = self.live.slot_mut(Key::new(Identity::of(record).as_ref())) {
                    beat(slot.body.get_mut(), record);
                }
            }
            "ADOPT" => {
                if let Some(slot) = self.live.slot_mut(Key::new(Identity::of(record).as_ref())) {
                    adopt(slot.body.get_mut(), record);
                }
            }
            "CHECKPOINT" => self.checkpoint(record, checkpoint_leases),
            CORRUPT_OP => self.corrupt.push(record.clone()),
            REVIEW_OP => self.apply_review(record),
            _ => {}
        }
    }

    /// Folds a record that the scanner took apart on the fast path.
    fn apply_fast(&mut self, fast: FastRecord<'_>) {
        self.records += 1;
        self.max_seq = self.max_seq.max(fast.seq);
        self.count_op(fast.op);
        match fast.effect {
            FastEffect::Grant(body) => {
                if !fast.key.identity.is_empty() {
                    self.grant(fast.key, Body::raw(body.into()));
                }
            }
            FastEffect::Remove => self.remove(fast.key),
            FastEffect::Beat(beat) => {
                if let Some(slot) = self.live.slot_mut(fast.key) {
                    slot.body.beat(beat);
                }
            }
            FastEffect::None => {}
        }
    }

    fn count_op(&mut self, op: &str) {
        if let Some(count) = self.op_counts.get_mut(op) {
            *count += 1;
        } else if self.op_counts.len() < OP_NAMES_MAX {
            self.op_counts.insert(op.to_owned(), 1);
        } else {
            *self.op_counts.entry("*other*".to_owned()).or_default() += 1;
        }
    }

    fn grant(&mut self, key: Key<'_>, body: Body) {
        // Saturates rather than wrap: a hostile checkpoint row at u64::MAX must not make the next
        // token the oldest (0). Python's unbounded integers would go past it; no real journal does.
        self.counter = self.counter.saturating_add(1);
        self.forget_orphan_generation(key);
        self.live.upsert(key, body, Some(self.counter));
    }

    fn remove(&mut self, key: Key<'_>) {
        self.live.remove(key);
        self.forget_orphan_generation(key);
    }

    fn forget_orphan_generation(&mut self, key: Key<'_>) {
        // Almost always empty: skip hashing the identity a second time.
        if !self.orphan_generations.is_empty() {
            self.orphan_generations.remove(&key.identity);
        }
    }

    /// Sets a generation row: on the live lease, or as an orphan row if it is not live.
    fn set_generation(&mut self, identity: Identity, generation: u64) {
        match self.live.slot_mut(Key::new(identity.as_ref())) {
            Some(slot) => slot.generation = Some(generation),
            None => {
                self.orphan_generations.insert(identity, generation);
            }
        }
    }

    fn checkpoint(&mut self, record: &Object, taken: Option<Vec<Value>>) {
        self.live.clear();
        let leases = taken.unwrap_or_else(|| match record.get("leases") {
            Some(Value::Array(leases)) => leases.clone(),
            _ => Vec::new(),
        });
        for lease in leases {
            let Value::Object(body) = lease else { continue };
            let identity = Identity::of(&body);
            if !identity.is_empty() {
                self.live.upsert(Key::new(identity.as_ref()), Body::object(body), None);
            }
        }
        self.orphan_generations.clear();
        self.counter = 0;
        if let Some(Value::Array(rows)) = record.get("generations") {
            for row in rows {
                let Value::Object(row) = row else { continue };
                let Some(generation) = row.get("generation").and_then(Value::as_u64) else {
                    continue;
                };
                let identity = Identity::of(row);
                if identity.is_empty() {
                    continue;
                }
                self.counter = self.counter.max(generation);
                self.set_generation(identity, generation);
            }
        }
    }

    /// The live leases in first-acquired order.
    pub fn live(&self) -> impl Iterator<Item = &Object> {
        self.live.iter().map(|(_, body)| body)
    }

    /// The live leases with their identities, in first-acquired order.
    pub fn live_with_identity(&self) -> impl Iterator<Item = (&Identity, &Object)> {
        self.live.iter()
    }

    /// The live lease at `identity`, if any.
    pub fn lease(&self, identity: &Identity) -> Option<&Object> {
        self.live.slot(Key::new(identity.as_ref())).map(|slot| slot.body.get())
    }

    /// Whether every live lease is stored under its own identity. An `ACQUIRE` whose `lease` body
    /// names another `(loop_ts, lane)` than the record breaks this; a `CHECKPOINT` keys leases by
    /// their bodies, so only while this holds does `replay(compact(E)) == replay(E)`. keel never
    /// writes such a record; `keel journal verify` reports journals that hold one.
    pub fn is_self_keyed(&self) -> bool {
        self.live.iter().all(|(identity, body)| Identity::of(body) == *identity)
    }

    /// How many leases are live.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The generation of the live lease at `identity`, if it is live and has one.
    pub fn generation(&self, identity: &Identity) -> Option<u64> {
        self.live.slot(Key::new(identity.as_ref()))?.generation
    }

    /// The generation the next grant will receive.
    pub fn next_generation(&self) -> u64 {
        self.counter.saturating_add(1)
    }

    /// The generation table, sorted by `loop_ts` then `lane`: every live lease's generation, plus
    /// any row a `CHECKPOINT` carried for an identity that is not live (dos-kernel keeps those too,
    /// and a later checkpoint must carry them on for compaction to preserve the table).
    pub fn generations(&self) -> Vec<Generation> {
        let live = self.live.slots().filter_map(|slot| Some((&slot.identity, slot.generation?)));
        let mut rows: Vec<Generation> = live
            .chain(self.orphan_generations.iter().map(|(identity, &generation)| (identity, generation)))
            .map(|(identity, generation)| Generation {
                loop_ts: identity.loop_ts.clone(),
                lane: identity.lane.clone(),
                generation,
            })
            .collect();
        rows.sort();
        rows
    }

    /// `1 +` the largest `seq` or `seq_watermark` of any record.
    pub fn next_seq(&self) -> u64 {
        self.max_seq.saturating_add(1)
    }

    /// The corrupt sentinels seen, in order.
    pub fn corrupt(&self) -> &[Object] {
        &self.corrupt
    }

    /// How many records (JSON objects, corrupt sentinels included) were folded.
    pub fn record_count(&self) -> u64 {
        self.records
    }

    /// Records per `op` (at most [`OP_NAMES_MAX`] names; the rest under `"*other*"`).
    pub fn op_counts(&self) -> BTreeMap<String, u64> {
        self.op_counts.iter().map(|(op, &count)| (op.clone(), count)).collect()
    }
}

fn beat(lease: &mut Object, record: &Object) {
    let beat = ["heartbeat_at", "ts"].iter().filter_map(|k| record.get(*k)).find(|v| truthy(v));
    if let Some(beat) = beat {
        lease.insert("heartbeat_at".to_owned(), beat.clone());
    }
}

/// A record's `op`, or `""` if it has no string `op`.
fn record_op(record: &Object) -> &str {
    record.get("op").and_then(Value::as_str).unwrap_or("")
}

fn adopt(lease: &mut Object, record: &Object) {
    let old_pid = lease.get("pid").cloned();
    for member in ["holder", "pid", "host_id"] {
        if let Some(v) = record.get(member).filter(|v| !v.is_null()) {
            lease.insert(member.to_owned(), v.clone());
        }
    }
    match (record.get("proc_starttime"), record.get("pid")) {
        (Some(start), _) if !start.is_null() => {
            lease.insert("proc_starttime".to_owned(), start.clone());
        }
        (_, Some(pid)) if !pid.is_null() && !old_pid.as_ref().is_some_and(|old| python_eq(pid, old)) => {
            lease.remove("proc_starttime");
        }
        _ => {}
    }
    beat(lease, record);
}

/// A streaming replay of a journal's lines: push lines in file order, then [`finish`](Self::finish).
///
/// Pushing the lines of a file in any number of calls gives the same result as replaying it whole.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    decoder: LineDecoder,
    state: LiveState,
}

/// The end of a replay: the state, and the torn tail if the last line did not parse.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The folded state.
    pub state: LiveState,
    /// The unparseable last line, which "didn't happen".
    pub torn_tail: Option<BadLine>,
    /// How many lines the file had (blank lines counted).
    pub lines: u64,
}

impl Replay {
    /// A replay positioned before the first line of a journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A replay that continues from `state` as if the lines pushed next followed the records
    /// `state` was folded from, starting at line index `first_line`.
    pub fn resume(state: LiveState, first_line: u64) -> Self {
        Self { decoder: LineDecoder::starting_at(first_line), state }
    }

    /// Folds the next line of the file (without its `\n`).
    pub fn push_line(&mut self, line: &[u8]) {
        let text = line_text(line);
        let parsed = parse_stripped(&text);
        self.push(&text, parsed);
    }

    /// Folds a line too long to read (over the readers' line limit), of which only its first
    /// bytes were kept: damage like a corrupt line, whether or not anything follows it (no
    /// writer's record is that long, so it is never a torn tail to excuse). Its sentinel quotes
    /// the first [`OVERSIZED_QUOTE_BYTES`](crate::line::OVERSIZED_QUOTE_BYTES) bytes and carries the length in `_bytes`.
    pub fn push_oversized(&mut self, prefix: &[u8], bytes: u64) {
        let (index, corrupt) = self.decoder.start_line();
        if let Some(bad) = corrupt {
            self.state.apply(&bad.sentinel());
        }
        self.state.apply(&crate::line::oversized_sentinel(index, prefix, bytes));
    }

    /// Folds the lines of a chunk that follows the lines pushed so far.
    pub fn push_chunk(&mut self, chunk: ParsedChunk) {
        for (start, end, parsed) in chunk.lines {
            self.push(&chunk.text[start..end], parsed);
        }
    }

    /// Folds one line, given its stripped text and what it is.
    fn push(&mut self, text: &str, parsed: Parsed) {
        let (index, corrupt) = self.decoder.start_line();
        if let Some(bad) = corrupt {
            self.state.apply(&bad.sentinel());
        }
        match parsed {
            Parsed::Fast(fast) => self.state.apply_fast(fast.resolve(text)),
            // A record no writer of the format produces (a CHECKPOINT that is not one) is damage,
            // never folded: read literally it would empty the live set or restart fencing.
            Parsed::Record(record) if crate::record::malformed(&record).is_some() => {
                self.state.apply(&BadLine { line: index, raw: text.to_owned() }.sentinel());
            }
            Parsed::Record(record) => self.state.apply_owned(record),
            Parsed::Unparseable => self.decoder.hold_unparseable(index, text.to_owned()),
            Parsed::Blank | Parsed::NotObject => {}
        }
    }

    /// The last line pushed, if it was unparseable and is held back: it becomes a corrupt record
    /// only if another line follows, so a resumable position is never just after it.
    pub fn pending(&self) -> Option<&BadLine> {
        self.decoder.pending()
    }

    /// How many lines have been pushed (blank lines counted).
    pub fn lines(&self) -> u64 {
        self.decoder.lines_seen()
    }

    /// The state folded so far (a held-back unparseable line is not in it yet).
    pub fn state(&self) -> &LiveState {
        &self.state
    }

    /// Ends the file.
    pub fn finish(self) -> Replayed {
        let lines = self.decoder.lines_seen();
        Replayed { state: self.state, torn_tail: self.decoder.finish(), lines }
    }
}

/// Replays a whole journal held in memory.
pub fn replay_bytes(journal: &[u8]) -> Replayed {
    let mut replay = Replay::new();
    for line in crate::line::split_lines(journal) {
        replay.push_line(line);
    }
    replay.finish()
}

/// Replays records that are already parsed (for example the output of [`LiveState::compact`]).
pub fn replay_records<'a>(records: impl IntoIterator<Item = &'a Object>) -> LiveState {
    let mut state = LiveState::new();
    for record in records {
        state.apply(record);
    }
    state
}

#[cfg(test)]
mod tests;
