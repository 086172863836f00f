//! Escapes: `..`, absolute paths, symlinked parents and targets, and symlinks swapped in by
//! another thread between the check and the commit. Refused, and the canary outside the root is
//! never read into an outcome nor written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_journal::LeaseBackend as _;
use keel_kernel::gate::Refusal;
use keel_mutator::{Expect, MutatorOptions, Outcome, Point};

use crate::support::{CANARY, Workspace, hash, request};

fn is_escape(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Forbidden { refusal: Refusal::Escapes { .. } })
}

#[test]
fn dot_dot_and_absolute_paths_are_forbidden_before_anything_is_opened() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("all", &["**/*"], "agent-a");
    let absolute = ws.outside.join("canary.txt");
    for path in ["../outside/canary.txt", "src/../../outside/canary.txt", absolute.to_str().expect("utf-8"), "src/\0x"]
    {
        let outcome = mutator.write(path, b"pwned", &request(&a, "agent-a", Expect::Any, "w")).expect("write");
        assert!(is_escape(&outcome), "{path:?}: {outcome:?}");
        let outcome = mutator.delete(path, &request(&a, "agent-a", Expect::Any, "d")).expect("delete");
        assert!(is_escape(&outcome), "{path:?}: {outcome:?}");
        let outcome = mutator.rename("src/x", path, &request(&a, "agent-a", Expect::Any, "r")).expect("rename");
        assert!(is_escape(&outcome), "{path:?}: {outcome:?}");
    }
    ws.assert_canary_untouched();
}

#[test]
fn a_symlinked_parent_directory_or_target_is_forbidden_and_the_canary_is_untouched() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("all", &["**/*"], "agent-a");
    std::os::unix::fs::symlink(&ws.outside, ws.root.join("link")).expect("symlink dir");
    std::os::unix::fs::symlink(ws.outside.join("canary.txt"), ws.root.join("src/evil")).expect("symlink file");
    let canary_hash = hash(CANARY);
    for (path, expect) in [
        ("link/canary.txt", canary_hash.clone()),
        ("link/canary.txt", Expect::Any),
        ("link/new.txt", Expect::Absent),
        ("src/evil", canary_hash.clone()),
        ("src/evil", Expect::Any),
    ] {
        let outcome = mutator.write(path, b"pwned", &request(&a, "agent-a", expect.clone(), "w")).expect("write");
        assert!(is_escape(&outcome), "{path:?}: {outcome:?}");
        if expect != Expect::Absent {
            let outcome = mutator.delete(path, &request(&a, "agent-a", expect, "d")).expect("delete");
            assert!(is_escape(&outcome), "{path:?}: {outcome:?}");
        }
    }
    assert!(mutator.hash("src/evil").is_err(), "hashing through a symlink reads outside the root");
    assert!(mutator.hash("link/canary.txt").is_err());
    ws.assert_canary_untouched();
}

/// A mutator whose hook runs `swap` on another thread, once, when the write reaches `at`.
fn swapping_at(ws: &Workspace, at: Point, swap: impl Fn() + Send + Sync + 'static) -> keel_mutator::Mutator {
    let fired = Arc::new(AtomicBool::new(false));
    let swap = Arc::new(swap);
    let hook: keel_mutator::StepHook = Arc::new(move |point| {
        if point == at && !fired.swap(true, Ordering::SeqCst) {
            let swap = Arc::clone(&swap);
            std::thread::spawn(move || swap()).join().expect("the swapping thread");
        }
    });
    ws.mutator_with(MutatorOptions { on_step: Some(hook), ..MutatorOptions::default() })
}

