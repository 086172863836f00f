//! `keel demo`: a fleet in a temporary workspace, walked through with real processes. Agents
//! (each a `keel` process) contend for regions; one is killed mid-lease and its lease reclaimed
//! once its TTL has passed; the journal is compacted and shown at the end. Everything it creates
//! it removes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel_journal::{Journal, JournalOptions, LeaseBackend as _};

use crate::{Failure, Status};

/// The killed agent's TTL: short, so the demo can show the reclaim.
const DEMO_TTL_MINUTES: &str = "0.05";
/// The grace the demo's processes use (the default is 120 s): a lease beaten within it is never
/// reclaimed. Longer than the TTL, so the reclaim shown is the TTL's.
const DEMO_GRACE_S: &str = "4";
/// The most of the demo's journal shown: it holds a few dozen records, far below this.
const DEMO_JOURNAL_BYTES_MAX: u64 = 1024 * 1024;

struct Demo {
    keel: PathBuf,
    dir: PathBuf,
    journal: PathBuf,
}

impl Demo {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.keel);
        // The demo's own journal, whatever backend `$KEEL_BACKEND` names for real work.
        command.args(["--backend", "journal", "--journal"]).arg(&self.journal);
        command.args(["--grace-s", DEMO_GRACE_S]).current_dir(&self.dir);
        command
    }

    /// Runs `keel ARGS`, echoing the command line (quoted for a shell, so it can be pasted) and
    /// its output.
    fn run(&self, who: &str, args: &[&str]) -> anyhow::Result<Output> {
        outln!("\n{who}$ keel {}", shown(args))?;
        let output = self.command().args(args).output().with_context(|| format!("running keel {}", args.join(" ")))?;
        for line in
            String::from_utf8_lossy(&output.stdout).lines().chain(String::from_utf8_lossy(&output.stderr).lines())
        {
            outln!("    {line}")?;
        }
        outln!("    (exit {})", output.status.code().unwrap_or(-1))?;
        Ok(output)
    }

    fn spawn(&self, who: &str, args: &[&str]) -> anyhow::Result<Child> {
        outln!("\n{who}$ keel {} &", shown(args))?;
        let mut command = self.command();
        // Its own process group, so the demo can kill the agent and its command together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting an agent")
    }

    fn live(&self) -> anyhow::Result<Vec<keel_journal::LiveLease>> {
        Ok(Journal::open(&self.journal, JournalOptions::default()).live()?)
    }

    fn wait_for_lease(&self, holder: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.live()?.iter().any(|l| l.lease.get("holder").and_then(|h| h.as_str()) == Some(holder)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{holder} never got its lease")
    }
}

pub fn run() -> Result<Status, Failure> {
    let dir = std::env::temp_dir().join(format!("keel-demo-{}", std::process::id()));
    keel_fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display())).map_err(Failure::io)?;
    let keel = std::env::current_exe().context("finding the keel binary").map_err(Failure::io)?;
    let demo = Demo { keel, journal: dir.join(keel_journal::workspace::JOURNAL_DEFAULT), dir: dir.clone() };
    let result = walk_through(&demo);
    let _ = keel_fs::remove_dir_all(&dir);
    result.map_err(Failure::io)
}

fn walk_through(demo: &Demo) -> anyhow::Result<Status> {
    outln!("A workspace shared by agents: {}", demo.dir.display())?;
    outln!("Every decision lands in the journal {}", demo.journal.display())?;

    outln!("\n1. agent-a takes src/api/ for a long job (TTL {DEMO_TTL_MINUTES} min, no heartbeats).")?;
    let mut agent_a = demo.spawn(
        "agent-a",
        &[
            "lease",
            "run",
            "--lane",
            "api",
            "--tree",
            "src/api/",
            "--owner",
            "agent-a",
            "--ttl-minutes",
            DEMO_TTL_MINUTES,
            "--heartbeat-s",
            "3600",
            "--",
            "sleep",
            "30",
        ],
    )?;
    demo.wait_for_lease("agent-a")?;

    outln!("\n2. agent-b wants a file inside that region: refused, and told who holds it.")?;
    demo.run(
        "agent-b",
        &["lease", "acquire", "--lane", "handlers", "--tree", "src/api/handlers.rs", "--owner", "agent-b"],
    )?;

    outln!("\n3. agent-c works elsewhere at the same time: granted, runs, releases.")?;
    demo.run(
        "agent-c",
        &[
            "lease",
            "run",
            "--lane",
            "docs",
            "--tree",
            "docs/",
            "README.md",
            "--owner",
            "agent-c",
            "--mode",
            "shared",
            "--",
            "sh",
            "-c",
            "echo agent-c editing docs",
        ],
    )?;

    outln!("\n4. agent-a crashes (SIGKILL) while holding src/api/. Its lease stays: nothing is assumed.")?;
    // The agent leads its own process group: kill exactly that group (agent-a and its command).
    let group = i32::try_from(agent_a.id()).ok().and_then(rustix::process::Pid::from_raw);
    match group {
        Some(group) => rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
            .context("killing agent-a's process group")?,
        None => agent_a.kill().context("killing agent-a")?,
    }
    let _ = agent_a.wait();
    demo.run("operator", &["lease", "live"])?;

    outln!("\n5. agent-b waits for the region. agent-a's lease is reclaimed once provably dead: past its TTL")?;
    outln!("   and the grace ({DEMO_GRACE_S} s here) since its last sign of life.")?;
    let waited = Instant::now();
    demo.run(
        "agent-b",
        &[
            "lease",
            "acquire",
            "--lane",
            "handlers",
            "--tree",
            "src/api/handlers.rs",
            "--owner",
            "agent-b",
            "--wait-s",
            "30",
        ],
    )?;
    outln!("    (waited {:.1} s)", waited.elapsed().as_secs_f64())?;
    demo.run("agent-b", &["lease", "release", "--lane", "handlers", "--owner", "agent-b"])?;

    outln!("\n6. The journal is compacted in place (crash-safe), and checked.")?;
    demo.run("operator", &["journal", "stats"])?;
    demo.run("operator", &["journal", "compact"])?;
    demo.run("operator", &["journal", "verify"])?;

    outln!("\n7. The journal at the end (one JSON record per line):")?;
    show_journal(&demo.journal)?;
    Ok(Status::Ok)
}

fn show_journal(path: &Path) -> anyhow::Result<()> {
    let text = keel_fs::read_to_string_bounded(path, DEMO_JOURNAL_BYTES_MAX)
        .with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines() {
        let shown: String = line.chars().take(160).collect();
        let more = if line.chars().count() > 160 { " ..." } else { "" };
        outln!("    {shown}{more}")?;
    }
    Ok(())
}

/// `args` as a shell would need them typed: each word quoted where it must be.
fn shown(args: &[&str]) -> String {
    // Only a NUL makes a word unquotable, and the demo's words hold none.
    shlex::try_join(args.iter().copied()).unwrap_or_else(|_| args.join(" "))
}
