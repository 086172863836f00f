//! The sidecar offset index's file: entries read by position, and written at the file's end.
//!
//! The seam has no positional write, so an entry is only ever written where the file ends:
//! after cutting off the entries this write replaces (which failed their check, or a partial
//! one). An index shorter than the first entry written is left behind (a later scan from its
//! last good entry extends it, with no hole of zeros before); one holding entries past the ones
//! written (surplus past the end of the log) is left as it is, like an entry damaged in the
//! middle: reads near it scan from an earlier entry, slower, never wrong.

use std::io::ErrorKind;

use keel_fs::Storage;
use keel_fs::seam::FileKind;

use super::{INDEX_ENTRY_BYTES, Log};
use crate::disk::read_range;
use crate::error::{Result, StoreError};

/// One index entry: the indexed key and the log offset of its record, little-endian.
fn decode_entry(entry: &[u8]) -> (u64, u64) {
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    (word(&entry[..8]), word(&entry[8..16]))
}

impl Log {
    /// How many whole entries the index file holds (0 when it is missing).
    pub fn index_entries<S: Storage>(&self, storage: &S, op: &'static str) -> Result<u64> {
        match storage.path_stat(&self.index_path) {
            Ok(stat) => Ok(stat.len / INDEX_ENTRY_BYTES),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(op, &self.index_path, e)),
        }
    }

    /// Entry `i` as stored in the open index `file`, or `None` when it is not there.
    pub(super) fn read_entry<S: Storage>(
        &self,
        storage: &S,
        file: &S::File,
        i: u64,
        op: &'static str,
    ) -> Result<Option<(u64, u64)>> {
        let entry = read_range(storage, file, i * INDEX_ENTRY_BYTES, INDEX_ENTRY_BYTES, INDEX_ENTRY_BYTES)
            .map_err(|e| StoreError::io(op, &self.index_path, e))?;
        Ok((entry.len() as u64 == INDEX_ENTRY_BYTES).then(|| decode_entry(&entry)))
    }

    /// The first `entries` entries of the index (fewer if it is shorter), read in one go.
    pub fn read_index<S: Storage>(&self, storage: &S, entries: u64, op: &'static str) -> Result<Vec<(u64, u64)>> {
        if entries == 0 {
            return Ok(Vec::new());
        }
        let bytes = storage
            .open_read(&self.index_path)
            .and_then(|file| {
                read_range(storage, &file, 0, entries.saturating_mul(INDEX_ENTRY_BYTES), INDEX_ENTRY_BYTES)
            })
            .map_err(|e| StoreError::io(op, &self.index_path, e))?;
        Ok(bytes.chunks_exact(INDEX_ENTRY_BYTES as usize).map(decode_entry).collect())
    }

    /// Writes entries for consecutive indexed keys, the first being entry `first_entry`, if the
    /// index ends within them (see the module documentation for when it does not).
    pub fn write_index<S: Storage>(
        &self,
        storage: &S,
        first_entry: u64,
        entries: &[(u64, u64)],
        op: &'static str,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY_BYTES as usize);
        for (key, offset) in entries {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        let path = &self.index_path;
        let io = |e| StoreError::io(op, path, e);
        let not_a_file = || StoreError::io(op, path, std::io::Error::other("not a regular file"));
        // Readers write the index too (it is derived data), so it must never be written through
        // a link out of the store, nor opened if it is a FIFO or a device: the name is checked
        // before the open, and the file opened is checked to be the one the name holds.
        let at = first_entry * INDEX_ENTRY_BYTES;
        match storage.link_stat(path) {
            Ok(stat) if stat.kind != FileKind::File => return Err(not_a_file()),
            Ok(stat) if stat.len < at || stat.len > at + bytes.len() as u64 => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && at == 0 => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let (mut file, _created) = storage.open_append(path).map_err(io)?;
        let opened = storage.file_stat(&file).map_err(io)?;
        let named = storage.link_stat(path).map_err(io)?;
        if opened.kind != FileKind::File
            || named.kind != FileKind::File
            || (opened.dev, opened.ino) != (named.dev, named.ino)
        {
            return Err(not_a_file());
        }
        if opened.len < at || opened.len > at + bytes.len() as u64 {
            // Another writer changed it since the check: its entries are as good as these.
            return Ok(());
        }
        if opened.len > at {
            storage.set_len(&file, at).map_err(io)?;
        }
        storage.write_all(&mut file, &bytes).map_err(io)
    }
}
