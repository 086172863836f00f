//! Journal replay: a streaming fold from records to the live lease set, generations and `next_seq`,
//! and compaction of that state back into records.
//!
//! Memory is proportional to the live set (plus the corrupt sentinels, which are never dropped),
//! not to the journal. Every operation on the live set is O(1) amortised, so thousands of live
//! leases cost no more per record than one.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::line::{BadLine, CORRUPT_OP, LineClass, LineDecoder, classify_text, line_text, split_lines};
use crate::scan::{self, Span};
use crate::value::{Object, identity_text, python_eq, python_isspace, python_strip, seq_number, truthy};

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

/// An identity borrowed from a record being folded. It hashes exactly as [`Identity`] does (the
/// derived `Hash` of two strings in the same order), so maps keyed by identities can be probed
/// with it and allocate only when they keep a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IdRef<'a> {
    loop_ts: &'a str,
    lane: &'a str,
}

impl IdRef<'_> {
    fn is_empty(self) -> bool {
        self.loop_ts.is_empty() && self.lane.is_empty()
    }

    fn to_owned(self) -> Identity {
        Identity { loop_ts: self.loop_ts.to_owned(), lane: self.lane.to_owned() }
    }
}

impl hashbrown::Equivalent<Identity> for IdRef<'_> {
    fn equivalent(&self, key: &Identity) -> bool {
        self.loop_ts == key.loop_ts && self.lane == key.lane
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

/// A lease body, kept as the JSON text it was read as until something reads or changes it.
///
/// Most leases are acquired and released without anyone looking inside them; parsing each body
/// into an object would dominate the cost of a replay. A heartbeat is remembered beside the raw
/// text and applied when the body is first read.
#[derive(Debug, Clone)]
struct Body {
    raw: Option<Box<str>>,
    parsed: OnceLock<Object>,
    heartbeat: Option<Value>,
}

impl Body {
    fn object(object: Object) -> Self {
        Self { raw: None, parsed: OnceLock::from(object), heartbeat: None }
    }

    /// `raw` must be the text of a JSON object (the caller has parsed past it).
    fn raw(raw: Box<str>) -> Self {
        Self { raw: Some(raw), parsed: OnceLock::new(), heartbeat: None }
    }

    fn get(&self) -> &Object {
        self.parsed.get_or_init(|| {
            let raw = self.raw.as_deref().expect("a body without an object has its raw text");
            let mut object: Object =
                serde_json::from_str(raw).expect("raw bodies were validated as JSON objects when read");
            if let Some(beat) = &self.heartbeat {
                object.insert("heartbeat_at".to_owned(), beat.clone());
            }
            object
        })
    }

    fn get_mut(&mut self) -> &mut Object {
        self.get();
        self.raw = None;
        self.heartbeat = None;
        self.parsed.get_mut().expect("initialised just above")
    }

    /// Records a heartbeat time, reusing the text of the last one while the body is unread.
    fn beat(&mut self, beat: &str) {
        match (self.parsed.get_mut(), &mut self.heartbeat) {
            (Some(object), _) => {
                object.insert("heartbeat_at".to_owned(), Value::from(beat));
            }
            (None, Some(Value::String(kept))) => {
                kept.clear();
                kept.push_str(beat);
            }
            (None, slot) => *slot = Some(Value::from(beat)),
        }
    }
}

/// Whether the index entry (a position in `slots`) is the live lease at `key`.
fn holds<'a>(slots: &'a [Option<Slot>], key: Key<'a>) -> impl Fn(&usize) -> bool + 'a {
    move |&at| slots[at].as_ref().is_some_and(|slot| slot.identity.as_ref() == key.identity)
}

/// The stored hash of the lease an index entry points at (what the index rehashes by).
fn hash_at(slots: &[Option<Slot>]) -> impl Fn(&usize) -> u64 + '_ {
    |&at| slots[at].as_ref().map_or(0, |slot| slot.hash)
}

/// A borrowed identity with its hash, computed once (on a parser thread, for the fast path).
#[derive(Debug, Clone, Copy)]
struct Key<'a> {
    identity: IdRef<'a>,
    hash: u64,
}

impl<'a> Key<'a> {
    fn new(identity: IdRef<'a>) -> Self {
        Self { identity, hash: rustc_hash::FxBuildHasher.hash_one(identity) }
    }
}

/// One live lease, with its generation if it has one (a `CHECKPOINT` may list a lease without).
#[derive(Debug, Clone)]
struct Slot {
    identity: Identity,
    hash: u64,
    body: Body,
    generation: Option<u64>,
}

