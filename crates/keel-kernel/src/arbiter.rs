//! Lane admission: a request and the live leases go in, a decision comes out.
//!
//! The explicit-request rules follow `arbiter-v1.md` exactly. The paths it leaves open (cluster
//! requests, an empty keyword tree falling back to the auto-pick ladder, per-kind budgets,
//! protected paths) are designed so that nothing except an explicit `force` ever admits a region
//! that collides with a live lease held in a conflicting mode: every such path ends in the same
//! `admission` over every live lease.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::tree::Tree;
use crate::value::{Object, casefold, identity_text};

/// How a lease holds its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read: coexists with other shared holders of an intersecting region.
    Shared,
    /// Write: coexists with nothing that intersects.
    Exclusive,
}

impl Mode {
    /// Reads mode text: `shared` (trimmed, any case) is shared; anything else, including
    /// missing or unknown text, is exclusive, so bad data fails toward less concurrency.
    pub fn parse(text: &str) -> Self {
        if text.trim().eq_ignore_ascii_case("shared") { Mode::Shared } else { Mode::Exclusive }
    }

    /// Reads the mode a caller asks for: `shared` or `exclusive` (trimmed, any case), and empty
    /// text for the default, `exclusive`. Other text is refused rather than read as exclusive:
    /// [`Mode::parse`]'s leniency is for recorded lease bodies (arbiter-v1's compatibility rule),
    /// while a misspelt request mode (`shraed`) is a caller's mistake worth naming.
    pub fn requested(text: &str) -> Result<Self, UnknownMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(Mode::Shared),
            "exclusive" | "" => Ok(Mode::Exclusive),
            _ => Err(UnknownMode(text.to_owned())),
        }
    }

    /// A lease's mode: its `mode` member, else its `lock_mode` member.
    pub fn of_lease(lease: &Object) -> Self {
        let member = ["mode", "lock_mode"].iter().filter_map(|k| lease.get(*k)).find(|v| crate::value::truthy(v));
        match member {
            Some(Value::String(s)) => Mode::parse(s),
            _ => Mode::Exclusive,
        }
    }

    /// `"shared"` or `"exclusive"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Exclusive => "exclusive",
        }
    }
}

/// A requested mode that is neither `shared` nor `exclusive`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected \"shared\" or \"exclusive\")")]
pub struct UnknownMode(pub String);

/// A named lane with its default tree, as configured in the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSpec {
    /// The lane name (compared case-folded).
    pub name: String,
    /// The region a lease on this lane covers when the request names none.
    pub tree: Vec<String>,
}

/// The lane taxonomy: configuration, supplied as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Taxonomy {
    /// Concurrent lanes: several leases may hold the same cluster lane at once.
    pub cluster_lanes: Vec<LaneSpec>,
    /// Exclusive lanes: a lease on one runs alone.
    pub exclusive_lanes: Vec<LaneSpec>,
    /// Lanes tried in order when a request names no region.
    pub auto_pick: Vec<String>,
    /// Paths no lease may cover unless forced.
    pub protected: Vec<String>,
    /// At most this many live leases of a lane kind (case-folded) at once.
    pub kind_budgets: BTreeMap<String, usize>,
}

impl Default for Taxonomy {
    fn default() -> Self {
        let all = || vec!["**/*".to_owned()];
        Self {
            cluster_lanes: vec![LaneSpec { name: "main".into(), tree: all() }],
            exclusive_lanes: vec![LaneSpec { name: "global".into(), tree: all() }],
            auto_pick: vec!["main".into()],
            protected: Vec::new(),
            kind_budgets: BTreeMap::new(),
        }
    }
}

