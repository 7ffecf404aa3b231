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

    /// What a new registration must pass before anything is appended: [`Device::validate`]
    /// plus absolute states only and an adapter address that can work. `apply` re-checks
    /// committed entries with `validate` only, which must not change: replaying an older log
    /// must give the same state.
    pub fn validate_request(&self) -> Result<(), FieldError> {
        self.validate()?;
        check_text("name", &self.name, MAX_NAME)?;
        for (cap, states) in &self.actuators {
            for s in states {
                if let Some(word) = relative_word(s) {
                    return Err(FieldError::new(
                        format!("actuators.{cap}"),
                        format!(
                            "{s:?} is not an absolute state ({word:?} says what to change, not \
                             what to be); a command may be sent again after a failover, so \
                             list only states that mean the same the second time, e.g. \
                             on/off, locked/unlocked"
                        ),
                    ));
                }
            }
        }
        self.adapter.validate()
    }
}

/// Words that make a state relative to the current one: sent twice, such a command does not
/// do the same thing twice.
const RELATIVE_WORDS: &[&str] = &[
    "toggle",
    "toggled",
    "invert",
    "inverse",
    "flip",
    "cycle",
    "next",
    "prev",
    "previous",
    "increment",
    "decrement",
    "increase",
    "decrease",
    "incr",
    "decr",
    "opposite",
    "reverse",
    "swap",
    "alternate",
];

/// The relative word in a state name (`toggle`, `light-toggle`, `next_scene`), if any.
pub fn relative_word(state: &str) -> Option<&'static str> {
    state
        .split(['_', '-', '.'])
        .find_map(|w| RELATIVE_WORDS.iter().find(|r| **r == w).copied())
}

/// Splits an `http://host[:port][/path]` URL into `host:port` and the path. Only plain
/// `http://` (the webhook adapter speaks HTTP/1.1 to a LAN device or a local bridge), and no
/// `user:password@` (a manifest is in the chain: no secret may be in it).
pub fn parse_http_url(url: &str) -> Result<(String, String), String> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{url:?} contains spaces or control characters"));
    }
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            return Err(format!(
                "{url:?}: https is not supported by the http adapter (plain HTTP to a LAN \
                 device or a local bridge); use http:// or the mqtt adapter with TLS"
            ));
        }
        None => return Err(format!("{url:?} must start with http://")),
    };
    let (hostport, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if hostport.contains('@') {
        return Err(format!(
            "{url:?} carries credentials (user@host); a manifest is recorded in the audit \
             chain, so it must hold no secret"
        ));
    }
    // `[v6]:port`, `host:port`, or a bare host (port 80).
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("{url:?} has a malformed [address]")),
            },
            None => return Err(format!("{url:?} has a malformed [address]")),
        },
        None => match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{url:?} has no valid port (1-65535)"))?,
    };
    let host = if hostport.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url:?} has no host"));
    }
    Ok((format!("{host}:{port}"), path))
}

/// Checks an MQTT topic a device is reached at: Hearth publishes on `<topic>/command` and
/// reads `<topic>/ack`, so no wildcard, no `$` (broker-reserved), no empty level.
fn check_mqtt_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 256 {
        return Err("must be 1 to 256 bytes".into());
    }
    if topic.chars().any(|c| c.is_control()) {
        return Err(format!("{topic:?} contains control characters"));
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "{topic:?} contains an MQTT wildcard (+ or #); name one device's topic"
        ));
    }
    if topic.starts_with('$') {
        return Err(format!(
            "{topic:?}: topics starting with $ are the broker's"
        ));
    }
    if topic.split('/').any(str::is_empty) {
        return Err(format!(
            "{topic:?} has an empty level (a leading, trailing or double /)"
        ));
    }
    Ok(())
}

