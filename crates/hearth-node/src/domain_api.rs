//! Public gRPC services for intents, devices and policies: protobuf ↔ core types, and
//! forwarding of writes to the leader. Validation lives in `hearth-core`; this file only maps.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hearth_core::domain::check_intent_id;
use hearth_core::domain::{ActionOutcome, ActionRecord, IntentRecord, IntentStatus};
use hearth_core::intent::{
    Adapter, Device, FieldError, Intent, IntentClass, Location, MAX_NAME, Urgency, check_id,
    check_text,
};
use hearth_core::policy::Policy;
use hearth_core::resolver::{Plan, PlannedAction};
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_client::DevicesClient;
use hearth_proto::v1::intents_client::IntentsClient;
use hearth_proto::v1::policies_client::PoliciesClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::api::to_status;
use crate::node::{Node, NodeError};

const FORWARDED: &str = "x-hearth-forwarded";

fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn leader_channel(node: &Node, addr: &str) -> Result<Channel, Status> {
    hearth_cluster::grpc::shared_channel(addr, node.security())
        .map_err(|e| Status::unavailable(format!("leader address {addr:?}: {e}")))
}

/// An agent reads only its own intents.
fn own_intent(r: &hearth_core::domain::IntentRecord) -> Result<(), Status> {
    match crate::auth::agent_name() {
        Some(agent) if r.intent.source != agent => Err(Status::permission_denied(format!(
            "agent {agent:?} reads only its own intents; {} was submitted by {:?}",
            r.id, r.intent.source
        ))),
        _ => Ok(()),
    }
}

fn forward<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    crate::auth::forward_credentials(&mut req);
    req.set_timeout(FORWARD_TIMEOUT);
    req
}

/// Longer than the leader's own write timeout (5 s by default), so its answer arrives.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

/// A forward that never reached the leader, or got no answer, is this node's lack of a
/// quorum from the client's point of view; the leader's own answers pass through unchanged.
fn forward_failed(addr: &str, s: Status) -> Status {
    let lost = matches!(
        s.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) || (s.code() == tonic::Code::Unavailable && !s.message().starts_with("NO_QUORUM"));
    if !lost {
        return s;
    }
    Status::unavailable(format!(
        "NO_QUORUM: this node could not reach the leader at {addr} ({}). If the request reached \
         it, retrying with the same idempotency key returns it without running it twice",
        s.message()
    ))
}

pub fn intent_from_pb(r: &pb::SubmitIntentRequest) -> Result<Intent, FieldError> {
    let urgency = if r.urgency.is_empty() {
        Urgency::Info
    } else {
        Urgency::parse(&r.urgency)?
    };
    let location = Location::parse("location", &r.location)?;
    let i = Intent {
        class: r.class.clone(),
        urgency,
        subject: r.subject.clone(),
        location,
        context: r
            .context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        source: if r.source.is_empty() {
            "client".into()
        } else {
            r.source.clone()
        },
        idempotency_key: r.idempotency_key.clone(),
    };
    Ok(i)
}

fn urgency_name(u: Urgency) -> &'static str {
    match u {
        Urgency::Info => "info",
        Urgency::Warning => "warning",
        Urgency::Alert => "alert",
        Urgency::Emergency => "emergency",
    }
}

fn outcome_view(o: &Option<ActionOutcome>) -> (String, String) {
    match o {
        None => (String::new(), String::new()),
        Some(ActionOutcome::Applied) => ("APPLIED".into(), String::new()),
        Some(ActionOutcome::AlreadyApplied) => (
            "ALREADY_APPLIED".into(),
            "the device had applied this action id before".into(),
        ),
        Some(ActionOutcome::StaleToken) => (
            "STALE_TOKEN".into(),
            "the device refused an outdated leadership".into(),
        ),
        Some(ActionOutcome::Failed { reason }) => ("FAILED".into(), reason.clone()),
        Some(ActionOutcome::OutcomeUnknown { reason }) => {
            ("OUTCOME_UNKNOWN".into(), reason.clone())
        }
        Some(ActionOutcome::Expired { reason }) => ("EXPIRED".into(), reason.clone()),
        Some(ActionOutcome::Cancelled { reason }) => ("CANCELLED".into(), reason.clone()),
    }
}

