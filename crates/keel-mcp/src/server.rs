//! The tools, their arguments and their answers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keel_hook::Agent;
use keel_hook::decide::{self, Rules};
use keel_journal::{AcquireOutcome, AcquireRequest, Journal, JournalError, LeaseBackend, LeaseRef, Location};
use keel_kernel::gate::Holder;
use keel_kernel::{Identity, Object};
use keel_mutator::{Expect, IntentId, MutateError, Mutator, MutatorOptions, Outcome, PreState, Request};
use keel_store::{EventCursor, FsRuntimeStore, StoreError, StoreOptions};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::args::{
    AcquireArgs, AppendArgs, CheckArgs, DeleteArgs, HashArgs, LaneArgs, ListArgs, Mode, NoArgs, ReadArgs, RenameArgs,
    WriteArgs, check_paths, expect_hash, workspace_relative,
};
use crate::{Config, FS_WRITE_BYTES_MAX};

/// How often the session's leases are beaten while the client is connected, in seconds (each
/// beat is coalesced by the journal, so a lease beaten by its hook too is written once).
pub const BEAT_EVERY_S: u64 = 30;
/// The longest `wait_s` an acquire may ask for.
pub const WAIT_S_MAX: f64 = 600.0;
/// The runtime of the store that holds the fleet's shared record.
pub const FLEET_RUNTIME: &str = "fleet";
/// The most events one `events_read` returns.
const EVENTS_PAGE_MAX: u64 = 1_000;
/// The first and the longest wait between retries of a waiting acquire, in milliseconds.
const WAIT_BACKOFF_MS: (u64, u64) = (20, 500);
/// The resource holding the live leases.
const LEASES_URI: &str = "keel://leases";

/// The MCP server of one agent session, on one lease backend (the workspace's journal by
/// default). Cheap to clone: every clone serves the same session.
pub struct Server<B: LeaseBackend = Journal> {
    shared: Arc<Shared<B>>,
    tool_router: ToolRouter<Self>,
}

impl<B: LeaseBackend> Clone for Server<B> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared), tool_router: self.tool_router.clone() }
    }
}

/// What every clone of a server shares.
struct Shared<B: LeaseBackend> {
    config: Config,
    journal: Arc<B>,
    /// Opened on the first `fs_*` call: it binds the workspace to its backend and recovers.
    mutator: Mutex<Option<Arc<Mutator<Arc<B>>>>>,
    store: Mutex<Option<FsRuntimeStore>>,
    /// The leases granted through this session, with the generation each was granted: the
    /// fencing token its writes present.
    taken: Mutex<Vec<(Identity, u64)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never happens by design; if one did, the data is still whole.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tool's failure: bad input or a failing journal, told to the agent.
pub(crate) fn failed(message: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("keel: {message}"))])
}

