//! `cargo xtask bench hook`: `keel hook pre-tool-use` (the shipped binary) against dos-kernel's Go
//! hook (`dos-hook pretool`, from `pip install dos-kernel==0.30.0` in a venv made here) and a bare
//! process start (`/bin/true`), each spawned the same way with a Claude Code Edit event on stdin,
//! in turns, on workspaces holding 100 live leases and 100 or 100,000 records of history.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{bench_dir, median, report};

/// The dos-kernel release measured against.
const DOS_KERNEL: &str = "dos-kernel==0.30.0";
/// Runs per figure (interleaved).
const RUNS: usize = 200;
/// Live leases in each workspace.
pub(crate) const LIVE: usize = 100;

/// A workspace with `LIVE` leases held by another agent (`agent-b`, on `held/<i>/`) and
/// `history` records before them, in both keel's and dos-kernel's journal.
pub(crate) fn workspace(dir: &Path, history: usize) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    for state in [".keel", ".dos"] {
        std::fs::create_dir_all(dir.join(state)).with_context(|| format!("creating {}", dir.display()))?;
    }
    let now = keel_kernel::expiry::format_utc(i64::try_from(keel_fs::lock::unix_now_s()).unwrap_or(0));
    let host = keel_fs::lock::host_name();
    let pid = std::process::id();
    let mut journal = String::new();
    let mut seq = 0;
    let mut line = |text: String| {
        seq += 1;
        journal.push_str(&text.replace("SEQ", &seq.to_string()));
        journal.push('\n');
    };
    let lease = |lane: &str, tree: &str| {
        format!(
            "{{\"lane\": \"{lane}\", \"lease\": {{\"acquired_at\": \"{now}\", \"grace_s\": 120, \"holder\": \"agent-b\", \"host_id\": \"{host}\", \"lane\": \"{lane}\", \"lane_kind\": \"keyword\", \"loop_ts\": \"t-{lane}\", \"mode\": \"exclusive\", \"pid\": {pid}, \"tree\": [\"{tree}\"], \"ttl_minutes\": 120}}, \"loop_ts\": \"t-{lane}\", \"op\": \"ACQUIRE\", \"seq\": SEQ}}"
        )
    };
    for i in 0..history.saturating_sub(LIVE) / 2 {
        line(lease(&format!("old{i}"), &format!("old/{i}/")));
        line(format!("{{\"lane\": \"old{i}\", \"loop_ts\": \"t-old{i}\", \"op\": \"RELEASE\", \"seq\": SEQ}}"));
    }
    for i in 0..LIVE {
        line(lease(&format!("held{i}"), &format!("held/{i}/")));
    }
    std::fs::write(dir.join(".keel/lane-journal.jsonl"), &journal).context("writing the keel journal")?;
    std::fs::write(dir.join(".dos/lane-journal.jsonl"), &journal).context("writing the dos journal")?;
    Ok(dir.to_owned())
}

/// A Claude Code Edit event on `file` of the workspace at `root`.
fn edit_event(root: &Path, file: &str) -> Vec<u8> {
    serde_json::json!({
        "session_id": "agent-a", "transcript_path": "/tmp/t.jsonl", "cwd": root.display().to_string(),
        "hook_event_name": "PreToolUse", "tool_name": "Edit",
        "tool_input": {"file_path": root.join(file).display().to_string(), "old_string": "a", "new_string": "b"},
        "tool_use_id": "toolu_01",
    })
    .to_string()
    .into_bytes()
}

/// One hook process: spawned, fed the event, waited for. Returns its wall time and stdout.
fn spawn(command: &mut Command, event: &[u8]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    // A process that exits without reading (`/bin/true`) closes the pipe first: not an error.
    let _ = child.stdin.take().context("stdin")?.write_all(event);
    let output = child.wait_with_output()?;
    Ok((started.elapsed(), String::from_utf8_lossy(&output.stdout).into_owned()))
}

fn dos_hook() -> anyhow::Result<PathBuf> {
    let venv = bench_dir()?.join("dos-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv failed ({status})");
        }
    }
    let find = "import dos, os; print(os.path.join(os.path.dirname(dos.__file__), '_bin', 'dos-hook'))";
    let located = Command::new(&python).args(["-c", find]).output()?;
    if !located.status.success() {
        let status =
            Command::new(venv.join("bin/pip")).args(["install", "-q", DOS_KERNEL]).status().context("pip install")?;
        if !status.success() {
            bail!("pip install {DOS_KERNEL} failed ({status})");
        }
        return dos_hook();
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&located.stdout).trim()))
}

