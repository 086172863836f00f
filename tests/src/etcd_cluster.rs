//! A real etcd cluster on loopback for keel's etcd test suites: started per test or shared by the
//! test binary, its members killed, paused and restarted one by one. Never a mock: the suites prove
//! keel against the server it runs against, and fail loudly (never skip) when that server is missing.
//!
//! # Model
//! - [`Cluster::start`]`(n)` starts `n` members (3 in most tests) and returns once every member
//!   answers healthy: `status` plus a linearizable `get` through that member, which only succeeds
//!   when it is connected to a leader with a quorum and has applied what was committed before the
//!   read. Members are indexed from 0 and named `m0`, `m1`, …
//! - Ports: two per member (client, peer), taken by binding `127.0.0.1:0` and releasing just before
//!   etcd binds them; a port is never handed out twice in one process. Another process can still
//!   grab one in between: a member that exits with "address already in use" makes `start` retry
//!   the whole cluster with fresh ports, up to [`START_ATTEMPTS_MAX`] times.
//! - Files: everything under `/dev/shm/keel-etcd-<pid>-<n>/` (the system temp dir when /dev/shm
//!   is absent): `m<i>/` (data dir), `m<i>.log` (etcd's zap log), `m<i>.out` (its stdout and
//!   stderr). The cluster token is the same `keel-etcd-<pid>-<n>`, so a member never joins another
//!   run's cluster through a reused port. Each member preallocates its WAL: about 120 MB of RAM
//!   in /dev/shm per member while the cluster lives.
//! - Flags beyond etcd.md's command line: `--heartbeat-interval 50 --election-timeout 500`, half
//!   the defaults (etcd advises 10 heartbeats per election timeout), so an election after a kill
//!   takes 0.5–1 s. No auto-compaction (etcd 3.4's default): a checker may read the whole history.
//! - [`shared`] gives the binary one 3-member cluster for tests that use disjoint key prefixes
//!   (their module path and test name). Killing, pausing and restarting take `&mut Cluster`, which
//!   the shared `&'static Cluster` cannot give: tests that disturb members start their own.
//! - The harness blocks (tests call it from plain `#[test]`s and from `#[tokio::test]`s alike);
//!   its own gRPC calls run on a private runtime on a thread of their own. Clients for the tests
//!   ([`Cluster::client`], [`Cluster::member_client`]) live on the caller's runtime.
//!
//! # No member outlives the test process
//! Dropping a [`Cluster`] (also while a failed test unwinds) kill -9s every member, waits for it
//! and removes the cluster's directory; a panicking test keeps the logs for its autopsy. That does
//! not cover the shared cluster (a static is never dropped) nor a test process killed outright,
//! and `PR_SET_PDEATHSIG` would need `unsafe` (denied workspace-wide). So each member runs under a
//! watchdog, a small `sh` script ([`WATCHDOG_SCRIPT`]):
//! - It starts etcd in the background, prints etcd's pid (the harness signals etcd itself, not
//!   the shell) and then `wait`s for it, so the watchdog exits exactly when etcd has exited and
//!   has been reaped: waiting for the watchdog is waiting for etcd.
//! - Its stdin is a pipe whose only writing end the test process holds (the *lifeline*; Rust opens
//!   pipes close-on-exec, so no other child inherits it). A background `read` on it returns only
//!   at end of file, that is when the test process has exited or died, however it ended; the
//!   watchdog then kill -9s etcd and deletes the member's files. Event-driven: no polling loop.
//! - [`Cluster::kill`] kill -9s etcd while the lifeline is still open, so the data dir stays for
//!   [`Cluster::restart`]; the lifeline closes only once the watchdog has exited.
//!
//! The first cluster a test process starts also deletes the directories that earlier test
//! processes (found dead in `/proc`) left behind: the logs a failed test kept on purpose, and the
//! log of a member that had exited on its own (a port clash) when its test process was killed.
//!
//! # Limitations
//! - Linux only (`/proc`, signals); `sh` and `etcd` must be on PATH.
//! - Loopback only: partitions need another tool (e.g. a proxy between members); [`Cluster::stop`]
//!   (SIGSTOP) gives a paused member, the nearest thing available here.
//! - A member whose data dir the watchdog deleted ([`Cluster::orphan`]) cannot be restarted.
//!
//! # Example
//! ```ignore
//! let mut cluster = Cluster::start(3);
//! let leader = cluster.leader();
//! cluster.kill(leader);
//! let mut survivor = cluster.member_client((leader + 1) % 3).await;
//! survivor.put("my-test/key", "value", None).await?; // may fail during the election: retry
//! cluster.restart(leader);
//! ```

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process, test_kill_process};

