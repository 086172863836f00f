//! Every outcome of the gate through the real journal: the paused holder, trees, protected paths,
//! collisions, preconditions, idempotency, permissions, delete and rename.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use keel_journal::{AcquireOutcome, AcquireRequest, LeaseBackend};
use keel_kernel::Identity;
use keel_kernel::gate::Refusal;
use keel_mutator::{Expect, IntentId, MutateError, Outcome, PreState, Request};

use crate::support::{Workspace, hash, request};

#[test]
fn a_paused_holder_whose_region_was_regranted_is_stale_and_the_file_keeps_the_new_holders_content() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    // A pauses past its TTL; an operator (or the next acquire) scavenges it; B takes an
    // overlapping region and writes.
    ws.now_s.fetch_add(600, Ordering::SeqCst);
    assert!(
        mutator
            .journal()
            .scavenge(&Identity::new("api", a.identity.loop_ts.as_str()), "ttl", true)
            .expect("scavenge")
            .is_some()
    );
    let b = ws.acquire("handlers", &["src/api/"], "agent-b");
    assert!(b.generation > a.generation);
    let written = mutator.write("src/api/x.rs", b"B", &request(&b, "agent-b", Expect::Absent, "b-1")).expect("write");
    assert!(matches!(written, Outcome::Written { .. }), "{written:?}");

    let journal_before = std::fs::read(&ws.journal_path).expect("journal");
    let log_before = std::fs::read(mutator.log_path()).expect("log");
    let stale = mutator.write("src/api/x.rs", b"A", &request(&a, "agent-a", Expect::Any, "a-1")).expect("write");
    assert_eq!(stale, Outcome::StaleGeneration { presented: a.generation, live: Some(b.generation) });
    assert_eq!(ws.read("src/api/x.rs").as_deref(), Some(&b"B"[..]));
    // The refusal changed nothing: no journal record (no generation advanced), no log record.
    assert_eq!(std::fs::read(&ws.journal_path).expect("journal"), journal_before);
    assert_eq!(std::fs::read(mutator.log_path()).expect("log"), log_before);
    // And B's token is still good afterwards.
    let again = mutator.write("src/api/x.rs", b"B2", &request(&b, "agent-b", hash(b"B"), "b-2")).expect("write");
    assert!(matches!(again, Outcome::Written { .. }), "{again:?}");
}

#[test]
fn a_write_outside_the_holders_tree_but_inside_the_workspace_is_forbidden_naming_the_tree() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/api/"], "agent-a");
    let log_before = std::fs::read(mutator.log_path()).expect("log");
    let outcome = mutator.write("docs/guide.md", b"x", &request(&a, "agent-a", Expect::Absent, "w")).expect("write");
    assert_eq!(
        outcome,
        Outcome::Forbidden {
            refusal: Refusal::OutsideTree { path: "docs/guide.md".into(), tree: vec!["src/api/".into()] }
        }
    );
    assert!(outcome.to_string().contains("src/api/"), "{outcome}");
    assert_eq!(ws.read("docs/guide.md"), None);
    assert_eq!(std::fs::read(mutator.log_path()).expect("log"), log_before);
}

#[test]
fn the_state_directory_is_protected_even_from_a_lease_on_everything() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("all", &["**/*"], "agent-a");
    let outcome =
        mutator.write(".keel/mutations.jsonl", b"{}", &request(&a, "agent-a", Expect::Any, "w")).expect("write");
    assert!(matches!(outcome, Outcome::Forbidden { refusal: Refusal::Protected { .. } }), "{outcome:?}");
}

#[test]
fn another_holders_earlier_exclusive_region_is_forbidden_and_a_later_one_supersedes() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let b = ws.acquire("handlers", &["src/api/"], "agent-b");
    let forced = AcquireRequest {
        lane: "api".into(),
        tree: vec!["src/".into()],
        owner: "agent-a".into(),
        force: true,
        ..AcquireRequest::default()
    };
    let AcquireOutcome::Acquire(a) = mutator.journal().acquire(&forced).expect("acquire") else {
        panic!("force admits past a keyword lease")
    };
    let outcome = mutator.write("src/api/x.rs", b"A", &request(&a, "agent-a", Expect::Absent, "a")).expect("write");
    assert!(
        matches!(&outcome, Outcome::Forbidden { refusal: Refusal::Collides { holder, .. } } if holder == "agent-b"),
        "{outcome:?}"
    );
    assert!(matches!(
        mutator.write("src/main.rs", b"A", &request(&a, "agent-a", Expect::Absent, "a2")).expect("write"),
        Outcome::Written { .. }
    ));
    // B's generation is older than A's forced grant over the same region: B is superseded.
    let outcome = mutator.write("src/api/x.rs", b"B", &request(&b, "agent-b", Expect::Absent, "b")).expect("write");
    assert_eq!(outcome, Outcome::StaleGeneration { presented: b.generation, live: Some(a.generation) });
}

