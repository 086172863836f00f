//! Recovery at open: every incomplete intent rolled forward or back, and the log compacted.

use super::{
    Appender, Entry, INTENTS_REMEMBERED_MAX, LeaseBackend, Look, MutateError, Mutator, Observed, Op, Path, PreState,
    Record, Recovery, Session, Step, Storage, dir_sync, exists_at, look, unlink_at,
};

impl<B: LeaseBackend, S: Storage + Clone> Mutator<B, S> {
    pub(super) fn recover_all(&self, session: &mut Session<'_, S>) -> Result<Recovery, MutateError> {
        let mut recovery = Recovery::default();
        let pending: Vec<String> = session.index.incomplete.iter().cloned().collect();
        for intent in pending {
            let Some(entry) = session.index.intents.get(&intent).cloned() else {
                continue;
            };
            if self.recover(session, &intent, &entry)? {
                recovery.rolled_forward += 1;
            } else {
                recovery.rolled_back += 1;
            }
        }
        Ok(recovery)
    }

    /// Finishes or undoes an incomplete attempt; `true` when its effect had happened (rolled
    /// forward). Safe only under the lock: no live operation can be mid-way.
    pub(super) fn recover(
        &self,
        session: &mut Session<'_, S>,
        intent: &str,
        entry: &Entry,
    ) -> Result<bool, MutateError> {
        let path = entry.key.path.clone();
        let Ok(resolved) = self.root.resolve(Path::new(&path)) else {
            // The directory is gone or became a symlink: nothing of ours can be in it.
            session.log(&Record::noted(intent, Step::RolledBack, "path no longer resolves"))?;
            return Ok(false);
        };
        let applied = match entry.key.op {
            Op::Write => {
                let scratch = entry.scratch.clone().unwrap_or_default();
                if !scratch.is_empty() && exists_at(self.storage(), resolved.parent(), &scratch, &path)? {
                    unlink_at(self.storage(), resolved.parent(), &scratch, &path)?;
                    false
                } else if entry.has(Step::Renamed) {
                    true
                } else if entry.has(Step::TempCreated) {
                    // The temporary file is gone: either the rename happened (and the target
                    // holds the new content) or nothing did.
                    match look(self.storage(), &resolved, &path, self.options.content_bytes_max)? {
                        Look::Seen(Observed { state: PreState::Present { hash }, .. }) => Some(hash) == entry.key.hash,
                        _ => false,
                    }
                } else {
                    false
                }
            }
            Op::Delete => {
                let scratch = entry.scratch.clone().unwrap_or_default();
                if !scratch.is_empty() && exists_at(self.storage(), resolved.parent(), &scratch, &path)? {
                    unlink_at(self.storage(), resolved.parent(), &scratch, &path)?;
                    true
                } else {
                    entry.has(Step::Trashed)
                }
            }
            Op::Rename => {
                let to = entry.key.to.clone().unwrap_or_default();
                if entry.has(Step::Renamed) {
                    true
                } else if entry.has(Step::Checked)
                    && !exists_at(self.storage(), resolved.parent(), &resolved.name().to_string_lossy(), &path)?
                {
                    let moved = self
                        .root
                        .resolve(Path::new(&to))
                        .ok()
                        .map(|r| look(self.storage(), &r, &to, self.options.content_bytes_max));
                    matches!(moved, Some(Ok(Look::Seen(Observed { state: PreState::Present { hash }, .. }))) if Some(&hash) == entry.pre.as_ref())
                } else {
                    false
                }
            }
        };
        if applied {
            let synced = dir_sync(self.storage(), resolved.parent(), &path)?;
            if let Some(to) = entry.key.to.as_deref().and_then(|to| self.root.resolve(Path::new(to)).ok()) {
                let _ = dir_sync(self.storage(), to.parent(), &path)?;
            }
            session.log(&Record { dir_sync: Some(synced), ..Record::step(intent, Step::RolledForward) })?;
        } else {
            session.log(&Record::step(intent, Step::RolledBack))?;
        }
        Ok(applied)
    }

    /// Rewrites an oversized log as one summary line per remembered intent (atomically; the
    /// other processes notice the new inode and re-read).
    pub(super) fn compact_if_large(&self, session: &mut Session<'_, S>) -> Result<bool, MutateError> {
        if session.appender.len() <= self.options.log_compact_bytes || !session.index.incomplete.is_empty() {
            return Ok(false);
        }
        let mut bytes = Vec::new();
        for record in session.index.summary(INTENTS_REMEMBERED_MAX) {
            bytes.extend(serde_json::to_vec(&record)?);
            bytes.push(b'\n');
        }
        let _report = keel_fs::write_atomic_with(self.storage(), &self.log_path, &bytes)?;
        session.index.catch_up(self.storage(), &self.log_path)?;
        session.appender = Appender::open_with(self.storage().clone(), &self.log_path)?;
        Ok(true)
    }
}
