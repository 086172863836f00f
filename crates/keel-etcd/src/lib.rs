//! keel's lease backend on etcd v3, for fleets that span hosts: the same kernel arbiter, the same
//! write gate, with etcd serialising the grants and its revisions fencing them.
//!
//! It never decides who may hold a lease (the kernel's arbiter does, over the leases read at one
//! revision), never trusts a client's clock for expiry (etcd's leases do, on the leader's
//! clock), and never guesses: when no member answers, an operation fails with
//! [`JournalError::Unavailable`](keel_journal::JournalError::Unavailable).
//!
//! # The model
//! - One key per lease under the workspace's prefix ([`keys`]), bound to an etcd lease with the
//!   lease's TTL; holders keep it alive (`heartbeat`), and etcd deletes it when they stop.
//! - A grant reads the state at revision R, asks the kernel, and commits in one transaction
//!   guarded by "nothing under the state prefix written after R", which also bumps the
//!   generation counter: generations are unique and rising across the cluster.
//! - Each request goes to the member that answered last, then to the others, with a timeout
//!   each; a grant whose answer was lost is found again by the request id stored with it.

#![forbid(unsafe_code)]

mod backend;
pub mod keys;
mod remote;

pub use backend::{EtcdBackend, EtcdOptions, MOVED_LANE, Migrated, STATE_KEYS_MAX};
pub use remote::ENDPOINTS_MAX;
