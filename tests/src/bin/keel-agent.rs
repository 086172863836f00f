//! A test agent: loops acquire → hold → release over the given trees on one journal, and reports
//! what was acknowledged, so tests can race many of them and kill them at random moments.
//!
//! Usage: `keel-agent JOURNAL NAME SECONDS HOLD_MS OCCUPANCY TREE[;TREE...] [--compact-every N]`
//! where each TREE is comma-separated entries. Prints `GRANT <lane> <loop_ts> <generation>` once an
//! acquire has returned (the grant is durable) and `RELEASED <lane> <loop_ts>` once a release has
//! returned. While holding, it appends `ENTER`/`EXIT` lines to the OCCUPANCY file (one `write` on
//! an `O_APPEND` descriptor each, so the file's line order is the real order of events) for a
//! checker to verify that no two colliding regions were ever held at once.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalOptions, LeaseBackend, LeaseRef};
use keel_kernel::expiry::ExpiryPolicy;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: keel-agent JOURNAL NAME SECONDS HOLD_MS OCCUPANCY TREE[;TREE...] [--compact-every N]");
        std::process::exit(2);
    }
    let journal_path = PathBuf::from(&args[1]);
    let name = args[2].clone();
    let seconds: f64 = args[3].parse().expect("SECONDS is a number");
    let hold_ms: u64 = args[4].parse().expect("HOLD_MS is an integer");
    let occupancy = PathBuf::from(&args[5]);
    let trees: Vec<Vec<String>> = args[6].split(';').map(|t| t.split(',').map(str::to_owned).collect()).collect();
    let compact_every: Option<u64> = args
        .iter()
        .position(|a| a == "--compact-every")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).expect("--compact-every takes an integer"));
    let options = JournalOptions {
        // Dead agents' leases are reclaimed quickly: the holder process is gone once killed.
        expiry: ExpiryPolicy { default_ttl_s: 3600, grace_s: 1, ..ExpiryPolicy::default() },
        compact_threshold_bytes: None,
        ..JournalOptions::default()
    };
    let journal = Journal::open(&journal_path, options);
    let mut occupancy = OpenOptions::new().create(true).append(true).open(&occupancy).expect("occupancy file");
    let stdout = std::io::stdout();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let tree = &trees[(round as usize + name.len()) % trees.len()];
        let lane = format!("{name}-{round}");
        let request = AcquireRequest {
            lane: lane.clone(),
            kind: "keyword".into(),
            tree: tree.clone(),
            mode: "exclusive".into(),
            owner: name.clone(),
            ..AcquireRequest::default()
        };
        match journal.acquire(&request) {
            Ok(AcquireOutcome::Acquire(grant)) => {
                let loop_ts = grant.identity.loop_ts.clone();
                writeln!(stdout.lock(), "GRANT {lane} {loop_ts} {}", grant.generation).expect("stdout");
                occupancy
                    .write_all(format!("ENTER {name} {loop_ts} {}\n", tree.join(",")).as_bytes())
                    .expect("occupancy");
                std::thread::sleep(Duration::from_millis(hold_ms));
                occupancy
                    .write_all(format!("EXIT {name} {loop_ts} {}\n", tree.join(",")).as_bytes())
                    .expect("occupancy");
                writeln!(stdout.lock(), "RELEASING {lane} {loop_ts}").expect("stdout");
                match journal.release(&LeaseRef { lane: &lane, loop_ts: Some(&loop_ts) }, &name) {
                    Ok(Some(_)) => writeln!(stdout.lock(), "RELEASED {lane} {loop_ts}").expect("stdout"),
                    Ok(None) => writeln!(stdout.lock(), "LOST {lane} {loop_ts}").expect("stdout"),
                    Err(error) => eprintln!("{name}: release failed: {error}"),
                }
            }
            Ok(AcquireOutcome::Refuse { .. }) => std::thread::sleep(Duration::from_millis(1)),
            Err(error) => {
                eprintln!("{name}: acquire failed: {error}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if compact_every.is_some_and(|n| round.is_multiple_of(n))
            && let Err(error) = journal.compact()
        {
            eprintln!("{name}: compact failed: {error}");
        }
    }
}
