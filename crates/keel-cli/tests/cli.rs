//! The `keel` binary end to end: outputs and error messages are pinned as insta snapshots,
//! exit codes as assertions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const FIXTURES: &str = "crates/keel-kernel/tests/data/dos-journal-v1";

/// `keel` with `args`, run in a directory of its own: it is its own workspace (no git work tree,
/// no `.keel/` above it), so a test that names a journal elsewhere binds nothing of the repository.
fn keel(args: &[&str], stdin: Option<&str>) -> Output {
    let cwd = tempfile::tempdir().expect("a directory to run in");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(cwd.path())
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("keel runs");
    writer.join().expect("writer thread").expect("stdin written");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn journal(case: &str) -> String {
    workspace().join(format!("{FIXTURES}/{case}/journal.jsonl")).display().to_string()
}

#[test]
fn replay_prints_the_live_set_the_fixture_expects() {
    for case in ["case0000", "case0005", "case0017"] {
        let out = keel(&["--journal", &journal(case), "journal", "replay"], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
        let want: serde_json::Value = serde_json::from_slice(
            &std::fs::read(workspace().join(format!("{FIXTURES}/{case}/expected.live.json"))).expect("fixture"),
        )
        .expect("fixture JSON");
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn generations_and_next_seq_are_printed_as_json() {
    let gens = keel(&["--journal", &journal("case0005"), "journal", "generations"], None);
    insta::assert_snapshot!(text(&gens.stdout), @r#"[{"generation": 4, "lane": "kernel", "loop_ts": "2026-11-07T07:07:37Z"}, {"generation": 7, "lane": "Main", "loop_ts": "2026-11-24T23:07:05Z"}]
"#);
    let seq = keel(&["--journal", &journal("case0005"), "journal", "next-seq"], None);
    assert_eq!(text(&seq.stdout), "57\n");
}

#[test]
fn verify_reports_corrupt_lines_and_torn_tail_and_exits_1_on_corruption() {
    // case0003's torn tail comes with colliding live leases, which verify calls corruption.
    let out = keel(&["--journal", &journal("case0002"), "journal", "verify"], None);
    assert_eq!(out.status.code(), Some(0), "a torn tail alone is not corruption");
    let report = text(&out.stdout);
    let (first, rest) = report.split_once('\n').expect("a report");
    assert!(first.starts_with("journal: /") && first.ends_with("/case0002/journal.jsonl"), "named in full: {first}");
    insta::assert_snapshot!("verify_torn_tail_only", rest);
    let corrupt = (0..40)
        .map(|i| format!("case{i:04}"))
        .find(|case| {
            std::fs::read_to_string(workspace().join(journal(case))).is_ok_and(|t| t.contains("not json at all\n{"))
        })
        .expect("some fixture has a mid-file corrupt line");
    let out = keel(&["--journal", &journal(&corrupt), "journal", "verify", "--json"], None);
    assert_eq!(out.status.code(), Some(1), "corruption found exits 1");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["clean"], false);
    assert!(report["corrupt"][0]["line_number"].as_u64().is_some());
    assert_eq!(report["corrupt"][0]["reviewed"], false);
}

#[test]
fn verify_tells_a_cut_write_from_a_whole_bad_last_line_and_marks_reviewed_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let journal = path.to_str().expect("UTF-8 temp path");
    let verify = || -> serde_json::Value {
        let out = keel(&["--journal", journal, "journal", "verify", "--json"], None);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        let status = i32::from(report["clean"] != true);
        assert_eq!(out.status.code(), Some(status), "{report}");
        report
    };
    let acquire = r#"{"lane": "a", "lease": {"lane": "a", "loop_ts": "t"}, "loop_ts": "t", "op": "ACQUIRE", "seq": 1}"#;
    std::fs::write(&path, format!("{acquire}\n{{\"op\": \"ACQ")).expect("write");
    let cut = verify();
    assert_eq!((cut["torn_tail"]["terminated"].as_bool(), cut["clean"].as_bool()), (Some(false), Some(true)));
    // A whole bad last line stops grants, so verify calls it damage too (it once said "ok").
    std::fs::write(&path, format!("{acquire}\n{{not json\n")).expect("write");
    let whole = verify();
    assert_eq!((whole["torn_tail"]["terminated"].as_bool(), whole["clean"].as_bool()), (Some(true), Some(false)));
    let accepted = keel(&["--journal", journal, "journal", "review", "--accept", "--by", "test"], None);
    assert_eq!(accepted.status.code(), Some(0), "{}", text(&accepted.stderr));
    let report = verify();
    assert_eq!((report["corrupt"][0]["reviewed"].as_bool(), report["clean"].as_bool()), (Some(true), Some(false)));
}

#[test]
fn compact_dry_run_prints_records_and_leaves_the_file_alone() {
    let path = workspace().join(journal("case0005"));
    let before = std::fs::read(&path).expect("fixture");
    let listing = || std::fs::read_dir(path.parent().expect("a directory")).expect("listed").count();
    let files = listing();
    let out = keel(&["--journal", &journal("case0005"), "journal", "compact", "--dry-run"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&path).expect("fixture"), before);
    assert_eq!(listing(), files, "a dry run creates nothing beside the journal (no lock file)");
    // The checkpoint is stamped with the time of the run, as `compact` stamps it.
    let printed = text(&out.stdout);
    let (head, rest) = printed.split_once(", \"ts\": \"").expect("the checkpoint is stamped");
    let (_, tail) = rest.split_once('"').expect("a whole stamp");
    insta::assert_snapshot!("compact_dry_run_case0005", format!("{head}, \"ts\": \"[now]\"{tail}"));
}

#[test]
fn tail_prints_the_last_records() {
    let out = keel(&["--journal", &journal("case0001"), "journal", "tail", "-n", "2"], None);
    insta::assert_snapshot!("tail_case0001", text(&out.stdout));
}

#[test]
fn a_missing_journal_is_an_io_error_naming_the_file() {
    let out = keel(&["--journal", "no/such/journal.jsonl", "journal", "replay"], None);
    assert_eq!(out.status.code(), Some(4));
    // A relative journal is read against the workspace root, and named in full.
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("keel: open /"), "{stderr}");
    assert!(stderr.ends_with("/no/such/journal.jsonl: No such file or directory (os error 2)\n"), "{stderr}");
}

#[test]
fn a_fresh_workspace_s_journal_reads_as_empty_as_lease_live_does() {
    // No journal yet, none named: replay, generations and verify see an empty journal.
    for (args, expected) in [(&["journal", "replay"][..], "[]\n"), (&["journal", "generations"][..], "[]\n")] {
        let out = keel(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{args:?}");
    }
    let verify = keel(&["journal", "verify"], None);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("records: 0"), "{}", text(&verify.stdout));
}

#[test]
fn lease_live_prints_a_header_row_over_its_columns() {
    let dir = tempfile::tempdir().expect("a workspace");
    let granted = crate::support::run(
        dir.path(),
        &["lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "agent-a"],
        &[],
        "",
    );
    assert_eq!(granted.status.code(), Some(0), "{}", text(&granted.stderr));
    let live = text(&crate::support::run(dir.path(), &["lease", "live"], &[], "").stdout);
    let lines: Vec<&str> = live.lines().collect();
    let header = lines.iter().position(|l| l.starts_with("HOLDER")).unwrap_or_else(|| panic!("no header row:\n{live}"));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(columns, ["HOLDER", "LANE", "GEN", "MODE", "TREE", "LOOP_TS"], "{live}");
    let row = lines.get(header + 1).unwrap_or_else(|| panic!("no row under the header:\n{live}"));
    assert!(row.starts_with("agent-a"), "{live}");
    // Each value starts where its column's name does.
    let at = |name: &str| lines[header].find(name).expect("column");
    assert_eq!(row.find("api"), Some(at("LANE")), "{live}");
    assert_eq!(row.find("exclusive"), Some(at("MODE")), "{live}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(keel(&["journal", "tail", "-n", "many"], None).status.code(), Some(2));
    assert_eq!(
        keel(&["lease", "acquire", "--lane", "api", "--tree", "src/"], None).status.code(),
        Some(2),
        "no --owner"
    );
    assert_eq!(keel(&["journal", "frobnicate"], None).status.code(), Some(2));
    // Beyond what a `Duration` holds: once a panic (exit 101) before any I/O.
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("UTF-8 temp path");
    for wait in ["1e20", "NaN", "inf", "-0.5"] {
        let wait_s = format!("--wait-s={wait}");
        let out =
            keel(&["--root", root, "lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "o", &wait_s], None);
        assert_eq!(out.status.code(), Some(2), "--wait-s {wait}: {}", text(&out.stderr));
    }
}

#[test]
fn arbitrate_answers_each_line_and_keeps_going_after_bad_input() {
    let input = concat!(
        r#"{"request": {"lane": "api", "kind": "keyword", "tree": ["src/api/"], "mode": "exclusive"}, "live_leases": [{"lane": "db", "lane_kind": "keyword", "tree": ["src/"], "loop_ts": "t1", "holder": "agent-2"}]}"#,
        "\n",
        "{not json\n",
        r#"{"request": {"lane": "docs", "tree": ["docs/"], "mode": "shared"}, "live_leases": []}"#,
        "\n",
    );
    let out = keel(&["arbitrate"], Some(input));
    assert_eq!(out.status.code(), Some(2), "a malformed line makes the stream's status 2");
    insta::assert_snapshot!("arbitrate_mixed", text(&out.stdout));
    let refused_only = keel(&["arbitrate"], Some(input.lines().next().expect("first line")));
    assert_eq!(refused_only.status.code(), Some(1));
}

#[test]
fn arbitrate_matches_every_conformance_case() {
    let cases = std::fs::read_to_string(workspace().join(format!("{FIXTURES}/arbiter_cases.jsonl"))).expect("cases");
    let out = keel(&["arbitrate"], Some(&cases));
    let decisions: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("decision JSON")).collect();
    assert_eq!(decisions.len(), 400);
    for (case, decision) in cases.lines().zip(&decisions) {
        let case: serde_json::Value = serde_json::from_str(case).expect("case JSON");
        for field in ["outcome", "lane", "lane_kind", "tree"] {
            assert_eq!(decision[field], case["expected"][field], "{field} of {case}");
        }
    }
}

#[test]
fn demo_runs_and_shows_a_refusal_naming_the_holder() {
    let out = keel(&["demo"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("refused: "), "{shown}");
    assert!(shown.contains("holder \"agent-a\""), "the refusal names the holder: {shown}");
    assert!(shown.contains("reclaimed dead lease lane \"api\""), "the killed agent's lease is reclaimed: {shown}");
    assert!(shown.contains("\"op\": \"CHECKPOINT\""), "the compacted journal is shown: {shown}");
    // Every command it shows can be pasted into a shell as it stands.
    assert!(shown.contains("-- sh -c 'echo agent-c editing docs'"), "{shown}");
    for line in shown.lines().filter(|l| l.contains("$ keel ")) {
        let command = line.split_once("$ ").map_or(line, |(_, c)| c).trim_end_matches(" &");
        let words = shlex::split(command).unwrap_or_else(|| panic!("not one shell command: {line}"));
        assert_eq!(words[0], "keel", "{line}");
    }
}

#[test]
fn lease_run_exits_with_the_commands_code_and_releases_also_on_ctrl_c_and_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("j.jsonl");
    let journal = journal.to_str().expect("UTF-8 temp path");
    let live = || {
        let out = keel(&["--journal", journal, "lease", "live", "--json"], None);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        report["leases"].as_array().expect("leases").len()
    };
    let out = keel(
        &[
            "--journal",
            journal,
            "lease",
            "run",
            "--lane",
            "t",
            "--tree",
            "t/",
            "--owner",
            "o",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "the command's exit code: {}", text(&out.stderr));
    assert_eq!(live(), 0, "released after the command exited");

    // Ctrl-C reaches the whole foreground group: keel and its command. keel waits, releases, exits.
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.current_dir(dir.path()).args([
        "--journal",
        journal,
        "lease",
        "run",
        "--lane",
        "t",
        "--tree",
        "t/",
        "--owner",
        "o",
        "--",
        "sleep",
        "30",
    ]);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("keel lease run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while live() == 0 {
        assert!(std::time::Instant::now() < deadline, "the lease was never taken");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let group = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("non-zero pid");
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).expect("SIGINT the group");
    let status = child.wait().expect("keel exits");
    assert_eq!(status.code(), Some(130), "128 + SIGINT, the command's fate: {status:?}");
    assert_eq!(live(), 0, "released after Ctrl-C");

    // SIGTERM to keel alone (a supervisor stopping it) is passed on to the command, which may
    // clean up; keel releases and exits with the command's status. keel once caught it and went
    // on waiting: the work ran on under a lease nobody could stop short of SIGKILL.
    let started = dir.path().join("started");
    let script = format!("trap 'kill $!; exit 7' TERM; sleep 30 & touch '{}'; wait", started.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir.path())
        .args(["--journal", journal, "lease", "run", "--lane", "t", "--tree", "t/", "--owner", "o", "--", "sh", "-c"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel lease run");
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(10), "the command never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let keel_pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(keel_pid, rustix::process::Signal::TERM).expect("SIGTERM keel alone");
    let stop_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("keel's status") {
            break status;
        }
        if std::time::Instant::now() > stop_by {
            let _ = child.kill();
            panic!("keel did not pass SIGTERM on: the command was still running 10 s later");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7), "the command's own exit after its TERM trap: {status:?}");
    assert_eq!(live(), 0, "released after SIGTERM");
}

#[test]
fn blank_names_unknown_modes_and_trees_outside_the_workspace_are_usage_errors_naming_the_argument() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("UTF-8 temp path");
    // `--lane L --tree T --owner O`, then `extra`.
    let acquire = |lane: &'static str, tree: &'static str, owner: &'static str, extra: &[&'static str]| {
        let mut args = vec!["--root", root, "lease", "acquire", "--lane", lane, "--tree", tree, "--owner", owner];
        args.extend(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (acquire("", "a/", "o", &[]), "--lane"),
        (acquire("  ", "a/", "o", &[]), "--lane"),
        (acquire("a", "a/", "", &[]), "--owner"),
        // Once "a lease (loop_ts "", lane "a") is already live".
        (acquire("a", "a/", "o", &["--loop-ts", ""]), "--loop-ts"),
        // Once granted as an exclusive lease.
        (acquire("a", "a/", "o", &["--mode", "bogus"]), "--mode"),
        // Once granted: regions outside the workspace collide with nothing inside it.
        (acquire("a", "/etc/", "o", &[]), "'/etc/'"),
        (acquire("a", "src/", "o", &["--tree", "../x"]), "'../x'"),
        (vec!["--root", root, "lease", "heartbeat", "--lane", "a", "--owner", ""], "--owner"),
        (vec!["--root", root, "lease", "adopt", "--lane", "a", "--loop-ts", "t", "--owner", ""], "--owner"),
        (vec!["--root", root, "lease", "halt", "--lane", "a", "--owner", ""], "--owner"),
        (vec!["--root", root, "lease", "spawn", "--lane", "a", "--owner", " "], "--owner"),
    ];
    for (args, named) in &cases {
        let out = keel(args, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: invalid value "), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: the message names {named}: {stderr}");
    }
    assert!(!dir.path().join(".keel").exists(), "nothing was written");
    let out = keel(&acquire("a", "/etc/", "o", &[]), None);
    insta::assert_snapshot!(text(&out.stderr).lines().next().unwrap_or_default(), @"error: invalid value '/etc/' for '--tree <TREE>...': a tree entry must be inside the workspace (absolute path)");
    // Globs, lock entries and a given mode still work.
    let out = keel(&acquire("a", "src/**", "o", &["--tree", "lock://deploy", "--mode", "shared"]), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A tree with no lane is granted on a lane made of its owner and region, which names it.
    let unnamed = ["--root", root, "lease", "acquire", "--tree", "docs/", "--owner", "p"];
    assert_eq!(keel(&unnamed, None).status.code(), Some(0));
    for verb in ["heartbeat", "release"] {
        let out = keel(&["--root", root, "lease", verb, "--lane", "claim:p:docs/", "--owner", "p"], None);
        assert_eq!(out.status.code(), Some(0), "{verb}: {}", text(&out.stderr));
    }
    // Commands that name a live lease take `--lane ""` as a dos-kernel journal may record it:
    // here no such lease is live (exit 1), but the name is no usage error (exit 2).
    for verb in ["heartbeat", "release"] {
        let out = keel(&["--root", root, "lease", verb, "--lane", "", "--owner", "p"], None);
        assert_eq!(out.status.code(), Some(1), "{verb}: {}", text(&out.stderr));
    }
}

#[test]
fn arbitrate_answers_an_unknown_request_mode_with_an_error_on_its_line_and_goes_on() {
    let input = concat!(
        r#"{"request": {"lane": "a", "tree": ["src/"], "mode": "shraed"}, "live_leases": []}"#,
        "\n",
        r#"{"request": {"lane": "b", "tree": ["src/"], "mode": ""}, "live_leases": [{"lane": "c", "tree": ["docs/"], "mode": "bogus", "loop_ts": "t"}]}"#,
        "\n",
    );
    let out = keel(&["arbitrate"], Some(input));
    assert_eq!(out.status.code(), Some(2), "a malformed line makes the stream's status 2");
    // A live lease's unknown mode stays exclusive (arbiter-v1); an empty request mode is exclusive.
    insta::assert_snapshot!(text(&out.stdout), @r#"
    {"error": "stdin line 1: request: unknown mode \"shraed\" (expected \"shared\" or \"exclusive\")", "line": 1}
    {"lane": "b", "lane_kind": "keyword", "mode": "exclusive", "outcome": "acquire", "reason": "region is free", "tree": ["src/"]}
    "#);
}

#[test]
fn arbitrate_refuses_a_tree_over_the_entry_limit_on_its_line_and_goes_on() {
    let tree: Vec<String> = (0..=keel_kernel::tree::TREE_ENTRIES_MAX).map(|i| format!("d{i}/")).collect();
    let big = serde_json::json!({"request": {"lane": "a", "tree": tree}, "live_leases": []});
    let input = format!("{big}\n{}\n", r#"{"request": {"lane": "b", "tree": ["src/"]}, "live_leases": []}"#);
    let out = keel(&["arbitrate"], Some(&input));
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).expect("UTF-8").lines().collect();
    assert!(lines[0].contains("at most 1024 are accepted") && lines[0].contains("\"line\": 1"), "{}", lines[0]);
    assert!(lines[1].contains("\"outcome\": \"acquire\""), "{}", lines[1]);
}

/// Found by two sweeps: `lease acquire` recorded its own pid, and its process exits at once, so
/// the next requester reclaimed a live agent's lease as "holder process gone" after the grace,
/// whatever its TTL. Without `--pid` only the TTL frees it; with one, that process's exit does.
#[test]
fn a_lease_taken_by_acquire_outlives_the_acquire_command_until_its_ttl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("UTF-8 temp path");
    let acquire = |lane: &str, tree: &str, extra: &[&str]| {
        let args = ["--root", root, "--grace-s", "0", "lease", "acquire", "--lane", lane, "--tree", tree];
        keel(&[&args[..], &["--owner", lane], extra].concat(), None)
    };
    let out = acquire("first", "src/", &["--ttl-minutes", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past a grace of 0 s
    let out = acquire("second", "src/x", &[]);
    assert_eq!(out.status.code(), Some(1), "the first agent still holds src/: {}", text(&out.stdout));

    let mut agent = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = agent.id().to_string();
    let out = acquire("third", "docs/", &["--ttl-minutes", "60", "--pid", &pid]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    agent.kill().expect("kill sleep");
    agent.wait().expect("reaped");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = acquire("fourth", "docs/x", &[]);
    assert_eq!(out.status.code(), Some(0), "the named process is gone: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("holder process gone"), "{}", text(&out.stdout));
    let out = acquire("fifth", "lib/", &["--pid", &pid]);
    assert_eq!(out.status.code(), Some(2), "no such process: {}", text(&out.stderr));
}

#[test]
fn a_reclaimed_lease_is_reported_as_text_not_as_debug_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("UTF-8 temp path");
    // No grace and a TTL under a second: the first lease is provably dead a second later.
    let first = ["--root", root, "--grace-s", "0", "lease", "acquire", "--lane", "old", "--tree", "src/"];
    let out = keel(&[&first[..], &["--owner", "a", "--ttl-minutes", "0.001"]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = ["--root", root, "--grace-s", "0", "lease", "acquire", "--lane", "new", "--tree", "src/x"];
    let out = keel(&[&second[..], &["--owner", "b"]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let reclaim = shown.lines().nth(1).unwrap_or_default();
    // It once ended in `Expired { idle_s: 0, ttl_s: 0 }`.
    assert!(reclaim.starts_with("  reclaimed dead lease lane \"old\" (loop_ts "), "{shown}");
    assert!(reclaim.ends_with(", past its ttl of 0s") && reclaim.contains("): idle "), "{shown}");
}

#[test]
fn a_reader_that_goes_away_ends_keel_quietly_with_the_status_its_work_earned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("j.jsonl");
    let record = |seq: usize| format!(r#"{{"op": "HEARTBEAT", "lane": "a", "loop_ts": "t", "seq": {seq}}}"#);
    let journal: String = (1..=20_000).map(|seq| record(seq) + "\n").collect();
    std::fs::write(&path, journal).expect("journal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir.path())
        .args(["--journal", path.to_str().expect("UTF-8 temp path"), "journal", "tail", "-n", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().expect("piped"), &mut first).expect("some output");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("keel exits");
    // It once said "keel: writing to stdout: Broken pipe (os error 32)" and exited 4.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "quietly: {}", text(&out.stderr));

    // With no reader at all, a command still ends with the status its work earned: scripts act
    // on it (`keel journal verify | head` under pipefail must not pass a damaged journal).
    let mut damaged = std::fs::read(&path).expect("journal");
    damaged.extend_from_slice(b"{not json\n");
    damaged.extend_from_slice(record(20_001).as_bytes());
    damaged.push(b'\n');
    std::fs::write(&path, damaged).expect("journal");
    let unread = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keel starts");
        drop(child.stdout.take());
        child.wait_with_output().expect("keel exits")
    };
    let journal = path.to_str().expect("UTF-8 temp path");
    let out = unread(&["--journal", journal, "journal", "verify"]);
    assert_eq!(out.status.code(), Some(1), "corrupt, whoever reads: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "quietly: {}", text(&out.stderr));
    let leases = dir.path().join("leases.jsonl");
    let acquire = |owner| -> Vec<&str> {
        let leases = leases.to_str().expect("UTF-8 temp path");
        vec!["--journal", leases, "lease", "acquire", "--lane", owner, "--tree", "src/", "--owner", owner]
    };
    assert_eq!(keel(&acquire("a"), None).status.code(), Some(0));
    let out = unread(&acquire("b"));
    assert_eq!(out.status.code(), Some(1), "refused, whoever reads: {}", text(&out.stderr));
}

#[test]
fn a_named_root_that_is_not_a_directory_is_a_usage_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("typo");
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("a plain file");
    // A mistyped root once started a workspace of its own there, whose leases excluded nobody.
    for root in [&missing, &file] {
        let root = root.to_str().expect("UTF-8 temp path");
        for args in [
            vec!["--root", root, "lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "o"],
            vec!["--root", root, "journal", "stats"],
            vec!["--root", root, "store", "init", "--runtime", "r"],
        ] {
            let out = keel(&args, None);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(&format!("workspace root {root}")), "{args:?}: {stderr}");
        }
    }
    assert!(!missing.exists(), "nothing was created at the mistyped root");
    // A journal named outright does not excuse a mistyped root: the root is where the workspace's
    // binding and policy live.
    let journal = dir.path().join("j.jsonl");
    let out = keel(
        &[
            "--root",
            missing.to_str().expect("UTF-8"),
            "--journal",
            journal.to_str().expect("UTF-8"),
            "journal",
            "stats",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_journal_in_a_mistyped_directory_is_a_usage_error_and_no_lease_is_granted_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let typo = dir.path().join(".kel/lane-journal.jsonl");
    let typo = typo.to_str().expect("UTF-8 temp path");
    let args = ["--journal", typo, "lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "o"];
    let out = keel(&args, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!dir.path().join(".kel").exists());
    // keel's own state directory comes into being with the first lease.
    let journal = dir.path().join(".keel/lane-journal.jsonl");
    let args = [
        "--journal",
        journal.to_str().expect("UTF-8"),
        "lease",
        "acquire",
        "--lane",
        "a",
        "--tree",
        "a/",
        "--owner",
        "o",
    ];
    let out = keel(&args, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(journal.is_file());
}

/// `keel` with the file-size limit at `limit` bytes (`prlimit --fsize`): a write that crosses it
/// is cut short at that byte, exactly what a power cut or a full disk leaves.
fn keel_limited(root: &str, limit: u64, args: &[&str]) -> Output {
    let limit = format!("--fsize={limit}");
    Command::new("prlimit")
        .args([limit.as_str(), "--", env!("CARGO_BIN_EXE_keel"), "--root", root])
        .args(args)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .output()
        .expect("prlimit (util-linux) runs")
}

/// Found by disk-full and crash sweeps. A write cut short (a full disk, a file-size limit) left
/// its bytes in the journal: a record whose JSON was whole and only the newline missing then
/// replayed as written although the command had failed (exit 4). And a writer that repairs a
/// crashed writer's fragment terminates it and writes the `REVIEW` excusing it in one write; when
/// a power cut tore that write too, the fragment became a whole line nobody excused, and every
/// later acquire was refused as damaged until an operator reviewed it.
#[test]
fn a_cut_write_leaves_nothing_and_a_torn_repair_is_finished_by_the_next_writer() {
    fn acquire<'a>(lane: &'a str, owner: &'a str) -> [&'a str; 8] {
        ["lease", "acquire", "--lane", lane, "--tree", lane, "--owner", owner]
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("UTF-8 temp path");
    let journal = dir.path().join(".keel/lane-journal.jsonl");
    let sidecar = dir.path().join(".keel/lane-journal.jsonl.torn");
    let size = || std::fs::metadata(&journal).expect("journal").len();
    let unlimited = u64::MAX >> 1;
    // Two leases: the journal is then longer than the lock file's 512-byte note, which every
    // limit below must let through.
    for lane in ["l0/", "l1/"] {
        let granted = keel_limited(root, unlimited, &acquire(lane, "agent-1"));
        assert_eq!(granted.status.code(), Some(0), "{}", text(&granted.stderr));
    }
    let seed = std::fs::read(&journal).expect("journal");
    assert!(seed.len() > 600, "{}", seed.len());

    // A write cut anywhere, up to all but its newline, fails and leaves the journal as it was.
    let record = {
        let granted = keel_limited(root, unlimited, &acquire("l2/", "agent-2"));
        assert_eq!(granted.status.code(), Some(0), "{}", text(&granted.stderr));
        std::fs::read(&journal).expect("journal").len() as u64 - seed.len() as u64
    };
    for cut in [1, 100, record - 1] {
        std::fs::write(&journal, &seed).expect("reset the journal");
        let _ = std::fs::remove_file(dir.path().join(".keel/lane-journal.jsonl.head"));
        let cut_short = keel_limited(root, seed.len() as u64 + cut, &acquire("l2/", "agent-2"));
        let stderr = text(&cut_short.stderr);
        assert_eq!(cut_short.status.code(), Some(4), "cut {cut}: {stderr}");
        assert!(stderr.contains("the partial record was cut off again"), "cut {cut}: {stderr}");
        assert_eq!(std::fs::read(&journal).expect("journal"), seed, "cut {cut}");
        let live = keel_limited(root, unlimited, &["lease", "live", "--json"]);
        assert!(!text(&live.stdout).contains("agent-2"), "cut {cut}: the failed acquire holds a lease");
    }

    // A crashed writer's fragment; the next writer's repair is cut short, then a power cut is
    // simulated by putting back a prefix of "\n" + REVIEW, as a torn page would leave it.
    for torn_bytes in [&b"\n"[..], b"\n{\"by\": \"keel", b"\n{"] {
        std::fs::write(&journal, &seed).expect("reset the journal");
        let _ = std::fs::remove_file(dir.path().join(".keel/lane-journal.jsonl.head"));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .and_then(|mut f| f.write_all(br#"{"host_id": "vm", "lane": "l9/", "op": "ACQ"#))
            .expect("a crashed writer's fragment");
        let fragment_end = size();
        let repair = keel_limited(root, fragment_end + 2, &acquire("l3/", "agent-b"));
        assert_eq!(repair.status.code(), Some(4), "{}", text(&repair.stderr));
        assert_eq!(size(), fragment_end, "the cut repair was cut off again");
        assert!(sidecar.exists(), "the repair made its excuse durable before writing");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .and_then(|mut f| f.write_all(torn_bytes))
            .expect("what a power cut left of the repair");
        let next = keel_limited(root, unlimited, &acquire("l4/", "agent-c"));
        assert_eq!(next.status.code(), Some(0), "{torn_bytes:?}: {}", text(&next.stderr));
        assert!(!sidecar.exists(), "{torn_bytes:?}: the sidecar was removed");
    }
}
