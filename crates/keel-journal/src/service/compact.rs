//! Reviews of damage and compaction (and its plan, for a dry run).

use super::{
    Accepted, BadLine, Cache, Compaction, Excuse, Folded, GENERATION_FLOOR, Identity, Journal, JournalError,
    LINE_BYTES_MAX_DEFAULT, LiveState, Object, Storage, Value, now_ts, owner_named, review_record, to_line, unreviewed,
    whole_bad_last_line, write_atomic_with,
};

impl<S: Storage + Clone> Journal<S> {
    /// The unreviewed damaged lines (as corrupt sentinels): what stops grants. Writes nothing.
    pub fn unreviewed(&self) -> Result<Vec<Object>, JournalError> {
        self.observed(|_, cache| Ok(unreviewed(Self::folded(cache))))
    }

    /// Records a `REVIEW` by `by` excusing every unreviewed damaged line, so grants go on.
    ///
    /// Each damaged line may have been a grant whose token was handed out (a corrupted `ACQUIRE`
    /// was acknowledged once), so the review also raises the generation counter by one per line:
    /// no token is issued twice.
    pub fn accept_review(&self, by: &str) -> Result<Accepted, JournalError> {
        owner_named(by)?;
        self.locked(|this, cache| {
            let folded = Self::folded(cache);
            let damage = unreviewed(folded);
            if damage.is_empty() {
                return Ok(Accepted { lines: damage, generations_raised: None });
            }
            let before = folded.state.next_generation() - 1;
            let after = before.saturating_add(damage.len() as u64);
            let excuses: Vec<Excuse> = damage.iter().filter_map(Excuse::of_sentinel).collect();
            let mut review = review_record(&excuses, "reviewed by an operator", by);
            review.insert(GENERATION_FLOOR.into(), Value::from(after));
            this.append(cache, vec![review])?;
            Ok(Accepted { lines: damage, generations_raised: Some((before, after)) })
        })
    }

    /// Rewrites the journal as one checkpoint plus its corrupt lines (and the reviews that excuse
    /// them), crash-safely: old or new, never torn. Refused if it would change the live set.
    pub fn compact(&self) -> Result<Compaction, JournalError> {
        self.locked(Self::compact_locked)
    }

    /// [`compact`](Self::compact), telling `progress` how much of the journal has been read.
    ///
    /// Reading is what takes long, so the journal is folded first without the lock, as a read
    /// is, while `progress` hears of it; under the lock the fold then continues from that state
    /// past whatever was appended meanwhile (or starts over if the file was replaced).
    pub fn compact_observed(
        &self,
        progress: &mut dyn FnMut(crate::read::Progress),
    ) -> Result<Compaction, JournalError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.fold_observed(&mut cache, progress)?;
        }
        self.compact()
    }

    /// The records [`compact`](Self::compact) would write now, writing nothing (for a dry run):
    /// the same plan, so what is shown is what is written, but for the checkpoint's `ts`.
    pub fn compaction_plan(&self) -> Result<Vec<Object>, JournalError> {
        self.observed(|this, cache| this.plan(Self::folded(cache)).map(|(records, _ts)| records))
    }

    /// The compacted journal's records, and the time stamped on its checkpoint.
    pub(super) fn plan(&self, folded: &Folded) -> Result<(Vec<Object>, String), JournalError> {
        let mut records = folded
            .state
            .compact_fenced()
            .map_err(|source| JournalError::CompactRefused { path: self.path.clone(), source })?;
        let ts = now_ts(&self.options.clock);
        if let Some(checkpoint) = records.first_mut() {
            checkpoint.insert("ts".into(), Value::from(ts.clone()));
        }
        // A whole last line that does not parse is damage the fold holds back as a tail, not a
        // sentinel: carried as one, it stays damage until reviewed instead of vanishing.
        records.extend(whole_bad_last_line(folded).map(BadLine::sentinel));
        let excuses = folded.state.excuses_in_force();
        if !excuses.is_empty() {
            let mut review = review_record(&excuses, "carried forward by compaction", &self.writer_name());
            review.insert("seq".into(), Value::from(folded.state.next_seq().saturating_sub(1)));
            records.push(review);
        }
        Ok((records, ts))
    }

    pub(super) fn compact_locked(&self, cache: &mut Cache<S>) -> Result<Compaction, JournalError> {
        let folded = Self::folded(cache);
        let (records, ts) = self.plan(folded)?;
        // What compaction must keep: every live lease at its generation, and the counter.
        let kept = |state: &LiveState| -> (Vec<(Identity, Option<u64>)>, u64) {
            let live = state.live_with_identity().map(|(id, _)| (id.clone(), state.generation(id))).collect();
            (live, state.next_generation())
        };
        let before = cfg!(debug_assertions).then(|| kept(&folded.state));
        let mut bytes = Vec::new();
        for record in &records {
            let line = to_line(record);
            // A checkpoint holds every live lease on one line: past the readers' line limit it
            // would leave a journal no keel can read, so the rewrite is refused instead.
            if line.len() > LINE_BYTES_MAX_DEFAULT {
                return Err(JournalError::CompactTooLong {
                    path: self.path.clone(),
                    line_bytes: line.len(),
                    line_bytes_max: LINE_BYTES_MAX_DEFAULT,
                });
            }
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let bytes_before = folded.end_offset;
        cache.appender = None;
        cache.folded = None;
        // A compaction killed mid-way leaves a temporary copy of the journal; under the writer
        // lock none is in flight, so any found is such a leftover. Best effort: disk, not meaning.
        let _ = keel_fs::remove_stale_temporaries(&self.path);
        let report = write_atomic_with(&self.storage, &self.path, &bytes)?;
        let compaction = Compaction {
            ts,
            dir_synced: report.dir_sync == keel_fs::DirSync::Synced,
            bytes_before,
            bytes_after: bytes.len() as u64,
            records_after: records.len() as u64,
        };
        cache.compacted_bytes = compaction.bytes_after;
        cache.last_compaction = Some(compaction.clone());
        cache.head_offset = 0;
        self.fold(cache)?;
        if let Some(before) = before {
            debug_assert_eq!(kept(&Self::folded(cache).state), before, "compaction changed the live set or counter");
        }
        let _ = self.write_head(cache);
        Ok(compaction)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use crate::read::{PROGRESS_EVERY_BYTES, Progress};
    use crate::{Journal, JournalOptions};

    #[test]
    fn progress_of_a_compaction_rises_to_the_journals_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.jsonl");
        let mut journal = Vec::new();
        for i in 0u64.. {
            if journal.len() as u64 > 4 * PROGRESS_EVERY_BYTES {
                break;
            }
            writeln!(journal, "{{\"op\": \"ACQUIRE\", \"loop_ts\": \"{i}\", \"lane\": \"l\", \"seq\": {i}, \"lease\": {{\"lane\": \"l\", \"loop_ts\": \"{i}\"}}}}")
                .expect("in-memory write");
        }
        std::fs::write(&path, &journal).expect("write journal");
        let mut reports: Vec<Progress> = Vec::new();
        let compaction = Journal::open(&path, JournalOptions::default())
            .compact_observed(&mut |p| reports.push(p))
            .expect("compact");
        let total_bytes = journal.len() as u64;
        assert_eq!(compaction.bytes_before, total_bytes);
        assert!(reports.len() >= 3, "reports on the way: {reports:?}");
        assert!(reports.windows(2).all(|w| w[0].done_bytes < w[1].done_bytes), "monotone: {reports:?}");
        assert_eq!(reports.last(), Some(&Progress { done_bytes: total_bytes, total_bytes }));
    }
}