impl Taxonomy {
    /// This taxonomy with a request's own on top: its protected paths and exclusive lanes are
    /// added, each budget is the tighter of the two, and its cluster lanes and auto-pick ladder
    /// replace these (they name where a request may go, not what it may pass). A request's
    /// taxonomy can make admission stricter, never looser.
    #[must_use = "the merged taxonomy is the one to decide under"]
    pub fn with_request_taxonomy(&self, request: &Taxonomy) -> Taxonomy {
        let mut merged = request.clone();
        for entry in &self.protected {
            if !merged.protected.contains(entry) {
                merged.protected.push(entry.clone());
            }
        }
        for lane in &self.exclusive_lanes {
            if !merged.exclusive_lanes.iter().any(|l| casefold(&l.name) == casefold(&lane.name)) {
                merged.exclusive_lanes.push(lane.clone());
            }
        }
        for (kind, &max) in &self.kind_budgets {
            let slot = merged.kind_budgets.entry(kind.clone()).or_insert(max);
            *slot = (*slot).min(max);
        }
        merged
    }

    fn is_exclusive(&self, folded: &str) -> bool {
        !folded.is_empty() && self.exclusive_lanes.iter().any(|l| casefold(&l.name) == folded)
    }

    fn cluster_lane(&self, folded: &str) -> Option<&LaneSpec> {
        self.cluster_lanes.iter().find(|l| casefold(&l.name) == folded)
    }

    fn known_lanes(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.cluster_lanes.iter().chain(&self.exclusive_lanes).map(|l| casefold(&l.name)).collect();
        names.sort();
        names.dedup();
        names
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A request for a lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The lane asked for; empty asks the arbiter to pick.
    #[serde(default, deserialize_with = "null_as_default")]
    pub lane: String,
    /// `keyword` (a named region), `global`, `cluster`, or an exclusive lane's name. Empty means `keyword`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub kind: String,
    /// The region: workspace-relative paths, globs and `lock://NAME` entries.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tree: Vec<String>,
    /// `shared` or `exclusive` (the default).
    #[serde(default, deserialize_with = "null_as_default")]
    pub mode: String,
    /// Acquire whatever else is live (never past a live exclusive lane).
    #[serde(default, deserialize_with = "null_as_default")]
    pub force: bool,
}

/// Why a request cannot be decided at all (as opposed to being refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// More tree entries than anyone decides over.
    #[error("a tree of {entries} entries; at most {} are accepted", crate::tree::TREE_ENTRIES_MAX)]
    TreeTooLong {
        /// How many it had.
        entries: usize,
    },
    /// A mode that is neither `shared` nor `exclusive`.
    #[error(transparent)]
    Mode(#[from] UnknownMode),
}

impl Request {
    /// Whether the arbiter can decide this request: a bounded tree and a mode it knows. (A
    /// request's mode is read strictly, a live lease's leniently: a misspelt `shraed` is the
    /// caller's mistake, not a request for an exclusive lease.)
    pub fn validate(&self) -> Result<Mode, InvalidRequest> {
        if self.tree.len() > crate::tree::TREE_ENTRIES_MAX {
            return Err(InvalidRequest::TreeTooLong { entries: self.tree.len() });
        }
        Ok(Mode::requested(&self.mode)?)
    }
}

/// Acquire or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The lease may be granted.
    Acquire,
    /// The lease must not be granted; the reason says why.
    Refuse,
}

/// Why a request was refused: a stable class for programs, beside the prose reason for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalClass {
    /// A lease of an exclusive lane is live; nothing runs beside it.
    ExclusiveLaneLive,
    /// An exclusive lane was asked for while other leases are live.
    ExclusiveMustRunAlone,
    /// A live lease already holds this lane.
    SameLane,
    /// The requested region intersects a live lease and the modes conflict.
    RegionConflict,
    /// The request names no region, so it cannot be shown to be disjoint from a live one.
    EmptyTree,
    /// The requested region covers a protected path.
    Protected,
    /// The lane kind already has its budget of live leases.
    BudgetExhausted,
    /// The request names a lane the taxonomy does not know and no tree for it.
    UnknownLane,
    /// The request's kind is not one the arbiter knows.
    UnknownKind,
}

/// The live lease that caused a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    /// Its lane.
    pub lane: String,
    /// Its lane kind.
    pub lane_kind: String,
    /// Its loop timestamp.
    pub loop_ts: String,
    /// Its holder, if recorded.
    pub holder: String,
    /// Its mode.
    pub mode: Mode,
}

