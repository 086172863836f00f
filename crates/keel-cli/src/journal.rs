//! `keel journal ...`: read-only views of the lane journal.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;

use clap::Subcommand;
use keel_fs::LineReader;
use keel_kernel::Replayed;
use keel_kernel::json::to_line;
use keel_kernel::line::{LineClass, LineDecoder};
use serde_json::{Value, json};

use crate::{Failure, Status, Stdout, StdoutError};

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
    /// Report corrupt lines, a torn tail and record counts; exit 1 if any record is corrupt.
    Verify {
        /// Print one JSON object instead of a report.
        #[arg(long)]
        json: bool,
    },
}

/// Replays a journal file from its start.
pub fn replay_file(path: &Path) -> Result<Replayed, Failure> {
    Ok(keel_journal::replay_path(path).map_err(Failure::io)?.replayed)
}

fn print_line(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    Ok(writeln!(out, "{text}").map_err(StdoutError)?)
}

pub fn run(command: &JournalCommand, path: &Path, options: &keel_journal::JournalOptions) -> Result<Status, Failure> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(Stdout(stdout.lock()));
    let status = match command {
        JournalCommand::Replay => {
            let state = replay_file(path)?.state;
            let live: Vec<&keel_kernel::Object> = state.live().collect();
            print_line(&mut out, &to_line(&live))?;
            Status::Ok
        }
        JournalCommand::Generations => {
            let state = replay_file(path)?.state;
            print_line(&mut out, &to_line(&state.generations()))?;
            Status::Ok
        }
        JournalCommand::Compact { dry_run: false, json } => {
            let journal = keel_journal::Journal::open(path, options.clone());
            let compaction = journal.compact().map_err(crate::lease::failure)?;
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
            let stats = journal.stats().map_err(crate::lease::failure)?;
            if *json {
                print_line(&mut out, &to_line(&stats))?;
            } else {
                let last = stats.last_compaction.as_ref().map_or_else(
                    || "none recorded (the head snapshot keeps the last one)".to_owned(),
                    |c| format!("{} ({} -> {} bytes)", c.ts, c.bytes_before, c.bytes_after),
                );
                for line in [
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
            let lines = journal.review(by, *accept).map_err(crate::lease::failure)?;
            if *json {
                let report = serde_json::json!({"unreviewed": lines, "accepted": *accept && !lines.is_empty()});
                print_line(&mut out, &to_line(&report))?;
            } else if lines.is_empty() {
                print_line(&mut out, "no unreviewed corrupt lines")?;
            } else {
                for sentinel in &lines {
                    let number = sentinel.get("_line").and_then(Value::as_u64).map_or(0, |l| l + 1);
                    print_line(&mut out, &format!("line {number}: {}", sentinel.get("_raw").unwrap_or(&Value::Null)))?;
                }
                let verdict = if *accept {
                    format!("recorded a review by {by:?}: leases can be granted again")
                } else {
                    "not reviewed: rerun with --accept once these lines are understood".to_owned()
                };
                print_line(&mut out, &verdict)?;
            }
            Status::Ok
        }
        JournalCommand::Compact { dry_run: true, .. } => {
            // What `compact` would write; the spec's compaction, with a warning, when it would
            // refuse (it never rewrites a journal whose compaction changes its meaning).
            let state = replay_file(path)?.state;
            let records = state.compact_fenced().unwrap_or_else(|error| {
                eprintln!("keel: warning: {}: {error}", path.display());
                state.compact()
            });
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
        JournalCommand::Verify { json } => verify(&mut out, path, *json)?,
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
    while let Some(line) = reader.next_line().map_err(Failure::io)? {
        let (corrupt, class) = decoder.push(line.bytes);
        if let Some(bad) = corrupt {
            keep(to_line(&bad.sentinel()));
        }
        if let LineClass::Record(_) = class {
            keep(keel_kernel::line::line_text(line.bytes).into_owned());
        }
    }
    for text in last {
        print_line(out, &text)?;
    }
    Ok(())
}

fn verify(out: &mut impl Write, path: &Path, as_json: bool) -> Result<Status, Failure> {
    let read = keel_journal::replay_path(path).map_err(Failure::io)?;
    let replayed = &read.replayed;
    let state = &replayed.state;
    // A review (an operator's, or the writer's for a crashed writer's fragment) lets grants go on,
    // but the line stays corrupt: the spec never erases an integrity breach, so neither does verify.
    let corrupt: Vec<Value> = state
        .corrupt()
        .iter()
        .map(|sentinel| {
            let index = sentinel.get("_line").and_then(Value::as_u64);
            let reviewed = state.is_excused(sentinel);
            json!({"line_number": index.map(|i| i + 1), "line_index": index, "raw": sentinel.get("_raw"), "reviewed": reviewed})
        })
        .collect();
    // Replay ignores an unparseable last line either way (the spec's torn tail), but only one
    // without its `\n` can be a write cut short; a whole one stops grants until it is reviewed.
    let torn = replayed
        .torn_tail
        .as_ref()
        .map(|t| json!({"line_number": t.line + 1, "line_index": t.line, "raw": t.raw, "terminated": read.terminated}));
    let mis_keyed = state.compact_checked().err().map(|e| e.to_string());
    // A whole bad last line is damage to the service (grants stop), so it is to verify as well.
    let clean = corrupt.is_empty() && !(torn.is_some() && read.terminated);
    if as_json {
        let report = json!({
            "path": path.display().to_string(),
            "lines": replayed.lines,
            "records": state.record_count(),
            "ops": state.op_counts(),
            "corrupt": corrupt,
            "torn_tail": torn,
            "live_leases": state.live_count(),
            "compaction_refused": mis_keyed,
            "clean": clean,
        });
        print_line(out, &to_line(&report))?;
    } else {
        let ops: Vec<String> = state.op_counts().iter().map(|(op, n)| format!("{op} {n}")).collect();
        let mut report = vec![
            format!("journal: {}", path.display()),
            format!("lines: {}, records: {} ({})", replayed.lines, state.record_count(), ops.join(", ")),
            format!("live leases: {}", state.live_count()),
            format!("corrupt records: {}", corrupt.len()),
        ];
        for bad in &corrupt {
            let reviewed = if bad["reviewed"] == true { " (reviewed)" } else { "" };
            report.push(format!("  line {}{reviewed}: {}", bad["line_number"], bad["raw"]));
        }
        if let Some(torn) = &torn {
            let what = if read.terminated {
                "a whole line that does not parse: replay ignores it, but `keel lease` grants nothing \
                 until `keel journal review --accept`"
            } else {
                "an unacknowledged write cut short; it did not happen"
            };
            report.push(format!("torn tail: line {}: {} ({what})", torn["line_number"], torn["raw"]));
        }
        if let Some(reason) = &mis_keyed {
            report.push(format!("compaction would be refused: {reason}"));
        }
        report.push(if clean { "ok".into() } else { "CORRUPT".into() });
        for line in report {
            print_line(out, &line)?;
        }
    }
    if clean { Ok(Status::Ok) } else { Ok(Status::Refused) }
}
