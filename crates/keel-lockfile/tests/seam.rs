//! Power loss at every operation of a lockfile flush and of a config write, through keel-fs's
//! crash simulator (the documents live in the simulator; the locks on the real disk): after every
//! crash the document is the old or the new one, never torn, and config and generation agree.
//! Also a failing operation at every position of a flush.

use std::path::Path;

use keel_fs::seam::Survives;
use keel_fs::{CrashSim, FailAfter, OsStorage};
use keel_lockfile::{ConfigOptions, ConfigStore, Lockfile, LockfileOptions};
use serde_json::{Value, json};

fn options() -> LockfileOptions {
    LockfileOptions { lock_timeout_ms: 5_000, ..LockfileOptions::default() }
}

const OLD_LOCKFILE: &[u8] = br#"{"lock_version": 1, "other-tool": {"pinned": [1, 2]}, "keel": "old"}"#;

/// One flush that changes a section, adds one and sets the digest; `Ok` when it reported success.
fn flush_once(sim: &CrashSim, path: &Path) -> Result<(), String> {
    let lockfile = Lockfile::open_with(sim, path, options()).map_err(|e| e.to_string())?;
    lockfile.set_section("keel", &json!("new")).map_err(|e| e.to_string())?;
    lockfile.set_section("added", &json!({"n": 1})).map_err(|e| e.to_string())?;
    lockfile.set_inputs_digest("d1").map_err(|e| e.to_string())?;
    lockfile.flush().map(|_| ()).map_err(|e| e.to_string())
}

fn new_lockfile() -> Value {
    json!({"lock_version": 1, "other-tool": {"pinned": [1, 2]}, "keel": "new", "added": {"n": 1}, "inputs_digest": "d1"})
}

#[test]
fn power_cut_at_every_operation_of_a_flush_leaves_the_old_or_the_new_lockfile_never_torn() {
    let dir = tempfile::tempdir().expect("temp dir");
    for seeded in [true, false] {
        let path = dir.path().join(if seeded { "seeded.lock" } else { "fresh.lock" });
        let seed = |sim: &CrashSim| {
            if seeded {
                sim.put_durable(&path, OLD_LOCKFILE, 0o644);
            }
        };
        let dry = CrashSim::new();
        seed(&dry);
        flush_once(&dry, &path).expect("the flush runs whole without faults");
        let total = dry.ops();
        assert!(total >= 8, "a flush does real I/O ({total} operations)");
        let old: Option<Value> = seeded.then(|| serde_json::from_slice(OLD_LOCKFILE).expect("JSON"));
        let mut new = new_lockfile();
        if !seeded {
            new.as_object_mut().expect("an object").remove("other-tool");
        }
        for cut in 0..=total {
            let sim = CrashSim::new();
            seed(&sim);
            sim.cut_power_at(cut);
            let acknowledged = flush_once(&sim, &path).is_ok();
            assert_eq!(acknowledged, cut == total, "cut at {cut}/{total}: only an uncut flush succeeds");
            for names in Survives::ALL {
                for data in Survives::ALL {
                    let context = format!("seeded {seeded}, cut at {cut}/{total}, names {names:?}, data {data:?}");
                    let image = sim.crash(names, data);
                    let found = image.read(&path).map(|bytes| {
                        serde_json::from_slice::<Value>(&bytes)
                            .unwrap_or_else(|e| panic!("{context}: torn document ({e}): {bytes:?}"))
                    });
                    if acknowledged {
                        assert_eq!(found.as_ref(), Some(&new), "{context}: an acknowledged flush survives");
                    } else {
                        assert!(
                            found == old || found.as_ref() == Some(&new),
                            "{context}: neither old nor new: {found:?}"
                        );
                    }
                    // And writers go on: a flush on the rebooted image succeeds and keeps what is there.
                    let recovered =
                        Lockfile::open_with(&image, &path, options()).unwrap_or_else(|e| panic!("{context}: {e}"));
                    recovered.set_section("after", &json!(true)).expect("stage");
                    recovered.flush().unwrap_or_else(|e| panic!("{context}: {e}"));
                }
            }
        }
        assert!(!keel_fs::SidecarDirLock::dir_for(&path).exists(), "every failed flush released the lock");
    }
}