fn answer(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

impl Server<Journal> {
    /// A server for `config`'s agent, on its workspace's journal.
    pub fn new(config: Config) -> Self {
        let journal = Journal::open(config.workspace.journal(), config.options.clone());
        Self::with_backend(config, journal)
    }
}

#[tool_router]
impl<B: LeaseBackend + Send + Sync + 'static> Server<B> {
    /// A server for `config`'s agent, on `backend`.
    pub fn with_backend(config: Config, backend: B) -> Self {
        let shared = Shared {
            config,
            journal: Arc::new(backend),
            mutator: Mutex::new(None),
            store: Mutex::new(None),
            taken: Mutex::new(Vec::new()),
        };
        Self { shared: Arc::new(shared), tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Claim a region of the repository before working on it, so no other agent edits it meanwhile. \
        Call it before a task that edits several files. Granted: the region is yours (returns lane, loop_ts, \
        generation, tree) until you call lease_release or your session ends; edits outside it by others are \
        refused. Refused (granted: false): another agent holds an intersecting region; the answer names it \
        (holder, lane, region, since, last_seen). Then work on other files, or call again with wait_s to wait \
        for it. Never edit the refused files meanwhile."
    )]
    async fn lease_acquire(&self, Parameters(args): Parameters<AcquireArgs>) -> CallToolResult {
        self.acquire(args).await.unwrap_or_else(|e| e)
    }

    #[tool(description = "Give back your leases when you are done with a region, so other agents may edit it. \
        With lane: that lease only; without: every lease of yours. Returns the leases released.")]
    async fn lease_release(&self, Parameters(args): Parameters<LaneArgs>) -> CallToolResult {
        let shared = &self.shared;
        let mine = match self.mine(args.lane.as_deref()) {
            Ok(mine) => mine,
            Err(error) => return error,
        };
        let mut released = Vec::new();
        for lease in &mine {
            match shared.journal.release(&LeaseRef::exact(&lease.identity), self.owner()) {
                Ok(Some(identity)) => released.push(identity),
                Ok(None) => {}
                Err(error) => return failed(error),
            }
        }
        lock(&shared.taken).retain(|(identity, _)| !released.contains(identity));
        answer(json!({"released": released}))
    }

    #[tool(description = "Show that you are still working on your leases (the server does this every 30 s while \
        you are connected, so you rarely need to). With lane: that lease only; without: all of yours.")]
    async fn lease_heartbeat(&self, Parameters(args): Parameters<LaneArgs>) -> CallToolResult {
        let mine = match self.mine(args.lane.as_deref()) {
            Ok(mine) => mine,
            Err(error) => return error,
        };
        let mut beats = Vec::new();
        for lease in &mine {
            let id = &lease.identity;
            match self.shared.journal.heartbeat(&LeaseRef::exact(id), self.owner(), None) {
                Ok(beat) => beats.push(beat),
                Err(error) => return failed(error),
            }
        }
        answer(json!({"beaten": beats}))
    }

    #[tool(description = "List the live leases: who holds which region, since when, their last sign of life, and a \
        verdict (alive, idle, holder gone, clock skew). With mine: only yours. grants_stopped is set when \
        the lease journal is damaged and grants nothing until an operator reviews it.")]
    async fn lease_list(&self, Parameters(args): Parameters<ListArgs>) -> CallToolResult {
        match self.leases(args.mine) {
            Ok(value) => answer(value),
            Err(error) => failed(error),
        }
    }

    #[tool(description = "Ask, without changing anything, whether you may edit each of these files now. For each: \
        allowed, held (you hold a lease over it), and a reason (who holds it and what to do, when not \
        allowed). Call it before editing a file another agent may be working on.")]
    async fn lease_check(&self, Parameters(args): Parameters<CheckArgs>) -> CallToolResult {
        if let Err(error) = check_paths("paths", &args.paths) {
            return error;
        }
        let shared = &self.shared;
        let rules = Rules::of(&shared.config.policy);
        let mut checks = Vec::new();
        for path in &args.paths {
            match decide::check(&shared.journal, &shared.config.workspace, &shared.config.agent, Path::new(path), rules)
            {
                Ok(check) => checks.push(check),
                Err(error) => return failed(error),
            }
        }
        answer(json!({"checks": checks}))
    }

    #[tool(description = "Write a whole file through keel's gate: it lands, atomically and durably, only if you hold \
        a lease over the path and the file still holds what you last read (expect_hash from fs_hash; a new \
        file needs no hash). Otherwise nothing changes and outcome says why: forbidden (not your region), \
        stale_generation (your lease was taken over: acquire again), precondition_failed (the file changed \
        since you read it: read it again), inode_swapped (replaced meanwhile: retry).")]
    async fn fs_write(&self, Parameters(args): Parameters<WriteArgs>) -> CallToolResult {
        if args.content.len() > FS_WRITE_BYTES_MAX {
            let size = args.content.len();
            return failed(format!(
                "content: {size} bytes for {}, over the {FS_WRITE_BYTES_MAX} keel mcp writes",
                args.path
            ));
        }
        let expect = match (&args.expect_hash, args.expect_absent) {
            (Some(_), Some(true)) => return failed("give expect_hash or expect_absent, not both"),
            (Some(hash), _) => match expect_hash(hash) {
                Ok(expect) => expect,
                Err(error) => return error,
            },
            (None, _) => Expect::Absent,
        };
        self.mutate(&[&args.path], expect, |mutator, request| {
            mutator.write(&args.path, args.content.as_bytes(), request)
        })
    }

    #[tool(
        description = "Delete a file through keel's gate (you must hold a lease over it). Refusals are as fs_write's."
    )]
    async fn fs_delete(&self, Parameters(args): Parameters<DeleteArgs>) -> CallToolResult {
        let expect = match args.expect_hash.as_deref().map(expect_hash).transpose() {
            Ok(expect) => expect.unwrap_or(Expect::Any),
            Err(error) => return error,
        };
        self.mutate(&[&args.path], expect, |mutator, request| mutator.delete(&args.path, request))
    }

    #[tool(description = "Move a file to a new path that does not exist yet, through keel's gate (one lease of yours \
        must cover both paths). Refusals are as fs_write's.")]
    async fn fs_rename(&self, Parameters(args): Parameters<RenameArgs>) -> CallToolResult {
        let expect = match args.expect_hash.as_deref().map(expect_hash).transpose() {
            Ok(expect) => expect.unwrap_or(Expect::Any),
            Err(error) => return error,
        };
        self.mutate(&[&args.from, &args.to], expect, |mutator, request| mutator.rename(&args.from, &args.to, request))
    }

    #[tool(description = "The hash of a file's content, to pass as expect_hash to fs_write, fs_delete or fs_rename, \
        so your write cannot overwrite a change you have not seen. exists: false for a missing file.")]
    async fn fs_hash(&self, Parameters(args): Parameters<HashArgs>) -> CallToolResult {
        let root = self.shared.config.workspace.checkout();
        match keel_mutator::hash_path(root, &args.path, FS_WRITE_BYTES_MAX as u64) {
            Ok(PreState::Present { hash }) => answer(json!({"path": args.path, "exists": true, "hash": hash})),
            Ok(PreState::Absent) => answer(json!({"path": args.path, "exists": false})),
            Err(error) => failed(error),
        }
    }

    #[tool(description = "Add an event to the fleet's shared record (one record per workspace, read by every agent \
        and by people): what you started, finished, handed off or found. Returns the event with its id.")]
    async fn events_append(&self, Parameters(args): Parameters<AppendArgs>) -> CallToolResult {
        if args.kind.trim().is_empty() {
            return failed("kind: give a short word for what happened");
        }
        match self.record(&args.kind, &args.data) {
            Ok(event) => answer(event),
            Err(error) => failed(error),
        }
    }

    #[tool(description = "Read the fleet's shared record, oldest first: one page of events from `from` (default the \
        first). Pass the answer's next as from to read on; has_more says whether there is more now.")]
    async fn events_read(&self, Parameters(args): Parameters<ReadArgs>) -> CallToolResult {
        let limit = args.limit.unwrap_or(100);
        if !(1..=EVENTS_PAGE_MAX).contains(&limit) {
            return failed(format!("limit: give 1 to {EVENTS_PAGE_MAX} (got {limit})"));
        }
        let page = self.with_store(|store| {
            let cursor = args.from.map(|next_event_id| EventCursor { runtime_id: FLEET_RUNTIME.into(), next_event_id });
            store.read_events(cursor.as_ref(), limit, EVENTS_PAGE_MAX)
        });
        match page {
            Ok(page) => answer(json!({
                "events": page.events,
                "next": page.cursor.next_event_id,
                "has_more": page.has_more,
                "damaged": page.damaged,
            })),
            Err(error) => failed(error),
        }
    }

    #[tool(description = "The lease journal's health: record and lease counts, damage (corrupt lines, whether grants \
        are stopped), and the last compaction. The same facts as `keel journal stats`.")]
    async fn journal_status(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        let journal = &self.shared.journal;
        let status = journal.stats().and_then(|stats| Ok((stats, journal.live_view()?.grants_stopped)));
        match status {
            Ok((stats, stopped)) => answer(json!({
                "journal": match journal.location() {
                    Location::File(path) => path.display().to_string(),
                    Location::Named(name) => name.to_owned(),
                },
                "stats": stats,
                "grants_stopped": stopped,
            })),
            Err(error) => failed(error),
        }
    }
}

