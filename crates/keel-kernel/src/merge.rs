//! The pure merges behind keel's shared JSON documents: the section-preserving lockfile merge
//! (seed 001), the generation compare-and-swap of the config runtime (seed 003) and JSON Merge
//! Patch (RFC 7386).
//!
//! Nothing here reads or writes a file: the caller re-reads the document on disk under its lock,
//! hands the bytes (or the parsed object) in, and writes what comes out.
//!
//! # The lockfile document
//! One JSON object: `lock_version` (this format: [`LOCK_VERSION`]), an optional `inputs_digest`
//! string, and any number of sections (every other top-level key), each an opaque JSON value.
//! [`parse_lockfile`] checks the shape; [`merge_sections`] applies one writer's [`Staged`]
//! changes to the document currently on disk, leaving every key it did not stage as it found it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The lockfile format this code writes and the newest it understands.
pub const LOCK_VERSION: u64 = 1;

/// The key holding the format version.
pub const LOCK_VERSION_KEY: &str = "lock_version";

/// The key holding the optional digest of the inputs the sections were computed from.
pub const INPUTS_DIGEST_KEY: &str = "inputs_digest";

/// Keys that are not sections and can never be staged as one.
pub const RESERVED_KEYS: [&str; 2] = [LOCK_VERSION_KEY, INPUTS_DIGEST_KEY];

/// The longest section name accepted, in bytes.
pub const SECTION_NAME_BYTES_MAX: usize = 256;

/// The longest inputs digest accepted, in bytes.
pub const INPUTS_DIGEST_BYTES_MAX: usize = 1024;

/// One staged change to a top-level key.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set the key to this value.
    Set(Value),
    /// Remove the key.
    Remove,
}

/// A staged change to the inputs digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestChange {
    /// Set the digest to this (non-empty) string.
    Set(String),
    /// Remove the digest.
    Clear,
}

/// What one writer changed since its last flush: only these keys are re-applied to the document
/// found on disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Staged {
    /// Section changes by name (never a reserved key: [`Staged::stage_section`] refuses them).
    sections: BTreeMap<String, Change>,
    /// The digest change, if any.
    inputs_digest: Option<DigestChange>,
}

impl Staged {
    /// Nothing staged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages a section change, after checking the name with [`check_section_name`].
    pub fn stage_section(&mut self, name: &str, change: Change) -> Result<(), SectionNameError> {
        check_section_name(name)?;
        self.sections.insert(name.to_owned(), change);
        Ok(())
    }

    /// Stages the inputs digest; an empty digest stages its removal.
    pub fn stage_inputs_digest(&mut self, digest: &str) -> Result<(), SectionNameError> {
        if digest.len() > INPUTS_DIGEST_BYTES_MAX {
            return Err(SectionNameError::DigestTooLong { bytes: digest.len() });
        }
        self.inputs_digest =
            Some(if digest.is_empty() { DigestChange::Clear } else { DigestChange::Set(digest.to_owned()) });
        Ok(())
    }

    /// The staged section changes by name.
    pub fn sections(&self) -> &BTreeMap<String, Change> {
        &self.sections
    }

    /// The staged digest change, if any.
    pub fn inputs_digest(&self) -> Option<&DigestChange> {
        self.inputs_digest.as_ref()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty() && self.inputs_digest.is_none()
    }
}

/// A section name or digest that cannot be staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionNameError {
    /// The empty string names no section.
    #[error("a section name cannot be empty")]
    Empty,
    /// The name is longer than [`SECTION_NAME_BYTES_MAX`].
    #[error("section name of {bytes} bytes is longer than {SECTION_NAME_BYTES_MAX} bytes")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// The name is one of [`RESERVED_KEYS`].
    #[error("{name:?} is reserved by the lockfile format and is not a section")]
    Reserved {
        /// The name.
        name: String,
    },
    /// The digest is longer than [`INPUTS_DIGEST_BYTES_MAX`].
    #[error("inputs digest of {bytes} bytes is longer than {INPUTS_DIGEST_BYTES_MAX} bytes")]
    DigestTooLong {
        /// Its length.
        bytes: usize,
    },
}

