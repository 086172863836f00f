//! Hand-damaged stores give the right typed error, naming the operation and the path.

use std::path::{Path, PathBuf};

use keel_store::{FsRuntimeStore, SCHEMA_VERSION, StoreError, encode_id};
use serde_json::{Value, json};

fn root_of(store: &FsRuntimeStore) -> PathBuf {
    store.dir().parent().and_then(|p| p.parent()).expect("root").to_owned()
}

fn worker_dir(store: &FsRuntimeStore, id: &str) -> PathBuf {
    store.dir().join("workers").join(encode_id("worker id", id).expect("valid"))
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).expect("json")).expect("written");
}

fn two_workers() -> (tempfile::TempDir, FsRuntimeStore) {
    let (dir, mut store) = crate::new_store("r");
    for id in ["a", "b"] {
        store.create_worker(id, json!({"id": id})).expect("worker");
        for n in 0..3 {
            store.append_transcript_entry(&store.worker_ref(id), json!({"n": n})).expect("entry");
        }
    }
    (dir, store)
}

#[test]
fn a_wrong_schema_version_is_a_schema_error_naming_the_file() {
    let (_dir, store) = two_workers();
    let runtime = store.dir().join("runtime.json");
    edit_json(&runtime, |v| v["schema_version"] = json!(SCHEMA_VERSION + 1));
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::SchemaVersion { found: 2, path, .. } if *path == runtime), "{err}");

    let (_dir, store) = two_workers();
    let worker = worker_dir(&store, "b").join("worker.json");
    edit_json(&worker, |v| v["schema_version"] = json!(0));
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::SchemaVersion { found: 0, path, .. } if *path == worker), "{err}");
}

#[test]
fn a_worker_file_in_another_workers_directory_is_misplaced() {
    let (_dir, store) = two_workers();
    std::fs::copy(worker_dir(&store, "a").join("worker.json"), worker_dir(&store, "b").join("worker.json"))
        .expect("copied");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(
        matches!(&err, StoreError::Misplaced { what: "worker id", expected, found, .. } if expected == "b" && found == "a"),
        "{err}"
    );
    let report = FsRuntimeStore::check(&root_of(&store), "r").expect("checked");
    assert!(!report.is_clean());
}

#[test]
fn a_transcript_entry_of_another_worker_is_misplaced_with_its_line() {
    let (_dir, store) = two_workers();
    let a = std::fs::read_to_string(worker_dir(&store, "a").join("transcript.jsonl")).expect("a");
    let b_path = worker_dir(&store, "b").join("transcript.jsonl");
    let b = std::fs::read_to_string(&b_path).expect("b");
    let mut lines: Vec<&str> = b.lines().collect();
    lines[1] = a.lines().nth(1).expect("a's second entry");
    std::fs::write(&b_path, lines.join("\n") + "\n").expect("written");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(
        matches!(&err, StoreError::Misplaced { what: "worker ref", line: Some(2), path, .. } if *path == b_path),
        "{err}"
    );
    let err = store.read_transcript(&store.worker_ref("b"), 0, 10, 10).expect_err("refused on read too");
    assert!(matches!(err, StoreError::Misplaced { line: Some(2), .. }), "{err}");
}

#[test]
fn a_runtime_path_that_is_a_file_is_not_a_directory() {
    let (_dir, store) = two_workers();
    let dir = store.dir().to_owned();
    std::fs::remove_dir_all(&dir).expect("removed");
    std::fs::write(&dir, b"not a directory").expect("file");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::NotADirectory { path, .. } if *path == dir), "{err}");
    let err = store.read_events(None, 1, 1).expect_err("refused");
    assert!(matches!(err, StoreError::Fs { .. } | StoreError::Missing { .. }), "{err}");
}

#[test]
fn a_worker_path_that_is_a_file_and_a_non_canonical_worker_name_are_refused() {
    let (_dir, store) = two_workers();
    let b = worker_dir(&store, "b");
    std::fs::remove_dir_all(&b).expect("removed");
    std::fs::write(&b, b"file").expect("file");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::NotADirectory { path, .. } if *path == b), "{err}");

    let (_dir, store) = two_workers();
    // "id-61" is worker "a"; an upper-case alias would be a duplicate on case-insensitive disks.
    std::fs::rename(worker_dir(&store, "b"), store.dir().join("workers/id-6A")).expect("renamed");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::Corrupt { .. }) && err.to_string().contains("canonical"), "{err}");
}

#[test]
fn snapshots_naming_another_runtime_and_counters_ahead_of_the_log_are_refused() {
    let (_dir, store) = two_workers();
    edit_json(&store.dir().join("runtime.json"), |v| v["runtime_id"] = json!("other"));
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::Misplaced { what: "runtime id", .. }), "{err}");

    let (_dir, mut store) = two_workers();
    store.append_event(None, json!({})).expect("event");
    edit_json(&store.dir().join("runtime.json"), |v| v["next_event_id"] = json!(50));
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("acknowledged events are missing");
    assert!(matches!(&err, StoreError::Corrupt { .. }) && err.to_string().contains("events.jsonl"), "{err}");
}

