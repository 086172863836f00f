//! [`EtcdBackend`]: the lease service on etcd. Every state change is read-decide-commit: read
//! the workspace's state at one revision (linearizable), let the kernel decide, commit with a
//! transaction that fails if anything under the state prefix was written after that revision,
//! and start again on a conflict.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use keel_journal::granting::{self, arbiter_request, find_owned, owner_named, validate};
use keel_journal::{
    AcquireOutcome, AcquireRequest, Adopted, Beat, Grant, HolderPid, JournalError, JournalOptions, LeaseBackend,
    LeaseRef, LiveLease, LiveView, Location, Stats, Stopped,
};
use keel_kernel::admission::{Admission, admit};
use keel_kernel::arbiter::{Decision, Outcome};
use keel_kernel::expiry::{Verdict, format_utc};
use keel_kernel::record::Writer;
use keel_kernel::replay::{Generation, StateSnapshot};
use keel_kernel::{Identity, LiveState, Object};
use serde_json::{Value, json};

mod migrate;

pub use migrate::{MOVED_LANE, Migrated};

use crate::keys::Keys;
use crate::remote::Remote;

/// How many conflicting commits one operation retries before it gives up (each lost to another
/// client's commit, so the fleet as a whole made progress meanwhile).
const CONFLICTS_MAX: u32 = 200;
/// The most keys one read of a workspace's state returns.
pub const STATE_KEYS_MAX: i64 = 100_000;
/// etcd refuses leases shorter than this (its `--min-lease-ttl` default), in seconds.
const ETCD_TTL_FLOOR_S: i64 = 2;
/// The first and the longest pause between attempts of a waiting acquire, in milliseconds.
const WAIT_BACKOFF_MS: (u64, u64) = (20, 500);

/// How to reach etcd and where the workspace's keys are.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The members' client URLs (`http://host:2379`).
    pub endpoints: Vec<String>,
    /// The key prefix of this workspace (`/keel/<name>`).
    pub prefix: String,
    /// How long one request to one member may take before the next member is tried.
    pub request_timeout: Duration,
    /// How long connecting to one member may take.
    pub connect_timeout: Duration,
}

