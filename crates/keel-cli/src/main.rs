//! `keel`: the command line over the keel crates. It parses arguments, calls one library
//! function, and prints the result; every decision lives in the libraries below.
//!
//! Exit codes: 0 success, 1 refused (or corruption found by `verify`), 2 usage error,
//! 3 lock busy or wait timed out, 4 I/O error or corrupt input; `lease run` adds 124 to 127.
//! With `--json` a failure is also one object on stdout: `{"error": {"kind", "message",
//! "path"?, "line"?}}`.

// Doc comments here are `--help` text for people at a terminal, not rustdoc: backticks and
// angle-bracketed URLs would show up verbatim.
#![allow(clippy::doc_markdown, rustdoc::bare_urls, clippy::doc_link_with_quotes)]
// Command dispatch is one match arm per subcommand; splitting it hides the map of the CLI.
#![allow(clippy::too_many_lines, clippy::single_match_else)]

/// `println!` that returns a [`StdoutError`] instead of panicking when stdout cannot be written
/// (`println!` panics, exit 101, on a reader that has gone away).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_line(format_args!($($arg)*))
    };
}

mod arbitrate;
mod backend;
mod completions;
mod config;
mod demo;
mod diagnostics;
mod fs;
mod hook;
mod journal;
mod lease;
mod location;
mod lock;
mod man;
mod mcp;
mod policy;
mod store;
mod top;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use keel_fs::ErrorKind;
use keel_journal::{PolicyError, WorkspaceError};
use location::{Location, Root};

/// A library error that says what kind of failure it is, and where.
pub trait Kinded: Into<anyhow::Error> {
    /// What kind of failure it is.
    fn kind(&self) -> ErrorKind;
    /// The file the failure concerns, when the error names one.
    fn path(&self) -> Option<PathBuf>;
    /// The 1-based line of that file, when the error names one.
    fn line(&self) -> Option<u64> {
        None
    }
}

macro_rules! kinded {
    ($($error:ty $(: $line:ident)?),* $(,)?) => {$(
        impl Kinded for $error {
            fn kind(&self) -> ErrorKind {
                <$error>::kind(self)
            }
            fn path(&self) -> Option<PathBuf> {
                let path: Option<&Path> = <$error>::path(self).into();
                path.map(Path::to_path_buf)
            }
            $(fn $line(&self) -> Option<u64> {
                <$error>::line(self)
            })?
        }
    )*};
}

kinded!(
    keel_journal::JournalError: line,
    PolicyError: line,
    WorkspaceError,
    keel_mutator::MutateError: line,
    keel_lockfile::LockfileError,
    keel_lockfile::ConfigError,
    keel_store::StoreError: line,
);

/// The one map from a library error's kind to the exit status.
pub fn failure(error: impl Kinded) -> Failure {
    let (status, kind) = match error.kind() {
        ErrorKind::Busy => (Status::Busy, "busy"),
        ErrorKind::Refused => (Status::Refused, "refused"),
        ErrorKind::Usage => (Status::Usage, "usage"),
        ErrorKind::Damaged => (Status::Io, "damaged"),
        ErrorKind::Io => (Status::Io, "io"),
    };
    let (path, line) = (error.path(), error.line());
    Failure { status, kind, path, line, error: error.into() }
}

#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "Leases over workspace regions for fleets of agents")]
struct Cli {
    #[command(flatten)]
    location: Location,
    #[command(subcommand)]
    command: Command,
}

/// keel's command line. The location flags before the subcommand are its own (not global): the
/// groups that use them take them again after the subcommand, and the others do not list them.
fn cli_command() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command().mut_args(|arg| arg.global(false))
}