/// Largest cluster the harness starts (etcd advises at most 7 members).
const MEMBERS_MAX: usize = 7;
/// How long a starting cluster or a restarted member may take to answer healthy: about 1.2 s is
/// usual here; the margin is for a loaded 2-core machine.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// How long [`Cluster::leader`] waits for the members to agree on a running leader.
const LEADER_WITHIN: Duration = Duration::from_secs(10);
/// How long a watchdog may take to kill its orphaned member and delete its files.
const WATCHDOG_WITHIN: Duration = Duration::from_secs(5);
/// How often the harness polls instead of sleeping a fixed time.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// Bound on one health or status probe (a paused member never answers).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How many times [`Cluster::start`] retries after another process took one of its ports.
pub const START_ATTEMPTS_MAX: usize = 3;
/// Bound on the binds [`free_ports`] tries before giving up.
const PORT_BINDS_MAX: usize = 1000;
/// How much of a member's log a failure message quotes.
const LOG_TAIL_LINES: usize = 25;
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;
const HEARTBEAT_INTERVAL_MS: u32 = 50;
const ELECTION_TIMEOUT_MS: u32 = 500;
/// The key the health probe reads (absent; reading it proves the member serves linearizable reads).
const PROBE_KEY: &str = "keel-etcd-harness/probe";

/// Each member's watchdog (see the module docs). Arguments: data dir, stdout/stderr file, log
/// file, cluster dir, then etcd's command line. The marker file tells the waiting shell that the
/// reader saw the test process go: only then are the member's files deleted.
pub const WATCHDOG_SCRIPT: &str = r#"data_dir=$1 out=$2 log=$3 base=$4
shift 4
rm -f "$data_dir.orphaned"
exec 3<&0 </dev/null
"$@" 3<&- </dev/null >>"$out" 2>&1 &
child=$!
echo "$child"
exec >/dev/null
{ read -r _line <&3; : >"$data_dir.orphaned"; kill -9 "$child"; } 2>/dev/null &
reader=$!
exec 3<&-
wait "$child"
status=$?
kill "$reader" 2>/dev/null
if [ -e "$data_dir.orphaned" ]; then
  rm -rf "$data_dir" "$data_dir.orphaned" "$out" "$log"
  rmdir "$base" 2>/dev/null
fi
exit "$status""#;

static SHARED: OnceLock<Cluster> = OnceLock::new();
/// Numbers this process's clusters (the `<n>` of their directory).
static CLUSTERS_STARTED: AtomicUsize = AtomicUsize::new(0);
/// Every port this process handed out: two clusters of one process never share one.
static PORTS_HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
static SWEEP_LEFTOVERS: Once = Once::new();

/// The test binary's shared 3-member cluster, started by the first test that asks for it. Use a
/// key prefix of your own (module path and test name); to kill, pause or restart members, start
/// a private [`Cluster`].
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| Cluster::start(3))
}

/// Options for tests' clients: like keel's backend, require a leader (a member cut off from the
/// quorum refuses rather than answering stale) and bound every request.
pub fn client_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_require_leader(true)
}

/// Whether a process with this pid exists (a zombie counts).
pub fn process_exists(pid: i32) -> bool {
    let pid = Pid::from_raw(pid).expect("a pid is positive");
    !matches!(test_kill_process(pid), Err(Errno::SRCH))
}

/// The first executable file called `name` in the directories of `path` (a PATH value).
pub fn find_executable(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|directory| directory.join(name)).find(|candidate| {
        fs::metadata(candidate).is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    })
}

/// A running etcd cluster of real `etcd` processes on loopback; dropping it kills them all.
pub struct Cluster {
    /// `<temp root>/keel-etcd-<pid>-<n>`: every file of every member.
    base_dir: PathBuf,
    /// `keel-etcd-<pid>-<n>`, also the cluster token.
    name: String,
    etcd: PathBuf,
    members: Vec<Member>,
    started_in: Duration,
}

struct Member {
    client_port: u16,
    peer_port: u16,
    /// etcd's member id, learned from the member's first healthy answer (0 until then).
    id: u64,
    state: State,
}

