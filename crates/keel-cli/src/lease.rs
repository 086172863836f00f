//! `keel lease ...`: taking and giving back leases through the workspace's lease service (its
//! journal, or etcd). `lease run`'s supervisor is in [`supervise`].

mod supervise;

use std::fmt::Write as _;
use std::time::Duration;

use clap::Subcommand;
use keel_journal::{AcquireOutcome, AcquireRequest, Beat, HolderPid, LeaseBackend, LeaseRef, Workspace};
use keel_kernel::Identity;
use keel_kernel::json::to_line;
use serde_json::json;

pub use supervise::{OnLost, RUN_GRANTED_ARG, run_granted};

use crate::backend::{Backend, Choice};
use crate::{Failure, Output, Status, StdoutError, non_blank, print};

#[derive(Debug, clap::Args)]
pub struct AcquireArgs {
    /// The lane: a name for the lease, held once at a time. Omitted: with --tree the lane is
    /// claim:OWNER:TREE (the owner and the region, as MCP's lease_acquire names it), without it
    /// the arbiter picks one from the auto-pick ladder.
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
            lane: match (&self.lane, self.tree.is_empty()) {
                (Some(lane), _) => lane.clone(),
                (None, true) => String::new(),
                (None, false) => AcquireRequest::claim_lane(&self.owner, &self.tree),
            },
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
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// Who holds the lease (the owner it was acquired for).
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// The lease's loop timestamp, to name one lease exactly [default: the owner's newest on
        /// the lane].
        #[arg(long, value_parser = non_blank)]
        loop_ts: Option<String>,
    },
    /// Record that the holder is alive (only the exact holder may).
    Heartbeat {
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// Who holds the lease (the owner it was acquired for).
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// The lease's loop timestamp, to name one lease exactly [default: the owner's newest on
        /// the lane].
        #[arg(long, value_parser = non_blank)]
        loop_ts: Option<String>,
        /// Skip the write when the last beat is younger than this many seconds (at most half of
        /// --grace-s, so a skipped beat never lets the lease fall out of its grace).
        #[arg(long)]
        coalesce_s: Option<u64>,
    },
    /// Transfer a live lease to a new owner (never creates one).
    Adopt {
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// The lease's loop timestamp, as `keel lease live` shows it.
        #[arg(long, value_parser = non_blank)]
        loop_ts: String,
        /// The new owner: who holds the lease from now on.
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// The process doing the work from now on (as `acquire --pid`); without it only the TTL
        /// frees the lease.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Record an intent to stop the work on a lane (kills nothing).
    Halt {
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// Who holds the lease (the owner it was acquired for).
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// Why the work should stop, recorded with the intent.
        #[arg(long, default_value = "stop")]
        reason: String,
    },
    /// Record an intent to start work on a lane (starts nothing).
    Spawn {
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// Who holds the lease (the owner it was acquired for).
        #[arg(long, value_parser = non_blank)]
        owner: String,
        /// The command that is to do the work, recorded with the intent.
        #[arg(long, default_value = "")]
        command: String,
    },
    /// Evict a live lease (an operator's tool; --only-dead refuses a lease that may be alive).
    // `--lane` (here and on every command that names a live lease) and scavenge's `--loop-ts`
    // name a recorded identity exactly as `keel lease live` shows it, so they are not checked for
    // blanks: an acquire with a tree and no lane holds lane "", as may a dos-kernel journal.
    Scavenge {
        /// The lease's lane, as `keel lease live` shows it.
        #[arg(long)]
        lane: String,
        /// The lease's loop timestamp, as `keel lease live` shows it.
        #[arg(long)]
        loop_ts: String,
        /// Why it was evicted, recorded with the eviction.
        #[arg(long, default_value = "scavenged by operator")]
        reason: String,
        /// Evict only a lease that is provably dead (refused otherwise, exit 1).
        #[arg(long)]
        only_dead: bool,
    },
    /// The live leases, with generations and whether each is provably dead.
    Live,
    /// Move this workspace's live leases from its journal to etcd (the endpoints and prefix of
    /// --etcd-endpoints and --etcd-prefix, or of the policy's `[backend]` table): each keeps its
    /// generation, later grants get higher ones, and the journal then refuses every grant,
    /// naming where the leases went. Then set `kind = "etcd"` in the policy on every host.
    Migrate {
        /// Where the leases go.
        #[arg(long, value_enum)]
        to: MigrateTo,
    },
    /// Raise etcd's generation counter to at least --to (it never goes down), after restoring
    /// etcd from a snapshot: name a value above every generation handed out before the restore,
    /// or stale holders' tokens could pass the gate again.
    RaiseGeneration {
        /// The least value of the counter after; later grants get higher generations.
        #[arg(long)]
        to: u64,
    },
    /// Run a command while holding a lease: heartbeat while it runs, release when it exits
    /// (also on Ctrl-C), exit with its code.
    ///
    /// A signal sent to keel alone (SIGTERM, SIGHUP, SIGINT, SIGQUIT) is passed on to the command,
    /// and keel releases when the command ends. SIGKILL cannot be passed on: the command then
    /// runs on unheld, and its lease ends by expiry.
    ///
    /// Exit status, as timeout(1) numbers its own: the command's, or 124 when it had no lease
    /// (refused, not granted within --wait-s, or lost while it ran, and stopped), 125 when keel
    /// itself failed, 126 when the command cannot be run, 127 when it was not found.
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

/// Where `keel lease migrate` moves a workspace's leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateTo {
    /// An etcd v3 cluster.
    Etcd,
}