// `defer`: only the subcommands on the command line are built. Building all of them (every
// group's arguments, with the global ones copied into each) was most of clap's share of a
// `keel lease acquire` process: start-up is most of what a short-lived keel process costs.
// A deferred subcommand applies its argument structs' doc comments last, as its `--help` line,
// so structs that are flattened into subcommands carry plain comments instead.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Read the lane journal: replay, generations, compaction, verification.
    Journal {
        #[command(subcommand)]
        command: journal::JournalCommand,
        #[command(flatten)]
        location: Location,
    },
    /// Take, give back and inspect leases through the lease service (the journal, or etcd).
    Lease {
        #[command(subcommand)]
        command: lease::LeaseCommand,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        location: Location,
    },
    /// Read and update sections of a JSON lockfile several processes share: each writer changes
    /// only the sections it names, under a sidecar lock.
    Lock {
        #[command(subcommand)]
        command: lock::LockCommand,
        #[command(flatten)]
        output: Output,
    },
    /// Read and write a JSON config document whose generation counter refuses a write based on
    /// an older read (compare-and-swap).
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
        #[command(flatten)]
        output: Output,
    },
    /// The runtime store: worker events and transcripts, read page by page with cursors.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        root: Root,
    },
    /// Write, delete and rename workspace files through the lease gate (fenced, atomic, logged).
    Fs {
        #[command(subcommand)]
        command: fs::FsCommand,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        location: Location,
    },
    /// Show or check the workspace policy (.keel/policy.toml) that every lease obeys.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        root: Root,
    },
    /// Agent harness hooks (Claude Code, Codex, Gemini CLI) and git's pre-commit guard.
    Hook {
        #[command(subcommand)]
        command: hook::HookCommand,
        #[command(flatten)]
        location: Location,
    },
    /// Serve MCP on stdin and stdout for one agent session (its harness starts it): leases,
    /// edit checks, gated writes and the fleet's record as tools.
    Mcp {
        #[command(flatten)]
        location: Location,
    },
    /// A live view of the fleet: leases and their verdicts, refusals, grants per minute, damage.
    Top {
        #[command(flatten)]
        args: top::TopArgs,
        #[command(flatten)]
        location: Location,
    },
    /// Decide lease requests read as JSON lines on stdin, one decision per line on stdout.
    Arbitrate {
        #[command(flatten)]
        args: arbitrate::ArbitrateArgs,
        #[command(flatten)]
        location: Location,
    },
    /// A short walk-through of agents asking for regions, in a temporary directory.
    Demo,
    /// Print the shell completion script for bash, zsh, fish, PowerShell or elvish.
    Completions(completions::CompletionsArgs),
    /// Write a man page per command into a directory (`cargo xtask dist` runs it).
    #[command(hide = true)]
    Man(man::ManArgs),
}

// The `--json` switch of every command group that prints one result. (A plain comment: see
// `Command`.)
#[derive(Debug, clap::Args)]
pub(crate) struct Output {
    /// Print one JSON object instead of a sentence.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Prints `object` as one JSON line with `--json`, else the sentence for people.
pub fn print(json: bool, object: &serde_json::Value, sentence: &str) -> Result<(), StdoutError> {
    if json { outln!("{}", keel_kernel::json::to_line(object)) } else { outln!("{sentence}") }
}

/// Writes one line to stdout (line-buffered: the write reaches the reader, or fails, here).
pub fn write_line(line: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    writeln!(Stdout(io::stdout().lock()), "{line}").map_err(StdoutError)
}

/// Set once stdout's reader has gone away (`EPIPE`: `keel journal verify | head -1`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away; a command that would only go on printing may stop.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// keel's stdout. A reader that goes away is not an error: later output is dropped, quietly, and
/// the command ends with the status its work earned. Status is what scripts act on here, so a
/// closed pipe must not turn a refused acquire or a damaged journal into a success (status 0),
/// nor a success into an I/O error (4). Every other write error is still an error.
pub struct Stdout<W>(pub W);

impl<W: Write> Write for Stdout<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if stdout_closed() {
            return Ok(bytes.len());
        }
        absorb_closed(self.0.write(bytes), bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if stdout_closed() {
            return Ok(());
        }
        absorb_closed(self.0.flush(), ())
    }
}

/// `result`, except that a reader gone away marks stdout closed and reads as `done`.
fn absorb_closed<T>(result: io::Result<T>, done: T) -> io::Result<T> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(done)
        }
        other => other,
    }
}

/// A write to stdout failed (other than its reader going away, which [`Stdout`] absorbs).
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<StdoutError> for Failure {
    fn from(error: StdoutError) -> Self {
        Failure::io(error)
    }
}

/// A value parser for names (lanes, owners, loop timestamps): an empty or blank one is a usage
/// error that names the argument, before anything is read or written.
pub fn non_blank(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty or blank".to_owned());
    }
    Ok(text.to_owned())
}

/// Exit statuses, shared by every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// Refused, or corruption found.
    Refused = 1,
    /// Bad arguments or input.
    Usage = 2,
    /// The lock was busy, or a wait timed out.
    Busy = 3,
    /// I/O error or corrupt input.
    Io = 4,
    /// `lease run` only: no lease, so its command did not run (refused, or not granted within
    /// --wait-s), or was stopped when the lease was lost. Numbered as `timeout(1)` numbers a
    /// timeout, with 125 to 127 below, so that keel's outcomes stand apart from the command's.
    RunNoLease = 124,
    /// `lease run` only: keel itself failed (bad arguments, a damaged journal, I/O).
    RunFailed = 125,
}