enum State {
    Running(Process),
    Stopped(Process),
    Killed,
    /// Its watchdog killed it and deleted its files ([`Cluster::orphan`]).
    Orphaned,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Running(_) => "running",
            State::Stopped(_) => "stopped",
            State::Killed => "killed",
            State::Orphaned => "orphaned",
        }
    }
}

/// One member's processes: its watchdog shell and etcd, the shell's child.
struct Process {
    watchdog: Child,
    etcd_pid: Pid,
    /// The writing end of the watchdog's stdin: closed, it means "the test process is gone".
    lifeline: ChildStdin,
}

impl Process {
    /// Kill -9s etcd and waits until it has exited and been reaped.
    fn kill_and_wait(mut self) -> Result<(), String> {
        // Once the watchdog has exited, etcd was reaped and its pid may be another process's.
        let exited = self.watchdog.try_wait().map_err(|error| format!("try_wait on the watchdog: {error}"))?;
        if exited.is_none() {
            match kill_process(self.etcd_pid, Signal::KILL) {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(errno) => return Err(format!("SIGKILL to etcd (pid {}): {errno}", self.etcd_pid.as_raw_pid())),
            }
        }
        // The watchdog exits right after reaping etcd.
        self.watchdog.wait().map_err(|error| format!("waiting for the watchdog: {error}"))?;
        // Only now: closed earlier, the lifeline would make the watchdog delete the data dir that
        // a restart needs.
        drop(self.lifeline);
        Ok(())
    }
}

/// Why members did not answer healthy.
enum Unhealthy {
    /// A member's process ended.
    Exited { index: usize, status: ExitStatus },
    /// Members still failing their probe at the deadline, with the last error of each.
    Late { pending: Vec<(usize, String)> },
}

impl Cluster {
    /// Starts a cluster of `members` (1 to 7) and returns once every member answers healthy.
    /// Panics, naming what is missing and quoting the failing member's log, if `etcd` is not on
    /// PATH or a member is not healthy within 20 s.
    pub fn start(members: usize) -> Cluster {
        Cluster::start_first_trying(members, None)
    }

    /// [`Cluster::start`], its first attempt on `first_ports` (client and peer port of each
    /// member in turn) when given: how the harness's own test makes a port clash happen.
    pub fn start_first_trying(members: usize, first_ports: Option<Vec<u16>>) -> Cluster {
        assert!((1..=MEMBERS_MAX).contains(&members), "a cluster has 1 to {MEMBERS_MAX} members, not {members}");
        if let Some(ports) = &first_ports {
            assert_eq!(ports.len(), 2 * members, "two ports per member");
        }
        let mut first_ports = first_ports;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let etcd = find_executable("etcd", &path).unwrap_or_else(|| {
            panic!(
                "`etcd` is not on PATH ({}): keel's etcd suites run against a real etcd (3.4 or later) and never \
                 skip. Install it (Debian: `apt-get install etcd-server`) or put its directory on PATH.",
                path.to_string_lossy()
            )
        });
        let root = temp_root();
        SWEEP_LEFTOVERS.call_once(|| sweep_leftovers(&root));
        let begun = Instant::now();
        let mut clashes = Vec::new();
        for _ in 0..START_ATTEMPTS_MAX {
            let ports = first_ports.take().unwrap_or_else(|| free_ports(2 * members));
            let mut cluster = Cluster::spawn(&etcd, &root, &ports);
            let all: Vec<usize> = (0..members).collect();
            match cluster.poll_healthy(&all) {
                Ok(()) => {
                    cluster.started_in = begun.elapsed();
                    cluster.assert_member_ids_distinct();
                    return cluster;
                }
                // Dropping this attempt's cluster kills its members and deletes its files.
                Err(unhealthy) if cluster.is_port_clash(&unhealthy) => clashes.push(cluster.describe(&unhealthy)),
                Err(unhealthy) => panic!("{}", cluster.describe(&unhealthy)),
            }
        }
        panic!(
            "another process took one of the cluster's ports on each of {START_ATTEMPTS_MAX} attempts:\n{}",
            clashes.join("\n\n")
        )
    }

