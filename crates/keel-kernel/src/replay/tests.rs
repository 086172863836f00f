//! Unit tests of the replay: the fold, the fast path against the general one, reviews, snapshots
//! and compaction.

use std::hash::BuildHasher;

use super::parse::parse_fast;
use super::*;
use serde_json::json;

fn obj(v: Value) -> Object {
    match v {
        Value::Object(o) => o,
        _ => unreachable!("test data is an object"),
    }
}

#[test]
fn release_then_reacquire_moves_the_lease_last_and_raises_its_generation() {
    let journal = concat!(
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\", \"loop_ts\": \"a\"}, \"seq\": 1}\n",
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"b\", \"lane\": \"y\", \"lease\": {\"lane\": \"y\", \"loop_ts\": \"b\"}, \"seq\": 2}\n",
        "{\"op\": \"RELEASE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"seq\": 3}\n",
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\", \"loop_ts\": \"a\"}, \"seq\": 4}\n",
    );
    let state = replay_bytes(journal.as_bytes()).state;
    let lanes: Vec<_> = state.live().map(|l| l["lane"].clone()).collect();
    assert_eq!(lanes, vec![json!("y"), json!("x")]);
    let a = Identity { loop_ts: "a".into(), lane: "x".into() };
    assert_eq!(state.generation(&a), Some(3));
    assert_eq!(state.next_seq(), 5);
}

#[test]
fn fast_and_general_paths_agree_on_escaped_and_odd_records() {
    // Escapes and non-string identities force the general path; the results must not differ.
    let plain = "{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\\u0031\", \"lane\": \"l\", \"lease\": {\"n\": 1}}";
    let odd = "{\"op\": \"ACQUIRE\", \"loop_ts\": 5, \"lane\": true, \"tree\": [\"a\"]}";
    let state = replay_bytes(format!("{plain}\n{odd}\n").as_bytes()).state;
    let ids: Vec<_> = state.live_with_identity().map(|(i, _)| i.clone()).collect();
    assert_eq!(
        ids,
        vec![
            Identity { loop_ts: "t1".into(), lane: "l".into() },
            Identity { loop_ts: "5".into(), lane: "True".into() }
        ]
    );
    assert_eq!(state.live().nth(1).expect("two leases")["tree"], json!(["a"]));
}

#[test]
fn a_line_serde_json_refuses_is_corrupt_on_every_path() {
    // Lone surrogates, in a lease body or a member replay never reads. The fast path once
    // accepted these lines, and reading the lease body later panicked.
    for line in [
        r#"{"op": "ACQUIRE", "loop_ts": "t", "lane": "l", "lease": {"k": "\ud800"}}"#,
        r#"{"op": "HALT", "x": "\udc00\ud800"}"#,
    ] {
        let journal = format!("{line}\n{{\"op\": \"HALT\"}}\n");
        let state = replay_bytes(journal.as_bytes()).state;
        assert_eq!(state.corrupt().len(), 1, "{line}");
        assert_eq!(state.live().count(), 0, "{line}");
    }
}

#[test]
fn numbers_in_a_lease_body_survive_replay_and_compaction_as_written() {
    // Python reads these as an exact int, a float or infinity (`1e400`), and so a record;
    // keel keeps their digits (`serde_json` respells only an exponent's marker and sign).
    let numbers = [
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("18446744073709551616", "18446744073709551616"),
        ("-0", "-0"),
        ("1.10", "1.10"),
        ("1E5", "1e+5"),
        ("1e400", "1e+400"),
    ];
    let body: Vec<String> = numbers.iter().enumerate().map(|(i, (n, _))| format!("\"n{i}\": {n}")).collect();
    let body = body.join(", ");
    // The second record has a surrogate pair, which sends it down the general path.
    let journal = format!(
        "{{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\", \"lane\": \"a\", \"lease\": {{\"lane\": \"a\", {body}}}, \"seq\": 1}}\n\
         {{\"op\": \"ACQUIRE\", \"loop_ts\": \"t\", \"lane\": \"b\", \"lease\": {{\"lane\": \"b\", {body}}}, \"seq\": 2, \"x\": \"\\ud83d\\ude00\"}}\n"
    );
    let state = replay_bytes(journal.as_bytes()).state;
    assert_eq!((state.live_count(), state.corrupt().len()), (2, 0));
    let compacted = serde_json::to_string(&state.compact()).expect("serialise");
    for lease in state.live() {
        let written = serde_json::to_string(lease).expect("serialise");
        for (i, (_, n)) in numbers.iter().enumerate() {
            let member = format!("\"n{i}\":{n}");
            assert!(written.contains(&member), "{member} in {written}");
            assert_eq!(compacted.matches(&member).count(), 2, "{member} in {compacted}");
        }
    }
}

