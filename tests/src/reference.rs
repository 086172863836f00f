//! The reference fold: `journal-format-v1.md`, read literally, with the simplest data structures.
//!
//! Nothing here is fast on purpose. The whole buffer is decoded, split on `\n`, every line goes
//! through `serde_json::Value`, the live set is a `Vec` searched linearly, generations are a
//! `BTreeMap`. The only kernel code used is the spec's own definitions of Python values
//! ([`identity_text`], [`seq_number`], [`truthy`]); the fold, the line rules and compaction are
//! written again here, so that agreeing with the kernel means something.

use std::collections::BTreeMap;

use keel_kernel::value::{identity_text, seq_number, truthy};
use serde_json::{Map, Value};

/// A lease identity: `(loop_ts, lane)` as text.
pub type Key = (String, String);

/// A JSON object.
pub type Object = Map<String, Value>;

/// What a journal means, according to the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    /// The live leases in first-acquired order, each under the identity it is live at.
    pub live: Vec<(Key, Object)>,
    /// The generation table (every row, live or carried by a checkpoint), ordered by identity.
    pub generations: BTreeMap<Key, u64>,
    /// The generation counter: the last generation granted or the largest a checkpoint carried.
    pub counter: u64,
    /// The largest `seq` or `seq_watermark` seen (0 when none).
    pub max_seq: u64,
    /// The `_CORRUPT` records, in order: sentinels for corrupt lines and any carried over.
    pub corrupt: Vec<Object>,
    /// How many records were folded (objects and corrupt sentinels).
    pub records: u64,
    /// The torn tail: the 0-based line index and stripped text of an unparseable last line.
    pub torn_tail: Option<(u64, String)>,
    /// How many lines the journal has, blank lines counted.
    pub lines: u64,
}

impl Folded {
    /// `1 +` the largest `seq` or `seq_watermark`, in a type that cannot overflow.
    pub fn next_seq(&self) -> u128 {
        u128::from(self.max_seq) + 1
    }

    /// The generation rows `(loop_ts, lane, generation)`, ordered by identity.
    pub fn generation_rows(&self) -> Vec<(String, String, u64)> {
        self.generations
            .iter()
            .map(|((loop_ts, lane), generation)| (loop_ts.clone(), lane.clone(), *generation))
            .collect()
    }

    /// `compact(records)` as the spec gives it: one `CHECKPOINT`, then the corrupt sentinels; or
    /// nothing for a journal without records.
    pub fn compact(&self) -> Vec<Object> {
        if self.records == 0 {
            return Vec::new();
        }
        let mut checkpoint = Object::new();
        checkpoint.insert("op".into(), Value::from("CHECKPOINT"));
        checkpoint.insert(
            "leases".into(),
            Value::Array(self.live.iter().map(|(_, body)| Value::Object(body.clone())).collect()),
        );
        checkpoint.insert("seq_watermark".into(), Value::from(self.max_seq));
        if !self.generations.is_empty() {
            let rows = self
                .generations
                .iter()
                .map(|((loop_ts, lane), generation)| {
                    serde_json::json!({"loop_ts": loop_ts, "lane": lane, "generation": generation})
                })
                .collect();
            checkpoint.insert("generations".into(), Value::Array(rows));
        }
        let mut out = vec![checkpoint];
        out.extend(self.corrupt.iter().cloned());
        out
    }

    /// Folds one more record.
    pub fn apply(&mut self, record: &Object) {
        self.records += 1;
        self.max_seq = self.max_seq.max(seq_number(record.get("seq"))).max(seq_number(record.get("seq_watermark")));
        let key = key_of(record);
        match record.get("op").and_then(Value::as_str) {
            Some("ACQUIRE" | "RECONCILE") => self.grant(key, record),
            Some("RELEASE" | "SCAVENGE") => {
                self.live.retain(|(k, _)| *k != key);
                self.generations.remove(&key);
            }
            Some("HEARTBEAT") => {
                if let Some(lease) = self.find(&key) {
                    heartbeat(lease, record);
                }
            }
            Some("ADOPT") => {
                if let Some(lease) = self.find(&key) {
                    adopt(lease, record);
                }
            }
            Some("CHECKPOINT") => self.checkpoint(record),
            Some("_CORRUPT") => self.corrupt.push(record.clone()),
            _ => {}
        }
    }

