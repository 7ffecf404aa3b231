//! Household policies and the replicated rate-limit windows they read.
//!
//! An emergency overrides a policy only where both sides say so: the policy allows it
//! ([`Policy::emergency_may_override`]: by default every non-absolute policy but
//! `require_confirmation`), and the device lists the action among its emergency actions
//! ([`crate::intent::Device::is_emergency_action`]; an unlock only where the household listed
//! it). `Block` is absolute: even an emergency respects it.
//!
//! What a client may ask for at all is its token's [`Grants`]: whether it may claim an
//! emergency, and which classes and locations it may use.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::intent::{Device, FieldError, Intent, IntentClass, Location, Urgency, check_id};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Never use this device (for `class`, or for every class).
    ExcludeDevice {
        device: String,
        #[serde(default)]
        class: Option<String>,
    },
    /// Intents of this class wait for a person's approval before anything is dispatched.
    RequireConfirmation { class: String },
    /// Between `start_minute` and `end_minute` (minutes after local midnight; the window may
    /// wrap past midnight) devices with any of `tags` (all devices if empty) are not actuated by
    /// `classes` (all classes if empty).
    QuietHours {
        start_minute: u16,
        end_minute: u16,
        #[serde(default)]
        classes: BTreeSet<String>,
        #[serde(default)]
        tags: BTreeSet<String>,
    },
    /// At most `max` intents per source within `window_secs`.
    RateLimitSource { max: u32, window_secs: u32 },
    /// At most `max` actions per device within `window_secs`.
    RateLimitDevice { max: u32, window_secs: u32 },
    /// Absolute: never actuate this device (for `class`, or for every class), emergencies included.
    Block {
        device: String,
        #[serde(default)]
        class: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: String,
    pub rule: Rule,
    /// Whether an emergency may override this policy for a device's emergency actions.
    /// Absent: yes for `exclude_device`, `quiet_hours`, `rate_limit_device` and
    /// `rate_limit_source`; no for `require_confirmation` (an emergency waits for approval
    /// unless the household wrote `emergency_override = true`). Never for `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_override: Option<bool>,
}

impl Policy {
    pub fn new(id: impl Into<String>, rule: Rule) -> Self {
        Self {
            id: id.into(),
            rule,
            emergency_override: None,
        }
    }

    /// Whether an emergency may override this policy (for the devices whose manifest lists
    /// the action as an emergency action).
    pub fn emergency_may_override(&self) -> bool {
        match self.rule {
            Rule::Block { .. } => false,
            Rule::RequireConfirmation { .. } => self.emergency_override.unwrap_or(false),
            _ => self.emergency_override.unwrap_or(true),
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        match &self.rule {
            Rule::ExcludeDevice { device, class } | Rule::Block { device, class } => {
                check_id("device", device)?;
                if let Some(c) = class {
                    check_id("class", c)?;
                }
            }
            Rule::RequireConfirmation { class } => check_id("class", class)?,
            Rule::QuietHours {
                start_minute,
                end_minute,
                ..
            } => {
                if *start_minute >= 1440 || *end_minute >= 1440 {
                    return Err(FieldError::new(
                        "start_minute",
                        "minutes after midnight must be below 1440",
                    ));
                }
            }
            Rule::RateLimitSource { max, window_secs }
            | Rule::RateLimitDevice { max, window_secs } => {
                if *max == 0 || *window_secs == 0 {
                    return Err(FieldError::new(
                        "max",
                        "max and window_secs must both be above zero",
                    ));
                }
            }
        }
        Ok(())
    }

    /// What a new policy must pass before anything is appended: [`Policy::validate`] plus the
    /// ids inside `quiet_hours`. `apply` re-checks committed entries with `validate` only,
    /// which must not change: replaying an older log must give the same state.
    pub fn validate_request(&self) -> Result<(), FieldError> {
        self.validate()?;
        if self.is_absolute() && self.emergency_override == Some(true) {
            return Err(FieldError::new(
                "emergency_override",
                "a block is absolute: an emergency never overrides it (use exclude_device)",
            ));
        }
        if let Rule::QuietHours { classes, tags, .. } = &self.rule {
            for c in classes {
                check_id("classes", c)?;
            }
            for t in tags {
                check_id("tags", t)?;
            }
        }
        Ok(())
    }

    pub fn is_absolute(&self) -> bool {
        matches!(self.rule, Rule::Block { .. })
    }
}

/// Whether `minute` falls in `[start, end)`, wrapping past midnight.
pub fn in_window(start: u16, end: u16, minute: u16) -> bool {
    if start <= end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

/// Timestamps (ms, from the entry that accepted them) of recent intents per source and
/// actions per device. Part of the replicated state; changed only by applying entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindows {
    pub by_source: BTreeMap<String, Vec<u64>>,
    pub by_device: BTreeMap<String, Vec<u64>>,
    /// The chain's time: the latest time any applied entry was planned at (ms). Windows count
    /// against it, never against a leader's clock, and it never runs backwards
    /// (`clock::effective`). 0 in states older than it.
    #[serde(default)]
    pub chain_ms: u64,
    /// Accepted emergencies per source (they pass every other rate limit); kept only for
    /// [`MAX_EMERGENCY_WINDOW_SECS`]. Absent in states written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub emergencies_by_source: BTreeMap<String, Vec<u64>>,
}

/// How many emergencies one source may send within a window. Emergencies bypass the
/// household's source limits, so this bound is separate and high; the leader writes the limit
/// it applies into each intent's entry (replaying an older entry, without one, applies none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyLimit {
    pub max: u32,
    pub window_secs: u32,
}