    /// How long [`Cluster::start`] took, retries included.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// How many members the cluster has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), by index.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|index| self.endpoint(index)).collect()
    }

    /// Member `index`'s client URL.
    pub fn endpoint(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[index].client_port)
    }

    /// Every port the cluster listens on, client and peer.
    pub fn ports(&self) -> Vec<u16> {
        self.members.iter().flat_map(|member| [member.client_port, member.peer_port]).collect()
    }

    /// Member `index`'s data dir (kept across [`Cluster::kill`] and [`Cluster::restart`]).
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.base_dir.join(format!("m{index}"))
    }

    /// Member `index`'s etcd log.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.base_dir.join(format!("m{index}.log"))
    }

    fn out_path(&self, index: usize) -> PathBuf {
        self.base_dir.join(format!("m{index}.out"))
    }

    /// Member `index`'s etcd pid, while it runs or is stopped.
    pub fn etcd_pid(&self, index: usize) -> Option<i32> {
        match &self.members[index].state {
            State::Running(process) | State::Stopped(process) => Some(process.etcd_pid.as_raw_pid()),
            State::Killed | State::Orphaned => None,
        }
    }

    /// A client of every member, connected on the caller's runtime.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), Some(client_options()))
            .await
            .unwrap_or_else(|error| panic!("a client of {}: {error}", self.name))
    }

    /// A client of member `index` alone: to say which member a request went through.
    pub async fn member_client(&self, index: usize) -> Client {
        Client::connect([self.endpoint(index)], Some(client_options()))
            .await
            .unwrap_or_else(|error| panic!("a client of m{index} of {}: {error}", self.name))
    }

    /// The index of the leader, once a quorum of running members answer and all of them name the
    /// same running member (right after a kill, survivors still name the dead leader for a while).
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_WITHIN;
        let quorum = self.members.len() / 2 + 1;
        let running: Vec<(usize, String)> = (0..self.members.len())
            .filter(|&index| matches!(self.members[index].state, State::Running(_)))
            .map(|index| (index, self.endpoint(index)))
            .collect();
        block_on(async {
            loop {
                // (index, leader id it reports)
                let mut reports: Vec<(usize, u64)> = Vec::new();
                for (index, endpoint) in &running {
                    if let Ok(leader_id) = probe_leader(endpoint).await {
                        reports.push((*index, leader_id));
                    }
                }
                let agreed =
                    reports.first().map(|&(_, id)| id).filter(|&id| id != 0 && reports.iter().all(|r| r.1 == id));
                let leader = agreed.and_then(|id| running.iter().map(|r| r.0).find(|&i| self.members[i].id == id));
                if let Some(leader) = leader
                    && reports.len() >= quorum
                {
                    return leader;
                }
                assert!(
                    Instant::now() < deadline,
                    "the members of {} did not agree on a running leader within {LEADER_WITHIN:?}; (member, leader \
                     id) reports: {reports:?}; member ids: {:?}",
                    self.name,
                    self.members.iter().map(|m| m.id).collect::<Vec<_>>()
                );
                tokio::time::sleep(POLL_EVERY).await;
            }
        })
    }

    /// Kill -9s member `index` and waits until its process is gone. Its data dir stays.
    pub fn kill(&mut self, index: usize) {
        let state = std::mem::replace(&mut self.members[index].state, State::Killed);
        let (State::Running(process) | State::Stopped(process)) = state else {
            let name = state.name();
            self.members[index].state = state;
            panic!("kill(m{index}): the member is {name}, not running or stopped");
        };
        if let Err(error) = process.kill_and_wait() {
            panic!("kill(m{index}): {error}");
        }
    }

    /// Starts killed member `index` again with the same command line (etcd ignores the
    /// `--initial-*` flags once its data dir exists) and waits until it answers healthy, which
    /// means it has caught up with what was committed before.
    pub fn restart(&mut self, index: usize) {
        let state = &self.members[index].state;
        assert!(matches!(state, State::Killed), "restart(m{index}): the member is {}, not killed", state.name());
        let process = self.spawn_member(index);
        self.members[index].state = State::Running(process);
        if let Err(unhealthy) = self.poll_healthy(&[index]) {
            panic!("restart(m{index}): {}", self.describe(&unhealthy));
        }
    }

    /// Pauses member `index` (SIGSTOP): it holds its ports and answers nothing.
    pub fn stop(&mut self, index: usize) {
        let state = &mut self.members[index].state;
        let State::Running(process) = state else {
            panic!("stop(m{index}): the member is {}, not running", state.name());
        };
        signal(process, Signal::STOP, index);
        let State::Running(process) = std::mem::replace(state, State::Killed) else {
            unreachable!("matched as running above");
        };
        *state = State::Stopped(process);
    }

    /// Resumes stopped member `index` (SIGCONT); [`Cluster::wait_healthy`] waits until it has caught up.
    pub fn cont(&mut self, index: usize) {
        let state = &mut self.members[index].state;
        let State::Stopped(process) = state else {
            panic!("cont(m{index}): the member is {}, not stopped", state.name());
        };
        signal(process, Signal::CONT, index);
        let State::Stopped(process) = std::mem::replace(state, State::Killed) else {
            unreachable!("matched as stopped above");
        };
        *state = State::Running(process);
    }

    /// Waits until every running (not stopped) member answers healthy.
    pub fn wait_healthy(&mut self) {
        let running: Vec<usize> =
            (0..self.members.len()).filter(|&index| matches!(self.members[index].state, State::Running(_))).collect();
        if let Err(unhealthy) = self.poll_healthy(&running) {
            panic!("wait_healthy: {}", self.describe(&unhealthy));
        }
    }

    /// Closes member `index`'s lifeline as the test process's exit would, and waits for its
    /// watchdog to kill etcd and delete the member's files: the proof that nothing outlives a
    /// test process. Returns etcd's (former) pid. The member cannot be restarted afterwards.
    pub fn orphan(&mut self, index: usize) -> i32 {
        let state = std::mem::replace(&mut self.members[index].state, State::Orphaned);
        let (State::Running(process) | State::Stopped(process)) = state else {
            let name = state.name();
            self.members[index].state = state;
            panic!("orphan(m{index}): the member is {name}, not running or stopped");
        };
        let Process { mut watchdog, etcd_pid, lifeline } = process;
        drop(lifeline);
        let deadline = Instant::now() + WATCHDOG_WITHIN;
        loop {
            match watchdog.try_wait() {
                Ok(Some(_)) => return etcd_pid.as_raw_pid(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_EVERY),
                Ok(None) => {
                    // Leave nothing behind even though the watchdog failed.
                    let _ = kill_process(etcd_pid, Signal::KILL);
                    let _ = watchdog.kill();
                    let _ = watchdog.wait();
                    panic!("orphan(m{index}): the watchdog did not kill etcd within {WATCHDOG_WITHIN:?}");
                }
                Err(error) => panic!("orphan(m{index}): try_wait on the watchdog: {error}"),
            }
        }
    }

    /// Creates the cluster's directory and starts every member (without waiting for health).
    fn spawn(etcd: &Path, root: &Path, ports: &[u16]) -> Cluster {
        let name = format!("keel-etcd-{}-{}", std::process::id(), CLUSTERS_STARTED.fetch_add(1, Ordering::Relaxed));
        let base_dir = root.join(&name);
        // A directory of this name can only be left by an earlier process that had our pid.
        if base_dir.exists() {
            fs::remove_dir_all(&base_dir).unwrap_or_else(|error| panic!("remove {}: {error}", base_dir.display()));
        }
        fs::create_dir(&base_dir).unwrap_or_else(|error| panic!("create {}: {error}", base_dir.display()));
        let members = ports
            .chunks_exact(2)
            .map(|pair| Member { client_port: pair[0], peer_port: pair[1], id: 0, state: State::Killed })
            .collect();
        let mut cluster = Cluster { base_dir, name, etcd: etcd.to_owned(), members, started_in: Duration::ZERO };
        // Should a spawn panic, dropping `cluster` kills the members already started.
        for index in 0..cluster.members.len() {
            let process = cluster.spawn_member(index);
            cluster.members[index].state = State::Running(process);
        }
        cluster
    }

    /// Member `index`'s etcd command line, after the binary.
    fn etcd_args(&self, index: usize) -> Vec<OsString> {
        let member = &self.members[index];
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, other)| format!("m{i}=http://127.0.0.1:{}", other.peer_port))
            .collect();
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: &OsStr| {
            args.push(name.into());
            args.push(value.to_owned());
        };
        flag("--name", format!("m{index}").as_ref());
        flag("--data-dir", self.data_dir(index).as_os_str());
        flag("--listen-client-urls", client_url.as_ref());
        flag("--advertise-client-urls", client_url.as_ref());
        flag("--listen-peer-urls", peer_url.as_ref());
        flag("--initial-advertise-peer-urls", peer_url.as_ref());
        flag("--initial-cluster", initial_cluster.join(",").as_ref());
        flag("--initial-cluster-token", self.name.as_ref());
        flag("--initial-cluster-state", "new".as_ref());
        flag("--heartbeat-interval", HEARTBEAT_INTERVAL_MS.to_string().as_ref());
        flag("--election-timeout", ELECTION_TIMEOUT_MS.to_string().as_ref());
        flag("--logger", "zap".as_ref());
        flag("--log-outputs", self.log_path(index).as_os_str());
        args
    }

    fn command_line(&self, index: usize) -> String {
        let mut line = self.etcd.to_string_lossy().into_owned();
        for arg in self.etcd_args(index) {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    /// Starts member `index` under its watchdog and learns etcd's pid.
    fn spawn_member(&self, index: usize) -> Process {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("keel-etcd-watchdog")
            .arg(self.data_dir(index))
            .arg(self.out_path(index))
            .arg(self.log_path(index))
            .arg(&self.base_dir)
            .arg(&self.etcd)
            .args(self.etcd_args(index))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // etcd reads ETCD_* variables as flags: the test's environment must not change the cluster.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        let mut watchdog =
            command.spawn().unwrap_or_else(|error| panic!("cannot run `sh` to start etcd member m{index}: {error}"));
        let lifeline = watchdog.stdin.take().expect("stdin is piped");
        let mut line = String::new();
        let read = BufReader::new(watchdog.stdout.take().expect("stdout is piped")).read_line(&mut line);
        let etcd_pid = read.ok().and_then(|_| line.trim().parse().ok()).and_then(Pid::from_raw);
        let Some(etcd_pid) = etcd_pid else {
            // Dropping the lifeline makes the watchdog kill whatever it started.
            drop(lifeline);
            let _ = watchdog.wait();
            panic!("the watchdog of etcd member m{index} printed {line:?}, not etcd's pid");
        };
        Process { watchdog, etcd_pid, lifeline }
    }

    /// Polls `indexes` until each has answered healthy once, a member's process ends, or the deadline.
    fn poll_healthy(&mut self, indexes: &[usize]) -> Result<(), Unhealthy> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let mut pending: Vec<(usize, String)> = indexes.iter().map(|&index| (index, "not probed".to_owned())).collect();
        let endpoints = self.endpoints();
        block_on(async {
            loop {
                if let Some(exited) = self.exited_member() {
                    return Err(exited);
                }
                let mut still_pending = Vec::new();
                // One after another: a member that is not up yet refuses the connection at once.
                for (index, _) in pending {
                    match probe_health(&endpoints[index]).await {
                        Ok(id) => self.members[index].id = id,
                        Err(error) => still_pending.push((index, error)),
                    }
                }
                pending = still_pending;
                if pending.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(Unhealthy::Late { pending });
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        })
    }

    /// The first member whose process has ended though the harness did not kill it.
    fn exited_member(&mut self) -> Option<Unhealthy> {
        self.members.iter_mut().enumerate().find_map(|(index, member)| match &mut member.state {
            State::Running(process) | State::Stopped(process) => {
                let status = process.watchdog.try_wait().expect("try_wait on a watchdog");
                status.map(|status| Unhealthy::Exited { index, status })
            }
            State::Killed | State::Orphaned => None,
        })
    }

    fn is_port_clash(&self, unhealthy: &Unhealthy) -> bool {
        let Unhealthy::Exited { index, .. } = unhealthy else {
            return false;
        };
        [self.log_path(*index), self.out_path(*index)].iter().any(|path| tail(path).contains("address already in use"))
    }

    fn assert_member_ids_distinct(&self) {
        let ids: BTreeSet<u64> = self.members.iter().map(|member| member.id).collect();
        assert!(
            ids.len() == self.members.len() && !ids.contains(&0),
            "the members of {} reported member ids {ids:?}: expected {} distinct non-zero ids",
            self.name,
            self.members.len()
        );
    }

    /// A failure message: what happened, each failing member's command line and its logs' last lines.
    fn describe(&self, unhealthy: &Unhealthy) -> String {
        match unhealthy {
            Unhealthy::Exited { index, status } => format!(
                "etcd member m{index} of {} exited ({status}) before answering healthy at {}.{}",
                self.base_dir.display(),
                self.endpoint(*index),
                self.autopsy(*index)
            ),
            Unhealthy::Late { pending } => {
                let mut text = format!(
                    "etcd members of {} did not answer healthy within {HEALTHY_WITHIN:?}:",
                    self.base_dir.display()
                );
                for (index, error) in pending {
                    let _ = write!(text, "\n- m{index} at {}: last probe: {error}", self.endpoint(*index));
                }
                for (index, _) in pending {
                    text.push_str(&self.autopsy(*index));
                }
                text
            }
        }
    }

    fn autopsy(&self, index: usize) -> String {
        let (log, out) = (self.log_path(index), self.out_path(index));
        format!(
            "\n\nm{index}'s command line: {}\nlast lines of {}:\n{}\nlast lines of {}:\n{}",
            self.command_line(index),
            log.display(),
            tail(&log),
            out.display(),
            tail(&out)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (index, member) in self.members.iter_mut().enumerate() {
            if let State::Running(process) | State::Stopped(process) =
                std::mem::replace(&mut member.state, State::Killed)
                && let Err(error) = process.kill_and_wait()
            {
                eprintln!("keel-etcd harness: dropping {}: m{index}: {error}", self.name);
            }
        }
        if std::thread::panicking() {
            // The data dirs hold about 120 MB of RAM each; the logs are small and tell what went
            // wrong. The next test process's sweep deletes them.
            for index in 0..self.members.len() {
                let _ = fs::remove_dir_all(self.data_dir(index));
            }
            eprintln!(
                "keel-etcd harness: the members' logs stay in {} until the next test run",
                self.base_dir.display()
            );
        } else if let Err(error) = fs::remove_dir_all(&self.base_dir)
            // Gone already when the watchdog of the last member deleted it (`orphan`).
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("keel-etcd harness: remove {}: {error}", self.base_dir.display());
        }
    }
}

fn signal(process: &Process, signal: Signal, index: usize) {
    if let Err(errno) = kill_process(process.etcd_pid, signal) {
        panic!("signal {signal:?} to etcd member m{index} (pid {}): {errno}", process.etcd_pid.as_raw_pid());
    }
}

/// Health of one member: its id, once it answers `status` and a linearizable `get`.
async fn probe_health(endpoint: &str) -> Result<u64, String> {
    let options =
        ConnectOptions::new().with_connect_timeout(PROBE_TIMEOUT).with_timeout(PROBE_TIMEOUT).with_require_leader(true);
    let probe = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        let status = client.status().await?;
        // Linearizable (the default): answered only through a leader with a quorum, once this
        // member has applied everything committed before the read.
        client.get(PROBE_KEY, None).await?;
        Ok::<u64, etcd_client::Error>(status.header().map_or(0, etcd_client::ResponseHeader::member_id))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(0)) => Err("status named no member id".to_owned()),
        Ok(Ok(id)) => Ok(id),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The leader id a member reports (0: it knows none).
async fn probe_leader(endpoint: &str) -> Result<u64, String> {
    let options = ConnectOptions::new().with_connect_timeout(PROBE_TIMEOUT).with_timeout(PROBE_TIMEOUT);
    let probe = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        Ok::<u64, etcd_client::Error>(client.status().await?.leader())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Runs `future` on a runtime of its own on a thread of its own: the harness is called from plain
/// tests and from inside tokio runtimes, and a runtime cannot block inside another.
fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the harness's probes")
                .block_on(future)
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `count` distinct free loopback ports no other cluster of this process was given.
fn free_ports(count: usize) -> Vec<u16> {
    let mut handed_out = PORTS_HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // Every listener stays bound until we return, so the kernel never gives the same port twice.
    let mut held = Vec::new();
    let mut fresh = Vec::new();
    while fresh.len() < count && held.len() < PORT_BINDS_MAX {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("bind 127.0.0.1:0: {error}"));
        let port = listener.local_addr().expect("a bound listener has an address").port();
        if handed_out.insert(port) {
            fresh.push(port);
        }
        held.push(listener);
    }
    assert_eq!(fresh.len(), count, "no {count} fresh loopback ports in {PORT_BINDS_MAX} binds");
    fresh
}

/// /dev/shm when there is one (a cluster on tmpfs is healthy in half the time), else the temp dir.
fn temp_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() }
}

/// Deletes the `keel-etcd-<pid>-<n>` directories of processes that no longer exist.
fn sweep_leftovers(root: &Path) {
    // Without /proc every process would look dead, and live clusters would lose their files.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|name| name.strip_prefix("keel-etcd-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            // Errors are fine: a watchdog of that process may be deleting the same files.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The last lines of a log file, read from at most its last 64 KiB.
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = fs::File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES_MAX)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES_MAX).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
