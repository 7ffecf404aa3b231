//! One Hearth node: its stores, its Raft instance, and the operations the API offers.
//!
//! Startup is linear and refuses early: check the data directory belongs to this node id,
//! open the log and state machine, verify the whole chain (a node never serves a chain it
//! cannot verify), start Raft, start the caretaker on a witness. Forming the cluster is a
//! separate, explicit step ([`Node::bootstrap`]) that only the configured hub runs, once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hearth_cluster::{HearthRaft, RaftHandler, settings};
use hearth_core::assisted::{AssistConfig, AssistObservation, AssistState, TargetProbe};
use hearth_core::caretaker::{CaretakerConfig, LogPos};
use hearth_core::domain::{Command as DomainCommand, IntentRecord, Outcome, Promotion};
use hearth_core::intent::{Adapter, Device, Intent, IntentClass};
use hearth_core::policy::Policy;
use hearth_core::resolver::{Clock, Plan};
use hearth_core::{Hash, Record};
use hearth_store::audit::{self, Link, NodeVerify};
use hearth_store::{Applied, Command, LogStore, Member, StateMachine, StoreError, TypeConfig};
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::raft::ReadPolicy;
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{NodeConfig, Role};

/// Largest test record accepted.
pub const MAX_TEST_RECORD: usize = 4096;
const IDENTITY_FILE: &str = "node.json";
/// Present while the bootstrap hub is forming the cluster (between its first entry and the
/// membership that makes every configured member a voter).
const FORMING_FILE: &str = "forming";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the audit chain on this node fails verification at index {index}: {reason}. \
         The node refuses to serve it; keep the data directory for inspection and rejoin the \
         node under a new id (docs/OPERATIONS.md)"
    )]
    ChainBroken { index: u64, reason: String },
    #[error(
        "data directory {dir} belongs to node {found}, but this config says node {expected}; point data_dir elsewhere"
    )]
    WrongNode {
        dir: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "data directory {dir} holds a Raft log but no {IDENTITY_FILE}; it was not written by Hearth or was damaged"
    )]
    UnknownDataDir { dir: PathBuf },
    #[error("invalid Raft settings: {0}")]
    Settings(String),
    #[error("the Raft core of this node has stopped: {0}; restart the node")]
    Fatal(String),
    #[error("NO_QUORUM: {0}")]
    NoQuorum(String),
    #[error("node {self_id} is not the leader; the leader is node {leader} at {addr}")]
    NotLeader {
        self_id: u64,
        leader: u64,
        addr: String,
    },
    #[error(
        "this witness leads only as a caretaker while handing over to a hub; retry in a few seconds"
    )]
    WitnessCaretaker,
    #[error(
        "the entry was discarded by a leader change; it may or may not commit: check `hearth audit tail` before retrying"
    )]
    Discarded,
    #[error(transparent)]
    Field(#[from] hearth_core::intent::FieldError),
    #[error(transparent)]
    Plan(#[from] hearth_core::resolver::PlanError),
    #[error(
        "idempotency key already used for intent {0} with a different body; use a new key for a new intent"
    )]
    KeyConflict(String),
    #[error("checkpoints: {0}")]
    Checkpoints(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error(
        "refusing to form a new cluster: node {peer} already has one (last index {last_index:?}). \
         This node's data directory is empty: if it was wiped, do not reuse node id {self_id}; \
         add a replacement node with a new id (docs/OPERATIONS.md)"
    )]
    AlreadyFormed {
        self_id: u64,
        peer: u64,
        last_index: Option<u64>,
    },
    #[error(
        "node {self_id} has an empty data directory, but leader {leader} has already replicated \
         entries up to {matched} to node {self_id}: its data was wiped. A wiped node must not \
         rejoin under its old id (it could vote twice); rejoin it under a new id (docs/OPERATIONS.md)"
    )]
    Wiped {
        self_id: u64,
        leader: u64,
        matched: u64,
    },
}

/// The SHA-256 (lower-case hex) of a policy set as stored: what `policy apply` diffed against.
pub fn policies_sha256(policies: &[Policy]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(policies).unwrap_or_default(),
    ))
}

/// A node's Raft state as its status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// The Raft instance was shut down (the node is stopping).
    Shutdown,
    /// The Raft core stopped on an error; the node exits (`hearth serve`).
    Stopped,
    /// A peer of another version reported a state this one does not know.
    Unknown,
}

impl NodeState {
    /// openraft's state. A stale leader keeps `Leader` for a while (DESIGN.md §9): this says
    /// what the node believes, never that it may act.
    pub fn of(s: ServerState) -> Self {
        match s {
            ServerState::Leader => Self::Leader,
            ServerState::Follower => Self::Follower,
            ServerState::Candidate => Self::Candidate,
            ServerState::Learner => Self::Learner,
            ServerState::Shutdown => Self::Shutdown,
        }
    }

    /// The name people read (`cluster status`), as openraft spells the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::Leader => "Leader",
            Self::Follower => "Follower",
            Self::Candidate => "Candidate",
            Self::Learner => "Learner",
            Self::Shutdown => "Shutdown",
            Self::Stopped => "Stopped",
            Self::Unknown => "Unknown",
        }
    }

    /// The state named by [`NodeState::name`] (what a node of an older version sends as text).
    pub fn parse(name: &str) -> Self {
        [
            Self::Leader,
            Self::Follower,
            Self::Candidate,
            Self::Learner,
            Self::Shutdown,
            Self::Stopped,
        ]
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or(Self::Unknown)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    pub node_id: u64,
    pub role: Role,
    pub state: NodeState,
    /// The node's vote is held until the cluster has caught it up (`datadir`).
    pub vote_held: bool,
    pub term: u64,
    pub last_log: Option<(u64, u64)>,
    pub applied: Option<u64>,
    pub head: Option<(u64, Hash)>,
    pub leader: Option<u64>,
    /// (id, member, is voter)
    pub members: Vec<(u64, Member, bool)>,
    /// Leader only: highest index replicated to each node.
    pub replication: Vec<(u64, Option<u64>)>,
    pub initialized: bool,
    pub millis_since_quorum_ack: Option<u64>,
    /// Two hubs without a witness: the assisted-failover assessment of this hub.
    pub assist: Option<AssistView>,
    /// Peers that refuse this node, and why (e.g. it was removed by a forced promotion).
    pub refused_by: Vec<(u64, String)>,
    /// When this incarnation of the node started (Unix ms).
    pub started_ms: u64,
    /// This node's checkpoint public key (lower-case hex).
    pub checkpoint_key: String,
    /// Registered devices this hub could not drive if it led (an adapter it has not
    /// configured).
    pub device_warnings: Vec<String>,
    /// Its clock, whether its Raft core runs, its free disk space.
    pub health: crate::health::HealthView,
    /// Chain cross-check: peers whose chain differs from this node's, (peer, index).
    pub chain_disagreeing: Vec<(u64, u64)>,
    /// Chain cross-check: set when this node's chain disagrees with a majority (it is fenced).
    pub chain_fenced: Option<String>,
}

impl StatusView {
    /// The state as people read it: "Follower (vote held)" while the vote of a node that does
    /// not lead is held; "Stopped" once its Raft core stopped.
    pub fn state_text(&self) -> String {
        match self.state {
            NodeState::Stopped | NodeState::Leader => self.state.name().to_string(),
            s if self.vote_held => format!("{s} (vote held)"),
            s => s.name().to_string(),
        }
    }
}

/// The assisted-failover assessment as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistView {
    /// HEALTHY, PEER_SUSPECT, PEER_DOWN or UNCERTAIN.
    pub state: String,
    pub detail: String,
    pub destructive: bool,
    /// What a person should check before promoting (PEER_DOWN).
    pub checks: Vec<String>,
}

impl AssistView {
    pub fn of(state: &AssistState, silent_ms: u64, addr: &str) -> Self {
        let (detail, destructive, checks) = match state {
            AssistState::Healthy => ("the peer answers".to_string(), false, Vec::new()),
            AssistState::PeerSuspect => (
                format!(
                    "the peer has not answered for {} ms; nothing is committed until it returns",
                    silent_ms
                ),
                false,
                Vec::new(),
            ),
            AssistState::PeerDown(p) => (
                format!(
                    "the peer looks down and this hub reaches its independent targets: a person may \
                     promote this hub with `hearth cluster promote --addr {addr} --operator NAME \
                     --reason TEXT` after the checks"
                ),
                p.destructive,
                p.checks.clone(),
            ),
            AssistState::Uncertain { reason } => (
                format!("{reason}; hold: promoting needs --force after checking by hand"),
                false,
                Vec::new(),
            ),
        };
        Self {
            state: state.name().to_string(),
            detail,
            destructive,
            checks,
        }
    }
}

/// How a node asks a peer for its status (gRPC in production, the router in tests).
pub trait PeerProbe: Send + Sync {
    fn status<'a>(&'a self, id: u64, addr: &'a str) -> BoxFuture<'a, Option<StatusView>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: u64,
    format: u32,
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
}

