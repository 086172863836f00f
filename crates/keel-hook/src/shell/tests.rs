//! Unit tests of `shell`.

use super::*;

fn writes(command: &str) -> (Vec<String>, Option<String>) {
    let footprint = footprint(command, Path::new("/w"));
    (footprint.writes.iter().map(|p| p.display().to_string()).collect(), footprint.unknown)
}

fn known(command: &str) -> Vec<String> {
    let (writes, unknown) = writes(command);
    assert_eq!(unknown, None, "{command}");
    writes
}

#[test]
fn read_only_commands_write_nothing_even_with_computed_words() {
    for command in [
        "ls -la src",
        "cat src/a.rs | grep -n foo | head -5",
        "git status && git diff HEAD~1 -- src/a.rs",
        "rg 'fn main' \"$DIR\" *.rs",
        "sed -n 1,20p src/a.rs",
        "echo hi 2>&1 | less",
        "FOO=1 env -i BAR=2 wc -l src/a.rs",
        "if test -f a; then cat a; else echo none; fi",
        "git -C sub log --oneline | tail -1",
        "command -v cargo",
    ] {
        assert_eq!(writes(command), (Vec::<String>::new(), None), "{command}");
    }
    // Writes to /dev/null are reported; the hook drops everything outside the workspace.
    assert_eq!(known("echo hi > /dev/null"), ["/dev/null"]);
}

#[test]
fn the_files_a_command_writes_are_found_through_quotes_cd_and_nesting() {
    assert_eq!(known("sed -i s/x/y/ src/a.rs"), ["/w/src/a.rs"]);
    assert_eq!(known("sed -i.bak -e 's/x/y/' -e 's/a/b/' a b"), ["/w/a", "/w/b"]);
    assert_eq!(known("sed --in-place 's/x/y/' 'my file.rs'"), ["/w/my file.rs"]);
    assert_eq!(known("perl -pi -e 's/x/y/' src/a.rs"), ["/w/src/a.rs"]);
    assert_eq!(known("cd src && sed -i s/x/y/ a.rs"), ["/w/src/a.rs"]);
    assert_eq!(known("(cd src; touch a.rs); touch b.rs"), ["/w/src/a.rs", "/w/b.rs"]);
    assert_eq!(known("echo x > out.txt; echo y >> \"log file\" 2>&1"), ["/w/out.txt", "/w/log file"]);
    assert_eq!(known("cargo_out=1 make_it=2 cat a &> both.log"), ["/w/both.log"]);
    assert_eq!(known("cat a | tee -a copy1 copy2 >/dev/null"), ["/dev/null", "/w/copy1", "/w/copy2"]);
    assert_eq!(known("rm -rf target/x && mkdir -p -m 755 out"), ["/w/target/x", "/w/out"]);
    assert_eq!(known("mv a.rs b.rs"), ["/w/a.rs", "/w/b.rs"]);
    assert_eq!(known("cp -r src/a.rs /w/backup/"), ["/w/backup/"]);
    assert_eq!(known("cp -t dest a b"), ["/w/dest"]);
    assert_eq!(known("git checkout HEAD -- src/a.rs src/b.rs"), ["/w/src/a.rs", "/w/src/b.rs"]);
    assert_eq!(known("git restore src/a.rs; git rm -q old.rs"), ["/w/src/a.rs", "/w/old.rs"]);
    assert_eq!(known("git -C sub checkout -- x"), ["/w/sub/x"]);
    assert_eq!(known("echo \"$(touch inner)\" > outer"), ["/w/inner", "/w/outer"]);
    assert_eq!(known("sort -o sorted.txt data.txt"), ["/w/sorted.txt"]);
    assert_eq!(known("dd if=/dev/zero of=disk.img count=1"), ["/w/disk.img"]);
    assert_eq!(known("truncate -s 0 log.txt"), ["/w/log.txt"]);
    assert_eq!(known("chmod +x run.sh"), ["/w/run.sh"]);
    assert_eq!(known("for f in a b; do echo $f; done > list"), ["/w/list"]);
    assert_eq!(known("bash -lc 'cd src && rm a.rs'"), ["/w/src/a.rs"]);
    assert_eq!(known("timeout -s KILL 10 touch t"), ["/w/t"]);
}

#[test]
fn what_keel_cannot_be_sure_of_is_an_unknown_footprint_with_a_reason() {
    for (command, why) in [
        ("python3 gen.py", "`python3` may write any file"),
        ("make -j2", "`make` may write any file"),
        ("rm -f src/*.rs", "computed or globbed"),
        ("echo x > \"$OUT\"", "computed path"),
        ("cd \"$DIR\" && touch a", "computed directory"),
        ("git checkout main", "`git checkout` may rewrite"),
        ("git stash", "`git stash` may rewrite"),
        ("find . -name '*.o' -delete", "deletes or runs"),
        ("$EDITOR a.rs", "name is computed"),
        ("echo ${X:-$(rm a)}", "inside an expansion"),
        ("cat <<EOF\n$(rm a)\nEOF\n", "here-document"),
        ("echo 'unterminated", "could not be parsed"),
        ("perl script.pl", "`perl` runs a program"),
    ] {
        let (_, unknown) = writes(command);
        let unknown = unknown.unwrap_or_else(|| panic!("{command:?} has an unknown footprint"));
        assert!(unknown.contains(why), "{command:?}: {unknown}");
    }
}

#[test]
fn huge_and_deeply_nested_commands_are_unknown_never_a_crash() {
    let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(writes(&deep).1.is_some_and(|why| why.contains("too long or too deeply nested")));
    let long = format!("echo {}", "x".repeat(COMMAND_BYTES_MAX));
    assert!(writes(&long).1.is_some());
    let substitutions = "$(".repeat(40) + &")".repeat(40);
    assert!(writes(&format!("echo {substitutions}")).1.is_some());
}

proptest::proptest! {
    #[test]
    fn any_text_has_a_footprint_and_never_crashes_the_hook(text in r#"[a-z ./|&;<>()${}`'"\\*?=-]{0,80}"#) {
        let footprint = footprint(&text, Path::new("/w"));
        proptest::prop_assert!(footprint.writes.iter().all(|p| p.is_absolute()));
    }
}
