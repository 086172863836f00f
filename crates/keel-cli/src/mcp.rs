//! `keel mcp`: the MCP server of one agent session, on stdin and stdout, on the workspace's lease
//! service (its journal, or etcd).

use crate::{Failure, Location, Status};

/// Serves until the client disconnects. Everything the server reports goes to stderr: stdout is
/// the protocol's.
pub fn run(location: &Location) -> Result<Status, Failure> {
    let workspace = location.workspace()?;
    let policy = crate::backend::policy(&workspace)?;
    let (backend, _) = location.backend_with(&workspace, &policy)?;
    let options = backend.options().clone();
    let agent = keel_hook::Agent::of_parent(std::os::unix::process::parent_id(), std::env::var("KEEL_OWNER").ok());
    let config = keel_mcp::Config { workspace, policy, options, agent };
    keel_mcp::serve_stdio_with(config, backend).map_err(Failure::io)?;
    Ok(Status::Ok)
}
