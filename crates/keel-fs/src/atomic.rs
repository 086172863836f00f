//! Atomic write: a reader sees the old content or the new, never a mix, and after
//! [`write_atomic`] returns the new content survives a power loss.
//!
//! Steps: create a temporary file beside the target (`O_EXCL`, random name), copy the target's
//! permission bits onto it, write everything, `fsync` it, rename it over the target, `fsync` the
//! directory. Before the rename any failure removes the temporary file and leaves the target
//! untouched. After the rename (only the directory fsync is left) an error means the new content
//! is visible but may not survive a crash; it is returned, never swallowed.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{FsError, Result};
use crate::nonce::nonce_hex;
use crate::seam::{DirSync, OsStorage, Storage, dir_sync_status, parent_dir};

/// How many random temporary names are tried before giving up (a collision of 128-bit names
/// means something is wrong, not unlucky).
pub const TEMP_NAME_ATTEMPTS_MAX: u32 = 4;

/// How much of the target's name goes into the temporary name, so that a long target name
/// cannot push the temporary name past `NAME_MAX` (255 bytes).
const TEMP_NAME_STEM_BYTES_MAX: usize = 64;

/// What an atomic write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the directory fsync may have been unsupported; log `dir_sync`"]
pub struct WriteReport {
    /// Bytes written.
    pub bytes: u64,
    /// Permission bits copied from the file that was replaced (`None`: there was none, the new
    /// file has the default mode).
    pub mode_kept: Option<u32>,
    /// Whether the directory fsync happened.
    pub dir_sync: DirSync,
}

/// How many symbolic links [`resolve_symlinks`] follows: the kernel's own limit (`MAXSYMLINKS`).
pub const SYMLINK_HOPS_MAX: u32 = 40;

/// The path an atomic write of `path` must replace so that a symbolic link stays a link and its
/// target gets the content (what git does for a symlinked config): `path` itself unless it is a
/// link, else the link's target, followed to the first path that is not a link (which may not
/// exist yet: a dangling link names the file to create). A lock that guards the file must be
/// taken on this path too, or writers through the link and through the target would not
/// exclude each other.
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut at = path.to_owned();
    for _ in 0..SYMLINK_HOPS_MAX {
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&at).map_err(|e| FsError::io("read symlink", &at, e))?;
                at = parent_dir(&at).join(target);
            }
            Ok(_) => return Ok(at),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(at),
            Err(e) => return Err(FsError::io("stat", &at, e)),
        }
    }
    Err(FsError::Invalid { path: path.to_owned(), reason: "too many levels of symbolic links" })
}

/// Replaces `path` with `bytes` atomically and durably on the real file system.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<WriteReport> {
    write_atomic_with(&OsStorage, path, bytes)
}

/// [`write_atomic`] through any [`Storage`] (tests pass a failing or crashing one).
pub fn write_atomic_with<S: Storage>(storage: &S, path: &Path, bytes: &[u8]) -> Result<WriteReport> {
    let Some(name) = path.file_name() else {
        return Err(FsError::Invalid {
            path: path.to_owned(),
            reason: "an atomic write needs a path that ends in a file name",
        });
    };
    let dir = parent_dir(path);
    let mode_kept = match storage.path_stat(path) {
        Ok(stat) => Some(stat.mode),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(FsError::io("stat", path, e)),
    };
    let (temp_path, mut file) = create_temp(storage, &dir, name.as_bytes())?;
    let before_rename = (|| {
        if let Some(mode) = mode_kept {
            storage.set_mode(&file, mode).map_err(|e| FsError::io("fchmod", &temp_path, e))?;
        }
        storage.write_all(&mut file, bytes).map_err(|e| FsError::io("write", &temp_path, e))?;
        storage.sync_all(&file).map_err(|e| FsError::io("fsync", &temp_path, e))?;
        drop(file);
        storage.rename(&temp_path, path).map_err(|e| FsError::io("rename", path, e))
    })();
    if let Err(error) = before_rename {
        // The first error is the one worth reporting; if the removal fails too, the temporary
        // file stays behind under its recognisable name (`.<name>.<hex>.tmp`), harmless to delete.
        let _ = storage.remove_file(&temp_path);
        return Err(error);
    }
    let dir_sync = dir_sync_status(storage.sync_dir(&dir)).map_err(|e| FsError::io("fsync directory", &dir, e))?;
    Ok(WriteReport { bytes: bytes.len() as u64, mode_kept, dir_sync })
}

