//! `keel mcp`: the MCP server of one agent session, on stdin and stdout.

use keel_journal::Policy;

use crate::{Failure, Location, Status};

/// Serves until the client disconnects. Everything the server reports goes to stderr: stdout is
/// the protocol's.
pub fn run(location: &Location) -> Result<Status, Failure> {
    let workspace = location.workspace()?;
    let policy = Policy::of_workspace(workspace.root()).map_err(crate::failure)?;
    let options = location.journal_options(&workspace)?;
    let agent = keel_hook::Agent::of_parent(std::os::unix::process::parent_id(), std::env::var("KEEL_OWNER").ok());
    let config = keel_mcp::Config { workspace, policy, options, agent };
    keel_mcp::serve_stdio(config).map_err(Failure::io)?;
    Ok(Status::Ok)
}
