//! `keel journal verify`, `replay` and `compact` end to end: what verify calls damage and what a
//! note (a crashed writer's fragment is never damage, before or after compaction), and that long
//! work draws no progress bar where nobody watches.

use crate::support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use support::{code, json, stderr, stdout};

fn keel(root: &Path, args: &[&str]) -> Output {
    support::run(root, args, &[], "")
}

/// A fresh directory to be a workspace, outside any git work tree or `.keel/`.
fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn journal(root: &Path) -> PathBuf {
    root.join(".keel/lane-journal.jsonl")
}

fn append(root: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(journal(root)).expect("journal");
    file.write_all(bytes).expect("append");
}

fn acquire(root: &Path, lane: &str, owner: &str) {
    let tree = format!("{lane}/");
    let out = keel(root, &["lease", "acquire", "--lane", lane, "--tree", &tree, "--owner", owner, "--json"]);
    assert_eq!(code(&out), 0, "{lane} granted: {} {}", stdout(&out), stderr(&out));
}

/// `keel journal verify` as text and as JSON, with the exit status each had.
fn verify(root: &Path) -> (i32, String, i32, Value) {
    let text = keel(root, &["journal", "verify"]);
    let report = keel(root, &["journal", "verify", "--json"]);
    (code(&text), stdout(&text), code(&report), json(&report))
}

/// The number after `corrupt records: ` in a text report.
fn corrupt_records(text: &str) -> u64 {
    let line = text.lines().find_map(|l| l.strip_prefix("corrupt records: ")).expect("a corrupt records line");
    line.trim().parse().expect("a count")
}

