//! One hook event as a harness writes it on the hook's stdin, in its dialect, and the verdict as
//! the harness reads it back.

use std::path::PathBuf;

use serde_json::Value;

use crate::decide::Verdict;

/// The largest event read; a larger one is malformed input.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// The harness whose protocol an event and its answer follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Claude Code: `tool_input.file_path` (`Write`, `Edit`, `MultiEdit`), `notebook_path`
    /// (`NotebookEdit`); a deny is `hookSpecificOutput.permissionDecision = "deny"`.
    ClaudeCode,
    /// `OpenAI` Codex CLI: Claude Code's answer format; edits arrive as `apply_patch`.
    Codex,
    /// Gemini CLI: `write_file` and `replace` with `file_path`; a deny is `{"decision": "deny"}`.
    Gemini,
    /// Cursor: `Write`, `StrReplace`, `Delete`, `EditNotebook` with `path`, `Shell`, and
    /// `beforeShellExecution`'s top-level `command`; a deny is `{"permission": "deny"}`.
    Cursor,
}

/// Why an event could not be read. The hook answers it with exit 2 and this one line, which
/// blocks the call in every harness and says why.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// More than [`EVENT_BYTES_MAX`] bytes.
    #[error("the hook event is over {EVENT_BYTES_MAX} bytes")]
    TooLarge,
    /// Not a JSON object.
    #[error("the hook event is not a JSON object: {0}")]
    NotJson(String),
}

/// A hook event: what the tool call would do, as far as keel cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The tool's name.
    pub tool: String,
    /// The files the call would write (absolute, or relative to `cwd`).
    pub paths: Vec<PathBuf>,
    /// The command line, if the tool is a shell (what it writes is read from it).
    pub command: Option<String>,
    /// The harness's working directory for the call.
    pub cwd: Option<PathBuf>,
    /// The harness's session id, recorded with the leases it takes.
    pub session_id: Option<String>,
}

/// The file-editing tools of every dialect (their names do not collide).
const EDIT_TOOLS: [&str; 11] = [
    "Write",
    "Edit",
    "MultiEdit",
    "NotebookEdit",
    "write_file",
    "replace",
    "StrReplace",
    "Delete",
    "EditNotebook",
    "apply_patch",
    "ApplyPatch",
];
/// The `tool_input` members that name an edit tool's file, tried in order.
const PATH_MEMBERS: [&str; 3] = ["file_path", "notebook_path", "path"];
const SHELL_TOOLS: [&str; 4] = ["Bash", "run_shell_command", "shell", "Shell"];
/// The `tool_input` members that name the directory a shell command runs in, if not `cwd`.
const SHELL_DIR_MEMBERS: [&str; 2] = ["dir_path", "working_directory"];
/// The lines of an `apply_patch` patch that name a file it writes.
const PATCH_HEADERS: [&str; 4] = ["*** Add File: ", "*** Update File: ", "*** Delete File: ", "*** Move to: "];

