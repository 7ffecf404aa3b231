//! DoSync's intent endpoints on Hearth's `Intents` service: `POST /v1/intent/async`
//! (`Intents.Submit`), `GET /v1/intent/{id}` (`Intents.Get`), the explain endpoint
//! (`Intents.Explain`), intent classes (read from the replicated state), and the operator's
//! confirmation (`Intents.Approve`) with what an intent holds for it.
//!
//! A DoSync intent is accepted once its entry is committed by a quorum (Hearth answers after
//! the commit, not before), so a `200` here means the decision is in the chain; the devices
//! are driven after, by the leader, and `GET /v1/intent/{id}` follows them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use hearth_proto::v1 as pb;
use hearth_proto::v1::intents_server::Intents;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::error::RestError;
use super::super::input;
use super::super::{HttpState, Json};
use super::devices::verb_of;
use crate::auth::{ClientRole, Principal};

/// `IntentRequest` of DoSync's openapi.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentBody {
    intent: String,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

const URGENCIES: &[&str] = &["emergency", "alert", "warning", "info"];

fn urgency(u: Option<&str>, loc: &[&str]) -> Result<String, RestError> {
    let u = u.unwrap_or("info");
    if URGENCIES.contains(&u) {
        Ok(u.to_string())
    } else {
        Err(RestError::Validation {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: format!("Urgency '{u}' not valid. Use: emergency, alert, warning, info"),
            kind: "value_error",
        })
    }
}

/// DoSync's context (any JSON) as Hearth's (text values): strings as they are, anything
/// else as its JSON text. `location` becomes the intent's location (absent: the whole
/// household, `home`, where DoSync devices are registered by default); `action_types: ["lock"]`
/// becomes `state = locked` (how DoSync says which of a class's actions it means).
fn context(ctx: Map<String, Value>) -> Result<(String, HashMap<String, String>), RestError> {
    let mut location = super::devices::DEFAULT_LOCATION.to_string();
    let mut out = HashMap::new();
    for (k, v) in ctx {
        if k == "location" {
            location = v
                .as_str()
                .ok_or_else(|| RestError::field(&["body", "context", "location"], "a string"))?
                .to_string();
            continue;
        }
        if k == "action_types"
            && let Some(list) = v.as_array()
            && let [Value::String(only)] = list.as_slice()
        {
            let state = match only.as_str() {
                "lock" => Some("locked"),
                "unlock" => Some("unlocked"),
                _ => None,
            };
            if let Some(s) = state {
                out.insert("state".to_string(), s.to_string());
            }
        }
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(k, text);
    }
    Ok((location, out))
}

/// A fresh idempotency key for a request that brought none: DoSync runs such a request as a
/// new intent every time, and so does Hearth.
fn fresh_key() -> Result<String, RestError> {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b)
        .map_err(|e| RestError::Internal(format!("no randomness for a key: {e}")))?;
    Ok(format!("rest-{}", hex::encode(b)))
}

/// The Hearth source of a DoSync intent: the caller's token name (agents act only as
/// themselves, and the chain names who asked); without authentication, DoSync's `source`.
fn source(caller: Option<&Principal>, body: Option<&str>) -> String {
    match caller {
        Some(p) if !p.is_node() => p.name.clone(),
        _ => body.unwrap_or("api").to_string(),
    }
}

pub async fn submit(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    let caller = s.caller(&headers, ClientRole::Agent, "POST /v1/intent/async")?;
    let raw = input::bytes(body).await?;
    let b: IntentBody = input::json(&raw)?;
    let urgency = urgency(b.urgency.as_deref(), &["body", "urgency"])?;
    let (location, mut ctx) = context(b.context)?;
    if let Some(src) = &b.source {
        ctx.insert("dosync_source".into(), src.clone());
    }
    let key = match b.idempotency_key {
        Some(k) => k,
        None => fresh_key()?,
    };
    let req = pb::SubmitIntentRequest {
        class: b.intent.clone(),
        urgency: urgency.clone(),
        subject: b.subject.unwrap_or_default(),
        location,
        context: ctx,
        idempotency_key: key,
        source: source(caller.as_ref(), b.source.as_deref()),
        dry_run: false,
    };
    let v = crate::auth::as_caller(caller, s.api.submit(tonic::Request::new(req)))
        .await?
        .into_inner();
    tracing::info!(node = s.node.id, intent = %v.id, "intent accepted over HTTP");
    let mut out = intent_json(&v);
    out["intent"] = json!(b.intent);
    out["urgency"] = json!(urgency);
    Ok(Json(out))
}

