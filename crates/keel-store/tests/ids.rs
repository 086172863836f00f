//! Hostile ids never build a path outside the store and round-trip exactly.

use keel_store::{FsRuntimeStore, IdError, StoreError, StoreOptions, list_runtimes};
use serde_json::json;

use crate::walk;

const HOSTILE: [&str; 9] =
    ["..", ".", "/abs", "a/b", "../../etc/passwd", "🙂 emoji ünïcode", "Worker", "worker", "WORKER"];

#[test]
fn hostile_ids_stay_inside_the_root_and_round_trip_exactly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().canonicalize().expect("canonical root");
    for runtime_id in HOSTILE {
        let mut store = FsRuntimeStore::open_or_create(&StoreOptions::new(&root, runtime_id)).expect("created");
        for worker_id in HOSTILE {
            store.create_worker(worker_id, json!({"w": worker_id})).expect("worker created");
            store.append_event(Some(worker_id), json!({"by": worker_id})).expect("event");
            let worker_ref = store.worker_ref(worker_id);
            store.append_transcript_entry(&worker_ref, json!(worker_id)).expect("entry");
        }
        let reopened = FsRuntimeStore::open(&root, runtime_id).expect("reopened");
        let state = reopened.load().expect("loaded");
        assert_eq!(state.runtime.runtime_id, runtime_id);
        let mut expected: Vec<&str> = HOSTILE.to_vec();
        expected.sort_unstable();
        let found: Vec<&str> = state.workers.iter().map(|w| w.worker_ref.worker_id.as_str()).collect();
        assert_eq!(found, expected, "mixed-case ids are distinct workers");
        let events = reopened.read_events(None, 100, 100).expect("events");
        let named: Vec<_> = events.events.iter().map(|e| e.worker_id.clone().expect("named")).collect();
        assert_eq!(named, HOSTILE.map(str::to_owned).to_vec());
        for worker_id in HOSTILE {
            let page = reopened.read_transcript(&reopened.worker_ref(worker_id), 0, 10, 10).expect("transcript");
            assert_eq!(page.items[0].entry, json!(worker_id));
        }
    }
    let mut listed = list_runtimes(&root).expect("listed");
    listed.sort();
    let mut expected = HOSTILE.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    for path in walk(&root) {
        let canonical = path.canonicalize().expect("exists");
        assert!(canonical.starts_with(&root), "{} escaped the root", path.display());
        let name = path.file_name().expect("named").to_string_lossy().into_owned();
        assert!(!name.chars().any(char::is_uppercase), "{name}: upper case would collide on case-insensitive disks");
    }
    // Nothing was created beside the root either.
    let siblings = std::fs::read_dir(&root).expect("root").count();
    assert_eq!(siblings, 1, "only runtimes/ lives in the root");
}

#[test]
fn empty_nul_and_oversized_ids_are_refused_before_any_path_is_built() {
    let (dir, mut store) = crate::new_store("r");
    let before = walk(dir.path());
    let long = "x".repeat(10 * 1024);
    for (id, expected) in [
        ("", IdError::Empty { kind: "worker id" }),
        ("a\0b", IdError::Nul { kind: "worker id", at: 1 }),
        (long.as_str(), IdError::TooLong { kind: "worker id", id_bytes: 10 * 1024 }),
    ] {
        let err = store.create_worker(id, json!({})).expect_err("refused");
        assert!(matches!(&err, StoreError::InvalidId { source, .. } if *source == expected), "{err}");
        let err = store.append_event(Some(id), json!({})).expect_err("refused");
        assert!(matches!(err, StoreError::InvalidId { .. }), "{err}");
        let err = FsRuntimeStore::open_or_create(&StoreOptions::new(dir.path(), id)).expect_err("refused");
        assert!(matches!(err, StoreError::InvalidId { .. }), "{err}");
    }
    assert_eq!(walk(dir.path()), before, "refused ids created nothing");
}
