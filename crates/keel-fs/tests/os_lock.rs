//! The OS lock (`flock`): exclusive across open file descriptions, typed busy on timeout, released
//! when its holder dies, unaffected by atomic renames of the data file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_fs::{FsError, OsLock, write_atomic};

/// Set in the child process that holds the lock until killed.
const HOLDER_ENV: &str = "KEEL_FS_TEST_HOLD_KERNEL_LOCK";

#[test]
fn a_held_lock_cannot_be_taken_through_a_second_open_until_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_path = OsLock::path_for(&dir.path().join("journal.jsonl"));
    let held = OsLock::try_acquire(&lock_path).expect("first");
    let err = OsLock::try_acquire(&lock_path).expect_err("second");
    assert!(matches!(&err, FsError::LockBusy { waited_ms: 0, .. }), "{err}");
    assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "the busy error names the holder: {err}");
    drop(held);
    let _again = OsLock::try_acquire(&lock_path).expect("free after drop");
}

#[test]
fn the_timeout_form_waits_then_returns_a_typed_busy_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_path = dir.path().join("j.lock");
    let _held = OsLock::try_acquire(&lock_path).expect("first");
    let started = Instant::now();
    let err = OsLock::acquire_timeout(&lock_path, 150).expect_err("busy");
    let elapsed = started.elapsed();
    let FsError::LockBusy { waited_ms, .. } = err else {
        panic!("expected LockBusy, got {err}");
    };
    assert!(waited_ms >= 150, "waited {waited_ms} ms");
    assert!(elapsed < Duration::from_secs(5), "bounded wait: {elapsed:?}");
}

#[test]
fn blocking_and_timeout_forms_get_the_lock_once_it_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_path = dir.path().join("j.lock");
    let held = OsLock::try_acquire(&lock_path).expect("first");
    let waiter = {
        let lock_path = lock_path.clone();
        std::thread::spawn(move || OsLock::acquire_timeout(&lock_path, 10_000).map(|_| ()))
    };
    std::thread::sleep(Duration::from_millis(100));
    drop(held);
    waiter.join().expect("thread").expect("got it after release");
    let blocking = OsLock::acquire(&lock_path).expect("blocking form");
    drop(blocking);
}

#[test]
fn atomic_renames_of_the_data_file_do_not_break_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("head.json");
    let _held = OsLock::try_acquire(&OsLock::path_for(&data)).expect("lock");
    let _first = write_atomic(&data, b"1").expect("write");
    let _second = write_atomic(&data, b"2").expect("write");
    assert!(OsLock::try_acquire(&OsLock::path_for(&data)).is_err());
}

#[test]
fn the_lock_is_released_when_the_holder_process_is_killed() {
    if let Ok(lock_path) = std::env::var(HOLDER_ENV) {
        // Child mode: take the lock, say so, and wait to be killed.
        let _held = OsLock::try_acquire(Path::new(&lock_path)).expect("child takes the lock");
        std::fs::write(format!("{lock_path}.ready"), b"").expect("signal ready");
        std::thread::sleep(Duration::from_mins(1));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_path = dir.path().join("j.lock");
    let ready = dir.path().join("j.lock.ready");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "os_lock::the_lock_is_released_when_the_holder_process_is_killed", "--test-threads=1"])
        .env(HOLDER_ENV, &lock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn holder");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "holder never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = OsLock::try_acquire(&lock_path).expect_err("held by the child");
    assert!(err.to_string().contains(&format!("pid {}", child.id())), "{err}");

    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap");
    let _taken = OsLock::acquire_timeout(&lock_path, 5_000).expect("the kernel released it");
}