/// DoSync's result words for a Hearth intent's status: `pending` until every action has an
/// outcome, then `success`, `partial`, `failed`; `held_for_confirmation` while it waits for
/// an operator; `no_action` when the plan acts on nothing. `hearth_status` has Hearth's own.
fn dosync_status(hearth: &str) -> &'static str {
    match hearth {
        "accepted" => "pending",
        "awaiting_approval" => "held_for_confirmation",
        "done" => "success",
        "partial" => "partial",
        "failed" => "failed",
        "no_action" => "no_action",
        _ => "unknown",
    }
}

fn intent_json(v: &pb::IntentView) -> Value {
    let results: Vec<Value> = v
        .actions
        .iter()
        .map(|a| {
            json!({
                "device_id": a.device,
                "action": verb_of(&a.capability, &a.state),
                "capability": a.capability,
                "state": a.state,
                "success": matches!(a.outcome.as_str(), "APPLIED" | "ALREADY_APPLIED"),
                "outcome": if a.outcome.is_empty() { Value::Null } else { json!(a.outcome) },
                "error": if a.detail.is_empty() { Value::Null } else { json!(a.detail) },
                "held_for_confirmation": a.needs_approval && a.outcome.is_empty(),
                "fencing_token": {"term": a.token_term, "leader": a.token_leader,
                                  "index": a.token_index},
            })
        })
        .collect();
    let failed: Vec<&str> = v
        .actions
        .iter()
        .filter(|a| {
            !a.outcome.is_empty() && !matches!(a.outcome.as_str(), "APPLIED" | "ALREADY_APPLIED")
        })
        .map(|a| a.device.as_str())
        .collect();
    let status = dosync_status(&v.status);
    json!({
        "intent_id": v.id,
        "status": status,
        "hearth_status": v.status,
        "success": match status { "success" => json!(true), "pending" | "held_for_confirmation" => Value::Null, _ => json!(false) },
        "intent": v.class,
        "urgency": v.urgency,
        "index": v.index,
        "actions_taken": v.actions.iter().filter(|a| !a.outcome.is_empty()).count(),
        "actions_planned": v.actions.len(),
        "failed_devices": failed,
        "results": results,
        "reads": v.reads,
        "notes": v.notes,
        "nothing_to_do": if v.nothing_to_do.is_empty() { Value::Null } else { json!(v.nothing_to_do) },
        "approved_by": if v.approved_by.is_empty() { Value::Null } else { json!(v.approved_by) },
    })
}

pub async fn get(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let caller = s.caller(&headers, ClientRole::Agent, "GET /v1/intent/{intent_id}")?;
    input::intent_id(&id)?;
    let v = crate::auth::as_caller(
        caller,
        s.api.get(tonic::Request::new(pb::GetIntentRequest { id })),
    )
    .await?
    .into_inner();
    Ok(Json(intent_json(&v)))
}

