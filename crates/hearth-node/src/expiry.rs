//! The expiry of approvals: runs on every hub, acts only while that hub leads. Never on a
//! witness, never inside `apply`.
//!
//! Every [`period`], a leader that has applied an entry of its own term (its state then holds
//! every entry committed before it led, so an intent held under the previous leader is known)
//! asks `hearth_core::approval::due` which held intents have expired at the time it stamps:
//! its wall clock, never before the chain's time. For each it appends an `ExpireApproval`
//! entry naming itself, with a conditional write that commits only while the same leadership
//! leads (as the dispatcher records outcomes). `apply` checks again that the intent was due at
//! the entry's time, so every node agrees on what expired, whoever wrote it.
//!
//! Nobody has to act, and no leader has to stay: an approval that fell due while there was no
//! leader is expired by the next one within a period of its first applied entry. A hub whose
//! clock is judged wrong stamps nothing and expires nothing.

use std::time::Duration;

use hearth_cluster::HearthRaft;
use hearth_core::domain::Command as DomainCommand;
use hearth_store::{Command, StateMachine, TypeConfig};
use openraft::ServerState;
use openraft::impls::ProgressResponder;
use openraft::raft::ReadPolicy;
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::watch;

/// How often a leader looks for expired approvals: five heartbeats, between 100 ms and 1 s
/// (an approval of a few minutes expires within a second of its time).
pub fn period(heartbeat_ms: u64) -> Duration {
    Duration::from_millis((heartbeat_ms * 5).clamp(100, 1000))
}

pub struct Expiry {
    pub id: u64,
    pub raft: HearthRaft,
    pub sm: StateMachine,
    pub wall: crate::health::WallClock,
    pub clock_watch: std::sync::Arc<crate::health::ClockWatch>,
    pub every: Duration,
}

impl Expiry {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.round().await {
                return;
            }
        }
    }

    /// One look at the held intents; `false` once Raft has stopped.
    #[tracing::instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn round(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let applied_own_term = m
            .last_applied
            .as_ref()
            .is_some_and(|l| l.leader_id.term == m.current_term);
        if m.state != ServerState::Leader || !applied_own_term || self.clock_watch.is_off() {
            return true;
        }
        let chain_ms = self
            .sm
            .with_domain(|d| d.rates.chain_ms)
            .unwrap_or_default();
        let now_ms = hearth_core::clock::stamp(self.wall.now_ms(), chain_ms);
        let due = match self
            .sm
            .with_domain(|d| hearth_core::approval::due(&d.intents, now_ms))
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(node = self.id, error = %e, "cannot read the held intents");
                return true;
            }
        };
        if due.is_empty() {
            return true;
        }
        // A quorum must confirm this leadership now; the entries commit only under it.
        let opt = LinearizerOption::from(ReadPolicy::ReadIndex)
            .with_wait_timeout(Duration::from_millis(500));
        let leader =
            match tokio::time::timeout(Duration::from_secs(1), self.raft.ensure_linearizable(opt))
                .await
            {
                Ok(Ok(r)) => *r.committed_leader_id(),
                _ => {
                    tracing::debug!(
                        node = self.id,
                        "leadership not confirmed by a quorum; expiring nothing"
                    );
                    return true;
                }
            };
        if leader.node_id != self.id {
            return true;
        }
        let mut waiting = Vec::new();
        for intent_id in due {
            let cmd = DomainCommand::ExpireApproval {
                intent_id: intent_id.clone(),
                node: self.id,
                at_ms: now_ms,
            };
            let (responder, rx) = ProgressResponder::<TypeConfig, _>::complete_only();
            if let Err(e) = self
                .raft
                .write(Command(cmd.encode()))
                .with_leader(leader)
                .responder(responder)
                .await
            {
                tracing::error!(error = %e, "Raft stopped while expiring an approval");
                return false;
            }
            waiting.push((intent_id, rx));
        }
        for (intent_id, rx) in waiting {
            match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(Ok(_))) => tracing::info!(
                    node = self.id,
                    intent = %intent_id,
                    at_ms = now_ms,
                    "approval expired: the held intent is denied by itself"
                ),
                _ => tracing::warn!(
                    node = self.id,
                    intent = %intent_id,
                    "expiry not recorded (leadership changed?); the next leader expires it"
                ),
            }
        }
        true
    }
}
