//! `keel lock ...`: reading and updating sections of a shared lockfile (keel-lockfile), and the
//! value and output arguments `keel config` shares.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Subcommand;
use keel_kernel::json::to_line;
use keel_lockfile::{Lockfile, LockfileOptions};
use serde_json::{Value, json};

use crate::{Failure, Status, print};

// The document a command works on. (A plain comment, as on every flattened argument struct:
// see `Command` in main.rs.)
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The JSON document.
    #[arg(long)]
    pub file: PathBuf,
    /// How long to wait for the document's lock before giving up with exit 3, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub lock_timeout_ms: u64,
}

// Where a JSON value comes from: the command line or a file. (A plain comment: see `Command`
// in main.rs.)
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ValueSource {
    /// The value, as JSON text (invalid JSON: exit 2).
    #[arg(long)]
    pub value: Option<String>,
    /// A file holding the value as JSON (unreadable or invalid: exit 4).
    #[arg(long)]
    pub from: Option<PathBuf>,
}

impl ValueSource {
    /// The value, parsed.
    pub fn load(&self) -> Result<Value, Failure> {
        match (&self.value, &self.from) {
            (Some(text), _) => {
                serde_json::from_str(text).map_err(|e| Failure::usage(anyhow!("--value is not valid JSON: {e}")))
            }
            (None, Some(path)) => {
                // No document may be larger, so no value is read past that (a huge file once
                // cost gigabytes before the limit refused it).
                let limit = keel_lockfile::DOCUMENT_BYTES_MAX_DEFAULT;
                let bytes = match keel_fs::read_bounded(path, limit) {
                    Err(e) if keel_fs::is_too_large(&e) => {
                        return Err(Failure::usage(anyhow!("--from {}: larger than {limit} bytes", path.display())));
                    }
                    read => read.with_context(|| format!("read --from {}", path.display())).map_err(Failure::io)?,
                };
                serde_json::from_slice(&bytes)
                    .map_err(|e| Failure::io(anyhow!("--from {}: invalid JSON: {e}", path.display())))
            }
            (None, None) => Err(Failure::usage(anyhow!("give --value JSON or --from FILE"))),
        }
    }
}

// `keel lock` subcommands. (A plain comment: see `Command` in main.rs.)
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum LockCommand {
    /// Print a section's JSON value (exit 1 when absent), or the whole document without SECTION.
    Get {
        #[command(flatten)]
        file: FileArgs,
        /// The section.
        section: Option<String>,
    },
    /// Set a section and flush, keeping every other section in the file.
    Set {
        #[command(flatten)]
        file: FileArgs,
        /// The section.
        section: String,
        #[command(flatten)]
        source: ValueSource,
    },
    /// Print the inputs digest, or set it with --set (an empty digest clears it).
    Digest {
        #[command(flatten)]
        file: FileArgs,
        /// The new digest.
        #[arg(long)]
        set: Option<String>,
    },
    /// Remove a section and flush, keeping every other section in the file.
    Unset {
        #[command(flatten)]
        file: FileArgs,
        /// The section.
        section: String,
    },
}

fn open(file: &FileArgs) -> Result<Lockfile, Failure> {
    let options = LockfileOptions { lock_timeout_ms: file.lock_timeout_ms, ..LockfileOptions::default() };
    Lockfile::open_with(keel_fs::OsStorage, &file.file, options).map_err(crate::failure)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Runs one `keel lock` command; `json` selects one JSON object on stdout instead of a sentence.
pub fn run(command: &LockCommand, json: bool) -> Result<Status, Failure> {
    match command {
        LockCommand::Get { file, section: None } => {
            let document = open(file)?.document();
            outln!(
                "{}",
                if json {
                    to_line(&json!({"file": shown(&file.file), "document": document}))
                } else {
                    document.to_string()
                }
            )?;
            Ok(Status::Ok)
        }
        LockCommand::Get { file, section: Some(section) } => {
            let value = open(file)?.section_value(section).map_err(crate::failure)?;
            let present = value.is_some();
            if json {
                outln!(
                    "{}",
                    to_line(
                        &json!({"file": shown(&file.file), "section": section, "present": present, "value": value})
                    )
                )?;
            } else if let Some(value) = value {
                outln!("{value}")?;
            } else {
                eprintln!("keel: no section {section:?} in {}", file.file.display());
            }
            Ok(if present { Status::Ok } else { Status::Refused })
        }
        LockCommand::Set { file, section, source } => {
            let value = source.load()?;
            let lockfile = open(file)?;
            lockfile.set_section(section, &value).map_err(crate::failure)?;
            let report = lockfile.flush().map_err(crate::failure)?;
            let object = json!({"outcome": "set", "file": shown(&file.file), "section": section, "written": report.written, "bytes": report.bytes});
            print(
                json,
                &object,
                &format!("set section {section:?} in {} ({} bytes)", file.file.display(), report.bytes),
            )?;
            Ok(Status::Ok)
        }
        LockCommand::Digest { file, set: None } => {
            let digest = open(file)?.inputs_digest();
            let object = json!({"file": shown(&file.file), "inputs_digest": digest});
            print(json, &object, digest.as_deref().unwrap_or(""))?;
            Ok(Status::Ok)
        }
        LockCommand::Digest { file, set: Some(digest) } => {
            let lockfile = open(file)?;
            lockfile.set_inputs_digest(digest).map_err(crate::failure)?;
            let report = lockfile.flush().map_err(crate::failure)?;
            let value = (!digest.is_empty()).then_some(digest.as_str());
            let object = json!({"outcome": "digest", "file": shown(&file.file), "inputs_digest": value, "written": report.written});
            let sentence = match value {
                Some(d) => format!("inputs digest of {} is now {d}", file.file.display()),
                None => format!("cleared the inputs digest of {}", file.file.display()),
            };
            print(json, &object, &sentence)?;
            Ok(Status::Ok)
        }
        LockCommand::Unset { file, section } => {
            let lockfile = open(file)?;
            let present = lockfile.section_value(section).map_err(crate::failure)?.is_some();
            // Removing nothing writes nothing: no file appears where there was none.
            let written = if present {
                lockfile.remove_section(section).map_err(crate::failure)?;
                lockfile.flush().map_err(crate::failure)?.written
            } else {
                false
            };
            let object = json!({"outcome": "unset", "file": shown(&file.file), "section": section, "was_present": present, "written": written});
            let sentence = if present {
                format!("removed section {section:?} from {}", file.file.display())
            } else {
                format!("no section {section:?} in {}; nothing to remove", file.file.display())
            };
            print(json, &object, &sentence)?;
            Ok(Status::Ok)
        }
    }
}
