//! A lease held for the length of some work: beaten on a thread of its own while the work runs,
//! and released when it ends. What the holder does when a beat finds the lease gone (stop the
//! work, or say so) is the caller's, through [`HoldEvents`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_kernel::expiry::{ExpiryPolicy, grace_s, ttl_s};
use keel_kernel::{Identity, Object};

use crate::backend::{LeaseBackend, LeaseRef};
use crate::service::{Grant, JournalError};

/// How often the beat thread looks whether the work ended.
const TICK: Duration = Duration::from_millis(100);

/// Seconds between a lease's heartbeats: `wanted_s`, but at most a quarter of the lease's TTL and
/// of its grace (so it never idles into its own expiry), and at least one.
pub fn beat_period_s(lease: &Object, expiry: &ExpiryPolicy, wanted_s: u64) -> u64 {
    wanted_s.min(ttl_s(lease, expiry).min(grace_s(lease, expiry)) / 4).max(1)
}

/// What happens to a held lease while the work runs, for the holder to act on.
pub trait HoldEvents {
    /// A beat failed (it is tried again at the next period; the lease's TTL outlasts several).
    fn beat_failed(&self, _error: &JournalError) {}

    /// A beat found the lease gone (reclaimed, scavenged, or expired on a service that judges
    /// TTLs itself), or beats failed for three quarters of its TTL, after which the holder cannot
    /// know it still holds it: no more beats are tried, and the holder should stop writing.
    /// `done` turns true once the work has ended.
    fn lost(&self, _done: &AtomicBool) {}
}

/// How held work ended.
#[derive(Debug)]
pub struct Held<T> {
    /// What the work returned.
    pub value: T,
    /// Whether a beat found the lease gone.
    pub lost: bool,
    /// The release after the work: the lease given back, or `None` if it was no longer live.
    pub released: Result<Option<Identity>, JournalError>,
}

/// Runs `work` while `grant`'s lease, held by `owner`, is beaten every
/// [`beat_period_s`]`(wanted_s)`; then releases it.
pub fn hold<L, T>(
    backend: &L,
    grant: &Grant,
    owner: &str,
    expiry: &ExpiryPolicy,
    wanted_s: u64,
    events: &(impl HoldEvents + Sync),
    work: impl FnOnce() -> T,
) -> Held<T>
where
    L: LeaseBackend + Sync,
{
    let period = Duration::from_secs(beat_period_s(&grant.lease, expiry, wanted_s));
    // Past this without a beat that went through, the lease may have ended where it is kept.
    let blind_max = Duration::from_secs(ttl_s(&grant.lease, expiry)) * 3 / 4;
    let lease = LeaseRef::exact(&grant.identity);
    let (done, lost) = (AtomicBool::new(false), AtomicBool::new(false));
    let value = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut waited = Duration::ZERO;
            let mut last_beat = Instant::now();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
                waited += TICK;
                if waited < period {
                    continue;
                }
                waited = Duration::ZERO;
                match backend.heartbeat(&lease, owner, None) {
                    Ok(Some(_)) => last_beat = Instant::now(),
                    Ok(None) => {
                        lost.store(true, Ordering::SeqCst);
                        return events.lost(&done);
                    }
                    Err(error) => {
                        events.beat_failed(&error);
                        if last_beat.elapsed() >= blind_max {
                            lost.store(true, Ordering::SeqCst);
                            return events.lost(&done);
                        }
                    }
                }
            }
        });
        let value = work();
        done.store(true, Ordering::SeqCst);
        value
    });
    Held { value, lost: lost.load(Ordering::SeqCst), released: backend.release(&lease, owner) }
}
