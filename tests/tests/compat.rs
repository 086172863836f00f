//! Journals keel writes read the same to a reader written straight from the format spec (the
//! reference fold, which reproduces every dos-kernel fixture): same live set, same generations.
//! keel reading dos-kernel's journals is the kernel's conformance test.

use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, Journal, JournalOptions, LeaseBackend, LeaseRef};
use keel_kernel::Identity;
use keel_tests::reference;

fn request(lane: &str, tree: &str, owner: &str) -> AcquireRequest {
    AcquireRequest { lane: lane.into(), tree: vec![tree.into()], owner: owner.into(), ..AcquireRequest::default() }
}

#[test]
fn every_record_keel_writes_replays_the_same_in_the_reference_reader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    let journal = Journal::open(&path, JournalOptions { compact_threshold_bytes: None, ..JournalOptions::default() });
    let mut loops = Vec::new();
    for (i, tree) in ["src/api/", "src/db/", "docs/", "tests/", "lock://deploy"].iter().enumerate() {
        match journal.acquire(&request(&format!("lane{i}"), tree, &format!("agent{i}"))).expect("acquire") {
            AcquireOutcome::Acquire(grant) => loops.push(grant.identity),
            AcquireOutcome::Refuse { decision, .. } => panic!("refused: {}", decision.reason),
        }
    }
    let refused = journal.acquire(&request("late", "src/api/x.rs", "agent9")).expect("acquire");
    assert!(matches!(refused, AcquireOutcome::Refuse { .. }));
    journal.heartbeat(&LeaseRef::lane("lane0"), "agent0", None).expect("beat");
    journal.adopt(&Identity::new("lane1", loops[1].loop_ts.as_str()), "agent7", HolderPid::None).expect("adopt");
    journal.release(&LeaseRef::lane("lane2"), "agent2").expect("release");
    journal.halt("lane3", "agent3", "stop").expect("halt");
    journal.spawn("lane3", "agent3", "make test").expect("spawn");
    journal.scavenge(&Identity::new("lane4", loops[4].loop_ts.as_str()), "operator", false).expect("scavenge");
    let check = |stage: &str| {
        let bytes = std::fs::read(&path).expect("journal");
        let expected = reference::replay(&bytes);
        let live = journal.live().expect("live");
        let ours: Vec<_> = live.iter().map(|l| serde_json::Value::Object(l.lease.clone())).collect();
        let theirs: Vec<_> = expected.live.iter().map(|(_, body)| serde_json::Value::Object(body.clone())).collect();
        assert_eq!(ours, theirs, "{stage}: live sets differ");
        for lease in &live {
            let key = (lease.identity.loop_ts.clone(), lease.identity.lane.clone());
            assert_eq!(lease.generation, expected.generations.get(&key).copied(), "{stage}: generation of {key:?}");
        }
        assert_eq!(live.len(), 3, "{stage}: lanes 0, 1 and 3 are live");
    };
    check("appended");
    journal.compact().expect("compact");
    check("compacted");
}
