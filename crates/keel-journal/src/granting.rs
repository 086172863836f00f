//! What every lease backend does the same way around the kernel's decision: a request's
//! validation, the arbiter's view of it, whether a lease is provably dead now, the new lease's
//! identity and body, and which live lease an owner means. The journal and the etcd backend both
//! call these, so a lease granted by either reads the same.

use keel_kernel::arbiter::{Decision, Request};
use keel_kernel::expiry::{Verdict, assess, format_utc};
use keel_kernel::record::{Lease, Writer};
use keel_kernel::tree;
use keel_kernel::value::casefold;
use keel_kernel::{Identity, LiveState, Object};
use serde_json::Value;

use crate::process;
use crate::service::{AcquireRequest, JournalError, JournalOptions, Recorded};

/// Whether `lease` is provably dead at `now` (seconds since the epoch), on this host's view of
/// its holder process.
pub fn verdict(options: &JournalOptions, lease: &Object, now: f64) -> Verdict {
    let holder = process::holder_process(lease, &options.host_id);
    assess(lease, now.floor() as i64, &options.expiry, holder)
}

/// A loop timestamp with microseconds, so two grants in one second differ.
pub fn fresh_loop_ts(now: f64) -> String {
    let seconds = now.floor();
    let micros = ((now - seconds) * 1e6).floor() as u64;
    let base = format_utc(seconds as i64);
    format!("{}.{micros:06}Z", base.trim_end_matches('Z'))
}

/// The new lease's identity on `lane`. A `loop_ts` the caller names must be free, or be taken by
/// a lease being reclaimed, or by this owner's own provably dead lease (an agent restarted with
/// its old `loop_ts`), which is then reclaimed too (added to `reclaimed`, so it is recorded).
/// `Err` carries the identity that is taken.
pub fn new_identity(
    state: &LiveState,
    request: &AcquireRequest,
    lane: &str,
    now: f64,
    reclaimed: &mut Vec<(Identity, Verdict)>,
    judge: impl Fn(&Object) -> Verdict,
) -> Result<Identity, Identity> {
    if let Some(loop_ts) = &request.loop_ts {
        let identity = Identity { loop_ts: loop_ts.clone(), lane: lane.to_owned() };
        let free = match state.lease(&identity) {
            None => true,
            Some(_) if reclaimed.iter().any(|(id, _)| *id == identity) => true,
            Some(lease) => {
                let own = lease.get("holder").and_then(Value::as_str) == Some(request.owner.as_str());
                let verdict = judge(lease);
                if own && verdict.is_dead() {
                    reclaimed.push((identity.clone(), verdict));
                }
                own && verdict.is_dead()
            }
        };
        if identity.loop_ts.is_empty() || !free {
            return Err(identity);
        }
        return Ok(identity);
    }
    let base = fresh_loop_ts(now);
    let mut identity = Identity { loop_ts: base.clone(), lane: lane.to_owned() };
    let mut n = 1;
    while state.lease(&identity).is_some() {
        identity.loop_ts = format!("{base}-{n}");
        n += 1;
    }
    Ok(identity)
}

/// The new lease's body, as every backend records it.
pub fn lease_body(
    options: &JournalOptions,
    request: &AcquireRequest,
    decision: &Decision,
    identity: &Identity,
    now: f64,
) -> Result<Object, JournalError> {
    let Recorded { pid, start, pgid } = request.holder_pid.recorded()?;
    // The lease's protection is fixed now, in its body: whoever judges it later reads its own
    // grace and TTL from it, and may only lengthen them.
    let expiry = &options.expiry;
    let ttl_minutes =
        request.ttl_minutes.unwrap_or(expiry.default_ttl_s as f64 / 60.0).max(expiry.ttl_floor_s as f64 / 60.0);
    let acquired_at = format_utc(now.floor() as i64);
    let lease = Writer { host_id: &options.host_id }.lease(&Lease {
        identity,
        holder: &request.owner,
        acquired_at: &acquired_at,
        decision,
        pid,
        proc_starttime: start,
        pgid,
        ttl_minutes,
        grace_s: expiry.grace_s.max(expiry.grace_floor_s),
        forced: request.force,
        run_id: request.run_id.as_deref(),
    });
    Ok(lease)
}