#[test]
fn an_event_of_another_runtime_is_misplaced_with_its_line() {
    let (_dir, mut store) = crate::new_store("r");
    for n in 0..3 {
        store.append_event(None, json!({"n": n})).expect("event");
    }
    let path = store.dir().join("events.jsonl");
    let text = std::fs::read_to_string(&path).expect("log").replacen("\"runtime_id\":\"r\"", "\"runtime_id\":\"q\"", 1);
    std::fs::write(&path, text).expect("written");
    let err = store.read_events(None, 10, 10).expect_err("refused");
    assert!(matches!(&err, StoreError::Misplaced { what: "runtime id", line: Some(1), .. }), "{err}");
}

#[test]
fn missing_runtimes_and_workers_are_missing_and_duplicates_exist() {
    let (dir, mut store) = two_workers();
    let err = FsRuntimeStore::open(dir.path(), "nope").expect_err("missing");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    let err = FsRuntimeStore::check(dir.path(), "nope").expect_err("missing");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    let err = store.append_event(Some("nobody"), json!({})).expect_err("missing worker");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    let err = store.set_worker_status("nobody", "running").expect_err("missing worker");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    let err = store.create_worker("a", json!({})).expect_err("exists");
    assert!(matches!(err, StoreError::WorkerExists { .. }), "{err}");
    let err = store.set_worker_status("a", "Running!").expect_err("not a status word");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
    let report = FsRuntimeStore::check(dir.path(), "r").expect("checked");
    assert!(report.is_clean() && report.workers == 2 && report.transcript_entries == 6, "{report:?}");
}

#[test]
fn worker_snapshots_track_status_and_last_event() {
    let (dir, mut store) = two_workers();
    store.append_event(Some("a"), json!({"x": 1})).expect("event");
    store.append_event(Some("b"), json!({"x": 2})).expect("event");
    store.append_event(None, json!({"x": 3})).expect("event");
    let worker = store.set_worker_status("a", "running").expect("status");
    assert_eq!((worker.status.as_str(), worker.last_event_id, worker.next_transcript_seq), ("running", Some(1), 3));
    let state = FsRuntimeStore::open(dir.path(), "r").expect("reopened").load().expect("loaded");
    assert_eq!(state.runtime.next_event_id, 4);
    assert_eq!(state.runtime.next_worker_seq, 3);
    assert_eq!(state.workers[1].last_event_id, Some(2));
    assert_eq!(state.workers[0].request, json!({"id": "a"}));
}

#[test]
fn oversized_records_and_limits_are_refused_before_writing() {
    let (dir, mut store) = crate::new_store("r");
    let big = "x".repeat(store.limits().record_bytes_max as usize);
    let err = store.append_event(None, json!({"big": big})).expect_err("too long");
    assert!(matches!(err, StoreError::InvalidInput { what: "event", .. }), "{err}");
    assert_eq!(std::fs::metadata(store.dir().join("events.jsonl")).expect("log").len(), 0);
    let mut options = keel_store::StoreOptions::new(dir.path(), "s");
    options.limits.page_limit_max = keel_store::PAGE_LIMIT_CEILING + 1;
    let err = FsRuntimeStore::open_or_create(&options).expect_err("above the ceiling");
    assert!(matches!(err, StoreError::InvalidInput { what: "limits", .. }), "{err}");
    options.limits.page_limit_max = 0;
    let err = FsRuntimeStore::open_or_create(&options).expect_err("a page limit of 0 serves no page");
    assert!(err.to_string().contains("page_limit_max 0 is below the floor of 1"), "{err}");
}

#[test]
fn a_runtime_json_whose_limits_serve_nothing_is_corrupt() {
    // `page_limit_max: 0` was accepted: every read was refused as a usage error (exit 2), and
    // `keel store check` called the runtime clean.
    for (limit, value) in [("page_limit_max", 0), ("record_bytes_max", 10)] {
        let (_dir, store) = two_workers();
        let runtime = store.dir().join("runtime.json");
        edit_json(&runtime, |v| v["limits"][limit] = json!(value));
        let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
        assert!(matches!(&err, StoreError::Corrupt { path, .. } if *path == runtime), "{err}");
        assert!(err.to_string().contains(&format!("{limit} {value} is below the floor")), "{err}");
        let report = FsRuntimeStore::check(&root_of(&store), "r").expect("checked");
        assert!(!report.is_clean(), "{limit}: {report:?}");
    }
}

