//! Moving a workspace's leases from its journal to etcd, without a moment in which both grant:
//! the journal is closed first (a forced lease over the whole tree, held by a name that says
//! where the leases went, so a stray journal-mode agent is refused with the endpoints in the
//! reason), then its live leases are copied with their own generations (the tokens their holders
//! present stay valid), and etcd's counter starts above every generation the journal handed out.

use etcd_client::{PutOptions, TxnOp};
use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, JournalError, LeaseBackend};
use keel_kernel::{Identity, Object};
use serde::Serialize;

use super::EtcdBackend;

/// The lane of the lease that closes a journal whose leases moved.
pub const MOVED_LANE: &str = "keel-moved-to-etcd";
/// Its TTL in minutes: about nineteen years, so only an operator's scavenge ends it.
const MOVED_TTL_MINUTES: f64 = 1e7;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// Live leases copied to etcd.
    pub leases: usize,
    /// The last generation handed out, on etcd now: every later grant gets a higher one.
    pub generation: u64,
    /// Whether this call closed the journal (false: an earlier, interrupted migration had).
    pub closed_journal: bool,
}

impl EtcdBackend {
    /// The holder named by the lease that closes a journal migrated to this backend.
    pub fn moved_holder(&self) -> String {
        format!(
            "moved to etcd {} under {}: use --backend etcd (or [backend] in .keel/policy.toml)",
            self.remote.endpoints().join(","),
            self.keys.prefix()
        )
    }

    /// Moves `journal`'s live leases here. Refused (nothing changed) if this prefix already
    /// holds leases. Safe to run again after an interruption: the journal stays closed, and the
    /// copy is one transaction.
    pub fn migrate_from(&self, journal: &impl LeaseBackend) -> Result<Migrated, JournalError> {
        let holder = self.moved_holder();
        let closed_journal = journal.look(|state, _| {
            !state.live_with_identity().any(|(id, lease)| {
                id.lane == MOVED_LANE && lease.get("holder").and_then(serde_json::Value::as_str) == Some(&holder)
            })
        })?;
        if closed_journal {
            let close = AcquireRequest {
                lane: MOVED_LANE.to_owned(),
                tree: vec!["**".to_owned()],
                owner: holder.clone(),
                ttl_minutes: Some(MOVED_TTL_MINUTES),
                force: true,
                holder_pid: HolderPid::None,
                ..AcquireRequest::default()
            };
            if let AcquireOutcome::Refuse { decision, .. } = journal.acquire(&close)? {
                return Err(JournalError::InvalidRequest(format!(
                    "the journal could not be closed: {}",
                    decision.reason
                )));
            }
        }
        let (leases, last): (Vec<(Identity, Object, u64)>, u64) = journal.look(|state, _| {
            let leases = state
                .live_with_identity()
                .filter(|(id, _)| id.lane != MOVED_LANE)
                .map(|(id, lease)| (id.clone(), lease.clone(), state.generation(id).unwrap_or(0)))
                .collect();
            (leases, state.next_generation().saturating_sub(1))
        })?;
        let copied = self.copy_in(&leases, last)?;
        Ok(Migrated { leases: leases.len(), generation: copied, closed_journal })
    }

    /// Puts `leases` and a counter of at least `last`, into an empty prefix, in one transaction.
    fn copy_in(&self, leases: &[(Identity, Object, u64)], last: u64) -> Result<u64, JournalError> {
        let view = self.read()?;
        if !view.leases.is_empty() {
            return Err(JournalError::InvalidRequest(format!(
                "etcd already holds {} leases under {}: a journal is moved into an empty prefix",
                view.leases.len(),
                self.keys.prefix()
            )));
        }
        let generation = last.max(view.generation);
        let mut then = Vec::with_capacity(leases.len() + 1);
        for (identity, lease, lease_generation) in leases {
            let etcd_lease = self.etcd_lease(Self::ttl_s(lease))?;
            then.push(TxnOp::put(
                self.keys.lease(identity),
                Self::value(lease, *lease_generation, "migrated"),
                Some(PutOptions::new().with_lease(etcd_lease)),
            ));
        }
        then.push(TxnOp::put(self.keys.generation(), generation.to_string(), None));
        if self.commit("migrate the journal's leases", &view, then)?.is_none() {
            return Err(JournalError::InvalidRequest(format!(
                "etcd changed under {} during the migration; run it again",
                self.keys.prefix()
            )));
        }
        self.remember(None);
        Ok(generation)
    }
}

impl EtcdBackend {
    /// Raises the generation counter to at least `floor`, for after a restore from a snapshot:
    /// etcd restored to an older state would hand out again the generations granted since, and
    /// a stale holder's token would pass the gate. The operator names a floor above every token
    /// handed out (the highest generation any holder or log has seen); the counter never goes
    /// down. Returns the counter after.
    pub fn raise_generation(&self, floor: u64) -> Result<u64, JournalError> {
        self.until_committed("raise the generation counter", || {
            let view = self.read()?;
            if view.generation >= floor {
                return Ok(Some(view.generation));
            }
            let then = vec![TxnOp::put(self.keys.generation(), floor.to_string(), None)];
            Ok(self.commit("raise the generation counter", &view, then)?.map(|_| floor))
        })
    }
}
