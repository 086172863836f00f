//! A holder on etcd that cannot reach the cluster stops: once its beats have failed for three
//! quarters of its TTL it cannot know it still holds the lease (etcd may have ended it), and
//! `keel lease run`'s supervisor is told so (and stops its command).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_etcd::{EtcdBackend, EtcdOptions};
use keel_journal::holding::{HoldEvents, hold};
use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, JournalOptions, LeaseBackend};
use keel_kernel::expiry::ExpiryPolicy;

use crate::cluster::Cluster;

#[derive(Default)]
struct Told {
    lost: AtomicBool,
}

impl HoldEvents for Told {
    fn lost(&self, _done: &AtomicBool) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_holder_whose_beats_fail_for_most_of_its_ttl_is_told_it_lost_the_lease() {
    let mut cluster = Cluster::start(1);
    let expiry = ExpiryPolicy { grace_s: 2, ..ExpiryPolicy::default() };
    let options = JournalOptions { expiry, ..JournalOptions::default() };
    let etcd = EtcdOptions {
        request_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..EtcdOptions::new(cluster.endpoints(), "/keel-test/holding")
    };
    let backend = EtcdBackend::new(etcd, options).expect("backend");
    let request = AcquireRequest {
        lane: "api".into(),
        tree: vec!["src/".into()],
        owner: "agent-a".into(),
        ttl_minutes: Some(2.0 / 60.0),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    };
    let AcquireOutcome::Acquire(grant) = backend.acquire(&request).expect("acquire") else { panic!("refused") };
    let told = Told::default();
    let held = hold(&backend, &grant, "agent-a", &expiry, 30, &told, || {
        // Beats go through while the cluster lives...
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!told.lost.load(Ordering::SeqCst), "a holder whose beats go through keeps its lease");
        // ...and once it is gone, the holder is told within its TTL and the time a beat takes to fail.
        cluster.kill(0);
        let killed = Instant::now();
        while !told.lost.load(Ordering::SeqCst) && killed.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        killed.elapsed()
    });
    assert!(held.lost, "the holder was told its lease may be gone");
    assert!(held.value < Duration::from_secs(8), "told only after {:?}", held.value);
    assert!(held.released.is_err(), "no member answers the release either: {:?}", held.released);
}
