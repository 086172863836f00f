//! `keel store ...`: the runtime store of worker events and transcripts (keel-store), under
//! the workspace's `.keel/store/` ([`keel_store::default_root`], as `keel mcp`'s fleet record).
//!
//! `--json` is the global output switch (handed in as `json`). Appends take the record as their
//! one positional argument, so `keel store event append --runtime R --json '{"k": 1}'` reads as
//! "print JSON" plus the record, and prints the stored event (with its id) as JSON. A record too
//! large for the command line comes from `--from FILE` or `--stdin` instead (as `keel fs write`
//! takes its content), read no further than the runtime's record limit.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use keel_kernel::json::to_line;
use keel_store::{EventCursor, FsRuntimeStore, StoreOptions};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Failure, Status, StdoutError};

// Names the runtime a command works on. (A plain comment, as on every flattened argument
// struct: see `Command` in main.rs.)
#[derive(Debug, Args)]
pub struct RuntimeArg {
    /// The runtime's id.
    #[arg(long)]
    runtime: String,
}

// Where an appended record comes from: exactly one of the argument, a file or standard input.
// (A plain comment, as on every flattened argument struct: see `Command` in main.rs.)
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RecordSource {
    /// The record, as JSON (invalid: exit 2). For one over about 128 KiB use --from or --stdin.
    #[arg(value_name = "JSON", allow_hyphen_values = true)]
    record: Option<String>,
    /// Read the record's JSON from this file (unreadable or invalid: exit 4).
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Read the record's JSON from standard input (invalid: exit 4).
    #[arg(long)]
    stdin: bool,
}

