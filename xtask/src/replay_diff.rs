//! `cargo xtask replay-diff --cases N --seed S`: differential testing of the kernel's replay.
//!
//! Each case generates a journal with faults and runs [`keel_tests::diff::check`] on it: the
//! kernel's optimised replay against the reference fold, against itself fed in chunks and resumed
//! from a saved state, and against the replay of its own compaction.
//!
//! Case `i` of a run with seed `S` has the case seed `S + i` (wrapping), and everything about the
//! case (length, mix, live-set target, fault rate, the journal's bytes, where the streaming replay
//! is cut) is derived from the case seed alone. So the case a failing run names is replayed on its
//! own with `cargo xtask replay-diff --cases 1 --seed <case seed>`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use keel_tests::diff;
use keel_tests::generate::{self, Faults, GenOptions, Mix, Rng, mix64};

/// The most records in one case's journal.
const CASE_RECORDS_MAX: u64 = 2000;

/// Separates the stream that shapes a case from the one that cuts its streaming replay.
const SPLIT_STREAM: u64 = 0x7370_6C69_7473_2121;

/// The seed of case `case` in a run started with `seed`.
pub fn case_seed(seed: u64, case: u64) -> u64 {
    seed.wrapping_add(case)
}

/// A case's journal and a one-line description of its shape, from its case seed alone.
fn case_journal(case_seed: u64) -> (Vec<u8>, String) {
    let mut rng = Rng::new(mix64(case_seed));
    let records = rng.below(CASE_RECORDS_MAX + 1) as usize;
    let live_target = *rng.pick(&[1, 5, 30, 200]);
    let per_mille = *rng.pick(&[0, 5, 30, 150]);
    let (mix, mix_name) = *rng.pick(&[(Mix::everything(), "everything"), (Mix::benchmark(), "benchmark")]);
    let options = GenOptions { mix, live_target, faults: Faults::all(per_mille) };
    let journal = generate::journal(case_seed, records, &options);
    let shape = format!(
        "{records} records, mix {mix_name}, live target {live_target}, faults {per_mille}‰, {} bytes",
        journal.len()
    );
    (journal, shape)
}

/// Runs `cases` cases starting at `seed`; stops at the first mismatch with an error.
pub fn run(cases: u64, seed: u64) -> Result<()> {
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for case in 0..cases {
        let case_seed = case_seed(seed, case);
        let (journal, shape) = case_journal(case_seed);
        match diff::check(&journal, mix64(case_seed ^ SPLIT_STREAM)) {
            Ok(checked) => {
                records += checked.records;
                bytes += checked.bytes;
            }
            Err(mismatch) => {
                let saved = std::env::temp_dir().join(format!("keel-replay-diff-{case_seed}.jsonl"));
                std::fs::write(&saved, &journal)
                    .with_context(|| format!("writing the failing journal to {}", saved.display()))?;
                eprintln!("replay-diff: case {case} (case seed {case_seed}) failed: {shape}");
                eprintln!("{mismatch}");
                eprintln!("journal: {}", saved.display());
                eprintln!("reproduce: cargo xtask replay-diff --cases 1 --seed {case_seed}");
                bail!("replay-diff: the kernel and the reference disagree on case seed {case_seed}");
            }
        }
    }
    println!(
        "replay-diff: {cases} cases agree ({records} records, {bytes} bytes) in {:.2?}; seeds {seed}..{}",
        started.elapsed(),
        case_seed(seed, cases)
    );
    Ok(())
}
