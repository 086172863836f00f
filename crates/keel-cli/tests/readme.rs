//! The README's examples run as written. Each `sh` and `console` block runs, command by command,
//! in one bash process (so a variable one command sets reaches the next) in a fresh workspace
//! with the built `keel` first on PATH; every `toml` block is checked as a policy; every inline
//! `keel ...` names a subcommand and flags that exist. A README change that breaks an example
//! fails here.
//!
//! How a block says what to expect:
//! - A command exits 0 unless a comment on it says `[exit N]`.
//! - In a `sh` block, `#   TEXT` lines after a command are lines its output (stdout, then
//!   stderr) holds, in order; `...` stands for any text.
//! - In a `console` block, `$ ` starts a command and the lines up to the next one are its whole
//!   output, compared with every number read as any number and runs of blanks as one (ages and
//!   times differ from run to run, and so the columns they pad).
//!
//! What a block presumes (the files it edits, a policy it describes) is set up by [`SETUPS`]; the
//! few commands that cannot run here are listed, with why, in [`NOT_RUN`]. Both lists must match
//! the README exactly: an entry that matches nothing is an error too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files a block presumes: (path in the workspace, content).
type Files = &'static [(&'static str, &'static str)];

/// Commands that are not run, by their first words, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("cargo xtask ci", "it is the command that runs this test"),
    ("cargo install --path crates/keel-cli", "the built keel is put first on PATH instead"),
    ("cargo build --release -p keel-cli --features etcd", "this test binary's keel is that build"),
    ("claude", "an agent harness, interactive"),
    ("codex", "an agent harness, interactive"),
];

/// Commands run as another spelling of themselves: building and running keel is running keel.
const SPELLED: &[(&str, &str)] = &[("cargo run --release -p keel-cli -- ", "keel ")];

/// What a block presumes, by the first line of its first command: files to lay down, and shell
/// lines to run first (their failure fails the test).
const SETUPS: &[(&str, Files, &str)] = &[
    (
        "keel lease acquire --lane api --tree src/api/ --owner agent-a          # granted",
        &[
            ("src/api/handlers.rs", "fn handle() {}\n"),
            ("docs/index.md", "# docs\n"),
            ("Makefile", "docs:\n\t@echo docs built\n"),
        ],
        "",
    ),
    (
        "keel lease acquire --lane api --tree src/api/ --owner agent-a --json",
        &[("src/api/handlers.rs", "fn handle() {}\n"), ("new.rs", "fn handle() { todo!() }\n")],
        "",
    ),
    ("keel journal replay", &[], "keel lease acquire --lane api --tree src/api/ --owner agent-a >/dev/null"),
    (
        "keel lease live --json          # with a .keel/policy.toml whose line 3 holds an unknown key",
        &[(".keel/policy.toml", "grace_s = 300\n\nnope = 1\n")],
        "",
    ),
    (
        "keel completions bash",
        &[],
        "mkdir -p ~/.local/share/bash-completion/completions ~/.zfunc ~/.config/fish/completions",
    ),
    ("cargo build --release -p keel-cli --features etcd", &[], "mkdir -p .keel"),
];

/// One fenced block: its info string, the line its text starts on, its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

/// One command of a block, with what it should print and how it should exit.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    status: i32,
    /// `sh`: patterns, in order, among the output's lines. `console`: the whole output.
    output: Vec<String>,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block { info: info.trim().to_owned(), line: index + 2, text: String::new() });
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a code block is never closed");
    blocks
}

/// Where a shell line stands after it: inside a quote, and the heredoc it opened.
#[derive(Default)]
struct Scan {
    quote: Option<char>,
    heredoc: Option<String>,
    /// The line's comment, if it has one outside quotes.
    comment: String,
}

