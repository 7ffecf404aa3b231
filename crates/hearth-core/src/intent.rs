//! Intents, device manifests and intent classes: the data the resolver plans from.
//! Validation here is the single place that decides what a well-formed request is; every edge
//! (gRPC, CLI) calls it and reports its field-named errors.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Largest total size of an intent's context (keys + values), in bytes.
pub const MAX_CONTEXT_BYTES: usize = 4096;
/// Largest single identifier or name.
pub const MAX_NAME: usize = 128;
/// Deepest location path.
pub const MAX_LOCATION_DEPTH: usize = 8;

/// How urgent an intent is. Emergency overrides every policy that is not absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Info,
    Warning,
    Alert,
    Emergency,
}

impl Urgency {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "alert" => Ok(Self::Alert),
            "emergency" => Ok(Self::Emergency),
            other => Err(FieldError::new(
                "urgency",
                format!("{other:?} is not one of emergency, alert, warning, info"),
            )),
        }
    }
}

/// A request problem, naming the field and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// An identifier: 1–128 characters of `a-z 0-9 _ - .`, not starting with `.` (so ids can never
/// be paths).
pub fn check_id(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    if s.starts_with('.')
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
    {
        return Err(FieldError::new(
            field,
            format!("{s:?} may contain only a-z, 0-9, '_', '-', '.' and must not start with '.'"),
        ));
    }
    Ok(())
}

/// An idempotency key: 1–128 printable ASCII characters (a UUID, a counter,
/// `cli-<pid>-<nanos>`, a test's `"isolate leader-17"`), without `/` or `\` and not starting
/// with `.`, so that a key never looks like a path; no control or non-ASCII characters.
pub fn check_key(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_NAME} characters; send the same key when you retry"),
        ));
    }
    if s.starts_with('.')
        || !s
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'/' && b != b'\\')
    {
        return Err(FieldError::new(
            field,
            format!(
                "{s:?} may contain only printable ASCII characters other than '/' and '\\', and must not start with '.'"
            ),
        ));
    }
    Ok(())
}

/// Free text a person reads (a subject, a description): at most `max` bytes, no control
/// characters.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.len() > max {
        return Err(FieldError::new(field, format!("at most {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A location such as `home/kitchen`: segments that are ids, joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Location(Vec<String>);

impl Location {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let segs: Vec<String> = s.split('/').map(str::to_string).collect();
        if segs.len() > MAX_LOCATION_DEPTH {
            return Err(FieldError::new(
                field,
                format!("at most {MAX_LOCATION_DEPTH} levels"),
            ));
        }
        for seg in &segs {
            check_id(field, seg).map_err(|_| {
                FieldError::new(
                    field,
                    format!(
                        "{s:?} is not a path like home/kitchen (segments of a-z, 0-9, '_', '-')"
                    ),
                )
            })?;
        }
        Ok(Self(segs))
    }

    /// `home` contains `home/kitchen` and itself; `home/kitchen` does not contain `home`.
    pub fn contains(&self, other: &Location) -> bool {
        other.0.len() >= self.0.len() && other.0[..self.0.len()] == self.0[..]
    }
}

impl TryFrom<String> for Location {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse("location", &s)
    }
}

impl From<Location> for String {
    fn from(l: Location) -> String {
        l.0.join("/")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub class: String,
    pub urgency: Urgency,
    /// What the intent is about, free text for people ("smoke in the kitchen").
    pub subject: String,
    pub location: Location,
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// Who asked (an agent, a person, an automation); rate limits are per source.
    pub source: String,
    pub idempotency_key: String,
}

impl Intent {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("class", &self.class)?;
        check_id("source", &self.source)?;
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_NAME {
            return Err(FieldError::new(
                "idempotency_key",
                format!("must be 1 to {MAX_NAME} characters; send the same key when you retry"),
            ));
        }
        if self.subject.len() > 512 {
            return Err(FieldError::new("subject", "at most 512 bytes"));
        }
        let size: usize = self.context.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CONTEXT_BYTES {
            return Err(FieldError::new(
                "context",
                format!("{size} bytes; at most {MAX_CONTEXT_BYTES}"),
            ));
        }
        for k in self.context.keys() {
            check_id("context", k)?;
        }
        Ok(())
    }

    /// What a new request must pass before anything is appended: [`Intent::validate`] plus
    /// the idempotency key's alphabet and a subject without control characters. `apply`
    /// re-checks committed entries with `validate` only, which must not change: replaying an
    /// older log must give the same state.
    pub fn validate_request(&self) -> Result<(), FieldError> {
        self.validate()?;
        check_key("idempotency_key", &self.idempotency_key)?;
        check_text("subject", &self.subject, 512)
    }
}

/// How Hearth reaches a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Adapter {
    /// The built-in simulated device (or `hearth device-sim` at `address`).
    Sim {
        address: String,
    },
    Mqtt {
        topic: String,
    },
    Http {
        url: String,
    },
}

