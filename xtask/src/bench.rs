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
use keel_journal::LeaseBackend as _;

use crate::workspace_root;

/// Benchmarks that can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// `keel journal replay` of a 1,000,000-record journal against reading and counting its lines.
    Replay,
    /// Acquire+release cycles against the fdatasync bound, with and without history; CLI cycles.
    Lease,
    /// Event append throughput, last-page/first-page read ratio and reopen time of a 1,000,000-event store.
    Store,
    /// Write latency through the lease gate against a plain atomic write.
    Mutator,
    /// `keel hook pre-tool-use` against dos-kernel's Go hook and a bare process start.
    Hook,
    /// `keel mcp` tool round trips against the fdatasync bound and an MCP ping.
    Mcp,
    /// The etcd backend on a 3-member cluster against bare etcd transactions.
    Etcd,
    /// Every benchmark.
    All,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        // In-process figures must come from optimised code: run this task again, built in release.
        let which = format!("{which:?}").to_lowercase();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench", &which])
            .current_dir(workspace_root())
            .status()
            .context("re-running the benchmark in release mode")?;
        if !status.success() {
            bail!("the release-mode benchmark failed ({status})");
        }
        return Ok(());
    }
    build_release()?;
    if matches!(which, Which::Replay | Which::All) {
        replay()?;
    }
    if matches!(which, Which::Lease | Which::All) {
        lease()?;
    }
    if matches!(which, Which::Store | Which::All) {
        crate::bench_store::run()?;
    }
    if matches!(which, Which::Mutator | Which::All) {
        crate::bench_mutator::run()?;
    }
    if matches!(which, Which::Hook | Which::All) {
        crate::bench_hook::run()?;
    }
    if matches!(which, Which::Mcp | Which::All) {
        crate::bench_mcp::run()?;
    }
    if matches!(which, Which::Etcd | Which::All) {
        crate::bench_etcd::run()?;
    }
    Ok(())
}

fn build_release() -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "keel-cli"])
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

pub(crate) fn bench_dir() -> anyhow::Result<PathBuf> {
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
        peak_rss as f64 / 1_048_576.0,
        REPLAY_RSS_BYTES_MAX as f64 / 1_048_576.0,
        " MiB",
    );
    Ok(())
}

pub(crate) fn report(what: &str, value: f64, max: f64, unit: &str) {
    let verdict = if value <= max { "met" } else { "MISSED" };
    println!("  {what}: {value:.2}{unit} (target <= {max}{unit}): {verdict}");
}

pub(crate) fn report_at_least(what: &str, value: f64, min: f64) {
    let verdict = if value >= min { "met" } else { "MISSED" };
    println!("  {what}: {value:.2} (target >= {min}): {verdict}");
}

