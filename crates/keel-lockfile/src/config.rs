//! The config runtime (seed 003, minus its races): one JSON object with a generation counter that
//! increases on every write, for optimistic concurrency across processes.
//!
//! # On disk
//! One file, `{"config": {...}, "config_version": 1, "generation": N}`, replaced atomically (temp,
//! fsync, rename, directory fsync) on every write: config and generation travel together, so no
//! crash can leave one changed without the other. Writers serialize under a [`OsLock`] on
//! `<path>.lock`, which the kernel releases when its holder dies: no stale-lock guessing, no lock
//! file deleted on takeover. Readers take no lock: a rename is atomic, they see old or new.

use std::path::{Path, PathBuf};

use keel_fs::{OsLock, OsStorage, Storage, write_atomic_with};
use keel_kernel::merge::{GenerationError, json_type_name, merge_patch, next_generation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::lockfile::DOCUMENT_BYTES_MAX_DEFAULT;
use crate::read::{Found, read_document};

/// The config file format this code writes and the newest it understands.
pub const CONFIG_VERSION: u64 = 1;

const CONFIG_KEY: &str = "config";
const GENERATION_KEY: &str = "generation";
const VERSION_KEY: &str = "config_version";

/// How a [`ConfigStore`] behaves. `Default` is what the CLI uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOptions {
    /// How long a write waits for the writer lock before failing with "lock busy".
    pub lock_timeout_ms: u64,
    /// The largest file read or written, in bytes.
    pub document_bytes_max: u64,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        Self { lock_timeout_ms: 10_000, document_bytes_max: DOCUMENT_BYTES_MAX_DEFAULT }
    }
}

/// A config and the generation it was written at (0 with an empty object: never written).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The config, always a JSON object.
    pub config: Value,
    /// How many writes the store has seen.
    pub generation: u64,
}

/// A config document shared by processes: read with [`ConfigStore::get`], write with
/// [`ConfigStore::set`] or [`ConfigStore::patch`] expecting the generation you read.
#[derive(Debug)]
pub struct ConfigStore<S: Storage = OsStorage> {
    path: PathBuf,
    storage: S,
    options: ConfigOptions,
}

impl ConfigStore<OsStorage> {
    /// The store at `path` on the real file system with default options. Touches nothing.
    pub fn open(path: impl AsRef<Path>) -> Self {
        Self::open_with(OsStorage, path, ConfigOptions::default())
    }
}

impl<S: Storage> ConfigStore<S> {
    /// The store at `path` through `storage` (tests pass a failing or crashing one). Touches
    /// nothing; the writer lock is always on the real file system, at `<path>.lock`.
    pub fn open_with(storage: S, path: impl AsRef<Path>, options: ConfigOptions) -> Self {
        Self { path: path.as_ref().to_owned(), storage, options }
    }

    /// The config file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current config and generation (an empty object and 0 for a store never written).
    pub fn get(&self) -> Result<Snapshot, ConfigError> {
        self.read(&self.target()?, "read").map(|(_, snapshot)| snapshot)
    }

    /// The file every operation reads, locks and replaces: a symlinked store's target, so the
    /// link survives a write and writers through it and through the target exclude each other.
    fn target(&self) -> Result<PathBuf, ConfigError> {
        keel_fs::resolve_symlinks(&self.path).map_err(ConfigError::Fs)
    }

    /// Replaces the config. With `expected_generation`, only if the store is still at it
    /// ([`ConfigError::GenerationConflict`] otherwise, nothing written). Returns the new snapshot.
    pub fn set(&self, config: Value, expected_generation: Option<u64>) -> Result<Snapshot, ConfigError> {
        self.write("set", expected_generation, |_| Ok(config))
    }

    /// Applies a JSON Merge Patch (RFC 7386) to the config, with the same generation check as
    /// [`ConfigStore::set`]. The result must still be an object.
    pub fn patch(&self, merge_patch_value: &Value, expected_generation: Option<u64>) -> Result<Snapshot, ConfigError> {
        self.write("patch", expected_generation, |current| {
            let mut config = current.clone();
            merge_patch(&mut config, merge_patch_value);
            Ok(config)
        })
    }

