//! Granting: a request's validation, the admission view (reclaiming only the provably dead),
//! the new lease's identity and body, and the live leases as callers see them.

use super::{
    AcquireOutcome, AcquireRequest, Admission, Cache, Decision, Folded, Grant, Identity, Journal, JournalError, Lease,
    LiveLease, LiveState, Object, Outcome, Recorded, Refusal, Request, Storage, Value, Verdict, Writer, admit, assess,
    casefold, format_utc, fresh_loop_ts, process, tree,
};

impl<S: Storage + Clone> Journal<S> {
    pub(super) fn verdict(&self, lease: &Object, now: f64) -> Verdict {
        let holder = process::holder_process(lease, &self.options.host_id);
        assess(lease, now.floor() as i64, &self.options.expiry, holder)
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

    /// The new lease's identity. A `loop_ts` the caller names must be free, or be taken by a
    /// lease being reclaimed, or by this owner's own provably dead lease (an agent restarted with
    /// its old `loop_ts`), which is then reclaimed too (added to `reclaimed`, so it is journaled).
    pub(super) fn new_identity(
        &self,
        folded: &Folded,
        request: &AcquireRequest,
        lane: &str,
        now: f64,
        reclaimed: &mut Vec<(Identity, Verdict)>,
    ) -> Result<Identity, JournalError> {
        if let Some(loop_ts) = &request.loop_ts {
            let identity = Identity { loop_ts: loop_ts.clone(), lane: lane.to_owned() };
            let free = match folded.state.lease(&identity) {
                None => true,
                Some(_) if reclaimed.iter().any(|(id, _)| *id == identity) => true,
                Some(lease) => {
                    let own = lease.get("holder").and_then(Value::as_str) == Some(request.owner.as_str());
                    let verdict = self.verdict(lease, now);
                    if own && verdict.is_dead() {
                        reclaimed.push((identity.clone(), verdict));
                    }
                    own && verdict.is_dead()
                }
            };
            if identity.loop_ts.is_empty() || !free {
                return Err(JournalError::IdentityInUse {
                    path: self.path.clone(),
                    loop_ts: loop_ts.clone(),
                    lane: lane.to_owned(),
                });
            }
            return Ok(identity);
        }
        let base = fresh_loop_ts(now);
        let mut identity = Identity { loop_ts: base.clone(), lane: lane.to_owned() };
        let mut n = 1;
        while folded.state.lease(&identity).is_some() {
            identity.loop_ts = format!("{base}-{n}");
            n += 1;
        }
        Ok(identity)
    }

    pub(super) fn lease_body(
        &self,
        request: &AcquireRequest,
        decision: &Decision,
        identity: &Identity,
        now: f64,
    ) -> Result<Object, JournalError> {
        let Recorded { pid, start, pgid } = request.holder_pid.recorded()?;
        // The lease's protection is fixed now, in its body: whoever judges it later reads its own
        // grace and TTL from it, and may only lengthen them.
        let expiry = &self.options.expiry;
        let ttl_minutes =
            request.ttl_minutes.unwrap_or(expiry.default_ttl_s as f64 / 60.0).max(expiry.ttl_floor_s as f64 / 60.0);
        let acquired_at = format_utc(now.floor() as i64);
        let lease = self.writer().lease(&Lease {
            identity,
            holder: &request.owner,
            acquired_at: &acquired_at,
            decision,
            pid,
            proc_starttime: start,
            pgid,
            ttl_minutes,
            grace_s: expiry.grace_s.max(expiry.grace_floor_s),
            forced: request.force,
            run_id: request.run_id.as_deref(),
        });
        Ok(lease)
    }

    /// The writer of this journal's records.
    pub(super) fn writer(&self) -> Writer<'_> {
        Writer { host_id: &self.options.host_id }
    }

    /// Finds the live lease an owner means: the exact `loop_ts` on `lane`, or the newest lease on
    /// `lane` (case-folded) held by `owner`.
    pub(super) fn find_owned<'a>(
        state: &'a LiveState,
        lane: &str,
        owner: &str,
        loop_ts: Option<&str>,
    ) -> Option<(&'a Identity, &'a Object)> {
        let lane = casefold(lane);
        state
            .live_with_identity()
            .filter(|(identity, lease)| {
                casefold(&identity.lane) == lane
                    && loop_ts.is_none_or(|ts| identity.loop_ts == ts)
                    && lease.get("holder").and_then(Value::as_str) == Some(owner)
            })
            .last()
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

/// The arbiter's view of a lease request.
pub(super) fn arbiter_request(request: &AcquireRequest) -> Request {
    Request {
        lane: request.lane.clone(),
        kind: request.kind.clone(),
        tree: request.tree.clone(),
        mode: request.mode.clone(),
        force: request.force,
    }
}

/// Refuses a request that is wrong whatever the journal holds: checked once, before the writer
/// lock, and not again on each retry of a wait. A blank lane would be granted under a name nobody
/// can type, a blank `loop_ts` read as an identity already live, an unknown mode as exclusive, and a
/// tree outside the workspace would collide with nothing.
pub(super) fn validate(request: &AcquireRequest) -> Result<(), JournalError> {
    if request.owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("a lease needs an owner".into()));
    }
    if request.ttl_minutes.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        return Err(JournalError::InvalidRequest("ttl_minutes must be a positive number".into()));
    }
    if !request.lane.is_empty() && request.lane.trim().is_empty() {
        return Err(JournalError::InvalidRequest(
            "the lane must not be blank (leave it empty to let the arbiter pick)".into(),
        ));
    }
    if request.loop_ts.as_deref().is_some_and(|ts| ts.trim().is_empty()) {
        return Err(JournalError::InvalidRequest("loop_ts must not be blank (omit it to have one generated)".into()));
    }
    if request.loop_ts.as_deref() == Some(keel_kernel::GENERATION_WATERMARK) {
        return Err(JournalError::InvalidRequest(format!(
            "loop_ts {:?} is reserved (it carries the grant counter through compaction)",
            keel_kernel::GENERATION_WATERMARK
        )));
    }
    arbiter_request(request).validate().map_err(|e| JournalError::InvalidRequest(e.to_string()))?;
    request.holder_pid.recorded()?;
    if let Some((entry, why)) = request.tree.iter().find_map(|e| tree::requestable(e).err().map(|why| (e, why))) {
        return Err(JournalError::InvalidRequest(format!("tree entry {entry:?} cannot be requested: {why}")));
    }
    Ok(())
}

/// Refuses a blank owner: a record that names no one can be traced to no one.
pub(super) fn owner_named(owner: &str) -> Result<(), JournalError> {
    if owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("the owner must not be blank".into()));
    }
    Ok(())
}