#[test]
fn a_target_swapped_for_a_symlink_between_check_and_commit_is_inode_swapped() {
    let ws = Workspace::new();
    std::fs::write(ws.root.join("src/x.rs"), b"old").expect("seed");
    let (target, canary) = (ws.root.join("src/x.rs"), ws.outside.join("canary.txt"));
    let mutator = swapping_at(&ws, Point::TempLogged, move || {
        std::fs::remove_file(&target).expect("remove target");
        std::os::unix::fs::symlink(&canary, &target).expect("plant symlink");
    });
    let a = ws.acquire("api", &["src/"], "agent-a");
    let outcome = mutator.write("src/x.rs", b"pwned", &request(&a, "agent-a", hash(b"old"), "w")).expect("write");
    assert_eq!(outcome, Outcome::InodeSwapped { path: "src/x.rs".into() });
    assert!(ws.root.join("src/x.rs").is_symlink(), "keel leaves the planted symlink alone");
    assert!(ws.scratch_files().is_empty());
    ws.assert_canary_untouched();
}

#[test]
fn a_parent_directory_swapped_for_a_symlink_between_check_and_commit_is_inode_swapped() {
    let ws = Workspace::new();
    std::fs::write(ws.root.join("src/api/x.rs"), b"old").expect("seed");
    let (dir, moved, outside) = (ws.root.join("src/api"), ws.root.join("src/api-moved"), ws.outside.clone());
    let mutator = swapping_at(&ws, Point::TempLogged, move || {
        std::fs::rename(&dir, &moved).expect("move the directory away");
        std::os::unix::fs::symlink(&outside, &dir).expect("plant symlink");
    });
    let a = ws.acquire("api", &["src/"], "agent-a");
    let outcome = mutator.write("src/api/x.rs", b"pwned", &request(&a, "agent-a", hash(b"old"), "w")).expect("write");
    assert_eq!(outcome, Outcome::InodeSwapped { path: "src/api/x.rs".into() });
    assert_eq!(ws.read("src/api-moved/x.rs").as_deref(), Some(&b"old"[..]));
    assert!(ws.scratch_files().is_empty(), "{:?}", ws.scratch_files());
    ws.assert_canary_untouched();
}

#[test]
fn a_file_created_at_an_absent_target_between_check_and_commit_is_not_clobbered() {
    let ws = Workspace::new();
    let target: PathBuf = ws.root.join("src/new.rs");
    let mutator = swapping_at(&ws, Point::CheckedLogged, move || std::fs::write(&target, b"theirs").expect("race"));
    let a = ws.acquire("api", &["src/"], "agent-a");
    let outcome = mutator.write("src/new.rs", b"mine", &request(&a, "agent-a", Expect::Absent, "w")).expect("write");
    assert_eq!(outcome, Outcome::InodeSwapped { path: "src/new.rs".into() });
    assert_eq!(ws.read("src/new.rs").as_deref(), Some(&b"theirs"[..]));
    assert!(ws.scratch_files().is_empty());
}

#[test]
fn no_lease_can_be_granted_between_the_last_check_and_the_commit() {
    // At the fenced point the gate has said yes; a competing acquire of the same region from
    // another journal handle must find the writer lock held until the rename is done.
    let ws = Workspace::new();
    std::fs::write(ws.root.join("src/x.rs"), b"old").expect("seed");
    let journal_path = ws.journal_path.clone();
    let competitor: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let seen = Arc::clone(&competitor);
    let mutator = swapping_at(&ws, Point::Fenced, move || {
        let other = keel_journal::Journal::open(
            &journal_path,
            keel_journal::JournalOptions { lock_timeout_ms: 200, ..keel_journal::JournalOptions::default() },
        );
        let request = keel_journal::AcquireRequest {
            lane: "b".into(),
            tree: vec!["src/".into()],
            owner: "agent-b".into(),
            force: true,
            ..keel_journal::AcquireRequest::default()
        };
        *seen.lock().expect("not poisoned") = Some(format!("{:?}", other.acquire(&request)));
    });
    let a = ws.acquire("api", &["src/"], "agent-a");
    let outcome = mutator.write("src/x.rs", b"new", &request(&a, "agent-a", hash(b"old"), "w")).expect("write");
    assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
    let competitor = competitor.lock().expect("not poisoned").clone().expect("the hook ran");
    assert!(competitor.contains("LockBusy"), "a grant slipped in between check and commit: {competitor}");
    assert_eq!(ws.read("src/x.rs").as_deref(), Some(&b"new"[..]));
}
