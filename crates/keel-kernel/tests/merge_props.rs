//! Properties of the pure merges: the lockfile section merge (staged keys win, every other key of
//! the on-disk document survives, reserved keys untouched), the generation compare-and-swap and
//! JSON Merge Patch (RFC 7386).

use std::collections::BTreeMap;

use keel_kernel::merge::{
    Change, INPUTS_DIGEST_KEY, LOCK_VERSION, LOCK_VERSION_KEY, Staged, merge_patch, merge_sections, next_generation,
    parse_lockfile,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Section names drawn from a small alphabet so staged and on-disk keys often collide.
fn section_name() -> impl Strategy<Value = String> {
    "[a-e]{1,2}"
}

/// An on-disk document: sections, maybe a version (0 or 1), maybe a digest.
fn on_disk() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::btree_map(section_name(), value(), 0..6),
        prop::option::of(0..=LOCK_VERSION),
        prop::option::of("[0-9a-f]{0,8}"),
    )
        .prop_map(|(sections, version, digest)| {
            let mut document: Map<String, Value> = sections.into_iter().collect();
            if let Some(version) = version {
                document.insert(LOCK_VERSION_KEY.into(), Value::from(version));
            }
            if let Some(digest) = digest {
                document.insert(INPUTS_DIGEST_KEY.into(), Value::String(digest));
            }
            document
        })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![3 => value().prop_map(Change::Set), 1 => Just(Change::Remove)]
}

fn staged() -> impl Strategy<Value = (BTreeMap<String, Change>, Option<String>)> {
    (prop::collection::btree_map(section_name(), change(), 0..4), prop::option::of("[0-9a-f]{0,8}"))
}

fn build(changes: &BTreeMap<String, Change>, digest: Option<&str>) -> Staged {
    let mut staged = Staged::new();
    for (name, change) in changes {
        staged.stage_section(name, change.clone()).expect("generated names are valid sections");
    }
    if let Some(digest) = digest {
        staged.stage_inputs_digest(digest).expect("short digest");
    }
    staged
}

proptest! {
    #[test]
    fn staged_keys_win_every_other_key_survives_and_reserved_keys_are_untouched(
        disk in on_disk(),
        (changes, digest) in staged(),
    ) {
        let merged = merge_sections(&disk, &build(&changes, digest.as_deref()));
        for (name, change) in &changes {
            match change {
                Change::Set(value) => prop_assert_eq!(merged.get(name), Some(value), "staged {} wins", name),
                Change::Remove => prop_assert!(!merged.contains_key(name), "staged removal of {}", name),
            }
        }
        for (name, value) in &disk {
            if changes.contains_key(name) || (name == INPUTS_DIGEST_KEY && digest.is_some()) {
                continue;
            }
            prop_assert_eq!(merged.get(name), Some(value), "on-disk key {} survives", name);
        }
        for name in merged.keys() {
            let known = disk.contains_key(name) || changes.contains_key(name) || name == LOCK_VERSION_KEY
                || (name == INPUTS_DIGEST_KEY && digest.as_deref().is_some_and(|d| !d.is_empty()));
            prop_assert!(known, "merge invented key {}", name);
        }
        // lock_version: kept when present, the current format when absent; never staged.
        let want_version = disk.get(LOCK_VERSION_KEY).cloned().unwrap_or_else(|| Value::from(LOCK_VERSION));
        prop_assert_eq!(merged.get(LOCK_VERSION_KEY), Some(&want_version));
        match digest.as_deref() {
            None => prop_assert_eq!(merged.get(INPUTS_DIGEST_KEY), disk.get(INPUTS_DIGEST_KEY)),
            Some("") => prop_assert!(!merged.contains_key(INPUTS_DIGEST_KEY)),
            Some(d) => prop_assert_eq!(merged.get(INPUTS_DIGEST_KEY), Some(&json!(d))),
        }
        // What the merge produces is a valid lockfile that round-trips through the parser.
        let bytes = serde_json::to_vec(&merged).expect("JSON values serialise");
        prop_assert_eq!(parse_lockfile(&bytes).expect("merged document parses"), merged);
    }

    #[test]
    fn two_writers_with_disjoint_sections_lose_nothing_in_either_order(
        disk in on_disk(),
        first in prop::collection::btree_map("[a-c]{1,2}", value(), 0..4),
        second in prop::collection::btree_map("[x-z]{1,2}", value(), 0..4),
    ) {
        let stage = |sections: &BTreeMap<String, Value>| {
            let changes = sections.iter().map(|(k, v)| (k.clone(), Change::Set(v.clone()))).collect();
            build(&changes, None)
        };
        let (a, b) = (stage(&first), stage(&second));
        let ab = merge_sections(&merge_sections(&disk, &a), &b);
        let ba = merge_sections(&merge_sections(&disk, &b), &a);
        prop_assert_eq!(&ab, &ba);
        for (name, value) in first.iter().chain(&second) {
            prop_assert_eq!(ab.get(name), Some(value));
        }
    }

    #[test]
    fn generation_cas_admits_exactly_the_current_generation(expected in 0u64..8, current in 0u64..8) {
        match next_generation(Some(expected), current) {
            Ok(next) => prop_assert!(expected == current && next == current + 1),
            Err(e) => prop_assert_eq!(
                e,
                keel_kernel::merge::GenerationError::Conflict { expected, current },
                "only a mismatch is refused"
            ),
        }
        prop_assert_eq!(next_generation(None, current), Ok(current + 1));
    }

    #[test]
    fn merge_patch_is_idempotent_and_sets_every_non_null_patch_member(target in value(), patch in value()) {
        let mut once = target.clone();
        merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        prop_assert_eq!(&once, &twice, "RFC 7386 patches are idempotent");
        match (&patch, &once) {
            (Value::Object(members), Value::Object(result)) => {
                for (name, value) in members {
                    if value.is_null() {
                        prop_assert!(!result.contains_key(name), "null removes {}", name);
                    } else if !value.is_object() {
                        prop_assert_eq!(result.get(name), Some(value));
                    }
                }
                // Members the patch does not mention keep their value.
                if let Value::Object(before) = &target {
                    for (name, value) in before {
                        if !members.contains_key(name) {
                            prop_assert_eq!(result.get(name), Some(value));
                        }
                    }
                }
            }
            (Value::Object(_), other) => prop_assert!(false, "an object patch yields an object, got {}", other),
            (replacement, result) => prop_assert_eq!(replacement, result, "a non-object patch replaces"),
        }
    }
}
