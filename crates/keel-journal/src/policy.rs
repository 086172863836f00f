//! The workspace policy: what a team decides about its workspace, read from
//! `<root>/.keel/policy.toml` by every lease operation, the write gate and `keel arbitrate`.
//!
//! ```toml
//! # .keel/policy.toml
//! protected = ["deploy/", "orchestrator/**"]        # no lease covers these unless forced
//! exclusive_lanes = [{ name = "release", tree = ["**"] }, { name = "global", tree = ["**"] }]
//! min_grace_s = 300                                 # floors: a lease's protection is never less
//! min_ttl_minutes = 10
//! clock_skew_s = 600                                # stamps further ahead are not believed
//!
//! [kind_budgets]                                    # live leases per lane kind at most (0: none)
//! keyword = 8
//! global = 0
//!
//! [backend]                                         # where the leases live (default: the journal)
//! kind = "etcd"                                     # "journal" or "etcd"
//! endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
//! prefix = "/keel/shop"                             # the fleet's key prefix: the same on every host
//! ```
//!
//! One loader and one meaning for the policy file and for `keel arbitrate --taxonomy` (which may
//! also be the JSON taxonomy of the arbiter spec, the same fields). A policy that does not parse,
//! names an unknown key or holds a value of the wrong type is an error naming the file, the line
//! and the key: it is never ignored and never half applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_kernel::arbiter::{LaneSpec, Taxonomy};
use keel_kernel::expiry::ExpiryPolicy;
use serde::{Deserialize, Serialize};

use crate::STATE_DIR;

/// The policy file's name in [`STATE_DIR`].
pub const POLICY_NAME: &str = "policy.toml";
/// The largest policy file read.
pub const POLICY_BYTES_MAX: u64 = 1024 * 1024;

/// A workspace's policy. Every field has a default: an empty file is the default policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Paths no lease may cover (unless forced) and no write through the gate may touch.
    pub protected: Vec<String>,
    /// Lanes that run alone: while a lease on one is live, nothing else is granted.
    pub exclusive_lanes: Vec<LaneSpec>,
    /// Concurrent lanes, with the tree a lease on one covers when the request names none.
    pub cluster_lanes: Vec<LaneSpec>,
    /// Lanes tried in order when a request names no lane and no region.
    pub auto_pick: Vec<String>,
    /// At most this many live leases of a lane kind (case-folded) at once; 0 grants none.
    pub kind_budgets: BTreeMap<String, usize>,
    /// The TTL of a lease granted without one, in minutes.
    pub default_ttl_minutes: f64,
    /// The least TTL any lease gets, in minutes, whatever it asked for or recorded.
    pub min_ttl_minutes: f64,
    /// The grace recorded in leases granted here, in seconds.
    pub grace_s: u64,
    /// The least grace any lease gets, in seconds, whatever it recorded.
    pub min_grace_s: u64,
    /// How far ahead of this host's clock a stamp may be and still be believed, in seconds.
    pub clock_skew_s: u64,
    /// A heartbeat younger than this is not written again (at most half a lease's grace).
    pub heartbeat_coalesce_s: u64,
    /// `keel hook`: take a lease on a free file before allowing an agent's edit of it.
    pub auto_lease: bool,
    /// `keel hook`: deny an edit of a file the agent holds no lease on.
    pub require_lease: bool,
    /// `keel hook`: what a shell command whose writes keel cannot read gets.
    pub bash: BashRule,
    /// `keel hook`: what an edit that needs a lease gets while the journal grants none (damage
    /// awaiting review).
    pub on_error: OnError,
    /// `keel mcp`: give back the leases taken through the server when its client disconnects
    /// (otherwise they are held until their TTL, or until the agent's process is gone).
    pub mcp_release_on_exit: bool,
    /// Where the workspace's leases live: `[backend]`.
    pub backend: BackendPolicy,
}

