//! The lockfile in one process: fresh documents, section round trips, preservation of foreign
//! sections, refusal of files it cannot understand, the sidecar lock's wait, reclaim and release.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use keel_fs::seam::Op;
use keel_fs::{FailAfter, FsError, OsStorage, Release, SidecarDirLock};
use keel_kernel::merge::{DocumentError, SectionNameError};
use keel_lockfile::{Lockfile, LockfileError, LockfileOptions, acquire_sidecar};
use serde_json::{Value, json};

fn options() -> LockfileOptions {
    LockfileOptions { lock_timeout_ms: 5_000, ..LockfileOptions::default() }
}

fn open(path: &Path) -> Lockfile {
    Lockfile::open_with(OsStorage, path, options()).expect("open")
}

fn on_disk(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("lockfile exists")).expect("lockfile is JSON")
}

#[test]
fn a_missing_file_opens_as_a_fresh_document_and_nothing_is_created_until_flush() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let lockfile = open(&path);
    assert_eq!(lockfile.document(), json!({"lock_version": 1}));
    assert_eq!(lockfile.section::<Value>("anything").expect("valid name"), None);
    assert!(!path.exists());
    let report = lockfile.flush().expect("flush");
    assert!(report.written);
    assert_eq!(on_disk(&path), json!({"lock_version": 1}));
    assert!(!SidecarDirLock::dir_for(&path).exists(), "the sidecar lock is released after a flush");
}

#[test]
fn flush_keeps_sections_another_writer_flushed_in_between() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let ours = open(&path);
    let theirs = open(&path);
    ours.set_section("keel", &json!({"v": 1})).expect("stage");
    theirs.set_section("formatter", &json!({"v": 2})).expect("stage");
    ours.flush().expect("flush ours");
    theirs.flush().expect("flush theirs");
    assert_eq!(on_disk(&path), json!({"lock_version": 1, "keel": {"v": 1}, "formatter": {"v": 2}}));
    // The second flush refreshed the view with what the first wrote.
    assert_eq!(theirs.section::<Value>("keel").expect("name"), Some(json!({"v": 1})));
    // A later flush of ours re-applies only what ours staged since.
    ours.set_section("keel", &json!({"v": 3})).expect("stage");
    ours.flush().expect("flush again");
    assert_eq!(on_disk(&path)["formatter"], json!({"v": 2}));
    assert_eq!(on_disk(&path)["keel"], json!({"v": 3}));
}

#[test]
fn sections_this_process_does_not_know_survive_a_rewrite_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let foreign = json!({
        "lock_version": 1,
        "inputs_digest": "abc",
        "npm": {"packages": {"a": {"version": "1.0.0", "integrity": null}}, "list": [1, 2.5, "x", false]},
        "ünïcode-section": "kept",
    });
    fs::write(&path, serde_json::to_vec(&foreign).expect("json")).expect("seed");
    let lockfile = open(&path);
    lockfile.set_section("keel", &json!(1)).expect("stage");
    lockfile.flush().expect("flush");
    let mut want = foreign;
    want["keel"] = json!(1);
    assert_eq!(on_disk(&path), want);
    assert_eq!(lockfile.section_names(), ["keel", "npm", "ünïcode-section"]);
}

/// Recognises the document error a case expects.
type Expect = fn(&DocumentError) -> bool;

#[test]
fn invalid_json_a_non_object_and_a_newer_version_are_typed_errors_and_the_file_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let cases: [(&[u8], Expect); 3] = [
        (b"{\n  \"a\": 1,\n  oops\n}", |e| matches!(e, DocumentError::Syntax { line: 3, .. })),
        (b"[\"not\", \"an\", \"object\"]", |e| matches!(e, DocumentError::NotAnObject { .. })),
        (br#"{"lock_version": 2, "future": true}"#, |e| matches!(e, DocumentError::VersionTooNew { found: 2 })),
    ];
    for (bytes, is_expected) in cases {
        fs::write(&path, bytes).expect("seed");
        match Lockfile::open_with(OsStorage, &path, options()) {
            Err(LockfileError::Document { op: "open", path: named, source }) => {
                assert_eq!(named, path);
                assert!(is_expected(&source), "{source}");
            }
            other => panic!("expected a document error, got {other:?}"),
        }
        // A handle opened before the file went bad refuses to flush over it.
        fs::write(&path, br#"{"lock_version": 1}"#).expect("valid");
        let lockfile = open(&path);
        lockfile.set_section("keel", &json!(1)).expect("stage");
        fs::write(&path, bytes).expect("corrupt it");
        let error = lockfile.flush().expect_err("flush over a bad file");
        assert!(matches!(error, LockfileError::Document { op: "flush", .. }), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()), "the message names the path: {error}");
        assert_eq!(fs::read(&path).expect("read"), bytes, "the bad file is untouched");
        assert!(lockfile.has_staged(), "the staged keys stay staged");
    }
}

