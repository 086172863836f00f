//! Following cursors yields every event exactly once, in order, with `has_more` false exactly
//! at the end, for any log length and page size, whatever state the index is in.

use std::io::Write;
use std::path::Path;

use keel_store::{Event, EventCursor, FsRuntimeStore, INDEX_EVERY_RECORDS, StoreError, StoreOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Writes `events` events straight into the runtime's log, as the store would have.
fn bulk_log(root: &Path, runtime_id: &str, events: u64) {
    drop(FsRuntimeStore::open_or_create(&StoreOptions::new(root, runtime_id)).expect("created"));
    let dir = root.join("runtimes").join(keel_store::encode_id("runtime id", runtime_id).expect("valid"));
    let mut file = std::fs::OpenOptions::new().append(true).open(dir.join("events.jsonl")).expect("log");
    let mut bytes = Vec::new();
    for id in 1..=events {
        let event = Event {
            id,
            runtime_id: runtime_id.to_owned(),
            worker_id: None,
            recorded_at_ms: 0,
            payload: json!({"n": id, "pad": "x".repeat((id % 7) as usize)}),
        };
        serde_json::to_writer(&mut bytes, &event).expect("serialises");
        bytes.push(b'\n');
    }
    file.write_all(&bytes).expect("written");
}

#[derive(Debug, Clone, Copy)]
enum IndexState {
    /// As the store wrote it.
    Built,
    /// Deleted: every read scans from the start.
    Missing,
    /// Overwritten with garbage: every entry fails its check.
    Garbage,
    /// Every entry's offset shifted by one byte: entries point into the middle of lines.
    Shifted,
}

fn damage_index(root: &Path, runtime_id: &str, state: IndexState) {
    let index =
        root.join("runtimes").join(keel_store::encode_id("runtime id", runtime_id).expect("valid")).join("events.idx");
    match state {
        IndexState::Built => {}
        IndexState::Missing => {
            let _ = std::fs::remove_file(&index);
        }
        IndexState::Garbage => {
            let len = std::fs::metadata(&index).map_or(64, |m| m.len());
            std::fs::write(&index, vec![0xa5; len as usize]).expect("garbage written");
        }
        IndexState::Shifted => {
            let mut bytes = std::fs::read(&index).unwrap_or_default();
            for entry in bytes.chunks_exact_mut(16) {
                let offset = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
                entry[8..].copy_from_slice(&(offset + 1).to_le_bytes());
            }
            std::fs::write(&index, bytes).expect("shifted written");
        }
    }
}

/// Reads the whole log by following cursors and checks every page.
fn follow(store: &FsRuntimeStore, events: u64, page: u64) {
    let mut cursor: Option<EventCursor> = None;
    let mut seen = Vec::new();
    loop {
        let result = store.read_events(cursor.as_ref(), page, 1_000).expect("page");
        let remaining = events - seen.len() as u64;
        assert_eq!(result.events.len() as u64, page.min(remaining), "page size honoured");
        seen.extend(result.events.iter().map(|e| e.id));
        assert_eq!(result.has_more, (seen.len() as u64) < events, "has_more false exactly at the end");
        assert_eq!(result.cursor.next_event_id, seen.len() as u64 + 1);
        cursor = Some(result.cursor);
        if !result.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=events).collect::<Vec<_>>(), "every event once, in order");
    let after = store.read_events(cursor.as_ref(), page, 1_000).expect("page past the end");
    assert!(after.events.is_empty() && !after.has_more);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn following_cursors_yields_every_event_once_in_order(
        events in 0_u64..(5 * INDEX_EVERY_RECORDS),
        page in 1_u64..(2 * INDEX_EVERY_RECORDS + 3),
        state in prop_oneof![
            Just(IndexState::Built),
            Just(IndexState::Missing),
            Just(IndexState::Garbage),
            Just(IndexState::Shifted)
        ],
    ) {
        let dir = tempfile::tempdir().expect("temporary directory");
        bulk_log(dir.path(), "r", events);
        // Opening indexes the bulk-written log; then the index is damaged as asked.
        drop(FsRuntimeStore::open(dir.path(), "r").expect("opened"));
        damage_index(dir.path(), "r", state);
        let store = FsRuntimeStore::open(dir.path(), "r").expect("reopened");
        damage_index(dir.path(), "r", state);
        follow(&store, events, page);
    }
}

#[test]
fn every_page_size_over_a_log_appended_through_the_api() {
    let (_dir, mut store) = crate::new_store("r");
    let events = 2 * INDEX_EVERY_RECORDS + 5;
    for n in 0..events {
        let event = store.append_event(None, json!({"n": n})).expect("appended");
        assert_eq!(event.id, n + 1, "ids are assigned 1, 2, 3, ...");
    }
    for page in 1..=events + 1 {
        follow(&store, events, page);
    }
}

#[test]
fn a_limit_of_0_is_refused_rather_than_a_page_whose_cursor_never_advances() {
    let (_dir, mut store) = crate::new_store("r");
    store.create_worker("w", json!({})).expect("worker");
    let worker = store.worker_ref("w");
    store.append_event(None, json!({"n": 1})).expect("event");
    store.append_transcript_entry(&worker, json!({"n": 1})).expect("entry");
    // It once answered `has_more: true` with the cursor it was given: a client paging until
    // `has_more` is false looped forever.
    let err = store.read_events(None, 0, 10).expect_err("limit 0");
    assert!(matches!(err, StoreError::InvalidInput { what: "limit", .. }), "{err}");
    let err = store.read_transcript(&worker, 0, 0, 10).expect_err("limit 0");
    assert!(matches!(err, StoreError::InvalidInput { what: "limit", .. }), "{err}");
}

