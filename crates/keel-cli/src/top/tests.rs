//! `keel top` drawn with ratatui's `TestBackend` over a scripted fleet at a fixed clock: real
//! journal records written by the lease service, read back the way the live view reads them.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use keel_journal::{AcquireOutcome, AcquireRequest, HolderPid, Journal, JournalOptions, LeaseBackend, LeaseRef};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::model::Model;
use super::view::{self, Context};
use super::{Source, frame_text};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;
/// When the scripted fleet is looked at: ten minutes in.
const NOW: i64 = T0 + 600;

fn options_at(time: &Arc<AtomicI64>) -> JournalOptions {
    let time = Arc::clone(time);
    JournalOptions {
        host_id: "test-host".to_owned(),
        clock: Arc::new(move || time.load(Ordering::SeqCst) as f64),
        ..JournalOptions::default()
    }
}

fn request(owner: &str, lane: &str, tree: &str) -> AcquireRequest {
    AcquireRequest {
        lane: lane.into(),
        tree: vec![tree.into()],
        owner: owner.into(),
        holder_pid: HolderPid::None,
        ..AcquireRequest::default()
    }
}

fn append(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("open the journal");
    writeln!(file, "{line}").expect("append to the journal");
}

/// A fleet of seven holders written through the lease service, ten minutes in: one alive, one
/// idle past its grace, one past its TTL, one whose holder process is gone, one beaten by a host
/// whose clock runs an hour ahead, one granted within the last minute; two refused requests
/// (one of them an agent's edit through `keel hook`), and a damaged line that stops grants.
fn scripted_fleet(path: &Path) {
    let time = Arc::new(AtomicI64::new(T0));
    let journal = Journal::open(path, options_at(&time));
    let at = |seconds: i64| time.store(T0 + seconds, Ordering::SeqCst);
    let granted = |outcome: AcquireOutcome| assert!(matches!(outcome, AcquireOutcome::Acquire(_)), "{outcome:?}");
    granted(journal.acquire(&request("agent-a", "api", "src/api/")).expect("acquire"));
    at(60);
    granted(journal.acquire(&request("agent-b", "docs", "docs/")).expect("acquire"));
    at(120);
    let short = AcquireRequest { ttl_minutes: Some(5.0), ..request("agent-c", "tests", "tests/") };
    granted(journal.acquire(&short).expect("acquire"));
    at(200);
    // A holder on this host whose process is gone: no pid above Linux's largest (2^22) runs.
    append(
        path,
        r#"{"op": "ACQUIRE", "lane": "build", "loop_ts": "2026-01-01T00:03:20Z", "ts": "2026-01-01T00:03:20Z", "lease": {"acquired_at": "2026-01-01T00:03:20Z", "grace_s": 120, "holder": "agent-d", "host_id": "test-host", "lane": "build", "lane_kind": "keyword", "loop_ts": "2026-01-01T00:03:20Z", "mode": "exclusive", "pid": 4194305, "tree": ["target/"], "ttl_minutes": 120}}"#,
    );
    at(300);
    granted(journal.acquire(&request("agent-e", "bench", "bench/")).expect("acquire"));
    let ahead = Arc::new(AtomicI64::new(T0 + 300 + 3600));
    let skewed = Journal::open(path, options_at(&ahead));
    assert!(skewed.heartbeat(&LeaseRef::lane("bench"), "agent-e", None).expect("heartbeat").is_some());
    at(400);
    let refused = journal.acquire(&request("agent-f", "handlers", "src/api/handlers.rs")).expect("acquire");
    assert!(matches!(refused, AcquireOutcome::Refuse { recorded: true, .. }), "{refused:?}");
    at(450);
    let hook =
        journal.acquire(&request("claude-4242", "edit:src/api/routes.rs", "src/api/routes.rs")).expect("acquire");
    assert!(matches!(hook, AcquireOutcome::Refuse { recorded: true, .. }), "{hook:?}");
    at(570);
    granted(journal.acquire(&request("agent-g", "ui", "ui/")).expect("acquire"));
    at(580);
    append(path, r#"{"op": "ACQUIRE", "lane": "lost"#);
    at(590);
    assert!(journal.heartbeat(&LeaseRef::lane("api"), "agent-a", None).expect("heartbeat").is_some());
}

fn context() -> Context {
    Context {
        workspace: "/work/fleet".to_owned(),
        journal: ".keel/lane-journal.jsonl".to_owned(),
        following: "q quit · following the journal by file events, redrawn every 500 ms".to_owned(),
        problem: None,
    }
}

fn read_at(path: &Path, now: i64) -> Model {
    let time = Arc::new(AtomicI64::new(now));
    let mut source = Source::open(path, options_at(&time));
    let mut model = Model::new();
    source.catch_up(&mut model).expect("read the journal");
    model
}

#[test]
fn a_scripted_fleet_shows_every_verdict_the_refusals_the_grant_rate_and_the_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    scripted_fleet(&path);
    let model = read_at(&path, NOW);
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("a test terminal");
    terminal.draw(|frame| view::draw(frame, &model, &context(), NOW)).expect("draw");
    insta::assert_snapshot!(terminal.backend());
}

