//! The files a shell command writes, read from its syntax tree (brush's bash parser) without
//! running it.
//!
//! A command is taken apart into simple commands, each with its literal words, redirections and
//! working directory (`cd DIR && ...` is followed). What a simple command writes comes from what
//! it is: redirections (`>`, `>>`, `&>`, `<>`), `tee`, `sed -i`, `perl -i`, `rm`, `mv`, `cp`,
//! `touch`, `mkdir`, `git checkout -- PATH` and the like. Known read-only commands write nothing.
//! Anything keel cannot be sure of (another program, a computed word or directory, a glob, a
//! `git` subcommand that rewrites the work tree) makes the footprint unknown, with the reason:
//! keel never guesses that a command is harmless.

use std::path::{Path, PathBuf};

use brush_parser::ParserOptions;
use brush_parser::ast::{
    Command, CommandPrefixOrSuffixItem, CompoundCommand, CompoundList, IoFileRedirectKind, IoFileRedirectTarget,
    IoRedirect, Pipeline, SimpleCommand, Word,
};
use brush_parser::word::WordPiece;

/// The longest command analysed; a longer one has an unknown footprint.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;
/// The deepest nesting of brackets and substitutions analysed (the parser recurses on each).
pub const NESTING_MAX: usize = 32;

/// What a shell command writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The files it writes (absolute, or joined to the directory it runs in).
    pub writes: Vec<PathBuf>,
    /// Why it may write more than `writes`, if it may.
    pub unknown: Option<String>,
}

/// Commands that write no file themselves (their redirections are read separately).
const READ_ONLY: &[&str] = &[
    "[",
    "ag",
    "b2sum",
    "basename",
    "cal",
    "cat",
    "cksum",
    "cmp",
    "column",
    "comm",
    "cut",
    "date",
    "df",
    "diff",
    "dirname",
    "du",
    "echo",
    "egrep",
    "expr",
    "false",
    "fd",
    "fgrep",
    "file",
    "fold",
    "free",
    "grep",
    "head",
    "hexdump",
    "hostname",
    "id",
    "jq",
    "less",
    "ls",
    "md5sum",
    "more",
    "nl",
    "nproc",
    "od",
    "paste",
    "pgrep",
    "printenv",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "realpath",
    "rev",
    "rg",
    "seq",
    "sha1sum",
    "sha256sum",
    "sha512sum",
    "sleep",
    "stat",
    "strings",
    "tac",
    "tail",
    "test",
    "tr",
    "tree",
    "true",
    "type",
    "uname",
    "uptime",
    "wc",
    "whereis",
    "which",
    "whoami",
    "xxd",
];
/// Commands that write each of their operands.
const WRITE_OPERANDS: &[&str] = &["mkdir", "rm", "rmdir", "shred", "tee", "touch", "truncate", "unlink"];
/// Commands that only change what follows them (their options, then a command).
const WRAPPERS: &[&str] = &["command", "env", "exec", "nice", "nohup", "time"];
/// `git` subcommands that write nothing in the work tree (`commit` is the pre-commit guard's).
const GIT_READ_ONLY: &[&str] = &[
    "add",
    "blame",
    "branch",
    "cat-file",
    "commit",
    "describe",
    "diff",
    "fetch",
    "grep",
    "log",
    "ls-files",
    "ls-tree",
    "merge-base",
    "reflog",
    "remote",
    "rev-list",
    "rev-parse",
    "shortlog",
    "show",
    "status",
    "tag",
];
/// Options that take a value in the next word, per command (so the value is no operand).
const VALUE_OPTIONS: &[(&str, &[&str])] = &[
    ("cp", &["-S", "-t", "--suffix", "--target-directory"]),
    ("mv", &["-S", "-t", "--suffix", "--target-directory"]),
    ("ln", &["-S", "-t", "--suffix", "--target-directory"]),
    ("mkdir", &["-m", "--mode"]),
    ("touch", &["-d", "-r", "-t", "--date", "--reference"]),
    ("truncate", &["-r", "-s", "--reference", "--size"]),
    ("sort", &["-k", "-o", "-S", "-t", "-T", "--output", "--key"]),
    ("shred", &["-n", "-s", "--iterations", "--size"]),
];

