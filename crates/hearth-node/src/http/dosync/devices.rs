//! DoSync's device endpoints and its manifest, translated to Hearth's device: register
//! (`Devices.Register`), list and get (read on this node), rename (`PATCH`: a register of
//! the changed device), unregister (`Devices.Remove`).
//!
//! DoSync declares actuators by action verb (`turn_on`, `unlock`, `notify`); Hearth declares
//! capabilities and the absolute states they can be put in (`light = ["on", "off"]`). The
//! one table between them is [`VERBS`]; a verb not in it becomes a capability of its own name
//! with the single state `run`. What Hearth's manifest has no place for (manufacturer, model,
//! firmware, category, events, params_schema, adapter_config) is checked and not kept:
//! docs/REST.md says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hearth_core::intent::{Adapter, Device, Location};
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_server::Devices;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::error::RestError;
use super::super::input;
use super::super::{HttpState, Json};
use crate::api::device_to_pb;
use crate::auth::ClientRole;

/// DoSync action verb → Hearth (capability, state). `turn_on`/`turn_off` act on a `light`
/// when the device is tagged `light`, on `power` otherwise.
pub const VERBS: &[(&str, &str, &str)] = &[
    ("turn_on", "light", "on"),
    ("turn_off", "light", "off"),
    ("flash", "light", "flash"),
    ("lock", "lock", "locked"),
    ("unlock", "lock", "unlocked"),
    ("alarm", "siren", "on"),
    ("siren", "siren", "on"),
    ("notify", "notifier", "message"),
    ("alert", "notifier", "alert"),
];

/// The (capability, states) one DoSync actuator verb declares on a device with `tags`.
fn capability_of(verb: &str, tags: &BTreeSet<String>) -> (String, Vec<&'static str>) {
    match VERBS.iter().find(|(v, _, _)| *v == verb) {
        Some((v, cap, state)) => {
            let cap = if (*v == "turn_on" || *v == "turn_off") && !tags.contains("light") {
                "power"
            } else {
                cap
            };
            // A notifier that can show a message can also raise an alert (alert_anomaly).
            let states = if *cap == *"notifier" {
                vec!["message", "alert"]
            } else {
                vec![*state]
            };
            (cap.to_string(), states)
        }
        None => (verb.to_string(), vec!["run"]),
    }
}

