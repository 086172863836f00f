//! Properties of replay, compaction and admission over random inputs.
//!
//! Journals are drawn from small pools of identities (so leases collide, get replaced, released
//! and re-acquired) and carry every fault the format describes: corrupt and non-object lines,
//! blank lines, white space around records, invalid UTF-8, duplicate keys, torn tails, odd
//! payloads and checkpoints. Each generated line knows what it is, so expectations come from the
//! model, not from the kernel's own line reader.
//!
//! Admission runs over realistic trees (paths, globs, `lock://` names, mixed case, `ß`,
//! backslashes, white space) and random taxonomies.

use keel_kernel::admission::admit;
use keel_kernel::arbiter::{LaneSpec, Mode, Outcome, Request, Taxonomy, decide};
use keel_kernel::expiry::Verdict;
use keel_kernel::tree::{Region, Tree, normalise};
use keel_kernel::value::seq_number;
use keel_kernel::{
    GENERATION_WATERMARK, LiveState, Object, ParsedChunk, Replay, Replayed, replay_bytes, replay_records,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Journals

/// One generated line and what it is.
#[derive(Debug, Clone)]
enum Line {
    /// A record, written compactly.
    Record(Object),
    /// A record wrapped in white space that Python's `strip` removes.
    Spaced(Object, &'static str, &'static str),
    /// A record with a decoy spelling of `key` written before the real one (the last wins).
    Duplicate(Object, &'static str),
    /// A record whose `note` member holds a byte that is not UTF-8 (read back as U+FFFD).
    BadUtf8(Object),
    /// JSON that is not an object.
    NotObject(&'static str),
    /// Empty after stripping.
    Blank(&'static str),
    /// Not JSON.
    Garbage(&'static str),
}

impl Line {
    /// The record this line holds, as a reader must see it.
    fn record(&self) -> Option<Object> {
        match self {
            Line::Record(r) | Line::Spaced(r, _, _) | Line::Duplicate(r, _) => Some(r.clone()),
            Line::BadUtf8(r) => {
                let mut r = r.clone();
                r.insert("note".into(), json!("a\u{fffd}b"));
                Some(r)
            }
            Line::NotObject(_) | Line::Blank(_) | Line::Garbage(_) => None,
        }
    }

    fn is_unparseable(&self) -> bool {
        matches!(self, Line::Garbage(_))
    }

    fn bytes(&self) -> Vec<u8> {
        let compact = |r: &Object| serde_json::to_string(r).expect("objects serialise");
        match self {
            Line::Record(r) => compact(r).into_bytes(),
            Line::Spaced(r, before, after) => format!("{before}{}{after}", compact(r)).into_bytes(),
            Line::Duplicate(r, key) => {
                let text = compact(r);
                let decoy = format!("{{\"{key}\": [\"decoy\"], ");
                if text == "{}" {
                    return text.into_bytes();
                }
                text.replacen('{', &decoy, 1).into_bytes()
            }
            Line::BadUtf8(r) => {
                let mut r = r.clone();
                r.insert("note".into(), json!("a@@b"));
                let text = compact(&r);
                let at = text.find("@@").expect("the marker was just written");
                let mut bytes = text.into_bytes();
                bytes.splice(at..at + 2, [0xFF]);
                bytes
            }
            Line::NotObject(t) | Line::Blank(t) | Line::Garbage(t) => t.as_bytes().to_vec(),
        }
    }
}

/// A journal: its lines, whether the last one ends with `\n`.
#[derive(Debug, Clone)]
struct Journal {
    lines: Vec<Line>,
    terminated: bool,
}

impl Journal {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            out.extend(line.bytes());
            if i + 1 < self.lines.len() || self.terminated {
                out.push(b'\n');
            }
        }
        out
    }

    /// The bytes of each line, as a reader splits them.
    fn line_bytes(&self) -> Vec<Vec<u8>> {
        self.lines.iter().map(Line::bytes).collect()
    }
}

fn object(value: Value) -> Object {
    match value {
        Value::Object(o) => o,
        other => panic!("test data is an object, not {other}"),
    }
}

fn loop_ts() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(json!("a")),
        4 => Just(json!("b")),
        2 => Just(json!("c")),
        1 => Just(json!("1")),
        1 => Just(json!(1)),
        1 => Just(json!(1.0)),
        1 => Just(json!(true)),
        1 => Just(json!(null)),
        1 => Just(json!("")),
        1 => Just(json!(0)),
    ]
    .boxed()
}

fn lane() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(json!("x")),
        3 => Just(json!("y")),
        1 => Just(json!("X")),
        1 => Just(json!("ünï\u{2028}")),
        1 => Just(json!("")),
    ]
    .boxed()
}

