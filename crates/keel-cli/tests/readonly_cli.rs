//! Commands that only look must work where nothing can be written: a read-only mount (a CI
//! artifact, a snapshot) or a workspace the user may read but not write. Writes there fail with
//! an I/O error (exit 4) that names the file, and change nothing.
//!
//! As root, permission bits stop nobody, so the workspace is bind-mounted read-only in a private
//! mount namespace (`unshare`) for the commands; otherwise it is made read-only with `chmod`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn keel(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(root)
        .env_remove("KEEL_ROOT")
        .env_remove("KEEL_JOURNAL")
        .output()
        .expect("keel runs")
}

/// Runs each of `commands` with `root` read-only; returns their outputs.
fn read_only(root: &Path, commands: &[&[&str]]) -> Vec<Output> {
    if rustix::process::geteuid().is_root() {
        // The outputs cannot be written inside the read-only tree: they go to a writable dir.
        let results = tempfile::tempdir().expect("temporary directory");
        let (root_text, out) = (root.display(), results.path().display());
        // `cd` again after mounting: the shell's working directory is still the tree under the mount.
        let mut script = format!(
            "mount --bind '{root_text}' '{root_text}' && mount -o remount,bind,ro '{root_text}' && cd '{root_text}' || exit 1\n"
        );
        for (i, args) in commands.iter().enumerate() {
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            let keel = env!("CARGO_BIN_EXE_keel");
            let _ = writeln!(
                script,
                "'{keel}' {} >'{out}/out.{i}' 2>'{out}/err.{i}'; echo $? >'{out}/code.{i}'",
                quoted.join(" ")
            );
        }
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("KEEL_ROOT")
            .env_remove("KEEL_JOURNAL")
            .status()
            .expect("unshare runs");
        assert!(status.success(), "could not mount the workspace read-only (root without CAP_SYS_ADMIN?)");
        (0..commands.len())
            .map(|i| {
                let read = |name: &str| std::fs::read(results.path().join(format!("{name}.{i}"))).expect("result");
                let code: i32 = String::from_utf8_lossy(&read("code")).trim().parse().expect("exit code");
                let status = std::os::unix::process::ExitStatusExt::from_raw(code << 8);
                Output { status, stdout: read("out"), stderr: read("err") }
            })
            .collect()
    } else {
        set_writable(root, false);
        let outputs = commands.iter().map(|args| keel(root, args)).collect();
        set_writable(root, true);
        outputs
    }
}

fn set_writable(dir: &Path, writable: bool) {
    for entry in walk(dir) {
        let mode = std::fs::metadata(&entry).expect("metadata").permissions().mode();
        let mode = if writable { mode | 0o200 } else { mode & !0o222 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() { all.extend(walk(&path)) } else { all.push(path) }
    }
    all
}

fn listing(root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    walk(root)
        .into_iter()
        .map(|p| {
            let bytes = if p.is_file() { std::fs::read(&p).expect("read") } else { Vec::new() };
            (p, bytes)
        })
        .collect()
}

#[test]
fn looking_works_on_a_read_only_workspace_and_writing_fails_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    let acquired = keel(root, &["lease", "acquire", "--lane", "api", "--owner", "agent-a", "--tree", "src/api/"]);
    assert_eq!(acquired.status.code(), Some(0), "{}", String::from_utf8_lossy(&acquired.stderr));
    let before = listing(root);

    let outputs = read_only(
        root,
        &[
            &["lease", "live", "--json"],
            &["journal", "stats", "--json"],
            &["journal", "review"],
            &["journal", "replay"],
            &["journal", "verify"],
            &["lease", "acquire", "--lane", "ui", "--owner", "agent-b", "--tree", "src/ui/"],
        ],
    );
    for (output, name) in
        outputs.iter().zip(["lease live", "journal stats", "journal review", "journal replay", "journal verify"])
    {
        assert_eq!(output.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let live = String::from_utf8_lossy(&outputs[0].stdout);
    assert!(live.contains("agent-a") && live.contains("src/api/"), "{live}");
    let stats: serde_json::Value = serde_json::from_slice(&outputs[1].stdout).expect("stats JSON");
    assert_eq!((stats["records"].as_u64(), stats["live_leases"].as_u64()), (Some(1), Some(1)), "{stats}");

    let refused = &outputs[5];
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("lane-journal.jsonl"), "the error names the file: {stderr}");
    assert_eq!(listing(root), before, "nothing in the workspace changed");
}
