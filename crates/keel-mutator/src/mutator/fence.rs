//! The fence: an intent admitted once, its pre-state checked, and the lease checked again under
//! the journal's serialisation right before the commit.

use super::{
    Decision, Expect, Holder, IntentId, IntentKey, LeaseBackend, LiveGrant, Look, MutateError, Mutator, Observed,
    Outcome, Path, Point, PreState, Record, Request, ResolveError, Session, Stage, Standing, Step, Storage, Target,
    dir_identity, forbidden_escape, gate, inode_at, look,
};

impl<B: LeaseBackend, S: Storage + Clone> Mutator<B, S> {
    /// Ends an attempt: `complete` after success, `aborted` after a refusal (the refusal itself
    /// is logged by whoever refused, unless it came from a re-check), or, after an error,
    /// whatever recovery makes of it (best effort; the next operation or open tries again).
    /// What every operation does before its steps: finish interrupted intents, answer a retried
    /// intent, ask the gate about every path, and resolve them beneath the root. `Err` is the
    /// answer to give at once (a duplicate or a refusal); nothing has been logged for it.
    pub(super) fn admit(
        &self,
        session: &mut Session<'_, S>,
        request: &Request,
        key: &IntentKey,
        paths: &[&str],
    ) -> Stage<Vec<Target<S::Dir>>> {
        self.recover_all(session)?;
        if let Some(outcome) = Self::prior(session, &request.intent, key)? {
            return Ok(Err(outcome));
        }
        if let Some(refused) = self.gate(paths, &request.holder)? {
            return Ok(Err(refused));
        }
        let mut targets = Vec::with_capacity(paths.len());
        for path in paths {
            match self.resolve(path)? {
                Ok(target) => targets.push(target),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        Ok(Ok(targets))
    }

    pub(super) fn settle(
        &self,
        session: &mut Session<'_, S>,
        intent: &str,
        result: Stage<Outcome>,
    ) -> Result<Outcome, MutateError> {
        match result {
            Ok(Ok(outcome)) => {
                session.log(&Record::step(intent, Step::Complete))?;
                self.point(Point::CompleteLogged);
                Ok(outcome)
            }
            Ok(Err(refused)) => {
                let still_open =
                    session.index.intents.get(intent).is_some_and(|e| e.standing() == Standing::Incomplete);
                if still_open {
                    session.log(&Record::noted(intent, Step::Aborted, refused.name()))?;
                }
                Ok(refused)
            }
            Err(error) => {
                if let Some(entry) = session.index.intents.get(intent).cloned() {
                    let _ = self.recover(session, intent, &entry);
                }
                Err(error)
            }
        }
    }

    /// A finished earlier attempt of this intent: `Duplicate` if it applied the same request,
    /// an error if the id was used for a different one, `None` to go ahead.
    pub(super) fn prior(
        session: &Session<'_, S>,
        intent: &IntentId,
        key: &IntentKey,
    ) -> Result<Option<Outcome>, MutateError> {
        let Some(entry) = session.index.intents.get(intent.as_str()) else {
            return Ok(None);
        };
        if &entry.key != key {
            return Err(MutateError::IntentConflict {
                intent: intent.clone(),
                recorded: entry.key.to_string(),
                presented: key.to_string(),
            });
        }
        Ok(match entry.standing() {
            Standing::Applied => Some(Outcome::Duplicate { intent: intent.clone(), op: key.op }),
            Standing::NotApplied | Standing::Incomplete => None,
        })
    }

    /// Asks the kernel's gate about every path against the live journal state.
    pub(super) fn gate(&self, paths: &[&str], holder: &Holder) -> Result<Option<Outcome>, MutateError> {
        let live = self.journal.live()?;
        Ok(self.gate_on(&live, paths, holder))
    }

    /// The gate over a given view of the live leases.
    pub(super) fn gate_on(&self, live: &[keel_journal::LiveLease], paths: &[&str], holder: &Holder) -> Option<Outcome> {
        let grants: Vec<LiveGrant<'_>> = live
            .iter()
            .map(|l| LiveGrant { identity: &l.identity, lease: &l.lease, generation: l.generation })
            .collect();
        for path in paths {
            match gate::decide(path, holder, &grants, &self.protected) {
                Decision::Allowed { .. } => {}
                Decision::Forbidden(refusal) => return Some(Outcome::Forbidden { refusal }),
                Decision::StaleGeneration { presented, live } => {
                    return Some(Outcome::StaleGeneration { presented, live });
                }
            }
        }
        None
    }

    /// Resolves beneath the root without following symlinks; an escape or a symlink is a
    /// `Forbidden` outcome, a missing directory an error.
    pub(super) fn resolve(&self, path: &str) -> Stage<Target<S::Dir>> {
        match self.root.resolve(Path::new(path)) {
            Ok(resolved) => Ok(Ok(Target { resolved, path: path.to_owned() })),
            Err(
                error @ (ResolveError::Escapes { .. } | ResolveError::Symlink { .. } | ResolveError::Invalid { .. }),
            ) => Ok(Err(forbidden_escape(path, &error.to_string()))),
            Err(error) => Err(MutateError::Resolve(error)),
        }
    }

    pub(super) fn log_intent(
        &self,
        session: &mut Session<'_, S>,
        request: &Request,
        key: &IntentKey,
        scratch: Option<&str>,
    ) -> Result<(), MutateError> {
        let record = Record {
            op: Some(key.op),
            path: Some(key.path.clone()),
            to: key.to.clone(),
            hash: key.hash.clone(),
            expect: Some(request.expect.as_log_text().to_owned()),
            owner: Some(request.holder.owner.clone()),
            lane: Some(request.holder.lane.clone()),
            loop_ts: request.holder.loop_ts.clone(),
            generation: Some(request.holder.generation),
            scratch: scratch.map(str::to_owned),
            ..Record::step(request.intent.as_str(), Step::Intent)
        };
        session.log(&record)?;
        self.point(Point::IntentLogged);
        Ok(())
    }

    /// [`check`](Self::check), then refuses (logging `aborted`) if the file is absent: what a
    /// delete or a rename needs, whatever pre-state the caller allowed.
    pub(super) fn check_present(
        &self,
        session: &mut Session<'_, S>,
        intent: &str,
        target: &Target<S::Dir>,
        expect: &Expect,
    ) -> Stage<Observed> {
        let observed = match self.check(session, intent, target, expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        if observed.inode.is_none() {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: target.path.clone(),
                expected: expect.clone(),
                actual: PreState::Absent,
            }));
        }
        Ok(Ok(observed))
    }

