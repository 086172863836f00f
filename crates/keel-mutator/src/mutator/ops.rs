//! Write, delete and rename: each a fenced sequence of logged steps.

use super::{
    DirSyncStatus, Errno, Expect, IntentKey, LeaseBackend, Look, MutateError, Mutator, Op, OsStr, Outcome, Point,
    PreState, Record, Request, Session, Stage, Step, Storage, Target, content_hash, dir_identity, dir_sync,
    forbidden_escape, gate_path, is_errno, look, scratch_name, unlink_at,
};

impl<B: LeaseBackend, S: Storage + Clone> Mutator<B, S> {
    /// Writes `content` to `path` (workspace-relative) if the gate, the pre-state and the inode
    /// checks allow; atomically (temporary sibling, fsync, rename, directory fsync) and keeping
    /// the replaced file's permission bits.
    pub fn write(&self, path: &str, content: &[u8], request: &Request) -> Result<Outcome, MutateError> {
        let canonical = match gate_path(path)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if content.len() as u64 > self.options.content_bytes_max {
            return Err(MutateError::TooLarge {
                path: canonical.into(),
                bytes: content.len() as u64,
                bytes_max: self.options.content_bytes_max,
            });
        }
        let hash = content_hash(content);
        let key = IntentKey { op: Op::Write, path: canonical.clone(), to: None, hash: Some(hash.clone()) };
        let mut session = self.session()?;
        let target = match self.admit(&mut session, request, &key, &[&canonical])? {
            Ok(mut targets) => targets.remove(0),
            Err(answer) => return Ok(answer),
        };
        let scratch = scratch_name(&canonical, "keel-tmp", request.intent.as_str());
        self.log_intent(&mut session, request, &key, Some(&scratch))?;
        let result = self.write_steps(&mut session, &target, &scratch, content, &hash, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn write_steps(
        &self,
        session: &mut Session<'_, S>,
        target: &Target<S::Dir>,
        scratch: &str,
        content: &[u8],
        hash: &str,
        request: &Request,
    ) -> Stage<Outcome> {
        let intent = request.intent.as_str();
        let observed = match self.check(session, intent, target, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        // The temporary sibling: a stale one of the same intent (a crashed earlier attempt that
        // recovery could not reach) is replaced.
        unlink_at(self.storage(), target.parent(), scratch, &target.path)?;
        let storage = self.storage();
        let mut file = storage
            .create_new_at(target.parent(), OsStr::new(scratch), 0o666)
            .map_err(|e| MutateError::io("create temporary", &target.path, e))?;
        let written = (|| {
            if let Some(mode) = observed.mode {
                storage.set_mode(&file, mode).map_err(|e| MutateError::io("fchmod", &target.path, e))?;
            }
            storage.write_all(&mut file, content).map_err(|e| MutateError::io("write temporary", &target.path, e))?;
            storage.sync_all(&file).map_err(|e| MutateError::io("fsync temporary", &target.path, e))
        })();
        drop(file);
        if let Err(error) = written {
            let _ = unlink_at(self.storage(), target.parent(), scratch, &target.path);
            return Err(error);
        }
        self.step_done(session, &Record::step(intent, Step::TempCreated), Point::TempWritten, Point::TempLogged)?;
        let replace = observed.inode.is_some();
        let renamed = self.fenced(target, &observed, &[&target.path], &request.holder, || {
            Ok(storage.rename_at(target.parent(), OsStr::new(scratch), target.parent(), target.name(), replace))
        })?;
        let renamed = match renamed {
            Ok(renamed) => renamed,
            Err(refused) => {
                unlink_at(self.storage(), target.parent(), scratch, &target.path)?;
                return Ok(Err(refused));
            }
        };
        match renamed {
            Ok(()) => {}
            Err(e) if is_errno(&e, Errno::EXIST) => {
                unlink_at(self.storage(), target.parent(), scratch, &target.path)?;
                return Ok(Err(Outcome::InodeSwapped { path: target.path.clone() }));
            }
            Err(e) => {
                let _ = unlink_at(self.storage(), target.parent(), scratch, &target.path);
                return Err(MutateError::io("rename", &target.path, e));
            }
        }
        self.step_done(session, &Record::step(intent, Step::Renamed), Point::Renamed, Point::RenamedLogged)?;
        let synced = dir_sync(self.storage(), target.parent(), &target.path)?;
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Written {
            path: target.path.clone(),
            hash: hash.to_owned(),
            bytes: content.len() as u64,
            mode_kept: observed.mode,
            dir_sync: synced,
        }))
    }

    /// Deletes the file at `path`: renamed to a trash name first, then unlinked. The pre-state
    /// must be a hash or `any` (and the file must exist).
    pub fn delete(&self, path: &str, request: &Request) -> Result<Outcome, MutateError> {
        let canonical = match gate_path(path)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if request.expect == Expect::Absent {
            return Err(MutateError::InvalidRequest {
                what: format!("delete {canonical}"),
                reason: "a delete cannot expect the file to be absent",
            });
        }
        let key = IntentKey { op: Op::Delete, path: canonical.clone(), to: None, hash: None };
        let mut session = self.session()?;
        let target = match self.admit(&mut session, request, &key, &[&canonical])? {
            Ok(mut targets) => targets.remove(0),
            Err(answer) => return Ok(answer),
        };
        let scratch = scratch_name(&canonical, "keel-trash", request.intent.as_str());
        self.log_intent(&mut session, request, &key, Some(&scratch))?;
        let result = self.delete_steps(&mut session, &target, &scratch, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn delete_steps(
        &self,
        session: &mut Session<'_, S>,
        target: &Target<S::Dir>,
        scratch: &str,
        request: &Request,
    ) -> Stage<Outcome> {
        let intent = request.intent.as_str();
        let observed = match self.check_present(session, intent, target, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        let trashed = self.fenced(target, &observed, &[&target.path], &request.holder, || {
            self.storage()
                .rename_at(target.parent(), target.name(), target.parent(), OsStr::new(scratch), false)
                .map_err(|e| MutateError::io("rename to trash", &target.path, e))
        })?;
        if let Err(refused) = trashed {
            return Ok(Err(refused));
        }
        self.step_done(session, &Record::step(intent, Step::Trashed), Point::Trashed, Point::TrashedLogged)?;
        unlink_at(self.storage(), target.parent(), scratch, &target.path)?;
        self.step_done(session, &Record::step(intent, Step::Unlinked), Point::Unlinked, Point::UnlinkedLogged)?;
        let synced = dir_sync(self.storage(), target.parent(), &target.path)?;
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Deleted { path: target.path.clone(), dir_sync: synced }))
    }

    /// Moves the file at `from` to `to`, which must be absent (the move never replaces a file).
    /// Both paths pass the gate; the pre-state is the source's and must be a hash or `any`.
    pub fn rename(&self, from: &str, to: &str, request: &Request) -> Result<Outcome, MutateError> {
        let from = match gate_path(from)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        let to = match gate_path(to)? {
            Ok(canonical) => canonical,
            Err(escape) => return Ok(escape),
        };
        if request.expect == Expect::Absent {
            return Err(MutateError::InvalidRequest {
                what: format!("rename {from}"),
                reason: "a rename cannot expect its source to be absent",
            });
        }
        if from == to {
            return Err(MutateError::InvalidRequest {
                what: format!("rename {from} to {to}"),
                reason: "source and destination are the same path",
            });
        }
        let key = IntentKey { op: Op::Rename, path: from.clone(), to: Some(to.clone()), hash: None };
        let mut session = self.session()?;
        let (source, destination) = match self.admit(&mut session, request, &key, &[&from, &to])? {
            Ok(mut targets) => {
                let destination = targets.pop().expect("admit resolves every path");
                (targets.pop().expect("admit resolves every path"), destination)
            }
            Err(answer) => return Ok(answer),
        };
        self.log_intent(&mut session, request, &key, None)?;
        let result = self.rename_steps(&mut session, &source, &destination, request);
        self.settle(&mut session, request.intent.as_str(), result)
    }

    fn rename_steps(
        &self,
        session: &mut Session<'_, S>,
        source: &Target<S::Dir>,
        destination: &Target<S::Dir>,
        request: &Request,
    ) -> Stage<Outcome> {
        let intent = request.intent.as_str();
        let Look::Seen(at_destination) =
            look(self.storage(), &destination.resolved, &destination.path, self.options.content_bytes_max)?
        else {
            session.log(&Record::noted(intent, Step::Aborted, "forbidden"))?;
            return Ok(Err(forbidden_escape(&destination.path, "the destination is a symlink")));
        };
        if at_destination.state != PreState::Absent {
            session.log(&Record::noted(intent, Step::Aborted, "precondition_failed"))?;
            return Ok(Err(Outcome::PreconditionFailed {
                path: destination.path.clone(),
                expected: Expect::Absent,
                actual: at_destination.state,
            }));
        }
        let observed = match self.check_present(session, intent, source, &request.expect)? {
            Ok(observed) => observed,
            Err(refused) => return Ok(Err(refused)),
        };
        let paths = [source.path.as_str(), destination.path.as_str()];
        let moved = self.fenced(source, &observed, &paths, &request.holder, || {
            if let Some(refused) = self.recheck_parent(destination)? {
                return Ok(Err(refused));
            }
            Ok(Ok(self.storage().rename_at(
                source.parent(),
                source.name(),
                destination.parent(),
                destination.name(),
                false,
            )))
        })?;
        let moved = match moved {
            Ok(Ok(moved)) => moved,
            Ok(Err(refused)) | Err(refused) => return Ok(Err(refused)),
        };
        match moved {
            Ok(()) => {}
            Err(e) if is_errno(&e, Errno::EXIST) => {
                return Ok(Err(Outcome::InodeSwapped { path: destination.path.clone() }));
            }
            Err(e) => return Err(MutateError::io("rename", &source.path, e)),
        }
        self.step_done(session, &Record::step(intent, Step::Renamed), Point::Renamed, Point::RenamedLogged)?;
        let mut synced = dir_sync(self.storage(), destination.parent(), &destination.path)?;
        if dir_identity(self.storage(), source.parent(), &source.path)?
            != dir_identity(self.storage(), destination.parent(), &destination.path)?
        {
            let source_synced = dir_sync(self.storage(), source.parent(), &source.path)?;
            if source_synced == DirSyncStatus::Unsupported {
                synced = source_synced;
            }
        }
        self.dir_synced(session, intent, synced)?;
        Ok(Ok(Outcome::Renamed { from: source.path.clone(), to: destination.path.clone(), dir_sync: synced }))
    }
}
