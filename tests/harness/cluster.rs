//! A cluster of real nodes wired through the [`Router`], with the invariant checks every fault
//! scenario ends with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_core::Hash;
use hearth_node::config::{
    AssistSettings, CheckpointSettings, MqttBrokerSettings, Peer, TimingConfig,
};
use hearth_node::{Node, NodeConfig, NodeError, Role, StartError};
use openraft::raft::ReadPolicy;

use crate::Router;

/// Fast timing for in-process tests (loopback, no Wi-Fi): heartbeats every 50 ms, elections
/// after 300–600 ms of silence.
pub fn test_timing() -> TimingConfig {
    TimingConfig {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        caretaker_patience_ms: 1000,
        write_timeout_ms: 1500,
    }
}

/// With the test timing: a peer silent this long, with a target answering, is PEER_DOWN.
pub const ASSIST_DOWN_AFTER_MS: u64 = 1500;

/// An acknowledged write: the client was told it committed at `index` with `hash`.
#[derive(Debug, Clone)]
pub struct Ack {
    pub index: u64,
    pub hash: Hash,
    pub text: String,
}

pub struct TestCluster {
    pub router: Router,
    pub dir: tempfile::TempDir,
    pub roles: BTreeMap<u64, Role>,
    nodes: BTreeMap<u64, Arc<Node>>,
    pub acked: Vec<Ack>,
    timing: TimingConfig,
    mqtt: BTreeMap<u64, MqttBrokerSettings>,
    assist: BTreeMap<u64, AssistSettings>,
    checkpoint: BTreeMap<u64, CheckpointSettings>,
}

impl TestCluster {
    /// Hubs 1 and 2, witness 3; hub 1 forms the cluster. Waits until a leader serves.
    pub async fn three() -> Self {
        Self::with_roles(&[(1, Role::Hub), (2, Role::Hub), (3, Role::Witness)]).await
    }

    pub async fn with_roles(roles: &[(u64, Role)]) -> Self {
        Self::build(roles, BTreeMap::new()).await
    }

    /// Hubs 1 and 2 and witness 3, with an MQTT broker configured on every node.
    pub async fn three_with_mqtt(broker: &str) -> Self {
        Self::three_with_mqtt_on(
            [1, 2, 3]
                .into_iter()
                .map(|id| (id, MqttBrokerSettings::plain(broker)))
                .collect(),
        )
        .await
    }

    /// Hubs 1 and 2 and witness 3, each node with the broker settings given for it (none for
    /// a node not in the map).
    pub async fn three_with_mqtt_on(mqtt: BTreeMap<u64, MqttBrokerSettings>) -> Self {
        Self::build(&[(1, Role::Hub), (2, Role::Hub), (3, Role::Witness)], mqtt).await
    }

    async fn build(roles: &[(u64, Role)], mqtt: BTreeMap<u64, MqttBrokerSettings>) -> Self {
        crate::init_tracing();
        let mut c = TestCluster {
            router: Router::default(),
            dir: tempfile::tempdir().expect("temp dir"),
            roles: roles.iter().copied().collect(),
            nodes: BTreeMap::new(),
            acked: Vec::new(),
            timing: test_timing(),
            mqtt,
            assist: BTreeMap::new(),
            checkpoint: BTreeMap::new(),
        };
        for (id, _) in roles {
            c.start(*id).await.expect("node starts");
        }
        let first = roles[0].0;
        c.node(first)
            .bootstrap(&c.router.probe(first), Duration::from_millis(50))
            .await
            .expect("bootstrap");
        c.wait_for_leader(&c.hubs(), Duration::from_secs(10)).await;
        c.wait_votes(Duration::from_secs(10)).await;
        c.wait_notices_recorded(Duration::from_secs(10)).await;
        c
    }

    /// Waits until no running node has a notice about its own data waiting for the chain
    /// (each node that joined with a new data directory says so in the chain once the leader
    /// has recorded it): a formed cluster appends nothing more by itself, so a test's own
    /// entries are the last ones.
    pub async fn wait_notices_recorded(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let waiting: Vec<u64> = self
                .nodes
                .keys()
                .filter(|id| {
                    !hearth_node::datadir::pending_notices(&self.data_dir(**id)).is_empty()
                })
                .copied()
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {waiting:?} still have notices the chain does not carry after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no running node's vote is held (every new node has been caught up).
    pub async fn wait_votes(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let held: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.handler.hold().is_some())
                .map(|(id, _)| *id)
                .collect();
            if held.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {held:?} still hold their vote after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.roles.keys().copied().collect()
    }

