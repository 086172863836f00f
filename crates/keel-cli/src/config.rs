//! `keel config ...`: the generation-checked config store (keel-lockfile's `config` runtime).

use clap::Subcommand;
use keel_kernel::json::to_line;
use keel_lockfile::{ConfigError, ConfigOptions, ConfigStore, Snapshot};
use serde_json::json;

use crate::lock::{FileArgs, ValueSource};
use crate::{Failure, Status, StdoutError};

// `keel config` subcommands. (A plain comment: see `Command` in main.rs.)
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ConfigCommand {
    /// Print the config and its generation (an empty object and 0 for a store never written).
    Get {
        #[command(flatten)]
        file: FileArgs,
    },
    /// Replace the config (a JSON object); with --expected-generation only if it is still current.
    Set {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        source: ValueSource,
        /// Refuse (exit 1) unless the store is at this generation.
        #[arg(long)]
        expected_generation: Option<u64>,
    },
    /// Apply a JSON Merge Patch (RFC 7386); with --expected-generation only if it is still current.
    Patch {
        #[command(flatten)]
        file: FileArgs,
        /// The merge patch, as JSON text.
        #[arg(long)]
        value: String,
        /// Refuse (exit 1) unless the store is at this generation.
        #[arg(long)]
        expected_generation: Option<u64>,
    },
}

fn store(file: &FileArgs) -> ConfigStore {
    let options = ConfigOptions { lock_timeout_ms: file.lock_timeout_ms, ..ConfigOptions::default() };
    ConfigStore::open_with(keel_fs::OsStorage, &file.file, options)
}

fn print_snapshot(json: bool, snapshot: &Snapshot, verb: &str) -> Result<(), StdoutError> {
    if json {
        outln!("{}", to_line(&json!({"config": snapshot.config, "generation": snapshot.generation})))
    } else if verb.is_empty() {
        outln!("generation {}: {}", snapshot.generation, snapshot.config)
    } else {
        outln!("{verb} generation {}: {}", snapshot.generation, snapshot.config)
    }
}

/// A write's result: the snapshot, or, for a conflict under `--json`, the conflict as the outcome
/// on stdout (the message still goes to stderr) and exit 1.
fn written(json: bool, result: Result<Snapshot, ConfigError>) -> Result<Status, Failure> {
    match result {
        Ok(snapshot) => {
            print_snapshot(json, &snapshot, "wrote")?;
            Ok(Status::Ok)
        }
        Err(conflict @ ConfigError::GenerationConflict { expected, current, .. }) if json => {
            eprintln!("keel: {conflict}");
            outln!("{}", to_line(&json!({"outcome": "conflict", "expected": expected, "current": current})))?;
            Ok(Status::Refused)
        }
        Err(other) => Err(crate::failure(other)),
    }
}

/// Runs one `keel config` command; `json` selects one JSON object on stdout instead of a sentence.
pub fn run(command: &ConfigCommand, json: bool) -> Result<Status, Failure> {
    match command {
        ConfigCommand::Get { file } => {
            let snapshot = store(file).get().map_err(crate::failure)?;
            print_snapshot(json, &snapshot, "")?;
            Ok(Status::Ok)
        }
        ConfigCommand::Set { file, source, expected_generation } => {
            let config = source.load()?;
            written(json, store(file).set(config, *expected_generation))
        }
        ConfigCommand::Patch { file, value, expected_generation } => {
            let patch = serde_json::from_str(value)
                .map_err(|e| Failure::usage(anyhow::anyhow!("--value is not valid JSON: {e}")))?;
            written(json, store(file).patch(&patch, *expected_generation))
        }
    }
}
