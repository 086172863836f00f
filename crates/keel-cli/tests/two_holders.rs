//! Two holders, never: each test is a way an adversarial user once got a colliding region granted
//! (or a stale holder past the gate) through the `keel` binary, pinned so it cannot come back.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{code, git, json, now_s, stderr, stdout};

/// `keel` run in `cwd` with `args`; the environment names no root or journal unless `env` does.
fn keel_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    support::run(cwd, args, env, "")
}

/// A fresh directory to be a workspace, outside any git work tree or `.keel/`.
fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn acquire(cwd: &Path, lane: &str, tree: &str, owner: &str) -> Output {
    keel_in(cwd, &["lease", "acquire", "--lane", lane, "--tree", tree, "--owner", owner, "--json"], &[])
}

fn acquired_generation(output: &Output) -> u64 {
    assert_eq!(code(output), 0, "granted: {} {}", stdout(output), stderr(output));
    json(output)["generation"].as_u64().expect("a generation")
}

// 1. A derived file is trusted without checking its own bytes.

#[test]
fn an_edited_head_snapshot_is_not_trusted_and_the_live_lease_still_refuses_a_colliding_request() {
    let dir = workspace();
    let root = dir.path();
    assert_eq!(code(&acquire(root, "api", "src/api/", "agent-a")), 0);
    for i in 0..45 {
        assert_eq!(code(&acquire(root, &format!("lane{i}"), &format!("t{i}/"), "agent-x")), 0);
    }
    let head = root.join(".keel/lane-journal.jsonl.head");
    let text = std::fs::read_to_string(&head).expect("a head snapshot was written past 16 KiB");
    assert!(text.contains("\"src/api/\""), "the head holds the api lease");
    std::fs::write(&head, text.replace("\"src/api/\"", "\"src/apj/\"")).expect("edit the head");
    let refused = acquire(root, "fix", "src/api/handlers.rs", "agent-b");
    assert_eq!(code(&refused), 1, "a colliding region granted from an edited head: {}", stdout(&refused));
    let verify = keel_in(root, &["journal", "verify"], &[]);
    assert_eq!(code(&verify), 0, "the journal itself is clean: {}", stdout(&verify));
}

#[test]
fn a_head_snapshot_with_one_bit_flipped_anywhere_is_never_used() {
    let dir = workspace();
    let root = dir.path();
    for i in 0..45 {
        assert_eq!(code(&acquire(root, &format!("lane{i}"), &format!("t{i}/"), "agent-x")), 0);
    }
    let head = root.join(".keel/lane-journal.jsonl.head");
    let pristine = std::fs::read(&head).expect("head");
    let replayed = json(&keel_in(root, &["journal", "replay"], &[]));
    // Flip one bit in a byte of a lease's tree: the lease that byte belongs to would otherwise
    // come back under another region.
    let at = pristine.windows(5).position(|w| w == b"\"t17/").expect("lane17's tree in the head") + 2;
    let mut damaged = pristine.clone();
    damaged[at] ^= 0x01;
    std::fs::write(&head, &damaged).expect("damage the head");
    let live = json(&keel_in(root, &["lease", "live", "--json"], &[]));
    let trees: Vec<&Value> = live["leases"].as_array().expect("leases").iter().map(|l| &l["lease"]["tree"]).collect();
    let want: Vec<&Value> = replayed.as_array().expect("replay").iter().map(|l| &l["tree"]).collect();
    assert_eq!(trees, want, "the live set is the journal's, whatever the head says");
}

#[test]
fn verify_reports_two_live_leases_whose_regions_collide_naming_both() {
    let dir = workspace();
    let root = dir.path();
    std::fs::create_dir(root.join(".keel")).expect("state dir");
    let lease = |lane: &str, tree: &str, mode: &str| {
        format!(
            "{{\"lane\": \"{lane}\", \"lease\": {{\"lane\": \"{lane}\", \"loop_ts\": \"t-{lane}\", \"mode\": \"{mode}\", \"tree\": [\"{tree}\"]}}, \"loop_ts\": \"t-{lane}\", \"op\": \"ACQUIRE\"}}\n"
        )
    };
    let journal = [
        lease("api", "src/api/", "exclusive"),
        lease("fix", "src/api/handlers.rs", "exclusive"),
        lease("r1", "docs/", "shared"),
        lease("r2", "docs/a.md", "shared"),
    ]
    .concat();
    std::fs::write(root.join(".keel/lane-journal.jsonl"), journal).expect("journal");
    let verify = keel_in(root, &["journal", "verify"], &[]);
    assert_eq!(code(&verify), 1, "two colliding live leases are corruption: {}", stdout(&verify));
    let report = stdout(&verify);
    assert!(report.contains("\"api\"") && report.contains("\"fix\""), "names both: {report}");
    assert!(!report.contains("\"r1\""), "two shared leases do not collide: {report}");
    let verify = json(&keel_in(root, &["journal", "verify", "--json"], &[]));
    assert_eq!(verify["clean"], false);
    assert_eq!(verify["collisions"].as_array().map(Vec::len), Some(1), "{verify}");
}

