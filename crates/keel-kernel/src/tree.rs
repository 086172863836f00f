//! Tree algebra: when do two leased regions collide.
//!
//! A tree is a list of workspace-relative paths and globs. Each entry normalises to a [`Region`]:
//! a path prefix (cut at the first glob metacharacter), the universal region, or a named mutex
//! `lock://NAME`. Two regions collide when one prefix starts with the other.
//!
//! Stricter than the reference on purpose: `.` and empty path segments are dropped before the
//! cut (see [`normalise`]), so `./src/api`, `src//api` and `src/./api` collide with `src/api`, and
//! `.` is the whole workspace. The reference compares the text as written, so it granted `.`
//! next to a live `src/api/x.rs`. Dropping them only ever adds collisions.

use serde_json::Value;

use crate::value::{casefold, identity_text, python_isspace, python_strip};

/// Characters that start a glob: an entry is cut at the first one.
const GLOB_METACHARACTERS: [char; 3] = ['*', '?', '['];

/// The scheme of a named-mutex entry.
pub const LOCK_SCHEME: &str = "lock://";

/// What one normalised tree entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// Everything (the empty prefix, `**/*`, `*.toml`, a bare `lock://`): collides with all.
    Universal,
    /// Every path that starts with this non-empty, case-folded prefix.
    Prefix(String),
    /// A named mutex: collides only with the same name and with [`Region::Universal`].
    Lock(String),
}

impl Region {
    /// Whether two regions overlap. Symmetric.
    pub fn collides(&self, other: &Region) -> bool {
        match (self, other) {
            (Region::Universal, _) | (_, Region::Universal) => true,
            (Region::Lock(a), Region::Lock(b)) => a == b,
            (Region::Prefix(a), Region::Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a.as_str()),
            (Region::Lock(_), Region::Prefix(_)) | (Region::Prefix(_), Region::Lock(_)) => false,
        }
    }

    /// The region as entry text that normalises back to this very region: the prefix (guarded
    /// where normalising would strip or drop something), `lock://NAME`, or `*` for the universal
    /// region.
    pub fn text(&self) -> String {
        match self {
            Region::Universal => "*".to_owned(),
            Region::Prefix(p) => {
                // White space at either end would be stripped, and a last segment `.` dropped: a
                // `./` in front and a `*` behind keep them.
                let mut text = if p.starts_with(python_isspace) { format!("./{p}") } else { p.clone() };
                if p.ends_with(python_isspace) || clean(p) != p.as_str() {
                    text.push('*');
                }
                text
            }
            Region::Lock(name) => format!("{LOCK_SCHEME}{name}"),
        }
    }
}

/// Normalises one entry; `None` for a blank entry, which carries no path.
///
/// `\` becomes `/`, white space is stripped, the text is case-folded, and it is cut at the first
/// glob metacharacter. Normalising the text of a normalised entry gives the same region.
pub fn normalise(entry: &str) -> Option<Region> {
    let folded = folded(entry);
    if folded.is_empty() {
        return None;
    }
    if let Some(name) = folded.strip_prefix(LOCK_SCHEME) {
        if name.is_empty() || name.contains(GLOB_METACHARACTERS) {
            return Some(Region::Universal);
        }
        return Some(Region::Lock(name.to_owned()));
    }
    let cleaned = clean(&folded);
    let cut = cleaned.find(GLOB_METACHARACTERS).map_or(cleaned.as_str(), |at| &cleaned[..at]);
    if cut.is_empty() { Some(Region::Universal) } else { Some(Region::Prefix(cut.to_owned())) }
}

/// An entry as both [`normalise`] and [`confined`] read it: `\` as `/`, white space stripped,
/// case-folded.
fn folded(entry: &str) -> String {
    casefold(python_strip(&entry.replace('\\', "/")))
}

/// Drops the path segments that name nothing, `.` and the empty one between two slashes, so
/// `./src//api` reads as `src/api` and `./` or `.` as the whole workspace. Only whole segments
/// before the first glob metacharacter are dropped (`.*` is a glob of hidden files); a leading
/// `/` and a trailing `/` stay, and `..` is kept as written ([`confined`] refuses it).
fn clean(path: &str) -> String {
    let glob_at = path.find(GLOB_METACHARACTERS).unwrap_or(path.len());
    let (head, tail) = path.split_at(glob_at);
    let mut segments: Vec<&str> = head.split('/').collect();
    // The text after the last `/`: a whole segment only if no glob follows it.
    let last = segments.pop().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    for (i, segment) in segments.into_iter().enumerate() {
        if !matches!(segment, "" | ".") || (i == 0 && segment.is_empty()) {
            out.push_str(segment);
            out.push('/');
        }
    }
    if !(tail.is_empty() && last == ".") {
        out.push_str(last);
    }
    out.push_str(tail);
    out
}

