//! Two hubs without a witness: the assisted-failover assessment and the promotion gate
//! (`hearth_core::assist`; the pending promotion is written by `crate::assist`).

use std::time::Duration;

use hearth_core::assist::AssistConfig;
use hearth_core::assist::AssistObservation;
use hearth_core::assist::AssistState;
use hearth_core::assist::PeerFacts;
use hearth_core::caretaker::LogPos;
use hearth_core::domain::Promotion;
use openraft::Instant as _;
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::Role;

use super::{Node, NodeError, PeerProbe};

impl Node {
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
        let state = hearth_core::assist::assess(cfg, &obs);
        Some((obs, state))
    }

    /// Evidence this hub holds that its peer is alive or ahead (two hubs): any of it refuses a
    /// promotion, forced or not (`hearth_core::assist::peer_evidence`).
    pub fn promotion_evidence(
        &self,
        obs: &AssistObservation,
    ) -> Vec<hearth_core::assist::Evidence> {
        self.promotion_evidence_with(obs, None)
    }

    pub(super) fn promotion_evidence_with(
        &self,
        obs: &AssistObservation,
        peer_answered: Option<String>,
    ) -> Vec<hearth_core::assist::Evidence> {
        let cfg = AssistConfig {
            suspect_after_ms: self.config.timing.election_max_ms,
            down_after_ms: self.config.assist.down_after_ms,
        };
        self.peer_facts(obs)
            .map(|mut f| {
                f.peer_answered = peer_answered;
                hearth_core::assist::peer_evidence(cfg, &f)
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

    pub(super) fn promotion_gate(
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
        hearth_core::assist::may_promote_given(&state, force, &evidence).map_err(|r| {
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

    /// What this hub holds about its peer besides silence (see `hearth_core::assist::PeerFacts`):
    /// refusals the peer answered since this incarnation started, its own chain's record of its
    /// removal, the peer's last RPC or heartbeat answer, and the longest log the peer is known to
    /// hold (its campaigns, or replication while this hub led).
    pub(super) fn peer_facts(&self, obs: &AssistObservation) -> Option<PeerFacts> {
        let peer = self.voters().into_iter().find(|v| *v != self.id)?;
        let h = &self.handler;
        let refusals = hearth_cluster::notices::since(self.id, h.started())
            .into_iter()
            .filter(|(by, _)| *by == peer)
            .map(|(_, m)| m)
            .collect();
        let promotions = self
            .sm
            .with_domain(|d| d.retired.get(&self.id).cloned())
            .ok()
            .flatten()
            .into_iter()
            .collect();
        let acked = self
            .raft
            .metrics()
            .borrow_watched()
            .heartbeat
            .as_ref()
            .and_then(|hb| hb.get(&peer).copied().flatten())
            .map(|t| t.elapsed());
        let heard = h.last_heard(peer).map(|t| t.elapsed());
        let peer_rpc_ago_ms = match (acked, heard) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|d| d.as_millis() as u64);
        let campaigned = h
            .campaigners()
            .get(&peer)
            .and_then(|c| c.last_log)
            .map(|l| LogPos {
                term: l.leader_id.term,
                index: l.index,
            });
        Some(PeerFacts {
            peer,
            watched_ms: h.started().elapsed().as_millis() as u64,
            peer_rpc_ago_ms,
            refusals,
            promotions,
            peer_known_last: campaigned.max(obs.peer_last),
            my_last: obs.my_last,
            peer_answered: None,
        })
    }
}
