//! `keel journal ...`: views and maintenance of the lane journal file (refused in a workspace
//! whose leases live in etcd: see [`crate::Location::journal_only`]). Reading a large journal
//! shows a progress bar at a terminal ([`progress`]).

mod progress;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;

use keel_journal::{LeaseBackend as _, Workspace};

use clap::Subcommand;
use keel_fs::LineReader;
use keel_kernel::Replayed;
use keel_kernel::json::to_line;
use keel_kernel::line::{LineClass, LineDecoder};
use serde_json::{Value, json};

use crate::{Failure, Status, Stdout, StdoutError};
use progress::Bar;

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum JournalCommand {
    /// Print the live leases as a JSON array, in first-acquired order.
    Replay,
    /// Print the generation table as a JSON array of {"loop_ts", "lane", "generation"}.
    Generations,
    /// Compact the journal in place under the writer lock (crash-safe: old or new, never torn).
    Compact {
        /// Only print what compaction would write, as JSON lines; leave the journal untouched.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Records, bytes, live leases, corrupt lines and the last compaction.
    Stats {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show unreviewed corrupt lines (which stop new grants); with --accept, record the review.
    Review {
        /// Record that the lines were reviewed, so leases can be granted again.
        #[arg(long)]
        accept: bool,
        /// Who reviewed them.
        #[arg(long, default_value = "operator")]
        by: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the next sequence number.
    NextSeq,
    /// Print the last records as JSON lines (corrupt lines as their `_CORRUPT` sentinels).
    Tail {
        /// How many records.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        count: usize,
    },
    /// Report damage (corrupt lines, colliding live leases: exit 1) and notes (torn tails), with record counts.
    Verify {
        /// Print one JSON object instead of a report.
        #[arg(long)]
        json: bool,
    },
}

impl JournalCommand {
    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Generations => "generations",
            Self::Compact { .. } => "compact",
            Self::Stats { .. } => "stats",
            Self::Review { .. } => "review",
            Self::NextSeq => "next-seq",
            Self::Tail { .. } => "tail",
            Self::Verify { .. } => "verify",
        }
    }
}

/// Replays a journal file from its start.
pub fn replay_file(path: &Path) -> Result<Replayed, Failure> {
    Ok(keel_journal::replay_path(path).map_err(Failure::io)?.replayed)
}

/// Reads the workspace's journal: a missing one reads as empty unless it is expected to exist
/// (named by the command, or bound), as `keel lease live` sees it. `bar` shows how far it got.
fn read_journal(workspace: &Workspace, mut bar: Bar) -> Result<keel_journal::ReadOutcome, Failure> {
    let path = workspace.journal();
    let progress = &mut |progress| bar.update(progress);
    let read = if workspace.journal_expected() {
        keel_journal::read::replay_path_observed(path, progress)
    } else {
        keel_journal::read::replay_path_or_empty_observed(path, progress)
    };
    bar.done();
    read.map_err(Failure::io)
}

fn print_line(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    Ok(writeln!(out, "{text}").map_err(StdoutError)?)
}

/// A damaged line's text as JSON (quoted and escaped, so control characters show).
fn quoted(raw: &Value) -> String {
    raw.to_string()
}

/// ` (why)` for a line [`keel_journal::verify::why_damaged`] explains, else nothing.
fn in_parentheses(why: Option<&str>) -> String {
    why.map_or_else(String::new, |why| format!(" ({why})"))
}

pub fn run(
    command: &JournalCommand,
    workspace: &Workspace,
    options: &keel_journal::JournalOptions,
) -> Result<Status, Failure> {
    let path = workspace.journal();
    let writing =
        matches!(command, JournalCommand::Compact { dry_run: false, .. } | JournalCommand::Review { accept: true, .. });
    if writing {
        workspace.bind().map_err(crate::failure)?;
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(Stdout(stdout.lock()));
    let status = match command {
        JournalCommand::Replay => {
            // Its output is JSON whatever the flags; a person at a terminal still likes the bar.
            let state = read_journal(workspace, Bar::new("replaying", false))?.replayed.state;
            let live: Vec<&keel_kernel::Object> = state.live().collect();
            print_line(&mut out, &to_line(&live))?;
            Status::Ok
        }
        JournalCommand::Generations => {
            let state = read_journal(workspace, Bar::new("replaying", false))?.replayed.state;
            print_line(&mut out, &to_line(&state.generations()))?;
            Status::Ok
        }
        JournalCommand::Compact { dry_run: false, json } => {
            let journal = keel_journal::Journal::open(path, options.clone());
            let mut bar = Bar::new("compacting", *json);
            let compaction = journal.compact_observed(&mut |progress| bar.update(progress));
            bar.done();
            let compaction = compaction.map_err(crate::failure)?;
            if *json {
                print_line(&mut out, &to_line(&compaction))?;
            } else {
                print_line(
                    &mut out,
                    &format!(
                        "compacted {}: {} -> {} bytes, {} record(s)",
                        path.display(),
                        compaction.bytes_before,
                        compaction.bytes_after,
                        compaction.records_after
                    ),
                )?;
            }
            Status::Ok
        }
        JournalCommand::Stats { json } => {
            let journal = keel_journal::Journal::open(path, options.clone());
            let stats = journal.stats().map_err(crate::failure)?;
            if *json {
                let mut object = serde_json::to_value(&stats).expect("stats serialise");
                object["root"] = Value::from(workspace.root().display().to_string());
                object["journal"] = Value::from(path.display().to_string());
                print_line(&mut out, &to_line(&object))?;
            } else {
                let last = stats.last_compaction.as_ref().map_or_else(
                    || "none recorded (the head snapshot keeps the last one)".to_owned(),
                    |c| format!("{} ({} -> {} bytes)", c.ts, c.bytes_before, c.bytes_after),
                );
                for line in [
                    format!("workspace: {}", workspace.root().display()),
                    format!("journal: {}", path.display()),
                    format!("records: {}, bytes: {}", stats.records, stats.bytes),
                    format!("live leases: {}", stats.live_leases),
                    format!("corrupt lines: {} ({} unreviewed)", stats.corrupt, stats.unreviewed_corrupt),
                    format!("last compaction: {last}"),
                ] {
                    print_line(&mut out, &line)?;
                }
            }
            Status::Ok
        }
        JournalCommand::Review { accept, by, json } => {
            let journal = keel_journal::Journal::open(path, options.clone());
            let (lines, raised) = if *accept {
                let accepted = journal.accept_review(by).map_err(crate::failure)?;
                (accepted.lines, accepted.generations_raised)
            } else {
                (journal.unreviewed().map_err(crate::failure)?, None)
            };
            if *json {
                let report = serde_json::json!({
                    "unreviewed": lines, "accepted": *accept && !lines.is_empty(),
                    "generations_raised": raised.map(|(from, to)| json!({"from": from, "to": to})),
                });
                print_line(&mut out, &to_line(&report))?;
            } else if lines.is_empty() {
                print_line(&mut out, "no unreviewed corrupt lines")?;
            } else {
                for sentinel in &lines {
                    let number = sentinel.get("_line").and_then(Value::as_u64).map_or(0, |l| l + 1);
                    let raw = sentinel.get("_raw").unwrap_or(&Value::Null);
                    print_line(
                        &mut out,
                        &format!(
                            "line {number}: {}{}",
                            quoted(raw),
                            in_parentheses(keel_journal::verify::why_damaged(raw))
                        ),
                    )?;
                }
                let verdict = match raised {
                    Some((from, to)) => format!(
                        "recorded a review by {by:?}: leases can be granted again; the generation counter \
                         was raised from {from} to {to}, past any token the damaged lines may have issued"
                    ),
                    None => "not reviewed: rerun with --accept once these lines are understood".to_owned(),
                };
                print_line(&mut out, &verdict)?;
            }
            Status::Ok
        }
        JournalCommand::Compact { dry_run: true, .. } => {
            // What `compact` would write; the spec's compaction, with a warning, when it would
            // refuse (it never rewrites a journal whose compaction changes its meaning).
            let journal = keel_journal::Journal::open(path, options.clone());
            let records = match journal.compaction_plan() {
                Err(keel_journal::JournalError::CompactRefused { source, .. }) => {
                    eprintln!("keel: warning: {}: {source}", path.display());
                    replay_file(path)?.state.compact()
                }
                planned => planned.map_err(crate::failure)?,
            };
            for record in records {
                print_line(&mut out, &to_line(&record))?;
            }
            Status::Ok
        }
        JournalCommand::NextSeq => {
            let state = replay_file(path)?.state;
            print_line(&mut out, &state.next_seq().to_string())?;
            Status::Ok
        }
        JournalCommand::Tail { count } => {
            tail(&mut out, path, *count)?;
            Status::Ok
        }
        JournalCommand::Verify { json } => {
            verify(&mut out, path, &read_journal(workspace, Bar::new("verifying", *json))?, *json)?
        }
    };
    out.flush().map_err(StdoutError)?;
    Ok(status)
}

/// Keeps only the last `count` records in memory, whatever the journal's size.
fn tail(out: &mut impl Write, path: &Path, count: usize) -> Result<(), Failure> {
    let mut reader = LineReader::open(path).map_err(Failure::io)?;
    let mut decoder = LineDecoder::new();
    let mut last: VecDeque<String> = VecDeque::with_capacity(count.min(4096));
    let mut keep = |text: String| {
        if count == 0 {
            return;
        }
        if last.len() == count {
            last.pop_front();
        }
        last.push_back(text);
    };
    loop {
        match reader.next_line() {
            Ok(Some(line)) => {
                let (corrupt, class) = decoder.push(line.bytes);
                if let Some(bad) = corrupt {
                    keep(to_line(&bad.sentinel()));
                }
                if let LineClass::Record(_) = class {
                    keep(keel_kernel::line::line_text(line.bytes).into_owned());
                }
            }
            Ok(None) => break,
            // A line over the limit is damage: skipped in bounded memory, shown by its start.
            Err(keel_fs::FsError::LineTooLong { .. }) => {
                let (skipped, prefix) =
                    reader.skip_long_line(keel_kernel::line::OVERSIZED_QUOTE_BYTES).map_err(Failure::io)?;
                let (index, corrupt) = decoder.start_line();
                if let Some(bad) = corrupt {
                    keep(to_line(&bad.sentinel()));
                }
                keep(to_line(&keel_kernel::line::oversized_sentinel(index, &prefix, skipped.bytes)));
            }
            Err(error) => return Err(Failure::io(error)),
        }
    }
    for text in last {
        print_line(out, &text)?;
    }
    Ok(())
}

fn verify(
    out: &mut impl Write,
    path: &Path,
    read: &keel_journal::ReadOutcome,
    as_json: bool,
) -> Result<Status, Failure> {
    let report = keel_journal::verify::verify_read(path, read);
    let clean = report.clean;
    if as_json {
        print_line(out, &to_line(&report))?;
    } else {
        let ops: Vec<String> = report.ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
        let mut lines = vec![
            format!("journal: {}", path.display()),
            format!("lines: {}, records: {} ({})", report.lines, report.records, ops.join(", ")),
            format!("live leases: {}", report.live_leases),
            format!("corrupt records: {}", report.corrupt.len()),
        ];
        for bad in &report.corrupt {
            let reviewed = if bad.reviewed { " (reviewed)" } else { "" };
            let why = in_parentheses(bad.why);
            let number = bad.line_number.map_or_else(|| "null".to_owned(), |n| n.to_string());
            let raw = bad.raw.as_ref().map_or_else(|| "null".to_owned(), ToString::to_string);
            lines.push(format!("  line {number}{reviewed}: {raw}{why}"));
        }
        if !report.collisions.is_empty() {
            lines.push(format!(
                "colliding live leases: {}{}",
                report.collisions.len(),
                if report.more_collisions { " (and more)" } else { "" }
            ));
            for c in &report.collisions {
                lines.push(format!(
                    "  lane {:?} (loop_ts {}, holder {:?}) entry {:?} collides with lane {:?} (loop_ts {}, holder {:?}) entry {:?}",
                    c.first.identity.lane, c.first.identity.loop_ts, c.first.holder, c.first.entry,
                    c.second.identity.lane, c.second.identity.loop_ts, c.second.holder, c.second.entry
                ));
            }
        }
        // Not damage: a torn tail's line is listed under its kind, with what it means.
        for note in &report.notes {
            lines.push(format!(
                "{}: line {}: {} ({})",
                note.kind.label(),
                note.line_number,
                Value::from(note.raw.clone()),
                note.meaning
            ));
        }
        if let Some(reason) = &report.compaction_refused {
            lines.push(format!("compaction would be refused: {reason}"));
        }
        lines.push(if clean { "ok".into() } else { "CORRUPT".into() });
        for line in lines {
            print_line(out, &line)?;
        }
    }
    if clean { Ok(Status::Ok) } else { Ok(Status::Refused) }
}
