//! `kill -9` at every step of a write and of a delete (a helper process SIGKILLs itself at the
//! named point), then reopen and retry the same intent: exactly one effect, no scratch file left.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use keel_mutator::{Outcome, Point};

use crate::support::{Workspace, hash, request};

/// Runs the helper until it kills itself at `point`.
fn crash_at(ws: &Workspace, op: &str, grant: &keel_journal::Grant, expect: &str, content: &[u8], point: Point) {
    let content_file = ws.outside.join("content.bin");
    std::fs::write(&content_file, content).expect("content file");
    let generation = grant.generation.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_keel-mutator-crash"))
        .args([
            ws.root.to_str().expect("utf-8"),
            ws.journal_path.to_str().expect("utf-8"),
            op,
            "src/x.rs",
            content_file.to_str().expect("utf-8"),
            "agent-a",
            &grant.identity.lane,
            &grant.identity.loop_ts,
            &generation,
            expect,
            "the-intent",
            point.name(),
        ])
        .output()
        .expect("run the crash helper");
    std::fs::remove_file(&content_file).expect("remove content file");
    assert_eq!(
        output.status.signal(),
        Some(9),
        "{op} at {point:?} should die by SIGKILL; stdout {} stderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How many attempts of `intent` ended applied (complete or rolled forward).
fn applied_attempts(ws: &Workspace, intent: &str) -> usize {
    let log = std::fs::read_to_string(ws.root.join(".keel/mutations.jsonl")).expect("log");
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["intent"] == intent && (r["step"] == "complete" || r["step"] == "rolled_forward"))
        .count()
}

#[test]
fn a_write_killed_at_every_step_then_retried_has_exactly_one_effect_and_leaves_no_temporary_file() {
    for (i, point) in Point::WRITE.into_iter().enumerate() {
        let ws = Workspace::new();
        std::fs::write(ws.root.join("src/x.rs"), b"old").expect("seed");
        let a = ws.acquire("api", &["src/"], "agent-a");
        let old_hash = keel_mutator::content_hash(b"old");
        crash_at(&ws, "write", &a, &old_hash, b"new", point);
        let renamed = i >= Point::WRITE.iter().position(|p| *p == Point::Renamed).expect("renamed is a write point");

        let mutator = ws.mutator();
        let recovery = mutator.recovery();
        let finished = usize::from(point != Point::CompleteLogged);
        assert_eq!(recovery.rolled_forward + recovery.rolled_back, finished, "{point:?}: {recovery:?}");
        assert_eq!(recovery.rolled_forward, usize::from(renamed) * finished, "{point:?}: {recovery:?}");
        assert!(ws.scratch_files().is_empty(), "{point:?}: {:?}", ws.scratch_files());
        let expected_now: &[u8] = if renamed { b"new" } else { b"old" };
        assert_eq!(ws.read("src/x.rs").as_deref(), Some(expected_now), "{point:?}");

        // The retry presents the same intent and the same (now possibly outdated) pre-hash.
        let retry = request(&a, "agent-a", hash(b"old"), "the-intent");
        let outcome = mutator.write("src/x.rs", b"new", &retry).expect("retry");
        if renamed {
            assert!(matches!(outcome, Outcome::Duplicate { .. }), "{point:?}: {outcome:?}");
        } else {
            assert!(matches!(outcome, Outcome::Written { .. }), "{point:?}: {outcome:?}");
        }
        assert!(matches!(mutator.write("src/x.rs", b"new", &retry).expect("again"), Outcome::Duplicate { .. }));
        assert_eq!(ws.read("src/x.rs").as_deref(), Some(&b"new"[..]), "{point:?}");
        assert_eq!(applied_attempts(&ws, "the-intent"), 1, "{point:?}");
        assert!(ws.scratch_files().is_empty(), "{point:?}");
    }
}

#[test]
fn a_delete_killed_at_every_step_then_retried_has_exactly_one_effect_and_leaves_no_trash() {
    for (i, point) in Point::DELETE.into_iter().enumerate() {
        let ws = Workspace::new();
        std::fs::write(ws.root.join("src/x.rs"), b"old").expect("seed");
        let a = ws.acquire("api", &["src/"], "agent-a");
        crash_at(&ws, "delete", &a, &keel_mutator::content_hash(b"old"), b"", point);
        let trashed = i >= Point::DELETE.iter().position(|p| *p == Point::Trashed).expect("trashed is a delete point");

        let mutator = ws.mutator();
        assert!(ws.scratch_files().is_empty(), "{point:?}: {:?}", ws.scratch_files());
        assert_eq!(ws.read("src/x.rs").is_none(), trashed, "{point:?}");
        let outcome = mutator.delete("src/x.rs", &request(&a, "agent-a", hash(b"old"), "the-intent")).expect("retry");
        if trashed {
            assert!(matches!(outcome, Outcome::Duplicate { .. }), "{point:?}: {outcome:?}");
        } else {
            assert!(matches!(outcome, Outcome::Deleted { .. }), "{point:?}: {outcome:?}");
        }
        assert_eq!(ws.read("src/x.rs"), None, "{point:?}");
        assert_eq!(applied_attempts(&ws, "the-intent"), 1, "{point:?}");
    }
}
