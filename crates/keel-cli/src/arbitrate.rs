//! `keel arbitrate`: the pure arbiter as a filter over JSON lines.

use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use keel_kernel::Object;
use keel_kernel::arbiter::{Outcome, Request, Taxonomy, decide};
use keel_kernel::json::to_line;
use serde::Deserialize;
use serde_json::json;

use crate::{Failure, Status, Stdout, StdoutError, stdout_closed};

/// The longest input line accepted; a longer one gets an error object and is skipped.
const INPUT_LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct ArbitrateArgs {
    /// A policy file (TOML, or the JSON taxonomy) to decide under [default: the workspace's
    /// .keel/policy.toml, else the built-in one]. A line's own taxonomy adds to it: protected
    /// paths and exclusive lanes are added, budgets only tightened.
    #[arg(long)]
    taxonomy: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    request: Request,
    #[serde(default)]
    live_leases: Vec<Object>,
    #[serde(default)]
    taxonomy: Option<Taxonomy>,
    /// Expected results (as in the conformance fixtures) are accepted and ignored.
    #[serde(default, rename = "expected")]
    _expected: Option<serde_json::Value>,
}

/// Reads requests on stdin, writes one decision (or error object) per line.
/// Exit 0 when every line was admitted, 1 when any was refused, 2 when any line was malformed.
pub fn run(args: &ArbitrateArgs, location: &crate::Location) -> Result<Status, Failure> {
    let policy = match &args.taxonomy {
        Some(path) => keel_journal::Policy::load(path),
        None => keel_journal::Policy::of_workspace(location.workspace()?.root()),
    };
    let default_taxonomy = policy.map_err(crate::failure)?.taxonomy();
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(Stdout(stdout.lock()));
    let (mut refused, mut malformed) = (false, false);
    let mut buffer = Vec::new();
    let mut number = 0u64;
    loop {
        buffer.clear();
        let read = Read::take(&mut input, INPUT_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buffer)
            .context("reading stdin")
            .map_err(Failure::io)?;
        if read == 0 {
            break;
        }
        number += 1;
        let response = if buffer.len() > INPUT_LINE_BYTES_MAX && !buffer.ends_with(b"\n") {
            // Skip the rest of the oversized line so the stream stays in step, in bounded memory.
            skip_line(&mut input).context("reading stdin").map_err(Failure::io)?;
            malformed = true;
            json!({"error": format!("stdin line {number}: longer than {INPUT_LINE_BYTES_MAX} bytes"), "line": number})
        } else {
            let text = String::from_utf8_lossy(&buffer);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Case>(text.trim()) {
                Ok(case) => match case.request.validate() {
                    Err(error) => {
                        malformed = true;
                        json!({"error": format!("stdin line {number}: request: {error}"), "line": number})
                    }
                    Ok(_) => {
                        let taxonomy = match &case.taxonomy {
                            Some(own) => default_taxonomy.with_request_taxonomy(own),
                            None => default_taxonomy.clone(),
                        };
                        let decision = decide(&case.request, &case.live_leases, &taxonomy);
                        refused |= decision.outcome == Outcome::Refuse;
                        serde_json::to_value(&decision).expect("decisions serialise")
                    }
                },
                Err(error) => {
                    malformed = true;
                    json!({"error": format!("stdin line {number}: {error}"), "line": number})
                }
            }
        };
        writeln!(out, "{}", to_line(&response)).map_err(StdoutError)?;
        if stdout_closed() {
            // Nobody reads the decisions: stop taking requests (the status covers those decided).
            break;
        }
    }
    out.flush().map_err(StdoutError)?;
    Ok(if malformed {
        Status::Usage
    } else if refused {
        Status::Refused
    } else {
        Status::Ok
    })
}

/// Discards input through the next `\n` (or the end), a buffer at a time.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                input.consume(all);
            }
        }
    }
}
