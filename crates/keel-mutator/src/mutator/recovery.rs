//! Recovery at open: every incomplete intent rolled forward or back, and the log compacted.

use super::{
    Appender, Entry, INTENTS_REMEMBERED_MAX, LeaseBackend, Look, MutateError, Mutator, Observed, Op, Path, PreState,
    Record, Recovery, Resolved, Session, Step, Storage, dir_sync, exists_at, look, unlink_at,
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
    /// forward). Safe only under the lock: no live operation can be mid-way. What to look at and
    /// what it means is [`plan`]'s; this only looks.
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
        let scratch = entry.scratch.clone().unwrap_or_default();
        let scratch_exists = !scratch.is_empty() && exists_at(self.storage(), resolved.parent(), &scratch, &path)?;
        let holds = |resolved: &Resolved<S::Dir>, path: &str, hash: Option<&String>| -> Result<bool, MutateError> {
            Ok(match look(self.storage(), resolved, path, self.options.content_bytes_max)? {
                Look::Seen(Observed { state: PreState::Present { hash: found }, .. }) => Some(&found) == hash,
                _ => false,
            })
        };
        let applied = match plan(entry.key.op, |step| entry.has(step), scratch_exists) {
            Plan::RemoveScratch { applied } => {
                unlink_at(self.storage(), resolved.parent(), &scratch, &path)?;
                applied
            }
            Plan::Decided { applied } => applied,
            Plan::IfTargetHoldsNewContent => holds(&resolved, &path, entry.key.hash.as_ref())?,
            Plan::IfMoved => {
                let source = resolved.name().to_string_lossy();
                let to = entry.key.to.clone().unwrap_or_default();
                !exists_at(self.storage(), resolved.parent(), &source, &path)?
                    && match self.root.resolve(Path::new(&to)) {
                        Ok(destination) => holds(&destination, &to, entry.pre.as_ref())?,
                        Err(_) => false,
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

/// What recovery must look at, or do, for an incomplete intent: decided from its log records
/// and whether its scratch file (temporary or trash) still exists. Pure, so each case is tested
/// without a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Remove the scratch file; the intent then counts as applied or not.
    RemoveScratch {
        /// Whether the effect had happened.
        applied: bool,
    },
    /// The log alone decides.
    Decided {
        /// Whether the effect had happened.
        applied: bool,
    },
    /// A write whose temporary is gone with no `renamed` record: either the rename happened or
    /// nothing did, so it applied exactly when the target holds the new content.
    IfTargetHoldsNewContent,
    /// A checked rename with no `renamed` record: it applied exactly when the source is gone and
    /// the destination holds the content that was checked.
    IfMoved,
}

/// See [`Plan`]. A write's temporary still there means the rename never happened (it is the
/// rename that removes that name); a delete's trash name still there means the file was moved
/// aside, so the delete finishes by unlinking it.
pub(super) fn plan(op: Op, has: impl Fn(Step) -> bool, scratch_exists: bool) -> Plan {
    match op {
        Op::Write if scratch_exists => Plan::RemoveScratch { applied: false },
        Op::Delete if scratch_exists => Plan::RemoveScratch { applied: true },
        Op::Delete => Plan::Decided { applied: has(Step::Trashed) },
        Op::Write | Op::Rename if has(Step::Renamed) => Plan::Decided { applied: true },
        Op::Write if has(Step::TempCreated) => Plan::IfTargetHoldsNewContent,
        Op::Rename if has(Step::Checked) => Plan::IfMoved,
        // Nothing on disk was touched yet.
        Op::Write | Op::Rename => Plan::Decided { applied: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(list: &[Step]) -> impl Fn(Step) -> bool + '_ {
        move |step| list.contains(&step)
    }

    #[test]
    fn a_write_is_undone_while_its_temporary_exists_and_done_once_renamed() {
        let all = [Step::Intent, Step::Checked, Step::TempCreated, Step::Renamed];
        assert_eq!(plan(Op::Write, steps(&all[..3]), true), Plan::RemoveScratch { applied: false });
        assert_eq!(plan(Op::Write, steps(&all), false), Plan::Decided { applied: true });
        assert_eq!(plan(Op::Write, steps(&all[..3]), false), Plan::IfTargetHoldsNewContent);
        assert_eq!(plan(Op::Write, steps(&all[..2]), false), Plan::Decided { applied: false });
        assert_eq!(plan(Op::Write, steps(&[]), false), Plan::Decided { applied: false });
    }

    #[test]
    fn a_delete_is_finished_once_the_file_is_moved_aside() {
        assert_eq!(plan(Op::Delete, steps(&[Step::Checked]), true), Plan::RemoveScratch { applied: true });
        assert_eq!(plan(Op::Delete, steps(&[Step::Checked, Step::Trashed]), false), Plan::Decided { applied: true });
        assert_eq!(plan(Op::Delete, steps(&[Step::Checked]), false), Plan::Decided { applied: false });
    }

    #[test]
    fn a_rename_is_judged_by_where_the_checked_content_is() {
        assert_eq!(plan(Op::Rename, steps(&[Step::Checked, Step::Renamed]), false), Plan::Decided { applied: true });
        assert_eq!(plan(Op::Rename, steps(&[Step::Checked]), false), Plan::IfMoved);
        assert_eq!(plan(Op::Rename, steps(&[Step::Intent]), false), Plan::Decided { applied: false });
    }
}
