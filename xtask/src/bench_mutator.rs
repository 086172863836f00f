//! `cargo xtask bench` (mutator): the latency of a write through the gate (journal read twice,
//! mutation log with one `fdatasync` per step, inode re-check) against a plain
//! `keel_fs::write_atomic` of the same bytes on the same disk, interleaved in one run, reported as
//! ratios of percentiles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend as _};
use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Outcome, Request};

/// Writes measured per kind.
const WRITES: usize = 200;
/// Writes of each kind before measuring (page cache, lazily created files).
const WARM_UP: usize = 10;
/// Bytes per write: a typical source file.
const CONTENT_BYTES: usize = 4096;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort_unstable();
    let at = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[at.min(samples.len() - 1)]
}

fn content(i: usize) -> Vec<u8> {
    let mut bytes = format!("// revision {i}\n").into_bytes();
    bytes.resize(CONTENT_BYTES, b'x');
    bytes
}

pub fn run() -> anyhow::Result<()> {
    let base = std::env::var_os("KEEL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let scratch = Scratch(base.join(format!("keel-bench-mutator-{}", std::process::id())));
    let root = scratch.0.join("ws");
    std::fs::create_dir_all(root.join("src")).with_context(|| format!("creating {}", root.display()))?;
    let journal = Journal::open(&scratch.0.join("lane-journal.jsonl"), JournalOptions::default());
    let mutator = Mutator::open(&root, journal, MutatorOptions::default()).context("opening the mutator")?;
    let lease = AcquireRequest {
        lane: "bench".into(),
        tree: vec!["src/".into()],
        owner: "bench".into(),
        ..AcquireRequest::default()
    };
    let AcquireOutcome::Acquire(grant) = mutator.journal().acquire(&lease).context("acquiring the bench lease")? else {
        bail!("the bench lease was refused on an empty journal");
    };
    let plain_path: &Path = &root.join("src/plain.rs");
    let mut previous: Option<Vec<u8>> = None;
    let mut gated = Vec::with_capacity(WRITES);
    let mut plain = Vec::with_capacity(WRITES);
    for i in 0..WARM_UP + WRITES {
        let bytes = content(i);
        // Alternate which goes first so drift in the machine's load hits both alike.
        for gated_turn in if i % 2 == 0 { [true, false] } else { [false, true] } {
            let started = Instant::now();
            if gated_turn {
                let expect =
                    previous.as_deref().map_or(Expect::Absent, |p| Expect::Hash(keel_mutator::content_hash(p)));
                let request = Request::for_grant(&grant, "bench", expect, IntentId::new(&format!("bench-{i}"))?);
                let outcome = mutator.write("src/gated.rs", &bytes, &request).context("gated write")?;
                if !matches!(outcome, Outcome::Written { .. }) {
                    bail!("gated write {i} was not written: {outcome}");
                }
            } else {
                let _report = keel_fs::write_atomic(plain_path, &bytes).context("plain atomic write")?;
            }
            let elapsed = started.elapsed();
            if i >= WARM_UP {
                if gated_turn { gated.push(elapsed) } else { plain.push(elapsed) }
            }
        }
        previous = Some(bytes);
    }
    let (gated_p50, plain_p50) = (percentile(&mut gated, 0.5), percentile(&mut plain, 0.5));
    let (gated_p90, plain_p90) = (percentile(&mut gated, 0.9), percentile(&mut plain, 0.9));
    let log_bytes = std::fs::metadata(mutator.log_path()).map_or(0, |m| m.len());
    println!("mutator: {WRITES} writes of {CONTENT_BYTES} bytes each, gated vs plain write_atomic, interleaved");
    if cfg!(debug_assertions) {
        println!("  (debug build: run in release for representative figures)");
    }
    println!(
        "  p50: gated {:.3} ms, plain {:.3} ms, ratio {:.2}x",
        gated_p50.as_secs_f64() * 1e3,
        plain_p50.as_secs_f64() * 1e3,
        gated_p50.as_secs_f64() / plain_p50.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    println!(
        "  p90: gated {:.3} ms, plain {:.3} ms, ratio {:.2}x",
        gated_p90.as_secs_f64() * 1e3,
        plain_p90.as_secs_f64() * 1e3,
        gated_p90.as_secs_f64() / plain_p90.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    println!(
        "  mutation log after the run: {log_bytes} bytes ({} bytes per write)",
        log_bytes / (WARM_UP + WRITES) as u64
    );
    Ok(())
}