/// The arbiter's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Acquire or refuse.
    pub outcome: Outcome,
    /// The lane to lease (empty on refusal).
    pub lane: String,
    /// The lane kind to lease (empty on refusal).
    pub lane_kind: String,
    /// The tree to lease, as requested (empty on refusal).
    pub tree: Vec<String>,
    /// The mode to lease.
    pub mode: Mode,
    /// Why, in prose; on refusal it names the blocking lease.
    pub reason: String,
    /// The refusal's class (absent on acquire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_class: Option<RefusalClass>,
    /// The live lease that blocked the request, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking: Option<Blocker>,
}

/// A live lease as the arbiter sees it.
struct Live<'a> {
    body: &'a Object,
    lane_folded: String,
    kind_folded: String,
    tree: Tree,
    mode: Mode,
}

impl<'a> Live<'a> {
    fn new(body: &'a Object) -> Self {
        Self {
            body,
            lane_folded: casefold(&identity_text(body.get("lane"))),
            kind_folded: casefold(&identity_text(body.get("lane_kind"))),
            tree: Tree::from_json(body.get("tree")),
            mode: Mode::of_lease(body),
        }
    }

    fn blocker(&self) -> Blocker {
        Blocker {
            lane: identity_text(self.body.get("lane")),
            lane_kind: identity_text(self.body.get("lane_kind")),
            loop_ts: identity_text(self.body.get("loop_ts")),
            holder: identity_text(self.body.get("holder")),
            mode: self.mode,
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lane {:?} (kind {:?}, loop_ts {:?}", self.lane, self.lane_kind, self.loop_ts)?;
        if !self.holder.is_empty() {
            write!(f, ", holder {:?}", self.holder)?;
        }
        write!(f, ", {})", self.mode.as_str())
    }
}

/// A refusal on its way out.
struct Refusal {
    class: RefusalClass,
    reason: String,
    // Boxed: refusals travel through `Result`s, and most results are grants.
    blocking: Option<Box<Blocker>>,
}

impl Refusal {
    fn new(class: RefusalClass, reason: String, blocking: Option<&Live<'_>>) -> Self {
        Self { class, reason, blocking: blocking.map(|l| Box::new(l.blocker())) }
    }
}

/// The per-lease disjointness predicate, then the request-only protected-path predicate, over
/// every live lease in order (once against an empty lease when none is live); first refusal wins.
fn admission(tree: &Tree, mode: Mode, live: &[Live<'_>], protected: &Tree) -> Result<(), Refusal> {
    let protected_check = || -> Result<(), Refusal> {
        if protected.is_empty() {
            return Ok(());
        }
        if tree.is_empty() {
            return Err(Refusal::new(
                RefusalClass::Protected,
                "the request names no region, so it may cover a protected path".into(),
                None,
            ));
        }
        match tree.first_collision(protected) {
            Some((ours, theirs)) => Err(Refusal::new(
                RefusalClass::Protected,
                format!("requested entry {:?} covers protected path {:?}", ours.text(), theirs.text()),
                None,
            )),
            None => Ok(()),
        }
    };
    if live.is_empty() {
        return protected_check();
    }
    for lease in live {
        if !lease.tree.is_empty() {
            if tree.is_empty() {
                let blocker = lease.blocker();
                return Err(Refusal::new(
                    RefusalClass::EmptyTree,
                    format!("the request names no region (unknown blast radius) and {blocker} holds one"),
                    Some(lease),
                ));
            }
            let both_shared = mode == Mode::Shared && lease.mode == Mode::Shared;
            if let Some((ours, theirs)) = tree.first_collision(&lease.tree).filter(|_| !both_shared) {
                let blocker = lease.blocker();
                return Err(Refusal::new(
                    RefusalClass::RegionConflict,
                    format!(
                        "requested {} entry {:?} collides with {:?} held by {blocker}",
                        mode.as_str(),
                        ours.text(),
                        theirs.text()
                    ),
                    Some(lease),
                ));
            }
        }
        protected_check()?;
    }
    Ok(())
}

/// How many leases a budget refusal names.
const BUDGET_HOLDERS_NAMED_MAX: usize = 8;

/// Refuses a lease of `kind` when its budget is used up (a budget of 0 grants none), naming the
/// leases that use it. The tightest of several budgets for one kind (case-folded) applies.
fn budget(kind: &str, live: &[Live<'_>], taxonomy: &Taxonomy) -> Result<(), Refusal> {
    let Some(max) = taxonomy.kind_budgets.iter().filter(|(k, _)| casefold(k) == kind).map(|(_, &v)| v).min() else {
        return Ok(());
    };
    let holders: Vec<&Live<'_>> = live.iter().filter(|l| l.kind_folded == kind).collect();
    if holders.len() < max {
        return Ok(());
    }
    let named: Vec<String> = holders.iter().take(BUDGET_HOLDERS_NAMED_MAX).map(|l| l.blocker().to_string()).collect();
    let more = holders.len().saturating_sub(BUDGET_HOLDERS_NAMED_MAX);
    let reason = if max == 0 {
        format!("lane kind {kind:?} has a budget of 0: no lease of it is granted")
    } else {
        format!(
            "lane kind {kind:?} already has {} live lease(s), its budget is {max}: {}{}",
            holders.len(),
            named.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        )
    };
    Err(Refusal::new(RefusalClass::BudgetExhausted, reason, holders.first().copied()))
}

/// Decides a request against the live leases under a taxonomy. Pure and deterministic.
pub fn decide<'a>(request: &Request, live: impl IntoIterator<Item = &'a Object>, taxonomy: &Taxonomy) -> Decision {
    let live: Vec<Live<'a>> = live.into_iter().map(Live::new).collect();
    let mode = Mode::parse(&request.mode);
    let acquire = |lane: &str, kind: &str, tree: &[String], reason: String| Decision {
        outcome: Outcome::Acquire,
        lane: lane.to_owned(),
        lane_kind: kind.to_owned(),
        tree: tree.to_vec(),
        mode,
        reason,
        reason_class: None,
        blocking: None,
    };
    match decide_inner(request, mode, &live, taxonomy) {
        Ok(Granted { lane, kind, tree, reason }) => acquire(&lane, &kind, &tree, reason),
        Err(refusal) => Decision {
            outcome: Outcome::Refuse,
            lane: String::new(),
            lane_kind: String::new(),
            tree: Vec::new(),
            mode,
            reason: refusal.reason,
            reason_class: Some(refusal.class),
            blocking: refusal.blocking.map(|b| *b),
        },
    }
}

struct Granted {
    lane: String,
    kind: String,
    tree: Vec<String>,
    reason: String,
}

// One function on purpose: the steps are the spec's, in the spec's order, read top to bottom.
#[allow(clippy::too_many_lines)]
fn decide_inner(request: &Request, mode: Mode, live: &[Live<'_>], taxonomy: &Taxonomy) -> Result<Granted, Refusal> {
    let kind = match casefold(request.kind.trim()) {
        k if k.is_empty() => "keyword".to_owned(),
        k => k,
    };
    let lane = request.lane.as_str();
    let lane_folded = casefold(lane);
    let tree = Tree::new(&request.tree);
    let protected = Tree::new(&taxonomy.protected);
    let granted = |lane: &str, kind: &str, tree: &[String], reason: String| Granted {
        lane: lane.to_owned(),
        kind: kind.to_owned(),
        tree: tree.to_vec(),
        reason,
    };

    // 1. An exclusive lane runs alone; force cannot override it. A `global` lease counts as
    //    exclusive even under a taxonomy that forgot to list it.
    if let Some(exclusive) = live.iter().find(|l| l.kind_folded == "global" || taxonomy.is_exclusive(&l.kind_folded)) {
        let blocker = exclusive.blocker();
        return Err(Refusal::new(
            RefusalClass::ExclusiveLaneLive,
            format!("an exclusive lane is live: {blocker}; it must finish first"),
            Some(exclusive),
        ));
    }
    // 2. Force: the explicit override, past everything but step 1.
    if request.force && !lane.is_empty() {
        return Ok(granted(lane, &kind, &request.tree, "forced".into()));
    }
    // 3. Same-lane collision (a cluster lane is concurrent: it falls through to admission).
    if let Some(same) = live.iter().find(|l| !lane.is_empty() && kind != "cluster" && l.lane_folded == lane_folded) {
        let blocker = same.blocker();
        return Err(Refusal::new(
            RefusalClass::SameLane,
            format!("lane {lane:?} is already held by {blocker}"),
            Some(same),
        ));
    }
    // 4. Exclusive lanes run alone.
    if kind == "global" || taxonomy.is_exclusive(&kind) || taxonomy.is_exclusive(&lane_folded) {
        if let Some(first) = live.first() {
            let blocker = first.blocker();
            return Err(Refusal::new(
                RefusalClass::ExclusiveMustRunAlone,
                format!(
                    "{:?} is an exclusive lane and {} lease(s) are live, first {blocker}; it must run alone",
                    if lane.is_empty() { "global" } else { lane },
                    live.len()
                ),
                Some(first),
            ));
        }
        let lane_out = if lane.is_empty() { "global" } else { lane };
        let kind_out = if taxonomy.is_exclusive(&lane_folded) { lane_folded.as_str() } else { "global" };
        budget(kind_out, live, taxonomy)?;
        admission(&tree, mode, &[], &protected)?;
        return Ok(granted(lane_out, kind_out, &request.tree, "exclusive lane, nothing else live".into()));
    }
    match kind.as_str() {
        // 5. A named region.
        "keyword" | "cluster" if !tree.is_empty() && (kind == "keyword" || !lane.is_empty()) => {
            budget(&kind, live, taxonomy)?;
            admission(&tree, mode, live, &protected)?;
            Ok(granted(lane, &kind, &request.tree, "region is free".into()))
        }
        // 6. No region or no lane named: the lane's configured tree, or the auto-pick ladder
        //    (a cluster request that names a tree keeps it, whatever lane is picked).
        "keyword" | "cluster" => {
            let candidates: Vec<&LaneSpec> = if lane.is_empty() {
                taxonomy.auto_pick.iter().filter_map(|name| taxonomy.cluster_lane(&casefold(name))).collect()
            } else if let Some(spec) = taxonomy.cluster_lane(&lane_folded) {
                vec![spec]
            } else {
                return Err(Refusal::new(
                    RefusalClass::UnknownLane,
                    format!(
                        "{lane:?} names no region and is not a configured lane (known lanes: {}); \
                         name a tree, name a known lane, or name no lane to auto-pick",
                        taxonomy.known_lanes().join(", ")
                    ),
                    None,
                ));
            };
            let mut first_refusal = None;
            for spec in candidates {
                let entries = if tree.is_empty() { &spec.tree } else { &request.tree };
                let candidate_tree = Tree::new(entries);
                let result =
                    budget("cluster", live, taxonomy).and_then(|()| admission(&candidate_tree, mode, live, &protected));
                match result {
                    Ok(()) => {
                        let name = if lane.is_empty() { spec.name.as_str() } else { lane };
                        return Ok(granted(name, "cluster", entries, format!("picked lane {:?}", spec.name)));
                    }
                    Err(refusal) => {
                        first_refusal.get_or_insert(refusal);
                    }
                }
            }
            Err(first_refusal.map_or_else(
                || Refusal::new(RefusalClass::UnknownLane, "no lane is configured to auto-pick from".into(), None),
                |r| Refusal { reason: format!("no lane could be picked: {}", r.reason), ..r },
            ))
        }
        other => Err(Refusal::new(
            RefusalClass::UnknownKind,
            format!("unknown lane kind {other:?} (expected keyword, cluster, global or an exclusive lane)"),
            None,
        )),
    }
}

#[cfg(test)]
mod tests;
