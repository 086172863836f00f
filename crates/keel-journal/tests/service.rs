//! The lease service's rules, one at a time: reclaiming dead leases, heartbeats, adoption,
//! identities, size-triggered compaction and the head snapshot.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_journal::{
    AcquireOutcome, AcquireRequest, Beat, HolderPid, Journal, JournalError, JournalOptions, LeaseBackend, LeaseRef,
    replay_path,
};
use keel_kernel::Identity;
use keel_kernel::expiry::{ExpiryPolicy, Verdict, format_utc};
use keel_kernel::json::to_line;
use serde_json::json;

const START_S: u64 = 1_800_000_000;
const START_I: i64 = 1_800_000_000;

/// Options with a clock the test moves by hand.
fn options(clock: &Arc<AtomicU64>) -> JournalOptions {
    let clock = Arc::clone(clock);
    JournalOptions {
        expiry: ExpiryPolicy { default_ttl_s: 3600, grace_s: 60, ..ExpiryPolicy::default() },
        clock: Arc::new(move || clock.load(Ordering::SeqCst) as f64),
        ..JournalOptions::default()
    }
}

fn request(lane: &str, tree: &str, owner: &str) -> AcquireRequest {
    AcquireRequest { lane: lane.into(), tree: vec![tree.into()], owner: owner.into(), ..AcquireRequest::default() }
}

fn granted(outcome: AcquireOutcome) -> keel_journal::Grant {
    match outcome {
        AcquireOutcome::Acquire(grant) => grant,
        AcquireOutcome::Refuse { decision, .. } => panic!("refused: {}", decision.reason),
    }
}

fn ops(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("journal")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["op"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_lease_past_its_ttl_is_reclaimed_by_a_colliding_acquire_and_the_reclaim_is_journaled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let mut first = request("a", "src/", "agent-a");
    first.ttl_minutes = Some(1.0);
    let a = granted(journal.acquire(&first).expect("acquire"));
    // Read in whole seconds, 60 s idle may truly be 59.1 s: only 61 s proves the TTL over.
    clock.store(START_S + 60, Ordering::SeqCst);
    assert!(matches!(journal.acquire(&request("b", "src/x", "agent-b")).expect("ok"), AcquireOutcome::Refuse { .. }));
    clock.store(START_S + 61, Ordering::SeqCst);
    let b = granted(journal.acquire(&request("b", "src/x", "agent-b")).expect("ok"));
    assert_eq!(b.reclaimed, vec![(a.identity.clone(), Verdict::Expired { idle_s: 61, ttl_s: 60 })]);
    assert!(b.generation > a.generation, "the fence rises");
    assert!(ops(&path).contains(&"SCAVENGE".to_owned()), "the reclaim is in the journal");
    let live = journal.live().expect("live");
    assert_eq!(live.len(), 1, "only the new lease is live");
    assert_eq!(live[0].identity, b.identity);
}

#[test]
fn a_gone_holders_lease_is_reclaimed_after_the_grace_but_never_within_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    // A lease whose holder process has exited: the pid of a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("reaped");
    let lease = json!({"acquired_at": format_utc(START_I), "grace_s": 60, "holder": "ghost", "host_id": journal.options().host_id,
        "lane": "g", "lane_kind": "keyword", "loop_ts": "t-ghost", "mode": "exclusive", "pid": dead_pid, "tree": ["src/"]});
    let record = json!({"op": "ACQUIRE", "lane": "g", "loop_ts": "t-ghost", "seq": 1, "lease": lease});
    std::fs::write(&path, format!("{}\n", to_line(&record))).expect("seed journal");
    clock.store(START_S + 30, Ordering::SeqCst);
    let early = journal.acquire(&request("b", "src/x", "agent-b")).expect("ok");
    assert!(matches!(early, AcquireOutcome::Refuse { .. }), "within the grace a gone holder still holds: {early:?}");
    clock.store(START_S + 61, Ordering::SeqCst);
    let b = granted(journal.acquire(&request("b", "src/x", "agent-b")).expect("ok"));
    assert!(matches!(b.reclaimed.as_slice(), [(_, Verdict::HolderGone { .. })]), "{:?}", b.reclaimed);
}

