//! `cargo xtask bench store`: keel-store's targets, as ratios measured in one run.
//!
//! - Append throughput against the fdatasync bound: events appended through the store per second
//!   over `write` + `fdatasync` of a same-sized line per second, in the same directory.
//! - Cursor reads stay flat: the time to read the last page of a 1,000,000-event log over the time
//!   to read its first page (target at most 2).
//! - Reopen stays cheap: opening the 1,000,000-event store (index present) over opening a
//!   100-event store.
//!
//! The big log is written directly as JSON lines (the format is the contract), then opened once
//! so that the store builds its index, as it would after an upgrade. Files go to
//! `target/bench/store/`. Build xtask in release (`cargo run --release -p xtask -- bench store`)
//! for absolute figures; the ratios hold in either profile.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_store::{EventCursor, FsRuntimeStore, StoreOptions};
use serde_json::json;

use crate::workspace_root;

/// Events in the big log.
const BIG_EVENTS: u64 = 1_000_000;
/// Events in the small store the reopen time is compared with.
const SMALL_EVENTS: u64 = 100;
/// Appends timed for the throughput figure (each is one fdatasync).
const APPENDS: u64 = 1_000;
/// Appends per block of the interleaved throughput measurement.
const BLOCK: u64 = 50;
/// Appends naming a worker (each also rewrites worker.json: three syncs).
const WORKER_APPENDS: u64 = 200;
/// Page size of the read benchmark.
const PAGE: u64 = 100;
/// Repetitions of each read and reopen; the median is reported.
const RUNS: usize = 101;
/// Targets.
const LAST_OVER_FIRST_MAX: f64 = 2.0;
const THROUGHPUT_RATIO_MIN: f64 = 0.5;

pub fn run() -> anyhow::Result<()> {
    let dir = workspace_root().join("target/bench/store");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if cfg!(debug_assertions) {
        println!(
            "note: xtask is a debug build; for absolute figures run `cargo run --release -p xtask -- bench store`"
        );
    }
    throughput(&dir)?;
    big_log(&dir)?;
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn report(what: &str, value: f64, verdict_ok: bool, target: &str) {
    println!("  {what}: {value:.2} ({target}): {}", if verdict_ok { "met" } else { "NOT MET" });
}

fn throughput(dir: &Path) -> anyhow::Result<()> {
    println!("store append throughput ({APPENDS} events, one fdatasync each):");
    let mut store = FsRuntimeStore::open_or_create(&StoreOptions::new(dir, "throughput"))?;
    let payload = json!({"kind": "step", "detail": "x".repeat(40)});
    store.append_event(None, payload.clone())?;
    let line_bytes = std::fs::metadata(store.dir().join("events.jsonl"))?.len();
    let raw_path = dir.join("fdatasync-bound.bin");
    let mut raw = OpenOptions::new().create(true).append(true).open(&raw_path)?;
    let line = vec![b'x'; usize::try_from(line_bytes)?];
    // Interleaved blocks, so that noise from other work on the machine hits both sides alike.
    let (mut store_s, mut raw_s) = (0.0, 0.0);
    for _ in 0..APPENDS / BLOCK {
        let started = Instant::now();
        for _ in 0..BLOCK {
            store.append_event(None, payload.clone())?;
        }
        store_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..BLOCK {
            raw.write_all(&line)?;
            raw.sync_data()?;
        }
        raw_s += started.elapsed().as_secs_f64();
    }

    store.create_worker("w", json!({}))?;
    let started = Instant::now();
    for _ in 0..WORKER_APPENDS {
        store.append_event(Some("w"), payload.clone())?;
    }
    let worker_s = started.elapsed().as_secs_f64();

    let store_rate = APPENDS as f64 / store_s;
    let raw_rate = APPENDS as f64 / raw_s;
    println!("  write + fdatasync of a {line_bytes}-byte line: {raw_rate:.0} per second");
    println!("  store append_event:                   {store_rate:.0} per second");
    println!(
        "  store append_event naming a worker:   {:.0} per second (also rewrites worker.json)",
        WORKER_APPENDS as f64 / worker_s
    );
    report(
        "append throughput / fdatasync bound",
        store_rate / raw_rate,
        store_rate / raw_rate >= THROUGHPUT_RATIO_MIN,
        &format!("target >= {THROUGHPUT_RATIO_MIN}"),
    );
    Ok(())
}

/// Writes `events` events of runtime `runtime_id` straight into its log.
fn bulk_write(dir: &Path, runtime_id: &str, events: u64) -> anyhow::Result<()> {
    drop(FsRuntimeStore::open_or_create(&StoreOptions::new(dir, runtime_id))?);
    let runtime_dir = dir.join("runtimes").join(keel_store::encode_id("runtime id", runtime_id)?);
    let file = OpenOptions::new().append(true).open(runtime_dir.join("events.jsonl"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for id in 1..=events {
        writeln!(
            out,
            r#"{{"id":{id},"runtime_id":"{runtime_id}","worker_id":null,"recorded_at_ms":0,"payload":{{"kind":"step","n":{id}}}}}"#
        )?;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
    Ok(())
}

fn time_reopen(dir: &Path, runtime_id: &str) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let store = FsRuntimeStore::open(dir, runtime_id)?;
        times.push(started.elapsed());
        drop(store);
    }
    Ok(median(&mut times))
}

fn time_page(store: &FsRuntimeStore, cursor: Option<&EventCursor>) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let page = store.read_events(cursor, PAGE, PAGE)?;
        times.push(started.elapsed());
        anyhow::ensure!(page.events.len() as u64 == PAGE, "a full page");
    }
    Ok(median(&mut times))
}