#[test]
fn an_empty_workspace_says_there_is_nothing_live_and_nothing_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = read_at(&dir.path().join("lane-journal.jsonl"), NOW);
    let mut terminal = Terminal::new(TestBackend::new(100, 14)).expect("a test terminal");
    terminal.draw(|frame| view::draw(frame, &model, &context(), NOW)).expect("draw");
    insta::assert_snapshot!(terminal.backend());
}

#[test]
fn a_fleet_larger_than_the_screen_says_how_many_leases_are_not_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    let time = Arc::new(AtomicI64::new(T0));
    let journal = Journal::open(&path, options_at(&time));
    for n in 0..30 {
        let outcome = journal.acquire(&request(&format!("agent-{n}"), &format!("lane-{n}"), &format!("src/{n}/")));
        assert!(matches!(outcome, Ok(AcquireOutcome::Acquire(_))));
    }
    let model = read_at(&path, T0 + 5);
    let mut terminal = Terminal::new(TestBackend::new(120, 20)).expect("a test terminal");
    terminal.draw(|frame| view::draw(frame, &model, &context(), T0 + 5)).expect("draw");
    let screen = terminal.backend().to_string();
    assert!(screen.contains("live leases: 8 of 30 shown"), "{screen}");
    assert!(screen.contains("│agent-7 ") && !screen.contains("│agent-8 "), "{screen}");
    assert!(screen.contains("30 grants/min"), "{screen}");
}

#[test]
fn a_compaction_while_top_runs_loses_no_refusal_and_counts_none_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    let time = Arc::new(AtomicI64::new(T0));
    let journal = Journal::open(&path, options_at(&time));
    assert!(matches!(journal.acquire(&request("agent-a", "api", "src/api/")), Ok(AcquireOutcome::Acquire(_))));
    assert!(matches!(journal.acquire(&request("agent-b", "x", "src/api/x")), Ok(AcquireOutcome::Refuse { .. })));
    let mut source = Source::open(&path, options_at(&time));
    let mut model = Model::new();
    source.refresh(&mut model).expect("refresh");
    assert_eq!(model.refusals_total(), 1);
    journal.compact().expect("compact");
    assert!(matches!(journal.acquire(&request("agent-c", "y", "src/api/y")), Ok(AcquireOutcome::Refuse { .. })));
    source.refresh(&mut model).expect("refresh");
    let requesters: Vec<_> = model.refusals().map(|r| r.requester.as_str()).collect();
    assert_eq!(requesters, ["agent-c", "agent-b"]);
    assert_eq!(model.restarts(), 1);
    assert_eq!(model.grants_per_minute(T0), 1);
    assert_eq!(model.leases_total(), 1);
}

#[test]
fn a_refresh_reads_only_what_the_journal_gained() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    let time = Arc::new(AtomicI64::new(T0));
    let journal = Journal::open(&path, options_at(&time));
    assert!(matches!(journal.acquire(&request("agent-a", "api", "src/api/")), Ok(AcquireOutcome::Acquire(_))));
    let mut source = Source::open(&path, options_at(&time));
    let mut model = Model::new();
    source.refresh(&mut model).expect("refresh");
    assert_eq!(model.records_read(), 1);
    source.refresh(&mut model).expect("refresh");
    assert_eq!(model.records_read(), 1, "nothing new, nothing read");
    assert!(journal.heartbeat(&LeaseRef::lane("api"), "agent-a", None).expect("heartbeat").is_some());
    source.refresh(&mut model).expect("refresh");
    assert_eq!(model.records_read(), 2, "one record appended, one read");
}

#[test]
fn a_one_shot_frame_is_plain_text_as_tall_as_the_fleet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lane-journal.jsonl");
    scripted_fleet(&path);
    let model = read_at(&path, NOW);
    let lines = frame_text(&model, &context(), NOW, 120);
    assert_eq!(lines.len(), usize::from(view::height_for(&model)));
    for holder in ["agent-a", "agent-b", "agent-c", "agent-d", "agent-e", "agent-g"] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("│{holder}"))), "{holder} in\n{}", lines.join("\n"));
    }
    assert!(lines.iter().all(|l| l.len() == l.trim_end().len()), "no trailing blanks");
}

#[test]
fn a_journal_whose_directory_does_not_exist_yet_is_polled_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (wake, _woken) = std::sync::mpsc::sync_channel(1);
    let missing = dir.path().join("missing").join("lane-journal.jsonl");
    let why = super::watch(&missing, wake).expect_err("nothing to watch");
    assert!(why.contains("missing"), "{why}");
    let (wake, woken) = std::sync::mpsc::sync_channel(1);
    let path = dir.path().join("lane-journal.jsonl");
    let _watcher = super::watch(&path, wake).expect("the directory exists");
    std::fs::write(&path, "{}\n").expect("write");
    let woke = woken.recv_timeout(std::time::Duration::from_secs(10));
    assert!(woke.is_ok(), "a write to the journal wakes the loop");
}
