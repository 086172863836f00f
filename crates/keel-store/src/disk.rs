//! The store's few compound file operations, built from the keel-fs [`Storage`] seam's (whole
//! and ranged reads are keel-fs's own `read_to_end` and `read_range`; the seam has no recursive
//! removal), so that every byte the store touches goes through the seam.

use std::io::{self, ErrorKind, Read};
use std::path::Path;

use keel_fs::Storage;
use keel_fs::seam::FileKind;
pub(crate) use keel_fs::seam::read_range;

/// How deep [`remove_tree`] descends: the store's deepest scratch tree is two levels, so a
/// deeper one was not built by the store and is refused rather than walked without bound.
pub(crate) const REMOVE_TREE_DEPTH_MAX: u32 = 4;

/// An open file of a storage, owned, read as a [`std::io::Read`] from `offset` on. A scanner
/// keeps its file for as long as it reads (the seam's `StorageRead` borrows one instead).
pub(crate) struct FileRead<S: Storage> {
    storage: S,
    file: S::File,
    offset: u64,
}

impl<S: Storage> FileRead<S> {
    /// Reads `file` through `storage` from `offset`.
    pub(crate) fn new(storage: S, file: S::File, offset: u64) -> Self {
        Self { storage, file, offset }
    }
}

impl<S: Storage> Read for FileRead<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.storage.read_at(&self.file, self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Reads the file at `path` whole, refusing more than `bytes_max` bytes (kind `FileTooLarge`,
/// with no OS error code, which [`is_too_large`] recognises).
pub(crate) fn read_file<S: Storage>(storage: &S, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
    keel_fs::seam::read_to_end(storage, &storage.open_read(path)?, bytes_max)
}

/// Reads all of `file`, refusing more than `bytes_max` bytes like [`read_file`]; `len_hint` (its
/// length when last seen) sizes the first read.
pub(crate) fn read_whole<S: Storage>(
    storage: &S,
    file: &S::File,
    bytes_max: u64,
    len_hint: u64,
) -> io::Result<Vec<u8>> {
    let bytes = read_range(storage, file, 0, bytes_max.saturating_add(1), len_hint.saturating_add(1))?;
    if bytes.len() as u64 > bytes_max {
        return Err(io::Error::new(ErrorKind::FileTooLarge, format!("longer than {bytes_max} bytes")));
    }
    Ok(bytes)
}

/// Whether `e` is [`read_file`]'s or [`read_whole`]'s refusal of a long file.
pub(crate) fn is_too_large(e: &io::Error) -> bool {
    e.kind() == ErrorKind::FileTooLarge && e.raw_os_error().is_none()
}

/// Removes the tree at `path` (nothing when it is missing), never following a symlink in it:
/// a link is removed as a name. Refuses a tree deeper than [`REMOVE_TREE_DEPTH_MAX`]. Returns the
/// path and error of the operation that failed.
pub(crate) fn remove_tree<S: Storage>(storage: &S, path: &Path) -> Result<(), (std::path::PathBuf, io::Error)> {
    remove_tree_at(storage, path, 0)
}

fn remove_tree_at<S: Storage>(storage: &S, path: &Path, depth: u32) -> Result<(), (std::path::PathBuf, io::Error)> {
    let failed = |e: io::Error| (path.to_owned(), e);
    let kind = match storage.link_stat(path) {
        Ok(stat) => stat.kind,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    if kind != FileKind::Dir {
        return match storage.remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(failed(e)),
            _ => Ok(()),
        };
    }
    if depth >= REMOVE_TREE_DEPTH_MAX {
        return Err(failed(io::Error::other(format!("deeper than {REMOVE_TREE_DEPTH_MAX} levels"))));
    }
    for name in storage.list_dir(path).map_err(failed)? {
        remove_tree_at(storage, &path.join(name), depth + 1)?;
    }
    match storage.remove_dir(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(failed(e)),
        _ => Ok(()),
    }
}