/// The live set in first-acquired order with O(1) lookup, replacement and removal.
///
/// Removal leaves a hole that is squeezed out once holes outnumber live entries, so iteration
/// stays proportional to the live set. The index holds positions in `slots`, found by the hash
/// stored in each slot, so a lookup neither allocates nor hashes again.
#[derive(Debug, Clone, Default)]
struct LiveSet {
    slots: Vec<Option<Slot>>,
    index: hashbrown::HashTable<usize>,
}

impl LiveSet {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn position(&self, key: Key<'_>) -> Option<usize> {
        self.index.find(key.hash, holds(&self.slots, key)).copied()
    }

    fn slot(&self, key: Key<'_>) -> Option<&Slot> {
        self.slots[self.position(key)?].as_ref()
    }

    fn slot_mut(&mut self, key: Key<'_>) -> Option<&mut Slot> {
        let at = self.position(key)?;
        self.slots[at].as_mut()
    }

    /// Replaces the body and generation of a live lease in place, or adds the lease last.
    fn upsert(&mut self, key: Key<'_>, body: Body, generation: Option<u64>) {
        if let Some(slot) = self.slot_mut(key) {
            slot.body = body;
            slot.generation = generation;
            return;
        }
        let at = self.slots.len();
        self.slots.push(Some(Slot { identity: key.identity.to_owned(), hash: key.hash, body, generation }));
        self.index.insert_unique(key.hash, at, hash_at(&self.slots));
    }

    fn remove(&mut self, key: Key<'_>) {
        let Ok(entry) = self.index.find_entry(key.hash, holds(&self.slots, key)) else {
            return;
        };
        let (at, _) = entry.remove();
        self.slots[at] = None;
        let holes = self.slots.len() - self.index.len();
        if holes > 32 && holes > self.index.len() {
            self.squeeze();
        }
    }

    fn squeeze(&mut self) {
        self.slots.retain(Option::is_some);
        self.index.clear();
        let hash = hash_at(&self.slots);
        for at in 0..self.slots.len() {
            self.index.insert_unique(hash(&at), at, &hash);
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().flatten()
    }

    fn iter(&self) -> impl Iterator<Item = (&Identity, &Object)> {
        self.slots().map(|slot| (&slot.identity, slot.body.get()))
    }
}

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
            REVIEW_OP => {
                if let Some(Value::Array(excuses)) = record.get("excuses") {
                    self.excused.extend(excuses.iter().filter_map(Excuse::from_json));
                }
                // A review that accepts damage raises the counter past every token the damaged
                // lines could have issued, so none is issued again.
                if let Some(floor) = record.get(GENERATION_FLOOR).and_then(Value::as_u64) {
                    self.counter = self.counter.max(floor);
                }
            }
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

    /// The compacted journal: one `CHECKPOINT` then every corrupt sentinel, or nothing for an
    /// empty journal. Replaying it gives the same live set and generations as this state.
    pub fn compact(&self) -> Vec<Object> {
        if self.records == 0 {
            return Vec::new();
        }
        let mut checkpoint = Object::new();
        checkpoint.insert("op".to_owned(), Value::from("CHECKPOINT"));
        checkpoint.insert("leases".to_owned(), Value::Array(self.live().cloned().map(Value::Object).collect()));
        checkpoint.insert("seq_watermark".to_owned(), Value::from(self.max_seq));
        let generations = self.generations();
        if !generations.is_empty() {
            checkpoint.insert(
                "generations".to_owned(),
                serde_json::to_value(generations).expect("generation rows serialize"),
            );
        }
        let mut records = Vec::with_capacity(1 + self.corrupt.len());
        records.push(checkpoint);
        records.extend(self.corrupt.iter().cloned());
        records
    }
}

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

    fn from_json(value: &Value) -> Option<Self> {
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

    /// The whole fold state, for a head snapshot that lets a later reader skip the history.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            live: self.live.iter().map(|(i, b)| (i.clone(), b.clone())).collect(),
            generations: self.generations(),
            counter: self.counter,
            max_seq: self.max_seq,
            corrupt: self.corrupt.clone(),
            records: self.records,
            op_counts: self.op_counts(),
            excused: self.excused.iter().cloned().collect(),
        }
    }

    /// Rebuilds the fold state from a snapshot.
    pub fn from_snapshot(snapshot: StateSnapshot) -> Self {
        let mut live = LiveSet::default();
        for (identity, body) in snapshot.live {
            live.upsert(Key::new(identity.as_ref()), Body::object(body), None);
        }
        let mut state = Self {
            live,
            orphan_generations: FxMap::default(),
            counter: snapshot.counter,
            max_seq: snapshot.max_seq,
            corrupt: snapshot.corrupt,
            records: snapshot.records,
            op_counts: snapshot.op_counts.into_iter().collect(),
            excused: snapshot.excused.into_iter().collect(),
        };
        for row in snapshot.generations {
            state.set_generation(Identity { loop_ts: row.loop_ts, lane: row.lane }, row.generation);
        }
        state
    }
}