impl Adapter {
    /// Can this address work at all? (Whether this hub has the adapter configured is the
    /// node's check.)
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Adapter::Sim { address } => match address.strip_prefix("local:") {
                Some(name) => check_id("adapter.address", name),
                None => {
                    let ok = address.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if ok {
                        Ok(())
                    } else {
                        Err(FieldError::new(
                            "adapter.address",
                            format!(
                                "{address:?} is neither local:<name> nor host:port of a \
                                 hearth device-sim"
                            ),
                        ))
                    }
                }
            },
            Adapter::Mqtt { topic } => {
                check_mqtt_topic(topic).map_err(|e| FieldError::new("adapter.topic", e))
            }
            Adapter::Http { url } => parse_http_url(url)
                .map(|_| ())
                .map_err(|e| FieldError::new("adapter.url", e)),
        }
    }

    /// The adapter's kind as the manifest names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Adapter::Sim { .. } => "sim",
            Adapter::Mqtt { .. } => "mqtt",
            Adapter::Http { .. } => "http",
        }
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
    /// How long after an intent of this class becomes dispatchable its actions may still be
    /// sent (ms). A leader that finds one later (a write that committed only when a partition
    /// healed) records it `EXPIRED` and sends nothing. Never longer than the node's write
    /// timeout (what the client was told); absent: the write timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// How long an intent of this class waits for a person's approval (under a
    /// `require_confirmation` policy) before it is denied by itself (ms, from the entry that
    /// held it). Absent: [`crate::approval::DEFAULT_APPROVAL_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_ms: Option<u64>,
}

/// Most steps in one intent class.
pub const MAX_STEPS: usize = 64;