/// Scans `line` from quote state `quote` (enough shell for the README: quotes, comments and
/// heredoc openers, no nesting).
fn scan(line: &str, quote: Option<char>) -> Scan {
    let mut out = Scan { quote, ..Scan::default() };
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match out.quote {
            Some('"') if c == '\\' => i += 1,
            Some(q) if c == q => out.quote = None,
            None if c == '\'' || c == '"' => out.quote = Some(c),
            None if c == '#' && (i == 0 || chars[i - 1].is_whitespace()) => {
                out.comment = chars[i..].iter().collect();
                break;
            }
            None if c == '<' && chars.get(i + 1) == Some(&'<') => {
                let rest: String = chars[i + 2..].iter().collect();
                let word: String = rest
                    .trim_start_matches('-')
                    .trim_matches(|c| c == '\'' || c == '"' || c == ' ')
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !word.is_empty() {
                    out.heredoc = Some(word);
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The `[exit N]` a command's comments hold, else 0.
fn expected_status(comments: &str, line: usize) -> i32 {
    match comments.split("[exit ").nth(1) {
        Some(rest) => rest
            .split(']')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("README.md:{line}: `[exit N]` with no number: {comments}")),
        None => 0,
    }
}

/// A `sh` block's commands: each line that is not a comment starts one, which goes on while a
/// quote is open, a line ends in `\` or a heredoc is unfinished.
fn sh_steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let lines: Vec<&str> = block.text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(pattern) = line.strip_prefix("#   ") {
            let step =
                steps.last_mut().unwrap_or_else(|| panic!("README.md:{}: output before any command", block.line + i));
            step.output.push(pattern.trim_end().to_owned());
            i += 1;
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let (mut command, mut comments, mut quote) = (String::new(), String::new(), None);
        loop {
            let line = lines.get(i).unwrap_or_else(|| panic!("README.md:{}: a command never ends", block.line + start));
            command.push_str(line);
            command.push('\n');
            let scanned = scan(line, quote);
            comments.push_str(&scanned.comment);
            quote = scanned.quote;
            i += 1;
            if let Some(word) = scanned.heredoc {
                while let Some(body) = lines.get(i) {
                    command.push_str(body);
                    command.push('\n');
                    i += 1;
                    if body.trim() == word {
                        break;
                    }
                }
                break;
            }
            if quote.is_none() && !line.trim_end().ends_with('\\') {
                break;
            }
        }
        let status = expected_status(&comments, block.line + start);
        steps.push(Step { line: block.line + start, command, status, output: Vec::new() });
    }
    steps
}

/// A `console` block's commands (`$ ` lines) and their whole outputs.
fn console_steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, line) in block.text.lines().enumerate() {
        if let Some(command) = line.strip_prefix("$ ") {
            let comments = scan(command, None).comment;
            let status = expected_status(&comments, block.line + i);
            steps.push(Step { line: block.line + i, command: format!("{command}\n"), status, output: Vec::new() });
        } else {
            let step =
                steps.last_mut().unwrap_or_else(|| panic!("README.md:{}: output before any `$ `", block.line + i));
            step.output.push(line.to_owned());
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `...` stands for any text (anchored at both ends).
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return line == pattern;
    }
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// `text` with every number read as `N` and runs of blanks as one, trailing ones dropped.
fn normalized(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.trim_end().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('N');
        } else if c == ' ' {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// What running a block gave: per step, its status and output.
struct Ran {
    status: i32,
    output: String,
}

/// A fresh workspace, `<tmp>/fleet` (the directory the README's captures were taken in), a git
/// work tree with `files`, and a home of its own.
struct Workspace {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    bin: PathBuf,
}

impl Workspace {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("fleet");
        let (home, bin) = (dir.path().join("home"), dir.path().join("bin"));
        for path in [&root, &home, &bin] {
            std::fs::create_dir_all(path).expect("directory");
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keel"), bin.join("keel")).expect("keel on PATH");
        crate::support::git(&root, &["init", "-q"]);
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("directory");
            std::fs::write(&path, content).expect("file");
        }
        Workspace { _dir: dir, root, home, bin }
    }

    /// Runs `setup` and then `steps` in one bash, each command's output in files of its own.
    fn run(&self, setup: &str, steps: &[Step]) -> Vec<Ran> {
        let out = self.root.parent().expect("the temporary directory").join("out");
        std::fs::create_dir_all(&out).expect("directory");
        let mut script = String::from("set -u\n");
        if !setup.is_empty() {
            let _ = writeln!(script, "{{ {setup}\n}} || {{ echo 'setup failed' >&2; exit 99; }}");
        }
        for (i, step) in steps.iter().enumerate() {
            let o = out.display();
            let _ = writeln!(
                script,
                "{{\n{}}} >{o}/{i}.out 2>{o}/{i}.err </dev/null; echo $? >{o}/{i}.status",
                step.command
            );
        }
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut bash = Command::new("bash");
        bash.args(["--noprofile", "--norc", "-c", &script])
            .current_dir(&self.root)
            .env("PATH", path)
            .env("HOME", &self.home);
        for variable in [
            "KEEL_ROOT",
            "KEEL_JOURNAL",
            "KEEL_GRACE_S",
            "KEEL_BACKEND",
            "KEEL_ETCD_ENDPOINTS",
            "KEEL_ETCD_PREFIX",
            "KEEL_LOG",
        ] {
            bash.env_remove(variable);
        }
        let ran = bash.output().expect("bash runs");
        assert!(ran.status.success(), "setup or script failed: {}", String::from_utf8_lossy(&ran.stderr));
        let root = self.root.display().to_string();
        (0..steps.len())
            .map(|i| {
                let read = |ext: &str| std::fs::read_to_string(out.join(format!("{i}.{ext}"))).unwrap_or_default();
                let output = format!("{}{}", read("out"), read("err")).replace(&root, "/tmp/fleet");
                Ran { status: read("status").trim().parse().unwrap_or(-1), output }
            })
            .collect()
    }
}

/// Checks each step's status and output; returns what differs.
fn check(block: &Block, steps: &[Step], ran: &[Ran]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (step, ran) in steps.iter().zip(ran) {
        let first = step.command.lines().next().unwrap_or_default();
        if ran.status != step.status {
            wrong.push(format!(
                "README.md:{}: `{first}` exited {}, not {}:\n{}",
                step.line, ran.status, step.status, ran.output
            ));
            continue;
        }
        let lines: Vec<&str> = ran.output.lines().collect();
        if block.info == "console" {
            let (got, want): (Vec<String>, Vec<String>) =
                (lines.iter().map(|l| normalized(l)).collect(), step.output.iter().map(|l| normalized(l)).collect());
            if got != want {
                wrong.push(format!(
                    "README.md:{}: `{first}` printed\n{}\nnot\n{}",
                    step.line,
                    ran.output,
                    step.output.join("\n")
                ));
            }
            continue;
        }
        let mut at = 0;
        for pattern in &step.output {
            match lines[at..].iter().position(|line| matches(pattern, line)) {
                Some(found) => at += found + 1,
                None => wrong.push(format!(
                    "README.md:{}: `{first}` printed no line like\n  {pattern}\nbut\n{}",
                    step.line, ran.output
                )),
            }
        }
    }
    wrong
}

/// The README's runnable blocks, each with its steps after [`NOT_RUN`] and [`SPELLED`], and the
/// entries of those lists and of [`SETUPS`] that were used.
fn runnable(readme: &str, used: &mut BTreeMap<&'static str, usize>) -> Vec<(Block, Vec<Step>)> {
    let mut out = Vec::new();
    for block in blocks(readme) {
        let mut steps = match block.info.as_str() {
            "sh" => sh_steps(&block),
            "console" => console_steps(&block),
            _ => continue,
        };
        steps.retain(|step| {
            match NOT_RUN
                .iter()
                .find(|(prefix, _)| step.command.trim() == *prefix || step.command.starts_with(&format!("{prefix} ")))
            {
                Some((prefix, _)) => {
                    *used.entry(prefix).or_default() += 1;
                    false
                }
                None => true,
            }
        });
        for step in &mut steps {
            for (from, to) in SPELLED {
                if let Some(rest) = step.command.strip_prefix(from) {
                    *used.entry(from).or_default() += 1;
                    step.command = format!("{to}{rest}");
                }
            }
        }
        out.push((block, steps));
    }
    out
}

/// The setup of the block whose text starts with one of [`SETUPS`]' keys.
fn setup_of(
    block: &Block,
    used: &mut BTreeMap<&'static str, usize>,
) -> (&'static [(&'static str, &'static str)], &'static str) {
    let first = block.text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let first = first.strip_prefix("$ ").unwrap_or(first);
    match SETUPS.iter().find(|(key, _, _)| first.starts_with(key)) {
        Some((key, files, shell)) => {
            *used.entry(key).or_default() += 1;
            (files, shell)
        }
        None => (&[], ""),
    }
}

/// Whether a block needs an etcd cluster (it names the README's example endpoints).
fn needs_etcd(block: &Block) -> bool {
    block.text.contains("http://10.0.0.1:2379")
}

#[test]
fn every_readme_example_runs_as_written() {
    let readme = readme();
    let mut used = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut ran_steps = 0;
    for (block, steps) in runnable(&readme, &mut used) {
        let (files, setup) = setup_of(&block, &mut used);
        if needs_etcd(&block) {
            continue; // `the_readme_etcd_example_runs_against_a_real_cluster` runs it.
        }
        let workspace = Workspace::new(files);
        let ran = workspace.run(setup, &steps);
        ran_steps += steps.len();
        wrong.extend(check(&block, &steps, &ran));
    }
    let stale: Vec<&str> = NOT_RUN
        .iter()
        .map(|(prefix, _)| *prefix)
        .chain(SPELLED.iter().map(|(from, _)| *from))
        .chain(SETUPS.iter().map(|(key, _, _)| *key))
        .filter(|key| !used.contains_key(key))
        .collect();
    assert!(stale.is_empty(), "entries that match nothing in README.md: {stale:?}");
    assert!(ran_steps > 40, "only {ran_steps} commands ran: is the README's shape still understood?");
    assert!(wrong.is_empty(), "{} README examples do not run as written:\n\n{}", wrong.len(), wrong.join("\n\n"));
}

/// The etcd section against a real 3-member cluster: its endpoints stand in for the README's.
#[cfg(feature = "etcd")]
#[test]
fn the_readme_etcd_example_runs_against_a_real_cluster() {
    let readme = readme();
    let mut used = BTreeMap::new();
    let blocks: Vec<_> = runnable(&readme, &mut used).into_iter().filter(|(block, _)| needs_etcd(block)).collect();
    assert_eq!(blocks.len(), 1, "one README block names the example endpoints");
    let cluster = keel_tests::etcd_cluster::Cluster::start(3);
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    let example = "\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"";
    let mut wrong = Vec::new();
    for (block, mut steps) in blocks {
        let (files, setup) = setup_of(&block, &mut used);
        for step in &mut steps {
            step.command = step.command.replace(example, &endpoints.join(", "));
        }
        let workspace = Workspace::new(files);
        wrong.extend(check(&block, &steps, &workspace.run(setup, &steps)));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn every_keel_command_the_readme_names_in_its_text_exists_with_the_flags_it_names() {
    let readme = readme();
    let mut prose = String::new();
    let mut in_block = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    // Inline code may wrap across lines in the Markdown source.
    let spans: Vec<String> =
        prose.split('`').skip(1).step_by(2).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    let dir = tempfile::tempdir().expect("workspace");
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for span in spans.iter().filter(|s| s.starts_with("keel ")) {
        let words: Vec<&str> = span.split(' ').skip(1).collect();
        let is_name =
            |w: &&&str| w.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '|') && !w.starts_with('-');
        let path: Vec<&str> = words.iter().take_while(is_name).copied().collect();
        // `keel config set|patch ...` names two commands: check each.
        let alternatives = path.last().map_or(1, |last| last.split('|').count());
        for alternative in 0..alternatives {
            let path: Vec<&str> = path.iter().map(|w| w.split('|').nth(alternative).unwrap_or(w)).collect();
            check_inline(span, &path, &words, dir.path(), &mut helps, &mut wrong);
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} inline keel commands found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Checks that `keel PATH --help` works and lists each flag among `words`.
fn check_inline(
    span: &str,
    path: &[&str],
    words: &[&str],
    dir: &Path,
    helps: &mut BTreeMap<String, String>,
    wrong: &mut Vec<String>,
) {
    {
        let key = path.join(" ");
        let help = helps.entry(key.clone()).or_insert_with(|| {
            let mut args = path.to_vec();
            args.push("--help");
            let out = crate::support::run(dir, &args, &[], "");
            if out.status.success() { crate::support::stdout(&out) } else { String::new() }
        });
        if help.is_empty() {
            wrong.push(format!("`{span}`: `keel {key} --help` fails"));
            return;
        }
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split(['=', ',', ')']).next().unwrap_or(flag);
            if !help.contains(&format!("{flag} "))
                && !help.contains(&format!("{flag}\n"))
                && !help.contains(&format!("{flag}="))
            {
                wrong.push(format!("`{span}`: `keel {key}` has no {flag}"));
            }
        }
    }
}

#[test]
fn every_policy_the_readme_shows_is_one_keel_accepts() {
    let readme = readme();
    let policies: Vec<Block> = blocks(&readme).into_iter().filter(|b| b.info == "toml").collect();
    assert!(!policies.is_empty(), "the README shows a policy");
    for block in policies {
        let dir = tempfile::tempdir().expect("workspace");
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, &block.text).expect("policy");
        let out = crate::support::run(dir.path(), &["policy", "check", &file.display().to_string()], &[], "");
        assert!(out.status.success(), "README.md:{}: {}", block.line, crate::support::stderr(&out));
    }
}

#[test]
fn the_readme_harness_reads_commands_quotes_heredocs_and_patterns_as_bash_would() {
    let block = Block {
        info: "sh".into(),
        line: 1,
        text: "echo 'a\n  b' \\\n  | tr -d x   # one [exit 0]\n#   a...\ncat > f <<'T'  # heredoc [exit 3]\nx # not a comment\nT\n# prose\nfalse # [exit 1]\n".into(),
    };
    let steps = sh_steps(&block);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0].command, "echo 'a\n  b' \\\n  | tr -d x   # one [exit 0]\n");
    assert_eq!(steps[0].output, ["a..."]);
    assert_eq!((steps[1].status, steps[1].command.lines().count()), (3, 3));
    assert_eq!((steps[2].line, steps[2].status), (9, 1));
    assert!(matches(
        "refused: ... (... holder \"a\", ...)",
        "refused: x y (kind k, holder \"a\", exclusive); the end)"
    ));
    assert!(!matches("wrote ... (24 bytes, ...)", "wrote f (12 bytes, abc)"));
    assert!(matches("a...", "a"));
    assert_eq!(normalized("4s ago     12 live  "), "Ns ago N live");
}
