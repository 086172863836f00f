//! keel-etcd's integration tests, one binary, against real etcd clusters started by `cluster`
//! (never a mock): the harness's own smoke tests first.

mod cluster;
mod semantics;
mod smoke;