/// Found by a sweep: every lease took the pid of the process that granted it. A `keel lease
/// acquire` command exits at once, so its lease was "holder gone" from the start and the next
/// requester took a live agent's region two minutes later, whatever its TTL said.
#[test]
fn a_lease_tied_to_no_process_lasts_its_ttl_past_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let mut first = request("a", "src/", "agent-a");
    first.ttl_minutes = Some(10.0);
    first.holder_pid = HolderPid::None;
    let a = granted(journal.acquire(&first).expect("acquire"));
    assert_eq!((a.lease.get("pid"), a.lease.get("proc_starttime")), (Some(&serde_json::Value::Null), None));
    clock.store(START_S + 61, Ordering::SeqCst);
    let early = journal.acquire(&request("b", "src/x", "agent-b")).expect("ok");
    assert!(matches!(early, AcquireOutcome::Refuse { .. }), "past the grace, within the TTL: {early:?}");
    clock.store(START_S + 601, Ordering::SeqCst);
    let b = granted(journal.acquire(&request("b", "src/x", "agent-b")).expect("ok"));
    assert_eq!(b.reclaimed, vec![(a.identity, Verdict::Expired { idle_s: 601, ttl_s: 600 })]);

    // Adopted without a process, the lease does not inherit its old holder's (gone) pid.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let mut third = request("c", "docs/", "agent-c");
    third.holder_pid = HolderPid::Pid(child.id());
    let c = granted(journal.acquire(&third).expect("acquire"));
    assert_eq!(c.lease.get("pid"), Some(&json!(child.id())));
    journal
        .adopt(&Identity::new("c", c.identity.loop_ts.as_str()), "agent-d", HolderPid::None)
        .expect("adopt")
        .expect("live");
    child.kill().expect("kill sleep");
    child.wait().expect("reaped");
    clock.store(START_S + 601 + 61, Ordering::SeqCst);
    let late = journal.acquire(&request("e", "docs/x", "agent-e")).expect("ok");
    assert!(matches!(late, AcquireOutcome::Refuse { .. }), "the adopter holds it until its TTL: {late:?}");
}

#[test]
fn a_lease_tied_to_a_process_is_freed_after_the_grace_once_that_process_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let mut first = request("a", "src/", "agent-a");
    first.holder_pid = HolderPid::Pid(child.id());
    granted(journal.acquire(&first).expect("acquire"));
    clock.store(START_S + 61, Ordering::SeqCst);
    let alive = journal.acquire(&request("b", "src/x", "agent-b")).expect("ok");
    assert!(matches!(alive, AcquireOutcome::Refuse { .. }), "its process still runs: {alive:?}");
    child.kill().expect("kill sleep");
    child.wait().expect("reaped");
    let b = granted(journal.acquire(&request("b", "src/x", "agent-b")).expect("ok"));
    assert!(matches!(b.reclaimed.as_slice(), [(_, Verdict::HolderGone { .. })]), "{:?}", b.reclaimed);

    // A process that is not running cannot hold a lease.
    let mut gone = request("c", "docs/", "agent-c");
    gone.holder_pid = HolderPid::Pid(child.id());
    assert!(matches!(journal.acquire(&gone), Err(JournalError::InvalidRequest(_))));
}

/// Found by a sweep: `--coalesce-s 300` skipped a beat 121 s after the last one, past a grace of
/// 120 s, and the next colliding request reclaimed the live lease.
#[test]
fn a_coalescing_floor_never_lets_a_lease_fall_out_of_its_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock)); // grace 60 s
    granted(journal.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    clock.store(START_S + 29, Ordering::SeqCst);
    let beat = journal.heartbeat(&LeaseRef::lane("a"), "agent-a", Some(300)).expect("ok").expect("live");
    assert!(matches!(beat, Beat::Coalesced { .. }), "under half a grace: {beat:?}");
    clock.store(START_S + 30, Ordering::SeqCst);
    let beat = journal.heartbeat(&LeaseRef::lane("a"), "agent-a", Some(300)).expect("ok").expect("live");
    assert!(matches!(beat, Beat::Beaten { .. }), "half a grace old: written whatever the floor: {beat:?}");
}