impl IntentClass {
    /// What a new class must pass before anything is appended (`apply` checks only the name,
    /// as it always did, so that replaying an older log gives the same state).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("name", &self.name)?;
        check_text("description", &self.description, 512)?;
        if self.deadline_ms == Some(0) {
            return Err(FieldError::new(
                "deadline_ms",
                "must be above 0 (ms after the intent is accepted or approved)",
            ));
        }
        if let Some(t) = self.approval_timeout_ms {
            crate::approval::check_timeout("approval_timeout_ms", t)?;
        }
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
            deadline_ms: None,
            approval_timeout_ms: None,
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
            deadline_ms: None,
            approval_timeout_ms: None,
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
            deadline_ms: None,
            approval_timeout_ms: None,
        },
        IntentClass {
            name: "report_status".into(),
            description: "Read every sensor in scope; actuates nothing.".into(),
            steps: vec![],
            repeat_safe: true,
            deadline_ms: None,
            approval_timeout_ms: None,
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
            deadline_ms: None,
            approval_timeout_ms: None,
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

    fn lock(states: &[&str], adapter: Adapter) -> Device {
        Device {
            id: "porch-lock".into(),
            name: "Porch".into(),
            location: Location::parse("l", "home/porch").unwrap(),
            tags: BTreeSet::new(),
            sensors: BTreeSet::new(),
            actuators: [(
                "lock".to_string(),
                states.iter().map(|s| s.to_string()).collect(),
            )]
            .into(),
            emergency_capable: false,
            emergency_actions: Default::default(),
            adapter,
        }
    }

    fn mqtt(topic: &str) -> Adapter {
        Adapter::Mqtt {
            topic: topic.into(),
        }
    }

    #[test]
    fn relative_states_are_refused_at_registration_with_the_field_named() {
        for bad in [
            "toggle",
            "invert",
            "flip",
            "light-toggle",
            "next_scene",
            "cycle",
            "increase",
            "previous",
        ] {
            let d = lock(&["locked", bad], mqtt("home/porch"));
            // `validate` (what apply re-checks) still accepts it: an older log replays as it did.
            d.validate().unwrap();
            let e = d.validate_request().unwrap_err();
            assert_eq!(e.field, "actuators.lock", "{bad}");
            assert!(e.problem.contains(bad), "{e}");
        }
        for good in [
            "locked", "unlocked", "on", "off", "up", "down", "open", "closed", "50",
        ] {
            lock(&[good], mqtt("home/porch"))
                .validate_request()
                .unwrap();
        }
    }

    #[test]
    fn adapter_addresses_that_cannot_work_are_refused_with_the_field_named() {
        let bad: &[(Adapter, &str, &str)] = &[
            (mqtt(""), "adapter.topic", "1 to 256"),
            (mqtt("home/+/door"), "adapter.topic", "wildcard"),
            (mqtt("home/#"), "adapter.topic", "wildcard"),
            (mqtt("$SYS/door"), "adapter.topic", "$"),
            (mqtt("/home/door"), "adapter.topic", "empty level"),
            (mqtt("home/door/"), "adapter.topic", "empty level"),
            (mqtt("home//door"), "adapter.topic", "empty level"),
            (
                Adapter::Http {
                    url: "https://bridge/x".into(),
                },
                "adapter.url",
                "https",
            ),
            (
                Adapter::Http {
                    url: "ftp://bridge/x".into(),
                },
                "adapter.url",
                "http://",
            ),
            (
                Adapter::Http {
                    url: "bridge:80/x".into(),
                },
                "adapter.url",
                "http://",
            ),
            (
                Adapter::Http {
                    url: "http://".into(),
                },
                "adapter.url",
                "no host",
            ),
            (
                Adapter::Http {
                    url: "http://:80/x".into(),
                },
                "adapter.url",
                "no host",
            ),
            (
                Adapter::Http {
                    url: "http://bridge:0/x".into(),
                },
                "adapter.url",
                "port",
            ),
            (
                Adapter::Http {
                    url: "http://bridge:99999/x".into(),
                },
                "adapter.url",
                "port",
            ),
            (
                Adapter::Http {
                    url: "http://bridge:http/x".into(),
                },
                "adapter.url",
                "port",
            ),
            (
                Adapter::Http {
                    url: "http://admin:pw@bridge/x".into(),
                },
                "adapter.url",
                "credentials",
            ),
            (
                Adapter::Http {
                    url: "http://bridge/a b".into(),
                },
                "adapter.url",
                "spaces",
            ),
            (
                Adapter::Sim {
                    address: "local:".into(),
                },
                "adapter.address",
                "",
            ),
            (
                Adapter::Sim {
                    address: "http://h:1".into(),
                },
                "adapter.address",
                "neither",
            ),
            (
                Adapter::Sim {
                    address: "h".into(),
                },
                "adapter.address",
                "neither",
            ),
            (
                Adapter::Sim {
                    address: "h:0".into(),
                },
                "adapter.address",
                "neither",
            ),
        ];
        for (a, field, needle) in bad {
            let e = lock(&["locked"], a.clone()).validate_request().unwrap_err();
            assert_eq!(e.field, *field, "{a:?}");
            assert!(e.problem.contains(needle), "{a:?}: {e}");
        }
        for good in [
            mqtt("home/porch/lock"),
            mqtt("porch"),
            Adapter::Http {
                url: "http://bridge.local:8080/siren".into(),
            },
            Adapter::Http {
                url: "http://10.0.0.5".into(),
            },
            Adapter::Http {
                url: "http://[::1]:81/x?y=1".into(),
            },
            Adapter::Sim {
                address: "local:dev".into(),
            },
            Adapter::Sim {
                address: "127.0.0.1:7301".into(),
            },
        ] {
            lock(&["locked"], good.clone()).validate_request().unwrap();
        }
        assert_eq!(
            parse_http_url("http://a:81/x/y").unwrap(),
            ("a:81".into(), "/x/y".into())
        );
        assert_eq!(
            parse_http_url("http://a").unwrap(),
            ("a:80".into(), "/".into())
        );
        assert_eq!(
            parse_http_url("http://a?q").unwrap(),
            ("a:80".into(), "/?q".into())
        );
        assert_eq!(
            parse_http_url("http://[::1]").unwrap(),
            ("[::1]:80".into(), "/".into())
        );
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
