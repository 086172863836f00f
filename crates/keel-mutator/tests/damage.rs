//! A damaged mutation log stops the mutator until an operator reviews it; a torn tail (a crashed
//! append, never acknowledged) does not, and is cut off.

use keel_mutator::{Expect, MutateError, Mutator, MutatorOptions, Outcome};

use crate::support::{Workspace, hash, request};

#[test]
fn a_damaged_intent_line_stops_every_operation_until_a_review_excuses_it() {
    let ws = Workspace::new();
    let a = ws.acquire("api", &["src/"], "agent-a");
    let log_path = {
        let mutator = ws.mutator();
        let w1 = mutator.write("src/x.rs", b"one", &request(&a, "agent-a", Expect::Any, "w1")).expect("write");
        assert!(matches!(w1, Outcome::Written { .. }), "{w1:?}");
        let w2 = mutator.write("src/x.rs", b"two", &request(&a, "agent-a", hash(b"one"), "w2")).expect("write");
        assert!(matches!(w2, Outcome::Written { .. }), "{w2:?}");
        mutator.log_path().to_owned()
    };
    // Damage w1's intent line (the first) in place, as a bad sector or a stray edit would.
    let mut log = std::fs::read(&log_path).expect("log");
    assert!(log.starts_with(b"{\"intent\":\"w1\",\"step\":\"intent\""), "{}", String::from_utf8_lossy(&log));
    log[0] = b'#';
    std::fs::write(&log_path, &log).expect("damage the log");

    // Folding past that line would forget w1, and a late retry of w1 would overwrite w2's newer
    // content. Instead nothing runs, and the error names the line.
    let err = Mutator::open(&ws.root, ws.journal(), MutatorOptions::default()).expect_err("damaged");
    let MutateError::LogDamaged { first, more, .. } = &err else { panic!("{err}") };
    // w1's later steps are damage too: they belong to an intent the log no longer records.
    let w1_lines = String::from_utf8_lossy(&log).lines().filter(|l| l.contains("\"intent\":\"w1\"")).count();
    assert!(w1_lines > 3, "{w1_lines}");
    assert_eq!((first.line, first.offset, *more), (1, 0, w1_lines as u64 - 1), "{err}");
    assert!(first.excerpt.starts_with("#\"intent\":\"w1\""), "{err}");
    assert!(err.to_string().contains("mutations.jsonl: line 1"), "{err}");
    assert_eq!(ws.read("src/x.rs").as_deref(), Some(&b"two"[..]));

    // Looking changes nothing.
    let damage = Mutator::review_log(&ws.root, None, &MutatorOptions::default()).expect("review");
    assert_eq!(damage.count, w1_lines as u64);
    assert!(damage.first[1].reason.contains("\"w1\""), "{:?}", damage.first[1]);
    assert_eq!(std::fs::read(&log_path).expect("log"), log);
    assert!(Mutator::open(&ws.root, ws.journal(), MutatorOptions::default()).is_err());
    let blank = Mutator::review_log(&ws.root, Some(" "), &MutatorOptions::default()).expect_err("blank reviewer");
    assert!(matches!(blank, MutateError::InvalidRequest { .. }), "{blank}");

    // An operator's review excuses it, and the mutator works again.
    let excused = Mutator::review_log(&ws.root, Some("ops"), &MutatorOptions::default()).expect("accept");
    assert_eq!(excused, damage);
    assert!(Mutator::review_log(&ws.root, None, &MutatorOptions::default()).expect("review").is_empty());
    let mutator = ws.mutator();
    let w3 = mutator.write("src/x.rs", b"three", &request(&a, "agent-a", hash(b"two"), "w3")).expect("write");
    assert!(matches!(w3, Outcome::Written { .. }), "{w3:?}");
}

#[test]
fn a_torn_tail_is_cut_off_by_the_next_operation_and_is_not_damage() {
    let ws = Workspace::new();
    let a = ws.acquire("api", &["src/"], "agent-a");
    let log_path = {
        let mutator = ws.mutator();
        let w1 = mutator.write("src/x.rs", b"one", &request(&a, "agent-a", Expect::Absent, "w1")).expect("write");
        assert!(matches!(w1, Outcome::Written { .. }), "{w1:?}");
        mutator.log_path().to_owned()
    };
    let whole = std::fs::read(&log_path).expect("log");
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"intent\":\"w2\",\"step\":\"inte");
    std::fs::write(&log_path, &torn).expect("tear the tail");

    assert!(Mutator::review_log(&ws.root, None, &MutatorOptions::default()).expect("review").is_empty());
    let mutator = ws.mutator();
    assert_eq!(std::fs::read(&log_path).expect("log"), whole, "opening cut the fragment off");
    let w2 = mutator.write("src/x.rs", b"two", &request(&a, "agent-a", hash(b"one"), "w2")).expect("write");
    assert!(matches!(w2, Outcome::Written { .. }), "{w2:?}");
    let log = std::fs::read_to_string(&log_path).expect("log");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
}