#[test]
fn only_the_exact_holder_beats_and_a_floor_coalesces_beats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let grant = granted(journal.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    assert_eq!(
        journal.heartbeat(&LeaseRef::lane("a"), "agent-b", None).expect("ok"),
        None,
        "another owner cannot beat"
    );
    clock.store(START_S + 10, Ordering::SeqCst);
    let beat = journal.heartbeat(&LeaseRef::lane("a"), "agent-a", Some(30)).expect("ok").expect("live");
    assert!(matches!(beat, Beat::Coalesced { .. }), "10 s after the acquire is below a 30 s floor: {beat:?}");
    clock.store(START_S + 40, Ordering::SeqCst);
    let beat = journal
        .heartbeat(&LeaseRef { lane: "a", loop_ts: Some(&grant.identity.loop_ts) }, "agent-a", Some(30))
        .expect("ok")
        .expect("live");
    assert_eq!(beat, Beat::Beaten { identity: grant.identity, heartbeat_at: format_utc(START_I + 40) });
    assert_eq!(ops(&path).iter().filter(|op| *op == "HEARTBEAT").count(), 1, "the coalesced beat wrote nothing");
}

#[test]
fn adopt_transfers_a_live_lease_and_never_creates_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let grant = granted(journal.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    assert_eq!(journal.adopt(&Identity::new("a", "no-such-loop"), "agent-b", HolderPid::This).expect("ok"), None);
    assert_eq!(
        journal.adopt(&Identity::new("a", grant.identity.loop_ts.as_str()), "agent-b", HolderPid::This).expect("ok"),
        Some(keel_journal::Adopted { identity: grant.identity.clone(), generation: grant.generation + 1 })
    );
    let live = journal.live().expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].lease["holder"], "agent-b");
    assert_eq!(live[0].generation, Some(grant.generation + 1), "the new holder gets a new fencing token");
    assert_eq!(journal.release(&LeaseRef::lane("a"), "agent-a").expect("ok"), None, "the old owner no longer holds it");
    assert!(journal.release(&LeaseRef::lane("a"), "agent-b").expect("ok").is_some());
}

#[test]
fn a_crashed_writers_fragment_is_excused_but_a_complete_bad_line_waits_for_a_review() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let append = |bytes: &[u8]| {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        file.write_all(bytes).expect("append");
    };
    granted(Journal::open(&path, options(&clock)).acquire(&request("a", "a/", "agent-a")).expect("acquire"));

    // No `\n`: what a writer killed mid-append leaves. The next writer excuses it on its own.
    append(b"{\"op\": \"ACQ");
    let journal = Journal::open(&path, options(&clock));
    granted(journal.acquire(&request("b", "b/", "agent-b")).expect("acquire after a fragment"));
    assert!(journal.unreviewed().expect("review").is_empty());

    // A whole line that does not parse: grants stop, and the review names that very line. It once
    // named nothing, while acquire kept pointing at it: no way to grant again short of compaction.
    append(b"{not json\n");
    let journal = Journal::open(&path, options(&clock));
    let refused = journal.acquire(&request("c", "c/", "agent-c"));
    assert!(matches!(refused, Err(JournalError::Damaged { line_number: 5, .. })), "{refused:?}");
    assert_eq!(journal.stats().expect("stats").unreviewed_corrupt, 1);
    let listed = journal.unreviewed().expect("review");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["_line"].as_u64(), listed[0]["_raw"].as_str()), (Some(4), Some("{not json")));
    assert!(journal.acquire(&request("c", "c/", "agent-c")).is_err(), "listing is not accepting");
    assert_eq!(journal.accept_review("operator").expect("accept").lines.len(), 1);
    granted(journal.acquire(&request("c", "c/", "agent-c")).expect("acquire after the review"));
    let stats = Journal::open(&path, options(&clock)).stats().expect("stats");
    assert_eq!((stats.corrupt, stats.unreviewed_corrupt), (2, 0), "both lines stay on record, both excused");
}

#[test]
fn a_named_loop_ts_that_is_live_is_refused_rather_than_replacing_its_lease() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&dir.path().join("j.jsonl"), options(&clock));
    let mut named = request("main", "src/a/", "agent-a");
    named.kind = "cluster".into();
    named.loop_ts = Some("run-1".into());
    granted(journal.acquire(&named).expect("acquire"));
    named.tree = vec!["src/b/".into()];
    named.owner = "agent-b".into();
    let error = journal.acquire(&named).expect_err("same identity");
    assert!(matches!(error, JournalError::IdentityInUse { .. }), "{error}");
    // Without a named loop_ts two grants in the same instant still get distinct identities.
    named.loop_ts = None;
    let one = granted(journal.acquire(&named).expect("acquire"));
    named.tree = vec!["src/c/".into()];
    let two = granted(journal.acquire(&named).expect("acquire"));
    assert_ne!(one.identity, two.identity);
}

