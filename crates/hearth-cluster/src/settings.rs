//! Timing and role settings turned into an openraft `Config`.

use openraft::{Config, SnapshotPolicy};

/// Raft timing in milliseconds. Defaults suit hubs on home Wi-Fi and SD cards
/// (docs/DESIGN.md §9): a heartbeat every 150 ms, elections after 1–2 s of silence, so a
/// failover takes roughly 2–4 s and Wi-Fi jitter or an fsync stall does not depose a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// How long the witness waits without a leader before it considers acting as caretaker.
    pub caretaker_patience_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 1000,
            election_max_ms: 2000,
            caretaker_patience_ms: 3000,
        }
    }
}

/// How long a whole snapshot transfer may take (openraft's own 200 ms default caused endless
/// resend loops; docs/DESIGN.md §9).
pub const SNAPSHOT_TIMEOUT_MS: u64 = 30_000;

/// The openraft configuration of a node.
///
/// - Pre-Vote on (the transport implements it for real), leader restore off (a restarted
///   ex-leader holds an election instead of resuming with possibly stale state).
/// - A witness never campaigns from its election timer (`enable_elect: false`).
/// - A follower's log going backwards resets its replication (`allow_log_reversion`).
/// - Snapshots are never built automatically and the log is never purged: the log *is* the
///   audit history.
pub fn raft_config(t: &Timing, witness: bool) -> Result<Config, openraft::ConfigError> {
    Config {
        cluster_name: "hearth".to_string(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(false),
        enable_elect: !witness,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        // A follower whose log went backwards (a restored or damaged data directory) makes
        // the leader start its replication over instead of asserting or resending forever.
        // Safe here because such a node neither votes nor campaigns until it has caught up
        // (`RaftHandler::vote_refusal`, `hearth_node::datadir`).
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
}
