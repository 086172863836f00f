//! Which workspace a command is in, and which journal is its: one rule for every command, the way
//! git finds its repository, so two agents in one repository never use two journals.
//!
//! # The rule
//! 1. A named root (`--root`, `$KEEL_ROOT`): it must be an existing directory.
//! 2. Else the nearest ancestor of the starting directory that holds `.keel/`, looking no higher
//!    than the top of the git work tree the directory is in.
//! 3. Else the top of that git work tree.
//! 4. Else the starting directory itself (`.keel/` is created only when a command writes).
//!
//! A root found by 2 or 3 inside a linked git worktree (`git worktree add`) is moved to the same
//! place in the main worktree, so agents in separate worktrees of one repository share one
//! journal and collide on repository-relative paths; the worktree stays the [`checkout`] whose
//! files they edit.
//!
//! The journal is `<root>/.keel/lane-journal.jsonl`, unless the workspace is bound to another
//! (`.keel/journal-binding`, written the first time a writer uses a journal other than the
//! default): then every command uses the bound one, and naming a different one is an error. The
//! write gate binds the workspace the same way, to a lease service elsewhere (`etcd:<prefix>`)
//! when its leases live there: then [`Workspace::service`] names it, and no journal is written
//! ([`Workspace::bind`] refuses). A
//! relative `--journal` is read against the root, never the current directory. keel's own state
//! beneath the root is never reached through a symbolic link: a link could lead two workspaces
//! to one journal, or one workspace's records somewhere nobody reads.
//!
//! [`checkout`]: Workspace::checkout

use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};

use keel_fs::seam::FileKind;
use keel_fs::{FsError, OsStorage, Storage as _};
use serde::Serialize;

use crate::STATE_DIR;

/// The default journal's path beneath the root.
pub const JOURNAL_DEFAULT: &str = ".keel/lane-journal.jsonl";
/// The name in [`STATE_DIR`] of the file that binds a workspace to its journal.
pub const JOURNAL_BINDING_NAME: &str = "journal-binding";
/// Marks a journal path beneath the root in a binding (`root:<path>`); else it is absolute.
const INSIDE_ROOT: &str = "root:";
/// The largest binding or `.git` file read.
const SMALL_FILE_BYTES_MAX: u64 = 4096;
/// The most directories walked up from the start.
const ANCESTORS_MAX: usize = 256;

/// How the root was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// `--root` or `$KEEL_ROOT`.
    Named,
    /// The nearest ancestor holding `.keel/`.
    StateDir,
    /// The top of the git work tree.
    GitTop,
    /// Nothing else: the starting directory.
    CurrentDir,
}

/// Why no workspace or journal could be settled on.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The named root is not an existing directory.
    #[error("workspace root {}: {reason}", path.display())]
    BadRoot {
        /// The root as named.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal named disagrees with the one the workspace is bound to, or the workspace
    /// already has a journal and another was named for a write.
    #[error(
        "{}: the workspace's journal is {}, not {} ({why}); name no journal, or the same one",
        root.display(), bound.display(), given.display()
    )]
    JournalMismatch {
        /// The workspace root.
        root: PathBuf,
        /// The journal the workspace uses.
        bound: PathBuf,
        /// The journal named.
        given: PathBuf,
        /// What binds the workspace to `bound`.
        why: String,
    },
    /// The workspace is bound to a lease service elsewhere (its write gate used one), and a
    /// command was about to keep leases in a journal file instead.
    #[error(
        "{}: the workspace is bound to the lease service {service} ({}), not to a journal: its \
         leases live there, and a journal would grant the same regions again",
        root.display(), binding.display()
    )]
    BoundToService {
        /// The workspace root.
        root: PathBuf,
        /// The service's name, as the binding records it.
        service: String,
        /// The binding file.
        binding: PathBuf,
    },
    /// keel's state would be reached through a symbolic link.
    #[error(
        "{} is a symbolic link; keel's own state is never reached through one (bind the workspace \
         to the link's target explicitly with --journal TARGET instead)",
        link.display()
    )]
    Symlink {
        /// The link.
        link: PathBuf,
    },
    /// The file system failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl WorkspaceError {
    /// The file or directory the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            Self::BadRoot { path, .. } => path,
            Self::JournalMismatch { given, .. } => given,
            Self::BoundToService { binding, .. } => binding,
            Self::Symlink { link } => link,
            Self::Fs(error) => error.path(),
        }
    }

    /// Anything the caller named or laid out wrongly is a usage error; the file system failing is I/O.
    pub fn kind(&self) -> keel_fs::ErrorKind {
        match self {
            Self::Fs(_) => keel_fs::ErrorKind::Io,
            _ => keel_fs::ErrorKind::Usage,
        }
    }
}