#[test]
fn size_triggered_compaction_keeps_the_journal_bounded_and_the_fences_of_live_leases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, JournalOptions { compact_threshold_bytes: Some(8 * 1024), ..options(&clock) });
    let keeper = granted(journal.acquire(&request("keep", "keep/", "agent-k")).expect("acquire"));
    let mut largest = 0;
    for i in 0..300 {
        let grant = granted(journal.acquire(&request(&format!("l{i}"), &format!("x/{i}/"), "agent")).expect("ok"));
        journal.release(&LeaseRef::lane(&grant.identity.lane), "agent").expect("release");
        largest = largest.max(std::fs::metadata(&path).expect("journal").len());
    }
    assert!(largest < 20 * 1024, "the journal stays bounded: {largest} bytes at most");
    assert!(journal.stats().expect("stats").last_compaction.is_some(), "it was compacted");
    let replayed = replay_path(&path).expect("replays").replayed;
    assert_eq!(replayed.state.live_count(), 1);
    assert_eq!(replayed.state.generation(&keeper.identity), Some(keeper.generation), "the fence survived");
}

#[test]
fn a_torn_or_foreign_head_snapshot_is_ignored_and_the_journal_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let options = JournalOptions { head_every_bytes: 1, ..options(&clock) };
    let writer = Journal::open(&path, options.clone());
    let grant = granted(writer.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    let head = dir.path().join("j.jsonl.head");
    assert!(head.exists(), "a head snapshot was written");
    std::fs::write(&head, b"{\"version\": 1, \"torn").expect("tear the head");
    let reader = Journal::open(&path, options.clone());
    assert_eq!(reader.live().expect("live")[0].identity, grant.identity);
    // A head that describes another journal is ignored: here the journal is replaced by an older
    // copy (one lease) after the head was written for two leases.
    let older = dir.path().join("older.jsonl");
    std::fs::copy(&path, &older).expect("copy");
    writer.acquire(&request("b", "docs/", "agent-b")).expect("acquire");
    assert_eq!(Journal::open(&path, options.clone()).live().expect("live").len(), 2, "the head is used");
    std::fs::rename(&older, &path).expect("replace the journal");
    let fresh = Journal::open(&path, options);
    assert_eq!(fresh.live().expect("live").len(), 1, "the stale head was not trusted");
}

#[test]
fn a_generation_or_seq_at_its_limit_is_refused_rather_than_handed_out_twice() {
    // Saturating once gave three grants in a row the same fencing generation. Such a value is
    // damage now (no keel issues one), so grants stop until it is reviewed, and it never becomes
    // the counter.
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(START_S));
    for (name, line, counter) in [
        (
            "g.jsonl",
            json!({"op": "CHECKPOINT", "leases": [], "generations": [{"generation": u64::MAX - 1, "lane": "z", "loop_ts": "t0"}]}),
            "generation",
        ),
        ("s.jsonl", json!({"op": "HALT", "seq": u64::MAX}), "seq"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}\n", to_line(line.as_object().expect("object")))).expect("write");
        let before = std::fs::read(&path).expect("read");
        let refused = Journal::open(&path, options(&clock)).acquire(&request("a", "a/", "agent-a"));
        assert!(matches!(&refused, Err(JournalError::Damaged { line_number: 1, .. })), "{counter}: {refused:?}");
        assert_eq!(std::fs::read(&path).expect("read"), before, "{name}: nothing appended");
    }
}