fn planned_view(id: String, a: &PlannedAction) -> pb::ActionView {
    pb::ActionView {
        id,
        device: a.device.clone(),
        capability: a.capability.clone(),
        state: a.state.clone(),
        needs_approval: a.needs_approval,
        ..Default::default()
    }
}

fn action_view(a: &ActionRecord) -> pb::ActionView {
    let (outcome, detail) = outcome_view(&a.outcome);
    pb::ActionView {
        outcome,
        detail,
        token_term: a.token.map_or(0, |t| t.term),
        token_leader: a.token.map_or(0, |t| t.leader),
        token_index: a.token.map_or(0, |t| t.index),
        ..planned_view(a.id.clone(), &a.action)
    }
}

fn verdicts(p: &Plan) -> Vec<pb::Verdict> {
    p.verdicts
        .iter()
        .map(|v| pb::Verdict {
            device: v.device.clone(),
            included: v.included,
            reason: v.reason.clone(),
        })
        .collect()
}

pub fn record_view(r: &IntentRecord) -> pb::IntentView {
    pb::IntentView {
        id: r.id.clone(),
        status: match r.status {
            IntentStatus::AwaitingApproval => "awaiting_approval",
            IntentStatus::Accepted => "accepted",
            IntentStatus::Done => "done",
            // Some action did not apply: "partial" when others did, else "failed".
            IntentStatus::Failed
                if r.actions
                    .iter()
                    .any(|a| a.outcome.as_ref().is_some_and(ActionOutcome::applied)) =>
            {
                "partial"
            }
            IntentStatus::Failed => "failed",
            IntentStatus::NoAction => "no_action",
        }
        .into(),
        index: r.index,
        class: r.intent.class.clone(),
        urgency: urgency_name(r.intent.urgency).into(),
        actions: r.actions.iter().map(action_view).collect(),
        verdicts: verdicts(&r.plan),
        needs_confirmation: r.plan.needs_confirmation,
        approved_by: r.approved_by.clone().unwrap_or_default(),
        reads: r.plan.reads.clone(),
        notes: r.plan.notes.clone(),
        nothing_to_do: r.plan.nothing_to_do.clone().unwrap_or_default(),
    }
}

pub fn plan_view(p: &Plan) -> pb::IntentView {
    pb::IntentView {
        status: "dry_run".into(),
        class: p.class.clone(),
        urgency: urgency_name(p.urgency).into(),
        actions: p
            .actions
            .iter()
            .enumerate()
            .map(|(n, a)| planned_view(format!("(plan)/{n}"), a))
            .collect(),
        verdicts: verdicts(p),
        needs_confirmation: p.needs_confirmation,
        reads: p.reads.clone(),
        notes: p.notes.clone(),
        nothing_to_do: p.nothing_to_do.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn states_from_pb(
    m: &std::collections::HashMap<String, pb::StateList>,
) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.states.iter().cloned().collect::<BTreeSet<_>>()))
        .collect()
}

fn states_to_pb(
    m: &std::collections::BTreeMap<String, BTreeSet<String>>,
) -> std::collections::HashMap<String, pb::StateList> {
    m.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                pb::StateList {
                    states: v.iter().cloned().collect(),
                },
            )
        })
        .collect()
}

