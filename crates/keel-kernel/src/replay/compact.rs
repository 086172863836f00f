//! The state back to data: snapshots of the whole fold, and compaction into records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::live_set::{Body, Key, LiveSet};
use super::{Excuse, FxMap, Generation, Identity, LiveState};
use crate::value::Object;

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
