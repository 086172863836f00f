//! keel's entries in an agent harness's settings file: added, updated and removed with
//! everything else in the file kept byte for byte (other hooks, other keys, their order, the
//! comments). JSON files are edited through a concrete syntax tree (jsonc-parser's), Codex's TOML
//! through `toml_edit`. These functions only turn text into text; the caller reads and writes
//! the file.
//!
//! keel knows its own entries by their command: a program named `keel` run as `keel hook ...`.
//! An entry of anyone else's is never changed or removed, and a file that does not parse, or
//! whose hooks are not of the harness's shape, is an error: it is never overwritten.

use std::path::{Path, PathBuf};

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstArray, CstInputValue, CstNode, CstObject, CstRootNode};

/// An agent harness whose settings keel's hook is installed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// Claude Code: `.claude/settings.json`.
    ClaudeCode,
    /// `OpenAI` Codex CLI: `.codex/config.toml`.
    Codex,
    /// Gemini CLI: `.gemini/settings.json`.
    Gemini,
    /// Cursor: `.cursor/hooks.json`.
    Cursor,
}

/// Whose settings: the project's (checked in with the repository) or the user's (every project).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The settings file under the project's root.
    Project,
    /// The settings file under the user's home.
    User,
}

/// What is installed in a settings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// None of keel's entries.
    Absent,
    /// Some of keel's entries, not all (or some run another keel binary).
    Partial,
    /// Every entry, each running this keel.
    Installed,
}

/// Why a settings file cannot be edited. It is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file does not parse.
    #[error("it does not parse: {0}")]
    Parse(String),
    /// The file parses, but where keel's entries go holds something of another shape.
    #[error("{0}")]
    Shape(String),
}

/// One hook entry: on `event` (for the tools `matcher` names), run `keel hook <subcommand>`.
struct Entry {
    event: &'static str,
    matcher: Option<&'static str>,
    subcommand: &'static str,
}

const CLAUDE_TOOLS: &str = "Write|Edit|MultiEdit|NotebookEdit|Bash";
const CLAUDE: [Entry; 3] = [
    Entry { event: "PreToolUse", matcher: Some(CLAUDE_TOOLS), subcommand: "pre-tool-use" },
    Entry { event: "PostToolUse", matcher: Some(CLAUDE_TOOLS), subcommand: "post-tool-use" },
    Entry { event: "SessionEnd", matcher: None, subcommand: "session-end" },
];
// Codex's matchers are regular expressions; every shell tool is `Bash`.
const CODEX_TOOLS: &str = "^(Bash|apply_patch)$";
const CODEX: [Entry; 3] = [
    Entry { event: "PreToolUse", matcher: Some(CODEX_TOOLS), subcommand: "pre-tool-use" },
    Entry { event: "PostToolUse", matcher: Some(CODEX_TOOLS), subcommand: "post-tool-use" },
    Entry { event: "SessionEnd", matcher: None, subcommand: "session-end" },
];
const GEMINI_TOOLS: &str = "write_file|replace|run_shell_command";
const GEMINI: [Entry; 3] = [
    Entry { event: "BeforeTool", matcher: Some(GEMINI_TOOLS), subcommand: "pre-tool-use" },
    Entry { event: "AfterTool", matcher: Some(GEMINI_TOOLS), subcommand: "post-tool-use" },
    Entry { event: "SessionEnd", matcher: None, subcommand: "session-end" },
];
// Cursor's tool names are not all documented, and some events arrive without one: keel sees
// every tool call and lets through what is not an edit.
const CURSOR: [Entry; 3] = [
    Entry { event: "preToolUse", matcher: None, subcommand: "pre-tool-use" },
    Entry { event: "postToolUse", matcher: None, subcommand: "post-tool-use" },
    Entry { event: "sessionEnd", matcher: None, subcommand: "session-end" },
];

impl Harness {
    /// Every harness, in the order `keel hook status` lists them.
    pub const ALL: [Self; 4] = [Self::ClaudeCode, Self::Codex, Self::Gemini, Self::Cursor];

