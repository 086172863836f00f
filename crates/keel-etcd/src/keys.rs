//! Where a workspace's leases live in etcd: everything under one prefix, so one range read at
//! one revision sees the whole state and one range compare guards a grant.
//!
//! ```text
//! <prefix>/state/generation            the last fencing generation handed out (decimal)
//! <prefix>/state/leases/<lane>/<loop_ts>  {"lease": body, "generation": n, "request": id}
//! <prefix>/intents/<lane>              the last HALT or SPAWN record for the lane
//! ```
//! Lane and `loop_ts` are percent-encoded (anything but `A-Z a-z 0-9 . _ : -`), so a `/` in a
//! lane cannot move a key.

use std::fmt::Write as _;

use keel_kernel::Identity;

/// The longest prefix accepted, in bytes.
pub const PREFIX_BYTES_MAX: usize = 512;

/// The keys of one workspace.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"._:-".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Keys {
    /// The keys under `prefix` (no trailing `/`; one is added).
    pub(crate) fn new(prefix: &str) -> Result<Self, &'static str> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err("the etcd prefix must not be empty");
        }
        if prefix.len() > PREFIX_BYTES_MAX {
            return Err("the etcd prefix is longer than PREFIX_BYTES_MAX");
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// The prefix as given.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything one admission reads and guards.
    pub(crate) fn state(&self) -> String {
        format!("{}/state/", self.prefix)
    }

    pub(crate) fn generation(&self) -> String {
        format!("{}/state/generation", self.prefix)
    }

    fn leases(&self) -> String {
        format!("{}/state/leases/", self.prefix)
    }

    pub(crate) fn lease(&self, identity: &Identity) -> String {
        format!("{}{}/{}", self.leases(), encode(&identity.lane), encode(&identity.loop_ts))
    }

    pub(crate) fn intent(&self, lane: &str) -> String {
        format!("{}/intents/{}", self.prefix, encode(lane))
    }

    /// The identity a lease key names, or `None` for any other key.
    pub(crate) fn identity_of(&self, key: &[u8]) -> Option<Identity> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.leases())?;
        let (lane, loop_ts) = rest.split_once('/')?;
        Some(Identity { lane: decode(lane)?, loop_ts: decode(loop_ts)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_with_slashes_and_spaces_round_trips_through_its_key() {
        let keys = Keys::new("/keel/ws").expect("prefix");
        let identity = Identity { lane: "src/api v2%".into(), loop_ts: "2026-12-05T18:00:00.000001Z".into() };
        let key = keys.lease(&identity);
        assert_eq!(key, "/keel/ws/state/leases/src%2Fapi%20v2%25/2026-12-05T18:00:00.000001Z");
        assert_eq!(keys.identity_of(key.as_bytes()), Some(identity));
        assert_eq!(keys.identity_of(keys.generation().as_bytes()), None);
        assert!(Keys::new("/").is_err());
    }
}
