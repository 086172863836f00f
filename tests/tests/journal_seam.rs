//! The lease journal under injected storage faults (keel-fs's I/O seam, redb style): power cut at
//! every operation of a script of acquires, releases, heartbeats and compactions, and a failing
//! operation at every position. Whatever survives is the old or the new journal, never torn, and
//! holds every acknowledged record.

use std::path::Path;

use keel_fs::seam::Survives;
use keel_fs::{CrashSim, FailAfter, Storage};
use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions};
use keel_kernel::replay_bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ack {
    Granted(String),
    Released(String),
    /// The release failed: its outcome is unknown (a write whose fdatasync failed may or may not
    /// be on disk), so the lease may be live or not.
    ReleaseInDoubt(String),
    Compacted,
}

fn options() -> JournalOptions {
    JournalOptions { compact_threshold_bytes: None, head_every_bytes: 512, ..JournalOptions::default() }
}

fn request(name: &str) -> AcquireRequest {
    AcquireRequest {
        lane: name.into(),
        tree: vec![format!("{name}/")],
        owner: format!("agent-{name}"),
        ..AcquireRequest::default()
    }
}

/// The script; with `keep_going`, a failed step is skipped and the rest still run (the journal
/// must recover in-process after an I/O error), else the script stops at the first error.
fn script<S: Storage + Clone>(journal: &Journal<S>, keep_going: bool) -> Vec<Ack> {
    let mut acks = Vec::new();
    let mut granted: Vec<(String, String)> = Vec::new();
    let steps: [&str; 8] =
        ["acquire a", "acquire b", "release a", "compact", "acquire c", "heartbeat b", "compact", "acquire d"];
    for step in steps {
        let (verb, name) = step.split_once(' ').unwrap_or((step, ""));
        let mut in_doubt = None;
        let result: Result<Option<Ack>, keel_journal::JournalError> = match verb {
            "acquire" => journal.acquire(&request(name)).map(|outcome| match outcome {
                AcquireOutcome::Acquire(grant) => {
                    granted.push((name.to_owned(), grant.identity.loop_ts.clone()));
                    Some(Ack::Granted(grant.identity.loop_ts))
                }
                AcquireOutcome::Refuse { decision, .. } => panic!("disjoint request refused: {}", decision.reason),
            }),
            "release" => {
                let loop_ts = granted.iter().find(|(n, _)| n == name).map(|(_, ts)| ts.clone());
                match loop_ts {
                    Some(ts) => {
                        in_doubt = Some(Ack::ReleaseInDoubt(ts.clone()));
                        journal
                            .release(name, &format!("agent-{name}"), Some(&ts))
                            .map(|released| released.map(|id| Ack::Released(id.loop_ts)))
                    }
                    None => Ok(None),
                }
            }
            "heartbeat" => journal.heartbeat(name, &format!("agent-{name}"), None, None).map(|_| None),
            "compact" => journal.compact().map(|_| Some(Ack::Compacted)),
            _ => unreachable!("script verbs"),
        };
        if let Ok(ack) = result {
            acks.extend(ack);
        } else {
            acks.extend(in_doubt);
            if !keep_going {
                break;
            }
        }
    }
    acks
}

/// What a reader finds must be a whole journal that reflects every acknowledged record.
fn check_image(bytes: &[u8], acks: &[Ack], context: &str) {
    let replayed = replay_bytes(bytes);
    assert!(replayed.torn_tail.is_none(), "{context}: torn tail {:?}", replayed.torn_tail);
    assert!(replayed.state.corrupt().is_empty(), "{context}: corrupt lines {:?}", replayed.state.corrupt());
    let live: Vec<String> = replayed.state.live_with_identity().map(|(id, _)| id.loop_ts.clone()).collect();
    for ack in acks {
        match ack {
            Ack::Granted(ts) => {
                let released =
                    acks.contains(&Ack::Released(ts.clone())) || acks.contains(&Ack::ReleaseInDoubt(ts.clone()));
                assert!(
                    released || live.contains(ts),
                    "{context}: acknowledged grant {ts} lost; live {live:?}; acks {acks:?}"
                );
            }
            Ack::Released(ts) => assert!(!live.contains(ts), "{context}: acknowledged release {ts} undone"),
            Ack::ReleaseInDoubt(_) | Ack::Compacted => {}
        }
    }
}

fn seeded(sim: &CrashSim, path: &Path) {
    // A journal with history to start from, written through the real service on the simulator.
    let journal = Journal::with_storage(sim, path, options());
    for name in ["x", "y"] {
        assert!(matches!(journal.acquire(&request(name)).expect("seed acquire"), AcquireOutcome::Acquire(_)));
    }
    journal.release("x", "agent-x", None).expect("seed release");
}

