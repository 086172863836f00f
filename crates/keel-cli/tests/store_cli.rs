//! `keel store ...` end to end: outputs, cursors across invocations, exit codes (0 ok, 1 not
//! found or damage found by `check`, 2 usage, 4 corrupt data).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn keel(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env("KEEL_ROOT", root)
        .env_remove("KEEL_JOURNAL")
        .output()
        .expect("keel runs")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let output = keel(root, args);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn json_of(root: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(root, args)).expect("one JSON object")
}

fn code(root: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = keel(root, args);
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn store_commands_page_events_by_cursor_across_invocations() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    assert!(ok(root, &["store", "init", "--runtime", "r", "--name", "Nightly"]).contains("Nightly"));
    let worker = json_of(
        root,
        &["store", "worker", "add", "--runtime", "r", "--worker", "w", "--request", r#"{"task": "lint"}"#, "--json"],
    );
    assert_eq!(worker["worker_ref"], json!({"runtime_id": "r", "worker_id": "w"}));
    assert_eq!(worker["request"], json!({"task": "lint"}));
    for n in 0..5 {
        let event = json_of(
            root,
            &["store", "event", "append", "--runtime", "r", "--worker", "w", "--json", &format!("{{\"n\": {n}}}")],
        );
        assert_eq!(event["id"], json!(n + 1));
    }
    let mut from: Option<u64> = None;
    let mut seen = Vec::new();
    loop {
        let mut args = vec!["store", "events", "--runtime", "r", "--limit", "2", "--json"];
        let from_text = from.map(|f| f.to_string());
        if let Some(from_text) = &from_text {
            args.extend(["--from", from_text.as_str()]);
        }
        let page = json_of(root, &args);
        assert_eq!(page["cursor"]["runtime_id"], json!("r"));
        for event in page["events"].as_array().expect("events") {
            seen.push(event["payload"]["n"].as_u64().expect("n"));
            assert!(event["id"].is_u64());
        }
        if page["has_more"] == json!(false) {
            break;
        }
        from = page["cursor"]["next_event_id"].as_u64();
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);

    let entry =
        json_of(root, &["store", "transcript", "append", "--runtime", "r", "--worker", "w", "--json", r#""hi""#]);
    assert_eq!(entry["seq"], json!(0));
    let page = json_of(root, &["store", "transcript", "read", "--runtime", "r", "--worker", "w", "--json"]);
    assert_eq!((page["total_items"].clone(), page["next_start"].clone()), (json!(1), Value::Null));
    assert!(
        ok(root, &["store", "worker", "status", "--runtime", "r", "--worker", "w", "--set", "done"]).contains("done")
    );
    let report = json_of(root, &["store", "check", "--runtime", "r", "--json"]);
    assert_eq!((report["clean"].clone(), report["events"].clone()), (json!(true), json!(5)));
    assert!(ok(root, &["store", "events", "--runtime", "r"]).contains("end of log"));
}

#[test]
fn store_exit_codes_distinguish_not_found_usage_and_corruption() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    ok(root, &["store", "event", "append", "--runtime", "r", "--json", "{}"]);
    assert_eq!(code(root, &["store", "events", "--runtime", "missing"]).0, Some(1));
    assert_eq!(
        code(root, &["store", "worker", "status", "--runtime", "r", "--worker", "nobody", "--set", "x"]).0,
        Some(1)
    );
    assert_eq!(code(root, &["store", "events", "--runtime", "r", "--limit", "100000"]).0, Some(2));
    assert_eq!(code(root, &["store", "event", "append", "--runtime", "r", "--json", "not json"]).0, Some(2));
    assert_eq!(code(root, &["store", "init", "--runtime", ""]).0, Some(2));

    // A bad line with a line after it: damage. Readers read around it and name it, writers exit 4
    // until a review, check exits 1.
    let log = root.join(".keel/store/runtimes").join(keel_store_encoded("r")).join("events.jsonl");
    let mut bytes = std::fs::read(&log).expect("log");
    bytes.extend_from_slice(b"{\"id\": 2, garbage\n{\"id\": 3}\n");
    std::fs::write(&log, bytes).expect("damaged");
    let page = json_of(root, &["store", "events", "--runtime", "r", "--json"]);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["damaged"][0]["line"], 2, "{page}");
    let (status, stderr) = code(root, &["store", "event", "append", "--runtime", "r", "--json", "{}"]);
    assert_eq!(status, Some(4), "{stderr}");
    assert!(stderr.contains("events.jsonl") && stderr.contains("line 2"), "{stderr}");
    let output = keel(root, &["store", "check", "--runtime", "r"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("problem:"));
}

/// `id-` + lowercase hex, as keel-store encodes ids (spelled out so the test pins the layout).
fn keel_store_encoded(id: &str) -> String {
    use std::fmt::Write as _;
    id.bytes().fold(String::from("id-"), |mut name, b| {
        write!(name, "{b:02x}").expect("writing to a String cannot fail");
        name
    })
}

#[test]
fn a_limit_of_0_is_a_usage_error_not_a_page_whose_cursor_never_advances() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    ok(root, &["store", "worker", "add", "--runtime", "r", "--worker", "w"]);
    ok(root, &["store", "event", "append", "--runtime", "r", "{}"]);
    // Both once answered an empty page with `has_more: true` and the cursor they were given.
    for args in [
        &["store", "events", "--runtime", "r", "--limit", "0", "--json"][..],
        &["store", "transcript", "read", "--runtime", "r", "--worker", "w", "--limit", "0", "--json"][..],
    ] {
        let output = keel(root, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--limit"), "the argument is named: {stderr}");
        let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
        assert_eq!(stdout["error"]["kind"], "usage", "an error, not a page: {stdout}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_keel_quietly_with_status_0_and_a_full_disk_is_still_an_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    // Enough output to fill a pipe's buffer, so keel is still writing when the reader leaves.
    let mut store = keel_store::FsRuntimeStore::open(&keel_store::default_root(root), "r").expect("store");
    let padding = "x".repeat(200);
    for n in 0..1_000 {
        store.append_event(None, json!({"n": n, "padding": padding})).expect("event");
    }
    let args = ["store", "events", "--runtime", "r", "--limit", "1000"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env("KEEL_ROOT", root)
        .env_remove("KEEL_JOURNAL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keel starts");
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().expect("piped"), &mut first).expect("some output");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("keel exits");
    // It once panicked ("failed printing to stdout", exit 101); `keel journal tail` exited 4.
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty(), "quietly: {}", String::from_utf8_lossy(&output.stderr));

    let full = std::fs::File::create("/dev/full").expect("/dev/full");
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env("KEEL_ROOT", root)
        .stdout(full)
        .output()
        .expect("keel runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "any other write error is an I/O error: {stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");
}

/// Found by a disk-full sweep: an event about a worker is durable before the worker's snapshot
/// is rewritten, and when that rewrite failed (no room for its copy) the append exited 4: a
/// retry then recorded the event twice. The rewrite is cut off here by a file-size limit that
/// lets the small event through but not the large snapshot.
#[test]
fn an_event_is_reported_appended_when_only_the_worker_snapshot_could_not_be_rewritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    let big = json!({"pad": "x".repeat(3000)}).to_string();
    ok(root, &["store", "worker", "add", "--runtime", "r", "--worker", "w", "--request", &big]);
    let limited = Command::new("prlimit")
        .args(["--fsize=1024", "--", env!("CARGO_BIN_EXE_keel"), "--root"])
        .arg(root)
        .args(["store", "event", "append", "--runtime", "r", "--worker", "w", "--json", r#"{"n": 1}"#])
        .env_remove("KEEL_ROOT")
        .output()
        .expect("prlimit (util-linux) runs");
    assert_eq!(limited.status.code(), Some(0), "{}", String::from_utf8_lossy(&limited.stderr));
    // The next append, in another process, brings the snapshot up to date.
    ok(root, &["store", "event", "append", "--runtime", "r", r#"{"n": 2}"#]);
    let page = json_of(root, &["store", "events", "--runtime", "r", "--json"]);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2), "{page}");
    let check = keel(root, &["store", "check", "--runtime", "r"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
}

/// Found by a hostile-input sweep: an event nested 127 deep was acknowledged, then read back as a
/// torn tail (one level deeper in its record, past the reader's limit), cut off, and its id given
/// again. It is refused now, before anything is written.
#[test]
fn an_event_too_deep_to_read_back_once_stored_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let (status, stderr) = code(root, &["store", "event", "append", "--runtime", "r", &deep]);
    assert_eq!(status, Some(2), "{stderr}");
    let (status, stderr) =
        code(root, &["store", "worker", "add", "--runtime", "r", "--worker", "w", "--request", &deep]);
    assert_eq!(status, Some(2), "{stderr}");
    ok(root, &["store", "event", "append", "--runtime", "r", r#"{"n": 1}"#]);
    let page = json_of(root, &["store", "events", "--runtime", "r", "--json"]);
    assert_eq!(page["events"][0]["id"], json!(1), "{page}");
    assert_eq!(keel(root, &["store", "check", "--runtime", "r"]).status.code(), Some(0));
}

/// Found by a sweep: after `sed -i '5s/.*/{garbage/' .keel/store/runtimes/<id>/events.jsonl`, every page,
/// every append and every transcript read exited 4, and `store check` reported 0 events.
#[test]
fn one_damaged_event_line_is_reported_pages_around_it_read_and_appends_wait_for_a_review() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    ok(root, &["store", "worker", "add", "--runtime", "r", "--worker", "w"]);
    for n in 1..=8 {
        ok(root, &["store", "event", "append", "--runtime", "r", &format!("{{\"n\": {n}}}")]);
    }
    ok(root, &["store", "transcript", "append", "--runtime", "r", "--worker", "w", r#"{"text": "ok"}"#]);
    let events = std::fs::read_dir(root.join(".keel/store/runtimes"))
        .expect("runtimes")
        .flatten()
        .map(|e| e.path().join("events.jsonl"))
        .find(|p| p.exists())
        .expect("an event log");
    let text = std::fs::read_to_string(&events).expect("log");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[4] = "{garbage";
    std::fs::write(&events, lines.join("\n") + "\n").expect("damage line 5");

    let check = keel(root, &["store", "check", "--runtime", "r", "--json"]);
    assert_eq!(check.status.code(), Some(1), "check reports damage");
    let report: Value = serde_json::from_slice(&check.stdout).expect("JSON report");
    assert_eq!(report["events"], 7, "the other events are counted: {report}");
    assert!(report.to_string().contains("line 5"), "the damage is named by its line: {report}");
    let first = json_of(root, &["store", "events", "--runtime", "r", "--limit", "3", "--json"]);
    assert_eq!(first["events"].as_array().map(Vec::len), Some(3), "a page before the damage reads");
    let last = json_of(root, &["store", "events", "--runtime", "r", "--from", "6", "--limit", "3", "--json"]);
    assert_eq!(last["events"].as_array().map(Vec::len), Some(3), "a page after the damage reads");
    ok(root, &["store", "transcript", "read", "--runtime", "r", "--worker", "w"]);
    let (status, stderr) = code(root, &["store", "event", "append", "--runtime", "r", r#"{"n": 9}"#]);
    assert_eq!(status, Some(4), "appends wait for a review: {stderr}");
    assert!(stderr.contains("line 5") && stderr.contains("store review"), "names the line and the way out: {stderr}");
    ok(root, &["store", "review", "--runtime", "r", "--accept", "--by", "ops"]);
    let event = json_of(root, &["store", "event", "append", "--runtime", "r", "--json", r#"{"n": 9}"#]);
    assert_eq!(event["id"], 9, "the damaged line keeps its id");
}

/// `runtimes/` once appeared at the workspace root, cluttering the repository: the store lives
/// under `.keel/store/` (`keel_store::default_root`), created on first use.
#[test]
fn the_store_lives_under_dot_keel_store_and_nothing_appears_at_the_workspace_root() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    ok(root, &["store", "event", "append", "--runtime", "r", "{}"]);
    assert!(root.join(".keel/store/runtimes").join(keel_store_encoded("r")).join("events.jsonl").is_file());
    let entries: Vec<_> = std::fs::read_dir(root).expect("root").flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(".keel")], "nothing else at the root");
    assert_eq!(keel_store::default_root(root), root.join(".keel/store"));
}

fn keel_with_stdin(root: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env("KEEL_ROOT", root)
        .env_remove("KEEL_JOURNAL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keel starts");
    let mut input = child.stdin.take().expect("piped");
    // Written from another thread: keel may answer (and exit) before reading it all.
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &stdin));
    let output = child.wait_with_output().expect("keel exits");
    let _ = writer.join().expect("the writer thread");
    output
}

/// A payload could only be an argument, so anything over about 128 KiB failed with "Argument list
/// too long" though the record limit is 256 KiB: payloads come from `--from FILE` or `--stdin`
/// too (as `keel fs write` takes its content), bounded by the runtime's record limit.
#[test]
fn a_200_kib_payload_is_appended_from_a_file_or_standard_input_and_one_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "r"]);
    let big = json!({"text": "x".repeat(200 * 1024)});
    let file = root.join("payload.json");
    std::fs::write(&file, big.to_string()).expect("payload file");
    let file_arg = file.to_str().expect("UTF-8 path");
    ok(root, &["store", "worker", "add", "--runtime", "r", "--worker", "w", "--from", file_arg]);
    let event =
        json_of(root, &["store", "event", "append", "--runtime", "r", "--worker", "w", "--from", file_arg, "--json"]);
    assert_eq!(event["payload"], big);
    let output = keel_with_stdin(
        root,
        &["store", "event", "append", "--runtime", "r", "--stdin", "--json"],
        big.to_string().as_bytes(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let args = ["store", "transcript", "append", "--runtime", "r", "--worker", "w", "--stdin"];
    let output = keel_with_stdin(root, &args, big.to_string().as_bytes());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let page = json_of(root, &["store", "events", "--runtime", "r", "--json"]);
    assert_eq!(page["events"][1]["payload"], big, "read back whole");
    let transcript = json_of(root, &["store", "transcript", "read", "--runtime", "r", "--worker", "w", "--json"]);
    assert_eq!(transcript["items"][0]["entry"], big);
    let worker =
        json_of(root, &["store", "worker", "status", "--runtime", "r", "--worker", "w", "--set", "done", "--json"]);
    assert_eq!(worker["request"], big);

    // Over the runtime's record limit (256 KiB): refused before anything is written, naming it.
    let huge = json!({"text": "x".repeat(300 * 1024)}).to_string();
    std::fs::write(&file, &huge).expect("payload file");
    let (status, stderr) = code(root, &["store", "event", "append", "--runtime", "r", "--from", file_arg]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("262144"), "names the limit: {stderr}");
    let output = keel_with_stdin(root, &["store", "event", "append", "--runtime", "r", "--stdin"], huge.as_bytes());
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    // Exactly one source.
    let (status, stderr) = code(root, &["store", "event", "append", "--runtime", "r", "{}", "--from", file_arg]);
    assert_eq!(status, Some(2), "{stderr}");
    let page = json_of(root, &["store", "events", "--runtime", "r", "--json"]);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2), "nothing more was appended");
}

/// Errors named a runtime by its directory (`runtimes/id-7231`), and `store check` printed Rust's
/// debug text ("`last_event_id` None, the event log says Some(2)").
#[test]
fn errors_name_runtimes_and_workers_by_id_and_check_prints_no_rust_debug_text() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    let (status, stderr) = code(root, &["store", "events", "--runtime", "r1"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("runtime \"r1\" not found") && !stderr.contains(&keel_store_encoded("r1")), "{stderr}");
    ok(root, &["store", "init", "--runtime", "r1"]);
    let (status, stderr) =
        code(root, &["store", "worker", "status", "--runtime", "r1", "--worker", "w9", "--set", "x"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("worker \"w9\"") && !stderr.contains(&keel_store_encoded("w9")), "{stderr}");

    ok(root, &["store", "worker", "add", "--runtime", "r1", "--worker", "w"]);
    ok(root, &["store", "event", "append", "--runtime", "r1", "--worker", "w", "{}"]);
    ok(root, &["store", "event", "append", "--runtime", "r1", "--worker", "w", "{}"]);
    ok(root, &["store", "event", "append", "--runtime", "r1", "{}"]);
    let runtime = root.join(".keel/store/runtimes").join(keel_store_encoded("r1"));
    let worker = runtime.join("workers").join(keel_store_encoded("w")).join("worker.json");
    let mut snapshot: Value = serde_json::from_slice(&std::fs::read(&worker).expect("worker.json")).expect("JSON");
    snapshot["last_event_id"] = Value::Null;
    std::fs::write(&worker, serde_json::to_vec_pretty(&snapshot).expect("JSON")).expect("written");
    let check = keel(root, &["store", "check", "--runtime", "r1"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "a problem: {stdout}");
    assert!(stdout.contains("problem:") && !stdout.contains("Some(") && !stdout.contains("None"), "{stdout}");
}

/// A store an older keel kept at the workspace root (`runtimes/`) is not read from there any more:
/// a runtime found only there is not "not found" without a word, but named with the way to move it.
#[test]
fn a_runtime_left_in_the_old_store_place_is_named_with_how_to_move_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    ok(root, &["store", "init", "--runtime", "old"]);
    std::fs::rename(root.join(".keel/store/runtimes"), root.join("runtimes")).expect("the old layout");
    let output = keel(root, &["store", "events", "--runtime", "old"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}", root.join("runtimes").display())), "the old place is named: {stderr}");
    assert!(stderr.contains("mv "), "and how to move it: {stderr}");
}
