//! `keel hook` end to end: stand-in harness processes (one per agent) run the hook the way Claude
//! Code does (`sh -c 'keel hook pre-tool-use'`, the event on stdin), and the agents' edits are
//! allowed, leased and denied as the story of the issue tells it.

use crate::support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};
use support::git;

/// One agent: a harness process that runs hooks on request.
struct Harness {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Harness {
    fn start(env: &[(&str, &str)]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/stand_in_harness.py");
        let mut command = Command::new("python3");
        command.arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        command.env_remove("KEEL_ROOT").env_remove("KEEL_JOURNAL").env_remove("KEEL_OWNER").env_remove("KEEL_GRACE_S");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("python3 runs the stand-in harness");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, input, output }
    }

    /// Runs `keel args` through `sh -c` in `cwd` with `stdin`; returns (code, stdout, stderr).
    fn run(&mut self, cwd: &Path, args: &[&str], stdin: &str) -> (i64, String, String) {
        let mut argv = vec![env!("CARGO_BIN_EXE_keel")];
        argv.extend_from_slice(args);
        self.ask(&json!({"run": argv, "stdin": stdin, "cwd": cwd.display().to_string()}))
    }

    /// Sends the harness one request; returns (code, stdout, stderr) of what it ran.
    fn ask(&mut self, request: &Value) -> (i64, String, String) {
        writeln!(self.input, "{request}").expect("to the harness");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("from the harness");
        let answer: Value = serde_json::from_str(&line).expect("the harness answers JSON");
        let text = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
        (answer["code"].as_i64().unwrap_or(-1), text("stdout"), text("stderr"))
    }

    /// A Claude Code `PreToolUse` event for an edit tool on `file`.
    fn edit(&mut self, root: &Path, tool: &str, file: &str) -> Decision {
        let path = root.join(file).display().to_string();
        self.pre_tool_use(root, tool, &json!({"file_path": path, "old_string": "a", "new_string": "b"}))
    }

    /// A Claude Code `PreToolUse` event for the Bash tool running `command` in `root`.
    fn bash(&mut self, root: &Path, command: &str) -> Decision {
        self.pre_tool_use(root, "Bash", &json!({"command": command, "description": "a command"}))
    }

    fn pre_tool_use(&mut self, root: &Path, tool: &str, input: &Value) -> Decision {
        let event = json!({
            "session_id": format!("session-{}", self.child.id()), "transcript_path": "/tmp/t.jsonl",
            "cwd": root.display().to_string(), "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": input, "tool_use_id": "toolu_01",
        });
        let (code, stdout, stderr) = self.run(root, &["hook", "pre-tool-use"], &event.to_string());
        assert_eq!(code, 0, "{stdout} {stderr}");
        if stdout.trim().is_empty() {
            return Decision::Allow;
        }
        let answer: Value = serde_json::from_str(stdout.trim()).expect("the dialect's JSON");
        match answer["hookSpecificOutput"]["permissionDecision"].as_str() {
            Some("deny") => Decision::Deny(
                answer["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap_or_default().to_owned(),
            ),
            _ => Decision::Allow,
        }
    }

    /// Runs a command line as a settings file holds it, with `event` on its stdin.
    fn run_line(&mut self, cwd: &Path, command: &str, event: &Value) -> (i64, String, String) {
        self.ask(&json!({"command": command, "stdin": event.to_string(), "cwd": cwd.display().to_string()}))
    }

    fn session_end(&mut self, root: &Path) {
        let event = json!({"session_id": "s", "cwd": root.display().to_string(), "hook_event_name": "SessionEnd"});
        let (code, stdout, stderr) = self.run(root, &["hook", "session-end"], &event.to_string());
        assert_eq!(code, 0, "{stdout} {stderr}");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny(String),
}

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join("src")).expect("src");
    std::fs::write(root.join("src/a.rs"), "a").expect("a");
    std::fs::write(root.join("src/b.rs"), "b").expect("b");
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "init"]);
    dir
}

