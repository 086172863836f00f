//! Writing: every change under the runtime's writer lock, durable before it is acknowledged.

use super::{
    Appender, CREATING_PREFIX, DeserializeOwned, Diagnostic, Event, FileIdentity, FsRuntimeStore, Keyed, LogHandle,
    OsLock, PAGE_LIMIT_CEILING, Path, Result, RuntimeSnapshot, SCHEMA_VERSION, Step, Storage, StoreError,
    TRANSCRIPT_FILE, TranscriptEntry, Value, WORKER_FILE, WORKERS_DIR, WorkerRef, WorkerSnapshot, check_word,
    create_empty_file, encode, exists, now_ms, read_snapshot, refuse_unreviewed, remove_leftover, rename_into_place,
    sync_dir, to_json_line, write_snapshot,
};

impl<S: Storage + Clone> FsRuntimeStore<S> {
    pub(super) fn lock(&self, op: &'static str) -> Result<OsLock> {
        OsLock::acquire_timeout(&self.lock_path, self.lock_timeout_ms).map_err(|e| StoreError::fs(op, e))
    }

    /// Appends a diagnostic to `runtime.json` (under the lock), dropping the oldest past the limit.
    pub(super) fn record_diagnostic(&self, kind: &str, file: &Path, detail: String, op: &'static str) -> Result<()> {
        let path = self.runtime_path();
        let (mut runtime, _) = read_snapshot::<S, RuntimeSnapshot>(&self.storage, &path, op)?;
        self.validate_runtime(&runtime, op)?;
        let file = file.strip_prefix(&self.dir).unwrap_or(file).to_string_lossy().into_owned();
        runtime.diagnostics.push(Diagnostic {
            id: runtime.next_diagnostic_id,
            kind: kind.to_owned(),
            file,
            detail,
            recorded_at_ms: now_ms(),
        });
        runtime.next_diagnostic_id += 1;
        let keep = runtime.limits.diagnostics_max as usize;
        if runtime.diagnostics.len() > keep {
            let excess = runtime.diagnostics.len() - keep;
            runtime.diagnostics.drain(..excess);
        }
        write_snapshot(&self.storage, &path, &runtime, op)
    }

    /// Under the lock: brings `handle`'s tail up to date and removes a torn tail. Returns the
    /// last record scanned, if a scan happened.
    pub(super) fn refresh<R: DeserializeOwned + Keyed>(
        &self,
        handle: &mut LogHandle<S>,
        op: &'static str,
        visit: &mut dyn FnMut(&R, u64) -> Result<()>,
    ) -> Result<bool> {
        let storage = &self.storage;
        let identity = FileIdentity::of(storage, &handle.log.path, op)?;
        let scanned = match &handle.tail {
            Some(tail) if tail.torn.is_none() && tail.identity == identity => false,
            Some(tail)
                if (tail.identity.dev, tail.identity.ino) == (identity.dev, identity.ino)
                    && identity.len >= tail.valid_end =>
            {
                let (valid_end, next_key) = (tail.valid_end, tail.next_key);
                let mut damage = tail.damage.clone();
                let mut rescanned = handle.log.scan_from::<R, S>(storage, valid_end, next_key, op, visit)?;
                damage.append(&mut rescanned.damage);
                rescanned.damage = damage;
                handle.tail = Some(rescanned);
                true
            }
            _ => {
                handle.tail = Some(handle.log.scan_tail::<R, S>(storage, op, visit)?);
                true
            }
        };
        if scanned {
            handle.appender = None;
        }
        let tail = handle.tail.as_mut().expect("set above");
        if let Some(torn) = &tail.torn {
            let detail = format!(
                "removed {} bytes at offset {} (line {}), never acknowledged: {:?}",
                torn.bytes, torn.offset, torn.line, torn.excerpt
            );
            // The fragment stays in the tail until it is cut off: if a step here fails, the next
            // refresh rescans and finds it again. Forgotten, it would be glued to the next
            // append (which starts a torn tail with `\n`) into a whole line of damage.
            self.record_diagnostic("torn_tail_removed", &handle.log.path, detail, op)?;
            handle.log.truncate(storage, tail.valid_end, op)?;
            tail.identity = FileIdentity::of(storage, &handle.log.path, op)?;
            tail.torn = None;
            handle.appender = None;
            // The cut fsynced the log: everything before it is durable.
            handle.durable_next_key = tail.next_key;
        }
        let first_time = !handle.tail_locked;
        handle.tail_locked = true;
        Ok(scanned || first_time)
    }

