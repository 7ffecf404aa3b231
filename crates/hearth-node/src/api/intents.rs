//! `hearth.v1.Intents`: submitting, reading, watching, explaining, approving and denying
//! intents, and listing the ones that wait for a person.
//!
//! The work of each call is an `*_here` function over the call's message and caller that
//! answers a [`NodeError`], never a tonic type: the gRPC handlers below and any other face of
//! the API (HTTP) call the same ones.

use std::collections::BTreeSet;
use std::time::Duration;

use hearth_core::approval::Decision;
use hearth_core::domain::{ActionOutcome, IntentRecord, IntentStatus, check_intent_id};
use hearth_proto::v1 as pb;
use hearth_proto::v1::intents_client::IntentsClient;
use tonic::{Request, Response, Status};

use super::convert::{intent_from_pb, outcome_view, plan_view, record_view};
use super::{Api, Call, to_status};
use crate::auth::Principal;
use crate::error::NodeError;

fn invalid(e: hearth_core::intent::FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// An agent reads only its own intents.
fn own_intent(caller: Option<&Principal>, r: &IntentRecord) -> Result<(), Status> {
    match crate::auth::agent_of(caller) {
        Some(agent) if r.intent.source != agent => Err(Status::permission_denied(format!(
            "agent {agent:?} reads only its own intents; {} was submitted by {:?}",
            r.id, r.intent.source
        ))),
        _ => Ok(()),
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::IntentEvent, Status>> + Send>>;

impl Api {
    /// Submits (or, with `dry_run`, explains) an intent on this node: an agent submits only
    /// as its own source, and only what its token's grants allow.
    async fn submit_here(
        &self,
        call: &Call<pb::SubmitIntentRequest>,
    ) -> Result<pb::IntentView, NodeError> {
        let mut m = call.msg.clone();
        if let Some(agent) = crate::auth::agent_of(call.caller.as_ref()) {
            if m.source.is_empty() {
                m.source = agent.to_string();
            } else if m.source != agent {
                return Err(NodeError::Forbidden(format!(
                    "agent {agent:?} submits intents only as source {agent:?}, not {:?}",
                    m.source
                )));
            }
        }
        let i = intent_from_pb(&m)?;
        crate::auth::check_grants(call.caller.as_ref(), &i, &self.node.devices()?)
            .map_err(|e| NodeError::Forbidden(e.to_string()))?;
        if m.dry_run {
            return self.node.explain(&i).map(|p| plan_view(&p));
        }
        self.node.submit_intent(i).await.map(|r| record_view(&r))
    }

    /// Approves (`reason` optional) or denies (`reason` required) a held intent on this node,
    /// as the caller: operators and admins only (an agent is refused, PERMISSION_DENIED).
    /// Without client authentication the name recorded is `by` ("operator" if empty).
    pub(crate) async fn decide_here(
        &self,
        caller: Option<&Principal>,
        id: &str,
        decision: Decision,
        by: &str,
        reason: &str,
    ) -> Result<pb::IntentView, NodeError> {
        crate::auth::check_decider(caller).map_err(NodeError::Forbidden)?;
        let by = if by.is_empty() { "operator" } else { by };
        let reason = (!reason.is_empty()).then_some(reason);
        self.node
            .decide(id, decision, by, reason, caller)
            .await
            .map(|r| record_view(&r))
    }

    /// The intents that wait for a person, oldest first: an agent's own only.
    pub(crate) fn pending_here(
        &self,
        caller: Option<&Principal>,
    ) -> Result<pb::ListPendingResponse, NodeError> {
        let (list, now_ms) = self.node.pending(crate::auth::agent_of(caller))?;
        Ok(pb::ListPendingResponse {
            intents: list.iter().map(record_view).collect(),
            now_ms,
        })
    }
}

#[tonic::async_trait]
impl pb::intents_server::Intents for Api {
    async fn submit(
        &self,
        req: Request<pb::SubmitIntentRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let res = self.submit_here(&call).await;
        self.answer(call, res, |ch, r| async move {
            IntentsClient::new(ch).submit(r).await
        })
        .await
    }

    async fn get(
        &self,
        req: Request<pb::GetIntentRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let id = &call.msg.id;
        check_intent_id("id", id).map_err(invalid)?;
        match self.node.get_intent(id).map_err(to_status)? {
            Some(r) => {
                own_intent(call.caller.as_ref(), &r)?;
                Ok(Response::new(record_view(&r)))
            }
            None => Err(Status::not_found(format!(
                "no intent {id:?} on this node (yet)"
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::GetIntentRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let call = Call::new(req);
        let id = call.msg.id.clone();
        check_intent_id("id", &id).map_err(invalid)?;
        if let Some(r) = self.node.get_intent(&id).map_err(to_status)? {
            own_intent(call.caller.as_ref(), &r)?;
        } else if crate::auth::agent_of(call.caller.as_ref()).is_some() {
            // An agent may only watch its own intents; one not applied here yet cannot be
            // checked, so the agent asks again once it exists.
            return Err(Status::not_found(format!(
                "no intent {id:?} on this node (yet)"
            )));
        }
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent_outcomes = BTreeSet::new();
            let mut announced = false;
            let mut dispatched = false;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            loop {
                let rec = match node.get_intent(&id) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                if let Some(r) = rec {
                    let view = record_view(&r);
                    let mut events = Vec::new();
                    if !announced {
                        announced = true;
                        let stage = if r.status == IntentStatus::AwaitingApproval {
                            "awaiting_approval"
                        } else {
                            "accepted"
                        };
                        // An agent is told what its intent waits for (and until when).
                        events.push((stage.to_string(), view.waiting_for.clone()));
                    }
                    for a in &r.actions {
                        if let Some(o) = &a.outcome
                            && sent_outcomes.insert(a.id.clone())
                        {
                            if !dispatched {
                                dispatched = true;
                                events.push((
                                    "dispatched".into(),
                                    format!(
                                        "token term {} leader {}",
                                        a.token.map_or(0, |t| t.term),
                                        a.token.map_or(0, |t| t.leader)
                                    ),
                                ));
                            }
                            let (name, detail) = outcome_view(&Some(o.clone()));
                            events.push((
                                "outcome".into(),
                                format!(
                                    "{} {} -> {}: {name} {detail}",
                                    a.id, a.action.device, a.action.state
                                ),
                            ));
                        }
                    }
                    let finished = r.status.is_final();
                    if r.status == IntentStatus::NoAction {
                        events.push((
                            "no_action".into(),
                            format!(
                                "nothing was done: {}",
                                r.plan.nothing_to_do.clone().unwrap_or_default()
                            ),
                        ));
                    } else if let (true, Some(d)) = (finished, &r.denied)
                        && r.status == IntentStatus::Denied
                    {
                        events.push(("denied".into(), format!("denied by {}: {}", d.by, d.reason)));
                    } else if finished {
                        let ok = r
                            .actions
                            .iter()
                            .filter(|a| {
                                matches!(
                                    a.outcome,
                                    Some(ActionOutcome::Applied | ActionOutcome::AlreadyApplied)
                                )
                            })
                            .count();
                        let stage = if ok == r.actions.len() {
                            "done"
                        } else if ok == 0 {
                            "failed"
                        } else {
                            "partial"
                        };
                        let mut detail = if r.actions.is_empty() && !r.plan.reads.is_empty() {
                            format!("sensors of {} devices read", r.plan.reads.len())
                        } else {
                            format!("{ok} of {} actions applied", r.actions.len())
                        };
                        // What the household must know about the outcome as a whole (e.g. an
                        // emergency's location was not found) is on the final line too.
                        for n in &r.plan.notes {
                            detail.push_str("; ");
                            detail.push_str(n);
                        }
                        events.push((stage.into(), detail));
                    }
                    for (stage, detail) in events {
                        let ev = pb::IntentEvent {
                            stage,
                            intent: Some(view.clone()),
                            detail,
                        };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    if finished {
                        return;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(
                            "intent still running after 10 minutes; use Get",
                        )))
                        .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }

    async fn explain(
        &self,
        req: Request<pb::SubmitIntentRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let mut m = call.msg.clone();
        if m.idempotency_key.is_empty() {
            m.idempotency_key = "explain".into();
        }
        let i = intent_from_pb(&m).map_err(invalid)?;
        let devices = self.node.devices().map_err(to_status)?;
        crate::auth::check_grants(call.caller.as_ref(), &i, &devices)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let p = self.node.explain(&i).map_err(to_status)?;
        Ok(Response::new(plan_view(&p)))
    }

    async fn approve(
        &self,
        req: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let m = &call.msg;
        let res = self
            .decide_here(
                call.caller.as_ref(),
                &m.id,
                Decision::Approve,
                &m.by,
                &m.reason,
            )
            .await;
        self.answer(call, res, |ch, r| async move {
            IntentsClient::new(ch).approve(r).await
        })
        .await
    }

    async fn deny(
        &self,
        req: Request<pb::DenyRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let call = Call::new(req);
        let m = &call.msg;
        let res = self
            .decide_here(
                call.caller.as_ref(),
                &m.id,
                Decision::Deny,
                &m.by,
                &m.reason,
            )
            .await;
        self.answer(call, res, |ch, r| async move {
            IntentsClient::new(ch).deny(r).await
        })
        .await
    }

    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let call = Call::new(req);
        self.pending_here(call.caller.as_ref())
            .map(Response::new)
            .map_err(to_status)
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
