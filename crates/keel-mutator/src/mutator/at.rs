//! The `*at` helpers: every file operation relative to a directory handle beneath the root, so a
//! path is resolved once and a renamed directory cannot redirect a write; all of it through the
//! storage seam. And the journal binding.

use super::{
    BINDING_BYTES_MAX, DirSyncStatus, Errno, ErrorKind, FileKind, HASH_BUFFER_BYTES, Index, Location, Look,
    MutateError, Observed, OsStr, Outcome, Path, PreState, Refusal, ResolveError, Resolved, Root,
    SCRATCH_STEM_BYTES_MAX, Stage, Storage, gate, is_errno, read_to_end,
};

/// Marks a journal path beneath the workspace root in [`journal_place`].
pub(super) const INSIDE_ROOT: &str = "root:";

/// Where the lease backend is, as the binding records it: for a journal, `root:<path beneath the
/// root>` or its absolute path, with symbolic links resolved in its directory (the file itself
/// may not exist yet); for a service, its name.
pub(super) fn journal_place(root: &Path, location: Location<'_>) -> Result<String, MutateError> {
    let journal = match location {
        Location::File(journal) => journal,
        Location::Named(name) => return Ok(name.to_owned()),
    };
    let canonical = |path: &Path| keel_fs::canonicalize(path).map_err(MutateError::from);
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
pub(super) fn bind_journal<S: Storage>(
    storage: &S,
    binding: &Path,
    place: &str,
    root: &Path,
) -> Result<(), MutateError> {
    let read = storage.open_read(binding).and_then(|file| read_to_end(storage, &file, BINDING_BYTES_MAX));
    match read {
        Ok(bound) if bound == place.as_bytes() => Ok(()),
        Ok(bound) => Err(MutateError::JournalMismatch {
            root: root.to_owned(),
            bound: String::from_utf8_lossy(&bound).into_owned(),
            given: place.to_owned(),
            binding: binding.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let _report = keel_fs::write_atomic_with(storage, binding, place.as_bytes())?;
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

pub(super) fn dir_sync<S: Storage>(storage: &S, parent: &S::Dir, path: &str) -> Result<DirSyncStatus, MutateError> {
    let status = keel_fs::seam::dir_sync_status(storage.sync_dir_handle(parent))
        .map_err(|e| MutateError::io("fsync directory", path, e))?;
    Ok(status.into())
}

pub(super) fn dir_identity<S: Storage>(storage: &S, dir: &S::Dir, path: &str) -> Result<(u64, u64), MutateError> {
    let stat = storage.dir_stat(dir).map_err(|e| MutateError::io("fstat directory", path, e))?;
    Ok((stat.dev, stat.ino))
}

/// The identity of `name` in `parent` (not following a symlink), or `None` when absent.
pub(super) fn inode_at<S: Storage>(
    storage: &S,
    parent: &S::Dir,
    name: &OsStr,
    path: &str,
) -> Result<Option<(u64, u64)>, MutateError> {
    match storage.stat_at(parent, name) {
        Ok(stat) => Ok(Some((stat.dev, stat.ino))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MutateError::io("stat", path, e)),
    }
}

pub(super) fn exists_at<S: Storage>(storage: &S, parent: &S::Dir, name: &str, path: &str) -> Result<bool, MutateError> {
    Ok(inode_at(storage, parent, OsStr::new(name), path)?.is_some())
}

pub(super) fn unlink_at<S: Storage>(storage: &S, parent: &S::Dir, name: &str, path: &str) -> Result<(), MutateError> {
    match storage.unlink_at(parent, OsStr::new(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MutateError::io("unlink", path, e)),
    }
}

/// The blake3 hash of a file's content, read through `file` (at most `bytes_max` bytes).
pub(super) fn hash_file<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &str,
    bytes_max: u64,
) -> Result<String, MutateError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; HASH_BUFFER_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = storage.read_at(file, total, &mut buffer).map_err(|e| MutateError::io("read", path, e))?;
        if n == 0 {
            break;
        }
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
pub(super) fn look<S: Storage>(
    storage: &S,
    resolved: &Resolved<S::Dir>,
    path: &str,
    bytes_max: u64,
) -> Result<Look, MutateError> {
    let absent = Look::Seen(Observed { state: PreState::Absent, inode: None, mode: None });
    match storage.stat_at(resolved.parent(), resolved.name()) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(absent),
        Err(e) => return Err(MutateError::io("stat", path, e)),
        Ok(stat) if stat.kind == FileKind::Symlink => return Ok(Look::Symlink),
        Ok(stat) if stat.kind != FileKind::File => return Err(MutateError::NotAFile { path: path.into() }),
        Ok(_) => {}
    }
    let file = match storage.open_read_at(resolved.parent(), resolved.name()) {
        Ok(file) => file,
        Err(e) if is_errno(&e, Errno::LOOP) => return Ok(Look::Symlink),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(absent),
        Err(e) => return Err(MutateError::io("open", path, e)),
    };
    let stat = storage.file_stat(&file).map_err(|e| MutateError::io("fstat", path, e))?;
    if stat.kind != FileKind::File {
        return Err(MutateError::NotAFile { path: path.into() });
    }
    if stat.len > bytes_max {
        return Err(MutateError::TooLarge { path: path.into(), bytes: stat.len, bytes_max });
    }
    let hash = hash_file(storage, &file, path, bytes_max)?;
    Ok(Look::Seen(Observed {
        state: PreState::Present { hash },
        inode: Some((stat.dev, stat.ino)),
        mode: Some(stat.mode),
    }))
}

/// The content hash of the regular file at `path` beneath `root`.
pub(super) fn hash_in<S: Storage>(root: &Root<S>, path: &str, bytes_max: u64) -> Result<PreState, MutateError> {
    let canonical = gate::canonical_path(path)
        .map_err(|reason| MutateError::Resolve(ResolveError::Invalid { path: path.into(), reason }))?;
    let resolved = root.resolve(Path::new(&canonical)).map_err(MutateError::Resolve)?;
    match look(root.storage(), &resolved, &canonical, bytes_max)? {
        Look::Seen(observed) => Ok(observed.state),
        Look::Symlink => Err(MutateError::Resolve(ResolveError::Symlink {
            path: canonical.clone().into(),
            component: canonical.into(),
        })),
    }
}

/// The content hash of the regular file at `path` beneath `root` (no lease needed: reading).
/// A symlink or an escaping path is refused like any other resolution.
pub fn hash_path(root: &Path, path: &str, bytes_max: u64) -> Result<PreState, MutateError> {
    hash_in(&Root::open(root).map_err(MutateError::Resolve)?, path, bytes_max)
}
