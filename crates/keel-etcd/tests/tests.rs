//! keel-etcd's integration tests, one binary, against real etcd clusters started by `cluster`
//! (never a mock): the harness's own smoke tests first.

use keel_tests::etcd_cluster as cluster;

mod holding;
mod migrate;
mod semantics;
mod smoke;
