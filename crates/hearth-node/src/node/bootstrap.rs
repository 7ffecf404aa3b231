//! Forming the cluster, exactly once, on the configured bootstrap hub; and holding the vote of
//! a node whose data directory was wiped or went backwards.

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_store::Member;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::Role;

use super::{Node, NodeState, PeerProbe, StartError};

/// Present while the bootstrap hub is forming the cluster (between its first entry and the
/// membership that makes every configured member a voter).
pub(super) const FORMING_FILE: &str = "forming";

impl Node {
    /// The configured members as openraft nodes.
    pub(super) fn initial_members(&self) -> BTreeMap<u64, Member> {
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
    pub async fn bootstrap(
        &self,
        probe: &dyn PeerProbe,
        retry: Duration,
    ) -> Result<(), StartError> {
        if !self.config.bootstrap {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Fatal(e.to_string()))?;
        if initialized {
            let alone = self.voters() == vec![self.id];
            let members = self.initial_members();
            if !alone || members.len() == 1 || !self.fresh_formation_pending() {
                return Ok(());
            }
            return Box::pin(self.finish_formation(members)).await;
        }
        loop {
            let mut missing = Vec::new();
            for p in &self.config.peers {
                match probe.status(p.id, &p.addr).await {
                    Some(s) if s.initialized || s.last_log.is_some() => {
                        return Err(StartError::AlreadyFormed {
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
        crate::datadir::release(&self.handler, &self.config.data_dir)?;
        std::fs::write(self.config.data_dir.join(FORMING_FILE), b"")?;
        match self.raft.initialize(me).await {
            Ok(()) => tracing::info!(node = self.id, "cluster formed with this hub alone"),
            Err(RaftError::APIError(e)) => {
                tracing::info!(node = self.id, error = %e, "cluster already initialized");
                let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
                return Ok(());
            }
            Err(RaftError::Fatal(f)) => return Err(StartError::Fatal(f.to_string())),
        }
        if members.len() == 1 {
            // A one-hub cluster: it admits its own data directory once it leads.
            self.admit_self(tokio::time::Instant::now() + self.formation_patience())
                .await?;
            let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
            return Ok(());
        }
        Box::pin(self.finish_formation(members)).await
    }

    /// How long forming the cluster may take before the bootstrap hub gives up.
    fn formation_patience(&self) -> Duration {
        Duration::from_millis(self.config.timing.write_timeout_ms.max(1000) * 20)
    }

    /// The bootstrap hub admits its own data directory (it formed the cluster).
    async fn admit_self(&self, deadline: tokio::time::Instant) -> Result<(), StartError> {
        let by = format!("node {}", self.id);
        self.admit_retrying(deadline, || {
            self.admit(self.id, &self.incarnation, &by, "formed the cluster")
        })
        .await
    }

    /// Runs an admission step of forming the cluster, retrying until `deadline` (a leadership
    /// blip or a learner still taking the log).
    async fn admit_retrying<F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        step: F,
    ) -> Result<(), StartError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<u64>, super::NodeError>>,
    {
        loop {
            match step().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(node = self.id, error = %e, "forming the cluster: admitting a data directory: retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(StartError::Refused(format!(
                        "forming the cluster: admitting a member's data directory: {e}"
                    )));
                }
            }
        }
    }

    pub(super) fn fresh_formation_pending(&self) -> bool {
        self.config.data_dir.join(FORMING_FILE).exists()
    }

    /// The steps of forming after this hub leads alone: every configured peer a learner, then
    /// all voters.
    pub(super) async fn finish_formation(
        &self,
        members: BTreeMap<u64, Member>,
    ) -> Result<(), StartError> {
        let patience = self.formation_patience();
        let deadline = tokio::time::Instant::now() + patience;
        let fatal = |e: String| StartError::Fatal(e);
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
                return Err(StartError::NoQuorum(format!(
                    "node {} formed the cluster alone but did not become its leader within {} ms",
                    self.id,
                    patience.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The chain admits each member's data directory before it votes (issue 14.1): this
        // hub's own first, then each peer's once it has taken the log.
        self.admit_self(deadline).await?;
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
                        return Err(StartError::NoQuorum(format!(
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
                        return Err(StartError::Refused(format!(
                            "forming the cluster: adding node {id}: {e}"
                        )));
                    }
                    Ok(Ok(_)) => break,
                }
            }
            self.admit_retrying(deadline, || async {
                self.admit_new_member(*id, &m.addr, "joined when the cluster was formed")
                    .await
                    .map(|()| None)
            })
            .await?;
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
                    return Err(StartError::Refused(format!(
                        "forming the cluster: making every member a voter: {e}"
                    )));
                }
            }
        }
        let _ = std::fs::remove_file(self.config.data_dir.join(FORMING_FILE));
        tracing::info!(node = self.id, voters = ?self.voters(), "cluster formed");
        Ok(())
    }

    /// On a node whose data directory is new, says loudly when a leader reports that it
    /// already replicated entries to this node id: the directory was wiped, and the node votes
    /// only after an admin's `hearth cluster rejoin` (`admission`). On any node, a
    /// leader that had replicated more to this node id than its log now holds means the log
    /// went backwards (a restored backup, lost writes): the node's vote is held until it has
    /// been caught up (`datadir`).
    pub async fn check_not_wiped(&self, probe: &dyn PeerProbe) -> Result<(), StartError> {
        use hearth_core::datadir::{PeerKnows, peers_say_backwards};
        let mine = self.log.last_log_id()?.map(|l| l.index);
        let mut knows = Vec::new();
        for p in &self.config.peers {
            let Some(s) = probe.status(p.id, &p.addr).await else {
                continue;
            };
            knows.push(PeerKnows {
                peer: p.id,
                leader_matched: (s.state == NodeState::Leader)
                    .then(|| {
                        s.replication
                            .iter()
                            .find(|(n, _)| *n == self.id)
                            .and_then(|(_, m)| *m)
                    })
                    .flatten(),
                cosigned: s
                    .cosigned
                    .iter()
                    .find(|(hub, _)| *hub == self.id)
                    .map(|(_, i)| *i),
            });
        }
        let Some((floor, reason)) = peers_say_backwards(self.id, mine, &knows) else {
            return Ok(());
        };
        if self.fresh {
            // Wiped: its vote stays held (a new directory votes only once the chain admits it)
            // until an admin's explicit rejoin, or its replacement.
            tracing::error!(node = self.id, incarnation = %self.incarnation, floor,
                "NODE {id} WILL NOT VOTE OR LEAD: its data directory is empty, but {reason}: its \
                 data was wiped. It takes the log from the cluster; once it is caught up, an admin \
                 runs `hearth cluster rejoin --id {id}` (or replaces it under a new id: \
                 docs/OPERATIONS.md)", id = self.id);
            return Ok(());
        }
        tracing::error!(
            node = self.id,
            floor,
            ?mine,
            "NODE {} WILL NOT VOTE OR LEAD until caught up: {reason}",
            self.id
        );
        let before = self.handler.hold();
        crate::datadir::hold(
            &self.handler,
            &self.config.data_dir,
            hearth_core::datadir::Hold {
                floor: before.as_ref().and_then(|h| h.floor).max(Some(floor)),
                // Said once, even when a hold kept over restarts is checked again.
                reason: match &before {
                    Some(h) if h.reason.contains(&reason) => h.reason.clone(),
                    Some(h) => format!("{}; {reason}", h.reason),
                    None => reason,
                },
                needs_admission: before.is_some_and(|h| h.needs_admission),
            },
        )?;
        Ok(())
    }
}