    /// Under the lock: appends one line durably, extends the index, returns the record's key.
    pub(super) fn append_line(storage: &S, handle: &mut LogHandle<S>, line: &[u8], op: &'static str) -> Result<u64> {
        if handle.appender.is_none() {
            let appender = Appender::open_with(storage.clone(), &handle.log.path).map_err(|e| StoreError::fs(op, e))?;
            handle.appender = Some(appender);
        }
        let appender = handle.appender.as_mut().expect("opened above");
        let report = match appender.append(line) {
            Ok(report) => report,
            Err(e) => {
                // The record may or may not be on disk: forget everything cached, rescan next time.
                handle.appender = None;
                handle.tail = None;
                return Err(StoreError::fs(op, e));
            }
        };
        let tail = handle.tail.as_mut().expect("refreshed before appending");
        let key = tail.next_key;
        tail.next_key += 1;
        tail.valid_end = report.offset_after;
        tail.identity.len = report.offset_after;
        // The fdatasync made the whole file durable, the records before this one included.
        handle.durable_next_key = tail.next_key;
        if let Some(entry) = handle.log.entry_for(key) {
            // Derived data: if this write fails the next scan rewrites the entry.
            let _ = handle.log.write_index(storage, entry, &[(key, report.record_offset)], op);
        }
        Ok(key)
    }

    /// Under the lock: makes every record of `handle`'s tail durable (one `fdatasync` if some
    /// were only scanned) and returns the key after them, so a snapshot may count them.
    pub(super) fn make_durable(storage: &S, handle: &mut LogHandle<S>, op: &'static str) -> Result<u64> {
        let next_key = handle.tail.as_ref().expect("refreshed before").next_key;
        if next_key > handle.durable_next_key {
            let path = &handle.log.path;
            let file = storage.open_write(path).map_err(|e| StoreError::io(op, path, e))?;
            storage.sync_data(&file).map_err(|e| StoreError::io(op, path, e))?;
            handle.durable_next_key = next_key;
        }
        Ok(handle.durable_next_key)
    }

    /// Creates worker `worker_id` with its create `request`, status `created`, an empty
    /// transcript. The worker directory is built under a temporary name and renamed into place.
    pub fn create_worker(&mut self, worker_id: &str, request: Value) -> Result<WorkerSnapshot> {
        const OP: &str = "create worker";
        let dir = self.worker_dir(worker_id, OP)?;
        let worker = WorkerSnapshot {
            schema_version: SCHEMA_VERSION,
            worker_ref: self.worker_ref(worker_id),
            status: "created".to_owned(),
            request,
            next_transcript_seq: 0,
            last_event_id: None,
        };
        to_json_line(&worker.request, &self.limits, OP, "worker request")?;
        let _lock = self.lock(OP)?;
        let storage = &self.storage;
        let workers = self.dir.join(WORKERS_DIR);
        if exists(storage, &dir, OP)? {
            // Made durable before it is reported, in case its maker died before fsyncing it.
            sync_dir(storage, &workers, OP)?;
            return Err(StoreError::WorkerExists { op: OP, path: dir, worker_id: worker_id.to_owned() });
        }
        let runtime_path = self.runtime_path();
        let (mut runtime, _) = read_snapshot::<S, RuntimeSnapshot>(storage, &runtime_path, OP)?;
        self.validate_runtime(&runtime, OP)?;
        let count = self.worker_ids(OP)?.len() as u64;
        if count >= runtime.limits.workers_max {
            return Err(StoreError::LimitTooLarge { op: OP, limit: count + 1, limit_max: runtime.limits.workers_max });
        }
        // The counter goes first: a crash after it leaves a gap in worker sequence numbers,
        // never a worker the runtime did not count.
        runtime.next_worker_seq += 1;
        write_snapshot(storage, &runtime_path, &runtime, OP)?;
        let name = dir.file_name().expect("encoded name").to_string_lossy().into_owned();
        let building = workers.join(format!("{CREATING_PREFIX}{name}"));
        remove_leftover(storage, &building, OP)?;
        storage.create_dir(&building).map_err(|e| StoreError::io(OP, &building, e))?;
        write_snapshot(storage, &building.join(WORKER_FILE), &worker, OP)?;
        create_empty_file(storage, &building.join(TRANSCRIPT_FILE), OP)?;
        sync_dir(storage, &building, OP)?;
        rename_into_place(storage, &building, &dir, &workers, OP)?;
        let log = self.transcript_log(worker_id, OP)?;
        self.transcripts.insert(worker_id.to_owned(), LogHandle::new(log, None));
        Ok(worker)
    }