impl Dialect {
    /// The dialect named on the command line.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "claude-code" => Some(Self::ClaudeCode),
            "codex" => Some(Self::Codex),
            "gemini" => Some(Self::Gemini),
            "cursor" => Some(Self::Cursor),
            _ => None,
        }
    }

    /// Reads one event.
    pub fn parse(self, bytes: &[u8]) -> Result<Event, EventError> {
        if bytes.len() > EVENT_BYTES_MAX {
            return Err(EventError::TooLarge);
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        let Value::Object(event) = value else { return Err(EventError::NotJson("not an object".into())) };
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        let tool = text("tool_name").unwrap_or_default();
        let input = event.get("tool_input").cloned().unwrap_or(Value::Null);
        let mut paths = Vec::new();
        let patch = tool.eq_ignore_ascii_case("apply_patch") || mentions_patch(&input);
        if patch {
            patch_paths(&input, &mut paths);
        } else if EDIT_TOOLS.contains(&tool.as_str()) {
            let member = PATH_MEMBERS.iter().find_map(|m| input.get(m).and_then(Value::as_str));
            paths.extend(member.map(PathBuf::from));
        }
        // The directory the harness works in: `cwd`, else the first workspace root (Cursor).
        let workspace_root = event.get("workspace_roots").and_then(|r| r.get(0)).and_then(Value::as_str);
        let mut cwd = text("cwd").or_else(|| workspace_root.map(str::to_owned)).map(PathBuf::from);
        let command = if SHELL_TOOLS.contains(&tool.as_str()) {
            let dir = SHELL_DIR_MEMBERS.iter().find_map(|m| input.get(m).and_then(Value::as_str));
            if let Some(dir) = dir {
                cwd = Some(cwd.map_or_else(|| PathBuf::from(dir), |cwd| cwd.join(dir)));
            }
            Some(shell_command(&input))
        } else if tool.is_empty()
            && event.get("hook_event_name").and_then(Value::as_str) == Some("beforeShellExecution")
        {
            Some(text("command").unwrap_or_default())
        } else {
            None
        };
        Ok(Event { command, tool, paths, cwd, session_id: text("session_id").or_else(|| text("conversation_id")) })
    }

    /// What the hook prints and its exit status, for `verdict`.
    pub fn render(self, verdict: &Verdict) -> (Option<String>, u8) {
        match (self, verdict) {
            // Silence: the harness goes on as it would without keel (its own rules still apply).
            // Gemini CLI (0.61) reads `additionalContext` only from hooks after a tool, and Cursor's
            // field for a note is unverified: silence there.
            (_, Verdict::Allow { note: None }) | (Self::Gemini | Self::Cursor, Verdict::Allow { note: Some(_) }) => {
                (None, 0)
            }
            (Self::ClaudeCode | Self::Codex, Verdict::Allow { note: Some(note) }) => {
                let answer = serde_json::json!({"hookSpecificOutput": {
                    "hookEventName": "PreToolUse", "additionalContext": note,
                }});
                (Some(answer.to_string()), 0)
            }
            (Self::ClaudeCode | Self::Codex, Verdict::Deny { reason }) => {
                let answer = serde_json::json!({"hookSpecificOutput": {
                    "hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason,
                }});
                (Some(answer.to_string()), 0)
            }
            (Self::Gemini, Verdict::Deny { reason }) => {
                (Some(serde_json::json!({"decision": "deny", "reason": reason}).to_string()), 0)
            }
            (Self::Cursor, Verdict::Deny { reason }) => {
                let answer = serde_json::json!({"permission": "deny", "user_message": reason, "agent_message": reason});
                (Some(answer.to_string()), 0)
            }
        }
    }
}

