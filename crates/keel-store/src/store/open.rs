//! Opening a runtime: creating it, and validating its snapshots against their logs.

use super::{
    CREATING_PREFIX, EVENTS_FILE, EVENTS_INDEX_FILE, ErrorKind, Event, FsRuntimeStore, HashMap, HashSet,
    LABEL_BYTES_MAX, LOCK_TIMEOUT_MS_DEFAULT, Limits, Log, LogHandle, OsLock, OsStorage, Path, PathBuf, RUNTIME_FILE,
    RUNTIMES_DIR, Result, RuntimeSnapshot, SCHEMA_VERSION, Storage, StoreError, StoreOptions, StoreState,
    TRANSCRIPT_FILE, TRANSCRIPT_INDEX_FILE, Tail, TranscriptEntry, WORKER_FILE, WORKERS_DIR, WorkerRef, WorkerSnapshot,
    check_word, create_empty_file, decode_id, encode, exists, read_snapshot, remove_leftover, rename_into_place,
    require_dir, sync_dir, validate_id, write_snapshot,
};

impl FsRuntimeStore<OsStorage> {
    /// Opens runtime `options.runtime_id` under `options.root`, creating it (atomically: it is
    /// built under a temporary name and renamed into place) if it does not exist. Opening
    /// validates the snapshots, the workers and the tails of every log.
    pub fn open_or_create(options: &StoreOptions) -> Result<Self> {
        Self::open_or_create_with(OsStorage, options)
    }

    /// Opens an existing runtime ([`StoreError::Missing`] if there is none), validating it.
    pub fn open(root: &Path, runtime_id: &str) -> Result<Self> {
        Self::open_with(OsStorage, root, runtime_id)
    }
}

impl<S: Storage + Clone> FsRuntimeStore<S> {
    /// [`open_or_create`](FsRuntimeStore::open_or_create) through `storage`: every file
    /// operation of the store goes through it (the writer lock stays a real [`OsLock`]).
    pub fn open_or_create_with(storage: S, options: &StoreOptions) -> Result<Self> {
        const OP: &str = "open or create runtime";
        let encoded = encode(OP, "runtime id", &options.runtime_id)?;
        if let Some(reason) = options.limits.first_out_of_range() {
            return Err(StoreError::InvalidInput { op: OP, what: "limits", reason });
        }
        let display_name = options.display_name.clone().unwrap_or_else(|| options.runtime_id.clone());
        if display_name.len() > LABEL_BYTES_MAX {
            return Err(StoreError::InvalidInput {
                op: OP,
                what: "display name",
                reason: format!("{} bytes; the limit is {LABEL_BYTES_MAX}", display_name.len()),
            });
        }
        check_word(OP, "backend", &options.backend)?;
        require_dir(&storage, &options.root, OP)?;
        let runtimes = options.root.join(RUNTIMES_DIR);
        // A name this call finds rather than makes may be one whose maker failed or died between
        // making it and fsyncing its directory: it is fsynced again before it is built on, so
        // nothing acknowledged later hangs on a name a power cut can take away. One this call
        // makes but cannot fsync is removed again, so that no later `open` builds on it.
        match storage.create_dir(&runtimes) {
            Ok(()) => sync_dir(&storage, &options.root, OP).inspect_err(|_| {
                let _ = storage.remove_dir(&runtimes);
            })?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => sync_dir(&storage, &options.root, OP)?,
            Err(e) => return Err(StoreError::io(OP, &runtimes, e)),
        }
        require_dir(&storage, &runtimes, OP)?;
        let dir = runtimes.join(&encoded);
        let mut made = false;
        if !exists(&storage, &dir, OP)? {
            let lock_path = runtimes.join(format!("{encoded}.lock"));
            let _lock =
                OsLock::acquire_timeout(&lock_path, options.lock_timeout_ms).map_err(|e| StoreError::fs(OP, e))?;
            if !exists(&storage, &dir, OP)? {
                let snapshot = RuntimeSnapshot {
                    schema_version: SCHEMA_VERSION,
                    runtime_id: options.runtime_id.clone(),
                    display_name,
                    backend: options.backend.clone(),
                    status: "active".to_owned(),
                    limits: options.limits,
                    next_worker_seq: 1,
                    next_event_id: 1,
                    next_diagnostic_id: 1,
                    config_bundles: Vec::new(),
                    diagnostics: Vec::new(),
                };
                Self::build_runtime(&storage, &snapshot, &runtimes.join(format!("{CREATING_PREFIX}{encoded}")), &dir)?;
                made = true;
            }
        }
        if !made {
            sync_dir(&storage, &runtimes, OP)?;
        }
        Self::open_with_timeout(storage, &options.root, &options.runtime_id, options.lock_timeout_ms)
    }