#[test]
fn a_changed_file_fails_the_precondition_naming_expected_and_actual() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    std::fs::write(ws.root.join("src/lib.rs"), b"theirs").expect("seed");
    let outcome =
        mutator.write("src/lib.rs", b"mine", &request(&a, "agent-a", hash(b"what I read"), "w")).expect("write");
    assert_eq!(
        outcome,
        Outcome::PreconditionFailed {
            path: "src/lib.rs".into(),
            expected: hash(b"what I read"),
            actual: PreState::Present { hash: keel_mutator::content_hash(b"theirs") },
        }
    );
    let absent = mutator.write("src/lib.rs", b"mine", &request(&a, "agent-a", Expect::Absent, "w2")).expect("write");
    assert!(matches!(absent, Outcome::PreconditionFailed { .. }), "{absent:?}");
    assert_eq!(ws.read("src/lib.rs").as_deref(), Some(&b"theirs"[..]));
    assert!(ws.scratch_files().is_empty());
}

#[test]
fn a_retried_intent_is_a_duplicate_and_the_same_id_with_other_content_is_an_error() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    let first = request(&a, "agent-a", Expect::Absent, "intent-1");
    assert!(matches!(mutator.write("src/a.rs", b"one", &first).expect("write"), Outcome::Written { .. }));
    // The retry would fail its precondition (the file now exists) if it ran again.
    let retry = mutator.write("src/a.rs", b"one", &first).expect("retry");
    assert_eq!(
        retry,
        Outcome::Duplicate { intent: IntentId::new("intent-1").expect("id"), op: keel_mutator::Op::Write }
    );
    let conflict = mutator.write("src/a.rs", b"two", &first);
    assert!(matches!(conflict, Err(MutateError::IntentConflict { .. })), "{conflict:?}");
    assert_eq!(ws.read("src/a.rs").as_deref(), Some(&b"one"[..]));
    // A reopened mutator remembers the intent.
    drop(mutator);
    assert!(matches!(ws.mutator().write("src/a.rs", b"one", &first).expect("retry"), Outcome::Duplicate { .. }));
}

#[test]
fn a_replaced_file_keeps_its_permission_bits() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    let path = ws.root.join("src/run.sh");
    std::fs::write(&path, b"old").expect("seed");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o751)).expect("chmod");
    let outcome = mutator.write("src/run.sh", b"new", &request(&a, "agent-a", hash(b"old"), "w")).expect("write");
    assert!(matches!(outcome, Outcome::Written { mode_kept: Some(0o751), .. }), "{outcome:?}");
    assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777, 0o751);
}

#[test]
fn delete_needs_the_expected_content_and_leaves_no_trash() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    std::fs::write(ws.root.join("src/old.rs"), b"old").expect("seed");
    let wrong = mutator.delete("src/old.rs", &request(&a, "agent-a", hash(b"other"), "d1")).expect("delete");
    assert!(matches!(wrong, Outcome::PreconditionFailed { .. }), "{wrong:?}");
    assert!(ws.read("src/old.rs").is_some());
    let deleted = mutator.delete("src/old.rs", &request(&a, "agent-a", hash(b"old"), "d2")).expect("delete");
    assert!(matches!(deleted, Outcome::Deleted { .. }), "{deleted:?}");
    assert_eq!(ws.read("src/old.rs"), None);
    assert!(ws.scratch_files().is_empty());
    let gone = mutator.delete("src/old.rs", &request(&a, "agent-a", Expect::Any, "d3")).expect("delete");
    assert!(matches!(gone, Outcome::PreconditionFailed { actual: PreState::Absent, .. }), "{gone:?}");
    assert!(matches!(
        mutator.delete("src/old.rs", &request(&a, "agent-a", Expect::Absent, "d4")),
        Err(MutateError::InvalidRequest { .. })
    ));
}

