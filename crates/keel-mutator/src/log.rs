//! The mutation log: durable JSON lines at `<root>/.keel/mutations.jsonl`, one record per step
//! of each intent, and the in-memory index folded from it.
//!
//! Every record names its intent and its step. The first record of an attempt (`intent`) carries
//! the operation, the path(s), the content hash and the scratch name (temporary file or trash
//! name); later ones carry what the step learned (`checked`: the pre-state and inode). An attempt
//! ends in a terminal step: `complete` or `rolled_forward` (applied), `aborted` or
//! `rolled_back` (not applied). An attempt without one is incomplete: its process died (or hit an
//! I/O error) mid-way, and the next holder of the mutator lock finishes or undoes it.

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::path::Path;

use keel_fs::seam::StorageRead;
use keel_fs::{AppendReport, LineReader, RECORD_BYTES_MAX, Storage};
use serde::{Deserialize, Serialize};

use crate::error::MutateError;
use crate::request::{DirSyncStatus, Op};

/// One step of an intent, in the order a write, delete or rename takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The intent is recorded: operation, paths, content hash, scratch name.
    Intent,
    /// The pre-state matched; its inode is recorded.
    Checked,
    /// The temporary sibling is written and fsynced (write).
    TempCreated,
    /// The file was renamed to its trash name (delete).
    Trashed,
    /// The temporary file replaced the target (write), or the file moved (rename).
    Renamed,
    /// The trash name was unlinked (delete).
    Unlinked,
    /// The directory was fsynced (or the file system cannot).
    DirSynced,
    /// Terminal, applied.
    Complete,
    /// Terminal, not applied: a check refused the attempt before its effect.
    Aborted,
    /// Terminal, not applied: recovery undid an incomplete attempt.
    RolledBack,
    /// Terminal, applied: recovery finished an incomplete attempt whose effect had happened.
    RolledForward,
    /// Terminal, written by compaction: the attempt's identity and whether it was applied.
    Summary,
    /// Not a step of an intent (its `intent` is empty): an operator reviewed the damaged lines
    /// before this record and excused them (`note` names who). See [`Index::damage`].
    Excused,
}

/// One line of the mutation log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The intent id.
    pub intent: String,
    /// The step.
    pub step: Step,
    /// The operation (`intent`, `summary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// The path (the source, for a rename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The destination of a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The new content's hash (write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The expected pre-state as given (`intent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// The holder's owner, lane, `loop_ts` and generation (`intent`), for forensics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The holder's lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The holder's `loop_ts`, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_ts: Option<String>,
    /// The generation presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The temporary (write) or trash (delete) name in the target's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    /// The pre-state seen (`checked`): `absent` or the content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<String>,
    /// The target's device (`checked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// The target's inode (`checked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Whether the directory fsync happened (`dir_synced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_sync: Option<DirSyncStatus>,
    /// Why an attempt was aborted, or whether a summarised one was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall-clock milliseconds since the Unix epoch, for forensics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
}

impl Record {
    /// A bare record of `step` for `intent`.
    pub fn step(intent: &str, step: Step) -> Self {
        Self {
            intent: intent.to_owned(),
            step,
            op: None,
            path: None,
            to: None,
            hash: None,
            expect: None,
            owner: None,
            lane: None,
            loop_ts: None,
            generation: None,
            scratch: None,
            pre: None,
            dev: None,
            ino: None,
            dir_sync: None,
            note: None,
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// A terminal record with a note.
    pub fn noted(intent: &str, step: Step, note: &str) -> Self {
        Self { note: Some(note.to_owned()), ..Self::step(intent, step) }
    }
}

/// What identifies an intent's request: a retry must present the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentKey {
    /// The operation.
    pub op: Op,
    /// The path (source of a rename).
    pub path: String,
    /// The destination of a rename.
    pub to: Option<String>,
    /// The content hash of a write.
    pub hash: Option<String>,
}

impl std::fmt::Display for IntentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.path)?;
        if let Some(to) = &self.to {
            write!(f, " to {to}")?;
        }
        if let Some(hash) = &self.hash {
            write!(f, " with content {hash}")?;
        }
        Ok(())
    }
}