fn big_log(dir: &Path) -> anyhow::Result<()> {
    println!("store of {BIG_EVENTS} events (pages of {PAGE}, median of {RUNS}):");
    let started = Instant::now();
    bulk_write(dir, "big", BIG_EVENTS)?;
    let log_bytes =
        File::open(dir.join("runtimes").join(keel_store::encode_id("runtime id", "big")?).join("events.jsonl"))?
            .metadata()?
            .len();
    println!("  wrote {BIG_EVENTS} events ({log_bytes} bytes) in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let store = FsRuntimeStore::open(dir, "big")?;
    println!("  first open (builds the index from the whole log): {:.2} s", started.elapsed().as_secs_f64());

    let first = time_page(&store, None)?;
    let last_cursor = EventCursor { runtime_id: "big".into(), next_event_id: BIG_EVENTS - PAGE + 1 };
    let last = time_page(&store, Some(&last_cursor))?;
    let middle_cursor = EventCursor { runtime_id: "big".into(), next_event_id: BIG_EVENTS / 2 + 17 };
    let middle = time_page(&store, Some(&middle_cursor))?;
    let last_page = store.read_events(Some(&last_cursor), PAGE, PAGE)?;
    anyhow::ensure!(!last_page.has_more && last_page.events[0].id == BIG_EVENTS - PAGE + 1, "the last page");
    println!("  first page {:.3} ms, middle page {:.3} ms, last page {:.3} ms", ms(first), ms(middle), ms(last));
    let ratio = last.as_secs_f64() / first.as_secs_f64();
    report("last page / first page", ratio, ratio <= LAST_OVER_FIRST_MAX, &format!("target <= {LAST_OVER_FIRST_MAX}"));

    bulk_write(dir, "small", SMALL_EVENTS)?;
    drop(FsRuntimeStore::open(dir, "small")?);
    let big_reopen = time_reopen(dir, "big")?;
    let small_reopen = time_reopen(dir, "small")?;
    println!(
        "  reopen: {BIG_EVENTS}-event store {:.3} ms, {SMALL_EVENTS}-event store {:.3} ms",
        ms(big_reopen),
        ms(small_reopen)
    );
    let ratio = big_reopen.as_secs_f64() / small_reopen.as_secs_f64();
    report(&format!("reopen {BIG_EVENTS} / reopen {SMALL_EVENTS}"), ratio, ratio <= LAST_OVER_FIRST_MAX, "target <= 2");
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
