//! Test helper (not shipped): runs one mutation through a [`keel_mutator::Mutator`] and sends
//! itself SIGKILL at a named point, so the crash tests can cut a write or delete anywhere.
//!
//! Arguments: ROOT JOURNAL OP PATH `CONTENT_FILE` OWNER LANE `LOOP_TS` GENERATION EXPECT INTENT POINT,
//! where OP is `write` or `delete`, EXPECT is a hash, `absent` or `any`, and POINT a
//! [`keel_mutator::Point`] name (or `none`). Exit 0 after the mutation when the point is never
//! reached, 2 on bad arguments, 4 on an error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use keel_journal::{Journal, JournalOptions};
use keel_kernel::gate::Holder;
use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Outcome, Point, Request, StepHook};

fn run(args: &[String], crash_at: Option<Point>) -> Result<Outcome, Box<dyn std::error::Error>> {
    let [root, journal, op, path, content_file, owner, lane, loop_ts, generation, expect, intent, _] = args else {
        return Err(format!("expected 12 arguments, got {}", args.len()).into());
    };
    let expect = match expect.as_str() {
        "absent" => Expect::Absent,
        "any" => Expect::Any,
        hash => Expect::Hash(hash.to_owned()),
    };
    let hook: StepHook = Arc::new(move |reached| {
        if Some(reached) == crash_at {
            // kill -9 ourselves: no destructor, no flush; only the kernel releases the lock.
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
            std::process::abort();
        }
    });
    let options = MutatorOptions { on_step: Some(hook), ..MutatorOptions::default() };
    let journal = Journal::open(Path::new(journal), JournalOptions::default());
    let mutator = Mutator::open(Path::new(root), journal, options)?;
    let holder = Holder {
        owner: owner.clone(),
        lane: lane.clone(),
        loop_ts: Some(loop_ts.clone()),
        generation: generation.parse()?,
    };
    let request = Request { holder, expect, intent: IntentId::new(intent)? };
    Ok(match op.as_str() {
        "write" => {
            // The limit the mutator enforces anyway: a larger content is refused either way.
            let content = keel_fs::read_bounded(Path::new(content_file), keel_mutator::CONTENT_BYTES_MAX_DEFAULT)?;
            mutator.write(path, &content, &request)?
        }
        "delete" => mutator.delete(path, &request)?,
        other => return Err(format!("unknown op {other:?}").into()),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let point = args.last().map_or("none", String::as_str);
    let crash_at = Point::from_name(point);
    if crash_at.is_none() && point != "none" {
        eprintln!("keel-mutator-crash: unknown point {point:?}");
        return ExitCode::from(2);
    }
    match run(&args, crash_at) {
        Ok(outcome) => {
            println!("{}", serde_json::to_string(&outcome).expect("outcomes serialise"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keel-mutator-crash: {error}");
            ExitCode::from(4)
        }
    }
}