    /// The harness's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Cursor => "cursor",
        }
    }

    /// The settings file of `scope`: under the project's root, or the user's home (Codex's
    /// `CODEX_HOME` when it is given).
    pub fn settings(self, scope: Scope, project: &Path, home: &Path, codex_home: Option<&Path>) -> PathBuf {
        let relative = match self {
            Self::ClaudeCode => ".claude/settings.json",
            Self::Codex => ".codex/config.toml",
            Self::Gemini => ".gemini/settings.json",
            Self::Cursor => ".cursor/hooks.json",
        };
        match (scope, self, codex_home) {
            (Scope::User, Self::Codex, Some(codex_home)) => codex_home.join("config.toml"),
            (Scope::User, ..) => home.join(relative),
            (Scope::Project, ..) => project.join(relative),
        }
    }

    fn entries(self) -> &'static [Entry; 3] {
        match self {
            Self::ClaudeCode => &CLAUDE,
            Self::Codex => &CODEX,
            Self::Gemini => &GEMINI,
            Self::Cursor => &CURSOR,
        }
    }

    /// The command line of an entry, `program` being how the harness finds keel.
    fn command(self, program: &str, subcommand: &str) -> String {
        match self {
            Self::ClaudeCode => format!("{program} hook {subcommand}"),
            other => format!("{program} hook {subcommand} --dialect {}", other.name()),
        }
    }

    /// The timeout keel asks for: ten seconds, in the unit the harness reads (Gemini: ms), and
    /// three for Codex's `SessionEnd` (Codex cuts a longer one to that, with a warning).
    fn timeout(self, event: &str) -> i64 {
        match (self, event) {
            (Self::Gemini, _) => 10_000,
            (Self::Codex, "SessionEnd") => 3,
            _ => 10,
        }
    }

    /// Adds keel's entries to the settings `text` (empty: a new file) and brings keel's existing
    /// ones up to date; returns the new text, `text` itself when nothing changes.
    pub fn install(self, text: &str, program: &str) -> Result<String, SettingsError> {
        self.edit(text, program, Edit::Install)
    }

    /// Removes keel's entries from the settings `text`, and the tables they leave empty.
    pub fn uninstall(self, text: &str) -> Result<String, SettingsError> {
        self.edit(text, "", Edit::Uninstall)
    }

    /// Which of keel's entries running `program` the settings `text` holds.
    pub fn state(self, text: &str, program: &str) -> Result<State, SettingsError> {
        let found = match self {
            Self::Codex => toml_found(self, text)?,
            _ => guarded(|| json_found(self, text))?,
        };
        let current = self
            .entries()
            .iter()
            .zip(&found)
            .filter(|(entry, found)| found.as_deref() == Some(self.command(program, entry.subcommand).as_str()));
        Ok(match (current.count(), found.iter().filter(|f| f.is_some()).count()) {
            (3, _) => State::Installed,
            (_, 0) => State::Absent,
            _ => State::Partial,
        })
    }

    fn edit(self, text: &str, program: &str, edit: Edit) -> Result<String, SettingsError> {
        match self {
            Self::Codex => toml_edit_hooks(self, text, program, edit),
            _ => guarded(|| json_edit(self, text, program, edit)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Install,
    Uninstall,
}

/// The `keel hook` subcommand `command` runs, if it runs keel's hook.
pub fn keel_subcommand(command: &str) -> Option<&str> {
    let command = command.trim_start();
    let (program, rest) = match command.strip_prefix('\'') {
        Some(quoted) => quoted.split_once('\'')?,
        None => command.split_once(char::is_whitespace)?,
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    let mut words = rest.split_whitespace();
    (name == "keel" && words.next() == Some("hook")).then(|| words.next()).flatten()
}

/// Runs a CST edit; the parser is not ours, and a panic in it is an error, never a crash.
fn guarded<T>(edit: impl FnOnce() -> Result<T, SettingsError>) -> Result<T, SettingsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(edit))
        .unwrap_or_else(|_| Err(SettingsError::Parse("the JSON editor failed on this file".into())))
}

fn parse_json(text: &str) -> Result<CstRootNode, SettingsError> {
    CstRootNode::parse(text, &ParseOptions::default()).map_err(|e| SettingsError::Parse(e.to_string()))
}

/// The member `name` of `object` as an object, made if absent.
fn json_object(object: &CstObject, name: &str, what: &str) -> Result<CstObject, SettingsError> {
    object.object_value_or_create(name).ok_or_else(|| SettingsError::Shape(format!("{what} is not an object")))
}

fn json_string(object: &CstObject, name: &str) -> Option<String> {
    object.get(name)?.value()?.as_string_lit()?.decoded_value().ok()
}

/// The handlers of one element of an event's list: Claude Code's and Gemini's elements are
/// groups `{matcher, hooks: [handler]}`, Cursor's are handlers.
fn json_handlers(harness: Harness, element: &CstNode) -> Vec<CstObject> {
    let Some(object) = element.as_object() else { return Vec::new() };
    if harness == Harness::Cursor {
        return vec![object];
    }
    let handlers = object.array_value("hooks").map(|a| a.elements()).unwrap_or_default();
    handlers.iter().filter_map(CstNode::as_object).collect()
}

fn json_entry(harness: Harness, entry: &Entry, command: String) -> CstInputValue {
    let mut handler = vec![("command".to_owned(), CstInputValue::String(command))];
    if harness != Harness::Cursor {
        handler.insert(0, ("type".to_owned(), CstInputValue::String("command".into())));
    }
    handler.push(("timeout".to_owned(), CstInputValue::Number(harness.timeout(entry.event).to_string())));
    if harness == Harness::Cursor {
        return CstInputValue::Object(handler);
    }
    let mut group = Vec::new();
    if let Some(matcher) = entry.matcher {
        group.push(("matcher".to_owned(), CstInputValue::String(matcher.into())));
    }
    group.push(("hooks".to_owned(), CstInputValue::Array(vec![CstInputValue::Object(handler)])));
    CstInputValue::Object(group)
}

/// The top object of a settings file (a new one for an empty file).
fn json_top(root: &CstRootNode) -> Result<CstObject, SettingsError> {
    match root.value() {
        None => Ok(root.object_value_or_set()),
        Some(value) => value.as_object().ok_or_else(|| SettingsError::Shape("the file is not a JSON object".into())),
    }
}

fn json_edit(harness: Harness, text: &str, program: &str, edit: Edit) -> Result<String, SettingsError> {
    let root = parse_json(text)?;
    let top = json_top(&root)?;
    if edit == Edit::Uninstall && top.get("hooks").is_none() {
        return Ok(text.to_owned());
    }
    if harness == Harness::Cursor && edit == Edit::Install && top.get("version").is_none() {
        top.append("version", CstInputValue::Number("1".into()));
    }
    let hooks = json_object(&top, "hooks", "`hooks`")?;
    for entry in harness.entries() {
        if edit == Edit::Uninstall && hooks.get(entry.event).is_none() {
            continue;
        }
        let list = hooks
            .array_value_or_create(entry.event)
            .ok_or_else(|| SettingsError::Shape(format!("`hooks.{}` is not a list", entry.event)))?;
        match edit {
            Edit::Install => json_install_entry(harness, &list, entry, &harness.command(program, entry.subcommand)),
            Edit::Uninstall => json_uninstall_entry(harness, &list, entry),
        }
        if list.elements().is_empty()
            && let Some(prop) = list.parent().and_then(|prop| prop.as_object_prop())
        {
            prop.remove();
        }
    }
    if hooks.properties().is_empty()
        && let Some(prop) = hooks.parent().and_then(|prop| prop.as_object_prop())
    {
        prop.remove();
    }
    let edited = root.to_string();
    // A file keel made from nothing ends with a newline, as editors write them.
    Ok(if text.trim().is_empty() && !edited.ends_with('\n') { edited + "\n" } else { edited })
}

fn json_install_entry(harness: Harness, list: &CstArray, entry: &Entry, command: &str) {
    let mut found = false;
    for element in list.elements() {
        for handler in json_handlers(harness, &element) {
            let Some(current) = json_string(&handler, "command") else { continue };
            if keel_subcommand(&current) != Some(entry.subcommand) {
                continue;
            }
            found = true;
            if let Some(prop) = handler.get("command").filter(|_| current != command) {
                prop.set_value(CstInputValue::String(command.to_owned()));
            }
        }
    }
    if !found {
        list.append(json_entry(harness, entry, command.to_owned()));
    }
}

fn json_uninstall_entry(harness: Harness, list: &CstArray, entry: &Entry) {
    for element in list.elements() {
        let handlers = json_handlers(harness, &element);
        let (ours, theirs): (Vec<_>, Vec<_>) = handlers
            .into_iter()
            .partition(|h| json_string(h, "command").is_some_and(|c| keel_subcommand(&c) == Some(entry.subcommand)));
        if ours.is_empty() {
            continue;
        }
        if theirs.is_empty() {
            // The whole element was keel's (a group of keel's handlers only, or a handler).
            element.remove();
        } else {
            ours.into_iter().for_each(CstObject::remove);
        }
    }
}

/// For each entry, the command of keel's handler for it, if there is one.
fn json_found(harness: Harness, text: &str) -> Result<Vec<Option<String>>, SettingsError> {
    let root = parse_json(text)?;
    let Some(top) = root.value().and_then(|v| v.as_object()) else { return Ok(vec![None; 3]) };
    let Some(hooks) = top.object_value("hooks") else { return Ok(vec![None; 3]) };
    Ok(harness
        .entries()
        .iter()
        .map(|entry| {
            let elements = hooks.array_value(entry.event).map(|a| a.elements()).unwrap_or_default();
            elements.iter().flat_map(|e| json_handlers(harness, e)).find_map(|handler| {
                json_string(&handler, "command").filter(|c| keel_subcommand(c) == Some(entry.subcommand))
            })
        })
        .collect())
}

fn parse_toml(text: &str) -> Result<toml_edit::DocumentMut, SettingsError> {
    text.parse::<toml_edit::DocumentMut>().map_err(|e| SettingsError::Parse(e.to_string().trim().to_owned()))
}

/// Codex's `[hooks]` table, made if absent (and allowed).
fn toml_hooks(
    document: &mut toml_edit::DocumentMut,
    create: bool,
) -> Result<Option<&mut toml_edit::Table>, SettingsError> {
    if !document.contains_key("hooks") {
        if !create {
            return Ok(None);
        }
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        document.insert("hooks", toml_edit::Item::Table(table));
    }
    document["hooks"].as_table_mut().map(Some).ok_or_else(|| SettingsError::Shape("`hooks` is not a table".into()))
}

/// The `[[hooks.EVENT]]` groups, or an error if the event is written in another form.
fn toml_groups<'a>(
    hooks: &'a mut toml_edit::Table,
    event: &str,
    create: bool,
) -> Result<Option<&'a mut toml_edit::ArrayOfTables>, SettingsError> {
    if !hooks.contains_key(event) {
        if !create {
            return Ok(None);
        }
        hooks.insert(event, toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    }
    hooks[event].as_array_of_tables_mut().map(Some).ok_or_else(|| {
        SettingsError::Shape(format!(
            "`hooks.{event}` is not written as `[[hooks.{event}]]` tables; add keel's entry by hand"
        ))
    })
}

