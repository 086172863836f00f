//! Reviewing damage, and checking a whole store.

use super::{
    BTreeMap, CheckReport, DamagedLine, DeserializeOwned, Event, FsRuntimeStore, Keyed, Log, OsStorage, Path, PathBuf,
    REVIEWED_BYTES_MAX, RUNTIMES_DIR, Result, Reviewed, Scanner, Step, Storage, StoreError, TranscriptEntry, damage_in,
    encode, exists, read_file, reviewed_lines, reviewed_path, write_atomic_with,
};

impl FsRuntimeStore<OsStorage> {
    /// Validates everything: snapshots, placement, every line of every log, every index entry,
    /// every counter. Damage is reported, not returned as an error; an error means the check
    /// itself could not run (invalid id, runtime missing).
    pub fn check(root: &Path, runtime_id: &str) -> Result<CheckReport> {
        Self::check_with(OsStorage, root, runtime_id)
    }
}

impl<S: Storage + Clone> FsRuntimeStore<S> {
    /// The damaged lines of every log of this runtime (events, then each worker's transcript)
    /// with the log they are in; with `accept_by`, records that `accept_by` looked at them, so
    /// appends go on (`<log>.reviewed`, written atomically under the writer lock). The damaged
    /// lines stay in the logs: a review excuses, it never erases.
    pub fn review(&self, accept_by: Option<&str>) -> Result<Vec<(PathBuf, DamagedLine)>> {
        const OP: &str = "review runtime";
        let _lock = self.lock(OP)?;
        let storage = &self.storage;
        let mut logs = vec![(self.events.log.clone(), damage_in::<Event, S>(storage, &self.events.log, OP)?)];
        for worker_id in self.worker_ids(OP)? {
            let log = self.transcript_log(&worker_id, OP)?;
            let damage = damage_in::<TranscriptEntry, S>(storage, &log, OP)?;
            logs.push((log, damage));
        }
        let mut found = Vec::new();
        for (log, damage) in logs {
            if damage.is_empty() {
                continue;
            }
            if let Some(by) = accept_by {
                let path = reviewed_path(&log.path);
                let mut reviewed: Reviewed = match read_file(storage, &path, REVIEWED_BYTES_MAX) {
                    Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                    Err(_) => Reviewed::default(),
                };
                for d in &damage {
                    let excuse = (d.line, d.raw_blake3.clone());
                    if !reviewed.excuses.contains(&excuse) {
                        reviewed.excuses.push(excuse);
                    }
                }
                reviewed.by.push(by.to_owned());
                let bytes = serde_json::to_vec(&reviewed).expect("a review serialises");
                let _report = write_atomic_with(storage, &path, &bytes).map_err(|e| StoreError::fs(OP, e))?;
            }
            found.extend(
                damage
                    .into_iter()
                    .map(|d| (log.path.clone(), DamagedLine { line: d.line, key: d.key, excerpt: d.excerpt })),
            );
        }
        Ok(found)
    }

