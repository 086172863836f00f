//! What the hook decides: allow an edit (taking a lease on a free file first), or deny it.

use std::path::{Component, Path, PathBuf};

use keel_journal::{
    AcquireOutcome, AcquireRequest, BashRule, JournalError, LeaseBackend, LeaseRef, OnError, Policy, Workspace,
};
use keel_kernel::arbiter::{Decision, Outcome};
use keel_kernel::tree::{Region, Tree};
use keel_kernel::{Identity, LiveState, Object};
use serde_json::Value;

use crate::agent::Agent;
use crate::event::Event;
use crate::shell;

/// The lane prefix of the automatic leases: one exclusive lease per file, on lane `edit:<path>`.
pub const AUTO_LANE_PREFIX: &str = "edit:";
/// A heartbeat of an automatic lease is written at most this often, in seconds.
pub const AUTO_BEAT_COALESCE_S: u64 = 30;

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The call goes ahead; the note (if any) is context for the agent.
    Allow {
        /// What keel did or could not check.
        note: Option<String>,
    },
    /// The call is stopped; the reason is for the agent to act on.
    Deny {
        /// Which file, who holds it, and what to do instead.
        reason: String,
    },
}

/// What the workspace's policy says about edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Take a lease on a free file before allowing its edit.
    pub auto_lease: bool,
    /// Deny an edit of a file the agent holds no lease on (for fleets that plan regions).
    pub require_lease: bool,
    /// What a shell command whose writes keel cannot read gets.
    pub bash: BashRule,
    /// What an edit that needs a lease gets while the journal grants none.
    pub on_error: OnError,
}

impl Default for Rules {
    fn default() -> Self {
        Self::of(&Policy::default())
    }
}

impl Rules {
    /// The rules a workspace's policy sets.
    pub fn of(policy: &Policy) -> Self {
        Self {
            auto_lease: policy.auto_lease,
            require_lease: policy.require_lease,
            bash: policy.bash,
            on_error: policy.on_error,
        }
    }
}

/// Decides a tool call before it runs.
pub fn pre_tool_use(
    journal: &impl LeaseBackend,
    workspace: &Workspace,
    agent: &Agent,
    event: &Event,
    rules: Rules,
) -> Result<Verdict, JournalError> {
    let cwd = event.cwd.clone().unwrap_or_else(|| workspace.checkout().to_owned());
    let mut notes = Vec::new();
    let mut paths = event.paths.clone();
    if let Some(command) = &event.command {
        let footprint = shell::footprint(command, &cwd);
        paths = footprint.writes;
        if let Some(why) = footprint.unknown {
            match rules.bash {
                BashRule::DenyUnknown => {
                    return Ok(Verdict::Deny {
                        reason: format!(
                            "keel: this workspace allows no shell command whose writes keel cannot tell ({why}). \
                             Change files with the edit tools, or with a command whose writes are literal paths \
                             (a redirection, sed -i, rm, mv, cp)."
                        ),
                    });
                }
                BashRule::Warn => notes.push(format!(
                    "keel could not tell every file this command writes ({why}), so it was not checked against \
                     other agents' leases; change files with the edit tools where you can."
                )),
                BashRule::Allow => {}
            }
        }
    }
    let mut leased = Vec::new();
    for path in &paths {
        // Paths outside the workspace are not keel's business.
        let Some(relative) = relative_to(workspace.checkout(), &cwd.join(path)) else { continue };
        // One look at the live state, copying no lease and judging only those that matter:
        // with hundreds of live leases, anything more is most of what a hook costs.
        let (held, blocker, grants_stopped) = journal.look(|state, stopped| {
            let held = holds(journal, state, agent, &relative);
            let blocker = (!held && !rules.auto_lease).then(|| blocker(journal, state, agent, &relative)).flatten();
            (held, blocker, stopped)
        })?;
        if held {
            continue;
        }
        if rules.require_lease {
            return Ok(deny(&relative, LEASE_REQUIRED, TAKE_A_LEASE));
        }
        if !rules.auto_lease {
            if let Some(other) = blocker {
                return Ok(deny(&relative, &other, WAIT_OR_ELSEWHERE));
            }
            continue;
        }
        if let Some(stopped) = &grants_stopped {
            let damage = format!(
                "line {} of the lease journal is damaged and unreviewed, so keel grants no lease until an operator \
                 reviews it",
                stopped.line_number
            );
            if rules.on_error == OnError::Allow {
                notes.push(format!("keel did not check {relative} against other agents' leases: {damage}."));
                continue;
            }
            return Ok(Verdict::Deny {
                reason: format!(
                    "keel: {relative} cannot be edited now: {damage}. Tell the user, and work on files you already \
                     hold meanwhile."
                ),
            });
        }
        match journal.acquire(&automatic_request(agent, &relative, event.session_id.clone())) {
            Ok(AcquireOutcome::Acquire(_)) => leased.push(relative),
            Ok(AcquireOutcome::Refuse { decision, .. }) => {
                return Ok(deny(&relative, &refused(journal, &decision), WAIT_OR_ELSEWHERE));
            }
            Err(JournalError::InvalidRequest(why)) => {
                return Ok(deny(&relative, &why, "edit it under a path keel can lease"));
            }
            Err(error) => return Err(error),
        }
    }
    if !leased.is_empty() {
        notes.insert(0, format!("keel leased {} for you until your session ends.", leased.join(", ")));
    }
    Ok(Verdict::Allow { note: (!notes.is_empty()).then(|| notes.join(" ")) })
}

