//! The lease service a command uses: the workspace's journal, or etcd (in a build with the `etcd`
//! feature). The choice, in order: `--backend` (or `$KEEL_BACKEND`), else the `[backend]` table of
//! the workspace policy, else the journal; etcd's endpoints and prefix come from their flags (or
//! environment variables), else from the same table.
//!
//! Every command that takes, gives back or checks leases goes through [`Backend`], whatever it
//! is; the commands that read the journal file itself ask [`Location::journal_only`] first, which
//! refuses them in a workspace whose leases live in etcd.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use keel_journal::{
    AcquireOutcome, AcquireRequest, Adopted, BackendKind, Beat, HolderPid, Journal, JournalError, JournalOptions,
    LeaseBackend, LeaseRef, LiveLease, LiveView, Location as Place, Policy, Stats, Stopped, Workspace,
};
// The trait's own signature types: this module only passes them through.
use keel_kernel::Identity;
use keel_kernel::LiveState;
use keel_kernel::Object;
use keel_kernel::arbiter::Decision;
use keel_kernel::expiry::Verdict;

use crate::{Failure, Location};

/// `--backend`: which lease service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The journal file (.keel/lane-journal.jsonl), for agents on one host.
    Journal,
    /// An etcd v3 cluster, for a fleet that spans hosts.
    Etcd,
}

/// Where a workspace's leases are kept in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPlace {
    /// The members' client URLs.
    pub endpoints: Vec<String>,
    /// The workspace's key prefix.
    pub prefix: String,
}

impl fmt::Display for EtcdPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd at {} under {}", self.endpoints.join(","), self.prefix)
    }
}

/// What moving a journal's leases did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Live leases moved.
    pub leases: usize,
    /// The last generation handed out, on the new backend now.
    pub generation: u64,
    /// Whether this run closed the journal (false: an interrupted earlier run had).
    pub closed_journal: bool,
}

/// The lease service the flags and the policy choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The workspace's journal file.
    Journal,
    /// etcd.
    Etcd(EtcdPlace),
}

/// A value parser for `--etcd-endpoints`' items: trimmed, never blank.
pub fn endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an endpoint must not be empty (give URLs separated by commas)".to_owned());
    }
    Ok(text.to_owned())
}

fn without_etcd(chosen_by: &str) -> Failure {
    Failure::usage(anyhow!(
        "{chosen_by} chooses the etcd backend, but keel was built without etcd support \
         (build it with `--features keel-cli/etcd`, as `cargo xtask dist` does)"
    ))
}

/// The workspace policy, `.keel/policy.toml`.
pub fn policy(workspace: &Workspace) -> Result<Policy, Failure> {
    Policy::of_workspace(workspace.root()).map_err(crate::failure)
}

impl Location {
    /// The lease service the flags and `policy` choose for `workspace`. etcd without endpoints
    /// or without a prefix is a usage error: there is no default prefix, because every host of a
    /// fleet must use the same one, and a guessed one could split a fleet into two that both
    /// grant the same region.
    pub(crate) fn choice(&self, workspace: &Workspace, policy: &Policy) -> Result<Choice, Failure> {
        let policy_path = Policy::path_in(workspace.root());
        let (kind, chosen_by) = match self.backend {
            Some(BackendArg::Journal) => (BackendKind::Journal, "--backend (or $KEEL_BACKEND)".to_owned()),
            Some(BackendArg::Etcd) => (BackendKind::Etcd, "--backend (or $KEEL_BACKEND)".to_owned()),
            None => (policy.backend.kind, format!("the [backend] table of {}", policy_path.display())),
        };
        let why = if self.backend.is_some() {
            chosen_by.as_str()
        } else {
            "no --backend: the policy's [backend] table, whose default is the journal"
        };
        tracing::debug!(backend = ?kind, chosen_by = why, "lease service chosen");
        if kind == BackendKind::Journal {
            return Ok(Choice::Journal);
        }
        if !cfg!(feature = "etcd") {
            return Err(without_etcd(&chosen_by));
        }
        let endpoints =
            if self.etcd_endpoints.is_empty() { policy.backend.endpoints.clone() } else { self.etcd_endpoints.clone() };
        if endpoints.is_empty() {
            return Err(Failure::usage(anyhow!(
                "the etcd backend needs its endpoints: name them with --etcd-endpoints (or \
                 $KEEL_ETCD_ENDPOINTS), or with `endpoints` in the [backend] table of {}",
                policy_path.display()
            )));
        }
        let Some(prefix) = self.etcd_prefix.clone().or_else(|| policy.backend.prefix.clone()) else {
            return Err(Failure::usage(anyhow!(
                "the etcd backend needs a key prefix: name one with --etcd-prefix (or $KEEL_ETCD_PREFIX), \
                 or with `prefix` in the [backend] table of {}; there is no default, because every host \
                 of a fleet must use the same prefix, and a guessed one could split the fleet into two \
                 that both grant the same region",
                policy_path.display()
            )));
        };
        let place = EtcdPlace { endpoints, prefix };
        tracing::debug!(%place, "etcd place chosen");
        Ok(Choice::Etcd(place))
    }

