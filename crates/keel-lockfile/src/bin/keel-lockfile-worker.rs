//! The helper process the multi-process tests of keel-lockfile spawn: lockfile writers, a lock
//! holder to kill, config counters and one-shot patches. Not a user tool; see `tests/`.
//!
//! Usage:
//! - `flush-loop FILE ID FLUSHES`: stage sections `p<ID>-a` and `p<ID>-b` and flush, FLUSHES times;
//!   prints `{"flushes": N, "elapsed_ms": T}`.
//! - `hold-lock FILE TTL_S`: take the sidecar lock, print `held`, sleep until killed (60 s at most).
//! - `increment FILE COUNT`: COUNT times, `get` then `patch` the counter with the expected
//!   generation, retrying on conflict; prints `{"conflicts": N}`.
//! - `patch FILE EXPECTED JSON`: one patch; prints the snapshot, or exits 1 with
//!   `{"expected": E, "current": C}` on a conflict.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_lockfile::{ConfigError, ConfigOptions, ConfigStore, Lockfile, LockfileOptions, acquire_sidecar};
use serde_json::json;

fn number(text: &str) -> u64 {
    text.parse().expect("a worker argument is a number")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let options = LockfileOptions { lock_timeout_ms: 60_000, ..LockfileOptions::default() };
    match args.as_slice() {
        ["flush-loop", file, id, flushes] => {
            let lockfile = Lockfile::open_with(keel_fs::OsStorage, file, options).expect("open the lockfile");
            let started = Instant::now();
            for i in 0..number(flushes) {
                lockfile.set_section(&format!("p{id}-a"), &json!({"process": id, "flush": i})).expect("stage a");
                lockfile.set_section(&format!("p{id}-b"), &json!([id, i])).expect("stage b");
                let report = lockfile.flush().expect("flush");
                assert!(report.written, "a changed section is written");
            }
            let elapsed_ms = started.elapsed().as_millis();
            println!("{}", json!({"flushes": number(flushes), "elapsed_ms": elapsed_ms}));
        }
        ["hold-lock", file, ttl_s] => {
            let _lock = acquire_sidecar(std::path::Path::new(file), "keel-lockfile-worker", number(ttl_s), 5_000)
                .expect("take the sidecar lock");
            println!("held");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(Duration::from_mins(1));
        }
        ["increment", file, count] => {
            let store = ConfigStore::open_with(keel_fs::OsStorage, file, config_options());
            let mut conflicts = 0_u64;
            for _ in 0..number(count) {
                loop {
                    let snapshot = store.get().expect("get");
                    let counter = snapshot.config["counter"].as_u64().unwrap_or(0);
                    match store.patch(&json!({"counter": counter + 1}), Some(snapshot.generation)) {
                        Ok(_) => break,
                        Err(ConfigError::GenerationConflict { .. }) => conflicts += 1,
                        Err(other) => panic!("increment: {other}"),
                    }
                }
            }
            println!("{}", json!({"conflicts": conflicts}));
        }
        ["patch", file, expected, patch] => {
            let store = ConfigStore::open_with(keel_fs::OsStorage, file, config_options());
            let patch = serde_json::from_str(patch).expect("the patch is JSON");
            match store.patch(&patch, Some(number(expected))) {
                Ok(snapshot) => println!("{}", json!({"generation": snapshot.generation, "config": snapshot.config})),
                Err(ConfigError::GenerationConflict { expected, current, .. }) => {
                    println!("{}", json!({"expected": expected, "current": current}));
                    return ExitCode::from(1);
                }
                Err(other) => panic!("patch: {other}"),
            }
        }
        _ => {
            eprintln!("keel-lockfile-worker: unknown arguments {args:?} (see the file's header)");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn config_options() -> ConfigOptions {
    ConfigOptions { lock_timeout_ms: 60_000, ..ConfigOptions::default() }
}