/// Checks that `name` can name a section: non-empty, at most [`SECTION_NAME_BYTES_MAX`] bytes,
/// not reserved.
pub fn check_section_name(name: &str) -> Result<(), SectionNameError> {
    if name.is_empty() {
        return Err(SectionNameError::Empty);
    }
    if name.len() > SECTION_NAME_BYTES_MAX {
        return Err(SectionNameError::TooLong { bytes: name.len() });
    }
    if RESERVED_KEYS.contains(&name) {
        return Err(SectionNameError::Reserved { name: name.to_owned() });
    }
    Ok(())
}

/// Why bytes are not a lockfile this code may rewrite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON; `line` and `column` are 1-based, as `serde_json` reports them.
    #[error("invalid JSON at line {line}, column {column}: {detail}")]
    Syntax {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What the parser said.
        detail: String,
    },
    /// JSON, but not an object.
    #[error("the document is JSON {found}, not an object")]
    NotAnObject {
        /// What it is (`"array"`, `"string"`, ...).
        found: &'static str,
    },
    /// `lock_version` is not a non-negative integer.
    #[error("lock_version is {found}, not a non-negative integer")]
    BadVersion {
        /// The value found, as JSON.
        found: String,
    },
    /// `lock_version` is newer than [`LOCK_VERSION`]: this code would not know what it drops.
    #[error("lock_version {found} is newer than the newest this code understands ({LOCK_VERSION})")]
    VersionTooNew {
        /// The version found.
        found: u64,
    },
    /// `inputs_digest` is present but not a string.
    #[error("inputs_digest is {found}, not a string")]
    BadDigest {
        /// The value found, as JSON.
        found: String,
    },
}

/// The name of a JSON value's type, for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses and checks a lockfile's bytes, keeping every key (sections this code does not know
/// included). A document without `lock_version` is accepted (older tools may omit it); one whose
/// version is newer than [`LOCK_VERSION`] is refused.
pub fn parse_lockfile(bytes: &[u8]) -> Result<Map<String, Value>, DocumentError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax {
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    })?;
    let Value::Object(document) = value else {
        return Err(DocumentError::NotAnObject { found: json_type_name(&value) });
    };
    check_lockfile(&document)?;
    Ok(document)
}

/// Checks the reserved keys of a parsed lockfile document.
pub fn check_lockfile(document: &Map<String, Value>) -> Result<(), DocumentError> {
    if let Some(version) = document.get(LOCK_VERSION_KEY) {
        let Some(found) = version.as_u64() else {
            return Err(DocumentError::BadVersion { found: version.to_string() });
        };
        if found > LOCK_VERSION {
            return Err(DocumentError::VersionTooNew { found });
        }
    }
    match document.get(INPUTS_DIGEST_KEY) {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(DocumentError::BadDigest { found: other.to_string() }),
    }
}

/// A fresh lockfile document: only `lock_version`.
pub fn fresh_lockfile() -> Map<String, Value> {
    let mut document = Map::new();
    document.insert(LOCK_VERSION_KEY.to_owned(), Value::from(LOCK_VERSION));
    document
}

/// Applies `staged` to `on_disk`: every staged key takes its staged value (or disappears), every
/// other key keeps the value it has on disk, and `lock_version` is set to [`LOCK_VERSION`] only
/// when the document lacks it (a document older than this format keeps its number: nothing here
/// migrates it).
pub fn merge_sections(on_disk: &Map<String, Value>, staged: &Staged) -> Map<String, Value> {
    let mut merged = on_disk.clone();
    merged.entry(LOCK_VERSION_KEY).or_insert_with(|| Value::from(LOCK_VERSION));
    for (name, change) in &staged.sections {
        debug_assert!(!RESERVED_KEYS.contains(&name.as_str()), "Staged refuses reserved names");
        match change {
            Change::Set(value) => {
                merged.insert(name.clone(), value.clone());
            }
            Change::Remove => {
                merged.remove(name);
            }
        }
    }
    match &staged.inputs_digest {
        None => {}
        Some(DigestChange::Set(digest)) => {
            merged.insert(INPUTS_DIGEST_KEY.to_owned(), Value::String(digest.clone()));
        }
        Some(DigestChange::Clear) => {
            merged.remove(INPUTS_DIGEST_KEY);
        }
    }
    merged
}

