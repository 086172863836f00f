//! keel-store's integration tests, one binary: hostile ids, paging, torn tails, damaged stores,
//! several writers, power cuts and I/O errors at every operation (the storage seam). (The kill -9
//! test is the `crash` binary: it re-executes itself.)

mod concurrency;
mod damage;
mod ids;
mod paging;
mod root;
mod seam;
mod torn;

use std::path::{Path, PathBuf};

use keel_store::{FsRuntimeStore, StoreOptions};

/// A new store for runtime `id` in a fresh temporary directory.
pub fn new_store(id: &str) -> (tempfile::TempDir, FsRuntimeStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FsRuntimeStore::open_or_create(&StoreOptions::new(dir.path(), id)).expect("store created");
    (dir, store)
}

/// Every file and directory under `root`, recursively.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}