/// `seq`: mostly a plain number, sometimes spelled oddly (and a reader must take it as Python
/// `int()` would, or as 0).
fn seq() -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        6 => (0u64..60).prop_map(|n| Some(json!(n))),
        1 => Just(None),
        1 => (0u32..60).prop_map(|n| Some(json!(f64::from(n) + 0.5))),
        1 => (0u64..60).prop_map(|n| Some(json!(n.to_string()))),
        1 => Just(Some(json!(-4))),
        1 => Just(Some(json!(true))),
        1 => Just(Some(json!(9_007_199_254_740_993_u64))),
        1 => Just(Some(json!(1e15))),
    ]
    .boxed()
}

fn with_identity(mut record: Object, loop_ts: Value, lane: Value, seq: Option<Value>) -> Object {
    record.insert("loop_ts".into(), loop_ts);
    record.insert("lane".into(), lane);
    if let Some(seq) = seq {
        record.insert("seq".into(), seq);
    }
    record
}

fn tree_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(["src/api/"])),
        Just(json!(["**/*"])),
        Just(json!([])),
        Just(json!("docs/")),
        Just(json!(null)),
    ]
    .boxed()
}

fn lease_body() -> BoxedStrategy<Value> {
    (loop_ts(), lane(), 0u8..5, tree_value()).prop_map(|(loop_ts, lane, n, tree)| {
        json!({"loop_ts": loop_ts, "lane": lane, "n": n, "tree": tree, "mode": "exclusive", "pid": 7, "proc_starttime": 11})
    })
    .boxed()
}

fn grant() -> BoxedStrategy<Object> {
    (
        prop_oneof![3 => Just("ACQUIRE"), 1 => Just("RECONCILE")],
        loop_ts(),
        lane(),
        seq(),
        0u8..10,
        lease_body(),
        tree_value(),
    )
        .prop_map(|(op, loop_ts, lane, seq, shape, other_body, tree)| {
            let mut record = object(json!({"op": op, "ts": "T0", "pid": 7}));
            match shape {
                // Self-keyed: the body names the record's identity.
                0..=5 => {
                    let body = json!({"loop_ts": loop_ts.clone(), "lane": lane.clone(), "tree": tree, "pid": 7, "proc_starttime": 11, "holder": "h"});
                    record.insert("lease".into(), body);
                }
                // Mis-keyed: the body names some identity of its own.
                6 => {
                    record.insert("lease".into(), other_body);
                }
                // No body object: built from the record's members.
                7 => {
                    record.insert("lease".into(), json!(null));
                    record.insert("tree".into(), tree);
                    record.insert("holder".into(), json!("h"));
                    record.insert("ttl_minutes".into(), json!(null));
                }
                8 => {
                    record.insert("lease".into(), json!("not an object"));
                    record.insert("proc_starttime".into(), json!(11));
                }
                _ => {
                    record.insert("host_id".into(), json!("vm"));
                }
            }
            with_identity(record, loop_ts, lane, seq)
        })
    .boxed()
}

fn remove() -> BoxedStrategy<Object> {
    (prop_oneof![Just("RELEASE"), Just("SCAVENGE")], loop_ts(), lane(), seq())
        .prop_map(|(op, loop_ts, lane, seq)| with_identity(object(json!({"op": op, "ts": "T1"})), loop_ts, lane, seq))
        .boxed()
}

fn optional(values: &[Value]) -> impl Strategy<Value = Option<Value>> + use<> {
    let mut choices: Vec<Option<Value>> = values.iter().cloned().map(Some).collect();
    choices.push(None);
    proptest::sample::select(choices)
}

