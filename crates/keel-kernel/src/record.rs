//! Records: the ones keel writes, built here by typed functions (one for each operation, so no
//! writer spells a record by hand), and the ones keel takes as damage although they parse.
//!
//! Damage: a record whose shape no writer of the format produces, and whose literal reading
//! would silently free regions, restart fencing, or push a counter to a value no writer could go
//! on from. The format's reader folds any object (a `CHECKPOINT` whose `leases` is a string
//! empties the live set; one whose generation rows are not integers restarts the counter).
//! dos-kernel does so; keel deliberately does not: such a record becomes a corrupt sentinel,
//! stops grants until an operator reviews it, and is otherwise not folded, so the live set and
//! the counter stay what the records before it made them.
//!
//! The builders leave `seq` to the appender, which numbers each record as it writes it. `REVIEW`
//! ([`crate::replay::review_record`]) and `CHECKPOINT` ([`crate::LiveState::compact`]) are built
//! where their contents are computed.

use serde_json::Value;

use crate::value::Object;

use crate::replay::Identity;

/// Who writes a record: the host it runs on, named in every record keel writes.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The host's name (`host_id`).
    pub host_id: &'a str,
}

fn object(value: Value) -> Object {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("the record literals below are objects"),
    }
}

/// What a lease's body records at its grant.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// Its identity.
    pub identity: &'a Identity,
    /// Its holder (the owner name).
    pub holder: &'a str,
    /// When it was granted (RFC 3339, whole seconds).
    pub acquired_at: &'a str,
    /// The arbiter's grant: lane kind, mode and tree.
    pub decision: &'a crate::arbiter::Decision,
    /// The holder's process, if it names one (`null` otherwise).
    pub pid: Option<u32>,
    /// That process's start time, which tells it from a later process with the same pid.
    pub proc_starttime: Option<u64>,
    /// The holder's process group, if the lease lives while any process of it runs.
    pub pgid: Option<u32>,
    /// Its TTL, in minutes.
    pub ttl_minutes: f64,
    /// Its grace after its holder is gone, in seconds.
    pub grace_s: u64,
    /// An operator's override: it collides on purpose, and `journal verify` reports it as such.
    pub forced: bool,
    /// The holder's run, if it named one.
    pub run_id: Option<&'a str>,
}

