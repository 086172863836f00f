//! Who the agent is, found without the agent passing anything: its harness process.
//!
//! The hook runs as the harness's child, usually through a shell (`sh -c 'keel hook ...'`). The
//! agent is the first ancestor that is not a shell: the harness process (Claude Code's `claude`,
//! Codex's `codex`, ...). Its leases name that process (pid and start time), so they live while
//! it does and become reclaimable past the grace once it is gone, and its owner name is stable
//! for every hook call of the session. `KEEL_OWNER` names the owner instead; the process is found
//! the same way.

use keel_journal::HolderPid;

/// Process names taken for the shells (and wrappers) between a harness and its hook.
const SHELLS: [&str; 9] = ["sh", "bash", "dash", "zsh", "fish", "ksh", "env", "timeout", "nice"];
/// The most ancestors walked.
const ANCESTORS_MAX: usize = 32;

/// An agent: the name its leases are held under, and its harness process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The owner recorded in its leases.
    pub owner: String,
    /// Its harness process, if one was found.
    pub pid: Option<u32>,
}

impl Agent {
    /// The agent of a hook run by the process `parent` (the hook's parent), with `owner` from
    /// `KEEL_OWNER` if set.
    pub fn of_parent(parent: u32, owner: Option<String>) -> Self {
        Self::of_parent_past(parent, owner, &[])
    }

    /// [`of_parent`](Self::of_parent), walking past `wrappers` too: git runs its pre-commit hook
    /// as its own child, and the agent is whoever ran git.
    pub fn of_parent_past(parent: u32, owner: Option<String>, wrappers: &[&str]) -> Self {
        let harness = harness_of(parent, wrappers);
        let owner = owner.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| match &harness {
            Some((pid, name)) => format!("{name}-{pid}"),
            None => format!("agent-{parent}"),
        });
        Self { owner, pid: harness.map(|(pid, _)| pid) }
    }

    /// The agent of this hook process, walking past `wrappers` as well as shells.
    pub fn of_this_hook(wrappers: &[&str]) -> Self {
        let parent = std::os::unix::process::parent_id();
        Self::of_parent_past(parent, std::env::var("KEEL_OWNER").ok(), wrappers)
    }

    /// The process its leases name.
    pub fn holder(&self) -> HolderPid {
        self.pid.map_or(HolderPid::None, HolderPid::Pid)
    }
}

/// The first ancestor from `pid` (itself included) that is not a shell or one of `wrappers`,
/// with its name.
fn harness_of(mut pid: u32, wrappers: &[&str]) -> Option<(u32, String)> {
    for _ in 0..ANCESTORS_MAX {
        let keel_fs::lock::ProcStat { name, parent, .. } = keel_fs::lock::process_stat(pid)?;
        let passed = SHELLS.contains(&name.as_str()) || wrappers.contains(&name.as_str());
        if !passed || parent <= 1 {
            return Some((pid, name));
        }
        pid = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_the_first_ancestor_that_is_not_a_shell() {
        // This test process is no shell: it is its own harness.
        let me = std::process::id();
        let agent = Agent::of_parent(me, None);
        assert_eq!(agent.pid, Some(me));
        assert!(agent.owner.ends_with(&format!("-{me}")), "{agent:?}");
        assert_eq!(Agent::of_parent(me, Some("agent-a".into())).owner, "agent-a");
    }
}