/// Removes what atomic writes of `path` killed mid-way left behind: its temporary siblings,
/// `.<name>.<32 hex digits>.tmp`. Only for a caller that holds the lock every writer of `path`
/// takes, so that no write of it is in flight. A name longer than the part of it that goes into
/// temporary names is left alone, since its temporaries cannot be told from another file's.
/// Returns how many it removed.
pub fn remove_stale_temporaries(path: &Path) -> Result<usize> {
    let Some(name) = path.file_name().map(OsStrExt::as_bytes) else { return Ok(0) };
    if name.len() > TEMP_NAME_STEM_BYTES_MAX {
        return Ok(0);
    }
    let dir = parent_dir(path);
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| FsError::io("read directory", &dir, e))? {
        let entry = entry.map_err(|e| FsError::io("read directory", &dir, e))?;
        let file_name = entry.file_name();
        let temp = file_name
            .as_bytes()
            .strip_prefix(b".")
            .and_then(|rest| rest.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix(b"."))
            .and_then(|rest| rest.strip_suffix(b".tmp"))
            .is_some_and(|nonce| nonce.len() == 32 && nonce.iter().all(u8::is_ascii_hexdigit));
        if temp {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::io("remove stale temporary", entry.path(), e)),
            }
        }
    }
    Ok(removed)
}

fn create_temp<S: Storage>(storage: &S, dir: &Path, name: &[u8]) -> Result<(PathBuf, S::File)> {
    let stem = &name[..name.len().min(TEMP_NAME_STEM_BYTES_MAX)];
    let mut last_error = None;
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let mut temp_name = Vec::with_capacity(stem.len() + 40);
        temp_name.push(b'.');
        temp_name.extend_from_slice(stem);
        temp_name.push(b'.');
        temp_name.extend_from_slice(nonce_hex().as_bytes());
        temp_name.extend_from_slice(b".tmp");
        let temp_path = dir.join(OsString::from_vec(temp_name));
        match storage.create_new(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last_error = Some((temp_path, e)),
            Err(e) => return Err(FsError::io("create temporary", temp_path, e)),
        }
    }
    let (temp_path, e) =
        last_error.unwrap_or_else(|| (dir.to_owned(), std::io::Error::other("no temporary name attempted")));
    Err(FsError::io("create temporary", temp_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_of_a_file_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("j.jsonl");
        let _report = write_atomic(&target, b"x\n").expect("write");
        let stale = dir.path().join(format!(".j.jsonl.{}.tmp", "0123456789abcdef".repeat(2)));
        let kept = [".j.jsonl.notes.tmp", ".j.jsonl2.0123456789abcdef0123456789abcdef.tmp", "j.jsonl"];
        std::fs::write(&stale, b"half a compaction").expect("stale");
        for name in &kept[..2] {
            std::fs::write(dir.path().join(name), b"not ours").expect("other file");
        }
        assert_eq!(remove_stale_temporaries(&target).expect("clean"), 1);
        assert!(!stale.exists());
        assert!(kept.iter().all(|name| dir.path().join(name).exists()));
    }

    #[test]
    fn symlinks_resolve_to_their_final_target_even_a_dangling_one_and_loops_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("real")).expect("mkdir");
        std::fs::write(root.join("real/t.json"), b"{}").expect("target");
        std::os::unix::fs::symlink("real/t.json", root.join("one")).expect("link");
        std::os::unix::fs::symlink(root.join("one"), root.join("two")).expect("link to a link");
        std::os::unix::fs::symlink("missing.json", root.join("real/dangling")).expect("dangling");
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("loop");
        assert_eq!(resolve_symlinks(&root.join("two")).expect("resolved"), root.join("real/t.json"));
        assert_eq!(resolve_symlinks(&root.join("real/t.json")).expect("a file"), root.join("real/t.json"));
        assert_eq!(resolve_symlinks(&root.join("new.json")).expect("absent"), root.join("new.json"));
        assert_eq!(resolve_symlinks(&root.join("real/dangling")).expect("dangling"), root.join("real/missing.json"));
        let err = resolve_symlinks(&root.join("loop")).expect_err("a loop");
        assert!(matches!(err, FsError::Invalid { .. }), "{err}");
    }
}
