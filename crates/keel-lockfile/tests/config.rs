//! The config store in one process: generations, the compare-and-swap, merge patch, refusal of
//! files it cannot understand, and the writer lock's timeout.

use std::fs;

use keel_fs::{FsError, OsLock, OsStorage};
use keel_lockfile::{ConfigError, ConfigOptions, ConfigStore, Snapshot};
use serde_json::{Value, json};

fn store(path: &std::path::Path) -> ConfigStore {
    ConfigStore::open_with(OsStorage, path, ConfigOptions { lock_timeout_ms: 5_000, ..ConfigOptions::default() })
}

#[test]
fn a_store_never_written_reads_as_an_empty_object_at_generation_0_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    assert_eq!(store(&path).get().expect("get"), Snapshot { config: json!({}), generation: 0 });
    assert!(!path.exists());
}

#[test]
fn every_write_increases_the_generation_by_one_and_config_and_generation_share_one_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let config = store(&path);
    let first = config.set(json!({"a": 1, "b": {"c": 2}}), Some(0)).expect("set");
    assert_eq!(first.generation, 1);
    let second = config.patch(&json!({"b": {"c": null, "d": 3}, "e": [1]}), Some(1)).expect("patch");
    assert_eq!(second, Snapshot { config: json!({"a": 1, "b": {"d": 3}, "e": [1]}), generation: 2 });
    let third = config.set(json!({"z": true}), None).expect("unconditional set");
    assert_eq!(third.generation, 3);
    let fourth = config.patch(&json!({"y": 1}), None).expect("unconditional patch");
    assert_eq!(fourth, Snapshot { config: json!({"z": true, "y": 1}), generation: 4 });
    assert_eq!(config.get().expect("get"), fourth);
    let file: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(file, json!({"config": {"z": true, "y": 1}, "config_version": 1, "generation": 4}));
}

#[test]
fn a_stale_expected_generation_is_a_conflict_naming_both_numbers_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let config = store(&path);
    config.set(json!({"a": 1}), None).expect("set");
    config.set(json!({"a": 2}), None).expect("set");
    let before = fs::read(&path).expect("read");
    for error in [
        config.set(json!({"a": 3}), Some(1)).expect_err("stale set"),
        config.patch(&json!({"a": 3}), Some(5)).expect_err("future patch"),
    ] {
        match &error {
            ConfigError::GenerationConflict { expected, current: 2, path: named } => {
                assert!(*expected == 1 || *expected == 5);
                assert_eq!(named, &path);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(error.to_string().contains("expected") && error.to_string().contains("current 2"), "{error}");
    }
    assert_eq!(fs::read(&path).expect("read"), before);
}

#[test]
fn a_config_that_is_not_an_object_is_refused_whether_set_or_patched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let config = store(&path);
    assert!(matches!(config.set(json!([1]), None), Err(ConfigError::NotAnObject { op: "set", .. })));
    assert!(matches!(config.patch(&json!("text"), None), Err(ConfigError::NotAnObject { op: "patch", .. })));
    assert!(!path.exists());
    assert_eq!(config.get().expect("get").generation, 0);
}

#[test]
fn a_corrupt_or_newer_file_is_a_typed_error_with_a_position_and_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let cases: [&[u8]; 5] = [
        b"{\"generation\": 1,\n \"config\": {]\n}",
        b"[]",
        br#"{"generation": 1, "config": []}"#,
        br#"{"config": {}}"#,
        br#"{"generation": 1, "config": {}, "config_version": 9}"#,
    ];
    for bytes in cases {
        fs::write(&path, bytes).expect("seed");
        let config = store(&path);
        let read = config.get().expect_err("corrupt");
        assert!(matches!(read, ConfigError::Corrupt { op: "read", .. }), "{read}");
        assert!(read.to_string().contains(&path.display().to_string()), "{read}");
        assert!(matches!(config.set(json!({}), None), Err(ConfigError::Corrupt { op: "set", .. })));
        assert_eq!(fs::read(&path).expect("read"), bytes);
    }
    fs::write(&path, cases[0]).expect("seed");
    let message = store(&path).get().expect_err("corrupt").to_string();
    assert!(message.contains("line 2, column"), "{message}");
}

#[test]
fn keys_a_newer_writer_added_to_the_file_survive_a_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    fs::write(&path, br#"{"generation": 7, "config": {"a": 1}, "written_by": "other"}"#).expect("seed");
    let snapshot = store(&path).patch(&json!({"b": 2}), Some(7)).expect("patch");
    assert_eq!(snapshot, Snapshot { config: json!({"a": 1, "b": 2}), generation: 8 });
    let file: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(file["written_by"], json!("other"));
}

#[test]
fn a_writer_waits_for_the_lock_at_most_its_timeout_and_readers_never_wait() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    store(&path).set(json!({"a": 1}), None).expect("set");
    let held = OsLock::try_acquire(&OsLock::path_for(&path)).expect("hold the writer lock");
    let config =
        ConfigStore::open_with(OsStorage, &path, ConfigOptions { lock_timeout_ms: 100, ..ConfigOptions::default() });
    assert_eq!(config.get().expect("readers take no lock").generation, 1);
    let error = config.patch(&json!({"a": 2}), Some(1)).expect_err("busy");
    assert!(error.is_lock_busy(), "{error}");
    assert!(matches!(error, ConfigError::Fs(FsError::LockBusy { waited_ms, .. }) if waited_ms >= 100));
    drop(held);
    assert_eq!(config.patch(&json!({"a": 2}), Some(1)).expect("after release").generation, 2);
}

#[test]
fn documents_beyond_the_size_limit_are_refused_in_both_directions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let small =
        ConfigStore::open_with(OsStorage, &path, ConfigOptions { lock_timeout_ms: 1_000, document_bytes_max: 64 });
    let error = small.set(json!({"pad": "x".repeat(100)}), None).expect_err("too large to write");
    assert!(matches!(error, ConfigError::TooLarge { op: "set", .. }), "{error}");
    store(&path).set(json!({"pad": "x".repeat(100)}), None).expect("fits the default limit");
    assert!(matches!(small.get(), Err(ConfigError::TooLarge { op: "read", .. })));
}