/// A shell tool's command line: `command` as a string, or as an argument vector (Codex's
/// `["bash", "-lc", "SCRIPT"]`), joined with the quoting a shell reads back.
fn shell_command(input: &Value) -> String {
    match input.get("command").or_else(|| input.get("cmd")) {
        Some(Value::String(line)) => line.clone(),
        Some(Value::Array(argv)) => {
            let argv: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
            argv.iter().map(|arg| quoted(arg)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// `arg` as one shell word.
fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

fn mentions_patch(input: &Value) -> bool {
    let mut found = false;
    strings(input, &mut |s| found |= s.contains("*** Begin Patch"));
    found
}

/// Every file a patch in `input` writes, from its headers.
fn patch_paths(input: &Value, paths: &mut Vec<PathBuf>) {
    strings(input, &mut |text| {
        for line in text.lines() {
            if let Some(path) = PATCH_HEADERS.iter().find_map(|header| line.strip_prefix(header)) {
                let path = PathBuf::from(path.trim());
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
    });
}

/// Calls `visit` on every string in `value`, nested ones included.
fn strings(value: &Value, visit: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) => visit(s),
        Value::Array(items) => items.iter().for_each(|item| strings(item, visit)),
        Value::Object(members) => members.values().for_each(|item| strings(item, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_s_edit_tools_name_their_files_and_a_patch_names_every_file_it_writes() {
        let edit = br#"{"session_id": "s1", "cwd": "/w", "tool_name": "Edit", "tool_input": {"file_path": "/w/src/a.rs", "old_string": "a", "new_string": "b"}}"#;
        let event = Dialect::ClaudeCode.parse(edit).expect("an event");
        assert_eq!(
            (event.paths, event.cwd, event.session_id),
            (vec![PathBuf::from("/w/src/a.rs")], Some("/w".into()), Some("s1".into()))
        );
        let patch = br#"{"tool_name": "apply_patch", "tool_input": {"command": ["apply_patch", "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-a\n+b\n*** Add File: src/new.rs\n+x\n*** Update File: src/old.rs\n*** Move to: src/moved.rs\n*** Delete File: src/gone.rs\n*** End Patch\n"]}}"#;
        let event = Dialect::Codex.parse(patch).expect("an event");
        let names: Vec<String> = event.paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["src/a.rs", "src/new.rs", "src/old.rs", "src/moved.rs", "src/gone.rs"]);
        let gemini = br#"{"tool_name": "write_file", "tool_input": {"file_path": "b.txt", "content": "x"}}"#;
        assert_eq!(Dialect::Gemini.parse(gemini).expect("an event").paths, [PathBuf::from("b.txt")]);
        let read = br#"{"tool_name": "Read", "tool_input": {"file_path": "/w/x"}}"#;
        assert!(Dialect::ClaudeCode.parse(read).expect("an event").paths.is_empty(), "reads are no edit");
    }

    /// Cursor's events in their documented shape (tests/data: Cursor's agent is not a package
    /// these machines can install, so none is captured), and every dialect's answers as the
    /// harness reads them back, pinned as goldens.
    #[test]
    fn documented_events_read_as_expected_and_answers_match_their_goldens() {
        let events = [
            (Dialect::Cursor, include_str!("../tests/data/cursor-str-replace.json")),
            (Dialect::Cursor, include_str!("../tests/data/cursor-shell.json")),
            (Dialect::Cursor, include_str!("../tests/data/cursor-before-shell-execution.json")),
        ];
        let read: Vec<String> = events
            .iter()
            .map(|(dialect, text)| {
                let event = dialect.parse(text.as_bytes()).expect("a documented event reads");
                let paths: Vec<String> = event.paths.iter().map(|p| p.display().to_string()).collect();
                let cwd = event.cwd.clone().unwrap_or_default();
                let writes = event.command.as_deref().map(|c| crate::shell::footprint(c, &cwd).writes);
                format!(
                    "{dialect:?} {:?} in {}: paths {paths:?}, command {:?} writes {writes:?}",
                    event.tool,
                    cwd.display(),
                    event.command
                )
            })
            .collect();
        insta::assert_snapshot!("events", read.join("\n"));
        let verdicts = [
            Verdict::Allow { note: None },
            Verdict::Allow { note: Some("keel leased src/a.rs for you until your session ends".into()) },
            Verdict::Deny {
                reason: "keel: src/a.rs cannot be edited now: held by agent-b. Work on other files.".into(),
            },
        ];
        let mut answers = Vec::new();
        for dialect in [Dialect::ClaudeCode, Dialect::Codex, Dialect::Gemini, Dialect::Cursor] {
            for verdict in &verdicts {
                let (answer, code) = dialect.render(verdict);
                answers.push(format!(
                    "{dialect:?} {verdict:?} -> exit {code}, {}",
                    answer.unwrap_or_else(|| "(silence)".into())
                ));
            }
        }
        insta::assert_snapshot!("answers", answers.join("\n"));
    }

    /// Events recorded from the real harnesses (tests/data/captured, with how they were
    /// recorded): every one reads, and what keel reads of each is pinned.
    #[test]
    fn events_captured_from_real_harnesses_read_as_expected() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captured");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("the captured events")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut read = Vec::new();
        for file in &files {
            let name = file.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name");
            let dialect =
                [("claude-code-", Dialect::ClaudeCode), ("codex-", Dialect::Codex), ("gemini-", Dialect::Gemini)]
                    .into_iter()
                    .find_map(|(prefix, dialect)| name.starts_with(prefix).then_some(dialect))
                    .unwrap_or_else(|| panic!("{name}: no dialect is named by its prefix"));
            let text = std::fs::read(file).expect("readable");
            let event = dialect.parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let paths: Vec<String> = event.paths.iter().map(|p| p.display().to_string()).collect();
            let cwd = event.cwd.clone().unwrap_or_default();
            let writes = event.command.as_deref().map(|c| crate::shell::footprint(c, &cwd).writes);
            read.push(format!(
                "{name}: {:?} in {}, session {}: paths {paths:?}, command {:?} writes {writes:?}",
                event.tool,
                cwd.display(),
                event.session_id.is_some(),
                event.command
            ));
        }
        assert!(files.len() >= 30, "the captured events are all there: {}", files.len());
        insta::assert_snapshot!("captured", read.join("\n"));
    }

    #[test]
    fn malformed_truncated_and_huge_events_are_errors_never_panics() {
        for bad in [&b"{\"tool_name\": "[..], b"[1, 2]", b"", b"\xff\xfe"] {
            assert!(Dialect::ClaudeCode.parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b' '; EVENT_BYTES_MAX + 1];
        assert!(matches!(Dialect::ClaudeCode.parse(&huge), Err(EventError::TooLarge)));
    }
}