fn beat_or_adopt() -> BoxedStrategy<Object> {
    (
        prop_oneof![Just("HEARTBEAT"), Just("ADOPT")],
        loop_ts(),
        lane(),
        seq(),
        optional(&[json!("H1"), json!(""), json!(null), json!(5), json!(false)]),
        optional(&[json!("T2"), json!("")]),
        optional(&[json!(7), json!(8), json!(7.0), json!(null)]),
        optional(&[json!(12), json!(null)]),
        optional(&[json!("h2"), json!(null)]),
    )
        .prop_map(|(op, loop_ts, lane, seq, heartbeat_at, ts, pid, start, holder)| {
            let mut record = object(json!({ "op": op }));
            for (key, value) in [
                ("heartbeat_at", heartbeat_at),
                ("ts", ts),
                ("pid", pid),
                ("proc_starttime", start),
                ("holder", holder),
            ] {
                if let Some(value) = value {
                    record.insert(key.into(), value);
                }
            }
            with_identity(record, loop_ts, lane, seq)
        })
        .boxed()
}

fn checkpoint() -> BoxedStrategy<Object> {
    let row = (
        loop_ts(),
        lane(),
        prop_oneof![
            4 => (0u64..9).prop_map(|g| json!(g)),
            1 => Just(json!(2.0)),
            1 => Just(json!("3")),
            1 => Just(json!(null)),
        ],
    )
        .prop_map(|(loop_ts, lane, generation)| json!({"loop_ts": loop_ts, "lane": lane, "generation": generation}));
    let lease = prop_oneof![
        5 => lease_body(),
        1 => Just(json!("not a lease")),
        1 => Just(json!({"loop_ts": "", "lane": ""})),
    ];
    (
        proptest::collection::vec(lease, 0..4),
        proptest::collection::vec(row, 0..4),
        optional(&[json!(3), json!(40), json!("9")]),
        any::<bool>(),
    )
        .prop_map(|(leases, rows, watermark, with_rows)| {
            let mut record = object(json!({"op": "CHECKPOINT", "leases": leases}));
            if with_rows {
                record.insert("generations".into(), Value::Array(rows));
            }
            if let Some(watermark) = watermark {
                record.insert("seq_watermark".into(), watermark);
            }
            record
        })
        .boxed()
}

fn history() -> BoxedStrategy<Object> {
    (
        prop_oneof![
            Just(json!("REFUSE")),
            Just(json!("HALT")),
            Just(json!("SPAWN")),
            Just(json!("FUTURE_OP")),
            Just(json!("acquire")),
            Just(json!(5)),
        ],
        loop_ts(),
        lane(),
        seq(),
    )
        .prop_map(|(op, loop_ts, lane, seq)| {
            with_identity(object(json!({"op": op, "reason": "r"})), loop_ts, lane, seq)
        })
        .boxed()
}

fn carried_sentinel() -> BoxedStrategy<Object> {
    (0u64..30).prop_map(|line| object(json!({"op": "_CORRUPT", "_raw": "junk", "_line": line}))).boxed()
}

fn record() -> BoxedStrategy<Object> {
    prop_oneof![
        6 => grant(),
        4 => remove(),
        3 => beat_or_adopt(),
        1 => checkpoint(),
        2 => history(),
        1 => carried_sentinel(),
        1 => Just(Object::new()),
    ]
    .boxed()
}

fn line() -> BoxedStrategy<Line> {
    prop_oneof![
        20 => record().prop_map(Line::Record),
        2 => (
            record(),
            prop_oneof![Just(" "), Just("\t"), Just("\u{3000}"), Just("\u{1c}"), Just("")],
            prop_oneof![Just(" \r"), Just("\u{0b}"), Just("\u{85}"), Just("\r")],
        )
            .prop_map(|(r, before, after)| Line::Spaced(r, before, after)),
        2 => (record(), prop_oneof![Just("lane"), Just("seq"), Just("op"), Just("loop_ts")])
            .prop_map(|(r, key)| Line::Duplicate(r, key)),
        1 => record().prop_map(Line::BadUtf8),
        1 => prop_oneof![Just("[1,2,3]"), Just("\"str\""), Just("42"), Just("null")]
            .prop_map(Line::NotObject),
        2 => prop_oneof![Just(""), Just("   "), Just("\t"), Just("\r")].prop_map(Line::Blank),
        2 => prop_oneof![
            Just("not json at all"),
            Just("{\"op\": \"ACQUIRE\", \"lane\": \"tor"),
            Just("{"),
            Just("}{"),
            Just("nul"),
        ]
        .prop_map(Line::Garbage),
    ]
    .boxed()
}

