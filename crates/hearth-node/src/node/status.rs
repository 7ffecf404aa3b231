//! What a node reports about itself (`Cluster.Status`), and which peers answer its leader.

use std::time::Duration;

use hearth_core::Hash;
use hearth_core::assist::AssistState;
use hearth_store::Member;
use openraft::Instant as _;
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::Role;

use super::Node;

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
    /// This data directory's incarnation id (empty from older nodes).
    pub incarnation: String,
    /// While the vote is held: why, and what ends the hold.
    pub hold_reason: Option<String>,
    /// The witness only: (hub, highest index at which it cosigned that hub's checkpoint).
    pub cosigned: Vec<(u64, u64)>,
    /// Whether this node's applied chain admits its own data directory.
    pub admitted: bool,
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

impl Node {
    pub async fn status(&self) -> StatusView {
        let m = self.raft.metrics().borrow_watched().clone();
        let mut cosigned = Vec::new();
        if self.role == Role::Witness {
            let hubs: Vec<u64> = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(_, n)| !n.witness)
                .map(|(id, _)| *id)
                .collect();
            for hub in hubs {
                if let Some((index, _)) = self.checkpoints.last_cosigned(hub).await {
                    cosigned.push((hub, index));
                }
            }
        }
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
            notices: crate::datadir::pending_notices(&self.config.data_dir),
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
            incarnation: self.incarnation.clone(),
            hold_reason: self.hold_reason(),
            cosigned,
            admitted: self
                .admitted_incarnation(self.id)
                .ok()
                .flatten()
                .is_some_and(|i| i == self.incarnation),
        }
    }

    /// Why this node's vote is held and what ends the hold, if it is.
    fn hold_reason(&self) -> Option<String> {
        use hearth_core::datadir::{Admission, admission};
        let h = self.handler.hold()?;
        if !h.needs_admission {
            return Some(format!(
                "{}; it votes again once a leader elected without it has caught it up",
                h.reason
            ));
        }
        let recorded = self
            .sm
            .with_domain(|d| d.incarnations.get(&self.id).cloned())
            .ok()
            .flatten();
        Some(match admission(&self.incarnation, recorded.as_deref()) {
            Admission::Other(known) => {
                crate::datadir::wiped_text(self.id, &self.incarnation, &known)
            }
            _ => format!(
                "{}; it votes once it is caught up and the chain admits its incarnation {} (the \
                 leader does so when it adds the node)",
                h.reason,
                crate::datadir::short(&self.incarnation)
            ),
        })
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
}