impl Writer<'_> {
    /// A lease's body, as an `ACQUIRE` carries it and the fold keeps it.
    pub fn lease(&self, lease: &Lease<'_>) -> Object {
        let decision = lease.decision;
        let mut body = object(serde_json::json!({
            "acquired_at": lease.acquired_at,
            "holder": lease.holder,
            "host_id": self.host_id,
            "lane": lease.identity.lane,
            "lane_kind": decision.lane_kind,
            "loop_ts": lease.identity.loop_ts,
            "mode": decision.mode,
            "pid": lease.pid,
            "tree": decision.tree,
            "ttl_minutes": lease.ttl_minutes,
            "grace_s": lease.grace_s,
        }));
        let optional = [
            ("proc_starttime", lease.proc_starttime.map(Value::from)),
            ("pgid", lease.pgid.map(Value::from)),
            ("forced", lease.forced.then_some(Value::Bool(true))),
            ("run_id", lease.run_id.map(Value::from)),
        ];
        for (member, value) in optional {
            if let Some(value) = value {
                body.insert(member.into(), value);
            }
        }
        body
    }

    /// `ACQUIRE`: a grant of `lease` (its whole body, which the fold keeps) at `identity`.
    pub fn acquire(&self, identity: &Identity, lease: &Object) -> Object {
        let holder = lease.get("holder").and_then(Value::as_str).unwrap_or("");
        let mut record = object(serde_json::json!({
            "op": "ACQUIRE",
            "host_id": self.host_id,
            "lane": identity.lane,
            "lane_kind": lease.get("lane_kind"),
            "loop_ts": identity.loop_ts,
            "pid": lease.get("pid"),
            "prev_holder": null,
            "reason": format!("lane-lease:{holder}"),
            "tree": lease.get("tree"),
            "ttl_minutes": lease.get("ttl_minutes"),
        }));
        record.insert("lease".into(), Value::Object(lease.clone()));
        record
    }

    /// `RELEASE`: `owner` gives back the lease at `identity`.
    pub fn release(&self, identity: &Identity, owner: &str) -> Object {
        object(serde_json::json!({
            "op": "RELEASE", "host_id": self.host_id, "holder": owner,
            "lane": identity.lane, "loop_ts": identity.loop_ts, "reason": format!("lane-lease:{owner}"),
        }))
    }

    /// `HEARTBEAT`: the lease at `identity` showed a sign of life at `heartbeat_at` (RFC 3339).
    pub fn heartbeat(&self, identity: &Identity, heartbeat_at: &str) -> Object {
        object(serde_json::json!({
            "op": "HEARTBEAT", "host_id": self.host_id, "heartbeat_at": heartbeat_at,
            "lane": identity.lane, "loop_ts": identity.loop_ts,
        }))
    }

    /// `RECONCILE`: the lease at `identity` is replaced by `lease` (an adoption by `new_owner`
    /// from `prev_holder`); every reader gives it the next generation.
    pub fn adopt(&self, identity: &Identity, prev_holder: &Value, new_owner: &str, lease: Object) -> Object {
        let mut record = object(serde_json::json!({
            "op": "RECONCILE", "host_id": self.host_id, "lane": identity.lane,
            "loop_ts": identity.loop_ts, "prev_holder": prev_holder, "reason": format!("adopt:{new_owner}"),
        }));
        record.insert("lease".into(), Value::Object(lease));
        record
    }

    /// `SCAVENGE`: the lease at `identity` is evicted, for `reason`.
    pub fn scavenge(identity: &Identity, reason: &str) -> Object {
        object(
            serde_json::json!({"op": "SCAVENGE", "lane": identity.lane, "loop_ts": identity.loop_ts, "reason": reason}),
        )
    }

    /// `REFUSE`: a request by `holder` for `lane` was refused (forensic: folds to nothing).
    pub fn refuse(&self, refusal: &Refusal<'_>) -> Object {
        object(serde_json::json!({
            "op": "REFUSE",
            "holder": refusal.holder,
            "host_id": self.host_id,
            "lane": refusal.lane,
            "loop_ts": refusal.loop_ts,
            "reason": refusal.reason,
            "reason_class": refusal.reason_class,
            "run_id": refusal.run_id,
        }))
    }

    /// `HALT`: an intent, by `handle`, to stop whatever runs on `lane` (folds to nothing).
    pub fn halt(&self, lane: &str, handle: &str, reason: &str) -> Object {
        object(serde_json::json!({
            "op": "HALT", "command": null, "handle": handle, "host_id": self.host_id,
            "lane": lane, "loop_ts": "", "reason": reason, "run_id": null,
        }))
    }

    /// `SPAWN`: an intent, by `holder` (process `pid`), to start `command` on `lane` (folds to
    /// nothing).
    pub fn spawn(&self, lane: &str, loop_ts: &str, holder: &str, pid: u32, command: &str) -> Object {
        object(serde_json::json!({
            "op": "SPAWN", "holder": holder, "host_id": self.host_id, "lane": lane,
            "loop_ts": loop_ts, "pid": pid, "reason": format!("spawn:{holder}"), "command": command,
        }))
    }
}

/// What a `REFUSE` record says.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// The requester.
    pub holder: &'a str,
    /// The lane asked for.
    pub lane: &'a str,
    /// The requester's `loop_ts` (or a fresh one).
    pub loop_ts: &'a str,
    /// The arbiter's reason.
    pub reason: &'a str,
    /// The arbiter's class of refusal.
    pub reason_class: Option<crate::arbiter::RefusalClass>,
    /// The requester's run, if it named one.
    pub run_id: Option<&'a str>,
}

/// The largest `seq`, `seq_watermark` or generation keel takes as real: 2^53 − 1, the largest
/// integer every JSON reader holds exactly. A journal appending a million records a second takes
/// 285 years to reach it; a larger value was written by hand or damaged, and taking it as the
/// counter would wedge every writer at the limit.
pub const COUNTER_MAX: u64 = (1 << 53) - 1;

/// Whether `value` is a counter keel could have written: a non-negative integer up to
/// [`COUNTER_MAX`]. (`null` carries no number: it counts as absent.)
fn counter(value: &Value) -> bool {
    value.is_null() || value.as_u64().is_some_and(|n| n <= COUNTER_MAX)
}