pub async fn explain(
    State(s): State<Arc<HttpState>>,
    Path(class): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let caller = s.caller(
        &headers,
        ClientRole::Agent,
        "GET /v1/intents/{class}/explain",
    )?;
    hearth_core::intent::check_id("intent_class", &class)
        .map_err(|e| RestError::field(&["path", "intent_class"], e.to_string()))?;
    let q = input::query(q.as_deref(), &["urgency", "location"])?;
    let urgency = urgency(input::get(&q, "urgency"), &["query", "urgency"])?;
    let req = pb::SubmitIntentRequest {
        class: class.clone(),
        urgency: urgency.clone(),
        location: input::get(&q, "location")
            .filter(|l| !l.is_empty())
            .unwrap_or(super::devices::DEFAULT_LOCATION)
            .to_string(),
        source: source(caller.as_ref(), None),
        idempotency_key: "explain".into(),
        ..Default::default()
    };
    let v = crate::auth::as_caller(caller, s.api.explain(tonic::Request::new(req)))
        .await?
        .into_inner();
    let included: Vec<Value> = v
        .verdicts
        .iter()
        .filter(|x| x.included)
        .map(|x| {
            let actions: Vec<String> = v
                .actions
                .iter()
                .filter(|a| a.device == x.device)
                .map(|a| verb_of(&a.capability, &a.state))
                .collect();
            json!({"device_id": x.device, "reason": x.reason, "actions": actions})
        })
        .collect();
    let excluded: Vec<Value> = v
        .verdicts
        .iter()
        .filter(|x| !x.included)
        .map(|x| json!({"device_id": x.device, "reason": x.reason}))
        .collect();
    let devices: Vec<&str> = {
        let mut d: Vec<&str> = v.verdicts.iter().map(|x| x.device.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    let plan: Vec<Value> = v
        .actions
        .iter()
        .map(|a| {
            json!({"device_id": a.device, "action": verb_of(&a.capability, &a.state),
                        "capability": a.capability, "state": a.state,
                        "held_for_confirmation": a.needs_approval})
        })
        .collect();
    Ok(Json(json!({
        "intent": class,
        "urgency": urgency,
        "devices_evaluated": devices.len(),
        "devices_included": included.len(),
        "included": included,
        "excluded": excluded,
        "verdicts": v.verdicts.iter().map(|x| json!({"device_id": x.device, "included": x.included, "reason": x.reason})).collect::<Vec<_>>(),
        "plan": plan,
        "reads": v.reads,
        "notes": v.notes,
        "needs_confirmation": v.needs_confirmation,
        "nothing_to_do": if v.nothing_to_do.is_empty() { Value::Null } else { json!(v.nothing_to_do) },
        "scoring": "Hearth's resolver does not score: a device is in the plan when it has the \
                    class step's capability and tags, is in scope, and no policy leaves it out",
    })))
}

pub async fn classes(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/intent-classes")?;
    let list: Vec<Value> = s
        .node
        .classes()?
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "description": c.description,
                "repeat_safe": c.repeat_safe,
                "resolution_actuators": c.steps.iter().map(|st| st.capability.clone()).collect::<Vec<_>>(),
                "resolution_tags": c.steps.iter().flat_map(|st| st.tags.iter().cloned()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({"count": list.len(), "intent_classes": list})))
}

pub async fn add_class(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Operator, "POST /v1/intent-classes")?;
    Err(RestError::NotImplemented(
        "Hearth's intent classes are steps over capabilities and states, not DoSync's \
         resolution tags; add one with `hearth policy apply-class FILE` (Policies.ApplyClass). \
         Nothing was appended."
            .into(),
    ))
}

/// `POST /v1/intents/{id}/confirm`: releases what an intent holds for a person
/// (`Intents.Approve`), with the operator credential.
pub async fn confirm(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let op = s.operator(&headers, "POST /v1/intents/{intent_id}/confirm")?;
    input::intent_id(&id)?;
    let by = operator_name(op.as_ref());
    let req = pb::ApproveRequest {
        id: id.clone(),
        by: by.clone(),
        reason: String::new(),
    };
    let v = crate::auth::as_caller(op, s.api.approve(tonic::Request::new(req)))
        .await
        .map_err(|st| nothing_held(&id, st))?
        .into_inner();
    let mut out = intent_json(&v);
    out["confirmed_by"] = json!(by);
    out["confirmation"] = json!("confirmed");
    Ok(Json(out))
}

/// A decision refused because nothing is held (never was, or already decided): DoSync's 404.
fn nothing_held(id: &str, st: tonic::Status) -> RestError {
    match RestError::from(st) {
        RestError::Conflict(m) => RestError::NotFound(format!(
            "No actions are held for confirmation on intent '{id}': {m}"
        )),
        other => other,
    }
}

/// The name recorded for an operator's decision (`operator` without client authentication).
fn operator_name(op: Option<&Principal>) -> String {
    op.map_or_else(|| "operator".to_string(), |p| p.name.clone())
}

/// `GET /v1/intents/{id}/pending`: the actions an intent holds for a person (404: none).
pub async fn pending(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let caller = s.caller(
        &headers,
        ClientRole::Agent,
        "GET /v1/intents/{intent_id}/pending",
    )?;
    input::intent_id(&id)?;
    let v = crate::auth::as_caller(
        caller,
        s.api
            .get(tonic::Request::new(pb::GetIntentRequest { id: id.clone() })),
    )
    .await?
    .into_inner();
    held_json(&v).map(Json).ok_or_else(|| {
        RestError::NotFound(format!(
            "No actions are held for confirmation on intent '{id}'."
        ))
    })
}

