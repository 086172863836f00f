//! `keel store ...` end to end: outputs, cursors across invocations, exit codes (0 ok, 1 not
//! found or damage found by `check`, 2 usage, 4 corrupt data).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn keel(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
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

    // A bad line with a line after it: corruption, exit 4 for readers and writers, 1 for check.
    let log = root.join("runtimes").join(keel_store_encoded("r")).join("events.jsonl");
    let mut bytes = std::fs::read(&log).expect("log");
    bytes.extend_from_slice(b"{\"id\": 2, garbage\n{\"id\": 3}\n");
    std::fs::write(&log, bytes).expect("damaged");
    let (status, stderr) = code(root, &["store", "events", "--runtime", "r"]);
    assert_eq!(status, Some(4), "{stderr}");
    assert!(stderr.contains("events.jsonl") && stderr.contains("line 2"), "{stderr}");
    assert_eq!(code(root, &["store", "event", "append", "--runtime", "r", "--json", "{}"]).0, Some(4));
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
