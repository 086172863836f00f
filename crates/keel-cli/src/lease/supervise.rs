//! `keel lease run`'s supervisor: the command is started first and held until the lease names
//! it, heartbeats run while it works, signals sent to keel are passed on to it, and the lease is
//! given back after it, whichever lease service keeps it.

use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use keel_journal::{AcquireOutcome, HolderPid, LeaseBackend as _, LeaseRef};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use super::{AcquireArgs, acquire, print_acquire};
use crate::backend::Backend;
use crate::{Failure, Status};

/// Signals that would end keel while it holds a lease for a child. keel catches them from before
/// the lease is taken until it is released: it must outlive the child to release after it.
const ENDING_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// How a `lease run` child ended, or why it never ran.
enum Run {
    Exited(std::process::ExitStatus),
    /// A signal came while the lease was being taken: the work was not started.
    Cancelled(i32),
    /// Waiting for the command failed.
    Failed(anyhow::Error),
    /// The lease was lost and the command stopped.
    Lost,
}

/// What `lease run` does once its lease is found gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLost {
    /// Stop the command: the region is someone else's now.
    Stop,
    /// Say so and let the command run on, unheld.
    Warn,
}

/// How long a command stopped for a lost lease has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The first argument of a `keel` process that `lease run` starts to become its command once the
/// lease is granted (see [`run_granted`]).
pub const RUN_GRANTED_ARG: &str = "--keel-run-when-granted";
/// The environment variable that tells such a process which file descriptor the go-ahead comes on.
const GATE_FD_ENV: &str = "KEEL_RUN_GATE_FD";
/// The byte that says "granted: run the command".
const GO: u8 = b'g';

/// How `lease run` ties its command to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tie {
    /// The command leads a process group of its own, and the lease lives while any process of
    /// that group runs: a grandchild still editing keeps the region held.
    Group,
    /// On a terminal the command stays in keel's (foreground) process group, so it can read the
    /// terminal and get its signals; the lease names the command's process alone.
    Process,
}

/// `keel lease run`: hold a lease for the life of a child process.
///
/// The command's process is started first and held before it runs anything, so that the lease
/// can name it (pid and start time, and its process group): then the lease is never reclaimable
/// while the command can still run, whatever happens to keel. The held process is keel itself,
/// which waits for one byte on a pipe and then replaces itself with the command (same pid, same
/// start time); it dies with keel (`PR_SET_PDEATHSIG`), so a keel killed with SIGKILL takes its
/// command down with it, and one killed before the grant leaves nothing running.
pub(super) fn run_holding(
    backend: &Backend,
    args: &AcquireArgs,
    heartbeat_s: u64,
    on_lost: OnLost,
    command: &[String],
    json: bool,
) -> Result<Status, Failure> {
    use std::io::{IsTerminal as _, Write as _};
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    // Installed before the grant, so no signal can end keel between the grant and the handler,
    // leaving a lease held with no work and no holder to release it.
    let mut signals = SignalsInfo::<WithOrigin>::new(ENDING_SIGNALS)
        .map_err(|e| Failure::io(anyhow::Error::from(e).context("installing signal handlers")))?;
    let tie = if std::io::stdin().is_terminal() { Tie::Process } else { Tie::Group };
    let (gate_read, gate_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::io(anyhow::Error::from(std::io::Error::from(e)).context("creating a pipe")))?;
    let gate_fd = gate_read.as_raw_fd();
    let keel = std::env::current_exe().map_err(|e| Failure::io(anyhow::Error::from(e).context("finding keel")))?;
    let mut held = Process::new(keel);
    held.arg(RUN_GRANTED_ARG).args(command).env(GATE_FD_ENV, gate_fd.to_string());
    if tie == Tie::Group {
        held.process_group(0);
    }
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, and makes only
    // async-signal-safe system calls (prctl, getppid, fcntl); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        held.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // keel died before the line above: nothing would ever kill this process.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("keel exited"));
            }
            // The pipe's read end stays open across `exec` in the child only.
            let gate = std::os::fd::BorrowedFd::borrow_raw(gate_fd);
            rustix::io::fcntl_setfd(gate, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = held.spawn().map_err(|e| Failure::io(anyhow::Error::from(e).context("starting the command")))?;
    drop(gate_read);
    let holder = match tie {
        Tie::Group => HolderPid::Group(child.id()),
        Tie::Process => HolderPid::Pid(child.id()),
    };
    let request = args.request(holder);
    let outcome = match acquire(backend, &request, args.wait_s) {
        Ok(outcome) => outcome,
        Err(failure) => {
            drop(gate_write);
            let _ = child.wait();
            return Err(failure);
        }
    };
    let AcquireOutcome::Acquire(grant) = &outcome else {
        drop(gate_write);
        let _ = child.wait();
        print_acquire(json, &request, &outcome, args.wait_s.is_some())?;
        return Ok(Status::RunNoLease);
    };
    if !json {
        eprintln!(
            "keel: holding lane {:?} (loop_ts {}) while running {:?}",
            grant.identity.lane, grant.identity.loop_ts, command
        );
    }
    let run = if let Some(origin) = signals.pending().next() {
        eprintln!("keel: signal {} while taking the lease; {} was not started", origin.signal, command[0]);
        drop(gate_write);
        let _ = child.wait();
        backend.release(&LeaseRef::exact(&grant.identity), &args.owner).map_err(crate::failure)?;
        Run::Cancelled(origin.signal)
    } else {
        let mut gate = std::io::PipeWriter::from(gate_write);
        let _ = gate.write_all(&[GO]);
        drop(gate);
        let forward = Forward::to(&child, tie);
        let closer = signals.handle();
        let events = Stopping { grant, on_lost, stopped: AtomicBool::new(false), forward: &forward };
        let expiry = backend.options().expiry;
        let held = keel_journal::holding::hold(backend, grant, &args.owner, &expiry, heartbeat_s, &events, || {
            std::thread::scope(|scope| {
                scope.spawn(|| forward.all(&mut signals));
                let exit = child.wait();
                closer.close();
                exit
            })
        });
        if held.released.map_err(crate::failure)?.is_none() {
            eprintln!("keel: the lease was no longer live when the command ended (reclaimed or scavenged)");
        }
        match held.value.with_context(|| format!("waiting for {}", command[0])) {
            Ok(_) if events.stopped.load(Ordering::SeqCst) => Run::Lost,
            Ok(exit) => Run::Exited(exit),
            Err(error) => Run::Failed(error),
        }
    };
    match run {
        Run::Failed(error) => Err(Failure { status: Status::RunFailed, ..Failure::io(error) }),
        Run::Lost => std::process::exit(Status::RunNoLease as i32),
        Run::Cancelled(signal) => std::process::exit(128 + signal),
        Run::Exited(exit) => {
            use std::os::unix::process::ExitStatusExt;
            let code = exit.code().or_else(|| exit.signal().map(|s| 128 + s)).unwrap_or(1);
            std::process::exit(code);
        }
    }
}

