//! What the real-process tests of the `hearth` binary share: free loopback ports, node config
//! files written by `NodeConfig`'s builder (never TOML by hand), and a set of `hearth serve`
//! processes on loopback, each killed (SIGKILL) when the set is dropped.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_node::config::{NodeConfigBuilder, TimingConfig};
use hearth_node::{NodeConfig, Role};
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;

/// A loopback port nobody listens on right now.
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

/// `127.0.0.1:` and a free port.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The binary under test.
pub fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

/// Timing for tests: elections within a second, writes that give up after 1.5 s.
pub fn fast_timing() -> TimingConfig {
    TimingConfig {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        caretaker_patience_ms: 1000,
        write_timeout_ms: 1500,
    }
}

/// A lazily connected plain-text channel to a node (the clusters here are `insecure`), set
/// up as nodes set up theirs.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

/// Writes `cfg` to `path` (panics, naming the file, if it cannot).
pub fn write_config(cfg: &NodeConfig, path: &Path) {
    cfg.write_to(path, "")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The members of a test cluster, `(id, role)`, each given a free loopback port.
pub fn members(roles: &[(u64, Role)]) -> Vec<(u64, Role, String)> {
    roles
        .iter()
        .map(|&(id, role)| (id, role, free_addr()))
        .collect()
}

/// Two hubs and a witness.
pub const THREE: &[(u64, Role)] = &[(1, Role::Hub), (2, Role::Hub), (3, Role::Witness)];
/// Two hubs, no witness.
pub const TWO_HUBS: &[(u64, Role)] = &[(1, Role::Hub), (2, Role::Hub)];

/// Real `hearth serve` processes of one cluster in `dir`: node `id` has its config in
/// `dir/node{id}.toml`, its data in `dir/node{id}` and its standard error in
/// `dir/node{id}.log`.
pub struct Procs {
    pub dir: PathBuf,
    pub addrs: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
}

impl Procs {
    /// Writes the configs of an insecure cluster of `roles` with [`fast_timing`] (node 1
    /// bootstraps); starts nothing.
    pub fn new(dir: &Path, roles: &[(u64, Role)]) -> Self {
        Self::with(dir, roles, |b| b.insecure().timing(fast_timing()))
    }

    /// As [`new`](Self::new), with each node's builder finished by `finish` (security and
    /// timing are its to set).
    pub fn with(
        dir: &Path,
        roles: &[(u64, Role)],
        finish: impl Fn(NodeConfigBuilder) -> NodeConfigBuilder,
    ) -> Self {
        let members = members(roles);
        for b in hearth_node::config::local_cluster(dir, &members) {
            let cfg = finish(b).build().expect("a valid test config");
            write_config(&cfg, &dir.join(format!("node{}.toml", cfg.node_id)));
        }
        Procs {
            dir: dir.to_path_buf(),
            addrs: members.into_iter().map(|(id, _, a)| (id, a)).collect(),
            children: BTreeMap::new(),
        }
    }

    pub fn config(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}.toml"))
    }

    pub fn data(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    pub fn log(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}.log"))
    }

    /// The addresses in id order.
    pub fn addr_list(&self) -> Vec<String> {
        self.addrs.values().cloned().collect()
    }

    /// Starts node `id` (`RUST_LOG=warn`, standard error appended to its log).
    pub fn start(&mut self, id: u64) {
        self.start_with(id, |_| {});
    }

    /// Starts node `id` with `adjust` applied to its command last (environment, output).
    pub fn start_with(&mut self, id: u64, adjust: impl FnOnce(&mut Command)) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(id))
            .expect("open the node's log");
        let mut cmd = hearth();
        cmd.args(["serve", "--config"])
            .arg(self.config(id))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        adjust(&mut cmd);
        let child = cmd.spawn().expect("start hearth serve");
        self.children.insert(id, child);
    }

    /// The running process of node `id`.
    pub fn child(&self, id: u64) -> &Child {
        self.children
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// How node `id` ended, once it has (it is then no longer running); `None` while it runs.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let status = self
            .children
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .try_wait()
            .expect("wait for a node");
        if status.is_some() {
            self.children.remove(&id);
        }
        status
    }

    /// Waits until node `id`'s log contains `needle`, at most `within`.
    pub async fn wait_for_log(&self, id: u64, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read_to_string(self.log(id)).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not log {needle:?} within {within:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the nodes `ids`, started on new data directories, vote: each holds its vote
    /// until a leader has caught it up (`hearth_node::datadir`), and a cluster in which they do
    /// not yet vote is not yet the cluster a test means to fault.
    pub async fn wait_voting(&self, ids: &[u64], within: Duration) {
        for id in ids {
            self.wait_for_log(*id, "was caught up by the cluster and votes again", within)
                .await;
        }
    }

    /// SIGKILL: no shutdown path runs; whatever was not fsynced is lost.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().expect("kill -9 a node");
            c.wait().expect("reap a node");
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node's status, or `None` if it does not answer within 400 ms.
pub async fn status(addr: &str) -> Option<pb::NodeStatus> {
    let ch = channel(addr).ok()?;
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(400));
    ClusterClient::new(ch)
        .status(req)
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// The hub that leads and says so itself, waited for at most `within`.
pub async fn leader(addrs: &BTreeMap<u64, String>, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        for (id, a) in addrs {
            if let Some(s) = status(a).await
                && s.node_state() == pb::NodeState::Leader
                && s.role == "hub"
                && s.leader == Some(*id)
            {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the node at `addr` has applied `index`, at most `within`.
pub async fn wait_applied(addr: &str, index: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while status(addr)
        .await
        .and_then(|s| s.applied_index)
        .is_none_or(|a| a < index)
    {
        assert!(
            Instant::now() < deadline,
            "{addr} did not apply {index} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