/// What an edit of one path by the agent would get now, decided as [`pre_tool_use`] would and
/// writing nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The path as asked, or workspace-relative when inside the workspace.
    pub path: String,
    /// Whether the edit would go ahead.
    pub allowed: bool,
    /// Whether the agent holds a lease over it already.
    pub held: bool,
    /// Why, for the agent: who holds it and what to do, or what an allowed edit would do.
    pub reason: String,
}

/// Whether an edit of `path` (absolute, or relative to the workspace's checkout) by `agent` would
/// be allowed now: the same request through the same arbiter as [`pre_tool_use`], never a lease
/// taken or a record written.
pub fn check(
    journal: &impl LeaseBackend,
    workspace: &Workspace,
    agent: &Agent,
    path: &Path,
    rules: Rules,
) -> Result<Check, JournalError> {
    let shown = path.display().to_string();
    let Some(relative) = relative_to(workspace.checkout(), &workspace.checkout().join(path)) else {
        let reason = "outside the workspace: not keel's business".to_owned();
        return Ok(Check { path: shown, allowed: true, held: false, reason });
    };
    let (held, grants_stopped) = journal.look(|state, stopped| (holds(journal, state, agent, &relative), stopped))?;
    let answer = |allowed: bool, reason: String| Ok(Check { path: relative.clone(), allowed, held, reason });
    if held {
        return answer(true, "you hold a lease over it".into());
    }
    if rules.require_lease {
        return answer(false, denial(&relative, LEASE_REQUIRED, TAKE_A_LEASE));
    }
    if !rules.auto_lease {
        return match journal.look(|state, _| blocker(journal, state, agent, &relative))? {
            Some(other) => answer(false, denial(&relative, &other, WAIT_OR_ELSEWHERE)),
            None => answer(true, "free".into()),
        };
    }
    if let Some(stopped) = grants_stopped {
        let damage = format!(
            "line {} of the lease journal is damaged and unreviewed, so keel grants no lease until an operator reviews it",
            stopped.line_number
        );
        return answer(rules.on_error == OnError::Allow, damage);
    }
    match journal.probe(&automatic_request(agent, &relative, None)) {
        Ok(decision) if decision.outcome == Outcome::Refuse => {
            answer(false, denial(&relative, &refused(journal, &decision), WAIT_OR_ELSEWHERE))
        }
        Ok(_) => answer(true, "free: an edit would lease it for you until your session ends".into()),
        Err(JournalError::InvalidRequest(why)) => answer(false, why),
        Err(error) => Err(error),
    }
}

/// The automatic lease on one file that an allowed edit takes.
fn automatic_request(agent: &Agent, relative: &str, session: Option<String>) -> AcquireRequest {
    AcquireRequest {
        lane: format!("{AUTO_LANE_PREFIX}{relative}"),
        tree: vec![relative.to_owned()],
        owner: agent.owner.clone(),
        run_id: session,
        holder_pid: agent.holder(),
        ..AcquireRequest::default()
    }
}

/// After a tool call: beats the agent's automatic leases (coalesced). Returns how many are live.
pub fn post_tool_use(journal: &impl LeaseBackend, agent: &Agent) -> Result<usize, JournalError> {
    let mine = automatic_leases(journal, agent)?;
    for identity in &mine {
        journal.heartbeat(&LeaseRef::exact(identity), &agent.owner, Some(AUTO_BEAT_COALESCE_S))?;
    }
    Ok(mine.len())
}

/// The session ended: gives back the agent's automatic leases. Returns how many.
pub fn session_end(journal: &impl LeaseBackend, agent: &Agent) -> Result<usize, JournalError> {
    let mine = automatic_leases(journal, agent)?;
    for identity in &mine {
        journal.release(&LeaseRef::exact(identity), &agent.owner)?;
    }
    Ok(mine.len())
}

/// The identities of the agent's automatic leases.
fn automatic_leases(journal: &impl LeaseBackend, agent: &Agent) -> Result<Vec<Identity>, JournalError> {
    journal.look(|state, _| {
        state
            .live_with_identity()
            .filter(|(identity, lease)| identity.lane.starts_with(AUTO_LANE_PREFIX) && holder(lease) == agent.owner)
            .map(|(identity, _)| identity.clone())
            .collect()
    })
}

fn holder(lease: &Object) -> &str {
    lease.get("holder").and_then(Value::as_str).unwrap_or_default()
}

/// Whether the agent holds a live exclusive lease, not provably dead, whose region contains `path`.
fn holds(journal: &impl LeaseBackend, state: &LiveState, agent: &Agent, path: &str) -> bool {
    let Some(wanted) = file_region(path) else { return false };
    state.live().filter(|lease| holder(lease) == agent.owner).any(|lease| {
        let exclusive = lease.get("mode").and_then(Value::as_str) != Some("shared");
        exclusive && covers(lease, &wanted) && !journal.judge(lease).is_dead()
    })
}

