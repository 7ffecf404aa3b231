//! Which data directory (incarnation) may vote under a node id (issue 14.1). A node's data
//! directory carries a random incarnation id (`datadir`); the chain admits one per node id
//! (`AdmitNode`). The leader admits a new node's incarnation when it makes it a voter (forming
//! the cluster, `cluster add`); a node whose data directory is new votes only once its caught-up
//! chain admits its own incarnation. A wiped node comes back with a new incarnation that the
//! chain does not admit: it receives the log but never votes until an admin runs `hearth
//! cluster rejoin`, which admits it only once it has caught up from the running majority.

use hearth_core::domain::Command as DomainCommand;
use openraft::type_config::async_runtime::WatchReceiver;

use super::{Node, NodeError, StatusView};

/// How long the leader waits for a new member to report its incarnation.
const ASK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Node {
    /// The incarnation the applied chain admits for node `id`, if any.
    pub fn admitted_incarnation(&self, id: u64) -> Result<Option<String>, NodeError> {
        Ok(self.sm.with_domain(|d| d.incarnations.get(&id).cloned())?)
    }

    /// Appends an admission of `incarnation` for node `node` unless the chain already admits
    /// it. Returns the entry's index (or `None` when there was nothing to append).
    pub(super) async fn admit(
        &self,
        node: u64,
        incarnation: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<u64>, NodeError> {
        if !valid_incarnation(incarnation) {
            return Err(NodeError::Invalid {
                field: "incarnation",
                problem: format!("node {node} reported {incarnation:?}: not 32 hex digits"),
            });
        }
        if self.admitted_incarnation(node)?.as_deref() == Some(incarnation) {
            return Ok(None);
        }
        let applied = self
            .propose(&DomainCommand::AdmitNode {
                node,
                incarnation: incarnation.to_string(),
                by: by.to_string(),
                reason: reason.to_string(),
                at_ms: self.stamp()?.now_ms,
            })
            .await?;
        tracing::warn!(node = self.id, admitted = node, incarnation = %incarnation, by, reason,
            index = applied.index, "node {node}'s data directory (incarnation {}) is admitted to vote",
            crate::datadir::short(incarnation));
        Ok(Some(applied.index))
    }

    /// Asks node `id` at `addr` for its status, retrying for a few seconds (a node that was
    /// just added may still be busy taking the log).
    pub(super) async fn ask_status(&self, id: u64, addr: &str) -> Option<StatusView> {
        let probe = self.peer_probe();
        let deadline = tokio::time::Instant::now() + ASK_PATIENCE;
        loop {
            match probe.status(id, addr).await {
                Some(s) if s.node_id == id => return Some(s),
                _ if tokio::time::Instant::now() >= deadline => return None,
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Admits the incarnation of node `id` that is about to become a voter (formation,
    /// `cluster add`), asking the node itself for it.
    pub(super) async fn admit_new_member(
        &self,
        id: u64,
        addr: &str,
        reason: &str,
    ) -> Result<(), NodeError> {
        let s = self.ask_status(id, addr).await.ok_or_else(|| {
            NodeError::NoQuorum(format!(
                "node {id} at {addr} took the log but does not answer its status, so its data \
                 directory could not be admitted and it was not made a voter; retry"
            ))
        })?;
        if s.incarnation.is_empty() {
            return Err(NodeError::Refused(format!(
                "node {id} reports no incarnation (an older Hearth): upgrade it before adding it"
            )));
        }
        Box::pin(self.admit(id, &s.incarnation, &format!("node {}", self.id), reason)).await?;
        Ok(())
    }

    /// An admin's explicit rejoin of member `id` whose data directory was wiped: admits the
    /// node's new incarnation once it has caught up from this leader. `by`: the principal.
    #[tracing::instrument(skip(self), fields(node = self.id))]
    pub async fn rejoin_member(&self, id: u64, by: &str) -> Result<(u64, Vec<u64>), NodeError> {
        self.require_leader()?;
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let Some(member) = membership.get_node(&id) else {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!(
                    "node {id} is not a member; a new node joins with `hearth cluster add`"
                ),
            });
        };
        if id == self.id {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!("node {id} is the leader: it votes already"),
            });
        }
        let addr = member.addr.clone();
        let s = self.ask_status(id, &addr).await.ok_or_else(|| {
            NodeError::NoQuorum(format!(
                "node {id} at {addr} does not answer; start it (with its new, empty data \
                 directory) and retry once it has caught up"
            ))
        })?;
        if s.incarnation.is_empty() {
            return Err(NodeError::Refused(format!(
                "node {id} reports no incarnation (an older Hearth): upgrade it first"
            )));
        }
        let known = self.admitted_incarnation(id)?;
        if known.as_deref() == Some(s.incarnation.as_str()) {
            return Err(NodeError::Invalid {
                field: "id",
                problem: format!(
                    "the chain already admits node {id}'s data directory (incarnation {}): there \
                     is nothing to rejoin{}",
                    crate::datadir::short(&s.incarnation),
                    if s.vote_held {
                        "; its vote is held only until it has caught up"
                    } else {
                        ""
                    }
                ),
            });
        }
        // Caught up from this leader, which a quorum elected without the wiped node: it holds
        // everything this leader had committed when the rejoin was asked for.
        let commit = m.cluster_committed.map(|l| l.index).unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index);
        let applied = s.applied.unwrap_or(0);
        if applied < commit || matched.is_none_or(|i| i < commit) {
            return Err(NodeError::Refused(format!(
                "node {id} has not caught up yet (it applied index {applied}, this leader \
                 replicated {} to it, and committed {commit}); retry in a moment",
                matched.map_or("nothing".to_string(), |i| format!("index {i}"))
            )));
        }
        let reason = match &known {
            Some(old) => format!(
                "rejoin after its data directory was replaced (it was incarnation {}); caught \
                 up to index {applied}",
                crate::datadir::short(old)
            ),
            None => format!("rejoin; caught up to index {applied}"),
        };
        let index = Box::pin(self.admit(id, &s.incarnation, by, &reason))
            .await?
            .unwrap_or(commit);
        Ok((index, self.voters()))
    }

    /// Leader only: admits, once, the incarnation of each voter that votes already but that
    /// the chain admits none for (a cluster formed before admissions existed). A held node is
    /// never admitted here: only formation, `cluster add` and an admin's rejoin admit those.
    pub(crate) async fn admit_unrecorded_voters(&self, statuses: &[StatusView]) {
        if self.role == crate::config::Role::Witness {
            return;
        }
        let voters = self.voters();
        for s in statuses {
            if s.vote_held || s.incarnation.is_empty() || !voters.contains(&s.node_id) {
                continue;
            }
            match self.admitted_incarnation(s.node_id) {
                Ok(None) => {}
                Ok(Some(known)) if known != s.incarnation => {
                    tracing::error!(node = self.id, peer = s.node_id, reported = %s.incarnation,
                        admitted = %known,
                        "node {} votes with a data directory (incarnation {}) that the chain does \
                         not admit (it admits {}): was its directory copied from another card?",
                        s.node_id, crate::datadir::short(&s.incarnation),
                        crate::datadir::short(&known));
                    continue;
                }
                _ => continue,
            }
            if let Err(e) = self
                .admit(
                    s.node_id,
                    &s.incarnation,
                    &format!("node {}", self.id),
                    "voted before admissions were recorded",
                )
                .await
            {
                tracing::warn!(node = self.id, peer = s.node_id, error = %e,
                    "could not record the admission of a voting node");
                return;
            }
        }
    }
}

/// An incarnation id as `datadir` makes them: 32 lower-case hex digits.
fn valid_incarnation(s: &str) -> bool {
    s.len() == 32
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_32_lower_case_hex_digits_are_an_incarnation() {
        assert!(super::valid_incarnation(&"0af9".repeat(8)));
        for bad in [
            String::new(),
            "0af9".repeat(7),
            "0AF9".repeat(8),
            format!("{}zz", "0".repeat(30)),
            "0".repeat(33),
        ] {
            assert!(!super::valid_incarnation(&bad), "{bad}");
        }
    }
}
