//! `keel fs` end to end: acquire a lease, write through the gate, retry, hash, refuse, release;
//! exit codes 0 (success or duplicate), 1 (refusal), 2 (usage).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn keel(root: &Path, args: &[&str], stdin: &str) -> Output {
    let journal = root.join(".keel/lane-journal.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(root)
        .arg("--journal")
        .arg(&journal)
        .args(args)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("keel runs");
    writer.join().expect("writer thread").expect("stdin written");
    output
}

fn json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?} (stderr {:?})", output.stderr))
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join(".keel")).expect("state dir");
    std::fs::create_dir_all(dir.path().join("src")).expect("src");
    dir
}

#[test]
fn acquire_write_retry_hash_refuse_and_release_end_to_end() {
    let dir = workspace();
    let root = dir.path();
    let grant = keel(root, &["lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "a", "--json"], "");
    assert_eq!(code(&grant), 0, "{grant:?}");
    let grant = json(&grant);
    let generation = grant["generation"].to_string();
    let loop_ts = grant["loop_ts"].as_str().expect("loop_ts").to_owned();
    let gate = |expect: &[&str], intent: &str| -> Vec<String> {
        let mut args: Vec<String> =
            ["--owner", "a", "--lane", "api", "--loop-ts", &loop_ts, "--generation", &generation, "--intent", intent]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        args.extend(expect.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |head: &[&str], tail: &[String], stdin: &str| {
        let mut args: Vec<&str> = head.to_vec();
        args.extend(tail.iter().map(String::as_str));
        keel(root, &args, stdin)
    };

    let written =
        run(&["fs", "write", "src/lib.rs", "--stdin", "--json"], &gate(&["--expect-absent"], "w1"), "hello\n");
    assert_eq!(code(&written), 0, "{written:?}");
    assert_eq!(json(&written)["outcome"], "written");
    assert_eq!(std::fs::read(root.join("src/lib.rs")).expect("written"), b"hello\n");

    let retry = run(&["fs", "write", "src/lib.rs", "--stdin", "--json"], &gate(&["--expect-absent"], "w1"), "hello\n");
    assert_eq!((code(&retry), json(&retry)["outcome"].clone()), (0, Value::from("duplicate")));

    let hashed = keel(root, &["fs", "hash", "src/lib.rs"], "");
    assert_eq!(code(&hashed), 0);
    let line = String::from_utf8_lossy(&hashed.stdout).into_owned();
    let hash = line.split_whitespace().next().expect("hash first on its line").to_owned();
    assert_eq!(hash, keel_mutator::content_hash(b"hello\n"));

    let stale_read = run(
        &["fs", "write", "src/lib.rs", "--stdin", "--json"],
        &gate(&["--expect-hash", &keel_mutator::content_hash(b"other")], "w2"),
        "x",
    );
    assert_eq!((code(&stale_read), json(&stale_read)["outcome"].clone()), (1, Value::from("precondition_failed")));

    let outside = run(&["fs", "write", "README.md", "--stdin", "--json"], &gate(&["--expect-any"], "w3"), "x");
    assert_eq!(code(&outside), 1);
    assert_eq!(json(&outside)["refusal"]["reason"], "outside_tree");
    assert_eq!(json(&outside)["refusal"]["tree"], serde_json::json!(["src/"]));

    let renamed =
        run(&["fs", "rename", "src/lib.rs", "src/main.rs", "--json"], &gate(&["--expect-hash", &hash], "r1"), "");
    assert_eq!((code(&renamed), json(&renamed)["outcome"].clone()), (0, Value::from("renamed")));
    let deleted = run(&["fs", "delete", "src/main.rs"], &gate(&["--expect-hash", &hash], "d1"), "");
    assert_eq!(code(&deleted), 0, "{deleted:?}");
    assert!(String::from_utf8_lossy(&deleted.stdout).starts_with("deleted src/main.rs"));

    let released = keel(root, &["lease", "release", "--lane", "api", "--owner", "a"], "");
    assert_eq!(code(&released), 0);
    let late = run(&["fs", "write", "src/lib.rs", "--stdin", "--json"], &gate(&["--expect-any"], "w4"), "late");
    assert_eq!(code(&late), 1);
    assert_eq!(json(&late)["outcome"], "stale_generation");
    assert_eq!(json(&late)["live"], Value::Null);
    assert!(!root.join("src/lib.rs").exists());
}

#[test]
fn fs_usage_errors_exit_2() {
    let dir = workspace();
    let gate = ["--owner", "a", "--lane", "api", "--generation", "1"];
    let mut missing_expect = vec!["fs", "write", "src/x", "--stdin"];
    missing_expect.extend(gate);
    assert_eq!(code(&keel(dir.path(), &missing_expect, "")), 2);
    let mut two_expects = missing_expect.clone();
    two_expects.extend(["--expect-any", "--expect-absent"]);
    assert_eq!(code(&keel(dir.path(), &two_expects, "")), 2);
    let mut bad_hash = missing_expect.clone();
    bad_hash.extend(["--expect-hash", "nothex"]);
    assert_eq!(code(&keel(dir.path(), &bad_hash, "")), 2);
    let mut bad_intent = missing_expect;
    bad_intent.extend(["--expect-any", "--intent", "../x"]);
    assert_eq!(code(&keel(dir.path(), &bad_intent, "")), 2);
}

#[test]
fn fs_hash_refuses_an_escape_and_reports_a_missing_file() {
    let dir = workspace();
    assert_eq!(code(&keel(dir.path(), &["fs", "hash", "../etc/passwd"], "")), 1);
    assert_eq!(code(&keel(dir.path(), &["fs", "hash", "src/missing"], "")), 4);
}

#[test]
fn a_wrong_owner_or_lane_is_refused_naming_it_not_as_a_stale_generation() {
    let dir = workspace();
    let root = dir.path();
    let grant = keel(root, &["lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "a", "--json"], "");
    assert_eq!(code(&grant), 0, "{grant:?}");
    let generation = json(&grant)["generation"].to_string();
    let write = |owner: &str, lane: &str| {
        let args =
            ["fs", "write", "src/x.rs", "--stdin", "--owner", owner, "--lane", lane, "--generation", &generation];
        keel(root, &[&args[..], &["--expect-any"]].concat(), "x")
    };
    // Both once said "stale generation: presented 1, live 1".
    let wrong_owner = write("b", "api");
    assert_eq!(code(&wrong_owner), 1);
    assert_eq!(String::from_utf8_lossy(&wrong_owner.stdout), "forbidden: the lease is held by \"a\", not \"b\"\n");
    let wrong_lane = write("a", "apx");
    assert_eq!(code(&wrong_lane), 1);
    assert_eq!(
        String::from_utf8_lossy(&wrong_lane.stdout),
        format!("forbidden: generation {generation} is the live lease with lane \"api\", not \"apx\"\n")
    );
    assert!(!root.join("src/x.rs").exists(), "refused: nothing written");
    assert_eq!(code(&write("a", "api")), 0, "the right name still writes");
}

#[test]
fn a_damaged_mutation_log_stops_fs_writes_until_keel_fs_review_accepts_it() {
    let dir = workspace();
    let root = dir.path();
    let grant = keel(root, &["lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "a", "--json"], "");
    assert_eq!(code(&grant), 0, "{grant:?}");
    let generation = json(&grant)["generation"].to_string();
    let write = |intent: &str| {
        let args = ["fs", "write", "src/x.rs", "--owner", "a", "--lane", "api", "--generation", &generation];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--expect-any", "--stdin", "--intent", intent]);
        keel(root, &args, "content\n")
    };
    assert_eq!(code(&write("w1")), 0);
    let log = root.join(".keel/mutations.jsonl");
    let mut bytes = std::fs::read(&log).expect("log");
    bytes[0] = b'#';
    std::fs::write(&log, &bytes).expect("damage the log");

    let refused = write("w2");
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(code(&refused), 4, "{stderr}");
    assert!(stderr.contains("line 1") && stderr.contains("keel fs review"), "{stderr}");
    let listed = keel(root, &["fs", "review", "--json"], "");
    assert_eq!(code(&listed), 0, "{listed:?}");
    let listed = json(&listed);
    assert_eq!((listed["first"][0]["line"].as_u64(), listed["accepted"].as_bool()), (Some(1), Some(false)), "{listed}");
    assert!(listed["damaged"].as_u64() > Some(1), "w1's later steps are orphaned too: {listed}");
    assert_eq!(std::fs::read(&log).expect("log"), bytes, "listing is not accepting");
    assert_eq!(code(&keel(root, &["fs", "review", "--accept", "--by", " "], "")), 2, "a blank reviewer");
    let accepted = keel(root, &["fs", "review", "--accept", "--by", "ops"], "");
    assert_eq!(code(&accepted), 0, "{accepted:?}");
    assert!(String::from_utf8_lossy(&accepted.stdout).contains("recorded a review by \"ops\""));
    assert_eq!(code(&write("w2")), 0);
}

#[test]
fn fs_with_another_journal_than_the_workspace_is_bound_to_is_a_usage_error() {
    let dir = workspace();
    let root = dir.path();
    // The first mutator binds the workspace to the journal it was given (the default here); a
    // write without a lease is refused, but it opened the mutator.
    let args = ["fs", "write", "src/x.rs", "--stdin", "--owner", "a", "--lane", "api", "--generation", "1"];
    let mut args = args.to_vec();
    args.extend(["--expect-any", "--intent", "w0"]);
    assert_eq!(code(&keel(root, &args, "x")), 1);
    let other = root.join("old-copy.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--root")
        .arg(root)
        .arg("--journal")
        .arg(&other)
        .args(["fs", "write", "src/x.rs", "--stdin", "--owner", "a", "--lane", "api", "--generation", "1"])
        .args(["--expect-any", "--intent", "w1"])
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .stdin(Stdio::null())
        .output()
        .expect("keel runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    // Every command reads the binding now, so the workspace rule refuses it before the gate does.
    assert!(stderr.contains("journal-binding") && stderr.contains("old-copy.jsonl"), "{stderr}");
}
