//! Facts about processes on this host, for the expiry predicate: who we are, and whether the
//! holder of a lease is still running. Linux `/proc`; elsewhere nothing is known (never "gone").

use std::path::Path;

use keel_kernel::Object;
use keel_kernel::expiry::HolderProcess;
use serde_json::Value;

/// This host's name, as lease bodies record it in `host_id`.
pub fn host_id() -> String {
    let name = keel_fs::lock::host_name();
    if name.trim().is_empty() { "localhost".to_owned() } else { name.trim().to_owned() }
}

/// The start time of process `pid` in clock ticks since boot; `None` when no such process runs
/// (a zombie runs nothing, so it holds nothing). See [`keel_fs::lock::process_start_ticks`].
pub fn start_time(pid: u32) -> Option<u64> {
    keel_fs::lock::process_start_ticks(pid)
}

/// This process's start time, read once (it cannot change).
pub fn own_start_time() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| start_time(std::process::id()))
}

/// What is known about a lease's holder process, seen from `host`.
pub fn holder_process(lease: &Object, host: &str) -> HolderProcess {
    if lease.get("host_id").and_then(Value::as_str) != Some(host) {
        return HolderProcess::Unknown;
    }
    // Pid 0 is the kernel's idle task, never a holder: an ADOPT without a holder process records it.
    let Some(pid) = lease.get("pid").and_then(Value::as_u64).and_then(|p| u32::try_from(p).ok()).filter(|&p| p != 0)
    else {
        return HolderProcess::Unknown;
    };
    if !Path::new("/proc/self").exists() {
        return HolderProcess::Unknown;
    }
    let leader = match (start_time(pid), lease.get("proc_starttime").and_then(Value::as_u64)) {
        (None, _) => HolderProcess::Gone,
        (Some(now), Some(then)) if now != then => HolderProcess::Gone,
        (Some(_), _) => HolderProcess::Alive,
    };
    // A lease tied to a process group (`keel lease run`'s command) lives while any process of
    // the group runs, though its leader is gone: a grandchild may still be editing.
    let group = lease.get("pgid").and_then(Value::as_u64).and_then(|g| u32::try_from(g).ok()).filter(|&g| g > 1);
    match (leader, group) {
        (HolderProcess::Gone, Some(pgid)) if group_runs(pgid) => HolderProcess::Alive,
        (leader, _) => leader,
    }
}

/// Whether any process of process group `pgid` runs (a zombie has ended). A group id can be
/// reused only once its group is empty, by a new group whose leader took that pid: reading it as
/// still running errs on the side of keeping the lease.
fn group_runs(pgid: u32) -> bool {
    let Some(group) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    if let Err(rustix::io::Errno::SRCH) = rustix::process::test_kill_process_group(group) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries.flatten().any(|entry| {
        let pid = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok());
        pid.and_then(keel_fs::lock::process_stat).is_some_and(|stat| stat.group == pgid && !stat.ended)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_its_holder() {
        let pid = std::process::id();
        let start = start_time(pid).expect("our own /proc entry");
        let host = host_id();
        let mut lease = Object::new();
        lease.insert("host_id".into(), Value::from(host.clone()));
        lease.insert("pid".into(), Value::from(pid));
        lease.insert("proc_starttime".into(), Value::from(start));
        assert_eq!(holder_process(&lease, &host), HolderProcess::Alive);
        lease.insert("proc_starttime".into(), Value::from(start + 1));
        assert_eq!(holder_process(&lease, &host), HolderProcess::Gone);
        assert_eq!(holder_process(&lease, "another-host"), HolderProcess::Unknown);
    }
}
