//! The durable lane-lease service over a journal file: several processes on one machine take and
//! give back leases over regions of a workspace through one append-only journal, and no crash,
//! race or bad byte yields two holders of a colliding region or loses an acknowledged grant.
//!
//! It never decides admission itself (that is the kernel's arbiter, [`keel_kernel::arbiter`] and
//! [`keel_kernel::admission`]). The journal's own I/O goes through `keel-fs`'s storage seam; the
//! workspace and policy readers read their small files directly, and `/proc` tells whether a
//! holder process still runs.
//!
//! # The model
//! - [`LeaseBackend`] is what a lease service does; callers are written against it. [`Journal`]
//!   implements it over one file, and runs every state change under the journal's writer lock (an OS lock that dies
//!   with its holder): fold to the end of the journal, decide, append with one write and one
//!   fdatasync, release. A grant is acknowledged only once its record is durable.
//! - Cost is independent of history: the fold resumes from an in-process cache or a validated
//!   head snapshot, and the journal is compacted in place once it passes a size threshold.
//! - [`read`] replays a whole journal file fast, parsing on every core; [`follow`] reads only
//!   what was appended since the last look, for a live view of the fleet.
//!
//! # Example
//! ```
//! use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend, LeaseRef};
//! let dir = tempfile::tempdir()?;
//! let journal = Journal::open(&dir.path().join("lane-journal.jsonl"), JournalOptions::default());
//! let request = AcquireRequest { lane: "api".into(), tree: vec!["src/api/".into()], owner: "agent-a".into(), ..Default::default() };
//! let AcquireOutcome::Acquire(grant) = journal.acquire(&request)? else { panic!("an empty journal grants") };
//! assert_eq!(grant.generation, 1);
//! let second = AcquireRequest { lane: "handlers".into(), tree: vec!["src/api/handlers.rs".into()], owner: "agent-b".into(), ..Default::default() };
//! assert!(matches!(journal.acquire(&second)?, AcquireOutcome::Refuse { .. }));
//! assert!(journal.release(&LeaseRef::lane("api"), "agent-a")?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod backend;
pub mod follow;
pub mod granting;
pub mod holding;
pub mod policy;
pub mod process;
pub mod read;
pub mod service;
pub mod verify;
pub mod workspace;

pub use backend::{LeaseBackend, LeaseRef, Location};
pub use policy::{BackendKind, BackendPolicy, BashRule, OnError, Policy, PolicyError};
pub use read::{ReadOutcome, replay_from, replay_path, replay_path_or_empty};
pub use service::{
    Accepted, AcquireOutcome, AcquireRequest, Adopted, Beat, Clock, Compaction, Grant, HolderPid, Journal,
    JournalError, JournalOptions, LiveLease, LiveView, STATE_DIR, Stats, Stopped, system_clock,
};
pub use workspace::{Named, Workspace, WorkspaceError};