pub(crate) fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Generates the benchmark journal once; a later run reuses it when its size matches.
fn ensure_journal(path: &Path) -> anyhow::Result<(u64, bool)> {
    let marker = path.with_extension("bytes");
    if let (Ok(meta), Ok(recorded)) = (std::fs::metadata(path), std::fs::read_to_string(&marker))
        && recorded.trim() == meta.len().to_string()
    {
        return Ok((meta.len(), false));
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

/// Cycles per measurement of the in-process lease benchmark.
const LEASE_CYCLES: usize = 400;
/// CLI cycles (two `keel` processes each).
const CLI_CYCLES: usize = 200;
/// Targets from the issue.
const LEASE_BOUND_FRACTION_MIN: f64 = 0.5;
const HISTORY_SLOWDOWN_MAX: f64 = 2.0;
const CLI_MEDIAN_MS_MAX: f64 = 3.0;

fn lease_options() -> keel_journal::JournalOptions {
    // History must stay history for the measurement: no size-triggered compaction.
    keel_journal::JournalOptions { compact_threshold_bytes: None, ..keel_journal::JournalOptions::default() }
}

/// The bound: one fdatasync'd append of a record-sized line, timed in a plain loop.
pub(crate) fn fdatasync_bound(dir: &Path) -> anyhow::Result<Duration> {
    let path = dir.join("fdatasync-bound.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).context("bound file")?;
    let line = format!("{}\n", "x".repeat(400));
    let started = Instant::now();
    for _ in 0..LEASE_CYCLES * 2 {
        file.write_all(line.as_bytes()).context("bound write")?;
        file.sync_data().context("bound fdatasync")?;
    }
    Ok(started.elapsed() / u32::try_from(LEASE_CYCLES * 2).expect("small"))
}

/// Median time of one acquire+release cycle on `journal` (after one warm-up cycle).
fn lease_cycles(journal: &keel_journal::Journal, cycles: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(cycles);
    for i in 0..=cycles {
        let request = keel_journal::AcquireRequest {
            lane: format!("bench-{i}"),
            tree: vec![format!("bench/{i}/")],
            owner: "bench".into(),
            ..keel_journal::AcquireRequest::default()
        };
        let started = Instant::now();
        let outcome = journal.acquire(&request)?;
        let keel_journal::AcquireOutcome::Acquire(grant) = outcome else {
            bail!("the benchmark's disjoint request was refused: {outcome:?}");
        };
        journal.release(&keel_journal::LeaseRef::exact(&grant.identity), "bench")?;
        if i > 0 {
            times.push(started.elapsed());
        }
    }
    Ok(median(&mut times))
}

fn lease() -> anyhow::Result<()> {
    let dir = bench_dir()?.join("lease");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sync = fdatasync_bound(&dir)?;
    let bound_per_s = 1.0 / (2.0 * sync.as_secs_f64());
    let empty = keel_journal::Journal::open(&dir.join("empty.jsonl"), lease_options());
    let cycle_empty = lease_cycles(&empty, LEASE_CYCLES)?;
    let cycles_per_s = 1.0 / cycle_empty.as_secs_f64();
    println!(
        "lease: append+fdatasync {:.3} ms -> bound {bound_per_s:.0} cycles/s (two per cycle)",
        sync.as_secs_f64() * 1e3
    );
    println!(
        "  in-process acquire+release: median {:.3} ms -> {cycles_per_s:.0} cycles/s",
        cycle_empty.as_secs_f64() * 1e3
    );
    report_at_least("fraction of the fdatasync bound", cycles_per_s / bound_per_s, LEASE_BOUND_FRACTION_MIN);

    let history_source = bench_dir()?.join("replay-1m.jsonl");
    ensure_journal(&history_source)?;
    let history = dir.join("history.jsonl");
    std::fs::copy(&history_source, &history).context("copying the 1,000,000-record journal")?;
    // The generated history ends with leases live (some over the whole tree); release them, so
    // the benchmark's requests are admitted and what is measured is the cost of the history.
    let live = keel_journal::replay_path(&history)?.replayed;
    let mut tail = std::fs::OpenOptions::new().append(true).open(&history).context("history journal")?;
    for (identity, _) in live.state.live_with_identity() {
        let record =
            serde_json::json!({"op": "RELEASE", "lane": identity.lane, "loop_ts": identity.loop_ts, "reason": "bench"});
        writeln!(tail, "{}", keel_kernel::json::to_line(&record)).context("history journal")?;
    }
    // Flush the 240 MB copy now, so its write-back does not run under the measurements below.
    tail.sync_all().context("syncing the history journal")?;
    drop(tail);
    let journal = keel_journal::Journal::open(&history, lease_options());
    let warm = Instant::now();
    let _ = journal.stats()?;
    println!("  first operation on 1,000,000 records of history (cold replay): {:.3} s", warm.elapsed().as_secs_f64());
    let cycle_history = lease_cycles(&journal, LEASE_CYCLES)?;
    println!("  acquire+release with 1,000,000 records of history: median {:.3} ms", cycle_history.as_secs_f64() * 1e3);
    report(
        "history / empty cycle time",
        cycle_history.as_secs_f64() / cycle_empty.as_secs_f64(),
        HISTORY_SLOWDOWN_MAX,
        "x",
    );
    let fresh = keel_journal::Journal::open(&history, lease_options());
    let cold = Instant::now();
    let _ = fresh.stats()?;
    println!("  a second process's first operation (head snapshot): {:.3} s", cold.elapsed().as_secs_f64());

    // Two keel processes per cycle, as an agent runs them: the shipped binary is the target; the
    // development build and a cycle of two `keel --version` processes (start-up alone) are context.
    crate::dist::run()?;
    let (shipped_binary, development_binary) = (crate::dist::binary(), keel_binary());
    // Each binary's cycles run in a workspace of their own (under target/, so keel would
    // otherwise find this repository as the workspace).
    let (shipped_root, development_root) = (dir.join("cli"), dir.join("cli-dev"));
    for root in [&shipped_root, &development_root] {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    }
    let cycles = cli_cycles(&[(&shipped_binary, &shipped_root), (&development_binary, &development_root)])?;
    let (shipped, development) = (cycles[0], cycles[1]);
    let start_up = version_cycles(&shipped_binary)?;
    println!(
        "  CLI acquire+release, shipped binary (cargo xtask dist): median {:.2} ms, p99 {:.2} ms",
        shipped.0.as_secs_f64() * 1e3,
        shipped.1.as_secs_f64() * 1e3
    );
    println!(
        "  CLI acquire+release, development build (target/release): median {:.2} ms, p99 {:.2} ms",
        development.0.as_secs_f64() * 1e3,
        development.1.as_secs_f64() * 1e3
    );
    println!("  two `keel --version` processes (start-up alone): median {:.2} ms", start_up.as_secs_f64() * 1e3);
    report("CLI cycle median (ms)", shipped.0.as_secs_f64() * 1e3, CLI_MEDIAN_MS_MAX, " ms");
    Ok(())
}

/// Median and p99 of [`CLI_CYCLES`] acquire+release cycles (two processes each) per binary and
/// workspace root. The binaries take turns, so a change of machine speed during the run hits all
/// alike.
fn cli_cycles(runs: &[(&Path, &Path)]) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let mut times = vec![Vec::with_capacity(CLI_CYCLES); runs.len()];
    for i in 0..CLI_CYCLES {
        let (lane, tree) = (format!("cli-{i}"), format!("cli/{i}/"));
        for ((binary, root), times) in runs.iter().zip(&mut times) {
            let started = Instant::now();
            let acquire = keel_command(binary, root)
                .args(["lease", "acquire", "--lane", &lane, "--tree", &tree, "--owner", "bench"])
                .status()
                .context("keel lease acquire")?;
            let release = keel_command(binary, root)
                .args(["lease", "release", "--lane", &lane, "--owner", "bench"])
                .status()
                .context("keel lease release")?;
            if !acquire.success() || !release.success() {
                bail!("CLI cycle {i} of {} failed: acquire {acquire}, release {release}", binary.display());
            }
            times.push(started.elapsed());
        }
    }
    Ok(times
        .into_iter()
        .map(|mut times| {
            times.sort();
            (times[times.len() / 2], times[times.len() * 99 / 100])
        })
        .collect())
}

/// Median time of two `keel --version` processes: what a CLI cycle costs before any work.
fn version_cycles(binary: &Path) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(CLI_CYCLES);
    for _ in 0..CLI_CYCLES {
        let started = Instant::now();
        for _ in 0..2 {
            let status =
                Command::new(binary).arg("--version").stdout(Stdio::null()).status().context("keel --version")?;
            if !status.success() {
                bail!("keel --version failed ({status})");
            }
        }
        times.push(started.elapsed());
    }
    Ok(median(&mut times))
}

/// keel on the workspace at `root`, with its default journal.
fn keel_command(binary: &Path, root: &Path) -> Command {
    let mut command = Command::new(binary);
    command.arg("--root").arg(root).stdout(Stdio::null());
    command
}
