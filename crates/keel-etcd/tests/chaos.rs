//! Chaos against a real 3-member etcd cluster, 30 s or more: 8 client processes with their own
//! host ids race for overlapping regions (acquire, heartbeat, release, and one holding its leases
//! as `keel lease run` does) while the harness kill -9s
//! and restarts the leader, kill -9s clients, and SIGSTOPs a holder past its TTL. Then a checker
//! replays etcd's own history (a watch from revision 1) against the clients' logs:
//! - no two colliding leases are live at any revision;
//! - no fencing generation is handed out twice, and the counter only rises;
//! - every grant a client was told about is in the history with its generation;
//! - every lease of a killed client is gone within its TTL and a few seconds;
//! - the holder resumed after its TTL has its gated write refused as stale.
//!
//! One binary (`harness = false`) that re-executes itself as each client (`KEEL_CHAOS_CLIENT`).

use keel_tests::etcd_cluster as cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use keel_etcd::{EtcdBackend, EtcdOptions};
use keel_journal::holding::{HoldEvents, hold};
use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, JournalOptions, LeaseBackend, LeaseRef};
use keel_kernel::arbiter::{Outcome, Request, Taxonomy, decide};
use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Request as WriteRequest};
use serde_json::Value;

/// How long the clients race, in seconds.
const RUN_S: u64 = 32;
/// Every lease's TTL, in seconds (etcd's floor is 2).
const TTL_S: u64 = 3;
/// Clients, the last of them the one paused past its TTL.
const CLIENTS: usize = 8;
/// What clients ask for: regions that overlap each other in several ways.
const REGIONS: [&str; 7] = ["src/a/", "src/a/x.rs", "src/b/", "src/", "docs/", "src/b/y.rs", "docs/guide.md"];
/// How long a killed client's leases may outlive it, past their TTL.
const GONE_SLACK_S: u64 = 4;

fn main() {
    if let Ok(index) = std::env::var("KEEL_CHAOS_CLIENT") {
        client(index.parse().expect("client index"));
        return;
    }
    let started = Instant::now();
    chaos();
    println!("chaos: passed in {:.1} s", started.elapsed().as_secs_f64());
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the harness"))
}

fn backend(host: &str) -> EtcdBackend {
    let endpoints = env("KEEL_CHAOS_ENDPOINTS").split(',').map(str::to_owned).collect();
    backend_at(endpoints, &env("KEEL_CHAOS_PREFIX"), host)
}

fn backend_at(endpoints: Vec<String>, prefix: &str, host: &str) -> EtcdBackend {
    let etcd = EtcdOptions {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..EtcdOptions::new(endpoints, prefix)
    };
    let options = JournalOptions { host_id: host.to_owned(), ..JournalOptions::default() };
    EtcdBackend::new(etcd, options).expect("backend")
}

/// `keel lease run`'s holder without a command to stop: the chaos client only logs.
struct Quiet;

impl HoldEvents for Quiet {}

/// A small deterministic generator, so a failing run can be told apart by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn log_line(log: &mut std::fs::File, line: &str) {
    // One write per line, flushed at once: a client killed with -9 leaves every line it wrote.
    let _ = log.write_all(format!("{line}\n").as_bytes());
}

