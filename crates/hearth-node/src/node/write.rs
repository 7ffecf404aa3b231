//! The write path: proposing a command through Raft on the leader, bounded by the write
//! timeout, and the errors that tell a client where the leader is or why there is no quorum.

use std::time::Duration;

use hearth_core::domain::Command as DomainCommand;
use hearth_core::domain::Outcome;
use hearth_core::resolver::Clock;
use hearth_store::Applied;
use hearth_store::Command;
use openraft::ServerState;
use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::ReadPolicy;
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::Role;

use super::{MAX_TEST_RECORD, Node, NodeError};

impl Node {
    pub(super) fn no_quorum(&self, why: &str) -> NodeError {
        let (ok, lost) = self.reachable_peers();
        let refused: String = hearth_cluster::notices::recent(self.id)
            .into_iter()
            .map(|(_, m)| format!(" {m}."))
            .collect();
        let m = self.raft.metrics().borrow_watched().clone();
        let silent = self.handler.last_leader_contact().elapsed();
        let silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX);
        let leaderless = m.current_leader.is_none() || why.contains("has not heard");
        // A peer that refuses this node for good is no ordinary election: say so instead.
        if leaderless
            && refused.is_empty()
            && let hearth_core::election::Leaderless::Electing { retry_ms } =
                hearth_core::election::leaderless(
                    silent_ms,
                    self.config.timing.election_max_ms,
                    m.state == openraft::ServerState::Candidate,
                )
        {
            // An ordinary election (a leader stopped or handed over): retryable, say when.
            return NodeError::NoQuorum(format!(
                "electing a leader, retry in {retry_ms} ms: node {} {why} (no leader for \
                 {silent_ms} ms; an election normally ends within a few seconds). Nothing was \
                 executed",
                self.id
            ));
        }
        NodeError::NoQuorum(format!(
            "node {} {why}; peers answering: {ok:?}, peers not answering: {lost:?}.{refused} \
             Nothing was executed; retry when a majority of nodes can reach each other",
            self.id
        ))
    }

    /// Where to forward a request: the leader, unless this follower has not heard from it for
    /// longer than an election timeout (it is cut off, or the leader is gone and an election
    /// is under way): then `NO_QUORUM` at once instead of a forward that would hang.
    pub(super) fn to_leader(&self, leader: u64, addr: String) -> NodeError {
        let silent = self.handler.last_leader_contact().elapsed();
        if silent > Duration::from_millis(self.config.timing.election_max_ms) {
            return self.no_quorum(&format!(
                "has not heard from its leader (node {leader}) for {} ms",
                silent.as_millis()
            ));
        }
        NodeError::NotLeader {
            self_id: self.id,
            leader,
            addr,
        }
    }

    /// The write was appended here but no quorum confirmed it in time: its fate is open until
    /// the cluster heals (a later leader either commits it or replaces it). Say so.
    pub(super) fn not_confirmed(&self, timeout: Duration) -> NodeError {
        let (ok, lost) = self.reachable_peers();
        NodeError::NoQuorum(format!(
            "node {} appended the request but no quorum confirmed it within {} ms; peers \
             answering: {ok:?}, peers not answering: {lost:?}. Nothing has been executed yet; \
             it runs only if the cluster commits it when a majority is back. Retry with the same \
             idempotency key to learn its fate: a retry never runs it twice",
            self.id,
            timeout.as_millis()
        ))
    }

    /// Appends an operator's test record through Raft and waits for it to be committed and
    /// applied. Only the leader can; others return [`NodeError::NotLeader`] for forwarding.
    pub async fn append_test_record(&self, text: &str) -> Result<Applied, NodeError> {
        if text.len() > MAX_TEST_RECORD {
            return Err(NodeError::Invalid {
                field: "text",
                problem: format!(
                    "{} bytes; at most {MAX_TEST_RECORD} are accepted",
                    text.len()
                ),
            });
        }
        self.propose(&DomainCommand::TestRecord {
            text: text.to_string(),
        })
        .await
    }

    /// Proposes a command and waits until it is committed and applied here (the leader).
    /// Returns [`NodeError::NotLeader`] on a follower, `NO_QUORUM` when no quorum commits it
    /// within the write timeout. The witness never proposes.
    #[tracing::instrument(level = "debug", skip_all, fields(node = self.id, term = tracing::field::Empty, index = tracing::field::Empty))]
    pub async fn propose(&self, cmd: &DomainCommand) -> Result<Applied, NodeError> {
        if self.role == Role::Witness
            && self.raft.metrics().borrow_watched().state == ServerState::Leader
        {
            return Err(NodeError::WitnessCaretaker);
        }
        self.require_quorum_contact().await?;
        let timeout = Duration::from_millis(self.config.timing.write_timeout_ms);
        let res =
            tokio::time::timeout(timeout, self.raft.client_write(Command(cmd.encode()))).await;
        match res {
            Err(_) => Err(self.not_confirmed(timeout)),
            Ok(Ok(r)) => {
                let span = tracing::Span::current();
                span.record("term", r.log_id.leader_id.term);
                span.record("index", r.data.index);
                tracing::debug!("committed");
                Ok(r.data)
            }
            Ok(Err(RaftError::Fatal(f))) => Err(NodeError::Fatal(f.to_string())),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(l), Some(n)) if l != self.id => Err(self.to_leader(l, n.addr)),
                    _ => {
                        Err(self.no_quorum("has no leader it can reach (its leader lease expired)"))
                    }
                }
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(NodeError::Discarded)
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::Fatal(e.to_string())),
        }
    }

    /// On a leader: refuses, before anything is appended, when no quorum has answered within
    /// the leader lease and none answers a fresh heartbeat round at once. Without this an
    /// isolated leader would append the command, time out, and commit it later when its peers
    /// return, long after the client was told it failed.
    pub(super) async fn require_quorum_contact(&self) -> Result<(), NodeError> {
        if self.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Ok(()); // client_write answers ForwardToLeader
        }
        let wait = Duration::from_millis(self.config.timing.heartbeat_ms * 2);
        let opt = LinearizerOption::from(ReadPolicy::LeaseRead).with_wait_timeout(wait);
        match tokio::time::timeout(wait * 2, self.raft.ensure_linearizable(opt)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::Fatal(f))) => Err(NodeError::Fatal(f.to_string())),
            // Leadership moved: let client_write report where to.
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => Ok(()),
            Ok(Err(RaftError::APIError(_))) | Err(_) => Err(self.no_quorum(
                "leads but no quorum has answered it within the leader lease; nothing was appended",
            )),
        }
    }

    /// Proposes a command whose refusal is a client error.
    pub(super) async fn propose_checked(&self, cmd: &DomainCommand) -> Result<Applied, NodeError> {
        let a = self.propose(cmd).await?;
        if let Some(Outcome::Refused { reason }) = &a.outcome {
            return Err(NodeError::Refused(reason.clone()));
        }
        Ok(a)
    }

    /// Records an operator's act in the chain (leader only; others return `NotLeader`).
    pub async fn record_act(&self, act: &str, by: &str) -> Result<Applied, NodeError> {
        hearth_core::intent::check_id("by", by).map_err(NodeError::from)?;
        if act.is_empty() || act.len() > 500 || act.chars().any(char::is_control) {
            return Err(NodeError::Invalid {
                field: "act",
                problem: "1-500 printable characters".into(),
            });
        }
        self.propose(&DomainCommand::OperatorAct {
            act: act.to_string(),
            by: by.to_string(),
        })
        .await
    }

    /// Records node `node`'s notice about its own data in the chain (leader only), once: a
    /// notice the chain already carries is not proposed again.
    pub async fn record_notice(
        &self,
        node: u64,
        n: &crate::datadir::Notice,
    ) -> Result<(), NodeError> {
        if !n.is_valid() {
            return Err(NodeError::Invalid {
                field: "notice",
                problem: "an id of [0-9a-f-] and 1-500 printable characters".into(),
            });
        }
        if self.sm.with_domain(|d| d.notices.contains(&n.id))? {
            return Ok(());
        }
        self.propose(&DomainCommand::NodeNotice {
            node,
            id: n.id.clone(),
            text: n.text.clone(),
            at_ms: self.stamp()?.now_ms,
        })
        .await?;
        tracing::info!(node = self.id, about = node, notice = %n.text, "recorded node {node}'s notice in the chain");
        Ok(())
    }

    /// Routes a management call: only the leader performs it.
    pub(super) fn require_leader(&self) -> Result<(), NodeError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            if self.role == Role::Witness {
                return Err(NodeError::WitnessCaretaker);
            }
            return Ok(());
        }
        match m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| (l, n.addr.clone()))
        }) {
            Some((leader, addr)) if leader != self.id => Err(self.to_leader(leader, addr)),
            _ => Err(self.no_quorum("knows no leader")),
        }
    }

    /// The time the leader fixes for planning: its wall clock but never before the chain's
    /// time (time in the chain never runs backwards), and the minute of the day (UTC until
    /// Hearth has a time-zone setting).
    pub(super) fn clock(&self) -> Clock {
        let chain = self.chain_ms();
        let now_ms = hearth_core::clock::stamp(self.wall.now_ms(), chain);
        Clock {
            now_ms,
            minute_of_day: hearth_core::clock::minute_of_day(now_ms),
        }
    }

    /// The time to stamp into a new entry, on the leader: refused while this hub's clock is
    /// judged wrong (a hub whose clock is far off never stamps). On a follower the request is
    /// forwarded and the leader stamps.
    pub(super) fn stamp(&self) -> Result<Clock, NodeError> {
        if self.clock_watch.is_off()
            && self.raft.metrics().borrow_watched().state == ServerState::Leader
        {
            let why = self
                .clock_watch
                .verdict()
                .map(|v| v.reason().to_string())
                .unwrap_or_default();
            return Err(NodeError::Refused(format!(
                "CLOCK_OFF: node {}'s clock is wrong, so it stamps nothing and hands leadership over: {why}. Retry in a few seconds (another hub leads then), and fix this hub's time (NTP, RTC)",
                self.id
            )));
        }
        Ok(self.clock())
    }
}
