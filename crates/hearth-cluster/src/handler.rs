//! The receiving side of Raft RPCs, shared by the gRPC server and the in-process test router.
//!
//! Besides forwarding to openraft it enforces the witness rules and records what the witness
//! caretaker needs to know:
//! - a witness never accepts leadership handed to it (`TransferLeader` naming itself);
//! - every vote and pre-vote request is remembered (who campaigns, with which last log), and
//!   so is the last contact from a leader and from each peer;
//! - RPCs from node ids the node has retired (removed by a forced promotion) are refused with
//!   a message for the sender: the transport calls [`RaftHandler::refusal`] first.
//!
//! It also receives hubs' checkpoints for cosigning (`Cosign`), handed to the [`CosignHandler`]
//! the node installs (a witness does; any other node refuses).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use hearth_core::checkpoint::{CosignReply, CosignRequest, Refusal};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::async_runtime::WatchReceiver;

use hearth_store::types::LogIdT;

use crate::{HearthRaft, TypeConfig};

/// A candidate seen asking for a vote.
#[derive(Debug, Clone)]
pub struct Campaigner {
    pub at: Instant,
    pub last_log: Option<LogIdT>,
}

#[derive(Debug, Default)]
struct Seen {
    campaigners: BTreeMap<u64, Campaigner>,
    last_leader_contact: Option<Instant>,
    /// Last RPC received from each node (any kind).
    last_heard: BTreeMap<u64, Instant>,
    /// The last node that replicated to this one as leader.
    last_leader: Option<u64>,
    /// Highest commit index a leader other than this node announced in a successful append.
    leader_commit: Option<u64>,
}

/// Why this node must not vote or campaign yet (`hearth_node::datadir` sets and lifts it).
pub use hearth_core::datadir::Hold;

/// Decides whether RPCs from a node id are refused, and why.
pub type Gate = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// What a witness does with a hub's checkpoint: check it against its own chain and cosign it,
/// or refuse. Implemented by the node (it holds the key and the chain).
pub trait CosignHandler: Send + Sync {
    fn cosign<'a>(&'a self, from: u64, req: CosignRequest) -> BoxFuture<'a, CosignReply>;
}

/// The hub's side of `Cosign`: sends a checkpoint to witness `to` at `addr` (gRPC in
/// production, the test router in tests). `Err` is a transport problem, not a refusal.
pub trait CosignClient: Send + Sync {
    fn cosign<'a>(
        &'a self,
        from: u64,
        to: u64,
        addr: &'a str,
        req: CosignRequest,
    ) -> BoxFuture<'a, Result<CosignReply, String>>;
}

/// The election-timer rule: never the witness, never while the vote is held, never while the
/// clock is OFF.
pub fn may_campaign(witness: bool, held: bool, clock_off: bool) -> bool {
    !witness && !held && !clock_off
}

/// Receiving side of one node.
#[derive(Clone)]
pub struct RaftHandler {
    pub raft: HearthRaft,
    pub id: u64,
    pub witness: bool,
    started: Instant,
    seen: Arc<Mutex<Seen>>,
    gate: Arc<Mutex<Option<Gate>>>,
    cosigner: Arc<Mutex<Option<Arc<dyn CosignHandler>>>>,
    hold: Arc<Mutex<Option<Hold>>>,
    clock_off: Arc<std::sync::atomic::AtomicBool>,
}

impl RaftHandler {
    pub fn new(raft: HearthRaft, id: u64, witness: bool) -> Self {
        Self {
            raft,
            id,
            witness,
            started: Instant::now(),
            seen: Arc::new(Mutex::new(Seen::default())),
            gate: Arc::default(),
            cosigner: Arc::default(),
            hold: Arc::default(),
            clock_off: Arc::default(),
        }
    }

