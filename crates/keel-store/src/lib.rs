//! keel's filesystem runtime store: the durable record of what a fleet's workers did (one
//! runtime, its workers, an event log per runtime, a transcript per worker), read back page by
//! page with cursors whose cost does not grow with the log.
//!
//! It never decides what an event means, never rewrites an acknowledged record, never builds a
//! path from an id without encoding it, and never trusts derived data (the offset index, the
//! counters in snapshots) without checking it against the log. All disk access goes through
//! keel-fs: atomic write, durable append and line reading over its `Storage` seam, which every
//! other file operation (directories, renames, cutting off a torn tail, the index) goes through
//! too, so that tests can fail any operation or cut the power before it; only the writer lock
//! is always a real [`keel_fs::OsLock`].
//!
//! # Layout
//! A workspace's store root is `<workspace>/.keel/store/` ([`default_root`]; keel's CLI and MCP
//! server use it); a library user may open a store under any root.
//! ```text
//! <root>/runtimes/<enc(runtime id)>.lock           writer lock (flock; dies with its holder)
//! <root>/runtimes/<enc(runtime id)>/runtime.json   snapshot, schema version 1
//!                                   events.jsonl   one event per line, ids 1, 2, 3, ...
//!                                   events.idx     offset index (derived)
//!                                   workers/<enc(worker id)>/worker.json
//!                                                            transcript.jsonl   seq 0, 1, 2, ...
//!                                                            transcript.idx
//! ```
//! `enc(id)` is `id-` + lowercase hex of the id's bytes ([`encode_id`]): no id can escape its
//! directory or collide with another on a case-insensitive file system.
//!
//! # Model
//! - [`FsRuntimeStore::open_or_create`] creates a runtime atomically (built under a temporary
//!   name, renamed in) or opens one, validating snapshots, placement and every log's tail. Each
//!   constructor has a `_with` twin ([`FsRuntimeStore::open_or_create_with`],
//!   [`FsRuntimeStore::open_with`], [`FsRuntimeStore::check_with`]) taking the
//!   [`keel_fs::Storage`] to work through; the plain ones use the real file system.
//! - Changes ([`create_worker`](FsRuntimeStore::create_worker),
//!   [`set_worker_status`](FsRuntimeStore::set_worker_status),
//!   [`append_event`](FsRuntimeStore::append_event),
//!   [`append_transcript_entry`](FsRuntimeStore::append_transcript_entry)) run under the
//!   runtime's writer lock and return only once durable: snapshots by atomic write with file and
//!   directory fsync, records by one `write` + `fdatasync`.
//! - Reads ([`read_events`](FsRuntimeStore::read_events),
//!   [`read_transcript`](FsRuntimeStore::read_transcript), [`load`](FsRuntimeStore::load)) take
//!   no lock and seek through the index.
//! - A crash mid-append leaves a torn final line: tolerated by every reader, cut off (with a
//!   diagnostic in `runtime.json` quoting it) by the next append. A bad line with lines after
//!   it is corruption, reported as [`StoreError::Corrupt`] with its line number.
//! - [`FsRuntimeStore::check`] reads everything and reports damage.
//!
//! # Limitations
//! Opening validates each log's tail, not every record (that is what keeps reopening a large
//! store cheap); reads validate what they return and `check` validates everything. A reader
//! racing the one append that cuts off a torn tail may see a spurious error; retrying succeeds.
//! An index entry damaged in the middle, or an index holding entries past the end of its log, is
//! not rewritten (reads near it fall back to an earlier entry or a scan, so they stay correct). Linux and local file systems (see keel-fs).
//!
//! # Example
//! ```
//! use keel_store::{FsRuntimeStore, StoreOptions};
//! use serde_json::json;
//! # let dir = tempfile::tempdir()?;
//! let mut store = FsRuntimeStore::open_or_create(&StoreOptions::new(dir.path(), "run-1"))?;
//! store.create_worker("w1", json!({"task": "lint"}))?;
//! for n in 0..3 {
//!     store.append_event(Some("w1"), json!({"step": n}))?;
//! }
//! let first = store.read_events(None, 2, 100)?;
//! assert_eq!(first.events.len(), 2);
//! assert!(first.has_more);
//! let rest = store.read_events(Some(&first.cursor), 2, 100)?;
//! assert_eq!(rest.events[0].payload, json!({"step": 2}));
//! assert!(!rest.has_more);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod disk;
pub mod error;
pub mod id;
pub mod log;
pub mod model;
pub mod store;

pub use error::{Result, StoreError};
pub use id::{ID_BYTES_MAX, IdError, decode_id, encode_id};
pub use log::INDEX_EVERY_RECORDS;
pub use model::{
    Diagnostic, Event, EventCursor, EventPage, Limits, PAGE_LIMIT_CEILING, RuntimeSnapshot, SCHEMA_VERSION, StoreState,
    TranscriptEntry, TranscriptPage, WorkerRef, WorkerSnapshot,
};
pub use store::{
    CheckReport, FsRuntimeStore, STORE_DIR_DEFAULT, StoreOptions, create_default_root, create_default_root_with,
    default_root, list_runtimes, list_runtimes_with,
};
