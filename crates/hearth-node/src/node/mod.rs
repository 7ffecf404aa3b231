//! One Hearth node: its stores, its Raft instance, and the operations the API offers, a
//! module per concept:
//!
//! - [`startup`](Node::start): the data directory's identity, opening the stores, verifying the
//!   whole chain (a node never serves a chain it cannot verify), starting Raft and the tasks;
//! - `bootstrap`: forming the cluster, once, on the configured hub ([`Node::bootstrap`]), and
//!   refusing a wiped node;
//! - `write`: the write path (propose through Raft on the leader, bounded, with `NO_QUORUM` and
//!   "the leader is …" errors);
//! - `domain`: devices, classes, policies and intents; `membership`: membership changes;
//! - `status`: what the node reports; `promotion`: two hubs' assisted failover;
//! - `clock`: the clock watch; `crosscheck`: the running chain-head comparison with peers;
//!   `audit`: reading the chain; `shutdown`: stopping.
//!
//! Every method that records who asked takes the caller's [`Principal`](crate::auth::Principal)
//! as a parameter: nothing in here reads the auth layer's task-local.

mod admission;
mod audit;
mod bootstrap;
mod clock;
pub mod crosscheck;
mod domain;
mod membership;
mod promotion;
mod shutdown;
mod startup;
mod status;
mod write;

pub use crate::error::{NodeError, StartError};
pub use audit::describe;
pub use domain::policies_sha256;
pub use startup::verify_data_dir;
pub use status::{AssistView, NodeState, StatusView};

use crate::config::NodeConfig;
use crate::config::Role;
use futures::future::BoxFuture;
use hearth_cluster::HearthRaft;
use hearth_cluster::RaftHandler;
use hearth_core::assist::TargetProbe;
use hearth_core::domain::Promotion;
use hearth_core::intent::Device;
use hearth_core::intent::IntentClass;
use hearth_core::policy::Policy;
use hearth_store::LogStore;
use hearth_store::StateMachine;
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest test record accepted.
pub const MAX_TEST_RECORD: usize = 4096;

/// How a node asks a peer for its status (gRPC in production, the router in tests).
pub trait PeerProbe: Send + Sync {
    fn status<'a>(&'a self, id: u64, addr: &'a str) -> BoxFuture<'a, Option<StatusView>>;
}

/// A running node.
pub struct Node {
    pub id: u64,
    pub role: Role,
    pub raft: HearthRaft,
    pub handler: RaftHandler,
    pub log: LogStore,
    pub sm: StateMachine,
    config: NodeConfig,
    fresh: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Latest probes of the assisted-failover targets.
    targets: Arc<std::sync::Mutex<Vec<TargetProbe>>>,
    /// Set when the node asks whoever runs it to restart it (after a promotion, on request).
    restart: watch::Sender<bool>,
    /// The promotion this start wrote into the log, if any.
    pub promoted: Option<Promotion>,
    started_ms: u64,
    /// TLS material for calls this node makes to other nodes' public API (forwarding, probes).
    security: hearth_cluster::tls::Security,
    /// What the running chain-head cross-check found (`crosscheck`).
    chain_check: std::sync::Mutex<crate::crosscheck::ChainCheck>,
    /// Signed checkpoints: this hub's signing, or this witness's cosigning.
    pub checkpoints: Arc<crate::checkpoint::Checkpoints>,
    /// This node's wall clock (a seam for tests) and what it concludes about it.
    wall: crate::health::WallClock,
    clock_watch: Arc<crate::health::ClockWatch>,
    /// How this hub reaches devices (also handed to its dispatcher).
    gateway: Arc<dyn hearth_devices::Gateway>,
    /// This data directory's incarnation id (`datadir::incarnation`): the chain admits the one
    /// that votes under this node id.
    pub incarnation: String,
    /// How this node asks peers for their status when it admits them (`set_probe`; the
    /// public gRPC API with this node's TLS material when unset).
    probe: std::sync::OnceLock<Arc<dyn PeerProbe>>,
}

impl Node {
    /// Messages on device ack topics that were not the answer being waited for (forged,
    /// stale or misdirected), since this node started.
    pub fn ignored_device_acks(&self) -> u64 {
        self.gateway.ignored_acks()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// How this node reaches other nodes' public API (TLS with its certificate, or plain).
    pub fn security(&self) -> &hearth_cluster::tls::Security {
        &self.security
    }

    /// Sets how this node asks peers for their status (a test's router); once.
    pub fn set_probe(&self, probe: Arc<dyn PeerProbe>) {
        let _ = self.probe.set(probe);
    }

    /// How this node asks peers for their status.
    pub(crate) fn peer_probe(&self) -> Arc<dyn PeerProbe> {
        self.probe
            .get_or_init(|| {
                Arc::new(crate::api::GrpcProbe {
                    timeout: std::time::Duration::from_secs(2),
                    security: self.security.clone(),
                })
            })
            .clone()
    }

    /// The current Raft term, as this node sees it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The voters of the effective membership, ascending.
    pub fn voters(&self) -> Vec<u64> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Resolves when whoever runs this node should restart it (after a forced promotion was
    /// accepted, or on request).
    pub fn restart_requested(&self) -> watch::Receiver<bool> {
        self.restart.subscribe()
    }

    /// Asks whoever runs this node to restart it: a leader hands over first (on stop).
    pub fn request_restart(&self) {
        tracing::info!(node = self.id, "restart requested");
        self.restart.send_replace(true);
    }

    /// What the chain-head cross-check last found.
    pub fn chain_check(&self) -> crate::crosscheck::ChainCheck {
        self.chain_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_chain_check(&self, c: crate::crosscheck::ChainCheck) {
        *self.chain_check.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Refuses to serve this node's chain once the cross-check fenced it.
    pub fn serving_chain(&self) -> Result<(), NodeError> {
        match self.chain_check().fenced {
            Some(why) => Err(NodeError::Refused(format!("FENCED: {why}"))),
            None => Ok(()),
        }
    }

    /// Resolves when this node's Raft core has stopped (a fatal storage error such as ENOSPC,
    /// an openraft panic), with the reason. `hearth serve` then exits non-zero.
    pub async fn core_stopped(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow_watched().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "the Raft core ended".to_string();
            }
        }
    }

    /// Whether this node's Raft state is leader now (its applied state is then current).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    pub fn devices(&self) -> Result<Vec<Device>, NodeError> {
        Ok(self
            .sm
            .with_domain(|d| d.devices.values().cloned().collect())?)
    }

    pub fn classes(&self) -> Result<Vec<IntentClass>, NodeError> {
        Ok(self
            .sm
            .with_domain(|d| d.classes.values().cloned().collect())?)
    }

    pub fn policies(&self) -> Result<Vec<Policy>, NodeError> {
        Ok(self.sm.with_domain(|d| d.policies.clone())?)
    }

    /// This node's wall clock (tests skew it through [`crate::health::WallClock::set_skew_ms`]).
    pub fn wall(&self) -> &crate::health::WallClock {
        &self.wall
    }

    /// The chain's time: the latest time an applied entry was planned at.
    pub fn chain_ms(&self) -> u64 {
        self.sm.with_domain(|d| d.rates.chain_ms).unwrap_or(0)
    }

    /// The largest clock offset to a peer the last clock check measured (ms, absolute).
    pub fn clock_offset_max_ms(&self) -> u64 {
        self.clock_watch.max_offset_ms()
    }
}