    /// The lease service of `workspace`, opened with `policy`'s options (and `--grace-s`), and
    /// what was chosen.
    pub(crate) fn backend_with(&self, workspace: &Workspace, policy: &Policy) -> Result<(Backend, Choice), Failure> {
        let choice = self.choice(workspace, policy)?;
        let backend = Backend::open(&choice, workspace.journal(), self.options_of(policy))?;
        let name = match backend.location() {
            Place::Named(name) => Some(name),
            Place::File(_) => None,
        };
        agrees_with_binding(workspace, name)?;
        Ok((backend, choice))
    }

    /// [`backend_with`](Self::backend_with) the workspace's policy.
    pub(crate) fn backend(&self, workspace: &Workspace) -> Result<(Backend, Choice), Failure> {
        self.backend_with(workspace, &policy(workspace)?)
    }

    /// The journal's options for `command`, which reads or rewrites the journal file itself;
    /// refused (a usage error) when the workspace's leases live in etcd, where that file is not
    /// the record of anything.
    pub(crate) fn journal_only(&self, workspace: &Workspace, command: &str) -> Result<JournalOptions, Failure> {
        let policy = policy(workspace)?;
        match self.choice(workspace, &policy)? {
            Choice::Journal => {
                agrees_with_binding(workspace, None)?;
                Ok(self.options_of(&policy))
            }
            Choice::Etcd(place) => Err(Failure::usage(anyhow!(
                "`{command}` reads the journal file, but this workspace's leases live in {place}: \
                 see them with `keel lease live` (or name --backend journal to read the file anyway)"
            ))),
        }
    }
}

/// Refuses a service other than the one the workspace's write gate bound it to (`service`: the
/// chosen service's name, `None` for a journal): two services would grant the same regions.
fn agrees_with_binding(workspace: &Workspace, service: Option<&str>) -> Result<(), Failure> {
    let Some(bound) = workspace.service() else { return Ok(()) };
    if service == Some(bound) {
        return Ok(());
    }
    let binding = workspace.root().join(keel_journal::STATE_DIR).join(keel_journal::workspace::JOURNAL_BINDING_NAME);
    let chosen = service.map_or_else(|| "the journal".to_owned(), |name| format!("the lease service {name}"));
    Err(Failure::usage(anyhow!(
        "this workspace's write gate is bound to the lease service {bound} ({}), so its leases live \
         there, not in {chosen}: choose that service (--backend, --etcd-prefix, or the [backend] table \
         of the policy); every host of a fleet must use the same one",
        binding.display()
    )))
}

/// A lease service: the journal, or etcd. Each method is the chosen service's.
// One per process, never stored in bulk: boxing the smaller variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    /// The workspace's journal file.
    Journal(Journal),
    /// etcd.
    #[cfg(feature = "etcd")]
    Etcd(keel_etcd::EtcdBackend),
}

impl Backend {
    /// Opens the service `choice` names, deciding with `options`. etcd is not connected to yet:
    /// the first operation does.
    pub fn open(choice: &Choice, journal: &Path, options: JournalOptions) -> Result<Self, Failure> {
        match choice {
            Choice::Journal => Ok(Self::Journal(Journal::open(journal, options))),
            #[cfg(feature = "etcd")]
            Choice::Etcd(place) => {
                let etcd = keel_etcd::EtcdOptions::new(place.endpoints.clone(), &place.prefix);
                keel_etcd::EtcdBackend::new(etcd, options).map(Self::Etcd).map_err(crate::failure)
            }
            #[cfg(not(feature = "etcd"))]
            Choice::Etcd(_) => Err(without_etcd("the command line or the policy")),
        }
    }

    /// The options decisions are made with.
    pub fn options(&self) -> &JournalOptions {
        match self {
            Self::Journal(journal) => journal.options(),
            #[cfg(feature = "etcd")]
            Self::Etcd(etcd) => etcd.options(),
        }
    }

    /// Moves `journal`'s live leases into this backend (see `keel_etcd::EtcdBackend::migrate_from`).
    pub fn migrate_from(&self, journal: &Journal) -> Result<Migrated, Failure> {
        match self {
            #[cfg(feature = "etcd")]
            Self::Etcd(etcd) => {
                let moved = etcd.migrate_from(journal).map_err(|e| crate::failure(named(e)))?;
                Ok(Migrated {
                    leases: moved.leases,
                    generation: moved.generation,
                    closed_journal: moved.closed_journal,
                })
            }
            Self::Journal(_) => {
                let _ = journal;
                Err(Failure::usage(anyhow!("leases move from a journal to etcd, not to a journal")))
            }
        }
    }