/// The DoSync verb for a Hearth action, where the table has one (else `capability:state`).
pub fn verb_of(capability: &str, state: &str) -> String {
    let cap = if capability == "power" {
        "light"
    } else {
        capability
    };
    VERBS
        .iter()
        .find(|(_, c, s)| *c == cap && *s == state)
        .map(|(v, _, _)| v.to_string())
        .unwrap_or_else(|| {
            if state == "run" {
                capability.to_string()
            } else {
                format!("{capability}:{state}")
            }
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorIn {
    #[allow(dead_code)]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)]
    unit: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    poll_interval_ms: Option<u64>,
    #[serde(default, rename = "kind")]
    #[allow(dead_code)]
    sensor_kind: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    range: Option<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActuatorIn {
    #[allow(dead_code)]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    params_schema: Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    execution_model: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    supports_progress: bool,
    #[serde(default)]
    #[allow(dead_code)]
    supports_cancel: bool,
    #[serde(default)]
    #[allow(dead_code)]
    emits_telemetry: bool,
    #[serde(default)]
    #[allow(dead_code)]
    verify_with: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EventSpecIn {
    id: String,
    severity: String,
    #[serde(default)]
    description: String,
}

/// `RegisterDeviceRequest` of DoSync's openapi.json, plus `location` (protocol 0.5).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    device_id: String,
    device_name: String,
    manufacturer: String,
    model: String,
    firmware: String,
    category: String,
    tags: Vec<String>,
    #[serde(default)]
    sensors: Vec<SensorIn>,
    #[serde(default)]
    actuators: Vec<ActuatorIn>,
    #[serde(default)]
    events: Vec<EventSpecIn>,
    #[serde(default)]
    emergency_capable: bool,
    #[serde(default)]
    emergency_actions: Option<Vec<String>>,
    #[serde(default)]
    cert_tier: Option<String>,
    #[serde(default)]
    adapter: Option<String>,
    #[serde(default)]
    adapter_config: Map<String, Value>,
    #[serde(default)]
    device_token: Option<String>,
    #[serde(default)]
    certificate_pem: Option<String>,
    #[serde(default)]
    location: Option<String>,
}

/// Where a device registered without a location is (DoSync's default household).
pub const DEFAULT_LOCATION: &str = "home";

fn text(field: &str, v: &str, max: usize) -> Result<(), RestError> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(RestError::field(
            &["body", field],
            format!("at most {max} bytes of printable text"),
        ));
    }
    Ok(())
}

impl RegisterBody {
    fn into_device(self) -> Result<Device, RestError> {
        input::device_id(&self.device_id)?;
        text("device_name", &self.device_name, 128)?;
        for (f, v) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("firmware", &self.firmware),
            ("category", &self.category),
        ] {
            text(f, v, 128)?;
        }
        if let Some(t) = &self.cert_tier
            && !["basic", "standard", "emergency", "conformance"].contains(&t.as_str())
        {
            return Err(RestError::field(
                &["body", "cert_tier"],
                "one of basic, standard, emergency, conformance",
            ));
        }
        if self.device_token.is_some() || self.certificate_pem.is_some() {
            return Err(RestError::Unprocessable(
                "device_token and certificate_pem are not used by Hearth: devices are reached \
                 through their adapter, and clients authenticate with Hearth tokens \
                 (docs/REST.md)"
                    .into(),
            ));
        }
        for e in &self.events {
            if !["info", "warning", "alert", "emergency"].contains(&e.severity.as_str()) {
                return Err(RestError::field(
                    &["body", "events", "severity"],
                    format!("{:?}: one of info, warning, alert, emergency", e.severity),
                ));
            }
        }
        let tags: BTreeSet<String> = self.tags.into_iter().collect();
        let sensors: BTreeSet<String> = self.sensors.into_iter().map(|s| s.kind).collect();
        let mut actuators: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut verbs = BTreeSet::new();
        for (n, a) in self.actuators.iter().enumerate() {
            check_params_schema(n, &a.params_schema)?;
            let (cap, states) = capability_of(&a.kind, &tags);
            verbs.insert(a.kind.clone());
            actuators
                .entry(cap)
                .or_default()
                .extend(states.into_iter().map(str::to_string));
        }
        let mut emergency_actions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for v in self.emergency_actions.unwrap_or_default() {
            if !verbs.contains(&v) {
                return Err(RestError::Unprocessable(format!(
                    "Invalid emergency_actions: {v:?} is not one of this device's actuators \
                     ({verbs:?})"
                )));
            }
            let (cap, states) = capability_of(&v, &tags);
            // `notify` in an emergency shows the message; it does not also raise an alert.
            emergency_actions
                .entry(cap)
                .or_default()
                .insert(states[0].to_string());
        }
        let location = Location::parse(
            "location",
            self.location.as_deref().unwrap_or(DEFAULT_LOCATION),
        )
        .map_err(|e| RestError::field(&["body", "location"], e.to_string()))?;
        let adapter = adapter(
            &self.device_id,
            self.adapter.as_deref(),
            &self.adapter_config,
        )?;
        Ok(Device {
            id: self.device_id,
            name: self.device_name,
            location,
            tags,
            sensors,
            actuators,
            emergency_capable: self.emergency_capable,
            emergency_actions,
            adapter,
        })
    }
}

/// DoSync's adapter name and config as Hearth's adapter: none is Hearth's simulated device
/// (DoSync's certify mode), `mqtt` takes `adapter_config.topic`, `http` `adapter_config.url`.
fn adapter(id: &str, name: Option<&str>, cfg: &Map<String, Value>) -> Result<Adapter, RestError> {
    let get = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                RestError::field(
                    &["body", "adapter_config", k],
                    format!("the {name:?} adapter needs adapter_config.{k} (a string)"),
                )
            })
    };
    match name {
        None | Some("sim") | Some("simulated") => Ok(Adapter::Sim {
            address: cfg
                .get("address")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("local:{id}")),
        }),
        Some("mqtt") => Ok(Adapter::Mqtt {
            topic: get("topic")?,
        }),
        Some("http") => Ok(Adapter::Http { url: get("url")? }),
        Some(other) => Err(RestError::field(
            &["body", "adapter"],
            format!("{other:?} is not an adapter Hearth has (sim, mqtt, http)"),
        )),
    }
}