#[test]
fn looking_at_a_journal_creates_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keel_dir = dir.path().join(".keel");
    let path = keel_dir.join("lane-journal.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    // A look at a workspace with no journal yet: empty, and no `.keel/` left behind (it once
    // created the directory and a lock file wherever it was pointed).
    assert!(journal.live().expect("live").is_empty());
    assert_eq!(journal.stats().expect("stats").records, 0);
    assert!(journal.unreviewed().expect("review").is_empty());
    assert!(!keel_dir.exists(), "a read created {}", keel_dir.display());

    granted(journal.acquire(&request("a", "a/", "agent-a")).expect("acquire"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{bad\n"))
        .expect("append a bad line");
    let before = std::fs::read(&path).expect("journal");
    let looker = Journal::open(&path, options(&clock));
    assert_eq!(looker.live().expect("live").len(), 1);
    assert_eq!(looker.unreviewed().expect("review").len(), 1);
    assert_eq!(std::fs::read(&path).expect("journal"), before, "listing the damage is not accepting it");
}

#[test]
fn a_journal_creates_only_a_keel_directory_so_a_mistyped_path_starts_no_second_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(START_S));
    for typo in [dir.path().join(".kel/lane-journal.jsonl"), dir.path().join("wrok/.keel/lane-journal.jsonl")] {
        let refused = Journal::open(&typo, options(&clock)).acquire(&request("a", "a/", "agent-a"));
        assert!(refused.is_err(), "{}: {refused:?}", typo.display());
        let message = refused.expect_err("refused").to_string();
        let parent = typo.parent().expect("parent");
        assert!(message.contains(&parent.display().to_string()), "names the directory: {message}");
        assert!(!parent.exists(), "{}", parent.display());
    }
    let keel_dir = dir.path().join(".keel");
    let journal = Journal::open(&keel_dir.join("lane-journal.jsonl"), options(&clock));
    granted(journal.acquire(&request("a", "a/", "agent-a")).expect("the first lease creates .keel"));
    assert!(keel_dir.is_dir());
    // A directory that exists is used whatever its name.
    let plain = Journal::open(&dir.path().join("j.jsonl"), options(&clock));
    granted(plain.acquire(&request("b", "b/", "agent-b")).expect("acquire"));
}

#[test]
fn blank_names_unknown_modes_and_trees_outside_the_workspace_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let a = granted(journal.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    let before = std::fs::read(&path).expect("journal");
    let bad_requests = [
        AcquireRequest { lane: "  ".into(), ..request("", "docs/", "agent-b") },
        // A blank loop_ts once came back as "a lease ... is already live".
        AcquireRequest { loop_ts: Some(String::new()), ..request("b", "docs/", "agent-b") },
        AcquireRequest { mode: "bogus".into(), ..request("b", "docs/", "agent-b") },
        request("b", "/etc/", "agent-b"),
        request("b", "../x", "agent-b"),
    ];
    for bad in &bad_requests {
        let refused = journal.acquire(bad);
        assert!(matches!(refused, Err(JournalError::InvalidRequest(_))), "{bad:?}: {refused:?}");
    }
    let refused = journal.acquire(&request("b", "/etc/", "agent-b")).expect_err("outside");
    assert!(refused.to_string().contains("\"/etc/\""), "the entry is named: {refused}");
    for owner in ["", " "] {
        assert!(matches!(
            journal.adopt(&Identity::new("a", a.identity.loop_ts.as_str()), owner, HolderPid::This),
            Err(JournalError::InvalidRequest(_))
        ));
        assert!(matches!(journal.halt("a", owner, "stop"), Err(JournalError::InvalidRequest(_))));
        assert!(matches!(journal.spawn("a", owner, "make"), Err(JournalError::InvalidRequest(_))));
    }
    assert_eq!(std::fs::read(&path).expect("journal"), before, "nothing appended");
    // Globs, lock entries, an explicit mode and an empty lane (the arbiter picks) still work.
    let shared = AcquireRequest { mode: "Shared".into(), ..request("g", "docs/**", "agent-b") };
    granted(journal.acquire(&shared).expect("a glob"));
    granted(journal.acquire(&request("l", "lock://deploy", "agent-b")).expect("a lock entry"));
    let fresh = Journal::open(&dir.path().join("fresh.jsonl"), options(&clock));
    let picked =
        granted(fresh.acquire(&AcquireRequest { tree: Vec::new(), ..request("", "", "agent-c") }).expect("pick"));
    assert_eq!(picked.identity.lane, "main");
}

#[test]
fn a_reclaim_is_journaled_with_its_verdict_as_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let first = AcquireRequest { ttl_minutes: Some(1.0), ..request("a", "src/", "agent-a") };
    granted(journal.acquire(&first).expect("acquire"));
    clock.store(START_S + 61, Ordering::SeqCst);
    granted(journal.acquire(&request("b", "src/x", "agent-b")).expect("acquire"));
    let text = std::fs::read_to_string(&path).expect("journal");
    assert!(text.contains(r#""reason": "reclaimed: idle 61s, past its ttl of 60s""#), "{text}");
}

/// Found by a race sweep: a compaction restarted the grant counter from the largest live
/// generation, so the next tenure of a lane got the token its released predecessor had held, and
/// a late write from the predecessor (owner, lane and generation all matching) passed the gate.
#[test]
fn a_token_is_never_issued_twice_across_a_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let keeper = granted(journal.acquire(&request("docs", "docs/", "agent-k")).expect("acquire"));
    let first = granted(journal.acquire(&request("api", "src/", "agent-w")).expect("acquire"));
    assert!(first.generation > keeper.generation);
    journal.release(&LeaseRef::lane("api"), "agent-w").expect("release");
    journal.compact().expect("compact");
    // Another process, replaying the compacted file from scratch, hands out the next token.
    let again = Journal::open(&path, options(&clock));
    let second = granted(again.acquire(&request("api", "src/", "agent-w")).expect("acquire"));
    assert!(second.generation > first.generation, "{} after {}", second.generation, first.generation);
    let refused = again.acquire(&AcquireRequest {
        loop_ts: Some(keel_kernel::GENERATION_WATERMARK.to_owned()),
        ..request("x", "x/", "agent-x")
    });
    assert!(matches!(refused, Err(JournalError::InvalidRequest(_))), "{refused:?}");
}

/// Found by a race sweep: a compaction rewrote the journal from the fold, which holds a whole bad
/// last line back as a tail rather than a sentinel, so the damage vanished without a review and
/// the next acquire was granted.
#[test]
fn compaction_carries_a_whole_bad_last_line_as_damage_until_it_is_reviewed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    granted(journal.acquire(&request("a", "a/", "agent-a")).expect("acquire"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"op\": \"ACQUIRE\", \"lane\": \"b\"\n"))
        .expect("a damaged whole last line");
    let journal = Journal::open(&path, options(&clock));
    let damaged = |journal: &Journal| {
        matches!(journal.acquire(&request("c", "c/", "agent-c")), Err(JournalError::Damaged { .. }))
    };
    assert!(damaged(&journal));
    journal.compact().expect("compact");
    assert!(String::from_utf8_lossy(&std::fs::read(&path).expect("journal")).contains("\\\"lane\\\": \\\"b\\\""));
    let reopened = Journal::open(&path, options(&clock));
    assert!(damaged(&reopened), "compaction erased the damage");
    assert_eq!(reopened.accept_review("operator").expect("review").lines.len(), 1);
    granted(reopened.acquire(&request("c", "c/", "agent-c")).expect("acquire after the review"));
}