    /// `ACQUIRE` / `RECONCILE`: add or replace the lease, with the next generation.
    fn grant(&mut self, key: Key, record: &Object) {
        if key.0.is_empty() && key.1.is_empty() {
            return;
        }
        let body = if let Some(Value::Object(lease)) = record.get("lease") {
            lease.clone()
        } else {
            let mut body = Object::new();
            for member in [
                "lane",
                "lane_kind",
                "tree",
                "loop_ts",
                "host_id",
                "pid",
                "acquired_at",
                "heartbeat_at",
                "ttl_minutes",
                "holder",
                "run_id",
                "proc_starttime",
            ] {
                if let Some(value) = record.get(member) {
                    body.insert(member.to_owned(), value.clone());
                }
            }
            body
        };
        self.counter += 1;
        self.generations.insert(key.clone(), self.counter);
        self.put(key, body);
    }

    /// `CHECKPOINT`: the live set and the generation table start over from the record.
    fn checkpoint(&mut self, record: &Object) {
        self.live.clear();
        if let Some(Value::Array(leases)) = record.get("leases") {
            for lease in leases {
                if let Value::Object(body) = lease {
                    let key = key_of(body);
                    if !(key.0.is_empty() && key.1.is_empty()) {
                        self.put(key, body.clone());
                    }
                }
            }
        }
        self.generations.clear();
        self.counter = 0;
        if let Some(Value::Array(rows)) = record.get("generations") {
            for row in rows {
                let Value::Object(row) = row else { continue };
                // "integer generations only": a JSON integer (generations are counters, so
                // never negative).
                let Some(generation) = row.get("generation").and_then(Value::as_u64) else {
                    continue;
                };
                let key = key_of(row);
                if key.0.is_empty() && key.1.is_empty() {
                    continue;
                }
                self.generations.insert(key, generation);
                self.counter = self.counter.max(generation);
            }
        }
    }

    /// Adds or replaces the lease at `key`: a replacement keeps its place, a new lease goes last.
    fn put(&mut self, key: Key, body: Object) {
        match self.live.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = body,
            None => self.live.push((key, body)),
        }
    }

    fn find(&mut self, key: &Key) -> Option<&mut Object> {
        self.live.iter_mut().find(|(k, _)| k == key).map(|(_, body)| body)
    }
}

fn key_of(object: &Object) -> Key {
    (identity_text(object.get("loop_ts")), identity_text(object.get("lane")))
}

/// `ADOPT` of a live lease: overwrite `holder`, `pid`, `host_id` when given and not null; set
/// `proc_starttime` when given, else drop it when the pid changed (Python `!=`); then beat.
fn adopt(lease: &mut Object, record: &Object) {
    let old_pid = lease.get("pid").cloned();
    for member in ["holder", "pid", "host_id"] {
        match record.get(member) {
            None | Some(Value::Null) => {}
            Some(value) => {
                lease.insert(member.to_owned(), value.clone());
            }
        }
    }
    match record.get("proc_starttime") {
        Some(start) if !start.is_null() => {
            lease.insert("proc_starttime".to_owned(), start.clone());
        }
        _ => {
            if let Some(pid) = record.get("pid").filter(|pid| !pid.is_null()) {
                let same = old_pid.as_ref().is_some_and(|old| python_eq(pid, old));
                if !same {
                    lease.remove("proc_starttime");
                }
            }
        }
    }
    heartbeat(lease, record);
}

/// `hb = record.get("heartbeat_at") or record.get("ts")`; set it when truthy.
fn heartbeat(lease: &mut Object, record: &Object) {
    let beat = match record.get("heartbeat_at") {
        Some(value) if truthy(value) => Some(value),
        _ => record.get("ts").filter(|value| truthy(value)),
    };
    if let Some(beat) = beat {
        lease.insert("heartbeat_at".to_owned(), beat.clone());
    }
}

/// Python's `==` on JSON-decoded values: the spec's definition, shared with the kernel (like
/// `identity_text`), not part of the fold under test.
pub use keel_kernel::value::python_eq;

/// Python's `str.isspace` for one character: Unicode `White_Space`, plus U+001C..U+001F (which
/// Python counts as separators).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// What one line is, per "Reading".
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Empty after stripping.
    Blank,
    /// A JSON object.
    Record(Object),
    /// JSON, not an object.
    NotObject,
    /// Not JSON; the stripped text.
    Unparseable(String),
}

/// Classifies one line of decoded text.
pub fn classify(line: &str) -> Line {
    let stripped = line.trim_matches(is_python_space);
    if stripped.is_empty() {
        return Line::Blank;
    }
    match serde_json::from_str::<Value>(stripped) {
        Ok(Value::Object(record)) => Line::Record(record),
        Ok(_) => Line::NotObject,
        Err(_) => Line::Unparseable(stripped.to_owned()),
    }
}

