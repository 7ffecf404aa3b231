//! `--output json`: the stable JSON shapes of what commands read. Field names here are a
//! contract with scripts and agents: add fields, never rename or remove one.

use hearth_proto::v1 as pb;
use serde_json::{Value, json};

/// Prints `v` as one line of JSON.
pub fn print(v: &Value) {
    outln!("{v}");
}

fn states(m: &std::collections::HashMap<String, pb::StateList>) -> Value {
    let sorted: std::collections::BTreeMap<&String, Vec<&String>> = m
        .iter()
        .map(|(k, v)| {
            let mut s: Vec<&String> = v.states.iter().collect();
            s.sort();
            (k, s)
        })
        .collect();
    json!(sorted)
}

pub fn device(d: &pb::DeviceManifest) -> Value {
    let mut tags = d.tags.clone();
    tags.sort();
    let mut sensors = d.sensors.clone();
    sensors.sort();
    json!({
        "id": d.id,
        "name": d.name,
        "location": d.location,
        "tags": tags,
        "sensors": sensors,
        "actuators": states(&d.actuators),
        "emergency_capable": d.emergency_capable,
        "emergency_actions": states(&d.emergency_actions),
        "adapter": { "kind": d.adapter_kind, "target": d.adapter_target },
    })
}

fn action(a: &pb::ActionView) -> Value {
    let token = (a.token_term != 0 || a.token_leader != 0)
        .then(|| json!({ "term": a.token_term, "leader": a.token_leader, "index": a.token_index }));
    json!({
        "id": a.id,
        "device": a.device,
        "capability": a.capability,
        "state": a.state,
        // null while pending
        "outcome": (!a.outcome.is_empty()).then_some(&a.outcome),
        "detail": a.detail,
        "needs_approval": a.needs_approval,
        "token": token,
    })
}

pub fn intent(v: &pb::IntentView) -> Value {
    json!({
        "id": (!v.id.is_empty()).then_some(&v.id),
        "status": v.status,
        "index": v.index,
        "class": v.class,
        "urgency": v.urgency,
        "needs_confirmation": v.needs_confirmation,
        "approved_by": (!v.approved_by.is_empty()).then_some(&v.approved_by),
        "actions": v.actions.iter().map(action).collect::<Vec<_>>(),
        "verdicts": v.verdicts.iter().map(|d| json!({
            "device": d.device, "included": d.included, "reason": d.reason,
        })).collect::<Vec<_>>(),
        "reads": v.reads,
        "notes": v.notes,
        "nothing_to_do": (!v.nothing_to_do.is_empty()).then_some(&v.nothing_to_do),
        "source": (!v.source.is_empty()).then_some(&v.source),
        "at_ms": (v.at_ms != 0).then_some(v.at_ms),
        "approval_reason": (!v.approval_reason.is_empty()).then_some(&v.approval_reason),
        // null unless it waits for a person
        "waiting_for": waiting(v),
        "denied": (!v.denied_by.is_empty()).then(|| json!({
            "by": v.denied_by,
            "reason": v.denied_reason,
            "at_ms": v.denied_at_ms,
            "time": super::timefmt::rfc3339(v.denied_at_ms),
        })),
    })
}

/// What a held intent waits for, or null.
fn waiting(v: &pb::IntentView) -> Value {
    if v.waiting_for.is_empty() {
        return Value::Null;
    }
    let expires = (v.approval_expires_at_ms != 0).then_some(v.approval_expires_at_ms);
    json!({
        "text": v.waiting_for,
        "actions": v.waiting_actions,
        "policies": v.approval_policies,
        "expires_at_ms": expires,
        "expires": expires.map(super::timefmt::rfc3339),
    })
}

/// One pending intent, with how long it has waited and has left at `now_ms`.
pub fn pending(v: &pb::IntentView, now_ms: u64) -> Value {
    let mut j = intent(v);
    j["age_ms"] = json!(now_ms.saturating_sub(v.at_ms));
    j["expires_in_ms"] = json!(
        (v.approval_expires_at_ms != 0).then(|| v.approval_expires_at_ms.saturating_sub(now_ms))
    );
    j
}

pub fn event(e: &pb::IntentEvent) -> Value {
    json!({
        "stage": e.stage,
        "detail": e.detail,
        "intent": e.intent.as_ref().map(intent),
    })
}

pub fn refused(r: &pb::RefusedCall) -> Value {
    json!({
        "refused": true,
        "at_ms": r.at_ms,
        "time": super::timefmt::rfc3339(r.at_ms),
        "node": r.node_id,
        "method": r.method,
        "code": r.code,
        "principal": (!r.principal.is_empty()).then_some(&r.principal),
        "message": r.message,
        "peer": (!r.peer.is_empty()).then_some(&r.peer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_stable_and_pending_is_null() {
        let v = pb::IntentView {
            id: "i-0123456789abcdef".into(),
            status: "accepted".into(),
            actions: vec![pb::ActionView {
                id: "i-0123456789abcdef/0".into(),
                device: "siren".into(),
                state: "on".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = intent(&v);
        assert_eq!(j["id"], "i-0123456789abcdef");
        assert_eq!(j["actions"][0]["device"], "siren");
        assert!(j["actions"][0]["outcome"].is_null());
        assert!(j["actions"][0]["token"].is_null());
        assert!(j["approved_by"].is_null());
        let dry = intent(&pb::IntentView::default());
        assert!(dry["id"].is_null());
        let d = device(&pb::DeviceManifest {
            id: "lamp".into(),
            tags: vec!["b".into(), "a".into()],
            actuators: [(
                "light".to_string(),
                pb::StateList {
                    states: vec!["on".into(), "off".into()],
                },
            )]
            .into(),
            adapter_kind: "sim".into(),
            ..Default::default()
        });
        assert_eq!(d["tags"], json!(["a", "b"]));
        assert_eq!(d["actuators"]["light"], json!(["off", "on"]));
        assert_eq!(d["adapter"]["kind"], "sim");
    }
}
