//! The runtime's files: snapshots written atomically and read back bounded, and the directory
//! layout's small helpers.

use super::{
    DeserializeOwned, ErrorKind, FileKind, Limits, OsStorage, Path, PathBuf, RUNTIMES_DIR, Result, SCHEMA_VERSION,
    SNAPSHOT_BYTES_MAX, STATUS_BYTES_MAX, STORE_DIR_DEFAULT, Serialize, Storage, StoreError, Value, decode_id,
    dir_sync_status, encode_id, is_too_large, missing_or_io, read_whole, remove_tree, write_atomic_with,
};

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn encode(op: &'static str, kind: &'static str, id: &str) -> Result<String> {
    encode_id(kind, id).map_err(|source| StoreError::InvalidId { op, source })
}

pub(super) fn check_word(op: &'static str, what: &'static str, word: &str) -> Result<()> {
    let ok = !word.is_empty()
        && word.len() <= STATUS_BYTES_MAX
        && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            op,
            what,
            reason: format!("{word:?} is not 1 to {STATUS_BYTES_MAX} bytes of [a-z0-9_-]"),
        })
    }
}

pub(super) fn to_json_line<T: Serialize>(
    value: &T,
    limits: &Limits,
    op: &'static str,
    what: &'static str,
) -> Result<Vec<u8>> {
    let line = serde_json::to_vec(value).map_err(|e| StoreError::InvalidInput { op, what, reason: e.to_string() })?;
    if line.len() as u64 > limits.record_bytes_max {
        return Err(StoreError::InvalidInput {
            op,
            what,
            reason: format!("{} bytes as a JSON line; the limit is {}", line.len(), limits.record_bytes_max),
        });
    }
    readable_back(&line, op, what)?;
    Ok(line)
}

/// Refuses bytes about to be stored that `serde_json` would not read back: a value nested 127
/// deep is accepted as input, then sits one level deeper in its record, past the reader's limit
/// of 128, and the acknowledged record would read as damage.
pub(super) fn readable_back(bytes: &[u8], op: &'static str, what: &'static str) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(bytes).map(|_| ()).map_err(|e| StoreError::InvalidInput {
        op,
        what,
        reason: format!("it could not be read back once stored: {e}"),
    })
}

pub(super) fn write_snapshot<S: Storage, T: Serialize>(
    storage: &S,
    path: &Path,
    snapshot: &T,
    op: &'static str,
) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(snapshot).expect("snapshots serialise");
    readable_back(&bytes, op, "snapshot")?;
    bytes.push(b'\n');
    let _report = write_atomic_with(storage, path, &bytes).map_err(|e| StoreError::fs(op, e))?;
    Ok(())
}

/// Reads and parses a snapshot file, refusing one over [`SNAPSHOT_BYTES_MAX`].
pub(super) fn read_snapshot<S: Storage, T: DeserializeOwned>(
    storage: &S,
    path: &Path,
    op: &'static str,
) -> Result<(T, u64)> {
    let file = storage.open_read(path).map_err(|e| missing_or_io(op, path, e))?;
    let stat = storage.file_stat(&file).map_err(|e| StoreError::io(op, path, e))?;
    if stat.kind != FileKind::File {
        return Err(StoreError::corrupt(op, path, None, "not a regular file"));
    }
    let bytes = match read_whole(storage, &file, SNAPSHOT_BYTES_MAX, stat.len) {
        Ok(bytes) => bytes,
        Err(e) if is_too_large(&e) => {
            return Err(StoreError::corrupt(op, path, None, format!("larger than {SNAPSHOT_BYTES_MAX} bytes")));
        }
        Err(e) => return Err(StoreError::io(op, path, e)),
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(op, path, None, format!("not JSON: {e}")))?;
    let version = value
        .get("schema_version")
        .and_then(Value::as_u64)
        .ok_or_else(|| StoreError::corrupt(op, path, None, "no numeric schema_version".to_owned()))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion { op, path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
    }
    // From the bytes again, not from `value`: `from_value` respells numbers (`1.10` as `1.1`),
    // and a worker's request must read back as it was written.
    let snapshot = serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(op, path, None, e.to_string()))?;
    Ok((snapshot, version))
}

