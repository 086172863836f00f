//! Ids as path components: `id-` followed by the lowercase hex of the id's UTF-8 bytes.
//!
//! The encoding has no `/`, no `.` and no upper case, so no id (`..`, `/abs`, `a/b`, `A` next to
//! `a` on a case-insensitive file system) can name anything but its own directory, and decoding
//! accepts only the one canonical spelling, so two directories never decode to the same id.
//! Validation happens before any path is built.

use std::fmt::Write as _;

/// The longest id accepted, in UTF-8 bytes. Its encoding (`3 + 2 * 120 = 243` bytes) stays under
/// the 255-byte file-name limit of common file systems.
pub const ID_BYTES_MAX: usize = 120;

/// The prefix of every encoded id.
pub const ENCODED_ID_PREFIX: &str = "id-";

/// Why an id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("{kind} is empty")]
    Empty {
        /// `"runtime id"` or `"worker id"`.
        kind: &'static str,
    },
    /// The id is longer than [`ID_BYTES_MAX`].
    #[error("{kind} is {id_bytes} bytes long; the limit is {ID_BYTES_MAX}")]
    TooLong {
        /// `"runtime id"` or `"worker id"`.
        kind: &'static str,
        /// Its length in bytes.
        id_bytes: usize,
    },
    /// The id contains a NUL character.
    #[error("{kind} contains NUL at byte {at}")]
    Nul {
        /// `"runtime id"` or `"worker id"`.
        kind: &'static str,
        /// Byte index of the first NUL.
        at: usize,
    },
}

/// Checks that `id` may be used as a `kind` id.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong { kind, id_bytes: id.len() });
    }
    if let Some(at) = id.bytes().position(|b| b == 0) {
        return Err(IdError::Nul { kind, at });
    }
    Ok(())
}

/// The path component for `id`: `id-` + lowercase hex of its UTF-8 bytes.
pub fn encode_id(kind: &'static str, id: &str) -> Result<String, IdError> {
    validate_id(kind, id)?;
    let mut encoded = String::with_capacity(ENCODED_ID_PREFIX.len() + 2 * id.len());
    encoded.push_str(ENCODED_ID_PREFIX);
    for byte in id.bytes() {
        write!(encoded, "{byte:02x}").expect("writing to a String cannot fail");
    }
    Ok(encoded)
}

/// The id a path component encodes, or `None` when the name is not the canonical encoding of a
/// valid id (wrong prefix, odd length, upper-case or non-hex digits, not UTF-8, invalid id).
pub fn decode_id(name: &str) -> Option<String> {
    let hex = name.strip_prefix(ENCODED_ID_PREFIX)?;
    if hex.len() % 2 != 0 || hex.len() > 2 * ID_BYTES_MAX {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()?;
    let id = String::from_utf8(bytes).ok()?;
    validate_id("id", &id).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_lowercase_hex_and_round_trips() {
        assert_eq!(encode_id("worker id", "A/b").expect("valid"), "id-412f62");
        for id in ["..", "/abs", "a/b", "é🙂", "A", "a", "x".repeat(ID_BYTES_MAX).as_str()] {
            let encoded = encode_id("worker id", id).expect("valid");
            assert_eq!(decode_id(&encoded).as_deref(), Some(id));
        }
    }

    #[test]
    fn invalid_ids_and_non_canonical_names_are_refused() {
        assert_eq!(encode_id("runtime id", ""), Err(IdError::Empty { kind: "runtime id" }));
        assert_eq!(encode_id("runtime id", "a\0b"), Err(IdError::Nul { kind: "runtime id", at: 1 }));
        assert!(matches!(encode_id("runtime id", &"x".repeat(ID_BYTES_MAX + 1)), Err(IdError::TooLong { .. })));
        for name in ["id-4A", "id-4", "ID-41", "41", "id-", "id-ff", "id-00", "id-zz", ".id-41"] {
            assert_eq!(decode_id(name), None, "{name}");
        }
    }
}