/// A device's capability manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub location: Location,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Readable values ("smoke", "temperature").
    #[serde(default)]
    pub sensors: BTreeSet<String>,
    /// Capability → the absolute states it can be put in ("lock" → ["locked", "unlocked"]).
    #[serde(default)]
    pub actuators: BTreeMap<String, BTreeSet<String>>,
    /// Legacy (manifests before `emergency_actions`): with no `emergency_actions` listed,
    /// `true` declares every state of every actuator an emergency action *except `unlocked`*,
    /// which it declares only for a device the household also tagged `escape_route`.
    #[serde(default)]
    pub emergency_capable: bool,
    /// The actions (capability → states) this device may take in an emergency even when a
    /// non-absolute policy that allows it would stop them: e.g. `siren = ["on"]`, and for a
    /// door the household wants opened in a fire, `lock = ["unlocked"]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub emergency_actions: BTreeMap<String, BTreeSet<String>>,
    pub adapter: Adapter,
}

/// The state an emergency never implies: a door is unlocked in an emergency only if its
/// manifest lists `unlocked` among its `emergency_actions`.
pub const UNLOCKED: &str = "unlocked";

/// The tag of a door people leave by in an emergency.
pub const ESCAPE_ROUTE: &str = "escape_route";

impl Device {
    /// Whether putting `capability` in `state` is one of this device's emergency actions.
    pub fn is_emergency_action(&self, capability: &str, state: &str) -> bool {
        if self.emergency_actions.is_empty() {
            return self.emergency_capable
                && (state != UNLOCKED || self.tags.contains(ESCAPE_ROUTE))
                && self
                    .actuators
                    .get(capability)
                    .is_some_and(|s| s.contains(state));
        }
        self.emergency_actions
            .get(capability)
            .is_some_and(|s| s.contains(state))
    }

    /// Whether the device has any emergency action (it comes first in a plan).
    pub fn has_emergency_actions(&self) -> bool {
        !self.emergency_actions.is_empty() || self.emergency_capable
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        if self.name.len() > MAX_NAME {
            return Err(FieldError::new("name", format!("at most {MAX_NAME} bytes")));
        }
        for t in &self.tags {
            check_id("tags", t)?;
        }
        for s in &self.sensors {
            check_id("sensors", s)?;
        }
        for (cap, states) in &self.actuators {
            check_id("actuators", cap)?;
            if states.is_empty() {
                return Err(FieldError::new(
                    "actuators",
                    format!(
                        "{cap:?} lists no states; list the absolute states it accepts (e.g. locked, unlocked)"
                    ),
                ));
            }
            for s in states {
                check_id("actuators", s)?;
            }
        }
        for (cap, states) in &self.emergency_actions {
            let field = format!("emergency_actions.{cap}");
            let Some(can) = self.actuators.get(cap) else {
                return Err(FieldError::new(
                    field,
                    format!("the device has no actuator {cap:?}; list only actions it can take"),
                ));
            };
            if states.is_empty() {
                return Err(FieldError::new(field, "lists no states"));
            }
            if let Some(s) = states.iter().find(|s| !can.contains(*s)) {
                return Err(FieldError::new(
                    field,
                    format!("{s:?} is not one of the states {cap:?} accepts ({can:?})"),
                ));
            }
        }
        Ok(())
    }
}

