//! What `keel top` shows, folded from what the journal gained: the live leases with their
//! verdicts, the recent refusals, the grants of the last minute and whether grants are stopped.
//! Pure: records and the live view come in, time arrives as an argument, nothing is read here.

use std::collections::VecDeque;

use keel_journal::follow::{Noted, Refused, Standing, stamp_unix_s};
use keel_journal::{LiveLease, Stopped};
use keel_kernel::expiry::Verdict;
use serde_json::Value;

/// Refusals kept (the newest); older ones fall off.
pub const REFUSALS_KEPT_MAX: usize = 64;
/// Grant times kept for the rate: more than any believable minute of grants on one journal.
pub const GRANTS_KEPT_MAX: usize = 4096;
/// Live leases kept for display; the view says how many more there are.
pub const LEASE_ROWS_MAX: usize = 1000;
/// The window of the grant rate, in seconds.
const GRANT_WINDOW_S: i64 = 60;
/// Characters kept of a name or reason a record carries (a view has no use for more).
const TEXT_CHARS_MAX: usize = 400;

/// One live lease as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// Its lane.
    pub lane: String,
    /// Its region: the tree entries, separated by spaces.
    pub region: String,
    /// When it was granted, seconds since the Unix epoch.
    pub acquired_unix_s: Option<i64>,
    /// The service's expiry verdict now.
    pub verdict: Verdict,
    /// What the verdict means for the person watching.
    pub standing: Standing,
    /// Its fencing generation.
    pub generation: Option<u64>,
}

/// Where a refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A lease request (`keel lease`, the MCP tools, a program on the library).
    Lease,
    /// `keel hook`: an agent's edit it tried to lease for it.
    Hook,
}

/// One refusal as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When, seconds since the Unix epoch.
    pub at_unix_s: Option<i64>,
    /// Who was stopped.
    pub requester: String,
    /// The holder in the way, when the reason names one.
    pub blocker: Option<String>,
    /// The lane asked for.
    pub lane: String,
    /// The arbiter's reason.
    pub reason: String,
    /// Where the request came from.
    pub via: Via,
}

/// The fleet as `keel top` last read it.
#[derive(Debug, Default)]
pub struct Model {
    leases: Vec<Lease>,
    leases_total: usize,
    stopped: Option<Stopped>,
    /// Oldest first.
    refusals: VecDeque<Refusal>,
    refusals_total: u64,
    /// Grant times, in the order read.
    grants: VecDeque<i64>,
    records_read: u64,
    /// The largest `seq` noted.
    seq_seen: u64,
    /// After a compaction, records numbered up to here were noted from the old file already.
    seq_floor: u64,
    /// The journal was replaced and its first line has not been read yet.
    restart_pending: bool,
    restarts: u64,
    caught_up: bool,
}

impl Model {
    /// An empty model: nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The journal file was replaced (compaction), cut shorter or removed: the lines that follow
    /// start from its first byte. A compaction continues the same history (its first record is a
    /// `CHECKPOINT` numbered past everything noted), so what was noted stays; any other file is
    /// another history, and what was noted of the old one is dropped when its first line arrives.
    pub fn restart(&mut self) {
        self.restart_pending = true;
        self.restarts += 1;
    }

    /// Notes one line the journal gained (`noted`: what [`keel_journal::follow::noted`] found on it).
    pub fn note(&mut self, noted: Option<Noted>) {
        self.records_read += 1;
        if std::mem::take(&mut self.restart_pending) {
            match &noted {
                Some(Noted::Checkpoint { seq_watermark: Some(watermark) }) if *watermark >= self.seq_seen => {
                    self.seq_floor = self.seq_seen;
                }
                _ => {
                    self.refusals.clear();
                    self.grants.clear();
                    self.seq_seen = 0;
                    self.seq_floor = 0;
                }
            }
        }
        let Some(noted) = noted else { return };
        if let Some(seq) = noted.seq() {
            if seq <= self.seq_floor {
                return;
            }
            self.seq_seen = self.seq_seen.max(seq);
        }
        match noted {
            Noted::Grant { at_unix_s: Some(at), .. } => {
                if self.grants.len() == GRANTS_KEPT_MAX {
                    self.grants.pop_front();
                }
                self.grants.push_back(at);
            }
            Noted::Refusal(refused) => self.refused(refused),
            Noted::Grant { at_unix_s: None, .. } | Noted::Checkpoint { .. } => {}
        }
    }

