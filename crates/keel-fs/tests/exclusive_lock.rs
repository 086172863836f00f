//! The `O_EXCL` lock file: busy while fresh, stolen once stale by exactly one of any number of
//! racing contenders, released only while still ours.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keel_fs::lock::{Holder, unix_now_s};
use keel_fs::{ExclusiveFileLock, FsError, Release};

const TTL_S: u64 = 60;

fn stale_body(nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&Holder {
        owner: "crashed agent".to_owned(),
        pid: 999_999,
        host: "gone".to_owned(),
        acquired_unix_s: 1,
        nonce: nonce.to_owned(),
        start_ticks: None,
    })
    .expect("serialise")
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lease.lock")
        .collect()
}

#[test]
fn a_fresh_lock_is_busy_and_names_its_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lease.lock");
    let now = unix_now_s();
    let held = ExclusiveFileLock::try_acquire(&path, "agent-a", TTL_S, now).expect("acquire");
    let err = ExclusiveFileLock::try_acquire(&path, "agent-b", TTL_S, now + TTL_S).expect_err("busy");
    assert!(matches!(&err, FsError::LockBusy { .. }), "{err}");
    assert!(err.to_string().contains("agent-a"), "{err}");
    assert_eq!(held.release().expect("release"), Release::Removed);
    assert!(!path.exists());
}

#[test]
fn a_stale_lock_is_stolen_and_the_old_holder_cannot_release_the_thief_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lease.lock");
    let old = ExclusiveFileLock::try_acquire(&path, "sleepy", TTL_S, 1_000).expect("acquire");
    let thief = ExclusiveFileLock::try_acquire(&path, "thief", TTL_S, 1_000 + TTL_S + 1).expect("steal");
    assert!(thief.stolen_from().is_some_and(|s| s.contains("sleepy")));
    assert!(!old.is_still_held().expect("check"));
    assert!(thief.is_still_held().expect("check"));

    assert_eq!(old.release().expect("release"), Release::NotOurs);
    assert!(thief.is_still_held().expect("check"), "the thief's lock survived");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    assert_eq!(thief.release().expect("release"), Release::Removed);
}

#[test]
fn an_unparsable_body_is_judged_by_the_file_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lease.lock");
    fs::write(&path, b"{\"owner\":\"torn").expect("torn body");
    let now = unix_now_s();
    let err = ExclusiveFileLock::try_acquire(&path, "a", TTL_S, now).expect_err("young file");
    assert!(matches!(err, FsError::LockBusy { .. }), "{err}");
    let old = SystemTime::now() - Duration::from_secs(TTL_S * 2);
    fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(old)).expect("age the file");
    let lock = ExclusiveFileLock::try_acquire(&path, "a", TTL_S, now).expect("old file is stale");
    assert_eq!(lock.release().expect("release"), Release::Removed);
}

#[test]
fn exactly_one_of_ten_racing_stealers_wins_each_of_a_thousand_rounds() {
    const CONTENDERS: usize = 10;
    const ROUNDS: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Arc::new(dir.path().join("lease.lock"));
    let start = Arc::new(Barrier::new(CONTENDERS + 1));
    let done = Arc::new(Barrier::new(CONTENDERS + 1));
    let winners = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let now = unix_now_s();

    let threads: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let (path, start, done, winners, errors) =
                (path.clone(), start.clone(), done.clone(), winners.clone(), errors.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    start.wait();
                    match ExclusiveFileLock::try_acquire(&path, &format!("t{i}"), TTL_S, now) {
                        Ok(lock) => {
                            winners.fetch_add(1, Ordering::SeqCst);
                            // Keep the lock past `done` so a late contender still sees it held.
                            done.wait();
                            drop(lock);
                        }
                        Err(FsError::LockBusy { .. }) => {
                            done.wait();
                        }
                        Err(e) => {
                            // Recorded, not panicked: a panicking contender would leave the
                            // others waiting on the barrier forever.
                            errors.lock().unwrap_or_else(PoisonError::into_inner).push(format!("t{i}: {e}"));
                            done.wait();
                        }
                    }
                    // Second barrier use of `done`: every winner has released.
                    done.wait();
                }
            })
        })
        .collect();

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        fs::write(&*path, stale_body(&format!("round{round}"))).expect("stale lock");
        winners.store(0, Ordering::SeqCst);
        start.wait();
        done.wait();
        let round_winners = winners.load(Ordering::SeqCst);
        done.wait();
        let round_errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
        if round_winners != 1 || !round_errors.is_empty() {
            failures.push(format!("round {round}: {round_winners} winners, errors {round_errors:?}"));
            // Clean up whatever the failed round left so the next round starts from scratch.
            for name in leftovers(dir.path()) {
                let _ = fs::remove_file(dir.path().join(name));
            }
            let _ = fs::remove_file(&*path);
            continue;
        }
        assert!(!path.exists(), "round {round}: the winner released");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "round {round}");
    }
    for thread in threads {
        thread.join().expect("contender");
    }
    assert!(failures.is_empty(), "{} bad rounds, first: {:?}", failures.len(), failures.first());
}