/// Reads what `command`, run in `cwd`, writes.
pub fn footprint(command: &str, cwd: &Path) -> Footprint {
    let mut walk = Walk { writes: Vec::new(), unknown: None, depth: 0 };
    walk.program(command, Some(cwd.to_owned()));
    Footprint { writes: walk.writes, unknown: walk.unknown }
}

struct Walk {
    writes: Vec<PathBuf>,
    unknown: Option<String>,
    depth: usize,
}

impl Walk {
    fn unknown(&mut self, why: impl Into<String>) {
        self.unknown.get_or_insert_with(|| why.into());
    }

    fn program(&mut self, text: &str, cwd: Option<PathBuf>) {
        if text.len() > COMMAND_BYTES_MAX || self.depth >= NESTING_MAX || nesting(text) > NESTING_MAX {
            return self.unknown("the command is too long or too deeply nested to read");
        }
        let parse = || {
            let options = ParserOptions::default();
            brush_parser::Parser::new(std::io::Cursor::new(text.as_bytes()), &options).parse_program()
        };
        // The parser is not ours: a panic in it is an unreadable command, never a crashed hook.
        let program = match std::panic::catch_unwind(parse) {
            Ok(Ok(program)) => program,
            Ok(Err(error)) => return self.unknown(format!("the command could not be parsed ({error})")),
            Err(_) => return self.unknown("the command could not be parsed"),
        };
        self.depth += 1;
        let mut cwd = cwd;
        for list in &program.complete_commands {
            self.list(list, &mut cwd);
        }
        self.depth -= 1;
    }

    fn list(&mut self, list: &CompoundList, cwd: &mut Option<PathBuf>) {
        for item in &list.0 {
            self.pipeline(&item.0.first, cwd);
            for next in &item.0.additional {
                let (brush_parser::ast::AndOr::And(pipeline) | brush_parser::ast::AndOr::Or(pipeline)) = next;
                self.pipeline(pipeline, cwd);
            }
        }
    }

    fn pipeline(&mut self, pipeline: &Pipeline, cwd: &mut Option<PathBuf>) {
        // The commands of a pipeline run in subshells: a `cd` in one moves no other.
        if pipeline.seq.len() > 1 {
            for command in &pipeline.seq {
                self.command(command, &mut cwd.clone());
            }
        } else if let Some(command) = pipeline.seq.first() {
            self.command(command, cwd);
        }
    }

    fn command(&mut self, command: &Command, cwd: &mut Option<PathBuf>) {
        match command {
            Command::Simple(simple) => self.simple(simple, cwd),
            Command::Compound(compound, redirects) => {
                for redirect in redirects.iter().flat_map(|list| &list.0) {
                    self.redirect(redirect, cwd.as_deref());
                }
                self.compound(compound, cwd);
            }
            // Defining a function runs nothing; calling it is an unknown command.
            Command::Function(_) => {}
            Command::ExtendedTest(_, redirects) => {
                for redirect in redirects.iter().flat_map(|list| &list.0) {
                    self.redirect(redirect, cwd.as_deref());
                }
            }
        }
    }

