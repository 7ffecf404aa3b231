//! Every conversion between the protobuf messages of `hearth.v1` and Hearth's own types, in
//! one place: the services read requests and write answers only through these, and clients
//! (the CLI, `hearth dev`, tests) use the public ones re-exported by [`crate::api`] to build
//! requests exactly as the server reads them. Validation lives in `hearth-core`; this file
//! only maps.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hearth_core::domain::{ActionOutcome, ActionRecord, IntentRecord, IntentStatus};
use hearth_core::intent::{
    Adapter, Device, FieldError, Intent, IntentClass, Location, MAX_NAME, Urgency, check_text,
};
use hearth_core::policy::Policy;
use hearth_core::resolver::{Plan, PlannedAction};
use hearth_proto::v1 as pb;
use hearth_store::Member;
use tonic::Status;

use crate::config::Role;
use crate::error::NodeError;
use crate::node::{NodeState, StatusView};

pub fn status_to_proto(s: &StatusView) -> pb::NodeStatus {
    pb::NodeStatus {
        node_id: s.node_id,
        role: s.role.name().to_string(),
        state: s.state_text(),
        node_state: node_state_to_proto(s.state) as i32,
        vote_held: s.vote_held,
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
                role: member_role(m).name().to_string(),
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
        incarnation: s.incarnation.clone(),
        hold_reason: s.hold_reason.clone().unwrap_or_default(),
        cosigned: s
            .cosigned
            .iter()
            .map(|(id, i)| pb::Progress {
                node_id: *id,
                matched_index: Some(*i),
            })
            .collect(),
        admitted: s.admitted,
    }
}

pub fn status_from_proto(p: &pb::NodeStatus) -> StatusView {
    let (state, vote_held) = match node_state_from_proto(p.node_state()) {
        Some(s) => (s, p.vote_held),
        // A node of an older version sends the state as text only.
        None => match p.state.strip_suffix(" (vote held)") {
            Some(name) => (NodeState::parse(name), true),
            None => (NodeState::parse(&p.state), false),
        },
    };
    StatusView {
        node_id: p.node_id,
        role: if p.role == Role::Witness.name() {
            Role::Witness
        } else {
            Role::Hub
        },
        state,
        vote_held,
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
                        witness: m.role == Role::Witness.name(),
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
        incarnation: p.incarnation.clone(),
        hold_reason: (!p.hold_reason.is_empty()).then(|| p.hold_reason.clone()),
        cosigned: p
            .cosigned
            .iter()
            .filter_map(|c| Some((c.node_id, c.matched_index?)))
            .collect(),
        admitted: p.admitted,
    }
}

fn node_state_to_proto(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Leader => pb::NodeState::Leader,
        NodeState::Follower => pb::NodeState::Follower,
        NodeState::Candidate => pb::NodeState::Candidate,
        NodeState::Learner => pb::NodeState::Learner,
        NodeState::Shutdown => pb::NodeState::Shutdown,
        NodeState::Stopped => pb::NodeState::Stopped,
        NodeState::Unknown => pb::NodeState::Unspecified,
    }
}

/// `None` for a node of an older version, which sends no typed state.
fn node_state_from_proto(s: pb::NodeState) -> Option<NodeState> {
    Some(match s {
        pb::NodeState::Unspecified => return None,
        pb::NodeState::Leader => NodeState::Leader,
        pb::NodeState::Follower => NodeState::Follower,
        pb::NodeState::Candidate => NodeState::Candidate,
        pb::NodeState::Learner => NodeState::Learner,
        pb::NodeState::Shutdown => NodeState::Shutdown,
        pb::NodeState::Stopped => NodeState::Stopped,
    })
}

/// The `role` field of a membership request.
pub(crate) fn parse_role(role: &str) -> Result<Role, Status> {
    [Role::Hub, Role::Witness]
        .into_iter()
        .find(|r| r.name() == role)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "field `role`: {role:?} is neither \"hub\" nor \"witness\""
            ))
        })
}

/// A member's role (the membership stores it as a flag, in the chain's own bytes).
fn member_role(m: &Member) -> Role {
    if m.witness { Role::Witness } else { Role::Hub }
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

pub(crate) fn outcome_view(o: &Option<ActionOutcome>) -> (String, String) {
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
        Some(ActionOutcome::Denied { reason }) => ("DENIED".into(), reason.clone()),
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
            IntentStatus::Denied => "denied",
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
        source: r.intent.source.clone(),
        at_ms: r.at_ms,
        approval_reason: r.approval_reason.clone().unwrap_or_default(),
        denied_by: r.denied.as_ref().map(|d| d.by.clone()).unwrap_or_default(),
        denied_reason: r
            .denied
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default(),
        denied_at_ms: r.denied.as_ref().map_or(0, |d| d.at_ms),
        ..waiting_view(r)
    }
}

/// What a held intent waits for (every field empty when it does not wait).
fn waiting_view(r: &IntentRecord) -> pb::IntentView {
    match hearth_core::approval::waiting_for(r) {
        Some(w) => pb::IntentView {
            waiting_for: w.text,
            approval_expires_at_ms: w.expires_at_ms.unwrap_or(0),
            approval_policies: w.policies,
            waiting_actions: w.actions.into_iter().map(|a| a.id).collect(),
            ..Default::default()
        },
        None => pb::IntentView::default(),
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

fn states_from_pb(m: &HashMap<String, pb::StateList>) -> BTreeMap<String, BTreeSet<String>> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.states.iter().cloned().collect::<BTreeSet<_>>()))
        .collect()
}

fn states_to_pb(m: &BTreeMap<String, BTreeSet<String>>) -> HashMap<String, pb::StateList> {
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

    /// The state travels typed; a node of an older version sends only the text, which is
    /// read as before (a held vote included). The text stays what people read.
    #[test]
    fn the_state_is_typed_and_an_older_nodes_text_still_reads() {
        let mut v = status_from_proto(&pb::NodeStatus::default());
        for (state, held, text) in [
            (NodeState::Leader, false, "Leader"),
            (NodeState::Follower, true, "Follower (vote held)"),
            (NodeState::Candidate, false, "Candidate"),
            (NodeState::Learner, true, "Learner (vote held)"),
            (NodeState::Stopped, true, "Stopped"),
        ] {
            v.state = state;
            v.vote_held = held;
            let p = status_to_proto(&v);
            assert_eq!(p.state, text);
            let back = status_from_proto(&p);
            assert_eq!((back.state, back.vote_held), (state, held));
            // An older node: no typed state, the same text.
            let old = pb::NodeStatus {
                node_state: 0,
                vote_held: false,
                ..p
            };
            let read = status_from_proto(&old);
            assert_eq!(read.state, state, "{text}");
            assert_eq!(read.state_text(), text);
        }
        let odd = pb::NodeStatus {
            state: "Elder".into(),
            ..Default::default()
        };
        assert_eq!(status_from_proto(&odd).state, NodeState::Unknown);
    }
}
