//! `cargo xtask bench`: performance targets, reported as ratios measured in one run.
//!
//! Absolute times depend on the machine; a ratio against a baseline measured in the same run on
//! the same disk and page cache does not (much). Nothing here is a test: it reports, and says
//! whether each target was met.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::workspace_root;

/// Benchmarks that can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// `keel journal replay` of a 1,000,000-record journal against reading and counting its lines.
    Replay,
    /// Every benchmark.
    All,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    build_release()?;
    match which {
        Which::Replay | Which::All => replay()?,
    }
    Ok(())
}

fn build_release() -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--locked", "-p", "keel-cli"])
        .current_dir(workspace_root())
        .status()
        .context("building keel in release mode")?;
    if !status.success() {
        bail!("cargo build --release -p keel-cli failed ({status})");
    }
    Ok(())
}

fn keel_binary() -> PathBuf {
    workspace_root().join("target/release/keel")
}

fn bench_dir() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Records in the replay benchmark's journal.
const REPLAY_RECORDS: usize = 1_000_000;
/// Targets from the issue: replay within 4x of reading and counting, at most 64 MiB peak RSS.
const REPLAY_RATIO_MAX: f64 = 4.0;
const REPLAY_RSS_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Each measurement is repeated and the median kept.
const RUNS: usize = 5;

fn replay() -> anyhow::Result<()> {
    let path = bench_dir()?.join("replay-1m.jsonl");
    let (bytes, generated) = ensure_journal(&path)?;
    println!(
        "replay: journal {} ({REPLAY_RECORDS} records, {:.1} MB{})",
        path.display(),
        bytes as f64 / 1e6,
        if generated { ", generated now" } else { ", reused" }
    );
    // Warm the page cache so both sides read from memory, then alternate the two measurements.
    read_and_count(&path)?;
    let mut count_times = Vec::new();
    let mut replay_times = Vec::new();
    let mut peak_rss = 0;
    let mut lines = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        lines = read_and_count(&path)?;
        count_times.push(started.elapsed());
        let (elapsed, rss) =
            run_measured(Command::new(keel_binary()).arg("--journal").arg(&path).args(["journal", "replay"]))?;
        replay_times.push(elapsed);
        peak_rss = peak_rss.max(rss);
    }
    let count = median(&mut count_times);
    let replay = median(&mut replay_times);
    let ratio = replay.as_secs_f64() / count.as_secs_f64();
    println!("  read and count lines ({lines} lines): median {:.3} s of {RUNS}", count.as_secs_f64());
    println!("  keel journal replay:                median {:.3} s of {RUNS}", replay.as_secs_f64());
    report("replay / read-and-count", ratio, REPLAY_RATIO_MAX, "x");
    report(
        "peak RSS of keel journal replay (MiB)",
        peak_rss as f64 / 1048576.0,
        REPLAY_RSS_BYTES_MAX as f64 / 1048576.0,
        " MiB",
    );
    Ok(())
}

fn report(what: &str, value: f64, max: f64, unit: &str) {
    let verdict = if value <= max { "met" } else { "MISSED" };
    println!("  {what}: {value:.2}{unit} (target <= {max:.0}{unit}): {verdict}");
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Generates the benchmark journal once; a later run reuses it when its size matches.
fn ensure_journal(path: &Path) -> anyhow::Result<(u64, bool)> {
    let marker = path.with_extension("bytes");
    if let (Ok(meta), Ok(recorded)) = (std::fs::metadata(path), std::fs::read_to_string(&marker)) {
        if recorded.trim() == meta.len().to_string() {
            return Ok((meta.len(), false));
        }
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    keel_tests::generate::write_journal(
        &mut out,
        0x6b65_656c,
        REPLAY_RECORDS,
        &keel_tests::generate::GenOptions::default(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    let bytes = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    std::fs::write(&marker, bytes.to_string()).with_context(|| format!("writing {}", marker.display()))?;
    Ok((bytes, true))
}

/// The baseline: read the file in 1 MiB chunks and count its newlines.
fn read_and_count(path: &Path) -> anyhow::Result<u64> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buffer[..n]).count() as u64;
    }
}

/// Runs a command with stdout discarded; returns its wall time and its own peak RSS in bytes.
fn run_measured(command: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let child = command.stdout(Stdio::null()).spawn().context("starting keel")?;
    let pid = libc::pid_t::try_from(child.id()).context("pid fits pid_t")?;
    let mut status = 0;
    // SAFETY: `rusage` is plain old data that wait4 fills in; `pid` is our own unreaped child, and
    // std's `Child` is dropped without waiting, so nothing else reaps it.
    #[allow(unsafe_code)]
    let (waited, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::wait4(pid, &raw mut status, 0, &raw mut usage), usage)
    };
    let elapsed = started.elapsed();
    drop(child);
    if waited != pid {
        bail!("wait4 for keel failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("keel exited abnormally (wait status {status})");
    }
    // ru_maxrss is in KiB on Linux.
    Ok((elapsed, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024))
}