#[test]
fn the_story_agents_edits_are_leased_denied_released_and_a_commit_is_guarded() {
    let dir = repository();
    let root = &std::fs::canonicalize(dir.path()).expect("canonical");
    let (mut a, mut b) = (Harness::start(&[]), Harness::start(&[]));
    assert_eq!(a.edit(root, "Edit", "src/a.rs"), Decision::Allow, "A edits a free file");
    let live = support::json(&support::run(root, &["lease", "live", "--json"], &[], ""));
    let lease = &live["leases"][0]["lease"];
    assert_eq!(lease["tree"], json!(["src/a.rs"]), "an automatic lease on the file: {live}");
    assert_eq!(lease["pid"], a.pid(), "held by A's harness process, found by walking up past sh");
    let Decision::Deny(reason) = b.edit(root, "Write", "src/a.rs") else { panic!("B may not edit A's file") };
    assert!(reason.contains(&format!("-{}", a.pid())) && reason.contains("src/a.rs"), "names A and the file: {reason}");
    assert!(reason.contains("other files") || reason.contains("retry"), "says what to do: {reason}");
    assert!(
        reason.contains("held since 20") && reason.contains("last sign of life 20"),
        "since when, and the last sign of life: {reason}"
    );
    assert_eq!(b.edit(root, "Edit", "src/b.rs"), Decision::Allow, "B edits another file");
    let Decision::Deny(reason) = b.bash(root, "sed -i s/x/y/ src/a.rs") else {
        panic!("B's shell command may not write A's file either")
    };
    assert!(reason.contains("src/a.rs") && reason.contains(&format!("-{}", a.pid())), "{reason}");
    let Decision::Deny(reason) = b.bash(&root.join("src"), "cat b.rs | tee a.rs") else {
        panic!("nor may a pipe into it from another directory")
    };
    assert!(reason.contains("src/a.rs"), "{reason}");
    assert_eq!(b.bash(root, "grep -rn x src | head"), Decision::Allow, "reading is not keel's business");
    assert_eq!(a.edit(root, "MultiEdit", "src/a.rs"), Decision::Allow, "A's own lease covers its next edit");
    a.session_end(root);
    assert_eq!(b.edit(root, "Edit", "src/a.rs"), Decision::Allow, "released at A's session end");

    // A commit by A that stages B's file is refused by the pre-commit guard (run as git runs it:
    // a hook script under git, under A's harness), installed by `keel hook install git`.
    let installed = support::run(root, &["hook", "install", "git"], &[], "");
    assert_eq!(support::code(&installed), 0, "{}", support::stderr(&installed));
    std::fs::write(root.join("src/b.rs"), "changed").expect("edit");
    git(root, &["add", "src/b.rs"]);
    let commit = |harness: &mut Harness| {
        let argv = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x"];
        harness.ask(&json!({"run": argv, "stdin": "", "cwd": root.display().to_string()}))
    };
    let (code, _, stderr) = commit(&mut a);
    assert_ne!(code, 0, "A's commit staging B's file is refused: {stderr}");
    assert!(
        stderr.contains("src/b.rs") && stderr.contains(&format!("-{}", b.pid())),
        "lists path and holder: {stderr}"
    );
    let (code, _, stderr) = commit(&mut b);
    assert_eq!(code, 0, "B commits its own file: {stderr}");
}

#[test]
fn a_killed_agent_s_automatic_leases_are_reclaimed_past_the_grace_and_a_live_one_s_never() {
    let dir = repository();
    let root = &std::fs::canonicalize(dir.path()).expect("canonical");
    let mut a = Harness::start(&[("KEEL_GRACE_S", "1")]);
    let mut b = Harness::start(&[("KEEL_GRACE_S", "1")]);
    assert_eq!(a.edit(root, "Edit", "src/a.rs"), Decision::Allow);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(matches!(b.edit(root, "Edit", "src/a.rs"), Decision::Deny(_)), "A lives: past its grace, still A's");
    a.child.kill().expect("kill -9 the stand-in");
    a.child.wait().expect("reaped");
    assert_eq!(b.edit(root, "Edit", "src/a.rs"), Decision::Allow, "A is gone and past the grace: reclaimed");
}

