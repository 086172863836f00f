//! The live set: leases in first-acquired order with O(1) lookup, replacement and removal.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use serde_json::Value;

use super::Identity;
use crate::value::Object;

/// An identity borrowed from a record being folded. It hashes exactly as [`Identity`] does (the
/// derived `Hash` of two strings in the same order), so maps keyed by identities can be probed
/// with it and allocate only when they keep a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdRef<'a> {
    pub(super) loop_ts: &'a str,
    pub(super) lane: &'a str,
}

impl IdRef<'_> {
    pub(super) fn is_empty(self) -> bool {
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

/// A lease body, kept as the JSON text it was read as until something reads or changes it.
///
/// Most leases are acquired and released without anyone looking inside them; parsing each body
/// into an object would dominate the cost of a replay. A heartbeat is remembered beside the raw
/// text and applied when the body is first read.
#[derive(Debug, Clone)]
pub(super) struct Body {
    raw: Option<Box<str>>,
    parsed: OnceLock<Object>,
    heartbeat: Option<Value>,
}

impl Body {
    pub(super) fn object(object: Object) -> Self {
        Self { raw: None, parsed: OnceLock::from(object), heartbeat: None }
    }

    /// `raw` must be the text of a JSON object (the caller has parsed past it).
    pub(super) fn raw(raw: Box<str>) -> Self {
        Self { raw: Some(raw), parsed: OnceLock::new(), heartbeat: None }
    }

    pub(super) fn get(&self) -> &Object {
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

    pub(super) fn get_mut(&mut self) -> &mut Object {
        self.get();
        self.raw = None;
        self.heartbeat = None;
        self.parsed.get_mut().expect("initialised just above")
    }

    /// Records a heartbeat time, reusing the text of the last one while the body is unread.
    pub(super) fn beat(&mut self, beat: &str) {
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
pub(super) struct Key<'a> {
    pub(super) identity: IdRef<'a>,
    pub(super) hash: u64,
}

impl<'a> Key<'a> {
    pub(super) fn new(identity: IdRef<'a>) -> Self {
        Self { identity, hash: rustc_hash::FxBuildHasher.hash_one(identity) }
    }
}

/// One live lease, with its generation if it has one (a `CHECKPOINT` may list a lease without).
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) identity: Identity,
    hash: u64,
    pub(super) body: Body,
    pub(super) generation: Option<u64>,
}

/// The live set in first-acquired order with O(1) lookup, replacement and removal.
///
/// Removal leaves a hole that is squeezed out once holes outnumber live entries, so iteration
/// stays proportional to the live set. The index holds positions in `slots`, found by the hash
/// stored in each slot, so a lookup neither allocates nor hashes again.
#[derive(Debug, Clone, Default)]
pub(super) struct LiveSet {
    slots: Vec<Option<Slot>>,
    index: hashbrown::HashTable<usize>,
}

impl LiveSet {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn position(&self, key: Key<'_>) -> Option<usize> {
        self.index.find(key.hash, holds(&self.slots, key)).copied()
    }

    pub(super) fn slot(&self, key: Key<'_>) -> Option<&Slot> {
        self.slots[self.position(key)?].as_ref()
    }

    pub(super) fn slot_mut(&mut self, key: Key<'_>) -> Option<&mut Slot> {
        let at = self.position(key)?;
        self.slots[at].as_mut()
    }

    /// Replaces the body and generation of a live lease in place, or adds the lease last.
    pub(super) fn upsert(&mut self, key: Key<'_>, body: Body, generation: Option<u64>) {
        if let Some(slot) = self.slot_mut(key) {
            slot.body = body;
            slot.generation = generation;
            return;
        }
        let at = self.slots.len();
        self.slots.push(Some(Slot { identity: key.identity.to_owned(), hash: key.hash, body, generation }));
        self.index.insert_unique(key.hash, at, hash_at(&self.slots));
    }

    pub(super) fn remove(&mut self, key: Key<'_>) {
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

    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().flatten()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Identity, &Object)> {
        self.slots().map(|slot| (&slot.identity, slot.body.get()))
    }
}