/// A failure to report with its exit status: a line on stderr, and with `--json` one object on
/// stdout as well, so a script reading stdout learns of it too.
#[derive(Debug)]
pub struct Failure {
    status: Status,
    /// `busy`, `refused`, `usage`, `damaged` or `io`: the error's kind, as JSON names it.
    kind: &'static str,
    path: Option<PathBuf>,
    line: Option<u64>,
    error: anyhow::Error,
}

impl Failure {
    /// An I/O (or corrupt input) failure: exit 4.
    pub fn io(error: impl Into<anyhow::Error>) -> Self {
        Self { status: Status::Io, kind: "io", path: None, line: None, error: error.into() }
    }

    /// A usage failure: exit 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self { status: Status::Usage, kind: "usage", path: None, line: None, error: error.into() }
    }

    /// `{"error": {"kind", "message", "path"?, "line"?}}`: what `--json` prints for a failure.
    fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"kind": self.kind, "message": describe(&self.error)});
        if let Some(path) = &self.path {
            error["path"] = path.display().to_string().into();
        }
        if let Some(line) = self.line {
            error["line"] = line.into();
        }
        serde_json::json!({ "error": error })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(&self.error))
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent already shows
/// (library errors name their source in their own message).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn dispatch(cli: &Cli) -> Result<Status, Failure> {
    let outer = &cli.location;
    match &cli.command {
        Command::Journal { command, location } => {
            let location = location.under(outer)?;
            let workspace = location.workspace()?;
            let options = location.journal_only(&workspace, &format!("keel journal {}", command.name()))?;
            journal::run(command, &workspace, &options)
        }
        Command::Lease { command: lease::LeaseCommand::Migrate { .. }, output, location } => {
            let location = location.under(outer)?;
            let workspace = location.workspace()?;
            let policy = backend::policy(&workspace)?;
            let target = Location { backend: Some(backend::BackendArg::Etcd), ..location.clone() };
            let options = location.options_of(&policy);
            lease::migrate(&workspace, &target.choice(&workspace, &policy)?, options, output)
        }
        Command::Lease { command: command @ lease::LeaseCommand::Run { .. }, output, location } => {
            let run = || {
                let location = location.under(outer)?;
                let workspace = location.workspace()?;
                let (backend, choice) = location.backend(&workspace)?;
                lease::run(command, &workspace, &backend, &choice, output)
            };
            run().map_err(|failure| Failure { status: Status::RunFailed, ..failure })
        }
        Command::Lease { command, output, location } => {
            let location = location.under(outer)?;
            let workspace = location.workspace()?;
            let (backend, choice) = location.backend(&workspace)?;
            lease::run(command, &workspace, &backend, &choice, output)
        }
        Command::Policy { command, output, root } => {
            outer.unused_by("policy", true)?;
            policy::run(command, &root.under(outer)?.workspace()?, output.json)
        }
        Command::Lock { command, output } => {
            outer.unused_by("lock", false)?;
            lock::run(command, output.json)
        }
        Command::Config { command, output } => {
            outer.unused_by("config", false)?;
            config::run(command, output.json)
        }
        Command::Store { command, output, root } => {
            outer.unused_by("store", true)?;
            store::run(command, root.under(outer)?.workspace()?.root(), output.json)
        }
        Command::Fs { command, output, location } => {
            let location = location.under(outer)?;
            fs::run(command, &location, &location.workspace()?, output.json)
        }
        Command::Top { args, location } => {
            let location = location.under(outer)?;
            let workspace = location.workspace()?;
            let options = location.journal_only(&workspace, "keel top")?;
            top::run(args, &workspace, options)
        }
        Command::Arbitrate { args, location } => arbitrate::run(args, &location.under(outer)?),
        Command::Hook { command, location } => Ok(hook::run(command, &location.under(outer)?)),
        Command::Mcp { location } => mcp::run(&location.under(outer)?),
        Command::Demo => {
            outer.unused_by("demo", false)?;
            demo::run()
        }
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}

/// Whether the command line asks for JSON: `--json` before any `--` (the words after it belong
/// to the command `lease run` starts). Read from the words themselves so that a command line
/// clap cannot parse is answered in JSON too.
fn wants_json(arguments: &[std::ffi::OsString]) -> bool {
    keel_words(arguments).any(|word| word == "--json")
}

/// The words of keel's own command line: those before any `--`.
fn keel_words(arguments: &[std::ffi::OsString]) -> impl Iterator<Item = &std::ffi::OsString> {
    arguments.iter().skip(1).take_while(|word| *word != "--")
}

/// clap's message for `error`, without its `error: ` prefix, usage line and hints.
pub fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    rendered.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned()
}