proptest::proptest! {
    /// Lines near a real record, mangled byte by byte: whenever the fast path takes a line,
    /// `serde_json` parses it as an object and folding it the general way gives the same state.
    #[test]
    fn the_fast_path_agrees_with_the_general_path(
        template in 0usize..4,
        edits in proptest::collection::vec((0usize..400, 0usize..1024, proptest::bool::ANY), 0..4),
    ) {
        const TEMPLATES: [&str; 4] = [
            r#"{"lane": "l", "lease": {"lane": "l", "loop_ts": "t", "pid": 7, "tree": ["a\\b", 1.5]}, "loop_ts": "t", "op": "ACQUIRE", "seq": 3}"#,
            r#"{"heartbeat_at": "T1", "lane": "l", "loop_ts": "t", "op": "HEARTBEAT", "seq": 4, "ts": "T0"}"#,
            r#"{"lane": "l", "loop_ts": "t", "op": "RELEASE", "seq_watermark": 9, "x": [null, true, {"k": -0.5}]}"#,
            r#"{"op": "HALT", "ts": null, "u": "\u00e9\ud83d\ude00", "n": 12345678901234567}"#,
        ];
        // Structure, escapes, control characters (`\t` is white space only between tokens),
        // and bytes that decode to `é` or to replacement characters.
        const ALPHABET: &[u8] = b"{}[]:,\" 0123456789.eE-+\\u\ntflsdnr/\t\x01\x1f\x7f\xc3\xa9";
        let mut line = TEMPLATES[template].as_bytes().to_vec();
        for (at, pick, insert) in edits {
            let at = at % (line.len() + 1);
            let byte = ALPHABET[pick % ALPHABET.len()];
            if insert || at == line.len() {
                line.insert(at, byte);
            } else {
                line[at] = byte;
            }
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let seeded = || {
            let mut state = LiveState::new();
            state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "t", "lane": "l", "lease": {"lane": "l", "loop_ts": "t"}})));
            state
        };
        if let Some(fast) = parse_fast(&text) {
            let record = serde_json::from_str::<Object>(&text);
            proptest::prop_assert!(record.is_ok(), "fast path took a line serde_json refuses: {}", text);
            let (mut by_fast, mut by_general) = (seeded(), seeded());
            by_fast.apply_fast(fast.resolve(&text));
            by_general.apply(&record.expect("checked just above"));
            proptest::prop_assert_eq!(by_fast.snapshot(), by_general.snapshot(), "{}", text);
        }
    }
}

#[test]
fn a_borrowed_identity_hashes_as_the_owned_one() {
    // Orphan generation rows are keyed by `Identity` and probed with `IdRef`.
    let owned = Identity { loop_ts: "2026-11-01T00:00:00Z".into(), lane: "api".into() };
    let build = rustc_hash::FxBuildHasher;
    assert_eq!(build.hash_one(&owned), build.hash_one(owned.as_ref()));
}

#[test]
fn a_checkpoint_row_for_a_lease_not_live_is_kept_until_a_grant_or_release_replaces_it() {
    let mut state = LiveState::new();
    state.apply(&obj(json!({"op": "CHECKPOINT", "leases": [{"loop_ts": "a", "lane": "x"}],
        "generations": [{"loop_ts": "a", "lane": "x", "generation": 4}, {"loop_ts": "b", "lane": "y", "generation": 9}]})));
    let rows = |state: &LiveState| -> Vec<(String, u64)> {
        state.generations().into_iter().map(|g| (g.loop_ts, g.generation)).collect()
    };
    assert_eq!(rows(&state), vec![("a".into(), 4), ("b".into(), 9)]);
    let b = Identity { loop_ts: "b".into(), lane: "y".into() };
    assert_eq!(state.generation(&b), None, "a row is not a live lease");
    state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "b", "lane": "y", "lease": {"loop_ts": "b", "lane": "y"}})));
    assert_eq!(rows(&state), vec![("a".into(), 4), ("b".into(), 10)]);
    state.apply(&obj(json!({"op": "RELEASE", "loop_ts": "b", "lane": "y"})));
    state.apply(&obj(json!({"op": "RELEASE", "loop_ts": "a", "lane": "x"})));
    assert!(rows(&state).is_empty());
    let back = LiveState::from_snapshot(state.snapshot());
    assert_eq!(back.snapshot(), state.snapshot());
}

#[test]
fn adopt_drops_proc_starttime_only_when_the_pid_changes() {
    let mut state = LiveState::new();
    state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": "t", "lane": "l",
        "lease": {"pid": 1, "proc_starttime": 9, "holder": "a"}})));
    state.apply(&obj(json!({"op": "ADOPT", "loop_ts": "t", "lane": "l", "pid": 1, "holder": "b"})));
    let id = Identity { loop_ts: "t".into(), lane: "l".into() };
    assert_eq!(state.lease(&id).expect("live")["proc_starttime"], json!(9));
    state.apply(&obj(json!({"op": "ADOPT", "loop_ts": "t", "lane": "l", "pid": 2, "ts": "T"})));
    let lease = state.lease(&id).expect("live");
    assert_eq!(lease.get("proc_starttime"), None);
    assert_eq!(lease["holder"], json!("b"));
    assert_eq!(lease["heartbeat_at"], json!("T"));
}