/// The lines of a journal: the whole buffer decoded lossily, split on `\n`; a final `\n` ends the
/// last line rather than starting an empty one.
pub fn lines(journal: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(journal);
    if text.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    lines
}

/// Replays a whole journal.
pub fn replay(journal: &[u8]) -> Folded {
    let lines = lines(journal);
    let mut folded = Folded { lines: lines.len() as u64, ..Folded::default() };
    for (index, line) in lines.iter().enumerate() {
        match classify(line) {
            Line::Blank | Line::NotObject => {}
            // keel's deliberate deviation: a record no keel writes (a counter out of range, a
            // CHECKPOINT no compaction writes) is damage.
            Line::Record(record) if is_damage(&record) => {
                let raw = line.trim_matches(is_python_space);
                let sentinel = serde_json::json!({"op": "_CORRUPT", "_raw": raw, "_line": index});
                let Value::Object(sentinel) = sentinel else { unreachable!("json! of an object literal is an object") };
                folded.apply(&sentinel);
            }
            Line::Record(record) => folded.apply(&record),
            Line::Unparseable(raw) if index + 1 == lines.len() => {
                folded.torn_tail = Some((index as u64, raw));
            }
            Line::Unparseable(raw) => {
                let sentinel = serde_json::json!({"op": "_CORRUPT", "_raw": raw, "_line": index});
                let Value::Object(sentinel) = sentinel else { unreachable!("json! of an object literal is an object") };
                folded.apply(&sentinel);
            }
        }
    }
    folded
}

/// A record keel takes as damage: a `seq` or `seq_watermark` that is neither `null` nor an integer
/// from 0 to 2^53 - 1; a `CHECKPOINT` whose `leases` is missing or holds a non-object, or whose
/// `generations` is not an array of objects with such an integer `generation`; a `REVIEW` whose
/// `generation_floor` is not such an integer.
fn is_damage(record: &Object) -> bool {
    let counter = |value: &Value| value.is_null() || value.as_u64().is_some_and(|n| n < 1 << 53);
    if !record.get("seq").is_none_or(counter) || !record.get("seq_watermark").is_none_or(counter) {
        return true;
    }
    match record.get("op").and_then(Value::as_str) {
        Some("CHECKPOINT") => {
            let leases_ok =
                matches!(record.get("leases"), Some(Value::Array(leases)) if leases.iter().all(Value::is_object));
            let rows_ok = match record.get("generations") {
                None => true,
                Some(Value::Array(rows)) => {
                    rows.iter().all(|row| row.get("generation").is_some_and(|g| !g.is_null() && counter(g)))
                }
                Some(_) => false,
            };
            !(leases_ok && rows_ok)
        }
        Some("REVIEW") => !record.get("generation_floor").is_none_or(counter),
        _ => false,
    }
}

/// Folds records that are already parsed (for example the output of [`Folded::compact`]).
pub fn replay_records<'a>(records: impl IntoIterator<Item = &'a Object>) -> Folded {
    let mut folded = Folded::default();
    for record in records {
        folded.apply(record);
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_follow_splitlines_on_newline() {
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"\n"), vec![String::new()]);
        assert_eq!(lines(b"a\nb"), vec!["a", "b"]);
        assert_eq!(lines(b"a\n\n"), vec!["a", ""]);
        assert_eq!(lines(b"a\xff\n"), vec!["a\u{fffd}"]);
    }

    #[test]
    fn python_equality_treats_one_and_one_point_zero_and_true_alike() {
        assert!(python_eq(&json!(1), &json!(1.0)));
        assert!(python_eq(&json!(1), &json!(true)));
        assert!(python_eq(&json!([1, {"a": 2.0}]), &json!([1.0, {"a": 2}])));
        assert!(!python_eq(&json!(1), &json!("1")));
        assert!(!python_eq(&json!(u64::MAX), &json!(u64::MAX - 1)));
        assert!(!python_eq(&json!(null), &json!(0)));
    }

    #[test]
    fn an_unparseable_last_line_is_torn_and_any_other_is_corrupt() {
        let folded = replay(b"nope\n{\"op\": \"X\", \"seq\": 4}\n{\"op\n");
        assert_eq!(folded.torn_tail, Some((2, "{\"op".to_owned())));
        assert_eq!(Value::Object(folded.corrupt[0].clone()), json!({"op": "_CORRUPT", "_raw": "nope", "_line": 0}));
        assert_eq!(folded.next_seq(), 5);
        assert_eq!(folded.compact().len(), 2);
    }
}
