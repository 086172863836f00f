//! A real etcd for the CLI's etcd tests: the test kit's 3-member cluster, one per test binary
//! (each test keeps to a key prefix of its own), started on first use and killed with the test
//! process (`keel_tests::etcd_cluster`). A missing `etcd` fails the tests, naming it.

use std::net::TcpListener;

use keel_tests::etcd_cluster;

/// A loopback port nothing listens on now: an endpoint no etcd answers.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("its address").port()
}

/// The shared cluster, as the tests name it: one endpoint of it.
pub struct Etcd {
    endpoint: String,
}

impl Etcd {
    /// The binary's cluster, started if this is the first test to ask.
    pub fn start() -> Self {
        Self { endpoint: etcd_cluster::shared().endpoint(0) }
    }

    /// A client URL of one member.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
