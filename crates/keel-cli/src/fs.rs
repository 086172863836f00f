//! `keel fs ...`: write, delete and rename workspace files through the lease gate, and hash them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Subcommand;
use keel_journal::Workspace;
use keel_kernel::gate::Holder;
use keel_kernel::json::to_line;
use keel_mutator::{CONTENT_BYTES_MAX_DEFAULT, Expect, IntentId, Mutator, MutatorOptions, Outcome, PreState, Request};
use serde_json::json;

use crate::{Failure, Location, Status, StdoutError};

// The pre-state the caller last read: exactly one is required. (A plain comment, as on every
// flattened argument struct: see `Command` in main.rs.)
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ExpectArgs {
    /// The blake3 hash of the content last read (as `keel fs hash` prints it).
    #[arg(long = "expect-hash", value_name = "HASH")]
    hash: Option<String>,
    /// The file must not exist.
    #[arg(long = "expect-absent")]
    absent: bool,
    /// Any content (an explicit choice to skip the check).
    #[arg(long = "expect-any")]
    any: bool,
}

// Whose lease, which fencing token, what was read, which intent. (A plain comment, as on every
// flattened argument struct: see `Command` in main.rs.)
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// Who holds the lease.
    #[arg(long)]
    owner: String,
    /// The lease's lane.
    #[arg(long)]
    lane: String,
    /// The lease's exact loop timestamp (default: the owner's newest lease on the lane).
    #[arg(long)]
    loop_ts: Option<String>,
    /// The generation the lease was granted (its fencing token).
    #[arg(long)]
    generation: u64,
    #[command(flatten)]
    expect: ExpectArgs,
    /// The intent id: a retry with the same id has one effect (default: a fresh id).
    #[arg(long)]
    intent: Option<String>,
}

