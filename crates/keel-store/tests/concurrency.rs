//! Several writers (separate handles, so separate lock descriptors) serialize: ids stay unique
//! and contiguous and every acknowledged event is in the log.

use std::collections::BTreeSet;

use keel_store::{FsRuntimeStore, StoreOptions};
use serde_json::json;

#[test]
fn writers_on_separate_handles_get_unique_contiguous_ids() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_owned();
    let mut setup = FsRuntimeStore::open_or_create(&StoreOptions::new(&root, "r")).expect("created");
    setup.create_worker("w", json!({})).expect("worker");
    let per_writer = 40_u64;
    let acks: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|writer| {
                let root = root.clone();
                scope.spawn(move || {
                    let mut store = FsRuntimeStore::open(&root, "r").expect("opened");
                    let worker = store.worker_ref("w");
                    (0..per_writer)
                        .map(|n| {
                            if n % 4 == 0 {
                                store.append_transcript_entry(&worker, json!([writer, n])).expect("entry");
                            }
                            store.append_event(Some("w"), json!({"writer": writer, "n": n})).expect("event").id
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer")).collect()
    });
    let all: BTreeSet<u64> = acks.iter().flatten().copied().collect();
    assert_eq!(all.len() as u64, 3 * per_writer, "no id given twice");
    assert_eq!(all, (1..=3 * per_writer).collect(), "contiguous");
    let store = FsRuntimeStore::open(&root, "r").expect("reopened");
    let page = store.read_events(None, 1_000, 1_000).expect("all");
    assert_eq!(page.events.len() as u64, 3 * per_writer);
    let state = store.load().expect("loaded");
    assert_eq!(state.workers[0].last_event_id, Some(3 * per_writer));
    assert_eq!(state.workers[0].next_transcript_seq, 3 * per_writer / 4);
    let report = FsRuntimeStore::check(&root, "r").expect("checked");
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
}