/// A compaction killed mid-way leaves a temporary copy of the journal (up to its whole size);
/// the next compaction removes such leftovers, and nothing else.
#[test]
fn compaction_removes_the_temporaries_of_killed_compactions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    granted(journal.acquire(&request("a", "a/", "agent-a")).expect("acquire"));
    let leftover = dir.path().join(".j.jsonl.00112233445566778899aabbccddeeff.tmp");
    let unrelated = dir.path().join(".j.jsonl.backup.tmp");
    std::fs::write(&leftover, b"half a compaction").expect("leftover");
    std::fs::write(&unrelated, b"someone else's").expect("unrelated");
    journal.compact().expect("compact");
    assert!(!leftover.exists());
    assert!(unrelated.exists());
}

/// Found by a disk-full sweep: an append past the compaction threshold compacts in the same
/// operation, and when the compaction failed for want of room for its copy, the acquire or
/// release, already durable, reported failure (exit 4) although it had happened.
#[test]
fn a_failed_automatic_compaction_does_not_fail_the_durable_operation_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    // Every new file fails: the compaction's temporary copy (and the head snapshot, derived).
    let storage = keel_fs::FailAfter::sticky(keel_fs::OsStorage, 0).only(keel_fs::seam::Op::CreateNew);
    let options = JournalOptions { compact_threshold_bytes: Some(1), ..options(&clock) };
    let journal = Journal::with_storage(&storage, &path, options.clone());
    let grant = granted(journal.acquire(&request("a", "a/", "agent-a")).expect("the grant is durable"));
    granted(journal.acquire(&request("b", "b/", "agent-b")).expect("and so is the next"));
    journal.release(&LeaseRef::lane("a"), "agent-a").expect("the release is durable");
    assert!(storage.tripped(), "the compaction was tried and failed");
    let live = Journal::open(&path, options).live().expect("live");
    assert_eq!(live.iter().map(|l| l.identity.lane.as_str()).collect::<Vec<_>>(), ["b"]);
    assert!(grant.generation > 0);
}

