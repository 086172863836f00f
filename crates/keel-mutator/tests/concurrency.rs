//! Concurrent writers presenting the same pre-hash: the mutator lock makes check-then-commit
//! atomic, so exactly one lands.

use std::sync::{Arc, Barrier};

use keel_mutator::{Outcome, PreState};

use crate::support::{Workspace, hash, request};

const WRITERS: usize = 8;

#[test]
fn eight_writers_with_the_same_pre_hash_give_exactly_one_written_and_seven_precondition_failures() {
    let ws = Arc::new(Workspace::new());
    std::fs::write(ws.root.join("src/shared.rs"), b"v0").expect("seed");
    let a = Arc::new(ws.acquire("api", &["src/"], "agent-a"));
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (ws, a, barrier) = (Arc::clone(&ws), Arc::clone(&a), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Each writer has its own mutator (its own lock descriptor), as separate agents would.
                let mutator = ws.mutator();
                let content = format!("v1 from writer {i}");
                barrier.wait();
                let outcome = mutator
                    .write("src/shared.rs", content.as_bytes(), &request(&a, "agent-a", hash(b"v0"), &format!("w{i}")))
                    .expect("write");
                (content, outcome)
            })
        })
        .collect();
    let results: Vec<(String, Outcome)> = handles.into_iter().map(|h| h.join().expect("writer thread")).collect();
    let winners: Vec<&String> =
        results.iter().filter(|(_, o)| matches!(o, Outcome::Written { .. })).map(|(c, _)| c).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let losers = results.iter().filter(|(_, o)| {
        matches!(o, Outcome::PreconditionFailed { actual: PreState::Present { hash }, .. }
            if *hash == keel_mutator::content_hash(winners[0].as_bytes()))
    });
    assert_eq!(losers.count(), WRITERS - 1, "{results:?}");
    assert_eq!(ws.read("src/shared.rs").as_deref(), Some(winners[0].as_bytes()));
    assert!(ws.scratch_files().is_empty());
}