pub fn device_from_pb(d: &pb::DeviceManifest) -> Result<Device, FieldError> {
    let adapter = match d.adapter_kind.as_str() {
        "sim" => Adapter::Sim {
            address: d.adapter_target.clone(),
        },
        "http" => Adapter::Http {
            url: d.adapter_target.clone(),
        },
        "mqtt" => Adapter::Mqtt {
            topic: d.adapter_target.clone(),
        },
        other => {
            return Err(FieldError::new(
                "adapter_kind",
                format!("{other:?} is not sim, http or mqtt"),
            ));
        }
    };
    if d.adapter_target.is_empty() {
        return Err(FieldError::new(
            "adapter_target",
            "required (sim: local:<name> or host:port; http: URL; mqtt: topic)",
        ));
    }
    check_text("adapter_target", &d.adapter_target, 512)?;
    check_text("name", &d.name, MAX_NAME)?;
    let dev = Device {
        id: d.id.clone(),
        name: d.name.clone(),
        location: Location::parse("location", &d.location)?,
        tags: d.tags.iter().cloned().collect(),
        sensors: d.sensors.iter().cloned().collect(),
        actuators: states_from_pb(&d.actuators),
        emergency_capable: d.emergency_capable,
        emergency_actions: states_from_pb(&d.emergency_actions),
        adapter,
    };
    dev.validate()?;
    Ok(dev)
}

pub fn device_to_pb(d: &Device) -> pb::DeviceManifest {
    let (kind, target) = match &d.adapter {
        Adapter::Sim { address } => ("sim", address.clone()),
        Adapter::Http { url } => ("http", url.clone()),
        Adapter::Mqtt { topic } => ("mqtt", topic.clone()),
    };
    pb::DeviceManifest {
        id: d.id.clone(),
        name: d.name.clone(),
        location: d.location.to_string(),
        tags: d.tags.iter().cloned().collect(),
        sensors: d.sensors.iter().cloned().collect(),
        actuators: states_to_pb(&d.actuators),
        emergency_capable: d.emergency_capable,
        emergency_actions: states_to_pb(&d.emergency_actions),
        adapter_kind: kind.into(),
        adapter_target: target,
    }
}

#[derive(Clone)]
pub struct DomainApi {
    node: Arc<Node>,
}