    pub fn hubs(&self) -> Vec<u64> {
        self.roles
            .iter()
            .filter(|(_, r)| **r == Role::Hub)
            .map(|(i, _)| *i)
            .collect()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub fn config(&self, id: u64) -> NodeConfig {
        let first = *self.roles.keys().next().expect("members");
        NodeConfig {
            node_id: id,
            role: self.roles[&id],
            listen: format!("127.0.0.1:{}", 17000 + id),
            advertise: None,
            metrics_listen: None,
            mqtt_broker: self.mqtt.get(&id).cloned(),
            data_dir: self.data_dir(id),
            bootstrap: id == first,
            peers: self
                .roles
                .iter()
                .filter(|(p, _)| **p != id)
                .map(|(p, r)| Peer {
                    id: *p,
                    addr: format!("127.0.0.1:{}", 17000 + p),
                    role: *r,
                })
                .collect(),
            timing: self.timing.clone(),
            assist: self.assist.get(&id).cloned().unwrap_or_default(),
            // In-process nodes talk through the test router, not gRPC.
            insecure: true,
            tls: None,
            auth: None,
            limits: Default::default(),
            http: Default::default(),
            checkpoint: self.checkpoint.get(&id).cloned().unwrap_or_default(),
        }
    }

    /// Sets the assisted-failover targets of node `id` (used from its next start), with a
    /// `down_after_ms` suited to the test timing.
    pub fn set_assist_targets(&mut self, id: u64, targets: Vec<String>) {
        self.assist.insert(
            id,
            AssistSettings {
                targets,
                down_after_ms: ASSIST_DOWN_AFTER_MS,
            },
        );
    }

    /// Sets when node `id` signs checkpoints on its own (used from its next start).
    pub fn set_checkpoint_schedule(&mut self, id: u64, every_entries: u64, every_secs: u64) {
        self.checkpoint.insert(
            id,
            CheckpointSettings {
                every_entries,
                every_secs,
            },
        );
    }

    /// Declares a new member (it is not part of the cluster until added through the leader).
    pub fn declare(&mut self, id: u64, role: Role) {
        self.roles.insert(id, role);
    }

    /// Starts node `id` from its data directory.
    pub async fn start(&mut self, id: u64) -> Result<(), StartError> {
        let cfg = self.config(id);
        cfg.validate().expect("valid test config");
        let node = Arc::new(Node::start(cfg, self.router.factory(id)).await?);
        node.checkpoints
            .set_client(Arc::new(self.router.cosign_client()));
        self.router.register(node.clone());
        node.set_probe(Arc::new(self.router.probe(id)));
        tokio::spawn(hearth_node::crosscheck::run(
            Arc::downgrade(&node),
            Arc::new(self.router.probe(id)),
            hearth_node::crosscheck::period(node.config().timing.heartbeat_ms),
        ));
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Stops node `id` (its data stays on disk).
    pub async fn stop(&mut self, id: u64) {
        self.router.unregister(id);
        if let Some(n) = self.nodes.remove(&id) {
            match Arc::try_unwrap(n) {
                Ok(n) => n.shutdown().await,
                Err(n) => {
                    let _ = n.raft.shutdown().await;
                }
            }
        }
    }

    pub fn node(&self, id: u64) -> &Arc<Node> {
        &self.nodes[&id]
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Whether `id` is a leader confirmed by a quorum right now (ReadIndex round).
    pub async fn is_confirmed_leader(&self, id: u64) -> bool {
        let Some(n) = self.nodes.get(&id) else {
            return false;
        };
        let opt = openraft::raft::linearizable_read::LinearizerOption::from(ReadPolicy::ReadIndex)
            .with_wait_timeout(Duration::from_millis(300));
        matches!(
            tokio::time::timeout(Duration::from_millis(500), n.raft.ensure_linearizable(opt)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until one of `candidates` is a quorum-confirmed leader; panics after `within`.
    pub async fn wait_for_leader(&self, candidates: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for id in candidates {
                if self.nodes.contains_key(id) && self.is_confirmed_leader(*id).await {
                    return *id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {candidates:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a test record on `id` (no retry, no forwarding).
    pub async fn write_on(
        &mut self,
        id: u64,
        text: &str,
    ) -> Result<hearth_store::Applied, NodeError> {
        let r = self.node(id).append_test_record(text).await;
        if let Ok(a) = &r {
            self.acked.push(Ack {
                index: a.index,
                hash: a.hash,
                text: text.to_string(),
            });
        }
        r
    }

    /// Writes through whichever hub leads, retrying until `within` passes.
    pub async fn write(&mut self, text: &str, within: Duration) -> hearth_store::Applied {
        let deadline = Instant::now() + within;
        loop {
            for id in self.hubs() {
                if !self.nodes.contains_key(&id) {
                    continue;
                }
                if let Ok(a) = self.write_on(id, text).await {
                    return a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "write {text:?} did not commit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied the same head.
    pub async fn wait_converged(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let heads: Vec<_> = self
                .nodes
                .values()
                .map(|n| n.sm.head().ok().flatten())
                .collect();
            if heads.windows(2).all(|w| w[0] == w[1]) && heads.first().is_some_and(|h| h.is_some())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge within {within:?}: heads {heads:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The invariants every scenario ends with: every running node's chain verifies; all are
    /// identical up to the shortest; every acknowledged write is in every chain that reached
    /// its index, with the acknowledged hash, and in the longest chain.
    pub fn check_invariants(&self) {
        let mut chains: BTreeMap<u64, Vec<(u64, Hash)>> = BTreeMap::new();
        for (id, n) in &self.nodes {
            // The running chain cross-check never fences or flags a node of a sound cluster.
            let cc = n.chain_check();
            assert!(
                cc.fenced.is_none() && cc.disagreeing.is_empty(),
                "node {id}: the chain cross-check found a disagreement: {cc:?}"
            );
            let v = n.verify().expect("verify runs");
            assert!(
                v.failure.is_none(),
                "node {id}'s chain fails: {:?}",
                v.failure
            );
            let head = v.head.map(|(i, _)| i);
            let links = match head {
                Some(h) => n.links(0, h).expect("links"),
                None => Vec::new(),
            };
            chains.insert(
                *id,
                links.iter().map(|l| (l.record.index, l.hash)).collect(),
            );
        }
        let shortest = chains.values().map(Vec::len).min().unwrap_or(0);
        let mut iter = chains.iter();
        if let Some((first_id, first)) = iter.next() {
            for (id, c) in iter {
                assert_eq!(
                    &c[..shortest],
                    &first[..shortest],
                    "chains of nodes {first_id} and {id} differ in their common prefix"
                );
            }
        }
        let longest = chains.values().map(Vec::len).max().unwrap_or(0) as u64;
        for a in &self.acked {
            assert!(
                a.index < longest,
                "acknowledged write {:?} at {} is missing from every chain",
                a.text,
                a.index
            );
            for (id, c) in &chains {
                if let Some((_, h)) = c.get(a.index as usize) {
                    assert_eq!(
                        h, &a.hash,
                        "node {id} has a different entry at acknowledged index {} ({:?})",
                        a.index, a.text
                    );
                }
            }
        }
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}

/// The wire bytes of a Raft vote request: candidate `candidate` asks for votes in `term`,
/// claiming an empty log. For tests that send Raft RPCs by hand.
pub fn vote_request_bytes(term: u64, candidate: u64) -> Vec<u8> {
    let req = openraft::raft::VoteRequest::<hearth_store::TypeConfig>::new(
        openraft::Vote::new(term, candidate),
        None,
    );
    hearth_cluster::wire::encode(&req).expect("a vote request encodes")
}

/// The wire bytes of an InstallSnapshot request: leader `leader` of `term` sends an empty
/// snapshot (no log id, default membership). For tests that send Raft RPCs by hand.
pub fn snapshot_request_bytes(term: u64, leader: u64) -> Vec<u8> {
    use openraft::alias::{SnapshotMetaOf, VoteOf};
    let vote: VoteOf<hearth_store::TypeConfig> = openraft::Vote::new_committed(term, leader);
    let req = (
        vote,
        SnapshotMetaOf::<hearth_store::TypeConfig>::default(),
        Vec::<u8>::new(),
    );
    hearth_cluster::wire::encode(&req).expect("a snapshot request encodes")
}

/// The wire bytes of a TransferLeader request: leader `leader` of `term` hands leadership to
/// node `to`, claiming an empty log. For tests that send Raft RPCs by hand.
pub fn transfer_leader_request_bytes(term: u64, leader: u64, to: u64) -> Vec<u8> {
    let req = openraft::raft::TransferLeaderRequest::<hearth_store::TypeConfig>::new(
        openraft::Vote::new_committed(term, leader),
        to,
        None,
    );
    hearth_cluster::wire::encode(&req).expect("a transfer-leader request encodes")
}

/// Rewrites entry `index` of a stopped node's `raft-log.bin` as an attacker with the disk
/// would: decodes its record, lets `forge` change it, re-encodes it and recomputes the frame's
/// CRC, so the log opens cleanly. Returns the forged record.
pub fn forge_log_entry(
    data_dir: &std::path::Path,
    index: u64,
    forge: impl FnOnce(&mut hearth_core::Record),
) -> hearth_core::Record {
    let path = data_dir.join("raft").join(hearth_store::log::LOG_FILE);
    let bytes = std::fs::read(&path).expect("read the log");
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut off = 0usize;
    let mut forge = Some(forge);
    let mut forged = None;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let body = &bytes[off + 8..off + 8 + len];
        let mut rec = hearth_core::Record::decode(body).expect("a record");
        let body = if rec.index == index
            && let Some(forge) = forge.take()
        {
            forge(&mut rec);
            forged = Some(rec.clone());
            rec.encode()
        } else {
            body.to_vec()
        };
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        off += 8 + len;
    }
    std::fs::write(&path, out).expect("write the log");
    forged.expect("the log holds that index")
}
