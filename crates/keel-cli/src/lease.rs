//! `keel lease ...`: taking and giving back leases through the durable journal.

use std::fmt::Write as _;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use keel_journal::{
    AcquireOutcome, AcquireRequest, Beat, HolderPid, Journal, JournalOptions, LeaseBackend, LeaseRef, Workspace,
};
use keel_kernel::Identity;
use keel_kernel::json::to_line;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use crate::{Failure, Output, Status, StdoutError, non_blank, print};

#[derive(Debug, clap::Args)]
pub struct AcquireArgs {
    /// The lane. Omitted: with --tree the lease holds lane "", without it the arbiter picks one
    /// from the auto-pick ladder.
    #[arg(long, value_parser = non_blank)]
    lane: Option<String>,
    /// The region: paths, globs and lock://NAME entries inside the workspace (repeatable).
    #[arg(long = "tree", num_args = 1.., value_parser = tree_entry)]
    tree: Vec<String>,
    /// Who holds the lease.
    #[arg(long, value_parser = non_blank)]
    owner: String,
    /// shared or exclusive.
    #[arg(long, default_value = "exclusive", value_parser = ["shared", "exclusive"])]
    mode: String,
    /// keyword, cluster, global, or an exclusive lane's name.
    #[arg(long, default_value = "keyword")]
    kind: String,
    /// Minutes without a heartbeat after which the lease may be reclaimed.
    #[arg(long)]
    ttl_minutes: Option<f64>,
    /// The process doing the work (say, the agent's own pid): once it has exited, the lease may
    /// be reclaimed after the grace instead of after its TTL. Without it only the TTL frees a
    /// lease taken by `acquire` (whose own process exits at once); `run` defaults to itself.
    #[arg(long)]
    pid: Option<u32>,
    /// The lease's loop timestamp (its key with the lane); generated when omitted.
    #[arg(long, value_parser = non_blank)]
    loop_ts: Option<String>,
    /// A run id to record with the lease.
    #[arg(long)]
    run_id: Option<String>,
    /// Acquire whatever else is live (never past a live exclusive lane).
    #[arg(long)]
    force: bool,
    /// Retry until granted or this many seconds pass (exit 3 on timeout).
    #[arg(long, value_parser = wait_seconds)]
    wait_s: Option<Duration>,
}

/// `--tree`: an entry inside the workspace and spelled as its region, by the kernel's rules (the
/// lease service applies them too; here they become a usage error that names the entry).
fn tree_entry(text: &str) -> Result<String, String> {
    keel_kernel::tree::confined(text).map_err(|why| format!("a tree entry must be inside the workspace ({why})"))?;
    match keel_kernel::tree::misspelling(text) {
        Some(why) => Err(format!("a tree entry must be spelled as the region it names ({why})")),
        None => Ok(text.to_owned()),
    }
}

/// `--wait-s`: a non-negative number of seconds that fits a `Duration` (not NaN, not infinite).
fn wait_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| "takes a non-negative number of seconds (at most ~1.8e19)".to_owned())
}