#[test]
fn a_counter_with_no_id_left_is_refused_before_it_can_wrap() {
    // Once accepted: `worker add` succeeded, the counter wrapped to 0, and every later command
    // on the runtime failed.
    let (_dir, store) = two_workers();
    let runtime = store.dir().join("runtime.json");
    edit_json(&runtime, |v| v["next_worker_seq"] = json!(u64::MAX));
    let before = std::fs::read(&runtime).expect("read");
    let err = FsRuntimeStore::open(&root_of(&store), "r").expect_err("refused");
    assert!(matches!(&err, StoreError::Corrupt { .. }) && err.to_string().contains("u64::MAX"), "{err}");
    assert_eq!(std::fs::read(&runtime).expect("read"), before, "nothing was written");
}

#[test]
fn an_index_replaced_by_a_symlink_is_never_written_through() {
    let (dir, mut store) = crate::new_store("r");
    for n in 0..3 {
        store.append_event(None, json!({"n": n})).expect("event");
    }
    let index = store.dir().join("events.idx");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious data line\n").expect("victim");
    std::fs::remove_file(&index).expect("remove the index");
    std::os::unix::fs::symlink(&victim, &index).expect("symlink");
    // A read with no usable index rebuilds it (derived data): never through the link.
    let reader = FsRuntimeStore::open(&root_of(&store), "r").expect("opened");
    assert_eq!(reader.read_events(None, 10, 10).expect("read").events.len(), 3);
    store.append_event(None, json!({"n": 3})).expect("event");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious data line\n");
    assert!(index.is_symlink());
}

#[test]
fn check_reads_only_the_index_entries_the_log_accounts_for() {
    let (_dir, mut store) = crate::new_store("r");
    for n in 0..3 {
        store.append_event(None, json!({"n": n})).expect("event");
    }
    // A sparse 1 GiB index. Check used to read all of it into memory (4.2 GB of RSS for a 2 GiB
    // one); it now reads three entries (8 MB for the whole `keel store check`, measured by hand).
    // This test pins the report, which counts the surplus from the file's length.
    let index = std::fs::OpenOptions::new().write(true).open(store.dir().join("events.idx")).expect("index");
    index.set_len(1 << 30).expect("grow the index");
    let report = FsRuntimeStore::check(&root_of(&store), "r").expect("checked");
    let surplus = format!("{} index entries past the end of the log", (1_u64 << 30) / 16 - 1);
    assert!(report.notes.iter().any(|n| n.contains(&surplus)), "{:?}", report.notes);
}

/// Errors about a missing runtime or worker named its encoded directory (`runtimes/id-7231/...`)
/// rather than the id asked for.
#[test]
fn a_missing_runtime_or_worker_is_named_by_its_id_not_its_directory_name() {
    let (dir, mut store) = two_workers();
    let encoded = |id| keel_store::encode_id("id", id).expect("valid");
    for err in [
        FsRuntimeStore::open(dir.path(), "r1").expect_err("missing"),
        FsRuntimeStore::check(dir.path(), "r1").expect_err("missing"),
    ] {
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("runtime \"r1\"") && !text.contains(&encoded("r1")), "{text}");
    }
    for err in [
        store.append_event(Some("w9"), json!({})).expect_err("missing worker"),
        store.set_worker_status("w9", "running").expect_err("missing worker"),
        store.read_transcript(&store.worker_ref("w9"), 0, 1, 1).expect_err("missing worker"),
    ] {
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("worker \"w9\"") && text.contains("runtime \"r\""), "{text}");
        assert!(!text.contains(&encoded("w9")) && !text.contains(&encoded("r")), "{text}");
    }
}

/// `store check` reported "worker.json says `last_event_id` None, the event log says Some(2)":
/// Rust's debug text of an `Option`, and index entries as tuples.
#[test]
fn check_reports_hold_no_rust_debug_text() {
    let (dir, mut store) = two_workers();
    store.append_event(Some("a"), json!({})).expect("event");
    store.append_event(Some("a"), json!({})).expect("event");
    store.append_event(None, json!({})).expect("event");
    let worker = store.dir().join("workers").join(keel_store::encode_id("id", "a").expect("valid")).join("worker.json");
    let mut snapshot: Value = serde_json::from_slice(&std::fs::read(&worker).expect("worker.json")).expect("JSON");
    snapshot["last_event_id"] = Value::Null;
    std::fs::write(&worker, serde_json::to_vec_pretty(&snapshot).expect("JSON")).expect("written");
    let report = FsRuntimeStore::check(dir.path(), "r").expect("checked");
    assert!(!report.is_clean(), "{report:?}");
    let text = format!("{}\n{}", report.problems.join("\n"), report.notes.join("\n"));
    assert!(text.contains("last_event_id"), "{text}");
    for debug in ["Some(", "None"] {
        assert!(!text.contains(debug), "{debug} in: {text}");
    }
}
