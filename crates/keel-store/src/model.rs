//! What the store persists and returns: the runtime and worker snapshots, event and transcript
//! records, cursors and pages, and the limits that bound them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The snapshot schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// The hard ceiling on a page size, whatever a runtime's limits or a caller's maximum say.
pub const PAGE_LIMIT_CEILING: u64 = 10_000;

/// The hard ceiling on one record (event or transcript line), in bytes: keel-fs's append limit.
pub const RECORD_BYTES_CEILING: u64 = keel_fs::RECORD_BYTES_MAX as u64;

/// The least `record_bytes_max` a runtime may have: room for an event's envelope and a payload.
pub const RECORD_BYTES_FLOOR: u64 = 1024;

/// The hard ceiling on workers per runtime.
pub const WORKERS_CEILING: u64 = 1_000_000;

/// The hard ceiling on diagnostics kept in `runtime.json` (the oldest are dropped first).
pub const DIAGNOSTICS_CEILING: u64 = 1_000;

/// The longest display name, backend name or status word, in bytes.
pub const LABEL_BYTES_MAX: usize = 256;

/// The limits a runtime is created with; stored in `runtime.json` and enforced on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest page `read_events` / `read_transcript` serve.
    pub page_limit_max: u64,
    /// The longest event or transcript line, in bytes.
    pub record_bytes_max: u64,
    /// The most workers the runtime may have.
    pub workers_max: u64,
    /// How many diagnostics `runtime.json` keeps (newest last).
    pub diagnostics_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { page_limit_max: 1_000, record_bytes_max: 256 * 1024, workers_max: 10_000, diagnostics_max: 64 }
    }
}

impl Limits {
    /// Why the first limit out of its range is, as text (`"page_limit_max 0 is below the floor
    /// of 1"`). A page limit of 0 would serve no page, a record limit below the floor no record.
    pub fn first_out_of_range(&self) -> Option<String> {
        [
            ("page_limit_max", self.page_limit_max, 1, PAGE_LIMIT_CEILING),
            ("record_bytes_max", self.record_bytes_max, RECORD_BYTES_FLOOR, RECORD_BYTES_CEILING),
            ("workers_max", self.workers_max, 0, WORKERS_CEILING),
            ("diagnostics_max", self.diagnostics_max, 0, DIAGNOSTICS_CEILING),
        ]
        .into_iter()
        .find_map(|(name, value, floor, ceiling)| {
            if value > ceiling {
                Some(format!("{name} {value} is above the ceiling of {ceiling}"))
            } else if value < floor {
                Some(format!("{name} {value} is below the floor of {floor}"))
            } else {
                None
            }
        })
    }
}

/// Something the store noticed and repaired, kept in `runtime.json` as evidence (bounded by
/// [`Limits::diagnostics_max`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Assigned from the runtime's `next_diagnostic_id`, strictly increasing.
    pub id: u64,
    /// What happened (`"torn_tail_removed"`).
    pub kind: String,
    /// The file concerned, relative to the runtime's directory.
    pub file: String,
    /// Details: offsets, lengths, an excerpt of removed bytes.
    pub detail: String,
    /// When, in milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
}

/// `runtimes/<id>/runtime.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSnapshot {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u64,
    /// The runtime's id (must match the directory it sits in).
    pub runtime_id: String,
    /// A human-readable name.
    pub display_name: String,
    /// The backend that runs the workers (free text, e.g. `"local"`).
    pub backend: String,
    /// The runtime's status word.
    pub status: String,
    /// The limits it was created with.
    pub limits: Limits,
    /// The sequence number the next worker gets (workers created so far + 1, or more).
    pub next_worker_seq: u64,
    /// The id the next event gets. In the file this is a checkpoint (events are not counted
    /// into the snapshot one by one); [`crate::FsRuntimeStore::load`] returns the live value.
    pub next_event_id: u64,
    /// The id the next diagnostic gets.
    pub next_diagnostic_id: u64,
    /// Configuration bundles, kept verbatim.
    pub config_bundles: Vec<Value>,
    /// Repairs the store made, newest last.
    pub diagnostics: Vec<Diagnostic>,
}

/// A worker's address: its runtime and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerRef {
    /// The runtime.
    pub runtime_id: String,
    /// The worker.
    pub worker_id: String,
}

/// `runtimes/<id>/workers/<id>/worker.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u64,
    /// The worker's address (must match the directories it sits in).
    pub worker_ref: WorkerRef,
    /// The worker's status word.
    pub status: String,
    /// The request it was created with, verbatim.
    pub request: Value,
    /// The sequence number of the next transcript entry. In the file this is a checkpoint taken
    /// whenever the snapshot is written; [`crate::FsRuntimeStore::load`] returns the live value.
    pub next_transcript_seq: u64,
    /// The id of the newest event naming this worker.
    pub last_event_id: Option<u64>,
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Assigned by the store: 1, 2, 3, ... with no gaps.
    pub id: u64,
    /// The runtime it belongs to.
    pub runtime_id: String,
    /// The worker it is about, if any.
    pub worker_id: Option<String>,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
    /// What the caller recorded.
    pub payload: Value,
}

/// One line of `transcript.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// Assigned by the store: 0, 1, 2, ... with no gaps.
    pub seq: u64,
    /// The worker whose transcript this is.
    pub worker_ref: WorkerRef,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub recorded_at_ms: u64,
    /// What the caller recorded.
    pub entry: Value,
}

/// Where a reader of the event log is: the next event id it has not seen, in one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    /// The runtime the cursor belongs to.
    pub runtime_id: String,
    /// The id of the first event the next page returns.
    pub next_event_id: u64,
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// Where the next page starts.
    pub cursor: EventCursor,
    /// Whether an event exists past this page (false exactly at the end of the log).
    pub has_more: bool,
    /// Damaged lines this page passed over, each standing for the id it would have had: never
    /// a silent gap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<DamagedLine>,
}

/// A line of a log that is not a record, where a page or a check met it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedLine {
    /// Its 1-based line number.
    pub line: u64,
    /// The event id or transcript seq it stands for.
    pub key: u64,
    /// Its first bytes.
    pub excerpt: String,
}

/// One page of a worker's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptPage {
    /// The entries, in sequence order.
    pub items: Vec<TranscriptEntry>,
    /// How many entries the transcript holds.
    pub total_items: u64,
    /// The `start` of the next page, `None` when this page reached the end.
    pub next_start: Option<u64>,
    /// Damaged lines this page passed over (see [`EventPage::damaged`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<DamagedLine>,
}

/// Everything persisted about a runtime except the log records themselves, with live counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    /// The runtime snapshot, with `next_event_id` taken from the log.
    pub runtime: RuntimeSnapshot,
    /// The workers in id order, with `next_transcript_seq` taken from their transcripts.
    pub workers: Vec<WorkerSnapshot>,
}
