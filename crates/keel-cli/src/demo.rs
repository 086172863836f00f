//! `keel demo`: three agents ask for regions of one workspace; the kernel decides, the journal
//! records, and a replay shows who holds what. Runs in a temporary directory it removes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use keel_kernel::arbiter::{Outcome, Request, Taxonomy, decide};
use keel_kernel::json::to_line;
use keel_kernel::{Object, Replayed};
use serde_json::{Value, json};

use crate::journal::replay_file;
use crate::{Failure, Status};

struct Ask {
    agent: &'static str,
    lane: &'static str,
    tree: &'static [&'static str],
    mode: &'static str,
}

pub fn run() -> Result<Status, Failure> {
    let dir = std::env::temp_dir().join(format!("keel-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(".keel"))
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(Failure::io)?;
    let result = walk_through(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn append(journal: &Path, record: &Value) -> Result<(), Failure> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .with_context(|| format!("opening {}", journal.display()))
        .map_err(Failure::io)?;
    writeln!(file, "{}", to_line(record))
        .with_context(|| format!("appending to {}", journal.display()))
        .map_err(Failure::io)
}

fn walk_through(dir: &Path) -> Result<Status, Failure> {
    let journal = dir.join(".keel").join("lane-journal.jsonl");
    println!("workspace: {}", dir.display());
    println!("journal:   {}\n", journal.display());
    let asks = [
        Ask { agent: "agent-a", lane: "api", tree: &["src/api/"], mode: "exclusive" },
        Ask { agent: "agent-b", lane: "handlers", tree: &["src/api/handlers.rs"], mode: "exclusive" },
        Ask { agent: "agent-c", lane: "docs", tree: &["docs/", "README.md"], mode: "shared" },
        Ask { agent: "agent-b", lane: "tests", tree: &["tests/api_*.rs"], mode: "exclusive" },
    ];
    let mut seq = 0u64;
    for (n, ask) in asks.iter().enumerate() {
        let live = replay_file(&journal)
            .map_or_else(|_| Vec::new(), |r: Replayed| r.state.live().cloned().collect::<Vec<Object>>());
        let request = Request {
            lane: ask.lane.into(),
            kind: "keyword".into(),
            tree: ask.tree.iter().map(|s| (*s).to_owned()).collect(),
            mode: ask.mode.into(),
            force: false,
        };
        let decision = decide(&request, &live, &Taxonomy::default());
        seq += 1;
        let loop_ts = format!("2026-01-01T00:00:{n:02}Z");
        let verdict = match decision.outcome {
            Outcome::Acquire => {
                let lease = json!({"lane": decision.lane, "lane_kind": decision.lane_kind, "tree": decision.tree,
                    "mode": decision.mode, "loop_ts": loop_ts, "holder": ask.agent, "pid": std::process::id()});
                append(
                    &journal,
                    &json!({"op": "ACQUIRE", "seq": seq, "lane": ask.lane, "loop_ts": loop_ts, "lease": lease}),
                )?;
                "GRANTED"
            }
            Outcome::Refuse => {
                append(
                    &journal,
                    &json!({"op": "REFUSE", "seq": seq, "lane": ask.lane, "loop_ts": loop_ts,
                    "holder": ask.agent, "reason": decision.reason}),
                )?;
                "REFUSED"
            }
        };
        println!("{} asks for lane {:?} over {:?} ({}): {verdict}", ask.agent, ask.lane, ask.tree, ask.mode);
        println!("    {}\n", decision.reason);
    }
    let state = replay_file(&journal)?.state;
    println!("live leases after replaying the journal ({}):", state.live_count());
    for (identity, lease) in state.live_with_identity() {
        let generation = state.generation(identity).unwrap_or(0);
        let holder = lease.get("holder").and_then(Value::as_str).unwrap_or("?");
        let tree = lease.get("tree").map(Value::to_string).unwrap_or_default();
        println!("    {holder:<8} lane {:<10} {tree:<30} generation {generation}", identity.lane);
    }
    Ok(Status::Ok)
}