/// DoSync requires `params_schema` to be valid JSON Schema. Hearth does not keep it (its
/// actions carry no parameters yet), but a malformed one is still refused: the keywords whose
/// value type JSON Schema fixes are checked, recursively through `properties` and `items`.
fn check_params_schema(n: usize, schema: &Map<String, Value>) -> Result<(), RestError> {
    fn walk(path: &str, s: &Map<String, Value>) -> Result<(), String> {
        const TYPES: &[&str] = &[
            "object", "array", "string", "number", "integer", "boolean", "null",
        ];
        for (k, v) in s {
            let ok = match k.as_str() {
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
                    v.is_number()
                }
                "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
                | "maxProperties" => v.as_u64().is_some(),
                "required" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "enum" => v.is_array(),
                "type" => match v {
                    Value::String(t) => TYPES.contains(&t.as_str()),
                    Value::Array(a) => a
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                    _ => false,
                },
                "properties" => match v.as_object() {
                    Some(props) => {
                        for (name, p) in props {
                            let p = p.as_object().ok_or_else(|| {
                                format!("{path}.properties.{name} is not a schema")
                            })?;
                            walk(&format!("{path}.properties.{name}"), p)?;
                        }
                        true
                    }
                    None => false,
                },
                "items" => match v {
                    Value::Object(o) => {
                        walk(&format!("{path}.items"), o)?;
                        true
                    }
                    Value::Bool(_) => true,
                    _ => false,
                },
                _ => true,
            };
            if !ok {
                return Err(format!(
                    "{path}.{k} has the wrong type for JSON Schema ({v})"
                ));
            }
        }
        Ok(())
    }
    walk("params_schema", schema).map_err(|e| {
        RestError::Unprocessable(format!(
            "Invalid actuator params_schema: actuators[{n}]: {e}"
        ))
    })
}

/// A device as DoSync's public manifest (no adapter config: it may hold addresses and keys).
pub fn device_json(d: &Device) -> Value {
    let mut actuators = Vec::new();
    for (cap, states) in &d.actuators {
        for s in states {
            actuators.push(json!({"id": verb_of(cap, s), "type": verb_of(cap, s),
                                   "capability": cap, "state": s}));
        }
    }
    let sensors: Vec<Value> = d
        .sensors
        .iter()
        .map(|s| json!({"id": s, "type": s}))
        .collect();
    let emergency: Vec<String> = d
        .emergency_actions
        .iter()
        .flat_map(|(c, ss)| ss.iter().map(move |s| verb_of(c, s)))
        .collect();
    let adapter = match &d.adapter {
        Adapter::Sim { .. } => "sim",
        Adapter::Mqtt { .. } => "mqtt",
        Adapter::Http { .. } => "http",
    };
    json!({
        "device_id": d.id,
        "device_name": d.name,
        "location": d.location.to_string(),
        "tags": d.tags,
        "capabilities": {"sensors": sensors, "actuators": actuators},
        "emergency_capable": d.emergency_capable,
        "emergency_actions": emergency,
        "adapter": adapter,
    })
}

pub async fn register(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    let caller = s.caller(&headers, ClientRole::Operator, "POST /v1/devices/register")?;
    let raw = input::bytes(body).await?;
    let b = input::json::<RegisterBody>(&raw)?;
    let keep_location = b.location.is_none();
    let mut device = b.into_device()?;
    // A re-registration without a location keeps the one the operator set (PATCH).
    if keep_location && let Some(old) = s.node.devices()?.into_iter().find(|d| d.id == device.id) {
        device.location = old.location;
    }
    let id = device.id.clone();
    let pb = device_to_pb(&device);
    crate::auth::as_caller(caller, s.api.register(tonic::Request::new(pb))).await?;
    Ok(Json(
        json!({"status": "registered", "device_id": id, "cert_authenticated": false}),
    ))
}

pub async fn list(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/devices")?;
    let devices = s.node.devices()?;
    let list: Vec<Value> = devices.iter().map(device_json).collect();
    Ok(Json(json!({
        "count": list.len(),
        "active": list.len(),
        "quarantined": 0,
        "devices": list,
    })))
}

pub async fn get(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    s.caller(&headers, ClientRole::Agent, "GET /v1/devices/{device_id}")?;
    input::device_id(&id)?;
    let devices = s.node.devices()?;
    devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| Json(device_json(d)))
        .ok_or_else(|| RestError::NotFound(format!("Device '{id}' not found")))
}

/// `PATCH /v1/devices/{id}`: DoSync's presentation fields only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    emergency_actions: Option<Vec<String>>,
}