    fn refused(&mut self, refused: Refused) {
        let via = if refused.lane.starts_with(keel_hook::decide::AUTO_LANE_PREFIX) { Via::Hook } else { Via::Lease };
        if self.refusals.len() == REFUSALS_KEPT_MAX {
            self.refusals.pop_front();
        }
        self.refusals_total += 1;
        self.refusals.push_back(Refusal {
            at_unix_s: refused.at_unix_s,
            requester: cut(refused.requester),
            blocker: refused.blocker.map(cut),
            lane: cut(refused.lane),
            reason: cut(refused.reason),
            via,
        });
    }

    /// Whether the last read reached the journal's end (false: more is being read).
    pub fn set_caught_up(&mut self, caught_up: bool) {
        self.caught_up = caught_up;
    }

    /// The live set as the lease service sees it now, each lease with its standing, and what
    /// stops grants, if anything.
    pub fn set_live(&mut self, leases: impl IntoIterator<Item = (LiveLease, Standing)>, stopped: Option<Stopped>) {
        self.leases.clear();
        self.leases_total = 0;
        for (lease, standing) in leases {
            self.leases_total += 1;
            if self.leases.len() < LEASE_ROWS_MAX {
                self.leases.push(row(lease, standing));
            }
        }
        self.stopped = stopped;
    }

    /// The live leases kept, in first-acquired order.
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// How many leases are live (more than [`leases`](Self::leases) past [`LEASE_ROWS_MAX`]).
    pub fn leases_total(&self) -> usize {
        self.leases_total
    }

    /// What stops grants, if anything.
    pub fn stopped(&self) -> Option<&Stopped> {
        self.stopped.as_ref()
    }

    /// The refusals kept, newest first.
    pub fn refusals(&self) -> impl Iterator<Item = &Refusal> {
        self.refusals.iter().rev()
    }

    /// Refusals noted since the view started (more than those kept).
    pub fn refusals_total(&self) -> u64 {
        self.refusals_total
    }

    /// Grants stamped within the last minute before `now_unix_s`.
    pub fn grants_per_minute(&self, now_unix_s: i64) -> usize {
        self.grants.iter().filter(|&&at| at > now_unix_s - GRANT_WINDOW_S && at <= now_unix_s).count()
    }

    /// Lines read from the journal since the view started.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// Times the journal was replaced (compacted) while the view ran.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether the last read reached the journal's end.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }
}