#[test]
fn malformed_truncated_and_huge_events_exit_2_with_one_line_and_reads_pass_silently() {
    let dir = repository();
    let root = dir.path();
    for bad in ["{\"tool_name\": ", "not json", "[1]"] {
        let out = support::run(root, &["hook", "pre-tool-use"], &[], bad);
        assert_eq!(support::code(&out), 2, "{bad}");
        assert_eq!(support::stderr(&out).lines().count(), 1, "{}", support::stderr(&out));
    }
    let huge = format!("{{\"tool_name\": \"Write\", \"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let out = support::run(root, &["hook", "pre-tool-use"], &[], &huge);
    assert_eq!(support::code(&out), 2);
    let read = json!({"tool_name": "Read", "cwd": root.display().to_string(), "tool_input": {"file_path": "src/a.rs"}});
    let out = support::run(root, &["hook", "pre-tool-use"], &[], &read.to_string());
    assert_eq!((support::code(&out), support::stdout(&out)), (0, String::new()), "a read is not keel's business");
}

#[test]
fn two_agents_in_two_git_worktrees_collide_on_the_same_repository_relative_file() {
    let dir = repository();
    let root = &std::fs::canonicalize(dir.path()).expect("canonical");
    git(root, &["worktree", "add", "-q", "../wt", "-b", "feature"]);
    let worktree = &root.parent().expect("parent").join("wt");
    let (mut a, mut b) = (Harness::start(&[]), Harness::start(&[]));
    assert_eq!(a.edit(root, "Edit", "src/a.rs"), Decision::Allow);
    let Decision::Deny(reason) = b.edit(worktree, "Edit", "src/a.rs") else {
        panic!("the worktree's src/a.rs is the same file")
    };
    assert!(reason.contains("src/a.rs"), "{reason}");
    assert_eq!(b.edit(worktree, "Edit", "src/b.rs"), Decision::Allow);
    let _ = std::fs::remove_dir_all(worktree);
}

#[test]
fn installing_the_git_hook_is_idempotent_never_replaces_a_user_s_hook_and_uninstalls_only_its_own() {
    let dir = repository();
    let root = dir.path();
    let hook = root.join(".git/hooks/pre-commit");
    let run = |args: &[&str]| support::run(root, args, &[], "");
    let status = run(&["hook", "status"]);
    assert!(support::stdout(&status).contains("git: not installed"), "{}", support::stdout(&status));
    let dry = run(&["hook", "install", "git", "--dry-run"]);
    assert_eq!(support::code(&dry), 0);
    assert!(!hook.exists(), "a dry run writes nothing");
    assert_eq!(support::code(&run(&["hook", "install", "git"])), 0);
    let first = std::fs::read(&hook).expect("installed");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&hook).expect("stat").permissions());
    assert_eq!(mode & 0o111, 0o111, "executable");
    let again = run(&["hook", "install", "git"]);
    assert!(support::stdout(&again).contains("nothing to change"), "{}", support::stdout(&again));
    assert_eq!(std::fs::read(&hook).expect("still there"), first, "twice changes nothing");
    assert!(support::stdout(&run(&["hook", "status"])).contains("git: installed"));
    assert_eq!(support::code(&run(&["hook", "uninstall", "git"])), 0);
    assert!(!hook.exists(), "removed");

    std::fs::write(&hook, "#!/bin/sh\necho the user's own hook\n").expect("a user's hook");
    let refused = run(&["hook", "install", "git"]);
    assert_eq!(support::code(&refused), 1, "{}", support::stderr(&refused));
    assert_eq!(
        std::fs::read_to_string(&hook).expect("kept"),
        "#!/bin/sh\necho the user's own hook\n",
        "never replaced"
    );
    let refused = run(&["hook", "uninstall", "git"]);
    assert_eq!(support::code(&refused), 1);
    assert!(hook.exists(), "a hook keel did not write is never removed");
}