/// A crash mid-append leaves a fragment without its `\n`; the next writer terminates it and
/// records a `REVIEW` excusing it. That fragment never happened, so it is a note and not damage,
/// and stays one when compaction carries it forward.
#[test]
fn a_torn_tail_the_next_writer_excused_is_a_note_and_verify_exits_0_before_and_after_compaction() {
    let dir = workspace();
    let root = dir.path();
    acquire(root, "a", "o1");
    append(root, br#"{"op": "ACQUIRE", "lane": "x", "loo"#);
    acquire(root, "b", "o2");
    for when in ["after the repair", "after compaction"] {
        let (status, text, json_status, report) = verify(root);
        assert_eq!(status, 0, "{when}: an excused torn tail is not corruption: {text}");
        assert_eq!(text.lines().last(), Some("ok"), "{when}: {text}");
        assert_eq!(corrupt_records(&text), 0, "{when}: {text}");
        assert!(text.contains("excused torn tail: line 2: "), "{when}: the note names the line: {text}");
        assert_eq!(json_status, 0, "{when}: {report}");
        assert_eq!(report["clean"], true, "{when}: {report}");
        assert_eq!(report["damage"], 0, "{when}: {report}");
        assert_eq!(report["corrupt"].as_array().map(Vec::len), Some(0), "{when}: {report}");
        let notes = report["notes"].as_array().expect("notes");
        assert_eq!(notes.len(), 1, "{when}: {report}");
        assert_eq!((notes[0]["kind"].as_str(), notes[0]["line_number"].as_u64()), (Some("excused_torn_tail"), Some(2)));
        if when == "after the repair" {
            let compact = keel(root, &["journal", "compact"]);
            assert_eq!(code(&compact), 0, "{}", stderr(&compact));
        }
    }
    // Grants went on past it, and still do.
    acquire(root, "c", "o3");
}

/// A whole line that does not parse, the last one included, is damage: verify counts it.
#[test]
fn a_whole_bad_last_line_is_counted_as_a_corrupt_record_beside_corrupt() {
    let dir = workspace();
    let root = dir.path();
    acquire(root, "a", "o1");
    append(root, b"{not json\n");
    let (status, text, json_status, report) = verify(root);
    assert_eq!((status, json_status), (1, 1), "{text}");
    assert_eq!(text.lines().last(), Some("CORRUPT"), "{text}");
    assert_eq!(corrupt_records(&text), 1, "the count matches the verdict: {text}");
    assert!(text.contains("  line 2: \"{not json\""), "the line is listed: {text}");
    assert_eq!(report["damage"], 1, "{report}");
    assert_eq!(report["corrupt"][0]["line_number"], 2, "{report}");
    assert_eq!(report["torn_tail"]["terminated"], true, "{report}");
    assert_eq!(report["notes"].as_array().map(Vec::len), Some(0), "{report}");
}

/// Damage an operator reviewed stays on record: grants go on, but verify still calls the journal
/// corrupt, and compaction does not launder it into a note.
#[test]
fn reviewed_mid_file_damage_stays_corrupt_after_compaction_and_is_counted() {
    let dir = workspace();
    let root = dir.path();
    acquire(root, "a", "o1");
    append(root, b"not json at all\n");
    acquire_after_review(root);
    for when in ["after the review", "after compaction"] {
        let (status, text, json_status, report) = verify(root);
        assert_eq!((status, json_status), (1, 1), "{when}: {text}");
        assert_eq!(corrupt_records(&text), 1, "{when}: {text}");
        assert!(text.contains("  line 2 (reviewed): "), "{when}: {text}");
        assert_eq!(report["corrupt"][0]["reviewed"], true, "{when}: {report}");
        assert_eq!(report["notes"].as_array().map(Vec::len), Some(0), "{when}: {report}");
        if when == "after the review" {
            let compact = keel(root, &["journal", "compact"]);
            assert_eq!(code(&compact), 0, "{}", stderr(&compact));
        }
    }
}

fn acquire_after_review(root: &Path) {
    let review = keel(root, &["journal", "review", "--accept", "--by", "ops"]);
    assert_eq!(code(&review), 0, "{}", stderr(&review));
    acquire(root, "b", "o2");
}

/// An unrepaired torn tail (no writer came by yet) is a note too, in text and in JSON.
#[test]
fn an_unrepaired_torn_tail_is_a_note_in_json_as_in_text() {
    let dir = workspace();
    let root = dir.path();
    acquire(root, "a", "o1");
    append(root, br#"{"op": "ACQ"#);
    let (status, text, json_status, report) = verify(root);
    assert_eq!((status, json_status), (0, 0), "{text}");
    assert!(text.contains("torn tail: line 2: "), "{text}");
    let notes = report["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{report}");
    assert_eq!(notes[0]["kind"], "torn_tail", "{report}");
    assert_eq!(report["damage"], 0, "{report}");
}

/// A journal of a little over `bytes`: leases taken and given back, written directly.
fn large_journal(root: &Path, bytes: usize) {
    use std::fmt::Write as _;
    std::fs::create_dir_all(root.join(".keel")).expect("state directory");
    let mut text = String::new();
    for seq in (1u64..).step_by(2) {
        if text.len() >= bytes {
            break;
        }
        let (lane, release) = (format!("lane{}", seq % 50), seq + 1);
        writeln!(
            text,
            "{{\"lane\": \"{lane}\", \"lease\": {{\"lane\": \"{lane}\", \"loop_ts\": \"t{seq}\", \"tree\": [\"{lane}/\"]}}, \"loop_ts\": \"t{seq}\", \"op\": \"ACQUIRE\", \"seq\": {seq}}}"
        )
        .expect("in-memory write");
        writeln!(text, "{{\"lane\": \"{lane}\", \"loop_ts\": \"t{seq}\", \"op\": \"RELEASE\", \"seq\": {release}}}")
            .expect("in-memory write");
    }
    std::fs::write(journal(root), text).expect("journal");
}

/// Progress is for a person at a terminal: with stdout piped, long work writes nothing to stderr.
#[test]
fn replay_verify_and_compact_of_a_large_journal_draw_no_progress_when_stdout_is_not_a_terminal() {
    let dir = workspace();
    let root = dir.path();
    large_journal(root, 3 << 20);
    for args in [
        &["journal", "replay"][..],
        &["journal", "verify"],
        &["journal", "verify", "--json"],
        &["journal", "compact"],
        &["journal", "compact", "--json"],
    ] {
        let out = keel(root, args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}: nothing on stderr");
    }
}

/// `keel args` in `root` with its stdout and stderr on a terminal (util-linux `script` makes one),
/// and what the terminal showed.
fn keel_at_a_terminal(root: &Path, args: &str) -> (i32, String) {
    let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_keel"));
    let out = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .current_dir(root)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .env_remove("KEEL_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux script runs");
    (code(&out), stdout(&out))
}

/// At a terminal the bar shows bytes done of the total, and is cleared before the result; under
/// `--json` nothing but the JSON is written.
#[test]
fn verify_of_a_large_journal_at_a_terminal_shows_bytes_done_of_the_total_and_json_shows_none() {
    let dir = workspace();
    let root = dir.path();
    large_journal(root, 3 << 20);
    let (status, shown) = keel_at_a_terminal(root, "journal verify");
    assert_eq!(status, 0, "{shown}");
    assert!(shown.contains("verifying [") && shown.contains("/3.00 MiB"), "a bar of bytes: {shown:?}");
    assert!(shown.trim_end().ends_with("ok"), "the result follows the cleared bar: {shown:?}");
    let (status, shown) = keel_at_a_terminal(root, "journal verify --json");
    assert_eq!(status, 0, "{shown}");
    assert!(shown.trim_start().starts_with('{') && !shown.contains("verifying"), "{shown:?}");
}
