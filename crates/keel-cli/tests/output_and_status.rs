//! What scripts read from keel: with `--json` every outcome is one JSON object on stdout, errors
//! included; a refusal describes the request that was refused; a lease taken without `--lane`
//! gets a lane it can be named by; and `lease run` tells its own failures apart from its command's.

use std::path::Path;

use serde_json::Value;

use crate::support::{code, json, run, stderr, stdout};

fn keel(dir: &Path, args: &[&str]) -> std::process::Output {
    run(dir, args, &[], "")
}

/// The `error` member of stdout's one JSON object, after checking there is exactly one line.
fn error_object(output: &std::process::Output) -> Value {
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "one line on stdout: {text:?} (stderr {:?})", stderr(output));
    let object = json(output);
    assert!(object["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{object}");
    object["error"].clone()
}

#[test]
fn a_command_line_clap_refuses_is_a_json_usage_error_with_status_2() {
    let dir = tempfile::tempdir().expect("workspace");
    let out = keel(dir.path(), &["lease", "acquire", "--json", "--owner", "a", "--tree", "../outside"]);
    assert_eq!(code(&out), 2);
    let error = error_object(&out);
    assert_eq!(error["kind"], "usage");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("../outside")), "{error}");
    // Without --json, stdout stays empty and clap's own message goes to stderr.
    let plain = keel(dir.path(), &["lease", "acquire", "--owner", "a", "--tree", "../outside"]);
    assert_eq!((code(&plain), stdout(&plain).as_str()), (2, ""));
    assert!(stderr(&plain).contains("../outside"));
}

#[test]
fn a_policy_that_is_not_one_is_a_json_error_naming_its_file_and_line() {
    let dir = tempfile::tempdir().expect("workspace");
    std::fs::create_dir(dir.path().join(".keel")).expect(".keel");
    std::fs::write(dir.path().join(".keel/policy.toml"), "grace_s = 30\n\nno_such_key = 1\n").expect("policy");
    let out = keel(dir.path(), &["lease", "live", "--json"]);
    assert_eq!(code(&out), 2);
    let error = error_object(&out);
    assert_eq!(error["kind"], "usage");
    assert!(error["path"].as_str().is_some_and(|p| p.ends_with(".keel/policy.toml")), "{error}");
    assert_eq!(error["line"], 3);
}

