//! Tidy: structural rules of the codebase, checked as a test (rust-analyzer style).
//!
//! - The kernel is pure: its sources name no file system, clock, process, thread, network,
//!   environment or terminal API, and it depends only on an allowed list of pure crates.
//! - Every source file opens with a `//!` comment saying what it is for.
//! - Every library crate forbids `unsafe` code.
//! - No test is hidden (`#[ignore]`) or passes by panicking (`#[should_panic]`).
//! - No bare `.unwrap()` outside tests: a panic that is a bug says why with `expect`.
//! - The journal service writes no JSON literal: every record comes from the kernel's typed
//!   builders (`keel_kernel::record::Writer`).
//! - The CLI names only an allowed list of kernel items: it parses, calls and prints, and the
//!   decisions stay below it.
//! - Only keel-fs names `std::fs` or `rustix::fs`: file-system I/O elsewhere goes through its
//!   functions, whose errors name the operation and the path and whose reads have a limit.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && name != "data" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources(under: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join(under), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("source is UTF-8");
            (p, text)
        })
        .collect()
}

/// The code that ships in the source file at `path`: nothing for a unit-test module kept in a file
/// of its own (`src/**/tests.rs`, declared `#[cfg(test)] mod tests;`), else [`shipped`].
fn shipped_in<'a>(path: &Path, text: &'a str) -> &'a str {
    let in_src = path.components().any(|c| c.as_os_str() == "src");
    if in_src && path.file_name().is_some_and(|name| name == "tests.rs") { "" } else { shipped(text) }
}

/// The part of a source file before its `#[cfg(test)]` module: the code that ships.
fn shipped(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Lines that are code, not comments (doc examples may mention anything).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, l)| {
        let t = l.trim_start();
        !(t.starts_with("//") || t.starts_with('*'))
    })
}

const KERNEL_FORBIDDEN: [&str; 18] = [
    "std::fs",
    "fs::",
    "File::",
    "SystemTime::now",
    "Instant",
    "std::thread",
    "thread::spawn",
    "std::process",
    "std::net",
    "std::env",
    "env::var",
    "stdin()",
    "stdout()",
    "stderr()",
    "println!",
    "unsafe {",
    "unsafe fn",
    "unsafe impl",
];

const KERNEL_DEPENDENCIES_ALLOWED: [&str; 9] =
    ["serde", "serde_json", "thiserror", "caseless", "memchr", "humantime", "blake3", "rustc-hash", "hashbrown"];

