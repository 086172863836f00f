//! Appending records durably, repairing a crashed writer's fragment first, and what damage stops
//! grants.

use super::{
    Appender, BadLine, Cache, Excuse, Folded, FsError, Journal, JournalError, Object, Path, Read, RepairsBegun,
    Stopped, Storage, StorageRead, TORN_BYTES_MAX, Value, now_ts, quote, to_line, write_atomic_with,
};

impl<S: Storage + Clone> Journal<S> {
    /// Appends `records` (stamping `seq` and `ts`), durably, then folds them in. A torn tail left
    /// by a crashed writer is terminated by the appender and excused by a `REVIEW` first.
    ///
    /// The newline that terminates the fragment and that `REVIEW` go out in one write; if it is
    /// cut short (a power cut, a full disk), the fragment is left a whole line nobody excused,
    /// which would stop grants until an operator reviews it. So before that write, the fragment's
    /// excuse is made durable in `<journal>.torn`: a later writer excuses the lines it names (as
    /// the cut writer meant to) in the `REVIEW` of its own append, then removes it.
    pub(super) fn append(&self, cache: &mut Cache<S>, records: Vec<Object>) -> Result<(), JournalError> {
        self.append_records(cache, records, true)
    }

    /// [`append`](Self::append); with `durable` false, without waiting for the fdatasync (a
    /// forensic record nothing is acknowledged on). A torn-tail repair is always durable.
    pub(super) fn append_records(
        &self,
        cache: &mut Cache<S>,
        mut records: Vec<Object>,
        durable: bool,
    ) -> Result<(), JournalError> {
        let folded = Self::folded(cache);
        let begun = self.repairs_begun(folded);
        // Only a repair cut short leaves a sidecar: without one there is nothing to finish, and
        // the damage list is not scanned on every append.
        let mut excuses: Vec<Excuse> = if begun.is_empty() {
            Vec::new()
        } else {
            unreviewed(folded).iter().filter_map(Excuse::of_sentinel).filter(|e| begun.contains(e)).collect()
        };
        let fragment = match &folded.tail {
            Some((bad, true)) => {
                Some(Excuse::of_sentinel(&bad.sentinel()).expect("a sentinel has a line and raw text"))
            }
            _ => None,
        };
        if let Some(fragment) = &fragment {
            let mut pending = begun.clone();
            pending.push(fragment.clone());
            let bytes = serde_json::to_vec(&RepairsBegun { excuses: pending }).expect("excuses serialise");
            let _report = write_atomic_with(&self.storage, &self.torn_path, &bytes)?;
            excuses.push(fragment.clone());
        }
        if !excuses.is_empty() {
            // Marked as torn tails, so verify notes these lines instead of calling them damage.
            records.insert(0, keel_kernel::replay::torn_tail_review(&excuses, &self.writer_name()));
        }
        let (dev, ino) = (folded.dev, folded.ino);
        let seq = folded.state.next_seq();
        if seq.checked_add(records.len() as u64).is_none_or(|end| end == u64::MAX) {
            return Err(JournalError::Exhausted { path: self.path.clone(), counter: "seq" });
        }
        let ts = now_ts(&self.options.clock);
        // The cached handle is reused only if this process wrote the journal's last byte: after
        // another process appended, its idea of the tail is stale and it must be reopened.
        let end = folded.end_offset;
        let reuse = matches!(&cache.appender, Some((a, d, i)) if !a.is_failed() && *d == dev && *i == ino && dev != 0 && a.len() == end);
        if !reuse {
            let appender = Appender::open_with(self.storage.clone(), &self.path)?;
            let stat = self.storage.path_stat(&self.path).map_err(|e| FsError::io("stat", &self.path, e))?;
            cache.appender = Some((appender, stat.dev, stat.ino));
        }
        let (appender, _, _) = cache.appender.as_mut().expect("opened just above");
        let appended = records.len() as u64;
        for (n, mut record) in (seq..).zip(records) {
            record.insert("seq".to_owned(), Value::from(n));
            record.entry("ts").or_insert_with(|| Value::from(ts.clone()));
            let line = to_line(&record);
            // A repair (the REVIEW excusing a fragment) is made durable whatever follows it.
            let sync = durable || record.get("op").and_then(Value::as_str) == Some(keel_kernel::replay::REVIEW_OP);
            let appended =
                if sync { appender.append(line.as_bytes()) } else { appender.append_unsynced(line.as_bytes()) };
            if let Err(error) = appended {
                // Fail-stop: the handle that failed is not used again; the next operation
                // reopens, which re-reads the tail.
                cache.appender = None;
                cache.folded = None;
                return Err(error.into());
            }
        }
        if fragment.is_some() || !begun.is_empty() {
            // Every line it named is excused in the journal now (or was not damage after all); a
            // sidecar left by a crash here excuses only those same lines, which were fragments.
            let _ = self.storage.remove_file(&self.torn_path);
        }
        self.fold(cache)?;
        // Under the writer lock no keel writer appended: the fold continues where the records end
        // (unless someone removed or replaced the file meanwhile, which no lock keeps out).
        let after = Self::folded(cache);
        if (after.dev, after.ino) == (dev, ino) {
            debug_assert_eq!(after.state.next_seq(), seq + appended, "next_seq after an append");
        }
        self.after_append(cache)
    }

