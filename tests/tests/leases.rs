//! Real processes racing on one journal, and being killed: the lease guarantees end to end.
//!
//! - Several `keel-agent` processes loop acquire → hold → release over overlapping trees; an
//!   occupancy log they append to while holding proves no two colliding regions were ever held at
//!   the same moment, and every grant they were told about is in the journal.
//! - Agents are killed with SIGKILL at random moments (in acquire, release or compaction): the
//!   journal still replays, every acknowledged grant not released is live, no two live leases
//!   collide, and the writer lock is free.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_fs::OsLock;
use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend, LeaseRef, replay_path};
use keel_kernel::arbiter::Mode;
use keel_kernel::tree::Tree;

const AGENT: &str = env!("CARGO_BIN_EXE_keel-agent");

/// Overlapping regions: every agent cycles through all of them.
const TREES: &str = "src/;src/api/;src/api/handlers.rs;src/db/,docs/;docs/guide.md;lock://deploy;src/api/*.rs;tests/";

fn spawn_agent(journal: &Path, name: &str, seconds: f64, hold_ms: u64, occupancy: &Path, extra: &[&str]) -> Child {
    Command::new(AGENT)
        .arg(journal)
        .arg(name)
        .arg(seconds.to_string())
        .arg(hold_ms.to_string())
        .arg(occupancy)
        .arg(TREES)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel-agent starts")
}

#[derive(Debug, Default)]
struct Acknowledged {
    /// `loop_ts` → lane of every grant an agent was told about.
    granted: BTreeMap<String, String>,
    /// `loop_ts` of every release an agent was told about.
    released: BTreeSet<String>,
    /// `loop_ts` of every release an agent started (it may have landed without being acknowledged).
    releasing: BTreeSet<String>,
}

fn acknowledged(outputs: &[String]) -> Acknowledged {
    let mut ack = Acknowledged::default();
    for output in outputs {
        for line in output.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["GRANT", lane, loop_ts, _generation] => {
                    ack.granted.insert((*loop_ts).to_owned(), (*lane).to_owned());
                }
                ["RELEASED", _lane, loop_ts] => {
                    ack.released.insert((*loop_ts).to_owned());
                }
                ["RELEASING", _lane, loop_ts] => {
                    ack.releasing.insert((*loop_ts).to_owned());
                }
                _ => {}
            }
        }
    }
    ack
}

/// Replays the occupancy log: at every ENTER, nothing held by another agent may collide.
fn check_occupancy(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut held: BTreeMap<String, Tree> = BTreeMap::new();
    let mut enters = 0;
    for (number, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        let [event, _agent, loop_ts, tree] = words.as_slice() else { panic!("occupancy line {number}: {line:?}") };
        let entries: Vec<&str> = tree.split(',').collect();
        let tree = Tree::new(&entries);
        match *event {
            "ENTER" => {
                for (other, other_tree) in &held {
                    assert!(
                        !tree.intersects(other_tree),
                        "occupancy line {}: {loop_ts} entered {entries:?} while {other} held a colliding region",
                        number + 1
                    );
                }
                held.insert((*loop_ts).to_owned(), tree);
                enters += 1;
            }
            "EXIT" => {
                held.remove(*loop_ts);
            }
            other => panic!("occupancy line {number}: unknown event {other}"),
        }
    }
    enters
}

fn journal_acquires(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("journal");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["op"] == "ACQUIRE")
        .filter_map(|r| r["loop_ts"].as_str().map(str::to_owned))
        .collect()
}

fn assert_no_live_conflict(journal: &Path) {
    let replayed = replay_path(journal).expect("the journal replays").replayed;
    let live: Vec<_> = replayed.state.live().cloned().collect();
    for (i, a) in live.iter().enumerate() {
        for b in &live[i + 1..] {
            let both_shared = Mode::of_lease(a) == Mode::Shared && Mode::of_lease(b) == Mode::Shared;
            let collide = Tree::from_json(a.get("tree")).intersects(&Tree::from_json(b.get("tree")));
            assert!(both_shared || !collide, "two live leases collide:\n{a:?}\n{b:?}");
        }
    }
}

