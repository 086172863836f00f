//! The expiry predicate: is a lease provably dead?
//!
//! Time and process facts arrive as arguments; the kernel never reads a clock or a process table.
//! A lease beaten within the grace is never dead, whatever else is known. Past the grace it is dead
//! when it has been idle for its TTL (its `ttl_minutes`, or a default backstop), or sooner when its
//! holder process is known to be gone: a dead holder only shortens the reclaim of a lease that is
//! already past the grace, it never reclaims a fresh one (the pid may simply not be visible here).

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::value::Object;

/// Timing rules for reclaiming leases.
///
/// A lease's protection is fixed when it is granted: its body records its grace (`grace_s`) and
/// TTL (`ttl_minutes`), and whoever judges it later may only lengthen them (`grace_floor_s`),
/// never shorten them. A requester that chose a short grace for itself cannot take someone
/// else's region sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryPolicy {
    /// TTL of a lease that names none (`ttl_minutes` missing, zero or not a number), and the TTL
    /// recorded in a lease granted without one.
    pub default_ttl_s: u64,
    /// The grace recorded in the leases this service grants: a lease beaten (or acquired) this
    /// recently is never dead.
    pub grace_s: u64,
    /// The least grace any lease gets, whatever it recorded (a workspace's policy).
    pub grace_floor_s: u64,
    /// The least TTL any lease gets, whatever it recorded (a workspace's policy).
    pub ttl_floor_s: u64,
    /// How far ahead of the judge's clock a stamp may be and still be believed. A stamp further
    /// ahead (a skewed host's clock, or a hand-edited `2099-…`) would keep a dead lease alive
    /// until then; it is ignored, and the lease ages from its other evidence.
    pub clock_skew_s: u64,
}

/// The default clock-skew allowance, in seconds.
pub const CLOCK_SKEW_S_DEFAULT: u64 = 300;

/// The grace of a lease that records none (one written by another tool, or by an older keel).
pub const GRACE_S_DEFAULT: u64 = 120;

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            default_ttl_s: 2 * 60 * 60,
            grace_s: GRACE_S_DEFAULT,
            grace_floor_s: 0,
            ttl_floor_s: 0,
            clock_skew_s: CLOCK_SKEW_S_DEFAULT,
        }
    }
}

/// The grace that protects `lease`: the one it was granted with, else the larger of the default
/// and this policy's, and never less than the policy's floor.
pub fn grace_s(lease: &Object, policy: &ExpiryPolicy) -> u64 {
    let recorded = lease.get("grace_s").and_then(Value::as_u64);
    recorded.unwrap_or(GRACE_S_DEFAULT.max(policy.grace_s)).max(policy.grace_floor_s)
}

/// What is known about the process that holds a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderProcess {
    /// It is running (same pid and start time).
    Alive,
    /// It is provably gone (same host, no such pid, or a pid reused by another start time).
    Gone,
    /// Nothing is known (another host, no pid recorded).
    Unknown,
}

/// The expiry verdict for one lease, with the figures that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Not provably dead.
    Alive {
        /// Seconds since the last heartbeat (or the acquisition).
        idle_s: u64,
        /// The TTL that applies.
        ttl_s: u64,
    },
    /// Idle for at least its TTL.
    Expired {
        /// Seconds since the last heartbeat (or the acquisition).
        idle_s: u64,
        /// The TTL that applies.
        ttl_s: u64,
    },
    /// Past the grace and its holder process is gone.
    HolderGone {
        /// Seconds since the last heartbeat (or the acquisition).
        idle_s: u64,
    },
    /// A stamp further ahead than the clock-skew allowance was not believed; the lease was judged
    /// by its other evidence (or, with none, as showing no sign of life).
    ClockSkew {
        /// The stamp not believed, seconds since the Unix epoch.
        stamp_unix_s: i64,
        /// Seconds since the last believable stamp; `None` when there is none.
        idle_s: Option<u64>,
        /// Whether the lease may be reclaimed.
        dead: bool,
    },
    /// No stamp (`heartbeat_at`, `acquired_at`, a timestamp `loop_ts`) is a readable time:
    /// nothing shows it alive, so it may be reclaimed ("never" is not an outcome).
    NoTimestamp,
}

impl Verdict {
    /// Whether the lease may be reclaimed.
    pub fn is_dead(self) -> bool {
        matches!(
            self,
            Verdict::Expired { .. }
                | Verdict::HolderGone { .. }
                | Verdict::NoTimestamp
                | Verdict::ClockSkew { dead: true, .. }
        )
    }
}