fn toml_handler_command(handler: &toml_edit::Table) -> Option<&str> {
    handler.get("command").and_then(toml_edit::Item::as_str)
}

fn toml_edit_hooks(harness: Harness, text: &str, program: &str, edit: Edit) -> Result<String, SettingsError> {
    let mut document = parse_toml(text)?;
    let Some(hooks) = toml_hooks(&mut document, edit == Edit::Install)? else { return Ok(text.to_owned()) };
    for entry in harness.entries() {
        let command = harness.command(program, entry.subcommand);
        let Some(groups) = toml_groups(hooks, entry.event, edit == Edit::Install)? else { continue };
        let ours = |handler: &toml_edit::Table| {
            toml_handler_command(handler).is_some_and(|c| keel_subcommand(c) == Some(entry.subcommand))
        };
        match edit {
            Edit::Install => {
                let mut found = false;
                for group in groups.iter_mut() {
                    let Some(handlers) = group.get_mut("hooks").and_then(toml_edit::Item::as_array_of_tables_mut)
                    else {
                        continue;
                    };
                    for handler in handlers.iter_mut().filter(|h| ours(h)) {
                        found = true;
                        if toml_handler_command(handler) != Some(command.as_str()) {
                            handler["command"] = toml_edit::value(command.as_str());
                        }
                    }
                }
                if !found {
                    let mut handler = toml_edit::Table::new();
                    handler["type"] = toml_edit::value("command");
                    handler["command"] = toml_edit::value(command.as_str());
                    handler["timeout"] = toml_edit::value(harness.timeout(entry.event));
                    let mut handlers = toml_edit::ArrayOfTables::new();
                    handlers.push(handler);
                    let mut group = toml_edit::Table::new();
                    if let Some(matcher) = entry.matcher {
                        group["matcher"] = toml_edit::value(matcher);
                    }
                    group.insert("hooks", toml_edit::Item::ArrayOfTables(handlers));
                    groups.push(group);
                }
            }
            Edit::Uninstall => {
                for group in groups.iter_mut() {
                    if let Some(handlers) = group.get_mut("hooks").and_then(toml_edit::Item::as_array_of_tables_mut) {
                        handlers.retain(|h| !ours(h));
                    }
                }
                groups.retain(|group| {
                    group.get("hooks").and_then(toml_edit::Item::as_array_of_tables).is_none_or(|h| !h.is_empty())
                });
            }
        }
        if groups.is_empty() {
            hooks.remove(entry.event);
        }
    }
    if hooks.is_empty() {
        document.remove("hooks");
    }
    let edited = document.to_string();
    Ok(if edited == text { text.to_owned() } else { edited })
}