/// `keel lease migrate --to etcd`: the workspace's journal into `place`.
pub fn migrate(
    workspace: &Workspace,
    target: &Choice,
    options: keel_journal::JournalOptions,
    output: &Output,
) -> Result<Status, Failure> {
    let Choice::Etcd(place) = target else {
        return Err(Failure::usage(anyhow::anyhow!("leases move from a journal to etcd, not to a journal")));
    };
    let journal = keel_journal::Journal::open(workspace.journal(), options.clone());
    let migrated = Backend::open(target, workspace.journal(), options)?.migrate_from(&journal)?;
    let object = json!({
        "outcome": "migrated",
        "leases": migrated.leases,
        "generation": migrated.generation,
        "closed_journal": migrated.closed_journal,
        "etcd": {"endpoints": place.endpoints, "prefix": place.prefix},
    });
    let sentence = format!(
        "moved {} live leases from {} to {place}; generations continue above {}; the journal now \
         refuses every grant, naming where the leases went; set `kind = \"etcd\"` in the [backend] \
         table of .keel/policy.toml on every host",
        migrated.leases,
        workspace.journal().display(),
        migrated.generation
    );
    print(output.json, &object, &sentence)?;
    Ok(Status::Ok)
}

pub fn run(
    command: &LeaseCommand,
    workspace: &Workspace,
    backend: &Backend,
    choice: &Choice,
    output: &Output,
) -> Result<Status, Failure> {
    if !matches!(command, LeaseCommand::Live) {
        backend.bind(workspace)?;
    }
    let json = output.json;
    match command {
        LeaseCommand::RaiseGeneration { to } => {
            let counter = backend.raise_generation(*to)?;
            let object = json!({"outcome": "raised", "generation": counter});
            print(json, &object, &format!("the generation counter is {counter}: later grants get higher ones"))?;
            Ok(Status::Ok)
        }
        LeaseCommand::Migrate { .. } => {
            Err(Failure::usage(anyhow::anyhow!("`keel lease migrate` moves leases between backends; main runs it")))
        }
        LeaseCommand::Acquire(args) => {
            let request = args.request(HolderPid::None);
            let outcome = acquire(backend, &request, args.wait_s)?;
            Ok(print_acquire(json, &request, &outcome, args.wait_s.is_some())?)
        }
        LeaseCommand::Release { lane, owner, loop_ts } => {
            let released =
                backend.release(&LeaseRef { lane, loop_ts: loop_ts.as_deref() }, owner).map_err(crate::failure)?;
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
            let beat = backend
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
            let adopted = backend
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
            backend.halt(lane, owner, reason).map_err(crate::failure)?;
            print(
                json,
                &json!({"outcome": "recorded", "op": "HALT", "lane": lane}),
                &format!("recorded HALT for lane {lane:?}"),
            )?;
            Ok(Status::Ok)
        }
        LeaseCommand::Spawn { lane, owner, command } => {
            backend.spawn(lane, owner, command).map_err(crate::failure)?;
            print(
                json,
                &json!({"outcome": "recorded", "op": "SPAWN", "lane": lane}),
                &format!("recorded SPAWN for lane {lane:?}"),
            )?;
            Ok(Status::Ok)
        }
        LeaseCommand::Scavenge { lane, loop_ts, reason, only_dead } => {
            let verdict = backend
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
        LeaseCommand::Live => live(backend, choice, workspace, json),
        LeaseCommand::Run { acquire: args, heartbeat_s, on_lost, command } => {
            supervise::run_holding(backend, args, *heartbeat_s, *on_lost, command, json)
        }
    }
}

fn acquire(backend: &Backend, request: &AcquireRequest, wait: Option<Duration>) -> Result<AcquireOutcome, Failure> {
    match wait {
        Some(wait) => backend.acquire_wait(request, wait).map_err(crate::failure),
        None => backend.acquire(request).map_err(crate::failure),
    }
}

/// `keel lease live`: the live leases, and where they are kept.
fn live(backend: &Backend, choice: &Choice, workspace: &Workspace, json: bool) -> Result<Status, Failure> {
    let view = backend.live_view().map_err(crate::failure)?;
    let live = &view.leases;
    let root = workspace.root().display().to_string();
    let (place, kept) = match choice {
        Choice::Journal => {
            let path = workspace.journal().display().to_string();
            (format!("journal {path}"), json!({"backend": "journal", "journal": path}))
        }
        Choice::Etcd(etcd) => (
            format!("leases in {etcd}"),
            json!({"backend": "etcd", "journal": null, "etcd": {"endpoints": etcd.endpoints, "prefix": etcd.prefix}}),
        ),
    };
    if json {
        let mut object = json!({"root": root, "leases": live, "grants_stopped": view.grants_stopped});
        for (key, value) in kept.as_object().into_iter().flatten() {
            object[key] = value.clone();
        }
        outln!("{}", to_line(&object))?;
    } else if live.is_empty() {
        outln!("no live leases (workspace {root}, {place})")?;
    } else {
        outln!("workspace {root}, {place}")?;
        outln!("{:<12} {:<10} {:<5} {:<9} {:<30} LOOP_TS", "HOLDER", "LANE", "GEN", "MODE", "TREE")?;
        for lease in live {
            let field = |k: &str| {
                lease.lease.get(k).map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            };
            let dead = match lease.verdict {
                keel_kernel::expiry::Verdict::Alive { .. } => String::new(),
                verdict if verdict.is_dead() => format!("  (provably dead: {verdict})"),
                verdict => format!("  ({verdict})"),
            };
            outln!(
                "{:<12} {:<10} {:<5} {:<9} {:<30} {}{dead}",
                field("holder"),
                lease.identity.lane,
                lease.generation.map_or_else(|| "-".into(), |g| g.to_string()),
                field("mode"),
                field("tree"),
                lease.identity.loop_ts
            )?;
        }
    }
    match (json, &view.grants_stopped, choice) {
        (false, Some(stopped), Choice::Journal) => outln!(
            "grants are stopped: line {} of the journal is damaged and unreviewed ({} more): {:?}; \
             see `keel journal verify`, then `keel journal review --accept --by NAME`",
            stopped.line_number,
            stopped.more,
            stopped.raw
        )?,
        (false, Some(stopped), Choice::Etcd(_)) => outln!(
            "grants are stopped: a key under the lease state in etcd is not one keel wrote ({} more): {:?}; \
             an operator must repair or delete it in etcd",
            stopped.more,
            stopped.raw
        )?,
        _ => {}
    }
    Ok(Status::Ok)
}

fn print_acquire(
    json: bool,
    request: &AcquireRequest,
    outcome: &AcquireOutcome,
    waited: bool,
) -> Result<Status, StdoutError> {
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
        // The arbiter's decision names no lane or region on a refusal: the request's own are what
        // the caller asked for and wants to see refused.
        AcquireOutcome::Refuse { decision, .. } => {
            let object = json!({
                "outcome": "refuse", "lane": request.lane, "lane_kind": request.kind, "tree": request.tree,
                "mode": request.mode, "loop_ts": request.loop_ts, "holder": request.owner, "generation": null,
                "reason": decision.reason, "reason_class": decision.reason_class, "blocking": decision.blocking,
            });
            print(json, &object, &format!("refused: {}", decision.reason))?;
            Ok(if waited { Status::Busy } else { Status::Refused })
        }
    }
}
