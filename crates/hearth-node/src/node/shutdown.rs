//! Stopping: handing leadership over first, then Raft and the node's tasks.

use std::time::Duration;

use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;

use super::Node;

impl Node {
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
