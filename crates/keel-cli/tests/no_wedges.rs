//! No wedges: one bad value, line or clock never stops the fleet for good. Each test is a way an
//! adversarial user once wedged every agent of a workspace through the `keel` binary.

use crate::support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{code, json, now_s, stderr, stdout};

fn keel(root: &Path, args: &[&str]) -> Output {
    support::run(root, args, &[], "")
}

fn acquire(root: &Path, lane: &str, tree: &str, owner: &str) -> Output {
    keel(root, &["lease", "acquire", "--lane", lane, "--tree", tree, "--owner", owner, "--json"])
}

fn release(root: &Path, lane: &str, owner: &str) -> Output {
    keel(root, &["lease", "release", "--lane", lane, "--owner", owner])
}

fn append(root: &Path, bytes: &[u8]) {
    let path = root.join(".keel/lane-journal.jsonl");
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("journal");
    file.write_all(bytes).expect("append");
}

/// After damage: a holder can release, grants stop until a review, verify names the line, and
/// once reviewed grants go on with sane counters, compaction included.
fn damage_is_reviewable_and_never_wedges(root: &Path, what: &str) {
    let released = release(root, "a", "o1");
    assert_eq!(code(&released), 0, "{what}: a holder can always release: {}", stderr(&released));
    let stopped = acquire(root, "c", "c/", "o3");
    assert_eq!(code(&stopped), 4, "{what}: grants stop at damage: {}", stdout(&stopped));
    assert!(stderr(&stopped).contains("review"), "{what}: the refusal says the way out: {}", stderr(&stopped));
    let live = json(&keel(root, &["lease", "live", "--json"]));
    assert!(live["grants_stopped"].is_object(), "{what}: lease live says grants are stopped: {live}");
    let verify = keel(root, &["journal", "verify", "--json"]);
    assert_eq!(code(&verify), 1, "{what}: verify calls it damage");
    let report = json(&verify);
    assert_eq!(report["corrupt"].as_array().map(Vec::len), Some(1), "{what}: {report}");
    let review = keel(root, &["journal", "review", "--accept", "--by", "ops"]);
    assert_eq!(code(&review), 0, "{what}: {}", stderr(&review));
    let granted = acquire(root, "c", "c/", "o3");
    assert_eq!(code(&granted), 0, "{what}: grants go on after the review: {}", stderr(&granted));
    let seq = keel(root, &["journal", "next-seq"]);
    let seq: u64 = stdout(&seq).trim().parse().expect("a number");
    assert!(seq < 1000, "{what}: the damaged value is never the counter: next seq {seq}");
    let compact = keel(root, &["journal", "compact"]);
    assert_eq!(code(&compact), 0, "{what}: {}", stderr(&compact));
    let after = acquire(root, "d", "d/", "o4");
    assert_eq!(code(&after), 0, "{what}: grants go on after compaction: {}", stderr(&after));
    let live = json(&keel(root, &["lease", "live", "--json"]));
    assert!(live["grants_stopped"].is_null(), "{what}: {live}");
}

#[test]
fn an_out_of_range_counter_is_damage_never_the_next_counter_value() {
    for bad in [
        r#"{"op": "NOTE", "seq": 1e30}"#,
        r#"{"op": "NOTE", "seq": 18446744073709551615}"#,
        r#"{"op": "NOTE", "seq": "12"}"#,
        r#"{"op": "NOTE", "seq_watermark": -4}"#,
        r#"{"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": 18446744073709551615}]}"#,
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        assert_eq!(code(&acquire(root, "a", "a/", "o1")), 0);
        append(root, format!("{bad}\n").as_bytes());
        damage_is_reviewable_and_never_wedges(root, bad);
    }
}

#[test]
fn an_oversized_line_is_damage_skipped_in_bounded_memory_and_quoted_by_its_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    assert_eq!(code(&acquire(root, "a", "a/", "o1")), 0);
    let mut line = b"{\"op\": \"NOTE\", \"pad\": \"".to_vec();
    line.resize(17 * 1024 * 1024, b'x');
    line.extend_from_slice(b"\"}\n");
    append(root, &line);
    let verify = json(&keel(root, &["journal", "verify", "--json"]));
    let raw = verify["corrupt"][0]["raw"].as_str().unwrap_or_default().to_owned();
    assert!(
        raw.starts_with("{\"op\": \"NOTE\"") && raw.len() < 1024,
        "quoted by its first bytes: {}",
        &raw[..raw.len().min(200)]
    );
    assert!(verify["corrupt"][0]["bytes"].as_u64() > Some(17_000_000), "and its length: {verify}");
    damage_is_reviewable_and_never_wedges(root, "a 17 MiB line");
}