/// A workspace: its root, the checkout an agent edits, and its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    root: PathBuf,
    checkout: PathBuf,
    journal: PathBuf,
    found_by: FoundBy,
    /// Whether `journal` came from the binding file.
    bound: bool,
    /// Whether the command named the journal (`--journal` / `$KEEL_JOURNAL`).
    named_journal: bool,
    /// The lease service elsewhere the binding file names, if it names one.
    service: Option<String>,
}

/// What a command names, each optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named<'a> {
    /// `--root` / `$KEEL_ROOT`.
    pub root: Option<&'a Path>,
    /// `--journal` / `$KEEL_JOURNAL`.
    pub journal: Option<&'a Path>,
}

impl Workspace {
    /// Finds the workspace for a command started in `start` (see the module documentation).
    pub fn locate(named: Named<'_>, start: &Path) -> Result<Self, WorkspaceError> {
        let start = if start.is_absolute() { start.to_owned() } else { current_dir()?.join(start) };
        let (root, checkout, found_by) = match named.root {
            Some(root) => {
                let root = if root.is_absolute() { root.to_owned() } else { start.join(root) };
                let root = existing_dir(&root)?;
                (root.clone(), root, FoundBy::Named)
            }
            None => discover(&existing_dir(&start)?)?,
        };
        refuse_link(&root.join(STATE_DIR))?;
        let default = root.join(JOURNAL_DEFAULT);
        let given = named.journal.map(|journal| lexical(&root.join(journal)));
        let binding = root.join(STATE_DIR).join(JOURNAL_BINDING_NAME);
        let (mut service, mut journal_bound) = (None, None);
        match read_binding(&binding, &root)? {
            Some(Binding::Journal(bound)) => journal_bound = Some(bound),
            Some(Binding::Service(name)) => service = Some(name),
            None => {}
        }
        let (journal, bound) = match journal_bound {
            Some(bound) => {
                if let Some(given) = given.filter(|given| *given != bound) {
                    return Err(WorkspaceError::JournalMismatch {
                        root,
                        bound,
                        given,
                        why: format!("bound by {}", binding.display()),
                    });
                }
                (bound, true)
            }
            None => (given.unwrap_or(default), false),
        };
        if let Ok(inside) = journal.strip_prefix(&root) {
            let mut path = root.clone();
            for component in inside.components() {
                path.push(component);
                refuse_link(&path)?;
            }
        }
        let named_journal = named.journal.is_some();
        Ok(Self { root, checkout, journal, found_by, bound, named_journal, service })
    }

    /// Whether the journal file must exist for a read: the command named it, or the workspace is
    /// bound to it (so it was written). Otherwise a missing journal is one that has recorded
    /// nothing yet, and reads as empty.
    pub fn journal_expected(&self) -> bool {
        self.named_journal || self.bound
    }

    /// The workspace root: where `.keel/` (the journal, its binding, the policy) lives. Lease
    /// trees name paths relative to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory whose files the agent edits: the root, or in a linked git worktree that
    /// worktree's own top (paths beneath it are the same repository-relative paths).
    pub fn checkout(&self) -> &Path {
        &self.checkout
    }

    /// The lane journal.
    pub fn journal(&self) -> &Path {
        &self.journal
    }

    /// How the root was found.
    pub fn found_by(&self) -> FoundBy {
        self.found_by
    }

    /// The lease service elsewhere (`etcd:<prefix>`) the workspace is bound to, if its write
    /// gate bound it to one: its leases live there, and [`journal`](Self::journal) is no record.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Binds the workspace to its journal before a command first writes it: a journal other than
    /// the default is recorded in `.keel/journal-binding`, so every later command uses it too.
    /// Refused if the workspace already keeps its records in the default journal (a second
    /// journal would grant its regions again). Cheap when there is nothing to do.
    pub fn bind(&self) -> Result<(), WorkspaceError> {
        if let Some(service) = &self.service {
            return Err(self.bound_to_service(service));
        }
        let default = self.root.join(JOURNAL_DEFAULT);
        if self.bound || self.journal == default {
            return Ok(());
        }
        if OsStorage.link_stat(&default).is_ok() {
            return Err(WorkspaceError::JournalMismatch {
                root: self.root.clone(),
                bound: default,
                given: self.journal.clone(),
                why: "it already holds the workspace's records".into(),
            });
        }
        let state = self.root.join(STATE_DIR);
        match OsStorage.create_dir(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FsError::io("create directory", &state, e).into()),
        }
        let binding = state.join(JOURNAL_BINDING_NAME);
        let place = place(&self.root, &self.journal);
        // A hard link never replaces a file: of two writers binding at once, exactly one wins.
        if keel_fs::publish_once(&binding, place.as_bytes())? {
            return Ok(());
        }
        // Another writer bound it first: agree with it, or refuse.
        match read_binding(&binding, &self.root)? {
            Some(Binding::Journal(bound)) if bound == self.journal => Ok(()),
            Some(Binding::Service(service)) => Err(self.bound_to_service(&service)),
            Some(Binding::Journal(bound)) => Err(WorkspaceError::JournalMismatch {
                root: self.root.clone(),
                bound,
                given: self.journal.clone(),
                why: format!("bound by {}", binding.display()),
            }),
            None => Ok(()),
        }
    }
}