/// Where a step's target state comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Always this state.
    State(String),
    /// The intent's `context[key]`, which must be one of `allowed`; `default` if absent.
    FromContext {
        key: String,
        allowed: BTreeSet<String>,
        default: Option<String>,
    },
}

/// One kind of action a class takes: every device in scope with `capability` (and all of
/// `tags`) is put in the target state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub capability: String,
    pub target: Target,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// The step acts only in an emergency, and only on devices that list its action among
    /// their emergency actions (`ensure_safety` unlocking escape routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency_only: bool,
}

/// What an intent class means in device actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentClass {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    /// A new leader may re-send an action of this class that has no recorded outcome. When
    /// false, it records `OUTCOME_UNKNOWN` for a human instead.
    pub repeat_safe: bool,
}

/// Most steps in one intent class.
pub const MAX_STEPS: usize = 64;

impl IntentClass {
    /// What a new class must pass before anything is appended (`apply` checks only the name,
    /// as it always did, so that replaying an older log gives the same state).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("name", &self.name)?;
        check_text("description", &self.description, 512)?;
        if self.steps.len() > MAX_STEPS {
            return Err(FieldError::new(
                "steps",
                format!("{} steps; at most {MAX_STEPS}", self.steps.len()),
            ));
        }
        for (n, step) in self.steps.iter().enumerate() {
            check_id(&format!("steps[{n}].capability"), &step.capability)?;
            for t in &step.tags {
                check_id(&format!("steps[{n}].tags"), t)?;
            }
            let field = format!("steps[{n}].target");
            match &step.target {
                Target::State(s) => check_id(&field, s)?,
                Target::FromContext {
                    key,
                    allowed,
                    default,
                } => {
                    check_id(&field, key)?;
                    if allowed.is_empty() {
                        return Err(FieldError::new(
                            field,
                            "from_context lists no allowed states",
                        ));
                    }
                    for s in allowed.iter().chain(default) {
                        check_id(&field, s)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn state(s: &str) -> Target {
    Target::State(s.to_string())
}

/// The five universal intent classes of the DoSync protocol.
pub fn default_classes() -> Vec<IntentClass> {
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    vec![
        IntentClass {
            name: "ensure_safety".into(),
            description: "Make people safe now: sirens and lights on, escape routes unlocked."
                .into(),
            steps: vec![
                Step {
                    capability: "siren".into(),
                    target: state("on"),
                    tags: BTreeSet::new(),
                    emergency_only: false,
                },
                Step {
                    capability: "light".into(),
                    target: state("on"),
                    tags: BTreeSet::new(),
                    emergency_only: false,
                },
                Step {
                    capability: "lock".into(),
                    target: state("unlocked"),
                    tags: set(&["escape_route"]),
                    emergency_only: true,
                },
            ],
            repeat_safe: true,
        },
        IntentClass {
            name: "alert_anomaly".into(),
            description: "Draw attention to something unusual: lights flash, notifiers alert."
                .into(),
            steps: vec![
                Step {
                    capability: "light".into(),
                    target: state("flash"),
                    tags: BTreeSet::new(),
                    emergency_only: false,
                },
                Step {
                    capability: "notifier".into(),
                    target: state("alert"),
                    tags: BTreeSet::new(),
                    emergency_only: false,
                },
            ],
            repeat_safe: true,
        },
        IntentClass {
            name: "control_access".into(),
            description:
                "Lock or unlock doors (context state = locked | unlocked, default locked).".into(),
            steps: vec![Step {
                capability: "lock".into(),
                target: Target::FromContext {
                    key: "state".into(),
                    allowed: set(&["locked", "unlocked"]),
                    default: Some("locked".into()),
                },
                tags: BTreeSet::new(),
                emergency_only: false,
            }],
            repeat_safe: true,
        },
        IntentClass {
            name: "report_status".into(),
            description: "Read every sensor in scope; actuates nothing.".into(),
            steps: vec![],
            repeat_safe: true,
        },
        IntentClass {
            name: "notify".into(),
            description: "Tell the people in scope (notifiers show a message).".into(),
            steps: vec![Step {
                capability: "notifier".into(),
                target: state("message"),
                tags: BTreeSet::new(),
                emergency_only: false,
            }],
            repeat_safe: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_paths_and_odd_characters() {
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "A",
            "x y",
            "é",
            &"a".repeat(129),
        ] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
        for good in ["a", "front-door", "lock_1", "v1.2"] {
            check_id("id", good).unwrap();
        }
    }

    #[test]
    fn locations_nest_by_segment() {
        let home = Location::parse("l", "home").unwrap();
        let kitchen = Location::parse("l", "home/kitchen").unwrap();
        let homer = Location::parse("l", "homer").unwrap();
        assert!(home.contains(&kitchen) && home.contains(&home));
        assert!(!kitchen.contains(&home) && !home.contains(&homer));
        assert!(Location::parse("l", "home//x").is_err());
        assert!(Location::parse("l", "home/../x").is_err());
        assert!(Location::parse("l", &["a"; 9].join("/")).is_err());
    }

    #[test]
    fn urgency_orders_and_parses() {
        assert!(
            Urgency::Emergency > Urgency::Alert
                && Urgency::Alert > Urgency::Warning
                && Urgency::Warning > Urgency::Info
        );
        assert_eq!(Urgency::parse("alert").unwrap(), Urgency::Alert);
        assert_eq!(Urgency::parse("panic").unwrap_err().field, "urgency");
    }

    #[test]
    fn defaults_are_the_five_dosync_classes() {
        let names: Vec<String> = default_classes().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "ensure_safety",
                "alert_anomaly",
                "control_access",
                "report_status",
                "notify"
            ]
        );
    }

    #[test]
    fn emergency_actions_must_be_actions_the_device_can_take_and_old_manifests_map() {
        let door = |extra: serde_json::Value| -> Device {
            let mut v = serde_json::json!({
                "id": "door", "name": "d", "location": "home/hall",
                "actuators": {"lock": ["locked", "unlocked"]},
                "adapter": {"kind": "sim", "address": "x"}
            });
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        door(serde_json::json!({"emergency_actions": {"lock": ["unlocked"]}}))
            .validate()
            .unwrap();
        for (bad, field) in [
            (
                serde_json::json!({"siren": ["on"]}),
                "emergency_actions.siren",
            ),
            (
                serde_json::json!({"lock": ["toggle"]}),
                "emergency_actions.lock",
            ),
            (serde_json::json!({"lock": []}), "emergency_actions.lock"),
        ] {
            let e = door(serde_json::json!({ "emergency_actions": bad }))
                .validate()
                .unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        // An old manifest (no emergency_actions) decodes; `emergency_capable` maps.
        let old = door(serde_json::json!({"emergency_capable": true}));
        assert!(old.is_emergency_action("lock", "locked"));
        assert!(
            !old.is_emergency_action("lock", "unlocked"),
            "an unlock is never implied"
        );
        let mut escape = old.clone();
        escape.tags.insert(ESCAPE_ROUTE.into());
        assert!(escape.is_emergency_action("lock", "unlocked"));
        let off = door(serde_json::json!({"emergency_capable": false, "tags": ["escape_route"]}));
        assert!(!off.is_emergency_action("lock", "unlocked") && !off.has_emergency_actions());
        assert!(
            !serde_json::to_string(&old)
                .unwrap()
                .contains("emergency_actions")
        );
    }
}