impl EtcdOptions {
    /// `endpoints` and `prefix` with the default timeouts (1 s per request, 1 s to connect).
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Self {
        Self {
            endpoints,
            prefix: prefix.to_owned(),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// A lease stored in etcd, as read.
#[derive(Debug, Clone)]
struct Stored {
    identity: Identity,
    lease: Object,
    generation: u64,
    request: String,
    etcd_lease: i64,
    mod_revision: i64,
    create_revision: i64,
}

/// The workspace's state at one revision.
#[derive(Debug, Clone)]
struct View {
    revision: i64,
    /// In first-acquired order.
    leases: Vec<Stored>,
    /// The last generation handed out.
    generation: u64,
    /// Keys under the state prefix that are not what keel writes, with their text.
    damaged: Vec<(String, String)>,
}

impl View {
    fn state(&self) -> LiveState {
        LiveState::from_snapshot(StateSnapshot {
            live: self.leases.iter().map(|s| (s.identity.clone(), s.lease.clone())).collect(),
            generations: self
                .leases
                .iter()
                .map(|s| Generation {
                    loop_ts: s.identity.loop_ts.clone(),
                    lane: s.identity.lane.clone(),
                    generation: s.generation,
                })
                .collect(),
            counter: self.generation,
            max_seq: 0,
            corrupt: Vec::new(),
            records: self.leases.len() as u64,
            op_counts: std::collections::BTreeMap::new(),
            excused: Vec::new(),
        })
    }

    fn stored(&self, identity: &Identity) -> Option<&Stored> {
        self.leases.iter().find(|s| s.identity == *identity)
    }

    fn stopped(&self) -> Option<Stopped> {
        self.damaged.first().map(|(key, raw)| Stopped {
            line_number: 0,
            raw: format!("{key}: {raw}"),
            more: self.damaged.len() - 1,
        })
    }
}

/// keel's lease service on etcd v3. `Send + Sync`; one per process is enough.
pub struct EtcdBackend {
    remote: Remote,
    keys: Keys,
    options: JournalOptions,
    /// `etcd:<prefix>`: what a workspace's write gate binds to.
    place: String,
    requests: AtomicU64,
    /// The state as this backend last read or wrote it. A change guarded on its revision needs no
    /// read first: if anything was written since, the guard fails and the change starts again
    /// from a fresh read.
    cache: Mutex<Option<View>>,
    /// etcd leases this process granted, by TTL, with when each was last granted or kept alive
    /// here: a new lease key joins one still fresh instead of costing a grant of its own.
    etcd_leases: Mutex<HashMap<i64, (i64, Instant)>>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.remote.endpoints())
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

impl EtcdBackend {
    /// A backend on the cluster `etcd` names, deciding with `options`' taxonomy and expiry. Does
    /// not connect yet: the first operation does.
    pub fn new(etcd: EtcdOptions, options: JournalOptions) -> Result<Self, JournalError> {
        let keys = Keys::new(&etcd.prefix).map_err(|why| JournalError::InvalidRequest(why.to_owned()))?;
        let service = format!("etcd ({})", etcd.endpoints.join(","));
        let remote = Remote::new(etcd.endpoints, etcd.request_timeout, etcd.connect_timeout, service)?;
        let place = format!("etcd:{}", keys.prefix());
        Ok(Self {
            remote,
            keys,
            options,
            place,
            requests: AtomicU64::new(0),
            cache: Mutex::new(None),
            etcd_leases: Mutex::new(HashMap::new()),
        })
    }

    /// The options decisions are made with.
    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    fn now(&self) -> f64 {
        (self.options.clock)()
    }

    /// A request id no other request of this fleet carries: a commit whose answer was lost is
    /// recognised by it when the state is read again.
    fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{}-{n}", self.options.host_id, std::process::id(), self.now())
    }

    /// Whether `lease` is provably dead: as the journal judges it, except that its TTL is not a
    /// client's to judge. etcd deletes a lease whose keep-alives stopped for its TTL, on its
    /// leader's clock; a lease still here was kept alive.
    fn verdict(&self, lease: &Object, now: f64) -> Verdict {
        match granting::verdict(&self.options, lease, now) {
            Verdict::Expired { idle_s, ttl_s } => Verdict::Alive { idle_s, ttl_s },
            verdict => verdict,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a cache: whatever a panicking thread left is still a valid guess.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EtcdBackend {
    /// The state as last seen here if there is one, else read: for changes, whose guard
    /// catches anything written since.
    fn cached_or_read(&self) -> Result<View, JournalError> {
        Ok(self.cached_or_read_telling()?.0)
    }

    /// [`cached_or_read`](Self::cached_or_read), and whether the view came from the cache.
    fn cached_or_read_telling(&self) -> Result<(View, bool), JournalError> {
        let cached = lock(&self.cache).clone();
        match cached {
            Some(view) => Ok((view, true)),
            None => Ok((self.read()?, false)),
        }
    }

    fn remember(&self, view: Option<View>) {
        *lock(&self.cache) = view;
    }

    /// The state, read linearizably at one revision (and remembered).
    fn read(&self) -> Result<View, JournalError> {
        self.remember(None);
        let view = self.read_uncached()?;
        self.remember(Some(view.clone()));
        Ok(view)
    }

    fn read_uncached(&self) -> Result<View, JournalError> {
        let state = self.keys.state();
        let response = self.remote.call("read the lease state", move |mut client| {
            let state = state.clone();
            async move { client.get(state, Some(GetOptions::new().with_prefix().with_limit(STATE_KEYS_MAX + 1))).await }
        })?;
        let revision = response.header().map_or(0, etcd_client::ResponseHeader::revision);
        if i64::try_from(response.kvs().len()).unwrap_or(i64::MAX) > STATE_KEYS_MAX {
            return Err(JournalError::InvalidRequest(format!(
                "{}: more than {STATE_KEYS_MAX} keys under the lease state",
                self.keys.state()
            )));
        }
        let mut view = View { revision, leases: Vec::new(), generation: 0, damaged: Vec::new() };
        let generation_key = self.keys.generation();
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let raw = || String::from_utf8_lossy(kv.value()).chars().take(200).collect::<String>();
            if key == generation_key {
                match parse_u64(kv.value()) {
                    Some(generation) => view.generation = generation,
                    None => view.damaged.push((key, raw())),
                }
                continue;
            }
            let parsed = self.keys.identity_of(kv.key()).and_then(|identity| {
                let value: Value = serde_json::from_slice(kv.value()).ok()?;
                let lease = value.get("lease")?.as_object()?.clone();
                Some(Stored {
                    identity,
                    lease,
                    generation: value.get("generation")?.as_u64()?,
                    request: value.get("request").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    etcd_lease: kv.lease(),
                    mod_revision: kv.mod_revision(),
                    create_revision: kv.create_revision(),
                })
            });
            match parsed {
                Some(stored) => view.leases.push(stored),
                None => view.damaged.push((key, raw())),
            }
        }
        view.leases.sort_by_key(|s| s.create_revision);
        Ok(view)
    }

    fn damage_check(view: &View) -> Result<(), JournalError> {
        match view.damaged.first() {
            None => Ok(()),
            Some((key, raw)) => Err(JournalError::Damaged {
                path: key.into(),
                line_number: 0,
                raw: raw.clone(),
                more: view.damaged.len() - 1,
            }),
        }
    }

    /// Commits `then` if nothing under the state prefix was written after `view`'s revision:
    /// the revision it committed at, or `None` on a conflict (the cache is dropped then, so the
    /// next attempt reads).
    fn commit(&self, what: &str, view: &View, then: Vec<TxnOp>) -> Result<Option<i64>, JournalError> {
        let guard = Compare::mod_revision(self.keys.state(), CompareOp::Less, view.revision + 1).with_prefix();
        let answer = self.remote.call(what, move |mut client| {
            let txn = Txn::new().when([guard.clone()]).and_then(then.clone());
            async move { client.txn(txn).await }
        });
        let response = answer.inspect_err(|_| self.remember(None))?;
        if !response.succeeded() {
            self.remember(None);
            return Ok(None);
        }
        Ok(Some(response.header().map_or(view.revision, etcd_client::ResponseHeader::revision)))
    }

    fn value(lease: &Object, generation: u64, request: &str) -> Vec<u8> {
        json!({"lease": lease, "generation": generation, "request": request}).to_string().into_bytes()
    }

    /// An etcd lease with `ttl_s` for a new lease key: one this process granted or kept alive
    /// within the last quarter of its TTL (so at least three quarters of it are left), else a
    /// new one. Never revoked: each key goes by its own delete, and a lease without keys ends
    /// by its TTL.
    fn etcd_lease(&self, ttl_s: i64) -> Result<i64, JournalError> {
        let fresh_for = Duration::from_millis(u64::try_from(ttl_s).unwrap_or(0) * 1000 / 4);
        if let Some((id, at)) = lock(&self.etcd_leases).get(&ttl_s)
            && at.elapsed() < fresh_for
        {
            return Ok(*id);
        }
        let granted_at = Instant::now();
        let response = self
            .remote
            .call("grant an etcd lease", move |mut client| async move { client.lease_grant(ttl_s, None).await })?;
        lock(&self.etcd_leases).insert(ttl_s, (response.id(), granted_at));
        Ok(response.id())
    }

    /// One keep-alive of `etcd_lease`: its remaining TTL, 0 when it had already expired.
    fn keep_alive(&self, etcd_lease: i64) -> Result<i64, JournalError> {
        let started = Instant::now();
        let ttl = self.remote.call("keep an etcd lease alive", move |mut client| async move {
            let (mut keeper, mut stream) = client.lease_keep_alive(etcd_lease).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.map_or(0, |answer| answer.ttl()))
        })?;
        let mut leases = lock(&self.etcd_leases);
        leases.retain(|_, (id, _)| *id != etcd_lease || ttl > 0);
        for (id, at) in leases.values_mut() {
            if *id == etcd_lease {
                *at = started;
            }
        }
        Ok(ttl)
    }

    fn ttl_s(lease: &Object) -> i64 {
        let minutes = lease.get("ttl_minutes").and_then(Value::as_f64).unwrap_or(1.0);
        ((minutes * 60.0).ceil() as i64).max(ETCD_TTL_FLOOR_S)
    }

    fn acquire_once(&self, request: &AcquireRequest, request_id: &str) -> Result<Option<AcquireOutcome>, JournalError> {
        let (view, cached) = self.cached_or_read_telling()?;
        if let Some(mine) = view.leases.iter().find(|s| s.request == request_id) {
            // Our commit went through though its answer was lost.
            let decision = granting_decision(&view.state(), request, &self.options);
            return Ok(Some(AcquireOutcome::Acquire(Grant {
                lease: mine.lease.clone(),
                identity: mine.identity.clone(),
                generation: mine.generation,
                decision,
                reclaimed: Vec::new(),
            })));
        }
        Self::damage_check(&view)?;
        let state = view.state();
        let now = self.now();
        let Admission { mut decision, mut reclaimed } =
            admit(&arbiter_request(request), &state, &self.options.taxonomy, |lease| self.verdict(lease, now));
        if decision.outcome == Outcome::Refuse {
            if cached {
                // Leases released since the cache was filled are still in it: a refusal is
                // only given on a fresh read.
                self.remember(None);
                return Ok(None);
            }
            let blocker =
                decision.blocking.as_ref().map(|b| Identity { loop_ts: b.loop_ts.clone(), lane: b.lane.clone() });
            if let Some(lease) = blocker.and_then(|identity| state.lease(&identity)) {
                let verdict = self.verdict(lease, now);
                decision.reason = format!("{}; the holder is not reclaimable: {verdict}", decision.reason);
            }
            return Ok(Some(AcquireOutcome::Refuse { decision, recorded: false }));
        }
        let identity =
            granting::new_identity(&state, request, &decision.lane, now, &mut reclaimed, |l| self.verdict(l, now))
                .map_err(|taken| JournalError::IdentityInUse {
                    path: self.place.clone().into(),
                    loop_ts: taken.loop_ts,
                    lane: taken.lane,
                })?;
        let lease = granting::lease_body(&self.options, request, &decision, &identity, now)?;
        let Some(generation) = view.generation.checked_add(1) else {
            return Err(JournalError::Exhausted { path: self.place.clone().into(), counter: "generation" });
        };
        let id = self.etcd_lease(Self::ttl_s(&lease))?;
        let mut then: Vec<TxnOp> =
            reclaimed.iter().map(|(dead, _)| TxnOp::delete(self.keys.lease(dead), None)).collect();
        then.push(TxnOp::put(
            self.keys.lease(&identity),
            Self::value(&lease, generation, request_id),
            Some(PutOptions::new().with_lease(id)),
        ));
        then.push(TxnOp::put(self.keys.generation(), generation.to_string(), None));
        let Some(revision) = self.commit("commit a grant", &view, then)? else {
            return Ok(None);
        };
        let mut after = view;
        after.leases.retain(|s| !reclaimed.iter().any(|(dead, _)| *dead == s.identity));
        after.leases.push(Stored {
            identity: identity.clone(),
            lease: lease.clone(),
            generation,
            request: request_id.to_owned(),
            etcd_lease: id,
            mod_revision: revision,
            create_revision: revision,
        });
        after.generation = generation;
        after.revision = revision;
        self.remember(Some(after));
        Ok(Some(AcquireOutcome::Acquire(Grant { lease, identity, generation, decision, reclaimed })))
    }

    /// Runs `attempt` until it commits (`Some`) or [`CONFLICTS_MAX`] conflicts pass.
    fn until_committed<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<Option<T>, JournalError>,
    ) -> Result<T, JournalError> {
        for _ in 0..CONFLICTS_MAX {
            if let Some(done) = attempt()? {
                return Ok(done);
            }
        }
        Err(JournalError::Unavailable {
            service: self.place.clone(),
            detail: format!("{what}: lost {CONFLICTS_MAX} commits in a row to other clients"),
        })
    }

    /// Deletes `stored` if it is unchanged since `view` was read; `Ok(false)` if it changed.
    fn delete_unchanged(&self, what: &str, view: &View, stored: &Stored) -> Result<bool, JournalError> {
        let key = self.keys.lease(&stored.identity);
        let guard = Compare::mod_revision(key.clone(), CompareOp::Equal, stored.mod_revision);
        let answer = self.remote.call(what, move |mut client| {
            let txn = Txn::new().when([guard.clone()]).and_then([TxnOp::delete(key.clone(), None)]);
            async move { client.txn(txn).await }
        });
        let response = answer.inspect_err(|_| self.remember(None))?;
        if !response.succeeded() {
            self.remember(None);
            return Ok(false);
        }
        // A delete moves no key's mod revision: the view stays a true picture at its revision,
        // less this key.
        let mut after = view.clone();
        after.leases.retain(|s| s.identity != stored.identity);
        self.remember(Some(after));
        Ok(true)
    }

    /// The state as last seen here if `wanted` finds what it needs there, else read: a lease
    /// granted by another process is in no cache of this one.
    fn view_for(&self, wanted: impl Fn(&View) -> bool) -> Result<View, JournalError> {
        let view = self.cached_or_read()?;
        if wanted(&view) { Ok(view) } else { self.read() }
    }

    fn live_from(&self, view: &View) -> Vec<LiveLease> {
        let now = self.now();
        view.leases
            .iter()
            .map(|s| LiveLease {
                identity: s.identity.clone(),
                lease: s.lease.clone(),
                generation: Some(s.generation),
                verdict: self.verdict(&s.lease, now),
            })
            .collect()
    }
}

/// The decision a grant that already committed was made under, re-asked for its answer.
fn granting_decision(state: &LiveState, request: &AcquireRequest, options: &JournalOptions) -> Decision {
    keel_kernel::arbiter::decide(&arbiter_request(request), state.live(), &options.taxonomy)
}

impl LeaseBackend for EtcdBackend {
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError> {
        validate(request)?;
        let request_id = self.request_id();
        self.until_committed("acquire", || self.acquire_once(request, &request_id))
    }

    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError> {
        validate(request)?;
        let view = self.read()?;
        let now = self.now();
        let state = view.state();
        Ok(admit(&arbiter_request(request), &state, &self.options.taxonomy, |lease| self.verdict(lease, now)).decision)
    }

    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError> {
        let deadline = Instant::now() + timeout;
        let mut pause_ms = WAIT_BACKOFF_MS.0;
        loop {
            let outcome = self.acquire(request)?;
            if matches!(outcome, AcquireOutcome::Acquire(_)) || Instant::now() >= deadline {
                return Ok(outcome);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_millis(pause_ms).min(left));
            pause_ms = (pause_ms * 2).min(WAIT_BACKOFF_MS.1);
        }
    }

    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError> {
        owner_named(owner)?;
        let owned = |view: &View| find_owned(&view.state(), lease.lane, owner, lease.loop_ts).is_some();
        self.until_committed("release", || {
            let view = self.view_for(owned)?;
            let state = view.state();
            let Some((identity, _)) = find_owned(&state, lease.lane, owner, lease.loop_ts) else {
                return Ok(Some(None));
            };
            let Some(stored) = view.stored(identity) else { return Ok(Some(None)) };
            if !self.delete_unchanged("release", &view, stored)? {
                return Ok(None);
            }
            Ok(Some(Some(identity.clone())))
        })
    }

    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError> {
        owner_named(owner)?;
        let owned = |view: &View| find_owned(&view.state(), lease.lane, owner, lease.loop_ts).is_some();
        self.until_committed("heartbeat", || {
            let view = self.view_for(owned)?;
            let state = view.state();
            let Some((identity, body)) = find_owned(&state, lease.lane, owner, lease.loop_ts) else {
                return Ok(Some(None));
            };
            let Some(stored) = view.stored(identity) else { return Ok(Some(None)) };
            if self.keep_alive(stored.etcd_lease)? <= 0 {
                // Expired on etcd's clock: the key is gone, or about to be.
                return Ok(Some(None));
            }
            let now = self.now();
            // The keep-alive above is what keeps the lease; rewriting the body only refreshes the
            // sign of life others read, and every rewrite makes concurrent grants retry.
            if let Some(heartbeat_at) = granting::coalesced(&self.options, body, coalesce_floor_s, now) {
                return Ok(Some(Some(Beat::Coalesced { identity: identity.clone(), heartbeat_at })));
            }
            let heartbeat_at = format_utc(now.floor() as i64);
            let mut beaten = body.clone();
            beaten.insert("heartbeat_at".into(), Value::from(heartbeat_at.clone()));
            let key = self.keys.lease(identity);
            let guard = Compare::mod_revision(key.clone(), CompareOp::Equal, stored.mod_revision);
            let value = Self::value(&beaten, stored.generation, &stored.request);
            let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(stored.etcd_lease)));
            let response = self.remote.call("record a heartbeat", move |mut client| {
                let txn = Txn::new().when([guard.clone()]).and_then([put.clone()]);
                async move { client.txn(txn).await }
            })?;
            // Its own put moved the key past the view's revision: read again next time.
            self.remember(None);
            if !response.succeeded() {
                return Ok(None);
            }
            Ok(Some(Some(Beat::Beaten { identity: identity.clone(), heartbeat_at })))
        })
    }

    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError> {
        owner_named(new_owner)?;
        let holder = holder.recorded()?;
        self.until_committed("adopt", || {
            let view = self.view_for(|view| view.stored(lease).is_some())?;
            let Some(stored) = view.stored(lease) else { return Ok(Some(None)) };
            let Some(generation) = view.generation.checked_add(1) else {
                return Err(JournalError::Exhausted { path: self.place.clone().into(), counter: "generation" });
            };
            let body = granting::adopted_body(&self.options, &stored.lease, new_owner, &holder, self.now());
            let then = vec![
                TxnOp::put(
                    self.keys.lease(lease),
                    Self::value(&body, generation, &self.request_id()),
                    Some(PutOptions::new().with_lease(stored.etcd_lease)),
                ),
                TxnOp::put(self.keys.generation(), generation.to_string(), None),
            ];
            if self.commit("commit an adoption", &view, then)?.is_none() {
                return Ok(None);
            }
            self.remember(None);
            Ok(Some(Some(Adopted { identity: lease.clone(), generation })))
        })
    }

    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        let record = Writer { host_id: &self.options.host_id }.halt(lane, owner, reason);
        self.put_intent(lane, &record)
    }

    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError> {
        owner_named(owner)?;
        let loop_ts = granting::fresh_loop_ts(self.now());
        let record =
            Writer { host_id: &self.options.host_id }.spawn(lane, &loop_ts, owner, std::process::id(), command);
        self.put_intent(lane, &record)
    }

    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError> {
        let _ = reason;
        self.until_committed("scavenge", || {
            let view = self.view_for(|view| view.stored(lease).is_some())?;
            let Some(stored) = view.stored(lease) else { return Ok(Some(None)) };
            let verdict = self.verdict(&stored.lease, self.now());
            if only_if_dead && !verdict.is_dead() {
                return Ok(Some(None));
            }
            if !self.delete_unchanged("scavenge", &view, stored)? {
                return Ok(None);
            }
            Ok(Some(Some(verdict)))
        })
    }

    fn live(&self) -> Result<Vec<LiveLease>, JournalError> {
        Ok(self.live_from(&self.read()?))
    }

    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError> {
        let view = self.read()?;
        Ok(look(&view.state(), view.stopped()))
    }

    fn judge(&self, lease: &Object) -> Verdict {
        self.verdict(lease, self.now())
    }

    fn live_view(&self) -> Result<LiveView, JournalError> {
        let view = self.read()?;
        Ok(LiveView { leases: self.live_from(&view), grants_stopped: view.stopped() })
    }

    /// The live leases read linearizably right before `fence` runs. Unlike the journal, etcd
    /// cannot hold grants off while `fence` runs: a lease released and re-granted in the few
    /// milliseconds between this read and the caller's commit is not seen (see ARCHITECTURE.md).
    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError> {
        let live = self.live()?;
        Ok(fence(&live))
    }

    fn stats(&self) -> Result<Stats, JournalError> {
        let view = self.read()?;
        let bytes = view.leases.iter().map(|s| Self::value(&s.lease, s.generation, &s.request).len() as u64).sum();
        Ok(Stats {
            records: view.leases.len() as u64,
            bytes,
            live_leases: view.leases.len(),
            corrupt: view.damaged.len(),
            unreviewed_corrupt: view.damaged.len(),
            ops: std::collections::BTreeMap::new(),
            last_compaction: None,
        })
    }

    fn location(&self) -> Location<'_> {
        Location::Named(&self.place)
    }

    fn protected(&self) -> &[String] {
        &self.options.taxonomy.protected
    }
}

impl EtcdBackend {
    fn put_intent(&self, lane: &str, record: &Object) -> Result<(), JournalError> {
        let key = self.keys.intent(lane);
        let value = Value::Object(record.clone()).to_string();
        self.remote.call("record an intent", move |mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })?;
        Ok(())
    }
}