fn journal() -> BoxedStrategy<Journal> {
    (proptest::collection::vec(line(), 0..40), any::<bool>())
        .prop_map(|(mut lines, terminated)| {
            // `Duplicate` only means something on a record that has the key; drop decoys elsewhere.
            for line in &mut lines {
                if let Line::Duplicate(r, key) = line
                    && !r.contains_key(*key)
                {
                    *line = Line::Record(r.clone());
                }
            }
            // An unterminated empty last line is no line at all: end the file after it instead.
            let terminated = terminated || lines.last().is_some_and(|l| l.bytes().is_empty());
            Journal { lines, terminated }
        })
        .boxed()
}

/// The live set with identities, in order.
fn live(state: &LiveState) -> Vec<(String, String, Object)> {
    state.live_with_identity().map(|(id, body)| (id.loop_ts.clone(), id.lane.clone(), body.clone())).collect()
}

fn assert_same_replay(got: &Replayed, want: &Replayed) -> Result<(), TestCaseError> {
    prop_assert_eq!(live(&got.state), live(&want.state));
    prop_assert_eq!(got.state.generations(), want.state.generations());
    prop_assert_eq!(got.state.next_generation(), want.state.next_generation());
    prop_assert_eq!(got.state.next_seq(), want.state.next_seq());
    prop_assert_eq!(got.state.corrupt(), want.state.corrupt());
    prop_assert_eq!(got.state.record_count(), want.state.record_count());
    prop_assert_eq!(&got.torn_tail, &want.torn_tail);
    prop_assert_eq!(got.lines, want.lines);
    Ok(())
}

