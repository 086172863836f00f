//! The connection to etcd: one client per member, tried in turn with a timeout each, because
//! the client crate keeps routing to a dead member (about a third of requests fail with one of
//! three down). All I/O runs on a runtime of its own, so a caller blocks the same way from a
//! plain thread and from inside another runtime (the MCP server's).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use keel_journal::JournalError;
use tonic::Code;

/// How many times every member is tried before the service counts as unavailable.
const ROUNDS_MAX: usize = 3;
/// The pause before each round after the first, in milliseconds.
const ROUND_BACKOFF_MS: [u64; ROUNDS_MAX] = [0, 100, 400];
/// The most members a backend is given.
pub const ENDPOINTS_MAX: usize = 16;

/// The members, their clients, and the one that answered last (tried first).
pub(crate) struct Remote {
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<String>,
    clients: Vec<Mutex<Option<Client>>>,
    preferred: AtomicUsize,
    request_timeout: Duration,
    connect_timeout: Duration,
    service: String,
}

/// Whether a failed request may succeed on another member (or later): transport failures,
/// timeouts and "no leader" are; a malformed request is not.
fn retryable(error: &etcd_client::Error) -> bool {
    use etcd_client::Error;
    match error {
        Error::TransportError(_) | Error::IoError(_) | Error::LeaseKeepAliveError(_) => true,
        Error::GRpcStatus(status) => !matches!(
            status.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::Unauthenticated
        ),
        _ => false,
    }
}

impl Remote {
    pub(crate) fn new(
        endpoints: Vec<String>,
        request_timeout: Duration,
        connect_timeout: Duration,
        service: String,
    ) -> Result<Self, JournalError> {
        let unavailable = |detail: String| JournalError::Unavailable { service: service.clone(), detail };
        if endpoints.is_empty() || endpoints.len() > ENDPOINTS_MAX {
            return Err(JournalError::InvalidRequest(format!(
                "give between 1 and {ENDPOINTS_MAX} etcd endpoints (got {})",
                endpoints.len()
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keel-etcd")
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("starting the client runtime: {e}")))?;
        let clients = endpoints.iter().map(|_| Mutex::new(None)).collect();
        Ok(Self {
            runtime,
            endpoints,
            clients,
            preferred: AtomicUsize::new(0),
            request_timeout,
            connect_timeout,
            service,
        })
    }

    /// The endpoints, as given.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs `future` on this backend's runtime and waits for it.
    pub(crate) fn block<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            // The receiver waits below; it is gone only if this thread is.
            let _ = sender.send(future.await);
        });
        receiver.recv().ok()
    }

    fn client(&self, member: usize) -> Result<Client, String> {
        let mut slot = self.clients[member].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let endpoint = self.endpoints[member].clone();
        let options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_require_leader(true);
        let deadline = self.connect_timeout + self.request_timeout;
        let connected = self
            .block(async move { tokio::time::timeout(deadline, Client::connect([endpoint], Some(options))).await })
            .ok_or("the client runtime stopped")?;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no connection within {deadline:?}")),
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    fn forget(&self, member: usize) {
        *self.clients[member].lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Runs `op` on the first member that answers: the one that answered last first, then the
    /// others, for [`ROUNDS_MAX`] rounds with a backoff. A request that timed out may have been
    /// applied; callers whose requests are not idempotent say so in what they store (a request
    /// id) and read it back.
    pub(crate) fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, JournalError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let members = self.endpoints.len();
        let mut failures: Vec<String> = Vec::new();
        for backoff_ms in ROUND_BACKOFF_MS {
            if backoff_ms > 0 {
                std::thread::sleep(Duration::from_millis(backoff_ms));
            }
            let first = self.preferred.load(Ordering::Relaxed);
            for k in 0..members {
                let member = (first + k) % members;
                let endpoint = &self.endpoints[member];
                let client = match self.client(member) {
                    Ok(client) => client,
                    Err(error) => {
                        failures.push(format!("{endpoint}: {error}"));
                        continue;
                    }
                };
                let timeout = self.request_timeout;
                let request = op(client);
                let answer = self.block(async move { tokio::time::timeout(timeout, request).await });
                match answer {
                    Some(Ok(Ok(value))) => {
                        self.preferred.store(member, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Some(Ok(Err(error))) if !retryable(&error) => {
                        return Err(JournalError::InvalidRequest(format!("etcd refused {what}: {error}")));
                    }
                    Some(Ok(Err(error))) => failures.push(format!("{endpoint}: {error}")),
                    Some(Err(_)) => failures.push(format!("{endpoint}: no answer within {timeout:?}")),
                    None => failures.push(format!("{endpoint}: the client runtime stopped")),
                }
                self.forget(member);
            }
        }
        failures.dedup();
        let shown: Vec<&String> = failures.iter().rev().take(members).collect();
        Err(JournalError::Unavailable {
            service: self.service.clone(),
            detail: format!(
                "{what} failed on every member: {}",
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
            ),
        })
    }
}