/// The default: a real emergency sends a few intents, not one every two seconds for a minute.
pub const DEFAULT_EMERGENCY_LIMIT: EmergencyLimit = EmergencyLimit {
    max: 30,
    window_secs: 60,
};

/// The longest emergency window that can be configured (and how long emergencies are kept).
pub const MAX_EMERGENCY_WINDOW_SECS: u32 = 3600;

impl EmergencyLimit {
    /// Checks a configured limit.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.max == 0 || self.window_secs == 0 || self.window_secs > MAX_EMERGENCY_WINDOW_SECS {
            return Err(FieldError::new(
                "emergency limit",
                format!(
                    "max must be above zero and window_secs within 1..={MAX_EMERGENCY_WINDOW_SECS}"
                ),
            ));
        }
        Ok(())
    }

    /// Why an emergency from `source` at `now_ms` is refused, or `None`.
    pub fn refuses(&self, rates: &RateWindows, source: &str, now_ms: u64) -> Option<String> {
        let n = count(
            rates.emergencies_by_source.get(source),
            now_ms,
            self.window_secs,
        );
        (n >= self.max as usize).then(|| {
            format!(
                "emergency rate limit: source {source:?} already sent {n} emergency intents in the \
                 last {} s (max {}); emergencies pass the household's other limits, not this one",
                self.window_secs, self.max
            )
        })
    }
}

impl RateWindows {
    pub fn count_source(&self, source: &str, now_ms: u64, window_secs: u32) -> usize {
        count(self.by_source.get(source), now_ms, window_secs)
    }

    pub fn count_device(&self, device: &str, now_ms: u64, window_secs: u32) -> usize {
        count(self.by_device.get(device), now_ms, window_secs)
    }

    /// Records an accepted intent and its actions; forgets what is older than `keep_secs`.
    pub fn record<'a>(
        &mut self,
        source: &str,
        devices: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
        keep_secs: u32,
    ) {
        self.by_source
            .entry(source.to_string())
            .or_default()
            .push(now_ms);
        for d in devices {
            self.by_device
                .entry(d.to_string())
                .or_default()
                .push(now_ms);
        }
        let horizon = now_ms.saturating_sub(u64::from(keep_secs) * 1000);
        for m in [&mut self.by_source, &mut self.by_device] {
            m.values_mut().for_each(|v| v.retain(|t| *t >= horizon));
            m.retain(|_, v| !v.is_empty());
        }
        self.prune_emergencies(now_ms);
    }

    /// Records an accepted emergency of `source` (besides [`RateWindows::record`]).
    pub fn record_emergency(&mut self, source: &str, now_ms: u64) {
        self.emergencies_by_source
            .entry(source.to_string())
            .or_default()
            .push(now_ms);
        self.prune_emergencies(now_ms);
    }

    /// Forgets emergencies older than the longest window a limit can have.
    fn prune_emergencies(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(u64::from(MAX_EMERGENCY_WINDOW_SECS) * 1000);
        let m = &mut self.emergencies_by_source;
        m.values_mut().for_each(|v| v.retain(|t| *t >= horizon));
        m.retain(|_, v| !v.is_empty());
    }
}

fn count(v: Option<&Vec<u64>>, now_ms: u64, window_secs: u32) -> usize {
    let from = now_ms.saturating_sub(u64::from(window_secs) * 1000);
    v.map_or(0, |v| {
        v.iter().filter(|t| **t >= from && **t <= now_ms).count()
    })
}