    fn compound(&mut self, compound: &CompoundCommand, cwd: &mut Option<PathBuf>) {
        match compound {
            CompoundCommand::BraceGroup(group) => self.list(&group.list, cwd),
            CompoundCommand::Subshell(subshell) => self.list(&subshell.list, &mut cwd.clone()),
            CompoundCommand::IfClause(clause) => {
                self.list(&clause.condition, cwd);
                self.list(&clause.then, cwd);
                for other in clause.elses.iter().flatten() {
                    if let Some(condition) = &other.condition {
                        self.list(condition, cwd);
                    }
                    self.list(&other.body, cwd);
                }
            }
            CompoundCommand::WhileClause(clause) | CompoundCommand::UntilClause(clause) => {
                self.list(&clause.0, cwd);
                self.list(&clause.1.list, cwd);
            }
            CompoundCommand::ForClause(clause) => {
                for word in clause.values.iter().flatten() {
                    self.word(word, cwd.as_deref());
                }
                self.list(&clause.body.list, cwd);
            }
            CompoundCommand::CaseClause(clause) => {
                for item in &clause.cases {
                    if let Some(list) = &item.cmd {
                        self.list(list, cwd);
                    }
                }
            }
            CompoundCommand::Arithmetic(_) | CompoundCommand::ArithmeticForClause(_) => {}
            CompoundCommand::Coprocess(_) => self.unknown("a coprocess"),
        }
    }

    fn simple(&mut self, simple: &SimpleCommand, cwd: &mut Option<PathBuf>) {
        let prefix = simple.prefix.iter().flat_map(|p| &p.0).map(|item| (item, true));
        let items = prefix.chain(simple.suffix.iter().flat_map(|s| &s.0).map(|item| (item, false)));
        let mut words: Vec<Option<String>> = simple.word_or_name.iter().map(|w| self.word(w, cwd.as_deref())).collect();
        for (item, in_prefix) in items {
            match item {
                CommandPrefixOrSuffixItem::IoRedirect(redirect) => self.redirect(redirect, cwd.as_deref()),
                CommandPrefixOrSuffixItem::Word(word) => words.push(self.word(word, cwd.as_deref())),
                // `A=1 cmd` sets a variable; after the name (`dd of=x`) it is an argument.
                CommandPrefixOrSuffixItem::AssignmentWord(_, word) => {
                    let text = self.word(word, cwd.as_deref());
                    if !in_prefix {
                        words.push(text);
                    }
                }
                CommandPrefixOrSuffixItem::ProcessSubstitution(_, subshell) => {
                    self.list(&subshell.list, &mut cwd.clone());
                }
            }
        }
        if words.is_empty() {
            return;
        }
        self.invocation(&words, cwd);
    }

