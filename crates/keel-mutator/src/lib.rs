//! The write gate: an agent's write, delete or rename of a workspace file lands only if its lease
//! covers the path, its fencing generation is still the live one, and the file is what the agent
//! last read; then it lands atomically and durably, exactly once per intent.
//!
//! It never grants or changes a lease (the journal does), never decides who may write (the
//! kernel's pure [`keel_kernel::gate::decide`] does), never follows a symlink beneath the root,
//! and never advances a generation or counter: a refused call changes nothing.
//!
//! # The model
//! - A [`Mutator`] serves one workspace root and one lease [`Journal`](keel_journal::Journal).
//!   Each operation takes the mutator lock (`<root>/.keel/mutator.lock`), reads the journal's
//!   live leases and asks the gate; only then is the intent recorded in the mutation log
//!   (`<root>/.keel/mutations.jsonl`, durable JSON lines) and each step logged as it completes:
//!   checked, temporary file created, renamed, directory synced, complete.
//! - A [`Request`] names the holder's lease and generation, the [`Expect`]ed pre-state (a blake3
//!   hash, absent, or any) and an [`IntentId`]. The answer is an [`Outcome`]: `Written`,
//!   `Deleted`, `Renamed`, `Duplicate` (this intent already applied), `Forbidden`,
//!   `StaleGeneration`, `PreconditionFailed` or `InodeSwapped`. Errors ([`MutateError`]) are
//!   for I/O and misuse (an intent id reused for a different request).
//! - The gate is asked twice: before anything is recorded, and right before the commit, after
//!   the temporary file is durable; the target's device and inode and the path's directory are
//!   checked again at that point too.
//! - [`Mutator::open`] (and every operation) rolls incomplete intents forward (their effect
//!   happened) or back (their temporary or trash file removed), so a retry after `kill -9`
//!   at any step has exactly one effect.
//! - A whole log line that is not a record (damage, not a torn tail, which is cut off) stops
//!   every operation with [`MutateError::LogDamaged`] until [`Mutator::review_log`] records an
//!   operator's review: a lost `intent` line would otherwise let a retry apply twice.
//!
//! # Limitations
//! - A window of a few system calls remains between the commit-time checks and the `rename`:
//!   the journal's writer lock is not held across it, and a process that ignores keel can still
//!   swap the file in that window. It cannot redirect keel outside the root through a symlink:
//!   every `*at()` call goes through the parent directory held open and never follows one. It
//!   can move that directory itself out of the root during the commit; the write then lands in
//!   the directory it was checked in, now outside, as it would have had the move come a moment
//!   later (a race sweep saw this in 3 of 1,500 writes against a mover). Keeping the workspace
//!   from processes that ignore keel is not this crate's job.
//! - Paths are UTF-8 and workspace-relative; parent directories must exist (no implicit mkdir).
//! - A workspace is bound to the lease journal its first mutator used
//!   ([`JOURNAL_BINDING_NAME`]): a stale copy or another journal would let a released
//!   generation pass the gate, so opening with one is [`MutateError::JournalMismatch`]. A
//!   journal kept in the workspace (outside `.keel/`) is protected with its sibling files.
//! - Only regular files: a directory, FIFO or device at the path is an error.
//! - Every step is an `fdatasync` of the log: durability first; `cargo xtask bench` reports the
//!   cost against a plain atomic write.
//!
//! # Example
//! ```
//! use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend, LeaseRef};
//! use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Outcome, Request};
//!
//! let root = tempfile::tempdir()?;
//! std::fs::create_dir(root.path().join("src"))?;
//! let journal = Journal::open(&root.path().join(".keel-journal.jsonl"), JournalOptions::default());
//! let mutator = Mutator::open(root.path(), journal, MutatorOptions::default())?;
//!
//! let lease = AcquireRequest { lane: "api".into(), tree: vec!["src/".into()], owner: "agent-a".into(), ..Default::default() };
//! let AcquireOutcome::Acquire(grant) = mutator.journal().acquire(&lease)? else { panic!("an empty journal grants") };
//!
//! let request = Request::for_grant(&grant, "agent-a", Expect::Absent, IntentId::new("w1")?);
//! assert!(matches!(mutator.write("src/lib.rs", b"fn main() {}\n", &request)?, Outcome::Written { .. }));
//! // A retry of the same intent does nothing twice.
//! assert!(matches!(mutator.write("src/lib.rs", b"fn main() {}\n", &request)?, Outcome::Duplicate { .. }));
//! // Outside the lease tree: refused, naming the tree.
//! let outside = Request { intent: IntentId::new("w2")?, ..request.clone() };
//! assert!(matches!(mutator.write("README.md", b"x", &outside)?, Outcome::Forbidden { .. }));
//!
//! mutator.journal().release(&LeaseRef::lane("api"), "agent-a")?;
//! let late = Request { intent: IntentId::new("w3")?, expect: Expect::Any, ..request };
//! assert!(matches!(mutator.write("src/lib.rs", b"late", &late)?, Outcome::StaleGeneration { live: None, .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod error;
pub mod log;
pub mod mutator;
pub mod request;

pub use error::MutateError;
pub use log::{Damage, DamagedLine};
pub use mutator::{
    CONTENT_BYTES_MAX_DEFAULT, JOURNAL_BINDING_NAME, LOCK_NAME, LOG_NAME, Mutator, MutatorOptions, Point, Recovery,
    STATE_DIR, StepHook, hash_path,
};
pub use request::{DirSyncStatus, Expect, INTENT_BYTES_MAX, IntentId, Op, Outcome, PreState, Request, content_hash};
