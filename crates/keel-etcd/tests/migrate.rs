//! A journal workspace moved to etcd keeps its leases and their tokens, its generations keep
//! rising, and the journal it left refuses every grant, naming where the leases went.

use keel_etcd::{EtcdBackend, EtcdOptions, MOVED_LANE};
use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, Journal, JournalOptions, LeaseBackend, LeaseRef};

use crate::cluster;

fn request(lane: &str, tree: &str, owner: &str) -> AcquireRequest {
    AcquireRequest {
        lane: lane.into(),
        tree: vec![tree.into()],
        owner: owner.into(),
        ttl_minutes: Some(1.0),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    }
}

fn grant(backend: &impl LeaseBackend, lane: &str, tree: &str, owner: &str) -> keel_journal::Grant {
    match backend.acquire(&request(lane, tree, owner)).expect("acquire") {
        AcquireOutcome::Acquire(grant) => grant,
        AcquireOutcome::Refuse { decision, .. } => panic!("refused: {}", decision.reason),
    }
}

#[test]
fn a_migrated_journal_keeps_its_leases_and_tokens_and_refuses_every_grant_naming_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("lane-journal.jsonl"), JournalOptions::default());
    let api = grant(&journal, "api", "src/api/", "agent-a");
    let docs = grant(&journal, "docs", "docs/", "agent-b");
    let gone = grant(&journal, "tmp", "tmp/", "agent-c");
    journal.release(&LeaseRef::exact(&gone.identity), "agent-c").expect("release");

    let prefix = format!("/keel-test/migrate-{}", std::process::id());
    let etcd = EtcdBackend::new(EtcdOptions::new(cluster::shared().endpoints(), &prefix), JournalOptions::default())
        .expect("backend");
    let migrated = etcd.migrate_from(&journal).expect("migrate");
    assert_eq!(migrated.leases, 2, "the two live leases moved: {migrated:?}");
    assert!(migrated.closed_journal);
    assert!(migrated.generation >= gone.generation, "the counter kept every generation handed out");

    // The leases are on etcd with their own generations: the tokens their holders hold still fence.
    let live = etcd.live().expect("live");
    let found = |id: &keel_kernel::Identity| live.iter().find(|l| l.identity == *id).and_then(|l| l.generation);
    assert_eq!(found(&api.identity), Some(api.generation));
    assert_eq!(found(&docs.identity), Some(docs.generation));
    // A colliding request on etcd is refused by the moved lease; a new grant's generation is above all.
    let collide = etcd.acquire(&request("handlers", "src/api/h.rs", "agent-d")).expect("acquire");
    assert!(matches!(collide, AcquireOutcome::Refuse { .. }), "{collide:?}");
    let fresh = grant(&etcd, "web", "web/", "agent-d");
    assert!(fresh.generation > gone.generation, "{} after {}", fresh.generation, gone.generation);
    // Released on etcd by its holder, as anywhere.
    assert!(etcd.release(&LeaseRef::exact(&api.identity), "agent-a").expect("release").is_some());

    // The journal grants nothing any more, and says where the leases are.
    let stray = journal.acquire(&request("late", "elsewhere/", "agent-e")).expect("acquire");
    let AcquireOutcome::Refuse { decision, .. } = stray else { panic!("a stray journal-mode grant: {stray:?}") };
    assert!(decision.reason.contains(MOVED_LANE), "{}", decision.reason);
    assert!(decision.reason.contains(&cluster::shared().endpoints()[0]), "names the endpoints: {}", decision.reason);

    // Again: the journal stays closed and the copy is refused (etcd's prefix is not empty).
    let again = etcd.migrate_from(&journal).expect_err("etcd holds leases now");
    assert!(again.to_string().contains("empty prefix"), "{again}");
}

#[test]
fn after_a_restore_the_generation_counter_is_raised_and_never_goes_down() {
    let prefix = format!("/keel-test/raise-{}", std::process::id());
    let etcd = EtcdBackend::new(EtcdOptions::new(cluster::shared().endpoints(), &prefix), JournalOptions::default())
        .expect("backend");
    let first = grant(&etcd, "api", "src/", "agent-a");
    assert_eq!(etcd.raise_generation(1_000).expect("raise"), 1_000);
    assert_eq!(etcd.raise_generation(10).expect("lower"), 1_000, "the counter never goes down");
    let next = grant(&etcd, "docs", "docs/", "agent-b");
    assert_eq!(next.generation, 1_001, "grants continue above the floor (first was {})", first.generation);
}