    /// The excuses in `<journal>.torn` that can still name a fragment a cut repair left; none
    /// when it is missing or unreadable (a sidecar that cannot be read excuses nothing, which
    /// fails closed). Each excuse names its line by number and by the hash of its text, and a run
    /// of `k` cut repairs leaves its fragments among the journal's last `k + 1` lines: an excuse
    /// for any earlier line is not one this sidecar could honestly hold, and is ignored.
    pub(super) fn repairs_begun(&self, folded: &Folded) -> Vec<Excuse> {
        let mut excuses = self
            .read_sidecar(&self.torn_path, TORN_BYTES_MAX)
            .and_then(|bytes| serde_json::from_slice::<RepairsBegun>(&bytes).ok())
            .map(|repairs| repairs.excuses)
            .unwrap_or_default();
        let lines = folded.safe_lines + u64::from(folded.tail.is_some());
        let reach = excuses.len() as u64 + 1;
        excuses.retain(|excuse| excuse.line.saturating_add(reach) >= lines);
        excuses
    }

    /// The bytes of a sidecar file (head snapshot, repairs begun), if it is there, readable and
    /// at most `bytes_max` long. Its reader treats anything else as "no sidecar".
    pub(super) fn read_sidecar(&self, path: &Path, bytes_max: u64) -> Option<Vec<u8>> {
        if self.storage.path_stat(path).ok()?.len > bytes_max {
            return None;
        }
        let file = self.storage.open_read(path).ok()?;
        let mut bytes = Vec::new();
        StorageRead::new(&self.storage, &file, 0).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Keeps the head fresh and the journal bounded.
    pub(super) fn after_append(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        let end = Self::folded(cache).end_offset;
        let over = self.options.compact_threshold_bytes.is_some_and(|threshold| end > threshold);
        if over && end > cache.compacted_bytes.saturating_mul(2) && Self::folded(cache).state.is_self_keyed() {
            // The record is durable: a compaction that fails (a full disk: it needs room for a
            // copy) must not make the operation report failure. The next append tries again.
            if self.compact_locked(cache).is_err() && cache.folded.is_none() {
                self.fold(cache)?;
            }
            return Ok(());
        }
        if Self::folded(cache).safe_offset >= cache.head_offset + self.options.head_every_bytes {
            // The head is derived data: failing to refresh it costs speed, never correctness.
            let _ = self.write_head(cache);
        }
        Ok(())
    }

    pub(super) fn writer_name(&self) -> String {
        format!("keel pid {} on {}", std::process::id(), self.options.host_id)
    }

    /// What stops grants now, if anything: the first unreviewed damaged line (a crashed writer's
    /// fragment that a repair began to excuse does not).
    pub(super) fn stopped(&self, folded: &Folded) -> Option<Stopped> {
        let damage = folded.state.stopping_grants(whole_bad_last_line(folded), &self.repairs_begun(folded));
        let first = damage.first()?;
        Some(Stopped {
            line_number: first.get("_line").and_then(Value::as_u64).map_or(0, |l| l + 1),
            raw: quote(first.get("_raw").and_then(Value::as_str).unwrap_or("")),
            more: damage.len() - 1,
        })
    }

    pub(super) fn damage_check(&self, folded: &Folded) -> Result<(), JournalError> {
        match self.stopped(folded) {
            Some(Stopped { line_number, raw, more }) => {
                Err(JournalError::Damaged { path: self.path.clone(), line_number, raw, more })
            }
            None => Ok(()),
        }
    }
}

/// The damage awaiting review ([`keel_kernel::LiveState::unreviewed`]); a review's excuse for a
/// whole bad last line holds once the review follows it.
pub(super) fn unreviewed(folded: &Folded) -> Vec<Object> {
    folded.state.unreviewed(whole_bad_last_line(folded))
}

/// The last line, if it does not parse and ends with `\n` (see [`unreviewed`]).
pub(super) fn whole_bad_last_line(folded: &Folded) -> Option<&BadLine> {
    match &folded.tail {
        Some((bad, false)) => Some(bad),
        _ => None,
    }
}