#[test]
fn a_damaged_journal_is_a_json_error_of_kind_damaged_with_the_line_and_status_4() {
    let dir = tempfile::tempdir().expect("workspace");
    let out = keel(dir.path(), &["lease", "acquire", "--lane", "a", "--tree", "src/", "--owner", "x"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let journal = dir.path().join(".keel/lane-journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).expect("journal");
    let lines = text.lines().count();
    text.push_str("not a record\n");
    std::fs::write(&journal, text).expect("journal");
    let out = keel(dir.path(), &["lease", "acquire", "--lane", "b", "--tree", "doc/", "--owner", "y", "--json"]);
    assert_eq!(code(&out), 4);
    let error = error_object(&out);
    assert_eq!(error["kind"], "damaged");
    assert!(error["path"].as_str().is_some_and(|p| p.ends_with("lane-journal.jsonl")), "{error}");
    assert_eq!(error["line"], lines + 1);
}

#[test]
fn a_missing_runtime_is_a_json_error_that_names_it() {
    let dir = tempfile::tempdir().expect("workspace");
    let out = keel(dir.path(), &["store", "events", "--runtime", "r9", "--json"]);
    assert_eq!(code(&out), 1);
    let error = error_object(&out);
    assert_eq!(error["kind"], "refused");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("\"r9\"")), "{error}");
}

#[test]
fn a_refusal_in_json_describes_the_request_that_was_refused() {
    let dir = tempfile::tempdir().expect("workspace");
    let first = keel(dir.path(), &["lease", "acquire", "--lane", "api", "--tree", "src/api/", "--owner", "agent-a"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let out = keel(
        dir.path(),
        &[
            "lease",
            "acquire",
            "--lane",
            "fix",
            "--tree",
            "src/api/x.rs",
            "--mode",
            "shared",
            "--owner",
            "agent-b",
            "--json",
        ],
    );
    assert_eq!(code(&out), 1);
    let refusal = json(&out);
    assert_eq!(refusal["outcome"], "refuse");
    assert_eq!(refusal["lane"], "fix");
    assert_eq!(refusal["tree"], serde_json::json!(["src/api/x.rs"]));
    assert_eq!(refusal["mode"], "shared");
    assert_eq!(refusal["holder"], "agent-b");
    assert_eq!(refusal["blocking"]["lane"], "api", "{refusal}");
}

#[test]
fn a_lease_taken_without_a_lane_gets_one_made_of_its_owner_and_region_and_is_released_by_it() {
    let dir = tempfile::tempdir().expect("workspace");
    let out = keel(dir.path(), &["lease", "acquire", "--tree", "docs/", "--owner", "agent-c", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lane = json(&out)["lane"].as_str().expect("a lane").to_owned();
    assert_eq!(lane, "claim:agent-c:docs/");
    // Another agent reading the same region alongside is not refused for the lane's name.
    for owner in ["reader-1", "reader-2"] {
        let out = keel(dir.path(), &["lease", "acquire", "--tree", "notes/", "--mode", "shared", "--owner", owner]);
        assert_eq!(code(&out), 0, "{owner}: {}", stdout(&out));
    }
    let out = keel(dir.path(), &["lease", "release", "--lane", &lane, "--owner", "agent-c"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

/// `lease run`'s own outcomes, as `timeout(1)` numbers them: 124 no lease, 125 keel failed,
/// 126 the command cannot be run, 127 it was not found; else the command's own status.
#[test]
fn lease_run_tells_its_own_failures_apart_from_the_commands_status() {
    let dir = tempfile::tempdir().expect("workspace");
    let run_as = |owner: &str, lane: &str, command: &[&str]| {
        let mut args = vec!["lease", "run", "--lane", lane, "--tree", "src/", "--owner", owner, "--"];
        args.extend_from_slice(command);
        keel(dir.path(), &args)
    };
    assert_eq!(code(&run_as("a", "one", &["sh", "-c", "exit 1"])), 1, "the command's own status");
    assert_eq!(code(&run_as("a", "one", &["/nonexistent/command"])), 127);
    std::fs::write(dir.path().join("not-executable"), "#!/bin/sh\n").expect("file");
    let path = dir.path().join("not-executable").display().to_string();
    assert_eq!(code(&run_as("a", "one", &[&path])), 126);
    let held = keel(dir.path(), &["lease", "acquire", "--lane", "held", "--tree", "src/", "--owner", "b"]);
    assert_eq!(code(&held), 0, "{}", stderr(&held));
    let refused = run_as("a", "two", &["true"]);
    assert_eq!(code(&refused), 124, "refused: {}", stdout(&refused));
    // keel itself failing (a damaged policy) and a command line it cannot parse.
    std::fs::create_dir_all(dir.path().join(".keel")).expect(".keel");
    std::fs::write(dir.path().join(".keel/policy.toml"), "no_such_key = 1\n").expect("policy");
    assert_eq!(code(&run_as("a", "three", &["true"])), 125);
    assert_eq!(code(&keel(dir.path(), &["lease", "run", "--owner", "a", "--no-such-flag", "--", "true"])), 125);
}

#[test]
fn store_lock_and_config_list_no_lease_flags_and_lease_commands_still_do() {
    let dir = tempfile::tempdir().expect("workspace");
    let lease_only = ["--journal", "--grace-s", "--backend", "--etcd-endpoints", "--etcd-prefix"];
    for group in [&["store"][..], &["store", "events"], &["lock"], &["lock", "get"], &["config"], &["config", "set"]] {
        let mut args = group.to_vec();
        args.push("--help");
        let help = stdout(&keel(dir.path(), &args));
        for flag in lease_only {
            assert!(!help.contains(flag), "`keel {}` lists {flag}:\n{help}", group.join(" "));
        }
        assert_eq!(help.contains("--root"), group[0] == "store", "`keel {}`:\n{help}", group.join(" "));
    }
    for group in [&["lease", "acquire"][..], &["journal", "verify"], &["fs", "write"]] {
        let mut args = group.to_vec();
        args.push("--help");
        let help = stdout(&keel(dir.path(), &args));
        for flag in ["--root", "--journal", "--grace-s", "--backend"] {
            assert!(help.contains(flag), "`keel {}` lacks {flag}:\n{help}", group.join(" "));
        }
    }
}

#[test]
fn a_root_set_in_the_environment_is_not_shown_as_a_required_flag_in_the_usage_line() {
    let dir = tempfile::tempdir().expect("workspace");
    let root = dir.path().display().to_string();
    for args in [&["lease", "acquire"][..], &["store", "events"]] {
        let out = run(dir.path(), args, &[("KEEL_ROOT", &root)], "");
        assert_eq!(code(&out), 2);
        let usage = stderr(&out).lines().find(|l| l.starts_with("Usage:")).map(str::to_owned);
        assert!(usage.as_deref().is_some_and(|u| !u.contains("--root")), "{}", stderr(&out));
    }
}

#[test]
fn location_flags_work_before_and_after_the_subcommand_and_outrank_the_environment() {
    let named = tempfile::tempdir().expect("named root");
    let other = tempfile::tempdir().expect("the environment's root");
    let (named_text, other_text) = (named.path().display().to_string(), other.path().display().to_string());
    let env = [("KEEL_ROOT", other_text.as_str())];
    let before = run(other.path(), &["--root", &named_text, "lease", "live", "--json"], &env, "");
    let after = run(other.path(), &["lease", "live", "--json", "--root", &named_text], &env, "");
    for out in [&before, &after] {
        assert_eq!(code(out), 0, "{}", stderr(out));
        assert_eq!(json(out)["root"], named_text);
    }
    let from_env = run(named.path(), &["lease", "live", "--json"], &env, "");
    assert_eq!(json(&from_env)["root"], other_text);
    // A value the environment gives is checked as the flag's would be, and the variable named.
    let bad = run(named.path(), &["lease", "live"], &[("KEEL_GRACE_S", "soon")], "");
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("KEEL_GRACE_S"), "{}", stderr(&bad));
}