/// Found by a hostile-input sweep: the checkpoint holds every live lease on one line, and with
/// enough large trees it outgrew the readers' 16 MiB line limit: the rename happened, and every
/// later command failed on the journal it left.
#[test]
fn a_compaction_whose_checkpoint_no_reader_could_read_is_refused_before_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let options = JournalOptions { compact_threshold_bytes: None, ..options(&clock) };
    // Forty leases of 440 KB each, as another writer might have left them (written directly:
    // granting them one by one takes a minute in a debug build).
    let long = "x".repeat(440_000);
    let mut lines = String::new();
    for i in 0..40 {
        let lease = json!({"lane": format!("l{i}"), "loop_ts": format!("t{i}"), "tree": [format!("d{i}/{long}")]});
        let record =
            json!({"op": "ACQUIRE", "seq": i + 1, "lane": format!("l{i}"), "loop_ts": format!("t{i}"), "lease": lease});
        lines.push_str(&to_line(record.as_object().expect("object")));
        lines.push('\n');
    }
    std::fs::write(&path, lines).expect("write the journal");
    let journal = Journal::open(&path, options.clone());
    let before = std::fs::read(&path).expect("journal");
    let refused = journal.compact();
    assert!(matches!(refused, Err(JournalError::CompactTooLong { .. })), "{refused:?}");
    assert_eq!(std::fs::read(&path).expect("journal"), before);
    granted(Journal::open(&path, options).acquire(&request("n", "n/", "agent-n")).expect("still readable"));
}

/// Found by a hostile-input sweep: a journal whose records are separated by `\r` (a CR-only
/// writer) ended in a "line" that looked like a crashed writer's fragment; the next writer
/// excused it automatically, lane b's lease vanished, and a colliding grant went through.
#[test]
fn a_last_line_holding_a_carriage_return_is_damage_not_a_fragment_to_excuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    std::fs::write(
        &path,
        "{\"op\":\"ACQUIRE\",\"seq\":1,\"loop_ts\":\"t1\",\"lane\":\"a\",\"tree\":[\"src/\"]}\n\
         {\"op\":\"ACQUIRE\",\"seq\":2,\"loop_ts\":\"t2\",\"lane\":\"b\",\"tree\":[\"lib/\"]}\r\
         {\"op\":\"HEARTBEAT\",\"seq\":3,\"loop_ts\":\"t2\",\"lane\":\"b\"}\r",
    )
    .expect("write");
    let journal = Journal::open(&path, options(&clock));
    let refused = journal.acquire(&request("z", "lib/x", "agent-z"));
    assert!(matches!(refused, Err(JournalError::Damaged { line_number: 2, .. })), "{refused:?}");
    assert!(replay_path(&path).expect("read").terminated, "verify calls it whole, not cut short");
}

/// Found by a hostile-input sweep: the collision check compares every entry with every entry of
/// each live lease, and a request of 40,000 entries held the writer lock for 12 s.
#[test]
fn a_tree_of_more_entries_than_the_limit_is_refused_before_the_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&dir.path().join("j.jsonl"), options(&clock));
    let max = keel_kernel::tree::TREE_ENTRIES_MAX;
    let tree = |n: usize| (0..n).map(|i| format!("d{i}/")).collect::<Vec<_>>();
    let refused = journal.acquire(&AcquireRequest { tree: tree(max + 1), ..request("a", "unused/", "agent-a") });
    assert!(matches!(&refused, Err(JournalError::InvalidRequest(why)) if why.contains("at most")), "{refused:?}");
    granted(
        journal.acquire(&AcquireRequest { tree: tree(max), ..request("a", "unused/", "agent-a") }).expect("acquire"),
    );
}

/// A process that keeps its journal open (the MCP server) folded a run of damaged lines again on
/// every call: the cache resumed before the first of them with a state that had already counted
/// it, so the damage, the records and `grants_stopped.more` grew with each look.
#[test]
fn a_journal_kept_open_counts_a_run_of_damaged_lines_once_however_often_it_looks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    granted(journal.acquire(&request("a", "src/a/", "agent-a")).expect("acquire"));
    let mut text = std::fs::read_to_string(&path).expect("journal");
    text.push_str("{\"op\": \"ACQUIRE\", \"lane\": \"x\"\nnot json\nalso not json\n");
    std::fs::write(&path, &text).expect("damage");
    let first = journal.stats().expect("stats");
    assert_eq!((first.records, first.corrupt), (3, 3), "{first:?}");
    for _ in 0..3 {
        let again = journal.stats().expect("stats");
        assert_eq!(
            (again.records, again.corrupt, again.unreviewed_corrupt),
            (first.records, first.corrupt, first.unreviewed_corrupt)
        );
        assert_eq!(journal.live().expect("live").len(), 1);
    }
    let reopened = Journal::open(&path, options(&clock)).stats().expect("stats");
    assert_eq!((reopened.records, reopened.corrupt), (first.records, first.corrupt), "a fresh process agrees");
}

