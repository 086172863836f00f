//! JSON values read the way the reference implementation (Python) reads them.
//!
//! The journal format was defined by a Python package, so "missing, null, false, 0 or empty"
//! and "its text" mean Python truthiness and Python `str()`. Matching those exactly is what lets
//! a `dos-kernel` journal replay to the same live set here.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A JSON object: a journal record or a lease body. Unknown members are carried unchanged.
pub type Object = Map<String, Value>;

/// Python truthiness of a JSON value: `null`, `false`, `0`, `0.0`, `""`, `[]` and `{}` are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => python_float(n) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `str(value or "")` in Python: the text a lease identity component is compared by.
pub fn identity_text(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(v) if !truthy(v) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => python_str(other),
    }
}

/// Python's `str()` of a JSON-decoded value (`True`, `1.5`, `1e+16`, `['a', 1]`, `{'k': None}`).
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => python_int(n).map_or_else(|| python_float_repr(python_float(n)), str::to_owned),
        Value::String(s) => python_string_repr(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> =
                map.iter().map(|(k, v)| format!("{}: {}", python_string_repr(k), python_repr(v))).collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// How Python reads a JSON number written without a fraction or exponent: as an `int`, of any
/// size. Its text then is its `str()` (JSON has no leading zeros), except that `-0` is `0`.
fn python_int(n: &Number) -> Option<&str> {
    let text = n.as_str();
    if text.contains(['.', 'e', 'E']) {
        return None;
    }
    Some(if text == "-0" { "0" } else { text })
}

/// How Python reads any other JSON number: as the nearest `float`, infinite beyond its range
/// (`1e400`). Rust's parser rounds the same way.
fn python_float(n: &Number) -> f64 {
    n.as_str().parse().unwrap_or(f64::NAN)
}

/// Python's `repr(float)`: shortest round-trip digits, scientific outside `1e-4 <= |x| < 1e16`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e-7", "1e16".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // position of the decimal point within `digits`
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() { first.to_owned() } else { format!("{first}.{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

fn python_string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `==` between two JSON-decoded values: numbers compare by value across int and float
/// (`7 == 7.0`), `true == 1`, containers compare element-wise the same way.
pub fn python_eq(a: &Value, b: &Value) -> bool {
    fn number(value: &Value) -> Option<f64> {
        match value {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Number(n) => Some(python_float(n)),
            _ => None,
        }
    }
    // Integers compare exactly (f64 would merge neighbours above 2^53).
    if let (Value::Number(x), Value::Number(y)) = (a, b)
        && let (Some(x), Some(y)) = (python_int(x), python_int(y))
    {
        return x == y;
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| python_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| python_eq(v, w)))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// `int(value)` where non-numbers count as 0: the reading of `seq` and `seq_watermark`.
pub fn seq_number(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or_else(|| {
            // Negative integers and floats: Python's int() truncates toward zero; below 1 counts as 0.
            n.as_f64().filter(|f| f.is_finite() && *f >= 1.0).map_or(0, |f| f.trunc() as u64)
        }),
        Some(Value::Bool(true)) => 1,
        _ => 0,
    }
}

/// Python's `str.isspace` for one character: Unicode `White_Space` plus the ASCII separators
/// U+001C..U+001F, which Python strips and Rust's `char::is_whitespace` does not.
pub fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(python_isspace)
}

/// Python's `str.casefold()` (full Unicode case folding, so `ß` folds to `ss`).
pub fn casefold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    caseless::default_case_fold_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_text_follows_python_str_of_truthy_values() {
        assert_eq!(identity_text(None), "");
        assert_eq!(identity_text(Some(&json!(null))), "");
        assert_eq!(identity_text(Some(&json!(false))), "");
        assert_eq!(identity_text(Some(&json!(0))), "");
        assert_eq!(identity_text(Some(&json!(0.0))), "");
        assert_eq!(identity_text(Some(&json!([]))), "");
        assert_eq!(identity_text(Some(&json!(true))), "True");
        assert_eq!(identity_text(Some(&json!(7))), "7");
        assert_eq!(identity_text(Some(&json!(1.5))), "1.5");
        assert_eq!(identity_text(Some(&json!("0"))), "0");
        assert_eq!(identity_text(Some(&json!(["a", 1, null]))), "['a', 1, None]");
        assert_eq!(identity_text(Some(&json!({"k": "it's"}))), "{'k': \"it's\"}");
    }

    #[test]
    fn numbers_read_as_python_reads_their_text() {
        let read = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
        // An integer of any size is an exact `int`; `-0` is `0`.
        assert_eq!(identity_text(Some(&read("123456789012345678901234567890"))), "123456789012345678901234567890");
        assert_eq!(identity_text(Some(&read("-18446744073709551617"))), "-18446744073709551617");
        assert_eq!(identity_text(Some(&read("-0"))), "");
        // Anything else is the nearest float, infinite past its range.
        assert_eq!(identity_text(Some(&read("1E5"))), "100000.0");
        assert_eq!(identity_text(Some(&read("1e400"))), "inf");
        assert_eq!(identity_text(Some(&read("-0.0"))), "");
        assert!(python_eq(&read("123456789012345678901234567890"), &read("123456789012345678901234567890")));
        assert!(!python_eq(&read("123456789012345678901234567890"), &read("123456789012345678901234567891")));
        assert!(python_eq(&read("-0"), &read("0")));
        assert!(python_eq(&read("7"), &read("7.0")));
        assert!(python_eq(&read("1e400"), &read("2e400")));
    }

    #[test]
    fn float_repr_matches_python() {
        for (x, want) in [
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (123.456, "123.456"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn seq_number_reads_numbers_only() {
        assert_eq!(seq_number(Some(&json!(12))), 12);
        assert_eq!(seq_number(Some(&json!(3.9))), 3);
        assert_eq!(seq_number(Some(&json!(-4))), 0);
        assert_eq!(seq_number(Some(&json!("12"))), 0);
        assert_eq!(seq_number(None), 0);
    }

    #[test]
    fn strip_and_casefold_follow_python() {
        assert_eq!(python_strip("\u{1f} a \u{3000}"), "a");
        assert_eq!(casefold("STRASSE"), casefold("straße"));
        assert_eq!(casefold("Src/API"), "src/api");
    }
}