/// A command line clap refused: `--help` and `--version` print and exit 0 as clap does; anything
/// else is a usage failure, printed by clap (usage line and hints) unless JSON was asked for.
/// `lease run`'s own usage errors exit 125, as its other failures do.
fn usage_error(error: &clap::Error, json: bool, runs_command: bool) -> Result<Status, Failure> {
    if !error.use_stderr() {
        error.exit();
    }
    let status = if runs_command { Status::RunFailed } else { Status::Usage };
    if !json {
        // clap's rendering: the message, the usage line and its hints.
        let _ = error.print();
        return Ok(status);
    }
    Err(Failure { status, ..Failure::usage(anyhow::anyhow!(clap_message(error))) })
}

/// Whether the command line is a `keel lease run` (whose statuses 124 to 127 are its own).
fn runs_a_command(arguments: &[std::ffi::OsString]) -> bool {
    let words: Vec<_> = keel_words(arguments).collect();
    words.windows(2).any(|pair| pair[0] == "lease" && pair[1] == "run")
}

fn main() -> ExitCode {
    // A write past a file-size limit (RLIMIT_FSIZE) raises SIGXFSZ, whose default action kills
    // keel in the middle of an append. With a handler in place the write fails with EFBIG
    // instead, and keel cuts the partial record off and reports it, as it does a full disk.
    // (Handlers do not survive `exec`: a command run under `keel lease run` keeps the default.)
    let _ = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, std::sync::Arc::default());
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|first| first == lease::RUN_GRANTED_ARG) {
        return lease::run_granted(&arguments[2..]);
    }
    diagnostics::init();
    tracing::debug!(arguments = ?&arguments[1..], "keel starts");
    let (json, runs_command) = (wants_json(&arguments), runs_a_command(&arguments));
    let parsed = cli_command().try_get_matches_from(arguments).and_then(|matches| {
        use clap::FromArgMatches as _;
        Cli::from_arg_matches(&matches)
    });
    let status = match parsed.map_err(|error| usage_error(&error, json, runs_command)) {
        Ok(cli) => dispatch(&cli),
        Err(early) => early,
    };
    let status = status.unwrap_or_else(|failure| {
        eprintln!("keel: {}", describe(&failure.error));
        if json {
            // The status is the failure's either way; a stdout that cannot take this line
            // has nothing more to be told.
            let _ = outln!("{}", keel_kernel::json::to_line(&failure.to_json()));
        }
        failure.status
    });
    tracing::debug!(status = status as u8, "keel exits");
    ExitCode::from(status as u8)
}

#[cfg(test)]
mod tests {
    use super::cli_command;

    #[test]
    fn the_cli_definition_is_consistent() {
        cli_command().debug_assert();
    }

    /// Every subcommand's `--help` line, whole tree. With deferred subcommands a doc comment on a
    /// flattened argument struct silently replaces the line of each subcommand it is built
    /// into; this snapshot shows that at once.
    #[test]
    fn every_subcommand_keeps_its_own_help_line() {
        fn walk(command: &clap::Command, path: &str, lines: &mut Vec<String>) {
            for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                lines.push(format!("{path}: {}", sub.get_about().map(ToString::to_string).unwrap_or_default()));
                walk(sub, &path, lines);
            }
        }
        let mut cli = cli_command();
        cli.build();
        let mut lines = Vec::new();
        walk(&cli, "keel", &mut lines);
        insta::assert_snapshot!(lines.join("\n"));
    }

    /// Help says what a thing is, never an internal name for it ("seed 001").
    #[test]
    fn no_help_text_names_a_seed_number() {
        fn walk(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            let texts = command
                .get_about()
                .into_iter()
                .chain(command.get_long_about())
                .chain(command.get_arguments().filter_map(|a| a.get_help()))
                .chain(command.get_arguments().filter_map(|a| a.get_long_help()))
                .map(ToString::to_string);
            found.extend(texts.filter(|t| t.to_lowercase().contains("seed 0")).map(|t| format!("{path}: {t}")));
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut cli = cli_command();
        cli.build();
        let mut found = Vec::new();
        walk(&cli, "keel", &mut found);
        assert!(found.is_empty(), "help naming a seed:\n{}", found.join("\n"));
    }

    /// A flag without a word of help is a flag a user has to guess at.
    #[test]
    fn every_flag_of_every_subcommand_says_what_it_is() {
        fn walk(command: &clap::Command, path: &str, bare: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    bare.push(format!("{path} --{}", arg.get_long().unwrap_or(arg.get_id().as_str())));
                }
            }
            for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), bare);
            }
        }
        let mut cli = cli_command();
        cli.build();
        let mut bare = Vec::new();
        walk(&cli, "keel", &mut bare);
        assert!(bare.is_empty(), "flags with no help:\n{}", bare.join("\n"));
    }
}