/// The `[backend]` table: which lease service the workspace's commands use. A command's flags
/// (or their environment variables) override it field by field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendPolicy {
    /// The journal file (the default) or etcd.
    pub kind: BackendKind,
    /// etcd's members' client URLs (`http://host:2379`).
    pub endpoints: Vec<String>,
    /// The key prefix of the workspace's leases in etcd. There is no default: every host of a
    /// fleet must name the same one, and a guessed one would split the fleet in two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Which lease service keeps a workspace's leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The journal file on this host ([`crate::Journal`]).
    #[default]
    Journal,
    /// An etcd v3 cluster, for a fleet that spans hosts.
    Etcd,
}

/// What `keel hook` does with a shell command whose footprint it cannot read (another program,
/// a computed path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BashRule {
    /// Allowed, with a note to the agent that keel did not check it.
    #[default]
    Warn,
    /// Denied, with the reason.
    DenyUnknown,
    /// Allowed silently.
    Allow,
}

/// What `keel hook` does with an edit that needs a lease while the journal grants none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Denied, naming the damage (fails closed).
    #[default]
    Deny,
    /// Allowed without a lease, with a note (fails open).
    Allow,
}

impl Default for Policy {
    fn default() -> Self {
        let taxonomy = Taxonomy::default();
        let expiry = ExpiryPolicy::default();
        Self {
            protected: taxonomy.protected,
            exclusive_lanes: taxonomy.exclusive_lanes,
            cluster_lanes: taxonomy.cluster_lanes,
            auto_pick: taxonomy.auto_pick,
            kind_budgets: taxonomy.kind_budgets,
            default_ttl_minutes: expiry.default_ttl_s as f64 / 60.0,
            min_ttl_minutes: 0.0,
            grace_s: expiry.grace_s,
            min_grace_s: expiry.grace_floor_s,
            clock_skew_s: expiry.clock_skew_s,
            heartbeat_coalesce_s: 0,
            auto_lease: true,
            require_lease: false,
            bash: BashRule::default(),
            on_error: OnError::default(),
            mcp_release_on_exit: true,
            backend: BackendPolicy::default(),
        }
    }
}

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a policy: a syntax error, an unknown key, a value of the wrong type or
    /// out of range.
    #[error("{}: line {line}{}: {message}", path.display(), key.as_ref().map_or_else(String::new, |k| format!(", key `{k}`")))]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// The 1-based line the problem is on.
        line: usize,
        /// The key the problem is with, when one can be named.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl PolicyError {
    /// The policy file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// The 1-based line the problem is on, when the file could be read.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Invalid { line, .. } => u64::try_from(*line).ok(),
            Self::Io { .. } => None,
        }
    }

    /// A policy that is not one is a usage error, like a mistyped argument; a file that cannot be
    /// read is I/O, unless it is missing.
    pub fn kind(&self) -> keel_fs::ErrorKind {
        match self {
            Self::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => keel_fs::ErrorKind::Io,
            _ => keel_fs::ErrorKind::Usage,
        }
    }
}

impl Policy {
    /// The policy of the workspace rooted at `root`: `.keel/policy.toml`, or the default policy
    /// when there is none.
    pub fn of_workspace(root: &Path) -> Result<Self, PolicyError> {
        let path = Self::path_in(root);
        match keel_fs::Storage::link_stat(&keel_fs::OsStorage, &path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::load(&path),
        }
    }

    /// Where the policy of the workspace rooted at `root` lives.
    pub fn path_in(root: &Path) -> PathBuf {
        root.join(STATE_DIR).join(POLICY_NAME)
    }