fn lease_line(lane: &str, tree: &str, body_extra: &str) -> String {
    format!(
        "{{\"lane\": \"{lane}\", \"lease\": {{\"holder\": \"ghost\", \"lane\": \"{lane}\", \"loop_ts\": \"t-{lane}\", \"mode\": \"exclusive\", \"pid\": null, \"tree\": [\"{tree}\"], \"ttl_minutes\": 1, \"grace_s\": 60{body_extra}}}, \"loop_ts\": \"t-{lane}\", \"op\": \"ACQUIRE\"}}\n"
    )
}

#[test]
fn a_stamp_from_the_future_is_not_believed_and_the_lease_ages_from_its_other_evidence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join(".keel")).expect("state dir");
    let hours_ago = keel_kernel::expiry::format_utc(now_s() - 3 * 3600);
    let future = format!(", \"acquired_at\": \"{hours_ago}\", \"heartbeat_at\": \"2099-01-01T00:00:00Z\"");
    std::fs::write(root.join(".keel/lane-journal.jsonl"), lease_line("a", "a/", &future)).expect("journal");
    let live = json(&keel(root, &["lease", "live", "--json"]));
    let verdict = &live["leases"][0]["verdict"];
    assert_eq!(verdict["verdict"], "clock_skew", "{live}");
    assert_eq!(verdict["dead"], true, "{live}");
    let text = stdout(&keel(root, &["lease", "live"]));
    assert!(text.contains("clock skew") && text.contains("2099-01-01T00:00:00Z"), "{text}");
    let scavenged = keel(root, &["lease", "scavenge", "--lane", "a", "--loop-ts", "t-a", "--only-dead"]);
    assert_eq!(code(&scavenged), 0, "{}", stdout(&scavenged));
}

#[test]
fn a_lease_with_no_readable_stamp_ages_from_its_loop_ts_and_is_reclaimable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join(".keel")).expect("state dir");
    let loop_ts = keel_kernel::expiry::format_utc(now_s() - 3 * 3600);
    let line = lease_line("a", "a/", ", \"acquired_at\": \"garbage\"").replace("t-a", &loop_ts);
    std::fs::write(root.join(".keel/lane-journal.jsonl"), line).expect("journal");
    let granted = acquire(root, "b", "a/x", "b");
    assert_eq!(code(&granted), 0, "never reclaimable is not an outcome: {}", stdout(&granted));
}

#[test]
fn a_refusal_says_why_its_blocker_is_not_reclaimable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    assert_eq!(code(&acquire(root, "a", "a/", "o1")), 0);
    let refused = acquire(root, "b", "a/x", "o2");
    assert_eq!(code(&refused), 1);
    let reason = json(&refused)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("not reclaimable") && reason.contains("idle"), "{reason}");
}

#[test]
fn a_zombie_holder_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    // A child this test never reaps: a zombie until the test ends.
    let zombie = Command::new("true").spawn().expect("spawn");
    let pid = zombie.id();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    assert!(state.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')), "a zombie: {state}");
    let pid = pid.to_string();
    let out = keel(root, &["lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "o", "--pid", &pid]);
    assert_eq!(code(&out), 2, "a zombie runs nothing, so it cannot hold a lease: {}", stdout(&out));
    drop(zombie);
}

#[test]
fn a_restarted_agent_re_acquiring_its_dead_lease_gets_it_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join(".keel")).expect("state dir");
    let hours_ago = keel_kernel::expiry::format_utc(now_s() - 3 * 3600);
    let line = lease_line("a", "a/", &format!(", \"acquired_at\": \"{hours_ago}\"")).replace("ghost", "agent-a");
    std::fs::write(root.join(".keel/lane-journal.jsonl"), line).expect("journal");
    let again = keel(
        root,
        &["lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "agent-a", "--loop-ts", "t-a", "--json"],
    );
    assert_eq!(code(&again), 0, "{} {}", stdout(&again), stderr(&again));
    assert_eq!(json(&again)["reclaimed"][0]["loop_ts"], "t-a", "the dead lease was reclaimed, journaled");
    // Another owner with that loop_ts is still told it is taken.
    let other =
        keel(root, &["lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "agent-b", "--loop-ts", "t-a"]);
    assert_ne!(code(&other), 0);
}

#[test]
fn a_lockfile_writer_killed_with_sigkill_does_not_block_the_next_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let file = root.join("tools.lock");
    assert_eq!(code(&keel(root, &["lock", "set", "--file", "tools.lock", "a", "--value", "1"])), 0);
    // A writer killed while holding the sidecar lock: its holder file names a pid now gone.
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead_pid = child.id();
    child.wait().expect("reaped");
    let lock_dir = root.join("tools.lock.lock");
    std::fs::create_dir(&lock_dir).expect("lock dir");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    let body = format!(
        "{{\"owner\": \"keel lock\", \"pid\": {dead_pid}, \"host\": \"{}\", \"acquired_unix_s\": {}, \"nonce\": \"00\"}}",
        host.trim(),
        now_s()
    );
    std::fs::write(lock_dir.join("holder.json"), body).expect("holder");
    let started = std::time::Instant::now();
    let set = keel(root, &["lock", "set", "--file", "tools.lock", "b", "--value", "2"]);
    assert_eq!(code(&set), 0, "a dead holder on this host is reclaimed at once: {}", stderr(&set));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "it did not wait out the stale age");
    assert!(std::fs::read_to_string(&file).expect("lockfile").contains("\"b\""));
}

/// keel run as an unprivileged user (`setpriv`, from util-linux, which `.ci/run` makes sure of).
fn keel_as_nobody(root: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs")
}

#[test]
fn reads_of_shared_documents_need_no_write_access() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    assert_eq!(code(&keel(root, &["lock", "set", "--file", "tools.lock", "a", "--value", "1"])), 0);
    assert_eq!(code(&keel(root, &["config", "set", "--file", "c.json", "--value", "{\"k\": 1}"])), 0);
    // World-readable files owned by another user, in a directory that user may enter.
    let open = |path: &Path, mode: u32| {
        let mut permissions = std::fs::metadata(path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, mode);
        std::fs::set_permissions(path, permissions).expect("chmod");
    };
    open(root, 0o755);
    for name in ["tools.lock", "c.json"] {
        open(&root.join(name), 0o644);
    }
    let get = keel_as_nobody(root, &["lock", "get", "--file", "tools.lock", "a"]);
    assert_eq!(code(&get), 0, "lock get: {}", stderr(&get));
    let get = keel_as_nobody(root, &["config", "get", "--file", "c.json", "--json"]);
    assert_eq!(code(&get), 0, "config get: {}", stderr(&get));
}