/// Fails unless `path` is a directory (not following a symlink).
pub(super) fn require_dir<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<()> {
    match storage.link_stat(path) {
        Ok(stat) if stat.kind == FileKind::Dir => Ok(()),
        Ok(_) => Err(StoreError::NotADirectory { op, path: path.to_owned() }),
        Err(e) => Err(missing_or_io(op, path, e)),
    }
}

/// Whether `path` names anything (not following a symlink); an error other than "not found"
/// is returned, never taken for absence.
pub(super) fn exists<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<bool> {
    match storage.link_stat(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(op, path, e)),
    }
}

/// Makes the names in the directory `path` durable. A file system that cannot fsync a
/// directory is let through, as keel-fs's atomic write lets it through.
pub(super) fn sync_dir<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<()> {
    let _synced_or_unsupported = dir_sync_status(storage.sync_dir(path)).map_err(|e| StoreError::io(op, path, e))?;
    Ok(())
}

/// Renames the finished directory `building` to `dir`, then fsyncs `parent` (both names' parent)
/// so the name is durable when this returns. If that fsync fails the rename is undone (best
/// effort): a caller told "failed" must not find the directory there and build on a name that
/// a power cut can still take away.
pub(super) fn rename_into_place<S: Storage>(
    storage: &S,
    building: &Path,
    dir: &Path,
    parent: &Path,
    op: &'static str,
) -> Result<()> {
    storage.rename(building, dir).map_err(|e| StoreError::io(op, dir, e))?;
    sync_dir(storage, parent, op).inspect_err(|_| {
        let _ = storage.rename(dir, building);
    })
}

pub(super) fn create_empty_file<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<()> {
    storage.create_new(path).and_then(|f| storage.sync_all(&f)).map_err(|e| StoreError::io(op, path, e))
}

/// Removes a half-built directory left by a crash (its name says it was never renamed in).
pub(super) fn remove_leftover<S: Storage>(storage: &S, path: &Path, op: &'static str) -> Result<()> {
    remove_tree(storage, path).map_err(|(failed, e)| StoreError::io(op, failed, e))
}

/// Where a workspace keeps its runtime store: `<workspace_root>/.keel/store/` (so its
/// `runtimes/` sits beside the journal and the policy, not in the workspace's tree). keel's CLI
/// and its MCP server both keep their runtimes there; a library user may name any other root in
/// [`StoreOptions`](super::StoreOptions).
pub fn default_root(workspace_root: &Path) -> PathBuf {
    workspace_root.join(STORE_DIR_DEFAULT)
}

/// Creates [`default_root`] of `workspace_root` (and `.keel/`) where missing, each new name made
/// durable (its parent fsynced), and returns it. The workspace root itself must exist: a
/// mistyped root is refused, never created.
pub fn create_default_root(workspace_root: &Path) -> Result<PathBuf> {
    create_default_root_with(&OsStorage, workspace_root)
}

/// [`create_default_root`] through any [`Storage`].
pub fn create_default_root_with<S: Storage>(storage: &S, workspace_root: &Path) -> Result<PathBuf> {
    const OP: &str = "create store root";
    require_dir(storage, workspace_root, OP)?;
    let mut parent = workspace_root.to_owned();
    for part in Path::new(STORE_DIR_DEFAULT).components() {
        let dir = parent.join(part);
        match storage.create_dir(&dir) {
            Ok(()) => sync_dir(storage, &parent, OP)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(OP, &dir, e)),
        }
        parent = dir;
    }
    Ok(parent)
}

/// The runtime ids stored under `root`, in id order. Entries that are not canonical encodings
/// are reported as corrupt.
pub fn list_runtimes(root: &Path) -> Result<Vec<String>> {
    list_runtimes_with(&OsStorage, root)
}

/// [`list_runtimes`] through any [`Storage`].
pub fn list_runtimes_with<S: Storage>(storage: &S, root: &Path) -> Result<Vec<String>> {
    const OP: &str = "list runtimes";
    let dir = root.join(RUNTIMES_DIR);
    let names = match storage.list_dir(&dir) {
        Ok(names) => names,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(OP, &dir, e)),
    };
    let mut ids = Vec::new();
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with('.') || text.ends_with(".lock") {
            continue;
        }
        let id = decode_id(&text).ok_or_else(|| {
            StoreError::corrupt(OP, dir.join(&name), None, "not the canonical encoding of a runtime id")
        })?;
        ids.push(id);
    }
    ids.sort();
    Ok(ids)
}
