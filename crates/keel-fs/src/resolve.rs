//! Confined path resolution: a relative path is resolved beneath a root directory, through real
//! directories only, to an open parent directory plus a final name for `*at()` calls.
//!
//! Refused: empty paths, absolute paths, `..`, NUL bytes, paths longer than
//! [`PATH_BYTES_MAX`], and a symlink in *any* component, the last included. Resolution first
//! tries `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6+), and falls back to
//! opening one component at a time with `O_NOFOLLOW | O_DIRECTORY`; the fallback also produces
//! the precise error when `openat2` refuses. Neither ever follows a symlink or leaves the root.
//!
//! # Limitations
//! The final component is checked when resolving; to act on it without a race, open it through
//! [`Resolved::open`], which adds `O_NOFOLLOW`. Bind mounts inside the root are followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::seam::{FileKind, OsStorage, Storage, is_errno};

/// The longest relative path accepted, in bytes (Linux's `PATH_MAX`).
pub const PATH_BYTES_MAX: usize = 4096;

/// The most components a path may have (each is one `openat` in the fallback walk).
pub const COMPONENTS_MAX: usize = 256;

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The path is absolute or contains `..`: it would leave the root.
    #[error("{}: escapes the root", path.display())]
    Escapes {
        /// The path as given.
        path: PathBuf,
    },
    /// A component is a symbolic link.
    #[error("{}: component {} is a symlink", path.display(), component.display())]
    Symlink {
        /// The path as given.
        path: PathBuf,
        /// The path up to and including the symlink.
        component: PathBuf,
    },
    /// A directory on the way does not exist.
    #[error("{}: {} does not exist", path.display(), component.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
        /// The path up to and including the missing directory.
        component: PathBuf,
    },
    /// The path is malformed (empty, NUL byte, too long, a file where a directory should be).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call failed for another reason.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path as given (or the root).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    /// The path that was being resolved.
    pub fn path(&self) -> &Path {
        match self {
            Self::Escapes { path }
            | Self::Symlink { path, .. }
            | Self::NotFound { path, .. }
            | Self::Invalid { path, .. }
            | Self::Io { path, .. } => path,
        }
    }
}

/// How to resolve: let the crate choose, or force the component walk (tests cover both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `openat2` where the kernel has it, else the walk.
    Auto,
    /// One `openat(O_NOFOLLOW)` per component.
    Walk,
}

/// An open root directory that paths are resolved beneath, through a [`Storage`] (the real
/// one by default; tests pass a fault injector or a power-loss simulator).
#[derive(Debug)]
pub struct Root<S: Storage = OsStorage> {
    storage: S,
    dir: S::Dir,
    path: PathBuf,
}

/// A resolved path: its parent directory, open, and its final name (which may not exist yet).
#[derive(Debug)]
pub struct Resolved<D = OwnedFd> {
    parent: D,
    name: OsString,
    relative: PathBuf,
    exists: bool,
}

impl Root<OsStorage> {
    /// Opens `path` as the root. The root itself may be reached through symlinks: it is the
    /// caller's trusted starting point.
    pub fn open(path: &Path) -> Result<Self, ResolveError> {
        Self::open_with(OsStorage, path)
    }
}

