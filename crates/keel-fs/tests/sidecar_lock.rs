//! The sidecar-directory lock: busy while fresh, reclaimed once stale, and a duplicate or late
//! release never removes a later holder's lock.

use std::fs;

use keel_fs::lock::{HOLDER_FILE_NAME, Holder, unix_now_s};
use keel_fs::{FsError, Release, SidecarDirLock};

const TTL_S: u64 = 60;

fn holder_nonce(dir: &std::path::Path) -> String {
    let bytes = fs::read(dir.join(HOLDER_FILE_NAME)).expect("holder file");
    serde_json::from_slice::<Holder>(&bytes).expect("holder json").nonce
}

#[test]
fn the_holder_file_names_the_owner_and_a_fresh_lock_is_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("src");
    let now = unix_now_s();
    let mut lock = SidecarDirLock::try_acquire(&target, "agent-a", TTL_S, now).expect("acquire");
    assert_eq!(lock.dir(), dir.path().join("src.lock"));
    assert_eq!(holder_nonce(lock.dir()), lock.holder().nonce);
    let err = SidecarDirLock::try_acquire(&target, "agent-b", TTL_S, now).expect_err("busy");
    assert!(matches!(&err, FsError::LockBusy { .. }) && err.to_string().contains("agent-a"), "{err}");
    assert_eq!(lock.release().expect("release"), Release::Removed);
    assert!(!dir.path().join("src.lock").exists());
}

#[test]
fn a_duplicate_release_never_removes_a_later_holders_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("src");
    let now = unix_now_s();
    let mut first = SidecarDirLock::try_acquire(&target, "first", TTL_S, now).expect("acquire");
    assert_eq!(first.release().expect("release"), Release::Removed);
    let second = SidecarDirLock::try_acquire(&target, "second", TTL_S, now).expect("acquire");

    assert_eq!(first.release().expect("again"), Release::AlreadyReleased);
    drop(first);
    assert_eq!(holder_nonce(second.dir()), second.holder().nonce, "still held");
}

#[test]
fn a_late_release_by_a_reclaimed_holder_leaves_the_new_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("src");
    let mut sleepy = SidecarDirLock::try_acquire(&target, "sleepy", TTL_S, 1_000).expect("acquire");
    let mut thief = SidecarDirLock::try_acquire(&target, "thief", TTL_S, 1_000 + TTL_S + 1).expect("reclaim");
    assert!(thief.reclaimed_from().is_some_and(|s| s.contains("sleepy")));

    assert_eq!(sleepy.release().expect("release"), Release::NotOurs);
    assert_eq!(holder_nonce(thief.dir()), thief.holder().nonce, "thief still holds");
    assert_eq!(thief.release().expect("release"), Release::Removed);
}

#[test]
fn stale_reclaim_happens_once_and_the_reclaimed_lock_is_then_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("src");
    let lock_dir = SidecarDirLock::dir_for(&target);
    // A holder that died between mkdir and writing its holder file: judged by the dir's age.
    fs::create_dir(&lock_dir).expect("orphan lock dir");
    let now = unix_now_s();
    let err = SidecarDirLock::try_acquire(&target, "a", TTL_S, now).expect_err("young orphan");
    assert!(matches!(err, FsError::LockBusy { .. }), "{err}");

    let later = now + TTL_S * 2;
    let reclaimer = SidecarDirLock::try_acquire(&target, "a", TTL_S, later).expect("reclaim");
    assert!(reclaimer.reclaimed_from().is_some());
    // Same instant: the new holder is fresh, so no second reclaim happens.
    let err = SidecarDirLock::try_acquire(&target, "b", TTL_S, later).expect_err("fresh");
    assert!(matches!(err, FsError::LockBusy { .. }), "{err}");
    assert_eq!(holder_nonce(reclaimer.dir()), reclaimer.holder().nonce);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
    assert_eq!(leftovers.len(), 1, "no aside directories left");
}
