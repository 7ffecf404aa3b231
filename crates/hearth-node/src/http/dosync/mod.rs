//! DoSync's REST API v1 (`spec/openapi.json` of the DoSync protocol) on a Hearth node: the
//! routes ([`routes`]) and the endpoints that read the node itself (status, heartbeat, peers,
//! audit, device health). Devices and intents have their own files.
//!
//! Every endpoint needs a token except `GET /v1/hub/heartbeat` (a liveness probe, as in
//! DoSync). An endpoint DoSync has and Hearth gives no meaning answers 501 saying why, after
//! the token check, and appends nothing.

mod devices;
mod intents;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use hearth_core::domain::{ActionOutcome, Command as DomainCommand};
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_server::Cluster;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::RestError;
use super::input;
use super::{DOSYNC_API_VERSION, DOSYNC_PROTOCOL_VERSION, HttpState, Json};
use crate::auth::ClientRole;

/// Every DoSync v1 route this node answers. Routes DoSync has that are not listed get the
/// router's JSON 404.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/hub/heartbeat", get(heartbeat))
        .route("/v1/hub/peers", get(peers))
        .route("/v1/hub/promote", post(promote))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/register", post(devices::register))
        .route(
            "/v1/devices/{device_id}",
            get(devices::get)
                .patch(devices::patch)
                .delete(devices::remove),
        )
        .route("/v1/intent/async", post(intents::submit))
        .route("/v1/intent/{intent_id}", get(intents::get))
        .route("/v1/intents/{intent_class}/explain", get(intents::explain))
        .route("/v1/intents/{intent_id}/confirm", post(intents::confirm))
        .route("/v1/intents/{intent_id}/deny", post(intents::deny))
        .route("/v1/intents/{intent_id}/pending", get(intents::pending))
        .route("/v1/confirmations", get(intents::confirmations))
        .route(
            "/v1/intent-classes",
            get(intents::classes).post(intents::add_class),
        )
        .route("/v1/audit", get(audit))
        .route("/v1/event", post(event))
        .route("/v1/health/devices", get(health))
        .route("/v1/health/devices/{device_id}", get(health_one))
        .route("/v1/device/action", post(device_action))
        .route("/v1/adapters", get(adapters))
        .route("/v1/discovery/scan", get(scan))
}

/// `GET /v1/adapters` (agent): the ways Hearth reaches a device, with DoSync's basis.
async fn adapters(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/adapters")?;
    let mqtt = s.node.config().mqtt_broker.is_some();
    Ok(Json(json!({"adapters": [
        {"name": "http", "kind": "ecosystem", "available": true,
         "description": "a device's HTTP endpoint (webhook), sent fenced commands"},
        {"name": "mqtt", "kind": "ecosystem", "available": mqtt,
         "description": "a topic on the household's MQTT broker (`mqtt_broker` in the node's config)"},
        {"name": "sim", "kind": "infrastructure", "available": true,
         "description": "Hearth's simulated device (`hearth device-sim`), for development and tests"},
    ]})))
}

/// `GET /v1/discovery/scan` (agent): Hearth discovers nothing (devices are registered by an
/// operator); it says so, searches no transport and registers nothing.
async fn scan(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/discovery/scan")?;
    Ok(Json(json!({
        "candidates": [],
        "searched": [],
        "not_searchable": ["http", "mqtt", "sim"],
        "note": "Hearth does not discover devices: an operator registers each one \
                 (POST /v1/devices/register, `hearth device add`). Nothing was registered.",
    })))
}