/// Whether replaying the compaction gives the same live set (identities, bodies and order) and
/// the same generation table.
fn round_trips(state: &LiveState) -> bool {
    let again = replay_records(&state.compact());
    live(&again) == live(state) && again.generations() == state.generations()
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Regressions are reported in the failure message; nothing is written beside this file.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn compaction_round_trips_every_self_keyed_journal_and_preserves_generations(
        journal in journal()
    ) {
        let state = replay_bytes(&journal.bytes()).state;
        let compacted = state.compact();
        let again = replay_records(&compacted);
        // Whatever the keying: the generation table, next_seq and the sentinels survive.
        prop_assert_eq!(again.generations(), state.generations());
        prop_assert_eq!(again.next_seq(), state.next_seq());
        prop_assert_eq!(again.corrupt(), state.corrupt());
        prop_assert_eq!(compacted.is_empty(), state.record_count() == 0);
        if state.is_self_keyed() {
            prop_assert_eq!(live(&again), live(&state));
            prop_assert_eq!(state.compact_checked(), Ok(compacted.clone()));
            // Compacting a compacted journal changes nothing.
            prop_assert_eq!(again.compact(), compacted);
        }
    }

    /// A rewrite keeps the grant counter: the next grant after it gets the token it would have
    /// got without it, never one a released lease held. (The spec's checkpoint restarted the
    /// counter from the largest live generation.) Apart from the watermark row, it is the spec's
    /// compaction, and compacting again changes nothing.
    #[test]
    fn a_fenced_compaction_keeps_the_counter_and_otherwise_is_the_spec_compaction(journal in journal()) {
        let state = replay_bytes(&journal.bytes()).state;
        let Ok(fenced) = state.compact_fenced() else {
            prop_assert!(state.compact_checked().is_err());
            return Ok(());
        };
        let again = replay_records(&fenced);
        prop_assert_eq!(again.next_generation(), state.next_generation());
        prop_assert_eq!(live(&again), live(&state));
        prop_assert_eq!(again.next_seq(), state.next_seq());
        let not_watermark = |rows: Vec<keel_kernel::Generation>| -> Vec<keel_kernel::Generation> {
            rows.into_iter().filter(|row| row.loop_ts != GENERATION_WATERMARK).collect()
        };
        prop_assert_eq!(not_watermark(again.generations()), not_watermark(state.generations()));
        prop_assert_eq!(again.compact_fenced(), Ok(fenced.clone()));
        let mut spec = state.compact();
        let mut ours = fenced;
        for records in [&mut spec, &mut ours] {
            if let Some(checkpoint) = records.first_mut() {
                checkpoint.remove("generations");
            }
        }
        prop_assert_eq!(ours, spec);
    }

    /// Regression: `compact_checked` compared the re-keyed live set by bodies only, so it accepted
    /// a compaction that moves a mis-keyed lease to the identity its body names:
    /// `{"op": "ACQUIRE", "loop_ts": "a", "lane": "x", "lease": {"loop_ts": "b", "lane": "y"}}`.
    #[test]
    fn checked_compaction_is_ok_exactly_when_the_round_trip_holds(journal in journal()) {
        let state = replay_bytes(&journal.bytes()).state;
        let checked = state.compact_checked();
        prop_assert_eq!(checked.is_ok(), round_trips(&state), "compact_checked: {:?}", checked);
        if let Ok(records) = checked {
            prop_assert_eq!(records, state.compact());
        }
    }

    #[test]
    fn pushing_lines_in_any_chunks_equals_replaying_the_whole_buffer(
        journal in journal(),
        peeks in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let bytes = journal.bytes();
        let whole = replay_bytes(&bytes);
        let mut replay = Replay::new();
        for (line, peek) in journal.line_bytes().iter().zip(peeks.iter().cycle()) {
            replay.push_line(line);
            if *peek {
                // Looking at the state between lines changes nothing.
                let _ = replay.state().live_count();
            }
        }
        let pushed = replay.finish();
        assert_same_replay(&pushed, &whole)?;
        prop_assert_eq!(pushed.state.op_counts(), whole.state.op_counts());
    }

    /// What parser threads do: cut the file at line ends into chunks, take each apart with
    /// `ParsedChunk::parse`, fold them in order. Any cuts give the same replay as the whole file.
    #[test]
    fn folding_parsed_chunks_cut_at_any_line_ends_equals_replaying_the_whole_buffer(
        journal in journal(),
        cuts in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let bytes = journal.bytes();
        let whole = replay_bytes(&bytes);
        let mut replay = Replay::new();
        let mut start = 0;
        let line_ends = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(at, _)| at + 1);
        for (end, cut) in line_ends.zip(cuts.iter().cycle()) {
            if *cut {
                replay.push_chunk(ParsedChunk::parse(bytes[start..end].to_vec()));
                start = end;
            }
        }
        replay.push_chunk(ParsedChunk::parse(bytes[start..].to_vec()));
        let folded = replay.finish();
        assert_same_replay(&folded, &whole)?;
        prop_assert_eq!(folded.state.op_counts(), whole.state.op_counts());
    }

    /// `Replay::resume` cannot continue after an unparseable line: the decoder holds such a line
    /// back until it knows whether it is the tail, and a saved `LiveState` does not carry it. So
    /// the split is moved back to the nearest boundary after a line that is not unparseable.
    #[test]
    fn resuming_from_the_state_after_a_parseable_line_equals_the_whole_replay(
        journal in journal(),
        split in any::<proptest::sample::Index>(),
    ) {
        let whole = replay_bytes(&journal.bytes());
        let mut at = split.index(journal.lines.len() + 1);
        while at > 0 && journal.lines[at - 1].is_unparseable() {
            at -= 1;
        }
        let prefix = Journal { lines: journal.lines[..at].to_vec(), terminated: true };
        let before = replay_bytes(&prefix.bytes());
        prop_assert!(before.torn_tail.is_none());
        let mut resumed = Replay::resume(before.state, at as u64);
        for line in &journal.line_bytes()[at..] {
            resumed.push_line(line);
        }
        assert_same_replay(&resumed.finish(), &whole)?;
    }

    #[test]
    fn next_seq_is_one_more_than_the_largest_seq_or_watermark(journal in journal()) {
        let state = replay_bytes(&journal.bytes()).state;
        let largest = journal
            .lines
            .iter()
            .filter_map(Line::record)
            // A record keel takes as damage is a corrupt sentinel: its numbers count for nothing.
            .filter(|r| keel_kernel::record::malformed(r).is_none())
            .map(|r| seq_number(r.get("seq")).max(seq_number(r.get("seq_watermark"))))
            .max()
            .unwrap_or(0);
        prop_assert_eq!(state.next_seq(), largest + 1);
    }
}