pub async fn patch(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json, RestError> {
    let caller = s.caller(
        &headers,
        ClientRole::Operator,
        "PATCH /v1/devices/{device_id}",
    )?;
    input::device_id(&id)?;
    let raw = input::bytes(body).await?;
    let p: PatchBody = input::json(&raw)?;
    if p.device_name.is_none() && p.location.is_none() && p.emergency_actions.is_none() {
        return Err(RestError::Unprocessable(
            "nothing to change: send device_name, location or emergency_actions".into(),
        ));
    }
    let mut d = s
        .node
        .devices()?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| RestError::NotFound(format!("Device '{id}' not found")))?;
    if let Some(n) = p.device_name {
        text("device_name", &n, 128)?;
        d.name = n;
    }
    if let Some(l) = p.location {
        d.location = Location::parse("location", &l)
            .map_err(|e| RestError::field(&["body", "location"], e.to_string()))?;
    }
    if let Some(actions) = p.emergency_actions {
        let mut ea: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for v in actions {
            let (cap, states) = capability_of(&v, &d.tags);
            if !d
                .actuators
                .get(&cap)
                .is_some_and(|have| have.contains(states[0]))
            {
                return Err(RestError::Unprocessable(format!(
                    "Invalid emergency_actions: {v:?} is not one of this device's actuators"
                )));
            }
            ea.entry(cap).or_default().insert(states[0].to_string());
        }
        d.emergency_actions = ea;
    }
    let view = device_json(&d);
    crate::auth::as_caller(
        caller,
        s.api.register(tonic::Request::new(device_to_pb(&d))),
    )
    .await?;
    Ok(Json(json!({"status": "updated", "device": view})))
}

pub async fn remove(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json, RestError> {
    let caller = s.caller(
        &headers,
        ClientRole::Operator,
        "DELETE /v1/devices/{device_id}",
    )?;
    input::device_id(&id)?;
    let req = pb::RemoveDeviceRequest { id: id.clone() };
    let r = crate::auth::as_caller(caller, s.api.remove(tonic::Request::new(req)))
        .await?
        .into_inner();
    Ok(Json(json!({
        "status": "unregistered",
        "device_id": id,
        "index": r.index,
        "cancelled_intents": r.cancelled_intents,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Result<Device, RestError> {
        input::json::<RegisterBody>(v.to_string().as_bytes())?.into_device()
    }

    fn base() -> Value {
        json!({"device_id": "hall-light", "device_name": "Hall", "manufacturer": "m",
               "model": "x", "firmware": "1", "category": "actuator", "tags": ["light"],
               "actuators": [{"id": "on", "type": "turn_on"}, {"id": "off", "type": "turn_off"},
                             {"id": "n", "type": "notify"}],
               "emergency_actions": ["turn_on"]})
    }

    #[test]
    fn verbs_become_capabilities_and_states() {
        let d = body(base()).unwrap();
        assert_eq!(
            d.actuators["light"],
            BTreeSet::from(["on".into(), "off".into()])
        );
        assert_eq!(
            d.actuators["notifier"],
            BTreeSet::from(["message".into(), "alert".into()])
        );
        assert_eq!(d.emergency_actions["light"], BTreeSet::from(["on".into()]));
        assert_eq!(d.location.to_string(), "home");
        assert_eq!(verb_of("light", "on"), "turn_on");
        assert_eq!(verb_of("lock", "unlocked"), "unlock");
    }

    #[test]
    fn malformed_params_schema_is_refused() {
        let mut v = base();
        v["actuators"][0]["params_schema"] =
            json!({"type": "object", "properties": {"b": {"type": "integer", "minimum": "low"}}});
        assert!(matches!(body(v), Err(RestError::Unprocessable(m)) if m.contains("minimum")));
        let mut ok = base();
        ok["actuators"][0]["params_schema"] =
            json!({"type": "object", "properties": {"b": {"type": "integer", "minimum": 0}}});
        body(ok).unwrap();
    }

    #[test]
    fn path_like_ids_unknown_fields_and_bad_emergency_actions_are_refused() {
        let mut v = base();
        v["device_id"] = json!("../etc");
        assert!(body(v).is_err());
        let mut v = base();
        v["colour"] = json!("red");
        assert!(matches!(body(v), Err(RestError::Validation { .. })));
        let mut v = base();
        v["emergency_actions"] = json!(["unlock"]);
        assert!(matches!(body(v), Err(RestError::Unprocessable(_))));
        let mut v = base();
        v["tags"] = json!("light");
        assert!(matches!(body(v), Err(RestError::Validation { .. })));
    }
}
