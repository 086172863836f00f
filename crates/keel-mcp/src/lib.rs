//! keel as an MCP server: an agent's harness starts `keel mcp` once per session, and the agent
//! claims regions, checks an edit before making it, writes through the fenced gate, and keeps a
//! shared record of what it did, all as MCP tools over stdio.
//!
//! It never decides anything itself: leases are the lease backend's, edit checks are `keel hook`'s
//! ([`keel_hook::decide::check`]), writes are the mutator's gate, events the runtime store's.
//! It never exits, panics or drops a lease over a bad call: a bad call is a tool result with
//! `isError: true` naming the field or file.
//!
//! # The model
//! - One server per agent session. The agent is its parent process, found as `keel hook` finds
//!   it ([`keel_hook::Agent`]; `KEEL_OWNER` overrides the name), so a lease taken here is the
//!   agent's own for its hook too, and becomes reclaimable past the grace once the agent is gone.
//! - Leases taken through the server are beaten every [`BEAT_EVERY_S`] seconds (or a quarter of
//!   their TTL or grace, if shorter) while the client is connected, and given back when it
//!   disconnects (policy `mcp_release_on_exit = false` keeps them until their TTL).
//! - A refusal (a lease held by another agent, a write the gate refuses) is an answer, not an
//!   error: a normal result whose `granted`/`outcome` says so, with who and what to do.
//!
//! # Limitations
//! - One lease service per server: the workspace's journal ([`serve_stdio`]), or any other
//!   [`LeaseBackend`] (etcd's, say) through [`serve_stdio_with`].
//! - The fleet's record is the runtime store's runtime [`FLEET_RUNTIME`] in the workspace's
//!   store (`.keel/store/`, [`keel_store::default_root`], where `keel store` reads it), one
//!   worker per agent owner.

#![forbid(unsafe_code)]

mod args;
mod frame;
mod server;

pub use frame::MESSAGE_BYTES_MAX;
pub use server::{BEAT_EVERY_S, FLEET_RUNTIME, Server, WAIT_S_MAX};

/// The largest file `fs_write` writes, in bytes: source files, with room to spare. The server
/// holds a whole message in memory, so its content is bounded well below the mutator's default.
pub const FS_WRITE_BYTES_MAX: usize = 8 * 1024 * 1024;

use std::sync::Arc;

use keel_hook::Agent;
use keel_journal::{JournalOptions, LeaseBackend, Policy, Workspace};

/// What a server serves: the workspace, its policy, and the agent it speaks for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The workspace (its checkout and journal).
    pub workspace: Workspace,
    /// The workspace's policy.
    pub policy: Policy,
    /// The lease service's options (from the policy).
    pub options: JournalOptions,
    /// The agent.
    pub agent: Agent,
}

/// Why the server stopped other than by its client disconnecting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The async runtime could not start.
    #[error("keel mcp: starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The MCP session failed to start (the client's `initialize` never came or was malformed).
    #[error("keel mcp: the MCP session did not start: {0}")]
    Initialize(String),
    /// The session ended with a transport error.
    #[error("keel mcp: the MCP session failed: {0}")]
    Session(String),
}

/// What the server did in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The leases given back when the client disconnected.
    pub released: usize,
}

/// Serves one MCP session on stdin and stdout until the client disconnects, then gives back the
/// session's leases (unless the policy keeps them), on the workspace's journal.
pub fn serve_stdio(config: Config) -> Result<Served, ServeError> {
    let journal = keel_journal::Journal::open(config.workspace.journal(), config.options.clone());
    serve_stdio_with(config, journal)
}

/// [`serve_stdio`] on `backend` (another lease service, say etcd), which the tools and the write
/// gate share.
///
/// `backend` is dropped only after the server's runtime has stopped, outside it: a backend may
/// own a runtime of its own (etcd's does), and tokio refuses to drop one inside another.
pub fn serve_stdio_with<B>(config: Config, backend: B) -> Result<Served, ServeError>
where
    B: LeaseBackend + Send + Sync + 'static,
{
    let backend = Arc::new(backend);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Runtime)?;
    let served = runtime.block_on(async {
        let server = Server::with_backend(config, Arc::clone(&backend));
        let beats = tokio::spawn(server.clone().beat_forever());
        // When stdin and stdout are pipes (as harnesses start servers), they are read and written
        // on the reactor rather than through a thread hand-off per operation.
        let (input, output) = rmcp::transport::stdio_pipes();
        let (pipes, framing) = frame::frame(input, output);
        let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(pipes.0, pipes.1)
            .with_max_line_length(MESSAGE_BYTES_MAX);
        let session =
            rmcp::ServiceExt::serve(server.clone(), transport).await.map_err(|e| ServeError::Initialize(e.to_string()));
        let ended = match session {
            Ok(running) => running.waiting().await.map(drop).map_err(|e| ServeError::Session(e.to_string())),
            Err(error) => Err(error),
        };
        beats.abort();
        let released = server.end_session();
        // The last answers reach the client before the process exits.
        let flushed = framing
            .await
            .map_err(|e| ServeError::Session(e.to_string()))
            .and_then(|r| r.map_err(|e| ServeError::Session(e.to_string())));
        ended.and(flushed).map(|()| Served { released })
    });
    // Tasks still holding a server clone go with the runtime; `backend`'s last handle is this one.
    drop(runtime);
    drop(backend);
    served
}