impl DomainApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Runs `local`; on a follower, forwards once to the leader with `remote`.
macro_rules! or_forward {
    ($req:expr, $local:expr, |$addr:ident, $msg:ident| $remote:expr) => {{
        let forwarded = $req.metadata().contains_key(FORWARDED);
        let $msg = $req.into_inner();
        match $local(&$msg).await {
            Ok(v) => Ok(Response::new(v)),
            Err(NodeError::NotLeader { addr: $addr, .. }) if !forwarded => {
                let to = $addr.clone();
                $remote.await.map_err(|s| forward_failed(&to, s))
            }
            Err(e) => Err(to_status(e)),
        }
    }};
}

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::IntentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::intents_server::Intents for DomainApi {
    async fn submit(
        &self,
        req: Request<pb::SubmitIntentRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::SubmitIntentRequest| {
                let node = node.clone();
                let m = m.clone();
                async move {
                    let mut m = m;
                    if let Some(agent) = crate::auth::agent_name() {
                        if m.source.is_empty() {
                            m.source = agent;
                        } else if m.source != agent {
                            return Err(NodeError::Forbidden(format!(
                                "agent {agent:?} submits intents only as source {agent:?}, not {:?}",
                                m.source
                            )));
                        }
                    }
                    let i = intent_from_pb(&m)?;
                    crate::auth::check_grants(&i, &node.devices()?)
                        .map_err(|e| NodeError::Forbidden(e.to_string()))?;
                    if m.dry_run {
                        return node.explain(&i).map(|p| plan_view(&p));
                    }
                    node.submit_intent(i).await.map(|r| record_view(&r))
                }
            },
            |addr, msg| async move {
                IntentsClient::new(leader_channel(&self.node, &addr)?)
                    .submit(forward(msg))
                    .await
            }
        )
    }

    async fn get(
        &self,
        req: Request<pb::GetIntentRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let id = req.into_inner().id;
        check_intent_id("id", &id).map_err(invalid)?;
        match self.node.get_intent(&id).map_err(to_status)? {
            Some(r) => {
                own_intent(&r)?;
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
        let id = req.into_inner().id;
        check_intent_id("id", &id).map_err(invalid)?;
        if let Some(r) = self.node.get_intent(&id).map_err(to_status)? {
            own_intent(&r)?;
        } else if crate::auth::agent_name().is_some() {
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
                        events.push((stage.to_string(), String::new()));
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
        let mut m = req.into_inner();
        if m.idempotency_key.is_empty() {
            m.idempotency_key = "explain".into();
        }
        let i = intent_from_pb(&m).map_err(invalid)?;
        let devices = self.node.devices().map_err(to_status)?;
        crate::auth::check_grants(&i, &devices)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let p = self.node.explain(&i).map_err(to_status)?;
        Ok(Response::new(plan_view(&p)))
    }

    async fn approve(
        &self,
        req: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::ApproveRequest| {
                let node = node.clone();
                let m = m.clone();
                async move {
                    let by = if m.by.is_empty() {
                        "operator".to_string()
                    } else {
                        m.by.clone()
                    };
                    node.approve(&m.id, &by).await.map(|r| record_view(&r))
                }
            },
            |addr, msg| async move {
                IntentsClient::new(leader_channel(&self.node, &addr)?)
                    .approve(forward(msg))
                    .await
            }
        )
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tonic::async_trait]
impl pb::devices_server::Devices for DomainApi {
    async fn register(
        &self,
        req: Request<pb::DeviceManifest>,
    ) -> Result<Response<pb::DeviceManifest>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::DeviceManifest| {
                let node = node.clone();
                let m = m.clone();
                async move {
                    let d = device_from_pb(&m)?;
                    node.register_device(d.clone())
                        .await
                        .map(|_| device_to_pb(&d))
                }
            },
            |addr, msg| async move {
                DevicesClient::new(leader_channel(&self.node, &addr)?)
                    .register(forward(msg))
                    .await
            }
        )
    }

    async fn list(
        &self,
        _req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let devices = self.node.devices().map_err(to_status)?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.iter().map(device_to_pb).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceManifest>, Status> {
        let id = req.into_inner().id;
        check_id("id", &id).map_err(invalid)?;
        let devices = self.node.devices().map_err(to_status)?;
        devices
            .iter()
            .find(|d| d.id == id)
            .map(|d| Response::new(device_to_pb(d)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no device {id:?}; `hearth device list` shows the registered ones"
                ))
            })
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::RemoveDeviceRequest| remove_device(node.clone(), m.id.clone()),
            |addr, msg| async move {
                DevicesClient::new(leader_channel(&self.node, &addr)?)
                    .remove(forward(msg))
                    .await
            }
        )
    }

    async fn refence(
        &self,
        req: Request<pb::RefenceRequest>,
    ) -> Result<Response<pb::IntentView>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::RefenceRequest| {
                let node = node.clone();
                let m = m.clone();
                async move {
                    node.refence(m.devices.clone(), m.all, &m.reason)
                        .await
                        .map(|r| record_view(&r))
                }
            },
            |addr, msg| async move {
                DevicesClient::new(leader_channel(&self.node, &addr)?)
                    .refence(forward(msg))
                    .await
            }
        )
    }
}