/// Readers take no lock: one that reads while another process appends and compacts (renaming a
/// new file over the journal) sees the journal of one moment, never a mix of the two files.
#[test]
fn a_reader_racing_appends_and_compactions_always_sees_a_whole_live_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let writer = Journal::open(&path, options(&clock));
    for i in 0..20 {
        granted(writer.acquire(&request(&format!("stable{i}"), &format!("s/{i}/"), "agent-a")).expect("acquire"));
    }
    let stable: std::collections::BTreeSet<String> = (0..20).map(|i| format!("stable{i}")).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let (path, clock, stable, done) = (path.clone(), Arc::clone(&clock), stable.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let reader = Journal::open(&path, options(&clock));
            let mut looks = 0_u32;
            while !done.load(Ordering::SeqCst) || looks == 0 {
                let live: std::collections::BTreeSet<String> =
                    reader.live().expect("a read").into_iter().map(|lease| lease.identity.lane).collect();
                let extra: Vec<&String> = live.difference(&stable).filter(|lane| !lane.starts_with("churn")).collect();
                assert!(stable.is_subset(&live) && extra.is_empty(), "a torn view: {live:?}");
                assert!(live.len() <= stable.len() + 1, "at most one churning lease is live: {live:?}");
                looks += 1;
            }
            looks
        })
    };
    for round in 0..60 {
        let lane = format!("churn{round}");
        granted(writer.acquire(&request(&lane, &format!("c/{round}/"), "agent-b")).expect("acquire"));
        writer.release(&LeaseRef::lane(&lane), "agent-b").expect("release");
        if round % 3 == 0 {
            writer.compact().expect("compact");
        }
    }
    done.store(true, Ordering::SeqCst);
    let looks = reading.join().expect("the reader saw whole live sets");
    assert!(looks > 0);
}

/// `holding::hold` beats the lease while the work runs, tells the holder when a beat finds it
/// gone, and releases it after; a lease that is gone is not released twice.
#[test]
fn held_work_is_beaten_told_when_its_lease_is_lost_and_released_after() {
    struct Seen(std::sync::Mutex<Vec<&'static str>>);
    impl keel_journal::holding::HoldEvents for Seen {
        fn lost(&self, _done: &std::sync::atomic::AtomicBool) {
            self.0.lock().expect("not poisoned").push("lost");
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let clock = Arc::new(AtomicU64::new(START_S));
    let journal = Journal::open(&path, options(&clock));
    let expiry = journal.options().expiry;
    let seen = Seen(std::sync::Mutex::new(Vec::new()));

    let grant = granted(journal.acquire(&request("a", "src/", "agent-a")).expect("acquire"));
    clock.store(START_S + 5, Ordering::SeqCst);
    let held = keel_journal::holding::hold(&journal, &grant, "agent-a", &expiry, 1, &seen, || {
        // Two beat periods of work: the lease is beaten at least once meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(2300));
        "done"
    });
    assert_eq!((held.value, held.lost), ("done", false));
    assert_eq!(held.released.expect("released"), Some(grant.identity.clone()));
    assert!(ops(&path).contains(&"HEARTBEAT".to_owned()), "beaten while the work ran: {:?}", ops(&path));

    let grant = granted(journal.acquire(&request("b", "lib/", "agent-a")).expect("acquire"));
    let held = keel_journal::holding::hold(&journal, &grant, "agent-a", &expiry, 1, &seen, || {
        journal.scavenge(&grant.identity, "operator", false).expect("scavenge");
        for _ in 0..50 {
            if !seen.0.lock().expect("not poisoned").is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    assert!(held.lost, "the next beat found the lease gone");
    assert_eq!(*seen.0.lock().expect("not poisoned"), ["lost"]);
    assert_eq!(held.released.expect("a release that finds nothing is no error"), None);
}
