//! The write gate: may this holder, presenting this generation, change this path now?
//!
//! A pure decision over evidence the caller gathered: the workspace-relative path, who the
//! holder says it is (owner, lane, optionally the exact `loop_ts`) with the generation it was
//! granted, the live leases with their generations, and the protected paths. It reads no file
//! and no clock; the mutator that calls it re-reads the journal at commit time.
//!
//! # The rules, in the order they are checked
//! 1. The path is relative, has no `..`, no NUL and names a file ([`Refusal::Escapes`]).
//! 2. The holder's lease is live, and its generation is exactly the one presented; a missing
//!    lease, a missing generation (unresolvable: fails closed) or another number is
//!    [`Decision::StaleGeneration`]. A lease at the named identity held by someone else is
//!    [`Refusal::NotHolder`]. A generation that is live, but on a lease other than the one named
//!    (a mistyped owner, lane or `loop_ts`), is not stale: the refusal names the part that did
//!    not match ([`Refusal::NotHolder`], [`Refusal::NameMismatch`]). A shared (read) lease grants
//!    no writes ([`Refusal::SharedLease`]).
//! 3. No other live exclusive lease over the path carries a *higher* generation (or none at
//!    all): a later grant supersedes the holder ([`Decision::StaleGeneration`], Kleppmann's
//!    fencing token).
//! 4. The path lies inside the holder's lease tree: some entry is a prefix of the path (or the
//!    universal region). Tree entries are prefixes, so `src/api/` covers `src/api/x.rs`, and a
//!    `lock://NAME` entry covers no path ([`Refusal::OutsideTree`]).
//! 5. The path does not collide with a protected entry ([`Refusal::Protected`]).
//! 6. No other live exclusive lease (with a lower generation) holds a region colliding with the
//!    path ([`Refusal::Collides`]).
//!
//! Paths are compared the way leases are: normalised by [`tree::normalise`] (case-folded, cut at
//! the first glob character), so the gate agrees with the arbiter about who owns what.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arbiter::Mode;
use crate::replay::Identity;
use crate::tree::{self, Region, Tree};
use crate::value::{Object, casefold};

/// Who asks to write: the lease it names and the generation it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's name, as recorded in the lease's `holder` member.
    pub owner: String,
    /// The lease's lane (compared case-folded).
    pub lane: String,
    /// The lease's exact `loop_ts`; `None` means the newest live lease on `lane` held by `owner`.
    pub loop_ts: Option<String>,
    /// The generation the holder was granted: its fencing token.
    pub generation: u64,
}

/// One live lease as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct LiveGrant<'a> {
    /// Its identity.
    pub identity: &'a Identity,
    /// Its body (`holder`, `tree`, `mode`).
    pub lease: &'a Object,
    /// Its generation, if the journal knows one.
    pub generation: Option<u64>,
}