impl AcquireArgs {
    /// The request, tied to `--pid` if given, else to `holder`.
    fn request(&self, holder: HolderPid) -> AcquireRequest {
        AcquireRequest {
            lane: self.lane.clone().unwrap_or_default(),
            kind: self.kind.clone(),
            tree: self.tree.clone(),
            mode: self.mode.clone(),
            owner: self.owner.clone(),
            ttl_minutes: self.ttl_minutes,
            loop_ts: self.loop_ts.clone(),
            run_id: self.run_id.clone(),
            force: self.force,
            holder_pid: self.pid.map_or(holder, HolderPid::Pid),
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum LeaseCommand {
    /// Take a lease on a region, or be told who holds it (exit 1).
    Acquire(AcquireArgs),
    /// Give back the newest lease on a lane held by an owner (or the exact --loop-ts).
    Release {
        #[arg(long)]
        lane: String,
        #[arg(long, value_parser = non_blank)]
        owner: String,
        #[arg(long, value_parser = non_blank)]
        loop_ts: Option<String>,
    },
    /// Record that the holder is alive (only the exact holder may).
    Heartbeat {
        #[arg(long)]
        lane: String,
        #[arg(long, value_parser = non_blank)]
        owner: String,
        #[arg(long, value_parser = non_blank)]
        loop_ts: Option<String>,
        /// Skip the write when the last beat is younger than this many seconds (at most half of
        /// --grace-s, so a skipped beat never lets the lease fall out of its grace).
        #[arg(long)]
        coalesce_s: Option<u64>,
    },
    /// Transfer a live lease to a new owner (never creates one).
    Adopt {
        #[arg(long)]
        lane: String,
        #[arg(long, value_parser = non_blank)]
        loop_ts: String,
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// The process doing the work from now on (as `acquire --pid`); without it only the TTL
        /// frees the lease.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Record an intent to stop the work on a lane (kills nothing).
    Halt {
        #[arg(long)]
        lane: String,
        #[arg(long, value_parser = non_blank)]
        owner: String,
        #[arg(long, default_value = "stop")]
        reason: String,
    },
    /// Record an intent to start work on a lane (starts nothing).
    Spawn {
        #[arg(long)]
        lane: String,
        #[arg(long, value_parser = non_blank)]
        owner: String,
        #[arg(long, default_value = "")]
        command: String,
    },
    /// Evict a live lease (an operator's tool; --only-dead refuses a lease that may be alive).
    // `--lane` (here and on every command that names a live lease) and scavenge's `--loop-ts`
    // name a recorded identity exactly as `keel lease live` shows it, so they are not checked for
    // blanks: an acquire with a tree and no lane holds lane "", as may a dos-kernel journal.
    Scavenge {
        #[arg(long)]
        lane: String,
        #[arg(long)]
        loop_ts: String,
        #[arg(long, default_value = "scavenged by operator")]
        reason: String,
        #[arg(long)]
        only_dead: bool,
    },
    /// The live leases, with generations and whether each is provably dead.
    Live,
    /// Run a command while holding a lease: heartbeat while it runs, release when it exits
    /// (also on Ctrl-C), exit with its code.
    ///
    /// A signal sent to keel alone (SIGTERM, SIGHUP, SIGINT, SIGQUIT) is passed on to the command,
    /// and keel releases when the command ends. SIGKILL cannot be passed on: the command then
    /// runs on unheld, and its lease ends by expiry.
    Run {
        #[command(flatten)]
        acquire: AcquireArgs,
        /// Seconds between heartbeats (at most a quarter of the lease's TTL and of its grace).
        #[arg(long, default_value_t = 30)]
        heartbeat_s: u64,
        /// What to do when a heartbeat finds the lease gone (reclaimed or scavenged): stop the
        /// command (SIGTERM, then SIGKILL 5 s later) and exit 124, or warn and let it run.
        #[arg(long, value_enum, default_value_t = OnLost::Stop)]
        on_lost: OnLost,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(
    command: &LeaseCommand,
    workspace: &Workspace,
    options: JournalOptions,
    output: &Output,
) -> Result<Status, Failure> {
    if !matches!(command, LeaseCommand::Live) {
        workspace.bind().map_err(crate::failure)?;
    }
    let journal = Journal::open(workspace.journal(), options);
    let json = output.json;
    match command {
        LeaseCommand::Acquire(args) => {
            let outcome = acquire(&journal, args, HolderPid::None)?;
            Ok(print_acquire(json, &outcome, args.wait_s.is_some())?)
        }
        LeaseCommand::Release { lane, owner, loop_ts } => {
            let released =
                journal.release(&LeaseRef { lane, loop_ts: loop_ts.as_deref() }, owner).map_err(crate::failure)?;
            Ok(match released {
                Some(id) => {
                    let object = json!({"outcome": "released", "lane": id.lane, "loop_ts": id.loop_ts});
                    print(json, &object, &format!("released lane {:?} (loop_ts {})", id.lane, id.loop_ts))?;
                    Status::Ok
                }
                None => {
                    let object = json!({"outcome": "no_lease", "lane": lane, "owner": owner});
                    print(json, &object, &format!("no live lease on lane {lane:?} held by {owner:?}"))?;
                    Status::Refused
                }
            })
        }
        LeaseCommand::Heartbeat { lane, owner, loop_ts, coalesce_s } => {
            let beat = journal
                .heartbeat(&LeaseRef { lane, loop_ts: loop_ts.as_deref() }, owner, *coalesce_s)
                .map_err(crate::failure)?;
            Ok(match beat {
                Some(beat) => {
                    let sentence = match &beat {
                        Beat::Beaten { identity, heartbeat_at } => {
                            format!("beat lane {:?} at {heartbeat_at}", identity.lane)
                        }
                        Beat::Coalesced { identity, heartbeat_at } => {
                            format!("lane {:?} beat recently ({heartbeat_at}); nothing written", identity.lane)
                        }
                    };
                    print(json, &serde_json::to_value(&beat).expect("beats serialise"), &sentence)?;
                    Status::Ok
                }
                None => {
                    let object = json!({"outcome": "no_lease", "lane": lane, "owner": owner});
                    print(json, &object, &format!("no live lease on lane {lane:?} held by {owner:?}"))?;
                    Status::Refused
                }
            })
        }
        LeaseCommand::Adopt { lane, loop_ts, owner, pid } => {
            let holder = pid.map_or(HolderPid::None, HolderPid::Pid);
            let adopted = journal
                .adopt(&Identity { lane: lane.clone(), loop_ts: loop_ts.clone() }, owner, holder)
                .map_err(crate::failure)?;
            let generation = adopted.as_ref().map(|a| a.generation);
            let object = json!({"outcome": if adopted.is_some() { "adopted" } else { "no_lease" }, "lane": lane, "loop_ts": loop_ts, "holder": owner, "generation": generation});
            let sentence = match generation {
                Some(generation) => {
                    format!("{owner} now holds lane {lane:?} (loop_ts {loop_ts}) with generation {generation}")
                }
                None => format!("no live lease (loop_ts {loop_ts}, lane {lane:?})"),
            };
            print(json, &object, &sentence)?;
            Ok(if adopted.is_some() { Status::Ok } else { Status::Refused })
        }
        LeaseCommand::Halt { lane, owner, reason } => {
            journal.halt(lane, owner, reason).map_err(crate::failure)?;
            print(
                json,
                &json!({"outcome": "recorded", "op": "HALT", "lane": lane}),
                &format!("recorded HALT for lane {lane:?}"),
            )?;
            Ok(Status::Ok)
        }
        LeaseCommand::Spawn { lane, owner, command } => {
            journal.spawn(lane, owner, command).map_err(crate::failure)?;
            print(
                json,
                &json!({"outcome": "recorded", "op": "SPAWN", "lane": lane}),
                &format!("recorded SPAWN for lane {lane:?}"),
            )?;
            Ok(Status::Ok)
        }
        LeaseCommand::Scavenge { lane, loop_ts, reason, only_dead } => {
            let verdict = journal
                .scavenge(&Identity { lane: lane.clone(), loop_ts: loop_ts.clone() }, reason, *only_dead)
                .map_err(crate::failure)?;
            let ok = verdict.is_some();
            let object = json!({"outcome": if ok { "scavenged" } else { "not_scavenged" }, "lane": lane, "loop_ts": loop_ts, "verdict": verdict});
            let sentence = if ok {
                format!("scavenged lane {lane:?} (loop_ts {loop_ts})")
            } else {
                format!(
                    "nothing scavenged: no live lease (loop_ts {loop_ts}, lane {lane:?}){}",
                    if *only_dead { " that is provably dead" } else { "" }
                )
            };
            print(json, &object, &sentence)?;
            Ok(if ok { Status::Ok } else { Status::Refused })
        }
        LeaseCommand::Live => {
            let view = journal.live_view().map_err(crate::failure)?;
            let live = &view.leases;
            let (root, path) = (workspace.root().display().to_string(), workspace.journal().display().to_string());
            if json {
                let object =
                    json!({"root": root, "journal": path, "leases": live, "grants_stopped": view.grants_stopped});
                outln!("{}", to_line(&object))?;
            } else if live.is_empty() {
                outln!("no live leases (workspace {root}, journal {path})")?;
            } else {
                outln!("workspace {root}, journal {path}")?;
                for lease in live {
                    let field = |k: &str| {
                        lease
                            .lease
                            .get(k)
                            .map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    };
                    let dead = match lease.verdict {
                        keel_kernel::expiry::Verdict::Alive { .. } => String::new(),
                        verdict if verdict.is_dead() => format!("  (provably dead: {verdict})"),
                        verdict => format!("  ({verdict})"),
                    };
                    outln!(
                        "{:<12} {:<10} gen {:<4} {:<9} {:<30} loop_ts {}{dead}",
                        field("holder"),
                        lease.identity.lane,
                        lease.generation.map_or_else(|| "-".into(), |g| g.to_string()),
                        field("mode"),
                        field("tree"),
                        lease.identity.loop_ts
                    )?;
                }
            }
            if let (false, Some(stopped)) = (json, &view.grants_stopped) {
                outln!(
                    "grants are stopped: line {} of the journal is damaged and unreviewed ({} more): {:?}; \
                     see `keel journal verify`, then `keel journal review --accept --by NAME`",
                    stopped.line_number,
                    stopped.more,
                    stopped.raw
                )?;
            }
            Ok(Status::Ok)
        }
        LeaseCommand::Run { acquire: args, heartbeat_s, on_lost, command } => {
            run_holding(&journal, args, *heartbeat_s, *on_lost, command, json)
        }
    }
}

fn acquire(journal: &Journal, args: &AcquireArgs, holder: HolderPid) -> Result<AcquireOutcome, Failure> {
    let request = args.request(holder);
    match args.wait_s {
        Some(wait) => journal.acquire_wait(&request, wait).map_err(crate::failure),
        None => journal.acquire(&request).map_err(crate::failure),
    }
}

fn print_acquire(json: bool, outcome: &AcquireOutcome, waited: bool) -> Result<Status, StdoutError> {
    match outcome {
        AcquireOutcome::Acquire(grant) => {
            let d = &grant.decision;
            let object = json!({
                "outcome": "acquire", "lane": d.lane, "lane_kind": d.lane_kind, "tree": d.tree, "mode": d.mode,
                "loop_ts": grant.identity.loop_ts, "holder": grant.lease.get("holder"), "generation": grant.generation,
                "reason": d.reason, "reclaimed": grant.reclaimed.iter().map(|(id, v)| json!({"lane": id.lane, "loop_ts": id.loop_ts, "verdict": v})).collect::<Vec<_>>(),
            });
            let mut sentence = format!(
                "acquired lane {:?} ({} {}) over {:?}: loop_ts {}, generation {}",
                d.lane,
                d.lane_kind,
                d.mode.as_str(),
                d.tree,
                grant.identity.loop_ts,
                grant.generation
            );
            for (id, verdict) in &grant.reclaimed {
                let _ =
                    write!(sentence, "\n  reclaimed dead lease lane {:?} (loop_ts {}): {verdict}", id.lane, id.loop_ts);
            }
            print(json, &object, &sentence)?;
            Ok(Status::Ok)
        }
        AcquireOutcome::Refuse { decision, .. } => {
            let object = json!({
                "outcome": "refuse", "lane": decision.lane, "lane_kind": decision.lane_kind, "tree": decision.tree,
                "mode": decision.mode, "loop_ts": null, "holder": null, "generation": null,
                "reason": decision.reason, "reason_class": decision.reason_class, "blocking": decision.blocking,
            });
            print(json, &object, &format!("refused: {}", decision.reason))?;
            Ok(if waited { Status::Busy } else { Status::Refused })
        }
    }
}

/// Signals that would end keel while it holds a lease for a child. keel catches them from before
/// the lease is taken until it is released: it must outlive the child to release after it.
const ENDING_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// How a `lease run` child ended, or why it never ran.
enum Run {
    Exited(std::process::ExitStatus),
    /// A signal came while the lease was being taken: the work was not started.
    Cancelled(i32),
    /// Waiting for the command failed.
    Failed(anyhow::Error),
    /// The lease was lost and the command stopped.
    Lost,
}

/// What `lease run` does once its lease is found gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLost {
    /// Stop the command: the region is someone else's now.
    Stop,
    /// Say so and let the command run on, unheld.
    Warn,
}

/// `lease run`'s exit status when it stopped its command because the lease was lost.
pub const LOST_LEASE_STATUS: i32 = 124;
/// How long a command stopped for a lost lease has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The first argument of a `keel` process that `lease run` starts to become its command once the
/// lease is granted (see [`run_granted`]).
pub const RUN_GRANTED_ARG: &str = "--keel-run-when-granted";
/// The environment variable that tells such a process which file descriptor the go-ahead comes on.
const GATE_FD_ENV: &str = "KEEL_RUN_GATE_FD";
/// The byte that says "granted: run the command".
const GO: u8 = b'g';

/// How `lease run` ties its command to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tie {
    /// The command leads a process group of its own, and the lease lives while any process of
    /// that group runs: a grandchild still editing keeps the region held.
    Group,
    /// On a terminal the command stays in keel's (foreground) process group, so it can read the
    /// terminal and get its signals; the lease names the command's process alone.
    Process,
}

/// `keel lease run`: hold a lease for the life of a child process.
///
/// The command's process is started first and held before it runs anything, so that the lease
/// can name it (pid and start time, and its process group): then the lease is never reclaimable
/// while the command can still run, whatever happens to keel. The held process is keel itself,
/// which waits for one byte on a pipe and then replaces itself with the command (same pid, same
/// start time); it dies with keel (`PR_SET_PDEATHSIG`), so a keel killed with SIGKILL takes its
/// command down with it, and one killed before the grant leaves nothing running.
fn run_holding(
    journal: &Journal,
    args: &AcquireArgs,
    heartbeat_s: u64,
    on_lost: OnLost,
    command: &[String],
    json: bool,
) -> Result<Status, Failure> {
    use std::io::{IsTerminal as _, Write as _};
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    // Installed before the grant, so no signal can end keel between the grant and the handler,
    // leaving a lease held with no work and no holder to release it.
    let mut signals = SignalsInfo::<WithOrigin>::new(ENDING_SIGNALS)
        .map_err(|e| Failure::io(anyhow::Error::from(e).context("installing signal handlers")))?;
    let tie = if std::io::stdin().is_terminal() { Tie::Process } else { Tie::Group };
    let (gate_read, gate_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::io(anyhow::Error::from(std::io::Error::from(e)).context("creating a pipe")))?;
    let gate_fd = gate_read.as_raw_fd();
    let keel = std::env::current_exe().map_err(|e| Failure::io(anyhow::Error::from(e).context("finding keel")))?;
    let mut held = Process::new(keel);
    held.arg(RUN_GRANTED_ARG).args(command).env(GATE_FD_ENV, gate_fd.to_string());
    if tie == Tie::Group {
        held.process_group(0);
    }
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, and makes only
    // async-signal-safe system calls (prctl, getppid, fcntl); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        held.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // keel died before the line above: nothing would ever kill this process.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("keel exited"));
            }
            // The pipe's read end stays open across `exec` in the child only.
            let gate = std::os::fd::BorrowedFd::borrow_raw(gate_fd);
            rustix::io::fcntl_setfd(gate, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = held.spawn().map_err(|e| Failure::io(anyhow::Error::from(e).context("starting the command")))?;
    drop(gate_read);
    let holder = match tie {
        Tie::Group => HolderPid::Group(child.id()),
        Tie::Process => HolderPid::Pid(child.id()),
    };
    let outcome = match acquire(journal, args, holder) {
        Ok(outcome) => outcome,
        Err(failure) => {
            drop(gate_write);
            let _ = child.wait();
            return Err(failure);
        }
    };
    let AcquireOutcome::Acquire(grant) = &outcome else {
        drop(gate_write);
        let _ = child.wait();
        return Ok(print_acquire(json, &outcome, args.wait_s.is_some())?);
    };
    if !json {
        eprintln!(
            "keel: holding lane {:?} (loop_ts {}) while running {:?}",
            grant.identity.lane, grant.identity.loop_ts, command
        );
    }
    let run = if let Some(origin) = signals.pending().next() {
        eprintln!("keel: signal {} while taking the lease; {} was not started", origin.signal, command[0]);
        drop(gate_write);
        let _ = child.wait();
        journal.release(&LeaseRef::exact(&grant.identity), &args.owner).map_err(crate::failure)?;
        Run::Cancelled(origin.signal)
    } else {
        let mut gate = std::io::PipeWriter::from(gate_write);
        let _ = gate.write_all(&[GO]);
        drop(gate);
        let forward = Forward::to(&child, tie);
        let closer = signals.handle();
        let events = Stopping { grant, on_lost, stopped: AtomicBool::new(false), forward: &forward };
        let expiry = journal.options().expiry;
        let held = keel_journal::holding::hold(journal, grant, &args.owner, &expiry, heartbeat_s, &events, || {
            std::thread::scope(|scope| {
                scope.spawn(|| forward.all(&mut signals));
                let exit = child.wait();
                closer.close();
                exit
            })
        });
        if held.released.map_err(crate::failure)?.is_none() {
            eprintln!("keel: the lease was no longer live when the command ended (reclaimed or scavenged)");
        }
        match held.value.with_context(|| format!("waiting for {}", command[0])) {
            Ok(_) if events.stopped.load(Ordering::SeqCst) => Run::Lost,
            Ok(exit) => Run::Exited(exit),
            Err(error) => Run::Failed(error),
        }
    };
    match run {
        Run::Failed(error) => Err(Failure::io(error)),
        Run::Lost => std::process::exit(LOST_LEASE_STATUS),
        Run::Cancelled(signal) => std::process::exit(128 + signal),
        Run::Exited(exit) => {
            use std::os::unix::process::ExitStatusExt;
            let code = exit.code().or_else(|| exit.signal().map(|s| 128 + s)).unwrap_or(1);
            std::process::exit(code);
        }
    }
}

/// The process `lease run` started, once more keel: waits for the go-ahead on the inherited pipe,
/// then becomes the command. No go-ahead (the lease was refused, or keel died): nothing runs.
/// Exits 127 when the command is not found and 126 when it cannot be run, as shells do.
pub fn run_granted(command: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::io::Read as _;
    use std::os::fd::FromRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let Some(fd) = std::env::var(GATE_FD_ENV).ok().and_then(|fd| fd.parse::<i32>().ok()) else {
        eprintln!("keel: {RUN_GRANTED_ARG} is started by `keel lease run` only");
        return std::process::ExitCode::from(2);
    };
    // SAFETY: `lease run` passed this descriptor, the read end of its pipe, open and owned by no
    // one else in this process.
    #[allow(unsafe_code)]
    let mut gate = unsafe { std::io::PipeReader::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    if !matches!(gate.read(&mut byte), Ok(1)) || byte[0] != GO {
        return std::process::ExitCode::from(125);
    }
    drop(gate);
    let Some((program, arguments)) = command.split_first() else { return std::process::ExitCode::from(2) };
    let error = Process::new(program).args(arguments).env_remove(GATE_FD_ENV).exec();
    eprintln!("keel: starting {}: {error}", program.to_string_lossy());
    std::process::ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

/// Passes signals sent to keel on to its child.
struct Forward {
    pid: rustix::process::Pid,
    /// A pidfd names the child itself: once it is reaped, a late signal fails instead of reaching
    /// whatever process reuses the pid. Absent on kernels before 5.3, where the pid is used.
    pidfd: Option<std::os::fd::OwnedFd>,
    tie: Tie,
}

impl Forward {
    fn to(child: &std::process::Child, tie: Tie) -> Self {
        let pid = rustix::process::Pid::from_child(child);
        Self { pid, pidfd: rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok(), tie }
    }

    /// Sends `signal` to the command: to its whole group when it has one of its own.
    fn send(&self, signal: rustix::process::Signal) {
        let _ = match (self.tie, &self.pidfd) {
            (Tie::Group, _) => rustix::process::kill_process_group(self.pid, signal),
            (Tie::Process, Some(pidfd)) => rustix::process::pidfd_send_signal(pidfd, signal),
            (Tie::Process, None) => rustix::process::kill_process(self.pid, signal),
        };
    }

    /// Runs until the iterator's handle is closed.
    fn all(&self, signals: &mut SignalsInfo<WithOrigin>) {
        for origin in signals.forever() {
            let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) else { continue };
            // The command's own group gets every signal keel gets, the terminal's included: it is
            // in no group the terminal signals (it is reaped only after this loop is closed, so
            // its group id names no other group here). In keel's group on a terminal, the
            // terminal signals the whole foreground group (Ctrl-C, a hangup), so the command has
            // that one already; one sent to keel alone (`kill`, a supervisor stopping it) is
            // passed on: stopping keel stops the work its lease covers.
            if self.tie == Tie::Process && matches!(origin.cause, Cause::Kernel) {
                continue;
            }
            self.send(signal);
        }
    }
}

/// What `lease run` does when its lease's heartbeat fails or finds the lease gone.
struct Stopping<'a> {
    grant: &'a keel_journal::Grant,
    on_lost: OnLost,
    /// Whether the command was stopped because the lease was lost.
    stopped: AtomicBool,
    forward: &'a Forward,
}

impl keel_journal::holding::HoldEvents for Stopping<'_> {
    fn beat_failed(&self, error: &keel_journal::JournalError) {
        eprintln!("keel: heartbeat failed: {error}");
    }

    /// The lease is gone: say so at once, and stop the command unless told to let it run.
    fn lost(&self, done: &AtomicBool) {
        let identity = &self.grant.identity;
        eprintln!(
            "keel: lease on lane {:?} (loop_ts {}) lost: it was reclaimed or scavenged",
            identity.lane, identity.loop_ts
        );
        if self.on_lost == OnLost::Warn {
            eprintln!("keel: the command runs on, unheld (--on-lost warn)");
            return;
        }
        eprintln!("keel: stopping the command (SIGTERM, SIGKILL in {} s)", STOP_GRACE.as_secs());
        self.stopped.store(true, Ordering::SeqCst);
        self.forward.send(rustix::process::Signal::TERM);
        let stop_by = std::time::Instant::now() + STOP_GRACE;
        while !done.load(Ordering::SeqCst) {
            if std::time::Instant::now() >= stop_by {
                self.forward.send(rustix::process::Signal::KILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
