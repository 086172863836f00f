//! Test kit: a workspace root beside a lease journal and a canary outside the root, with a
//! clock the tests can move.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_journal::{AcquireOutcome, AcquireRequest, Grant, Journal, JournalOptions, LeaseBackend as _};
use keel_mutator::{Expect, IntentId, Mutator, MutatorOptions, Request};

/// The canary's content: it must never change, nor appear in any outcome.
pub const CANARY: &[u8] = b"canary: nothing outside the root may read or write me\n";

pub struct Workspace {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub journal_path: PathBuf,
    /// A directory outside the root, holding `canary.txt`.
    pub outside: PathBuf,
    /// Seconds since the epoch, as the journal's clock reads it.
    pub now_s: Arc<AtomicU64>,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("src/api")).expect("mkdir src/api");
        std::fs::create_dir_all(root.join("docs")).expect("mkdir docs");
        std::fs::create_dir_all(&outside).expect("mkdir outside");
        std::fs::write(outside.join("canary.txt"), CANARY).expect("canary");
        let journal_path = dir.path().join("lane-journal.jsonl");
        Self { _dir: dir, root, journal_path, outside, now_s: Arc::new(AtomicU64::new(1_800_000_000)) }
    }

    pub fn journal(&self) -> Journal {
        let now_s = Arc::clone(&self.now_s);
        let options = JournalOptions {
            clock: Arc::new(move || now_s.load(Ordering::SeqCst) as f64),
            ..JournalOptions::default()
        };
        Journal::open(&self.journal_path, options)
    }

    pub fn mutator(&self) -> Mutator {
        self.mutator_with(MutatorOptions::default())
    }

    pub fn mutator_with(&self, options: MutatorOptions) -> Mutator {
        Mutator::open(&self.root, self.journal(), options).expect("open mutator")
    }

    pub fn acquire(&self, lane: &str, tree: &[&str], owner: &str) -> Grant {
        let request = AcquireRequest {
            lane: lane.into(),
            tree: tree.iter().map(|s| (*s).to_owned()).collect(),
            owner: owner.into(),
            ttl_minutes: Some(1.0),
            ..AcquireRequest::default()
        };
        match self.journal().acquire(&request).expect("acquire") {
            AcquireOutcome::Acquire(grant) => grant,
            AcquireOutcome::Refuse { decision, .. } => panic!("refused: {}", decision.reason),
        }
    }

    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(path)).ok()
    }

    pub fn assert_canary_untouched(&self) {
        assert_eq!(std::fs::read(self.outside.join("canary.txt")).expect("canary"), CANARY);
        let names: Vec<_> =
            std::fs::read_dir(&self.outside).expect("outside").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["canary.txt"], "nothing new may appear outside the root");
    }

    /// Every scratch (temporary or trash) file anywhere beneath the root.
    pub fn scratch_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("readable") {
                let path = entry.expect("entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
                if path.is_dir() && !path.is_symlink() {
                    walk(&path, out);
                } else if name.contains(".keel-tmp.") || name.contains(".keel-trash.") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

pub fn request(grant: &Grant, owner: &str, expect: Expect, intent: &str) -> Request {
    Request::for_grant(grant, owner, expect, IntentId::new(intent).expect("valid intent id"))
}

pub fn hash(content: &[u8]) -> Expect {
    Expect::Hash(keel_mutator::content_hash(content))
}
