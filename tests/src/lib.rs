//! keel's test kit: it makes journals and says what they mean without the kernel, so the kernel's
//! optimised replay can be checked against an independent answer.
//!
//! It never ships: no production crate depends on it, and nothing in it is tuned for anything but
//! being obviously right (the reference fold) or reproducible (the generator).
//!
//! # The model
//! - [`generate`] writes realistic lane journals, the way `dos-kernel` writes them, from a seed: the
//!   same seed gives the same bytes on every platform. Faults (corrupt and non-object lines, blank
//!   lines, torn tails, odd payloads) are opt-in, kind by kind ([`generate::Faults`]).
//! - [`reference`](mod@reference) folds a journal straight from `journal-format-v1.md` with the simplest data
//!   structures there are: a `Vec` searched linearly, a `BTreeMap` of generations, one
//!   `serde_json::Value` per line. It shares with the kernel only the spec's definitions of Python
//!   values (`identity_text`, `seq_number`, `truthy`), never its fold.
//! - [`diff`] runs the kernel and the reference over one journal and names the first difference.
//!
//! # Limitations
//! - The reference is quadratic in the live set; it is meant for journals of thousands of
//!   records, not millions (the generator's streaming form is for the benchmark, not for it).
//! - `gen` is a reserved word in Rust 2024, so the generator's module is [`generate`].
//!
//! # Example
//! ```
//! use keel_tests::{diff, generate::{self, Faults, GenOptions}};
//!
//! let options = GenOptions { faults: Faults::all(50), ..GenOptions::default() };
//! let journal = generate::journal(7, 500, &options);
//! assert_eq!(journal, generate::journal(7, 500, &options), "same seed, same bytes");
//! let folded = keel_tests::reference::replay(&journal);
//! assert!(folded.next_seq() > 1);
//! // Known kernel bugs aside (see `diff`), the kernel agrees with the reference:
//! let clean = GenOptions::default();
//! diff::check(&generate::journal(7, 500, &clean), 7).expect("kernel and reference agree");
//! ```

pub mod diff;
pub mod etcd_cluster;
pub mod generate;
pub mod reference;
