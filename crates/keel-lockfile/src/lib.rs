//! Shared JSON documents that many processes update at once without losing each other's work:
//! the section-preserving [`Lockfile`] (seed 001) and the generation-checked [`ConfigStore`]
//! (seed 003).
//!
//! It never decides how documents merge (that is `keel_kernel::merge`, pure), never writes a file
//! it could not parse, never leaves a torn document (every write is keel-fs's atomic write, with
//! file and directory fsync), and never removes a lock it does not hold.
//!
//! # The model
//! - [`Lockfile`]: one JSON object of `lock_version`, an optional `inputs_digest` and opaque
//!   sections owned by independent tools. A handle stages sections in memory;
//!   [`Lockfile::flush`] takes the sidecar-directory lock `<path>.lock/` (the seed-001 protocol
//!   of `keel_fs::SidecarDirLock`, so other tools speaking it exclude keel and vice versa),
//!   re-reads the file, re-applies only its staged keys and writes atomically.
//! - [`ConfigStore`]: a config object and its generation in one file. [`ConfigStore::set`] and
//!   [`ConfigStore::patch`] (RFC 7386) take an expected generation and fail with
//!   [`ConfigError::GenerationConflict`] when it is stale. Writers serialize under a
//!   `keel_fs::OsLock`, which dies with its holder.
//!
//! # Limitations
//! - Documents are `serde_json` values: a rewrite keeps every key and value, not the bytes (keys
//!   come out sorted and pretty-printed; integers beyond 64 bits and floats keep `f64` precision).
//! - The sidecar lock judges staleness by wall clocks ([`LockfileOptions::stale_ttl_s`]); a flush
//!   that outlives the TTL may lose its lock, which it reports as [`LockfileError::LockLost`].
//! - Reads go through keel-fs's I/O seam, which opens files read-write: the documents and their
//!   directory must be writable by readers too.
//!
//! # Example
//! ```
//! use keel_lockfile::{ConfigStore, Lockfile};
//! use serde_json::json;
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("keel.lock.json");
//! let ours = Lockfile::open(&path)?;
//! let theirs = Lockfile::open(&path)?;
//! ours.set_section("keel", &json!({"lanes": 3}))?;
//! theirs.set_section("other-tool", &json!(["x"]))?;
//! ours.flush()?;
//! theirs.flush()?; // merges into the file as it is now: "keel" survives
//! let reread = Lockfile::open(&path)?;
//! assert_eq!(reread.section::<serde_json::Value>("keel")?, Some(json!({"lanes": 3})));
//! assert_eq!(reread.section::<Vec<String>>("other-tool")?, Some(vec!["x".to_owned()]));
//!
//! let config = ConfigStore::open(dir.path().join("config.json"));
//! let first = config.set(json!({"mode": "fast"}), Some(0))?;
//! assert_eq!(first.generation, 1);
//! let stale = config.patch(&json!({"mode": "slow"}), Some(0));
//! assert!(matches!(stale, Err(keel_lockfile::ConfigError::GenerationConflict { expected: 0, current: 1, .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod lock;
pub mod lockfile;
mod read;

pub use config::{CONFIG_VERSION, ConfigOptions, ConfigStore, Snapshot};
pub use error::{ConfigError, LockfileError};
pub use lock::{LOCK_BACKOFF_MS_MAX, acquire_sidecar};
pub use lockfile::{DOCUMENT_BYTES_MAX_DEFAULT, FlushReport, Lockfile, LockfileOptions};