#[test]
fn kernel_sources_do_no_io_read_no_clock_and_spawn_nothing() {
    let mut violations = Vec::new();
    for (path, text) in sources("crates/keel-kernel/src") {
        for (number, line) in code_lines(shipped_in(&path, &text)) {
            for needle in KERNEL_FORBIDDEN {
                if line.contains(needle) {
                    violations.push(format!("{}:{}: uses `{needle}`: {}", path.display(), number + 1, line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "the kernel must stay pure:\n{}", violations.join("\n"));
}

#[test]
fn kernel_depends_only_on_pure_crates() {
    let manifest = fs::read_to_string(root().join("crates/keel-kernel/Cargo.toml")).expect("kernel manifest");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("kernel has a [dependencies] table")
        .split("\n[")
        .next()
        .expect("split yields at least one piece");
    for line in dependencies.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name = line.split(['=', ' ']).next().expect("dependency line has a name");
        assert!(
            KERNEL_DEPENDENCIES_ALLOWED.contains(&name),
            "keel-kernel may not depend on `{name}`: it must stay pure and vendorable (allowed: {KERNEL_DEPENDENCIES_ALLOWED:?})"
        );
    }
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    for under in ["crates", "xtask/src", "tests/src", "tests/tests"] {
        for (path, text) in sources(under) {
            if !text.trim_start().starts_with("//!") {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "these files need a `//!` header saying what they are for:\n{}", missing.join("\n"));
}

#[test]
fn every_library_crate_forbids_unsafe_code() {
    let crates = fs::read_dir(root().join("crates")).expect("crates directory");
    for entry in crates {
        let lib = entry.expect("entry").path().join("src/lib.rs");
        if let Ok(text) = fs::read_to_string(&lib) {
            assert!(text.contains("#![forbid(unsafe_code)]"), "{} must `#![forbid(unsafe_code)]`", lib.display());
        }
    }
}

#[test]
fn no_test_is_ignored_or_passes_by_panicking() {
    let mut found = Vec::new();
    for under in ["crates", "xtask/src", "tests"] {
        for (path, text) in sources(under) {
            if path.ends_with("tidy.rs") {
                continue;
            }
            for (number, line) in code_lines(&text) {
                if line.contains("#[ignore") || line.contains("#[should_panic") {
                    found.push(format!("{}:{}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "hidden or panic-expecting tests:\n{}", found.join("\n"));
}

#[test]
fn shipped_code_has_no_bare_unwrap() {
    let mut found = Vec::new();
    for (path, text) in sources("crates") {
        let in_src = path.components().any(|c| c.as_os_str() == "src");
        if !in_src {
            continue;
        }
        for (number, line) in code_lines(shipped_in(&path, &text)) {
            if line.contains(".unwrap()") {
                found.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "use `expect(\"why\")` or handle the error:\n{}", found.join("\n"));
}

#[test]
fn the_journal_service_writes_no_json_literal() {
    let mut found = Vec::new();
    for (path, text) in sources("crates/keel-journal/src") {
        for (number, line) in code_lines(shipped_in(&path, &text)) {
            if line.contains("json!(") {
                found.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "build records with keel_kernel::record::Writer:\n{}", found.join("\n"));
}

/// The kernel items the CLI may name: printing in the journal's style, the types its output
/// shows, the arbiter `keel arbitrate` fronts, and the line and path checks of its own commands.
/// Anything else is a decision, and belongs in a library.
const CLI_KERNEL_ALLOWED: [&str; 19] = [
    "json::to_line",
    "Object",
    "Identity",
    "Replayed",
    "tree::misspelling",
    "tree::confined",
    "tree::TREE_ENTRIES_MAX",
    "tree::Tree",
    "line::LineClass",
    "line::LineDecoder",
    "line::oversized_sentinel",
    "line::line_text",
    "line::OVERSIZED_QUOTE_BYTES",
    "gate::Holder",
    "expiry::Verdict",
    "arbiter::Mode",
    "arbiter::Outcome",
    "arbiter::Request",
    "arbiter::Taxonomy",
];

/// The kernel types in `LeaseBackend`'s signatures beyond [`CLI_KERNEL_ALLOWED`]: the CLI's
/// `Backend` (journal or etcd) names them to implement the trait by delegation, deciding nothing.
const CLI_BACKEND_SIGNATURE_TYPES: [&str; 2] = ["arbiter::Decision", "LiveState"];

/// The kernel items a line names (`keel_kernel::a::{B, c}` names `a::B` and `a::c`).
fn kernel_items(line: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("keel_kernel::") {
        rest = &rest[at + "keel_kernel::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let after = &rest[path.len()..];
        if let (Some(group), true) = (after.strip_prefix('{'), path.ends_with("::")) {
            let inner = group.split('}').next().unwrap_or_default();
            items.extend(inner.split(',').map(|item| format!("{path}{}", item.trim())).filter(|i| !i.ends_with("::")));
        } else {
            items.push(path.trim_end_matches("::").to_owned());
        }
    }
    items
}

#[test]
fn the_cli_names_only_allowed_kernel_items() {
    let mut found = Vec::new();
    for (path, text) in sources("crates/keel-cli/src") {
        for (number, line) in code_lines(shipped_in(&path, &text)) {
            for item in kernel_items(line) {
                // `keel arbitrate` is the arbiter's own front end: the one place the CLI asks it.
                // The CLI's `Backend` passes the lease service trait's signature types through.
                let allowed = CLI_KERNEL_ALLOWED.iter().any(|ok| item == *ok || item.starts_with(&format!("{ok}::")))
                    || (item == "arbiter::decide" && path.ends_with("arbitrate.rs"))
                    || (CLI_BACKEND_SIGNATURE_TYPES.contains(&item.as_str())
                        && path.ends_with("keel-cli/src/backend.rs"));
                if !allowed {
                    found.push(format!("{}:{}: keel_kernel::{item}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "a decision in the CLI belongs in a library:\n{}", found.join("\n"));
}

/// The paths only keel-fs may name.
const FS_PATHS: [&str; 2] = ["std::fs", "rustix::fs"];

/// The sources outside keel-fs that may still name [`FS_PATHS`], each with why. The list only
/// shrinks: a file leaves it once its I/O goes through keel-fs.
const FS_OUTSIDE_KEEL_FS_ALLOWED: [(&str, &str); 1] = [
    // `/proc` is the process table, not a file keel keeps: nothing to make durable or bound.
    ("crates/keel-journal/src/process.rs", "reads /proc"),
];

/// Whether `line` spells `path` as a whole path (`std::fs::File`, not `xstd::fs` or `std::fsx`).
fn names_path(line: &str, path: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(path).any(|(at, _)| !line[..at].ends_with(ident) && !line[at + path.len()..].starts_with(ident))
}

/// Every path a `use` statement imports: `use std::{io, fs::File as F};` names `std::io` and
/// `std::fs::File`.
fn use_paths(statement: &str) -> Vec<String> {
    let tree = statement.split_once("use ").map_or("", |(_, tree)| tree);
    let tree = tree.split(';').next().unwrap_or_default();
    let spaced = tree.replace('{', " { ").replace('}', " } ").replace(',', " , ");
    let mut tokens = Vec::new();
    let mut words = spaced.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            let _alias = words.next();
        } else {
            tokens.push(word);
        }
    }
    let mut paths = Vec::new();
    expand_use_tree("", &tokens.concat(), &mut paths);
    paths
}

/// Appends the paths of the `use` tree `tree` (no spaces), each prefixed with `prefix`.
fn expand_use_tree(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (at, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&tree[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items.into_iter().filter(|item| !item.is_empty()) {
        match item.split_once('{') {
            Some((head, group)) => {
                expand_use_tree(&format!("{prefix}{head}"), group.strip_suffix('}').unwrap_or(group), out);
            }
            None => out.push(format!("{prefix}{item}")),
        }
    }
}

/// Whether `code` starts a `use` statement (`use`, `pub use`, `pub(crate) use`, ...).
fn opens_use(code: &str) -> bool {
    let code = code.trim_start();
    let code = match code.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => rest.split_once(')').map_or("", |(_, rest)| rest),
        Some(rest) => rest,
        None => code,
    };
    code.trim_start().starts_with("use ")
}

/// The 1-based lines of a source's shipped code that name `std::fs` or `rustix::fs`: spelled
/// out, or imported through a group (`use std::{fs, io};`, reported at the line the `use`
/// starts on). Comments and the `#[cfg(test)]` part are not looked at.
fn fs_lines(text: &str) -> Vec<usize> {
    let names_fs = |path: &str| {
        let path = path.trim_start_matches("::");
        FS_PATHS.iter().any(|fs| path == *fs || path.starts_with(&format!("{fs}::")))
    };
    let mut found = BTreeSet::new();
    let mut statement: Option<(usize, String)> = None;
    for (number, line) in code_lines(shipped(text)) {
        if FS_PATHS.iter().any(|fs| names_path(line, fs)) {
            found.insert(number + 1);
        }
        // A `use` holds no string, so a `//` in it starts a comment.
        let code = line.split("//").next().unwrap_or_default();
        if statement.is_none() && opens_use(code) {
            statement = Some((number + 1, String::new()));
        }
        if let Some((start, body)) = &mut statement {
            body.push_str(code);
            body.push(' ');
            if code.contains(';') {
                if use_paths(body).iter().any(|path| names_fs(path)) {
                    found.insert(*start);
                }
                statement = None;
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn only_keel_fs_names_std_fs_or_rustix_fs() {
    let root = root();
    let mut found = Vec::new();
    for (path, text) in sources("crates") {
        let relative = path.strip_prefix(&root).expect("sources are beneath the root");
        let in_src = relative.components().nth(2).is_some_and(|c| c.as_os_str() == "src");
        let allowed = relative.starts_with("crates/keel-fs")
            || FS_OUTSIDE_KEEL_FS_ALLOWED.iter().any(|(allowed, _why)| relative.starts_with(allowed));
        if !in_src || allowed {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for number in fs_lines(shipped_in(&path, &text)) {
            found.push(format!("{}:{number}: {}", relative.display(), lines[number - 1].trim()));
        }
    }
    assert!(
        found.is_empty(),
        "file-system I/O goes through keel-fs (a function there names the operation and the path in its \
         errors and puts a limit on what it reads):\n{}",
        found.join("\n")
    );
}

#[test]
fn tidy_catches_what_it_claims_to() {
    // The checks above must be able to fail: run their matchers on known-bad text.
    let bad = "use std::fs::File;\nfn f() { let t = std::time::SystemTime::now(); }\n";
    let hits = code_lines(bad).filter(|(_, l)| KERNEL_FORBIDDEN.iter().any(|n| l.contains(n))).count();
    assert_eq!(hits, 2);
    assert_eq!(shipped("a\n#[cfg(test)]\nb.unwrap()"), "a\n");
    assert_eq!(code_lines("// std::fs\n  /// File::open\n").count(), 0);
    assert_eq!(
        kernel_items("use keel_kernel::arbiter::{Mode, decide}; keel_kernel::json::to_line(&x)"),
        ["arbiter::Mode", "arbiter::decide", "json::to_line"]
    );
    assert!(!CLI_KERNEL_ALLOWED.contains(&"admission::admit"), "a decision is never on the list");
    let fs_bad = "use std::{\n    io,\n    fs::File, // why\n};\nuse rustix::{fs, io};\npub(crate) use std::fs as f;\n\
                  fn f() { ::std::fs::read(p) }\n// std::fs::read\nuse std::os::unix::fs::PermissionsExt;\n\
                  use keel_fs::fs;\nlet x = mystd::fs::a();\n#[cfg(test)]\nuse std::fs;\n";
    assert_eq!(fs_lines(fs_bad), [1, 5, 6, 7]);
    assert_eq!(use_paths("use std::{io::{self, Read as R}, fs};"), ["std::io::self", "std::io::Read", "std::fs"]);
}
