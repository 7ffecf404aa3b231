//! The public gRPC API (`hearth.v1`): thin mapping between protobuf and [`Node`].
//! Errors become gRPC statuses with a message a person can act on; a write that reaches a
//! follower is forwarded to the leader once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_server::Audit;
use hearth_proto::v1::cluster_client::ClusterClient;
use hearth_proto::v1::cluster_server::Cluster;
use hearth_store::Member;
use tonic::{Request, Response, Status};

use crate::config::Role;
use crate::metrics::Counters;
use crate::node::{Node, NodeError, PeerProbe, StatusView, describe};

const FORWARDED: &str = "x-hearth-forwarded";
/// Largest public request accepted (bytes).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Maps a node error to a gRPC status.
pub fn to_status(e: NodeError) -> Status {
    let msg = e.to_string();
    match e {
        NodeError::NoQuorum(_) | NodeError::WitnessCaretaker | NodeError::NotLeader { .. } => {
            Status::unavailable(msg)
        }
        NodeError::Invalid { .. } | NodeError::Field(_) => Status::invalid_argument(msg),
        NodeError::Plan(hearth_core::resolver::PlanError::RateLimited { .. }) => {
            Status::resource_exhausted(msg)
        }
        NodeError::Plan(_) => Status::invalid_argument(msg),
        NodeError::KeyConflict(_) => Status::already_exists(msg),
        // The bound on emergencies per source is a rate limit like the policies' ones.
        NodeError::Refused(m) if m.starts_with("emergency rate limit") => {
            Status::resource_exhausted(msg)
        }
        NodeError::Refused(_) => Status::failed_precondition(msg),
        NodeError::Forbidden(_) => Status::permission_denied(msg),
        NodeError::NotFound(_) => Status::not_found(msg),
        NodeError::Discarded => Status::aborted(msg),
        NodeError::ChainBroken { .. } => Status::data_loss(msg),
        _ => Status::internal(msg),
    }
}

pub fn status_to_proto(s: &StatusView) -> pb::NodeStatus {
    pb::NodeStatus {
        node_id: s.node_id,
        role: s.role.name().to_string(),
        state: s.state.clone(),
        term: s.term,
        last_index: s.last_log.map(|(_, i)| i),
        last_term: s.last_log.map(|(t, _)| t),
        applied_index: s.applied,
        head_hash: s.head.map(|(_, h)| hex::encode(h)).unwrap_or_default(),
        head_index: s.head.map(|(i, _)| i),
        leader: s.leader,
        members: s
            .members
            .iter()
            .map(|(id, m, voter)| pb::Member {
                id: *id,
                addr: m.addr.clone(),
                role: if m.witness { "witness" } else { "hub" }.to_string(),
                voter: *voter,
            })
            .collect(),
        replication: s
            .replication
            .iter()
            .map(|(id, m)| pb::Progress {
                node_id: *id,
                matched_index: *m,
            })
            .collect(),
        initialized: s.initialized,
        millis_since_quorum_ack: s.millis_since_quorum_ack,
        assist_state: s
            .assist
            .as_ref()
            .map(|a| a.state.clone())
            .unwrap_or_default(),
        assist_detail: s
            .assist
            .as_ref()
            .map(|a| a.detail.clone())
            .unwrap_or_default(),
        assist_destructive: s.assist.as_ref().is_some_and(|a| a.destructive),
        assist_checks: s
            .assist
            .as_ref()
            .map(|a| a.checks.clone())
            .unwrap_or_default(),
        refusals: s
            .refused_by
            .iter()
            .map(|(by, m)| pb::Refusal {
                by: *by,
                message: m.clone(),
            })
            .collect(),
        started_ms: s.started_ms,
        checkpoint_key: s.checkpoint_key.clone(),
        device_warnings: s.device_warnings.clone(),
        health: Some(pb::Health {
            now_ms: s.health.now_ms,
            clock: s.health.clock.clone(),
            clock_detail: s.health.clock_detail.clone(),
            core_stopped: s.health.core_stopped.clone(),
            disk_free_bytes: s.health.disk_free_bytes,
            disk_warning: s.health.disk_warning.clone(),
            notices: s
                .health
                .notices
                .iter()
                .map(|n| pb::NodeNotice {
                    id: n.id.clone(),
                    text: n.text.clone(),
                })
                .collect(),
        }),
        chain_disagreements: s
            .chain_disagreeing
            .iter()
            .map(|(node_id, index)| pb::ChainDisagreement {
                node_id: *node_id,
                index: *index,
            })
            .collect(),
        chain_fenced: s.chain_fenced.clone().unwrap_or_default(),
    }
}

