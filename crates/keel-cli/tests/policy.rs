//! The workspace policy, `.keel/policy.toml`: every lease obeys it, a malformed one is a usage
//! error naming its file, line and key, and `keel arbitrate` reads it the same way.

use crate::support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::{code, json, stderr, stdout};

fn keel(root: &Path, args: &[&str]) -> Output {
    support::run(root, args, &[], "")
}

fn keel_with_stdin(root: &Path, args: &[&str], stdin: &str) -> Output {
    support::run(root, args, &[], stdin)
}

fn workspace(policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join(".keel")).expect("state dir");
    std::fs::write(dir.path().join(".keel/policy.toml"), policy).expect("policy");
    dir
}

fn acquire(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["lease", "acquire", "--json"];
    args.extend_from_slice(extra);
    keel(root, &args)
}

#[test]
fn every_lease_obeys_the_policy_s_protected_paths_exclusive_lanes_and_budgets() {
    let dir = workspace(
        "# the team's rules\n\
         protected = [\"deploy/\"]\n\
         exclusive_lanes = [{ name = \"release\", tree = [\"**\"] }, { name = \"global\", tree = [\"**\"] }]\n\
         [kind_budgets]\n\
         keyword = 2\n\
         global = 0\n",
    );
    let root = dir.path();
    let protected = acquire(root, &["--lane", "d", "--tree", "deploy/x.sh", "--owner", "o"]);
    assert_eq!(code(&protected), 1, "{}", stdout(&protected));
    assert!(json(&protected)["reason"].as_str().unwrap_or_default().contains("protected"));
    let global = acquire(root, &["--lane", "g", "--kind", "global", "--owner", "o"]);
    assert_eq!(code(&global), 1, "a budget of 0 grants none: {}", stdout(&global));
    assert_eq!(code(&acquire(root, &["--lane", "a", "--tree", "a/", "--owner", "o"])), 0);
    assert_eq!(code(&acquire(root, &["--lane", "b", "--tree", "b/", "--owner", "o"])), 0);
    let third = acquire(root, &["--lane", "c", "--tree", "c/", "--owner", "o"]);
    assert_eq!(code(&third), 1, "{}", stdout(&third));
    let reason = json(&third)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("\"a\"") && reason.contains("\"b\""),
        "a budget refusal names the leases using it: {reason}"
    );
    assert_eq!(code(&keel(root, &["lease", "release", "--lane", "a", "--owner", "o"])), 0);
    assert_eq!(code(&keel(root, &["lease", "release", "--lane", "b", "--owner", "o"])), 0);
    let release = acquire(root, &["--lane", "release", "--tree", "src/", "--owner", "o"]);
    assert_eq!(code(&release), 0, "an exclusive lane from the policy: {}", stdout(&release));
    let after = acquire(root, &["--lane", "x", "--tree", "x/", "--owner", "o"]);
    assert_eq!(code(&after), 1, "the exclusive lane runs alone: {}", stdout(&after));
}

#[test]
fn the_policy_s_floors_lengthen_a_lease_s_protection_and_its_skew_allowance_is_used() {
    let dir = workspace("min_grace_s = 600\nmin_ttl_minutes = 30\nclock_skew_s = 7200\n");
    let root = dir.path();
    let granted = keel(
        root,
        &["--grace-s", "1", "lease", "acquire", "--lane", "a", "--tree", "a/", "--owner", "o", "--ttl-minutes", "1"],
    );
    assert_eq!(code(&granted), 0, "{}", stderr(&granted));
    let live = json(&keel(root, &["lease", "live", "--json"]));
    let lease = &live["leases"][0]["lease"];
    assert_eq!(lease["grace_s"], 600, "{lease}");
    assert_eq!(lease["ttl_minutes"], 30.0, "{lease}");
    let show = json(&keel(root, &["policy", "show", "--json"]));
    assert_eq!(show["clock_skew_s"], 7200, "{show}");
    assert_eq!(show["min_grace_s"], 600);
    assert!(show["path"].as_str().unwrap_or_default().ends_with(".keel/policy.toml"), "{show}");
}

#[test]
fn a_malformed_policy_is_a_usage_error_naming_its_file_line_and_key_and_is_never_applied() {
    for (policy, key, line) in [
        ("protected = [\"deploy/\"]\ngrace_s = \"soon\"\n", "grace_s", 2),
        ("protected = [\"a/\"]\n\nfrobnicate = 3\n", "frobnicate", 3),
        ("[kind_budgets]\nkeyword = -1\n", "keyword", 2),
        ("protected = [\"a/\"\n", "protected", 1),
    ] {
        let dir = workspace(policy);
        let root = dir.path();
        for args in [
            &["lease", "acquire", "--lane", "a", "--tree", "z/", "--owner", "o"][..],
            &["lease", "live"][..],
            &["policy", "show"][..],
            &["policy", "check"][..],
        ] {
            let out = keel(root, args);
            assert_eq!(code(&out), 2, "{policy:?} {args:?}: {} {}", stdout(&out), stderr(&out));
            let message = stderr(&out);
            assert!(message.contains("policy.toml"), "names the file: {message}");
            assert!(message.contains(&format!("line {line}")), "names the line: {message}");
            assert!(message.contains(key), "names the key: {message}");
        }
        assert!(!root.join(".keel/lane-journal.jsonl").exists(), "{policy:?}: nothing was granted");
    }
}