impl<S: Storage> Root<S> {
    /// Opens `path` as the root through `storage`.
    pub fn open_with(storage: S, path: &Path) -> Result<Self, ResolveError> {
        let dir = storage.open_dir(path).map_err(|source| ResolveError::Io {
            op: "open root",
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { storage, dir, path: path.to_owned() })
    }

    /// The root's path as given to [`Root::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage the root was opened through.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The root directory's handle.
    pub fn dir(&self) -> &S::Dir {
        &self.dir
    }

    /// Resolves `relative` beneath the root.
    pub fn resolve(&self, relative: &Path) -> Result<Resolved<S::Dir>, ResolveError> {
        self.resolve_with(relative, Strategy::Auto)
    }

    /// Resolves `relative` beneath the root with the given strategy.
    pub fn resolve_with(&self, relative: &Path, strategy: Strategy) -> Result<Resolved<S::Dir>, ResolveError> {
        let (parents, name) = split(relative)?;
        let parent = match strategy {
            Strategy::Auto => match self.storage.open_beneath(&self.dir, &parents.iter().collect::<PathBuf>()) {
                Some(dir) => dir,
                None => self.walk(relative, &parents)?,
            },
            Strategy::Walk => self.walk(relative, &parents)?,
        };
        let exists = match self.storage.stat_at(&parent, name) {
            Ok(stat) if stat.kind == FileKind::Symlink => {
                return Err(ResolveError::Symlink { path: relative.to_owned(), component: relative.to_owned() });
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(ResolveError::Io { op: "stat final component", path: relative.to_owned(), source });
            }
        };
        Ok(Resolved { parent, name: name.to_owned(), relative: relative.to_owned(), exists })
    }

    fn walk(&self, relative: &Path, parents: &[&OsStr]) -> Result<S::Dir, ResolveError> {
        let io_error = |op, source| ResolveError::Io { op, path: relative.to_owned(), source };
        let mut current = self.storage.open_dir_at(&self.dir, OsStr::new(".")).map_err(|source| ResolveError::Io {
            op: "open root",
            path: self.path.clone(),
            source,
        })?;
        let mut so_far = PathBuf::new();
        for component in parents {
            so_far.push(component);
            match self.storage.open_dir_at(&current, component) {
                Ok(next) => current = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ResolveError::NotFound { path: relative.to_owned(), component: so_far });
                }
                Err(e) if is_errno(&e, Errno::LOOP) || is_errno(&e, Errno::NOTDIR) => {
                    // O_NOFOLLOW|O_DIRECTORY on a symlink gives ELOOP or ENOTDIR depending on
                    // the kernel; look without following to tell a symlink from a file.
                    let stat = self.storage.stat_at(&current, component).map_err(|e| io_error("stat component", e))?;
                    if stat.kind == FileKind::Symlink {
                        return Err(ResolveError::Symlink { path: relative.to_owned(), component: so_far });
                    }
                    return Err(ResolveError::Invalid {
                        path: relative.to_owned(),
                        reason: "a component before the last is not a directory",
                    });
                }
                Err(e) => return Err(io_error("open component", e)),
            }
        }
        Ok(current)
    }
}

impl<D> Resolved<D> {
    /// The open parent directory, for `*at()` calls.
    pub fn parent(&self) -> &D {
        &self.parent
    }

    /// The final component.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The relative path that was resolved.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// Whether the final component existed (as a non-symlink) when resolved.
    pub fn exists(&self) -> bool {
        self.exists
    }
}

impl Resolved<OwnedFd> {
    /// Opens the final component with `flags` plus `O_NOFOLLOW | O_CLOEXEC` (so a symlink
    /// swapped in after resolution is refused, not followed); `mode` applies with `O_CREAT`.
    pub fn open(&self, flags: OFlags, mode: Mode) -> Result<File, ResolveError> {
        match rustix::fs::openat(&self.parent, &self.name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::LOOP) => {
                Err(ResolveError::Symlink { path: self.relative.clone(), component: self.relative.clone() })
            }
            Err(Errno::NOENT) => {
                Err(ResolveError::NotFound { path: self.relative.clone(), component: self.relative.clone() })
            }
            Err(e) => Err(ResolveError::Io { op: "open", path: self.relative.clone(), source: e.into() }),
        }
    }
}

/// `realpath(3)`: `path` made absolute with every symbolic link in it resolved (it must exist).
pub fn canonicalize(path: &Path) -> crate::Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| crate::FsError::io("resolve", path, e))
}

/// Validates `relative` and splits it into parent directory names and the final name.
fn split(relative: &Path) -> Result<(Vec<&OsStr>, &OsStr), ResolveError> {
    let invalid = |reason| ResolveError::Invalid { path: relative.to_owned(), reason };
    let bytes = relative.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid("empty path"));
    }
    if bytes.len() > PATH_BYTES_MAX {
        return Err(invalid("path longer than PATH_BYTES_MAX"));
    }
    if bytes.contains(&0) {
        return Err(invalid("path contains a NUL byte"));
    }
    let mut names = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ResolveError::Escapes { path: relative.to_owned() });
            }
        }
    }
    if names.len() > COMPONENTS_MAX {
        return Err(invalid("path has more than COMPONENTS_MAX components"));
    }
    let Some(name) = names.pop() else {
        return Err(invalid("path names no file"));
    };
    Ok((names, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_refuses_escapes_and_malformed_paths() {
        assert!(matches!(split(Path::new("")), Err(ResolveError::Invalid { .. })));
        assert!(matches!(split(Path::new("/etc/passwd")), Err(ResolveError::Escapes { .. })));
        assert!(matches!(split(Path::new("a/../b")), Err(ResolveError::Escapes { .. })));
        assert!(matches!(split(Path::new("a/b\0c")), Err(ResolveError::Invalid { .. })));
        assert!(matches!(split(Path::new("./.")), Err(ResolveError::Invalid { .. })));
        let (parents, name) = split(Path::new("./a/b/c")).expect("valid");
        assert_eq!(parents, vec![OsStr::new("a"), OsStr::new("b")]);
        assert_eq!(name, OsStr::new("c"));
    }
}