/// The verdict for people: the figures that decided it, as the `SCAVENGE` reason records them.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Expired { idle_s, ttl_s } => write!(f, "idle {idle_s}s, past its ttl of {ttl_s}s"),
            Verdict::HolderGone { idle_s } => write!(f, "holder process gone, idle {idle_s}s"),
            Verdict::Alive { idle_s, .. } => write!(f, "alive, idle {idle_s}s"),
            Verdict::ClockSkew { stamp_unix_s, idle_s, dead } => {
                let stamp = format_utc(*stamp_unix_s);
                let life = if *dead { "reclaimable" } else { "alive" };
                match idle_s {
                    Some(idle_s) => write!(f, "clock skew: stamp {stamp} not believed; {life}, idle {idle_s}s"),
                    None => write!(f, "clock skew: stamp {stamp} not believed; no other sign of life, {life}"),
                }
            }
            Verdict::NoTimestamp => f.write_str("no readable timestamp: no sign of life, reclaimable"),
        }
    }
}

/// Parses a journal timestamp (`YYYY-MM-DDTHH:MM:SSZ`, RFC 3339) to seconds since the Unix epoch.
///
/// Any RFC 3339 time is read: a numeric offset (`+01:00`) and a lowercase `t` or `z`, which
/// `humantime` does not take, are handled here. A heartbeat from a writer that uses an offset was
/// once unreadable, so its lease looked idle since its acquisition and was reclaimed while live.
/// A time with no zone at all is read as UTC.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let (local, offset_s) = split_offset(text)?;
    let time = match local.as_bytes().get(10) {
        Some(b't') => humantime::parse_rfc3339_weak(&format!("{}T{}", &local[..10], &local[11..])),
        _ => humantime::parse_rfc3339_weak(local),
    }
    .ok()?;
    let local_s = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_secs()).ok()?,
    };
    local_s.checked_sub(offset_s)
}

/// `text` without its zone, and the zone's offset from UTC in seconds (`None` for a malformed
/// numeric offset).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let b = text.as_bytes();
    let n = b.len();
    if n < 6 || !matches!(b[n - 6], b'+' | b'-') || b[n - 3] != b':' || !text.is_char_boundary(n - 6) {
        return Some((text, 0));
    }
    let hours: i64 = text.get(n - 5..n - 3)?.parse().ok().filter(|h| (0..24).contains(h))?;
    let minutes: i64 = text.get(n - 2..)?.parse().ok().filter(|m| (0..60).contains(m))?;
    let sign = if b[n - 6] == b'-' { -1 } else { 1 };
    Some((&text[..n - 6], sign * (hours * 3600 + minutes * 60)))
}

/// Formats seconds since the Unix epoch as a journal timestamp (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn format_utc(unix_s: i64) -> String {
    let time = if unix_s >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_s.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_s.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

fn time_member(lease: &Object, member: &str) -> Option<i64> {
    lease.get(member).and_then(Value::as_str).and_then(parse_utc)
}

/// The TTL that applies to a lease, in seconds: the one it records, else the policy's default,
/// and never less than the policy's floor.
pub fn ttl_s(lease: &Object, policy: &ExpiryPolicy) -> u64 {
    lease
        .get("ttl_minutes")
        .and_then(Value::as_f64)
        .filter(|m| m.is_finite() && *m > 0.0)
        .map_or(policy.default_ttl_s, |m| (m * 60.0).min(u64::MAX as f64) as u64)
        .max(policy.ttl_floor_s)
}

/// Assesses one lease at `now_unix_s`.
///
/// Its evidence of life is its newest believable stamp: `heartbeat_at`, else `acquired_at`, else
/// its `loop_ts` when that is a time (as keel and dos-kernel write it). A stamp further ahead of
/// `now_unix_s` than the policy's skew allowance is not believed ([`Verdict::ClockSkew`]); a lease
/// with no believable stamp shows no sign of life and may be reclaimed.
pub fn assess(lease: &Object, now_unix_s: i64, policy: &ExpiryPolicy, holder: HolderProcess) -> Verdict {
    let stamps = [time_member(lease, "heartbeat_at"), time_member(lease, "acquired_at"), time_member(lease, "loop_ts")];
    let horizon = now_unix_s.saturating_add(i64::try_from(policy.clock_skew_s).unwrap_or(i64::MAX));
    let disbelieved = stamps.iter().flatten().copied().filter(|&stamp| stamp > horizon).max();
    let last = stamps.iter().flatten().copied().filter(|&stamp| stamp <= horizon).max();
    let verdict = match last {
        Some(last) => judge(lease, now_unix_s, last, policy, holder),
        None => Verdict::NoTimestamp,
    };
    match disbelieved {
        Some(stamp_unix_s) => Verdict::ClockSkew {
            stamp_unix_s,
            idle_s: last.map(|last| u64::try_from(now_unix_s.saturating_sub(last)).unwrap_or(0)),
            dead: verdict.is_dead(),
        },
        None => verdict,
    }
}