/// Checks or writes the identity file. Returns whether the directory is new.
fn claim_data_dir(dir: &Path, id: u64) -> Result<bool, NodeError> {
    // 0700 and 0600 inside, also for a directory an older version made 0755.
    hearth_store::private::create_dir(dir)?;
    hearth_store::private::tighten(dir)?;
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            let ident: Identity =
                serde_json::from_slice(&b).map_err(|e| StoreError::CorruptMeta {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if ident.node_id != id {
                return Err(NodeError::WrongNode {
                    dir: dir.to_path_buf(),
                    found: ident.node_id,
                    expected: id,
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("raft").join(hearth_store::log::LOG_FILE).exists() {
                return Err(NodeError::UnknownDataDir {
                    dir: dir.to_path_buf(),
                });
            }
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            std::fs::write(
                &tmp,
                serde_json::to_vec(&Identity {
                    node_id: id,
                    format: 1,
                })
                .map_err(std::io::Error::other)?,
            )?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies the chain of a stopped node's data directory without starting or changing
/// anything in the log.
pub fn verify_data_dir(dir: &Path) -> Result<NodeVerify, NodeError> {
    let log = LogStore::open_read_only(&dir.join("raft"))?;
    let sm = StateMachine::open(&dir.join("state"))?;
    Ok(audit::verify(&log, &sm)?)
}

impl Node {
    /// Opens the data directory, verifies the chain and starts Raft, with the default device
    /// gateway. Does not form a cluster.
    pub async fn start<N>(config: NodeConfig, network: N) -> Result<Node, NodeError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network:
            openraft::network::NetSnapshot<TypeConfig, SnapshotData = std::io::Cursor<Vec<u8>>>,
    {
        let mqtt = match &config.mqtt_broker {
            Some(m) => Some(m.load().map_err(|e| NodeError::Settings(e.to_string()))?),
            None => None,
        };
        if let Some(m) = &config.mqtt_broker
            && m.username.is_none()
            && m.client_cert.is_none()
        {
            tracing::warn!(
                node = config.node_id,
                broker = %m.addr,
                "the mqtt broker is used anonymously: any host that reaches it can answer for the devices (insecure lab setup)"
            );
        }
        let devices = hearth_devices::Devices {
            mqtt,
            ..Default::default()
        };
        Self::start_with(config, network, Arc::new(devices)).await
    }

    /// [`Node::start`] with a given device gateway.
    pub async fn start_with<N>(
        config: NodeConfig,
        network: N,
        gateway: Arc<dyn hearth_devices::Gateway>,
    ) -> Result<Node, NodeError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network:
            openraft::network::NetSnapshot<TypeConfig, SnapshotData = std::io::Cursor<Vec<u8>>>,
    {
        let id = config.node_id;
        let witness = config.role == Role::Witness;
        let security = config
            .security()
            .map_err(|e| NodeError::Settings(e.to_string()))?;
        if !security.is_tls() {
            tracing::warn!(
                node = id,
                "INSECURE: insecure = true — plain-text transport and no client tokens; anyone \
                 on this network can read the traffic, join as a node and call every method"
            );
        }
        let fresh = claim_data_dir(&config.data_dir, id)?;
        let log = LogStore::open(&config.data_dir.join("raft"))?;
        let sm = crate::datadir::open_state(&config.data_dir.join("state")).await?;
        let own_checkpoint = match config.role {
            Role::Witness => None,
            _ => {
                crate::checkpoint::Checkpoints::open(id, config.role, &config.data_dir, sm.clone())?
                    .last()
                    .await
                    .map(|c| c.index)
            }
        };
        let (sm, hold) =
            crate::datadir::prepare(&config.data_dir, id, fresh, &log, sm, own_checkpoint).await?;
        let report = audit::verify(&log, &sm)?;
        if let Some(f) = report.failure {
            return Err(NodeError::ChainBroken {
                index: f.index(),
                reason: f.to_string(),
            });
        }
        let heads = crate::startcheck::check_stored_heads(id, &config.data_dir, &log, &sm)?;
        tracing::info!(node = id, role = config.role.name(), checked = report.checked,
            head = ?report.head.map(|(i, _)| i), stored_heads = heads, fresh,
            "chain verified; starting Raft");
        let checkpoints = Arc::new(crate::checkpoint::Checkpoints::open(
            id,
            config.role,
            &config.data_dir,
            sm.clone(),
        )?);
        let promoted = crate::assist::apply_pending(&config.data_dir, id, &log).await?;
        let raft_cfg = settings::raft_config(&config.timing.raft(), witness)
            .map_err(|e| NodeError::Settings(e.to_string()))?;
        let raft = HearthRaft::new(id, Arc::new(raft_cfg), network, log.clone(), sm.clone())
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        let handler = RaftHandler::new(raft.clone(), id, witness);
        if let Some(h) = hold {
            raft.runtime_config().elect(false);
            handler.set_hold(Some(h));
        }
        if witness {
            handler.set_cosigner(checkpoints.clone());
        }
        {
            // Refuse node ids removed by a forced promotion: the replicated list, and this
            // hub's own promotions (known before their entry is applied).
            let local = crate::assist::removed_locally(&config.data_dir);
            let sm = sm.clone();
            handler.set_gate(Arc::new(move |from| {
                sm.with_domain(|d| d.retired.get(&from).cloned())
                    .ok()
                    .flatten()
                    .or_else(|| local.get(&from).cloned())
            }));
        }
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::datadir::watch(
            handler.clone(),
            raft.clone(),
            sm.clone(),
            config.data_dir.clone(),
            witness,
            rx.clone(),
        )));
        let wall = crate::health::WallClock::default();
        let clock_watch = Arc::new(crate::health::ClockWatch::default());
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        if !witness && !config.assist.targets.is_empty() {
            tasks.push(tokio::spawn(crate::assist::probe_targets(
                config.assist.targets.clone(),
                targets.clone(),
                Duration::from_millis(config.timing.heartbeat_ms.max(100) * 5),
                rx.clone(),
            )));
        }
        if witness {
            // A witness never dispatches: it has no dispatcher at all.
            let cfg = CaretakerConfig {
                lease_ms: config.timing.election_min_ms,
            };
            tasks.push(tokio::spawn(hearth_cluster::caretaker::run(
                handler.clone(),
                log.clone(),
                cfg,
                Duration::from_millis(config.timing.caretaker_patience_ms),
                rx,
            )));
        } else {
            let d = crate::dispatcher::Dispatcher {
                id,
                raft: raft.clone(),
                sm: sm.clone(),
                gateway: gateway.clone(),
                wall: wall.clone(),
                clock_watch: clock_watch.clone(),
            };
            tasks.push(tokio::spawn(crate::checkpoint::schedule(
                checkpoints.clone(),
                raft.clone(),
                config.checkpoint.clone(),
                rx.clone(),
            )));
            tasks.push(tokio::spawn(d.run(rx)));
        }
        Ok(Node {
            id,
            role: config.role,
            raft,
            handler,
            log,
            sm,
            config,
            fresh,
            shutdown,
            tasks,
            targets,
            restart: watch::channel(false).0,
            promoted,
            started_ms: wall.now_ms(),
            security,
            checkpoints,
            wall,
            clock_watch,
            chain_check: Default::default(),
            gateway,
        })
        .inspect(|n| {
            // Loudly, at every start: a hub that may lead and could not reach a device.
            for w in n.device_warnings() {
                tracing::error!(node = n.id, "{w}; configure it before this hub leads");
            }
        })
    }

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

    /// The configured members as openraft nodes.
    fn initial_members(&self) -> BTreeMap<u64, Member> {
        self.config
            .members()
            .map(|(id, addr, role)| {
                (
                    id,
                    Member {
                        addr,
                        witness: role == Role::Witness,
                    },
                )
            })
            .collect()
    }

    /// Forms the cluster, exactly once, on the configured bootstrap hub. Waits until every
    /// configured peer answers and none has a log yet; refuses if any already has a cluster
    /// (this node's data was then wiped, or it is misconfigured).
    ///
    /// A node votes only once it holds a log naming it a voter, so the cluster is formed in
    /// steps: this hub alone first, then each peer added as a learner (it receives the log),
    /// then all made voters. A restart in the middle resumes the remaining steps.
    #[tracing::instrument(skip_all, fields(node = self.id))]
    pub async fn bootstrap(&self, probe: &dyn PeerProbe, retry: Duration) -> Result<(), NodeError> {
        if !self.config.bootstrap {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        if initialized {
            let alone = self.voters() == vec![self.id];
            let members = self.initial_members();
            if !alone || members.len() == 1 || !self.fresh_formation_pending() {
                return Ok(());
            }
            return self.finish_formation(members).await;
        }
        loop {
            let mut missing = Vec::new();
            for p in &self.config.peers {
                match probe.status(p.id, &p.addr).await {
                    Some(s) if s.initialized || s.last_log.is_some() => {
                        return Err(NodeError::AlreadyFormed {
                            self_id: self.id,
                            peer: p.id,
                            last_index: s.last_log.map(|(_, i)| i),
                        });
                    }
                    Some(_) => {}
                    None => missing.push(p.id),
                }
            }
            if missing.is_empty() {
                break;
            }
            tracing::info!(
                node = self.id,
                ?missing,
                "waiting for every peer to answer before forming the cluster"
            );
            tokio::time::sleep(retry).await;
        }
        let members = self.initial_members();
        let me: BTreeMap<u64, Member> = members
            .iter()
            .filter(|(id, _)| **id == self.id)
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        // This hub forms the cluster: its new data directory votes (for itself) from now on.
        crate::datadir::release(&self.handler, &self.config.data_dir, false)?;
        std::fs::write(self.config.data_dir.join(FORMING_FILE), b"")?;
        match self.raft.initialize(me).await {
            Ok(()) => tracing::info!(node = self.id, "cluster formed with this hub alone"),
            Err(RaftError::APIError(e)) => {
                tracing::info!(node = self.id, error = %e, "cluster already initialized");
                let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
                return Ok(());
            }
            Err(RaftError::Fatal(f)) => return Err(NodeError::Fatal(f.to_string())),
        }
        if members.len() == 1 {
            let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
            return Ok(());
        }
        self.finish_formation(members).await
    }

    fn fresh_formation_pending(&self) -> bool {
        self.config.data_dir.join(FORMING_FILE).exists()
    }

    /// The steps of forming after this hub leads alone: every configured peer a learner, then
    /// all voters.
    async fn finish_formation(&self, members: BTreeMap<u64, Member>) -> Result<(), NodeError> {
        let patience = Duration::from_millis(self.config.timing.write_timeout_ms.max(1000) * 20);
        let deadline = tokio::time::Instant::now() + patience;
        let fatal = |e: String| NodeError::Fatal(e);
        loop {
            // Leading is not enough: until the first membership entry is committed (the new
            // leader's blank entry commits it) openraft refuses another membership change
            // ("already undergoing a configuration change").
            let m = self.raft.metrics().borrow_watched().clone();
            let membership_committed = match m.membership_config.log_id() {
                Some(l) => m.last_applied.is_some_and(|a| a.index >= l.index),
                None => false,
            };
            if self.raft.as_leader().is_ok() && membership_committed {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(NodeError::NoQuorum(format!(
                    "node {} formed the cluster alone but did not become its leader within {} ms",
                    self.id,
                    patience.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Each step is retried until `patience` runs out: right after this hub wins, its first
        // membership is not committed yet ("already undergoing a configuration change"), and a
        // leadership blip answers with an API error that a moment later is gone.
        for (id, m) in &members {
            if *id == self.id {
                continue;
            }
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(left, self.raft.add_learner(*id, m.clone(), true)).await
                {
                    Err(_) => {
                        return Err(NodeError::NoQuorum(format!(
                            "forming the cluster: node {id} did not take the log within {} ms; is it running at {}?",
                            patience.as_millis(),
                            m.addr
                        )));
                    }
                    Ok(Err(RaftError::Fatal(f))) => return Err(fatal(f.to_string())),
                    Ok(Err(RaftError::APIError(e))) if tokio::time::Instant::now() < deadline => {
                        tracing::info!(node = self.id, learner = id, error = %e, "forming the cluster: retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(Err(RaftError::APIError(e))) => {
                        return Err(NodeError::Refused(format!(
                            "forming the cluster: adding node {id}: {e}"
                        )));
                    }
                    Ok(Ok(_)) => break,
                }
            }
        }
        let ids: std::collections::BTreeSet<u64> = members.keys().copied().collect();
        loop {
            match self.raft.change_membership(ids.clone(), false).await {
                Ok(_) => break,
                Err(RaftError::Fatal(f)) => return Err(fatal(f.to_string())),
                Err(RaftError::APIError(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(node = self.id, error = %e, "forming the cluster: retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(RaftError::APIError(e)) => {
                    return Err(NodeError::Refused(format!(
                        "forming the cluster: making every member a voter: {e}"
                    )));
                }
            }
        }
        let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
        tracing::info!(node = self.id, voters = ?self.voters(), "cluster formed");
        Ok(())
    }

    /// On a node whose data directory is new, refuses to go on if a leader reports that it
    /// already replicated entries to this node id: the directory was wiped. On any node, a
    /// leader that had replicated more to this node id than its log now holds means the log
    /// went backwards (a restored backup, lost writes): the node's vote is held until it has
    /// been caught up (`datadir`).
    pub async fn check_not_wiped(&self, probe: &dyn PeerProbe) -> Result<(), NodeError> {
        let mine = self.log.last_log_id()?.map(|l| l.index);
        for p in &self.config.peers {
            if let Some(s) = probe.status(p.id, &p.addr).await
                && s.state == NodeState::Leader
                && let Some((_, Some(m))) = s.replication.iter().find(|(n, _)| *n == self.id)
            {
                if self.fresh {
                    return Err(NodeError::Wiped {
                        self_id: self.id,
                        leader: p.id,
                        matched: *m,
                    });
                }
                if mine.is_none_or(|i| i < *m) {
                    let reason = format!(
                        "leader {} had replicated index {m} to node {}, but its Raft log ends at \
                         {}: its data went backwards (restored from an older copy, or lost writes)",
                        p.id,
                        self.id,
                        mine.map_or("no entry".to_string(), |i| format!("index {i}"))
                    );
                    tracing::error!(
                        node = self.id,
                        leader = p.id,
                        matched = *m,
                        ?mine,
                        "NODE {} WILL NOT VOTE OR LEAD until caught up: {reason}",
                        self.id
                    );
                    let floor = self.handler.hold().and_then(|h| h.floor).max(Some(*m));
                    crate::datadir::hold(
                        &self.handler,
                        &self.config.data_dir,
                        hearth_core::datadir::Hold { floor, reason },
                    )?;
                }
            }
        }
        Ok(())
    }

    pub async fn status(&self) -> StatusView {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
            .collect();
        let last_log = self
            .log
            .last_log_id()
            .ok()
            .flatten()
            .map(|l| (l.leader_id.term, l.index));
        let core_stopped = m
            .running_state
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let (disk_free_bytes, disk_warning) = crate::health::disk(&self.config.data_dir);
        let verdict = self.clock_watch.verdict();
        let health = crate::health::HealthView {
            now_ms: self.wall.now_ms(),
            clock: verdict
                .as_ref()
                .map(|v| v.name().to_string())
                .unwrap_or_default(),
            clock_detail: verdict
                .as_ref()
                .map(|v| v.reason().to_string())
                .unwrap_or_default(),
            core_stopped: core_stopped.clone(),
            disk_free_bytes,
            disk_warning,
        };
        StatusView {
            node_id: self.id,
            role: self.role,
            // A stopped core keeps its last metrics (it may still say Leader): say Stopped.
            state: if !core_stopped.is_empty() {
                NodeState::Stopped
            } else {
                NodeState::of(m.state)
            },
            // A held node says so where people look (`cluster status`): see datadir.rs.
            vote_held: self.handler.hold().is_some(),
            term: m.current_term,
            last_log,
            applied: m.last_applied.as_ref().map(|l| l.index),
            head: self.sm.head().ok().flatten(),
            leader: m.current_leader,
            members,
            replication: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            initialized: m.membership_config.log_id().is_some() || last_log.is_some(),
            millis_since_quorum_ack: m
                .last_quorum_acked
                .as_ref()
                .map(|t| t.elapsed().as_millis() as u64),
            assist: self.assist_observation().map(|(obs, state)| {
                let mut v = AssistView::of(&state, obs.peer_silent_ms, self.config.advertised());
                if matches!(
                    state,
                    AssistState::PeerDown(_) | AssistState::Uncertain { .. }
                ) {
                    for e in self.promotion_evidence(&obs) {
                        v.checks.insert(0, format!("PROMOTION REFUSED: {e}"));
                    }
                }
                v
            }),
            refused_by: hearth_cluster::notices::recent(self.id),
            started_ms: self.started_ms,
            checkpoint_key: hex::encode(self.checkpoints.public_key()),
            device_warnings: self.device_warnings(),
            health,
            chain_disagreeing: self.chain_check().disagreeing,
            chain_fenced: self.chain_check().fenced,
        }
    }

    /// Signs a checkpoint of this hub's applied head now, has the cluster's witness (if any)
    /// cosign it, and stores it; returns the last one when the head has not advanced.
    pub async fn checkpoint_now(&self) -> Result<crate::checkpoint::Made, NodeError> {
        self.serving_chain()?;
        self.checkpoints
            .checkpoint(crate::checkpoint::witness_member(&self.raft))
            .await
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

    /// The assisted-failover observation and assessment, on a hub of a cluster whose voters
    /// are exactly two hubs (this one and its peer); `None` in every other topology.
    pub fn assist_observation(&self) -> Option<(AssistObservation, AssistState)> {
        if self.role != Role::Hub {
            return None;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        if voters.len() != 2
            || !voters.contains(&self.id)
            || voters
                .iter()
                .any(|v| membership.get_node(v).is_none_or(|n| n.witness))
        {
            return None;
        }
        let peer = voters.into_iter().find(|v| *v != self.id)?;
        let acked = m
            .heartbeat
            .as_ref()
            .and_then(|h| h.get(&peer).copied().flatten())
            .map(|t| t.elapsed());
        let heard = self.handler.last_heard(peer).map(|t| t.elapsed());
        let silent = match (acked, heard) {
            (Some(a), Some(h)) => a.min(h),
            (a, h) => a.or(h).unwrap_or_else(|| self.handler.started().elapsed()),
        };
        let leading = m.state == ServerState::Leader;
        let peer_last = if leading {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&peer).copied().flatten())
                .map(|l| LogPos {
                    term: l.leader_id.term,
                    index: l.index,
                })
        } else {
            None
        };
        let obs = AssistObservation {
            peer_silent_ms: silent.as_millis() as u64,
            peer_was_leader: !leading
                && (m.current_leader == Some(peer) || self.handler.last_leader() == Some(peer)),
            peer_last,
            my_last: self.log.last_log_id().ok().flatten().map(|l| LogPos {
                term: l.leader_id.term,
                index: l.index,
            }),
            targets: self
                .targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        let cfg = AssistConfig {
            suspect_after_ms: self.config.timing.election_max_ms,
            down_after_ms: self.config.assist.down_after_ms,
        };
        let state = hearth_core::assisted::assess(cfg, &obs);
        Some((obs, state))
    }

    /// Resolves when whoever runs this node should restart it (after a forced promotion was
    /// accepted, or on request).
    pub fn restart_requested(&self) -> watch::Receiver<bool> {
        self.restart.subscribe()
    }

    /// Records an operator's act in the chain (leader only; others return `NotLeader`).
    pub async fn record_act(&self, act: &str, by: &str) -> Result<Applied, NodeError> {
        hearth_core::intent::check_id("by", by).map_err(NodeError::from)?;
        if act.is_empty() || act.len() > 500 || act.chars().any(char::is_control) {
            return Err(NodeError::Invalid {
                field: "act",
                problem: "1-500 printable characters".into(),
            });
        }
        self.propose(&DomainCommand::OperatorAct {
            act: act.to_string(),
            by: by.to_string(),
        })
        .await
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

    /// Asks whoever runs this node to restart it: a leader hands over first (on stop).
    pub fn request_restart(&self) {
        tracing::info!(node = self.id, "restart requested");
        self.restart.send_replace(true);
    }

    /// Evidence this hub holds that its peer is alive or ahead (two hubs): any of it refuses a
    /// promotion, forced or not (`hearth_core::assisted::peer_evidence`).
    pub fn promotion_evidence(
        &self,
        obs: &AssistObservation,
    ) -> Vec<hearth_core::assisted::Evidence> {
        self.promotion_evidence_with(obs, None)
    }

    fn promotion_evidence_with(
        &self,
        obs: &AssistObservation,
        peer_answered: Option<String>,
    ) -> Vec<hearth_core::assisted::Evidence> {
        let cfg = AssistConfig {
            suspect_after_ms: self.config.timing.election_max_ms,
            down_after_ms: self.config.assist.down_after_ms,
        };
        crate::assist::peer_facts(self, obs)
            .map(|mut f| {
                f.peer_answered = peer_answered;
                hearth_core::assisted::peer_evidence(cfg, &f)
            })
            .unwrap_or_default()
    }

    /// [`Node::request_promotion`] after asking the peer for its status through `probe` (the
    /// public API's `Promote` does this): a peer that answers is alive, and the promotion is
    /// refused naming what it said.
    pub async fn request_promotion_probed(
        &self,
        operator: &str,
        reason: &str,
        force: bool,
        probe: &dyn PeerProbe,
    ) -> Result<Promotion, NodeError> {
        let me = self.id;
        let peer = self
            .status()
            .await
            .members
            .into_iter()
            .find(|(id, _, voter)| *voter && *id != me);
        let answered = match peer {
            Some((id, m, _)) => {
                tokio::time::timeout(Duration::from_millis(1500), probe.status(id, &m.addr))
                    .await
                    .ok()
                    .flatten()
                    .map(|s| {
                        let voters: Vec<u64> = s
                            .members
                            .iter()
                            .filter(|(_, _, v)| *v)
                            .map(|(id, _, _)| *id)
                            .collect();
                        format!(
                            "{} in term {}, voters {voters:?}{}",
                            s.state_text(),
                            s.term,
                            if voters == [id] {
                                ": it was promoted to a one-node cluster"
                            } else {
                                ""
                            }
                        )
                    })
            }
            None => None,
        };
        self.promotion_gate(operator, reason, force, answered)
    }

    /// Accepts a forced promotion of this hub (two hubs, no witness): checks the gate, writes
    /// the pending promotion durably and asks for a restart, which writes it into the log
    /// (see `assist`). The caller sees the promotion entry once the hub leads alone.
    #[tracing::instrument(skip(self, reason), fields(node = self.id))]
    pub fn request_promotion(
        &self,
        operator: &str,
        reason: &str,
        force: bool,
    ) -> Result<Promotion, NodeError> {
        self.promotion_gate(operator, reason, force, None)
    }

    fn promotion_gate(
        &self,
        operator: &str,
        reason: &str,
        force: bool,
        peer_answered: Option<String>,
    ) -> Result<Promotion, NodeError> {
        hearth_core::intent::check_id("operator", operator).map_err(NodeError::from)?;
        if reason.trim().is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
            return Err(NodeError::Invalid {
                field: "reason",
                problem: "say why in 1-500 printable characters".into(),
            });
        }
        if self.role != Role::Hub {
            return Err(NodeError::Refused("only a hub can be promoted".into()));
        }
        let Some((obs, state)) = self.assist_observation() else {
            let voters = self.voters();
            return Err(NodeError::Refused(format!(
                "promotion is for a cluster of exactly two hubs without a witness; this cluster's \
                 voters are {voters:?}. With a witness (three voters) the cluster fails over by \
                 itself; a single hub is already alone"
            )));
        };
        let evidence = self.promotion_evidence_with(&obs, peer_answered);
        hearth_core::assisted::may_promote_given(&state, force, &evidence).map_err(|r| {
            tracing::warn!(node = self.id, operator, force, "promotion refused: {r}");
            NodeError::Refused(r.to_string())
        })?;
        let removed: Vec<u64> = self
            .voters()
            .into_iter()
            .filter(|v| *v != self.id)
            .collect();
        let last = obs.my_last.map(|l| (l.term, l.index));
        let last_hash = match last {
            Some((_, i)) => crate::assist::hash_through(&self.log, &self.sm, i)?.map(hex::encode),
            None => None,
        };
        let destructive = match &state {
            AssistState::PeerDown(p) => p.destructive,
            // Forced from elsewhere: nothing is known about the peer's log.
            _ => true,
        };
        let promotion = Promotion {
            node: self.id,
            removed,
            operator: operator.to_string(),
            reason: reason.to_string(),
            assessed: state.name().to_string(),
            forced: force,
            destructive,
            last,
            last_hash,
            at_ms: self.clock().now_ms,
        };
        crate::assist::write_pending(
            &self.config.data_dir,
            &crate::assist::Pending {
                promotion: promotion.clone(),
                addr: self.config.advertised().to_string(),
            },
        )?;
        tracing::warn!(
            node = self.id,
            operator,
            reason,
            assessed = state.name(),
            force,
            destructive,
            "forced promotion accepted; restarting to write it"
        );
        self.request_restart();
        Ok(promotion)
    }

    /// Which peers the leader heard from within the election timeout (leader only):
    /// (answering, not answering).
    pub fn reachable_peers(&self) -> (Vec<u64>, Vec<u64>) {
        let m = self.raft.metrics().borrow_watched().clone();
        let limit = Duration::from_millis(self.config.timing.election_max_ms);
        let mut ok = Vec::new();
        let mut lost = Vec::new();
        for (id, at) in m.heartbeat.iter().flatten() {
            if *id == self.id {
                continue;
            }
            match at {
                Some(t) if t.elapsed() <= limit => ok.push(*id),
                _ => lost.push(*id),
            }
        }
        (ok, lost)
    }

    fn no_quorum(&self, why: &str) -> NodeError {
        let (ok, lost) = self.reachable_peers();
        let refused: String = hearth_cluster::notices::recent(self.id)
            .into_iter()
            .map(|(_, m)| format!(" {m}."))
            .collect();
        let m = self.raft.metrics().borrow_watched().clone();
        let silent = self.handler.last_leader_contact().elapsed();
        let silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX);
        let leaderless = m.current_leader.is_none() || why.contains("has not heard");
        // A peer that refuses this node for good is no ordinary election: say so instead.
        if leaderless
            && refused.is_empty()
            && let hearth_core::election::Leaderless::Electing { retry_ms } =
                hearth_core::election::leaderless(
                    silent_ms,
                    self.config.timing.election_max_ms,
                    m.state == openraft::ServerState::Candidate,
                )
        {
            // An ordinary election (a leader stopped or handed over): retryable, say when.
            return NodeError::NoQuorum(format!(
                "electing a leader, retry in {retry_ms} ms: node {} {why} (no leader for \
                 {silent_ms} ms; an election normally ends within a few seconds). Nothing was \
                 executed",
                self.id
            ));
        }
        NodeError::NoQuorum(format!(
            "node {} {why}; peers answering: {ok:?}, peers not answering: {lost:?}.{refused} \
             Nothing was executed; retry when a majority of nodes can reach each other",
            self.id
        ))
    }

    /// Where to forward a request: the leader, unless this follower has not heard from it for
    /// longer than an election timeout (it is cut off, or the leader is gone and an election
    /// is under way): then `NO_QUORUM` at once instead of a forward that would hang.
    fn to_leader(&self, leader: u64, addr: String) -> NodeError {
        let silent = self.handler.last_leader_contact().elapsed();
        if silent > Duration::from_millis(self.config.timing.election_max_ms) {
            return self.no_quorum(&format!(
                "has not heard from its leader (node {leader}) for {} ms",
                silent.as_millis()
            ));
        }
        NodeError::NotLeader {
            self_id: self.id,
            leader,
            addr,
        }
    }

    /// The write was appended here but no quorum confirmed it in time: its fate is open until
    /// the cluster heals (a later leader either commits it or replaces it). Say so.
    fn not_confirmed(&self, timeout: Duration) -> NodeError {
        let (ok, lost) = self.reachable_peers();
        NodeError::NoQuorum(format!(
            "node {} appended the request but no quorum confirmed it within {} ms; peers \
             answering: {ok:?}, peers not answering: {lost:?}. Nothing has been executed yet; \
             it runs only if the cluster commits it when a majority is back. Retry with the same \
             idempotency key to learn its fate: a retry never runs it twice",
            self.id,
            timeout.as_millis()
        ))
    }

    /// Appends an operator's test record through Raft and waits for it to be committed and
    /// applied. Only the leader can; others return [`NodeError::NotLeader`] for forwarding.
    pub async fn append_test_record(&self, text: &str) -> Result<Applied, NodeError> {
        if text.len() > MAX_TEST_RECORD {
            return Err(NodeError::Invalid {
                field: "text",
                problem: format!(
                    "{} bytes; at most {MAX_TEST_RECORD} are accepted",
                    text.len()
                ),
            });
        }
        self.propose(&DomainCommand::TestRecord {
            text: text.to_string(),
        })
        .await
    }

    /// Proposes a command and waits until it is committed and applied here (the leader).
    /// Returns [`NodeError::NotLeader`] on a follower, `NO_QUORUM` when no quorum commits it
    /// within the write timeout. The witness never proposes.
    #[tracing::instrument(level = "debug", skip_all, fields(node = self.id, term = tracing::field::Empty, index = tracing::field::Empty))]
    pub async fn propose(&self, cmd: &DomainCommand) -> Result<Applied, NodeError> {
        if self.role == Role::Witness
            && self.raft.metrics().borrow_watched().state == ServerState::Leader
        {
            return Err(NodeError::WitnessCaretaker);
        }
        self.require_quorum_contact().await?;
        let timeout = Duration::from_millis(self.config.timing.write_timeout_ms);
        let res =
            tokio::time::timeout(timeout, self.raft.client_write(Command(cmd.encode()))).await;
        match res {
            Err(_) => Err(self.not_confirmed(timeout)),
            Ok(Ok(r)) => {
                let span = tracing::Span::current();
                span.record("term", r.log_id.leader_id.term);
                span.record("index", r.data.index);
                tracing::debug!("committed");
                Ok(r.data)
            }
            Ok(Err(RaftError::Fatal(f))) => Err(NodeError::Fatal(f.to_string())),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(l), Some(n)) if l != self.id => Err(self.to_leader(l, n.addr)),
                    _ => {
                        Err(self.no_quorum("has no leader it can reach (its leader lease expired)"))
                    }
                }
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(NodeError::Discarded)
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::Fatal(e.to_string())),
        }
    }

    /// On a leader: refuses, before anything is appended, when no quorum has answered within
    /// the leader lease and none answers a fresh heartbeat round at once. Without this an
    /// isolated leader would append the command, time out, and commit it later when its peers
    /// return, long after the client was told it failed.
    async fn require_quorum_contact(&self) -> Result<(), NodeError> {
        if self.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Ok(()); // client_write answers ForwardToLeader
        }
        let wait = Duration::from_millis(self.config.timing.heartbeat_ms * 2);
        let opt = LinearizerOption::from(ReadPolicy::LeaseRead).with_wait_timeout(wait);
        match tokio::time::timeout(wait * 2, self.raft.ensure_linearizable(opt)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::Fatal(f))) => Err(NodeError::Fatal(f.to_string())),
            // Leadership moved: let client_write report where to.
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => Ok(()),
            Ok(Err(RaftError::APIError(_))) | Err(_) => Err(self.no_quorum(
                "leads but no quorum has answered it within the leader lease; nothing was appended",
            )),
        }
    }

    /// Hands leadership to the most up-to-date other hub before this node stops, so a planned
    /// restart costs a hand-over instead of an election timeout. Waits at most `limit`.
    pub async fn hand_over_leadership(&self, limit: Duration) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let members = m.membership_config.membership().clone();
        let (answering, _) = self.reachable_peers();
        let best = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| {
                **id != self.id
                    && answering.contains(id)
                    && members.voter_ids().any(|v| v == **id)
                    && members.get_node(id).is_some_and(|n| !n.witness)
            })
            .max_by_key(|(_, l)| l.as_ref().map(|l| l.index))
            .map(|(id, _)| *id);
        let Some(to) = best else {
            tracing::info!(
                node = self.id,
                "stopping as leader: no other hub to hand over to"
            );
            return;
        };
        tracing::info!(node = self.id, to, "stopping: handing leadership over");
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(node = self.id, error = %e, "leadership hand-over failed");
            return;
        }
        let mut rx = self.raft.metrics();
        let gone = async {
            loop {
                if rx
                    .borrow_watched()
                    .current_leader
                    .is_some_and(|l| l != self.id)
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(limit, gone).await.is_err() {
            tracing::warn!(
                node = self.id,
                to,
                "leadership not handed over in time; stopping anyway"
            );
        }
    }

    /// Proposes a command whose refusal is a client error.
    async fn propose_checked(&self, cmd: &DomainCommand) -> Result<Applied, NodeError> {
        let a = self.propose(cmd).await?;
        if let Some(Outcome::Refused { reason }) = &a.outcome {
            return Err(NodeError::Refused(reason.clone()));
        }
        Ok(a)
    }

    /// The time the leader fixes for planning: its wall clock but never before the chain's
    /// time (time in the chain never runs backwards), and the minute of the day (UTC until
    /// Hearth has a time-zone setting).
    fn clock(&self) -> Clock {
        let chain = self.chain_ms();
        let now_ms = hearth_core::clock::stamp(self.wall.now_ms(), chain);
        Clock {
            now_ms,
            minute_of_day: hearth_core::clock::minute_of_day(now_ms),
        }
    }

    /// Why this hub could not drive a device reached through `adapter`, if it could not.
    fn unreachable_adapter(&self, adapter: &Adapter) -> Option<String> {
        match adapter {
            Adapter::Mqtt { .. } if self.config.mqtt_broker.is_none() => Some(format!(
                "mqtt: node {} has no mqtt_broker in its config, so it cannot reach this device \
                 while it leads",
                self.id
            )),
            _ => None,
        }
    }

    /// Registered devices this hub could not drive if it led (a hub that may lead one day
    /// says so in its status, loudly).
    pub fn device_warnings(&self) -> Vec<String> {
        if self.role == Role::Witness {
            return Vec::new();
        }
        let devices = self
            .sm
            .with_domain(|d| d.devices.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        devices
            .iter()
            .filter_map(|d| {
                self.unreachable_adapter(&d.adapter)
                    .map(|why| format!("device {}: {why}", d.id))
            })
            .collect()
    }

    /// Registers a device. The leader that registers it refuses an adapter it has not
    /// configured (an mqtt device without `mqtt_broker`): it would fail only when an
    /// emergency needs it. Other hubs lead later only if configured alike; one that is not
    /// names the device in its status (`device_warnings`).
    /// The largest clock offset to a peer the last clock check measured (ms, absolute).
    pub fn clock_offset_max_ms(&self) -> u64 {
        self.clock_watch.max_offset_ms()
    }

    /// The chain's time: the latest time an applied entry was planned at.
    pub fn chain_ms(&self) -> u64 {
        self.sm.with_domain(|d| d.rates.chain_ms).unwrap_or(0)
    }

    /// This node's wall clock (tests skew it through [`crate::health::WallClock::set_skew_ms`]).
    pub fn wall(&self) -> &crate::health::WallClock {
        &self.wall
    }

    /// The time to stamp into a new entry, on the leader: refused while this hub's clock is
    /// judged wrong (a hub whose clock is far off never stamps). On a follower the request is
    /// forwarded and the leader stamps.
    fn stamp(&self) -> Result<Clock, NodeError> {
        if self.clock_watch.is_off()
            && self.raft.metrics().borrow_watched().state == ServerState::Leader
        {
            let why = self
                .clock_watch
                .verdict()
                .map(|v| v.reason().to_string())
                .unwrap_or_default();
            return Err(NodeError::Refused(format!(
                "CLOCK_OFF: node {}'s clock is wrong, so it stamps nothing and hands leadership over: {why}. Retry in a few seconds (another hub leads then), and fix this hub's time (NTP, RTC)",
                self.id
            )));
        }
        Ok(self.clock())
    }

    pub async fn register_device(&self, device: Device) -> Result<Applied, NodeError> {
        device.validate_request().map_err(NodeError::from)?;
        let leads = self.raft.metrics().borrow_watched().current_leader == Some(self.id);
        if leads && let Some(why) = self.unreachable_adapter(&device.adapter) {
            return Err(NodeError::from(hearth_core::intent::FieldError::new(
                "adapter.kind",
                format!(
                    "{why} (it is the leader registering it); a device Hearth cannot reach \
                     fails only when an emergency needs it: add mqtt_broker to every hub's \
                     config (any hub may lead), restart them, then register again"
                ),
            )));
        }
        let by = crate::auth::current_name();
        self.propose_checked(&DomainCommand::RegisterDevice { device, by })
            .await
    }

    pub async fn apply_class(&self, class: IntentClass) -> Result<Applied, NodeError> {
        class.validate().map_err(NodeError::from)?;
        let by = crate::auth::current_name();
        self.propose_checked(&DomainCommand::ApplyClass { class, by })
            .await
    }

    /// Replaces the policy set. Refused with the field named: a malformed policy, a duplicate
    /// id, and (checked here on the leader, against its registry) a device, class or tag that
    /// does not exist; with `expect`, a set in force other than the one the client diffed.
    pub async fn apply_policies(
        &self,
        policies: Vec<Policy>,
        expect: Option<&str>,
    ) -> Result<Applied, NodeError> {
        hearth_core::policy::validate_set(&policies).map_err(NodeError::from)?;
        if self.is_leader() {
            self.check_policy_refs(&policies)?;
            if let Some(want) = expect {
                let now = self.sm.with_domain(|d| policies_sha256(&d.policies))?;
                if now != want {
                    return Err(NodeError::Refused(
                        "the policies in force changed since the diff was shown; run the command again to see the new diff".into(),
                    ));
                }
            }
        }
        let by = crate::auth::current_name();
        self.propose_checked(&DomainCommand::ApplyPolicies { policies, by })
            .await
    }

    /// Adds one policy (refused if its id is taken), checked like [`Node::apply_policies`].
    pub async fn add_policy(&self, policy: Policy) -> Result<Applied, NodeError> {
        hearth_core::policy::validate_set(std::slice::from_ref(&policy))
            .map_err(NodeError::from)?;
        if self.is_leader() {
            if self
                .sm
                .with_domain(|d| d.policies.iter().any(|p| p.id == policy.id))?
            {
                return Err(NodeError::Invalid {
                    field: "policies[0].id",
                    problem: format!(
                        "a policy {:?} exists; remove it first (`hearth policy remove {}`)",
                        policy.id, policy.id
                    ),
                });
            }
            self.check_policy_refs(std::slice::from_ref(&policy))?;
        }
        let by = crate::auth::current_name();
        self.propose_checked(&DomainCommand::AddPolicy { policy, by })
            .await
    }

    /// Removes one policy by id (refused if there is none).
    pub async fn remove_policy(&self, id: &str) -> Result<Applied, NodeError> {
        hearth_core::intent::check_id("id", id).map_err(NodeError::from)?;
        let by = crate::auth::current_name();
        self.propose_checked(&DomainCommand::RemovePolicy {
            id: id.to_string(),
            by,
        })
        .await
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    fn check_policy_refs(&self, policies: &[Policy]) -> Result<(), NodeError> {
        self.sm
            .with_domain(|d| {
                hearth_core::policy::check_references(policies, &d.devices, &d.classes)
            })?
            .map_err(NodeError::from)
    }

    /// The plan an intent would get now, executing nothing and appending nothing.
    pub fn explain(&self, intent: &Intent) -> Result<Plan, NodeError> {
        intent.validate_request().map_err(NodeError::from)?;
        // Read the clock first: it reads the domain state too (no nested lock).
        let clock = self.clock();
        self.sm
            .with_domain(|d| d.plan(intent, clock))?
            .map_err(NodeError::from)
    }

    /// Submits an intent. A retry with the same key and body returns the original intent and
    /// runs nothing again; the same key with another body is refused. Bad requests (unknown
    /// class, malformed fields, oversized context) are refused before anything is appended.
    #[tracing::instrument(skip_all, fields(node = self.id, intent = tracing::field::Empty))]
    pub async fn submit_intent(&self, intent: Intent) -> Result<IntentRecord, NodeError> {
        intent.validate_request().map_err(NodeError::from)?;
        // Keys are scoped to the source (an agent's is its token name): another source's key
        // neither collides with this one nor reveals its intent.
        let key_scope = Some(intent.source.clone());
        let id =
            hearth_core::domain::scoped_intent_id(key_scope.as_deref(), &intent.idempotency_key);
        tracing::Span::current().record("intent", id.as_str());
        let hash = hearth_core::domain::body_hash(&intent);
        let known = self
            .sm
            .with_domain(|d| d.existing_for_key(&intent, key_scope.as_deref()).cloned())?;
        match known {
            Some(r) if r.body_hash == hash => return Ok(r),
            Some(r) => return Err(NodeError::KeyConflict(r.id)),
            None => {}
        }
        // Only the leader plans: a follower's state may lag (a device registered a moment ago
        // is not yet applied here), so it would refuse what the leader accepts.
        self.require_leader()?;
        let clock = self.stamp()?;
        let emergency_limit = Some(self.config.limits.emergency_limit());
        if let Some(why) = self
            .sm
            .with_domain(|d| d.emergency_limited(&intent, clock.now_ms, emergency_limit))?
        {
            return Err(NodeError::Refused(why));
        }
        let class_deadline = self.sm.with_domain(|d| {
            d.plan(&intent, clock)
                .map(|_| d.classes.get(&intent.class).and_then(|c| c.deadline_ms))
        })?;
        let class_deadline = class_deadline.map_err(NodeError::from)?;
        // At most what the client is told: after the write timeout it hears "not confirmed".
        let wait = self.config.timing.write_timeout_ms;
        let deadline_ms = hearth_core::clock::deadline(class_deadline, wait, wait);
        let a = self
            .propose(&DomainCommand::SubmitIntent {
                intent,
                at_ms: clock.now_ms,
                minute_of_day: clock.minute_of_day,
                deadline_ms: Some(deadline_ms),
                key_scope,
                emergency_limit,
            })
            .await?;
        let id = match a.outcome {
            Some(Outcome::Accepted { intent_id }) | Some(Outcome::Duplicate { intent_id }) => {
                intent_id
            }
            Some(Outcome::KeyConflict { intent_id }) => {
                return Err(NodeError::KeyConflict(intent_id));
            }
            Some(Outcome::Refused { reason }) => return Err(NodeError::Refused(reason)),
            other => return Err(NodeError::Fatal(format!("unexpected outcome {other:?}"))),
        };
        self.get_intent(&id)?
            .ok_or_else(|| NodeError::Fatal(format!("intent {id} vanished after commit")))
    }

    pub fn get_intent(&self, id: &str) -> Result<Option<IntentRecord>, NodeError> {
        self.serving_chain()?;
        Ok(self.sm.with_domain(|d| d.intents.get(id).cloned())?)
    }

    pub async fn approve(&self, intent_id: &str, by: &str) -> Result<IntentRecord, NodeError> {
        hearth_core::domain::check_intent_id("id", intent_id).map_err(NodeError::from)?;
        hearth_core::intent::check_id("by", by).map_err(NodeError::from)?;
        // On the leader, whose applied state is current, refuse what apply would refuse
        // without appending anything. (A follower forwards; the leader checks again.)
        if self.raft.metrics().borrow_watched().state == ServerState::Leader {
            match self.get_intent(intent_id)? {
                None => return Err(NodeError::Refused(format!("no intent {intent_id}"))),
                Some(r) if !r.awaits_approval() => {
                    return Err(NodeError::Refused(format!(
                        "intent {intent_id} does not wait for approval (it is {:?})",
                        r.status
                    )));
                }
                Some(_) => {}
            }
        }
        let at_ms = self.stamp()?.now_ms;
        self.propose_checked(&DomainCommand::Approve {
            intent_id: intent_id.to_string(),
            by: crate::auth::actor(by),
            at_ms: Some(at_ms),
        })
        .await?;
        self.get_intent(intent_id)?
            .ok_or_else(|| NodeError::Fatal(format!("intent {intent_id} vanished after commit")))
    }

    /// Re-fences devices after the cluster was re-formed (an admin's audited act): appends a
    /// `Refence` entry naming who and why; the dispatcher then sends each device a
    /// `hearth.refence` command under the current leadership, which makes a device that
    /// remembers an older cluster's higher token accept this cluster's commands again.
    /// `devices` empty and `all`: every registered device.
    pub async fn refence(
        &self,
        devices: Vec<String>,
        all: bool,
        reason: &str,
    ) -> Result<IntentRecord, NodeError> {
        if reason.trim().is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
            return Err(NodeError::Invalid {
                field: "reason",
                problem: "say why in 1-500 printable characters".into(),
            });
        }
        let known: Vec<String> = self
            .sm
            .with_domain(|d| d.devices.keys().cloned().collect())?;
        let devices = match (all, devices.is_empty()) {
            (true, true) => known.clone(),
            (false, false) => devices,
            (true, false) => {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: "name devices or say --all, not both".into(),
                });
            }
            (false, true) => {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: "name the devices to re-fence, or --all".into(),
                });
            }
        };
        if devices.is_empty() {
            return Err(NodeError::Refused("no device is registered".into()));
        }
        for d in &devices {
            hearth_core::intent::check_id("devices", d).map_err(NodeError::from)?;
            if !known.contains(d) {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: format!("no device {d:?} is registered"),
                });
            }
        }
        let by = crate::auth::current_name().unwrap_or_else(|| "operator".to_string());
        let at_ms = self.stamp()?.now_ms;
        let a = self
            .propose_checked(&DomainCommand::Refence {
                devices,
                by,
                reason: reason.to_string(),
                at_ms,
            })
            .await?;
        let id = hearth_core::domain::DomainState::refence_id(a.index);
        self.get_intent(&id)?
            .ok_or_else(|| NodeError::Fatal(format!("re-fence record {id} missing after commit")))
    }

    /// Probes every peer once, measures its clock against this node's and judges this hub's
    /// clock (`hearth_core::clock::judge`). A hub judged `OFF` stops campaigning and hands
    /// leadership over; judged right again, it campaigns again. Returns the verdict.
    pub async fn check_clock(&self, probe: &dyn PeerProbe) -> hearth_core::clock::Verdict {
        let mut samples = Vec::new();
        for p in &self.config.peers {
            let sent_ms = self.wall.now_ms();
            if let Some(s) = probe.status(p.id, &p.addr).await
                && s.health.now_ms > 0
            {
                samples.push(hearth_core::clock::Sample {
                    peer: p.id,
                    sent_ms,
                    recv_ms: self.wall.now_ms(),
                    peer_ms: s.health.now_ms,
                });
            }
        }
        let verdict = hearth_core::clock::judge(
            self.wall.now_ms(),
            self.chain_ms(),
            &samples,
            hearth_core::clock::DEFAULT_TOLERANCE_MS,
        );
        let before = self.clock_watch.set(verdict.clone(), samples);
        if self.role == Role::Hub {
            let changed = before.as_ref().map(|b| b.name()) != Some(verdict.name());
            if verdict.is_off() {
                if changed {
                    tracing::error!(
                        node = self.id,
                        reason = verdict.reason(),
                        "CLOCK_OFF: this hub's clock is wrong; it stops campaigning, hands leadership over and stamps nothing until its clock is right"
                    );
                }
                self.raft.runtime_config().elect(false);
                self.hand_over_leadership(Duration::from_millis(
                    self.config.timing.election_max_ms * 2,
                ))
                .await;
            } else {
                if changed && before.as_ref().is_some_and(|b| b.is_off()) {
                    tracing::info!(
                        node = self.id,
                        "this hub's clock is right again; it campaigns again"
                    );
                }
                if changed && let hearth_core::clock::Verdict::Unsure { reason } = &verdict {
                    tracing::warn!(node = self.id, %reason, "clock offset to a peer");
                }
                // A node whose vote is held (datadir.rs) stays out of elections until the
                // cluster has caught it up, whatever its clock says.
                self.raft
                    .runtime_config()
                    .elect(self.handler.hold().is_none());
            }
        }
        verdict
    }

    /// Runs [`Node::check_clock`] every `every` until the node shuts down. Holds the node only
    /// while a round runs.
    pub fn spawn_clock_watch(
        self: &Arc<Self>,
        probe: Arc<dyn PeerProbe>,
        every: Duration,
    ) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut stop = self.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(n) => {
                        n.check_clock(probe.as_ref()).await;
                    }
                    None => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
        })
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

    /// Routes a management call: only the leader performs it.
    fn require_leader(&self) -> Result<(), NodeError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            if self.role == Role::Witness {
                return Err(NodeError::WitnessCaretaker);
            }
            return Ok(());
        }
        match m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| (l, n.addr.clone()))
        }) {
            Some((leader, addr)) if leader != self.id => Err(self.to_leader(leader, addr)),
            _ => Err(self.no_quorum("knows no leader")),
        }
    }

    fn membership_result(
        &self,
        r: Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
        >,
    ) -> Result<(u64, Vec<u64>), NodeError> {
        match r {
            Ok(resp) => {
                let voters = resp
                    .membership
                    .as_ref()
                    .map(|m| m.voter_ids().collect())
                    .unwrap_or_default();
                Ok((resp.log_id.index, voters))
            }
            Err(RaftError::Fatal(f)) => Err(NodeError::Fatal(f.to_string())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.no_quorum("lost leadership during the change"))
            }
            Err(RaftError::APIError(e)) => Err(NodeError::Invalid {
                field: "membership",
                problem: e.to_string(),
            }),
        }
    }

    /// Runs a membership change with the write timeout: without a quorum it would wait forever.
    async fn bounded<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, NodeError> {
        let timeout = Duration::from_millis(self.config.timing.write_timeout_ms);
        tokio::time::timeout(timeout, f).await.map_err(|_| {
            self.no_quorum(&format!(
                "could not commit the membership change within {} ms",
                timeout.as_millis()
            ))
        })
    }

    /// Adds node `id` (never used before) as a learner, waits until it has caught up, then
    /// makes it a voter. Both steps are membership entries in the chain.
    #[tracing::instrument(skip(self), fields(node = self.id))]
    pub async fn add_member(
        &self,
        id: u64,
        addr: &str,
        role: Role,
    ) -> Result<(u64, Vec<u64>), NodeError> {
        self.require_leader()?;
        if id == 0 {
            return Err(NodeError::Invalid {
                field: "id",
                problem: "0 is reserved".into(),
            });
        }
        if audit::ids_ever_used(&self.log)?.contains(&id) {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!(
                    "node id {id} was already used in this cluster; ids are never reused (a reused id can vote twice). Pick a new id"
                ),
            });
        }
        crate::config::check_addr("addr", addr).map_err(|e| NodeError::Invalid {
            field: "addr",
            problem: e.to_string(),
        })?;
        let member = Member {
            addr: addr.to_string(),
            witness: role == Role::Witness,
        };
        let catch_up = Duration::from_millis(self.config.timing.write_timeout_ms * 12);
        match tokio::time::timeout(catch_up, self.raft.add_learner(id, member, true)).await {
            Err(_) => {
                return Err(NodeError::NoQuorum(format!(
                    "node {id} was added as a learner but did not catch up within {} ms; is it running at {addr}?",
                    catch_up.as_millis()
                )));
            }
            Ok(r) => {
                self.membership_result(r)?;
            }
        }
        // openraft's blocking add_learner can return before the learner holds anything (seen
        // with a node whose TLS certificate the leader refuses: it became a voter without a
        // single entry). A voter must first hold the log up to the learner's own entry.
        let target = self
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0);
        let caught_up = self
            .raft
            .wait(Some(catch_up))
            .metrics(
                move |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .is_some_and(|l| l.index >= target)
                },
                "learner caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(NodeError::NoQuorum(format!(
                "node {id} was added as a learner but holds nothing after {} ms, so it was not made \
                 a voter; is it running at {addr}, and does it have a certificate from this \
                 cluster's CA? (`hearth cluster remove --id {id}` removes the learner)",
                catch_up.as_millis()
            )));
        }
        let change = self
            .raft
            .change_membership(openraft::ChangeMembers::AddVoterIds([id].into()), false);
        self.membership_result(self.bounded(change).await?)
    }

    /// Removes voter `id`. Refused for the leader itself and when the remaining voters that
    /// answer now would not form a quorum.
    #[tracing::instrument(skip(self), fields(node = self.id))]
    pub async fn remove_member(&self, id: u64) -> Result<(u64, Vec<u64>), NodeError> {
        self.require_leader()?;
        if id == self.id {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!(
                    "node {id} is the leader; stop it (another hub takes over) or remove it from another leader"
                ),
            });
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        if !voters.contains(&id) {
            if membership.get_node(&id).is_some() {
                // A learner (one that never caught up, say): it does not vote, so removing it
                // cannot cost the quorum.
                let change = self
                    .raft
                    .change_membership(openraft::ChangeMembers::RemoveNodes([id].into()), false);
                return self.membership_result(self.bounded(change).await?);
            }
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!("node {id} is not a member (voters: {voters:?})"),
            });
        }
        let rest: Vec<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if !rest
            .iter()
            .any(|v| membership.get_node(v).is_some_and(|n| !n.witness))
        {
            return Err(NodeError::Invalid {
                field: "id",
                problem: "the remaining voters would include no hub".into(),
            });
        }
        let (answering, _) = self.reachable_peers();
        let alive = rest
            .iter()
            .filter(|v| **v == self.id || answering.contains(v))
            .count();
        if alive * 2 <= rest.len() {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!(
                    "after removing node {id}, only {alive} of the remaining {} voters answer: that is no quorum",
                    rest.len()
                ),
            });
        }
        let change = self
            .raft
            .change_membership(openraft::ChangeMembers::RemoveVoters([id].into()), false);
        self.membership_result(self.bounded(change).await?)
    }

    /// Replaces voter `old` (typically dead) by a new node under a never-used id: the new
    /// one is added (learner, then voter) before the old one is removed, so the cluster never
    /// has fewer voters than before. Each step is a membership entry in the chain.
    #[tracing::instrument(skip(self), fields(node = self.id))]
    pub async fn replace_member(
        &self,
        old: u64,
        new: u64,
        addr: &str,
        role: Role,
    ) -> Result<(u64, Vec<u64>), NodeError> {
        self.require_leader()?;
        if old == self.id {
            return Err(NodeError::Invalid {
                field: "old_id",
                problem: format!(
                    "node {old} is the leader; hand leadership over first (`hearth cluster transfer`)"
                ),
            });
        }
        let voters = self.voters();
        if !voters.contains(&old) {
            return Err(NodeError::Invalid {
                field: "old_id",
                problem: format!("node {old} is not a voter (voters: {voters:?})"),
            });
        }
        self.add_member(new, addr, role).await?;
        self.remove_member(old).await
    }

    /// Hands leadership to voter hub `to` and waits until it leads. Returns (leader, term).
    #[tracing::instrument(skip(self), fields(node = self.id))]
    pub async fn transfer_leadership(&self, to: u64) -> Result<(u64, u64), NodeError> {
        self.require_leader()?;
        let m = self.raft.metrics().borrow_watched().clone();
        if to == self.id {
            return Ok((self.id, m.current_term));
        }
        let membership = m.membership_config.membership();
        match membership.get_node(&to) {
            None => {
                return Err(NodeError::Invalid {
                    field: "to",
                    problem: format!("node {to} is not a member"),
                });
            }
            Some(n) if n.witness => {
                return Err(NodeError::Invalid {
                    field: "to",
                    problem: format!(
                        "node {to} is a witness; it never leads by hand-over, only as a caretaker"
                    ),
                });
            }
            Some(_) if !membership.voter_ids().any(|v| v == to) => {
                return Err(NodeError::Invalid {
                    field: "to",
                    problem: format!("node {to} is a learner, not a voter"),
                });
            }
            Some(_) => {}
        }
        let (answering, _) = self.reachable_peers();
        if !answering.contains(&to) {
            return Err(NodeError::Invalid {
                field: "to",
                problem: format!("node {to} has not answered the leader recently"),
            });
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                let m = rx.borrow_watched().clone();
                if m.current_leader == Some(to) {
                    return m.current_term;
                }
                if rx.changed().await.is_err() {
                    return 0;
                }
            }
        };
        let limit = Duration::from_millis(self.config.timing.election_max_ms * 2);
        match tokio::time::timeout(limit, wait).await {
            Ok(term) if term > 0 => Ok((to, term)),
            _ => Err(self.no_quorum(&format!(
                "handed leadership to node {to}, which did not take it within {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// Verifies this node's chain.
    pub fn verify(&self) -> Result<NodeVerify, NodeError> {
        self.serving_chain()?;
        Ok(audit::verify(&self.log, &self.sm)?)
    }

    /// The last `n` applied links.
    pub fn tail(&self, n: u64) -> Result<Vec<Link>, NodeError> {
        self.serving_chain()?;
        let Some((last, _)) = self.sm.head()? else {
            return Ok(Vec::new());
        };
        let first_available = audit::start_point(&self.log, &self.sm)?
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        let from = last
            .saturating_sub(n.saturating_sub(1))
            .max(first_available);
        Ok(audit::links(&self.log, &self.sm, from, last)?)
    }

    /// This node's applied chain as export lines (docs/AUDIT-FORMAT.md).
    pub fn export_lines(&self) -> Result<Vec<String>, NodeError> {
        self.serving_chain()?;
        let anchor = audit::start_point(&self.log, &self.sm)?;
        let mut out = vec![
            serde_json::to_string(&hearth_core::export::ExportHeader::new(self.id, anchor))
                .map_err(std::io::Error::other)?,
        ];
        if let Some((last, _)) = self.sm.head()? {
            let from = anchor.map(|(i, _)| i + 1).unwrap_or(0);
            for l in audit::links(&self.log, &self.sm, from, last)? {
                out.push(
                    serde_json::to_string(&hearth_core::export::ExportLine::new(
                        &l.record, &l.hash,
                    ))
                    .map_err(std::io::Error::other)?,
                );
            }
        }
        Ok(out)
    }

    /// Applied links `from..=to`, for tests and cross-checks.
    pub fn links(&self, from: u64, to: u64) -> Result<Vec<Link>, NodeError> {
        Ok(audit::links(&self.log, &self.sm, from, to)?)
    }

    /// Stops Raft and the node's tasks, and waits (≤ 5 s) until Raft's workers have let go
    /// of the state machine, so the data directory can be opened again at once.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, error = %e, "Raft shutdown reported an error");
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let (id, sm) = (self.id, self.sm);
        drop(self.handler);
        drop(self.checkpoints);
        drop(self.raft);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sm.handles() > 1 {
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    node = id,
                    handles = sm.handles(),
                    "the state machine is still held after shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Decodes a record's payload for display.
pub fn describe(rec: &Record) -> String {
    match rec.kind {
        hearth_core::EntryKind::Blank => "leader change".to_string(),
        hearth_core::EntryKind::Membership => {
            format!("membership {}", String::from_utf8_lossy(&rec.payload))
        }
        hearth_core::EntryKind::Command => match DomainCommand::decode(&rec.payload) {
            Ok(DomainCommand::TestRecord { text }) => format!("test record {text:?}"),
            Ok(DomainCommand::OperatorAct { act, by }) => format!("{act} (by {by:?})"),
            Ok(DomainCommand::RegisterDevice { device, by }) => {
                format!("device {} registered{}", device.id, by_suffix(&by))
            }
            Ok(DomainCommand::ApplyClass { class, by }) => {
                format!("intent class {} applied{}", class.name, by_suffix(&by))
            }
            Ok(DomainCommand::ApplyPolicies { policies, by }) => {
                format!("{} policies applied{}", policies.len(), by_suffix(&by))
            }
            Ok(DomainCommand::AddPolicy { policy, by }) => {
                format!("policy {} added{}", policy.id, by_suffix(&by))
            }
            Ok(DomainCommand::RemovePolicy { id, by }) => {
                format!("policy {id} removed{}", by_suffix(&by))
            }
            Ok(DomainCommand::SubmitIntent {
                intent, key_scope, ..
            }) => format!(
                "intent {} {} {:?} at {} from {}",
                hearth_core::domain::scoped_intent_id(
                    key_scope.as_deref(),
                    &intent.idempotency_key
                ),
                intent.class,
                intent.urgency,
                intent.location,
                intent.source
            ),
            Ok(DomainCommand::Approve { intent_id, by, .. }) => {
                format!("intent {intent_id} approved by {by}")
            }
            Ok(DomainCommand::Refence {
                devices,
                by,
                reason,
                ..
            }) => format!("devices {devices:?} re-fenced by {by:?} ({reason:?})"),
            Ok(DomainCommand::Promote { promotion: p }) => format!(
                "node {} promoted to a one-node cluster by {:?} ({:?}){}{}; removed {:?}; last entry it had: {}",
                p.node,
                p.operator,
                p.reason,
                if p.forced { ", forced" } else { "" },
                if p.destructive { ", destructive" } else { "" },
                p.removed,
                match (p.last, &p.last_hash) {
                    (Some((t, i)), Some(h)) => format!("{i} (term {t}, hash {h})"),
                    (Some((t, i)), None) => format!("{i} (term {t})"),
                    _ => "none".into(),
                }
            ),
            Ok(DomainCommand::RecordOutcome {
                action_id,
                outcome,
                token,
                ..
            }) => format!(
                "action {action_id}: {outcome:?} (token term {} leader {} index {})",
                token.term, token.leader, token.index
            ),
            Err(_) => format!("command ({} bytes)", rec.payload.len()),
        },
    }
}

fn by_suffix(by: &Option<String>) -> String {
    by.as_ref()
        .map(|b| format!(" by {b:?}"))
        .unwrap_or_default()
}
