//! The lease-using commands on the etcd backend, end to end against a real etcd
//! cluster (`support::etcd`): chosen by flags, by environment variables or by the policy's `[backend]`
//! table, the same commands take, refuse, list and give back leases, gate writes and run hooks as
//! they do on the journal; and the ways it cannot work are usage errors (exit 2) or "etcd
//! unavailable" (exit 4). Only in a build with the `etcd` feature (`cargo xtask ci` has it).

use crate::support;

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use support::etcd::{Etcd, free_port};
use support::{code, json, stderr, stdout};

/// A workspace of its own (a `.keel/` and a `src/`), not bound to anything yet.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join(".keel")).expect("state dir");
    std::fs::create_dir_all(dir.path().join("src")).expect("src");
    dir
}

/// `keel --root ROOT args`, the environment naming no backend unless `env` does.
fn keel(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["--root", root.to_str().expect("a UTF-8 temp path")];
    all.extend_from_slice(args);
    support::run(root, &all, env, "")
}

/// `keel --backend etcd --etcd-endpoints E --etcd-prefix P args` in `root`.
fn on_etcd(root: &Path, etcd: &Etcd, prefix: &str, args: &[&str]) -> Output {
    let mut all = vec!["--backend", "etcd", "--etcd-endpoints", etcd.endpoint(), "--etcd-prefix", prefix];
    all.extend_from_slice(args);
    keel(root, &all, &[])
}

fn policy_for(etcd: &Etcd, prefix: &str) -> String {
    format!("[backend]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n", etcd.endpoint())
}

fn acquire<'a>(lane: &'a str, tree: &'a str, owner: &'a str) -> [&'a str; 9] {
    ["lease", "acquire", "--lane", lane, "--tree", tree, "--owner", owner, "--json"]
}

fn lanes(live: &Output) -> Vec<String> {
    let live = json(live);
    assert_eq!(live["backend"], "etcd", "{live}");
    live["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["identity"]["lane"].as_str().unwrap_or("?").into())
        .collect()
}

#[test]
fn flags_take_list_and_give_back_leases_in_etcd_and_a_colliding_acquire_is_refused_naming_the_holder() {
    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    let prefix = "/keel-cli-tests/flags";

    let granted = on_etcd(root, &etcd, prefix, &acquire("api", "src/api/", "agent-a"));
    assert_eq!(code(&granted), 0, "{}", stderr(&granted));
    assert_eq!((json(&granted)["outcome"].clone(), json(&granted)["generation"].clone()), (json!("acquire"), json!(1)));

    let refused = on_etcd(root, &etcd, prefix, &acquire("handlers", "src/api/handlers.rs", "agent-b"));
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    let reason = json(&refused)["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("\"agent-a\"") && reason.contains("\"api\""), "names the holder and its lane: {reason}");

    let live = on_etcd(root, &etcd, prefix, &["lease", "live", "--json"]);
    assert_eq!(code(&live), 0, "{}", stderr(&live));
    assert_eq!(lanes(&live), ["api"]);
    assert_eq!(json(&live)["etcd"], json!({"endpoints": [etcd.endpoint()], "prefix": prefix}));
    let text = on_etcd(root, &etcd, prefix, &["lease", "live"]);
    assert!(
        stdout(&text).contains(&format!("leases in etcd at {} under {prefix}", etcd.endpoint())),
        "{}",
        stdout(&text)
    );

    // The environment variables choose the same service as the flags.
    let env = [("KEEL_BACKEND", "etcd"), ("KEEL_ETCD_ENDPOINTS", etcd.endpoint()), ("KEEL_ETCD_PREFIX", prefix)];
    let released = keel(root, &["lease", "release", "--lane", "api", "--owner", "agent-a"], &env);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert!(lanes(&keel(root, &["lease", "live", "--json"], &env)).is_empty());
    let now_free = on_etcd(root, &etcd, prefix, &acquire("handlers", "src/api/handlers.rs", "agent-b"));
    assert_eq!((code(&now_free), json(&now_free)["generation"].clone()), (0, json!(2)));

    // Nothing went to a journal: the workspace's journal file was never written.
    assert!(!root.join(".keel/lane-journal.jsonl").exists());
    assert!(lanes_in_journal(root).is_empty());
}

/// The live leases of `root`'s journal, read with the journal backend.
fn lanes_in_journal(root: &Path) -> Vec<Value> {
    let live = keel(root, &["--backend", "journal", "lease", "live", "--json"], &[]);
    assert_eq!(code(&live), 0, "{}", stderr(&live));
    json(&live)["leases"].as_array().expect("leases").clone()
}