/// The process `lease run` started, once more keel: waits for the go-ahead on the inherited pipe,
/// then becomes the command. No go-ahead (the lease was refused, or keel died): nothing runs.
/// Exits 127 when the command is not found and 126 when it cannot be run, as shells do.
pub fn run_granted(command: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::io::Read as _;
    use std::os::fd::FromRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let Some(fd) = std::env::var(GATE_FD_ENV).ok().and_then(|fd| fd.parse::<i32>().ok()) else {
        eprintln!("keel: {RUN_GRANTED_ARG} is started by `keel lease run` only");
        return std::process::ExitCode::from(2);
    };
    // SAFETY: `lease run` passed this descriptor, the read end of its pipe, open and owned by no
    // one else in this process.
    #[allow(unsafe_code)]
    let mut gate = unsafe { std::io::PipeReader::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    if !matches!(gate.read(&mut byte), Ok(1)) || byte[0] != GO {
        return std::process::ExitCode::from(125);
    }
    drop(gate);
    let Some((program, arguments)) = command.split_first() else { return std::process::ExitCode::from(2) };
    let error = Process::new(program).args(arguments).env_remove(GATE_FD_ENV).exec();
    eprintln!("keel: starting {}: {error}", program.to_string_lossy());
    std::process::ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

/// Passes signals sent to keel on to its child.
struct Forward {
    pid: rustix::process::Pid,
    /// A pidfd names the child itself: once it is reaped, a late signal fails instead of reaching
    /// whatever process reuses the pid. Absent on kernels before 5.3, where the pid is used.
    pidfd: Option<std::os::fd::OwnedFd>,
    tie: Tie,
}

impl Forward {
    fn to(child: &std::process::Child, tie: Tie) -> Self {
        let pid = rustix::process::Pid::from_child(child);
        Self { pid, pidfd: rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok(), tie }
    }

    /// Sends `signal` to the command: to its whole group when it has one of its own.
    fn send(&self, signal: rustix::process::Signal) {
        let _ = match (self.tie, &self.pidfd) {
            (Tie::Group, _) => rustix::process::kill_process_group(self.pid, signal),
            (Tie::Process, Some(pidfd)) => rustix::process::pidfd_send_signal(pidfd, signal),
            (Tie::Process, None) => rustix::process::kill_process(self.pid, signal),
        };
    }

    /// Runs until the iterator's handle is closed.
    fn all(&self, signals: &mut SignalsInfo<WithOrigin>) {
        for origin in signals.forever() {
            let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) else { continue };
            // The command's own group gets every signal keel gets, the terminal's included: it is
            // in no group the terminal signals (it is reaped only after this loop is closed, so
            // its group id names no other group here). In keel's group on a terminal, the
            // terminal signals the whole foreground group (Ctrl-C, a hangup), so the command has
            // that one already; one sent to keel alone (`kill`, a supervisor stopping it) is
            // passed on: stopping keel stops the work its lease covers.
            if self.tie == Tie::Process && matches!(origin.cause, Cause::Kernel) {
                continue;
            }
            self.send(signal);
        }
    }
}

/// What `lease run` does when its lease's heartbeat fails or finds the lease gone.
struct Stopping<'a> {
    grant: &'a keel_journal::Grant,
    on_lost: OnLost,
    /// Whether the command was stopped because the lease was lost.
    stopped: AtomicBool,
    forward: &'a Forward,
}

impl keel_journal::holding::HoldEvents for Stopping<'_> {
    fn beat_failed(&self, error: &keel_journal::JournalError) {
        eprintln!("keel: heartbeat failed: {error}");
    }

    /// The lease is gone: say so at once, and stop the command unless told to let it run.
    fn lost(&self, done: &AtomicBool) {
        let identity = &self.grant.identity;
        eprintln!(
            "keel: lease on lane {:?} (loop_ts {}) lost: it was reclaimed or scavenged",
            identity.lane, identity.loop_ts
        );
        if self.on_lost == OnLost::Warn {
            eprintln!("keel: the command runs on, unheld (--on-lost warn)");
            return;
        }
        eprintln!("keel: stopping the command (SIGTERM, SIGKILL in {} s)", STOP_GRACE.as_secs());
        self.stopped.store(true, Ordering::SeqCst);
        self.forward.send(rustix::process::Signal::TERM);
        let stop_by = std::time::Instant::now() + STOP_GRACE;
        while !done.load(Ordering::SeqCst) {
            if std::time::Instant::now() >= stop_by {
                self.forward.send(rustix::process::Signal::KILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