impl<B: LeaseBackend + Send + Sync + 'static> Server<B> {
    fn owner(&self) -> &str {
        &self.shared.config.agent.owner
    }

    fn agent(&self) -> &Agent {
        &self.shared.config.agent
    }

    async fn acquire(&self, args: AcquireArgs) -> Result<CallToolResult, CallToolResult> {
        check_paths("paths", &args.paths)?;
        if args.paths.is_empty() {
            return Err(failed("paths: name at least one file, directory or glob"));
        }
        let wait_s = args.wait_s.unwrap_or(0.0);
        if !(0.0..=WAIT_S_MAX).contains(&wait_s) {
            return Err(failed(format!("wait_s: give 0 to {WAIT_S_MAX} seconds (got {wait_s})")));
        }
        if let Some(ttl) = args.ttl_minutes
            && !(ttl.is_finite() && ttl > 0.0)
        {
            return Err(failed(format!("ttl_minutes: give a positive number of minutes (got {ttl})")));
        }
        let checkout = self.shared.config.workspace.checkout();
        let tree: Vec<String> = args.paths.iter().map(|p| workspace_relative(checkout, p)).collect();
        let lane = args.lane.clone().unwrap_or_else(|| AcquireRequest::claim_lane(self.owner(), &tree));
        let request = AcquireRequest {
            lane,
            tree,
            mode: match args.mode {
                Mode::Exclusive => "exclusive".into(),
                Mode::Shared => "shared".into(),
            },
            owner: self.owner().to_owned(),
            ttl_minutes: args.ttl_minutes,
            holder_pid: self.agent().holder(),
            ..AcquireRequest::default()
        };
        let journal = &self.shared.journal;
        let started = Instant::now();
        let mut backoff_ms = WAIT_BACKOFF_MS.0;
        let outcome = loop {
            let outcome = journal.acquire(&request).map_err(failed)?;
            let waited = started.elapsed().as_secs_f64();
            if matches!(outcome, AcquireOutcome::Acquire(_)) || waited >= wait_s {
                break outcome;
            }
            let left_ms = ((wait_s - waited) * 1000.0).ceil() as u64;
            tokio::time::sleep(Duration::from_millis(backoff_ms.min(left_ms.max(1)))).await;
            backoff_ms = (backoff_ms * 2).min(WAIT_BACKOFF_MS.1);
        };
        match outcome {
            AcquireOutcome::Acquire(grant) => {
                lock(&self.shared.taken).push((grant.identity.clone(), grant.generation));
                if let Some(reason) = &args.reason {
                    // The record is for people reading the fleet's story: the grant stands without it.
                    let data = json!({"lane": grant.identity.lane, "tree": request.tree, "reason": reason});
                    let _ = self.record("lease_acquired", &data);
                }
                Ok(answer(json!({
                    "granted": true,
                    "lane": grant.identity.lane,
                    "loop_ts": grant.identity.loop_ts,
                    "generation": grant.generation,
                    "tree": request.tree,
                    "mode": request.mode,
                })))
            }
            AcquireOutcome::Refuse { decision, .. } => {
                let blocking =
                    decision.blocking.as_ref().map(|b| Identity { loop_ts: b.loop_ts.clone(), lane: b.lane.clone() });
                let lease = blocking
                    .as_ref()
                    .and_then(|identity| journal.look(|state, _| state.lease(identity).cloned()).ok().flatten());
                let stamp = |key: &str| lease.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or(Value::Null);
                Ok(answer(json!({
                    "granted": false,
                    "holder": decision.blocking.as_ref().map(|b| b.holder.clone()),
                    "lane": blocking.as_ref().map(|b| b.lane.clone()),
                    "region": stamp("tree"),
                    "since": stamp("acquired_at"),
                    "last_seen": lease.as_ref().and_then(|l| l.get("heartbeat_at").or(l.get("acquired_at"))).cloned(),
                    "reason": format!(
                        "{}. Work on other files for now, or call lease_acquire again with wait_s to wait for it.",
                        decision.reason
                    ),
                })))
            }
        }
    }

    /// This agent's live leases (on `lane`, if given), with their generations: one look at the
    /// live state, judging none of the others' (a judgement reads the process table).
    fn own(&self, lane: Option<&str>) -> Result<Vec<Own>, JournalError> {
        self.shared.journal.look(|state, _| {
            state
                .live_with_identity()
                .filter(|(identity, lease)| {
                    holder(lease) == self.owner() && lane.is_none_or(|lane| identity.lane == lane)
                })
                .map(|(identity, lease)| Own {
                    identity: identity.clone(),
                    lease: lease.clone(),
                    generation: state.generation(identity),
                })
                .collect()
        })
    }

    fn mine(&self, lane: Option<&str>) -> Result<Vec<Own>, CallToolResult> {
        self.own(lane).map_err(failed)
    }

    fn leases(&self, mine: bool) -> Result<Value, JournalError> {
        let view = self.shared.journal.live_view()?;
        let leases: Vec<Value> = view
            .leases
            .iter()
            .filter(|lease| !mine || holder(&lease.lease) == self.owner())
            .map(|lease| {
                let body = &lease.lease;
                json!({
                    "holder": holder(body),
                    "yours": holder(body) == self.owner(),
                    "lane": lease.identity.lane,
                    "loop_ts": lease.identity.loop_ts,
                    "region": body.get("tree"),
                    "mode": body.get("mode").and_then(Value::as_str).unwrap_or("exclusive"),
                    "since": body.get("acquired_at"),
                    "last_seen": body.get("heartbeat_at").or(body.get("acquired_at")),
                    "generation": lease.generation,
                    "verdict": lease.verdict.to_string(),
                })
            })
            .collect();
        Ok(json!({"leases": leases, "grants_stopped": view.grants_stopped}))
    }

    /// Runs one gated mutation of `paths` with the agent's lease over them.
    fn mutate(
        &self,
        paths: &[&str],
        expect: Expect,
        run: impl FnOnce(&Mutator<Arc<B>>, &Request) -> Result<Outcome, MutateError>,
    ) -> CallToolResult {
        for path in paths {
            if let Err(why) = keel_kernel::tree::confined(path) {
                return failed(format!("{path}: not a workspace-relative path ({why})"));
            }
        }
        let holder = match self.lease_over(paths) {
            Ok(Some(holder)) => holder,
            Ok(None) => {
                return answer(json!({
                    "outcome": "forbidden",
                    "reason": format!(
                        "you hold no lease covering {}: call lease_acquire for it first",
                        paths.join(" and ")
                    ),
                }));
            }
            Err(error) => return failed(error),
        };
        let mutator = match self.mutator() {
            Ok(mutator) => mutator,
            Err(error) => return failed(error),
        };
        let intent = match IntentId::generate() {
            Ok(intent) => intent,
            Err(error) => return failed(error),
        };
        let request = Request { holder, expect, intent };
        match run(&mutator, &request) {
            Ok(outcome) => {
                let mut value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
                value["done"] = json!(outcome.is_success());
                value["message"] = json!(outcome.to_string());
                answer(value)
            }
            Err(error) => failed(error),
        }
    }

    /// The holder of this agent's exclusive lease that covers every path: the lease this session
    /// took (with the generation it was granted) before any other.
    fn lease_over(&self, paths: &[&str]) -> Result<Option<Holder>, JournalError> {
        let own = self.own(None)?;
        let taken = lock(&self.shared.taken).clone();
        let covering = own.iter().filter(|lease| {
            lease.lease.get("mode").and_then(Value::as_str) != Some("shared")
                && paths
                    .iter()
                    .all(|path| decide::file_region(path).is_some_and(|wanted| decide::covers(&lease.lease, &wanted)))
        });
        let best = covering.min_by_key(|lease| !taken.iter().any(|(identity, _)| *identity == lease.identity));
        Ok(best.map(|lease| {
            let granted =
                taken.iter().find(|(identity, _)| *identity == lease.identity).map(|(_, generation)| *generation);
            Holder {
                owner: self.owner().to_owned(),
                lane: lease.identity.lane.clone(),
                loop_ts: Some(lease.identity.loop_ts.clone()),
                generation: granted.or(lease.generation).unwrap_or_default(),
            }
        }))
    }

    fn mutator(&self) -> Result<Arc<Mutator<Arc<B>>>, String> {
        let mut slot = lock(&self.shared.mutator);
        if let Some(mutator) = slot.as_ref() {
            return Ok(Arc::clone(mutator));
        }
        let config = &self.shared.config;
        // The journal binding names a journal file; a service elsewhere has none to bind (the
        // gate binds the workspace to the service's name itself).
        if matches!(self.shared.journal.location(), Location::File(_)) {
            config.workspace.bind().map_err(|e| e.to_string())?;
        }
        let options = MutatorOptions { content_bytes_max: FS_WRITE_BYTES_MAX as u64, ..MutatorOptions::default() };
        let mutator = Mutator::open(config.workspace.checkout(), Arc::clone(&self.shared.journal), options);
        let mutator = Arc::new(mutator.map_err(|e| e.to_string())?);
        *slot = Some(Arc::clone(&mutator));
        Ok(mutator)
    }

    fn with_store<R>(&self, run: impl FnOnce(&mut FsRuntimeStore) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut slot = lock(&self.shared.store);
        if slot.is_none() {
            // Where `keel store` looks too: one default store per workspace.
            let root = keel_store::create_default_root(self.shared.config.workspace.root())?;
            *slot = Some(FsRuntimeStore::open_or_create(&StoreOptions::new(root, FLEET_RUNTIME))?);
        }
        slot.as_mut().map_or_else(|| unreachable!("the store was opened above"), run)
    }

    /// Appends an event about this agent to the fleet's record.
    fn record(&self, kind: &str, data: &Value) -> Result<Value, StoreError> {
        let owner = self.owner().to_owned();
        self.with_store(|store| {
            match store.create_worker(&owner, json!({"owner": owner})) {
                Ok(_) | Err(StoreError::WorkerExists { .. }) => {}
                Err(error) => return Err(error),
            }
            let event = store.append_event(Some(&owner), json!({"kind": kind, "data": data}))?;
            Ok(serde_json::to_value(event).unwrap_or(Value::Null))
        })
    }

    /// Beats each of the session's leases every [`BEAT_EVERY_S`] seconds, or a quarter of its TTL
    /// or grace if that is shorter (as `keel lease run` does), forever.
    pub async fn beat_forever(self) {
        let mut beaten: HashMap<Identity, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Ok(own) = self.own(None) else { continue };
            let taken = lock(&self.shared.taken).clone();
            beaten.retain(|identity, _| taken.iter().any(|(t, _)| t == identity));
            let expiry = &self.shared.config.options.expiry;
            for lease in own.iter().filter(|lease| taken.iter().any(|(t, _)| *t == lease.identity)) {
                let period_s = keel_journal::holding::beat_period_s(&lease.lease, expiry, BEAT_EVERY_S);
                let last = beaten.entry(lease.identity.clone()).or_insert_with(Instant::now);
                if last.elapsed() < Duration::from_secs(period_s) {
                    continue;
                }
                // A failed beat is retried at the next tick; the lease's TTL outlasts several.
                let id = &lease.identity;
                let beat = self.shared.journal.heartbeat(&LeaseRef::exact(id), self.owner(), Some(period_s));
                if beat.is_ok() {
                    *last = Instant::now();
                }
            }
        }
    }

    /// The client is gone: gives back the session's leases unless the policy keeps them.
    /// Returns how many were released.
    pub fn end_session(&self) -> usize {
        if !self.shared.config.policy.mcp_release_on_exit {
            return 0;
        }
        let taken = std::mem::take(&mut *lock(&self.shared.taken));
        taken
            .iter()
            .filter(|(identity, _)| {
                matches!(self.shared.journal.release(&LeaseRef::exact(identity), self.owner()), Ok(Some(_)))
            })
            .count()
    }
}

