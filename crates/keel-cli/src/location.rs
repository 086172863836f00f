//! Where a command's workspace and leases are. The location flags may come before the
//! subcommand (`keel --root DIR lease live`), after it (`keel lease live --root DIR`) or from the
//! environment (`KEEL_ROOT`), in that order of precedence from last to first; only the command
//! groups they mean something to list them (`keel store` takes `--root` alone, `keel lock` none).
//!
//! The environment is read here rather than by clap's `env`: clap counts a flag its variable
//! set as given, and shows it in a usage line as if it were required.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use keel_journal::{Named, Policy, Workspace};

use crate::{Failure, backend, failure, non_blank};

// The workspace root. (Plain comments on these structs: see `Command` in main.rs.)
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Root {
    /// The workspace root [default: $KEEL_ROOT, else the nearest directory above holding .keel/,
    /// else the top of the git work tree (a linked worktree's main one), else the current one].
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
}

// Where the workspace and its leases are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Location {
    #[command(flatten)]
    pub at: Root,
    /// The lane journal, relative to the root [default: $KEEL_JOURNAL, else the one
    /// .keel/journal-binding names, else .keel/lane-journal.jsonl].
    #[arg(long, global = true)]
    pub journal: Option<PathBuf>,
    /// Seconds after its last heartbeat during which a lease granted by this command is never
    /// reclaimed, even if its holder process is gone; recorded in the lease, so no later
    /// requester can shorten it [default: $KEEL_GRACE_S, else 120].
    #[arg(long, global = true)]
    pub grace_s: Option<u64>,
    /// Where the leases live: the journal file, or etcd for a fleet that spans hosts [default:
    /// $KEEL_BACKEND, else `kind` in the [backend] table of .keel/policy.toml, else journal].
    #[arg(long, global = true, value_enum)]
    pub backend: Option<backend::BackendArg>,
    /// etcd's client URLs, separated by commas, for the etcd backend [default:
    /// $KEEL_ETCD_ENDPOINTS, else `endpoints` in the policy's [backend] table].
    #[arg(long, global = true, value_delimiter = ',', value_parser = backend::endpoint)]
    pub etcd_endpoints: Vec<String>,
    /// The workspace's key prefix in etcd: the same on every host of the fleet [default:
    /// $KEEL_ETCD_PREFIX, else `prefix` in the policy's [backend] table; no other default].
    #[arg(long, global = true, value_parser = non_blank)]
    pub etcd_prefix: Option<String>,
}

/// Each environment variable that stands in for a location flag left out, with its flag.
const ENVIRONMENT: [(&str, &str); 6] = [
    ("KEEL_ROOT", "--root"),
    ("KEEL_JOURNAL", "--journal"),
    ("KEEL_GRACE_S", "--grace-s"),
    ("KEEL_BACKEND", "--backend"),
    ("KEEL_ETCD_ENDPOINTS", "--etcd-endpoints"),
    ("KEEL_ETCD_PREFIX", "--etcd-prefix"),
];

/// The location flags alone, to read the environment's values as the flags' own.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
struct Environment {
    #[command(flatten)]
    location: Location,
}

impl Location {
    /// The location of a command: the flags after its subcommand (`self`), else those before it
    /// (`outer`), else the environment's.
    pub fn under(&self, outer: &Location) -> Result<Location, Failure> {
        let env = from_environment(&ENVIRONMENT)?;
        let endpoints = [&self.etcd_endpoints, &outer.etcd_endpoints, &env.etcd_endpoints];
        Ok(Location {
            at: Root { root: first([&self.at.root, &outer.at.root, &env.at.root]) },
            journal: first([&self.journal, &outer.journal, &env.journal]),
            grace_s: first([&self.grace_s, &outer.grace_s, &env.grace_s]),
            backend: first([&self.backend, &outer.backend, &env.backend]),
            etcd_endpoints: endpoints.into_iter().find(|e| !e.is_empty()).cloned().unwrap_or_default(),
            etcd_prefix: first([&self.etcd_prefix, &outer.etcd_prefix, &env.etcd_prefix]),
        })
    }