/// `Devices.Remove` on this node: checked against the registry on the leader before anything
/// is appended (an unknown id is NOT_FOUND, a device a policy names is refused), then one
/// `RemoveDevice` entry naming the principal. A follower answers `NotLeader` (forwarded).
async fn remove_device(node: Arc<Node>, id: String) -> Result<pb::RemoveDeviceResponse, NodeError> {
    use hearth_core::domain::{Command, Outcome};
    check_id("id", &id)?;
    let by = crate::auth::current_name().unwrap_or_else(|| "operator".to_string());
    if node.is_leader() {
        let mut devices: std::collections::BTreeMap<String, Device> = node
            .devices()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        if devices.remove(&id).is_none() {
            return Err(NodeError::NotFound(format!(
                "no device {id:?} is registered; `hearth device list` shows the registered ones"
            )));
        }
        let classes = node
            .classes()?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        if let Err(e) = hearth_core::policy::check_references(&node.policies()?, &devices, &classes)
        {
            return Err(NodeError::Refused(format!(
                "device {id} cannot be removed while a policy names it: {}; change or remove                  that policy first (`hearth policy remove ID`)",
                e.problem
            )));
        }
    }
    let a = node
        .propose(&Command::RemoveDevice {
            id: id.clone(),
            by: by.clone(),
        })
        .await?;
    match a.outcome {
        Some(Outcome::Removed { cancelled }) => Ok(pb::RemoveDeviceResponse {
            id,
            index: a.index,
            by,
            cancelled_intents: cancelled,
        }),
        // Removed by someone else between the check and the commit.
        Some(Outcome::Refused { reason }) => Err(NodeError::NotFound(reason)),
        other => Err(NodeError::Fatal(format!(
            "unexpected outcome of a device removal: {other:?}"
        ))),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, NodeError> {
    serde_json::from_str(s).map_err(|e| NodeError::Invalid {
        field: "json",
        problem: format!("the {what} document is not valid: {e}"),
    })
}

/// The intent class in an `ApplyClass` document, checked as the server checks it before
/// anything is appended.
pub fn class_from_doc(json: &str) -> Result<IntentClass, NodeError> {
    let class: IntentClass = parse_json("intent class", json)?;
    class.validate()?;
    Ok(class)
}

/// The policies in an `ApplyPolicies` document, checked as the server checks them before
/// anything is appended.
pub fn policies_from_doc(json: &str) -> Result<Vec<Policy>, NodeError> {
    let doc: hearth_core::policy::PolicyDocument = parse_json("policy", json)?;
    hearth_core::policy::validate_set(&doc.policies)?;
    Ok(doc.policies)
}

#[tonic::async_trait]
impl pb::policies_server::Policies for DomainApi {
    async fn apply_class(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::ApplyDocument| {
                let node = node.clone();
                let json = m.json.clone();
                async move {
                    let class = class_from_doc(&json)?;
                    node.apply_class(class)
                        .await
                        .map(|a| pb::ApplyResult { index: a.index })
                }
            },
            |addr, msg| async move {
                PoliciesClient::new(leader_channel(&self.node, &addr)?)
                    .apply_class(forward(msg))
                    .await
            }
        )
    }

    async fn apply_policies(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::ApplyDocument| {
                let node = node.clone();
                let json = m.json.clone();
                let expect = m.expect_sha256.clone();
                async move {
                    let policies = policies_from_doc(&json)?;
                    let expect = (!expect.is_empty()).then_some(expect.as_str());
                    node.apply_policies(policies, expect)
                        .await
                        .map(|a| pb::ApplyResult { index: a.index })
                }
            },
            |addr, msg| async move {
                PoliciesClient::new(leader_channel(&self.node, &addr)?)
                    .apply_policies(forward(msg))
                    .await
            }
        )
    }

    async fn add_policy(
        &self,
        req: Request<pb::ApplyDocument>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::ApplyDocument| {
                let node = node.clone();
                let json = m.json.clone();
                async move {
                    let mut policies = policies_from_doc(&json)?;
                    let (Some(one), true) = (policies.pop(), policies.is_empty()) else {
                        return Err(NodeError::Invalid {
                            field: "policies",
                            problem: "AddPolicy takes exactly one policy".into(),
                        });
                    };
                    node.add_policy(one)
                        .await
                        .map(|a| pb::ApplyResult { index: a.index })
                }
            },
            |addr, msg| async move {
                PoliciesClient::new(leader_channel(&self.node, &addr)?)
                    .add_policy(forward(msg))
                    .await
            }
        )
    }

    async fn remove_policy(
        &self,
        req: Request<pb::RemovePolicyRequest>,
    ) -> Result<Response<pb::ApplyResult>, Status> {
        let node = self.node.clone();
        or_forward!(
            req,
            |m: &pb::RemovePolicyRequest| {
                let node = node.clone();
                let id = m.id.clone();
                async move {
                    node.remove_policy(&id)
                        .await
                        .map(|a| pb::ApplyResult { index: a.index })
                }
            },
            |addr, msg| async move {
                PoliciesClient::new(leader_channel(&self.node, &addr)?)
                    .remove_policy(forward(msg))
                    .await
            }
        )
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