/// The most entries a requested tree may have. Finding a collision compares every entry with
/// every entry of each live lease, so an unbounded request could hold the writer lock for
/// seconds (40,000 entries took 12 s); no real region needs more.
pub const TREE_ENTRIES_MAX: usize = 1024;

/// Whether an entry names a region inside the workspace; `Err` says why not: an absolute path or
/// a `..` component, read the way [`normalise`] reads the entry (`\` as `/`, white space
/// stripped). A `lock://NAME` entry names no path and passes; a glob is checked as written, so
/// `src/**` passes and `../*` does not.
///
/// Replay and the arbiter never ask: a recorded tree is read as it is (such an entry collides
/// with nothing inside the workspace). The lease service asks before it grants a request.
pub fn confined(entry: &str) -> Result<(), &'static str> {
    let folded = folded(entry);
    if folded.starts_with(LOCK_SCHEME) {
        return Ok(());
    }
    if folded.starts_with('/') {
        return Err("absolute path");
    }
    if folded.split('/').any(|part| part == "..") {
        return Err("path contains `..`");
    }
    Ok(())
}

/// Why an entry (or a path) as written is not the spelling of the region keel compares, if it
/// is not: a backslash (keel reads it as `/`, the file system does not), white space at either
/// end (stripped), a control character, or a `.` or empty path segment (dropped). Such a
/// spelling names one place on disk and another region to the gate, so requests and gate paths
/// that use one are refused instead of being normalised on one side only. A trailing `/` (a
/// directory prefix) is the usual spelling and passes; so does a `lock://NAME` entry's name.
/// Recorded trees are never asked: replay reads what any writer wrote.
pub fn misspelling(text: &str) -> Option<&'static str> {
    if text.chars().any(char::is_control) {
        return Some("it holds a control character");
    }
    if text.contains('\\') {
        return Some("it holds a backslash, which keel reads as `/` and the file system does not");
    }
    if text.starts_with(python_isspace) || text.ends_with(python_isspace) {
        return Some("it begins or ends with white space");
    }
    if casefold(text).starts_with(LOCK_SCHEME) {
        return None;
    }
    if text == "." || text == "./" {
        return Some("`.` names the whole workspace: write `**`");
    }
    let body = text.strip_suffix('/').unwrap_or(text);
    if body.split('/').enumerate().any(|(i, segment)| segment == "." || (segment.is_empty() && i > 0)) {
        return Some("it has a `.` or empty path segment: write `a/b`, not `./a//b`");
    }
    None
}

/// Whether a tree entry may be requested: inside the workspace ([`confined`]) and spelled as the
/// region it names ([`misspelling`]). `Err` says why not. The lease service asks this of every
/// entry of a request before it grants it.
pub fn requestable(entry: &str) -> Result<(), &'static str> {
    confined(entry)?;
    misspelling(entry).map_or(Ok(()), Err)
}

/// A normalised tree: its non-blank entries as regions. Empty means "no known region".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    regions: Vec<Region>,
}

