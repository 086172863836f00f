//! Every record keel writes, built by `keel_kernel::record::Writer`, folds through replay as it
//! means to: a grant is live with its body and the next generation, a release or scavenge frees
//! it, a heartbeat stamps it, an adoption replaces it with a higher generation, and the forensic
//! records (`REFUSE`, `HALT`, `SPAWN`) change nothing. None is ever damage.

use keel_kernel::arbiter::{Mode, Outcome, Request, Taxonomy, decide};
use keel_kernel::json::to_line;
use keel_kernel::record::{Lease, Refusal, Writer, malformed};
use keel_kernel::{Identity, LiveState, Object, Replay};
use proptest::prelude::*;
use serde_json::Value;

fn fold(records: &[Object]) -> LiveState {
    let mut replay = Replay::new();
    for (seq, record) in records.iter().enumerate() {
        let mut record = record.clone();
        record.insert("seq".into(), Value::from(seq as u64 + 1));
        assert_eq!(malformed(&record), None, "keel's own record is damage: {record:?}");
        replay.push_line(to_line(&record).as_bytes());
    }
    let replayed = replay.finish();
    assert!(replayed.torn_tail.is_none());
    assert!(replayed.state.damage().is_empty(), "a record keel wrote folded as damage");
    replayed.state
}

fn body(
    writer: &Writer<'_>,
    identity: &Identity,
    holder: &str,
    tree: &[String],
    choices: (bool, bool, bool),
) -> Object {
    let request = Request { lane: identity.lane.clone(), tree: tree.to_vec(), ..Request::default() };
    let decision = decide(&request, std::iter::empty(), &Taxonomy::default());
    assert_eq!(decision.outcome, Outcome::Acquire);
    assert_eq!(decision.mode, Mode::Exclusive);
    let (forced, grouped, run) = choices;
    writer.lease(&Lease {
        identity,
        holder,
        acquired_at: "2026-12-05T10:00:00Z",
        decision: &decision,
        pid: Some(4242),
        proc_starttime: Some(99),
        pgid: grouped.then_some(4242),
        ttl_minutes: 120.0,
        grace_s: 300,
        forced,
        run_id: run.then_some("run-1"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_record_keel_writes_folds_as_it_means(
        lane in "[a-z]{1,8}",
        loop_ts in "20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:00:00\\.[0-9]{6}Z",
        holder in "[a-z]{1,6}-[0-9]{1,5}",
        heir in "[a-z]{1,6}",
        tree in proptest::collection::vec("[a-z]{1,5}/", 1..4),
        choices in (any::<bool>(), any::<bool>(), any::<bool>()),
        ends in 0..3_u8,
    ) {
        let writer = Writer { host_id: "host-a" };
        let identity = Identity { loop_ts: loop_ts.clone(), lane: lane.clone() };
        let lease = body(&writer, &identity, &holder, &tree, choices);
        let refusal = Refusal {
            holder: "other", lane: &lane, loop_ts: "2026-01-01T00:00:00.000000Z", reason: "held",
            reason_class: None, run_id: None,
        };
        let mut records = vec![
            writer.refuse(&refusal),
            writer.halt(&lane, &holder, "stop"),
            writer.spawn(&lane, "2026-01-01T00:00:01.000000Z", &holder, 7, "make"),
            writer.acquire(&identity, &lease),
        ];
        let state = fold(&records);
        prop_assert_eq!(state.lease(&identity), Some(&lease));
        prop_assert_eq!(state.live().count(), 1);
        let granted = state.generation(&identity).expect("a grant has a generation");

        records.push(writer.heartbeat(&identity, "2026-12-05T10:05:00Z"));
        let state = fold(&records);
        let beaten = state.lease(&identity).expect("still live");
        prop_assert_eq!(beaten.get("heartbeat_at").and_then(Value::as_str), Some("2026-12-05T10:05:00Z"));
        prop_assert_eq!(state.generation(&identity), Some(granted), "a heartbeat is no new grant");

        let mut adopted = lease.clone();
        adopted.insert("holder".into(), Value::from(heir.clone()));
        let prev = Value::from(holder.clone());
        records.push(writer.adopt(&identity, &prev, &heir, adopted.clone()));
        let state = fold(&records);
        prop_assert_eq!(state.lease(&identity), Some(&adopted));
        prop_assert!(state.generation(&identity) > Some(granted), "an adoption fences the old holder");

        match ends {
            0 => records.push(writer.release(&identity, &heir)),
            1 => records.push(Writer::scavenge(&identity, "reclaimed: holder gone")),
            _ => {}
        }
        let state = fold(&records);
        prop_assert_eq!(state.live().count(), usize::from(ends == 2));
    }
}
