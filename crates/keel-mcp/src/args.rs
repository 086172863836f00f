//! The tools' arguments, as the agent sends them: each a JSON object whose schema the client
//! is shown, with unknown fields refused.

use std::path::{Path, PathBuf};

use keel_mutator::Expect;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::server::failed;

/// The most paths one call may name.
const PATHS_MAX: usize = 256;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Nobody else may hold an intersecting lease.
    #[default]
    Exclusive,
    /// Other shared leases may overlap (readers, or agents that only append).
    Shared,
}

/// Arguments of `lease_acquire`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireArgs {
    /// The region: workspace-relative files, directories (`src/api/`) or globs (`src/**/*.rs`).
    pub(crate) paths: Vec<String>,
    /// `exclusive` (default) or `shared`.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// A name for the lease (default: made from the paths).
    pub(crate) lane: Option<String>,
    /// How long the lease lives without a heartbeat, in minutes (default: the workspace's).
    pub(crate) ttl_minutes: Option<f64>,
    /// Wait up to this many seconds for the region to become free (default 0: answer now).
    pub(crate) wait_s: Option<f64>,
    /// Why you need the region; kept in the fleet's event record.
    pub(crate) reason: Option<String>,
}

/// Arguments naming one of this agent's leases, or all of them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LaneArgs {
    /// The lease's lane (default: every lease of yours).
    pub(crate) lane: Option<String>,
}

/// Arguments of `lease_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// Only your own leases.
    #[serde(default)]
    pub(crate) mine: bool,
}

/// Arguments of `lease_check`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckArgs {
    /// Files you are about to edit, workspace-relative or absolute.
    pub(crate) paths: Vec<String>,
}

/// Arguments of `fs_write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteArgs {
    /// The file, workspace-relative.
    pub(crate) path: String,
    /// The whole new content (UTF-8 text).
    pub(crate) content: String,
    /// The `hash` `fs_hash` gave for the content you last read: the write lands only if the file still holds it.
    pub(crate) expect_hash: Option<String>,
    /// The file must not exist yet (the default when no `expect_hash` is given).
    pub(crate) expect_absent: Option<bool>,
}

/// Arguments of `fs_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteArgs {
    /// The file, workspace-relative.
    pub(crate) path: String,
    /// The `hash` of the content you last read (default: any content).
    pub(crate) expect_hash: Option<String>,
}

/// Arguments of `fs_rename`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameArgs {
    /// The file, workspace-relative.
    pub(crate) from: String,
    /// Its new path, workspace-relative; must not exist.
    pub(crate) to: String,
    /// The `hash` of the content you last read (default: any content).
    pub(crate) expect_hash: Option<String>,
}

/// Arguments of `fs_hash`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HashArgs {
    /// The file, workspace-relative.
    pub(crate) path: String,
}

/// Arguments of `events_append`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendArgs {
    /// What happened, as a short word (`started`, `finished`, `handoff`, ...).
    pub(crate) kind: String,
    /// Anything else worth keeping, as JSON.
    #[serde(default)]
    pub(crate) data: Value,
}

/// Arguments of `events_read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadArgs {
    /// The first event id to return (the `next` of the previous page; default: the first).
    pub(crate) from: Option<u64>,
    /// The most events to return (default 100, at most 1000).
    pub(crate) limit: Option<u64>,
}

/// Arguments of a tool that takes none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

/// A path an agent gave, made workspace-relative when it is an absolute path inside the checkout
/// (a trailing `/` kept: it means "everything under").
pub(crate) fn workspace_relative(checkout: &Path, path: &str) -> String {
    let absolute = PathBuf::from(path);
    match absolute.strip_prefix(checkout) {
        Ok(inside) if absolute.is_absolute() => {
            let mut relative = inside.to_string_lossy().into_owned();
            if path.ends_with('/') && !relative.is_empty() {
                relative.push('/');
            }
            relative
        }
        _ => path.to_owned(),
    }
}

pub(crate) fn check_paths(field: &str, paths: &[String]) -> Result<(), CallToolResult> {
    if paths.len() > PATHS_MAX {
        return Err(failed(format!("{field}: at most {PATHS_MAX} paths in one call (got {})", paths.len())));
    }
    match paths.iter().position(|p| p.trim().is_empty()) {
        Some(at) => Err(failed(format!("{field}[{at}]: an empty path"))),
        None => Ok(()),
    }
}

pub(crate) fn expect_hash(hash: &str) -> Result<Expect, CallToolResult> {
    Expect::hash(hash).ok_or_else(|| failed("expect_hash: give the 64 hex digits fs_hash returned"))
}