    /// Records the clock watch's verdict: a hub whose clock is OFF does not campaign.
    pub fn set_clock_off(&self, off: bool) {
        self.clock_off
            .store(off, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this node's election timer may run: a hub whose vote is not held and whose
    /// clock is not judged OFF. Every place that turns the timer back on asks this, so a
    /// lifted hold cannot re-enable elections on a hub whose clock is wrong (nor the clock
    /// watch on a held hub).
    pub fn may_campaign(&self) -> bool {
        may_campaign(
            self.witness,
            self.hold().is_some(),
            self.clock_off.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Holds (or releases) this node's vote. While held it grants no vote or pre-vote; its
    /// owner also turns its election timer off.
    pub fn set_hold(&self, hold: Option<Hold>) {
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = hold;
    }

    /// The hold on this node's vote, if any.
    pub fn hold(&self) -> Option<Hold> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Highest commit index announced by a leader (not this node) that replicated to it.
    pub fn leader_commit(&self) -> Option<u64> {
        self.with_seen(|s| s.leader_commit)
    }

    /// Why this node refuses to vote now, if it does: it holds no log naming it a voter (an
    /// empty or wiped data directory, or a node not yet added), or it is held.
    pub fn vote_refusal(&self) -> Option<String> {
        if let Some(h) = self.hold() {
            return Some(h.reason);
        }
        let m = self.raft.metrics().borrow_watched().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id)
        {
            return Some(format!(
                "node {} holds no log naming it a voter (empty or wiped data directory)",
                self.id
            ));
        }
        None
    }

    /// A refusal the candidate does not count: this node's current vote (never the
    /// candidate's) and its last log id.
    fn refuse_vote(&self, req: &VoteRequest<TypeConfig>, why: &str) -> VoteResponse<TypeConfig> {
        let vote = self.raft.metrics().borrow_watched().vote;
        if vote == req.vote {
            // Granted before the hold: repeating it changes nothing.
            return VoteResponse::new(vote, None, true);
        }
        tracing::warn!(
            node = self.id,
            candidate = req.vote.leader_id.node_id,
            term = req.vote.leader_id.term,
            why,
            "refusing to vote"
        );
        // `vote` differs from the candidate's, so the candidate does not count it.
        VoteResponse::new(vote, None, false)
    }

    /// Installs the rule that refuses RPCs from retired node ids.
    pub fn set_gate(&self, gate: Gate) {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate);
    }

    /// Installs what answers hubs' `Cosign` requests (on a witness).
    pub fn set_cosigner(&self, c: Arc<dyn CosignHandler>) {
        *self.cosigner.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    /// Answers a hub's checkpoint: the installed [`CosignHandler`] decides; without one the
    /// node refuses (it is not a witness).
    pub async fn cosign(&self, from: u64, req: CosignRequest) -> CosignReply {
        let c = self
            .cosigner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match c {
            Some(c) => c.cosign(from, req).await,
            None => CosignReply::Refused(Refusal::Invalid(format!(
                "node {} does not cosign checkpoints: only a witness does",
                self.id
            ))),
        }
    }

    /// Why RPCs from node `from` are refused, if they are. Transports call this before handing
    /// a request over and answer the sender with the message.
    pub fn refusal(&self, from: u64) -> Option<String> {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let why = gate.and_then(|g| g(from))?;
        Some(format!(
            "node {} refuses node {from}: {why}. It never accepts that node's entries or votes; \
             rejoin it under a new id (docs/topologies/two-hubs.md)",
            self.id
        ))
    }

    fn heard(&self, from: u64) {
        self.with_seen(|s| s.last_heard.insert(from, Instant::now()));
    }

    /// When node `id` last sent this node any Raft RPC.
    pub fn last_heard(&self, id: u64) -> Option<Instant> {
        self.with_seen(|s| s.last_heard.get(&id).copied())
    }

    fn with_seen<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while recording; the data is still usable.
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> {
        let leader = req.vote.leader_id.node_id;
        self.heard(leader);
        let commit = req.leader_commit.map(|l| l.index);
        let resp = self.raft.append_entries(req).await;
        if matches!(
            resp,
            Ok(AppendEntriesResponse::Success) | Ok(AppendEntriesResponse::PartialSuccess(_))
        ) {
            let me = self.id;
            self.with_seen(|s| {
                s.last_leader_contact = Some(Instant::now());
                s.last_leader = Some(leader);
                if leader != me {
                    s.leader_commit = s.leader_commit.max(commit);
                }
            });
        }
        resp
    }

    fn observe(&self, req: &VoteRequest<TypeConfig>) {
        let candidate = req.vote.leader_id.node_id;
        self.heard(candidate);
        let c = Campaigner {
            at: Instant::now(),
            last_log: req.last_log_id,
        };
        self.with_seen(|s| s.campaigners.insert(candidate, c));
    }

    pub async fn vote(
        &self,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> {
        self.observe(&req);
        if let Some(why) = self.vote_refusal() {
            return Ok(self.refuse_vote(&req, &why));
        }
        self.raft.vote(req).await
    }

    pub async fn pre_vote(
        &self,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> {
        self.observe(&req);
        if let Some(why) = self.vote_refusal() {
            return Ok(self.refuse_vote(&req, &why));
        }
        self.raft.pre_vote(req).await
    }

    pub async fn install_snapshot(
        &self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>,
    ) -> Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> {
        let r = self.raft.install_full_snapshot(vote, snapshot).await;
        if r.is_ok() {
            self.with_seen(|s| s.last_leader_contact = Some(Instant::now()));
        }
        r
    }

    pub async fn transfer_leader(
        &self,
        req: TransferLeaderRequest<TypeConfig>,
    ) -> Result<TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>> {
        if self.witness && *req.to_node_id() == self.id {
            // A witness leads only as a caretaker, on its own decision; never by hand-over.
            tracing::warn!(
                node = self.id,
                "ignoring a leadership transfer aimed at this witness"
            );
            return Ok(Ok(()));
        }
        if *req.to_node_id() == self.id
            && let Some(h) = self.hold()
        {
            tracing::warn!(node = self.id, reason = %h.reason,
                "ignoring a leadership transfer to this node: its vote is held");
            return Ok(Ok(()));
        }
        self.raft.handle_transfer_leader(req).await
    }

    /// Candidates seen asking for votes, by node id.
    pub fn campaigners(&self) -> BTreeMap<u64, Campaigner> {
        self.with_seen(|s| s.campaigners.clone())
    }

    /// When this handler (the node) started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The last node that replicated to this one as its leader.
    pub fn last_leader(&self) -> Option<u64> {
        self.with_seen(|s| s.last_leader)
    }

    /// When a leader last replicated to this node (or when the node started, if never).
    pub fn last_leader_contact(&self) -> Instant {
        self.with_seen(|s| s.last_leader_contact)
            .unwrap_or(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::may_campaign;

    #[test]
    fn only_a_hub_with_its_vote_and_a_right_clock_campaigns() {
        for witness in [false, true] {
            for held in [false, true] {
                for clock_off in [false, true] {
                    assert_eq!(
                        may_campaign(witness, held, clock_off),
                        !witness && !held && !clock_off,
                        "witness={witness} held={held} clock_off={clock_off}"
                    );
                }
            }
        }
    }
}