    /// Sets worker `worker_id`'s status (a word of `[a-z0-9_-]`), refreshing its snapshot's
    /// transcript checkpoint.
    pub fn set_worker_status(&mut self, worker_id: &str, status: &str) -> Result<WorkerSnapshot> {
        const OP: &str = "set worker status";
        check_word(OP, "worker status", status)?;
        let _lock = self.lock(OP)?;
        let mut worker = self.read_worker(worker_id, OP)?;
        self.refresh_transcript(worker_id, OP)?;
        let handle = self.transcripts.get_mut(worker_id).expect("refreshed above");
        let next_seq = Self::make_durable(&self.storage, handle, OP)?;
        status.clone_into(&mut worker.status);
        worker.next_transcript_seq = next_seq;
        write_snapshot(&self.storage, &self.worker_dir(worker_id, OP)?.join(WORKER_FILE), &worker, OP)?;
        Ok(worker)
    }

    /// Under the lock: refreshes worker `worker_id`'s transcript tail; returns its next seq.
    pub(super) fn refresh_transcript(&mut self, worker_id: &str, op: &'static str) -> Result<u64> {
        let mut handle = match self.transcripts.remove(worker_id) {
            Some(handle) => handle,
            None => LogHandle::new(self.transcript_log(worker_id, op)?, None),
        };
        let path = handle.log.path.clone();
        let result = self.refresh::<TranscriptEntry>(&mut handle, op, &mut |entry, line| {
            self.validate_entry(entry, worker_id, &path, line, op)
        });
        let next_key = handle.tail.as_ref().map(|t| t.next_key);
        self.transcripts.insert(worker_id.to_owned(), handle);
        result?;
        Ok(next_key.expect("refreshed"))
    }

    /// Appends an event (about worker `worker_id`, which must exist, if given). The store
    /// assigns the id: one more than the last. Durable when this returns.
    pub fn append_event(&mut self, worker_id: Option<&str>, payload: Value) -> Result<Event> {
        const OP: &str = "append event";
        if let Some(worker_id) = worker_id {
            encode(OP, "worker id", worker_id)?;
        }
        let _lock = self.lock(OP)?;
        let mut worker = worker_id.map(|w| self.read_worker(w, OP)).transpose()?;
        self.refresh_events(OP)?;
        refuse_unreviewed(&self.storage, &self.events, OP)?;
        let id = self.events.tail.as_ref().expect("refreshed").next_key;
        let event = Event {
            id,
            runtime_id: self.runtime_id.clone(),
            worker_id: worker_id.map(str::to_owned),
            recorded_at_ms: now_ms(),
            payload,
        };
        let line = to_json_line(&event, &self.limits, OP, "event")?;
        let appended = Self::append_line(&self.storage, &mut self.events, &line, OP)?;
        debug_assert_eq!(appended, id);
        if let (Some(worker), Some(worker_id)) = (worker.as_mut(), worker_id) {
            worker.last_event_id = Some(id);
            if let Some(handle) = self.transcripts.get(worker_id) {
                worker.next_transcript_seq = worker.next_transcript_seq.max(handle.durable_next_key);
            }
            let snapshot = self
                .worker_dir(worker_id, OP)
                .and_then(|dir| write_snapshot(&self.storage, &dir.join(WORKER_FILE), worker, OP));
            if snapshot.is_err() {
                // The event is durable and its id taken: reporting failure now (a full disk has
                // no room for the snapshot's copy) would have a retry append it twice. The
                // snapshot only caches the log's last event for the worker, and may now be
                // visible but not durable; the next event append writes it again.
                self.stale_worker = Some((worker_id.to_owned(), id));
            }
        }
        Ok(event)
    }