/// Where an intent's latest attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Its effect happened (complete, rolled forward).
    Applied,
    /// Its effect did not happen (aborted, rolled back).
    NotApplied,
    /// No terminal step yet.
    Incomplete,
}

/// The index entry of one intent: its key, scratch name and the steps of its latest attempt.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the intent asked.
    pub key: IntentKey,
    /// The temporary or trash name.
    pub scratch: Option<String>,
    /// The pre-state recorded by `checked`.
    pub pre: Option<String>,
    /// The steps of the latest attempt.
    pub steps: BTreeSet<Step>,
    /// Line order of the latest attempt's `intent` record (for compaction: newest kept).
    pub order: u64,
}

impl Entry {
    /// Whether the latest attempt reached `step`.
    pub fn has(&self, step: Step) -> bool {
        self.steps.contains(&step)
    }

    /// Where the latest attempt stands.
    pub fn standing(&self) -> Standing {
        if self.has(Step::Complete) || self.has(Step::RolledForward) {
            Standing::Applied
        } else if self.has(Step::Aborted) || self.has(Step::RolledBack) {
            Standing::NotApplied
        } else {
            Standing::Incomplete
        }
    }
}

/// At most this many damaged lines are kept for the report; the rest are only counted.
pub const DAMAGE_KEPT_MAX: usize = 16;

/// How much of a damaged line a report quotes.
const EXCERPT_BYTES_MAX: usize = 160;

/// A whole line of the log that is not a record this log can hold: it does not parse, or it is
/// a step of an intent the log never recorded (its `intent` line was damaged), or it is longer
/// than any record. Torn tails are not damage: they are cut off before the next append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedLine {
    /// 1-based line number in the log as it is now.
    pub line: u64,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Why it cannot be folded.
    pub reason: String,
    /// The line's first bytes, decoded lossily.
    pub excerpt: String,
}

impl std::fmt::Display for DamagedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} (byte {}): {}: {:?}", self.line, self.offset, self.reason, self.excerpt)
    }
}

/// The damaged lines no review has excused: the first [`DAMAGE_KEPT_MAX`], and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    /// The first damaged lines, in file order.
    pub first: Vec<DamagedLine>,
    /// How many damaged lines there are.
    pub count: u64,
}

impl Damage {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn note(&mut self, line: u64, offset: u64, reason: String, bytes: &[u8]) {
        self.count += 1;
        if self.first.len() < DAMAGE_KEPT_MAX {
            let mut end = bytes.len().min(EXCERPT_BYTES_MAX);
            let excerpt = loop {
                // Cut on a character boundary when the bytes are UTF-8; lossy otherwise.
                match std::str::from_utf8(&bytes[..end]) {
                    Ok(text) => break text.to_owned(),
                    Err(e) if e.error_len().is_none() && end > 0 => end = e.valid_up_to(),
                    Err(_) => break String::from_utf8_lossy(&bytes[..end]).into_owned(),
                }
            };
            self.first.push(DamagedLine { line, offset, reason, excerpt });
        }
    }
}

/// The index folded from the log, and how far it has read.
#[derive(Debug, Default)]
pub struct Index {
    /// Entries by intent id.
    pub intents: HashMap<String, Entry>,
    /// Intents with no terminal step.
    pub incomplete: BTreeSet<String>,
    /// Offset just past the last whole line folded.
    pub offset: u64,
    /// The log file's identity when last read: a different one (compaction) means read again.
    file: Option<(u64, u64)>,
    /// Damaged lines since the last review excused them. While there is any, the mutator
    /// refuses to act: the lost line may have been an intent's record, and folding without it
    /// would apply that intent a second time.
    pub damage: Damage,
    /// Records folded (the order of intents, for compaction).
    lines: u64,
    /// Whole lines read, damaged ones included (for line numbers in reports).
    line_number: u64,
}