pub fn status_from_proto(p: &pb::NodeStatus) -> StatusView {
    StatusView {
        node_id: p.node_id,
        role: if p.role == "witness" {
            Role::Witness
        } else {
            Role::Hub
        },
        state: p.state.clone(),
        term: p.term,
        last_log: p.last_index.map(|i| (p.last_term.unwrap_or_default(), i)),
        applied: p.applied_index,
        // The head's own index, never `applied_index` (Raft's metrics run ahead of the state
        // machine's head under load: pairing them made a peer's head look forged). A peer
        // that does not send it has no comparable head.
        head: p.head_index.zip(
            hex::decode(&p.head_hash)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok()),
        ),
        leader: p.leader,
        members: p
            .members
            .iter()
            .map(|m| {
                (
                    m.id,
                    Member {
                        addr: m.addr.clone(),
                        witness: m.role == "witness",
                    },
                    m.voter,
                )
            })
            .collect(),
        replication: p
            .replication
            .iter()
            .map(|r| (r.node_id, r.matched_index))
            .collect(),
        initialized: p.initialized,
        millis_since_quorum_ack: p.millis_since_quorum_ack,
        assist: (!p.assist_state.is_empty()).then(|| crate::node::AssistView {
            state: p.assist_state.clone(),
            detail: p.assist_detail.clone(),
            destructive: p.assist_destructive,
            checks: p.assist_checks.clone(),
        }),
        refused_by: p
            .refusals
            .iter()
            .map(|r| (r.by, r.message.clone()))
            .collect(),
        started_ms: p.started_ms,
        checkpoint_key: p.checkpoint_key.clone(),
        device_warnings: p.device_warnings.clone(),
        health: p
            .health
            .as_ref()
            .map(|h| crate::health::HealthView {
                now_ms: h.now_ms,
                clock: h.clock.clone(),
                clock_detail: h.clock_detail.clone(),
                core_stopped: h.core_stopped.clone(),
                disk_free_bytes: h.disk_free_bytes,
                disk_warning: h.disk_warning.clone(),
                notices: h
                    .notices
                    .iter()
                    .map(|n| crate::datadir::Notice {
                        id: n.id.clone(),
                        text: n.text.clone(),
                    })
                    .collect(),
            })
            .unwrap_or_default(),
        chain_disagreeing: p
            .chain_disagreements
            .iter()
            .map(|d| (d.node_id, d.index))
            .collect(),
        chain_fenced: (!p.chain_fenced.is_empty()).then(|| p.chain_fenced.clone()),
    }
}

/// Public API of one node.
#[derive(Clone)]
pub struct Api {
    node: Arc<Node>,
    counters: Arc<Counters>,
    refusals: Arc<crate::refusals::Refusals>,
}

impl Api {
    pub fn new(node: Arc<Node>, counters: Arc<Counters>) -> Self {
        let refusals = Arc::new(crate::refusals::Refusals::new(node.config().node_id));
        Self {
            node,
            counters,
            refusals,
        }
    }

    /// Serves `Audit.Refusals` from `ring` (the one the auth layer records into).
    pub fn with_refusals(mut self, ring: Arc<crate::refusals::Refusals>) -> Self {
        self.refusals = ring;
        self
    }

    fn count(&self, r: &Result<hearth_store::Applied, NodeError>) {
        let c = &self.counters;
        match r {
            Ok(_) => Counters::inc(&c.writes_ok),
            Err(NodeError::NoQuorum(_)) => Counters::inc(&c.writes_no_quorum),
            Err(NodeError::Invalid { .. }) => Counters::inc(&c.writes_rejected),
            Err(NodeError::NotLeader { .. }) => Counters::inc(&c.writes_forwarded),
            Err(_) => {}
        }
    }
}