#[test]
fn reserved_keys_empty_and_oversized_names_cannot_be_staged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lockfile = open(&dir.path().join("tools.lock"));
    for name in ["lock_version", "inputs_digest"] {
        let error = lockfile.set_section(name, &json!(9)).expect_err("reserved");
        assert!(matches!(error, LockfileError::Name { source: SectionNameError::Reserved { .. }, .. }), "{error}");
        assert!(lockfile.remove_section(name).is_err());
        assert!(lockfile.section::<Value>(name).is_err());
    }
    assert!(lockfile.set_section("", &json!(1)).is_err());
    assert!(lockfile.set_section(&"s".repeat(257), &json!(1)).is_err());
    assert!(lockfile.set_section(&"s".repeat(256), &json!(1)).is_ok());
    assert!(lockfile.set_inputs_digest(&"d".repeat(1025)).is_err());
    assert_eq!(lockfile.document()["lock_version"], json!(1));
}

#[test]
fn section_decodes_into_a_caller_type_and_reports_absence_and_decode_errors_apart() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Pins {
        tools: Vec<String>,
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let lockfile = open(&path);
    lockfile.set_section("pins", &Pins { tools: vec!["rg".into()] }).expect("stage");
    lockfile.flush().expect("flush");
    let reread = open(&path);
    assert_eq!(reread.section::<Pins>("pins").expect("decodes"), Some(Pins { tools: vec!["rg".into()] }));
    assert_eq!(reread.section::<Pins>("absent").expect("absent is not an error"), None);
    let error = reread.section::<u32>("pins").expect_err("wrong type");
    assert!(matches!(&error, LockfileError::Decode { section, .. } if section == "pins"), "{error}");
}

#[test]
fn the_inputs_digest_is_set_by_a_flush_and_cleared_by_an_empty_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let lockfile = open(&path);
    lockfile.set_inputs_digest("blake3:00ff").expect("digest");
    assert_eq!(lockfile.inputs_digest().as_deref(), Some("blake3:00ff"));
    lockfile.flush().expect("flush");
    assert_eq!(on_disk(&path)["inputs_digest"], json!("blake3:00ff"));
    assert_eq!(open(&path).inputs_digest().as_deref(), Some("blake3:00ff"));
    lockfile.set_inputs_digest("").expect("clear");
    lockfile.flush().expect("flush");
    assert_eq!(on_disk(&path), json!({"lock_version": 1}));
}

#[test]
fn flush_is_repeatable_and_writes_nothing_when_the_file_already_holds_the_staged_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let lockfile = open(&path);
    lockfile.set_section("a", &json!(1)).expect("stage");
    assert!(lockfile.flush().expect("first").written);
    let mtime = fs::metadata(&path).expect("stat").modified().expect("mtime");
    let again = lockfile.flush().expect("second");
    assert!(!again.written, "nothing staged, nothing changed: {again:?}");
    assert_eq!(again.staged_keys, 0);
    lockfile.set_section("a", &json!(1)).expect("same value");
    assert!(!lockfile.flush().expect("third").written, "an unchanged value is not rewritten");
    assert_eq!(fs::metadata(&path).expect("stat").modified().expect("mtime"), mtime);
    lockfile.remove_section("a").expect("unset");
    assert!(lockfile.flush().expect("fourth").written);
    assert_eq!(on_disk(&path), json!({"lock_version": 1}));
}

fn plant_holder(path: &Path, acquired_unix_s: u64) {
    let lock_dir = SidecarDirLock::dir_for(path);
    fs::create_dir(&lock_dir).expect("mkdir lock");
    let holder = json!({"owner": "other-tool", "pid": 1, "host": "elsewhere", "acquired_unix_s": acquired_unix_s, "nonce": "00"});
    fs::write(lock_dir.join("holder.json"), serde_json::to_vec(&holder).expect("json")).expect("holder");
}

#[test]
fn a_lock_held_by_another_tool_makes_flush_fail_busy_after_the_timeout_and_keeps_the_staged_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    plant_holder(&path, keel_fs::lock::unix_now_s());
    let options = LockfileOptions { lock_timeout_ms: 150, ..LockfileOptions::default() };
    let lockfile = Lockfile::open_with(OsStorage, &path, options).expect("open");
    lockfile.set_section("keel", &json!(1)).expect("stage");
    let started = std::time::Instant::now();
    let error = lockfile.flush().expect_err("busy");
    assert!(error.is_lock_busy(), "{error}");
    assert!(started.elapsed().as_millis() >= 150, "it waited the timeout");
    match &error {
        LockfileError::Fs(FsError::LockBusy { holder, waited_ms, .. }) => {
            assert!(holder.contains("other-tool"), "{holder}");
            assert!(*waited_ms >= 150);
        }
        other => panic!("{other:?}"),
    }
    assert!(!path.exists(), "nothing written while the lock is held");
    fs::remove_dir_all(SidecarDirLock::dir_for(&path)).expect("the other tool releases");
    lockfile.flush().expect("flush after release");
    assert_eq!(on_disk(&path)["keel"], json!(1));
}

#[test]
fn a_stale_lock_left_by_another_tool_is_reclaimed_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    plant_holder(&path, keel_fs::lock::unix_now_s() - 3_600);
    let lockfile = open(&path);
    lockfile.set_section("keel", &json!(1)).expect("stage");
    let report = lockfile.flush().expect("reclaimed");
    assert!(report.reclaimed_from.as_deref().is_some_and(|h| h.contains("other-tool")), "{report:?}");
    assert!(!SidecarDirLock::dir_for(&path).exists());
}