#[test]
fn lease_run_that_loses_its_lease_stops_its_command_at_its_next_heartbeat() {
    for (extra, stops) in [(&[][..], true), (&["--on-lost", "warn"][..], false)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let mut args = vec!["lease", "run", "--lane", "a", "--tree", "a/", "--owner", "o", "--heartbeat-s", "1"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "20"]);
        let mut run = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(&args)
            .current_dir(root)
            .env_remove("KEEL_ROOT")
            .env_remove("KEEL_JOURNAL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keel lease run");
        let started = std::time::Instant::now();
        let loop_ts = loop {
            let live = json(&keel(root, &["lease", "live", "--json"]));
            if let Some(ts) = live["leases"][0]["identity"]["loop_ts"].as_str() {
                break ts.to_owned();
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "the lease was never taken");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let scavenged = keel(root, &["lease", "scavenge", "--lane", "a", "--loop-ts", &loop_ts]);
        assert_eq!(code(&scavenged), 0, "{}", stdout(&scavenged));
        let lost = std::time::Instant::now();
        let deadline = lost + std::time::Duration::from_secs(if stops { 10 } else { 3 });
        let status = loop {
            if let Some(status) = run.try_wait().expect("status") {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if stops {
            let status = status.expect("keel stopped the command and exited");
            assert_eq!(status.code(), Some(124), "the lost-lease status");
        } else {
            assert!(status.is_none(), "--on-lost warn keeps the command running");
            run.kill().expect("kill");
            let _ = run.wait();
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut run.stderr.take().expect("stderr"), &mut err).expect("stderr");
        assert!(err.contains("lost"), "warned at once: {err}");
    }
}

/// `journal compact --dry-run` rebuilt the compaction itself and left out what `compact` adds: the
/// checkpoint's `ts` and the `REVIEW` that carries the excuses in force forward.
#[test]
fn compact_dry_run_prints_exactly_what_compact_then_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    assert_eq!(code(&acquire(root, "a", "a/", "o1")), 0);
    append(root, b"not a record\n");
    assert_eq!(code(&keel(root, &["journal", "review", "--accept", "--by", "ops"])), 0);
    assert_eq!(code(&acquire(root, "b", "b/", "o2")), 0);
    let dry = keel(root, &["journal", "compact", "--dry-run"]);
    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    let compact = keel(root, &["journal", "compact"]);
    assert_eq!(code(&compact), 0, "{}", stderr(&compact));
    let written = std::fs::read_to_string(root.join(".keel/lane-journal.jsonl")).expect("journal");
    // The checkpoint's `ts` is the time of writing and the carried review's `by` the process that
    // writes: the same fields, with other values.
    let without_ts = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|line| {
                let mut record: serde_json::Value = serde_json::from_str(line).expect("a record");
                for key in ["ts", "by"] {
                    if let Some(value) = record.as_object_mut().and_then(|r| r.remove(key)) {
                        assert!(value.is_string(), "{line}");
                        record[key] = format!("<{key}>").into();
                    }
                }
                record
            })
            .collect()
    };
    let (planned, wrote) = (without_ts(&stdout(&dry)), without_ts(&written));
    assert_eq!(planned, wrote, "dry run:\n{}\nwritten:\n{written}", stdout(&dry));
    assert!(wrote.iter().any(|r| r["op"] == "REVIEW"), "a review is carried forward: {written}");
    assert_eq!(wrote[0]["ts"], "<ts>", "the checkpoint is stamped: {written}");
}
