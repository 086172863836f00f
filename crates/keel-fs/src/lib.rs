//! keel's only contact with the disk: reading JSON lines with their offsets (and, as the durable
//! lease layer lands, atomic write, durable append, locks and confined paths).
//!
//! It never decides anything: what a line means, who may hold a lease and what a record says are
//! the kernel's. Every error names the operation and the path.
//!
//! # Example
//! ```no_run
//! use keel_fs::LineReader;
//! let mut reader = LineReader::open(std::path::Path::new(".keel/lane-journal.jsonl"))?;
//! while let Some(line) = reader.next_line()? {
//!     println!("{} bytes at offset {}", line.bytes.len(), line.offset);
//! }
//! # Ok::<(), keel_fs::FsError>(())
//! ```

#![forbid(unsafe_code)]

pub mod error;
pub mod lines;

pub use error::{FsError, Result};
pub use lines::{LINE_BYTES_MAX_DEFAULT, Line, LineReader};