/// `GET /v1/status` (agent): DoSync's fields from the node's own state, and Hearth's
/// (`node_id`, `leader`, `term`, `state`). `audit_integrity` is a walk of this node's chain.
async fn status(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/status")?;
    let st = s.node.status().await;
    let verify = s.node.verify()?;
    let devices = s.node.devices()?.len();
    Ok(Json(json!({
        "name": "Hearth",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": format!("dosync/{DOSYNC_PROTOCOL_VERSION}"),
        "protocol_version": DOSYNC_PROTOCOL_VERSION,
        "api_version": DOSYNC_API_VERSION,
        "status": if st.chain_fenced.is_some() { "degraded" } else { "running" },
        "certify_mode": false,
        "devices": devices,
        "audit_entries": st.head.map_or(0, |(i, _)| i),
        "audit_integrity": verify.failure.is_none(),
        "audit_head": st.head.map(|(_, h)| hex::encode(h)),
        "direct_control": "off",
        "node_id": st.node_id,
        "node_role": st.role.name(),
        "state": st.state_text(),
        "leader": st.leader,
        "term": st.term,
    })))
}

/// `GET /v1/hub/heartbeat` (open, cheap): DoSync's `role` is `primary` on the node that leads
/// and `standby` on the others; `status` is `degraded` when this node's chain is fenced.
async fn heartbeat(State(s): State<Arc<HttpState>>) -> Result<Json, RestError> {
    let st = s.node.status().await;
    let devices = s.node.devices()?.len();
    let leads = st.leader == Some(st.node_id);
    Ok(Json(json!({
        "hub_id": format!("hearth-node-{}", st.node_id),
        "status": if st.chain_fenced.is_some() { "degraded" } else { "healthy" },
        "protocol_version": DOSYNC_PROTOCOL_VERSION,
        "api_version": DOSYNC_API_VERSION,
        "timestamp": rfc3339(s.node.wall().now_ms()),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "devices": devices,
        "role": if leads { "primary" } else { "standby" },
        "leader": st.leader,
        "node_role": st.role.name(),
        "multi_hub_capable": true,
    })))
}