    /// Reads a policy file: TOML, or JSON when its name ends in `.json` (the arbiter's taxonomy).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let io = |source| PolicyError::Io { path: path.to_owned(), source };
        let stat = keel_fs::Storage::path_stat(&keel_fs::OsStorage, path).map_err(io)?;
        if stat.len > POLICY_BYTES_MAX {
            return Err(PolicyError::Invalid {
                path: path.to_owned(),
                line: 1,
                key: None,
                message: format!("{} bytes, over the limit of {POLICY_BYTES_MAX}", stat.len),
            });
        }
        // Bounded again: the file may have grown since the stat. Every error of a bounded read
        // is an I/O error; its source is what this error has always carried.
        let text = keel_fs::read_to_string_bounded(path, POLICY_BYTES_MAX).map_err(|error| match error {
            keel_fs::FsError::Io { source, .. } => io(source),
            other => io(std::io::Error::other(other.to_string())),
        })?;
        let json = path.extension().is_some_and(|e| e == "json");
        if json { Self::from_json(&text, path) } else { Self::from_toml(&text, path) }
    }

    /// Parses TOML text read from `path` (named in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text).map_err(|error| {
            let at = error.span().map_or(0, |span| span.start);
            PolicyError::Invalid {
                path: path.to_owned(),
                line: line_of(text, at),
                key: key_of(text, at, error.message()),
                message: error.message().trim().to_owned(),
            }
        })?;
        policy.validated(text, path)
    }

    /// Parses JSON text read from `path` (named in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let policy: Self = serde_json::from_str(text).map_err(|error| {
            let at = text.lines().take(error.line().saturating_sub(1)).map(|l| l.len() + 1).sum::<usize>();
            PolicyError::Invalid {
                path: path.to_owned(),
                line: error.line().max(1),
                key: key_of(text, at + error.column().saturating_sub(1), &error.to_string()),
                message: error.to_string(),
            }
        })?;
        policy.validated(text, path)
    }

    /// Checks what types cannot: numbers in range, entries spelled as regions.
    fn validated(self, text: &str, path: &Path) -> Result<Self, PolicyError> {
        let invalid = |key: &str, message: String| PolicyError::Invalid {
            path: path.to_owned(),
            line: text.find(key).map_or(1, |at| line_of(text, at)),
            key: Some(key.to_owned()),
            message,
        };
        for (key, minutes) in
            [("default_ttl_minutes", self.default_ttl_minutes), ("min_ttl_minutes", self.min_ttl_minutes)]
        {
            if !(0.0..=1e9).contains(&minutes) {
                return Err(invalid(key, format!("{minutes} is not a number of minutes from 0 to 1e9")));
            }
        }
        if self.default_ttl_minutes <= 0.0 {
            return Err(invalid("default_ttl_minutes", "a default TTL must be more than 0".into()));
        }
        for entry in &self.protected {
            if let Err(why) = keel_kernel::tree::requestable(entry) {
                return Err(invalid("protected", format!("entry {entry:?}: {why}")));
            }
        }
        // What a type cannot say about `[backend]`: a blank name here would reach etcd as one.
        if let Some(endpoint) = self.backend.endpoints.iter().find(|e| e.trim().is_empty() || e.trim() != *e) {
            return Err(invalid("endpoints", format!("endpoint {endpoint:?} is blank or has white space around it")));
        }
        if let Some(prefix) = &self.backend.prefix
            && (prefix.trim_end_matches('/').trim().is_empty() || prefix.trim() != prefix)
        {
            return Err(invalid("prefix", format!("prefix {prefix:?} is empty, `/` or has white space around it")));
        }
        Ok(self)
    }

    /// The arbiter's taxonomy this policy sets.
    pub fn taxonomy(&self) -> Taxonomy {
        Taxonomy {
            cluster_lanes: self.cluster_lanes.clone(),
            exclusive_lanes: self.exclusive_lanes.clone(),
            auto_pick: self.auto_pick.clone(),
            protected: self.protected.clone(),
            kind_budgets: self.kind_budgets.clone(),
        }
    }

    /// The expiry rules this policy sets.
    pub fn expiry(&self) -> ExpiryPolicy {
        let minutes = |m: f64| (m * 60.0).round() as u64;
        ExpiryPolicy {
            default_ttl_s: minutes(self.default_ttl_minutes).max(minutes(self.min_ttl_minutes)),
            grace_s: self.grace_s.max(self.min_grace_s),
            grace_floor_s: self.min_grace_s,
            ttl_floor_s: minutes(self.min_ttl_minutes),
            clock_skew_s: self.clock_skew_s,
        }
    }

    /// The policy as TOML, for people.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..at.min(text.len())]).count() + 1
}