impl Workspace {
    fn bound_to_service(&self, service: &str) -> WorkspaceError {
        WorkspaceError::BoundToService {
            root: self.root.clone(),
            service: service.to_owned(),
            binding: self.root.join(STATE_DIR).join(JOURNAL_BINDING_NAME),
        }
    }
}

/// How a binding names `journal`: `root:<path beneath the root>`, or its absolute path.
pub fn place(root: &Path, journal: &Path) -> String {
    match journal.strip_prefix(root) {
        Ok(inside) => format!("{INSIDE_ROOT}{}", inside.to_string_lossy()),
        Err(_) => journal.to_string_lossy().into_owned(),
    }
}

/// What a binding names.
enum Binding {
    /// A journal file.
    Journal(PathBuf),
    /// A lease service elsewhere, by the name its backend gives it (`etcd:<prefix>`): the write
    /// gate's binding when its leases live there.
    Service(String),
}

/// What the workspace's binding names, if it has one: `root:<path>` or an absolute path is a
/// journal; anything else is a service's name.
fn read_binding(binding: &Path, root: &Path) -> Result<Option<Binding>, WorkspaceError> {
    let Some(text) = read_small(binding)? else { return Ok(None) };
    let text = text.trim_end_matches('\n');
    Ok(Some(match text.strip_prefix(INSIDE_ROOT) {
        Some(inside) => Binding::Journal(lexical(&root.join(inside))),
        None if Path::new(text).is_absolute() => Binding::Journal(PathBuf::from(text)),
        None => Binding::Service(text.to_owned()),
    }))
}

