//! `keel completions SHELL`: the shell completion script for the whole command tree, on stdout,
//! generated from the same clap definition that parses keel's arguments (`clap_complete`).

use std::io::Write as _;

use crate::{Failure, Status, Stdout, StdoutError};

// Plain comment: the `--help` line is the doc comment on `Command::Completions` (see `Command`).
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell`. The script is rendered whole first, so a
/// reader gone away drops it quietly (see [`Stdout`]) and any other write error is reported.
pub fn run(args: &CompletionsArgs) -> Result<Status, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::cli_command(), "keel", &mut script);
    let mut stdout = Stdout(std::io::stdout().lock());
    stdout.write_all(&script).and_then(|()| stdout.flush()).map_err(StdoutError)?;
    Ok(Status::Ok)
}
