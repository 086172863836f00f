//! The runtime store under injected storage faults (keel-fs's seam, redb style): the power cut
//! before every file operation of a script (the store's first creation, events, workers,
//! transcript entries, a status, a torn tail left by a killed writer, a reopen, a second
//! runtime), with every crash image; and an I/O error, once and for good, at every operation of
//! the same script, then a power cut (and, for good, a writer that takes over first). Whatever
//! survives reopens, holds every acknowledged record, shows no torn or damaged record to
//! readers, checks clean, and takes new appends.
//!
//! The writer lock stays a real `flock` on the real temporary directory; the data goes through
//! the simulator at the same path names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keel_fs::seam::{Op, Survives};
use keel_fs::{CrashSim, ErrorKind, FailAfter, Storage};
use keel_store::{
    EventCursor, FsRuntimeStore, INDEX_EVERY_RECORDS, StoreError, StoreOptions, encode_id, list_runtimes_with,
};
use serde_json::{Value, json};

/// One step of the script.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `open_or_create` (the first one creates `runtimes/` and the runtime's directory).
    Open(&'static str),
    /// Drops the handle and opens the runtime again, as a new process would.
    Reopen(&'static str),
    /// `append_event`, about a worker or not.
    Event(&'static str, Option<&'static str>),
    /// `create_worker`.
    Worker(&'static str, &'static str),
    /// `append_transcript_entry`.
    Entry(&'static str, &'static str),
    /// `set_worker_status`.
    Status(&'static str, &'static str, &'static str),
    /// Another writer killed mid-append leaves an unterminated record (never acknowledged).
    Tear(&'static str),
}

/// The script, with `bulk` more events in `r` in the middle (the index gets an entry at its
/// first event and one at event 65).
fn script(bulk: u64) -> Vec<Step> {
    let mut steps = vec![
        Step::Open("r"),
        Step::Event("r", None),
        Step::Worker("r", "w1"),
        Step::Event("r", Some("w1")),
        Step::Entry("r", "w1"),
        Step::Entry("r", "w1"),
        Step::Status("r", "w1", "running"),
        Step::Tear("r"),
        Step::Reopen("r"),
        Step::Event("r", None),
    ];
    steps.extend((0..bulk).map(|_| Step::Event("r", None)));
    steps.extend([
        Step::Worker("r", "w2"),
        Step::Entry("r", "w2"),
        Step::Event("r", Some("w2")),
        Step::Open("s"),
        Step::Event("s", None),
        Step::Worker("s", "w1"),
        Step::Entry("s", "w1"),
    ]);
    steps
}

type WorkerKey = (&'static str, &'static str);

/// What was acknowledged: each `Ok` the store returned.
#[derive(Debug, Default)]
struct Acked {
    runtimes: BTreeSet<&'static str>,
    /// Per runtime: event id and payload.
    events: BTreeMap<&'static str, Vec<(u64, Value)>>,
    workers: BTreeSet<WorkerKey>,
    /// Per worker: sequence number and entry.
    entries: BTreeMap<WorkerKey, Vec<(u64, Value)>>,
    statuses: BTreeMap<WorkerKey, &'static str>,
}

/// The script running against one storage, with a store handle per runtime.
struct Run<S: Storage + Clone> {
    root: PathBuf,
    storage: S,
    stores: BTreeMap<&'static str, FsRuntimeStore<S>>,
    acked: Acked,
    /// Every error a step returned, with the step.
    errors: Vec<(String, StoreError)>,
}

impl<S: Storage + Clone> Run<S> {
    fn new(root: &Path, storage: S) -> Self {
        Self { root: root.to_owned(), storage, stores: BTreeMap::new(), acked: Acked::default(), errors: Vec::new() }
    }

    /// Runs the script; with `keep_going`, a failed step is recorded and the rest still run (the
    /// store must recover in-process), else it stops at the first error.
    fn script(&mut self, bulk: u64, keep_going: bool) {
        for (n, step) in script(bulk).into_iter().enumerate() {
            if let Err(error) = self.step(n, step) {
                self.errors.push((format!("step {n} {step:?}"), error));
                if !keep_going {
                    return;
                }
            }
        }
    }

    fn store(&mut self, runtime: &'static str) -> Result<&mut FsRuntimeStore<S>, StoreError> {
        if !self.stores.contains_key(runtime) {
            let options = StoreOptions::new(&self.root, runtime);
            let store = FsRuntimeStore::open_or_create_with(self.storage.clone(), &options)?;
            self.acked.runtimes.insert(runtime);
            self.stores.insert(runtime, store);
        }
        Ok(self.stores.get_mut(runtime).expect("inserted above"))
    }

    fn step(&mut self, n: usize, step: Step) -> Result<(), StoreError> {
        let payload = json!({"step": n});
        match step {
            Step::Open(runtime) => self.store(runtime).map(drop),
            Step::Reopen(runtime) => {
                self.stores.remove(runtime);
                if self.acked.runtimes.contains(runtime) {
                    let store = FsRuntimeStore::open_with(self.storage.clone(), &self.root, runtime)?;
                    self.stores.insert(runtime, store);
                }
                self.store(runtime).map(drop)
            }
            Step::Event(runtime, worker) => {
                let event = self.store(runtime)?.append_event(worker, payload.clone())?;
                assert_eq!((event.worker_id.as_deref(), &event.payload), (worker, &payload), "the event as asked");
                self.acked.events.entry(runtime).or_default().push((event.id, payload));
                Ok(())
            }
            Step::Worker(runtime, worker) => {
                match self.store(runtime)?.create_worker(worker, payload) {
                    // A writer that takes over from a dead one finds its workers: "exists" is
                    // an answer about the disk too.
                    Ok(_) | Err(StoreError::WorkerExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.acked.workers.insert((runtime, worker));
                Ok(())
            }
            Step::Entry(runtime, worker) => {
                let store = self.store(runtime)?;
                let entry = store.append_transcript_entry(&store.worker_ref(worker), payload.clone())?;
                self.acked.entries.entry((runtime, worker)).or_default().push((entry.seq, payload));
                Ok(())
            }
            Step::Status(runtime, worker, status) => {
                let snapshot = self.store(runtime)?.set_worker_status(worker, status)?;
                assert_eq!(snapshot.status, status);
                self.acked.statuses.insert((runtime, worker), status);
                Ok(())
            }
            Step::Tear(runtime) => {
                // Only into a runtime that exists: the simulator would make a missing directory
                // up for the path. The killed writer's own I/O errors are nobody's answer.
                if let Some(store) = self.stores.get(runtime) {
                    let path = store.dir().join("events.jsonl");
                    if let Ok((mut file, _)) = self.storage.open_append(&path) {
                        let _ = self.storage.write_all(&mut file, b"{\"id\":999,\"runtime_id\":\"r\",\"wor");
                    }
                }
                Ok(())
            }
        }
    }

    /// After a transient error the same handles (or a reopened one) take new records.
    fn keeps_working(&mut self, context: &str) {
        for runtime in ["r", "s"] {
            let payload = json!({"after": "error"});
            let event = self
                .store(runtime)
                .and_then(|store| store.append_event(None, payload.clone()))
                .unwrap_or_else(|e| panic!("{context}: runtime {runtime} is stuck after a transient error: {e}"));
            self.acked.events.entry(runtime).or_default().push((event.id, payload));
        }
    }
}

/// A simulator holding the root directory, durably (it existed before the test began).
fn sim_with_root(root: &Path) -> CrashSim {
    let sim = CrashSim::new();
    sim.sync_dir(root).expect("the root exists");
    sim
}

/// A real temporary root: the writer locks are real files in its `runtimes/`.
fn real_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(dir.path().join("runtimes")).expect("the locks' directory");
    dir
}

/// Every event of a runtime, by following cursors; no page may name a damaged line.
fn all_events<S: Storage + Clone>(store: &FsRuntimeStore<S>, context: &str) -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = store.read_events(cursor.as_ref(), 50, 50).unwrap_or_else(|e| panic!("{context}: read: {e}"));
        assert!(page.damaged.is_empty(), "{context}: readers see damaged lines {:?}", page.damaged);
        events.extend(page.events.into_iter().map(|e| (e.id, e.payload)));
        cursor = Some(page.cursor);
        if !page.has_more {
            return events;
        }
    }
}

/// The image reopens, holds every acknowledged record, shows readers nothing torn or damaged,
/// checks clean, and takes a new event and a new transcript entry.
fn check_image<S: Storage + Clone>(storage: S, root: &Path, acked: &Acked, context: &str) {
    let listed = list_runtimes_with(&storage, root).unwrap_or_else(|e| panic!("{context}: list runtimes: {e}"));
    for runtime in &acked.runtimes {
        assert!(listed.iter().any(|id| id == runtime), "{context}: runtime {runtime} lost; listed {listed:?}");
    }
    for runtime in ["r", "s"] {
        let mut store = if acked.runtimes.contains(runtime) {
            FsRuntimeStore::open_with(storage.clone(), root, runtime)
        } else {
            FsRuntimeStore::open_or_create_with(storage.clone(), &StoreOptions::new(root, runtime))
        }
        .unwrap_or_else(|e| panic!("{context}: runtime {runtime} does not reopen: {e}"));
        let events = all_events(&store, context);
        let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>(), "{context}: event ids are contiguous");
        for (id, payload) in acked.events.get(runtime).into_iter().flatten() {
            assert!(
                events.contains(&(*id, payload.clone())),
                "{context}: acknowledged event {id} {payload} of {runtime} lost; the log holds {events:?}"
            );
        }
        let state = store.load().unwrap_or_else(|e| panic!("{context}: load {runtime}: {e}"));
        for (_, worker) in acked.workers.iter().filter(|(r, _)| *r == runtime) {
            let snapshot = state.workers.iter().find(|w| w.worker_ref.worker_id == *worker);
            let snapshot = snapshot.unwrap_or_else(|| panic!("{context}: acknowledged worker {runtime}/{worker} lost"));
            if let Some(status) = acked.statuses.get(&(runtime, *worker)) {
                assert_eq!(snapshot.status, *status, "{context}: acknowledged status of {runtime}/{worker}");
            }
            let page = store
                .read_transcript(&store.worker_ref(worker), 0, 50, 50)
                .unwrap_or_else(|e| panic!("{context}: transcript of {runtime}/{worker}: {e}"));
            assert!(page.damaged.is_empty(), "{context}: damaged transcript lines {:?}", page.damaged);
            let found: Vec<(u64, Value)> = page.items.into_iter().map(|e| (e.seq, e.entry)).collect();
            for entry in acked.entries.get(&(runtime, *worker)).into_iter().flatten() {
                assert!(found.contains(entry), "{context}: acknowledged entry {entry:?} of {runtime}/{worker} lost");
            }
            store
                .append_transcript_entry(&store.worker_ref(worker), json!("after recovery"))
                .unwrap_or_else(|e| panic!("{context}: transcript append to {runtime}/{worker} after recovery: {e}"));
        }
        let report = FsRuntimeStore::check_with(storage.clone(), root, runtime)
            .unwrap_or_else(|e| panic!("{context}: check {runtime}: {e}"));
        assert!(report.is_clean(), "{context}: {report:?}");
        let event = store
            .append_event(None, json!("after recovery"))
            .unwrap_or_else(|e| panic!("{context}: append to {runtime} after recovery: {e}"));
        assert_eq!(event.id, events.len() as u64 + 1, "{context}: the new event follows the log");
    }
}

/// An error a step returned is typed and names what was being done and a path under the root.
fn assert_named(step: &str, error: &StoreError, root: &Path, context: &str) {
    let text = error.to_string();
    let op = match error {
        StoreError::Fs { op, .. } | StoreError::Missing { op, .. } => *op,
        other => panic!("{context}: {step}: an I/O error became {other:?}"),
    };
    assert!(matches!(error.kind(), ErrorKind::Io | ErrorKind::Refused), "{context}: {step}: {text}");
    assert!(!op.is_empty() && text.starts_with(op), "{context}: {step}: the error names no operation: {text}");
    let root = root.display().to_string();
    assert!(text.contains(&root), "{context}: {step}: the error names no path under {root}: {text}");
}

/// Events in the middle of the fault scripts: enough to reach the index's second entry (event
/// 65), so that faults land in an index write at the end of a non-empty index too.
const BULK_EVENTS: u64 = INDEX_EVERY_RECORDS;

#[test]
fn power_cut_at_every_operation_keeps_every_acknowledged_record() {
    let dir = real_root();
    let root = dir.path();
    // A dry run counts the script's operations.
    let dry = sim_with_root(root);
    let before = dry.ops();
    let mut run = Run::new(root, &dry);
    run.script(BULK_EVENTS, false);
    assert!(run.errors.is_empty(), "the script runs whole without faults: {:?}", run.errors);
    assert_eq!(run.acked.events["r"].len() as u64, BULK_EVENTS + 4, "every event acknowledged");
    let total = dry.ops() - before;
    assert!(total > 500, "the script does real I/O ({total} operations)");
    check_image(&dry.crash(Survives::SyncedOnly, Survives::SyncedOnly), root, &run.acked, "no cut");
    let mut stopped_steps = BTreeSet::new();
    for cut in 0..total {
        let sim = sim_with_root(root);
        sim.cut_power_at(sim.ops() + cut);
        let mut run = Run::new(root, &sim);
        run.script(BULK_EVENTS, false);
        assert!(sim.powered_off(), "cut at {cut}/{total}: the power was cut");
        // Only a cut among the last step's index writes (derived data) stops no step.
        assert!(run.errors.len() <= 1, "cut at {cut}/{total}: the script stopped at the cut");
        let stopped = run.errors.first().map_or("the end", |(step, _)| step.as_str());
        stopped_steps.insert(stopped.to_owned());
        for names in Survives::ALL {
            for data in Survives::ALL {
                let context = format!("cut at {cut}/{total} ({stopped}), names {names:?}, data {data:?}");
                check_image(&sim.crash(names, data), root, &run.acked, &context);
            }
        }
    }
    assert!(stopped_steps.len() > script(BULK_EVENTS).len() / 2, "cuts landed in most steps: {stopped_steps:?}");
}

#[test]
fn an_io_error_at_every_operation_is_named_and_every_acknowledged_record_stays() {
    let dir = real_root();
    let root = dir.path();
    let dry = sim_with_root(root);
    let before = dry.ops();
    Run::new(root, &dry).script(BULK_EVENTS, true);
    let total = dry.ops() - before;
    assert!(total > 500, "the script does real I/O ({total} operations)");
    let mut surfaced = 0;
    for fail_at in 0..total {
        for sticky in [false, true] {
            let sim = sim_with_root(root);
            let failing = if sticky { FailAfter::sticky(&sim, fail_at) } else { FailAfter::once(&sim, fail_at) };
            let context = format!("{} at {fail_at}/{total}", if sticky { "sticky" } else { "once" });
            let mut run = Run::new(root, &failing);
            run.script(BULK_EVENTS, true);
            assert!(failing.tripped(), "{context}: the fault was injected");
            for (step, error) in &run.errors {
                assert_named(step, error, root, &context);
            }
            surfaced += usize::from(!run.errors.is_empty());
            if sticky {
                // The disk died under that writer, as if it had been killed there: nothing it
                // did after the fault (an undo included) happened. Another writer takes over
                // on the same disk and runs the script again; a power cut then loses nothing
                // either acknowledged.
                let mut taken_over = Run::new(root, &sim);
                taken_over.script(BULK_EVENTS, false);
                assert!(taken_over.errors.is_empty(), "{context}: the next writer: {:?}", taken_over.errors);
                let image = sim.crash(Survives::SyncedOnly, Survives::SyncedOnly);
                check_image(&image, root, &run.acked, &format!("{context}, taken over, then a crash"));
                check_image(&image, root, &taken_over.acked, &format!("{context}, taken over, then a crash"));
            } else {
                run.keeps_working(&context);
                // A power cut on top of the error loses nothing acknowledged either.
                let image = sim.crash(Survives::SyncedOnly, Survives::SyncedOnly);
                check_image(&image, root, &run.acked, &format!("{context}, then a crash"));
                // And a new handle on the same disk, without the fault, finds it all.
                let acked = std::mem::take(&mut run.acked);
                drop(run);
                check_image(&sim, root, &acked, &format!("{context}, reopened"));
            }
        }
    }
    assert!(surfaced as u64 > total, "most injected errors reach the caller ({surfaced} of {})", 2 * total);
}

/// The store's files on a simulator are where the layout says, none on the real disk, and the
/// index gets its second entry at event 65.
#[test]
fn a_store_on_the_simulator_keeps_the_documented_layout() {
    let dir = real_root();
    let root = dir.path();
    let sim = sim_with_root(root);
    let mut run = Run::new(root, &sim);
    run.script(BULK_EVENTS, false);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let runtime = root.join("runtimes").join(encode_id("runtime id", "r").expect("valid"));
    let worker = runtime.join("workers").join(encode_id("worker id", "w1").expect("valid"));
    for path in [
        runtime.join("runtime.json"),
        runtime.join("events.jsonl"),
        runtime.join("events.idx"),
        worker.join("worker.json"),
        worker.join("transcript.jsonl"),
    ] {
        assert!(sim.read(&path).is_some(), "{} is on the simulator", path.display());
    }
    let index = sim.read(&runtime.join("events.idx")).expect("index");
    assert_eq!(index.len(), 32, "two index entries, for events 1 and 65");
    assert!(!runtime.exists(), "no data on the real disk");
    check_image(&sim.crash(Survives::SyncedOnly, Survives::SyncedOnly), root, &run.acked, "after the script");
}

/// A store on `sim` with runtime `r` and worker `w1`, durably (before the faults of a test).
fn runtime_with_worker(root: &Path, sim: &CrashSim) -> Acked {
    let mut run = Run::new(root, sim);
    for (n, step) in [Step::Open("r"), Step::Worker("r", "w1")].into_iter().enumerate() {
        run.step(n, step).expect("set up without faults");
    }
    run.acked
}

/// The power cut at every operation of `follow_up`, run after `in_doubt` (a call whose
/// `fdatasync` failed, so its record is written but not durable): every crash image reopens,
/// checks clean and holds what was acknowledged. Returns how many operations the follow-up did.
fn cut_after_a_failed_fdatasync(
    in_doubt: fn(&mut Run<&FailAfter<&CrashSim>>),
    follow_up: fn(&mut Run<&FailAfter<&CrashSim>>),
) -> u64 {
    let dir = real_root();
    let root = dir.path();
    // Runs it all with the power cut at operation `cut` of the follow-up (never, for `None`);
    // returns how many operations the follow-up did.
    let attempt = |cut: Option<u64>| {
        let sim = sim_with_root(root);
        let mut acked = runtime_with_worker(root, &sim);
        let failing = FailAfter::once(&sim, 0).only(Op::SyncData);
        let mut run = Run::new(root, &failing);
        in_doubt(&mut run);
        assert!(failing.tripped() && run.errors.len() == 1, "the fdatasync failed: {:?}", run.errors);
        let before = sim.ops();
        if let Some(cut) = cut {
            sim.cut_power_at(before + cut);
        }
        follow_up(&mut run);
        acked.events.extend(std::mem::take(&mut run.acked.events));
        acked.entries.extend(std::mem::take(&mut run.acked.entries));
        for names in Survives::ALL {
            for data in Survives::ALL {
                let context = format!("cut at {cut:?} of the follow-up, names {names:?}, data {data:?}");
                check_image(&sim.crash(names, data), root, &acked, &context);
            }
        }
        sim.ops() - before
    };
    let total = attempt(None);
    for cut in 0..total {
        attempt(Some(cut));
    }
    total
}

/// Found by the sweep above: a snapshot counted records a writer had only scanned (its own failed
/// append's, or a dead writer's), a power cut took them, and the snapshot, ahead of its log, made
/// the runtime refuse to open. Now a writer makes such records durable before a snapshot counts
/// them, or counts only what it made durable itself.
#[test]
fn a_record_whose_fdatasync_failed_is_never_counted_by_a_snapshot_that_outlives_it() {
    // An event about w1 whose fdatasync failed; the next append names it in w1's snapshot.
    let total = cut_after_a_failed_fdatasync(
        |run| {
            let error = run.step(10, Step::Event("r", Some("w1"))).expect_err("the fdatasync fails");
            run.errors.push(("event".to_owned(), error));
        },
        |run| {
            let _ = run.step(11, Step::Event("r", None));
        },
    );
    assert!(total > 10, "the follow-up does real I/O ({total} operations)");
    // A transcript entry whose fdatasync failed; a new handle scans it, then an event about w1
    // rewrites w1's snapshot, transcript counter included.
    let total = cut_after_a_failed_fdatasync(
        |run| {
            let error = run.step(10, Step::Entry("r", "w1")).expect_err("the fdatasync fails");
            run.errors.push(("entry".to_owned(), error));
        },
        |run| {
            let _ = run.step(11, Step::Reopen("r")).and_then(|()| run.step(12, Step::Event("r", Some("w1"))));
        },
    );
    assert!(total > 10, "the follow-up does real I/O ({total} operations)");
}