    /// Builds a runtime's directory at `building` (removing a leftover of a crashed build first)
    /// and renames it to `dir` durably.
    fn build_runtime(storage: &S, snapshot: &RuntimeSnapshot, building: &Path, dir: &Path) -> Result<()> {
        const OP: &str = "open or create runtime";
        remove_leftover(storage, building, OP)?;
        storage.create_dir(building).map_err(|e| StoreError::io(OP, building, e))?;
        write_snapshot(storage, &building.join(RUNTIME_FILE), snapshot, OP)?;
        create_empty_file(storage, &building.join(EVENTS_FILE), OP)?;
        let workers = building.join(WORKERS_DIR);
        storage.create_dir(&workers).map_err(|e| StoreError::io(OP, &workers, e))?;
        sync_dir(storage, building, OP)?;
        let runtimes = dir.parent().expect("a runtime directory is in runtimes/");
        rename_into_place(storage, building, dir, runtimes, OP)
    }

    /// [`open`](FsRuntimeStore::open) through `storage`.
    pub fn open_with(storage: S, root: &Path, runtime_id: &str) -> Result<Self> {
        Self::open_with_timeout(storage, root, runtime_id, LOCK_TIMEOUT_MS_DEFAULT)
    }

    pub(super) fn open_with_timeout(storage: S, root: &Path, runtime_id: &str, lock_timeout_ms: u64) -> Result<Self> {
        const OP: &str = "open runtime";
        let encoded = encode(OP, "runtime id", runtime_id)?;
        let runtimes = root.join(RUNTIMES_DIR);
        let dir = runtimes.join(&encoded);
        for path in [root, &runtimes, &dir] {
            require_dir(&storage, path, OP).map_err(|e| e.naming(runtime_id, None))?;
        }
        let (runtime, _) = read_snapshot::<S, RuntimeSnapshot>(&storage, &dir.join(RUNTIME_FILE), OP)?;
        let mut store = Self {
            storage,
            runtime_id: runtime_id.to_owned(),
            lock_path: runtimes.join(format!("{encoded}.lock")),
            limits: runtime.limits,
            lock_timeout_ms,
            events: LogHandle::new(Self::events_log(&dir, &runtime.limits), None),
            transcripts: HashMap::new(),
            stale_worker: None,
            dir,
        };
        store.validate_runtime(&runtime, OP)?;
        let workers = store.validate_workers(&runtime, OP)?;
        let tail = store.scan_events_tail(OP)?;
        store.check_event_checkpoint(&runtime, &tail, OP)?;
        store.check_last_event_ids(&workers, &tail, OP)?;
        store.events.tail = Some(tail);
        for (worker, tail) in workers {
            let log = store.transcript_log(&worker.worker_ref.worker_id, OP)?;
            store.transcripts.insert(worker.worker_ref.worker_id.clone(), LogHandle::new(log, Some(tail)));
        }
        Ok(store)
    }

    pub(super) fn events_log(dir: &Path, limits: &Limits) -> Log {
        Log {
            path: dir.join(EVENTS_FILE),
            index_path: dir.join(EVENTS_INDEX_FILE),
            first_key: 1,
            line_bytes_max: limits.record_bytes_max as usize,
        }
    }

    /// The runtime's id.
    pub fn runtime_id(&self) -> &str {
        &self.runtime_id
    }

    /// The runtime's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits the runtime was created with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The address of worker `worker_id` in this runtime.
    pub fn worker_ref(&self, worker_id: &str) -> WorkerRef {
        WorkerRef { runtime_id: self.runtime_id.clone(), worker_id: worker_id.to_owned() }
    }

    pub(super) fn runtime_path(&self) -> PathBuf {
        self.dir.join(RUNTIME_FILE)
    }

    pub(super) fn worker_dir(&self, worker_id: &str, op: &'static str) -> Result<PathBuf> {
        Ok(self.dir.join(WORKERS_DIR).join(encode(op, "worker id", worker_id)?))
    }

    pub(super) fn transcript_log(&self, worker_id: &str, op: &'static str) -> Result<Log> {
        let dir = self.worker_dir(worker_id, op)?;
        Ok(Log {
            path: dir.join(TRANSCRIPT_FILE),
            index_path: dir.join(TRANSCRIPT_INDEX_FILE),
            first_key: 0,
            line_bytes_max: self.limits.record_bytes_max as usize,
        })
    }