    /// What a command with these words (`None`: computed) writes.
    fn invocation(&mut self, words: &[Option<String>], cwd: &mut Option<PathBuf>) {
        let Some(Some(program)) = words.first() else {
            return self.unknown("the command's name is computed");
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        let args = &words[1..];
        let literal = |what: &str| -> Result<Vec<&str>, String> {
            args.iter()
                .map(|a| a.as_deref().ok_or_else(|| format!("`{name}` {what} a computed or globbed word")))
                .collect()
        };
        if matches!(name, "cd" | "pushd") && args.iter().any(Option::is_none) {
            *cwd = None;
            return;
        }
        let args = match literal("is given") {
            Ok(args) => args,
            // Only a known reader may take computed words.
            Err(_) if READ_ONLY.contains(&name) => return,
            Err(why) => return self.unknown(why),
        };
        match name {
            "cd" | "pushd" => {
                *cwd = match args.iter().find(|a| !a.starts_with('-')) {
                    Some(dir) => cwd.as_ref().map(|c| c.join(dir)),
                    None => None,
                };
            }
            _ if READ_ONLY.contains(&name) => {}
            _ if WRAPPERS.contains(&name) => {
                // `env -i A=1 cmd`, `nice -n 5 cmd`, `command -v cmd`: the command is what follows.
                if name == "command" && args.first().is_some_and(|a| *a == "-v" || *a == "-V") {
                    return;
                }
                let start = if name == "nice" && args.first() == Some(&"-n") { 2.min(args.len()) } else { 0 };
                let rest = args[start..].iter().skip_while(|a| a.starts_with('-') || a.contains('='));
                let tail: Vec<Option<String>> = rest.map(|a| Some((*a).to_owned())).collect();
                if !tail.is_empty() {
                    self.invocation(&tail, cwd);
                }
            }
            "sh" | "bash" | "dash" | "zsh" => {
                // `bash -lc 'SCRIPT'`: the script is read as a command of its own.
                let script = args.iter().position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'));
                match script.and_then(|at| args.get(at + 1)) {
                    Some(script) => self.program(script, cwd.clone()),
                    None => self.unknown(format!("`{name}` runs a script")),
                }
            }
            "timeout" => {
                // `timeout [OPTION] DURATION COMMAND...`
                let mut at = 0;
                while let Some(option) = args.get(at).filter(|a| a.starts_with('-')) {
                    at += if matches!(*option, "-s" | "-k" | "--signal" | "--kill-after") { 2 } else { 1 };
                }
                let tail: Vec<Option<String>> = args.iter().skip(at + 1).map(|a| Some((*a).to_owned())).collect();
                if !tail.is_empty() {
                    self.invocation(&tail, cwd);
                }
            }
            _ if WRITE_OPERANDS.contains(&name) => {
                for operand in operands(name, &args) {
                    self.write(operand, cwd.as_deref());
                }
            }
            "mv" => {
                for operand in operands(name, &args).into_iter().chain(target_directory(&args)) {
                    self.write(operand, cwd.as_deref());
                }
            }
            "cp" | "ln" | "install" => {
                let target = target_directory(&args).or_else(|| operands(name, &args).last().copied());
                if let Some(target) = target {
                    self.write(target, cwd.as_deref());
                }
            }
            "chmod" | "chown" | "chgrp" => {
                for operand in operands(name, &args).into_iter().skip(1) {
                    self.write(operand, cwd.as_deref());
                }
            }
            "sort" => {
                if let Some(output) = option_value(&args, "-o", "--output") {
                    self.write(output, cwd.as_deref());
                }
            }
            "sed" | "perl" => match in_place_files(name, &args) {
                Some(files) => files.into_iter().for_each(|f| self.write(f, cwd.as_deref())),
                None if name == "sed" => {}
                None => self.unknown("`perl` runs a program"),
            },
            "dd" => {
                for output in args.iter().filter_map(|a| a.strip_prefix("of=")) {
                    self.write(output, cwd.as_deref());
                }
            }
            "find" => {
                if args.iter().any(|a| matches!(*a, "-delete" | "-exec" | "-execdir" | "-ok" | "-okdir" | "-fprint")) {
                    self.unknown("`find` deletes or runs commands on what it finds");
                }
            }
            "git" => self.git(&args, cwd.as_deref()),
            _ => self.unknown(format!("`{name}` may write any file")),
        }
    }

    fn git(&mut self, args: &[&str], cwd: Option<&Path>) {
        // Global options first: `-C DIR` moves the directory paths are read from.
        let mut cwd = cwd.map(Path::to_owned);
        let mut rest = args;
        while let Some((first, tail)) = rest.split_first() {
            match *first {
                "-C" => {
                    cwd = tail.first().and_then(|dir| cwd.as_ref().map(|c| c.join(dir)));
                    rest = tail.get(1..).unwrap_or_default();
                }
                "-c" => rest = tail.get(1..).unwrap_or_default(),
                option if option.starts_with('-') => rest = tail,
                _ => break,
            }
        }
        let Some((sub, sub_args)) = rest.split_first() else { return };
        let after_dash_dash = || sub_args.iter().skip_while(|a| **a != "--").skip(1).copied().collect::<Vec<_>>();
        let paths: Vec<&str> = match *sub {
            _ if GIT_READ_ONLY.contains(sub) => return,
            "stash" if sub_args.first().is_some_and(|a| matches!(*a, "list" | "show")) => return,
            "worktree" if sub_args.first() == Some(&"list") => return,
            // `git checkout [REF] -- PATH...` writes those paths; without `--` it may switch branches.
            "checkout" if sub_args.contains(&"--") => after_dash_dash(),
            "restore" | "rm" | "mv" => {
                if *sub == "restore" && sub_args.contains(&"--staged") && !sub_args.contains(&"--worktree") {
                    return;
                }
                let dashed = after_dash_dash();
                if dashed.is_empty() {
                    sub_args.iter().filter(|a| !a.starts_with('-')).copied().collect()
                } else {
                    dashed
                }
            }
            _ => return self.unknown(format!("`git {sub}` may rewrite any file in the work tree")),
        };
        for path in paths {
            self.write(path, cwd.as_deref());
        }
    }

    fn redirect(&mut self, redirect: &IoRedirect, cwd: Option<&Path>) {
        let target = match redirect {
            IoRedirect::File(_, kind, target) => {
                let writes = matches!(
                    kind,
                    IoFileRedirectKind::Write
                        | IoFileRedirectKind::Append
                        | IoFileRedirectKind::Clobber
                        | IoFileRedirectKind::ReadAndWrite
                        | IoFileRedirectKind::DuplicateOutput
                );
                match target {
                    IoFileRedirectTarget::Filename(word) if writes => word,
                    // `>&2` and `>&-` name descriptors; `>&FILE` is a file.
                    IoFileRedirectTarget::Duplicate(word) if writes => {
                        if word.value == "-" || word.value.bytes().all(|b| b.is_ascii_digit()) {
                            return;
                        }
                        word
                    }
                    IoFileRedirectTarget::ProcessSubstitution(_, subshell) => {
                        return self.list(&subshell.list, &mut cwd.map(Path::to_owned));
                    }
                    IoFileRedirectTarget::Filename(word) | IoFileRedirectTarget::Duplicate(word) => {
                        self.word(word, cwd);
                        return;
                    }
                    IoFileRedirectTarget::Fd(_) => return,
                }
            }
            IoRedirect::OutputAndError(word, _) => word,
            IoRedirect::HereString(_, word) => {
                self.word(word, cwd);
                return;
            }
            IoRedirect::HereDocument(_, document) => {
                if document.requires_expansion
                    && (document.doc.value.contains("$(") || document.doc.value.contains('`'))
                {
                    self.unknown("a here-document runs a command");
                }
                return;
            }
        };
        match self.word(target, cwd) {
            Some(path) => self.write(&path, cwd),
            None => self.unknown("a redirection writes to a computed path"),
        }
    }

    fn write(&mut self, path: &str, cwd: Option<&Path>) {
        let path = Path::new(path);
        let full = if path.is_absolute() {
            path.to_owned()
        } else if let Some(cwd) = cwd {
            cwd.join(path)
        } else {
            return self.unknown("the command writes relative to a computed directory");
        };
        if !self.writes.contains(&full) {
            self.writes.push(full);
        }
    }

    /// The word's text with its quotes removed, or `None` if it is computed (an expansion or a
    /// glob). Command substitutions inside it are walked as commands of their own.
    fn word(&mut self, word: &Word, cwd: Option<&Path>) -> Option<String> {
        if !word.value.contains(['$', '`', '\\', '\'', '"', '*', '?', '[', '~', '{']) {
            return Some(word.value.clone());
        }
        let parse = || brush_parser::word::parse(&word.value, &ParserOptions::default());
        let Ok(Ok(pieces)) = std::panic::catch_unwind(parse) else {
            self.unknown("a word could not be parsed");
            return None;
        };
        let mut text = Some(String::new());
        self.pieces(&pieces, cwd, &mut text, false);
        text
    }

    fn pieces(
        &mut self,
        pieces: &[brush_parser::word::WordPieceWithSource],
        cwd: Option<&Path>,
        text: &mut Option<String>,
        quoted: bool,
    ) {
        for piece in pieces.iter().map(|p| &p.piece) {
            let literal = match piece {
                WordPiece::Text(t) if !quoted && t.contains(['*', '?', '[', '{']) => None,
                WordPiece::Text(t) | WordPiece::SingleQuotedText(t) | WordPiece::AnsiCQuotedText(t) => Some(t.clone()),
                WordPiece::EscapeSequence(e) => Some(e.trim_start_matches('\\').to_owned()),
                WordPiece::DoubleQuotedSequence(inner) | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    self.pieces(inner, cwd, text, true);
                    continue;
                }
                WordPiece::CommandSubstitution(inner) | WordPiece::BackquotedCommandSubstitution(inner) => {
                    self.program(inner, cwd.map(Path::to_owned));
                    None
                }
                WordPiece::ParameterExpansion(_) | WordPiece::ArithmeticExpression(_) => {
                    // A substitution hidden in an expansion (`${X:-$(cmd)}`) is not walked.
                    if format!("{piece:?}").contains("$(") || format!("{piece:?}").contains('`') {
                        self.unknown("a command runs inside an expansion");
                    }
                    None
                }
                WordPiece::TildeExpansion(_) => None,
            };
            match (literal, text.as_mut()) {
                (Some(literal), Some(text)) => text.push_str(&literal),
                _ => *text = None,
            }
        }
    }
}

