//! What the binary's end-to-end tests share: running `keel` in a directory, and reading its output.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[cfg(feature = "etcd")]
pub mod etcd;

/// `keel args` run in `cwd` with `stdin`, the environment naming no root, journal, grace, lease
/// backend or log filter unless `env` does.
pub fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .env_remove("KEEL_GRACE_S")
        .env_remove("KEEL_BACKEND")
        .env_remove("KEEL_ETCD_ENDPOINTS")
        .env_remove("KEEL_ETCD_PREFIX")
        .env_remove("KEEL_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("keel starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("keel runs");
    writer.join().expect("writer thread").expect("stdin written");
    output
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// stdout as one JSON value.
pub fn json(output: &Output) -> Value {
    serde_json::from_str(stdout(output).trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {:?}", stdout(output), stderr(output)))
}

/// Seconds since the Unix epoch now.
pub fn now_s() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_secs()).expect("before 2262")
}

/// `git args` in `cwd`, with a fixed author; panics naming the command if it fails.
pub fn git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
