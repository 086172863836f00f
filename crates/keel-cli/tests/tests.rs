//! The `keel` binary end to end, one test binary: each module runs the shipped command line the
//! way a user, an agent harness or git does, in workspaces of its own.

mod support;

mod cli;
mod docs_and_diagnostics;
// Against a real etcd server: only in a build with the etcd backend.
#[cfg(feature = "etcd")]
mod etcd_cli;
mod fs_cli;
mod hook;
mod journal_cli;
mod lock_cli;
mod mcp;
mod no_wedges;
mod output_and_status;
mod policy;
mod readme;
mod readonly_cli;
mod store_cli;
mod top;
mod two_holders;
