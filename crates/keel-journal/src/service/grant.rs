//! Granting: a request's validation, the admission view (reclaiming only the provably dead),
//! the new lease's identity and body, and the live leases as callers see them.

use super::{
    AcquireOutcome, AcquireRequest, Admission, Cache, Decision, Folded, Grant, Identity, Journal, JournalError,
    LiveLease, LiveState, Object, Outcome, Refusal, Request, Storage, Verdict, Writer, admit, arbiter_request,
    fresh_loop_ts, granting,
};

impl<S: Storage + Clone> Journal<S> {
    pub(super) fn verdict(&self, lease: &Object, now: f64) -> Verdict {
        granting::verdict(&self.options, lease, now)
    }

    /// Reclaim-then-arbitrate ([`keel_kernel::admission::admit`]), judging leases now.
    pub(super) fn admission(&self, folded: &Folded, request: &Request, now: f64) -> Admission {
        admit(request, &folded.state, &self.options.taxonomy, |lease| self.verdict(lease, now))
    }

    pub(super) fn acquire_locked(
        &self,
        cache: &mut Cache<S>,
        request: &AcquireRequest,
        record_refusal: bool,
    ) -> Result<AcquireOutcome, JournalError> {
        let now = (self.options.clock)();
        let folded = Self::folded(cache);
        self.damage_check(folded)?;
        let Admission { mut decision, mut reclaimed } = self.admission(folded, &arbiter_request(request), now);
        if decision.outcome == Outcome::Refuse {
            // Say why the blocker is not reclaimable, so the requester knows to wait, and how long.
            let blocker =
                decision.blocking.as_ref().map(|b| Identity { loop_ts: b.loop_ts.clone(), lane: b.lane.clone() });
            if let Some(lease) = blocker.and_then(|identity| folded.state.lease(&identity)) {
                let grace_s = keel_kernel::expiry::grace_s(lease, &self.options.expiry);
                let verdict = self.verdict(lease, now);
                decision.reason =
                    format!("{}; the holder is not reclaimable: {verdict} (grace {grace_s}s)", decision.reason);
            }
            let recorded = record_refusal && self.record_refusal(cache, request, &decision, now);
            return Ok(AcquireOutcome::Refuse { decision, recorded });
        }
        if folded.state.next_generation() == u64::MAX {
            return Err(JournalError::Exhausted { path: self.path.clone(), counter: "generation" });
        }
        let counter_before = folded.state.next_generation();
        let identity = self.new_identity(folded, request, &decision.lane, now, &mut reclaimed)?;
        let lease = self.lease_body(request, &decision, &identity, now)?;
        let mut records: Vec<Object> =
            reclaimed.iter().map(|(id, verdict)| Writer::scavenge(id, &format!("reclaimed: {verdict}"))).collect();
        records.push(self.writer().acquire(&identity, &lease));
        self.append(cache, records)?;
        let generation = Self::folded(cache).state.generation(&identity).expect("a grant just folded has a generation");
        debug_assert_eq!(generation, counter_before, "a grant's generation is the fold's counter + 1");
        Ok(AcquireOutcome::Acquire(Grant { lease, identity, generation, decision, reclaimed }))
    }

    pub(super) fn record_refusal(
        &self,
        cache: &mut Cache<S>,
        request: &AcquireRequest,
        decision: &Decision,
        now: f64,
    ) -> bool {
        let loop_ts = request.loop_ts.clone().unwrap_or_else(|| fresh_loop_ts(now));
        let record = self.writer().refuse(&Refusal {
            holder: &request.owner,
            lane: &request.lane,
            loop_ts: &loop_ts,
            reason: &decision.reason,
            reason_class: decision.reason_class,
            run_id: request.run_id.as_deref(),
        });
        // Forensic only: a failed write never turns a refusal into anything else, and nothing
        // waits for it to be durable.
        self.append_records(cache, vec![record], false).is_ok()
    }

    pub(super) fn new_identity(
        &self,
        folded: &Folded,
        request: &AcquireRequest,
        lane: &str,
        now: f64,
        reclaimed: &mut Vec<(Identity, Verdict)>,
    ) -> Result<Identity, JournalError> {
        granting::new_identity(&folded.state, request, lane, now, reclaimed, |lease| self.verdict(lease, now)).map_err(
            |taken| JournalError::IdentityInUse { path: self.path.clone(), loop_ts: taken.loop_ts, lane: taken.lane },
        )
    }

    pub(super) fn lease_body(
        &self,
        request: &AcquireRequest,
        decision: &Decision,
        identity: &Identity,
        now: f64,
    ) -> Result<Object, JournalError> {
        granting::lease_body(&self.options, request, decision, identity, now)
    }

    /// The writer of this journal's records.
    pub(super) fn writer(&self) -> Writer<'_> {
        Writer { host_id: &self.options.host_id }
    }

    pub(super) fn find_owned<'a>(
        state: &'a LiveState,
        lane: &str,
        owner: &str,
        loop_ts: Option<&str>,
    ) -> Option<(&'a Identity, &'a Object)> {
        granting::find_owned(state, lane, owner, loop_ts)
    }

    pub(super) fn live_leases(&self, cache: &Cache<S>) -> Vec<LiveLease> {
        let now = (self.options.clock)();
        let state = &Self::folded(cache).state;
        state
            .live_with_identity()
            .map(|(identity, lease)| LiveLease {
                identity: identity.clone(),
                lease: lease.clone(),
                generation: state.generation(identity),
                verdict: self.verdict(lease, now),
            })
            .collect()
    }
}