/// Why a record that parses is damage, or `None` when it is a record to fold.
pub fn malformed(record: &Object) -> Option<&'static str> {
    if !record.get("seq").is_none_or(counter) {
        return Some("a `seq` that is not an integer from 0 to 2^53 - 1");
    }
    if !record.get("seq_watermark").is_none_or(counter) {
        return Some("a `seq_watermark` that is not an integer from 0 to 2^53 - 1");
    }
    match record.get("op").and_then(Value::as_str) {
        Some("CHECKPOINT") => malformed_checkpoint(record),
        Some(crate::replay::REVIEW_OP) if !record.get(crate::replay::GENERATION_FLOOR).is_none_or(counter) => {
            Some("a REVIEW whose `generation_floor` is not an integer from 0 to 2^53 - 1")
        }
        _ => None,
    }
}

fn malformed_checkpoint(record: &Object) -> Option<&'static str> {
    match record.get("leases") {
        Some(Value::Array(leases)) if leases.iter().all(Value::is_object) => {}
        Some(Value::Array(_)) => return Some("a CHECKPOINT whose `leases` holds something other than lease objects"),
        Some(_) => return Some("a CHECKPOINT whose `leases` is not an array of lease objects"),
        None => return Some("a CHECKPOINT without `leases`"),
    }
    match record.get("generations") {
        None => {}
        Some(Value::Array(rows)) => {
            let row_ok = |row: &Value| row.get("generation").is_some_and(|g| !g.is_null() && counter(g));
            if !rows.iter().all(|row| row.is_object() && row_ok(row)) {
                return Some(
                    "a CHECKPOINT with a generation row that is not {loop_ts, lane, generation: an integer from 0 to 2^53 - 1}",
                );
            }
        }
        Some(_) => return Some("a CHECKPOINT whose `generations` is not an array of rows"),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(object) => object,
            _ => unreachable!("test records are objects"),
        }
    }

    #[test]
    fn a_checkpoint_of_any_shape_keel_never_writes_is_damage_and_a_compaction_s_output_is_not() {
        for bad in [
            json!({"op": "CHECKPOINT"}),
            json!({"op": "CHECKPOINT", "leases": "garbage"}),
            json!({"op": "CHECKPOINT", "leases": [1]}),
            json!({"op": "CHECKPOINT", "leases": [], "generations": 7}),
            json!({"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": "9"}]}),
            json!({"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": 2.0}]}),
            json!({"op": "CHECKPOINT", "leases": [], "generations": [5]}),
            json!({"op": "CHECKPOINT", "leases": [], "seq_watermark": "x"}),
            json!({"op": "CHECKPOINT", "leases": [], "seq_watermark": -1}),
            json!({"op": "CHECKPOINT", "leases": [], "generations": [{"loop_ts": "t", "lane": "l", "generation": u64::MAX}]}),
        ] {
            assert!(malformed(&object(bad.clone())).is_some(), "{bad}");
        }
        for good in [
            json!({"op": "CHECKPOINT", "leases": []}),
            json!({"op": "CHECKPOINT", "leases": [{"lane": "a", "loop_ts": "t"}], "seq_watermark": 9,
                   "generations": [{"loop_ts": "t", "lane": "a", "generation": 3}]}),
            json!({"op": "ACQUIRE", "leases": "anything"}),
        ] {
            assert_eq!(malformed(&object(good.clone())), None, "{good}");
        }
    }

    /// Found by a sweep: one `{"op": "NOTE", "seq": 1e30}` made every acquire and release fail
    /// for good ("the journal's seq has reached its limit"), and compaction wrote it back.
    #[test]
    fn a_counter_keel_could_not_have_issued_is_damage() {
        for bad in [
            json!({"op": "NOTE", "seq": 1e30}),
            json!({"op": "NOTE", "seq": u64::MAX}),
            json!({"op": "NOTE", "seq": COUNTER_MAX + 1}),
            json!({"op": "NOTE", "seq": "12"}),
            json!({"op": "NOTE", "seq": 12.5}),
            json!({"op": "NOTE", "seq": -3}),
            json!({"op": "NOTE", "seq_watermark": true}),
            json!({"op": "REVIEW", "excuses": [], "generation_floor": u64::MAX}),
        ] {
            assert!(malformed(&object(bad.clone())).is_some(), "{bad}");
        }
        for good in
            [json!({"op": "NOTE", "seq": COUNTER_MAX}), json!({"op": "NOTE", "seq": null}), json!({"op": "NOTE"})]
        {
            assert_eq!(malformed(&object(good.clone())), None, "{good}");
        }
    }
}
