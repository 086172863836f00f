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

/// Options with a clock the test moves by hand (expiry verdicts read it; etcd's TTLs do not).
fn clocked(clock: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> JournalOptions {
    let clock = std::sync::Arc::clone(clock);
    JournalOptions {
        expiry: keel_kernel::expiry::ExpiryPolicy { grace_s: 60, ..keel_kernel::expiry::ExpiryPolicy::default() },
        clock: std::sync::Arc::new(move || clock.load(std::sync::atomic::Ordering::SeqCst) as f64),
        ..JournalOptions::default()
    }
}

/// Identities, limits and reclaiming a gone holder's lease, the same on any backend.
fn more_semantics<B: LeaseBackend>(backend: &B, clock: &std::sync::atomic::AtomicU64, name: &str) {
    use std::sync::atomic::Ordering;
    // A named loop_ts that is live is refused rather than replacing its lease; without one, two
    // grants in the same instant still get distinct identities.
    let mut named = request("main", &["src/a/"], "agent-a");
    named.kind = "cluster".into();
    named.loop_ts = Some("run-1".into());
    granted(backend.acquire(&named).expect("acquire"));
    named.tree = vec!["src/b/".into()];
    named.owner = "agent-b".into();
    let error = backend.acquire(&named).expect_err("same identity");
    assert!(matches!(error, JournalError::IdentityInUse { .. }), "{name}: {error}");
    named.loop_ts = None;
    let one = granted(backend.acquire(&named).expect("acquire"));
    named.tree = vec!["src/c/".into()];
    let two = granted(backend.acquire(&named).expect("acquire"));
    assert_ne!(one.identity, two.identity, "{name}");

    // A tree over the limit is refused before anything is decided; one at the limit is granted.
    let max = keel_kernel::tree::TREE_ENTRIES_MAX;
    let tree = |n: usize| (0..n).map(|i| format!("t{i}/")).collect::<Vec<_>>();
    let over = backend.acquire(&AcquireRequest { tree: tree(max + 1), ..request("wide", &["x/"], "agent-w") });
    assert!(matches!(&over, Err(JournalError::InvalidRequest(why)) if why.contains("at most")), "{name}: {over:?}");
    granted(backend.acquire(&AcquireRequest { tree: tree(max), ..request("wide", &["x/"], "agent-w") }).expect("wide"));

    // A lease whose holder process exits is reclaimed after its grace, never within it.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id();
    let held = AcquireRequest {
        holder_pid: HolderPid::Pid(pid),
        ttl_minutes: Some(10.0),
        ..request("ghost", &["g/"], "agent-g")
    };
    granted(backend.acquire(&held).expect("acquire g"));
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let start = clock.load(Ordering::SeqCst);
    clock.store(start + 30, Ordering::SeqCst);
    let early = backend.acquire(&request("b", &["g/x"], "agent-b")).expect("acquire");
    assert!(refused(&early), "{name}: within the grace a gone holder still holds: {early:?}");
    clock.store(start + 61, Ordering::SeqCst);
    let late = granted(backend.acquire(&request("b", &["g/x"], "agent-b")).expect("acquire"));
    assert!(
        matches!(late.reclaimed.as_slice(), [(_, keel_kernel::expiry::Verdict::HolderGone { .. })]),
        "{name}: {:?}",
        late.reclaimed
    );
}

const CLOCK_START_S: u64 = 1_800_000_000;

#[test]
fn the_journal_keeps_identities_limits_and_reclaims() {
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(CLOCK_START_S));
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("lane-journal.jsonl"), clocked(&clock));
    more_semantics(&journal, &clock, "journal");
}

#[test]
fn etcd_keeps_the_same_identities_limits_and_reclaims() {
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(CLOCK_START_S));
    let options = EtcdOptions::new(cluster::shared().endpoints(), &format!("/keel-test/more-{}", std::process::id()));
    let backend = EtcdBackend::new(options, clocked(&clock)).expect("backend");
    more_semantics(&backend, &clock, "etcd");
}