    /// Under the lock: refreshes the event tail and, the first time or after another process
    /// appended, makes sure the worker named by the last event has it as `last_event_id`.
    pub(super) fn refresh_events(&mut self, op: &'static str) -> Result<()> {
        let placeholder = LogHandle::new(self.events.log.clone(), None);
        let mut handle = std::mem::replace(&mut self.events, placeholder);
        let mut last: Option<(u64, Option<String>)> = None;
        let result = self.refresh::<Event>(&mut handle, op, &mut |event, line| {
            self.validate_event(event, line, op)?;
            last = Some((event.id, event.worker_id.clone()));
            Ok(())
        });
        self.events = handle;
        let check_last = result?;
        if let Some((worker_id, id)) = self.stale_worker.clone() {
            let mut worker = self.read_worker(&worker_id, op)?;
            worker.last_event_id = worker.last_event_id.max(Some(id));
            write_snapshot(&self.storage, &self.worker_dir(&worker_id, op)?.join(WORKER_FILE), &worker, op)?;
            self.stale_worker = None;
        }
        if !check_last {
            return Ok(());
        }
        let tail = self.events.tail.as_ref().expect("refreshed");
        if last.is_none() && tail.next_key > 1 {
            // Nothing was rescanned: read the last record itself.
            let mut scanner = self.events.log.scanner_near::<Event, S>(&self.storage, tail.next_key - 1, op)?.0;
            while scanner.next_key() < tail.next_key - 1 {
                scanner.skip(op)?;
            }
            if let Step::Record { record, .. } = scanner.next(op)? {
                last = Some((record.id, record.worker_id));
            }
        }
        if let Some((id, Some(worker_id))) = last {
            let mut worker = self.read_worker(&worker_id, op)?;
            if worker.last_event_id.is_none_or(|last| last < id) {
                // The event was only scanned (another writer's, or one whose append failed): a
                // snapshot naming it must not outlive it.
                Self::make_durable(&self.storage, &mut self.events, op)?;
                worker.last_event_id = Some(id);
                write_snapshot(&self.storage, &self.worker_dir(&worker_id, op)?.join(WORKER_FILE), &worker, op)?;
            }
        }
        Ok(())
    }

    pub(super) fn check_worker_ref(&self, worker_ref: &WorkerRef, op: &'static str) -> Result<()> {
        if worker_ref.runtime_id != self.runtime_id {
            return Err(StoreError::WrongRuntime {
                op,
                expected: self.runtime_id.clone(),
                found: worker_ref.runtime_id.clone(),
            });
        }
        encode(op, "worker id", &worker_ref.worker_id).map(drop)
    }

    /// Appends an entry to a worker's transcript. The store assigns `seq`: 0, 1, 2, ...
    /// Durable when this returns.
    pub fn append_transcript_entry(&mut self, worker_ref: &WorkerRef, entry: Value) -> Result<TranscriptEntry> {
        const OP: &str = "append transcript entry";
        self.check_worker_ref(worker_ref, OP)?;
        let worker_id = worker_ref.worker_id.as_str();
        let _lock = self.lock(OP)?;
        self.read_worker(worker_id, OP)?;
        let seq = self.refresh_transcript(worker_id, OP)?;
        refuse_unreviewed(&self.storage, self.transcripts.get(worker_id).expect("refreshed above"), OP)?;
        let record = TranscriptEntry { seq, worker_ref: worker_ref.clone(), recorded_at_ms: now_ms(), entry };
        let line = to_json_line(&record, &self.limits, OP, "transcript entry")?;
        let handle = self.transcripts.get_mut(worker_id).expect("refreshed above");
        Self::append_line(&self.storage, handle, &line, OP)?;
        Ok(record)
    }

    pub(super) fn check_limit(&self, limit: u64, max_limit: u64, op: &'static str) -> Result<()> {
        // A page of nothing never advances its cursor: a client paging until `has_more` is
        // false would ask for the same empty page forever.
        if limit == 0 {
            return Err(StoreError::InvalidInput {
                op,
                what: "limit",
                reason: "a page holds at least 1 record (a limit of 0 never advances the cursor)".into(),
            });
        }
        let limit_max = max_limit.min(self.limits.page_limit_max).min(PAGE_LIMIT_CEILING);
        if limit > limit_max {
            return Err(StoreError::LimitTooLarge { op, limit, limit_max });
        }
        Ok(())
    }
}