    pub(super) fn validate_runtime(&self, runtime: &RuntimeSnapshot, op: &'static str) -> Result<()> {
        let path = self.runtime_path();
        if runtime.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: runtime.runtime_id.clone(),
            });
        }
        if let Some(reason) = runtime.limits.first_out_of_range() {
            return Err(StoreError::corrupt(op, path, None, reason));
        }
        if runtime.diagnostics.len() as u64 > runtime.limits.diagnostics_max {
            return Err(StoreError::corrupt(op, path, None, "more diagnostics than diagnostics_max"));
        }
        if runtime.next_worker_seq == 0 || runtime.next_event_id == 0 || runtime.next_diagnostic_id == 0 {
            return Err(StoreError::corrupt(op, path, None, "a next_* counter is 0 (they start at 1)"));
        }
        // Every increment follows this check, so a counter never wraps to 0 behind a success.
        if [runtime.next_worker_seq, runtime.next_event_id, runtime.next_diagnostic_id].contains(&u64::MAX) {
            return Err(StoreError::corrupt(
                op,
                path,
                None,
                "a next_* counter is at u64::MAX (no id is left to hand out)",
            ));
        }
        if runtime.diagnostics.iter().any(|d| d.id >= runtime.next_diagnostic_id) {
            return Err(StoreError::corrupt(op, path, None, "a diagnostic id is not below next_diagnostic_id"));
        }
        Ok(())
    }

    pub(super) fn check_event_checkpoint(
        &self,
        runtime: &RuntimeSnapshot,
        tail: &Tail,
        op: &'static str,
    ) -> Result<()> {
        if runtime.next_event_id > tail.next_key {
            return Err(StoreError::corrupt(
                op,
                &self.events.log.path,
                None,
                format!(
                    "runtime.json says {} events were acknowledged, the log holds {}",
                    runtime.next_event_id - 1,
                    tail.next_key - 1
                ),
            ));
        }
        Ok(())
    }

    /// Checks one event against this runtime: its runtime id and a valid worker id.
    pub(super) fn validate_event(&self, event: &Event, line: u64, op: &'static str) -> Result<()> {
        if event.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path: self.events.log.path.clone(),
                line: Some(line),
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: event.runtime_id.clone(),
            });
        }
        if let Some(worker_id) = &event.worker_id
            && let Err(e) = validate_id("worker id", worker_id)
        {
            return Err(StoreError::corrupt(op, &self.events.log.path, Some(line), e.to_string()));
        }
        Ok(())
    }

    pub(super) fn scan_events_tail(&self, op: &'static str) -> Result<Tail> {
        let log = self.events.log.clone();
        log.scan_tail::<Event, S>(&self.storage, op, &mut |event, line| self.validate_event(event, line, op))
    }

    pub(super) fn validate_entry(
        &self,
        entry: &TranscriptEntry,
        worker_id: &str,
        path: &Path,
        line: u64,
        op: &'static str,
    ) -> Result<()> {
        if entry.worker_ref.runtime_id != self.runtime_id || entry.worker_ref.worker_id != worker_id {
            return Err(StoreError::Misplaced {
                op,
                path: path.to_owned(),
                line: Some(line),
                what: "worker ref",
                expected: format!("{}/{}", self.runtime_id, worker_id),
                found: format!("{}/{}", entry.worker_ref.runtime_id, entry.worker_ref.worker_id),
            });
        }
        Ok(())
    }

    pub(super) fn scan_transcript_tail(&self, log: &Log, worker_id: &str, op: &'static str) -> Result<Tail> {
        log.scan_tail::<TranscriptEntry, S>(&self.storage, op, &mut |entry, line| {
            self.validate_entry(entry, worker_id, &log.path, line, op)
        })
    }

    /// Reads `worker.json` of `worker_id` and checks it belongs where it sits.
    pub(super) fn read_worker(&self, worker_id: &str, op: &'static str) -> Result<WorkerSnapshot> {
        let dir = self.worker_dir(worker_id, op)?;
        require_dir(&self.storage, &dir, op).map_err(|e| e.naming(&self.runtime_id, Some(worker_id)))?;
        let path = dir.join(WORKER_FILE);
        let (worker, _) = read_snapshot::<S, WorkerSnapshot>(&self.storage, &path, op)?;
        let found = &worker.worker_ref;
        if found.runtime_id != self.runtime_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "runtime id",
                expected: self.runtime_id.clone(),
                found: found.runtime_id.clone(),
            });
        }
        if found.worker_id != worker_id {
            return Err(StoreError::Misplaced {
                op,
                path,
                line: None,
                what: "worker id",
                expected: worker_id.to_owned(),
                found: found.worker_id.clone(),
            });
        }
        check_word(op, "worker status", &worker.status)
            .map_err(|e| StoreError::corrupt(op, &path, None, e.to_string()))?;
        Ok(worker)
    }

    /// The worker ids present in `workers/`, validating every entry's name and type.
    pub(super) fn worker_ids(&self, op: &'static str) -> Result<Vec<String>> {
        let workers = self.dir.join(WORKERS_DIR);
        require_dir(&self.storage, &workers, op)?;
        let names = self.storage.list_dir(&workers).map_err(|e| StoreError::io(op, &workers, e))?;
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let path = workers.join(&name);
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let Some(id) = decode_id(&name) else {
                return Err(StoreError::corrupt(op, path, None, "not the canonical encoding of a worker id"));
            };
            if !seen.insert(id.clone()) {
                return Err(StoreError::corrupt(op, path, None, format!("duplicate worker {id:?}")));
            }
            require_dir(&self.storage, &path, op)?;
            ids.push(id);
        }
        ids.sort();
        Ok(ids)
    }

    /// Validates every worker: snapshot, placement, transcript tail, counters.
    pub(super) fn validate_workers(
        &self,
        runtime: &RuntimeSnapshot,
        op: &'static str,
    ) -> Result<Vec<(WorkerSnapshot, Tail)>> {
        let ids = self.worker_ids(op)?;
        let workers_dir = self.dir.join(WORKERS_DIR);
        if ids.len() as u64 > runtime.limits.workers_max || ids.len() as u64 >= runtime.next_worker_seq {
            return Err(StoreError::corrupt(
                op,
                workers_dir,
                None,
                format!(
                    "{} workers, but runtime.json counts {} created (limit {})",
                    ids.len(),
                    runtime.next_worker_seq - 1,
                    runtime.limits.workers_max
                ),
            ));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let worker = self.read_worker(&id, op)?;
            let log = self.transcript_log(&id, op)?;
            let tail = self.scan_transcript_tail(&log, &id, op)?;
            let path = self.worker_dir(&id, op)?.join(WORKER_FILE);
            if worker.next_transcript_seq > tail.next_key {
                return Err(StoreError::corrupt(
                    op,
                    path,
                    None,
                    format!(
                        "worker.json counts {} transcript entries, the transcript holds {}",
                        worker.next_transcript_seq, tail.next_key
                    ),
                ));
            }
            out.push((worker, tail));
        }
        Ok(out)
    }

    /// No worker names an event past the end of the event log. `events` must be scanned after
    /// the workers were read: a writer appends the event before it updates `worker.json`, so a
    /// log scanned earlier could lack an event a worker read later rightly names.
    pub(super) fn check_last_event_ids(
        &self,
        workers: &[(WorkerSnapshot, Tail)],
        events: &Tail,
        op: &'static str,
    ) -> Result<()> {
        for (worker, _) in workers {
            if worker.last_event_id.is_some_and(|last| last >= events.next_key) {
                let path = self.worker_dir(&worker.worker_ref.worker_id, op)?.join(WORKER_FILE);
                return Err(StoreError::corrupt(op, path, None, "last_event_id is past the end of the event log"));
            }
        }
        Ok(())
    }

    /// The whole persisted state (snapshots with live counters), validated as on open. Events
    /// and transcripts are read by page: [`read_events`](Self::read_events),
    /// [`read_transcript`](Self::read_transcript).
    pub fn load(&self) -> Result<StoreState> {
        const OP: &str = "load runtime";
        require_dir(&self.storage, &self.dir, OP)?;
        let (mut runtime, _) = read_snapshot::<S, RuntimeSnapshot>(&self.storage, &self.runtime_path(), OP)?;
        self.validate_runtime(&runtime, OP)?;
        let workers = self.validate_workers(&runtime, OP)?;
        let tail = self.scan_events_tail(OP)?;
        self.check_event_checkpoint(&runtime, &tail, OP)?;
        self.check_last_event_ids(&workers, &tail, OP)?;
        runtime.next_event_id = tail.next_key;
        let workers = workers
            .into_iter()
            .map(|(mut worker, tail)| {
                worker.next_transcript_seq = tail.next_key;
                worker
            })
            .collect();
        Ok(StoreState { runtime, workers })
    }
}