// Where a worker's create request comes from: at most one of the three (default `{}`). (A plain
// comment: see `RecordSource`.)
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct RequestSource {
    /// The create request, as JSON (default `{}`; invalid: exit 2).
    #[arg(long)]
    request: Option<String>,
    /// Read the create request's JSON from this file (unreadable or invalid: exit 4).
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Read the create request's JSON from standard input (invalid: exit 4).
    #[arg(long)]
    stdin: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum StoreCommand {
    /// Create a runtime (or open an existing one) and print it.
    Init {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// Its display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Add workers and set their status.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Append to the runtime's event log.
    #[command(subcommand)]
    Event(EventCommand),
    /// Read one page of events; `--from` takes the `next_event_id` of the previous page's cursor.
    Events {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The first event id to return (a cursor's `next_event_id`).
        #[arg(long)]
        from: Option<u64>,
        /// The most events to return (at least 1, at most the runtime's page limit).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Append to and read a worker's transcript.
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// Validate everything (snapshots, every log line, the index) and report; exit 0 only when clean.
    Check {
        #[command(flatten)]
        runtime: RuntimeArg,
    },
    /// List the damaged lines of a runtime's logs; --accept records that someone looked, so
    /// appends go on (the lines stay, and still read as damage).
    Review {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// Record that the lines were reviewed.
        #[arg(long)]
        accept: bool,
        /// Who reviewed them.
        #[arg(long, default_value = "operator", value_parser = crate::non_blank)]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum WorkerCommand {
    /// Create a worker (status `created`, empty transcript).
    Add {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The worker's id.
        #[arg(long)]
        worker: String,
        #[command(flatten)]
        request: RequestSource,
    },
    /// Set a worker's status (a word of [a-z0-9_-]).
    Status {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The worker's id.
        #[arg(long)]
        worker: String,
        /// The new status.
        #[arg(long = "set")]
        status: String,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum EventCommand {
    /// Append an event (durable when this exits 0); the store assigns its id.
    Append {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The worker the event is about.
        #[arg(long)]
        worker: Option<String>,
        #[command(flatten)]
        payload: RecordSource,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TranscriptCommand {
    /// Append an entry to a worker's transcript (durable when this exits 0).
    Append {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The worker's id.
        #[arg(long)]
        worker: String,
        #[command(flatten)]
        entry: RecordSource,
    },
    /// Read one page of a worker's transcript.
    Read {
        #[command(flatten)]
        runtime: RuntimeArg,
        /// The worker's id.
        #[arg(long)]
        worker: String,
        /// The first entry to return (0-based; a page's `next_start`).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// The most entries to return (at least 1, at most the runtime's page limit).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
}

fn parse_json(flag: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::usage(anyhow!("{flag} is not JSON: {e}")))
}

/// The JSON in `text`, in the file `from` or on standard input (`stdin`), whichever is given
/// (`None` if none is); `what` names it in errors. No more than `bytes_max` bytes (the runtime's
/// record limit: no record could hold more) are read from a file or standard input.
fn load_json(
    what: &str,
    text: Option<&str>,
    from: Option<&Path>,
    stdin: bool,
    bytes_max: u64,
) -> Result<Option<Value>, Failure> {
    let too_large = |source: &str| {
        Failure::usage(anyhow!("{what} from {source} is larger than {bytes_max} bytes, the runtime's record limit"))
    };
    let (bytes, source) = match (text, from) {
        (Some(text), _) => return parse_json(what, text).map(Some),
        (None, Some(path)) => match keel_fs::read_bounded(path, bytes_max) {
            Err(e) if keel_fs::is_too_large(&e) => return Err(too_large(&path.display().to_string())),
            read => (
                read.with_context(|| format!("reading {what} from {}", path.display())).map_err(Failure::io)?,
                path.display().to_string(),
            ),
        },
        (None, None) if stdin => {
            let mut bytes = Vec::new();
            let read = std::io::stdin().lock().take(bytes_max.saturating_add(1)).read_to_end(&mut bytes);
            read.with_context(|| format!("reading {what} from standard input")).map_err(Failure::io)?;
            if bytes.len() as u64 > bytes_max {
                return Err(too_large("standard input"));
            }
            (bytes, "standard input".to_owned())
        }
        (None, None) => return Ok(None),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Failure::io(anyhow!("{what} from {source} is not JSON: {e}")))
}

/// An appended record, from wherever `source` says.
fn load_record(what: &str, source: &RecordSource, bytes_max: u64) -> Result<Value, Failure> {
    let RecordSource { record, from, stdin } = source;
    load_json(what, record.as_deref(), from.as_deref(), *stdin, bytes_max)?
        .ok_or_else(|| Failure::usage(anyhow!("give {what} as JSON, --from FILE or --stdin")))
}

fn print<T: Serialize>(json: bool, value: &T, sentence: impl FnOnce() -> String) -> Result<(), StdoutError> {
    if json {
        outln!("{}", to_line(&serde_json::to_value(value).expect("store records serialise")))
    } else {
        outln!("{}", sentence())
    }
}

fn open(root: &Path, runtime: &RuntimeArg) -> Result<FsRuntimeStore, Failure> {
    FsRuntimeStore::open(root, &runtime.runtime).map_err(|error| match moved_from(root, &runtime.runtime, &error) {
        Some(old) => {
            let new = root.join("runtimes");
            let hint = format!(
                "it is in {}, where keel kept its store before .keel/store/; move the store there \
                 (`mv {} {}`, or each runtime's directory and .lock file if {} exists)",
                old.display(),
                old.display(),
                new.display(),
                new.display()
            );
            let failure = crate::failure(error);
            crate::Failure { error: anyhow::anyhow!("{}; {hint}", failure.error), ..failure }
        }
        None => crate::failure(error),
    })
}

/// Where an older keel kept the runtime `id` that `error` did not find: `runtimes/` at the
/// workspace root, before the store moved under `.keel/store/`.
fn moved_from(root: &Path, id: &str, error: &keel_store::StoreError) -> Option<std::path::PathBuf> {
    let keel_store::StoreError::Missing { runtime_id: Some(_), worker_id: None, .. } = error else { return None };
    let workspace = root.parent()?.parent()?;
    let old = keel_store::list_runtimes(workspace).ok()?;
    old.iter().any(|found| found == id).then(|| workspace.join("runtimes"))
}

/// Compact text for a JSON value in a listing.
fn brief(value: &Value) -> String {
    to_line(value)
}

/// Runs one `keel store` command against the store of the workspace at `workspace`; `json` is
/// the caller's global JSON switch (each command's own `--json` turns it on as well).
pub fn run(command: &StoreCommand, workspace: &Path, json: bool) -> Result<Status, Failure> {
    let root = &keel_store::default_root(workspace);
    match command {
        StoreCommand::Init { runtime, name } => {
            let root = keel_store::create_default_root(workspace).map_err(crate::failure)?;
            let mut options = StoreOptions::new(root, runtime.runtime.clone());
            options.display_name.clone_from(name);
            let store = FsRuntimeStore::open_or_create(&options).map_err(crate::failure)?;
            let state = store.load().map_err(crate::failure)?;
            print(json, &state.runtime, || {
                format!(
                    "runtime {:?} ({}) ready: {} workers, next event id {}",
                    state.runtime.runtime_id,
                    state.runtime.display_name,
                    state.workers.len(),
                    state.runtime.next_event_id
                )
            })?;
            Ok(Status::Ok)
        }
        StoreCommand::Worker(WorkerCommand::Add { runtime, worker, request }) => {
            let mut store = open(root, runtime)?;
            let RequestSource { request, from, stdin } = request;
            let bytes_max = store.limits().record_bytes_max;
            let request =
                load_json("the request", request.as_deref(), from.as_deref(), *stdin, bytes_max)?.unwrap_or(json!({}));
            let created = store.create_worker(worker, request).map_err(crate::failure)?;
            print(json, &created, || format!("created worker {worker:?} in runtime {:?}", runtime.runtime))?;
            Ok(Status::Ok)
        }
        StoreCommand::Worker(WorkerCommand::Status { runtime, worker, status }) => {
            let mut store = open(root, runtime)?;
            let updated = store.set_worker_status(worker, status).map_err(crate::failure)?;
            print(json, &updated, || format!("worker {worker:?} is now {status}"))?;
            Ok(Status::Ok)
        }
        StoreCommand::Event(EventCommand::Append { runtime, worker, payload }) => {
            let mut store = open(root, runtime)?;
            let payload = load_record("the event", payload, store.limits().record_bytes_max)?;
            let event = store.append_event(worker.as_deref(), payload).map_err(crate::failure)?;
            print(json, &event, || format!("appended event {}", event.id))?;
            Ok(Status::Ok)
        }
        StoreCommand::Events { runtime, from, limit } => {
            let store = open(root, runtime)?;
            let cursor = from.map(|next_event_id| EventCursor { runtime_id: runtime.runtime.clone(), next_event_id });
            let page_limit_max = store.limits().page_limit_max;
            let page = store.read_events(cursor.as_ref(), *limit, page_limit_max).map_err(crate::failure)?;
            if json {
                print(true, &page, String::new)?;
            } else {
                for event in &page.events {
                    let worker = event.worker_id.as_deref().unwrap_or("-");
                    outln!("{:<8} {worker:<16} {}", event.id, brief(&event.payload))?;
                }
                if page.has_more {
                    outln!("more: --from {}", page.cursor.next_event_id)?;
                } else {
                    outln!("end of log (next event id {})", page.cursor.next_event_id)?;
                }
            }
            Ok(Status::Ok)
        }
        StoreCommand::Transcript(TranscriptCommand::Append { runtime, worker, entry }) => {
            let mut store = open(root, runtime)?;
            let entry = load_record("the entry", entry, store.limits().record_bytes_max)?;
            let worker_ref = store.worker_ref(worker);
            let stored = store.append_transcript_entry(&worker_ref, entry).map_err(crate::failure)?;
            print(json, &stored, || format!("appended transcript entry {} for worker {worker:?}", stored.seq))?;
            Ok(Status::Ok)
        }
        StoreCommand::Transcript(TranscriptCommand::Read { runtime, worker, start, limit }) => {
            let store = open(root, runtime)?;
            let page_limit_max = store.limits().page_limit_max;
            let page = store
                .read_transcript(&store.worker_ref(worker), *start, *limit, page_limit_max)
                .map_err(crate::failure)?;
            if json {
                print(true, &page, String::new)?;
            } else {
                for item in &page.items {
                    outln!("{:<8} {}", item.seq, brief(&item.entry))?;
                }
                match page.next_start {
                    Some(next) => outln!("more: --start {next} ({} entries in all)", page.total_items)?,
                    None => outln!("end of transcript ({} entries)", page.total_items)?,
                }
            }
            Ok(Status::Ok)
        }
        StoreCommand::Review { runtime, accept, by } => {
            let store = open(root, runtime)?;
            let found = store.review(accept.then_some(by.as_str())).map_err(crate::failure)?;
            if json {
                let lines: Vec<Value> = found
                    .iter()
                    .map(|(path, d)| serde_json::json!({"path": path.display().to_string(), "line": d.line, "key": d.key, "excerpt": d.excerpt}))
                    .collect();
                outln!(
                    "{}",
                    to_line(&serde_json::json!({"damaged": lines, "accepted": *accept && !found.is_empty()}))
                )?;
            } else if found.is_empty() {
                outln!("no damaged lines")?;
            } else {
                for (path, d) in &found {
                    outln!("{} line {} (record {}): {:?}", path.display(), d.line, d.key, d.excerpt)?;
                }
                outln!(
                    "{}",
                    if *accept {
                        format!("recorded a review by {by:?}: appends go on")
                    } else {
                        "not reviewed: rerun with --accept --by NAME once these lines are understood".to_owned()
                    }
                )?;
            }
            Ok(Status::Ok)
        }
        StoreCommand::Check { runtime } => {
            let report = FsRuntimeStore::check(root, &runtime.runtime).map_err(crate::failure)?;
            let clean = report.is_clean();
            if json {
                let mut value = serde_json::to_value(&report).expect("reports serialise");
                value["clean"] = Value::Bool(clean);
                outln!("{}", to_line(&value))?;
            } else {
                outln!(
                    "runtime {:?}: {} events, {} workers, {} transcript entries: {}",
                    report.runtime_id,
                    report.events,
                    report.workers,
                    report.transcript_entries,
                    if clean { "clean" } else { "DAMAGED" }
                )?;
                for problem in &report.problems {
                    outln!("problem: {problem}")?;
                }
                for note in &report.notes {
                    outln!("note: {note}")?;
                }
            }
            Ok(if clean { Status::Ok } else { Status::Refused })
        }
    }
}
