//! Unit tests of `install`.

use super::*;

const CLAUDE_SETTINGS: &str = r#"{
  // the team's settings
  "permissions": {"allow": ["Bash(cargo test:*)"]},
  "hooks": {
"PreToolUse": [
  {"matcher": "Bash", "hooks": [{"type": "command", "command": "./scripts/check-bash.sh"}]}
],
"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
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
command = "python3 ~/.codex/audit.py"   # the user's own

[projects."/home/dev/repo"]
trust_level = "trusted"
"#;

#[test]
fn install_adds_keel_s_entries_and_keeps_everything_else_byte_for_byte_and_twice_changes_nothing() {
    for (harness, before) in [
        (Harness::ClaudeCode, CLAUDE_SETTINGS),
        (Harness::Gemini, CLAUDE_SETTINGS),
        (Harness::Codex, CODEX_CONFIG),
        (
            Harness::Cursor,
            "{\n  \"version\": 1,\n  \"hooks\": {\n    \"stop\": [{\"command\": \"./done.sh\"}]\n  }\n}\n",
        ),
    ] {
        let after = harness.install(before, "keel").expect("installs");
        assert_eq!(harness.state(&after, "keel").expect("reads"), State::Installed, "{after}");
        assert_eq!(harness.state(before, "keel").expect("reads"), State::Absent);
        assert_eq!(harness.install(&after, "keel").expect("again"), after, "idempotent");
        // Every line of the user's file is still there, in order (the last element of a
        // list keel appends to gains the comma JSON needs).
        let mut lines = after.lines();
        for line in before.lines() {
            let same = |l: &str| l == line || l.strip_suffix(',') == Some(line);
            assert!(lines.any(same), "{harness:?} lost {line:?}:\n{after}");
        }
        let removed = harness.uninstall(&after).expect("uninstalls");
        assert_eq!(removed, before, "{harness:?}: uninstall restores the file byte for byte");
        assert_eq!(harness.uninstall(before).expect("nothing to remove"), before);
    }
}

#[test]
fn a_file_from_nothing_holds_exactly_keel_s_entries_and_a_moved_keel_is_updated_in_place() {
    let claude = Harness::ClaudeCode.install("", "keel").expect("installs");
    insta::assert_snapshot!("claude-code-new", claude);
    insta::assert_snapshot!("codex-new", Harness::Codex.install("", "keel").expect("installs"));
    insta::assert_snapshot!("gemini-new", Harness::Gemini.install("", "keel").expect("installs"));
    insta::assert_snapshot!("cursor-new", Harness::Cursor.install("", "keel").expect("installs"));
    let moved = Harness::ClaudeCode.install(&claude, "'/opt/keel bin/keel'").expect("updates");
    assert_eq!(moved.matches("hook pre-tool-use").count(), 1, "updated, not added: {moved}");
    assert!(moved.contains("'/opt/keel bin/keel' hook pre-tool-use"), "{moved}");
    assert_eq!(Harness::ClaudeCode.state(&moved, "keel").expect("reads"), State::Partial);
    assert_eq!(Harness::ClaudeCode.uninstall(&moved).expect("removes"), "{}\n");
}

#[test]
fn keel_s_mcp_server_is_registered_beside_other_servers_and_removed_leaving_them_byte_for_byte() {
    let claude = "{\n  \"mcpServers\": {\n    \"docs\": {\"command\": \"docs-mcp\", \"args\": []}\n  }\n}\n";
    let codex = "# mine\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # the docs\n";
    for (harness, before) in [
        (Harness::ClaudeCode, claude),
        (Harness::Cursor, claude),
        (Harness::Gemini, CLAUDE_SETTINGS),
        (Harness::Codex, codex),
    ] {
        let after = harness.install_mcp(before, "keel").expect("registers");
        assert_eq!(harness.mcp_state(&after, "keel").expect("reads"), State::Installed, "{after}");
        assert_eq!(harness.mcp_state(before, "keel").expect("reads"), State::Absent);
        assert_eq!(harness.install_mcp(&after, "keel").expect("again"), after, "idempotent");
        let moved = harness.install_mcp(&after, "/opt/keel/keel").expect("updates");
        assert_eq!(harness.mcp_state(&moved, "keel").expect("reads"), State::Partial, "{moved}");
        assert_eq!(harness.uninstall_mcp(&after).expect("removes"), before, "{harness:?}");
        assert_eq!(harness.uninstall_mcp(before).expect("nothing to remove"), before);
    }
    insta::assert_snapshot!("mcp-new", Harness::ClaudeCode.install_mcp("", "keel").expect("registers"));
    insta::assert_snapshot!("mcp-codex-new", Harness::Codex.install_mcp("", "keel").expect("registers"));
    for (harness, theirs) in [
        (Harness::ClaudeCode, "{\"mcpServers\": {\"keel\": {\"command\": \"npx\", \"args\": [\"keel-server\"]}}}"),
        (Harness::ClaudeCode, "{\"mcpServers\": {\"keel\": 3}}"),
        (Harness::ClaudeCode, "{\"mcpServers\": []}"),
        (Harness::Codex, "[mcp_servers.keel]\ncommand = \"npx\"\n"),
    ] {
        assert!(harness.install_mcp(theirs, "keel").is_err(), "{theirs}");
        assert!(harness.uninstall_mcp(theirs).is_err(), "another's server is never removed: {theirs}");
    }
}

#[test]
fn a_file_keel_cannot_parse_or_of_another_shape_is_an_error_and_nothing_else_is_keel_s() {
    for (harness, text) in [
        (Harness::ClaudeCode, "{\"hooks\": "),
        (Harness::ClaudeCode, "[1, 2]"),
        (Harness::ClaudeCode, "{\"hooks\": []}"),
        (Harness::ClaudeCode, "{\"hooks\": {\"PreToolUse\": {}}}"),
        (Harness::Codex, "[hooks\nx = 1"),
        (Harness::Codex, "hooks = 3"),
        (Harness::Codex, "hooks.PreToolUse = [{ matcher = \"x\" }]"),
    ] {
        assert!(harness.install(text, "keel").is_err(), "{harness:?} {text:?}");
    }
    assert_eq!(keel_subcommand("keel hook pre-tool-use --dialect codex"), Some("pre-tool-use"));
    assert_eq!(keel_subcommand("'/opt/my keel/keel' hook session-end"), Some("session-end"));
    assert_eq!(keel_subcommand("/usr/bin/keel hook post-tool-use"), Some("post-tool-use"));
    assert_eq!(keel_subcommand("./keel-wrapper hook pre-tool-use"), None);
    assert_eq!(keel_subcommand("keel lease acquire"), None);
}
