//! `keel mcp` end to end, driven by the official MCP Python SDK (`mcp==2.3.0`, in a venv this
//! test makes once under the target directory): each agent is a Python process that starts its
//! own `keel mcp` as a harness does, and runs keel's hook through `sh -c` as Claude Code does.

use crate::support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The MCP SDK the tests drive the server with.
const MCP_SDK: &str = "mcp==2.3.0";

/// A Python with the MCP SDK installed: a venv made once per target directory.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
        let marker = venv.join(format!(".installed-{MCP_SDK}"));
        let python = venv.join("bin/python");
        if !marker.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 runs");
            assert!(made.success(), "python3 -m venv {} failed", venv.display());
            let pip = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MCP_SDK])
                .status()
                .expect("pip runs");
            assert!(pip.success(), "pip install {MCP_SDK} failed");
            std::fs::write(&marker, "").expect("marker");
        }
        python
    })
}

/// One agent: a Python process with one MCP session to its own `keel mcp`.
struct Agent {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Agent {
    fn start(root: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(root, env, &[])
    }

    /// An agent whose server is started from its registration in `.mcp.json`, as Claude Code
    /// starts it.
    fn start_registered(root: &Path) -> Self {
        Self::spawn(root, &[], &["--registered"])
    }

    fn spawn(root: &Path, env: &[(&str, &str)], flags: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mcp_agent.py");
        let mut command = Command::new(python());
        command.arg(script).arg(env!("CARGO_BIN_EXE_keel")).arg(root).args(flags);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for key in ["KEEL_ROOT", "KEEL_JOURNAL", "KEEL_OWNER", "KEEL_GRACE_S"] {
            command.env_remove(key);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("the stand-in agent starts");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut agent = Self { child, input, output };
        assert_eq!(agent.receive()["ready"], true, "the MCP session started");
        agent
    }

    fn send(&mut self, request: &Value) {
        writeln!(self.input, "{request}").expect("to the agent");
    }

    fn receive(&mut self) -> Value {
        let mut line = String::new();
        self.output.read_line(&mut line).expect("from the agent");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the agent answers JSON ({e}): {line:?}"))
    }

    /// Calls a tool; returns `(isError, structured content or text)`.
    fn call(&mut self, tool: &str, args: Value) -> (bool, Value) {
        let mut request = json!({"op": "call", "tool": tool});
        request["args"] = args;
        self.send(&request);
        let answer = self.receive();
        let error = answer["isError"].as_bool().expect("isError is told");
        let body = if answer["structured"].is_null() { answer["text"].clone() } else { answer["structured"].clone() };
        (error, body)
    }

    /// A call that must succeed as a call (a refusal is a success); its structured answer.
    fn ok(&mut self, tool: &str, args: Value) -> Value {
        let (error, body) = self.call(tool, args);
        assert!(!error, "{tool} failed: {body}");
        body
    }

    /// A call that must fail; its message.
    fn error(&mut self, tool: &str, args: Value) -> String {
        let (error, body) = self.call(tool, args);
        assert!(error, "{tool} should have failed: {body}");
        body.as_str().unwrap_or_default().to_owned()
    }

    /// Claude Code's `PreToolUse` hook for an `Edit` of `file`, run by this agent: whether it allows.
    fn hook_allows(&mut self, root: &Path, file: &str) -> bool {
        let event = json!({
            "session_id": "s", "cwd": root.display().to_string(), "hook_event_name": "PreToolUse",
            "tool_name": "Edit", "tool_input": {"file_path": root.join(file).display().to_string()},
        });
        self.send(&json!({"op": "hook", "args": ["hook", "pre-tool-use"], "stdin": event.to_string()}));
        let answer = self.receive();
        assert_eq!(answer["code"], 0, "{answer}");
        !answer["stdout"].as_str().unwrap_or_default().contains("\"deny\"")
    }

    /// Ends the session the way a harness does (stdin closed) and waits for the server to exit.
    fn close(&mut self) {
        self.send(&json!({"op": "close"}));
        assert_eq!(self.receive()["closed"], true);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    std::fs::create_dir_all(root.join("src/api")).expect("src/api");
    support::git(&root, &["init", "-q", "-b", "main"]);
    (dir, root)
}

#[test]
fn the_tools_are_listed_with_their_schemas_and_the_leases_resource_reads() {
    let (_dir, root) = workspace();
    let mut a = Agent::start(&root, &[]);
    a.send(&json!({"op": "tools"}));
    let tools = a.receive()["tools"].as_array().cloned().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for name in [
        "lease_acquire",
        "lease_release",
        "lease_heartbeat",
        "lease_list",
        "lease_check",
        "fs_write",
        "fs_delete",
        "fs_rename",
        "fs_hash",
        "events_append",
        "events_read",
        "journal_status",
    ] {
        assert!(names.contains(&name), "{name} is missing from {names:?}");
    }
    let acquire = tools.iter().find(|t| t["name"] == "lease_acquire").expect("lease_acquire");
    assert_eq!(acquire["inputSchema"]["required"], json!(["paths"]));
    assert_eq!(acquire["inputSchema"]["properties"]["paths"]["type"], "array");
    assert!(acquire["description"].as_str().unwrap_or_default().contains("Refused"), "{acquire}");
    for tool in &tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    a.send(&json!({"op": "resources"}));
    assert_eq!(a.receive()["resources"], json!(["keel://leases"]));
    a.ok("lease_acquire", json!({"paths": ["src/api/"]}));
    a.send(&json!({"op": "read", "uri": "keel://leases"}));
    let leases: Value = serde_json::from_str(a.receive()["text"].as_str().expect("text")).expect("JSON");
    assert_eq!(leases["leases"][0]["region"], json!(["src/api/"]));
}

#[test]
fn two_agents_contend_the_holder_writes_through_the_gate_and_closing_its_session_lets_the_waiter_in() {
    let (_dir, root) = workspace();
    let mut a = Agent::start(&root, &[]);
    let mut b = Agent::start(&root, &[]);
    let granted = a.ok("lease_acquire", json!({"paths": ["src/api/"], "reason": "refactor the API"}));
    assert_eq!(granted["granted"], true, "{granted}");
    assert!(granted["generation"].as_u64().is_some_and(|g| g > 0), "{granted}");
    let refused = b.ok("lease_acquire", json!({"paths": ["src/api/handlers.rs"]}));
    assert_eq!(refused["granted"], false, "{refused}");
    let holder = refused["holder"].as_str().expect("the holder is named").to_owned();
    assert!(holder.starts_with("python"), "the holder is agent A's harness process: {refused}");
    assert_eq!(refused["region"], json!(["src/api/"]));
    assert!(refused["since"].is_string() && refused["last_seen"].is_string(), "{refused}");

    // The same agent's hook never denies its own lease; the other's hook and check agree.
    assert!(a.hook_allows(&root, "src/api/handlers.rs"));
    let checked = b.ok("lease_check", json!({"paths": ["src/api/handlers.rs", "src/free.rs"]}));
    assert_eq!(checked["checks"][0]["allowed"], false, "{checked}");
    assert!(checked["checks"][0]["reason"].as_str().unwrap_or_default().contains(&holder), "{checked}");
    assert_eq!(checked["checks"][1]["allowed"], true, "{checked}");
    assert!(!b.hook_allows(&root, "src/api/handlers.rs"), "the hook agrees with lease_check");
    assert!(b.hook_allows(&root, "src/free.rs"), "the hook agrees with lease_check");
    let mine = a.ok("lease_check", json!({"paths": ["src/api/handlers.rs"]}));
    assert_eq!(mine["checks"][0]["held"], true, "{mine}");

    // Writes: the holder's land, the other's are refused and change nothing.
    let written = a.ok("fs_write", json!({"path": "src/api/handlers.rs", "content": "fn a() {}\n"}));
    assert_eq!(written["outcome"], "written", "{written}");
    let hash = a.ok("fs_hash", json!({"path": "src/api/handlers.rs"}))["hash"].clone();
    assert_eq!(hash, written["hash"]);
    let stale = a.ok("fs_write", json!({"path": "src/api/handlers.rs", "content": "x", "expect_hash": "0".repeat(64)}));
    assert_eq!(stale["outcome"], "precondition_failed", "{stale}");
    let again = a.ok("fs_write", json!({"path": "src/api/handlers.rs", "content": "fn b() {}\n", "expect_hash": hash}));
    assert_eq!(again["outcome"], "written", "{again}");
    let other =
        b.ok("fs_write", json!({"path": "src/api/handlers.rs", "content": "stomp", "expect_hash": again["hash"]}));
    assert_eq!(other["outcome"], "forbidden", "{other}");
    assert_eq!(std::fs::read_to_string(root.join("src/api/handlers.rs")).expect("read"), "fn b() {}\n");

    // B waits; A's session ends, its lease is given back, and B's wait ends in a grant.
    b.send(&json!({"op": "call", "tool": "lease_acquire", "args": {"paths": ["src/api/"], "wait_s": 30}}));
    std::thread::sleep(std::time::Duration::from_millis(200));
    a.close();
    let waited = b.receive();
    assert_eq!(waited["isError"], false, "{waited}");
    assert_eq!(waited["structured"]["granted"], true, "{waited}");
    assert!(waited["structured"]["generation"].as_u64() > granted["generation"].as_u64(), "generations rise");

    // The fleet's record holds A's claim.
    let events = b.ok("events_read", json!({}));
    assert_eq!(events["events"][0]["payload"]["kind"], "lease_acquired", "{events}");
    assert_eq!(events["events"][0]["payload"]["data"]["reason"], "refactor the API");
    // It is kept where `keel store` keeps runtimes (one default for both), under `.keel/`: no
    // `runtimes/` at the workspace root.
    assert!(root.join(".keel/store/runtimes").is_dir() && !root.join("runtimes").exists());
    let read = support::run(&root, &["store", "events", "--runtime", "fleet", "--json"], &[], "");
    assert_eq!(support::code(&read), 0, "{}", support::stderr(&read));
    assert_eq!(support::json(&read)["events"], events["events"], "the CLI reads the server's record");
}

#[test]
fn a_killed_agent_s_lease_is_reclaimable_past_the_grace_and_a_live_one_s_never() {
    let (_dir, root) = workspace();
    std::fs::create_dir_all(root.join(".keel")).expect(".keel");
    std::fs::write(root.join(".keel/policy.toml"), "mcp_release_on_exit = false\n").expect("policy");
    let env = [("KEEL_GRACE_S", "1")];
    let mut a = Agent::start(&root, &env);
    let mut b = Agent::start(&root, &env);
    assert_eq!(a.ok("lease_acquire", json!({"paths": ["src/api/"]}))["granted"], true);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(b.ok("lease_acquire", json!({"paths": ["src/api/"]}))["granted"], false, "A lives: still A's");
    a.child.kill().expect("kill -9 the agent");
    a.child.wait().expect("reaped");
    let taken = b.ok("lease_acquire", json!({"paths": ["src/api/"], "wait_s": 10}));
    assert_eq!(taken["granted"], true, "A is gone and past the grace: reclaimed: {taken}");
}

#[test]
fn hook_install_registers_the_server_beside_other_servers_and_the_agent_starts_it_from_there() {
    let (_dir, root) = workspace();
    let theirs = "{\n  \"mcpServers\": {\n    \"docs\": {\"command\": \"docs-mcp\"}\n  },\n  \"x\": 1\n}\n";
    std::fs::write(root.join(".mcp.json"), theirs).expect(".mcp.json");
    let installed = support::run(&root, &["hook", "install", "claude-code"], &[], "");
    assert_eq!(support::code(&installed), 0, "{}", support::stderr(&installed));
    let registry = std::fs::read_to_string(root.join(".mcp.json")).expect(".mcp.json");
    assert!(registry.starts_with("{\n  \"mcpServers\": {\n    \"docs\": {\"command\": \"docs-mcp\"},"), "{registry}");
    let again = support::run(&root, &["hook", "install", "claude-code"], &[], "");
    assert_eq!(std::fs::read_to_string(root.join(".mcp.json")).expect(".mcp.json"), registry, "idempotent");
    assert!(support::stdout(&again).contains("nothing to change"), "{}", support::stdout(&again));
    let status = support::stdout(&support::run(&root, &["hook", "status"], &[], ""));
    assert!(status.contains("claude-code (project): MCP server installed"), "{status}");

    let mut a = Agent::start_registered(&root);
    let granted = a.ok("lease_acquire", json!({"paths": ["src/api/"]}));
    assert_eq!(granted["granted"], true, "{granted}");
    a.close();

    let removed = support::run(&root, &["hook", "uninstall", "claude-code"], &[], "");
    assert_eq!(support::code(&removed), 0, "{}", support::stderr(&removed));
    assert_eq!(std::fs::read_to_string(root.join(".mcp.json")).expect(".mcp.json"), theirs, "byte for byte");
}

#[test]
fn the_server_beats_its_session_s_leases_while_the_client_is_connected() {
    let (_dir, root) = workspace();
    // A grace of 4 s: each lease is beaten every second (a quarter of it).
    let mut a = Agent::start(&root, &[("KEEL_GRACE_S", "4")]);
    assert_eq!(a.ok("lease_acquire", json!({"paths": ["src/api/"]}))["granted"], true);
    let mut seen = Value::Null;
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = a.ok("lease_list", json!({"mine": true}))["leases"][0].clone();
        if seen["last_seen"] != seen["since"] {
            break;
        }
    }
    assert_ne!(seen["last_seen"], seen["since"], "no heartbeat within 4 s: {seen}");
    assert!(seen["last_seen"].as_str() > seen["since"].as_str(), "{seen}");
}

#[test]
fn the_holder_renames_and_deletes_through_the_gate_and_another_agent_is_refused_both() {
    let (_dir, root) = workspace();
    let mut a = Agent::start(&root, &[]);
    let mut b = Agent::start(&root, &[]);
    assert_eq!(a.ok("lease_acquire", json!({"paths": ["src/api/"]}))["granted"], true);
    let written = a.ok("fs_write", json!({"path": "src/api/old.rs", "content": "fn old() {}\n"}));
    assert_eq!(written["outcome"], "written", "{written}");
    for (tool, args) in [
        ("fs_rename", json!({"from": "src/api/old.rs", "to": "src/api/stolen.rs"})),
        ("fs_delete", json!({"path": "src/api/old.rs"})),
    ] {
        let refused = b.ok(tool, args);
        assert_eq!(refused["outcome"], "forbidden", "{tool} by another agent: {refused}");
    }
    let stale =
        a.ok("fs_rename", json!({"from": "src/api/old.rs", "to": "src/api/new.rs", "expect_hash": "0".repeat(64)}));
    assert_eq!(stale["outcome"], "precondition_failed", "{stale}");
    let renamed =
        a.ok("fs_rename", json!({"from": "src/api/old.rs", "to": "src/api/new.rs", "expect_hash": written["hash"]}));
    assert_eq!(renamed["outcome"], "renamed", "{renamed}");
    assert!(!root.join("src/api/old.rs").exists() && root.join("src/api/new.rs").exists());
    let deleted = a.ok("fs_delete", json!({"path": "src/api/new.rs"}));
    assert_eq!(deleted["outcome"], "deleted", "{deleted}");
    assert!(!root.join("src/api/new.rs").exists());
    assert_eq!(a.ok("fs_hash", json!({"path": "src/api/new.rs"}))["exists"], false);
}

#[test]
fn bad_calls_are_tool_errors_naming_what_is_wrong_and_lose_no_lease() {
    let (_dir, root) = workspace();
    let mut a = Agent::start(&root, &[]);
    a.ok("lease_acquire", json!({"paths": ["src/api/"]}));
    assert!(a.error("no_such_tool", json!({})).contains("lease_acquire"), "the tools are listed");
    assert!(a.error("lease_acquire", json!({})).contains("paths"));
    assert!(a.error("lease_acquire", json!({"paths": "src/"})).contains("sequence"));
    assert!(a.error("lease_acquire", json!({"paths": ["src/"], "mode": "sole"})).contains("exclusive"));
    assert!(a.error("lease_acquire", json!({"paths": ["src/"], "colour": 1})).contains("colour"));
    assert!(a.error("lease_acquire", json!({"paths": ["../elsewhere/"]})).contains(".."));
    assert!(a.error("lease_acquire", json!({"paths": ["x"], "wait_s": -1})).contains("wait_s"));
    assert!(a.error("fs_write", json!({"path": "../escape", "content": "x"})).contains("../escape"));
    assert!(
        a.error("fs_write", json!({"path": "src/api/x", "content": "x", "expect_hash": "abc"})).contains("expect_hash")
    );
    let huge = "x".repeat(keel_mcp::FS_WRITE_BYTES_MAX + 1);
    assert!(a.error("fs_write", json!({"path": "src/api/big", "content": huge})).contains("src/api/big"));
    assert!(a.error("events_read", json!({"limit": 0})).contains("limit"));
    assert!(a.error("events_append", json!({"kind": " "})).contains("kind"));
    let mine = a.ok("lease_list", json!({"mine": true}));
    assert_eq!(mine["leases"].as_array().map(Vec::len), Some(1), "the lease survived every bad call: {mine}");
}

#[test]
fn malformed_json_rpc_is_answered_and_the_session_goes_on() {
    let (_dir, root) = workspace();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "lease_list", "arguments": {}}});
    let oversized = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(keel_mcp::MESSAGE_BYTES_MAX)
    );
    let input = format!(
        "{init}\nnot json at all\n{}\n{{\"jsonrpc\":\"2.0\",\"id\":7}}\n{oversized}\n{call}\n",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    );
    let output = support::run(&root, &["mcp"], &[], &input);
    assert_eq!(support::code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let answers: Vec<Value> = support::stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let parse_error = answers.iter().find(|a| a["error"]["code"] == -32700).expect("a parse error answer");
    assert_eq!(parse_error["id"], Value::Null);
    let invalid: Vec<&Value> = answers.iter().filter(|a| a["error"]["code"] == -32600).collect();
    assert_eq!(invalid.len(), 2, "the message without a method and the oversized one: {answers:?}");
    assert!(
        invalid.iter().any(|a| a["error"]["message"].as_str().unwrap_or_default().contains("bytes")),
        "{invalid:?}"
    );
    let listed = answers.iter().find(|a| a["id"] == 2).expect("the call after the garbage is answered");
    assert_eq!(listed["result"]["isError"], false, "{listed}");
}

