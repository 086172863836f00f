//! Which records keel takes as damage although they parse: a record whose shape no writer of the
//! format produces, and whose literal reading would silently free regions or restart fencing.
//!
//! The format's reader folds any object (a `CHECKPOINT` whose `leases` is a string empties the
//! live set; one whose generation rows are not integers restarts the counter). dos-kernel does
//! so; keel deliberately does not: such a record becomes a corrupt sentinel, stops grants until
//! an operator reviews it, and is otherwise not folded, so the live set and the counter stay what
//! the records before it made them.

use serde_json::Value;

use crate::value::Object;

/// Why a record that parses is damage, or `None` when it is a record to fold.
pub fn malformed(record: &Object) -> Option<&'static str> {
    match record.get("op").and_then(Value::as_str) {
        Some("CHECKPOINT") => malformed_checkpoint(record),
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
            let row_ok = |row: &Value| row.get("generation").is_some_and(|g| g.as_u64().is_some());
            if !rows.iter().all(|row| row.is_object() && row_ok(row)) {
                return Some("a CHECKPOINT with a generation row that is not {loop_ts, lane, generation: integer}");
            }
        }
        Some(_) => return Some("a CHECKPOINT whose `generations` is not an array of rows"),
    }
    match record.get("seq_watermark") {
        None => None,
        Some(watermark) if watermark.as_u64().is_some() => None,
        Some(_) => Some("a CHECKPOINT whose `seq_watermark` is not a non-negative integer"),
    }
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
}
