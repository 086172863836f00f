//! keel's only contact with the disk: atomic write, durable append, JSON-lines reading, locks and
//! confined path resolution, each behind an I/O seam that tests can fail or crash.
//!
//! It never decides anything: what a line means, who may hold a lease and what a record says
//! are the kernel's. It never retries an `fsync` error into a success, never truncates a
//! journal, and never follows a symlink beneath a workspace root. Every error names the
//! operation and the path.
//!
//! # Modules
//! - [`atomic`]: [`write_atomic`] replaces a file so that readers and crashes see old or new,
//!   never a mix (temp + fsync + rename + directory fsync, mode kept).
//! - [`append`]: [`Appender`] appends newline-terminated records with one `write` and one
//!   `fdatasync` each, repairs a torn tail with a newline, and latches failed on any I/O error.
//! - [`file`](mod@file): the small whole-file operations other crates need, so none calls `std::fs`:
//!   [`read_bounded`] and [`read_to_string_bounded`] (refuse a file over a limit),
//!   [`create_dir_all`], [`remove_dir_all`], [`set_mode`], [`open_read`], and [`publish_once`]
//!   (a file written only if the name is free, by hard link).
//! - [`lines`]: [`LineReader`] streams lines with their byte offsets in bounded memory.
//! - [`lock`]: [`OsLock`] (dies with its holder), [`ExclusiveFileLock`] (`O_EXCL`, stale
//!   steal by compare-and-swap) and [`SidecarDirLock`] (`<path>.lock/` directory).
//! - [`resolve`]: [`Root::resolve`] opens the parent of a relative path beneath a root, refusing
//!   escapes and symlinks.
//! - [`seam`]: the [`Storage`] trait that atomic write and append go through, with the real
//!   [`OsStorage`], and for tests (the `testing` feature) the fault injector `FailAfter` and the
//!   power-loss simulator `CrashSim`.
//!
//! # Limitations
//! Linux first: `openat2`, `renameat2(RENAME_NOREPLACE)` and `flock` are used as Linux provides
//! them. Durability assumes the disk honours `fsync` (see [`seam`] for the full list of
//! assumptions). File-based locks trust wall clocks; see [`lock`].
//!
//! # Example
//! ```
//! use keel_fs::{Appender, OsLock, LineReader, write_atomic};
//! # let dir = tempfile::tempdir()?;
//! # let root = dir.path();
//! let journal = root.join("journal.jsonl");
//! let _writer = OsLock::try_acquire(&OsLock::path_for(&journal))?;
//! let mut appender = Appender::open(&journal)?;
//! let report = appender.append(br#"{"op":"acquire"}"#)?;
//! assert_eq!((report.record_offset, report.offset_after), (0, 17));
//!
//! write_atomic(&root.join("head.json"), br#"{"seq":1}"#)?;
//!
//! let mut reader = LineReader::open(&journal)?;
//! let line = reader.next_line()?.expect("one record");
//! assert_eq!(line.bytes, br#"{"op":"acquire"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod append;
pub mod atomic;
pub mod error;
pub mod file;
pub mod lines;
pub mod lock;
mod nonce;
pub mod resolve;
pub mod seam;

pub use append::{AppendReport, Appender, RECORD_BYTES_MAX, append_record, append_record_with};
pub use atomic::{
    SYMLINK_HOPS_MAX, WriteReport, remove_stale_temporaries, resolve_symlinks, write_atomic, write_atomic_with,
};
pub use error::{ErrorKind, FsError, Result};
pub use file::{
    create_dir_all, is_too_large, open_read, publish_once, read_bounded, read_to_string_bounded, remove_dir_all,
    set_mode,
};
pub use lines::{LINE_BYTES_MAX_DEFAULT, Line, LineReader, Skipped};
pub use lock::{ExclusiveFileLock, OsLock, Release, ReusableLock, SidecarDirLock};
pub use resolve::{ResolveError, Resolved, Root, canonicalize};
#[cfg(any(test, feature = "testing"))]
pub use seam::{CrashSim, FailAfter};
pub use seam::{DirSync, OsStorage, Storage};
