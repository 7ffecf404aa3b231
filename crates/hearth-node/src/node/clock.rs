//! Watching this hub's clock against its peers' (`hearth_core::clock::judge`).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::Role;

use super::{Node, PeerProbe};

impl Node {
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
        self.handler.set_clock_off(verdict.is_off());
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
                    .elect(self.handler.may_campaign());
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
}