/// A client to the leader for a forwarded call, and the request marked as forwarded (a node
/// never forwards a forwarded call again, so a leadership change cannot make it loop).
fn to_leader<T>(
    node: &Node,
    addr: &str,
    msg: T,
) -> Result<(ClusterClient<tonic::transport::Channel>, Request<T>), Status> {
    // Membership changes wait for a learner to catch up: a long deadline.
    to_leader_within(node, addr, Duration::from_secs(120), msg)
}

/// A plain write forwarded to the leader waits a little longer than the leader's own write
/// timeout, so a stopped leader is named by this node before the client's deadline.
fn short_forward(node: &Node) -> Duration {
    Duration::from_millis(node.config().timing.write_timeout_ms) + Duration::from_secs(3)
}

fn to_leader_within<T>(
    node: &Node,
    addr: &str,
    timeout: Duration,
    msg: T,
) -> Result<(ClusterClient<tonic::transport::Channel>, Request<T>), Status> {
    let channel = hearth_cluster::grpc::shared_channel(addr, node.security())
        .map_err(|e| Status::unavailable(format!("leader address {addr:?}: {e}")))?;
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    crate::auth::forward_credentials(&mut req);
    req.set_timeout(timeout);
    Ok((ClusterClient::new(channel), req))
}

/// A forward that did not reach the leader names the leader, not this node: the client sees
/// "the leader at ADDR did not answer" instead of a transport error it would pin on the node
/// it called. The leader's own answers pass through unchanged.
fn leader_failed(addr: &str, s: Status) -> Status {
    let transport = matches!(
        s.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
    ) || (s.code() == tonic::Code::Unavailable
        && !s.message().starts_with("NO_QUORUM"));
    if !transport {
        return s;
    }
    Status::unavailable(format!(
        "NO_QUORUM: this node forwarded the request to the leader at {addr}, which did not \
         answer ({}); nothing is known to have run there. Retry in a few seconds (a new leader \
         is elected if it is gone)",
        s.message()
    ))
}

fn parse_role(role: &str) -> Result<Role, Status> {
    match role {
        "hub" => Ok(Role::Hub),
        "witness" => Ok(Role::Witness),
        other => Err(Status::invalid_argument(format!(
            "field `role`: {other:?} is neither \"hub\" nor \"witness\""
        ))),
    }
}

fn membership_reply(r: (u64, Vec<u64>)) -> Response<pb::MembershipResponse> {
    Response::new(pb::MembershipResponse {
        index: r.0,
        voters: r.1,
    })
}

impl Api {
    /// With client authentication on, a privileged act is first an audit entry naming the
    /// principal (membership entries themselves cannot carry a name). Not the leader: the
    /// caller forwards the whole request, and the leader records it.
    async fn record_privileged(&self, act: String) -> Result<(), NodeError> {
        if let Some(by) = crate::auth::current_name() {
            self.node.record_act(&act, &by).await?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(status_to_proto(&self.node.status().await)))
    }