/// The actions `v` holds for a person, as DoSync lists them (`None`: nothing is held).
fn held_json(v: &pb::IntentView) -> Option<Value> {
    let held: Vec<Value> = v
        .actions
        .iter()
        .filter(|a| a.outcome.is_empty() && (a.needs_approval || v.status == "awaiting_approval"))
        .map(|a| {
            json!({"action_id": a.id, "device_id": a.device,
                        "action": verb_of(&a.capability, &a.state)})
        })
        .collect();
    if held.is_empty() {
        return None;
    }
    Some(json!({
        "intent_id": v.id, "intent": v.class, "held": held, "notes": v.notes,
        "source": v.source, "created_at": v.at_ms as f64 / 1000.0,
        "waiting_for": v.waiting_for,
        "expires_at": (v.approval_expires_at_ms > 0).then(|| v.approval_expires_at_ms as f64 / 1000.0),
        "policies": v.approval_policies,
    }))
}

/// The optional body of a deny: why (Hearth records a reason with every denial).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/intents/{id}/deny`: drops what an intent holds for a person (`Intents.Deny`),
/// with the operator credential. DoSync's clients send no body; Hearth records a reason with
/// every denial, so one may be given (`{"reason": "…"}`), and a default says where it came from.
pub async fn deny(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    let op = s.operator(&headers, "POST /v1/intents/{intent_id}/deny")?;
    input::intent_id(&id)?;
    let raw = input::bytes(body).await?;
    let b: DenyBody = if raw.iter().all(u8::is_ascii_whitespace) {
        DenyBody::default()
    } else {
        input::json(&raw)?
    };
    let reason = b
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "denied by the operator through DoSync's REST API".to_string());
    let by = operator_name(op.as_ref());
    let req = pb::DenyRequest {
        id: id.clone(),
        reason,
        by: by.clone(),
    };
    let v = crate::auth::as_caller(op, s.api.deny(tonic::Request::new(req)))
        .await
        .map_err(|st| nothing_held(&id, st))?
        .into_inner();
    let actions: Vec<Value> = v
        .actions
        .iter()
        .filter(|a| a.outcome == "DENIED")
        .map(|a| json!({"device_id": a.device, "action": verb_of(&a.capability, &a.state)}))
        .collect();
    Ok(Json(json!({
        "status": "denied", "intent_id": id, "actions": actions, "denied_by": by,
        "reason": v.denied_reason,
    })))
}

/// `GET /v1/confirmations`: every intent that waits for a person, oldest first
/// (`Intents.ListPending`; an agent token sees only its own).
pub async fn confirmations(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let caller = s.caller(&headers, ClientRole::Agent, "GET /v1/confirmations")?;
    let r = crate::auth::as_caller(
        caller,
        s.api
            .list_pending(tonic::Request::new(pb::ListPendingRequest {})),
    )
    .await?
    .into_inner();
    let pending: Vec<Value> = r.intents.iter().filter_map(held_json).collect();
    Ok(Json(json!({
        "pending": pending,
        "operator_configured": true,
        "operator_credential": "ok",
        "timeout_seconds": hearth_core::approval::DEFAULT_APPROVAL_TIMEOUT_MS / 1000,
        "now": r.now_ms as f64 / 1000.0,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_values_become_text_and_action_types_a_state() {
        let ctx = json!({"location": "home/hall", "action_types": ["lock"], "n": 3, "m": "hi"});
        let Value::Object(m) = ctx else { panic!() };
        let (loc, c) = context(m).unwrap();
        assert_eq!(loc, "home/hall");
        assert_eq!(c["state"], "locked");
        assert_eq!(c["n"], "3");
        assert_eq!(c["m"], "hi");
    }

    #[test]
    fn an_unknown_urgency_is_a_validation_error() {
        assert!(matches!(
            urgency(Some("superurgent"), &["body", "urgency"]),
            Err(RestError::Validation { .. })
        ));
        assert_eq!(urgency(None, &[]).unwrap(), "info");
    }
}
