//! `cargo xtask bench etcd`: the etcd backend against a real 3-member cluster this task starts
//! (on loopback, data in /dev/shm), each figure against a bare etcd request measured in the same
//! run on the same member:
//! - an uncontended `acquire` of a fresh region, against a bare compare-and-swap transaction of
//!   the same size (compare a key's mod revision, put the value): at most 1.5x;
//! - its `release`, against the same bare transaction: at most 1.2x;
//! - 8 clients (each its own backend, its own host id) racing for overlapping regions for a few
//!   seconds: at least 150 grants per second (a bare contended CAS on one key measured 146–221 per
//!   second on this machine).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use keel_etcd::{EtcdBackend, EtcdOptions};
use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, JournalOptions, LeaseBackend, LeaseRef};
use keel_tests::etcd_cluster::Cluster;

use crate::bench::{median, report, report_at_least};

/// Timed cycles of each kind, after [`WARM_UP`] untimed ones.
const CYCLES: usize = 300;
const WARM_UP: usize = 30;
/// The contended run: clients and seconds.
const CLIENTS: usize = 8;
const CONTENDED_S: u64 = 5;
/// Targets.
const ACQUIRE_RATIO_MAX: f64 = 1.5;
const RELEASE_RATIO_MAX: f64 = 1.2;
const CONTENDED_GRANTS_PER_S_MIN: f64 = 150.0;
/// Regions the contending clients ask for: they overlap in several ways.
const REGIONS: [&str; 6] = ["src/a/", "src/a/x.rs", "src/b/", "src/", "docs/", "src/b/y.rs"];

fn backend(cluster: &Cluster, prefix: &str, host: &str) -> anyhow::Result<EtcdBackend> {
    let options = JournalOptions { host_id: host.to_owned(), ..JournalOptions::default() };
    // The bare requests go to member 0 too: every figure takes the same path through the cluster.
    EtcdBackend::new(EtcdOptions::new(cluster.endpoints(), prefix), options).context("the etcd backend")
}

fn request(lane: String, region: &str, owner: &str) -> AcquireRequest {
    AcquireRequest {
        lane,
        tree: vec![region.to_owned()],
        owner: owner.to_owned(),
        ttl_minutes: Some(1.0),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    }
}

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    let prefix = format!("/keel-bench/{}", std::process::id());
    let bare = bare_txn(&cluster, &prefix)?;
    let (acquire, release) = cycles(&cluster, &prefix)?;
    let grants_per_s = contended(&cluster, &prefix)?;
    println!("etcd: 3 members on loopback, {CYCLES} timed cycles after {WARM_UP}");
    println!("  bare CAS txn (compare mod revision, put ~500 bytes): median {:.3} ms", ms(bare));
    println!("  keel acquire (uncontended, fresh region):         median {:.3} ms", ms(acquire));
    println!("  keel release:                                     median {:.3} ms", ms(release));
    report("acquire / bare txn", acquire.as_secs_f64() / bare.as_secs_f64(), ACQUIRE_RATIO_MAX, "x");
    report("release / bare txn", release.as_secs_f64() / bare.as_secs_f64(), RELEASE_RATIO_MAX, "x");
    report_at_least(
        &format!("grants per second, {CLIENTS} clients on overlapping regions"),
        grants_per_s,
        CONTENDED_GRANTS_PER_S_MIN,
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A bare compare-and-swap of a value the size of a lease record, on one connection.
fn bare_txn(cluster: &Cluster, prefix: &str) -> anyhow::Result<Duration> {
    let endpoint = cluster.endpoint(0);
    let key = format!("{prefix}/bare");
    let value = "x".repeat(500);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    runtime.block_on(async move {
        let mut client = Client::connect([endpoint], None).await.context("connect")?;
        let put = client.put(key.clone(), value.clone(), None).await.context("put")?;
        let mut revision = put.header().context("header")?.revision();
        let mut times = Vec::with_capacity(CYCLES);
        for n in 0..WARM_UP + CYCLES {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            let started = Instant::now();
            let answer = client.txn(txn).await.context("txn")?;
            let elapsed = started.elapsed();
            if !answer.succeeded() {
                bail!("the bare CAS lost to nobody: the benchmark key changed under it");
            }
            revision = answer.header().context("header")?.revision();
            if n >= WARM_UP {
                times.push(elapsed);
            }
        }
        Ok(median(&mut times))
    })
}

/// Uncontended acquire and release, each timed on its own.
fn cycles(cluster: &Cluster, prefix: &str) -> anyhow::Result<(Duration, Duration)> {
    let backend = backend(cluster, &format!("{prefix}/cycles"), "host-bench")?;
    let mut acquires = Vec::with_capacity(CYCLES);
    let mut releases = Vec::with_capacity(CYCLES);
    for n in 0..WARM_UP + CYCLES {
        let lane = format!("lane-{n}");
        let started = Instant::now();
        let outcome = backend.acquire(&request(lane.clone(), &format!("src/{n}/"), "agent-a"))?;
        let acquired = started.elapsed();
        let AcquireOutcome::Acquire(grant) = outcome else { bail!("an uncontended acquire was refused") };
        let started = Instant::now();
        let released = backend.release(&LeaseRef::exact(&grant.identity), "agent-a")?;
        let release = started.elapsed();
        if released.is_none() {
            bail!("the release found no lease");
        }
        if n >= WARM_UP {
            acquires.push(acquired);
            releases.push(release);
        }
    }
    Ok((median(&mut acquires), median(&mut releases)))
}

/// Grants per second of [`CLIENTS`] clients racing for overlapping regions.
fn contended(cluster: &Cluster, prefix: &str) -> anyhow::Result<f64> {
    let prefix = format!("{prefix}/contended");
    let stop = AtomicBool::new(false);
    let grants = AtomicU64::new(0);
    let backends: Vec<EtcdBackend> =
        (0..CLIENTS).map(|i| backend(cluster, &prefix, &format!("host-{i}"))).collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, backend) in backends.iter().enumerate() {
            let (stop, grants) = (&stop, &grants);
            scope.spawn(move || {
                let owner = format!("client-{i}");
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let region = REGIONS[usize::try_from((n * 7 + i as u64) % REGIONS.len() as u64).unwrap_or(0)];
                    if let Ok(AcquireOutcome::Acquire(grant)) =
                        backend.acquire(&request(format!("c{i}-{n}"), region, &owner))
                    {
                        grants.fetch_add(1, Ordering::Relaxed);
                        let _ = backend.release(&LeaseRef::exact(&grant.identity), &owner);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(CONTENDED_S));
        stop.store(true, Ordering::Relaxed);
    });
    Ok(grants.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
