//! Where a workspace's store lives: `.keel/store/`, made on first use, never at a mistyped root.

use keel_store::{FsRuntimeStore, StoreError, StoreOptions, create_default_root, default_root};

#[test]
fn a_workspace_s_store_is_made_under_dot_keel_store_once_and_a_missing_workspace_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let workspace = dir.path();
    assert_eq!(default_root(workspace), workspace.join(".keel/store"));
    let root = create_default_root(workspace).expect("made");
    assert_eq!(root, default_root(workspace));
    assert_eq!(create_default_root(workspace).expect("already there"), root, "a second call finds it");
    drop(FsRuntimeStore::open_or_create(&StoreOptions::new(&root, "r")).expect("a runtime in it"));
    assert!(workspace.join(".keel/store/runtimes").is_dir());
    assert!(!workspace.join("runtimes").exists(), "nothing at the workspace root");
    let err = create_default_root(&workspace.join("typo")).expect_err("no workspace there");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!workspace.join("typo").exists(), "a mistyped root is never created");
}
