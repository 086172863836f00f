//! keel's cross-crate tests, one binary: the format's compatibility with dos-kernel's reference
//! fold, the journal behind its storage seam (crashes, damage), and lease races across processes.

mod compat;
mod journal_seam;
mod leases;
