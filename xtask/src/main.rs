//! keel's build tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `ci`: everything `.ci/run` checks: formatting, clippy with `-D warnings`, tests and doc tests,
//!   the tidy test, and a differential replay run.
//! - `bench <replay|...>`: benchmarks that report ratios measured in one run.
//! - `dist`: the shipped `keel` binary (static on Linux with glibc), at `target/dist/keel`, its
//!   man pages in `target/dist/man/`, smoke-tested with a lease cycle.
//! - `replay-diff`: the kernel's replay against a deliberately simple reference fold.
//!
//! It never runs in production and never writes outside `target/`.

mod bench;
mod bench_etcd;
mod bench_hook;
mod bench_mcp;
mod bench_mutator;
mod bench_store;
mod ci;
mod dist;
mod replay_diff;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "keel's build tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Formatting, clippy -D warnings, all tests, doc tests, tidy, differential replay.
    Ci,
    /// Benchmarks: ratios measured in one run.
    Bench {
        /// Which benchmark.
        #[arg(value_enum, default_value_t = bench::Which::All)]
        which: bench::Which,
    },
    /// Build the shipped keel binary (static on Linux with glibc) into target/dist/keel, its man pages into
    /// target/dist/man/, and run a lease cycle through it.
    Dist,
    /// Check the optimised replay against the reference fold on generated journals.
    ReplayDiff {
        /// How many journals to generate.
        #[arg(long, default_value_t = 500)]
        cases: u64,
        /// The seed of the first case; case i uses a seed derived from (seed, i).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Xtask::parse().task {
        Task::Ci => ci::run(),
        Task::Bench { which } => bench::run(which),
        Task::Dist => dist::run(),
        Task::ReplayDiff { cases, seed } => replay_diff::run(cases, seed),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_owned()
}
