//! The `*at` helpers: every file operation relative to a directory handle beneath the root, so a
//! path is resolved once and a renamed directory cannot redirect a write; and the journal binding.

use super::{
    AtFlags, BorrowedFd, DirSyncStatus, Errno, ErrorKind, File, FileType, HASH_BUFFER_BYTES, Index, Look, Mode,
    MutateError, OFlags, Observed, Outcome, Path, PreState, Read, Refusal, ResolveError, Resolved, Root,
    SCRATCH_STEM_BYTES_MAX, Stage, gate,
};

/// Marks a journal path beneath the workspace root in [`journal_place`].
pub(super) const INSIDE_ROOT: &str = "root:";

/// Where `journal` is, as the binding records it: `root:<path beneath the root>` or its absolute
/// path, with symbolic links resolved in its directory (the file itself may not exist yet).
pub(super) fn journal_place(root: &Path, journal: &Path) -> Result<String, MutateError> {
    let canonical = |path: &Path| std::fs::canonicalize(path).map_err(|e| MutateError::io("resolve", path, e));
    let root = canonical(root)?;
    let Some(name) = journal.file_name() else {
        return Err(MutateError::InvalidRequest {
            what: journal.display().to_string(),
            reason: "a journal path needs a file name",
        });
    };
    let dir = journal.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let full = canonical(dir)?.join(name);
    Ok(match full.strip_prefix(&root) {
        Ok(inside) => format!("{INSIDE_ROOT}{}", inside.to_string_lossy()),
        Err(_) => full.to_string_lossy().into_owned(),
    })
}

/// Binds the workspace to the journal its first mutator used, and refuses any other: the gate
/// checks generations against the journal it is given, so a stale copy of the journal, or a
/// wrong `$KEEL_JOURNAL`, would let a released lease's generation land. Under the mutator lock.
pub(super) fn bind_journal(binding: &Path, place: &str, root: &Path) -> Result<(), MutateError> {
    match std::fs::read(binding) {
        Ok(bound) if bound == place.as_bytes() => Ok(()),
        Ok(bound) => Err(MutateError::JournalMismatch {
            root: root.to_owned(),
            bound: String::from_utf8_lossy(&bound).into_owned(),
            given: place.to_owned(),
            binding: binding.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let _report = keel_fs::write_atomic(binding, place.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(MutateError::io("read journal binding", binding, e)),
    }
}

pub(super) fn refuse_damage(index: &Index, log_path: &Path) -> Result<(), MutateError> {
    match index.damage.first.first() {
        Some(first) => Err(MutateError::LogDamaged {
            path: log_path.to_owned(),
            first: first.clone(),
            more: index.damage.count - 1,
        }),
        None => Ok(()),
    }
}

/// The path the gate decides on: a spelling that is not the region keel compares (a backslash,
/// white space at either end, a control character, a `.` or empty segment) is a usage error
/// naming it, since the file system would use another path than the gate judged; an escape
/// (absolute, `..`) is the gate's refusal.
pub(super) fn gate_path(path: &str) -> Stage<String> {
    if let Some(reason) = keel_kernel::tree::misspelling(path).filter(|_| gate::escape(path).is_none()) {
        return Err(MutateError::InvalidRequest { what: format!("path {path:?}"), reason });
    }
    Ok(gate::canonical_path(path).map_err(|detail| forbidden_escape(path, detail)))
}

pub(super) fn forbidden_escape(path: &str, detail: &str) -> Outcome {
    Outcome::Forbidden { refusal: Refusal::Escapes { path: path.to_owned(), detail: detail.to_owned() } }
}

pub(super) fn scratch_name(path: &str, kind: &str, intent: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut end = name.len().min(SCRATCH_STEM_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.{kind}.{intent}", &name[..end])
}

pub(super) fn dir_sync(parent: BorrowedFd<'_>, path: &str) -> Result<DirSyncStatus, MutateError> {
    let status = keel_fs::seam::dir_sync_status(rustix::fs::fsync(parent).map_err(std::io::Error::from))
        .map_err(|e| MutateError::io("fsync directory", path, e))?;
    Ok(status.into())
}

pub(super) fn dir_identity(fd: BorrowedFd<'_>, path: &str) -> Result<(u64, u64), MutateError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| MutateError::io("fstat directory", path, e))?;
    Ok((stat.st_dev, stat.st_ino))
}

pub(super) fn exists_at(parent: BorrowedFd<'_>, name: &str, path: &str) -> Result<bool, MutateError> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(MutateError::io("stat", path, e)),
    }
}

pub(super) fn unlink_at(parent: BorrowedFd<'_>, name: &str, path: &str) -> Result<(), MutateError> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(MutateError::io("unlink", path, e)),
    }
}

/// The blake3 hash of a file's content, read through `file` (at most `bytes_max` bytes).
pub(super) fn hash_file(file: &mut File, path: &str, bytes_max: u64) -> Result<String, MutateError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; HASH_BUFFER_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(MutateError::io("read", path, e)),
        };
        total += n as u64;
        if total > bytes_max {
            return Err(MutateError::TooLarge { path: path.into(), bytes: total, bytes_max });
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Looks at the final component of `resolved` without following a symlink: absent, a symlink,
/// or a regular file with its hash, inode and permission bits.
pub(super) fn look(resolved: &Resolved, path: &str, bytes_max: u64) -> Result<Look, MutateError> {
    match rustix::fs::statat(resolved.parent(), resolved.name(), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(Look::Seen(Observed { state: PreState::Absent, inode: None, mode: None })),
        Err(e) => return Err(MutateError::io("stat", path, e)),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => return Ok(Look::Symlink),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile => {
            return Err(MutateError::NotAFile { path: path.into() });
        }
        Ok(_) => {}
    }
    // O_NONBLOCK: a FIFO swapped in after the stat must not hang the open.
    let mut file = match resolved.open(OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()) {
        Ok(file) => file,
        Err(ResolveError::Symlink { .. }) => return Ok(Look::Symlink),
        Err(ResolveError::NotFound { .. }) => {
            return Ok(Look::Seen(Observed { state: PreState::Absent, inode: None, mode: None }));
        }
        Err(e) => return Err(MutateError::Resolve(e)),
    };
    let stat = rustix::fs::fstat(&file).map_err(|e| MutateError::io("fstat", path, e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(MutateError::NotAFile { path: path.into() });
    }
    if stat.st_size as u64 > bytes_max {
        return Err(MutateError::TooLarge { path: path.into(), bytes: stat.st_size as u64, bytes_max });
    }
    let hash = hash_file(&mut file, path, bytes_max)?;
    Ok(Look::Seen(Observed {
        state: PreState::Present { hash },
        inode: Some((stat.st_dev, stat.st_ino)),
        mode: Some(stat.st_mode & 0o7777),
    }))
}

/// The content hash of the regular file at `path` beneath `root` (no lease needed: reading).
/// A symlink or an escaping path is refused like any other resolution.
pub fn hash_path(root: &Path, path: &str, bytes_max: u64) -> Result<PreState, MutateError> {
    let canonical = gate::canonical_path(path)
        .map_err(|reason| MutateError::Resolve(ResolveError::Invalid { path: path.into(), reason }))?;
    let root = Root::open(root).map_err(MutateError::Resolve)?;
    let resolved = root.resolve(Path::new(&canonical)).map_err(MutateError::Resolve)?;
    match look(&resolved, &canonical, bytes_max)? {
        Look::Seen(observed) => Ok(observed.state),
        Look::Symlink => Err(MutateError::Resolve(ResolveError::Symlink {
            path: canonical.clone().into(),
            component: canonical.into(),
        })),
    }
}