// Regression: `next_seq` was `max_seq + 1` in u64, so a record with `"seq": 18446744073709551615`
// panicked in debug builds and wrapped to 0 in release.
#[test]
fn next_seq_after_a_seq_at_the_u64_limit_does_not_overflow() {
    let state = replay_bytes(b"{\"op\": \"X\", \"seq\": 18446744073709551615}\n").state;
    let next = std::panic::catch_unwind(|| state.next_seq());
    // No writer issues such a seq: the record is damage, and never the counter.
    assert!(matches!(next, Ok(1)), "the record must be refused, got {next:?}");
    assert_eq!(state.corrupt().len(), 1);
}

// Regression: the generation counter continues from a checkpoint's largest row; a row at u64::MAX
// followed by a grant overflowed (a panic in debug builds, generation 0 in release).
#[test]
fn granting_after_a_checkpoint_at_the_generation_limit_does_not_overflow() {
    let journal = concat!(
        "{\"op\": \"CHECKPOINT\", \"leases\": [], \"generations\": [{\"loop_ts\": \"a\", \"lane\": \"x\", \"generation\": 18446744073709551615}]}\n",
        "{\"op\": \"ACQUIRE\", \"loop_ts\": \"b\", \"lane\": \"y\", \"lease\": {\"loop_ts\": \"b\", \"lane\": \"y\"}}\n",
    );
    let replayed = std::panic::catch_unwind(|| replay_bytes(journal.as_bytes()));
    assert!(replayed.is_ok(), "a hostile generation row must not panic the replay");
}

// ---------------------------------------------------------------------------------------------
// Admission

fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(vec![
            "src/", "src/api/", "SRC/Api/x.rs", "src/api/*.rs", "src/api", "**/*", "*.toml",
            "docs\\guide\\", " src/ui/ ", "\tsrc/db/\n", "lock://deploy", "LOCK://Deploy",
            "lock://db", "lock://", "lock://d*", "Straße/", "strasse/x", "STRASSE/", "tests/[ab]",
            "orchestrator/run.py", "a *", "", "  ",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Zß/\\\\*?\\[ .]{0,8}",
    ]
}

fn entries(max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(entry(), 0..max)
}

fn lease_tree() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => entries(3).prop_map(|e| json!(e)),
        1 => entry().prop_map(|e| json!(e)),
        1 => Just(json!(null)),
        1 => Just(json!([{"x": 1}])),
        1 => Just(json!([7, null])),
    ]
}

fn live_lease() -> impl Strategy<Value = Object> {
    (
        proptest::sample::select(vec!["api", "db", "main", "Main", "global", "x", ""]),
        proptest::sample::select(vec![
            "keyword", "keyword", "keyword", "cluster", "cluster", "global", "GLOBAL", "deploy", "",
        ]),
        lease_tree(),
        optional(&[json!("shared"), json!("shared"), json!("exclusive"), json!(""), json!(" SHARED "), json!("junk")]),
        any::<bool>(),
    )
        .prop_map(|(lane, kind, tree, mode, lock_mode)| {
            let mut body =
                object(json!({"lane": lane, "lane_kind": kind, "tree": tree, "loop_ts": "t", "holder": "h"}));
            if let Some(mode) = mode {
                body.insert((if lock_mode { "lock_mode" } else { "mode" }).into(), mode);
            }
            body
        })
}

fn lane_spec(names: Vec<&'static str>) -> impl Strategy<Value = LaneSpec> {
    (proptest::sample::select(names), entries(3)).prop_map(|(name, tree)| LaneSpec { name: name.to_owned(), tree })
}