// 2. One workspace, several journals.

#[test]
fn a_relative_journal_resolves_against_the_root_not_the_current_directory() {
    let dir = workspace();
    let parent = dir.path();
    let ws = parent.join("ws");
    std::fs::create_dir(&ws).expect("ws");
    let first = keel_in(
        parent,
        &[
            "--root",
            "ws",
            "--journal",
            ".keel/j.jsonl",
            "lease",
            "acquire",
            "--lane",
            "a",
            "--tree",
            "a/",
            "--owner",
            "o1",
        ],
        &[],
    );
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert!(ws.join(".keel/j.jsonl").exists(), "the journal is under the root");
    assert!(!parent.join(".keel").exists(), "nothing is written beside the root");
    let second = keel_in(
        &ws,
        &["--journal", ".keel/j.jsonl", "lease", "acquire", "--lane", "b", "--tree", "a/x", "--owner", "o2"],
        &[],
    );
    assert_eq!(code(&second), 1, "the same region granted twice: {}", stdout(&second));
}

#[test]
fn a_command_in_a_subdirectory_finds_the_workspace_above_it() {
    let dir = workspace();
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("sub/deeper")).expect("sub");
    assert_eq!(code(&acquire(ws, "a", "a/", "o1")), 0);
    let again = acquire(&ws.join("sub/deeper"), "b", "a/", "o2");
    assert_eq!(code(&again), 1, "granted from a subdirectory: {}", stdout(&again));
    assert!(!ws.join("sub/.keel").exists() && !ws.join("sub/deeper/.keel").exists(), "no second state directory");
    let live = json(&keel_in(&ws.join("sub"), &["lease", "live", "--json"], &[]));
    let canonical = std::fs::canonicalize(ws).expect("canonical");
    assert_eq!(live["root"], canonical.display().to_string(), "says which root it used: {live}");
    assert_eq!(live["journal"], canonical.join(".keel/lane-journal.jsonl").display().to_string());
}

#[test]
fn every_lease_command_honours_the_journal_binding_and_refuses_another_journal() {
    let dir = workspace();
    let ws = dir.path();
    std::fs::create_dir_all(ws.join(".keel")).expect("state dir");
    std::fs::create_dir_all(ws.join("state")).expect("state");
    std::fs::write(ws.join(".keel/journal-binding"), "root:state/j.jsonl").expect("binding");
    let held = keel_in(ws, &["lease", "acquire", "--lane", "all", "--tree", "**", "--owner", "o1"], &[]);
    assert_eq!(code(&held), 0, "{}", stderr(&held));
    assert!(ws.join("state/j.jsonl").exists(), "the bound journal was written");
    assert!(!ws.join(".keel/lane-journal.jsonl").exists(), "not the default one");
    let again = keel_in(ws, &["lease", "acquire", "--lane", "b", "--tree", "**", "--owner", "o2"], &[]);
    assert_eq!(code(&again), 1, "{}", stdout(&again));
    let other = keel_in(ws, &["--journal", "other.jsonl", "lease", "live"], &[]);
    assert_eq!(code(&other), 2, "a journal other than the bound one is a usage error");
    let message = stderr(&other);
    assert!(message.contains("other.jsonl") && message.contains("state/j.jsonl"), "names both: {message}");
}

#[test]
fn a_second_journal_is_refused_once_the_workspace_has_one() {
    let dir = workspace();
    let ws = dir.path();
    assert_eq!(code(&acquire(ws, "a", "a/", "o1")), 0);
    let split = keel_in(
        ws,
        &["--journal", "j2.jsonl", "lease", "acquire", "--lane", "b", "--tree", "a/", "--owner", "o2"],
        &[],
    );
    assert_eq!(code(&split), 2, "a second journal for one workspace: {} {}", stdout(&split), stderr(&split));
    assert!(!ws.join("j2.jsonl").exists());
}

