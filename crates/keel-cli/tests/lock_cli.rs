//! `keel lock` and `keel config` end to end: outputs, `--json` shapes and exit codes (0 ok,
//! 1 absent section or generation conflict, 2 usage, 3 lock busy, 4 I/O or corrupt input).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .output()
        .expect("keel runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}; stderr {:?}", text(&out.stdout), text(&out.stderr)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[test]
fn lock_set_get_digest_and_unset_round_trip_and_keep_foreign_sections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tools.lock");
    let f = path_str(&file);
    std::fs::write(&file, br#"{"lock_version": 1, "other-tool": {"kept": [1]}}"#).expect("seed");
    let set = keel(&["lock", "set", "--file", f, "keel", "--value", r#"{"lanes": 3}"#]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let value = dir.path().join("value.json");
    std::fs::write(&value, b"[1, 2]").expect("value file");
    let from = keel(&["lock", "set", "--file", f, "pins", "--from", path_str(&value), "--json"]);
    assert_eq!(stdout_json(&from)["outcome"], json!("set"));
    let get = keel(&["lock", "get", "--file", f, "keel"]);
    assert_eq!(get.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<Value>(&get.stdout).expect("the section's JSON"), json!({"lanes": 3}));
    let get_json = keel(&["lock", "get", "--file", f, "pins", "--json"]);
    assert_eq!(stdout_json(&get_json)["value"], json!([1, 2]));
    let whole = keel(&["lock", "get", "--file", f]);
    assert_eq!(
        serde_json::from_slice::<Value>(&whole.stdout).expect("the document"),
        json!({"lock_version": 1, "other-tool": {"kept": [1]}, "keel": {"lanes": 3}, "pins": [1, 2]})
    );
    assert_eq!(keel(&["lock", "digest", "--file", f, "--set", "abc"]).status.code(), Some(0));
    let digest = keel(&["lock", "digest", "--file", f, "--json"]);
    assert_eq!(stdout_json(&digest)["inputs_digest"], json!("abc"));
    assert_eq!(text(&keel(&["lock", "digest", "--file", f]).stdout), "abc\n");
    let unset = keel(&["lock", "unset", "--file", f, "pins", "--json"]);
    assert_eq!(stdout_json(&unset)["was_present"], json!(true));
    let absent = keel(&["lock", "get", "--file", f, "pins"]);
    assert_eq!(absent.status.code(), Some(1), "an absent section exits 1");
    assert!(text(&absent.stderr).contains("no section \"pins\""), "{}", text(&absent.stderr));
    let absent_json = keel(&["lock", "get", "--file", f, "pins", "--json"]);
    assert_eq!(stdout_json(&absent_json)["present"], json!(false));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    assert_eq!(on_disk["other-tool"], json!({"kept": [1]}));
    assert_eq!(on_disk["inputs_digest"], json!("abc"));

    // Removing an absent section writes nothing, and creates no file where there was none.
    let before = std::fs::read(&file).expect("read");
    let again = keel(&["lock", "unset", "--file", f, "pins", "--json"]);
    assert_eq!(
        (stdout_json(&again)["was_present"].clone(), stdout_json(&again)["written"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(std::fs::read(&file).expect("read"), before);
    let missing = dir.path().join("missing.lock");
    let none = keel(&["lock", "unset", "--file", path_str(&missing), "pins"]);
    assert_eq!(none.status.code(), Some(0), "{}", text(&none.stderr));
    assert!(!missing.exists(), "unset created {}", missing.display());
}

#[test]
fn lock_exit_codes_are_2_for_usage_3_for_a_busy_lock_and_4_for_a_corrupt_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tools.lock");
    let f = path_str(&file);
    assert_eq!(keel(&["lock", "set", "--file", f, "s", "--value", "{not json"]).status.code(), Some(2));
    assert_eq!(keel(&["lock", "set", "--file", f, "lock_version", "--value", "1"]).status.code(), Some(2));
    assert_eq!(keel(&["lock", "set", "--file", f, "s"]).status.code(), Some(2), "--value or --from is required");
    let missing = dir.path().join("missing.json");
    assert_eq!(keel(&["lock", "set", "--file", f, "s", "--from", path_str(&missing)]).status.code(), Some(4));
    // Busy: another tool holds the sidecar lock, freshly.
    let lock_dir = dir.path().join("tools.lock.lock");
    std::fs::create_dir(&lock_dir).expect("mkdir");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let holder = json!({"owner": "other-tool", "pid": 1, "host": "h", "acquired_unix_s": now, "nonce": "00"});
    std::fs::write(lock_dir.join("holder.json"), holder.to_string()).expect("holder");
    let busy = keel(&["lock", "set", "--file", f, "s", "--value", "1", "--lock-timeout-ms", "100"]);
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy.stderr));
    assert!(text(&busy.stderr).contains("other-tool"), "the message names the holder: {}", text(&busy.stderr));
    std::fs::remove_dir_all(&lock_dir).expect("release");
    std::fs::write(&file, b"{\"lock_version\": 1,\n oops}").expect("corrupt");
    let corrupt = keel(&["lock", "get", "--file", f, "s"]);
    assert_eq!(corrupt.status.code(), Some(4));
    assert!(text(&corrupt.stderr).contains("line 2"), "{}", text(&corrupt.stderr));
    assert_eq!(keel(&["lock", "set", "--file", f, "s", "--value", "1"]).status.code(), Some(4));
    assert_eq!(std::fs::read(&file).expect("read"), b"{\"lock_version\": 1,\n oops}", "never overwritten");
}

#[test]
fn config_get_set_patch_print_the_snapshot_and_a_stale_generation_exits_1_with_both_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("config.json");
    let f = path_str(&file);
    let empty = keel(&["config", "get", "--file", f, "--json"]);
    assert_eq!(stdout_json(&empty), json!({"config": {}, "generation": 0}));
    let set = keel(&["config", "set", "--file", f, "--value", r#"{"a": 1}"#, "--expected-generation", "0", "--json"]);
    assert_eq!(stdout_json(&set), json!({"config": {"a": 1}, "generation": 1}));
    let patch = keel(&["config", "patch", "--file", f, "--value", r#"{"b": 2, "a": null}"#, "--json"]);
    assert_eq!(stdout_json(&patch), json!({"config": {"b": 2}, "generation": 2}));
    let stale = keel(&["config", "patch", "--file", f, "--value", r#"{"c": 3}"#, "--expected-generation", "1"]);
    assert_eq!(stale.status.code(), Some(1));
    let message = text(&stale.stderr);
    assert!(message.contains("expected 1") && message.contains("current 2"), "{message}");
    let stale_json = keel(&["config", "set", "--file", f, "--value", "{}", "--expected-generation", "7", "--json"]);
    assert_eq!(stale_json.status.code(), Some(1));
    assert_eq!(stdout_json(&stale_json), json!({"outcome": "conflict", "expected": 7, "current": 2}));
    let value = dir.path().join("config-value.json");
    std::fs::write(&value, br#"{"from": "file"}"#).expect("value");
    let from = keel(&["config", "set", "--file", f, "--from", path_str(&value)]);
    assert_eq!(from.status.code(), Some(0));
    assert_eq!(text(&from.stdout), "wrote generation 3: {\"from\":\"file\"}\n");
    assert_eq!(text(&keel(&["config", "get", "--file", f]).stdout), "generation 3: {\"from\":\"file\"}\n");
    assert_eq!(keel(&["config", "set", "--file", f, "--value", "[1]"]).status.code(), Some(2), "not an object");
    let held = keel_fs::OsLock::try_acquire(&keel_fs::OsLock::path_for(&file)).expect("hold the writer lock");
    let busy = keel(&["config", "patch", "--file", f, "--value", "{}", "--lock-timeout-ms", "100"]);
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy.stderr));
    assert_eq!(keel(&["config", "get", "--file", f]).status.code(), Some(0), "readers take no lock");
    drop(held);
    std::fs::write(&file, b"{").expect("corrupt");
    assert_eq!(keel(&["config", "get", "--file", f]).status.code(), Some(4));
}

#[test]
fn a_symlinked_lockfile_or_config_is_updated_at_its_target_and_stays_a_link() {
    // Both once replaced the link with a regular file, leaving the target stale, and locked
    // `<link>.lock` while writers of the target locked `<target>.lock`.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("real")).expect("mkdir");
    let target = dir.path().join("real/t.json");
    std::fs::write(&target, br#"{"lock_version": 1, "a": 1}"#).expect("seed");
    let link = dir.path().join("live.json");
    std::os::unix::fs::symlink("real/t.json", &link).expect("link");
    let set = keel(&["lock", "set", "--file", path_str(&link), "b", "--value", "2"]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    assert!(link.is_symlink(), "the link was replaced");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&target).expect("read")).expect("JSON");
    assert_eq!((on_disk["a"].clone(), on_disk["b"].clone()), (json!(1), json!(2)));

    let config_link = dir.path().join("config.json");
    std::os::unix::fs::symlink("real/config.json", &config_link).expect("dangling link");
    let set = keel(&["config", "set", "--file", path_str(&config_link), "--value", r#"{"x": 1}"#]);
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    assert!(config_link.is_symlink(), "the link was replaced");
    let get = keel(&["config", "get", "--file", path_str(&dir.path().join("real/config.json")), "--json"]);
    assert_eq!(stdout_json(&get)["config"], json!({"x": 1}), "{}", text(&get.stdout));
}

/// Found by a hostile-input sweep: a value nested 127 deep parses alone, so it was accepted, but
/// inside the document it is 128 deep, past every JSON reader's limit: the whole lockfile (or
/// config) became unreadable. It is refused now, and the file keeps its content.
#[test]
fn a_value_too_deep_to_read_back_once_stored_is_refused_and_the_file_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let lock = dir.path().join("tools.lock");
    let f = path_str(&lock);
    assert_eq!(keel(&["lock", "set", "--file", f, "a", "--value", "1"]).status.code(), Some(0));
    let before = std::fs::read(&lock).expect("lockfile");
    let refused = keel(&["lock", "set", "--file", f, "deep", "--value", &deep]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert_eq!(std::fs::read(&lock).expect("lockfile"), before);
    assert_eq!(keel(&["lock", "get", "--file", f, "a"]).status.code(), Some(0));

    let config = dir.path().join("config.json");
    let c = path_str(&config);
    assert_eq!(keel(&["config", "set", "--file", c, "--value", r#"{"a": 1}"#]).status.code(), Some(0));
    let before = std::fs::read(&config).expect("config");
    let deep_config = format!("{{\"a\": {}{}}}", "[".repeat(126), "]".repeat(126));
    let refused = keel(&["config", "set", "--file", c, "--value", &deep_config]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert_eq!(std::fs::read(&config).expect("config"), before);
    assert_eq!(keel(&["config", "get", "--file", c]).status.code(), Some(0));
}

/// Found by a hostile-input sweep: `--from` read the whole file, and a 16 MB value cost 5.6 GB
/// and 12 s before the document limit refused it. No more than the limit is read now.
#[test]
fn a_from_file_larger_than_any_document_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.json");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(keel_lockfile::DOCUMENT_BYTES_MAX_DEFAULT + 1).expect("a sparse file over the limit");
    let lock = dir.path().join("tools.lock");
    let out = keel(&["lock", "set", "--file", path_str(&lock), "s", "--from", path_str(&big)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("larger than"), "{}", text(&out.stderr));
    assert!(!lock.exists());
}