#[tool_handler(router = self.tool_router)]
impl<B: LeaseBackend + Send + Sync + 'static> ServerHandler for Server<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("keel", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "keel coordinates the agents sharing this repository. Before a task that edits files, claim them \
                 with lease_acquire; if refused, work elsewhere or wait. lease_check tells whether an edit is \
                 allowed now. Release with lease_release when done. Your leases end with your session.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // An unknown tool is the agent's mistake, told as a tool result it can read and act on,
        // not a protocol error its harness may hide.
        if !self.tool_router.has_route(&request.name) {
            let known: Vec<String> =
                self.tool_router.list_all().into_iter().map(|tool| tool.name.to_string()).collect();
            let message = format!("there is no tool {:?}; the tools are {}", request.name, known.join(", "));
            return Ok(failed(message).into());
        }
        self.tool_router.call(ToolCallContext::new(self, request, context)).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resource = Resource::new(LEASES_URI, "leases");
        resource.description = Some("The live leases of this workspace, as JSON".into());
        resource.mime_type = Some("application/json".into());
        Ok(ListResourcesResult::with_all_items(vec![resource]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != LEASES_URI {
            return Err(ErrorData::resource_not_found(format!("no resource {}", request.uri), None));
        }
        let leases = self.leases(false).map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![ResourceContents::text(leases.to_string(), LEASES_URI)]).into())
    }
}

/// One of this agent's live leases.
struct Own {
    identity: Identity,
    lease: Object,
    generation: Option<u64>,
}

fn holder(lease: &Object) -> &str {
    lease.get("holder").and_then(Value::as_str).unwrap_or_default()
}
