//! The store's few compound file operations, built from the keel-fs [`Storage`] seam's single
//! ones (the seam has no "read a whole file", no positional read of an exact length and no
//! recursive removal), so that every byte the store touches goes through the seam.

use std::io::{self, ErrorKind, Read};
use std::path::Path;

use keel_fs::Storage;
use keel_fs::seam::FileKind;

/// How deep [`remove_tree`] descends: the store's deepest scratch tree is two levels, so a
/// deeper one was not built by the store and is refused rather than walked without bound.
pub(crate) const REMOVE_TREE_DEPTH_MAX: u32 = 4;

/// The most a read asks for per call, so a large request never allocates far ahead of data.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What a read asks for first when it has no better guess: the store's snapshots and review
/// files are a few hundred bytes.
const READ_FIRST_BYTES: u64 = 4096;

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
    let file = storage.open_read(path)?;
    read_whole(storage, &file, bytes_max, READ_FIRST_BYTES)
}

/// Reads all of `file`, refusing more than `bytes_max` bytes like [`read_file`]; `len_hint` (its
/// length when last seen) sizes the first read, so a small file costs no large buffer.
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

/// Up to `bytes_max` bytes of `file` from `offset`: fewer only where the file ends. The first
/// read asks for `first_bytes`, later ones for twice as much while reads come back full.
pub(crate) fn read_range<S: Storage>(
    storage: &S,
    file: &S::File,
    offset: u64,
    bytes_max: u64,
    first_bytes: u64,
) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = usize::try_from(first_bytes).unwrap_or(READ_CHUNK_BYTES).clamp(1, READ_CHUNK_BYTES);
    while (bytes.len() as u64) < bytes_max {
        let start = bytes.len();
        let want = usize::try_from(bytes_max - start as u64).unwrap_or(usize::MAX).min(chunk);
        bytes.resize(start + want, 0);
        let n = storage.read_at(file, offset + start as u64, &mut bytes[start..])?;
        bytes.truncate(start + n);
        if n == 0 {
            break;
        }
        if n == want {
            chunk = (chunk * 2).min(READ_CHUNK_BYTES);
        }
    }
    Ok(bytes)
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
