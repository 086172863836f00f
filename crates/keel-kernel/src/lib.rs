//! The pure core of keel: lease admission, journal replay, compaction, fencing generations and
//! expiry, as functions from data to data.
//!
//! It never does I/O: no `std::fs`, no clock, no process table, no threads, no `unsafe`. Time and
//! facts about processes arrive as arguments, so every decision is deterministic and the crate can
//! be vendored alone. A tidy test in `cargo xtask ci` enforces that.
//!
//! # The model
//! - A journal is JSON lines ([`line`](mod@line)); a [`Replay`] folds them into a [`LiveState`]: the live
//!   leases in first-acquired order, their [`Generation`]s (fencing tokens) and `next_seq`.
//!   [`LiveState::compact`] turns the state back into records that replay to the same state.
//! - [`arbiter::decide`] admits or refuses a [`Request`] against the live leases under a
//!   [`Taxonomy`]; every refusal names the lease that blocked it.
//! - [`expiry::assess`] says whether a lease is provably dead.
//!
//! The formats are those of the Python `dos-kernel` package (journal format v1, arbiter v1), with
//! the deliberate deviations those specs list.
//!
//! # Limitations
//! - Lease bodies are `serde_json` objects: members keep their values and numbers keep their digits
//!   (`arbitrary_precision`), but not the body's byte spelling (key order becomes sorted, white
//!   space and escapes are rewritten).
//! - `NaN`, `Infinity` and `-Infinity`, which Python's `json` reads and writes, are not JSON: a
//!   line holding one is corrupt here.
//! - Case folding follows the Unicode tables of the `caseless` crate, which may be a newer Unicode
//!   version than the Python that wrote a journal; they differ only on newly assigned characters.
//!
//! # Example
//! ```
//! use keel_kernel::{replay_bytes, arbiter::{decide, Request, Taxonomy, Outcome}};
//!
//! let journal = br#"{"op": "ACQUIRE", "loop_ts": "t1", "lane": "db", "seq": 1, "lease": {"lane": "db", "loop_ts": "t1", "lane_kind": "keyword", "tree": ["src/db/"]}}
//! "#;
//! let state = replay_bytes(journal).state;
//! let request = Request { lane: "api".into(), kind: "keyword".into(), tree: vec!["src/".into()], ..Request::default() };
//! let decision = decide(&request, state.live(), &Taxonomy::default());
//! assert_eq!(decision.outcome, Outcome::Refuse);
//! assert_eq!(decision.blocking.unwrap().lane, "db");
//! assert_eq!(state.next_seq(), 2);
//! ```

#![forbid(unsafe_code)]

pub mod admission;
pub mod arbiter;
pub mod audit;
pub mod expiry;
pub mod gate;
pub mod json;
pub mod line;
pub mod merge;
pub mod record;
pub mod replay;
mod scan;
pub mod tree;
pub mod value;

pub use arbiter::{Decision, Request, Taxonomy};
pub use replay::{
    GENERATION_WATERMARK, Generation, Identity, LiveState, ParsedChunk, Replay, Replayed, replay_bytes, replay_records,
};
pub use value::Object;