/// [`LiveState`] as plain data (serialisable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Live leases with their identities, in order.
    pub live: Vec<(Identity, Object)>,
    /// The generation table.
    pub generations: Vec<Generation>,
    /// The generation counter.
    pub counter: u64,
    /// The largest `seq`/`seq_watermark` seen.
    pub max_seq: u64,
    /// Corrupt sentinels, in order.
    pub corrupt: Vec<Object>,
    /// Records folded.
    pub records: u64,
    /// Records per op.
    pub op_counts: BTreeMap<String, u64>,
    /// Excused corrupt sentinels.
    pub excused: Vec<Excuse>,
}

/// Why a journal cannot be compacted without changing what it means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// A live lease is stored under another identity than its body names, so a checkpoint
    /// (which keys leases by their bodies) would replay to a different live set.
    #[error(
        "lease stored as (loop_ts {:?}, lane {:?}) names (loop_ts {:?}, lane {:?}) in its body; \
         compacting would change the live set, so the journal is left as it is",
        stored.loop_ts, stored.lane, body.loop_ts, body.lane
    )]
    MisKeyedLease {
        /// The identity the lease is live under.
        stored: Identity,
        /// The identity its body names.
        body: Identity,
    },
}

/// The `loop_ts` and `lane` of the generation row a rewrite adds so that the counter survives it
/// ([`LiveState::compact_fenced`]). Reserved: no lease may have this identity.
pub const GENERATION_WATERMARK: &str = "keel:generation-watermark";

impl LiveState {
    /// What a rewrite of a real journal writes: [`compact_checked`](Self::compact_checked), with
    /// the grant counter kept. The spec's checkpoint keeps generation rows of live leases only,
    /// and a replay restarts the counter from the largest; a released lease's token would then be
    /// issued again, and a writer still holding it could pass a gate that compares owner, lane and
    /// generation. So when the counter is above every row, the checkpoint also carries an orphan
    /// row for the reserved identity [`GENERATION_WATERMARK`] at the counter: a replay by the spec
    /// (dos-kernel's included) continues from it, and nothing else reads it.
    pub fn compact_fenced(&self) -> Result<Vec<Object>, CompactError> {
        let mut records = self.compact_checked()?;
        let Some(checkpoint) = records.first_mut() else { return Ok(records) };
        let mut rows = self.generations();
        rows.retain(|row| !(row.loop_ts == GENERATION_WATERMARK && row.lane == GENERATION_WATERMARK));
        if self.counter > 0 && rows.iter().all(|row| row.generation < self.counter) {
            let watermark = GENERATION_WATERMARK.to_owned();
            rows.push(Generation { loop_ts: watermark.clone(), lane: watermark, generation: self.counter });
        }
        if rows.is_empty() {
            checkpoint.remove("generations");
        } else {
            checkpoint.insert("generations".to_owned(), serde_json::to_value(rows).expect("generation rows serialize"));
        }
        Ok(records)
    }