/// How deep brackets and substitutions nest in `text`, counted without parsing.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    for b in text.bytes() {
        match b {
            b'(' | b'{' | b'[' | b'`' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The operands of a command: its words that are not options (all of them after `--`), skipping
/// the values of options that take one.
fn operands<'a>(name: &str, args: &[&'a str]) -> Vec<&'a str> {
    let takes_value = VALUE_OPTIONS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, o)| *o);
    let mut found = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if *arg == "--" {
            found.extend(iter.by_ref().copied());
        } else if takes_value.contains(arg) {
            iter.next();
        } else if !arg.starts_with('-') || *arg == "-" {
            found.push(*arg);
        }
    }
    found
}

/// `-t DIR`, `--target-directory DIR` or `--target-directory=DIR`.
fn target_directory<'a>(args: &[&'a str]) -> Option<&'a str> {
    option_value(args, "-t", "--target-directory")
}

fn option_value<'a>(args: &[&'a str], short: &str, long: &str) -> Option<&'a str> {
    let prefix = format!("{long}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        if *arg == short || *arg == long {
            args.get(i + 1).copied()
        } else {
            arg.strip_prefix(prefix.as_str()).or_else(|| arg.strip_prefix(short).filter(|v| !v.is_empty()))
        }
    })
}

/// The files `sed -i` or `perl -i` edits in place, or `None` if it edits none in place.
fn in_place_files<'a>(name: &str, args: &[&'a str]) -> Option<Vec<&'a str>> {
    // Short options that take a value (the rest of the cluster, or the next word).
    let valued: &[char] = if name == "sed" { &['e', 'f', 'l'] } else { &['e', 'E', 'I', 'M', 'm'] };
    let (mut in_place, mut scripted, mut operands) = (false, false, Vec::new());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if *arg == "--" {
            operands.extend(iter.by_ref().copied());
        } else if let Some(long) = arg.strip_prefix("--") {
            in_place |= long == "in-place" || long.starts_with("in-place=");
            if matches!(long, "expression" | "file") {
                scripted = true;
                iter.next();
            }
            scripted |= long.starts_with("expression=") || long.starts_with("file=");
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (at, flag) in cluster.char_indices() {
                if flag == 'i' {
                    in_place = true;
                    break; // The rest is the backup suffix.
                }
                if valued.contains(&flag) {
                    scripted |= matches!(flag, 'e' | 'E' | 'f');
                    if at + flag.len_utf8() == cluster.len() {
                        iter.next();
                    }
                    break;
                }
            }
        } else {
            operands.push(*arg);
        }
    }
    if !in_place {
        return None;
    }
    // Without `-e` or `-f`, the first operand is the script.
    Some(operands.into_iter().skip(usize::from(!scripted)).collect())
}

#[cfg(test)]
mod tests;