/// `lease`'s body once `new_owner` adopts it, tied to `holder` (as recorded) and beaten now.
pub fn adopted_body(options: &JournalOptions, lease: &Object, new_owner: &str, holder: &Recorded, now: f64) -> Object {
    let Recorded { pid, start, pgid } = *holder;
    let mut body = lease.clone();
    body.insert("holder".into(), Value::from(new_owner));
    body.insert("host_id".into(), Value::from(options.host_id.clone()));
    body.insert("pid".into(), pid.map_or(Value::Null, Value::from));
    for (member, value) in [("proc_starttime", start), ("pgid", pgid.map(u64::from))] {
        match value {
            Some(value) => body.insert(member.into(), Value::from(value)),
            None => body.remove(member),
        };
    }
    body.insert("heartbeat_at".into(), Value::from(format_utc(now.floor() as i64)));
    body
}

/// The last beat's stamp if a beat of `lease` now would be skipped: the last one (or the grant)
/// is younger than the coalescing floor (the caller's, else the options'), which is capped at half
/// the lease's grace, since a floor past that would let a live lease fall out of its grace and be
/// reclaimed. `None`: beat.
pub fn coalesced(options: &JournalOptions, lease: &Object, floor_s: Option<u64>, now: f64) -> Option<String> {
    let (at, text) = ["heartbeat_at", "acquired_at"]
        .iter()
        .filter_map(|k| lease.get(*k).and_then(Value::as_str))
        .filter_map(|t| keel_kernel::expiry::parse_utc(t).map(|s| (s, t.to_owned())))
        .max()?;
    let grace_s = keel_kernel::expiry::grace_s(lease, &options.expiry);
    let floor = floor_s.or(Some(options.heartbeat_coalesce_s).filter(|&f| f > 0))?.min(grace_s / 2);
    ((now.floor() as i64).saturating_sub(at) < i64::try_from(floor).unwrap_or(i64::MAX)).then_some(text)
}

/// The live lease an owner means: the exact `loop_ts` on `lane`, or the newest lease on `lane`
/// (case-folded) held by `owner`.
pub fn find_owned<'a>(
    state: &'a LiveState,
    lane: &str,
    owner: &str,
    loop_ts: Option<&str>,
) -> Option<(&'a Identity, &'a Object)> {
    let lane = casefold(lane);
    state
        .live_with_identity()
        .filter(|(identity, lease)| {
            casefold(&identity.lane) == lane
                && loop_ts.is_none_or(|ts| identity.loop_ts == ts)
                && lease.get("holder").and_then(Value::as_str) == Some(owner)
        })
        .last()
}

/// The arbiter's view of a lease request.
pub fn arbiter_request(request: &AcquireRequest) -> Request {
    Request {
        lane: request.lane.clone(),
        kind: request.kind.clone(),
        tree: request.tree.clone(),
        mode: request.mode.clone(),
        force: request.force,
    }
}

/// Refuses a request that is wrong whatever the journal holds: checked once, before the writer
/// lock, and not again on each retry of a wait. A blank lane would be granted under a name nobody
/// can type, a blank `loop_ts` read as an identity already live, an unknown mode as exclusive, and a
/// tree outside the workspace would collide with nothing.
pub fn validate(request: &AcquireRequest) -> Result<(), JournalError> {
    if request.owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("a lease needs an owner".into()));
    }
    if request.ttl_minutes.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        return Err(JournalError::InvalidRequest("ttl_minutes must be a positive number".into()));
    }
    if !request.lane.is_empty() && request.lane.trim().is_empty() {
        return Err(JournalError::InvalidRequest(
            "the lane must not be blank (leave it empty to let the arbiter pick)".into(),
        ));
    }
    if request.loop_ts.as_deref().is_some_and(|ts| ts.trim().is_empty()) {
        return Err(JournalError::InvalidRequest("loop_ts must not be blank (omit it to have one generated)".into()));
    }
    if request.loop_ts.as_deref() == Some(keel_kernel::GENERATION_WATERMARK) {
        return Err(JournalError::InvalidRequest(format!(
            "loop_ts {:?} is reserved (it carries the grant counter through compaction)",
            keel_kernel::GENERATION_WATERMARK
        )));
    }
    arbiter_request(request).validate().map_err(|e| JournalError::InvalidRequest(e.to_string()))?;
    request.holder_pid.recorded()?;
    if let Some((entry, why)) = request.tree.iter().find_map(|e| tree::requestable(e).err().map(|why| (e, why))) {
        return Err(JournalError::InvalidRequest(format!("tree entry {entry:?} cannot be requested: {why}")));
    }
    Ok(())
}

/// Refuses a blank owner: a record that names no one can be traced to no one.
pub fn owner_named(owner: &str) -> Result<(), JournalError> {
    if owner.trim().is_empty() {
        return Err(JournalError::InvalidRequest("the owner must not be blank".into()));
    }
    Ok(())
}
