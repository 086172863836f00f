//! keel-kernel integration tests, one binary: conformance with the format's fixtures, and
//! properties of replay, admission, the write gate, merges and the records keel writes.

mod conformance;
mod gate_props;
mod merge_props;
mod props;
mod records;