    async fn append_test_record(
        &self,
        req: Request<pb::AppendTestRecordRequest>,
    ) -> Result<Response<pb::AppendTestRecordResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let text = req.into_inner().text;
        let res = self.node.append_test_record(&text).await;
        self.count(&res);
        match res {
            Ok(a) => {
                // Only the term: a full status (assist assessment, notices) is not for every write.
                Ok(Response::new(pb::AppendTestRecordResponse {
                    index: a.index,
                    hash: hex::encode(a.hash),
                    term: self.node.term(),
                    leader: self.node.id,
                }))
            }
            Err(NodeError::NotLeader { leader, addr, .. }) if !forwarded => {
                tracing::debug!(
                    node = self.node.id,
                    leader,
                    "forwarding a write to the leader"
                );
                let (mut c, req) = to_leader_within(
                    &self.node,
                    &addr,
                    short_forward(&self.node),
                    pb::AppendTestRecordRequest { text },
                )?;
                c.append_test_record(req)
                    .await
                    .map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let r = req.into_inner();
        let role = parse_role(&r.role)?;
        let act = format!("add of node {} ({}) at {} requested", r.id, r.role, r.addr);
        let res = match self.record_privileged(act).await {
            Ok(()) => self.node.add_member(r.id, &r.addr, role).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(x) => Ok(membership_reply(x)),
            Err(NodeError::NotLeader { addr, .. }) if !forwarded => {
                let (mut c, req) = to_leader(&self.node, &addr, r)?;
                c.add_member(req).await.map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let r = req.into_inner();
        let act = format!("removal of node {} requested", r.id);
        let res = match self.record_privileged(act).await {
            Ok(()) => self.node.remove_member(r.id).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(x) => Ok(membership_reply(x)),
            Err(NodeError::NotLeader { addr, .. }) if !forwarded => {
                let (mut c, req) = to_leader(&self.node, &addr, r)?;
                c.remove_member(req)
                    .await
                    .map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }

    async fn replace_member(
        &self,
        req: Request<pb::ReplaceMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let r = req.into_inner();
        let role = parse_role(&r.role)?;
        let act = format!(
            "replacement of node {} by node {} ({}) at {} requested",
            r.old_id, r.new_id, r.role, r.addr
        );
        let res = match self.record_privileged(act).await {
            Ok(()) => {
                self.node
                    .replace_member(r.old_id, r.new_id, &r.addr, role)
                    .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(x) => Ok(membership_reply(x)),
            Err(NodeError::NotLeader { addr, .. }) if !forwarded => {
                let (mut c, req) = to_leader(&self.node, &addr, r)?;
                c.replace_member(req)
                    .await
                    .map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let r = req.into_inner();
        let act = format!("leadership transfer to node {} requested", r.to);
        let res = match self.record_privileged(act).await {
            Ok(()) => self.node.transfer_leadership(r.to).await,
            Err(e) => Err(e),
        };
        match res {
            Ok((leader, term)) => Ok(Response::new(pb::TransferLeaderResponse { leader, term })),
            Err(NodeError::NotLeader { addr, .. }) if !forwarded => {
                let (mut c, req) = to_leader(&self.node, &addr, r)?;
                c.transfer_leader(req)
                    .await
                    .map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let r = req.into_inner();
        let probe = GrpcProbe {
            timeout: Duration::from_millis(1500),
            security: self.node.security().clone(),
        };
        let p = self
            .node
            .request_promotion_probed(&crate::auth::actor(&r.operator), &r.reason, r.force, &probe)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PromoteResponse {
            node_id: p.node,
            removed: p.removed,
            assessed: p.assessed,
            destructive: p.destructive,
            last_index: p.last.map(|(_, i)| i),
            last_term: p.last.map(|(t, _)| t),
            last_hash: p.last_hash.unwrap_or_default(),
        }))
    }

    async fn restart(
        &self,
        req: Request<pb::RestartRequest>,
    ) -> Result<Response<pb::RestartResponse>, Status> {
        let by = req.into_inner().by;
        let act = pb::RecordActRequest {
            act: format!("restart of node {} requested", self.node.id),
            by,
        };
        let recorded = self.record_act(Request::new(act)).await?.into_inner();
        self.node.request_restart();
        Ok(Response::new(pb::RestartResponse {
            node_id: self.node.id,
            recorded_index: recorded.index,
        }))
    }

    async fn record_act(
        &self,
        req: Request<pb::RecordActRequest>,
    ) -> Result<Response<pb::AppendTestRecordResponse>, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let r = req.into_inner();
        match self
            .node
            .record_act(&r.act, &crate::auth::actor(&r.by))
            .await
        {
            Ok(a) => Ok(Response::new(pb::AppendTestRecordResponse {
                index: a.index,
                hash: hex::encode(a.hash),
                term: self.node.term(),
                leader: self.node.id,
            })),
            Err(NodeError::NotLeader { addr, .. }) if !forwarded => {
                let (mut c, req) =
                    to_leader_within(&self.node, &addr, short_forward(&self.node), r)?;
                c.record_act(req).await.map_err(|s| leader_failed(&addr, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }
}

type ExportStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for Api {
    async fn tail(
        &self,
        req: Request<pb::TailRequest>,
    ) -> Result<Response<pb::TailResponse>, Status> {
        let count = match req.into_inner().count {
            0 => 20,
            n => n.min(10_000),
        };
        let links = self.node.tail(u64::from(count)).map_err(to_status)?;
        Ok(Response::new(pb::TailResponse {
            entries: links
                .into_iter()
                .map(|l| pb::AuditEntry {
                    index: l.record.index,
                    term: l.record.term,
                    leader: l.record.leader,
                    kind: describe(&l.record),
                    payload: l.record.payload,
                    hash: hex::encode(l.hash),
                })
                .collect(),
        }))
    }

    async fn refusals(
        &self,
        req: Request<pb::RefusalsRequest>,
    ) -> Result<Response<pb::RefusalsResponse>, Status> {
        Ok(Response::new(crate::refusals::serve(
            &self.refusals,
            req.get_ref(),
        )))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        _req: Request<pb::ExportRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let lines = self.node.export_lines().map_err(to_status)?;
        let chunks: Vec<Result<pb::ExportChunk, Status>> = lines
            .chunks(512)
            .map(|c| Ok(pb::ExportChunk { lines: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn verify(
        &self,
        _req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = self.node.verify().map_err(to_status)?;
        Ok(Response::new(pb::VerifyResponse {
            ok: r.failure.is_none(),
            checked: r.checked,
            first_bad_index: r.failure.as_ref().map(|f| f.index()),
            reason: r.failure.map(|f| f.to_string()).unwrap_or_default(),
            head_index: r.head.map(|(i, _)| i),
            head_hash: r.head.map(|(_, h)| hex::encode(h)).unwrap_or_default(),
            anchor_index: r.anchor.map(|(i, _)| i),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        let m = self.node.checkpoint_now().await.map_err(to_status)?;
        let fork = matches!(&m.witness,
            crate::checkpoint::WitnessOutcome::Refused { refusal, .. } if refusal.is_fork());
        Ok(Response::new(pb::CheckpointResponse {
            index: m.checkpoint.index,
            head: hex::encode(m.checkpoint.head),
            fresh: m.fresh,
            cosigned: m.checkpoint.witness.is_some(),
            witness: m.witness.to_string(),
            line: m.checkpoint.to_line(),
            fork,
        }))
    }

    type ExportCheckpointsStream = ExportStream;

    async fn export_checkpoints(
        &self,
        _req: Request<pb::ExportCheckpointsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let text = self.node.checkpoints.export_text().map_err(to_status)?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let chunks: Vec<Result<pb::ExportChunk, Status>> = lines
            .chunks(512)
            .map(|c| Ok(pb::ExportChunk { lines: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// Asks peers for their status over the public API.
pub struct GrpcProbe {
    pub timeout: Duration,
    pub security: hearth_cluster::tls::Security,
}

impl PeerProbe for GrpcProbe {
    fn status<'a>(&'a self, _id: u64, addr: &'a str) -> BoxFuture<'a, Option<StatusView>> {
        Box::pin(async move {
            let channel = hearth_cluster::grpc::shared_channel(addr, &self.security).ok()?;
            let mut client = ClusterClient::new(channel);
            let mut req = Request::new(pb::StatusRequest {});
            req.set_timeout(self.timeout);
            let s = tokio::time::timeout(self.timeout, client.status(req))
                .await
                .ok()?
                .ok()?;
            Some(status_from_proto(&s.into_inner()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's head is the state machine's `(index, hash)` pair as it sent it. Under load
    /// Raft's `applied_index` is already past the head; pairing the two made the cross-check
    /// see a forged chain and fence a healthy node (found by `hearth bench compare`).
    #[test]
    fn a_peers_head_is_paired_with_its_own_index_never_the_applied_one() {
        let h = [7u8; 32];
        let p = pb::NodeStatus {
            applied_index: Some(9),
            head_hash: hex::encode(h),
            head_index: Some(5),
            ..Default::default()
        };
        let v = status_from_proto(&p);
        assert_eq!(v.head, Some((5, h)));
        assert_eq!(v.applied, Some(9));
        // A peer that does not say its head's index has no comparable head.
        let old = pb::NodeStatus {
            head_index: None,
            ..p
        };
        assert_eq!(status_from_proto(&old).head, None);
    }
}
