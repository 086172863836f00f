//! Reclaim-then-arbitrate: the decision a grant takes, in which leases that are provably dead do
//! not block, and the dead leases that would have blocked (a grant scavenges them first, so the
//! live set never holds two colliding leases). Whether a lease is dead is the caller's judgement
//! (it reads the process table); the kernel asks for it only when something blocks, and then
//! first only for the leases that refuse the request on their own.

use crate::arbiter::{Decision, Outcome, Request, Taxonomy, decide};
use crate::expiry::Verdict;
use crate::replay::{Identity, LiveState};
use crate::value::Object;

/// The decision over the admission view, and the dead leases to reclaim before a grant.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The arbiter's decision with provably dead leases left out.
    pub decision: Decision,
    /// The dead leases that refuse the request on their own, with their verdicts: what a grant
    /// scavenges first. Empty when the decision is a refusal by a live lease.
    pub reclaimed: Vec<(Identity, Verdict)>,
}

/// Decides `request` over `state`'s live leases, leaving out those `judge` calls dead.
pub fn admit(
    request: &Request,
    state: &LiveState,
    taxonomy: &Taxonomy,
    judge: impl Fn(&Object) -> Verdict,
) -> Admission {
    let refuses_alone = |lease: &Object| decide(request, std::iter::once(lease), taxonomy).outcome == Outcome::Refuse;
    let decision = decide(request, state.live(), taxonomy);
    if decision.outcome != Outcome::Refuse {
        return Admission { decision, reclaimed: Vec::new() };
    }
    // If one of the leases that refuse on their own is alive, the request is refused whatever the
    // rest are (the arbiter never admits more when more is live), and the others need no judging.
    let blockers: Vec<(&Identity, &Object)> =
        state.live_with_identity().filter(|(_, lease)| refuses_alone(lease)).collect();
    let dead: Vec<&Identity> = blockers.iter().filter(|(_, lease)| judge(lease).is_dead()).map(|(id, _)| *id).collect();
    if dead.len() < blockers.len() {
        if dead.is_empty() {
            return Admission { decision, reclaimed: Vec::new() };
        }
        // Name a live blocker, not one that is provably dead.
        let rest = state.live_with_identity().filter(|(id, _)| !dead.contains(id)).map(|(_, lease)| lease);
        return Admission { decision: decide(request, rest, taxonomy), reclaimed: Vec::new() };
    }
    let mut alive = Vec::new();
    let mut dead = Vec::new();
    for (identity, lease) in state.live_with_identity() {
        let verdict = judge(lease);
        if verdict.is_dead() {
            dead.push((identity, lease, verdict));
        } else {
            alive.push(lease);
        }
    }
    if dead.is_empty() {
        return Admission { decision, reclaimed: Vec::new() };
    }
    let reclaimed = dead
        .iter()
        .filter(|(_, lease, _)| refuses_alone(lease))
        .map(|(identity, _, verdict)| ((*identity).clone(), *verdict))
        .collect();
    Admission { decision: decide(request, alive.iter().copied(), taxonomy), reclaimed }
}