#[test]
fn rename_checks_both_paths_and_never_replaces_the_destination() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    std::fs::write(ws.root.join("src/a.rs"), b"a").expect("seed");
    std::fs::write(ws.root.join("src/b.rs"), b"b").expect("seed");
    let out = mutator.rename("src/a.rs", "docs/a.rs", &request(&a, "agent-a", hash(b"a"), "r1")).expect("rename");
    assert!(
        matches!(out, Outcome::Forbidden { refusal: Refusal::OutsideTree { ref path, .. } } if path == "docs/a.rs")
    );
    let taken = mutator.rename("src/a.rs", "src/b.rs", &request(&a, "agent-a", hash(b"a"), "r2")).expect("rename");
    assert!(matches!(taken, Outcome::PreconditionFailed { ref path, .. } if path == "src/b.rs"), "{taken:?}");
    let moved = mutator.rename("src/a.rs", "src/api/a.rs", &request(&a, "agent-a", hash(b"a"), "r3")).expect("rename");
    assert!(matches!(moved, Outcome::Renamed { .. }), "{moved:?}");
    assert_eq!(ws.read("src/a.rs"), None);
    assert_eq!(ws.read("src/api/a.rs").as_deref(), Some(&b"a"[..]));
    assert_eq!(ws.read("src/b.rs").as_deref(), Some(&b"b"[..]));
    let retry = mutator.rename("src/a.rs", "src/api/a.rs", &request(&a, "agent-a", hash(b"a"), "r3")).expect("retry");
    assert!(matches!(retry, Outcome::Duplicate { .. }), "{retry:?}");
}

#[test]
fn a_lease_named_by_lane_alone_is_the_owners_newest_and_another_owner_cannot_use_it() {
    let ws = Workspace::new();
    let mutator = ws.mutator();
    let a = ws.acquire("api", &["src/"], "agent-a");
    let by_lane = Request {
        holder: keel_kernel::gate::Holder { loop_ts: None, ..request(&a, "agent-a", Expect::Absent, "x").holder },
        ..request(&a, "agent-a", Expect::Absent, "l1")
    };
    assert!(matches!(mutator.write("src/l.rs", b"l", &by_lane).expect("write"), Outcome::Written { .. }));
    let mallory = request(&a, "mallory", Expect::Any, "m1");
    let refused = mutator.write("src/l.rs", b"m", &mallory).expect("write");
    assert!(matches!(refused, Outcome::Forbidden { refusal: Refusal::NotHolder { .. } }), "{refused:?}");
    assert_eq!(ws.read("src/l.rs").as_deref(), Some(&b"l"[..]));
}

/// Found by a race sweep: with the journal kept in the workspace (outside `.keel/`), a holder
/// whose tree covered it emptied it through the gate, erasing every lease and the counter.
#[test]
fn a_journal_kept_in_the_workspace_and_its_siblings_are_protected() {
    let ws = Workspace::new();
    let journal_path = ws.root.join("leases.jsonl");
    let journal = keel_journal::Journal::open(&journal_path, keel_journal::JournalOptions::default());
    let mutator =
        keel_mutator::Mutator::open(&ws.root, journal, keel_mutator::MutatorOptions::default()).expect("open");
    let lease = AcquireRequest {
        lane: "all".into(),
        tree: vec!["leases*".into(), ".leases*".into()],
        owner: "agent-a".into(),
        ..AcquireRequest::default()
    };
    let AcquireOutcome::Acquire(grant) = mutator.journal().acquire(&lease).expect("acquire") else {
        panic!("an empty journal grants")
    };
    let before = std::fs::read(&journal_path).expect("journal");
    for (n, path) in
        ["leases.jsonl", "leases.jsonl.lock", "leases.jsonl.torn", ".leases.jsonl.0123.tmp"].iter().enumerate()
    {
        let outcome =
            mutator.write(path, b"", &request(&grant, "agent-a", Expect::Any, &format!("w{n}"))).expect("write");
        assert!(matches!(outcome, Outcome::Forbidden { refusal: Refusal::Protected { .. } }), "{path}: {outcome:?}");
    }
    assert_eq!(std::fs::read(&journal_path).expect("journal"), before);
}

/// Found by a race sweep: `keel fs` with an old copy of the journal let a released lease's
/// generation land over the newer holder's work. A workspace is bound to its first journal.
#[test]
fn a_workspace_is_bound_to_its_journal_and_refuses_another() {
    let ws = Workspace::new();
    drop(ws.mutator());
    let copy = ws.journal_path.with_file_name("old-copy.jsonl");
    let other = keel_journal::Journal::open(&copy, keel_journal::JournalOptions::default());
    let err = keel_mutator::Mutator::open(&ws.root, other, keel_mutator::MutatorOptions::default())
        .expect_err("another journal");
    assert!(matches!(err, MutateError::JournalMismatch { .. }), "{err}");
    assert!(err.to_string().contains("old-copy.jsonl"), "{err}");
    drop(ws.mutator());
}