    /// Raises the generation counter to at least `floor` (etcd, after a restore).
    pub fn raise_generation(&self, floor: u64) -> Result<u64, Failure> {
        match self {
            #[cfg(feature = "etcd")]
            Self::Etcd(etcd) => etcd.raise_generation(floor).map_err(|e| crate::failure(named(e))),
            Self::Journal(_) => {
                let _ = floor;
                Err(Failure::usage(anyhow!(
                    "the journal's counter is its own record: it is raised past damaged lines by \
                     `keel journal review --accept`; raise-generation is for etcd after a restore"
                )))
            }
        }
    }

    /// Binds the workspace to its journal before a command first writes it (see
    /// [`Workspace::bind`]); a service elsewhere has no journal file to bind.
    pub fn bind(&self, workspace: &Workspace) -> Result<(), Failure> {
        match self {
            Self::Journal(_) => workspace.bind().map_err(crate::failure),
            #[cfg(feature = "etcd")]
            Self::Etcd(_) => Ok(()),
        }
    }
}

/// etcd's "unavailable", spelled so that the message starts with it whatever endpoints the
/// backend names: scripts and people look for "etcd unavailable".
#[cfg(feature = "etcd")]
fn named(error: JournalError) -> JournalError {
    match error {
        JournalError::Unavailable { service, detail } if service != "etcd" => {
            // `etcd (<endpoints>)` says nothing the detail does not: it names every member tried.
            let detail = if service.starts_with("etcd (") { detail } else { format!("{detail} ({service})") };
            JournalError::Unavailable { service: "etcd".to_owned(), detail }
        }
        other => other,
    }
}

/// Runs `$call` on the chosen service, bound to `$service`; with `named`, etcd's errors say
/// "etcd unavailable".
macro_rules! each {
    ($self:ident, $service:ident => $call:expr) => {
        match $self {
            Backend::Journal($service) => $call,
            #[cfg(feature = "etcd")]
            Backend::Etcd($service) => $call,
        }
    };
    ($self:ident, $service:ident => $call:expr, named) => {
        match $self {
            Backend::Journal($service) => $call,
            #[cfg(feature = "etcd")]
            Backend::Etcd($service) => $call.map_err(named),
        }
    };
}

impl LeaseBackend for Backend {
    fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, JournalError> {
        each!(self, service => service.acquire(request), named)
    }
    fn probe(&self, request: &AcquireRequest) -> Result<Decision, JournalError> {
        each!(self, service => service.probe(request), named)
    }
    fn acquire_wait(&self, request: &AcquireRequest, timeout: Duration) -> Result<AcquireOutcome, JournalError> {
        each!(self, service => service.acquire_wait(request, timeout), named)
    }
    fn release(&self, lease: &LeaseRef<'_>, owner: &str) -> Result<Option<Identity>, JournalError> {
        each!(self, service => service.release(lease, owner), named)
    }
    fn heartbeat(
        &self,
        lease: &LeaseRef<'_>,
        owner: &str,
        coalesce_floor_s: Option<u64>,
    ) -> Result<Option<Beat>, JournalError> {
        each!(self, service => service.heartbeat(lease, owner, coalesce_floor_s), named)
    }
    fn adopt(&self, lease: &Identity, new_owner: &str, holder: HolderPid) -> Result<Option<Adopted>, JournalError> {
        each!(self, service => service.adopt(lease, new_owner, holder), named)
    }
    fn halt(&self, lane: &str, owner: &str, reason: &str) -> Result<(), JournalError> {
        each!(self, service => service.halt(lane, owner, reason), named)
    }
    fn spawn(&self, lane: &str, owner: &str, command: &str) -> Result<(), JournalError> {
        each!(self, service => service.spawn(lane, owner, command), named)
    }
    fn scavenge(&self, lease: &Identity, reason: &str, only_if_dead: bool) -> Result<Option<Verdict>, JournalError> {
        each!(self, service => service.scavenge(lease, reason, only_if_dead), named)
    }
    fn live(&self) -> Result<Vec<LiveLease>, JournalError> {
        each!(self, service => service.live(), named)
    }
    fn look<R>(&self, look: impl FnOnce(&LiveState, Option<Stopped>) -> R) -> Result<R, JournalError> {
        each!(self, service => service.look(look), named)
    }
    fn judge(&self, lease: &Object) -> Verdict {
        each!(self, service => service.judge(lease))
    }
    fn live_view(&self) -> Result<LiveView, JournalError> {
        each!(self, service => service.live_view(), named)
    }
    fn with_live<R>(&self, fence: impl FnOnce(&[LiveLease]) -> R) -> Result<R, JournalError> {
        each!(self, service => service.with_live(fence), named)
    }
    fn stats(&self) -> Result<Stats, JournalError> {
        each!(self, service => service.stats(), named)
    }
    fn location(&self) -> Place<'_> {
        each!(self, service => service.location())
    }
    fn protected(&self) -> &[String] {
        each!(self, service => service.protected())
    }
}
