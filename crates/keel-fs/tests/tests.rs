//! keel-fs integration tests: each module proves the promises of one module of the crate.

mod append;
mod atomic;
mod exclusive_lock;
mod os_lock;
mod resolve;
mod sidecar_lock;