/// The text of a small file, or `None` if it is not there. A file over
/// [`SMALL_FILE_BYTES_MAX`] is an error, never text cut at the limit (a binding cut short would
/// name another journal).
fn read_small(path: &Path) -> Result<Option<String>, WorkspaceError> {
    match keel_fs::read_to_string_bounded(path, SMALL_FILE_BYTES_MAX) {
        Ok(text) => Ok(Some(text)),
        Err(FsError::Io { op: "open", source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn current_dir() -> Result<PathBuf, WorkspaceError> {
    std::env::current_dir().map_err(|e| FsError::io("read the current directory", Path::new("."), e).into())
}

/// `path` made canonical, if it is an existing directory.
fn existing_dir(path: &Path) -> Result<PathBuf, WorkspaceError> {
    let bad = |reason: String| WorkspaceError::BadRoot { path: path.to_owned(), reason };
    match OsStorage.path_stat(path) {
        Ok(stat) if stat.kind == FileKind::Dir => keel_fs::canonicalize(path).map_err(|error| match error {
            // The operating system's words alone, as ever: `BadRoot` names the path itself.
            FsError::Io { source, .. } => bad(source.to_string()),
            other => bad(other.to_string()),
        }),
        Ok(_) => Err(bad("not a directory".into())),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(bad("no such directory".into())),
        Err(e) => Err(FsError::io("stat", path, e).into()),
    }
}

/// `path` without `.` components and with `..` folded into its parent, as text: a journal path
/// is compared before it exists, so it cannot be canonicalised.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Refuses a path of keel's own state that is a symbolic link.
fn refuse_link(path: &Path) -> Result<(), WorkspaceError> {
    match OsStorage.link_stat(path) {
        Ok(stat) if stat.kind == FileKind::Symlink => Err(WorkspaceError::Symlink { link: path.to_owned() }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io("stat", path, e).into()),
    }
}

fn is_dir(path: &Path) -> bool {
    OsStorage.link_stat(path).is_ok_and(|stat| stat.kind == FileKind::Dir)
}

/// Rules 2 to 4 from `start` (canonical): the root, the checkout, and how the root was found.
fn discover(start: &Path) -> Result<(PathBuf, PathBuf, FoundBy), WorkspaceError> {
    let mut state_dir = None;
    let mut git_top = None;
    for dir in start.ancestors().take(ANCESTORS_MAX) {
        if state_dir.is_none() && OsStorage.link_stat(&dir.join(STATE_DIR)).is_ok() {
            state_dir = Some(dir.to_owned());
        }
        if OsStorage.link_stat(&dir.join(".git")).is_ok() {
            git_top = Some(dir.to_owned());
            break;
        }
    }
    let (found, found_by) = match (state_dir, &git_top) {
        (Some(dir), _) => (dir, FoundBy::StateDir),
        (None, Some(top)) => (top.clone(), FoundBy::GitTop),
        (None, None) => return Ok((start.to_owned(), start.to_owned(), FoundBy::CurrentDir)),
    };
    let Some(top) = git_top else { return Ok((found.clone(), found, found_by)) };
    match main_worktree(&top)? {
        // In a linked worktree: the same place in the main worktree holds the journal.
        Some(main) => {
            let inside = found.strip_prefix(&top).unwrap_or(Path::new(""));
            Ok((main.join(inside), found, found_by))
        }
        None => Ok((found.clone(), found, found_by)),
    }
}

/// The main worktree's top, if `top` is the top of a linked git worktree: its `.git` is a file
/// `gitdir: <repo>/.git/worktrees/<name>`, whose `commondir` names `<repo>/.git`. A submodule's
/// `.git` file names a git directory without `commondir`, and a bare repository has no main
/// worktree: neither moves the root.
fn main_worktree(top: &Path) -> Result<Option<PathBuf>, WorkspaceError> {
    let dot_git = top.join(".git");
    if is_dir(&dot_git) {
        return Ok(None);
    }
    let Some(text) = read_small(&dot_git)? else { return Ok(None) };
    let Some(gitdir) = text.lines().next().and_then(|line| line.strip_prefix("gitdir:")).map(str::trim) else {
        return Ok(None);
    };
    let gitdir = top.join(gitdir);
    let Some(common) = read_small(&gitdir.join("commondir"))? else { return Ok(None) };
    let common = gitdir.join(common.trim());
    let Ok(common) = keel_fs::canonicalize(&common) else { return Ok(None) };
    let main = match common.parent() {
        Some(main) if common.file_name() == Some(".git".as_ref()) && is_dir(&main.join(".git")) => main.to_owned(),
        _ => return Ok(None),
    };
    Ok(Some(main))
}

impl From<WorkspaceError> for io::Error {
    fn from(error: WorkspaceError) -> Self {
        io::Error::other(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_fold_dots_without_touching_the_disk() {
        assert_eq!(lexical(Path::new("/w/./.keel/../state/j.jsonl")), PathBuf::from("/w/state/j.jsonl"));
        assert_eq!(place(Path::new("/w"), Path::new("/w/state/j")), "root:state/j");
        assert_eq!(place(Path::new("/w"), Path::new("/elsewhere/j")), "/elsewhere/j");
    }

    #[test]
    fn the_nearest_state_directory_wins_and_a_start_with_none_is_its_own_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let top = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir_all(top.join("ws/.keel")).expect("state");
        std::fs::create_dir_all(top.join("ws/a/b")).expect("sub");
        let ws = Workspace::locate(Named::default(), &top.join("ws/a/b")).expect("found");
        assert_eq!((ws.root(), ws.found_by()), (top.join("ws").as_path(), FoundBy::StateDir));
        assert_eq!(ws.journal(), top.join("ws/.keel/lane-journal.jsonl"));
        let none = Workspace::locate(Named::default(), &top).expect("found");
        assert_eq!((none.root(), none.found_by()), (top.as_path(), FoundBy::CurrentDir));
    }

    #[test]
    fn a_workspace_bound_to_a_service_names_it_and_refuses_to_bind_a_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir_all(root.join(".keel")).expect("state");
        std::fs::write(root.join(".keel").join(JOURNAL_BINDING_NAME), "etcd:/keel/shop").expect("binding");
        let ws = Workspace::locate(Named { root: Some(&root), journal: None }, &root).expect("found");
        assert_eq!(ws.service(), Some("etcd:/keel/shop"));
        assert_eq!(ws.journal(), root.join(JOURNAL_DEFAULT), "no journal is read from a service's name");
        let error = ws.bind().expect_err("a journal would grant the service's regions again");
        assert!(matches!(&error, WorkspaceError::BoundToService { service, .. } if service == "etcd:/keel/shop"));
        assert!(!root.join(JOURNAL_DEFAULT).exists());
        std::fs::write(root.join(".keel").join(JOURNAL_BINDING_NAME), "root:state/j.jsonl").expect("binding");
        let ws = Workspace::locate(Named { root: Some(&root), journal: None }, &root).expect("found");
        assert_eq!((ws.service(), ws.journal()), (None, root.join("state/j.jsonl").as_path()));
    }
}