fn toml_found(harness: Harness, text: &str) -> Result<Vec<Option<String>>, SettingsError> {
    let document = parse_toml(text)?;
    let hooks = document.get("hooks").and_then(toml_edit::Item::as_table);
    Ok(harness
        .entries()
        .iter()
        .map(|entry| {
            let groups = hooks.and_then(|h| h.get(entry.event)).and_then(toml_edit::Item::as_array_of_tables)?;
            groups
                .iter()
                .filter_map(|g| g.get("hooks").and_then(toml_edit::Item::as_array_of_tables))
                .flat_map(toml_edit::ArrayOfTables::iter)
                .filter_map(toml_handler_command)
                .find(|c| keel_subcommand(c) == Some(entry.subcommand))
                .map(str::to_owned)
        })
        .collect())
}

/// keel's MCP server as a harness registers it: the server named [`MCP_SERVER_NAME`] that runs
/// `keel mcp`. Claude Code and Cursor keep servers in a file of their own (`.mcp.json`,
/// `.cursor/mcp.json`), Codex and Gemini CLI beside the hooks.
pub const MCP_SERVER_NAME: &str = "keel";

impl Harness {
    /// The file that registers MCP servers for `scope`, if keel may edit it. Claude Code keeps its
    /// user-scope servers in `~/.claude.json`, a state file of its own that keel leaves to
    /// `claude mcp add --scope user`.
    pub fn mcp_settings(self, scope: Scope, project: &Path, home: &Path, codex_home: Option<&Path>) -> Option<PathBuf> {
        match (self, scope) {
            (Self::ClaudeCode, Scope::Project) => Some(project.join(".mcp.json")),
            (Self::ClaudeCode, Scope::User) => None,
            (Self::Cursor, Scope::Project) => Some(project.join(".cursor/mcp.json")),
            (Self::Cursor, Scope::User) => Some(home.join(".cursor/mcp.json")),
            (Self::Codex | Self::Gemini, _) => Some(self.settings(scope, project, home, codex_home)),
        }
    }