#[test]
fn eight_processes_never_hold_colliding_regions_and_every_grant_is_journaled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("lane-journal.jsonl");
    let occupancy = dir.path().join("occupancy.log");
    let agents: Vec<Child> =
        (0..8).map(|i| spawn_agent(&journal, &format!("agent{i}"), 3.0, 2, &occupancy, &[])).collect();
    let outputs: Vec<String> = agents
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("agent runs");
            assert!(output.status.success(), "agent failed: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).expect("UTF-8 output")
        })
        .collect();
    let ack = acknowledged(&outputs);
    let enters = check_occupancy(&occupancy);
    assert_eq!(enters, ack.granted.len(), "every grant entered the occupancy log once");
    assert!(ack.granted.len() >= 50, "the race did real work: only {} grants", ack.granted.len());
    let in_journal = journal_acquires(&journal);
    for loop_ts in ack.granted.keys() {
        assert!(in_journal.contains(loop_ts), "acknowledged grant {loop_ts} is not in the journal");
    }
    assert_eq!(ack.released.len(), ack.granted.len(), "every agent released what it held");
    let replayed = replay_path(&journal).expect("replays").replayed;
    assert_eq!(replayed.state.live_count(), 0, "nothing is left live");
}

/// A small PRNG so a failing round can be replayed from the seed printed with it.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_grant_and_leaves_no_conflict() {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("lane-journal.jsonl");
    let mut total_grants = 0;
    for round in 0..12 {
        // One occupancy log per round: a killed agent's hold ends with it (its lease is then
        // reclaimable), so holds never carry over into the next round's check.
        let occupancy = dir.path().join(format!("occupancy-{round}.log"));
        let mut agents: Vec<Child> = (0..4)
            .map(|i| {
                let extra: &[&str] = if i == 0 { &["--compact-every", "3"] } else { &[] };
                spawn_agent(&journal, &format!("r{round}a{i}"), 30.0, 1, &occupancy, extra)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + next(&mut rng) % 400));
        for agent in &mut agents {
            agent.kill().expect("SIGKILL");
        }
        let outputs: Vec<String> = agents
            .into_iter()
            .map(|child| String::from_utf8_lossy(&child.wait_with_output().expect("reaped").stdout).into_owned())
            .collect();
        let ack = acknowledged(&outputs);
        total_grants += ack.granted.len();
        let replayed = replay_path(&journal).expect("the journal replays after a kill").replayed;
        let live: BTreeSet<String> = replayed.state.live_with_identity().map(|(id, _)| id.loop_ts.clone()).collect();
        for loop_ts in ack.granted.keys() {
            let is_live = live.contains(loop_ts);
            if ack.released.contains(loop_ts) {
                assert!(!is_live, "seed {seed} round {round}: acknowledged release of {loop_ts}, yet it is live");
            } else if !ack.releasing.contains(loop_ts) {
                assert!(is_live, "seed {seed} round {round}: acknowledged grant {loop_ts} is not live");
            }
        }
        assert_no_live_conflict(&journal);
        check_occupancy(&occupancy);
        let lock = OsLock::try_acquire(&OsLock::path_for(&journal));
        assert!(lock.is_ok(), "seed {seed} round {round}: the writer lock is free after the kill: {lock:?}");
        drop(lock);
        // The fleet is not wedged: a fresh writer can still be told yes or no, not "damaged".
        let probe =
            Journal::open(&journal, JournalOptions { compact_threshold_bytes: None, ..JournalOptions::default() });
        let request = AcquireRequest {
            lane: format!("probe{round}"),
            tree: vec![format!("probe/{round}/")],
            owner: "probe".into(),
            ..AcquireRequest::default()
        };
        match probe.acquire(&request) {
            Ok(AcquireOutcome::Acquire(grant)) => {
                probe
                    .release(&LeaseRef { lane: &grant.identity.lane, loop_ts: Some(&grant.identity.loop_ts) }, "probe")
                    .expect("release");
            }
            other => panic!("seed {seed} round {round}: a disjoint probe must be granted after a kill: {other:?}"),
        }
    }
    assert!(total_grants > 20, "seed {seed}: the agents did real work ({total_grants} grants)");
}
