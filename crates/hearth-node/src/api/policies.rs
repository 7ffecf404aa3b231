//! `hearth.v1.Policies`: intent classes and the household's policies.

use hearth_proto::v1 as pb;
use hearth_proto::v1::policies_client::PoliciesClient;
use tonic::{Request, Response, Status};

use super::convert::{class_from_doc, policies_from_doc};
use super::{Api, Call, to_status};
use crate::error::NodeError;

fn applied(a: hearth_store::Applied) -> pb::ApplyResult {
    pb::ApplyResult { index: a.index }
}

#[tonic::async_trait]
impl pb::policies_server::Policies for Api {
    async fn apply_class(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let call = Call::new(req);
        let res = match class_from_doc(&call.msg.json) {
            Ok(class) => self
                .node
                .apply_class(class, call.caller.as_ref())
                .await
                .map(applied),
            Err(e) => Err(e),
        };
        self.answer(call, res, |ch, r| async move {
            PoliciesClient::new(ch).apply_class(r).await
        })
        .await
    }

    async fn apply_policies(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let call = Call::new(req);
        let m = &call.msg;
        let res = match policies_from_doc(&m.json) {
            Ok(policies) => {
                let expect = (!m.expect_sha256.is_empty()).then_some(m.expect_sha256.as_str());
                self.node
                    .apply_policies(policies, expect, call.caller.as_ref())
                    .await
                    .map(applied)
            }
            Err(e) => Err(e),
        };
        self.answer(call, res, |ch, r| async move {
            PoliciesClient::new(ch).apply_policies(r).await
        })
        .await
    }

    async fn add_policy(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let call = Call::new(req);
        let res = match policies_from_doc(&call.msg.json) {
            Ok(mut policies) => match (policies.pop(), policies.is_empty()) {
                (Some(one), true) => self
                    .node
                    .add_policy(one, call.caller.as_ref())
                    .await
                    .map(applied),
                _ => Err(NodeError::Invalid {
                    field: "policies",
                    problem: "AddPolicy takes exactly one policy".into(),
                }),
            },
            Err(e) => Err(e),
        };
        self.answer(call, res, |ch, r| async move {
            PoliciesClient::new(ch).add_policy(r).await
        })
        .await
    }

    async fn remove_policy(
        &self,
        req: Request<pb::RemovePolicyRequest>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let call = Call::new(req);
        let res = self
            .node
            .remove_policy(&call.msg.id, call.caller.as_ref())
            .await
            .map(applied);
        self.answer(call, res, |ch, r| async move {
            PoliciesClient::new(ch).remove_policy(r).await
        })
        .await
    }

    async fn show(
        &self,
        _req: Request<pb::ShowPoliciesRequest>,
    ) -> Result<Response<pb::ApplyDocument>, Status> {
        let policies = self.node.policies().map_err(to_status)?;
        let classes = self.node.classes().map_err(to_status)?;
        let sha256 = crate::node::policies_sha256(&policies);
        let json = serde_json::json!({ "policies": policies, "classes": classes }).to_string();
        Ok(Response::new(pb::ApplyDocument {
            json,
            sha256,
            ..Default::default()
        }))
    }
}