    /// Registers `keel mcp` (run as `program`, a path, not a shell word) in the MCP settings
    /// `text`, or brings keel's registration up to date. Another server named keel is an error.
    pub fn install_mcp(self, text: &str, program: &str) -> Result<String, SettingsError> {
        match self {
            Self::Codex => toml_edit_mcp(text, Some(program)),
            _ => guarded(|| json_edit_mcp(text, Some(program))),
        }
    }

    /// Removes keel's MCP server from `text`, and the table it leaves empty.
    pub fn uninstall_mcp(self, text: &str) -> Result<String, SettingsError> {
        match self {
            Self::Codex => toml_edit_mcp(text, None),
            _ => guarded(|| json_edit_mcp(text, None)),
        }
    }

    /// Whether `text` registers keel's MCP server running `program`.
    pub fn mcp_state(self, text: &str, program: &str) -> Result<State, SettingsError> {
        let found = match self {
            Self::Codex => toml_mcp_found(text)?,
            _ => guarded(|| json_mcp_found(text))?,
        };
        Ok(match found {
            None => State::Absent,
            Some(command) if command == program => State::Installed,
            Some(_) => State::Partial,
        })
    }
}

/// Whether a server runs keel's MCP server: a program named `keel` given `mcp` and nothing else.
fn runs_keel_mcp(command: &str, args: &[String]) -> bool {
    command.rsplit('/').next() == Some("keel") && args == ["mcp"]
}

fn not_keel_s() -> SettingsError {
    SettingsError::Shape(format!(
        "an MCP server named {MCP_SERVER_NAME:?} is registered that does not run `keel mcp`; rename or remove it first"
    ))
}

/// keel's registration in JSON (`command`, `args`), if the server named keel is an object.
fn json_mcp_entry(servers: &CstObject) -> Option<(CstObject, Option<String>, Vec<String>)> {
    let server = servers.object_value(MCP_SERVER_NAME)?;
    let command = json_string(&server, "command");
    let args = server.array_value("args").map(|a| a.elements()).unwrap_or_default();
    let args = args.iter().filter_map(|a| a.as_string_lit()?.decoded_value().ok()).collect();
    Some((server, command, args))
}