#[test]
fn agents_in_two_git_worktrees_of_one_repository_share_one_journal() {
    let dir = workspace();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("src/deep")).expect("repo");
    std::fs::write(repo.join("src/a.rs"), "a").expect("file");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    git(&repo, &["worktree", "add", "-q", "../wt", "-b", "feature"]);
    let worktree = dir.path().join("wt");
    assert_eq!(code(&acquire(&repo.join("src"), "a", "src/a.rs", "agent-a")), 0);
    let other = acquire(&worktree.join("src"), "b", "src/a.rs", "agent-b");
    assert_eq!(code(&other), 1, "two worktrees granted one file: {}", stdout(&other));
    assert!(!worktree.join(".keel").exists(), "the worktree has no journal of its own");
}

// 3. `keel lease run`'s command outlives a killed keel.

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Whether `pid` runs (a zombie has ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The pids whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && running(pid) {
            out.push(pid);
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another agent's colliding request, with the same short grace as the lease run.
fn acquire_short_grace(root: &Path) -> Output {
    keel_in(root, &["lease", "acquire", "--lane", "b", "--tree", "a/x", "--owner", "other"], &[("KEEL_GRACE_S", "1")])
}

fn spawn_run(root: &Path, command: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--grace-s", "1", "lease", "run", "--lane", "a", "--tree", "a/", "--owner", "o", "--"])
        .args(command)
        .current_dir(root)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel lease run starts")
}

#[test]
fn the_command_of_a_killed_lease_run_dies_with_it_before_the_lease_can_be_reclaimed() {
    let dir = workspace();
    let root = dir.path();
    let mut keel = spawn_run(root, &["sleep", "60"]);
    let keel_pid = keel.id();
    let mut child = 0;
    wait_until("the command to start", Duration::from_secs(10), || {
        child = children(keel_pid).into_iter().find(|&c| running(c)).unwrap_or(0);
        child != 0 && std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    keel.kill().expect("SIGKILL keel");
    let _ = keel.wait();
    let killed = Instant::now();
    loop {
        let gone = !running(child);
        let granted = code(&acquire_short_grace(root)) == 0;
        assert!(!granted || gone, "the lease was reclaimed while its command still ran");
        if granted {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "the lease was never reclaimable");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_lease_run_keeps_its_lease_while_any_process_of_its_command_still_runs() {
    let dir = workspace();
    let root = dir.path();
    let mut keel = spawn_run(root, &["sh", "-c", "sleep 60 & wait"]);
    let keel_pid = keel.id();
    let mut shell = 0;
    wait_until("the command's own child", Duration::from_secs(10), || {
        shell = children(keel_pid).into_iter().find(|&c| running(c)).unwrap_or(0);
        shell != 0 && !children(shell).is_empty()
    });
    let grandchild = children(shell)[0];
    keel.kill().expect("SIGKILL keel");
    let _ = keel.wait();
    wait_until("the command's shell to die with keel", Duration::from_secs(5), || !running(shell));
    assert!(running(grandchild), "the grandchild outlives the shell");
    // Past the grace (1 s) and the holder's death, the group still runs: never reclaimed.
    std::thread::sleep(Duration::from_millis(2500));
    let refused = acquire_short_grace(root);
    assert_eq!(code(&refused), 1, "reclaimed while a process of the command ran: {}", stdout(&refused));
    for pid in group_members(shell) {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    wait_until("the grandchild to end", Duration::from_secs(5), || !running(grandchild));
    wait_until("the lease to be reclaimable", Duration::from_secs(10), || code(&acquire_short_grace(root)) == 0);
}

// 4. A malformed CHECKPOINT empties the live set and restarts generations.

fn append(path: &Path, line: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("journal");
    writeln!(file, "{line}").expect("append");
}

fn live_lanes(root: &Path) -> Vec<String> {
    let live = json(&keel_in(root, &["lease", "live", "--json"], &[]));
    live["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["identity"]["lane"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_malformed_checkpoint_is_damage_and_keeps_the_live_leases_and_their_generations() {
    for bad in [
        r#"{"op": "CHECKPOINT", "leases": "garbage", "generations": 7, "seq_watermark": "x"}"#,
        r#"{"op": "CHECKPOINT"}"#,
        r#"{"op": "CHECKPOINT", "leases": [1, "x"]}"#,
        r#"{"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": "9"}]}"#,
    ] {
        let dir = workspace();
        let root = dir.path();
        assert_eq!(acquired_generation(&acquire(root, "a", "a/", "o1")), 1);
        assert_eq!(acquired_generation(&acquire(root, "b", "b/", "o2")), 2);
        append(&root.join(".keel/lane-journal.jsonl"), bad);
        assert_eq!(live_lanes(root), ["a", "b"], "{bad}");
        let stopped = acquire(root, "c", "c/", "o3");
        assert_eq!(code(&stopped), 4, "grants stop at damage: {bad}: {}", stdout(&stopped));
        assert_eq!(code(&keel_in(root, &["journal", "verify"], &[])), 1, "verify calls it damage: {bad}");
        let review = keel_in(root, &["journal", "review", "--accept", "--by", "ops"], &[]);
        assert_eq!(code(&review), 0, "{}", stderr(&review));
        assert_eq!(code(&acquire(root, "x", "a/", "o4")), 1, "a/ is still held: {bad}");
        let next = acquired_generation(&acquire(root, "c", "c/", "o3"));
        assert!(next > 3, "generation {next} may have been issued by the damaged line: {bad}");
    }
}

#[test]
fn accepting_a_corrupt_acquire_never_issues_its_generation_again() {
    let dir = workspace();
    let root = dir.path();
    assert_eq!(acquired_generation(&acquire(root, "a", "a/", "o1")), 1);
    assert_eq!(acquired_generation(&acquire(root, "b", "b/", "o2")), 2);
    assert_eq!(acquired_generation(&acquire(root, "c", "c/", "o3")), 3);
    let path = root.join(".keel/lane-journal.jsonl");
    let text = std::fs::read_to_string(&path).expect("journal");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let b = lines.iter().position(|l| l.contains("\"lane\": \"b\"")).expect("b's ACQUIRE");
    lines[b] = lines[b].replacen('{', "{{", 1);
    std::fs::write(&path, lines.join("\n") + "\n").expect("damage b's line");
    let review = keel_in(root, &["journal", "review", "--accept", "--by", "ops"], &[]);
    assert_eq!(code(&review), 0, "{}", stderr(&review));
    assert!(stdout(&review).contains("generation"), "the review says the counter was raised: {}", stdout(&review));
    let next = acquired_generation(&acquire(root, "d", "d/", "o4"));
    assert!(next > 3, "generation {next} was issued twice");
}

// 5. Adopt keeps the fencing token.

#[test]
fn adopt_gives_the_new_holder_a_new_generation_and_the_gate_refuses_the_old_one_by_it() {
    let dir = workspace();
    let root = dir.path();
    std::fs::create_dir(root.join("src")).expect("src");
    let grant = acquire(root, "a", "src/", "agent-a");
    let old = acquired_generation(&grant);
    let loop_ts = json(&grant)["loop_ts"].as_str().expect("loop_ts").to_owned();
    let adopt =
        keel_in(root, &["lease", "adopt", "--lane", "a", "--loop-ts", &loop_ts, "--owner", "agent-b", "--json"], &[]);
    assert_eq!(code(&adopt), 0, "{}", stderr(&adopt));
    let new = json(&adopt)["generation"].as_u64().expect("the adopt names the new generation");
    assert!(new > old, "the new holder's token {new} must exceed the old {old}");
    let live = json(&keel_in(root, &["lease", "live", "--json"], &[]));
    assert_eq!(live["leases"][0]["generation"], new);
    let write = |owner: &str, generation: u64, name: &str| {
        let generation = generation.to_string();
        keel_in(
            root,
            &[
                "fs",
                "write",
                name,
                "--stdin",
                "--owner",
                owner,
                "--lane",
                "a",
                "--generation",
                &generation,
                "--expect-any",
                "--json",
            ],
            &[],
        )
    };
    // The old holder under the new holder's name still presents the old token: refused by it.
    let stale = write("agent-b", old, "src/x.rs");
    assert_eq!(code(&stale), 1, "{}", stdout(&stale));
    assert_eq!(json(&stale)["outcome"], "stale_generation", "{}", stdout(&stale));
    let ok = write("agent-b", new, "src/y.rs");
    assert_eq!(code(&ok), 0, "{} {}", stdout(&ok), stderr(&ok));
}

// 6. The gate and the file system read a path differently.

#[test]
fn a_path_spelled_unlike_its_region_is_a_usage_error_in_the_gate_and_in_lease_trees() {
    let dir = workspace();
    let root = dir.path();
    std::fs::create_dir(root.join("src")).expect("src");
    let generation = acquired_generation(&acquire(root, "a", "src/", "agent-a")).to_string();
    for path in
        ["src\\..\\..\\evil", " src/d.txt", "src/d.txt ", "src//d.txt", "./src/d.txt", "src/./d.txt", "src/\u{7}d"]
    {
        let write = keel_in(
            root,
            &[
                "fs",
                "write",
                path,
                "--stdin",
                "--owner",
                "agent-a",
                "--lane",
                "a",
                "--generation",
                &generation,
                "--expect-any",
            ],
            &[],
        );
        assert_eq!(code(&write), 2, "{path:?}: {} {}", stdout(&write), stderr(&write));
        assert!(stderr(&write).contains(&format!("{path:?}")), "names the path: {}", stderr(&write));
    }
    let entries: Vec<String> = std::fs::read_dir(root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, [".keel", "src"], "nothing was written outside src/");
    for tree in [" src/", "src\\api", "./src", "src//api", "src/./api", "."] {
        let out = acquire(root, "t", tree, "agent-t");
        assert_eq!(code(&out), 2, "tree {tree:?}: {}", stdout(&out));
    }
}

// 7. The grace is chosen by whoever asks.

#[test]
fn a_later_requester_cannot_shorten_the_grace_recorded_in_a_lease() {
    let dir = workspace();
    let root = dir.path();
    std::fs::create_dir(root.join(".keel")).expect("state dir");
    let hour_ago = keel_kernel::expiry::format_utc(now_s() - 3600);
    let lease = format!(
        "{{\"lane\": \"a\", \"lease\": {{\"acquired_at\": \"{hour_ago}\", \"grace_s\": 7200, \"holder\": \"agent-a\", \"lane\": \"a\", \"loop_ts\": \"t1\", \"mode\": \"exclusive\", \"pid\": null, \"tree\": [\"a/\"], \"ttl_minutes\": 1}}, \"loop_ts\": \"t1\", \"op\": \"ACQUIRE\", \"seq\": 1}}\n"
    );
    std::fs::write(root.join(".keel/lane-journal.jsonl"), lease).expect("journal");
    for env in [&[("KEEL_GRACE_S", "0")][..], &[]] {
        let out = keel_in(root, &["lease", "acquire", "--lane", "b", "--tree", "a/x", "--owner", "b"], env);
        assert_eq!(code(&out), 1, "reclaimed inside its recorded grace ({env:?}): {}", stdout(&out));
    }
    let out =
        keel_in(root, &["--grace-s", "0", "lease", "acquire", "--lane", "b", "--tree", "a/x", "--owner", "b"], &[]);
    assert_eq!(code(&out), 1, "--grace-s 0: {}", stdout(&out));
}

// 8. Symlinked state leads outside the workspace.

#[test]
fn keel_state_reached_through_a_symbolic_link_is_refused_naming_the_link() {
    let dir = workspace();
    let ws = dir.path().join("ws");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&ws).expect("ws");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, ws.join(".keel")).expect("symlink .keel");
    let out = acquire(&ws, "a", "a/", "o1");
    assert_eq!(code(&out), 2, "{} {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains(".keel"), "names the link: {}", stderr(&out));
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0, "nothing written through the link");

    std::fs::remove_file(ws.join(".keel")).expect("unlink");
    std::fs::create_dir(ws.join(".keel")).expect("real state dir");
    let target: PathBuf = outside.join("journal.jsonl");
    std::fs::write(&target, "").expect("target");
    std::os::unix::fs::symlink(&target, ws.join(".keel/lane-journal.jsonl")).expect("symlink journal");
    let out = acquire(&ws, "a", "a/", "o1");
    assert_eq!(code(&out), 2, "{} {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("lane-journal.jsonl"), "names the link: {}", stderr(&out));
    assert_eq!(std::fs::read(&target).expect("target"), b"", "nothing appended through the link");
}
