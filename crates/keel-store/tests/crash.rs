//! Kill -9 of writers mid-append, many rounds: the store reopens, every acknowledged event is
//! present exactly once, and the torn tail is gone after the next append.
//!
//! `harness = false`: the binary is both the test and, re-executed with `KEEL_STORE_CRASH_WRITER`
//! set, the writer it kills. Writers append events of mixed sizes (some large enough that a
//! SIGKILL lands inside the `write`, which the kernel then cuts short: a real torn tail) and print
//! an acknowledgement line after each append returns.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel_store::{EventCursor, FsRuntimeStore, StoreOptions};
use serde_json::json;

const ROUNDS: u64 = 12;
const WRITERS: u64 = 2;
const WRITER_ENV: &str = "KEEL_STORE_CRASH_WRITER";
const TAG_ENV: &str = "KEEL_STORE_CRASH_TAG";

fn main() {
    if let Ok(root) = std::env::var(WRITER_ENV) {
        let tag: u64 = std::env::var(TAG_ENV).expect("tag").parse().expect("numeric tag");
        write_until_killed(Path::new(&root), tag);
        return;
    }
    let torn = kill_writers_mid_append_many_rounds();
    println!(
        "crash: {ROUNDS} rounds x {WRITERS} writers killed with SIGKILL; {torn} left a torn tail by themselves \
         (odd rounds without one got an emulated one); ok"
    );
}

fn write_until_killed(root: &Path, tag: u64) {
    let mut store = FsRuntimeStore::open(root, "r").expect("writer opens the store");
    let mut stdout = std::io::stdout().lock();
    for n in 0_u64.. {
        let pad = if n % 2 == 1 { 1_000_000 } else { 64 };
        let event = store.append_event(None, json!({"tag": tag, "n": n, "pad": "x".repeat(pad)})).expect("append");
        writeln!(stdout, "{tag} {n} {}", event.id).expect("ack written");
        stdout.flush().expect("ack flushed");
    }
}

/// Every event in the log as `(tag, n) -> ids`.
fn read_all(store: &FsRuntimeStore) -> HashMap<(u64, u64), Vec<u64>> {
    let mut seen: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = store.read_events(cursor.as_ref(), 1_000, 1_000).expect("page");
        for event in &page.events {
            let key = (event.payload["tag"].as_u64().expect("tag"), event.payload["n"].as_u64().expect("n"));
            seen.entry(key).or_default().push(event.id);
        }
        cursor = Some(page.cursor);
        if !page.has_more {
            return seen;
        }
    }
}

fn kill_writers_mid_append_many_rounds() -> u64 {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    let mut options = StoreOptions::new(root, "r");
    options.limits.record_bytes_max = keel_store::model::RECORD_BYTES_CEILING;
    drop(FsRuntimeStore::open_or_create(&options).expect("created"));
    let log = root.join("runtimes").join(keel_store::encode_id("runtime id", "r").expect("valid")).join("events.jsonl");
    let mut acked: HashMap<(u64, u64), u64> = HashMap::new();
    let mut torn_rounds = 0;
    for round in 0..ROUNDS {
        let mut children = Vec::new();
        for writer in 0..WRITERS {
            let tag = round * WRITERS + writer;
            let mut child = Command::new(std::env::current_exe().expect("own path"))
                .env(WRITER_ENV, root)
                .env(TAG_ENV, tag.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("writer starts");
            let stdout = child.stdout.take().expect("piped");
            let reader = std::thread::spawn(move || {
                BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
            });
            children.push((child, reader));
        }
        // A different moment in every round (deterministic): early, mid-stream, late.
        std::thread::sleep(Duration::from_millis(40 + (round * 37) % 90));
        for (child, _) in &mut children {
            child.kill().expect("SIGKILL delivered");
        }
        for (mut child, reader) in children {
            child.wait().expect("reaped");
            for line in reader.join().expect("reader") {
                let fields: Vec<u64> = line.split(' ').map(|f| f.parse().expect("numeric ack")).collect();
                acked.insert((fields[0], fields[1]), fields[2]);
            }
        }

        let bytes = std::fs::read(&log).expect("log");
        let torn = bytes.last().is_some_and(|b| *b != b'\n');
        torn_rounds += u64::from(torn);
        if !torn && round % 2 == 1 {
            // SIGKILL rarely lands inside a `write` (Linux usually finishes it): in odd rounds
            // where it did not, leave what a power cut mid-write leaves, a record's prefix.
            let fragment = format!("{{\"id\":{},\"runtime_id\":\"r\",\"worker_id\":null,\"pay", u64::MAX);
            let mut file = std::fs::OpenOptions::new().append(true).open(&log).expect("log");
            file.write_all(fragment.as_bytes()).expect("fragment written");
        }
        let mut store = FsRuntimeStore::open(root, "r").expect("the store reopens after SIGKILL");
        let seen = read_all(&store);
        for (key, id) in &acked {
            assert_eq!(
                seen.get(key),
                Some(&vec![*id]),
                "round {round}: acknowledged event {key:?} present exactly once"
            );
        }
        let probe = store.append_event(None, json!({"tag": u64::MAX, "n": round})).expect("append after the crash");
        acked.insert((u64::MAX, round), probe.id);
        let bytes = std::fs::read(&log).expect("log");
        assert_eq!(bytes.last(), Some(&b'\n'), "round {round}: the torn tail is gone after the next append");
        let report = FsRuntimeStore::check(root, "r").expect("checked");
        assert!(report.is_clean(), "round {round}: {report:?}");
        assert!(!report.notes.iter().any(|n| n.contains("torn")), "round {round}: {report:?}");
        assert_eq!(report.events as usize, seen.len() + 1, "round {round}: no duplicates, nothing extra");
    }
    let state = FsRuntimeStore::open(root, "r").expect("reopened").load().expect("loaded");
    let removed = state.runtime.diagnostics.iter().filter(|d| d.kind == "torn_tail_removed").count() as u64;
    assert!(removed >= ROUNDS / 2, "every torn tail removal is recorded ({removed})");
    torn_rounds
}
