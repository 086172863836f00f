//! Unit tests of `arbiter`.

use super::*;

#[test]
fn a_request_with_an_unknown_mode_or_too_long_a_tree_cannot_be_decided() {
    let request = |mode: &str, entries: usize| Request {
        mode: mode.into(),
        tree: vec!["src/".to_owned(); entries],
        ..Request::default()
    };
    assert_eq!(request(" Shared", 1).validate(), Ok(Mode::Shared));
    assert_eq!(request("", 1).validate(), Ok(Mode::Exclusive));
    assert!(matches!(request("shraed", 1).validate(), Err(InvalidRequest::Mode(_))));
    let long = request("", crate::tree::TREE_ENTRIES_MAX + 1).validate().expect_err("too long");
    assert!(long.to_string().contains("at most"), "{long}");
}
use serde_json::json;

fn lease(lane: &str, kind: &str, tree: &[&str], mode: &str) -> Object {
    let Value::Object(o) = json!({"lane": lane, "lane_kind": kind, "tree": tree, "mode": mode, "loop_ts": "t"}) else {
        unreachable!()
    };
    o
}

fn request(lane: &str, kind: &str, tree: &[&str], mode: &str) -> Request {
    Request {
        lane: lane.into(),
        kind: kind.into(),
        tree: tree.iter().map(|s| (*s).to_owned()).collect(),
        mode: mode.into(),
        force: false,
    }
}

#[test]
fn a_requested_mode_is_shared_exclusive_or_empty_and_anything_else_is_refused() {
    assert_eq!(Mode::requested(" Shared "), Ok(Mode::Shared));
    assert_eq!(Mode::requested("EXCLUSIVE"), Ok(Mode::Exclusive));
    assert_eq!(Mode::requested(""), Ok(Mode::Exclusive));
    assert_eq!(Mode::requested("bogus"), Err(UnknownMode("bogus".into())));
    // A recorded lease body stays lenient: unknown text fails toward less concurrency.
    assert_eq!(Mode::parse("bogus"), Mode::Exclusive);
}

#[test]
fn refusal_names_the_blocking_lease() {
    let live = [lease("db", "keyword", &["src/db/"], "exclusive")];
    let d = decide(&request("api", "keyword", &["src/"], "exclusive"), &live, &Taxonomy::default());
    assert_eq!(d.outcome, Outcome::Refuse);
    assert_eq!(d.reason_class, Some(RefusalClass::RegionConflict));
    assert_eq!(d.blocking.as_ref().map(|b| b.lane.as_str()), Some("db"));
    assert!(d.reason.contains("\"db\""), "{}", d.reason);
}

#[test]
fn shared_leases_coexist_and_exclusive_ones_do_not() {
    let live = [lease("a", "keyword", &["src/"], "shared")];
    let t = Taxonomy::default();
    assert_eq!(decide(&request("b", "keyword", &["src/x"], "shared"), &live, &t).outcome, Outcome::Acquire);
    assert_eq!(decide(&request("b", "keyword", &["src/x"], ""), &live, &t).outcome, Outcome::Refuse);
}

#[test]
fn empty_keyword_tree_auto_picks_but_never_past_a_conflict() {
    let t = Taxonomy::default();
    let free = decide(&request("", "keyword", &[], "exclusive"), &[], &t);
    assert_eq!((free.outcome, free.lane.as_str(), free.lane_kind.as_str()), (Outcome::Acquire, "main", "cluster"));
    let live = [lease("a", "keyword", &["src/"], "exclusive")];
    let busy = decide(&request("", "keyword", &["  "], "exclusive"), &live, &t);
    assert_eq!(busy.outcome, Outcome::Refuse);
    assert_eq!(busy.blocking.map(|b| b.lane), Some("a".into()));
}

#[test]
fn unknown_lane_without_a_tree_is_refused() {
    let d = decide(&request("docs", "keyword", &[], ""), &[], &Taxonomy::default());
    assert_eq!(d.reason_class, Some(RefusalClass::UnknownLane));
}

#[test]
fn cluster_lanes_are_concurrent_but_still_admitted_by_region() {
    let t = Taxonomy::default();
    let live = [lease("main", "cluster", &["src/a/"], "exclusive")];
    assert_eq!(decide(&request("main", "cluster", &["src/b/"], ""), &live, &t).outcome, Outcome::Acquire);
    assert_eq!(decide(&request("main", "cluster", &["src/a/x"], ""), &live, &t).outcome, Outcome::Refuse);
}

#[test]
fn budgets_and_protected_paths_refuse_unless_forced() {
    let mut t = Taxonomy::default();
    t.kind_budgets.insert("keyword".into(), 1);
    t.protected = vec!["orchestrator/".into()];
    let live = [lease("a", "keyword", &["src/"], "exclusive")];
    let over = decide(&request("b", "keyword", &["docs/"], ""), &live, &t);
    assert_eq!(over.reason_class, Some(RefusalClass::BudgetExhausted));
    let prot = decide(&request("b", "keyword", &["Orchestrator/run.py"], ""), &[], &t);
    assert_eq!(prot.reason_class, Some(RefusalClass::Protected));
    let mut forced = request("b", "keyword", &["orchestrator/"], "");
    forced.force = true;
    assert_eq!(decide(&forced, &[], &t).outcome, Outcome::Acquire);
}

#[test]
fn a_live_global_lease_blocks_even_force() {
    let live = [lease("global", "global", &[], "")];
    let mut r = request("x", "keyword", &["a"], "");
    r.force = true;
    assert_eq!(decide(&r, &live, &Taxonomy::default()).reason_class, Some(RefusalClass::ExclusiveLaneLive));
}
