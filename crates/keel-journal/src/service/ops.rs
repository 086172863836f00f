//! The journal as a [`LeaseBackend`]: each operation folds, decides with the kernel, appends.

use crate::backend::Location;

use super::{
    AcquireOutcome, AcquireRequest, Adopted, Beat, Decision, Duration, HolderPid, Identity, Instant, Journal,
    JournalError, LeaseBackend, LeaseRef, LiveLease, LiveState, LiveView, Object, Stats, Stopped, Storage, Value,
    Verdict, WAIT_BACKOFF_MS_MAX, Writer, arbiter_request, format_utc, fresh_loop_ts, granting, owner_named,
    unreviewed, validate, whole_bad_last_line,
};

impl<S: Storage + Clone> LeaseBackend for Journal<S> {
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError> {
        validate(request)?;
        self.locked(|this, cache| this.acquire_locked(cache, request, true))
    }

    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError> {
        validate(request)?;
        let arbiter_request = arbiter_request(request);
        self.observed(|this, cache| {
            let folded = Self::folded(cache);
            this.damage_check(folded)?;
            let decision = this.admission(folded, &arbiter_request, (this.options.clock)()).decision;
            Ok(decision)
        })
    }

    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError> {
        validate(request)?;
        let started = Instant::now();
        let mut backoff_ms = 10;
        loop {
            let last = started.elapsed() >= timeout;
            let outcome = self.locked(|this, cache| this.acquire_locked(cache, request, last))?;
            if last || matches!(outcome, AcquireOutcome::Acquire(_)) {
                return Ok(outcome);
            }
            let left = timeout.saturating_sub(started.elapsed());
            std::thread::sleep(Duration::from_millis(backoff_ms).min(left));
            backoff_ms = (backoff_ms * 2).min(WAIT_BACKOFF_MS_MAX);
        }
    }

    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError> {
        let LeaseRef { lane, loop_ts } = *lease;
        self.locked(|this, cache| {
            let Some((identity, _)) = Self::find_owned(&Self::folded(cache).state, lane, owner, loop_ts) else {
                return Ok(None);
            };
            let identity = identity.clone();
            let record = this.writer().release(&identity, owner);
            this.append(cache, vec![record])?;
            Ok(Some(identity))
        })
    }

    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError> {
        let LeaseRef { lane, loop_ts } = *lease;
        self.locked(|this, cache| {
            let now = (this.options.clock)();
            let Some((identity, lease)) = Self::find_owned(&Self::folded(cache).state, lane, owner, loop_ts) else {
                return Ok(None);
            };
            let identity = identity.clone();
            if let Some(heartbeat_at) = granting::coalesced(&this.options, lease, coalesce_floor_s, now) {
                return Ok(Some(Beat::Coalesced { identity, heartbeat_at }));
            }
            let heartbeat_at = format_utc(now.floor() as i64);
            let record = this.writer().heartbeat(&identity, &heartbeat_at);
            this.append(cache, vec![record])?;
            Ok(Some(Beat::Beaten { identity, heartbeat_at }))
        })
    }

    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError> {
        owner_named(new_owner)?;
        let holder = holder.recorded()?;
        self.locked(|this, cache| {
            let identity = lease.clone();
            let folded = Self::folded(cache);
            let Some(lease) = folded.state.lease(&identity) else {
                return Ok(None);
            };
            if folded.state.next_generation() == u64::MAX {
                return Err(JournalError::Exhausted { path: this.path.clone(), counter: "generation" });
            }
            let prev_holder = lease.get("holder").cloned().unwrap_or(Value::Null);
            let body = granting::adopted_body(&this.options, lease, new_owner, &holder, (this.options.clock)());
            let record = this.writer().adopt(&identity, &prev_holder, new_owner, body);
            this.append(cache, vec![record])?;
            let generation =
                Self::folded(cache).state.generation(&identity).expect("an adopted lease just folded has a generation");
            Ok(Some(Adopted { identity, generation }))
        })
    }

    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        self.locked(|this, cache| {
            let record = this.writer().halt(lane, owner, reason);
            this.append(cache, vec![record])
        })
    }

    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        self.locked(|this, cache| {
            let loop_ts = fresh_loop_ts((this.options.clock)());
            let record = this.writer().spawn(lane, &loop_ts, owner, std::process::id(), command);
            this.append(cache, vec![record])
        })
    }

    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError> {
        self.locked(|this, cache| {
            let identity = lease.clone();
            let Some(lease) = Self::folded(cache).state.lease(&identity) else {
                return Ok(None);
            };
            let verdict = this.verdict(lease, (this.options.clock)());
            if only_if_dead && !verdict.is_dead() {
                return Ok(None);
            }
            this.append(cache, vec![Writer::scavenge(&identity, reason)])?;
            Ok(Some(verdict))
        })
    }

    fn live(&self) -> Result<Vec<LiveLease>, JournalError> {
        self.observed(|this, cache| Ok(this.live_leases(cache)))
    }

    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError> {
        self.observed(|this, cache| {
            let stopped = this.stopped(Self::folded(cache));
            Ok(look(&Self::folded(cache).state, stopped))
        })
    }

    fn judge(&self, lease: &Object) -> Verdict {
        self.verdict(lease, (self.options.clock)())
    }

    fn live_view(&self) -> Result<LiveView, JournalError> {
        self.observed(|this, cache| {
            Ok(LiveView { leases: this.live_leases(cache), grants_stopped: this.stopped(Self::folded(cache)) })
        })
    }

    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError> {
        self.locked(|this, cache| Ok(fence(&this.live_leases(cache))))
    }

    fn stats(&self) -> Result<Stats, JournalError> {
        self.observed(|_, cache| {
            let folded = Self::folded(cache);
            Ok(Stats {
                records: folded.state.record_count(),
                bytes: folded.end_offset,
                live_leases: folded.state.live_count(),
                corrupt: folded.state.corrupt().len() + usize::from(whole_bad_last_line(folded).is_some()),
                unreviewed_corrupt: unreviewed(folded).len(),
                ops: folded.state.op_counts(),
                last_compaction: cache.last_compaction.clone(),
            })
        })
    }

    fn location(&self) -> Location<'_> {
        Location::File(&self.path)
    }

    fn protected(&self) -> &[String] {
        &self.options.taxonomy.protected
    }
}
