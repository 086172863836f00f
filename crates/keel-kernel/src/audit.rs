//! Checks over a replayed live set that the service's promise held: no two live leases hold
//! colliding regions (unless both are shared). The arbiter never admits such a pair, so finding
//! one means the journal was edited, damaged, or written by something that does not arbitrate.
//!
//! A lease granted with `force` (`"forced": true` in its body) is the operator's explicit
//! override: it collides on purpose, and the write gate fences the older holder by generation.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::arbiter::Mode;
use crate::replay::Identity;
use crate::tree::{Region, Tree};
use crate::value::Object;

/// One side of a collision: the lease and the entry of its tree that collides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// The lease's identity.
    pub identity: Identity,
    /// Its holder, as recorded.
    pub holder: String,
    /// The colliding region, as entry text.
    pub entry: String,
}

/// Two live leases whose regions collide although they are not both shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collision {
    /// The lease granted first (first in the live set's order).
    pub first: Side,
    /// The lease granted after it.
    pub second: Side,
}

struct Entry<'a> {
    region: &'a Region,
    lease: usize,
    shared: bool,
}

/// A prefix entry's text (empty for any other region).
fn text<'a>(entry: &Entry<'a>) -> &'a str {
    match entry.region {
        Region::Prefix(prefix) => prefix.as_str(),
        _ => "",
    }
}

/// Up to `max` colliding pairs among `live` (in first-acquired order), and whether there are more.
/// O(n log n) in the number of tree entries plus the pairs reported: prefixes are swept in sorted
/// order, where every prefix of an entry is on a stack when the entry is reached.
pub fn collisions(live: &[(&Identity, &Object)], max: usize) -> (Vec<Collision>, bool) {
    let trees: Vec<Tree> = live.iter().map(|(_, lease)| Tree::from_json(lease.get("tree"))).collect();
    let shared: Vec<bool> = live.iter().map(|(_, lease)| Mode::of_lease(lease) == Mode::Shared).collect();
    let forced: Vec<bool> = live.iter().map(|(_, lease)| lease.get("forced") == Some(&Value::Bool(true))).collect();
    let mut found: Vec<Collision> = Vec::new();
    let mut more = false;
    let side = |at: usize, region: &Region| Side {
        identity: live[at].0.clone(),
        holder: live[at].1.get("holder").and_then(Value::as_str).unwrap_or_default().to_owned(),
        entry: region.text(),
    };
    // Reports the pair once, first-granted first; false once `max` pairs are found.
    let mut report = |a: &Entry<'_>, b: &Entry<'_>| -> bool {
        if a.lease == b.lease || (a.shared && b.shared) {
            return true;
        }
        let (first, second) = if a.lease < b.lease { (a, b) } else { (b, a) };
        if forced[second.lease] {
            return true;
        }
        let pair = Collision { first: side(first.lease, first.region), second: side(second.lease, second.region) };
        if found.iter().any(|c| c.first.identity == pair.first.identity && c.second.identity == pair.second.identity) {
            return true;
        }
        if found.len() == max {
            more = true;
            return false;
        }
        found.push(pair);
        true
    };
    let mut universal = Vec::new();
    let mut prefixes = Vec::new();
    let mut locks: BTreeMap<&str, Vec<Entry<'_>>> = BTreeMap::new();
    for (lease, tree) in trees.iter().enumerate() {
        for region in tree.regions() {
            let entry = Entry { region, lease, shared: shared[lease] };
            match region {
                Region::Universal => universal.push(entry),
                Region::Prefix(_) => prefixes.push(entry),
                Region::Lock(name) => locks.entry(name.as_str()).or_default().push(entry),
            }
        }
    }
    // The universal region collides with every region of every other lease.
    for u in &universal {
        for (lease, tree) in trees.iter().enumerate() {
            if let Some(region) = tree.regions().first()
                && !report(u, &Entry { region, lease, shared: shared[lease] })
            {
                return (found, more);
            }
        }
    }
    for entries in locks.values() {
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[i + 1..] {
                if !report(a, b) {
                    return (found, more);
                }
            }
        }
    }
    prefixes.sort_by(|a, b| text(a).cmp(text(b)));
    // Entries on the stack are prefixes of one another, so each is a prefix of the entry being
    // looked at once the ones that are not have been popped.
    let mut stack: Vec<&Entry<'_>> = Vec::new();
    for entry in &prefixes {
        while stack.last().is_some_and(|top| !text(entry).starts_with(text(top))) {
            stack.pop();
        }
        for open in &stack {
            if !report(open, entry) {
                return (found, more);
            }
        }
        stack.push(entry);
    }
    (found, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(lane: &str, tree: &[&str], mode: &str) -> (Identity, Object) {
        let Value::Object(body) = json!({"lane": lane, "loop_ts": "t", "tree": tree, "mode": mode, "holder": lane})
        else {
            unreachable!("an object")
        };
        (Identity { loop_ts: "t".into(), lane: lane.into() }, body)
    }

    fn pairs(leases: &[(Identity, Object)]) -> Vec<(String, String)> {
        let live: Vec<(&Identity, &Object)> = leases.iter().map(|(i, l)| (i, l)).collect();
        let (found, _) = collisions(&live, 100);
        found.into_iter().map(|c| (c.first.identity.lane, c.second.identity.lane)).collect()
    }

    #[test]
    fn colliding_exclusive_regions_are_found_once_and_shared_pairs_and_disjoint_regions_are_not() {
        let leases = [
            lease("api", &["src/api/"], "exclusive"),
            lease("db", &["src/db/"], "exclusive"),
            lease("fix", &["src/api/handlers.rs", "src/api/x"], "exclusive"),
            lease("r1", &["docs/"], "shared"),
            lease("r2", &["docs/a.md"], "shared"),
            lease("w", &["lock://deploy"], "exclusive"),
            lease("w2", &["LOCK://Deploy"], "shared"),
        ];
        assert_eq!(pairs(&leases), [("w".into(), "w2".into()), ("api".into(), "fix".into())]);
    }

    #[test]
    fn the_universal_region_collides_with_everything_and_a_forced_grant_is_not_reported() {
        let mut forced = lease("f", &["src/"], "exclusive");
        forced.1.insert("forced".into(), Value::Bool(true));
        let leases = [lease("all", &["**"], "exclusive"), lease("a", &["a/"], "shared"), forced];
        assert_eq!(pairs(&leases), [("all".into(), "a".into())]);
    }

    #[test]
    fn the_report_stops_at_its_limit_and_says_there_is_more() {
        let leases: Vec<(Identity, Object)> =
            (0..50).map(|i| lease(&format!("l{i}"), &["src/"], "exclusive")).collect();
        let live: Vec<(&Identity, &Object)> = leases.iter().map(|(i, l)| (i, l)).collect();
        let (found, more) = collisions(&live, 10);
        assert_eq!((found.len(), more), (10, true));
    }
}
