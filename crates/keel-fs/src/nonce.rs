//! Unguessable names: temp files and lock nonces.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of randomness in a nonce (128 bits: collisions are not a design concern).
const NONCE_BYTES: usize = 16;

/// How many times to ask `getrandom` before falling back (it only fails on kernels without it).
const GETRANDOM_ATTEMPTS_MAX: u32 = 4;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 32 lowercase hex characters from `getrandom(2)`. Where that is unavailable, pid, time and a
/// process-wide counter stand in: unique within a host, though guessable.
pub(crate) fn nonce_hex() -> String {
    let mut bytes = [0_u8; NONCE_BYTES];
    if !fill_random(&mut bytes) {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let fallback = (u128::from(std::process::id()) << 96) ^ nanos ^ (u128::from(count) << 64);
        bytes = fallback.to_le_bytes();
    }
    let mut out = String::with_capacity(NONCE_BYTES * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn fill_random(bytes: &mut [u8]) -> bool {
    let mut filled = 0;
    for _ in 0..GETRANDOM_ATTEMPTS_MAX {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
        if filled == bytes.len() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_32_hex_chars_and_differ() {
        let a = nonce_hex();
        let b = nonce_hex();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
