//! Whole-file and directory helpers for the rest of keel: the small operations a command needs
//! beside the journal (read a policy, a settings file or a `--from` value, create or remove a
//! directory, set a mode, publish a file once), so that no other crate calls `std::fs` itself.
//!
//! Every error is an [`FsError::Io`] naming the operation and the path. No read is unbounded:
//! [`read_bounded`] and [`read_to_string_bounded`] take a limit and refuse a file past it
//! ([`is_too_large`] tells that refusal apart) after reading at most one byte past it, so a huge
//! or endless file (a FIFO, `/dev/zero`) costs memory in proportion to the limit, not the file.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{FsError, Result};
use crate::seam::{OsStorage, Storage, dir_sync_status, parent_dir};

/// Opens `path` for reading, to be read as a stream (a journal replayed chunk by chunk).
pub fn open_read(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| FsError::io("open", path, e))
}

/// The bytes of `path`, refused with an error of kind [`ErrorKind::FileTooLarge`] (see
/// [`is_too_large`]) when it holds more than `bytes_max`. Reads as a stream, so a pipe or a FIFO
/// given as the path is read too.
pub fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
    let file = open_read(path)?;
    let mut bytes = Vec::new();
    // One byte past the limit is enough to know the file is over it.
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| FsError::io("read", path, e))?;
    if bytes.len() as u64 > bytes_max {
        let error = io::Error::new(ErrorKind::FileTooLarge, format!("longer than {bytes_max} bytes"));
        return Err(FsError::io("read", path, error));
    }
    Ok(bytes)
}

/// The text of `path`, as [`read_bounded`], and an error of kind [`ErrorKind::InvalidData`] when
/// it is not UTF-8.
pub fn read_to_string_bounded(path: &Path, bytes_max: u64) -> Result<String> {
    String::from_utf8(read_bounded(path, bytes_max)?).map_err(|_| {
        // The words `std::fs::read_to_string` uses, so messages stay what they were.
        FsError::io("read", path, io::Error::new(ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
    })
}

/// Whether `error` is a bounded read's refusal of a file over its limit.
pub fn is_too_large(error: &FsError) -> bool {
    matches!(error, FsError::Io { source, .. } if source.kind() == ErrorKind::FileTooLarge)
}

/// Creates the directory `path` and any missing parents; nothing to do if it exists.
pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| FsError::io("create directory", path, e))
}

/// Removes the directory `path` and everything in it (symbolic links are removed, not followed).
pub fn remove_dir_all(path: &Path) -> Result<()> {
    std::fs::remove_dir_all(path).map_err(|e| FsError::io("remove directory", path, e))
}

/// Sets the permission bits of `path` (following a symbolic link, as `chmod` does) to `mode`.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| FsError::io("chmod", path, e))
}

/// Writes `bytes` to `path` only if nothing is there yet, durably; `false` if something was.
///
/// The content is written atomically to `.<name>.tmp.<pid>` beside `path` and hard-linked to
/// `path`: a link never replaces a name, so of two processes publishing at once exactly one wins
/// and the other sees the winner's whole file. The temporary name is removed either way; the
/// directory is fsynced after a win (a file system that cannot fsync a directory is not an
/// error, see [`crate::DirSync`]).
pub fn publish_once(path: &Path, bytes: &[u8]) -> Result<bool> {
    let Some(name) = path.file_name() else {
        return Err(FsError::Invalid { path: path.to_owned(), reason: "no file name to publish" });
    };
    let dir = parent_dir(path);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let _report = write_atomic(&temp, bytes)?;
    let linked = std::fs::hard_link(&temp, path);
    // Best effort: a leftover only costs its bytes, and the next publish replaces it.
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            let _status =
                dir_sync_status(OsStorage.sync_dir(&dir)).map_err(|e| FsError::io("fsync directory", &dir, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FsError::io("link", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_read_returns_a_file_at_the_limit_and_refuses_one_byte_more() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").expect("write");
        assert_eq!(read_bounded(&path, 5).expect("at the limit"), b"12345");
        let refused = read_bounded(&path, 4).expect_err("over the limit");
        assert!(is_too_large(&refused), "{refused}");
        assert!(refused.to_string().contains(&path.display().to_string()), "{refused}");
        let missing = read_bounded(&dir.path().join("absent"), 5).expect_err("missing");
        assert!(!is_too_large(&missing));
        assert!(matches!(&missing, FsError::Io { op: "open", source, .. } if source.kind() == ErrorKind::NotFound));
    }

    #[test]
    fn a_bounded_read_of_an_endless_file_stops_past_the_limit() {
        let refused = read_bounded(Path::new("/dev/zero"), 1024).expect_err("endless");
        assert!(is_too_large(&refused), "{refused}");
    }

    #[test]
    fn text_that_is_not_utf8_is_an_invalid_data_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"\xff").expect("write");
        let error = read_to_string_bounded(&path, 16).expect_err("not UTF-8");
        assert!(matches!(&error, FsError::Io { op: "read", source, .. } if source.kind() == ErrorKind::InvalidData));
        std::fs::write(&path, "text").expect("write");
        assert_eq!(read_to_string_bounded(&path, 16).expect("UTF-8"), "text");
    }

    #[test]
    fn publish_once_lets_the_first_writer_win_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("binding");
        assert!(publish_once(&path, b"first").expect("first"));
        assert!(!publish_once(&path, b"second").expect("second"));
        assert_eq!(std::fs::read(&path).expect("published"), b"first");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["binding"], "the temporary name is gone");
    }

    #[test]
    fn directories_are_created_with_parents_and_removed_with_contents_and_modes_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).expect("create");
        create_dir_all(&deep).expect("an existing directory is fine");
        let file = deep.join("f");
        std::fs::write(&file, b"x").expect("write");
        set_mode(&file, 0o751).expect("chmod");
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        remove_dir_all(&dir.path().join("a")).expect("remove");
        assert!(!dir.path().join("a").exists());
        let error = remove_dir_all(&dir.path().join("a")).expect_err("gone");
        assert!(error.to_string().starts_with("remove directory "), "{error}");
    }
}