    /// [`check`](FsRuntimeStore::check) through `storage`.
    pub fn check_with(storage: S, root: &Path, runtime_id: &str) -> Result<CheckReport> {
        const OP: &str = "check runtime";
        let encoded = encode(OP, "runtime id", runtime_id)?;
        let dir = root.join(RUNTIMES_DIR).join(&encoded);
        let mut report = CheckReport { runtime_id: runtime_id.to_owned(), ..CheckReport::default() };
        // Any error but "not found" is left for the open below to report.
        if matches!(exists(&storage, &dir, OP), Ok(false)) {
            return Err(StoreError::Missing {
                op: OP,
                path: dir,
                runtime_id: Some(runtime_id.to_owned()),
                worker_id: None,
            });
        }
        let store = match Self::open_with(storage, root, runtime_id) {
            Ok(store) => store,
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
        let mut last_event_of: BTreeMap<String, u64> = BTreeMap::new();
        match Self::check_log::<Event>(&store.storage, &store.events.log, &mut report, &mut |event, line| {
            store.validate_event(event, line, OP)?;
            if let Some(worker_id) = &event.worker_id {
                last_event_of.insert(worker_id.clone(), event.id);
            }
            Ok(())
        }) {
            Ok(count) => report.events = count,
            Err(e) => report.problems.push(e.to_string()),
        }
        let ids = match store.worker_ids(OP) {
            Ok(ids) => ids,
            Err(e) => {
                report.problems.push(e.to_string());
                Vec::new()
            }
        };
        report.workers = ids.len() as u64;
        for worker_id in &ids {
            let worker = match store.read_worker(worker_id, OP) {
                Ok(worker) => worker,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let recorded = worker.last_event_id;
            let actual = last_event_of.remove(worker_id);
            if recorded != actual {
                let last_line = report.events;
                let said = |id: Option<u64>| id.map_or_else(|| "none".to_owned(), |id| id.to_string());
                let text = format!(
                    "worker {worker_id:?}: worker.json's last_event_id is {}, the event log's last event about it is {}",
                    said(recorded),
                    said(actual)
                );
                if actual == Some(last_line) && recorded < actual {
                    report.notes.push(format!("{text} (the last event; the next append repairs it)"));
                } else {
                    report.problems.push(text);
                }
            }
            let log = match store.transcript_log(worker_id, OP) {
                Ok(log) => log,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let path = log.path.clone();
            match Self::check_log::<TranscriptEntry>(&store.storage, &log, &mut report, &mut |entry, line| {
                store.validate_entry(entry, worker_id, &path, line, OP)
            }) {
                Ok(count) => report.transcript_entries += count,
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        for (worker_id, id) in last_event_of {
            report.problems.push(format!("event {id} names worker {worker_id:?}, which does not exist"));
        }
        Ok(report)
    }

    /// Scans a whole log from its first line, validating every record and every index entry.
    pub(super) fn check_log<R: DeserializeOwned + Keyed>(
        storage: &S,
        log: &Log,
        report: &mut CheckReport,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<u64> {
        const OP: &str = "check log";
        let mut scanner = Scanner::<R, S>::open(storage, log, 0, log.first_key, OP)?;
        let mut offsets = Vec::new();
        let mut count = 0;
        loop {
            match scanner.next(OP)? {
                Step::Record { record, line, offset, .. } => {
                    visit(&record, line)?;
                    if log.entry_for(record.key()).is_some() {
                        offsets.push((record.key(), offset));
                    }
                    count += 1;
                }
                Step::Damaged(damage) => {
                    let reviewed = if reviewed_lines(storage, &log.path, OP)?
                        .contains(&(damage.line, damage.raw_blake3.clone()))
                    {
                        " (reviewed)"
                    } else {
                        "; appends wait for `keel store review --accept`"
                    };
                    report.problems.push(format!(
                        "{}: line {} is damaged (it stands for record {}): {:?}{reviewed}",
                        log.path.display(),
                        damage.line,
                        damage.key,
                        damage.excerpt
                    ));
                }
                Step::Torn(torn) => {
                    report.notes.push(format!(
                        "{}: torn tail of {} bytes at line {} (never acknowledged; removed by the next append)",
                        log.path.display(),
                        torn.bytes,
                        torn.line
                    ));
                    break;
                }
                Step::End => break,
            }
        }
        let entries = log.index_entries(storage, OP)?;
        // Only the entries the log accounts for are read: a huge index costs no memory.
        let stored = log.read_index(storage, entries.min(offsets.len() as u64), OP)?;
        for (i, expected) in offsets.iter().enumerate() {
            match stored.get(i) {
                Some(entry) if entry == expected => {}
                Some(entry) => report.notes.push(format!(
                    "{}: index entry {i} says record {} at byte {}, the log has record {} at byte {} (reads near \
                     it scan from an earlier entry)",
                    log.index_path.display(),
                    entry.0,
                    entry.1,
                    expected.0,
                    expected.1
                )),
                None => {
                    report.notes.push(format!(
                        "{}: index is behind ({} of {} entries; the next open or append extends it)",
                        log.index_path.display(),
                        stored.len(),
                        offsets.len()
                    ));
                    break;
                }
            }
        }
        if entries > offsets.len() as u64 {
            report.notes.push(format!(
                "{}: {} index entries past the end of the log (ignored)",
                log.index_path.display(),
                entries - offsets.len() as u64
            ));
        }
        Ok(count)
    }
}