#[test]
fn a_failing_operation_at_every_position_of_a_flush_is_returned_and_the_next_flush_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.lock");
    std::fs::write(&path, OLD_LOCKFILE).expect("seed");
    let mut position = 0;
    loop {
        let failing = FailAfter::once(OsStorage, position);
        // A fault among the open's own reads is an open error; the flush's positions come after.
        let Ok(lockfile) = Lockfile::open_with(&failing, &path, options()) else {
            position += 1;
            continue;
        };
        lockfile.set_section("keel", &json!(position)).expect("stage");
        let flushed = lockfile.flush();
        let found: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("never torn");
        if !failing.tripped() {
            flushed.expect("no fault, no error");
            assert_eq!(found["keel"], json!(position));
            break;
        }
        let error = flushed.expect_err("an injected fault is reported");
        assert!(
            error.to_string().contains(&*path.display().to_string()) || error.to_string().contains(".tmp"),
            "{error}"
        );
        assert!(lockfile.has_staged(), "position {position}: the staged keys stay staged");
        lockfile.flush().unwrap_or_else(|e| panic!("position {position}: retry failed: {e}"));
        let found: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        assert_eq!(found["keel"], json!(position));
        assert_eq!(found["other-tool"], json!({"pinned": [1, 2]}));
        position += 1;
        assert!(position < 64, "a flush has a bounded number of operations");
    }
    assert!(position >= 6, "faults were injected at {position} positions");
}

#[test]
fn power_cut_at_every_operation_of_a_config_write_keeps_config_and_generation_in_agreement() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let options = ConfigOptions { lock_timeout_ms: 5_000, ..ConfigOptions::default() };
    let seed = |sim: &CrashSim| {
        let store = ConfigStore::open_with(sim, &path, options.clone());
        for (i, mode) in ["a", "b", "c"].iter().enumerate() {
            store.set(json!({"mode": mode, "i": i}), Some(i as u64)).expect("seed write");
        }
        // Make the seed durable as if written long ago.
        let bytes = sim.read(&path).expect("seeded");
        sim.put_durable(&path, &bytes, 0o644);
    };
    let old = (json!({"mode": "c", "i": 2}), 3);
    let write = |sim: &CrashSim, set: bool| {
        let store = ConfigStore::open_with(sim, &path, options.clone());
        if set {
            store.set(json!({"mode": "d"}), Some(3)).map(|s| (s.config, s.generation))
        } else {
            store.patch(&json!({"mode": "d", "i": null}), Some(3)).map(|s| (s.config, s.generation))
        }
    };
    for set in [true, false] {
        let dry = CrashSim::new();
        seed(&dry);
        let before = dry.ops();
        let new = write(&dry, set).expect("the write runs whole without faults");
        assert_eq!(new, (json!({"mode": "d"}), 4));
        let total = dry.ops() - before;
        for cut in 0..=total {
            let sim = CrashSim::new();
            seed(&sim);
            sim.cut_power_at(sim.ops() + cut);
            let acknowledged = write(&sim, set).is_ok();
            for names in Survives::ALL {
                for data in Survives::ALL {
                    let context = format!("set {set}, cut at {cut}/{total}, names {names:?}, data {data:?}");
                    let image = sim.crash(names, data);
                    let store = ConfigStore::open_with(&image, &path, options.clone());
                    let got = store.get().unwrap_or_else(|e| panic!("{context}: unreadable after the crash: {e}"));
                    let got = (got.config, got.generation);
                    if acknowledged {
                        assert_eq!(got, new, "{context}: an acknowledged write survives");
                    } else {
                        assert!(got == old || got == new, "{context}: config and generation disagree: {got:?}");
                    }
                    let next =
                        store.patch(&json!({"after": 1}), Some(got.1)).unwrap_or_else(|e| panic!("{context}: {e}"));
                    assert_eq!(next.generation, got.1 + 1);
                }
            }
        }
    }
}
