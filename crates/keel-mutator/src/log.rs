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
use std::fs::File;
use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use keel_fs::{LineReader, RECORD_BYTES_MAX};
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
    /// Lines that were not records (torn tails of crashed appends, damage).
    pub bad_lines: u64,
    lines: u64,
}

impl Index {
    /// Folds one record in.
    pub fn apply(&mut self, record: &Record) {
        self.lines += 1;
        let id = record.intent.clone();
        match record.step {
            Step::Intent | Step::Summary => {
                let (Some(op), Some(path)) = (record.op, record.path.clone()) else {
                    self.bad_lines += 1;
                    return;
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
                    self.bad_lines += 1;
                    return;
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
    }

    /// Folds whatever the log gained since the last call (or all of it, if the file was
    /// replaced). Only whole lines are folded: a torn tail waits for the appender's repair.
    pub fn catch_up(&mut self, path: &Path) -> Result<(), MutateError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                *self = Self::default();
                return Ok(());
            }
            Err(e) => return Err(MutateError::io("open mutation log", path, e)),
        };
        let meta = file.metadata().map_err(|e| MutateError::io("fstat mutation log", path, e))?;
        let identity = (meta.dev(), meta.ino());
        if self.file != Some(identity) || meta.len() < self.offset {
            *self = Self { file: Some(identity), ..Self::default() };
        }
        if meta.len() == self.offset {
            return Ok(());
        }
        let mut file = file;
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| MutateError::io("seek mutation log", path, e))?;
        let mut reader = LineReader::new(file, path, self.offset).with_line_bytes_max(RECORD_BYTES_MAX);
        loop {
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                // A line longer than any record: damage. Skip nothing silently; stop here and
                // let the next append (which starts on a fresh line) move past it.
                Err(keel_fs::FsError::LineTooLong { .. }) => {
                    self.bad_lines += 1;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if !line.terminated {
                break;
            }
            let next = line.offset + line.bytes.len() as u64 + 1;
            match serde_json::from_slice::<Record>(line.bytes) {
                Ok(record) => self.apply(&record),
                Err(_) => self.bad_lines += 1,
            }
            self.offset = next;
        }
        Ok(())
    }

    /// Notes that the log now ends at `offset` after this process appended `record`.
    pub fn appended(&mut self, record: &Record, offset: u64, path: &Path) -> Result<(), MutateError> {
        if self.file.is_none() {
            let meta = std::fs::metadata(path).map_err(|e| MutateError::io("stat mutation log", path, e))?;
            self.file = Some((meta.dev(), meta.ino()));
        }
        self.apply(record);
        self.offset = offset;
        Ok(())
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
        index.apply(&intent("x"));
        index.apply(&Record::step("x", Step::Checked));
        assert_eq!(index.intents["x"].standing(), Standing::Incomplete);
        assert!(index.incomplete.contains("x"));
        index.apply(&Record::noted("x", Step::Aborted, "precondition_failed"));
        assert_eq!(index.intents["x"].standing(), Standing::NotApplied);
        assert!(index.incomplete.is_empty());
        index.apply(&intent("x"));
        assert_eq!(index.intents["x"].standing(), Standing::Incomplete);
        index.apply(&Record::step("x", Step::Complete));
        assert_eq!(index.intents["x"].standing(), Standing::Applied);
        index.apply(&Record::step("unknown", Step::Complete));
        assert_eq!(index.bad_lines, 1);
    }

    #[test]
    fn summaries_keep_the_newest_terminal_intents_and_refold_to_the_same_standing() {
        let mut index = Index::default();
        for id in ["a", "b", "c"] {
            index.apply(&intent(id));
            index.apply(&Record::step(id, if id == "b" { Step::RolledBack } else { Step::Complete }));
        }
        index.apply(&intent("pending"));
        let kept = index.summary(2);
        assert_eq!(kept.iter().map(|r| r.intent.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let mut refolded = Index::default();
        for record in &kept {
            refolded.apply(record);
        }
        assert_eq!(refolded.intents["b"].standing(), Standing::NotApplied);
        assert_eq!(refolded.intents["c"].standing(), Standing::Applied);
        assert_eq!(refolded.intents["c"].key, index.intents["c"].key);
    }
}
