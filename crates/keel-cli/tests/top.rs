//! `keel top` in a real terminal: tmux runs it in a pane, a lease is taken beside it, and the pane
//! (read with `capture-pane`) must show the new holder; `q` must end it and give the terminal back.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{code, run, stderr, stdout};

/// How long the pane may take to show what is awaited (a loaded CI machine is slow).
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause between two looks at the pane.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Self {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.as_ref().is_ok_and(|out| out.status.success()),
            "tmux is needed by the end-to-end test of `keel top` (install it: `apt-get install tmux`): {found:?}"
        );
        Self { socket: dir.join("tmux.sock") }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("tmux runs");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Looks at the pane until `done` holds, for at most [`WAIT_MAX`].
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let pane = self.pane();
            if done(&pane) {
                return pane;
            }
            assert!(started.elapsed() < WAIT_MAX, "the pane never showed {what} in {WAIT_MAX:?}:\n{pane}");
            std::thread::sleep(LOOK_EVERY);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}

fn acquire(root: &Path, owner: &str, lane: &str, tree: &str) {
    let root_text = root.to_str().expect("a UTF-8 temp path");
    let out = run(
        root,
        &["--root", root_text, "lease", "acquire", "--owner", owner, "--lane", lane, "--tree", tree],
        &[],
        "",
    );
    assert_eq!(code(&out), 0, "acquire: {} {}", stdout(&out), stderr(&out));
}

#[test]
fn a_lease_acquired_while_top_runs_appears_in_its_pane_and_q_ends_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("workspace");
    std::fs::create_dir(&root).expect("mkdir");
    // The journal's directory exists, so top follows it by file events rather than polling.
    acquire(&root, "agent-first", "api", "src/api/");
    let tmux = Tmux::new(dir.path());
    let keel = env!("CARGO_BIN_EXE_keel");
    let script = format!(
        "env -u KEEL_ROOT -u KEEL_JOURNAL -u KEEL_BACKEND -u KEEL_GRACE_S '{keel}' --root '{}' top --interval-ms 200; \
         echo \"top exited with $?\"; sleep 60",
        root.display()
    );
    tmux.run(&["new-session", "-d", "-x", "120", "-y", "30", "-s", "top", &script]);
    tmux.wait_for("the first holder", |pane| pane.contains("agent-first"));
    acquire(&root, "agent-second", "docs", "docs/");
    let pane = tmux.wait_for("the holder acquired while it ran", |pane| pane.contains("agent-second"));
    assert!(pane.contains("live leases (2)"), "{pane}");
    assert!(pane.contains("following the journal by file events"), "{pane}");
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let pane = tmux.wait_for("top's exit", |pane| pane.contains("top exited with"));
    assert!(pane.contains("top exited with 0"), "{pane}");
    // The alternate screen is left: the view is gone from the pane.
    assert!(!pane.contains("live leases ("), "{pane}");
    // Looking wrote nothing: the journal holds the two grants, and keel's directory nothing new.
    let mut names: Vec<String> = std::fs::read_dir(root.join(".keel"))
        .expect("read .keel")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["lane-journal.jsonl", "lane-journal.jsonl.lock"]);
}

#[test]
fn top_prints_one_frame_when_stdout_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    acquire(dir.path(), "agent-a", "api", "src/api/");
    let root = dir.path().to_str().expect("a UTF-8 temp path");
    let out = run(dir.path(), &["--root", root, "top"], &[], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("keel top  "), "{text}");
    assert!(text.contains("│agent-a ") && text.contains(" alive "), "{text}");
    assert!(text.contains("one frame"), "{text}");
}