/// `GET /v1/hub/peers` (agent): Hearth's members and, for two hubs without a witness, the
/// assisted-failover assessment (DoSync's monitor state).
async fn peers(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/hub/peers")?;
    let st = s.node.status().await;
    let members: Vec<Value> = st
        .members
        .iter()
        .map(|(id, m, voter)| {
            json!({"node_id": id, "addr": m.addr, "role": if m.witness { "witness" } else { "hub" }, "voter": voter,
                   "leader": st.leader == Some(*id)})
        })
        .collect();
    let assist = st.assist.as_ref().map(|a| format!("{a:?}"));
    Ok(Json(json!({
        "role": if st.leader == Some(st.node_id) { "primary" } else { "standby" },
        "node_id": st.node_id,
        "leader": st.leader,
        "members": members,
        "monitor_state": assist.clone().unwrap_or_else(|| "n/a".into()),
        "assisted_failover": assist,
        "note": "Hearth replicates every entry through Raft: with a witness or three hubs a new \
                 leader is elected on its own; with two hubs a person promotes the survivor \
                 (POST /v1/hub/promote)",
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/hub/promote` (admin, operator header): Hearth's assisted failover
/// (`Cluster.Promote`) of THIS hub, for two hubs without a witness.
async fn promote(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    let caller = s.caller(&headers, ClientRole::Admin, "POST /v1/hub/promote")?;
    let raw = input::bytes(body).await?;
    let b: PromoteBody = if raw.iter().all(u8::is_ascii_whitespace) {
        PromoteBody {
            force: false,
            reason: None,
        }
    } else {
        input::json(&raw)?
    };
    let operator = caller
        .as_ref()
        .map_or_else(|| "operator".to_string(), |p| p.name.clone());
    let req = pb::PromoteRequest {
        operator,
        reason: b
            .reason
            .unwrap_or_else(|| "promoted through DoSync's POST /v1/hub/promote".into()),
        force: b.force,
    };
    let r = crate::auth::as_caller(caller, s.api.promote(tonic::Request::new(req)))
        .await?
        .into_inner();
    Ok(Json(json!({
        "status": "promoted",
        "node_id": r.node_id,
        "removed": r.removed,
        "assessed": r.assessed,
        "destructive": r.destructive,
    })))
}

/// `GET /v1/audit?limit=N` (operator): the newest entries of this node's chain, `hash` and
/// `prev_hash` being Hearth's chain hashes; `count` is the whole chain; `integrity` a walk of
/// it (`hearth audit verify`).
async fn audit(
    State(s): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Operator, "GET /v1/audit")?;
    let q = input::query(q.as_deref(), &["limit"])?;
    let limit = match input::get(&q, "limit") {
        None => 1000,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(RestError::field(
                    &["query", "limit"],
                    "Input should be an integer from 1 to 1000",
                ));
            }
        },
    };
    let verify = s.node.verify()?;
    let count = verify.head.map_or(0, |(i, _)| i);
    // One more than asked: the first entry's previous hash.
    let links = s.node.tail(limit + 1)?;
    let skip = links
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut entries = Vec::new();
    for (n, l) in links.iter().enumerate().skip(skip) {
        let prev = n
            .checked_sub(1)
            .and_then(|p| links.get(p))
            .map(|p| hex::encode(p.hash));
        let mut e = entry_json(&l.record);
        if let Some(o) = e.as_object_mut() {
            o.insert("index".into(), json!(l.record.index));
            o.insert("term".into(), json!(l.record.term));
            o.insert("leader".into(), json!(l.record.leader));
            o.insert("hash".into(), json!(hex::encode(l.hash)));
            o.insert("prev_hash".into(), json!(prev));
            o.insert("summary".into(), json!(crate::node::describe(&l.record)));
        }
        entries.push(e);
    }
    mark_executed(&s.node, &mut entries);
    Ok(Json(json!({
        "count": count,
        "returned": entries.len(),
        "integrity": verify.failure.is_none(),
        "integrity_detail": verify.failure.map(|f| f.to_string()),
        "entries": entries,
    })))
}

/// DoSync writes one `intent_executed` entry when an intent has run; Hearth's chain records
/// the decision and then each action's outcome. The entry that records a finished intent's
/// last outcome is where its execution ended: it is listed as `intent_executed`, with the
/// intent's class, urgency, source, action count, status and success (and keeps its own
/// action fields). `timestamp` is the chain time the intent was accepted (outcome entries
/// carry no time of their own). Entries are the tail of the chain, so an outcome after the
/// last one shown cannot exist.
fn mark_executed(node: &crate::node::Node, entries: &mut [Value]) {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (pos, e) in entries.iter().enumerate() {
        if e["type"] == "action_outcome"
            && let Some(id) = e["intent_id"].as_str()
        {
            last.insert(id.to_string(), pos);
        }
    }
    for (id, pos) in last {
        let Some(r) = node
            .sm
            .with_domain(|d| d.intents.get(&id).cloned())
            .ok()
            .flatten()
        else {
            continue;
        };
        if !r.status.is_final() {
            continue;
        }
        if let Some(o) = entries.get_mut(pos).and_then(Value::as_object_mut) {
            o.insert("type".into(), json!("intent_executed"));
            o.insert("intent".into(), json!(r.intent.class));
            o.insert("urgency".into(), json!(r.intent.urgency));
            o.insert("source".into(), json!(r.intent.source));
            o.insert("actions".into(), json!(r.actions.len()));
            o.insert("status".into(), json!(r.status));
            o.insert(
                "success".into(),
                json!(r.status == hearth_core::domain::IntentStatus::Done),
            );
            o.insert("timestamp".into(), json!(r.at_ms as f64 / 1000.0));
        }
    }
}

/// An entry's DoSync-style `type` and the fields a reader looks for. Secrets never reach the
/// chain, so nothing here needs redacting beyond what the chain already leaves out.
fn entry_json(rec: &hearth_core::Record) -> Value {
    use hearth_core::EntryKind;
    let mut m = Map::new();
    let ty = match rec.kind {
        EntryKind::Blank => "leader_change",
        EntryKind::Membership => "membership",
        EntryKind::Command => match DomainCommand::decode(&rec.payload) {
            Ok(DomainCommand::SubmitIntent {
                intent, key_scope, ..
            }) => {
                m.insert(
                    "intent_id".into(),
                    json!(hearth_core::domain::scoped_intent_id(
                        key_scope.as_deref(),
                        &intent.idempotency_key
                    )),
                );
                m.insert("intent".into(), json!(intent.class));
                m.insert("urgency".into(), json!(intent.urgency));
                m.insert("source".into(), json!(intent.source));
                m.insert("location".into(), json!(intent.location.to_string()));
                "intent_accepted"
            }
            Ok(DomainCommand::RecordOutcome {
                intent_id,
                action_id,
                outcome,
                ..
            }) => {
                m.insert("intent_id".into(), json!(intent_id));
                m.insert("action_id".into(), json!(action_id));
                m.insert("success".into(), json!(outcome.applied()));
                "action_outcome"
            }
            Ok(DomainCommand::RegisterDevice { device, .. }) => {
                m.insert("device_id".into(), json!(device.id));
                "device_registered"
            }
            Ok(DomainCommand::RemoveDevice { id, .. }) => {
                m.insert("device_id".into(), json!(id));
                "device_removed"
            }
            Ok(DomainCommand::Approve { intent_id, by, .. }) => {
                m.insert("intent_id".into(), json!(intent_id));
                m.insert("by".into(), json!(by));
                "intent_approved"
            }
            Ok(DomainCommand::ApplyClass { .. }) => "intent_class_applied",
            Ok(
                DomainCommand::ApplyPolicies { .. }
                | DomainCommand::AddPolicy { .. }
                | DomainCommand::RemovePolicy { .. },
            ) => "policy_changed",
            Ok(DomainCommand::Refence { .. }) => "refence",
            Ok(DomainCommand::OperatorAct { .. }) => "operator_act",
            Ok(DomainCommand::Deny {
                intent_id,
                by,
                reason,
                ..
            }) => {
                m.insert("intent_id".into(), json!(intent_id));
                m.insert("by".into(), json!(by));
                m.insert("reason".into(), json!(reason));
                "intent_denied"
            }
            Ok(DomainCommand::ExpireApproval { intent_id, .. }) => {
                m.insert("intent_id".into(), json!(intent_id));
                m.insert("by".into(), json!("system"));
                "intent_denied"
            }
            Ok(DomainCommand::NodeNotice { .. }) => "node_notice",
            Ok(DomainCommand::AdmitNode { node, by, .. }) => {
                m.insert("node".into(), json!(node));
                m.insert("by".into(), json!(by));
                "node_admitted"
            }
            Ok(DomainCommand::Promote { .. }) => "promotion",
            Ok(DomainCommand::TestRecord { .. }) => "test_record",
            Err(_) => "undecodable",
        },
    };
    m.insert("type".into(), json!(ty));
    Value::Object(m)
}

/// `POST /v1/event` (agent). Hearth has no device events: the body is checked (a registered
/// device, a known severity) and the answer is 501. Nothing is appended.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EventBody {
    device_id: String,
    event_id: String,
    severity: String,
    #[serde(default)]
    data: Map<String, Value>,
}

async fn event(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "POST /v1/event")?;
    let raw = input::bytes(body).await?;
    let e: EventBody = input::json(&raw)?;
    input::device_id(&e.device_id)?;
    if !s.node.devices()?.iter().any(|d| d.id == e.device_id) {
        return Err(RestError::NotFound(format!(
            "Device '{}' not registered. Register it first.",
            e.device_id
        )));
    }
    if !["info", "warning", "alert", "emergency"].contains(&e.severity.as_str()) {
        return Err(RestError::Unprocessable(format!(
            "Severity '{}' not valid. Use: info, warning, alert, emergency",
            e.severity
        )));
    }
    Err(RestError::NotImplemented(
        "Hearth does not take device events yet: a device's report is not an intent, and \
         nothing turns events into intents on a Hearth hub. Send an intent \
         (POST /v1/intent/async). Nothing was appended."
            .into(),
    ))
}

/// Per device: actions sent and applied, from the newest `last_n` action outcomes in the
/// chain (each outcome's device is the one its intent's plan named).
fn outcomes(s: &HttpState, last_n: usize) -> Result<BTreeMap<String, (u64, u64)>, RestError> {
    let links = s.node.tail(10_000)?;
    let mut per: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let mut intents = BTreeMap::new();
    for l in links.iter().rev() {
        if l.record.kind != hearth_core::EntryKind::Command {
            continue;
        }
        let Ok(DomainCommand::RecordOutcome {
            intent_id,
            action_id,
            outcome,
            ..
        }) = DomainCommand::decode(&l.record.payload)
        else {
            continue;
        };
        if !intents.contains_key(&intent_id) {
            let r = s.node.get_intent(&intent_id)?;
            intents.insert(intent_id.clone(), r);
        }
        let device = intents
            .get(&intent_id)
            .and_then(|r| r.as_ref())
            .and_then(|r| r.actions.iter().find(|a| a.id == action_id))
            .map(|a| a.action.device.clone());
        if let Some(d) = device {
            let v = per.entry(d).or_default();
            if v.len() < last_n {
                v.push(matches!(
                    outcome,
                    ActionOutcome::Applied | ActionOutcome::AlreadyApplied
                ));
            }
        }
    }
    Ok(per
        .into_iter()
        .map(|(d, v)| {
            let ok = v.iter().filter(|b| **b).count() as u64;
            (d, (v.len() as u64, ok))
        })
        .collect())
}

fn health_json(id: &str, total: u64, ok: u64) -> Value {
    json!({
        "device_id": id,
        "executions": total,
        "successes": ok,
        "failures": total - ok,
        "success_rate": if total == 0 { Value::Null } else { json!(ok as f64 / total as f64) },
    })
}

fn last_n(q: &[(String, String)]) -> Result<usize, RestError> {
    match input::get(q, "last_n") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| RestError::field(&["query", "last_n"], "an integer from 1 to 10000")),
    }
}

/// `GET /v1/health/devices?threshold=&last_n=` (agent): each device's success rate.
async fn health(
    State(s): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/health/devices")?;
    let q = input::query(q.as_deref(), &["threshold", "last_n"])?;
    let threshold = match input::get(&q, "threshold") {
        None => 0.7,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| RestError::field(&["query", "threshold"], "a number from 0 to 1"))?,
    };
    let per = outcomes(&s, last_n(&q)?)?;
    let mut devices = Vec::new();
    let mut alerts = Vec::new();
    for d in s.node.devices()? {
        let (total, ok) = per.get(&d.id).copied().unwrap_or((0, 0));
        let h = health_json(&d.id, total, ok);
        if total > 0 && (ok as f64 / total as f64) < threshold {
            alerts.push(h.clone());
        }
        devices.push(h);
    }
    Ok(Json(
        json!({"threshold": threshold, "devices": devices, "alerts": alerts}),
    ))
}

async fn health_one(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(
        &headers,
        ClientRole::Agent,
        "GET /v1/health/devices/{device_id}",
    )?;
    input::device_id(&id)?;
    let q = input::query(q.as_deref(), &["last_n"])?;
    if !s.node.devices()?.iter().any(|d| d.id == id) {
        return Err(RestError::NotFound(format!("Device '{id}' not found")));
    }
    let per = outcomes(&s, last_n(&q)?)?;
    let (total, ok) = per.get(&id).copied().unwrap_or((0, 0));
    Ok(Json(health_json(&id, total, ok)))
}

/// `POST /v1/device/action` (operator header): closed. DoSync opens direct control only by a
/// deployment switch; Hearth has no path to a device that does not pass the resolver and the
/// chain, so it is closed on every node.
async fn device_action(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "POST /v1/device/action")?;
    Err(RestError::Forbidden(
        "direct_control_disabled: direct control is off on Hearth, on every node: it acts on \
         devices only through intents (a committed \
         entry, then the leader's fenced dispatch). Send an intent. Nothing was appended."
            .into(),
    ))
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-01T19:55:10.123Z`).
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_154_910_123), "2026-12-01T19:55:10.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