#[test]
fn an_unreadable_shell_command_is_allowed_with_a_note_or_denied_by_policy_and_damage_denies_unless_allowed() {
    let dir = repository();
    let root = &std::fs::canonicalize(dir.path()).expect("canonical");
    let event = |tool: &str, input: Value| {
        let event = json!({"cwd": root.display().to_string(), "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": input});
        let out = support::run(root, &["hook", "pre-tool-use"], &[], &event.to_string());
        assert_eq!(support::code(&out), 0, "{}", support::stderr(&out));
        let answer = support::stdout(&out);
        if answer.trim().is_empty() { Value::Null } else { serde_json::from_str(answer.trim()).expect("JSON") }
    };
    let policy = |text: &str| {
        std::fs::create_dir_all(root.join(".keel")).expect(".keel");
        std::fs::write(root.join(".keel/policy.toml"), text).expect("policy");
    };
    let generate = || event("Bash", json!({"command": "python3 gen.py > src/out.rs"}));
    let warned = generate();
    let note = warned["hookSpecificOutput"]["additionalContext"].as_str().unwrap_or_default();
    assert!(warned["hookSpecificOutput"]["permissionDecision"].is_null(), "allowed: {warned}");
    assert!(note.contains("`python3` may write any file") && note.contains("src/out.rs"), "leased and warned: {note}");
    policy("bash = \"deny-unknown\"\n");
    let denied = generate();
    assert_eq!(denied["hookSpecificOutput"]["permissionDecision"], "deny", "{denied}");
    policy("bash = \"allow\"\n");
    let allowed = generate();
    assert!(allowed.is_null(), "allowed silently (its file already leased): {allowed}");

    // Unreviewed damage stops grants: an edit that needs a lease is denied, naming the damage.
    let mut journal =
        std::fs::OpenOptions::new().append(true).open(root.join(".keel/lane-journal.jsonl")).expect("journal");
    writeln!(journal, "{{\"damaged").expect("damage");
    let edit = || event("Write", json!({"file_path": root.join("src/b.rs").display().to_string()}));
    let denied = edit();
    let reason = denied["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap_or_default();
    assert!(reason.contains("damaged") && reason.contains("line "), "{denied}");
    policy("on_error = \"allow\"\n");
    let allowed = edit();
    assert!(allowed["hookSpecificOutput"]["permissionDecision"].is_null(), "{allowed}");
    assert!(allowed["hookSpecificOutput"]["additionalContext"].as_str().is_some_and(|n| n.contains("damaged")));
}

const CLAUDE_SETTINGS: &str = r#"{
  // the team's settings, with a comment
  "permissions": {"allow": ["Bash(cargo test:*)"]},
  "hooks": {
    "PreToolUse": [
      {"matcher": "Bash", "hooks": [{"type": "command", "command": "./scripts/check-bash.sh"}]}
    ]
  },
  "model": "opus"
}
"#;

const CODEX_CONFIG: &str = r#"# Codex settings
model = "gpt-5-codex"   # the model

[[hooks.PreToolUse]]
matcher = "^Bash$"

[[hooks.PreToolUse.hooks]]
type = "command"
command = "python3 audit.py"   # the user's own
"#;