/// The devices, classes and tags a rule names.
fn references(rule: &Rule) -> (Option<&String>, Vec<&String>, Vec<&String>) {
    match rule {
        Rule::ExcludeDevice { device, class } | Rule::Block { device, class } => {
            (Some(device), class.iter().collect(), Vec::new())
        }
        Rule::RequireConfirmation { class } => (None, vec![class], Vec::new()),
        Rule::QuietHours { classes, tags, .. } => {
            (None, classes.iter().collect(), tags.iter().collect())
        }
        Rule::RateLimitSource { .. } | Rule::RateLimitDevice { .. } => {
            (None, Vec::new(), Vec::new())
        }
    }
}

/// A whole policy set as a household writes it, checked before anything is appended: every
/// policy well-formed, ids unique. Fields are named `policies[N].…` (N from 0, in file order).
pub fn validate_set(policies: &[Policy]) -> Result<(), FieldError> {
    let mut ids = BTreeMap::new();
    for (n, p) in policies.iter().enumerate() {
        p.validate_request().map_err(|e| FieldError {
            field: if e.field == "id" || e.field == "emergency_override" {
                format!("policies[{n}].{}", e.field)
            } else {
                format!("policies[{n}].rule.{}", e.field)
            },
            problem: e.problem,
        })?;
        if let Some(first) = ids.insert(p.id.as_str(), n) {
            return Err(FieldError::new(
                format!("policies[{n}].id"),
                format!(
                    "{:?} is already the id of policies[{first}]; every policy needs its own id",
                    p.id
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that every device, class and tag a policy set names exists in the registry, so a
/// typo (`block` of `garage-dor`) is refused instead of silently doing nothing. Run by the
/// leader when the set is applied (not in `apply`: a device may be removed later).
pub fn check_references(
    policies: &[Policy],
    devices: &BTreeMap<String, Device>,
    classes: &BTreeMap<String, IntentClass>,
) -> Result<(), FieldError> {
    let list = |v: Vec<&String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    for (n, p) in policies.iter().enumerate() {
        let (device, cls, tags) = references(&p.rule);
        if let Some(d) = device
            && !devices.contains_key(d)
        {
            return Err(FieldError::new(
                format!("policies[{n}].rule.device"),
                format!(
                    "policy {:?} names device {d:?}, which is not registered (registered: {})",
                    p.id,
                    list(devices.keys().collect())
                ),
            ));
        }
        let field = if matches!(p.rule, Rule::QuietHours { .. }) {
            "classes"
        } else {
            "class"
        };
        if let Some(c) = cls.into_iter().find(|c| !classes.contains_key(*c)) {
            return Err(FieldError::new(
                format!("policies[{n}].rule.{field}"),
                format!(
                    "policy {:?} names class {c:?}, which does not exist (classes: {})",
                    p.id,
                    list(classes.keys().collect())
                ),
            ));
        }
        if let Some(t) = tags
            .into_iter()
            .find(|t| !devices.values().any(|d| d.tags.contains(*t)))
        {
            let known: BTreeSet<&String> = devices.values().flat_map(|d| &d.tags).collect();
            return Err(FieldError::new(
                format!("policies[{n}].rule.tags"),
                format!(
                    "policy {:?} names tag {t:?}, which no registered device has (tags in use: {})",
                    p.id,
                    list(known.into_iter().collect())
                ),
            ));
        }
    }
    Ok(())
}

/// One difference between the policy set in force and a proposed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Policy),
    Removed(Policy),
    Changed { before: Policy, after: Policy },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |p: &Policy| serde_json::to_string(&p.rule).unwrap_or_default();
        let over = |p: &Policy| match p.emergency_override {
            Some(b) => format!(" emergency_override={b}"),
            None => String::new(),
        };
        match self {
            Change::Added(p) => write!(f, "+ add     {}: {}{}", p.id, show(p), over(p)),
            Change::Removed(p) => write!(f, "- remove  {}: {}{}", p.id, show(p), over(p)),
            Change::Changed { before, after } => write!(
                f,
                "~ change  {}: {}{} -> {}{}",
                after.id,
                show(before),
                over(before),
                show(after),
                over(after)
            ),
        }
    }
}

/// What replacing `current` by `proposed` changes, by policy id: removals, changes, then
/// additions, each in id order. Empty when the sets are the same.
pub fn diff(current: &[Policy], proposed: &[Policy]) -> Vec<Change> {
    let old: BTreeMap<&str, &Policy> = current.iter().map(|p| (p.id.as_str(), p)).collect();
    let new: BTreeMap<&str, &Policy> = proposed.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut out = Vec::new();
    for (id, p) in &old {
        match new.get(id) {
            None => out.push(Change::Removed((*p).clone())),
            Some(q) if q != p => out.push(Change::Changed {
                before: (*p).clone(),
                after: (*q).clone(),
            }),
            Some(_) => {}
        }
    }
    for (id, q) in &new {
        if !old.contains_key(id) {
            out.push(Change::Added((*q).clone()));
        }
    }
    out.sort_by_key(|c| match c {
        Change::Removed(_) => 0,
        Change::Changed { .. } => 1,
        Change::Added(_) => 2,
    });
    out
}

/// A policy document as a household writes it (`policies.toml`): unknown fields are refused
/// with their name, anywhere in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Required (write `policies = []` to clear the set), so that an empty or misnamed file
    /// never clears it by accident.
    pub policies: Vec<Policy>,
}

/// What a client token lets its holder ask for. Checked where intents are submitted and
/// explained (on the node that receives the call and again on the leader it forwards to).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// May claim `urgency = emergency`.
    pub emergency: bool,
    /// Classes it may use; `None`: every class.
    pub classes: Option<BTreeSet<String>>,
    /// Locations it may address: an intent's location must lie within one of them; `None`:
    /// everywhere.
    pub locations: Option<Vec<Location>>,
}

impl Grants {
    /// Everything (operators and admins by default, clusters without authentication).
    pub fn all() -> Self {
        Self {
            emergency: true,
            classes: None,
            locations: None,
        }
    }

    /// Whether `who` holding these grants may ask for `intent`; the refusal names the field.
    pub fn permits(&self, who: &str, intent: &Intent) -> Result<(), FieldError> {
        if intent.urgency == Urgency::Emergency && !self.emergency {
            return Err(FieldError::new(
                "urgency",
                format!(
                    "{who:?} may not claim an emergency (its token lacks the emergency grant: `hearth token add {who} --emergency`); send it as alert, or ask the household"
                ),
            ));
        }
        if let Some(classes) = &self.classes
            && !classes.contains(&intent.class)
        {
            return Err(FieldError::new(
                "class",
                format!(
                    "{who:?} may not use class {:?} (its token allows: {})",
                    intent.class,
                    classes.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some(locs) = &self.locations
            && !locs.iter().any(|l| l.contains(&intent.location))
        {
            return Err(FieldError::new(
                "location",
                format!(
                    "{who:?} may not address {} (its token allows: {})",
                    intent.location,
                    locs.iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// [`Grants::permits`], and for a token limited to some locations, that the intent's
    /// location names a registered device: an emergency to an unknown location acts
    /// everywhere, which such a token may not ask for.
    pub fn permits_with<'a>(
        &self,
        who: &str,
        intent: &Intent,
        device_locations: impl IntoIterator<Item = &'a Location>,
    ) -> Result<(), FieldError> {
        self.permits(who, intent)?;
        if let Some(locs) = &self.locations
            && !device_locations
                .into_iter()
                .any(|l| intent.location.contains(l))
        {
            return Err(FieldError::new(
                "location",
                format!(
                    "no device is at or under {}; {who:?} may address only {} and an emergency \
                     to an unknown location would act everywhere",
                    intent.location,
                    locs.iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight() {
        assert!(in_window(1320, 420, 1400) && in_window(1320, 420, 0) && in_window(1320, 420, 419));
        assert!(!in_window(1320, 420, 420) && !in_window(1320, 420, 720));
        assert!(in_window(600, 720, 600) && !in_window(600, 720, 720));
        for m in 0..1440 {
            assert!(!in_window(300, 300, m), "an empty window is never active");
        }
    }

    #[test]
    fn rate_windows_count_and_forget() {
        let mut r = RateWindows::default();
        for t in [1_000, 2_000, 3_000] {
            r.record("agent", ["siren"], t, 60);
        }
        assert_eq!(r.count_source("agent", 3_000, 60), 3);
        assert_eq!(r.count_source("agent", 3_000, 1), 2);
        assert_eq!(r.count_device("siren", 3_000, 60), 3);
        r.record("other", [], 200_000, 60);
        assert_eq!(
            r.count_source("agent", 200_000, 3600),
            0,
            "old entries are forgotten"
        );
        assert!(!r.by_device.contains_key("siren"));
    }

    #[test]
    fn validation_names_fields() {
        let bad = Policy {
            id: "q".into(),
            emergency_override: None,
            rule: Rule::QuietHours {
                start_minute: 1500,
                end_minute: 0,
                classes: BTreeSet::new(),
                tags: BTreeSet::new(),
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "start_minute");
        let bad = Policy {
            id: "r".into(),
            emergency_override: None,
            rule: Rule::RateLimitSource {
                max: 0,
                window_secs: 10,
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "max");
        let bad = Policy {
            id: "../x".into(),
            emergency_override: None,
            rule: Rule::RequireConfirmation {
                class: "notify".into(),
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "id");
    }

    fn block(id: &str, device: &str) -> Policy {
        Policy::new(
            id,
            Rule::Block {
                device: device.into(),
                class: None,
            },
        )
    }

    /// Issue 13 item 13: unknown fields, duplicate ids and devices that do not exist were
    /// accepted silently.
    #[test]
    fn a_policy_document_refuses_unknown_fields_duplicates_and_typos() {
        for doc in [
            r#"{"policies":[{"id":"n","timezone":"Europe/Paris","rule":{"kind":"block","device":"d"}}]}"#,
            r#"{"policies":[{"id":"n","rule":{"kind":"quiet_hours","start_minute":1,"end_minute":2,"timezone":"x"}}]}"#,
            r#"{"policies":[],"timezone":"x"}"#,
        ] {
            let e = serde_json::from_str::<PolicyDocument>(doc)
                .unwrap_err()
                .to_string();
            assert!(e.contains("unknown field `timezone`"), "{e}");
        }
        let e = validate_set(&[block("a", "d"), block("b", "d"), block("a", "e")]).unwrap_err();
        assert_eq!(e.field, "policies[2].id");
        assert!(e.problem.contains("policies[0]"), "{e}");
        let mut over = block("c", "d");
        over.emergency_override = Some(true);
        assert_eq!(
            validate_set(&[over]).unwrap_err().field,
            "policies[0].emergency_override"
        );

        let dev: Device = serde_json::from_value(serde_json::json!({
            "id": "garage-door", "name": "g", "location": "home/garage", "tags": ["noisy"],
            "actuators": {"lock": ["locked", "unlocked"]}, "adapter": {"kind": "sim", "address": "x"}
        }))
        .unwrap();
        let devices: BTreeMap<String, Device> = [(dev.id.clone(), dev)].into();
        let classes: BTreeMap<String, IntentClass> = crate::intent::default_classes()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        check_references(&[block("g", "garage-door")], &devices, &classes).unwrap();
        let e = check_references(
            &[block("ok", "garage-door"), block("g", "garage-dor")],
            &devices,
            &classes,
        )
        .unwrap_err();
        assert_eq!(e.field, "policies[1].rule.device");
        assert!(
            e.problem.contains("garage-dor") && e.problem.contains("garage-door"),
            "{e}"
        );
        let e = check_references(
            &[Policy::new(
                "c",
                Rule::RequireConfirmation {
                    class: "control_acess".into(),
                },
            )],
            &devices,
            &classes,
        )
        .unwrap_err();
        assert_eq!(e.field, "policies[0].rule.class");
        let q = |tag: &str| {
            Policy::new(
                "q",
                Rule::QuietHours {
                    start_minute: 0,
                    end_minute: 1,
                    classes: BTreeSet::new(),
                    tags: [tag.to_string()].into(),
                },
            )
        };
        check_references(&[q("noisy")], &devices, &classes).unwrap();
        assert_eq!(
            check_references(&[q("nosy")], &devices, &classes)
                .unwrap_err()
                .field,
            "policies[0].rule.tags"
        );
    }

    #[test]
    fn diff_names_every_removal_change_and_addition() {
        let a = block("a", "x");
        let b = block("b", "y");
        let b2 = block("b", "z");
        let c = block("c", "w");
        assert!(diff(&[a.clone(), b.clone()], &[b.clone(), a.clone()]).is_empty());
        let d = diff(&[a.clone(), b.clone()], &[b2.clone(), c.clone()]);
        assert_eq!(
            d,
            [
                Change::Removed(a),
                Change::Changed {
                    before: b,
                    after: b2
                },
                Change::Added(c)
            ]
        );
        let text: Vec<String> = d.iter().map(|c| c.to_string()).collect();
        assert!(text[0].starts_with("- remove  a"), "{text:?}");
        assert!(
            text[1].starts_with("~ change  b") && text[1].contains("\"z\""),
            "{text:?}"
        );
        assert!(text[2].starts_with("+ add     c"), "{text:?}");
    }

    #[test]
    fn emergency_override_defaults() {
        let confirm = Policy::new("c", Rule::RequireConfirmation { class: "x".into() });
        assert!(!confirm.emergency_may_override());
        let mut yes = confirm.clone();
        yes.emergency_override = Some(true);
        assert!(yes.emergency_may_override());
        assert!(!block("b", "d").emergency_may_override());
        let ex = Policy::new(
            "e",
            Rule::ExcludeDevice {
                device: "d".into(),
                class: None,
            },
        );
        assert!(ex.emergency_may_override());
        // Older entries (no field) decode, and the field is not written when absent.
        let old: Policy =
            serde_json::from_str(r#"{"id":"e","rule":{"kind":"exclude_device","device":"d"}}"#)
                .unwrap();
        assert_eq!(old, ex);
        assert!(
            !serde_json::to_string(&ex)
                .unwrap()
                .contains("emergency_override")
        );
    }

    /// Exhaustive over grants × intents: refused exactly when the emergency, class or location
    /// is not granted, naming that field.
    #[test]
    fn grants_decide_what_a_token_may_ask() {
        let loc = |s: &str| Location::parse("l", s).unwrap();
        let classes = [None, Some(BTreeSet::from(["notify".to_string()]))];
        let locations = [
            None,
            Some(vec![loc("home/kitchen")]),
            Some(vec![loc("garden"), loc("home")]),
        ];
        for emergency in [false, true] {
            for cl in &classes {
                for locs in &locations {
                    let g = Grants {
                        emergency,
                        classes: cl.clone(),
                        locations: locs.clone(),
                    };
                    for u in [Urgency::Info, Urgency::Emergency] {
                        for class in ["notify", "control_access"] {
                            for at in [
                                "home",
                                "home/kitchen",
                                "home/kitchen/sink",
                                "garden/shed",
                                "homer",
                            ] {
                                let i = Intent {
                                    class: class.into(),
                                    urgency: u,
                                    subject: String::new(),
                                    location: loc(at),
                                    context: BTreeMap::new(),
                                    source: "robot".into(),
                                    idempotency_key: "k".into(),
                                };
                                let want = if u == Urgency::Emergency && !emergency {
                                    Some("urgency")
                                } else if cl.as_ref().is_some_and(|c| !c.contains(class)) {
                                    Some("class")
                                } else if locs
                                    .as_ref()
                                    .is_some_and(|l| !l.iter().any(|l| l.contains(&i.location)))
                                {
                                    Some("location")
                                } else {
                                    None
                                };
                                let got = g.permits("robot", &i).err().map(|e| e.field);
                                assert_eq!(got.as_deref(), want, "{g:?} {i:?}");
                            }
                        }
                    }
                }
            }
        }
        assert!(
            Grants::all()
                .permits(
                    "x",
                    &Intent {
                        class: "anything".into(),
                        urgency: Urgency::Emergency,
                        subject: String::new(),
                        location: loc("x"),
                        context: BTreeMap::new(),
                        source: "x".into(),
                        idempotency_key: "k".into(),
                    }
                )
                .is_ok()
        );
    }

    /// A token limited to the kitchen must not widen an emergency to the whole house through
    /// a misspelt location under its own.
    #[test]
    fn a_location_limited_token_cannot_widen_an_emergency() {
        let loc = |s: &str| Location::parse("l", s).unwrap();
        let g = Grants {
            emergency: true,
            classes: None,
            locations: Some(vec![loc("home/kitchen")]),
        };
        let i = |at: &str| Intent {
            class: "ensure_safety".into(),
            urgency: Urgency::Emergency,
            subject: String::new(),
            location: loc(at),
            context: BTreeMap::new(),
            source: "robot".into(),
            idempotency_key: "k".into(),
        };
        let devices = [loc("home/kitchen"), loc("home/hall")];
        g.permits_with("robot", &i("home/kitchen"), &devices)
            .unwrap();
        let e = g
            .permits_with("robot", &i("home/kitchen/sinkk"), &devices)
            .unwrap_err();
        assert_eq!(e.field, "location");
        assert!(e.problem.contains("act everywhere"), "{e}");
        // Unlimited tokens may (the resolver widens and says so).
        Grants::all()
            .permits_with("op", &i("home/kitchn"), &devices)
            .unwrap();
    }
}
