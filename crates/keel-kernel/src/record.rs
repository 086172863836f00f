//! Which records keel takes as damage although they parse: a record whose shape no writer of the
//! format produces, and whose literal reading would silently free regions, restart fencing, or
//! push a counter to a value no writer could go on from.
//!
//! The format's reader folds any object (a `CHECKPOINT` whose `leases` is a string empties the
//! live set; one whose generation rows are not integers restarts the counter). dos-kernel does
//! so; keel deliberately does not: such a record becomes a corrupt sentinel, stops grants until
//! an operator reviews it, and is otherwise not folded, so the live set and the counter stay what
//! the records before it made them.

use serde_json::Value;

use crate::value::Object;

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
