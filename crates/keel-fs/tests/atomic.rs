//! Atomic write: replaced content, kept mode, clean failure at every step, old-or-new after power loss.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keel_fs::seam::{Op, Survives};
use keel_fs::{CrashSim, DirSync, FailAfter, FsError, OsStorage, write_atomic, write_atomic_with};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_atomic_replaces_content_keeps_mode_and_leaves_no_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("head.json");
    fs::write(&target, b"old content").expect("seed");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).expect("chmod");

    let report = write_atomic(&target, b"new").expect("atomic write");

    assert_eq!(fs::read(&target).expect("read"), b"new");
    let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(report.mode_kept, Some(0o640));
    assert_eq!(report.bytes, 3);
    assert_eq!(report.dir_sync, DirSync::Synced);
    assert_eq!(names_in(dir.path()), vec!["head.json"]);
}

#[test]
fn write_atomic_creates_a_missing_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("fresh.json");
    let report = write_atomic(&target, b"{}").expect("atomic write");
    assert_eq!(report.mode_kept, None);
    assert_eq!(fs::read(&target).expect("read"), b"{}");
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let err = write_atomic(Path::new("/"), b"x").expect_err("no file name");
    assert!(matches!(err, FsError::Invalid { .. }), "{err}");
}

#[test]
fn injected_failure_at_each_step_removes_the_temp_and_leaves_the_target_untouched() {
    let mut failed_steps = Vec::new();
    for fail_at in 0..64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("state.json");
        fs::write(&target, b"old").expect("seed");
        let storage = FailAfter::once(OsStorage, fail_at);

        let result = write_atomic_with(&storage, &target, b"new");

        if !storage.tripped() {
            let _report = result.expect("no failure injected");
            assert_eq!(fs::read(&target).expect("read"), b"new");
            break;
        }
        let err = result.expect_err("an injected failure is returned");
        let FsError::Io { op, .. } = &err else {
            panic!("step {fail_at}: expected an I/O error, got {err}");
        };
        failed_steps.push(*op);
        let content = fs::read(&target).expect("read");
        if *op == "fsync directory" {
            // Only the directory fsync follows the rename: the new content is visible but not
            // known to be durable, and the caller is told so.
            assert_eq!(content, b"new", "step {fail_at}");
        } else {
            assert_eq!(content, b"old", "step {fail_at} ({op}) touched the target");
        }
        assert_eq!(names_in(dir.path()), vec!["state.json"], "step {fail_at} ({op}) left a temp");
    }
    assert_eq!(
        failed_steps,
        vec!["stat", "create temporary", "fchmod", "write", "fsync", "rename", "fsync directory"],
        "every step was failed once"
    );
}

#[test]
fn a_dead_disk_at_any_step_never_tears_the_target() {
    for fail_at in 0..64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("state.json");
        fs::write(&target, b"old").expect("seed");
        let storage = FailAfter::sticky(OsStorage, fail_at);
        let result = write_atomic_with(&storage, &target, b"new");
        let content = fs::read(&target).expect("read");
        assert!(content == b"old" || content == b"new", "step {fail_at}: {content:?}");
        if !storage.tripped() {
            let _report = result.expect("no failure injected");
            break;
        }
        assert!(result.is_err(), "step {fail_at}: an error must not become success");
    }
}

#[test]
fn unsupported_directory_fsync_is_reported_and_other_errors_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("a.json");
    let einval = rustix::io::Errno::INVAL.raw_os_error();
    let storage = FailAfter::once(OsStorage, 0).only(Op::SyncDir).with_raw_os_error(einval);
    let report = write_atomic_with(&storage, &target, b"x").expect("EINVAL is not fatal");
    assert_eq!(report.dir_sync, DirSync::Unsupported);

    let storage = FailAfter::once(OsStorage, 0).only(Op::SyncDir);
    let err = write_atomic_with(&storage, &target, b"y").expect_err("EIO is fatal");
    assert!(err.to_string().contains("fsync directory"), "{err}");
}

#[test]
fn power_loss_at_every_operation_leaves_old_or_new_never_torn() {
    let target = Path::new("/ws/.keel/head.json");
    let old = b"old content that is longer than the new".to_vec();
    let new = b"new content".to_vec();
    let mut completed = false;
    for cut_at in 0..64 {
        let sim = CrashSim::new();
        sim.put_durable(target, &old, 0o600);
        let ops_before = sim.ops();
        sim.cut_power_at(ops_before + cut_at);

        let result = write_atomic_with(&sim, target, &new);

        for names in Survives::ALL {
            for data in Survives::ALL {
                let after = sim.crash(names, data);
                let content = after.read(target).expect("the target never disappears");
                assert!(
                    content == old || content == new,
                    "cut at {cut_at}, names {names:?}, data {data:?}: torn {content:?}"
                );
                if result.is_ok() {
                    assert_eq!(content, new, "acknowledged write lost (cut at {cut_at})");
                    assert_eq!(after.mode(target), Some(0o600), "mode kept");
                }
            }
        }
        if !sim.powered_off() {
            let _report = result.expect("power never cut");
            completed = true;
            break;
        }
    }
    assert!(completed, "the write finished within the explored cut points");
}