fn taxonomy() -> impl Strategy<Value = Taxonomy> {
    (
        proptest::collection::vec(lane_spec(vec!["main", "Main", "api", "batch"]), 0..3),
        proptest::collection::vec(lane_spec(vec!["global", "deploy", "Deploy"]), 0..2),
        proptest::collection::vec(
            proptest::sample::select(vec!["main", "batch", "api", "nope"]).prop_map(str::to_owned),
            0..3,
        ),
        entries(2),
        proptest::collection::btree_map(
            proptest::sample::select(vec!["keyword", "cluster", "Keyword"]).prop_map(str::to_owned),
            0usize..3,
            0..2,
        ),
        any::<bool>(),
    )
        .prop_map(|(cluster_lanes, exclusive_lanes, auto_pick, protected, kind_budgets, default)| {
            if default {
                return Taxonomy::default();
            }
            Taxonomy { cluster_lanes, exclusive_lanes, auto_pick, protected, kind_budgets }
        })
}

fn request(force: bool) -> impl Strategy<Value = Request> {
    (
        proptest::sample::select(vec!["", "api", "db", "main", "MAIN", "global", "deploy", "new"]),
        proptest::sample::select(vec!["keyword", "keyword", "cluster", "global", "", "KEYWORD", "deploy", "weird"]),
        entries(3),
        proptest::sample::select(vec!["shared", "exclusive", "", " Shared", "junk"]),
    )
        .prop_map(move |(lane, kind, tree, mode)| Request {
            lane: lane.to_owned(),
            kind: kind.to_owned(),
            tree,
            mode: mode.to_owned(),
            force,
        })
}

fn kind_runs_alone(lease: &Object, taxonomy: &Taxonomy) -> bool {
    let kind = keel_kernel::value::casefold(&keel_kernel::value::identity_text(lease.get("lane_kind")));
    kind == "global" || taxonomy.exclusive_lanes.iter().any(|l| keel_kernel::value::casefold(&l.name) == kind)
}

