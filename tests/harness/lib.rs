//! Test harness: an in-process router that can cut single directed links between nodes, and a
//! cluster of real [`Node`]s (real stores on disk, real openraft) wired through it.
//!
//! The router calls the target node's [`RaftHandler`] directly. A blocked link `(a, b)` drops
//! requests from `a` to `b` and responses from `b` to `a`, so one-way faults are possible.

pub mod cluster;
pub mod router;

pub use cluster::TestCluster;
pub use router::Router;

/// Installs a test log subscriber once (`RUST_LOG` selects what is printed).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_test_writer()
        .try_init();
}

/// A loopback port nobody listens on right now (for nodes started by a test).
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: the kernel may hand a port it just gave
    // (and we released) to the next bind, and a test that asked for three ports got two equal
    // ones (mosquitto then failed to listen twice on one port).
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(p) {
            return p;
        }
    }
}
