//! `hearth.v1.Cluster`: status, test records and operators' acts, membership changes,
//! promotion, restart.

use std::time::Duration;

use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use hearth_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::convert::{parse_role, status_to_proto};
use super::{Api, Call, GrpcProbe, to_status};
use crate::error::NodeError;
use crate::metrics::Counters;

fn membership_reply(r: (u64, Vec<u64>)) -> pb::MembershipResponse {
    pb::MembershipResponse {
        index: r.0,
        voters: r.1,
    }
}

impl Api {
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

    fn appended(&self, a: hearth_store::Applied) -> pb::AppendTestRecordResponse {
        // Only the term: a full status (assist assessment, notices) is not for every write.
        pb::AppendTestRecordResponse {
            index: a.index,
            hash: hex::encode(a.hash),
            term: self.node.term(),
            leader: self.node.id,
        }
    }

    /// With client authentication on, a privileged act is first an audit entry naming the
    /// principal (membership entries themselves cannot carry a name). Not the leader: the
    /// caller forwards the whole request, and the leader records it.
    async fn record_privileged<T>(&self, call: &Call<T>, act: String) -> Result<(), NodeError> {
        if let Some(by) = call.name() {
            self.node.record_act(&act, by).await?;
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
        let call = Call::new(req);
        let res = self.node.append_test_record(&call.msg.text).await;
        self.count(&res);
        let res = res.map(|a| self.appended(a));
        self.answer(call, res, |ch, r| async move {
            ClusterClient::new(ch).append_test_record(r).await
        })
        .await
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let call = Call::new(req);
        let r = &call.msg;
        let role = parse_role(&r.role)?;
        let act = format!("add of node {} ({}) at {} requested", r.id, r.role, r.addr);
        let res = match self.record_privileged(&call, act).await {
            Ok(()) => self.node.add_member(r.id, &r.addr, role).await,
            Err(e) => Err(e),
        };
        self.answer(call, res.map(membership_reply), |ch, r| async move {
            ClusterClient::new(ch).add_member(r).await
        })
        .await
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let call = Call::new(req);
        let id = call.msg.id;
        let act = format!("removal of node {id} requested");
        let res = match self.record_privileged(&call, act).await {
            Ok(()) => self.node.remove_member(id).await,
            Err(e) => Err(e),
        };
        self.answer(call, res.map(membership_reply), |ch, r| async move {
            ClusterClient::new(ch).remove_member(r).await
        })
        .await
    }

    async fn rejoin(
        &self,
        req: Request<pb::RejoinRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let call = Call::new(req);
        let id = call.msg.id;
        // The admission entry itself names the principal: no separate act is recorded.
        let by = call
            .name()
            .unwrap_or("an unauthenticated caller (insecure cluster)")
            .to_string();
        let res = self.node.rejoin_member(id, &by).await;
        self.answer(call, res.map(membership_reply), |ch, r| async move {
            ClusterClient::new(ch).rejoin(r).await
        })
        .await
    }

    async fn replace_member(
        &self,
        req: Request<pb::ReplaceMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let call = Call::new(req);
        let r = &call.msg;
        let role = parse_role(&r.role)?;
        let act = format!(
            "replacement of node {} by node {} ({}) at {} requested",
            r.old_id, r.new_id, r.role, r.addr
        );
        let res = match self.record_privileged(&call, act).await {
            Ok(()) => {
                self.node
                    .replace_member(r.old_id, r.new_id, &r.addr, role)
                    .await
            }
            Err(e) => Err(e),
        };
        self.answer(call, res.map(membership_reply), |ch, r| async move {
            ClusterClient::new(ch).replace_member(r).await
        })
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let call = Call::new(req);
        let to = call.msg.to;
        let act = format!("leadership transfer to node {to} requested");
        let res = match self.record_privileged(&call, act).await {
            Ok(()) => self.node.transfer_leadership(to).await,
            Err(e) => Err(e),
        };
        let res = res.map(|(leader, term)| pb::TransferLeaderResponse { leader, term });
        self.answer(call, res, |ch, r| async move {
            ClusterClient::new(ch).transfer_leader(r).await
        })
        .await
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let call = Call::new(req);
        let r = &call.msg;
        let probe = GrpcProbe {
            timeout: Duration::from_millis(1500),
            security: self.node.security().clone(),
        };
        let operator = call.name().unwrap_or(&r.operator);
        let p = self
            .node
            .request_promotion_probed(operator, &r.reason, r.force, &probe)
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
        let call = Call::new(req);
        let act = pb::RecordActRequest {
            act: format!("restart of node {} requested", self.node.id),
            by: call.msg.by.clone(),
        };
        // Recorded on the leader, wherever this node's restart was asked for.
        let act = Call {
            msg: act,
            caller: call.caller,
            forwarded: false,
        };
        let recorded = self.record(act).await?.into_inner();
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
        self.record(Call::new(req)).await
    }
}

impl Api {
    /// Records an operator's act: the authenticated principal, or without client
    /// authentication the name the client typed.
    async fn record(
        &self,
        call: Call<pb::RecordActRequest>,
    ) -> Result<Response<pb::AppendTestRecordResponse>, Status> {
        let by = call.name().unwrap_or(&call.msg.by).to_string();
        let res = self.node.record_act(&call.msg.act, &by).await;
        let res = res.map(|a| self.appended(a));
        self.answer(call, res, |ch, r| async move {
            ClusterClient::new(ch).record_act(r).await
        })
        .await
    }
}