/// The command line keel installed for `PreToolUse` in `.claude/settings.json` or
/// `.codex/config.toml`.
fn installed_pre_tool_use(root: &Path, codex: bool) -> String {
    let commands: Vec<String> = if codex {
        let text = std::fs::read_to_string(root.join(".codex/config.toml")).expect("config");
        let config: toml::Table = toml::from_str(&text).expect("TOML");
        let groups = config["hooks"]["PreToolUse"].as_array().expect("groups").clone();
        groups
            .iter()
            .flat_map(|g| g["hooks"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["command"].as_str().map(str::to_owned))
            .collect()
    } else {
        let text = std::fs::read_to_string(root.join(".claude/settings.json")).expect("settings");
        let text: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let settings: Value = serde_json::from_str(&text).expect("JSON once the comment is gone");
        let groups = settings["hooks"]["PreToolUse"].as_array().expect("groups").clone();
        groups
            .iter()
            .flat_map(|g| g["hooks"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["command"].as_str().map(str::to_owned))
            .collect()
    };
    commands.into_iter().find(|c| c.contains("hook pre-tool-use")).expect("keel's entry")
}

#[test]
fn installing_for_claude_code_and_codex_keeps_the_user_s_settings_and_the_installed_hook_decides() {
    let dir = repository();
    let root = &std::fs::canonicalize(dir.path()).expect("canonical");
    let home = tempfile::tempdir().expect("home");
    let env = [("HOME", home.path().to_str().expect("UTF-8"))];
    let run = |args: &[&str]| support::run(root, args, &env, "");
    std::fs::create_dir_all(root.join(".claude")).expect(".claude");
    std::fs::create_dir_all(root.join(".codex")).expect(".codex");
    for (target, file, before) in
        [("claude-code", ".claude/settings.json", CLAUDE_SETTINGS), ("codex", ".codex/config.toml", CODEX_CONFIG)]
    {
        let path = root.join(file);
        std::fs::write(&path, before).expect("the user's settings");
        let dry = run(&["hook", "install", target, "--dry-run"]);
        assert_eq!(support::code(&dry), 0, "{}", support::stderr(&dry));
        assert!(support::stdout(&dry).contains("hook pre-tool-use"), "{}", support::stdout(&dry));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), before, "a dry run changes nothing");
        let installed = run(&["hook", "install", target]);
        assert_eq!(support::code(&installed), 0, "{}", support::stderr(&installed));
        let after = std::fs::read_to_string(&path).expect("read");
        let mut lines = after.lines();
        for line in before.lines() {
            assert!(lines.any(|l| l == line || l.strip_suffix(',') == Some(line)), "{target} lost {line:?}:\n{after}");
        }
        let again = run(&["hook", "install", target]);
        assert!(support::stdout(&again).contains("nothing to change"), "{}", support::stdout(&again));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), after, "installing twice changes nothing");
        let status = support::stdout(&run(&["hook", "status"]));
        assert!(status.contains(&format!("{target} (project): hooks installed")), "{status}");
    }

    // The installed command lines are live: run as the harness runs them, they lease and deny.
    let (mut a, mut b) = (Harness::start(&[]), Harness::start(&[]));
    let edit = |file: &str| {
        json!({"cwd": root.display().to_string(), "hook_event_name": "PreToolUse", "tool_name": "Edit",
            "tool_input": {"file_path": root.join(file).display().to_string()}})
    };
    let (code, stdout, stderr) = a.run_line(root, &installed_pre_tool_use(root, false), &edit("src/a.rs"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("keel leased src/a.rs") && !stdout.contains("deny"), "allowed and leased: {stdout}");
    let patch = json!({"cwd": root.display().to_string(), "hook_event_name": "PreToolUse", "tool_name": "apply_patch",
        "tool_input": {"command": "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-a\n+b\n*** End Patch\n"}});
    let (code, stdout, _) = b.run_line(root, &installed_pre_tool_use(root, true), &patch);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"permissionDecision\":\"deny\"") && stdout.contains("src/a.rs"), "{stdout}");

    for (target, file, before) in
        [("claude-code", ".claude/settings.json", CLAUDE_SETTINGS), ("codex", ".codex/config.toml", CODEX_CONFIG)]
    {
        assert_eq!(support::code(&run(&["hook", "uninstall", target])), 0);
        let restored = std::fs::read_to_string(root.join(file)).expect("read");
        assert_eq!(restored, before, "{target}: uninstall leaves the user's file as it was");
    }

    // The user's scope is under HOME; a file keel cannot parse is refused and left as it is.
    let user = run(&["hook", "install", "gemini", "--scope", "user"]);
    assert_eq!(support::code(&user), 0, "{}", support::stderr(&user));
    assert!(home.path().join(".gemini/settings.json").exists());
    let broken = "{\"hooks\": {\"BeforeTool\": [\n";
    std::fs::create_dir_all(root.join(".cursor")).expect(".cursor");
    std::fs::write(root.join(".cursor/hooks.json"), broken).expect("a broken file");
    let refused = run(&["hook", "install", "cursor"]);
    assert_eq!(support::code(&refused), 1);
    assert!(support::stderr(&refused).contains("hooks.json") && support::stderr(&refused).contains("left as it is"));
    assert_eq!(std::fs::read_to_string(root.join(".cursor/hooks.json")).expect("read"), broken, "never overwritten");
    let wrong = run(&["hook", "install", "git", "--scope", "user"]);
    assert_eq!(support::code(&wrong), 2, "git hooks are per repository");
}
