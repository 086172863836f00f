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

/// Each append on a freshly opened handle, as every `keel store event append` process does: the
/// open scans the log without the lock while the other writer appends. (A scan once took the
/// file's length after reaching its end, so a record appended in between counted as seen and its
/// id was given again. That window is too narrow for this test to hit reliably; the unit test
/// `a_scan_reports_the_length_it_read...` in `log.rs` pins the fix. The CLI raced the same way
/// failed about one run in six of 2 x 250 appends before it, none of eight after.)
#[test]
fn writers_that_open_a_handle_per_append_never_repeat_an_id() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_owned();
    FsRuntimeStore::open_or_create(&StoreOptions::new(&root, "r")).expect("created");
    let per_writer = 300_u64;
    let acks: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|writer| {
                let root = root.clone();
                scope.spawn(move || {
                    (0..per_writer)
                        .map(|n| {
                            let mut store = FsRuntimeStore::open(&root, "r").expect("opened");
                            store.append_event(None, json!({"writer": writer, "n": n})).expect("event").id
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("writer")).collect()
    });
    let all: BTreeSet<u64> = acks.iter().copied().collect();
    assert_eq!(all, (1..=2 * per_writer).collect(), "every id once, contiguous");
    let report = FsRuntimeStore::check(&root, "r").expect("checked");
    assert!(report.is_clean(), "{report:?}");
}

/// A handle opened before another one appended loads the new state rather than calling it
/// corrupt: it checked the workers against the event log as it was when the handle was opened.
#[test]
fn a_handle_loads_what_another_handle_appended_since_it_was_opened() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut a = FsRuntimeStore::open_or_create(&StoreOptions::new(dir.path(), "r")).expect("created");
    a.create_worker("w", json!({})).expect("worker");
    let b = FsRuntimeStore::open(dir.path(), "r").expect("opened");
    let event = a.append_event(Some("w"), json!({"n": 1})).expect("event");
    let state = b.load().expect("the older handle loads the newer state");
    assert_eq!(state.workers[0].last_event_id, Some(event.id));
    assert_eq!(state.runtime.next_event_id, event.id + 1);
}
