//! The lease semantics every backend keeps, as one suite run against the journal and against a
//! real etcd cluster: the same requests give the same answers, whichever keeps the leases.

use std::time::Duration;

use keel_etcd::{EtcdBackend, EtcdOptions};
use keel_journal::{
    AcquireOutcome, AcquireRequest, Beat, HolderPid, Journal, JournalError, JournalOptions, LeaseBackend, LeaseRef,
};
use keel_kernel::Identity;

use crate::cluster;

fn request(lane: &str, tree: &[&str], owner: &str) -> AcquireRequest {
    AcquireRequest {
        lane: lane.into(),
        tree: tree.iter().map(|s| (*s).to_owned()).collect(),
        owner: owner.into(),
        ttl_minutes: Some(1.0),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    }
}

fn granted(outcome: AcquireOutcome) -> keel_journal::Grant {
    match outcome {
        AcquireOutcome::Acquire(grant) => grant,
        AcquireOutcome::Refuse { decision, .. } => panic!("refused: {}", decision.reason),
    }
}

fn refused(outcome: &AcquireOutcome) -> bool {
    matches!(outcome, AcquireOutcome::Refuse { .. })
}

/// The suite, on any backend.
fn suite<B: LeaseBackend + Sync>(backend: &B, name: &str) {
    // A grant, then a colliding request refused naming the holder; a disjoint one granted.
    let a = granted(backend.acquire(&request("api", &["src/api/"], "agent-a")).expect("acquire a"));
    let blocked = backend.acquire(&request("handlers", &["src/api/handlers.rs"], "agent-b")).expect("acquire b");
    assert!(refused(&blocked), "{name}: a colliding request is refused: {blocked:?}");
    if let AcquireOutcome::Refuse { decision, .. } = &blocked {
        assert!(decision.reason.contains("api"), "{name}: the refusal names the holder's lane: {}", decision.reason);
    }
    let probe = backend.probe(&request("handlers", &["src/api/handlers.rs"], "agent-b")).expect("probe");
    assert_eq!(probe.outcome, keel_kernel::arbiter::Outcome::Refuse, "{name}: probe agrees with acquire");
    let docs = granted(backend.acquire(&request("docs", &["docs/"], "agent-b")).expect("acquire docs"));
    assert!(docs.generation > a.generation, "{name}: generations rise: {} then {}", a.generation, docs.generation);

    // The live set shows both, with their generations.
    let live = backend.live().expect("live");
    assert_eq!(live.len(), 2, "{name}: two live leases: {live:?}");
    assert_eq!(live[0].identity, a.identity, "{name}: first-acquired order");
    assert_eq!(live[0].generation, Some(a.generation));

    // Only the holder beats or releases its lease.
    assert_eq!(backend.heartbeat(&LeaseRef::lane("api"), "agent-b", None).expect("beat"), None, "{name}");
    assert!(matches!(
        backend.heartbeat(&LeaseRef::lane("api"), "agent-a", None).expect("beat"),
        Some(Beat::Beaten { .. } | Beat::Coalesced { .. })
    ));
    assert_eq!(backend.release(&LeaseRef::lane("api"), "agent-b").expect("release"), None, "{name}: not b's");
    assert_eq!(
        backend.release(&LeaseRef::exact(&a.identity), "agent-a").expect("release"),
        Some(a.identity.clone()),
        "{name}: the holder releases"
    );
    assert_eq!(backend.release(&LeaseRef::exact(&a.identity), "agent-a").expect("release"), None, "{name}: once");

    // Freed: the colliding request is granted now, with a higher generation than any before.
    let b = granted(backend.acquire(&request("handlers", &["src/api/handlers.rs"], "agent-b")).expect("again"));
    assert!(b.generation > docs.generation, "{name}: {} after {}", b.generation, docs.generation);

    // Adoption hands the lease over with a generation above every earlier token.
    let adopted = backend.adopt(&b.identity, "agent-c", HolderPid::None).expect("adopt").expect("live lease");
    assert!(adopted.generation > b.generation, "{name}: adoption raises the generation");
    assert_eq!(backend.release(&LeaseRef::exact(&b.identity), "agent-b").expect("release"), None, "{name}");
    let gone = Identity { lane: "nope".into(), loop_ts: "2000-01-01T00:00:00.000000Z".into() };
    assert_eq!(backend.adopt(&gone, "agent-c", HolderPid::None).expect("adopt"), None, "{name}: never creates");

    // A lane is held once; a scavenge of a live lease only-if-dead does nothing.
    let same_lane = backend.acquire(&request("docs", &["x/"], "agent-d")).expect("same lane");
    assert!(refused(&same_lane), "{name}: the lane is held: {same_lane:?}");
    assert_eq!(backend.scavenge(&docs.identity, "test", true).expect("scavenge"), None, "{name}: alive");
    assert!(backend.scavenge(&docs.identity, "test", false).expect("scavenge").is_some(), "{name}: forced");

    // Bad requests are usage errors, whatever the backend.
    for bad in [request("x", &["y/"], " "), request(" ", &["y/"], "agent"), request("x", &["../up"], "agent")] {
        let error = backend.acquire(&bad).expect_err("invalid");
        assert_eq!(error.kind(), keel_fs::ErrorKind::Usage, "{name}: {error}");
    }

    // A waiter is granted once the holder lets go.
    let holder = granted(backend.acquire(&request("wait", &["w/"], "agent-e")).expect("acquire w"));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            backend.release(&LeaseRef::exact(&holder.identity), "agent-e").expect("release w");
        });
        let waited =
            backend.acquire_wait(&request("wait2", &["w/x"], "agent-f"), Duration::from_secs(10)).expect("wait");
        assert!(matches!(waited, AcquireOutcome::Acquire(_)), "{name}: the waiter is granted: {waited:?}");
    });
}

#[test]
fn the_journal_keeps_the_lease_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("lane-journal.jsonl"), JournalOptions::default());
    suite(&journal, "journal");
}

#[test]
fn etcd_keeps_the_same_lease_semantics() {
    let cluster = cluster::shared();
    let options = EtcdOptions::new(cluster.endpoints(), &format!("/keel-test/semantics-{}", std::process::id()));
    let backend = EtcdBackend::new(options, JournalOptions::default()).expect("backend");
    suite(&backend, "etcd");
}

#[test]
fn etcd_without_a_reachable_member_is_unavailable_never_a_guess() {
    let options = EtcdOptions {
        request_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        ..EtcdOptions::new(vec!["http://127.0.0.1:1".into()], "/keel-test/none")
    };
    let backend = EtcdBackend::new(options, JournalOptions::default()).expect("backend");
    let error = backend.acquire(&request("api", &["src/"], "agent-a")).expect_err("nobody answers");
    assert!(matches!(error, JournalError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("unavailable"), "{error}");
    assert_eq!(error.kind(), keel_fs::ErrorKind::Io);
}