/// The region an edit of the workspace-relative file `path` touches, as the prefix it is; `None`
/// for a path that names no file region.
pub fn file_region(path: &str) -> Option<String> {
    match Tree::new(&[path]).regions().first() {
        Some(Region::Prefix(wanted)) => Some(wanted.clone()),
        _ => None,
    }
}

/// Whether a lease's tree holds the file region `wanted` (see [`file_region`]).
pub fn covers(lease: &Object, wanted: &str) -> bool {
    Tree::from_json(lease.get("tree")).regions().iter().any(|region| match region {
        Region::Universal => true,
        Region::Prefix(prefix) => wanted.starts_with(prefix.as_str()),
        Region::Lock(_) => false,
    })
}

/// Who else holds a live lease, not provably dead, over `path`, as a sentence.
fn blocker(journal: &impl LeaseBackend, state: &LiveState, agent: &Agent, path: &str) -> Option<String> {
    let wanted = Tree::new(&[path]);
    let (identity, lease) = state.live_with_identity().find(|(_, lease)| {
        holder(lease) != agent.owner
            && Tree::from_json(lease.get("tree")).intersects(&wanted)
            && !journal.judge(lease).is_dead()
    })?;
    Some(format!(
        "{:?} holds {} (lane {:?}), {}, {}",
        holder(lease),
        lease.get("tree").map(ToString::to_string).unwrap_or_default(),
        identity.lane,
        held_since(lease),
        journal.judge(lease)
    ))
}

/// "held since T, last sign of life U", from a lease's stamps.
fn held_since(lease: &Object) -> String {
    let stamp = |key: &str| lease.get(key).and_then(Value::as_str);
    let since = stamp("acquired_at").unwrap_or("an unknown time");
    let last = stamp("heartbeat_at").or(stamp("acquired_at")).unwrap_or("unknown");
    format!("held since {since}, last sign of life {last}")
}

/// What an agent refused by another's lease does instead.
const WAIT_OR_ELSEWHERE: &str = "work on other files for now, or wait and retry this edit later";
const LEASE_REQUIRED: &str = "this workspace requires a lease before an edit, and you hold none over it";
const TAKE_A_LEASE: &str =
    "take one first (`keel lease acquire --tree PATH`, or the `lease_acquire` tool), or edit a file you hold";

fn deny(path: &str, why: &str, what_to_do: &str) -> Verdict {
    Verdict::Deny { reason: denial(path, why, what_to_do) }
}

/// A refusal written for the agent to act on: which file, why, what to do.
fn denial(path: &str, why: &str, what_to_do: &str) -> String {
    format!("keel: {path} cannot be edited now: {why}. {what_to_do}.")
}

/// The arbiter's reason for a refusal, with since when the blocking lease is held and its
/// holder's last sign of life.
fn refused(journal: &impl LeaseBackend, decision: &Decision) -> String {
    let times = decision.blocking.as_ref().and_then(|b| {
        let identity = Identity { loop_ts: b.loop_ts.clone(), lane: b.lane.clone() };
        journal.look(|state, _| state.lease(&identity).map(held_since)).ok().flatten()
    });
    match times {
        Some(times) => format!("{}; {times}", decision.reason),
        None => decision.reason.clone(),
    }
}

/// `path` (absolute) relative to `root` as a `/`-joined lease path, or `None` outside it. The
/// nearest existing ancestor is resolved, so a new file under a symlinked directory is compared
/// where it will really be.
fn relative_to(root: &Path, path: &Path) -> Option<String> {
    // `..` is folded first: a harness may create the directories of `a/new/../b` and write `a/b`,
    // which must not pass for a path outside the workspace.
    let mut folded = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    let mut existing = folded;
    let mut rest: Vec<PathBuf> = Vec::new();
    while !existing.exists() {
        let name = existing.file_name()?.to_owned();
        rest.push(PathBuf::from(name));
        if !existing.pop() {
            return None;
        }
    }
    let mut resolved = keel_fs::canonicalize(&existing).ok()?;
    for part in rest.iter().rev() {
        resolved.push(part);
    }
    let inside = resolved.strip_prefix(root).ok()?;
    let parts: Vec<String> = inside
        .components()
        .map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_made_workspace_relative_with_dot_dot_folded_and_outside_paths_are_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("src")).expect("src");
        assert_eq!(relative_to(&root, &root.join("src/a.rs")).as_deref(), Some("src/a.rs"));
        assert_eq!(relative_to(&root, &root.join("new/dir/../../src/a.rs")).as_deref(), Some("src/a.rs"));
        assert_eq!(relative_to(&root, &root.join("fresh/deep/file")).as_deref(), Some("fresh/deep/file"));
        assert_eq!(relative_to(&root, &root.join("../elsewhere")), None);
        assert_eq!(relative_to(&root, Path::new("/etc/passwd")), None);
    }
}