pub fn run() -> anyhow::Result<()> {
    crate::dist::run()?;
    let keel = crate::dist::binary();
    let dos = dos_hook()?;
    let dir = bench_dir()?.join("hook");
    let small = workspace(&dir.join("small"), LIVE)?;
    let big = workspace(&dir.join("big"), 100_000)?;
    // The automatic leases taken below grow the live set: they get a workspace of their own.
    let leasing = workspace(&dir.join("leasing"), LIVE)?;
    let keel_hook = |root: &Path| {
        let mut command = Command::new(&keel);
        command.args(["hook", "pre-tool-use"]).current_dir(root).env("KEEL_OWNER", "agent-a");
        command
    };
    let dos_pretool = |root: &Path| {
        let mut command = Command::new(&dos);
        command.args(["pretool", "--workspace"]).arg(root).current_dir(root).env("DOS_LOOP", "1");
        command
    };
    // The decisions must be what they claim before they are timed; the first keel run also
    // takes the automatic lease of `own.rs` (so later runs are plain allows) and writes a head.
    for root in [&small, &big] {
        let (_, denied) = spawn(&mut keel_hook(root), &edit_event(root, "held/7/x.rs"))?;
        let (_, dos_denied) = spawn(&mut dos_pretool(root), &edit_event(root, "held/7/x.rs"))?;
        let (_, allowed) = spawn(&mut keel_hook(root), &edit_event(root, "own.rs"))?;
        let (_, dos_allowed) = spawn(&mut dos_pretool(root), &edit_event(root, "own.rs"))?;
        if !denied.contains("\"deny\"")
            || !dos_denied.contains("\"deny\"")
            || allowed.contains("deny")
            || dos_allowed.contains("deny")
        {
            bail!(
                "the hooks did not decide as expected: keel {denied:?} / {allowed:?}, dos {dos_denied:?} / {dos_allowed:?}"
            );
        }
    }
    let mut times: [Vec<Duration>; 7] = Default::default();
    for i in 0..RUNS {
        let fresh = format!("new/{i}.rs");
        let runs: [(&mut Vec<Duration>, Command, Vec<u8>); 7] = {
            let [t0, t1, t2, t3, t4, t5, t6] = &mut times;
            [
                (t0, Command::new("/bin/true"), edit_event(&small, "own.rs")),
                (t1, keel_hook(&small), edit_event(&small, "own.rs")),
                (t2, keel_hook(&small), edit_event(&small, "held/7/x.rs")),
                (t3, dos_pretool(&small), edit_event(&small, "own.rs")),
                (t4, dos_pretool(&small), edit_event(&small, "held/7/x.rs")),
                (t5, keel_hook(&big), edit_event(&big, "own.rs")),
                (t6, keel_hook(&leasing), edit_event(&leasing, &fresh)),
            ]
        };
        for (times, mut command, event) in runs {
            times.push(spawn(&mut command, &event)?.0);
        }
    }
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    let [bare, allow, deny, dos_allow, dos_deny, allow_big, leased] = times.map(|mut t| median(&mut t));
    println!("hook: {RUNS} runs each, in turns; {LIVE} live leases; medians");
    println!("  /bin/true (a bare process start, event on stdin): {:.2} ms", ms(bare));
    println!(
        "  keel allow {:.2} ms, deny {:.2} ms; dos-hook allow {:.2} ms, deny {:.2} ms",
        ms(allow),
        ms(deny),
        ms(dos_allow),
        ms(dos_deny)
    );
    println!("  keel allow with 100,000 records of history: {:.2} ms", ms(allow_big));
    println!("  keel allow that takes an automatic lease: {:.2} ms", ms(leased));
    report("keel allow / dos-hook allow", ms(allow) / ms(dos_allow), 0.5, "x");
    report("keel deny / dos-hook deny", ms(deny) / ms(dos_deny), 0.5, "x");
    report("keel allow / bare process start", ms(allow) / ms(bare), 1.5, "x");
    report("keel deny / bare process start", ms(deny) / ms(bare), 1.5, "x");
    report("keel allow, 100,000 / 100 records of history", ms(allow_big) / ms(allow), 1.2, "x");
    // The target is one fdatasync more than an allow: the bound is measured now, on this disk.
    let sync = crate::bench::fdatasync_bound(&dir)?;
    println!("  append+fdatasync of a record-sized line (the bound): {:.2} ms", ms(sync));
    report("keel automatic lease - allow, over one fdatasync", (ms(leased) - ms(allow)) / ms(sync), 1.0, "x");
    Ok(())
}