#[test]
fn the_policy_s_backend_table_puts_every_host_s_leases_in_etcd_and_journal_commands_are_refused() {
    let etcd = Etcd::start();
    let prefix = "/keel-cli-tests/policy";
    // Two checkouts of one repository on two hosts: the same policy, so the same etcd prefix.
    let (host_a, host_b) = (workspace(), workspace());
    for host in [&host_a, &host_b] {
        std::fs::write(host.path().join(".keel/policy.toml"), policy_for(&etcd, prefix)).expect("policy");
    }
    let granted = keel(host_a.path(), &acquire("api", "src/", "agent-a"), &[]);
    assert_eq!(code(&granted), 0, "{}", stderr(&granted));
    let refused = keel(host_b.path(), &acquire("api-b", "src/lib.rs", "agent-b"), &[]);
    assert_eq!(code(&refused), 1, "the other host sees the lease: {}", stdout(&refused));
    assert!(json(&refused)["reason"].as_str().unwrap_or_default().contains("\"agent-a\""), "{}", stdout(&refused));
    assert_eq!(lanes(&keel(host_b.path(), &["lease", "live", "--json"], &[])), ["api"]);

    let replay = keel(host_b.path(), &["journal", "replay"], &[]);
    assert_eq!(code(&replay), 2, "{}", stdout(&replay));
    let said = stderr(&replay);
    assert!(said.contains(&format!("live in etcd at {} under {prefix}", etcd.endpoint())), "{said}");

    let released = keel(host_a.path(), &["lease", "release", "--lane", "api", "--owner", "agent-a"], &[]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert_eq!(code(&keel(host_b.path(), &acquire("api-b", "src/lib.rs", "agent-b"), &[])), 0);
    assert!(!host_a.path().join(".keel/lane-journal.jsonl").exists());
}

#[test]
fn a_gated_write_under_an_etcd_lease_lands_and_a_stale_generation_is_refused() {
    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    let prefix = "/keel-cli-tests/gate";
    let write = |generation: &str, content: &str| {
        let args = ["fs", "write", "src/lib.rs", "--from", content, "--owner", "a", "--lane", "api"];
        let mut args = args.to_vec();
        args.extend(["--generation", generation, "--expect-any", "--json"]);
        on_etcd(root, &etcd, prefix, &args)
    };
    let first = root.join("first.txt");
    let second = root.join("second.txt");
    std::fs::write(&first, "first\n").expect("content");
    std::fs::write(&second, "stale\n").expect("content");

    let granted = on_etcd(root, &etcd, prefix, &acquire("api", "src/", "a"));
    assert_eq!(code(&granted), 0, "{}", stderr(&granted));
    let generation = json(&granted)["generation"].to_string();
    let written = write(&generation, first.to_str().expect("UTF-8"));
    assert_eq!((code(&written), json(&written)["outcome"].clone()), (0, json!("written")), "{}", stderr(&written));
    assert_eq!(std::fs::read_to_string(root.join("src/lib.rs")).expect("landed"), "first\n");

    // Released and granted again: the old token is stale.
    assert_eq!(code(&on_etcd(root, &etcd, prefix, &["lease", "release", "--lane", "api", "--owner", "a"])), 0);
    let again = on_etcd(root, &etcd, prefix, &acquire("api", "src/", "a"));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_ne!(json(&again)["generation"].to_string(), generation);
    let stale = write(&generation, second.to_str().expect("UTF-8"));
    assert_eq!(code(&stale), 1, "{} {}", stdout(&stale), stderr(&stale));
    assert!(stdout(&stale).contains("stale"), "{}", stdout(&stale));
    assert_eq!(std::fs::read_to_string(root.join("src/lib.rs")).expect("unchanged"), "first\n");

    // The gate bound the workspace to etcd: the journal, or another prefix, would grant the same
    // regions again, so both are refused.
    let endpoints = ["--etcd-endpoints", etcd.endpoint()];
    let journal = keel(root, &["--backend", "journal", "lease", "live"], &[]);
    let elsewhere = keel(
        root,
        &[&["--backend", "etcd"], &endpoints[..], &["--etcd-prefix", "/keel-cli-tests/elsewhere", "lease", "live"]]
            .concat(),
        &[],
    );
    for (refused, chosen) in
        [(journal, "the journal".to_owned()), (elsewhere, "etcd:/keel-cli-tests/elsewhere".to_owned())]
    {
        assert_eq!(code(&refused), 2, "{chosen}: {}", stdout(&refused));
        let said = stderr(&refused);
        assert!(
            said.contains(&format!("bound to the lease service etcd:{prefix}")) && said.contains(&chosen),
            "{said}"
        );
    }
}

#[test]
fn lease_run_and_the_hook_hold_and_refuse_leases_in_etcd() {
    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    let prefix = "/keel-cli-tests/run-and-hook";
    std::fs::write(root.join(".keel/policy.toml"), policy_for(&etcd, prefix)).expect("policy");
    std::fs::write(root.join("src/a.rs"), "a").expect("a file to edit");

    // `lease run`: the command runs holding the lease (it sees it), and it is given back after.
    let keel_path = env!("CARGO_BIN_EXE_keel");
    let inner = format!("{keel_path} --root {} lease live --json", root.display());
    let run = keel(
        root,
        &["lease", "run", "--lane", "job", "--tree", "src/job/", "--owner", "runner", "--", "sh", "-c", &inner],
        &[],
    );
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    assert_eq!(lanes(&run), ["job"], "held while the command ran");
    assert!(lanes(&keel(root, &["lease", "live", "--json"], &[])).is_empty(), "released after it");

    // The hook: agent A's edit takes a lease in etcd; agent B's edit of the same file is denied.
    let edit = |owner: &str| {
        let path = root.join("src/a.rs").display().to_string();
        let event = json!({"session_id": owner, "cwd": root.display().to_string(), "hook_event_name": "PreToolUse",
            "tool_name": "Edit", "tool_input": {"file_path": path, "old_string": "a", "new_string": "b"}});
        support::run(root, &["hook", "pre-tool-use"], &[("KEEL_OWNER", owner)], &event.to_string())
    };
    let allowed = edit("agent-a");
    assert_eq!(code(&allowed), 0, "{}", stderr(&allowed));
    assert!(!stdout(&allowed).contains("deny"), "{}", stdout(&allowed));
    let live = json(&keel(root, &["lease", "live", "--json"], &[]));
    assert_eq!(live["leases"][0]["lease"]["holder"], "agent-a", "{live}");
    let denied = edit("agent-b");
    assert_eq!(code(&denied), 0, "{}", stderr(&denied));
    assert!(stdout(&denied).contains("\"deny\"") && stdout(&denied).contains("agent-a"), "{}", stdout(&denied));
    assert!(!root.join(".keel/lane-journal.jsonl").exists());
}

#[test]
fn the_etcd_backend_without_a_prefix_is_a_usage_error_that_says_to_name_one() {
    let dir = workspace();
    let root = dir.path();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let by_flags = keel(root, &["--backend", "etcd", "--etcd-endpoints", &endpoint, "lease", "live"], &[]);
    let by_policy = {
        std::fs::write(
            root.join(".keel/policy.toml"),
            format!("[backend]\nkind = \"etcd\"\nendpoints = [\"{endpoint}\"]\n"),
        )
        .expect("policy");
        keel(root, &acquire("api", "src/", "a"), &[])
    };
    for output in [by_flags, by_policy] {
        assert_eq!(code(&output), 2, "{}", stdout(&output));
        let said = stderr(&output);
        assert!(said.contains("--etcd-prefix") && said.contains("[backend]") && said.contains("same prefix"), "{said}");
    }
}

#[test]
fn a_dead_etcd_endpoint_is_exit_4_etcd_unavailable() {
    let dir = workspace();
    let root = dir.path();
    // A port nothing listens on: every request is refused at connect.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut all = vec!["--backend", "etcd", "--etcd-endpoints", &endpoint, "--etcd-prefix", "/keel-cli-tests/dead"];
    all.extend_from_slice(&acquire("api", "src/", "a"));
    let output = keel(root, &all, &[]);
    assert_eq!(code(&output), 4, "{}", stdout(&output));
    assert!(stderr(&output).starts_with("keel: etcd unavailable: "), "{}", stderr(&output));
    assert!(stderr(&output).contains(&endpoint), "names the member tried: {}", stderr(&output));
}

#[test]
fn the_mcp_server_takes_writes_under_and_gives_back_its_session_s_lease_in_etcd() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::{Command, Stdio};

    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    std::fs::write(root.join(".keel/policy.toml"), policy_for(&etcd, "/keel-cli-tests/mcp")).expect("policy");
    let mut server = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("mcp")
        .current_dir(root)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .env_remove("KEEL_BACKEND")
        .env_remove("KEEL_ETCD_ENDPOINTS")
        .env_remove("KEEL_ETCD_PREFIX")
        .env("KEEL_OWNER", "mcp-agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel mcp starts");
    let mut input = server.stdin.take().expect("stdin");
    let mut output = BufReader::new(server.stdout.take().expect("stdout"));
    // `move`: dropping it closes the server's stdin, which ends the session.
    let mut ask = move |message: Value| -> Value {
        writeln!(input, "{message}").expect("to the server");
        if message.get("id").is_none() {
            return Value::Null;
        }
        let mut line = String::new();
        output.read_line(&mut line).expect("from the server");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let client =
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
    ask(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": client}));
    ask(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let call = |id: u64, name: &str, arguments: Value| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
    let granted = ask(call(2, "lease_acquire", json!({"lane": "api", "paths": ["src/"]})));
    assert_eq!(granted["result"]["structuredContent"]["granted"], true, "{granted}");
    let written = ask(call(3, "fs_write", json!({"path": "src/x.rs", "content": "hello\n", "expect_absent": true})));
    assert_eq!(written["result"]["structuredContent"]["outcome"], "written", "{written}");
    let live = json(&keel(root, &["lease", "live", "--json"], &[]));
    assert_eq!(live["leases"][0]["lease"]["holder"], "mcp-agent", "{live}");

    drop(ask);
    let ended = server.wait_with_output().expect("the server ends with its client");
    assert!(ended.status.success(), "{}", String::from_utf8_lossy(&ended.stderr));
    assert_eq!(std::fs::read_to_string(root.join("src/x.rs")).expect("written"), "hello\n");
    assert!(lanes(&keel(root, &["lease", "live", "--json"], &[])).is_empty(), "given back at disconnect");
}

#[test]
fn lease_migrate_moves_a_journal_s_leases_to_etcd_with_their_generations_and_closes_the_journal() {
    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    let prefix = "/keel-cli-tests/migrate";
    let held = keel(root, &acquire("api", "src/api/", "agent-a"), &[]);
    assert_eq!(code(&held), 0, "{}", stderr(&held));
    let generation = json(&held)["generation"].clone();

    let moved = keel(
        root,
        &["lease", "migrate", "--to", "etcd", "--etcd-endpoints", etcd.endpoint(), "--etcd-prefix", prefix, "--json"],
        &[],
    );
    assert_eq!(code(&moved), 0, "{}", stderr(&moved));
    assert_eq!(json(&moved)["leases"], 1, "{}", stdout(&moved));

    // On etcd: the lease with its own generation, the token its holder presents.
    let live = json(&on_etcd(root, &etcd, prefix, &["lease", "live", "--json"]));
    let api = live["leases"].as_array().expect("leases").iter().find(|l| l["identity"]["lane"] == "api").cloned();
    assert_eq!(api.map(|l| l["generation"].clone()), Some(generation), "{live}");

    // The journal grants nothing more, and says where the leases went.
    let stray = keel(
        root,
        &["--backend", "journal", "lease", "acquire", "--lane", "docs", "--tree", "docs/", "--owner", "agent-b"],
        &[],
    );
    assert_eq!(code(&stray), 1, "{}", stdout(&stray));
    assert!(stdout(&stray).contains(etcd.endpoint()) || stderr(&stray).contains(etcd.endpoint()), "{}", stdout(&stray));
}

#[test]
fn raise_generation_lifts_etcd_s_counter_after_a_restore_and_later_grants_are_above_it() {
    let etcd = Etcd::start();
    let dir = workspace();
    let root = dir.path();
    let prefix = "/keel-cli-tests/raise";
    let raised = on_etcd(root, &etcd, prefix, &["lease", "raise-generation", "--to", "5000", "--json"]);
    assert_eq!(code(&raised), 0, "{}", stderr(&raised));
    assert_eq!(json(&raised)["generation"], 5000);
    let granted = on_etcd(root, &etcd, prefix, &acquire("api", "src/", "agent-a"));
    assert_eq!(json(&granted)["generation"], 5001, "{}", stdout(&granted));
    let on_journal = keel(root, &["--backend", "journal", "lease", "raise-generation", "--to", "9"], &[]);
    assert_eq!(code(&on_journal), 2, "a usage error on the journal: {}", stderr(&on_journal));
}