    /// Checks the pre-state and logs `checked`, or logs `aborted` and returns the refusal.
    pub(super) fn check(
        &self,
        session: &mut Session<'_, S>,
        intent: &str,
        target: &Target<S::Dir>,
        expect: &Expect,
    ) -> Stage<Observed> {
        let observed = match look(self.storage(), &target.resolved, &target.path, self.options.content_bytes_max)? {
            Look::Seen(observed) => observed,
            Look::Symlink => {
                session.log(&Record::noted(intent, Step::Aborted, "forbidden"))?;
                return Ok(Err(forbidden_escape(&target.path, "the final component is a symlink")));
            }
        };
        if !expect.admits(&observed.state) {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: target.path.clone(),
                expected: expect.clone(),
                actual: observed.state,
            }));
        }
        let (dev, ino) = observed.inode.map_or((None, None), |(d, i)| (Some(d), Some(i)));
        session.log(&Record {
            pre: Some(observed.state.to_string()),
            dev,
            ino,
            ..Record::step(intent, Step::Checked)
        })?;
        self.point(Point::CheckedLogged);
        Ok(Ok(observed))
    }

    /// The last check and the commit, as one step under the journal's writer lock (so no lease
    /// can be granted, released or reclaimed in between): the target is still the inode that was
    /// checked (or still absent), its directory is still the one the path resolves to, the gate
    /// still allows; only then does `commit` run.
    pub(super) fn fenced<T>(
        &self,
        target: &Target<S::Dir>,
        observed: &Observed,
        paths: &[&str],
        holder: &Holder,
        commit: impl FnOnce() -> Result<T, MutateError>,
    ) -> Stage<T> {
        self.journal.with_live(|live| {
            let swapped = Outcome::InodeSwapped { path: target.path.clone() };
            let now = inode_at(self.storage(), target.parent(), target.name(), &target.path)?;
            if now != observed.inode {
                return Ok(Err(swapped));
            }
            if let Some(refused) = self.recheck_parent(target)? {
                return Ok(Err(refused));
            }
            if let Some(refused) = self.gate_on(live, paths, holder) {
                return Ok(Err(refused));
            }
            self.point(Point::Fenced);
            commit().map(Ok)
        })?
    }

    /// The path still resolves, through real directories, to the directory we hold open.
    pub(super) fn recheck_parent(&self, target: &Target<S::Dir>) -> Result<Option<Outcome>, MutateError> {
        let swapped = Some(Outcome::InodeSwapped { path: target.path.clone() });
        let again = match self.root.resolve(Path::new(&target.path)) {
            Ok(again) => again,
            Err(ResolveError::Io { op, path, source }) => return Err(MutateError::Io { op, path, source }),
            Err(_) => return Ok(swapped),
        };
        if dir_identity(self.storage(), again.parent(), &target.path)?
            != dir_identity(self.storage(), target.parent(), &target.path)?
        {
            return Ok(swapped);
        }
        Ok(None)
    }
}