impl Index {
    /// Folds one record in; `Err` says why the record cannot belong to this log.
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        self.lines += 1;
        let id = record.intent.clone();
        match record.step {
            Step::Excused => self.damage = Damage::default(),
            Step::Intent | Step::Summary => {
                let (Some(op), Some(path)) = (record.op, record.path.clone()) else {
                    return Err(format!("an {:?} record without an operation and a path", record.step));
                };
                let key = IntentKey { op, path, to: record.to.clone(), hash: record.hash.clone() };
                let mut steps = BTreeSet::from([Step::Intent]);
                if record.step == Step::Summary {
                    steps.insert(if record.note.as_deref() == Some("applied") {
                        Step::Complete
                    } else {
                        Step::Aborted
                    });
                } else {
                    self.incomplete.insert(id.clone());
                }
                let entry = Entry { key, scratch: record.scratch.clone(), pre: None, steps, order: self.lines };
                self.intents.insert(id, entry);
            }
            step => {
                let Some(entry) = self.intents.get_mut(&id) else {
                    return Err(format!("step {step:?} of intent {id:?}, which the log never recorded"));
                };
                entry.steps.insert(step);
                if step == Step::Checked {
                    entry.pre.clone_from(&record.pre);
                }
                if entry.standing() != Standing::Incomplete {
                    self.incomplete.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Folds one whole line that starts at `offset`.
    fn fold_line(&mut self, offset: u64, bytes: &[u8]) {
        self.line_number += 1;
        let folded = match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => self.apply(&record),
            Err(e) => Err(format!("not a record: {e}")),
        };
        if let Err(reason) = folded {
            self.damage.note(self.line_number, offset, reason, bytes);
        }
    }

    /// Folds whatever the log gained since the last call (or all of it, if the file was
    /// replaced). Only whole lines are folded: [`offset`](Self::offset) stops before a torn
    /// tail, which the next holder of the lock cuts off ([`Self::cut_torn_tail`]).
    pub fn catch_up<S: Storage>(&mut self, storage: &S, path: &Path) -> Result<(), MutateError> {
        let file = match storage.open_read(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                *self = Self::default();
                return Ok(());
            }
            Err(e) => return Err(MutateError::io("open mutation log", path, e)),
        };
        let stat = storage.file_stat(&file).map_err(|e| MutateError::io("fstat mutation log", path, e))?;
        let identity = (stat.dev, stat.ino);
        if self.file != Some(identity) || stat.len < self.offset {
            *self = Self { file: Some(identity), ..Self::default() };
        }
        if stat.len == self.offset {
            return Ok(());
        }
        let mut reader = LineReader::new(StorageRead::new(storage, &file, self.offset), path, self.offset)
            .with_line_bytes_max(RECORD_BYTES_MAX);
        loop {
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                // Longer than any record: damage, reported like any other; the lines after it
                // are still folded.
                Err(keel_fs::FsError::LineTooLong { offset, line_bytes_max, .. }) => {
                    let skipped = reader.skip_line()?;
                    if !skipped.terminated {
                        break;
                    }
                    self.line_number += 1;
                    let reason = format!("{} bytes, longer than any record ({line_bytes_max})", skipped.bytes);
                    self.damage.note(self.line_number, offset, reason, b"");
                    self.offset = reader.offset();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !line.terminated {
                break;
            }
            let next = line.offset + line.bytes.len() as u64 + 1;
            self.fold_line(line.offset, line.bytes);
            self.offset = next;
        }
        Ok(())
    }

    /// Notes that this process appended `record` (its bytes, which are re-read as any reader
    /// would, so the index is exactly what a fresh fold gives) as `report` describes.
    pub fn appended<S: Storage>(
        &mut self,
        storage: &S,
        record: &[u8],
        report: &AppendReport,
        path: &Path,
    ) -> Result<(), MutateError> {
        if self.file.is_none() {
            let stat = storage.path_stat(path).map_err(|e| MutateError::io("stat mutation log", path, e))?;
            self.file = Some((stat.dev, stat.ino));
        }
        if report.repaired_torn_tail {
            // Something wrote a fragment while the lock was held (the session cut any before it
            // opened its appender): fold it as a fresh reader would, as a damaged line.
            self.line_number += 1;
            self.damage.note(self.line_number, self.offset, "a torn line inside the log".to_owned(), b"");
        }
        self.fold_line(report.record_offset, record);
        self.offset = report.offset_after;
        Ok(())
    }

    /// Cuts off an unterminated fragment after the last whole line folded: what an append
    /// killed mid-write leaves, never acknowledged (an append is acknowledged after its `\n`
    /// is durable). Only the holder of the mutator lock may call this, after
    /// [`catch_up`](Self::catch_up): no one else can be appending. Removing the fragment,
    /// rather than terminating it as a shared journal's appender must, keeps every whole line of
    /// this log a record, so a whole line that is not one is damage. Returns whether it cut.
    pub fn cut_torn_tail<S: Storage>(&self, storage: &S, path: &Path) -> Result<bool, MutateError> {
        let file = match storage.open_write(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(MutateError::io("open mutation log", path, e)),
        };
        let stat = storage.file_stat(&file).map_err(|e| MutateError::io("fstat mutation log", path, e))?;
        if stat.len <= self.offset || self.file != Some((stat.dev, stat.ino)) {
            return Ok(false);
        }
        storage
            .set_len(&file, self.offset)
            .map_err(|e| MutateError::io("truncate the torn tail of mutation log", path, e))?;
        storage.sync_data(&file).map_err(|e| MutateError::io("fdatasync mutation log", path, e))?;
        Ok(true)
    }

    /// Summary records of the newest `keep` terminal intents, oldest first (for compaction).
    pub fn summary(&self, keep: usize) -> Vec<Record> {
        let mut entries: Vec<(&String, &Entry)> =
            self.intents.iter().filter(|(_, e)| e.standing() != Standing::Incomplete).collect();
        entries.sort_by_key(|(_, e)| e.order);
        let skip = entries.len().saturating_sub(keep);
        entries
            .into_iter()
            .skip(skip)
            .map(|(id, entry)| Record {
                op: Some(entry.key.op),
                path: Some(entry.key.path.clone()),
                to: entry.key.to.clone(),
                hash: entry.key.hash.clone(),
                note: Some(if entry.standing() == Standing::Applied { "applied" } else { "not_applied" }.to_owned()),
                ..Record::step(id, Step::Summary)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str) -> Record {
        Record {
            op: Some(Op::Write),
            path: Some("a".into()),
            hash: Some("h".into()),
            scratch: Some(".a.keel-tmp.x".into()),
            ..Record::step(id, Step::Intent)
        }
    }

    #[test]
    fn an_attempt_is_incomplete_until_a_terminal_step_and_a_new_attempt_resets_it() {
        let mut index = Index::default();
        let apply = |index: &mut Index, record: Record| index.apply(&record).expect("fits");
        apply(&mut index, intent("x"));
        apply(&mut index, Record::step("x", Step::Checked));
        assert_eq!(index.intents["x"].standing(), Standing::Incomplete);
        assert!(index.incomplete.contains("x"));
        apply(&mut index, Record::noted("x", Step::Aborted, "precondition_failed"));
        assert_eq!(index.intents["x"].standing(), Standing::NotApplied);
        assert!(index.incomplete.is_empty());
        apply(&mut index, intent("x"));
        assert_eq!(index.intents["x"].standing(), Standing::Incomplete);
        apply(&mut index, Record::step("x", Step::Complete));
        assert_eq!(index.intents["x"].standing(), Standing::Applied);
        let err = index.apply(&Record::step("unknown", Step::Complete)).expect_err("no such intent");
        assert!(err.contains("\"unknown\""), "{err}");
    }

    /// Writes `lines` (each terminated) plus `tail` as a log and folds it from the start.
    fn fold(lines: &[Vec<u8>], tail: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Index) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mutations.jsonl");
        let mut bytes: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
        bytes.extend_from_slice(tail);
        std::fs::write(&path, bytes).expect("write log");
        let mut index = Index::default();
        index.catch_up(&keel_fs::OsStorage, &path).expect("fold");
        (dir, path, index)
    }

    fn line(record: &Record) -> Vec<u8> {
        serde_json::to_vec(record).expect("encode")
    }

    #[test]
    fn whole_lines_that_are_not_records_are_damage_named_by_line_until_an_excuse_follows_them() {
        let lines = [
            line(&intent("a")),
            b"{\"intent\":\"b\",\"step\":\"int\x00ent\"}".to_vec(),
            line(&Record::step("b", Step::Complete)),
            vec![b'x'; RECORD_BYTES_MAX + 1],
            line(&Record::step("a", Step::Complete)),
        ];
        let (_dir, path, index) = fold(&lines, b"");
        assert_eq!(index.damage.count, 3);
        let at: Vec<(u64, u64)> = index.damage.first.iter().map(|d| (d.line, d.offset)).collect();
        let offset = |n: usize| lines[..n].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        assert_eq!(at, [(2, offset(1)), (3, offset(2)), (4, offset(3))]);
        assert!(index.damage.first[0].reason.starts_with("not a record"), "{:?}", index.damage.first[0]);
        assert!(index.damage.first[1].reason.contains("never recorded"), "{:?}", index.damage.first[1]);
        assert!(index.damage.first[2].reason.contains("longer than any record"), "{:?}", index.damage.first[2]);
        // The overlong line does not stop the fold: the record after it counts.
        assert_eq!(index.intents["a"].standing(), Standing::Applied);
        assert_eq!(index.offset, std::fs::metadata(&path).expect("stat").len());

        let mut excused = lines.to_vec();
        excused.push(line(&Record::noted("", Step::Excused, "ops")));
        excused.push(b"not json".to_vec());
        let (_dir, _path, index) = fold(&excused, b"");
        assert_eq!(index.damage.count, 1, "only the line after the excuse: {:?}", index.damage);
        assert_eq!(index.damage.first[0].line, 7);
    }

    #[test]
    fn a_torn_tail_is_not_damage_and_the_lock_holder_cuts_it_off() {
        let lines = [line(&intent("a"))];
        let (_dir, path, index) = fold(&lines, b"{\"intent\":\"a\",\"st");
        assert!(index.damage.is_empty(), "{:?}", index.damage);
        assert_eq!(index.offset, lines[0].len() as u64 + 1);
        assert!(index.cut_torn_tail(&keel_fs::OsStorage, &path).expect("cut"));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), index.offset);
        assert!(!index.cut_torn_tail(&keel_fs::OsStorage, &path).expect("nothing left to cut"));
    }

    #[test]
    fn summaries_keep_the_newest_terminal_intents_and_refold_to_the_same_standing() {
        let mut index = Index::default();
        for id in ["a", "b", "c"] {
            index.apply(&intent(id)).expect("fits");
            index.apply(&Record::step(id, if id == "b" { Step::RolledBack } else { Step::Complete })).expect("fits");
        }
        index.apply(&intent("pending")).expect("fits");
        let kept = index.summary(2);
        assert_eq!(kept.iter().map(|r| r.intent.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let mut refolded = Index::default();
        for record in &kept {
            refolded.apply(record).expect("a summary fits");
        }
        assert_eq!(refolded.intents["b"].standing(), Standing::NotApplied);
        assert_eq!(refolded.intents["c"].standing(), Standing::Applied);
        assert_eq!(refolded.intents["c"].key, index.intents["c"].key);
    }
}