/// Why a write was forbidden. Each variant names what a caller needs to fix its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The path is absolute, contains `..` or NUL, or names no file.
    Escapes {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The lease named by `lane`/`loop_ts` is held by another owner.
    NotHolder {
        /// The owner presented.
        presented: String,
        /// The owner the lease records.
        recorded: String,
    },
    /// The generation presented is live, but on another lease than the one named: its `lane` or
    /// `loop_ts` is not the one presented (a wrong owner is [`Refusal::NotHolder`]).
    NameMismatch {
        /// The generation presented.
        generation: u64,
        /// The part of the name that did not match: `"lane"` or `"loop_ts"`.
        field: String,
        /// What the holder presented.
        presented: String,
        /// What the lease holding that generation records.
        recorded: String,
    },
    /// The holder's lease is shared (a read lease): it grants no writes.
    SharedLease {
        /// The holder's lane.
        lane: String,
    },
    /// The path is outside the holder's lease tree.
    OutsideTree {
        /// The path.
        path: String,
        /// The holder's lease tree, as recorded.
        tree: Vec<String>,
    },
    /// The path collides with a protected entry.
    Protected {
        /// The path.
        path: String,
        /// The protected entry it collides with.
        entry: String,
    },
    /// Another live holder's exclusive region collides with the path.
    Collides {
        /// The path.
        path: String,
        /// The other lease's lane.
        lane: String,
        /// The other lease's `loop_ts`.
        loop_ts: String,
        /// The other lease's holder.
        holder: String,
        /// The other lease's entry the path collides with.
        entry: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Escapes { path, detail } => write!(f, "{path:?} escapes the workspace: {detail}"),
            Refusal::NotHolder { presented, recorded } => {
                write!(f, "the lease is held by {recorded:?}, not {presented:?}")
            }
            Refusal::NameMismatch { generation, field, presented, recorded } => {
                write!(f, "generation {generation} is the live lease with {field} {recorded:?}, not {presented:?}")
            }
            Refusal::SharedLease { lane } => write!(f, "the lease on lane {lane:?} is shared: it grants reads only"),
            Refusal::OutsideTree { path, tree } => write!(f, "{path:?} is outside the holder's lease tree {tree:?}"),
            Refusal::Protected { path, entry } => write!(f, "{path:?} is protected (entry {entry:?})"),
            Refusal::Collides { path, lane, loop_ts, holder, entry } => write!(
                f,
                "{path:?} collides with {entry:?} held exclusively by {holder:?} (lane {lane:?}, loop_ts {loop_ts})"
            ),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[must_use = "a write may proceed only on `Allowed`"]
pub enum Decision {
    /// The write may proceed.
    Allowed {
        /// The holder's lease identity as resolved.
        identity: Identity,
    },
    /// The write is refused for a reason the generation does not explain.
    Forbidden(Refusal),
    /// The holder's fencing token is no longer the live one.
    StaleGeneration {
        /// The generation the holder presented.
        presented: u64,
        /// The generation now in force over the path: the holder's lease's own, or the
        /// superseding grant's; `None` when no lease is live there or its generation is unknown.
        live: Option<u64>,
    },
}

/// A workspace-relative path as the gate decides on it: exactly as written, because that is the
/// path the file system will use. `Err` names what makes it unacceptable: an escape (absolute,
/// `..`, NUL), no file named, or a spelling whose region differs from it on disk
/// ([`tree::misspelling`]: a backslash, white space at either end, a control character, a `.`
/// or empty segment). Nothing is normalised on one side only.
pub fn canonical_path(path: &str) -> Result<String, &'static str> {
    if let Some(why) = escape(path) {
        return Err(why);
    }
    if path.ends_with('/') {
        return Err("path names a directory, not a file");
    }
    if let Some(why) = tree::misspelling(path) {
        return Err(why);
    }
    Ok(path.to_owned())
}

/// Why `path` leaves the workspace or names nothing, if it does: empty, a NUL byte, absolute, or
/// a `..` component. (A spelling that stays inside but is not its region's is
/// [`tree::misspelling`].)
pub fn escape(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("empty path")
    } else if path.contains('\0') {
        Some("path contains a NUL byte")
    } else if path.starts_with('/') {
        Some("absolute path")
    } else if path.split('/').any(|part| part == "..") {
        Some("path contains `..`")
    } else {
        None
    }
}

/// Whether a tree entry's region contains every path the path region could name.
fn covers(entry: &Region, path: &Region) -> bool {
    match (entry, path) {
        (Region::Universal, _) => true,
        (Region::Prefix(prefix), Region::Prefix(p)) => p.starts_with(prefix.as_str()),
        _ => false,
    }
}

fn holder_name(lease: &Object) -> &str {
    lease.get("holder").and_then(Value::as_str).unwrap_or("")
}