fn client(index: usize) {
    let host = format!("host-{index}");
    let owner = format!("client-{index}");
    let backend = backend(&host);
    let mut log = OpenOptions::new().create(true).append(true).open(env("KEEL_CHAOS_LOG")).expect("log");
    let until = Instant::now() + Duration::from_secs(env("KEEL_CHAOS_RUN_S").parse().expect("run seconds"));
    let request = |lane: String, region: &str| AcquireRequest {
        lane,
        tree: vec![region.to_owned()],
        owner: owner.clone(),
        ttl_minutes: Some(TTL_S as f64 / 60.0),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    };
    if index == CLIENTS - 1 {
        return sleeper(&backend, &mut log, &request(format!("c{index}-stale"), "stale/"), &owner, until);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let region = REGIONS[rng.next(REGIONS.len() as u64) as usize];
        match backend.acquire(&request(format!("c{index}-{n}"), region)) {
            Ok(AcquireOutcome::Acquire(grant)) if index == CLIENTS - 2 => {
                // As `keel lease run` holds a lease around its command: beaten on a thread of its
                // own while the work runs, released after.
                let id = &grant.identity;
                log_line(&mut log, &format!("grant\t{}\t{}\t{}", id.lane, id.loop_ts, grant.generation));
                let work = Duration::from_millis(100 + rng.next(900));
                let held = hold(&backend, &grant, &owner, &backend.options().expiry, 1, &Quiet, || {
                    std::thread::sleep(work);
                });
                if let Ok(Some(_)) = held.released {
                    log_line(&mut log, &format!("release\t{}\t{}", id.lane, id.loop_ts));
                }
            }
            Ok(AcquireOutcome::Acquire(grant)) => {
                let id = &grant.identity;
                log_line(&mut log, &format!("grant\t{}\t{}\t{}", id.lane, id.loop_ts, grant.generation));
                std::thread::sleep(Duration::from_millis(20 + rng.next(200)));
                let _ = backend.heartbeat(&LeaseRef::exact(id), &owner, None);
                std::thread::sleep(Duration::from_millis(rng.next(200)));
                if let Ok(Some(_)) = backend.release(&LeaseRef::exact(id), &owner) {
                    log_line(&mut log, &format!("release\t{}\t{}", id.lane, id.loop_ts));
                }
            }
            Ok(AcquireOutcome::Refuse { .. }) => std::thread::sleep(Duration::from_millis(rng.next(30))),
            Err(error) => {
                log_line(&mut log, &format!("error\t{error}"));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Takes a lease, says it is ready, and is paused by the harness past its TTL; once resumed, it
/// tries the gated write its old lease would have allowed.
fn sleeper(backend: &EtcdBackend, log: &mut std::fs::File, request: &AcquireRequest, owner: &str, until: Instant) {
    let root = PathBuf::from(env("KEEL_CHAOS_ROOT"));
    let grant = loop {
        match backend.acquire(request) {
            Ok(AcquireOutcome::Acquire(grant)) => break grant,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let id = &grant.identity;
    log_line(log, &format!("grant\t{}\t{}\t{}", id.lane, id.loop_ts, grant.generation));
    let mutator = Mutator::open(&root, backend_for_gate(), MutatorOptions::default()).expect("mutator");
    log_line(log, "ready");
    // Beat while awake. A pause longer than the TTL shows as a jump in the clock (measured from
    // before each beat, so a pause that lands inside a beat counts too), or as a beat that finds
    // the lease gone: either way, try the write the lease used to allow.
    let mut last = Instant::now();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let mut lost = last.elapsed() > Duration::from_secs(TTL_S);
        if !lost {
            last = Instant::now();
            lost = matches!(backend.heartbeat(&LeaseRef::exact(id), owner, None), Ok(None));
        }
        if lost {
            let write = WriteRequest::for_grant(&grant, owner, Expect::Any, IntentId::new("stale-write").expect("id"));
            let outcome = mutator.write("stale/file.txt", b"written after the lease was gone", &write);
            let name = match &outcome {
                Ok(outcome) => outcome.name().to_owned(),
                Err(error) => format!("error: {error}"),
            };
            log_line(log, &format!("stale-write\t{name}"));
            return;
        }
    }
    log_line(log, "stale-write\tnever paused");
}

fn backend_for_gate() -> EtcdBackend {
    backend(&format!("host-{}", CLIENTS - 1))
}

fn spawn_client(index: usize, cluster: &cluster::Cluster, prefix: &str, dir: &Path, run_s: u64) -> Child {
    let root = dir.join("workspace");
    std::fs::create_dir_all(root.join("stale")).expect("workspace");
    Command::new(std::env::current_exe().expect("this test binary"))
        .env("KEEL_CHAOS_CLIENT", index.to_string())
        .env("KEEL_CHAOS_ENDPOINTS", cluster.endpoints().join(","))
        .env("KEEL_CHAOS_PREFIX", prefix)
        .env("KEEL_CHAOS_LOG", dir.join(format!("client-{index}.log")))
        .env("KEEL_CHAOS_RUN_S", run_s.to_string())
        .env("KEEL_CHAOS_ROOT", &root)
        .spawn()
        .expect("spawn a client")
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, signal).expect("signal a client");
}

fn read_log(dir: &Path, index: usize) -> String {
    std::fs::read_to_string(dir.join(format!("client-{index}.log"))).unwrap_or_default()
}

/// The keys of live leases whose holder is `owner`, read linearizably now.
fn held_by(backend: &EtcdBackend, owner: &str) -> Vec<String> {
    backend
        .live()
        .map(|live| {
            live.into_iter()
                .filter(|l| l.lease.get("holder").and_then(Value::as_str) == Some(owner))
                .map(|l| l.identity.lane)
                .collect()
        })
        .unwrap_or_default()
}

fn chaos() {
    let mut cluster = cluster::Cluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("/keel-chaos/{}", std::process::id());
    let mut clients: Vec<Child> = (0..CLIENTS).map(|i| spawn_client(i, &cluster, &prefix, dir.path(), RUN_S)).collect();
    let observer = backend_at(cluster.endpoints(), &prefix, "host-observer");
    let t0 = Instant::now();
    let at = |s: u64| {
        let when = t0 + Duration::from_secs(s);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    let mut killed: Vec<(usize, Duration)> = Vec::new();
    let mut kill_client = |clients: &mut Vec<Child>, index: usize| {
        // Killed while it holds a lease, so that lease's end is what is measured.
        let owner = format!("client-{index}");
        let waiting = Instant::now();
        while held_by(&observer, &owner).is_empty() {
            assert!(waiting.elapsed() < Duration::from_secs(5), "client {index} never held a lease");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&clients[index], rustix::process::Signal::KILL);
        let _ = clients[index].wait();
        let dead_at = Instant::now();
        while !held_by(&observer, &owner).is_empty() {
            assert!(
                dead_at.elapsed() < Duration::from_secs(TTL_S + GONE_SLACK_S),
                "client {index}'s leases outlived it by more than TTL + {GONE_SLACK_S} s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        killed.push((index, dead_at.elapsed()));
    };

    at(3);
    let leader = cluster.leader();
    cluster.kill(leader);
    at(5);
    cluster.restart(leader);
    at(7);
    kill_client(&mut clients, 0);
    // The sleeper holds its lease: pause it past the TTL.
    while !read_log(dir.path(), CLIENTS - 1).contains("ready") {
        assert!(t0.elapsed() < Duration::from_secs(RUN_S - 10), "the paused client never got its lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&clients[CLIENTS - 1], rustix::process::Signal::STOP);
    let paused = Instant::now();
    let leader = cluster.leader();
    cluster.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(leader);
    while paused.elapsed() < Duration::from_secs(TTL_S + 2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&clients[CLIENTS - 1], rustix::process::Signal::CONT);
    at(20);
    kill_client(&mut clients, 1);
    at(24);
    let leader = cluster.leader();
    cluster.kill(leader);
    at(27);
    cluster.restart(leader);
    for child in &mut clients {
        let _ = child.wait();
    }
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_secs(30), "the run lasted {elapsed:?}");
    check(&cluster, &prefix, dir.path(), &killed);
}

/// One event of etcd's history under the prefix.
struct Event {
    revision: i64,
    key: String,
    value: Option<Value>,
}

fn history(cluster: &cluster::Cluster, prefix: &str) -> Vec<Event> {
    let endpoints = cluster.endpoints();
    let prefix = prefix.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut client = etcd_client::Client::connect(&endpoints, None).await.expect("connect");
        let end = client.get(prefix.clone(), None).await.expect("get").header().expect("header").revision();
        let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(1);
        let mut stream = client.watch(prefix, Some(options)).await.expect("watch");
        let mut events = Vec::new();
        // The first answer (the watch's creation) carries the current revision but no events:
        // read events until one at the last revision arrives, or the stream has nothing more.
        let mut seen = 0;
        while seen < end {
            let Ok(message) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await else { break };
            let message = message.expect("watch").expect("the watch stays open");
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let value = match event.event_type() {
                    etcd_client::EventType::Put => Some(serde_json::from_slice(kv.value()).unwrap_or(Value::Null)),
                    etcd_client::EventType::Delete => None,
                };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                events.push(Event { revision: kv.mod_revision(), key, value });
                seen = seen.max(kv.mod_revision());
            }
        }
        events
    })
}

fn as_request(lease: &Value) -> Request {
    let text = |k: &str| lease.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    Request {
        lane: text("lane"),
        kind: text("lane_kind"),
        tree: lease
            .get("tree")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        mode: text("mode"),
        force: false,
    }
}

fn check(cluster: &cluster::Cluster, prefix: &str, dir: &Path, killed: &[(usize, Duration)]) {
    let events = history(cluster, prefix);
    let generation_key = format!("{prefix}/state/generation");
    let leases_prefix = format!("{prefix}/state/leases/");
    let taxonomy = Taxonomy::default();
    let mut live: BTreeMap<String, (Value, u64)> = BTreeMap::new();
    let mut generations: BTreeMap<u64, String> = BTreeMap::new();
    let mut granted: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut counter = 0_u64;
    let mut grants = 0;
    let mut by_revision: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for event in &events {
        by_revision.entry(event.revision).or_default().push(event);
    }
    for (revision, batch) in &by_revision {
        let mut created = Vec::new();
        for event in batch {
            if event.key == generation_key {
                let value = event.value.as_ref().and_then(Value::as_u64).expect("the counter is a number");
                assert!(value > counter, "revision {revision}: the generation counter went from {counter} to {value}");
                counter = value;
            } else if let Some(key) = event.key.strip_prefix(&leases_prefix) {
                match &event.value {
                    Some(value) => {
                        let generation = value.get("generation").and_then(Value::as_u64).expect("generation");
                        let lease = value.get("lease").cloned().expect("lease body");
                        let previous = live.insert(key.to_owned(), (lease.clone(), generation));
                        // A new lease, or an adoption: a generation handed out here.
                        if previous.as_ref().is_none_or(|(_, before)| *before != generation)
                            && let Some(other) = generations.insert(generation, key.to_owned())
                        {
                            panic!("revision {revision}: generation {generation} handed to {other} and to {key}");
                        }
                        if previous.is_none() {
                            created.push(key.to_owned());
                            grants += 1;
                        }
                        let lane = lease.get("lane").and_then(Value::as_str).unwrap_or_default().to_owned();
                        granted.insert((lane, generation));
                    }
                    None => {
                        live.remove(key);
                    }
                }
            }
        }
        for key in created {
            let request = as_request(&live[&key].0);
            for (other_key, (other, _)) in &live {
                if *other_key == key {
                    continue;
                }
                let decision = decide(&request, std::iter::once(other.as_object().expect("object")), &taxonomy);
                assert_ne!(
                    decision.outcome,
                    Outcome::Refuse,
                    "revision {revision}: {key} is live beside {other_key}, which it collides with: {}",
                    decision.reason
                );
            }
        }
    }
    let mut acknowledged = 0;
    let mut stale_write = None;
    for index in 0..CLIENTS {
        for line in read_log(dir, index).lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["grant", lane, _loop_ts, generation] => {
                    let generation: u64 = generation.parse().expect("generation");
                    assert!(
                        granted.contains(&((*lane).to_owned(), generation)),
                        "client {index} was granted {lane} at generation {generation}, which etcd's history lacks"
                    );
                    acknowledged += 1;
                }
                ["stale-write", outcome] => stale_write = Some((*outcome).to_owned()),
                _ => {}
            }
        }
    }
    assert!(grants > 100, "the clients made too few grants to prove much: {grants}");
    assert!(acknowledged > 100, "too few acknowledged grants: {acknowledged}");
    assert_eq!(killed.len(), 2, "two clients were killed");
    let stale_write = stale_write.expect("the paused client tried its write after resuming");
    assert!(
        matches!(stale_write.as_str(), "stale_generation" | "forbidden"),
        "the write of a holder resumed after its TTL was not refused: {stale_write}"
    );
    println!(
        "chaos: {} events, {grants} grants ({acknowledged} acknowledged), generations up to {counter}, \
         killed clients' leases gone after {killed:?}, stale write {stale_write}",
        events.len()
    );
}
