//! Properties of the write gate: it allows only the exact live generation, only inside the
//! holder's tree, never over a protected entry or another holder's colliding exclusive region,
//! and never past a later overlapping exclusive grant.

use keel_kernel::gate::{Decision, Holder, LiveGrant, decide};
use keel_kernel::replay::Identity;
use keel_kernel::tree::Tree;
use keel_kernel::value::Object;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Short paths over a tiny alphabet, so prefixes and collisions are common.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![4 => Just("a"), 2 => Just("b"), 2 => Just("ab"), 1 => Just("..")], 1..4)
        .prop_map(|parts| parts.join("/"))
}

fn entry() -> impl Strategy<Value = String> {
    prop_oneof![path(), path().prop_map(|p| format!("{p}/")), Just("**/*".to_owned()), Just("lock://a".to_owned())]
}

#[derive(Debug, Clone)]
struct LeaseSpec {
    lane: String,
    holder: String,
    tree: Vec<String>,
    shared: bool,
    generation: Option<u64>,
}

fn lease() -> impl Strategy<Value = LeaseSpec> {
    (
        prop_oneof![Just("x"), Just("y")],
        prop_oneof![Just("me"), Just("other")],
        prop::collection::vec(entry(), 0..3),
        any::<bool>(),
        prop::option::weighted(0.9, 1..6_u64),
    )
        .prop_map(|(lane, holder, tree, shared, generation)| LeaseSpec {
            lane: lane.into(),
            holder: holder.into(),
            tree,
            shared,
            generation,
        })
}

fn body(spec: &LeaseSpec) -> Object {
    let Value::Object(body) = json!({
        "lane": spec.lane, "holder": spec.holder, "tree": spec.tree,
        "mode": if spec.shared { "shared" } else { "exclusive" },
    }) else {
        unreachable!("an object literal")
    };
    body
}

fn covered(path: &str, tree: &[String]) -> bool {
    tree.iter().any(|e| e == "**/*" || (!e.starts_with("lock://") && path.starts_with(e.as_str())))
}

/// The holder's own lease, usually valid (exclusive, generation 3), plus other leases.
fn leases() -> impl Strategy<Value = Vec<LeaseSpec>> {
    let own = (prop::collection::vec(entry(), 1..3), prop::bool::weighted(0.1), prop::option::weighted(0.9, 2..5_u64))
        .prop_map(|(tree, shared, generation)| LeaseSpec {
            lane: "x".into(),
            holder: "me".into(),
            tree,
            shared,
            generation,
        });
    (own, prop::collection::vec(lease(), 0..4)).prop_map(|(own, mut others)| {
        others.insert(0, own);
        others
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn an_allowed_write_is_by_the_exact_live_generation_inside_the_tree_and_clear_of_others(
        specs in leases(),
        target in path(),
        presented in 2..5_u64,
        protected in prop::collection::vec(entry(), 0..2),
    ) {
        let identities: Vec<Identity> =
            (0..specs.len()).map(|i| Identity { loop_ts: format!("t{i}"), lane: specs[i].lane.clone() }).collect();
        let bodies: Vec<Object> = specs.iter().map(body).collect();
        let live: Vec<LiveGrant<'_>> = (0..specs.len())
            .map(|i| LiveGrant { identity: &identities[i], lease: &bodies[i], generation: specs[i].generation })
            .collect();
        let holder = Holder { owner: "me".into(), lane: "x".into(), loop_ts: None, generation: presented };
        let protected_tree = Tree::new(&protected);
        let decision = decide(&target, &holder, &live, &protected_tree);
        prop_assert_eq!(&decision, &decide(&target, &holder, &live, &protected_tree), "deterministic");
        if let Decision::Allowed { identity } = decision {
            let own = identities.iter().position(|i| *i == identity).expect("allowed names a live lease");
            prop_assert!(!target.split('/').any(|c| c == ".."));
            prop_assert_eq!(specs[own].generation, Some(presented));
            prop_assert_eq!(&specs[own].holder, "me");
            prop_assert!(!specs[own].shared);
            prop_assert!(covered(&target, &specs[own].tree), "{} outside {:?}", target, specs[own].tree);
            let path_tree = Tree::new(&[target.as_str()]);
            prop_assert!(!path_tree.intersects(&protected_tree));
            for (i, spec) in specs.iter().enumerate() {
                if i != own && !spec.shared {
                    prop_assert!(!path_tree.intersects(&Tree::new(&spec.tree)), "collides with lease {}", i);
                }
            }
        }
    }
}