/// The key a problem at byte `at` is with: one the message names ("unknown field"), else
/// the key of the `key = value` line it is on, else the key of the line above (an unclosed array).
fn key_of(text: &str, at: usize, message: &str) -> Option<String> {
    if let Some((_, rest)) = message.split_once("field `")
        && let Some((named, _)) = rest.split_once('`')
    {
        return Some(named.to_owned());
    }
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |n| n + 1);
    let lines = text[..start].lines().rev();
    std::iter::once(&text[start..]).chain(lines).find_map(|line| {
        let key = line.split_once('=')?.0.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_is_the_default_and_the_default_round_trips_through_toml() {
        let path = Path::new("policy.toml");
        assert_eq!(Policy::from_toml("", path).expect("empty"), Policy::default());
        let text = Policy::default().to_toml();
        assert_eq!(Policy::from_toml(&text, path).expect("round trip"), Policy::default());
        assert_eq!(Policy::default().expiry(), ExpiryPolicy::default());
        assert_eq!(Policy::default().taxonomy(), Taxonomy::default());
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let path = Path::new("p.toml");
        let error = Policy::from_toml("protected = []\n\nnope = 1\n", path).expect_err("unknown key");
        assert!(matches!(&error, PolicyError::Invalid { line: 3, key: Some(k), .. } if k == "nope"), "{error}");
        let error = Policy::from_toml("grace_s = -3\n", path).expect_err("negative");
        assert!(matches!(&error, PolicyError::Invalid { line: 1, key: Some(k), .. } if k == "grace_s"), "{error}");
        let error = Policy::from_toml("protected = [\" src/\"]\n", path).expect_err("misspelled entry");
        assert!(error.to_string().contains("protected"), "{error}");
    }

    #[test]
    fn the_backend_table_names_etcd_and_is_as_strict_as_the_rest() {
        let path = Path::new("p.toml");
        let text = "grace_s = 60\n[backend]\nkind = \"etcd\"\nendpoints = [\"http://a:2379\", \"http://b:2379\"]\n\
                    prefix = \"/keel/shop\"\n";
        let policy = Policy::from_toml(text, path).expect("an etcd backend");
        assert_eq!(policy.backend.kind, BackendKind::Etcd);
        assert_eq!(policy.backend.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(policy.backend.prefix.as_deref(), Some("/keel/shop"));
        assert_eq!(Policy::from_toml(&policy.to_toml(), path).expect("round trip"), policy);
        assert_eq!(Policy::default().backend.kind, BackendKind::Journal, "the journal unless a policy says otherwise");
        let invalid = |text: &str, line: usize, key: &str| {
            let error = Policy::from_toml(text, path).expect_err(text);
            assert!(
                matches!(&error, PolicyError::Invalid { line: l, key: Some(k), .. } if *l == line && k == key),
                "{text:?}: {error}"
            );
            assert!(error.to_string().starts_with("p.toml: line"), "names the file: {error}");
        };
        invalid("[backend]\nkind = \"etcd\"\nendpoint = [\"http://a:2379\"]\n", 3, "endpoint");
        invalid("[backend]\nkind = \"zookeeper\"\n", 2, "kind");
        invalid("[backend]\nkind = \"etcd\"\nendpoints = \"http://a:2379\"\n", 3, "endpoints");
        invalid("[backend]\nprefix = 7\n", 2, "prefix");
        invalid("[backend]\nendpoints = [\" \"]\n", 2, "endpoints");
        invalid("[backend]\n\nprefix = \"/\"\n", 3, "prefix");
    }
}
