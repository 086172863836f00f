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
    /// Whether the tool is a shell, whose footprint keel does not read yet.
    pub shell: bool,
    /// The harness's working directory for the call.
    pub cwd: Option<PathBuf>,
    /// The harness's session id, recorded with the leases it takes.
    pub session_id: Option<String>,
}

/// The file-editing tools, with the `tool_input` members that name their file.
const EDIT_TOOLS: [(&str, &str); 6] = [
    ("Write", "file_path"),
    ("Edit", "file_path"),
    ("MultiEdit", "file_path"),
    ("NotebookEdit", "notebook_path"),
    ("write_file", "file_path"),
    ("replace", "file_path"),
];
const SHELL_TOOLS: [&str; 3] = ["Bash", "run_shell_command", "shell"];
/// The lines of an `apply_patch` patch that name a file it writes.
const PATCH_HEADERS: [&str; 4] = ["*** Add File: ", "*** Update File: ", "*** Delete File: ", "*** Move to: "];

impl Dialect {
    /// The dialect named on the command line.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "claude-code" => Some(Self::ClaudeCode),
            "codex" => Some(Self::Codex),
            "gemini" => Some(Self::Gemini),
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
        if let Some((_, member)) = EDIT_TOOLS.iter().find(|(name, _)| *name == tool) {
            paths.extend(input.get(member).and_then(Value::as_str).map(PathBuf::from));
        } else if tool == "apply_patch" || mentions_patch(&input) {
            patch_paths(&input, &mut paths);
        }
        Ok(Event {
            shell: SHELL_TOOLS.contains(&tool.as_str()),
            tool,
            paths,
            cwd: text("cwd").map(PathBuf::from),
            session_id: text("session_id"),
        })
    }

    /// What the hook prints and its exit status, for `verdict`.
    pub fn render(self, verdict: &Verdict) -> (Option<String>, u8) {
        match (self, verdict) {
            // Silence: the harness goes on as it would without keel (its own rules still apply).
            // Gemini's fields for a note are unverified: an allow stays silence there.
            (_, Verdict::Allow { note: None }) | (Self::Gemini, Verdict::Allow { note: Some(_) }) => (None, 0),
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
        }
    }
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

    /// Each dialect's events in the harness's documented shape (tests/data), and the answers the
    /// harness reads back, pinned as goldens.
    #[test]
    fn documented_events_read_as_expected_and_answers_match_their_goldens() {
        let events = [
            (Dialect::ClaudeCode, include_str!("../tests/data/claude-code-edit.json")),
            (Dialect::ClaudeCode, include_str!("../tests/data/claude-code-notebook.json")),
            (Dialect::ClaudeCode, include_str!("../tests/data/claude-code-bash.json")),
            (Dialect::Codex, include_str!("../tests/data/codex-apply-patch.json")),
            (Dialect::Gemini, include_str!("../tests/data/gemini-write-file.json")),
        ];
        let read: Vec<String> = events
            .iter()
            .map(|(dialect, text)| {
                let event = dialect.parse(text.as_bytes()).expect("a documented event reads");
                let paths: Vec<String> = event.paths.iter().map(|p| p.display().to_string()).collect();
                format!("{dialect:?} {}: shell {}, paths {paths:?}", event.tool, event.shell)
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
        for dialect in [Dialect::ClaudeCode, Dialect::Codex, Dialect::Gemini] {
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

    #[test]
    fn malformed_truncated_and_huge_events_are_errors_never_panics() {
        for bad in [&b"{\"tool_name\": "[..], b"[1, 2]", b"", b"\xff\xfe"] {
            assert!(Dialect::ClaudeCode.parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b' '; EVENT_BYTES_MAX + 1];
        assert!(matches!(Dialect::ClaudeCode.parse(&huge), Err(EventError::TooLarge)));
    }
}
