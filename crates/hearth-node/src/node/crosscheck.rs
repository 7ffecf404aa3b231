//! The running cross-check of chain heads (issue 13 item 5). Every `every`, a node asks each
//! voter for its status (the public `Cluster.Status`, or the test router), compares the peer's
//! applied head `(index, hash)` with its own hash at that index, and lets
//! `hearth_core::crosscheck::judge` decide. A node that a majority contradicts fences itself:
//! it logs an error, shuts its Raft core down (it no longer votes, leads or takes entries),
//! and refuses to serve its chain (audit, intents, checkpoints) until a person repairs it;
//! status and /metrics say so. Peers that contradict the majority are named in every node's
//! status.
//!
//! Bound: a forged node is fenced within two rounds after its applied head and a majority's
//! reach a common index (`every` is ten heartbeats, between 200 ms and 2 s).

use std::sync::{Arc, Weak};
use std::time::Duration;

use hearth_core::crosscheck::{Compared, compare, judge};

use crate::node::{Node, PeerProbe};

/// What the last rounds found, as status and /metrics report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainCheck {
    /// Peers whose chain differs from this node's at a common index: (peer, index).
    pub disagreeing: Vec<(u64, u64)>,
    /// Whether this node and the peers agreeing with it are a majority.
    pub majority_with_us: bool,
    /// Set once a majority contradicted this node: why it stopped serving its chain.
    pub fenced: Option<String>,
    /// Rounds completed.
    pub rounds: u64,
}

/// How often the cross-check runs for a node with this heartbeat.
pub fn period(heartbeat_ms: u64) -> Duration {
    Duration::from_millis((heartbeat_ms * 10).clamp(200, 2000))
}