    /// Refuses the flags before the subcommand that `command` does not take: they would do
    /// nothing there, silently. `root` says whether it takes `--root`.
    pub fn unused_by(&self, command: &str, root: bool) -> Result<(), Failure> {
        let given = [
            ("--root", !root && self.at.root.is_some()),
            ("--journal", self.journal.is_some()),
            ("--grace-s", self.grace_s.is_some()),
            ("--backend", self.backend.is_some()),
            ("--etcd-endpoints", !self.etcd_endpoints.is_empty()),
            ("--etcd-prefix", self.etcd_prefix.is_some()),
        ];
        match given.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(Failure::usage(anyhow::anyhow!("`keel {command}` takes no {flag}"))),
            None => Ok(()),
        }
    }

    /// The workspace, by the one rule every command uses ([`keel_journal::workspace`]). A named
    /// root must be an existing directory: a mistyped `--root` or `$KEEL_ROOT` would otherwise
    /// start a workspace of its own, whose leases exclude nobody working in the real one.
    pub fn workspace(&self) -> Result<Workspace, Failure> {
        self.workspace_from(Path::new("."))
    }

    /// The workspace found from `start` (a hook's event names its agent's directory).
    pub fn workspace_from(&self, start: &Path) -> Result<Workspace, Failure> {
        let workspace = Workspace::locate(self.named(), start).map_err(failure)?;
        tracing::debug!(
            root = %workspace.root().display(),
            found_by = ?workspace.found_by(),
            journal = %workspace.journal().display(),
            "workspace located"
        );
        Ok(workspace)
    }

    /// The root and journal named, for [`Workspace::locate`].
    pub fn named(&self) -> Named<'_> {
        Named { root: self.at.root.as_deref(), journal: self.journal.as_deref() }
    }

    /// The lease service's options: `policy`'s, with `--grace-s` for the leases this command
    /// grants (never below the policy's floor).
    pub fn options_of(&self, policy: &Policy) -> keel_journal::JournalOptions {
        let mut options = keel_journal::JournalOptions::from_policy(policy);
        if let Some(grace_s) = self.grace_s {
            options.expiry.grace_s = grace_s;
        }
        options
    }
}

impl Root {
    /// The root of a command that takes `--root` alone, as [`Location::under`] settles it.
    pub fn under(&self, outer: &Location) -> Result<Location, Failure> {
        let env = from_environment(&ENVIRONMENT[..1])?;
        let root = first([&self.root, &outer.at.root, &env.at.root]);
        Ok(Location { at: Root { root }, ..Location::default() })
    }
}

/// The first of `values` that is set.
fn first<T: Clone>(values: [&Option<T>; 3]) -> Option<T> {
    values.into_iter().find_map(Clone::clone)
}

/// The location the environment's `variables` give, each checked as its flag's value would be.
/// A variable set empty counts as unset.
fn from_environment(variables: &[(&str, &str)]) -> Result<Location, Failure> {
    let set: Vec<(&str, OsString)> = variables
        .iter()
        .filter_map(|(variable, flag)| {
            let value = std::env::var_os(variable).filter(|value| !value.is_empty())?;
            let mut word = OsString::from(format!("{flag}="));
            word.push(value);
            Some((*variable, word))
        })
        .collect();
    if set.is_empty() {
        return Ok(Location::default());
    }
    match Environment::try_parse_from(set.iter().map(|(_, word)| word)) {
        Ok(environment) => Ok(environment.location),
        Err(error) => {
            // Name the variable: the user never typed the flag clap's message names.
            let culprit = set.iter().find(|(_, word)| Environment::try_parse_from([word]).is_err());
            let message = crate::clap_message(&error);
            Err(Failure::usage(anyhow::anyhow!("${}: {message}", culprit.map_or("KEEL_*", |(variable, _)| variable))))
        }
    }
}