/// `text`, cut to [`TEXT_CHARS_MAX`] characters.
fn cut(text: String) -> String {
    match text.char_indices().nth(TEXT_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn row(lease: LiveLease, standing: Standing) -> Lease {
    let body = &lease.lease;
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let region = match body.get("tree") {
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::String(entry)) => entry.clone(),
        _ => String::new(),
    };
    Lease {
        holder: cut(text("holder")),
        lane: cut(lease.identity.lane),
        region: cut(region),
        acquired_unix_s: body.get("acquired_at").and_then(Value::as_str).and_then(stamp_unix_s),
        verdict: lease.verdict,
        standing,
        generation: lease.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(seq: u64, at: i64, requester: &str, lane: &str) -> Noted {
        Noted::Refusal(Refused {
            seq: Some(seq),
            at_unix_s: Some(at),
            requester: requester.into(),
            lane: lane.into(),
            reason: "held by lane \"api\" (kind \"keyword\", loop_ts \"t\", holder \"agent-a\", exclusive)".into(),
            reason_class: Some("region_conflict".into()),
            blocker: Some("agent-a".into()),
        })
    }

    fn grant(seq: u64, at: i64) -> Noted {
        Noted::Grant { seq: Some(seq), at_unix_s: Some(at), holder: "h".into(), lane: "l".into() }
    }

    #[test]
    fn a_refusal_keeps_who_was_stopped_by_whom_on_what_and_whether_the_hook_asked() {
        let mut model = Model::new();
        model.note(Some(refused(1, 100, "agent-b", "handlers")));
        model.note(Some(refused(2, 101, "claude-42", "edit:src/api/x.rs")));
        let shown: Vec<_> = model.refusals().map(|r| (r.requester.as_str(), r.blocker.as_deref(), r.via)).collect();
        assert_eq!(shown, [("claude-42", Some("agent-a"), Via::Hook), ("agent-b", Some("agent-a"), Via::Lease)]);
        assert_eq!(model.records_read(), 2);
    }

    #[test]
    fn the_refusals_kept_are_the_newest_and_capped() {
        let mut model = Model::new();
        let total = REFUSALS_KEPT_MAX as u64 + 10;
        for seq in 1..=total {
            model.note(Some(refused(seq, 100, &format!("agent-{seq}"), "l")));
        }
        assert_eq!(model.refusals().count(), REFUSALS_KEPT_MAX);
        assert_eq!(model.refusals_total(), total);
        assert_eq!(model.refusals().next().map(|r| r.requester.clone()), Some(format!("agent-{total}")));
    }

    #[test]
    fn grants_per_minute_counts_the_grants_stamped_in_the_last_sixty_seconds() {
        let mut model = Model::new();
        for (seq, at) in [(1, 900), (2, 941), (3, 970), (4, 1000), (5, 1001)] {
            model.note(Some(grant(seq, at)));
        }
        model.note(Some(Noted::Grant { seq: Some(6), at_unix_s: None, holder: "h".into(), lane: "l".into() }));
        assert_eq!(model.grants_per_minute(1000), 3, "941, 970 and 1000; not 900, nor 1001 yet");
        assert_eq!(model.grants_per_minute(1060), 1, "1001 only");
        assert_eq!(model.grants_per_minute(5000), 0);
    }

    #[test]
    fn after_a_compaction_what_was_noted_stays_and_nothing_is_noted_twice() {
        let mut model = Model::new();
        model.note(Some(grant(1, 1000)));
        model.note(Some(refused(2, 1000, "agent-b", "l")));
        model.restart();
        // The compacted file: a checkpoint numbered past what was seen, then new records.
        model.note(Some(Noted::Checkpoint { seq_watermark: Some(2) }));
        model.note(Some(refused(2, 1000, "agent-b", "l")));
        model.note(Some(refused(3, 1001, "agent-c", "l")));
        let requesters: Vec<_> = model.refusals().map(|r| r.requester.as_str()).collect();
        assert_eq!(requesters, ["agent-c", "agent-b"]);
        assert_eq!(model.grants_per_minute(1001), 1);
        assert_eq!(model.restarts(), 1);
    }

    #[test]
    fn a_journal_replaced_by_another_history_starts_the_view_afresh() {
        let mut model = Model::new();
        model.note(Some(grant(7, 1000)));
        model.note(Some(refused(8, 1000, "agent-b", "l")));
        model.restart();
        model.note(Some(refused(1, 1001, "agent-x", "l")));
        let requesters: Vec<_> = model.refusals().map(|r| r.requester.as_str()).collect();
        assert_eq!(requesters, ["agent-x"]);
        assert_eq!(model.grants_per_minute(1001), 0);
    }

    #[test]
    fn live_leases_past_the_row_limit_are_counted_not_kept() {
        let mut model = Model::new();
        let lease = |n: usize| {
            let serde_json::Value::Object(body) =
                serde_json::json!({"holder": format!("h{n}"), "tree": ["src/"], "acquired_at": "2026-01-01T00:00:00Z"})
            else {
                unreachable!()
            };
            let identity = keel_kernel::Identity { loop_ts: n.to_string(), lane: "l".into() };
            let verdict = Verdict::Alive { idle_s: 1, ttl_s: 60 };
            (LiveLease { identity, lease: body, generation: Some(n as u64), verdict }, Standing::Alive)
        };
        model.set_live((0..LEASE_ROWS_MAX + 5).map(lease), None);
        assert_eq!(model.leases().len(), LEASE_ROWS_MAX);
        assert_eq!(model.leases_total(), LEASE_ROWS_MAX + 5);
        assert_eq!(model.leases()[0].region, "src/");
        assert_eq!(model.leases()[0].acquired_unix_s, stamp_unix_s("2026-01-01T00:00:00Z"));
    }
}