/// A write expected one generation and found another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenerationError {
    /// The caller's expectation is stale.
    #[error("generation conflict: expected {expected}, current {current}")]
    Conflict {
        /// What the caller expected.
        expected: u64,
        /// What the store holds.
        current: u64,
    },
    /// The counter is at `u64::MAX` and cannot increase.
    #[error("generation {current} cannot increase further")]
    Exhausted {
        /// The current generation.
        current: u64,
    },
}

/// The generation compare-and-swap: may a write that expects `expected` (`None`: unconditional)
/// proceed when the store is at `current`? On success, the generation the write must carry.
pub fn next_generation(expected: Option<u64>, current: u64) -> Result<u64, GenerationError> {
    if let Some(expected) = expected
        && expected != current
    {
        return Err(GenerationError::Conflict { expected, current });
    }
    current.checked_add(1).ok_or(GenerationError::Exhausted { current })
}

/// Applies a JSON Merge Patch (RFC 7386) to `target`: an object patch merges member by member
/// (`null` removes a member, objects recurse), anything else replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_members) = target {
        for (name, value) in patch_members {
            if value.is_null() {
                target_members.remove(name);
            } else {
                merge_patch(target_members.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_the_rfc_7386_examples() {
        // Appendix A of RFC 7386, every row.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, want) in cases {
            let mut got = target.clone();
            merge_patch(&mut got, &patch);
            assert_eq!(got, want, "target {target}, patch {patch}");
        }
    }

    #[test]
    fn generation_cas_refuses_a_stale_expectation_and_names_both_numbers() {
        assert_eq!(next_generation(None, 0), Ok(1));
        assert_eq!(next_generation(Some(4), 4), Ok(5));
        assert_eq!(next_generation(Some(3), 4), Err(GenerationError::Conflict { expected: 3, current: 4 }));
        assert_eq!(next_generation(None, u64::MAX), Err(GenerationError::Exhausted { current: u64::MAX }));
    }

    #[test]
    fn parse_refuses_newer_versions_non_objects_and_bad_json_with_a_position() {
        assert_eq!(parse_lockfile(br#"{"lock_version": 2}"#), Err(DocumentError::VersionTooNew { found: 2 }));
        assert_eq!(parse_lockfile(b"[1]"), Err(DocumentError::NotAnObject { found: "an array" }));
        assert!(matches!(parse_lockfile(br#"{"lock_version": "1"}"#), Err(DocumentError::BadVersion { .. })));
        assert!(matches!(parse_lockfile(br#"{"inputs_digest": 7}"#), Err(DocumentError::BadDigest { .. })));
        match parse_lockfile(b"{\n  \"a\": 1,,\n}") {
            Err(DocumentError::Syntax { line, column, .. }) => assert_eq!((line, column), (2, 10)),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let kept = parse_lockfile(br#"{"lock_version": 1, "other-tool": {"x": [1]}}"#).expect("valid");
        assert_eq!(kept.get("other-tool"), Some(&json!({"x": [1]})));
    }

    #[test]
    fn reserved_and_oversized_names_cannot_be_staged() {
        let mut staged = Staged::new();
        assert!(matches!(staged.stage_section("lock_version", Change::Remove), Err(SectionNameError::Reserved { .. })));
        assert!(matches!(
            staged.stage_section("inputs_digest", Change::Remove),
            Err(SectionNameError::Reserved { .. })
        ));
        assert_eq!(staged.stage_section("", Change::Remove), Err(SectionNameError::Empty));
        let long = "x".repeat(SECTION_NAME_BYTES_MAX + 1);
        assert!(matches!(staged.stage_section(&long, Change::Remove), Err(SectionNameError::TooLong { .. })));
        assert!(staged.is_empty());
    }

    #[test]
    fn merge_applies_staged_keys_and_the_digest_and_keeps_the_rest() {
        let disk =
            parse_lockfile(br#"{"lock_version": 1, "inputs_digest": "d0", "a": 1, "b": 2, "c": 3}"#).expect("valid");
        let mut staged = Staged::new();
        staged.stage_section("a", Change::Set(json!({"new": true}))).expect("name");
        staged.stage_section("c", Change::Remove).expect("name");
        staged.stage_inputs_digest("").expect("short");
        let merged = merge_sections(&disk, &staged);
        assert_eq!(Value::Object(merged), json!({"lock_version": 1, "a": {"new": true}, "b": 2}));
        let fresh = merge_sections(&Map::new(), &Staged::new());
        assert_eq!(fresh, fresh_lockfile());
    }
}
