//! Reading a whole document through the keel-fs I/O seam, in bounded memory.

use std::io::ErrorKind;
use std::path::Path;

use keel_fs::{FsError, Storage};

/// What reading a document found.
#[derive(Debug)]
pub(crate) enum Found {
    /// No file at the path.
    Missing,
    /// The file holds more than the limit: `bytes` is its length (or at least limit + 1).
    TooLarge { bytes: u64 },
    /// The file's bytes.
    Bytes(Vec<u8>),
}

/// How many bytes one `read_at` asks for.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads `path` whole, refusing more than `bytes_max` bytes without reading them.
///
/// The file is opened read-only; one that vanished between the `stat` and the open is missing.
pub(crate) fn read_document<S: Storage>(storage: &S, path: &Path, bytes_max: u64) -> Result<Found, FsError> {
    let stat = match storage.path_stat(path) {
        Ok(stat) => stat,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(FsError::io("stat", path, e)),
    };
    if stat.len > bytes_max {
        return Ok(Found::TooLarge { bytes: stat.len });
    }
    // Read-only: a read must work on a file another user owns and on a read-only mount.
    let file = match storage.open_read(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(FsError::io("open", path, e)),
    };
    let mut bytes = Vec::with_capacity(stat.len as usize);
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    loop {
        let n = storage.read_at(&file, bytes.len() as u64, &mut chunk).map_err(|e| FsError::io("read", path, e))?;
        if n == 0 {
            return Ok(Found::Bytes(bytes));
        }
        bytes.extend_from_slice(&chunk[..n]);
        if bytes.len() as u64 > bytes_max {
            // It grew after the stat (someone writing without the lock): refuse rather than read on.
            return Ok(Found::TooLarge { bytes: bytes.len() as u64 });
        }
    }
}