// Where the new content comes from: exactly one is required. (A plain comment, as on every
// flattened argument struct: see `Command` in main.rs.)
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// Read the content from this file.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Read the content from standard input.
    #[arg(long)]
    stdin: bool,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum FsCommand {
    /// Replace or create a file atomically, if the lease, generation and pre-state allow.
    Write {
        /// The file, relative to the workspace root.
        path: String,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Delete a file (renamed to a trash name, then unlinked), if allowed.
    Delete {
        /// The file, relative to the workspace root.
        path: String,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Move a file to an absent path; both paths must be inside the lease.
    Rename {
        /// The file, relative to the workspace root.
        from: String,
        /// The new path, relative to the workspace root (must not exist).
        to: String,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Print a file's blake3 hash (first on its line), for --expect-hash.
    Hash {
        /// The file, relative to the workspace root.
        path: String,
    },
    /// List the mutation log's damaged lines; --accept records a review so mutations run again.
    ///
    /// Every `keel fs` mutation is refused while a damaged line is unreviewed: it may have been
    /// an intent's record, and acting without it could apply that intent twice.
    Review {
        /// Record that the lines were reviewed.
        #[arg(long)]
        accept: bool,
        /// Who reviewed them.
        #[arg(long, default_value = "operator", value_parser = crate::non_blank)]
        by: String,
    },
}

impl GateArgs {
    fn request(&self) -> Result<Request, Failure> {
        let expect = match (&self.expect.hash, self.expect.absent, self.expect.any) {
            (Some(hash), false, false) => Expect::hash(hash)
                .ok_or_else(|| Failure::usage(anyhow!("--expect-hash takes a blake3 hash: 64 hex digits")))?,
            (None, true, false) => Expect::Absent,
            (None, false, true) => Expect::Any,
            _ => {
                return Err(Failure::usage(anyhow!(
                    "give exactly one of --expect-hash, --expect-absent, --expect-any"
                )));
            }
        };
        let intent = match &self.intent {
            Some(text) => IntentId::new(text),
            None => IntentId::generate(),
        }
        .map_err(crate::failure)?;
        let holder = Holder {
            owner: self.owner.clone(),
            lane: self.lane.clone(),
            loop_ts: self.loop_ts.clone(),
            generation: self.generation,
        };
        Ok(Request { holder, expect, intent })
    }
}

fn read_content(source: &SourceArgs) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::usage(anyhow!("the content is larger than {CONTENT_BYTES_MAX_DEFAULT} bytes"));
    let content = match &source.from {
        Some(file) => match keel_fs::read_bounded(file, CONTENT_BYTES_MAX_DEFAULT) {
            Err(e) if keel_fs::is_too_large(&e) => return Err(too_large()),
            read => read.with_context(|| format!("reading {}", file.display())).map_err(Failure::io)?,
        },
        None => {
            let mut content = Vec::new();
            let limit = CONTENT_BYTES_MAX_DEFAULT + 1;
            let read = std::io::stdin().lock().take(limit).read_to_end(&mut content);
            read.context("reading standard input").map_err(Failure::io)?;
            content
        }
    };
    if content.len() as u64 > CONTENT_BYTES_MAX_DEFAULT {
        return Err(too_large());
    }
    Ok(content)
}

fn print_outcome(json: bool, outcome: &Outcome, request: &Request) -> Result<Status, StdoutError> {
    if json {
        let mut value = serde_json::to_value(outcome).expect("outcomes serialise");
        value["intent"] = json!(request.intent.as_str());
        outln!("{}", to_line(&value))?;
    } else {
        outln!("{outcome}")?;
    }
    Ok(if outcome.is_success() { Status::Ok } else { Status::Refused })
}

fn hash(root: &Path, path: &str, json: bool) -> Result<Status, Failure> {
    let state = keel_mutator::hash_path(root, path, CONTENT_BYTES_MAX_DEFAULT).map_err(crate::failure)?;
    let PreState::Present { hash } = state else {
        return Err(Failure::io(anyhow!("{path}: does not exist")));
    };
    if json {
        outln!("{}", to_line(&json!({"path": path, "hash": hash})))?;
    } else {
        outln!("{hash}  {path}")?;
    }
    Ok(Status::Ok)
}

/// Runs one `keel fs` command in `workspace`, gating writes on its lease service (the journal or
/// etcd, as `location` and the policy choose).
pub fn run(command: &FsCommand, location: &Location, workspace: &Workspace, json: bool) -> Result<Status, Failure> {
    let root = workspace.checkout();
    let open = || {
        // The service's options carry the policy's protected paths, which the gate honours too.
        let (backend, _) = location.backend(workspace)?;
        backend.bind(workspace)?;
        Mutator::open(root, backend, MutatorOptions::default()).map_err(crate::failure)
    };
    match command {
        FsCommand::Write { path, source, gate } => {
            let request = gate.request()?;
            let content = read_content(source)?;
            let outcome = open()?.write(path, &content, &request).map_err(crate::failure)?;
            Ok(print_outcome(json, &outcome, &request)?)
        }
        FsCommand::Delete { path, gate } => {
            let request = gate.request()?;
            let outcome = open()?.delete(path, &request).map_err(crate::failure)?;
            Ok(print_outcome(json, &outcome, &request)?)
        }
        FsCommand::Rename { from, to, gate } => {
            let request = gate.request()?;
            let outcome = open()?.rename(from, to, &request).map_err(crate::failure)?;
            Ok(print_outcome(json, &outcome, &request)?)
        }
        FsCommand::Hash { path } => hash(root, path, json),
        FsCommand::Review { accept, by } => review(root, accept.then_some(by.as_str()), json),
    }
}

fn review(root: &Path, accept_by: Option<&str>, json: bool) -> Result<Status, Failure> {
    let damage = Mutator::review_log(root, accept_by, &MutatorOptions::default()).map_err(crate::failure)?;
    let accepted = accept_by.is_some() && !damage.is_empty();
    if json {
        let lines: Vec<_> = damage
            .first
            .iter()
            .map(|d| json!({"line": d.line, "offset": d.offset, "reason": d.reason, "excerpt": d.excerpt}))
            .collect();
        outln!("{}", to_line(&json!({"damaged": damage.count, "first": lines, "accepted": accepted})))?;
        return Ok(Status::Ok);
    }
    if damage.is_empty() {
        outln!("no damaged lines in the mutation log")?;
        return Ok(Status::Ok);
    }
    for line in &damage.first {
        outln!("{line}")?;
    }
    if damage.count > damage.first.len() as u64 {
        outln!("... and {} more", damage.count - damage.first.len() as u64)?;
    }
    if accepted {
        outln!("recorded a review by {:?}: mutations run again", accept_by.unwrap_or_default())?;
    } else {
        outln!("not reviewed: rerun with --accept once these lines are understood")?;
    }
    Ok(Status::Ok)
}
