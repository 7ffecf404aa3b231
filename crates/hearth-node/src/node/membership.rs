//! Membership changes (add, remove, replace, transfer leadership): each step an entry in
//! the chain, refused before it would cost the quorum.

use std::time::Duration;

use hearth_store::Member;
use hearth_store::TypeConfig;
use hearth_store::audit;
use openraft::errors::ClientWriteError;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::Role;

use super::{Node, NodeError};

impl Node {
    pub(super) fn membership_result(
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
    pub(super) async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, NodeError> {
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
        // The chain admits the new node's data directory before it votes (issue 14.1).
        // (Boxed: the future is deep, and callers' own futures hit the compiler's layout limit.)
        Box::pin(self.admit_new_member(id, addr, "added with `hearth cluster add`")).await?;
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
}
