//! The lease journal under injected storage faults (keel-fs's I/O seam, redb style): power cut at
//! every operation of a script of acquires, releases, heartbeats and compactions, and a failing
//! operation at every position. Whatever survives is the old or the new journal, never torn, and
//! holds every acknowledged record.

use std::path::Path;

use keel_fs::seam::Survives;
use keel_fs::{CrashSim, FailAfter, Storage};
use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend, LeaseRef};
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
                            .release(&LeaseRef { lane: name, loop_ts: Some(&ts) }, &format!("agent-{name}"))
                            .map(|released| released.map(|id| Ack::Released(id.loop_ts)))
                    }
                    None => Ok(None),
                }
            }
            "heartbeat" => journal.heartbeat(&LeaseRef::lane(name), &format!("agent-{name}"), None).map(|_| None),
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
    journal.release(&LeaseRef::lane("x"), "agent-x").expect("seed release");
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

/// Garbage an adversary appends to a journal: numbers out of range, wrong types, damaged
/// CHECKPOINTs, future and unreadable stamps, a line over the readers' limit.
fn garbage(pick: u8, live: &[(String, String)]) -> Vec<u8> {
    let (loop_ts, lane) = live.first().cloned().unwrap_or_else(|| ("t".into(), "l".into()));
    let line = match pick % 12 {
        0 => r#"{"op": "NOTE", "seq": 1e30}"#.to_owned(),
        1 => r#"{"op": "NOTE", "seq": 18446744073709551615}"#.to_owned(),
        2 => r#"{"op": "NOTE", "seq_watermark": "x"}"#.to_owned(),
        3 => r#"{"op": "CHECKPOINT", "leases": "garbage", "generations": 7}"#.to_owned(),
        4 => r#"{"op": "CHECKPOINT"}"#.to_owned(),
        5 => r#"{"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": 18446744073709551615}]}"#.to_owned(),
        6 => format!(r#"{{"op": "HEARTBEAT", "lane": "{lane}", "loop_ts": "{loop_ts}", "heartbeat_at": "2099-01-01T00:00:00Z"}}"#),
        7 => format!(r#"{{"op": "HEARTBEAT", "lane": "{lane}", "loop_ts": "{loop_ts}", "heartbeat_at": "yesterday"}}"#),
        8 => "{\"op\": \"ACQUIRE\", \"lane\": 5, \"loop_ts\": [1], \"lease\": 3}".to_owned(),
        9 => "not json at all".to_owned(),
        10 => format!(r#"{{"op": "RELEASE", "lane": "{lane}", "loop_ts": {{}}}}"#),
        _ => {
            let mut huge = b"{\"op\": \"NOTE\", \"pad\": \"".to_vec();
            huge.resize(keel_fs::LINE_BYTES_MAX_DEFAULT + 10, b'x');
            huge.extend_from_slice(b"\"}\n");
            return huge;
        }
    };
    format!("{line}\n").into_bytes()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..proptest::prelude::ProptestConfig::default() })]

    /// Whatever garbage is appended to a journal holding live leases: no panic; every holder can
    /// release; grants stop only until a review, then resume; no two colliding regions are ever
    /// granted; and no fencing token is issued twice.
    #[test]
    fn no_garbage_wedges_the_journal_or_grants_a_colliding_region(
        picks in proptest::collection::vec(0u8..24, 1..4),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lane-journal.jsonl");
        let journal = Journal::open(&path, options());
        let mut live = Vec::new();
        let mut tokens = std::collections::BTreeSet::new();
        for name in ["a", "b", "c"] {
            let AcquireOutcome::Acquire(grant) = journal.acquire(&request(name)).expect("acquire") else {
                panic!("disjoint requests are granted")
            };
            tokens.insert(grant.generation);
            live.push((grant.identity.loop_ts, name.to_owned()));
        }
        for &pick in &picks {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
            // The huge line is costly to write: one in twelve of the picks above 11.
            let pick = if pick > 11 { pick % 11 } else { pick };
            file.write_all(&garbage(pick, &live)).expect("append garbage");
        }
        let fresh = Journal::open(&path, options());
        // A colliding request is refused (or stopped by damage), never granted.
        let colliding = AcquireRequest { lane: "x".into(), tree: vec!["a/x".into()], owner: "agent-x".into(), ..AcquireRequest::default() };
        let early = fresh.acquire(&colliding);
        proptest::prop_assert!(!matches!(early, Ok(AcquireOutcome::Acquire(_))), "granted a/x next to a live a/: {early:?}");
        // Every holder can release, damage or not.
        let (loop_ts, lane) = live.remove(0);
        let released = fresh.release(&LeaseRef { lane: &lane, loop_ts: Some(&loop_ts) }, &format!("agent-{lane}"));
        proptest::prop_assert!(matches!(released, Ok(Some(_))), "the holder could not release: {released:?}");
        fresh.accept_review("fuzz").expect("review");
        // Grants resume, with a token never seen before; the others still exclude.
        let granted = fresh.acquire(&request("d")).expect("acquire after review");
        let AcquireOutcome::Acquire(grant) = granted else { panic!("grants resume after a review: {granted:?}") };
        proptest::prop_assert!(tokens.insert(grant.generation), "token {} issued twice", grant.generation);
        let b_again = AcquireRequest { lane: "y".into(), tree: vec!["b/".into()], owner: "agent-y".into(), ..AcquireRequest::default() };
        let refused = matches!(fresh.acquire(&b_again).expect("acquire"), AcquireOutcome::Refuse { .. });
        proptest::prop_assert!(refused, "b/ granted next to the live b/");
        let state = replay_bytes(&std::fs::read(&path).expect("journal")).state;
        let leases: Vec<_> = state.live_with_identity().collect();
        let (collisions, _) = keel_kernel::audit::collisions(&leases, 10);
        proptest::prop_assert!(collisions.is_empty(), "{collisions:?}");
        fresh.compact().expect("compact");
        let resumed = matches!(fresh.acquire(&request("e")).expect("acquire"), AcquireOutcome::Acquire(_));
        proptest::prop_assert!(resumed, "grants resume after compaction");
    }
}
