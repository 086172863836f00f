//! What helps people use keel beyond its commands: shell completions (`keel completions`), the
//! man pages `cargo xtask dist` installs (`keel man`), and diagnostics on stderr with `KEEL_LOG`,
//! which never change what a command prints on stdout.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::{code, run, stderr, stdout};

/// Subcommands every completion script must offer (a group, a leaf group, a late addition).
const SUBCOMMANDS: [&str; 6] = ["lease", "journal", "hook", "acquire", "store", "completions"];

#[test]
fn completions_for_every_shell_are_printed_and_name_the_subcommands() {
    let dir = tempfile::tempdir().expect("temp dir");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let output = run(dir.path(), &["completions", shell], &[], "");
        assert_eq!(code(&output), 0, "{shell}: {}", stderr(&output));
        assert!(output.stderr.is_empty(), "{shell}: stderr {}", stderr(&output));
        let script = stdout(&output);
        for subcommand in SUBCOMMANDS {
            assert!(script.contains(subcommand), "{shell}'s script does not mention {subcommand}");
        }
    }
}

#[test]
fn bash_accepts_the_bash_completion_script() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = run(dir.path(), &["completions", "bash"], &[], "").stdout;
    assert!(script.len() > 1000, "a bash script of {} bytes", script.len());
    let mut bash =
        Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("bash is installed");
    bash.stdin.take().expect("stdin is piped").write_all(&script).expect("script written to bash");
    let checked = bash.wait_with_output().expect("bash -n runs");
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    // And the script registers its completion function when sourced.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg("source /dev/stdin && complete -p keel")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash is installed");
    let mut sourced = sourced;
    sourced.stdin.take().expect("stdin is piped").write_all(&script).expect("script written to bash");
    let sourced = sourced.wait_with_output().expect("bash runs");
    assert!(sourced.status.success(), "sourcing: {}", String::from_utf8_lossy(&sourced.stderr));
    assert!(String::from_utf8_lossy(&sourced.stdout).contains("keel"), "complete -p keel names no function");
}

#[test]
fn keel_man_writes_a_page_per_subcommand_into_the_directory_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man");
    let output = run(dir.path(), &["man", "--out-dir", out.to_str().expect("a UTF-8 path")], &[], "");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let listed = stdout(&output);
    for page in ["keel.1", "keel-lease.1", "keel-lease-acquire.1", "keel-store-worker-add.1", "keel-completions.1"] {
        let path = out.join(page);
        assert!(path.is_file(), "{page} missing; keel man printed {listed}");
        assert!(listed.contains(&path.display().to_string()), "{page} not listed: {listed}");
    }
    // `help` is documented as --help on every page; the hidden `man` itself is not a page.
    assert!(!out.join("keel-help.1").exists() && !out.join("keel-man.1").exists());
}

/// `KEEL_LOG=debug` on a command that reads the journal: stderr has its debug lines, stdout is
/// byte for byte what it is without them.
#[test]
fn keel_log_debug_writes_to_stderr_and_leaves_stdout_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("a UTF-8 path");
    let acquired = run(
        dir.path(),
        &["--root", root, "lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "a"],
        &[],
        "",
    );
    assert_eq!(code(&acquired), 0, "{}", stderr(&acquired));
    for args in [
        &["--root", root, "journal", "replay"][..],
        &["--root", root, "lease", "acquire", "--lane", "db", "--tree", "src/", "--owner", "b"][..],
    ] {
        let quiet = run(dir.path(), args, &[], "");
        let logged = run(dir.path(), args, &[("KEEL_LOG", "debug")], "");
        assert_eq!(code(&quiet), code(&logged), "{args:?}");
        assert_eq!(quiet.stdout, logged.stdout, "{args:?}: KEEL_LOG changed stdout");
        let log = stderr(&logged);
        assert!(log.contains("DEBUG"), "{args:?}: no debug line on stderr: {log}");
        assert!(log.contains("workspace located") && log.contains("found_by=Named"), "{log}");
        assert!(log.contains("lease service chosen"), "{log}");
        assert!(log.contains(&format!("keel exits status={}", code(&logged))), "{log}");
        // The refusal's sentence is still there, after the log lines that do not replace it.
        assert_eq!(stderr(&quiet).lines().count(), log.lines().filter(|line| !line.contains("DEBUG")).count(), "{log}");
    }
}

#[test]
fn without_keel_log_stderr_has_no_log_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("a UTF-8 path");
    let live = run(dir.path(), &["--root", root, "lease", "live", "--json"], &[], "");
    assert_eq!(code(&live), 0, "{}", stderr(&live));
    assert!(live.stderr.is_empty(), "stderr: {}", stderr(&live));
    // A refusal says why on stderr, in one `keel:` line and no log line.
    run(dir.path(), &["--root", root, "lease", "acquire", "--lane", "api", "--tree", "src/", "--owner", "a"], &[], "");
    let refused = run(
        dir.path(),
        &["--root", root, "lease", "acquire", "--lane", "db", "--tree", "src/", "--owner", "b"],
        &[],
        "",
    );
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    for line in stderr(&refused).lines() {
        assert!(
            !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].iter().any(|level| line.contains(level)),
            "a log line: {line}"
        );
    }
    // An empty KEEL_LOG is no filter at all.
    let empty = run(dir.path(), &["--root", root, "lease", "live", "--json"], &[("KEEL_LOG", "")], "");
    assert!(empty.stderr.is_empty(), "stderr: {}", stderr(&empty));
}