    /// [`compact`](Self::compact), or an error when the result would not replay to this state.
    /// Every rewrite of a real journal goes through this: a compaction never changes meaning.
    pub fn compact_checked(&self) -> Result<Vec<Object>, CompactError> {
        // A checkpoint keys each lease by its body; a lease live under another identity would come
        // back under the body's, and a later RELEASE of its real identity would miss it.
        if let Some((stored, body)) = self.live.iter().find(|(identity, body)| Identity::of(body) != **identity) {
            return Err(CompactError::MisKeyedLease { stored: stored.clone(), body: Identity::of(body) });
        }
        Ok(self.compact())
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

/// One line taken apart, ready to fold. A fast record is held as spans of the line's stripped
/// text, so taking a line apart allocates nothing for the common records.
#[derive(Debug, Clone)]
enum Parsed {
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
struct FastSpans {
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

/// [`FastSpans`] resolved against their line: what [`LiveState::apply_fast`] folds.
#[derive(Clone, Copy)]
struct FastRecord<'a> {
    op: &'a str,
    key: Key<'a>,
    seq: u64,
    effect: FastEffect<'a>,
}

#[derive(Clone, Copy)]
enum FastEffect<'a> {
    Grant(&'a str),
    Remove,
    Beat(&'a str),
    None,
}

impl FastSpans {
    fn resolve(self, line: &str) -> FastRecord<'_> {
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
fn parse_stripped(text: &str) -> Parsed {
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
fn parse_fast(text: &str) -> Option<FastSpans> {
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
/// nothing but the bytes and so can run on other threads. [`Replay::push_chunk`] folds the lines
/// in order; the result is the same as [`Replay::push_line`] on each of them.
#[derive(Debug, Clone)]
pub struct ParsedChunk {
    text: String,
    /// Each line's stripped text as `start..end` in `text`, and what it is.
    lines: Vec<(usize, usize, Parsed)>,
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
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(o) => o,
            _ => unreachable!("test data is an object"),
        }
    }

    #[test]
    fn release_then_reacquire_moves_the_lease_last_and_raises_its_generation() {
        let journal = concat!(
            "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\", \"loop_ts\": \"a\"}, \"seq\": 1}\n",
            "{\"op\": \"ACQUIRE\", \"loop_ts\": \"b\", \"lane\": \"y\", \"lease\": {\"lane\": \"y\", \"loop_ts\": \"b\"}, \"seq\": 2}\n",
            "{\"op\": \"RELEASE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"seq\": 3}\n",
            "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\", \"loop_ts\": \"a\"}, \"seq\": 4}\n",
        );
        let state = replay_bytes(journal.as_bytes()).state;
        let lanes: Vec<_> = state.live().map(|l| l["lane"].clone()).collect();
        assert_eq!(lanes, vec![json!("y"), json!("x")]);
        let a = Identity { loop_ts: "a".into(), lane: "x".into() };
        assert_eq!(state.generation(&a), Some(3));
        assert_eq!(state.next_seq(), 5);
    }

    #[test]
    fn fast_and_general_paths_agree_on_escaped_and_odd_records() {
        // Escapes and non-string identities force the general path; the results must not differ.
        let plain = "{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\\u0031\", \"lane\": \"l\", \"lease\": {\"n\": 1}}";
        let odd = "{\"op\": \"ACQUIRE\", \"loop_ts\": 5, \"lane\": true, \"tree\": [\"a\"]}";
        let state = replay_bytes(format!("{plain}\n{odd}\n").as_bytes()).state;
        let ids: Vec<_> = state.live_with_identity().map(|(i, _)| i.clone()).collect();
        assert_eq!(
            ids,
            vec![
                Identity { loop_ts: "t1".into(), lane: "l".into() },
                Identity { loop_ts: "5".into(), lane: "True".into() }
            ]
        );
        assert_eq!(state.live().nth(1).expect("two leases")["tree"], json!(["a"]));
    }

    #[test]
    fn a_line_serde_json_refuses_is_corrupt_on_every_path() {
        // Lone surrogates, in a lease body or a member replay never reads. The fast path once
        // accepted these lines, and reading the lease body later panicked.
        for line in [
            r#"{"op": "ACQUIRE", "loop_ts": "t", "lane": "l", "lease": {"k": "\ud800"}}"#,
            r#"{"op": "HALT", "x": "\udc00\ud800"}"#,
        ] {
            let journal = format!("{line}\n{{\"op\": \"HALT\"}}\n");
            let state = replay_bytes(journal.as_bytes()).state;
            assert_eq!(state.corrupt().len(), 1, "{line}");
            assert_eq!(state.live().count(), 0, "{line}");
        }
    }

    #[test]
    fn numbers_in_a_lease_body_survive_replay_and_compaction_as_written() {
        // Python reads these as an exact int, a float or infinity (`1e400`), and so a record;
        // keel keeps their digits (`serde_json` respells only an exponent's marker and sign).
        let numbers = [
            ("123456789012345678901234567890", "123456789012345678901234567890"),
            ("18446744073709551616", "18446744073709551616"),
            ("-0", "-0"),
            ("1.10", "1.10"),
            ("1E5", "1e+5"),
            ("1e400", "1e+400"),
        ];
        let body: Vec<String> = numbers.iter().enumerate().map(|(i, (n, _))| format!("\"n{i}\": {n}")).collect();
        let body = body.join(", ");
        // The second record has a surrogate pair, which sends it down the general path.
        let journal = format!(
            "{{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\", \"lane\": \"a\", \"lease\": {{\"lane\": \"a\", {body}}}, \"seq\": 1}}\n\
             {{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\", \"lane\": \"b\", \"lease\": {{\"lane\": \"b\", {body}}}, \"seq\": 2, \"x\": \"\\ud83d\\ude00\"}}\n"
        );
        let state = replay_bytes(journal.as_bytes()).state;
        assert_eq!((state.live_count(), state.corrupt().len()), (2, 0));
        let compacted = serde_json::to_string(&state.compact()).expect("serialise");
        for lease in state.live() {
            let written = serde_json::to_string(lease).expect("serialise");
            for (i, (_, n)) in numbers.iter().enumerate() {
                let member = format!("\"n{i}\":{n}");
                assert!(written.contains(&member), "{member} in {written}");
                assert_eq!(compacted.matches(&member).count(), 2, "{member} in {compacted}");
            }
        }
    }

    proptest::proptest! {
        /// Lines near a real record, mangled byte by byte: whenever the fast path takes a line,
        /// `serde_json` parses it as an object and folding it the general way gives the same state.
        #[test]
        fn the_fast_path_agrees_with_the_general_path(
            template in 0usize..4,
            edits in proptest::collection::vec((0usize..400, 0usize..1024, proptest::bool::ANY), 0..4),
        ) {
            const TEMPLATES: [&str; 4] = [
                r#"{"lane": "l", "lease": {"lane": "l", "loop_ts": "t", "pid": 7, "tree": ["a\\b", 1.5]}, "loop_ts": "t", "op": "ACQUIRE", "seq": 3}"#,
                r#"{"heartbeat_at": "T1", "lane": "l", "loop_ts": "t", "op": "HEARTBEAT", "seq": 4, "ts": "T0"}"#,
                r#"{"lane": "l", "loop_ts": "t", "op": "RELEASE", "seq_watermark": 9, "x": [null, true, {"k": -0.5}]}"#,
                r#"{"op": "HALT", "ts": null, "u": "\u00e9\ud83d\ude00", "n": 12345678901234567}"#,
            ];
            // Structure, escapes, control characters (`\t` is white space only between tokens),
            // and bytes that decode to `é` or to replacement characters.
            const ALPHABET: &[u8] = b"{}[]:,\" 0123456789.eE-+\\u\ntflsdnr/\t\x01\x1f\x7f\xc3\xa9";
            let mut line = TEMPLATES[template].as_bytes().to_vec();
            for (at, pick, insert) in edits {
                let at = at % (line.len() + 1);
                let byte = ALPHABET[pick % ALPHABET.len()];
                if insert || at == line.len() {
                    line.insert(at, byte);
                } else {
                    line[at] = byte;
                }
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let seeded = || {
                let mut state = LiveState::new();
                state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "t", "lane": "l", "lease": {"lane": "l", "loop_ts": "t"}})));
                state
            };
            if let Some(fast) = parse_fast(&text) {
                let record = serde_json::from_str::<Object>(&text);
                proptest::prop_assert!(record.is_ok(), "fast path took a line serde_json refuses: {}", text);
                let (mut by_fast, mut by_general) = (seeded(), seeded());
                by_fast.apply_fast(fast.resolve(&text));
                by_general.apply(&record.expect("checked just above"));
                proptest::prop_assert_eq!(by_fast.snapshot(), by_general.snapshot(), "{}", text);
            }
        }
    }

    #[test]
    fn a_borrowed_identity_hashes_as_the_owned_one() {
        // Orphan generation rows are keyed by `Identity` and probed with `IdRef`.
        let owned = Identity { loop_ts: "2026-11-01T00:00:00Z".into(), lane: "api".into() };
        let build = rustc_hash::FxBuildHasher;
        assert_eq!(build.hash_one(&owned), build.hash_one(owned.as_ref()));
    }

    #[test]
    fn a_checkpoint_row_for_a_lease_not_live_is_kept_until_a_grant_or_release_replaces_it() {
        let mut state = LiveState::new();
        state.apply(&obj(json!({"op": "CHECKPOINT", "leases": [{"loop_ts": "a", "lane": "x"}],
            "generations": [{"loop_ts": "a", "lane": "x", "generation": 4}, {"loop_ts": "b", "lane": "y", "generation": 9}]})));
        let rows = |state: &LiveState| -> Vec<(String, u64)> {
            state.generations().into_iter().map(|g| (g.loop_ts, g.generation)).collect()
        };
        assert_eq!(rows(&state), vec![("a".into(), 4), ("b".into(), 9)]);
        let b = Identity { loop_ts: "b".into(), lane: "y".into() };
        assert_eq!(state.generation(&b), None, "a row is not a live lease");
        state
            .apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "b", "lane": "y", "lease": {"loop_ts": "b", "lane": "y"}})));
        assert_eq!(rows(&state), vec![("a".into(), 4), ("b".into(), 10)]);
        state.apply(&obj(json!({"op": "RELEASE", "loop_ts": "b", "lane": "y"})));
        state.apply(&obj(json!({"op": "RELEASE", "loop_ts": "a", "lane": "x"})));
        assert!(rows(&state).is_empty());
        let back = LiveState::from_snapshot(state.snapshot());
        assert_eq!(back.snapshot(), state.snapshot());
    }

    #[test]
    fn adopt_drops_proc_starttime_only_when_the_pid_changes() {
        let mut state = LiveState::new();
        state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "t", "lane": "l",
            "lease": {"pid": 1, "proc_starttime": 9, "holder": "a"}})));
        state.apply(&obj(json!({"op": "ADOPT", "loop_ts": "t", "lane": "l", "pid": 1, "holder": "b"})));
        let id = Identity { loop_ts: "t".into(), lane: "l".into() };
        assert_eq!(state.lease(&id).expect("live")["proc_starttime"], json!(9));
        state.apply(&obj(json!({"op": "ADOPT", "loop_ts": "t", "lane": "l", "pid": 2, "ts": "T"})));
        let lease = state.lease(&id).expect("live");
        assert_eq!(lease.get("proc_starttime"), None);
        assert_eq!(lease["holder"], json!("b"));
        assert_eq!(lease["heartbeat_at"], json!("T"));
    }

    #[test]
    fn thousands_of_removals_keep_order_and_indexes_consistent() {
        let mut state = LiveState::new();
        for i in 0..5000 {
            state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": i.to_string(), "lane": "l", "lease": {"i": i}})));
        }
        for i in (0..5000).filter(|i| i % 3 != 0) {
            state.apply(&obj(json!({"op": "RELEASE", "loop_ts": i.to_string(), "lane": "l"})));
        }
        let left: Vec<i64> = state.live().map(|l| l["i"].as_i64().expect("int")).collect();
        let want: Vec<i64> = (0..5000).filter(|i| i % 3 == 0).collect();
        assert_eq!(left, want);
        let id = Identity { loop_ts: "4998".into(), lane: "l".into() };
        assert_eq!(state.generation(&id), Some(4999));
    }

    #[test]
    fn a_review_excuses_exactly_the_named_corrupt_lines() {
        let journal = b"{\"op\": \"HALT\"}\nbroken one\nbroken two\n{\"op\": \"HALT\"}\n";
        let mut state = replay_bytes(journal).state;
        assert_eq!(state.damage().len(), 2);
        let first = Excuse::of_sentinel(state.damage()[0]).expect("sentinel has line and raw");
        state.apply(&review_record(std::slice::from_ref(&first), "torn tail repaired", "test"));
        let left: Vec<_> = state.damage().iter().map(|s| s["_raw"].clone()).collect();
        assert_eq!(left, vec![json!("broken two")]);
        assert_eq!(state.excuses_in_force(), vec![first]);
    }

    #[test]
    fn snapshot_round_trips_the_whole_state() {
        let journal = concat!(
            "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\"}, \"seq\": 7}\n",
            "garbage\n",
            "{\"op\": \"ACQUIRE\", \"loop_ts\": \"b\", \"lane\": \"y\", \"lease\": {\"lane\": \"y\"}}\n",
        );
        let state = replay_bytes(journal.as_bytes()).state;
        let text = serde_json::to_string(&state.snapshot()).expect("serialises");
        let back = LiveState::from_snapshot(serde_json::from_str(&text).expect("parses"));
        assert_eq!(back.snapshot(), state.snapshot());
        assert_eq!(back.next_generation(), 3);
        assert_eq!(back.next_seq(), 8);
    }

    #[test]
    fn compact_of_an_empty_journal_is_empty() {
        assert!(replay_bytes(b"").state.compact().is_empty());
        assert!(replay_bytes(b"[1]\n\"s\"\n").state.compact().is_empty());
    }
}