    /// Read, decide, write, all under the writer lock.
    fn write(
        &self,
        op: &'static str,
        expected_generation: Option<u64>,
        change: impl FnOnce(&Value) -> Result<Value, ConfigError>,
    ) -> Result<Snapshot, ConfigError> {
        let path = self.target()?;
        let _writer = OsLock::acquire_timeout(&OsLock::path_for(&path), self.options.lock_timeout_ms)?;
        let (mut envelope, current) = self.read(&path, op)?;
        let generation = next_generation(expected_generation, current.generation).map_err(|e| match e {
            GenerationError::Conflict { expected, current } => {
                ConfigError::GenerationConflict { path: path.clone(), expected, current }
            }
            GenerationError::Exhausted { current } => ConfigError::GenerationExhausted { path: path.clone(), current },
        })?;
        let config = change(&current.config)?;
        if !config.is_object() {
            return Err(ConfigError::NotAnObject { op, path: path.clone(), found: json_type_name(&config) });
        }
        envelope.insert(VERSION_KEY.to_owned(), Value::from(CONFIG_VERSION));
        envelope.insert(GENERATION_KEY.to_owned(), Value::from(generation));
        envelope.insert(CONFIG_KEY.to_owned(), config.clone());
        let mut bytes = serde_json::to_vec_pretty(&envelope).expect("JSON values serialise into memory");
        // A config nested 127 deep parses alone but not inside its envelope: refuse it rather
        // than write a file no reader can open.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return Err(ConfigError::Unreadable { op, path: path.clone(), reason: e.to_string() });
        }
        bytes.push(b'\n');
        if bytes.len() as u64 > self.options.document_bytes_max {
            let bytes_max = self.options.document_bytes_max;
            return Err(ConfigError::TooLarge { op, path: path.clone(), bytes: bytes.len() as u64, bytes_max });
        }
        // A file system that cannot fsync a directory (`DirSync::Unsupported`) is accepted as keel-fs
        // accepts it: the write is still atomic, only its survival of a power cut is not promised.
        let _dir_sync = write_atomic_with(&self.storage, &path, &bytes).map_err(ConfigError::Fs)?.dir_sync;
        Ok(Snapshot { config, generation })
    }

    /// The file's envelope (every key kept, so a newer writer's extra keys survive a rewrite) and
    /// the snapshot it holds.
    fn read(&self, path: &Path, op: &'static str) -> Result<(Map<String, Value>, Snapshot), ConfigError> {
        let bytes = match read_document(&self.storage, path, self.options.document_bytes_max)? {
            Found::Missing => return Ok((Map::new(), Snapshot { config: Value::Object(Map::new()), generation: 0 })),
            Found::TooLarge { bytes } => {
                let bytes_max = self.options.document_bytes_max;
                return Err(ConfigError::TooLarge { op, path: path.to_owned(), bytes, bytes_max });
            }
            Found::Bytes(bytes) => bytes,
        };
        let corrupt = |reason: String| ConfigError::Corrupt { op, path: path.to_owned(), reason };
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column())))?;
        let Value::Object(envelope) = value else {
            return Err(corrupt(format!("the file is JSON {}, not an object", json_type_name(&value))));
        };
        match envelope.get(VERSION_KEY).map(Value::as_u64) {
            None | Some(Some(0..=CONFIG_VERSION)) => {}
            Some(Some(found)) => {
                return Err(corrupt(format!(
                    "config_version {found} is newer than the newest this code understands ({CONFIG_VERSION})"
                )));
            }
            Some(None) => return Err(corrupt("config_version is not a non-negative integer".to_owned())),
        }
        let Some(generation) = envelope.get(GENERATION_KEY).and_then(Value::as_u64) else {
            return Err(corrupt("generation is missing or not a non-negative integer".to_owned()));
        };
        let config = match envelope.get(CONFIG_KEY) {
            Some(config @ Value::Object(_)) => config.clone(),
            Some(other) => return Err(corrupt(format!("config is {}, not an object", json_type_name(other)))),
            None => return Err(corrupt("config is missing".to_owned())),
        };
        Ok((envelope, Snapshot { config, generation }))
    }
}