#[test]
fn power_cut_at_every_operation_leaves_old_or_new_with_every_acknowledged_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    // A dry run counts the script's operations.
    let dry = CrashSim::new();
    seeded(&dry, &path);
    let before = dry.ops();
    let acks = script(&Journal::with_storage(&dry, &path, options()), false);
    assert_eq!(acks.len(), 7, "the script runs whole without faults: {acks:?}");
    assert!(!acks.iter().any(|a| matches!(a, Ack::ReleaseInDoubt(_))), "nothing is in doubt without faults");
    let total = dry.ops() - before;
    assert!(total > 20, "the script does real I/O ({total} operations)");
    for cut in 0..=total {
        let sim = CrashSim::new();
        seeded(&sim, &path);
        sim.cut_power_at(sim.ops() + cut);
        let acks = script(&Journal::with_storage(&sim, &path, options()), false);
        for names in Survives::ALL {
            for data in Survives::ALL {
                let image = sim.crash(names, data);
                let context = format!("cut at {cut}/{total}, names {names:?}, data {data:?}");
                let bytes = image.read(&path).unwrap_or_else(|| panic!("{context}: the journal vanished"));
                check_image(&bytes, &acks, &context);
                // And the fleet goes on: a fresh writer on the rebooted image is granted.
                let recovered = Journal::with_storage(&image, &path, options());
                let outcome = recovered.acquire(&request("z")).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert!(matches!(outcome, AcquireOutcome::Acquire(_)), "{context}: {outcome:?}");
            }
        }
    }
}

#[test]
fn an_io_error_at_any_operation_is_returned_and_the_journal_recovers_in_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    let dry = CrashSim::new();
    seeded(&dry, &path);
    let before = dry.ops();
    let _ = script(&Journal::with_storage(&dry, &path, options()), true);
    let total = dry.ops() - before;
    let mut tripped = 0;
    for fail_at in 0..total {
        let sim = CrashSim::new();
        seeded(&sim, &path);
        let failing = FailAfter::once(&sim, fail_at);
        let journal = Journal::with_storage(&failing, &path, options());
        let acks = script(&journal, true);
        tripped += u64::from(failing.tripped());
        let context = format!("failure at operation {fail_at}/{total}");
        let bytes = sim.read(&path).unwrap_or_else(|| panic!("{context}: the journal vanished"));
        check_image(&bytes, &acks, &context);
        // The same service object keeps working after the error (the failed handle was dropped).
        let outcome = journal.acquire(&request("z")).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert!(matches!(outcome, AcquireOutcome::Acquire(_)), "{context}: {outcome:?}");
    }
    assert_eq!(tripped, total, "every position really failed an operation");
}

/// What a fresh process sees: the live set, with identities, bodies and generations.
type Live = Vec<(keel_kernel::Identity, serde_json::Value, Option<u64>)>;

fn seen(path: &Path) -> Live {
    let journal = Journal::open(path, options());
    let live = journal.live().expect("live");
    live.into_iter().map(|l| (l.identity, serde_json::Value::Object(l.lease), l.generation)).collect()
}

/// The truth: a full replay of the journal's bytes.
fn replayed(path: &Path) -> Live {
    let state = replay_bytes(&std::fs::read(path).expect("journal")).state;
    state
        .live_with_identity()
        .map(|(identity, lease)| {
            (identity.clone(), serde_json::Value::Object(lease.clone()), state.generation(identity))
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..proptest::prelude::ProptestConfig::default() })]

    /// The head snapshot is derived data: whatever happens to it (a byte flipped anywhere, cut
    /// short, grown, or swapped for an older snapshot of the same journal), a process that
    /// trusts it sees exactly the live set a full replay gives.
    #[test]
    fn no_damage_to_the_head_snapshot_changes_the_live_set(
        seed in 0u64..1_000_000,
        records in 20usize..200,
        damage in 0u8..4,
        at in proptest::num::usize::ANY,
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lane-journal.jsonl");
        let head = dir.path().join("lane-journal.jsonl.head");
        let generated = keel_tests::generate::GenOptions {
            faults: keel_tests::generate::Faults::all(20),
            ..keel_tests::generate::GenOptions::default()
        };
        std::fs::write(&path, keel_tests::generate::journal(seed, records, &generated)).expect("journal");
        let journal = Journal::open(&path, options());
        // Appends that need no grant (damage in the journal may stop grants) write heads.
        journal.halt("h", "agent-h", "one").expect("halt");
        let older = std::fs::read(&head).expect("a head snapshot");
        journal.halt("h", "agent-h", "two").expect("halt");
        journal.spawn("h", "agent-h", "three").expect("spawn");
        let mut bytes = std::fs::read(&head).expect("a head snapshot");
        match damage {
            0 => {
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
            }
            1 => bytes.truncate(at % bytes.len()),
            2 => bytes.extend_from_slice(b"{\"live\": []}"),
            _ => bytes = older,
        }
        std::fs::write(&head, &bytes).expect("damaged head");
        proptest::prop_assert_eq!(seen(&path), replayed(&path));
    }
}