/// The README's walk-through pages with `--from 101` over a log of one event: that start was
/// refused ("past the end of the log", exit 2). Paging past the end is an empty last page, as
/// cursors do everywhere; its cursor is the log's real end, never the start it was given.
#[test]
fn a_start_past_the_end_of_the_log_is_an_empty_last_page_whose_cursor_is_the_real_end() {
    let (_dir, mut store) = crate::new_store("r");
    store.create_worker("w", json!({})).expect("worker");
    let worker = store.worker_ref("w");
    for n in 0..2 {
        store.append_event(None, json!({"n": n})).expect("event");
        store.append_transcript_entry(&worker, json!({"n": n})).expect("entry");
    }
    let at = |next_event_id| EventCursor { runtime_id: "r".into(), next_event_id };
    let end = store.read_events(Some(&at(3)), 10, 10).expect("the end");
    assert!(end.events.is_empty() && !end.has_more && end.cursor.next_event_id == 3, "{end:?}");
    let past = store.read_events(Some(&at(50)), 10, 10).expect("past the end");
    assert!(past.events.is_empty() && !past.has_more, "{past:?}");
    // Not the cursor it was given: a follower would then wait at id 50 and never see events 3
    // to 49 once they were appended.
    assert_eq!(past.cursor.next_event_id, 3, "{past:?}");
    store.append_event(None, json!({"n": 2})).expect("event");
    let next = store.read_events(Some(&past.cursor), 10, 10).expect("the next page");
    assert_eq!(next.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3], "{next:?}");
    assert!(store.read_transcript(&worker, 2, 10, 10).expect("the end").items.is_empty());
    let past = store.read_transcript(&worker, 3, 10, 10).expect("past the end");
    assert!(past.items.is_empty() && past.next_start.is_none() && past.total_items == 2, "{past:?}");
}

#[test]
fn a_cursor_of_another_runtime_and_a_limit_above_the_maximum_are_refused() {
    let (_dir, store) = crate::new_store("r");
    let foreign = EventCursor { runtime_id: "other".into(), next_event_id: 1 };
    let err = store.read_events(Some(&foreign), 10, 10).expect_err("refused");
    assert!(matches!(err, StoreError::WrongRuntimeCursor { ref found, .. } if found == "other"), "{err}");
    let err = store.read_events(None, 11, 10).expect_err("refused");
    assert!(matches!(err, StoreError::LimitTooLarge { limit: 11, limit_max: 10, .. }), "{err}");
    let err = store.read_events(None, 1_001, 5_000).expect_err("runtime's page_limit_max applies");
    assert!(matches!(err, StoreError::LimitTooLarge { limit_max: 1_000, .. }), "{err}");
    let other = keel_store::WorkerRef { runtime_id: "other".into(), worker_id: "w".into() };
    let err = store.read_transcript(&other, 0, 1, 1).expect_err("refused");
    assert!(matches!(err, StoreError::WrongRuntime { .. }), "{err}");
}

#[test]
fn transcript_pages_report_total_and_next_start() {
    let (_dir, mut store) = crate::new_store("r");
    store.create_worker("w", json!({"role": "coder"})).expect("worker");
    let worker = store.worker_ref("w");
    let total = INDEX_EVERY_RECORDS + 10;
    for n in 0..total {
        assert_eq!(store.append_transcript_entry(&worker, json!({"n": n})).expect("entry").seq, n);
    }
    for page in [1, 7, INDEX_EVERY_RECORDS, total, total + 1] {
        let mut start = 0;
        let mut seen = Vec::new();
        loop {
            let result = store.read_transcript(&worker, start, page, 1_000).expect("page");
            assert_eq!(result.total_items, total);
            seen.extend(result.items.iter().map(|i| i.seq));
            match result.next_start {
                Some(next) => start = next,
                None => break,
            }
        }
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
    }
    let end = store.read_transcript(&worker, total, 10, 10).expect("the end");
    assert!(end.items.is_empty() && end.next_start.is_none() && end.total_items == total);
    let past = store.read_transcript(&worker, total + 5, 10, 10).expect("past the end");
    assert!(past.items.is_empty() && past.next_start.is_none() && past.total_items == total, "{past:?}");
    let state = FsRuntimeStore::open(store.dir().parent().and_then(|p| p.parent()).expect("root"), "r")
        .expect("reopened")
        .load()
        .expect("loaded");
    assert_eq!(state.workers[0].next_transcript_seq, total, "load returns the live counter");
}

/// Numbers in a request or a payload read back as they were written: the store keeps what the
/// caller recorded, digits included (an integer beyond u64 once came back as a float).
#[test]
fn numbers_in_requests_and_payloads_read_back_as_written() {
    let text = r#"{"big": 123456789012345678901234567890, "neg": -0, "f": 1.10}"#;
    let recorded: Value = serde_json::from_str(text).expect("JSON");
    let (dir, mut store) = crate::new_store("r");
    store.create_worker("w", recorded.clone()).expect("worker");
    store.append_event(Some("w"), recorded.clone()).expect("event");
    let spelled = |value: &Value| serde_json::to_string(value).expect("serialise");
    let want = spelled(&recorded);
    assert_eq!(want, r#"{"big":123456789012345678901234567890,"f":1.10,"neg":-0}"#);

    let reopened = FsRuntimeStore::open(dir.path(), "r").expect("reopen");
    let state = reopened.load().expect("load");
    assert_eq!(spelled(&state.workers[0].request), want);
    let page = reopened.read_events(None, 10, 10).expect("page");
    assert_eq!(spelled(&page.events[0].payload), want);
}