/// Runs the cross-check until the node is dropped. Holds the node only between probes.
pub async fn run(node: Weak<Node>, probe: Arc<dyn PeerProbe>, every: Duration) {
    let mut budget = NoticeBudget::default();
    loop {
        tokio::time::sleep(every).await;
        let Some(n) = node.upgrade() else { return };
        if n.chain_check().fenced.is_some() {
            continue;
        }
        let me = n.id;
        let status = n.status().await;
        // The leader also records what nodes have to say about their own data (rebuilt state,
        // a lifted hold): its own, and each voter's from the status it reads here.
        let leading = status.leader == Some(me);
        let mut notices: Vec<(u64, crate::datadir::Notice)> = if leading {
            status
                .health
                .notices
                .iter()
                .map(|x| (me, x.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let voters: Vec<(u64, String)> = status
            .members
            .iter()
            .filter(|(_, _, voter)| *voter)
            .map(|(id, m, _)| (*id, m.addr.clone()))
            .collect();
        // And it admits the data directory of voters that vote already but that the chain
        // admits none for (a cluster formed before admissions existed; `admission`).
        let mut seen = if leading {
            vec![status.clone()]
        } else {
            Vec::new()
        };
        if voters.len() < 2 || !voters.iter().any(|(id, _)| *id == me) {
            record_notices(&n, &mut budget, notices).await;
            if leading {
                n.admit_unrecorded_voters(&seen).await;
            }
            continue;
        }
        drop(n);
        let mut heads = Vec::new();
        for (id, addr) in voters.iter().filter(|(id, _)| *id != me) {
            let s = probe.status(*id, addr).await;
            if leading && let Some(s) = &s {
                notices.extend(s.health.notices.iter().map(|x| (*id, x.clone())));
                seen.push(s.clone());
            }
            heads.push((*id, s.and_then(|s| s.head)));
        }
        let Some(n) = node.upgrade() else { return };
        let comparisons: Vec<(u64, Compared)> = heads
            .into_iter()
            .map(|(id, head)| (id, compare(head, |i| n.sm.hash_at(i).ok().flatten())))
            .collect();
        let v = judge(voters.len(), &comparisons);
        let before = n.chain_check();
        for (peer, c) in &comparisons {
            // Logged when a peer starts disagreeing, not on every round (the peer stays
            // flagged in status and /metrics).
            if let Compared::Disagree {
                index,
                ours,
                theirs,
            } = c
                && !before.disagreeing.iter().any(|(p, _)| p == peer)
            {
                tracing::error!(node = me, peer, index,
                    ours = %hex::encode(ours), theirs = %hex::encode(theirs),
                    "CHAIN DISAGREEMENT: node {peer}'s chain differs from this node's at index {index}");
            }
        }
        let fenced = v.fenced.as_ref().map(|against| {
            format!(
                "this node's chain disagrees with the majority ({}): it stopped serving it. Keep \
                 the data directory for inspection and rejoin the node under a new id",
                against
                    .iter()
                    .map(|(p, i)| format!("node {p} at index {i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let newly_fenced = fenced.clone();
        n.set_chain_check(ChainCheck {
            disagreeing: v.disagreeing,
            majority_with_us: v.majority_with_us,
            fenced,
            rounds: before.rounds + 1,
        });
        if let Some(why) = newly_fenced {
            tracing::error!(node = me, "FENCED: {why}");
            if let Err(e) = n.raft.shutdown().await {
                tracing::error!(node = me, error = %e, "could not stop Raft while fencing");
            }
        } else {
            record_notices(&n, &mut budget, notices).await;
            if leading {
                n.admit_unrecorded_voters(&seen).await;
            }
        }
    }
}

/// Notices the leader records for one node per [`NOTICE_WINDOW`]. A node notices a rebuild or
/// a lifted hold a few times in its life; a node whose certificate reports a flood of them
/// (a compromised or broken peer) must not fill the chain through its status.
pub const NOTICES_PER_WINDOW: usize = 8;
pub const NOTICE_WINDOW: Duration = Duration::from_secs(3600);

/// The leader's bound on recorded notices, per node (pure: the caller passes the time).
#[derive(Debug, Default)]
pub struct NoticeBudget {
    spent: std::collections::BTreeMap<u64, std::collections::VecDeque<std::time::Instant>>,
    /// Nodes whose spent budget was logged (once until it refills).
    warned: std::collections::BTreeSet<u64>,
}

impl NoticeBudget {
    /// Whether one more notice about `node` may be recorded at `now`; counts it if so.
    pub fn allow(&mut self, node: u64, now: std::time::Instant) -> bool {
        let q = self.spent.entry(node).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= NOTICE_WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= NOTICES_PER_WINDOW {
            return false;
        }
        q.push_back(now);
        self.warned.remove(&node);
        true
    }

    /// Whether a refusal for `node` is the first since its budget was last spent (log it then).
    pub fn first_refusal(&mut self, node: u64) -> bool {
        self.warned.insert(node)
    }
}

/// Records nodes' notices in the chain (the leader's part; each is proposed once, within the
/// per-node budget). A notice that cannot be recorded now (no quorum, a peer's invalid notice,
/// the budget spent) is tried again in a later round.
async fn record_notices(
    n: &Node,
    budget: &mut NoticeBudget,
    notices: Vec<(u64, crate::datadir::Notice)>,
) {
    for (node, x) in notices {
        if n.sm
            .with_domain(|d| d.notices.contains(&x.id))
            .unwrap_or(false)
        {
            continue;
        }
        if !budget.allow(node, std::time::Instant::now()) {
            if budget.first_refusal(node) {
                tracing::warn!(
                    node = n.id,
                    about = node,
                    "node {node} reports more than {NOTICES_PER_WINDOW} notices an hour; the rest wait"
                );
            }
            continue;
        }
        if let Err(e) = n.record_notice(node, &x).await {
            tracing::debug!(node = n.id, about = node, error = %e, "notice not recorded yet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_floods_notices_gets_its_budget_and_no_more() {
        let mut b = NoticeBudget::default();
        let t0 = std::time::Instant::now();
        for i in 0..NOTICES_PER_WINDOW {
            assert!(b.allow(2, t0 + Duration::from_secs(i as u64)), "notice {i}");
        }
        assert!(
            !b.allow(2, t0 + Duration::from_secs(60)),
            "the flood is cut"
        );
        assert!(b.first_refusal(2), "said once");
        assert!(!b.first_refusal(2), "not on every round");
        assert!(
            b.allow(3, t0 + Duration::from_secs(60)),
            "other nodes keep theirs"
        );
        // An hour after the first, one more fits.
        assert!(b.allow(2, t0 + NOTICE_WINDOW));
        assert!(!b.allow(2, t0 + NOTICE_WINDOW + Duration::from_millis(1)));
    }
}