#[test]
fn policy_show_prints_the_effective_policy_and_check_validates_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let show = json(&keel(root, &["policy", "show", "--json"]));
    assert_eq!(show["grace_s"], 120, "the defaults: {show}");
    assert_eq!(show["clock_skew_s"], 300);
    assert_eq!(show["protected"], serde_json::json!([]));
    assert!(stdout(&keel(root, &["policy", "show"])).contains("grace_s = 120"), "TOML for people");
    std::fs::write(root.join("candidate.toml"), "protected = [\"ops/\"]\n").expect("file");
    let ok = keel(root, &["policy", "check", "candidate.toml"]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    std::fs::write(root.join("bad.toml"), "protected = 3\n").expect("file");
    let bad = keel(root, &["policy", "check", "bad.toml"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("bad.toml") && stderr(&bad).contains("line 1"), "{}", stderr(&bad));
}

#[test]
fn arbitrate_reads_the_policy_and_a_per_line_taxonomy_adds_protected_paths_never_removes_them() {
    let dir = workspace("protected = [\"deploy/\"]\n");
    let root = dir.path();
    let request = |tree: &str, taxonomy: &str| {
        format!(
            "{{\"request\": {{\"lane\": \"a\", \"kind\": \"keyword\", \"tree\": [\"{tree}\"], \"mode\": \"exclusive\"}}{taxonomy}}}\n"
        )
    };
    let input = [
        request("deploy/x", ""),
        request("deploy/x", ", \"taxonomy\": {\"protected\": []}"),
        request("ops/y", ", \"taxonomy\": {\"protected\": [\"ops/\"]}"),
        request("src/z", ", \"taxonomy\": {\"protected\": [\"ops/\"]}"),
    ]
    .concat();
    let out = keel_with_stdin(root, &["arbitrate", "--taxonomy", ".keel/policy.toml"], &input);
    let outcomes: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("decision")["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["refuse", "refuse", "refuse", "acquire"], "{}", stdout(&out));
}

#[test]
fn the_policy_s_default_ttl_and_heartbeat_floor_apply_to_every_lease() {
    let dir = workspace("default_ttl_minutes = 5\nheartbeat_coalesce_s = 30\n");
    let root = dir.path();
    assert_eq!(code(&acquire(root, &["--lane", "a", "--tree", "a/", "--owner", "o"])), 0);
    let live = json(&keel(root, &["lease", "live", "--json"]));
    assert_eq!(live["leases"][0]["lease"]["ttl_minutes"], 5.0, "{live}");
    let beat = |root: &Path| json(&keel(root, &["lease", "heartbeat", "--lane", "a", "--owner", "o", "--json"]));
    // The lease was acquired this second: a beat now is younger than the floor, and not written.
    assert_eq!(beat(root)["outcome"], "coalesced");
}

#[test]
fn the_write_gate_refuses_a_policy_protected_path_even_to_a_forced_holder() {
    let dir = workspace("protected = [\"deploy/\"]\n");
    let root = dir.path();
    std::fs::create_dir(root.join("deploy")).expect("deploy");
    let forced = acquire(root, &["--lane", "all", "--tree", "**", "--owner", "o", "--force"]);
    assert_eq!(code(&forced), 0, "an operator's forced lease over everything: {}", stdout(&forced));
    let generation = json(&forced)["generation"].to_string();
    let write = keel_with_stdin(
        root,
        &[
            "fs",
            "write",
            "deploy/run.sh",
            "--stdin",
            "--owner",
            "o",
            "--lane",
            "all",
            "--generation",
            &generation,
            "--expect-any",
            "--json",
        ],
        "x",
    );
    assert_eq!(code(&write), 1, "{} {}", stdout(&write), stderr(&write));
    assert!(stdout(&write).contains("protected"), "{}", stdout(&write));
    assert!(!root.join("deploy/run.sh").exists());
}

#[test]
fn a_backend_table_with_an_unknown_key_or_a_wrong_type_stops_every_lease_command_naming_its_line() {
    for (text, line, key) in [
        ("[backend]\nkind = \"etcd\"\nendpoint = [\"http://127.0.0.1:2379\"]\n", 3, "endpoint"),
        ("[backend]\nkind = \"etcd\"\nprefix = [\"/keel/a\"]\n", 3, "prefix"),
        ("[backend]\nkind = \"zookeeper\"\n", 2, "kind"),
    ] {
        let dir = workspace(text);
        let root = dir.path();
        for output in
            [keel(root, &["policy", "check"]), acquire(root, &["--lane", "a", "--tree", "a/", "--owner", "o"])]
        {
            assert_eq!(code(&output), 2, "{text:?}: {}", stdout(&output));
            let said = stderr(&output);
            assert!(said.contains(&format!("policy.toml: line {line}, key `{key}`")), "{text:?}: {said}");
        }
        assert!(!root.join(".keel/lane-journal.jsonl").exists(), "no lease was granted anywhere");
    }
}

/// Without the etcd feature (`cargo test -p keel-cli`), etcd chosen by a flag or by the policy
/// is refused, never served from the journal instead.
#[cfg(not(feature = "etcd"))]
#[test]
fn a_build_without_etcd_support_refuses_the_etcd_backend_by_flag_and_by_policy() {
    let dir = workspace("[backend]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/keel/a\"\n");
    let root = dir.path();
    let by_policy = acquire(root, &["--lane", "a", "--tree", "a/", "--owner", "o"]);
    let by_flag = keel(root, &["--backend", "etcd", "--etcd-prefix", "/keel/a", "lease", "live"]);
    for output in [by_policy, by_flag] {
        assert_eq!(code(&output), 2, "{}", stdout(&output));
        assert!(stderr(&output).contains("keel was built without etcd support"), "{}", stderr(&output));
    }
    assert!(!root.join(".keel/lane-journal.jsonl").exists());
}