fn tree_entries(lease: &Object) -> Vec<String> {
    match lease.get("tree") {
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
        }
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Why `grant`, the live lease holding the generation `holder` presented, is not the lease
/// `holder` named: its lane, else its owner, else (both match) its `loop_ts`.
fn name_mismatch(holder: &Holder, grant: &LiveGrant<'_>) -> Refusal {
    let recorded_owner = holder_name(grant.lease);
    let mismatch = |field: &str, presented: &str, recorded: &str| Refusal::NameMismatch {
        generation: holder.generation,
        field: field.to_owned(),
        presented: presented.to_owned(),
        recorded: recorded.to_owned(),
    };
    if casefold(&grant.identity.lane) != casefold(&holder.lane) {
        mismatch("lane", &holder.lane, &grant.identity.lane)
    } else if recorded_owner != holder.owner {
        Refusal::NotHolder { presented: holder.owner.clone(), recorded: recorded_owner.to_owned() }
    } else {
        mismatch("loop_ts", holder.loop_ts.as_deref().unwrap_or_default(), &grant.identity.loop_ts)
    }
}

/// Decides whether `holder` may change `path` (see the module documentation for the rules).
/// `protected` is the taxonomy's protected entries plus whatever the caller protects itself.
pub fn decide(path: &str, holder: &Holder, live: &[LiveGrant<'_>], protected: &Tree) -> Decision {
    let canonical = match canonical_path(path) {
        Ok(canonical) => canonical,
        Err(detail) => {
            return Decision::Forbidden(Refusal::Escapes { path: path.to_owned(), detail: detail.to_owned() });
        }
    };
    let region = tree::normalise(&canonical).unwrap_or(Region::Universal);
    let path_tree = Tree::new(&[canonical.as_str()]);
    let lane = casefold(&holder.lane);
    let named: Vec<&LiveGrant<'_>> = live
        .iter()
        .filter(|grant| {
            casefold(&grant.identity.lane) == lane
                && holder.loop_ts.as_deref().is_none_or(|ts| grant.identity.loop_ts == ts)
        })
        .collect();
    let Some(own) = named.iter().rev().find(|grant| holder_name(grant.lease) == holder.owner) else {
        if let (Some(_), Some(other)) = (&holder.loop_ts, named.last()) {
            return Decision::Forbidden(Refusal::NotHolder {
                presented: holder.owner.clone(),
                recorded: holder_name(other.lease).to_owned(),
            });
        }
        // A live token on a lease the holder did not name: the token is good and the name is
        // wrong (a mistyped owner or lane). Calling it stale would send the caller after the
        // wrong problem ("presented 1, live 1"), so name the part that did not match.
        if let Some(token_lease) = live.iter().find(|grant| grant.generation == Some(holder.generation)) {
            return Decision::Forbidden(name_mismatch(holder, token_lease));
        }
        // The lease is gone: report the grant now in force over the path, if there is one.
        let live_over_path = live
            .iter()
            .filter(|g| {
                Mode::of_lease(g.lease) == Mode::Exclusive
                    && Tree::from_json(g.lease.get("tree")).intersects(&path_tree)
            })
            .filter_map(|g| g.generation)
            .max();
        return Decision::StaleGeneration { presented: holder.generation, live: live_over_path };
    };
    match own.generation {
        Some(generation) if generation == holder.generation => {}
        other => return Decision::StaleGeneration { presented: holder.generation, live: other },
    }
    if Mode::of_lease(own.lease) == Mode::Shared {
        return Decision::Forbidden(Refusal::SharedLease { lane: own.identity.lane.clone() });
    }
    let others = live.iter().filter(|g| g.identity != own.identity && Mode::of_lease(g.lease) == Mode::Exclusive);
    let mut colliding = None;
    for other in others {
        let other_tree = Tree::from_json(other.lease.get("tree"));
        let Some((_, entry)) = path_tree.first_collision(&other_tree) else {
            continue;
        };
        match other.generation {
            Some(g) if g <= holder.generation => {
                colliding.get_or_insert((other, entry.text()));
            }
            superseding => return Decision::StaleGeneration { presented: holder.generation, live: superseding },
        }
    }
    let own_tree = Tree::from_json(own.lease.get("tree"));
    if !own_tree.regions().iter().any(|entry| covers(entry, &region)) {
        return Decision::Forbidden(Refusal::OutsideTree { path: canonical, tree: tree_entries(own.lease) });
    }
    if let Some((_, entry)) = path_tree.first_collision(protected) {
        return Decision::Forbidden(Refusal::Protected { path: canonical, entry: entry.text() });
    }
    if let Some((other, entry)) = colliding {
        return Decision::Forbidden(Refusal::Collides {
            path: canonical,
            lane: other.identity.lane.clone(),
            loop_ts: other.identity.loop_ts.clone(),
            holder: holder_name(other.lease).to_owned(),
            entry,
        });
    }
    Decision::Allowed { identity: own.identity.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(lane: &str, loop_ts: &str, holder: &str, tree: &[&str], mode: &str) -> (Identity, Object) {
        let Value::Object(body) =
            json!({"lane": lane, "loop_ts": loop_ts, "holder": holder, "tree": tree, "mode": mode})
        else {
            unreachable!("a json object literal")
        };
        (Identity { loop_ts: loop_ts.into(), lane: lane.into() }, body)
    }

    fn grants(leases: &[(Identity, Object, Option<u64>)]) -> Vec<LiveGrant<'_>> {
        leases
            .iter()
            .map(|(identity, lease, generation)| LiveGrant { identity, lease, generation: *generation })
            .collect()
    }

    fn holder(generation: u64) -> Holder {
        Holder { owner: "a".into(), lane: "api".into(), loop_ts: None, generation }
    }

    fn with_gen((identity, lease): (Identity, Object), generation: Option<u64>) -> (Identity, Object, Option<u64>) {
        (identity, lease, generation)
    }

    #[test]
    fn a_path_inside_the_holders_prefix_is_allowed_and_a_sibling_is_not() {
        let leases = [with_gen(lease("api", "t1", "a", &["src/api/"], "exclusive"), Some(3))];
        let live = grants(&leases);
        assert!(matches!(decide("src/api/x.rs", &holder(3), &live, &Tree::default()), Decision::Allowed { .. }));
        // Spelled otherwise on disk than its region: refused, never normalised on one side only.
        for misspelled in ["./src//api/x.rs", "src\\api\\x.rs", " src/api/x.rs", "src/api/x.rs/"] {
            let decision = decide(misspelled, &holder(3), &live, &Tree::default());
            assert!(matches!(decision, Decision::Forbidden(Refusal::Escapes { .. })), "{misspelled:?}: {decision:?}");
        }
        let refused = decide("src/apix.rs", &holder(3), &live, &Tree::default());
        assert_eq!(
            refused,
            Decision::Forbidden(Refusal::OutsideTree { path: "src/apix.rs".into(), tree: vec!["src/api/".into()] })
        );
        // A parent of the region collides with it but is not inside it.
        assert!(matches!(decide("src", &holder(3), &live, &Tree::default()), Decision::Forbidden(_)));
    }

    #[test]
    fn a_wrong_or_missing_generation_is_stale_and_a_missing_lease_reports_the_grant_in_force() {
        let leases = [with_gen(lease("api", "t1", "a", &["src/"], "exclusive"), Some(3))];
        let live = grants(&leases);
        assert_eq!(
            decide("src/x", &holder(2), &live, &Tree::default()),
            Decision::StaleGeneration { presented: 2, live: Some(3) }
        );
        let unknown = [with_gen(lease("api", "t1", "a", &["src/"], "exclusive"), None)];
        assert_eq!(
            decide("src/x", &holder(3), &grants(&unknown), &Tree::default()),
            Decision::StaleGeneration { presented: 3, live: None }
        );
        let regranted = [with_gen(lease("web", "t2", "b", &["src/"], "exclusive"), Some(4))];
        assert_eq!(
            decide("src/x", &holder(3), &grants(&regranted), &Tree::default()),
            Decision::StaleGeneration { presented: 3, live: Some(4) }
        );
        assert_eq!(
            decide("src/x", &holder(3), &[], &Tree::default()),
            Decision::StaleGeneration { presented: 3, live: None }
        );
    }

    #[test]
    fn a_later_overlapping_exclusive_grant_supersedes_and_an_earlier_one_collides() {
        let mine = with_gen(lease("api", "t1", "a", &["src/"], "exclusive"), Some(3));
        let later = [mine.clone(), with_gen(lease("db", "t2", "b", &["src/db/"], "exclusive"), Some(5))];
        assert_eq!(
            decide("src/db/x", &holder(3), &grants(&later), &Tree::default()),
            Decision::StaleGeneration { presented: 3, live: Some(5) }
        );
        assert!(matches!(decide("src/other", &holder(3), &grants(&later), &Tree::default()), Decision::Allowed { .. }));
        let earlier = [mine.clone(), with_gen(lease("db", "t0", "b", &["src/db/"], "exclusive"), Some(2))];
        assert!(matches!(
            decide("src/db/x", &holder(3), &grants(&earlier), &Tree::default()),
            Decision::Forbidden(Refusal::Collides { holder, .. }) if holder == "b"
        ));
        let shared = [mine, with_gen(lease("db", "t2", "b", &["src/db/"], "shared"), Some(9))];
        assert!(matches!(decide("src/db/x", &holder(3), &grants(&shared), &Tree::default()), Decision::Allowed { .. }));
    }

    #[test]
    fn escapes_protected_paths_shared_leases_and_other_owners_are_forbidden() {
        let leases = [with_gen(lease("api", "t1", "a", &["**/*"], "exclusive"), Some(1))];
        let live = grants(&leases);
        for bad in ["", "/etc/passwd", "a/../b", "..", "a\0b", "./."] {
            assert!(
                matches!(
                    decide(bad, &holder(1), &live, &Tree::default()),
                    Decision::Forbidden(Refusal::Escapes { .. })
                ),
                "{bad:?}"
            );
        }
        let protected = Tree::new(&[".keel/"]);
        assert!(matches!(
            decide(".keel/mutations.jsonl", &holder(1), &live, &protected),
            Decision::Forbidden(Refusal::Protected { .. })
        ));
        let shared = [with_gen(lease("api", "t1", "a", &["src/"], "shared"), Some(1))];
        assert!(matches!(
            decide("src/x", &holder(1), &grants(&shared), &Tree::default()),
            Decision::Forbidden(Refusal::SharedLease { .. })
        ));
        let exact = Holder { loop_ts: Some("t1".into()), owner: "mallory".into(), ..holder(1) };
        assert!(matches!(
            decide("src/x", &exact, &live, &Tree::default()),
            Decision::Forbidden(Refusal::NotHolder { .. })
        ));
    }

    #[test]
    fn a_live_generation_presented_under_a_wrong_owner_lane_or_loop_ts_names_the_mismatch_not_staleness() {
        let leases = [with_gen(lease("api", "t1", "a", &["src/"], "exclusive"), Some(1))];
        let live = grants(&leases);
        let wrong_owner = Holder { owner: "mallory".into(), ..holder(1) };
        assert_eq!(
            decide("src/x", &wrong_owner, &live, &Tree::default()),
            Decision::Forbidden(Refusal::NotHolder { presented: "mallory".into(), recorded: "a".into() })
        );
        let wrong_lane = Holder { lane: "apx".into(), ..holder(1) };
        let refused = decide("src/x", &wrong_lane, &live, &Tree::default());
        assert_eq!(
            refused,
            Decision::Forbidden(Refusal::NameMismatch {
                generation: 1,
                field: "lane".into(),
                presented: "apx".into(),
                recorded: "api".into()
            })
        );
        let Decision::Forbidden(refusal) = refused else { unreachable!("checked above") };
        assert_eq!(refusal.to_string(), "generation 1 is the live lease with lane \"api\", not \"apx\"");
        let wrong_loop_ts = Holder { loop_ts: Some("t9".into()), ..holder(1) };
        assert!(matches!(
            decide("src/x", &wrong_loop_ts, &live, &Tree::default()),
            Decision::Forbidden(Refusal::NameMismatch { field, .. }) if field == "loop_ts"
        ));
        // A generation no live lease holds is still stale, whatever the name.
        assert_eq!(
            decide("src/x", &Holder { lane: "apx".into(), ..holder(2) }, &live, &Tree::default()),
            Decision::StaleGeneration { presented: 2, live: Some(1) }
        );
    }

    #[test]
    fn a_lock_entry_covers_no_path() {
        let leases = [with_gen(lease("api", "t1", "a", &["lock://deploy"], "exclusive"), Some(1))];
        assert!(matches!(
            decide("deploy", &holder(1), &grants(&leases), &Tree::default()),
            Decision::Forbidden(Refusal::OutsideTree { .. })
        ));
    }
}