proptest! {
    #![proptest_config(config(768))]

    #[test]
    fn decide_never_admits_a_region_held_by_a_live_lease_in_a_conflicting_mode(
        request in request(false),
        live in proptest::collection::vec(live_lease(), 0..4),
        taxonomy in taxonomy(),
    ) {
        let decision = decide(&request, &live, &taxonomy);
        if decision.outcome == Outcome::Acquire {
            let granted = Tree::new(&decision.tree);
            for lease in &live {
                let held = Tree::from_json(lease.get("tree"));
                if held.is_empty() {
                    continue; // a lease that named no region claims no conflict
                }
                prop_assert!(
                    !granted.is_empty(),
                    "admitted an unknown blast radius next to {:?}: {:?}", lease, decision
                );
                let both_shared =
                    decision.mode == Mode::Shared && Mode::of_lease(lease) == Mode::Shared;
                prop_assert!(
                    both_shared || !granted.intersects(&held),
                    "admitted {:?} over {:?}", decision, lease
                );
            }
        }
    }

    #[test]
    fn admission_never_admits_a_region_held_by_a_live_lease_and_reclaims_only_dead_blockers(
        request in request(false),
        live in proptest::collection::vec(live_lease(), 0..5),
        dead in proptest::collection::vec(any::<bool>(), 5),
        taxonomy in taxonomy(),
    ) {
        let mut replay = Replay::new();
        for (i, lease) in live.iter().enumerate() {
            let mut body = lease.clone();
            body.insert("loop_ts".into(), json!(format!("t{i}")));
            let record = json!({"op": "ACQUIRE", "lane": body.get("lane"), "loop_ts": format!("t{i}"), "lease": body});
            replay.push_line(keel_kernel::json::to_line(&record).as_bytes());
        }
        let state = replay.finish().state;
        let is_dead = |lease: &Object| {
            let ts = lease.get("loop_ts").and_then(Value::as_str).unwrap_or("t0");
            dead[ts[1..].parse::<usize>().unwrap_or(0)]
        };
        let judge = |lease: &Object| {
            if is_dead(lease) { Verdict::HolderGone { idle_s: 999 } } else { Verdict::Alive { idle_s: 0, ttl_s: 60 } }
        };
        let admission = admit(&request, &state, &taxonomy, judge);
        let decision = &admission.decision;
        if decision.outcome == Outcome::Acquire {
            let granted = Tree::new(&decision.tree);
            for lease in state.live().filter(|lease| !is_dead(lease)) {
                let held = Tree::from_json(lease.get("tree"));
                if held.is_empty() {
                    continue;
                }
                prop_assert!(!granted.is_empty(), "admitted an unknown blast radius next to {:?}", lease);
                let both_shared = decision.mode == Mode::Shared && Mode::of_lease(lease) == Mode::Shared;
                prop_assert!(both_shared || !granted.intersects(&held), "admitted {:?} over live {:?}", decision, lease);
                prop_assert!(!kind_runs_alone(lease, &taxonomy), "admitted {:?} beside {:?}", decision, lease);
            }
        }
        for (identity, verdict) in &admission.reclaimed {
            let lease = state.lease(identity).expect("a reclaimed lease is live");
            prop_assert!(is_dead(lease) && verdict.is_dead(), "reclaimed a live lease: {:?}", lease);
            let alone = decide(&request, std::iter::once(lease), &taxonomy);
            prop_assert_eq!(alone.outcome, Outcome::Refuse, "reclaimed a lease that blocks nothing: {:?}", lease);
        }
    }

    #[test]
    fn decide_admits_nothing_while_a_global_or_exclusive_lane_lease_is_live(
        request in prop_oneof![request(false), request(true)],
        live in proptest::collection::vec(live_lease(), 1..4),
        taxonomy in taxonomy(),
    ) {
        let decision = decide(&request, &live, &taxonomy);
        if live.iter().any(|lease| kind_runs_alone(lease, &taxonomy)) {
            prop_assert_eq!(decision.outcome, Outcome::Refuse, "{:?}", decision);
        }
    }

    #[test]
    fn region_collision_and_tree_intersection_are_symmetric(
        a in entries(4),
        b in entries(4),
    ) {
        let (ta, tb) = (Tree::new(&a), Tree::new(&b));
        prop_assert_eq!(ta.intersects(&tb), tb.intersects(&ta));
        for ra in ta.regions() {
            for rb in tb.regions() {
                prop_assert_eq!(ra.collides(rb), rb.collides(ra), "{:?} {:?}", ra, rb);
            }
        }
        // The universal region collides with everything, itself included.
        for r in ta.regions() {
            prop_assert!(Region::Universal.collides(r));
        }
    }

    // Regression: `Region::text` was not a normal form ("**/*" -> Universal -> "" -> blank, and
    // "a *" -> Prefix("a ") -> "a " -> Prefix("a")).
    #[test]
    fn normalising_the_text_of_a_normalised_entry_changes_nothing(x in entry()) {
        if let Some(region) = normalise(&x) {
            prop_assert_eq!(normalise(&region.text()), Some(region.clone()), "entry {:?}", x);
        }
    }
}

/// Found by a hostile-input sweep: `serde_json`'s default float parsing can be one ulp off, so a
/// compaction rewrote `2.2250738585072011e-308` in a lease body as a different number.
#[test]
fn a_float_in_a_lease_body_survives_compaction_exactly() {
    let text = "2.2250738585072011e-308";
    let journal = format!(
        "{{\"op\": \"ACQUIRE\", \"seq\": 1, \"loop_ts\": \"t\", \"lane\": \"a\", \"lease\": {{\"lane\": \"a\", \"loop_ts\": \"t\", \"x\": {text}}}}}\n"
    );
    let state = replay_bytes(journal.as_bytes()).state;
    let compacted = serde_json::to_string(&state.compact()).expect("serialise");
    let written = compacted.split("\"x\":").nth(1).expect("x").split(['}', ',']).next().expect("number");
    let exact: f64 = text.parse().expect("std parses exactly");
    assert_eq!(written.trim().parse::<f64>().expect("a number").to_bits(), exact.to_bits(), "{written}");
}
