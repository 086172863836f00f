//! `keel hook ...`: the agent harness hooks (leases enforced where agents edit) and git's
//! pre-commit guard.
//!
//! Exit statuses follow the harnesses: 0 with the dialect's answer on stdout (a deny included);
//! 2 with a one-line reason on stderr for input keel cannot read (which blocks the call); any
//! other failure is 1, which every harness treats as "the hook failed, go on": keel never panics
//! here, and a broken hook never stops an agent.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use keel_hook::decide::{self, Rules};
use keel_hook::install::{Harness, Scope, State};
use keel_hook::{Agent, Dialect, Event};
use keel_journal::{LeaseBackend as _, Policy, Workspace};
use serde_json::Value;

use crate::backend::Backend;
use crate::{Location, Status};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DialectArg {
    /// Claude Code.
    ClaudeCode,
    /// OpenAI Codex CLI.
    Codex,
    /// Gemini CLI.
    Gemini,
    /// Cursor.
    Cursor,
}

impl DialectArg {
    fn dialect(self) -> Dialect {
        match self {
            Self::ClaudeCode => Dialect::ClaudeCode,
            Self::Codex => Dialect::Codex,
            Self::Gemini => Dialect::Gemini,
            Self::Cursor => Dialect::Cursor,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum HookCommand {
    /// Before a tool call: allow an edit (leasing a free file for the agent) or deny it.
    PreToolUse {
        /// The harness whose event format is read and answered (each installs its own hooks).
        #[arg(long, value_enum, default_value = "claude-code")]
        dialect: DialectArg,
    },
    /// After a tool call: beat the agent's automatic leases.
    PostToolUse {
        /// The harness whose event format is read and answered (each installs its own hooks).
        #[arg(long, value_enum, default_value = "claude-code")]
        dialect: DialectArg,
    },
    /// The agent's session ended: give back its automatic leases.
    SessionEnd {
        /// The harness whose event format is read and answered (each installs its own hooks).
        #[arg(long, value_enum, default_value = "claude-code")]
        dialect: DialectArg,
    },
    /// For git: refuse a commit whose staged paths intersect another owner's live lease.
    PreCommit,
    /// Install keel's hooks in a harness's settings (`.claude/settings.json`, `.codex/config.toml`,
    /// `.gemini/settings.json`, `.cursor/hooks.json`), or git's pre-commit hook (where
    /// `core.hooksPath` points, if set). Idempotent; everything else in the file is kept, and a
    /// hook of the user's is never replaced.
    Install {
        /// The harness (or git) whose settings are changed.
        #[arg(value_enum)]
        target: Target,
        /// The project's settings (under the workspace's root, checked in) or the user's (under
        /// the home directory, for every project).
        #[arg(long, value_enum, default_value = "project")]
        scope: ScopeArg,
        /// Print what would be written, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove keel's hooks from a harness's settings (never an entry keel did not write).
    Uninstall {
        /// The harness (or git) whose settings are changed.
        #[arg(value_enum)]
        target: Target,
        /// The project's settings or the user's.
        #[arg(long, value_enum, default_value = "project")]
        scope: ScopeArg,
        /// Print what would be written, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show, for each harness and scope, whether keel's hooks are installed.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Claude Code.
    ClaudeCode,
    /// OpenAI Codex CLI.
    Codex,
    /// Gemini CLI.
    Gemini,
    /// Cursor.
    Cursor,
    /// git's pre-commit hook.
    Git,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// The project's settings file.
    Project,
    /// The user's settings file.
    User,
}

/// The first line after the shebang of the pre-commit hook keel writes: how keel knows its own.
const GIT_HOOK_MARK: &str =
    "# keel hook pre-commit: refuses a commit that stages a file another agent holds a lease on.";

/// Runs a hook and says how it ended (0, 1 or 2, as the harnesses read them); every failure is
/// reported on stderr, none panics.
pub fn run(command: &HookCommand, location: &Location) -> Status {
    let outcome = match command {
        HookCommand::PreToolUse { dialect } => tool_event(location, dialect.dialect(), Phase::Pre),
        HookCommand::PostToolUse { dialect } => tool_event(location, dialect.dialect(), Phase::Post),
        HookCommand::SessionEnd { dialect } => tool_event(location, dialect.dialect(), Phase::End),
        HookCommand::PreCommit => pre_commit(location),
        HookCommand::Install { target: Target::Git, scope: ScopeArg::Project, dry_run } => install_git(*dry_run),
        HookCommand::Uninstall { target: Target::Git, scope: ScopeArg::Project, dry_run } => uninstall_git(*dry_run),
        HookCommand::Install { target: Target::Git, .. } | HookCommand::Uninstall { target: Target::Git, .. } => {
            Err(Failed::Input("git's hooks are per repository: there is no --scope user for git".into()))
        }
        HookCommand::Install { target, scope, dry_run } => {
            edit_settings(location, *target, *scope, *dry_run, Edit::Install)
        }
        HookCommand::Uninstall { target, scope, dry_run } => {
            edit_settings(location, *target, *scope, *dry_run, Edit::Uninstall)
        }
        HookCommand::Status => status(location),
    };
    match outcome {
        Ok(0) => Status::Ok,
        Ok(_) => Status::Refused,
        Err(Failed::Input(reason)) => {
            eprintln!("keel hook: {reason}");
            Status::Usage
        }
        Err(Failed::Keel(reason)) => {
            eprintln!("keel hook: {reason}");
            Status::Refused
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Pre,
    Post,
    End,
}

enum Failed {
    /// The event could not be read: exit 2 (blocks the call, says why).
    Input(String),
    /// keel could not decide: exit 1 (the harness goes on).
    Keel(String),
}

fn keel_failed(error: impl std::fmt::Display) -> Failed {
    Failed::Keel(error.to_string())
}

fn tool_event(location: &Location, dialect: Dialect, phase: Phase) -> Result<u8, Failed> {
    let mut bytes = Vec::new();
    let limit = keel_hook::event::EVENT_BYTES_MAX as u64 + 1;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| Failed::Input(format!("reading stdin: {e}")))?;
    let event = dialect.parse(&bytes).map_err(|e| Failed::Input(e.to_string()))?;
    let (workspace, journal, policy) = open(location, &event)?;
    let agent = Agent::of_this_hook(&[]);
    match phase {
        Phase::Pre => {
            let rules = Rules::of(&policy);
            let verdict = decide::pre_tool_use(&journal, &workspace, &agent, &event, rules).map_err(keel_failed)?;
            let (answer, code) = dialect.render(&verdict);
            if let Some(answer) = answer {
                outln!("{answer}").map_err(keel_failed)?;
            }
            Ok(code)
        }
        Phase::Post => decide::post_tool_use(&journal, &agent).map(|_| 0).map_err(keel_failed),
        Phase::End => decide::session_end(&journal, &agent).map(|_| 0).map_err(keel_failed),
    }
}

/// The workspace of the event's working directory, its lease service (the journal or etcd) and
/// its policy.
fn open(location: &Location, event: &Event) -> Result<(Workspace, Backend, Policy), Failed> {
    let start = event.cwd.clone().unwrap_or_else(|| Path::new(".").to_owned());
    let workspace = location.workspace_from(&start).map_err(keel_failed)?;
    let policy = crate::backend::policy(&workspace).map_err(keel_failed)?;
    let (backend, _) = location.backend_with(&workspace, &policy).map_err(keel_failed)?;
    backend.bind(&workspace).map_err(keel_failed)?;
    Ok((workspace, backend, policy))
}

/// `git diff --cached`'s paths against the live leases of other owners.
fn pre_commit(location: &Location) -> Result<u8, Failed> {
    let output = std::process::Command::new("git")
        .args(["diff", "--cached", "--name-only", "-z", "--no-renames"])
        .output()
        .map_err(|e| keel_failed(format!("running git: {e}")))?;
    if !output.status.success() {
        return Err(keel_failed(format!(
            "git diff --cached failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let staged: Vec<String> = output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let (_, journal, _) = open(location, &Event::default())?;
    // git runs the hook (through a shell); the committer is whoever ran git.
    let agent = Agent::of_this_hook(&["git"]);
    let live = journal.live().map_err(keel_failed)?;
    let mut refused = Vec::new();
    for path in &staged {
        let tree = keel_kernel::tree::Tree::new(&[path.as_str()]);
        for lease in &live {
            let holder = lease.lease.get("holder").and_then(Value::as_str).unwrap_or_default();
            if holder == agent.owner || lease.verdict.is_dead() {
                continue;
            }
            if keel_kernel::tree::Tree::from_json(lease.lease.get("tree")).intersects(&tree) {
                let region = lease.lease.get("tree").map(ToString::to_string).unwrap_or_default();
                refused.push(format!("  {path}: held by {holder:?} (lane {:?}, region {region})", lease.identity.lane));
            }
        }
    }
    if refused.is_empty() {
        return Ok(0);
    }
    eprintln!("keel: this commit stages paths another agent holds a lease on (you are {:?}):", agent.owner);
    for line in &refused {
        eprintln!("{line}");
    }
    eprintln!("keel: unstage them (`git restore --staged PATH`), or wait until their leases end.");
    Ok(1)
}

/// Where git runs the pre-commit hook from (`core.hooksPath` and worktrees included).
fn git_hook_path() -> Result<std::path::PathBuf, Failed> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--git-path", "hooks/pre-commit"])
        .output()
        .map_err(|e| keel_failed(format!("running git: {e}")))?;
    if !output.status.success() {
        return Err(Failed::Input(format!(
            "not in a git repository: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

/// The pre-commit hook keel writes, calling this very binary.
fn git_hook_script() -> Result<String, Failed> {
    let keel = std::env::current_exe().map_err(|e| keel_failed(format!("finding keel: {e}")))?;
    let quoted = format!("'{}'", keel.display().to_string().replace('\'', "'\\''"));
    Ok(format!("#!/bin/sh\n{GIT_HOOK_MARK}\nexec {quoted} hook pre-commit\n"))
}

/// What is at `path` now: nothing, keel's hook, or someone else's.
enum Found {
    Absent,
    Ours(String),
    Theirs,
}

fn found(path: &Path) -> Result<Found, Failed> {
    match keel_fs::read_to_string_bounded(path, GIT_HOOK_BYTES_MAX) {
        Ok(text) if text.lines().nth(1) == Some(GIT_HOOK_MARK) => Ok(Found::Ours(text)),
        Ok(_) => Ok(Found::Theirs),
        Err(keel_fs::FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(Found::Absent),
        // keel's hook is three lines: a file this large is someone else's.
        Err(e) if keel_fs::is_too_large(&e) => Ok(Found::Theirs),
        Err(e) => Err(keel_failed(e)),
    }
}

fn install_git(dry_run: bool) -> Result<u8, Failed> {
    let path = git_hook_path()?;
    let script = git_hook_script()?;
    match found(&path)? {
        Found::Ours(text) if text == script => {
            outln!("{}: keel's pre-commit hook is installed; nothing to change", path.display())
                .map_err(keel_failed)?;
            return Ok(0);
        }
        Found::Theirs => {
            eprintln!(
                "keel hook: {} already holds a pre-commit hook that is not keel's; it is left as it is. \
                 Add `keel hook pre-commit` to it yourself.",
                path.display()
            );
            return Ok(1);
        }
        Found::Ours(_) | Found::Absent => {}
    }
    if dry_run {
        outln!("would write {}:\n{script}", path.display()).map_err(keel_failed)?;
        return Ok(0);
    }
    if let Some(dir) = path.parent() {
        keel_fs::create_dir_all(dir).map_err(keel_failed)?;
    }
    let _report = keel_fs::write_atomic(&path, script.as_bytes()).map_err(keel_failed)?;
    keel_fs::set_mode(&path, 0o755).map_err(keel_failed)?;
    outln!("{}: installed keel's pre-commit hook", path.display()).map_err(keel_failed)?;
    Ok(0)
}

fn uninstall_git(dry_run: bool) -> Result<u8, Failed> {
    let path = git_hook_path()?;
    match found(&path)? {
        Found::Absent => outln!("{}: no pre-commit hook; nothing to remove", path.display()).map_err(keel_failed)?,
        Found::Theirs => {
            eprintln!("keel hook: {} is not keel's pre-commit hook; it is left as it is", path.display());
            return Ok(1);
        }
        Found::Ours(_) if dry_run => outln!("would remove {}", path.display()).map_err(keel_failed)?,
        Found::Ours(_) => {
            keel_fs::Storage::remove_file(&keel_fs::OsStorage, &path)
                .map_err(|e| keel_failed(format!("removing {}: {e}", path.display())))?;
            outln!("{}: removed keel's pre-commit hook", path.display()).map_err(keel_failed)?;
        }
    }
    Ok(0)
}

fn status(location: &Location) -> Result<u8, Failed> {
    let (program, mcp_program) = (keel_program()?, keel_mcp_program()?);
    let describe =
        |path: &Path, state: &dyn Fn(&str) -> Result<State, keel_hook::install::SettingsError>| match read_settings(
            path,
        ) {
            Ok(None) => "not installed".to_owned(),
            Ok(Some(text)) => match state(&text) {
                Ok(State::Installed) => "installed".to_owned(),
                Ok(State::Partial) => "partly installed, or for another keel binary (run install again)".to_owned(),
                Ok(State::Absent) => "not installed".to_owned(),
                Err(why) => format!("unreadable: {why}"),
            },
            Err(Failed::Input(why) | Failed::Keel(why)) => format!("unreadable: {why}"),
        };
    for harness in Harness::ALL {
        for scope in [Scope::Project, Scope::User] {
            let Ok((hooks, mcp)) = settings_paths(location, harness, scope) else { continue };
            let (name, scope) = (harness.name(), scope_name(scope));
            let state = describe(&hooks, &|text| harness.state(text, &program));
            outln!("{name} ({scope}): hooks {state} ({})", hooks.display()).map_err(keel_failed)?;
            if let Some(mcp) = mcp {
                let state = describe(&mcp, &|text| harness.mcp_state(text, &mcp_program));
                outln!("{name} ({scope}): MCP server {state} ({})", mcp.display()).map_err(keel_failed)?;
            }
        }
    }
    let line = match git_hook_path() {
        Ok(path) => match found(&path)? {
            Found::Absent => format!("git: not installed ({})", path.display()),
            Found::Ours(_) => format!("git: installed ({})", path.display()),
            Found::Theirs => format!("git: another pre-commit hook is there ({})", path.display()),
        },
        Err(_) => "git: not in a git repository".to_owned(),
    };
    outln!("{line}").map_err(keel_failed)?;
    Ok(0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Install,
    Uninstall,
}

/// The largest settings file read.
const SETTINGS_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// The largest pre-commit hook read to tell whether it is keel's (keel's own is three lines).
const GIT_HOOK_BYTES_MAX: u64 = 1024 * 1024;

fn harness_of(target: Target) -> Option<Harness> {
    match target {
        Target::ClaudeCode => Some(Harness::ClaudeCode),
        Target::Codex => Some(Harness::Codex),
        Target::Gemini => Some(Harness::Gemini),
        Target::Cursor => Some(Harness::Cursor),
        Target::Git => None,
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Project => "project",
        Scope::User => "user",
    }
}

/// The harness's settings file of `scope` (under the workspace's checkout, or the home directory),
/// and the file registering its MCP servers if keel may edit it (the same file for Codex and
/// Gemini CLI).
fn settings_paths(location: &Location, harness: Harness, scope: Scope) -> Result<(PathBuf, Option<PathBuf>), Failed> {
    let project = match scope {
        Scope::Project => {
            Workspace::locate(location.named(), Path::new(".")).map_err(keel_failed)?.checkout().to_owned()
        }
        Scope::User => PathBuf::new(),
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if scope == Scope::User && home.is_none() {
        return Err(Failed::Input("HOME is not set: there is no user settings file to edit".into()));
    }
    let home = home.unwrap_or_default();
    let codex_home = std::env::var_os("CODEX_HOME").map(PathBuf::from);
    Ok((
        harness.settings(scope, &project, &home, codex_home.as_deref()),
        harness.mcp_settings(scope, &project, &home, codex_home.as_deref()),
    ))
}

/// The settings file's text, `None` if there is none.
fn read_settings(path: &Path) -> Result<Option<String>, Failed> {
    let failed = |e: std::io::Error| keel_failed(format!("reading {}: {e}", path.display()));
    let stat = match keel_fs::Storage::path_stat(&keel_fs::OsStorage, path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(failed)?,
    };
    if stat.len > SETTINGS_BYTES_MAX {
        return Err(keel_failed(format!(
            "{}: {} bytes, over the {SETTINGS_BYTES_MAX} keel reads; left as it is",
            path.display(),
            stat.len
        )));
    }
    // Bounded again: the file may have grown since the stat.
    let bytes = keel_fs::read_bounded(path, SETTINGS_BYTES_MAX).map_err(keel_failed)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| keel_failed(format!("{}: not UTF-8 text; left as it is", path.display())))
}

/// This binary, if the `keel` on `PATH` is not it (then harnesses must name it by its path).
fn keel_elsewhere() -> Result<Option<PathBuf>, Failed> {
    let this = std::env::current_exe().map_err(|e| keel_failed(format!("finding keel: {e}")))?;
    let this = keel_fs::canonicalize(&this).unwrap_or(this);
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("keel")).find(|candidate| candidate.is_file())
    });
    let found = on_path.and_then(|p| keel_fs::canonicalize(&p).ok());
    Ok(if found.is_some_and(|p| p == this) { None } else { Some(this) })
}

/// How a harness's hook command line runs keel: `keel`, or this binary's path quoted for the shell.
fn keel_program() -> Result<String, Failed> {
    Ok(keel_elsewhere()?
        .map_or_else(|| "keel".to_owned(), |this| format!("'{}'", this.display().to_string().replace('\'', "'\\''"))))
}

/// How a harness starts keel's MCP server: a program, not a shell word.
fn keel_mcp_program() -> Result<String, Failed> {
    Ok(keel_elsewhere()?.map_or_else(|| "keel".to_owned(), |this| this.display().to_string()))
}

fn edit_settings(
    location: &Location,
    target: Target,
    scope: ScopeArg,
    dry_run: bool,
    edit: Edit,
) -> Result<u8, Failed> {
    let harness = harness_of(target).ok_or_else(|| Failed::Input("git is not a harness".into()))?;
    let scope = match scope {
        ScopeArg::Project => Scope::Project,
        ScopeArg::User => Scope::User,
    };
    let (hooks, mcp) = settings_paths(location, harness, scope)?;
    let (program, mcp_program) = match edit {
        Edit::Install => (keel_program()?, keel_mcp_program()?),
        Edit::Uninstall => (String::new(), String::new()),
    };
    let edit_hooks = |text: &str| match edit {
        Edit::Install => harness.install(text, &program),
        Edit::Uninstall => harness.uninstall(text),
    };
    let edit_mcp = |text: &str| match edit {
        Edit::Install => harness.install_mcp(text, &mcp_program),
        Edit::Uninstall => harness.uninstall_mcp(text),
    };
    // Codex and Gemini CLI keep both in one file: one edit, one write.
    let mut worst = 0;
    match mcp {
        Some(mcp) if mcp == hooks => {
            let both = |text: &str| edit_hooks(text).and_then(|text| edit_mcp(&text));
            worst = worst.max(edit_file(&hooks, "hooks and MCP server", harness, dry_run, edit, both)?);
        }
        mcp => {
            worst = worst.max(edit_file(&hooks, "hooks", harness, dry_run, edit, edit_hooks)?);
            match mcp {
                Some(mcp) => worst = worst.max(edit_file(&mcp, "MCP server", harness, dry_run, edit, edit_mcp)?),
                None if edit == Edit::Install => outln!(
                    "Claude Code keeps user-scope MCP servers in ~/.claude.json, its own state file: register keel's \
                     with `claude mcp add --scope user keel -- {mcp_program} mcp`."
                )
                .map_err(keel_failed)?,
                None => {}
            }
        }
    }
    if edit == Edit::Install && worst == 0 {
        let next = match harness {
            Harness::Codex => {
                "Codex runs a new hook only once it is trusted: open /hooks in Codex and trust keel's hooks \
                 (project hooks also need the project trusted)."
            }
            Harness::Cursor => "Cursor runs project hooks in a trusted workspace only.",
            Harness::ClaudeCode | Harness::Gemini => "Agents started from now on run them.",
        };
        outln!("{next}").map_err(keel_failed)?;
    }
    Ok(worst)
}

/// Edits one settings file with `edit`; 0 when done or nothing to do, 1 when the file is refused.
fn edit_file(
    path: &Path,
    what: &str,
    harness: Harness,
    dry_run: bool,
    edit: Edit,
    change: impl Fn(&str) -> Result<String, keel_hook::install::SettingsError>,
) -> Result<u8, Failed> {
    let before = read_settings(path)?;
    if edit == Edit::Uninstall && before.is_none() {
        outln!("{}: no such file; nothing to remove", path.display()).map_err(keel_failed)?;
        return Ok(0);
    }
    let after = match change(before.as_deref().unwrap_or_default()) {
        Ok(after) => after,
        Err(why) => {
            eprintln!("keel hook: {}: {why}; left as it is", path.display());
            return Ok(1);
        }
    };
    let name = harness.name();
    if before.as_deref() == Some(after.as_str()) {
        let state = if edit == Edit::Install { "installed" } else { "not installed" };
        outln!("{}: keel's {what} for {name}: {state}; nothing to change", path.display()).map_err(keel_failed)?;
        return Ok(0);
    }
    if dry_run {
        outln!("would write {}:\n{after}", path.display()).map_err(keel_failed)?;
        return Ok(0);
    }
    if let Some(dir) = path.parent() {
        keel_fs::create_dir_all(dir).map_err(keel_failed)?;
    }
    let _report = keel_fs::write_atomic(path, after.as_bytes()).map_err(keel_failed)?;
    let done = if edit == Edit::Install { "installed" } else { "removed" };
    outln!("{}: {done} keel's {what} for {name}", path.display()).map_err(keel_failed)?;
    Ok(0)
}
