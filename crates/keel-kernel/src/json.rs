//! Writing records in the journal's recommended style: keys sorted, `", "` and `": "` separators,
//! non-ASCII kept as UTF-8, floats as Python writes them. This is byte-for-byte what the Python
//! `dos-kernel` package writes (`json.dumps(record, sort_keys=True, ensure_ascii=False)`), so a
//! journal keel appends to reads the same to both.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

use crate::value::python_float_repr;

/// The formatter behind [`to_line`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonStyle;

impl Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_float_repr(value).as_bytes())
    }
}

/// Serialises a value as one line of journal-style JSON (no trailing newline). Object keys come
/// out sorted, struct fields included: the value goes through `serde_json::Value`, whose maps are
/// ordered by key.
pub fn to_line<T: Serialize + ?Sized>(value: &T) -> String {
    let value = serde_json::to_value(value).expect("keel's types serialise to JSON values");
    let mut out = Vec::with_capacity(256);
    let mut serializer = Serializer::with_formatter(&mut out, PythonStyle);
    value.serialize(&mut serializer).expect("serialising JSON values into memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_written_like_python_json_dumps_sort_keys() {
        let record = json!({"seq": 2, "op": "ACQUIRE", "tree": ["src/", "ü"], "x": 1.5, "big": 1e16, "n": null});
        assert_eq!(
            to_line(&record),
            r#"{"big": 1e+16, "n": null, "op": "ACQUIRE", "seq": 2, "tree": ["src/", "ü"], "x": 1.5}"#
        );
    }

    #[test]
    fn fixture_lines_round_trip_byte_for_byte() {
        let line = r#"{"command": null, "handle": "8118", "host_id": null, "lane": "STRASSE", "loop_ts": "", "op": "HALT", "reason": "stop", "run_id": null, "seq": 1, "ts": "2026-11-23T07:47:52Z"}"#;
        let value: serde_json::Value = serde_json::from_str(line).expect("valid");
        assert_eq!(to_line(&value), line);
    }
}