#[test]
fn thousands_of_removals_keep_order_and_indexes_consistent() {
    let mut state = LiveState::new();
    for i in 0..5000 {
        state.apply(&obj(json!({"op": "ACQUIRE", "loop_ts": i.to_string(), "lane": "l", "lease": {"i": i}})));
    }
    for i in (0..5000).filter(|i| i % 3 != 0) {
        state.apply(&obj(json!({"op": "RELEASE", "loop_ts": i.to_string(), "lane": "l"})));
    }
    let left: Vec<i64> = state.live().map(|l| l["i"].as_i64().expect("int")).collect();
    let want: Vec<i64> = (0..5000).filter(|i| i % 3 == 0).collect();
    assert_eq!(left, want);
    let id = Identity { loop_ts: "4998".into(), lane: "l".into() };
    assert_eq!(state.generation(&id), Some(4999));
}

#[test]
fn a_review_excuses_exactly_the_named_corrupt_lines() {
    let journal = b"{\"op\": \"HALT\"}\nbroken one\nbroken two\n{\"op\": \"HALT\"}\n";
    let mut state = replay_bytes(journal).state;
    assert_eq!(state.damage().len(), 2);
    let first = Excuse::of_sentinel(state.damage()[0]).expect("sentinel has line and raw");
    state.apply(&review_record(std::slice::from_ref(&first), "torn tail repaired", "test"));
    let left: Vec<_> = state.damage().iter().map(|s| s["_raw"].clone()).collect();
    assert_eq!(left, vec![json!("broken two")]);
    assert_eq!(state.excuses_in_force(), vec![first]);
}

#[test]
fn snapshot_round_trips_the_whole_state() {
    let journal = concat!(
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"a\", \"lane\": \"x\", \"lease\": {\"lane\": \"x\"}, \"seq\": 7}\n",
        "garbage\n",
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"b\", \"lane\": \"y\", \"lease\": {\"lane\": \"y\"}}\n",
    );
    let state = replay_bytes(journal.as_bytes()).state;
    let text = serde_json::to_string(&state.snapshot()).expect("serialises");
    let back = LiveState::from_snapshot(serde_json::from_str(&text).expect("parses"));
    assert_eq!(back.snapshot(), state.snapshot());
    assert_eq!(back.next_generation(), 3);
    assert_eq!(back.next_seq(), 8);
}

#[test]
fn compact_of_an_empty_journal_is_empty() {
    assert!(replay_bytes(b"").state.compact().is_empty());
    assert!(replay_bytes(b"[1]\n\"s\"\n").state.compact().is_empty());
}

#[test]
fn a_torn_tail_review_marks_its_lines_as_torn_tails_and_an_operators_review_does_not() {
    let journal = b"{\"op\": \"HALT\"}\nbroken one\n{\"op\": \"HALT\"}\nbroken two\n{\"op\": \"HALT\"}\n";
    let mut state = replay_bytes(journal).state;
    let excuse = |state: &LiveState, i: usize| Excuse::of_sentinel(&state.corrupt()[i]).expect("line and raw");
    let (first, second) = (excuse(&state, 0), excuse(&state, 1));
    state.apply(&review_record(std::slice::from_ref(&first), "reviewed by an operator", "ops"));
    state.apply(&torn_tail_review(std::slice::from_ref(&second), "writer"));
    assert!(state.damage().is_empty(), "both are excused");
    let torn: Vec<bool> = state.corrupt().iter().map(|s| state.is_excused_torn_tail(s)).collect();
    assert_eq!(torn, [false, true]);
    // Compaction carries the sentinels, mark included; the mark alone excuses nothing.
    let compacted = replay_records(&state.compact());
    let marked: Vec<bool> = compacted.corrupt().iter().map(|s| s.get(TORN_TAIL_SENTINEL).is_some()).collect();
    assert_eq!(marked, [false, true]);
    assert!(!compacted.is_excused_torn_tail(&compacted.corrupt()[1]), "not excused in the compacted records");
    let mut carried = compacted.clone();
    carried.apply(&review_record(&[first, second], "carried forward by compaction", "writer"));
    let torn: Vec<bool> = carried.corrupt().iter().map(|s| carried.is_excused_torn_tail(s)).collect();
    assert_eq!(torn, [false, true], "the carried excuse and the mark make it a torn tail again");
}

#[test]
fn a_torn_tail_review_written_before_the_member_existed_is_known_by_its_reason() {
    let mut state = replay_bytes(b"{\"op\": \"HALT\"}\n{\"op\": \"ACQ\n{\"op\": \"HALT\"}\n").state;
    let fragment = Excuse::of_sentinel(&state.corrupt()[0]).expect("line and raw");
    let reason = "torn tail: an unterminated fragment a crashed writer left, never acknowledged";
    state.apply(&review_record(&[fragment], reason, "keel pid 1 on h"));
    assert!(state.is_excused_torn_tail(&state.corrupt()[0]));
}