impl Tree {
    /// Normalises a list of entries, dropping blank ones.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Self {
        Self { regions: entries.iter().filter_map(|e| normalise(e.as_ref())).collect() }
    }

    /// Reads a lease's `tree` member. Missing, `null` or `[]` is the empty tree; a string is one
    /// entry; an entry that is not a string fails closed as the universal region (bad data never
    /// buys concurrency).
    pub fn from_json(value: Option<&Value>) -> Self {
        let regions = match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => normalise(s).into_iter().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => normalise(s),
                    Value::Null => None,
                    Value::Bool(_) | Value::Number(_) => normalise(&identity_text(Some(item))),
                    Value::Array(_) | Value::Object(_) => Some(Region::Universal),
                })
                .collect(),
            Some(_) => vec![Region::Universal],
        };
        Self { regions }
    }

    /// No non-blank entry: an unknown blast radius.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The regions, in entry order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The first pair of colliding regions `(ours, theirs)`, if the trees intersect.
    pub fn first_collision<'a>(&'a self, other: &'a Tree) -> Option<(&'a Region, &'a Region)> {
        self.regions.iter().find_map(|a| other.regions.iter().find(|b| a.collides(b)).map(|b| (a, b)))
    }

    /// Whether any region of one collides with any region of the other. Symmetric.
    pub fn intersects(&self, other: &Tree) -> bool {
        self.first_collision(other).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // compared with `normalise`'s `Option` result
    fn prefix(s: &str) -> Option<Region> {
        Some(Region::Prefix(s.to_owned()))
    }

    #[test]
    fn normalise_replaces_strips_folds_and_cuts_globs() {
        assert_eq!(normalise("agents/apply_*.py"), prefix("agents/apply_"));
        assert_eq!(normalise("**/*"), Some(Region::Universal));
        assert_eq!(normalise("*.toml"), Some(Region::Universal));
        assert_eq!(normalise(" Src\\API\\ "), prefix("src/api/"));
        assert_eq!(normalise("STRAßE/x"), prefix("strasse/x"));
        assert_eq!(normalise("  "), None);
        assert_eq!(normalise("src/[ab]/x"), prefix("src/"));
    }

    /// Found by a sweep: `.` was granted next to a live `src/api/x.rs`, and `./src/api`,
    /// `src//api` and `src/./api` next to a live `src/api`.
    #[test]
    fn segments_that_name_nothing_are_dropped_before_the_cut() {
        assert_eq!(normalise("."), Some(Region::Universal));
        assert_eq!(normalise("./"), Some(Region::Universal));
        assert_eq!(normalise("./*"), Some(Region::Universal));
        for same in ["./src/api", "src//api", "src/./api"] {
            assert_eq!(normalise(same), prefix("src/api"), "{same}");
        }
        assert_eq!(normalise(".//src/api/."), prefix("src/api/"));
        assert_eq!(normalise("src/./*.rs"), prefix("src/"));
        assert_eq!(normalise("/abs//x"), prefix("/abs/x"));
        // A glob of hidden files is not the workspace, and `..` is not resolved.
        assert_eq!(normalise(".*"), prefix("."));
        assert_eq!(normalise("./a/.*"), prefix("a/."));
        assert_eq!(normalise("a/../b"), prefix("a/../b"));
        // Each region's text normalises back to it.
        for entry in [".*", "a/.*", "a/.?", "./.x", "./ .", "./ x /"] {
            let region = normalise(entry).expect("entry");
            assert_eq!(normalise(&region.text()), Some(region), "{entry}");
        }
        let held = Tree::new(&["src/api/x.rs"]);
        assert!(Tree::new(&["."]).intersects(&held));
        assert!(Tree::new(&["./src/api/"]).intersects(&held));
    }

    /// Found by a sweep: holding `src/`, the gate wrote `src\\..\\..\\evil` at the root and ` src/d.txt`
    /// into a directory named ` src`: the region and the file system read one text differently.
    #[test]
    fn a_spelling_that_is_not_its_region_is_named_and_the_usual_spellings_pass() {
        for bad in
            ["src\\api", " src/", "src/ ", "src//api", "./src", "src/./api", "src/.", ".", "./", "a\u{7}b", "a\tb"]
        {
            assert!(misspelling(bad).is_some(), "{bad:?}");
            assert!(requestable(bad).is_err(), "{bad:?}");
        }
        for good in
            ["src/", "src/api", "src/**", "**", "*.toml", ".github/", "a/.env", "src/.*", "lock://Deploy", "a b/c"]
        {
            assert_eq!(misspelling(good), None, "{good:?}");
            assert_eq!(requestable(good), Ok(()), "{good:?}");
        }
        assert_eq!(requestable("../x"), Err("path contains `..`"));
    }

    #[test]
    fn locks_collide_only_with_the_same_name_and_the_universal_region() {
        let a = normalise("lock://deploy").expect("entry");
        let b = normalise("LOCK://Deploy").expect("entry");
        let c = normalise("lock://db").expect("entry");
        assert!(a.collides(&b));
        assert!(!a.collides(&c));
        assert!(!a.collides(&normalise("lo").expect("entry")));
        assert!(a.collides(&Region::Universal));
        assert_eq!(normalise("lock://"), Some(Region::Universal));
        assert_eq!(normalise("lock://db*"), Some(Region::Universal));
    }

    #[test]
    fn entries_outside_the_workspace_are_not_confined_and_globs_and_locks_are() {
        for outside in ["/etc/", " /etc/passwd", "\\etc", "../x", "src/../../x", "..\\x", "..", "/**"] {
            assert!(confined(outside).is_err(), "{outside:?}");
        }
        for inside in ["src/", "src/**", "**/*", "*.toml", "./src/", "a..b/", "lock://deploy", "LOCK://../x", "", " "] {
            assert_eq!(confined(inside), Ok(()), "{inside:?}");
        }
    }

    #[test]
    fn trees_of_blank_entries_are_empty() {
        assert!(Tree::new(&["", "  "]).is_empty());
        assert!(!Tree::new(&["", "src/"]).is_empty());
    }

    #[test]
    fn malformed_tree_members_fail_closed() {
        let bad = Tree::from_json(Some(&serde_json::json!([{"x": 1}])));
        assert!(bad.intersects(&Tree::new(&["anything/"])));
        assert!(Tree::from_json(Some(&serde_json::json!(7))).intersects(&Tree::new(&["a"])));
        assert!(Tree::from_json(None).is_empty());
    }
}
