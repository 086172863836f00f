//! The lease backend: what a lease service does, whatever keeps the leases. The journal
//! ([`crate::Journal`], a file on one host) implements it; a backend for several hosts plugs in
//! beside it, and every caller (the CLI, the write gate, the hook and the MCP server) is written
//! against this trait, not against the journal.
//!
//! Decisions stay the kernel's: a backend folds its records into a [`LiveState`], asks the
//! kernel's arbiter and expiry predicate, and only stores and serialises.

use std::path::Path;
use std::time::Duration;

use keel_kernel::arbiter::Decision;
use keel_kernel::expiry::Verdict;
use keel_kernel::{Identity, LiveState, Object};

use crate::service::{
    AcquireOutcome, AcquireRequest, Adopted, Beat, HolderPid, JournalError, LiveLease, LiveView, Stats, Stopped,
};

/// Which lease an owner means: the exact `loop_ts` on `lane`, or (without one) the newest lease
/// on `lane` (case-folded) that the owner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef<'a> {
    /// The lane.
    pub lane: &'a str,
    /// The lease's `loop_ts`, if the caller knows it.
    pub loop_ts: Option<&'a str>,
}

impl<'a> LeaseRef<'a> {
    /// The newest lease on `lane` held by the caller's owner.
    pub fn lane(lane: &'a str) -> Self {
        Self { lane, loop_ts: None }
    }

    /// The lease at `identity`.
    pub fn exact(identity: &'a Identity) -> Self {
        Self { lane: &identity.lane, loop_ts: Some(&identity.loop_ts) }
    }
}

/// Where a lease service keeps its state: what the write gate binds a workspace to (so a stale
/// copy or a second service cannot let a released generation through) and protects from writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location<'a> {
    /// A journal file on this host (its lock, head and temporaries sit beside it).
    File(&'a Path),
    /// A service reached over the network, by a name that identifies it (endpoints and prefix).
    Named(&'a str),
}

/// A lease service. Every operation is atomic with respect to the others; a grant, a release or
/// any other record is durable before it returns `Ok`.
pub trait LeaseBackend {
    /// Takes a lease, or says why not (naming the blocking lease). On a grant the `ACQUIRE` is
    /// durable before this returns; a refusal appends a `REFUSE` on a best-effort basis.
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError>;

    /// What [`acquire`](Self::acquire) would answer now, writing nothing: the arbiter over the
    /// live leases, those provably dead left out (as a grant would reclaim them). For a read-only
    /// check before an edit; the answer can change before the caller acts on it.
    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError>;

    /// [`acquire`](Self::acquire), retried with backoff until granted or `timeout` passes; only
    /// the final refusal is recorded.
    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError>;

    /// Gives back a lease held by `owner`. `Ok(None)` when no such lease is live.
    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError>;

    /// Beats a lease held by `owner`: only the exact holder may. With `coalesce_floor_s`, a beat
    /// younger than that is not written again. `Ok(None)` when no such lease is live.
    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError>;

    /// Transfers a live lease to `new_owner`, tied to `holder` (see [`HolderPid`]). Never creates
    /// a lease: `Ok(None)` when none is live at that identity.
    ///
    /// The new holder gets a new fencing generation, above every token the old holder could
    /// present, so anything that checks tokens (the write gate, or a service outside keel) tells
    /// them apart. It is recorded as a `RECONCILE` of the lease at its identity with the new body:
    /// every reader of the format, dos-kernel's included, replaces the lease in place and gives
    /// it the next generation, so the live sets and generations still agree.
    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError>;

    /// Records an intent to stop whatever runs on `lane`. Grants nothing, kills nothing.
    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError>;

    /// Records an intent to start work on `lane`. Grants nothing, starts nothing.
    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError>;

    /// Evicts the live lease at `lease`. With `only_if_dead`, only a provably dead one.
    /// Returns its verdict, or `None` when nothing was evicted.
    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError>;

    /// The live leases in first-acquired order, with generations and expiry verdicts. The
    /// admission view is those whose verdict is not dead.
    fn live(&self) -> Result<Vec<LiveLease>, JournalError>;

    /// Runs `look` on the live state as folded now, and what stops grants, without copying a
    /// lease or judging one: for a caller that judges only the few leases it cares about
    /// ([`judge`](Self::judge)). With hundreds of live leases, copying and judging all of them is
    /// most of what a look costs. Holds the journal's lock while `look` runs: keep it short.
    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError>;

    /// Whether `lease` is provably dead now, as [`live`](Self::live) would say.
    fn judge(&self, lease: &Object) -> Verdict;

    /// [`live`](Self::live), and what stops grants, if anything, seen in one fold.
    fn live_view(&self) -> Result<LiveView, JournalError>;

    /// Runs `fence` on the live leases *under the service's serialisation* (the journal's writer lock), so that no grant, release
    /// or reclaim can happen between what `fence` sees and what it does. This is how a write gate
    /// makes its last check and its commit one step: a lease cannot be re-granted in between.
    /// Keep `fence` short (a check and a rename): every other writer waits for it.
    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError>;

    /// The journal's figures.
    fn stats(&self) -> Result<Stats, JournalError>;

    /// Where the service keeps its state.
    fn location(&self) -> Location<'_>;

    /// Paths no gated write may touch, whoever holds a lease (the taxonomy's `protected`).
    fn protected(&self) -> &[String];
}

/// A shared service is a service: one backend serves a server's tools and its write gate.
impl<T: LeaseBackend + ?Sized> LeaseBackend for std::sync::Arc<T> {
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError> {
        (**self).acquire(request)
    }
    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError> {
        (**self).probe(request)
    }
    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError> {
        (**self).acquire_wait(request, timeout)
    }
    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError> {
        (**self).release(lease, owner)
    }
    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError> {
        (**self).heartbeat(lease, owner, coalesce_floor_s)
    }
    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError> {
        (**self).adopt(lease, new_owner, holder)
    }
    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError> {
        (**self).halt(lane, owner, reason)
    }
    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError> {
        (**self).spawn(lane, owner, command)
    }
    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError> {
        (**self).scavenge(lease, reason, only_if_dead)
    }
    fn live(&self) -> Result<Vec<LiveLease>, JournalError> {
        (**self).live()
    }
    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError> {
        (**self).look(look)
    }
    fn judge(&self, lease: &Object) -> Verdict {
        (**self).judge(lease)
    }
    fn live_view(&self) -> Result<LiveView, JournalError> {
        (**self).live_view()
    }
    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError> {
        (**self).with_live(fence)
    }
    fn stats(&self) -> Result<Stats, JournalError> {
        (**self).stats()
    }
    fn location(&self) -> Location<'_> {
        (**self).location()
    }
    fn protected(&self) -> &[String] {
        (**self).protected()
    }
}