fn json_edit_mcp(text: &str, program: Option<&str>) -> Result<String, SettingsError> {
    let root = parse_json(text)?;
    let top = json_top(&root)?;
    if program.is_none() && top.get("mcpServers").is_none() {
        return Ok(text.to_owned());
    }
    let servers = json_object(&top, "mcpServers", "`mcpServers`")?;
    if servers.get(MCP_SERVER_NAME).is_some() {
        let Some((server, command, args)) = json_mcp_entry(&servers) else { return Err(not_keel_s()) };
        if !command.as_deref().is_some_and(|c| runs_keel_mcp(c, &args)) {
            return Err(not_keel_s());
        }
        match (program, server.get("command")) {
            (Some(program), Some(prop)) if command.as_deref() != Some(program) => {
                prop.set_value(CstInputValue::String(program.to_owned()));
            }
            (Some(_), _) => {}
            (None, _) => {
                if let Some(prop) = server.parent().and_then(|p| p.as_object_prop()) {
                    prop.remove();
                }
            }
        }
    } else if let Some(program) = program {
        let server = vec![
            ("command".to_owned(), CstInputValue::String(program.to_owned())),
            ("args".to_owned(), CstInputValue::Array(vec![CstInputValue::String("mcp".into())])),
        ];
        servers.append(MCP_SERVER_NAME, CstInputValue::Object(server));
    }
    if servers.properties().is_empty()
        && let Some(prop) = servers.parent().and_then(|prop| prop.as_object_prop())
    {
        prop.remove();
    }
    let edited = root.to_string();
    Ok(if text.trim().is_empty() && !edited.ends_with('\n') { edited + "\n" } else { edited })
}

fn json_mcp_found(text: &str) -> Result<Option<String>, SettingsError> {
    let root = parse_json(text)?;
    let Some(servers) = root.value().and_then(|v| v.as_object()).and_then(|top| top.object_value("mcpServers")) else {
        return Ok(None);
    };
    Ok(json_mcp_entry(&servers).and_then(|(_, command, args)| command.filter(|c| runs_keel_mcp(c, &args))))
}

/// keel's `[mcp_servers.keel]`: its command, if it runs `keel mcp`; an error if it is another's.
fn toml_mcp_command(server: &toml_edit::Item) -> Result<String, SettingsError> {
    let command = server.get("command").and_then(toml_edit::Item::as_str);
    let args: Vec<String> = server
        .get("args")
        .and_then(toml_edit::Item::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    command.filter(|c| runs_keel_mcp(c, &args)).map(str::to_owned).ok_or_else(not_keel_s)
}

fn toml_edit_mcp(text: &str, program: Option<&str>) -> Result<String, SettingsError> {
    let mut document = parse_toml(text)?;
    if !document.contains_key("mcp_servers") {
        if program.is_none() {
            return Ok(text.to_owned());
        }
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        document.insert("mcp_servers", toml_edit::Item::Table(table));
    }
    let servers = document["mcp_servers"]
        .as_table_like_mut()
        .ok_or_else(|| SettingsError::Shape("`mcp_servers` is not a table".into()))?;
    match (servers.get(MCP_SERVER_NAME).map(toml_mcp_command).transpose()?, program) {
        (Some(current), Some(program)) => {
            if current != program
                && let Some(server) = servers.get_mut(MCP_SERVER_NAME)
            {
                server["command"] = toml_edit::value(program);
            }
        }
        (None, Some(program)) => {
            let mut server = toml_edit::Table::new();
            server["command"] = toml_edit::value(program);
            server["args"] = toml_edit::value(toml_edit::Array::from_iter(["mcp"]));
            servers.insert(MCP_SERVER_NAME, toml_edit::Item::Table(server));
        }
        (Some(_), None) => {
            servers.remove(MCP_SERVER_NAME);
        }
        (None, None) => return Ok(text.to_owned()),
    }
    if servers.is_empty() {
        document.remove("mcp_servers");
    }
    let edited = document.to_string();
    Ok(if edited == text { text.to_owned() } else { edited })
}

fn toml_mcp_found(text: &str) -> Result<Option<String>, SettingsError> {
    let document = parse_toml(text)?;
    let server = document.get("mcp_servers").and_then(|s| s.get(MCP_SERVER_NAME));
    Ok(server.and_then(|s| toml_mcp_command(s).ok()))
}

#[cfg(test)]
mod tests;