/// The verdict from a lease's last believable stamp.
fn judge(lease: &Object, now_unix_s: i64, last: i64, policy: &ExpiryPolicy, holder: HolderProcess) -> Verdict {
    // A stamp a little ahead (inside the skew allowance) counts as fresh.
    let idle_s = u64::try_from(now_unix_s.saturating_sub(last)).unwrap_or(0);
    let ttl_s = ttl_s(lease, policy);
    // Timestamps are whole seconds, cut down: a lease stamped `:10` may have been beaten at
    // `:10.9`, so an idle time read as `n` may truly be just over `n - 1`. Only more than the
    // grace (and more than the TTL) proves it: a lease beaten within the grace is never dead.
    if idle_s <= grace_s(lease, policy) {
        return Verdict::Alive { idle_s, ttl_s };
    }
    if idle_s > ttl_s {
        return Verdict::Expired { idle_s, ttl_s };
    }
    if holder == HolderProcess::Gone {
        return Verdict::HolderGone { idle_s };
    }
    Verdict::Alive { idle_s, ttl_s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(beat: &str, ttl_minutes: &Value) -> Object {
        let Value::Object(o) =
            json!({"acquired_at": "2026-01-01T00:00:00Z", "heartbeat_at": beat, "ttl_minutes": ttl_minutes})
        else {
            unreachable!()
        };
        o
    }

    #[test]
    fn time_round_trips() {
        let t = parse_utc("2026-11-23T07:47:52Z").expect("valid");
        assert_eq!(format_utc(t), "2026-11-23T07:47:52Z");
        assert_eq!(parse_utc("yesterday"), None);
    }

    /// Found by a sweep: a valid heartbeat with an offset was unreadable, so a live lease looked
    /// idle since its acquisition and was reclaimed.
    #[test]
    fn any_rfc_3339_time_is_read() {
        let utc = parse_utc("2026-11-23T20:31:15Z").expect("valid");
        for same in [
            "2026-11-23T21:31:15+01:00",
            "2026-11-23T15:31:15-05:00",
            "2026-11-23t20:31:15z",
            "2026-11-23T20:31:15+00:00",
            "2026-11-23T20:31:15.250Z",
            "2026-11-23T20:31:15",
        ] {
            assert_eq!(parse_utc(same), Some(utc), "{same}");
        }
        assert_eq!(parse_utc("2026-11-23T21:31:15+25:00"), None);
        assert_eq!(parse_utc("2026-11-23T21:31:15+01:60"), None);
    }

    #[test]
    fn a_lease_beaten_within_the_grace_is_never_dead_even_if_its_holder_is_gone() {
        let policy = ExpiryPolicy { default_ttl_s: 60, grace_s: 120, ..ExpiryPolicy::default() };
        let beat = parse_utc("2026-01-01T01:00:00Z").expect("valid");
        let l = lease("2026-01-01T01:00:00Z", &json!(null));
        // Read as 120 s idle, it may have been beaten 119.1 s ago: only 121 s proves the grace over.
        assert!(!assess(&l, beat + 120, &policy, HolderProcess::Gone).is_dead());
        assert!(assess(&l, beat + 121, &policy, HolderProcess::Gone).is_dead());
    }

    /// Found by a sweep: any requester with `--grace-s 0` reclaimed another holder's lease the
    /// moment its TTL passed; the grace is now the lease's own, and a judge may only lengthen it.
    #[test]
    fn a_lease_keeps_the_grace_it_was_granted_with_whatever_grace_its_judge_uses() {
        let beat = parse_utc("2026-01-01T01:00:00Z").expect("valid");
        let mut l = lease("2026-01-01T01:00:00Z", &json!(1));
        l.insert("grace_s".into(), json!(600));
        let careless = ExpiryPolicy { grace_s: 0, ..ExpiryPolicy::default() };
        assert!(!assess(&l, beat + 599, &careless, HolderProcess::Gone).is_dead(), "inside its own grace");
        assert!(assess(&l, beat + 601, &careless, HolderProcess::Gone).is_dead());
        let floor = ExpiryPolicy { grace_floor_s: 900, ..ExpiryPolicy::default() };
        assert!(!assess(&l, beat + 601, &floor, HolderProcess::Gone).is_dead(), "a floor lengthens it");
        // A lease that records no grace has the default, however short the judge's own.
        let unrecorded = lease("2026-01-01T01:00:00Z", &json!(1));
        assert!(!assess(&unrecorded, beat + 100, &careless, HolderProcess::Gone).is_dead());
        assert!(assess(&unrecorded, beat + 121, &careless, HolderProcess::Gone).is_dead());
    }

    #[test]
    fn a_gone_holder_shortens_the_reclaim_past_the_grace_only() {
        let policy = ExpiryPolicy::default();
        let beat = parse_utc("2026-01-01T01:00:00Z").expect("valid");
        let l = lease("2026-01-01T01:00:00Z", &json!(30));
        assert_eq!(assess(&l, beat + 600, &policy, HolderProcess::Alive), Verdict::Alive { idle_s: 600, ttl_s: 1800 });
        assert_eq!(assess(&l, beat + 600, &policy, HolderProcess::Gone), Verdict::HolderGone { idle_s: 600 });
        assert!(!assess(&l, beat + 1800, &policy, HolderProcess::Alive).is_dead());
        assert!(assess(&l, beat + 1801, &policy, HolderProcess::Alive).is_dead());
    }

    #[test]
    fn verdicts_read_as_text_not_as_debug_output() {
        assert_eq!(Verdict::HolderGone { idle_s: 0 }.to_string(), "holder process gone, idle 0s");
        assert_eq!(Verdict::Expired { idle_s: 61, ttl_s: 60 }.to_string(), "idle 61s, past its ttl of 60s");
        assert_eq!(Verdict::Alive { idle_s: 5, ttl_s: 60 }.to_string(), "alive, idle 5s");
        assert_eq!(Verdict::NoTimestamp.to_string(), "no readable timestamp: no sign of life, reclaimable");
    }

    /// Found by a sweep: a lease with no readable time was never reclaimed, and a heartbeat
    /// stamped 2099 kept a dead lease alive until then.
    #[test]
    fn a_lease_without_a_readable_time_shows_no_sign_of_life_and_may_be_reclaimed() {
        let Value::Object(l) = json!({"acquired_at": "?", "loop_ts": "run-7"}) else { unreachable!() };
        let verdict = assess(&l, 1_000_000, &ExpiryPolicy::default(), HolderProcess::Alive);
        assert_eq!(verdict, Verdict::NoTimestamp);
        assert!(verdict.is_dead());
        // A loop_ts that is a time is evidence too.
        let Value::Object(l) = json!({"acquired_at": "?", "loop_ts": "2026-01-01T01:00:00.123456Z"}) else {
            unreachable!()
        };
        let start = parse_utc("2026-01-01T01:00:00Z").expect("valid");
        assert!(!assess(&l, start + 60, &ExpiryPolicy::default(), HolderProcess::Unknown).is_dead());
    }

    #[test]
    fn a_stamp_beyond_the_skew_allowance_is_not_believed_and_the_lease_ages_from_the_rest() {
        let start = parse_utc("2026-01-01T01:00:00Z").expect("valid");
        let l = lease("2099-01-01T00:00:00Z", &json!(1));
        let policy = ExpiryPolicy::default();
        let verdict = assess(&l, start + 3 * 3600, &policy, HolderProcess::Unknown);
        let stamp_unix_s = parse_utc("2099-01-01T00:00:00Z").expect("valid");
        assert_eq!(verdict, Verdict::ClockSkew { stamp_unix_s, idle_s: Some(3 * 3600 + 3600), dead: true });
        assert!(verdict.to_string().contains("2099-01-01T00:00:00Z"), "{verdict}");
        // Inside the allowance a stamp ahead is fresh.
        let ahead = lease(&format_utc(start + 200), &json!(1));
        assert_eq!(assess(&ahead, start, &policy, HolderProcess::Unknown), Verdict::Alive { idle_s: 0, ttl_s: 60 });
    }
}
