//! `cargo xtask ci`: the one test command (the README's, and what `.ci/run` calls).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::workspace_root;

/// Cases of the differential replay run in CI: modest, so CI stays well under its time budget.
const REPLAY_DIFF_CASES: u64 = 300;
/// The CLI's etcd backend: off by default (it needs protoc to build), on in CI and in dist.
pub const ETCD: &str = "keel-cli/etcd";

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("==> cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        // Snapshot tests must fail on a difference, never write a new snapshot in CI.
        .env("INSTA_UPDATE", "no")
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    println!("    ok in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    cargo(&["fmt", "--all", "--", "--check"])?;
    // Every feature, so the etcd backend's code paths in the CLI are linted too.
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--locked", "--", "-D", "warnings"])?;
    // Tidy first: it is fast and says what is structurally wrong before the long tests run.
    cargo(&["test", "--locked", "-p", "keel-tests", "--test", "tidy"])?;
    // With the CLI's etcd feature: its tests against a real etcd run here (the shipped binary has
    // it too); the other crates' features stay as their dependents set them.
    cargo(&["test", "--workspace", "--locked", "--all-targets", "--no-fail-fast", "--features", ETCD])?;
    cargo(&["test", "--workspace", "--locked", "--doc", "--features", ETCD])?;
    // A broken link in the docs is a defect like any other.
    cargo_with(&["doc", "--workspace", "--no-deps", "--locked", "--all-features"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    let cases = REPLAY_DIFF_CASES.to_string();
    cargo(&["run", "--locked", "-p", "xtask", "--", "replay-diff", "--cases", &cases, "--seed", "20261123"])?;
    // The shipped binary is built differently (statically, on Linux): build it and run a lease
    // cycle through it.
    crate::dist::run()?;
    // keel finds the repository as the workspace of any command run inside it: a test or smoke
    // run that wrote keel state here would bind the repository to a temporary journal.
    let state = workspace_root().join(".keel");
    if state.exists() {
        bail!("{} exists: a test ran a writing keel command inside the repository", state.display());
    }
    println!("ci: all checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