/// rmcp answers the requests in flight when the input ends (for up to 5 s) before it exits.
#[test]
fn a_client_that_closes_its_input_after_asking_still_gets_every_answer() {
    let (_dir, root) = workspace();
    let held =
        support::run(&root, &["lease", "acquire", "--owner", "other", "--lane", "api", "--tree", "src/api/"], &[], "");
    assert_eq!(support::code(&held), 0, "{}", support::stderr(&held));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    // A waiting acquire is still in flight when the input ends; the checks behind it are quick.
    let mut lines = vec![init, initialized];
    let waiting = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "lease_acquire", "arguments": {"paths": ["src/api/"], "wait_s": 1}}});
    lines.push(waiting);
    for id in 3..53 {
        let check = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "lease_check", "arguments": {"paths": ["src/api/x.rs"]}}});
        lines.push(check);
    }
    let input = lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n") + "\n";
    let output = support::run(&root, &["mcp"], &[], &input);
    assert_eq!(support::code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let answers: Vec<Value> =
        support::stdout(&output).lines().map(|line| serde_json::from_str(line).expect("JSON")).collect();
    let ids: std::collections::BTreeSet<u64> = answers.iter().filter_map(|a| a["id"].as_u64()).collect();
    assert_eq!(ids, (1..53).collect(), "every request is answered");
    let waited = answers.iter().find(|a| a["id"] == 2).expect("the waiting acquire is answered");
    assert_eq!(waited["result"]["structuredContent"]["granted"], false, "{waited}");
}