#[test]
fn a_duplicate_release_never_removes_a_later_holders_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let mut first = acquire_sidecar(&path, "first", 30, 1_000).expect("first");
    assert_eq!(first.release().expect("release"), Release::Removed);
    let later = acquire_sidecar(&path, "later", 30, 1_000).expect("later holder");
    assert_eq!(first.release().expect("again"), Release::AlreadyReleased);
    drop(first);
    assert!(later.dir().exists(), "the later holder still holds its lock");
    let busy = acquire_sidecar(&path, "third", 30, 50).expect_err("still held");
    assert!(matches!(busy, FsError::LockBusy { .. }));
    // A holder whose lock was reclaimed as stale finds it is not its own and leaves it alone.
    drop(later);
    let mut old = acquire_sidecar(&path, "old", 30, 1_000).expect("old holder");
    let an_hour_later = keel_fs::lock::unix_now_s() + 3_600;
    let mut reclaimer = SidecarDirLock::try_acquire(&path, "reclaimer", 30, an_hour_later).expect("reclaims");
    assert!(reclaimer.reclaimed_from().is_some_and(|h| h.contains("old")));
    assert_eq!(old.release().expect("release"), Release::NotOurs);
    assert_eq!(old.release().expect("again"), Release::AlreadyReleased);
    assert!(reclaimer.dir().exists(), "the reclaimer still holds its lock");
    assert_eq!(reclaimer.release().expect("own"), Release::Removed);
}

#[test]
fn one_lockfile_shared_between_threads_loses_no_section() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let lockfile = Arc::new(open(&path));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let lockfile = Arc::clone(&lockfile);
            std::thread::spawn(move || {
                for i in 0..10 {
                    lockfile.set_section(&format!("t{t}"), &json!(i)).expect("stage");
                    lockfile.flush().expect("flush");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let document = on_disk(&path);
    for t in 0..4 {
        assert_eq!(document[format!("t{t}")], json!(9));
    }
}

#[test]
fn an_io_error_during_flush_is_returned_and_leaves_the_old_file_and_the_staged_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    fs::write(&path, br#"{"lock_version": 1, "other": true}"#).expect("seed");
    let failing = FailAfter::once(OsStorage, 0).only(Op::Rename);
    let lockfile = Lockfile::open_with(&failing, &path, options()).expect("open");
    lockfile.set_section("keel", &json!(1)).expect("stage");
    let error = lockfile.flush().expect_err("rename fails");
    assert!(matches!(error, LockfileError::Fs(FsError::Io { op: "rename", .. })), "{error}");
    assert!(failing.tripped());
    assert_eq!(on_disk(&path), json!({"lock_version": 1, "other": true}));
    assert!(!SidecarDirLock::dir_for(&path).exists(), "the lock is released on error");
    assert!(lockfile.has_staged());
    lockfile.flush().expect("the retry succeeds");
    assert_eq!(on_disk(&path), json!({"lock_version": 1, "other": true, "keel": 1}));
    let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
}

#[test]
fn documents_and_sections_beyond_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let small = LockfileOptions { document_bytes_max: 64, ..options() };
    let lockfile = Lockfile::open_with(OsStorage, &path, small.clone()).expect("open");
    let error = lockfile.set_section("big", &"x".repeat(100)).expect_err("too large");
    assert!(matches!(error, LockfileError::TooLarge { op: "set section", .. }), "{error}");
    // Many sections each under the limit: the flush refuses the whole.
    for i in 0..8 {
        lockfile.set_section(&format!("s{i}"), &"x".repeat(10)).expect("small section");
    }
    let error = lockfile.flush().expect_err("document too large");
    assert!(matches!(error, LockfileError::TooLarge { op: "flush", .. }), "{error}");
    assert!(!path.exists());
    fs::write(&path, format!("{{\"pad\": \"{}\"}}", "x".repeat(100))).expect("seed large");
    let error = Lockfile::open_with(OsStorage, &path, small).expect_err("refused unread");
    assert!(matches!(error, LockfileError::TooLarge { op: "open", .. }), "{error}");
}

/// A section's numbers are written and read back as the writer spelled them (an integer beyond
/// u64 once became a float in the file, and `-0` came back as `0`).
#[test]
fn numbers_in_a_section_are_written_and_read_back_as_spelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    let text = r#"{"big":123456789012345678901234567890,"f":1.10,"neg":-0}"#;
    let value: Value = serde_json::from_str(text).expect("JSON");
    let writer = open(&path);
    writer.set_section("s", &value).expect("set");
    writer.flush().expect("flush");
    let on_disk: String = fs::read_to_string(&path).expect("written").split_whitespace().collect();
    assert!(on_disk.contains(r#""s":{"big":123456789012345678901234567890,"f":1.10,"neg":-0}"#), "{on_disk}");
    let read = open(&path).section_value("s").expect("valid name").expect("present");
    assert_eq!(serde_json::to_string(&read).expect("serialise"), text);
}
