//! The resolver: intent + replicated state → plan. Pure and deterministic: the same devices,
//! classes, policies, rate windows and clock give the same plan on every node.
//!
//! Order of a plan: class steps in order; within a step, emergency-capable devices first, then
//! by device id. Every device gets a verdict saying why it is in or out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::intent::{Adapter, Device, FieldError, Intent, IntentClass, Target, Urgency};
use crate::policy::{Policy, RateWindows, Rule, in_window};

/// The replicated state the resolver reads.
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    pub devices: &'a BTreeMap<String, Device>,
    pub classes: &'a BTreeMap<String, IntentClass>,
    pub policies: &'a [Policy],
    pub rates: &'a RateWindows,
}

/// Time as the deciding entry fixed it (never the local clock of whoever re-plans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now_ms: u64,
    /// Minutes after local midnight, for quiet hours.
    pub minute_of_day: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub device: String,
    pub capability: String,
    /// The absolute state the device is put in ("locked", never "toggle").
    pub state: String,
    pub adapter: Adapter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub device: String,
    pub included: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub class: String,
    pub urgency: Urgency,
    pub actions: Vec<PlannedAction>,
    /// Devices whose sensors are read (report_status).
    pub reads: Vec<String>,
    pub verdicts: Vec<Verdict>,
    /// The intent waits for an approval before anything is dispatched.
    pub needs_confirmation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown intent class {class:?}; known classes: {known}")]
    UnknownClass { class: String, known: String },
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(
        "rate limit: source {source_id:?} already sent {count} intents in the last {window_secs} s (policy {policy}, max {max}); only emergencies go through"
    )]
    RateLimited {
        source_id: String,
        count: usize,
        max: u32,
        window_secs: u32,
        policy: String,
    },
}

/// Why a non-absolute policy stops a device, or `None`.
fn soft_exclusion(world: &World<'_>, class: &str, device: &Device, clock: Clock) -> Option<String> {
    for p in world.policies {
        let hit = match &p.rule {
            Rule::ExcludeDevice {
                device: d,
                class: c,
            } => d == &device.id && c.as_deref().is_none_or(|c| c == class),
            Rule::QuietHours {
                start_minute,
                end_minute,
                classes,
                tags,
            } => {
                in_window(*start_minute, *end_minute, clock.minute_of_day)
                    && (classes.is_empty() || classes.contains(class))
                    && (tags.is_empty() || !tags.is_disjoint(&device.tags))
            }
            Rule::RateLimitDevice { max, window_secs } => {
                world
                    .rates
                    .count_device(&device.id, clock.now_ms, *window_secs)
                    >= *max as usize
            }
            _ => false,
        };
        if hit {
            return Some(format!("policy {}", p.id));
        }
    }
    None
}

fn absolute_block(world: &World<'_>, class: &str, device: &Device) -> Option<String> {
    world.policies.iter().find_map(|p| match &p.rule {
        Rule::Block {
            device: d,
            class: c,
        } if d == &device.id && c.as_deref().is_none_or(|c| c == class) => Some(format!(
            "blocked by policy {} (absolute: even emergencies respect it)",
            p.id
        )),
        _ => None,
    })
}

fn target_state(intent: &Intent, t: &Target) -> Result<String, FieldError> {
    match t {
        Target::State(s) => Ok(s.clone()),
        Target::FromContext {
            key,
            allowed,
            default,
        } => {
            let v = intent
                .context
                .get(key)
                .or(default.as_ref())
                .ok_or_else(|| {
                    FieldError::new(
                        format!("context.{key}"),
                        format!("required; one of {allowed:?}"),
                    )
                })?;
            if allowed.contains(v) {
                Ok(v.clone())
            } else {
                Err(FieldError::new(
                    format!("context.{key}"),
                    format!("{v:?} is not one of {allowed:?}"),
                ))
            }
        }
    }
}

/// Plans an intent.
pub fn resolve(world: &World<'_>, intent: &Intent, clock: Clock) -> Result<Plan, PlanError> {
    intent.validate()?;
    let class = world
        .classes
        .get(&intent.class)
        .ok_or_else(|| PlanError::UnknownClass {
            class: intent.class.clone(),
            known: world.classes.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    let emergency = intent.urgency == Urgency::Emergency;

    for p in world.policies {
        if let Rule::RateLimitSource { max, window_secs } = &p.rule {
            let count = world
                .rates
                .count_source(&intent.source, clock.now_ms, *window_secs);
            if count >= *max as usize && !emergency {
                return Err(PlanError::RateLimited {
                    source_id: intent.source.clone(),
                    count,
                    max: *max,
                    window_secs: *window_secs,
                    policy: p.id.clone(),
                });
            }
        }
    }
    let needs_confirmation = !emergency
        && world
            .policies
            .iter()
            .any(|p| matches!(&p.rule, Rule::RequireConfirmation { class: c } if c == &class.name));

    // Devices in scope, in plan order: emergency-capable first, then by id.
    let mut in_scope: Vec<&Device> = world
        .devices
        .values()
        .filter(|d| intent.location.contains(&d.location))
        .collect();
    in_scope.sort_by(|a, b| {
        b.emergency_capable
            .cmp(&a.emergency_capable)
            .then_with(|| a.id.cmp(&b.id))
    });

    let mut actions: Vec<PlannedAction> = Vec::new();
    let mut planned: BTreeSet<(String, String)> = BTreeSet::new();
    let mut reasons: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    let mut note = |d: &str, included: bool, why: String| {
        let e = reasons.entry(d.to_string()).or_insert((false, Vec::new()));
        e.0 |= included;
        e.1.push(why);
    };
    for step in &class.steps {
        let state = target_state(intent, &step.target)?;
        for d in &in_scope {
            let Some(states) = d.actuators.get(&step.capability) else {
                continue;
            };
            if !step.tags.is_subset(&d.tags) {
                note(
                    &d.id,
                    false,
                    format!("{}: lacks tags {:?}", step.capability, step.tags),
                );
                continue;
            }
            if !states.contains(&state) {
                note(
                    &d.id,
                    false,
                    format!("{}: cannot be put in state {state:?}", step.capability),
                );
                continue;
            }
            if let Some(why) = absolute_block(world, &class.name, d) {
                note(&d.id, false, format!("{}: {why}", step.capability));
                continue;
            }
            if let Some(why) = soft_exclusion(world, &class.name, d, clock) {
                if emergency && d.emergency_capable {
                    note(
                        &d.id,
                        true,
                        format!("{} -> {state}: emergency overrides {why}", step.capability),
                    );
                } else {
                    note(
                        &d.id,
                        false,
                        format!("{}: excluded by {why}", step.capability),
                    );
                    continue;
                }
            } else {
                note(&d.id, true, format!("{} -> {state}", step.capability));
            }
            if planned.insert((d.id.clone(), step.capability.clone())) {
                actions.push(PlannedAction {
                    device: d.id.clone(),
                    capability: step.capability.clone(),
                    state: state.clone(),
                    adapter: d.adapter.clone(),
                });
            }
        }
    }
    let reads: Vec<String> = if class.steps.is_empty() {
        in_scope
            .iter()
            .filter(|d| !d.sensors.is_empty())
            .map(|d| d.id.clone())
            .collect()
    } else {
        Vec::new()
    };
    for d in &reads {
        note(d, true, "sensors read".into());
    }
    let mut verdicts = Vec::new();
    for d in world.devices.values() {
        let v = match reasons.remove(&d.id) {
            Some((included, why)) => Verdict {
                device: d.id.clone(),
                included,
                reason: why.join("; "),
            },
            None if !intent.location.contains(&d.location) => Verdict {
                device: d.id.clone(),
                included: false,
                reason: format!("at {}, outside {}", d.location, intent.location),
            },
            None => Verdict {
                device: d.id.clone(),
                included: false,
                reason: format!("has no capability that {} uses", class.name),
            },
        };
        verdicts.push(v);
    }
    Ok(Plan {
        class: class.name.clone(),
        urgency: intent.urgency,
        actions,
        reads,
        verdicts,
        needs_confirmation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{Location, default_classes};

    fn dev(
        id: &str,
        loc: &str,
        caps: &[(&str, &[&str])],
        tags: &[&str],
        emergency: bool,
    ) -> Device {
        Device {
            id: id.into(),
            name: id.into(),
            location: Location::parse("l", loc).unwrap(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            sensors: if caps.is_empty() {
                ["smoke".to_string()].into()
            } else {
                BTreeSet::new()
            },
            actuators: caps
                .iter()
                .map(|(c, s)| (c.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
            emergency_capable: emergency,
            adapter: Adapter::Sim {
                address: "sim".into(),
            },
        }
    }

    fn house() -> BTreeMap<String, Device> {
        [
            dev(
                "kitchen-siren",
                "home/kitchen",
                &[("siren", &["on", "off"])],
                &["noisy"],
                true,
            ),
            dev(
                "kitchen-light",
                "home/kitchen",
                &[("light", &["on", "off", "flash"])],
                &[],
                false,
            ),
            dev(
                "front-door",
                "home/hall",
                &[("lock", &["locked", "unlocked"])],
                &["escape_route"],
                true,
            ),
            dev(
                "shed-lock",
                "garden/shed",
                &[("lock", &["locked", "unlocked"])],
                &[],
                false,
            ),
            dev("smoke-sensor", "home/kitchen", &[], &[], false),
        ]
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect()
    }

    fn intent(class: &str, urgency: Urgency, loc: &str) -> Intent {
        Intent {
            class: class.into(),
            urgency,
            subject: "test".into(),
            location: Location::parse("l", loc).unwrap(),
            context: BTreeMap::new(),
            source: "agent".into(),
            idempotency_key: "k1".into(),
        }
    }

    const NOON: Clock = Clock {
        now_ms: 1_000_000,
        minute_of_day: 720,
    };

    fn plan_with(
        policies: &[Policy],
        rates: &RateWindows,
        i: &Intent,
        clock: Clock,
    ) -> Result<Plan, PlanError> {
        let devices = house();
        let classes: BTreeMap<String, IntentClass> = default_classes()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        resolve(
            &World {
                devices: &devices,
                classes: &classes,
                policies,
                rates,
            },
            i,
            clock,
        )
    }

    fn acted(p: &Plan) -> Vec<(String, String)> {
        p.actions
            .iter()
            .map(|a| (a.device.clone(), a.state.clone()))
            .collect()
    }

    #[test]
    fn ensure_safety_in_the_house_orders_emergency_capable_first() {
        let p = plan_with(
            &[],
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Emergency, "home"),
            NOON,
        )
        .unwrap();
        assert_eq!(
            acted(&p),
            [
                ("kitchen-siren".into(), "on".into()),
                ("kitchen-light".into(), "on".into()),
                ("front-door".into(), "unlocked".into())
            ]
        );
        let shed = p.verdicts.iter().find(|v| v.device == "shed-lock").unwrap();
        assert!(
            !shed.included && shed.reason.contains("outside home"),
            "{shed:?}"
        );
        assert!(!p.needs_confirmation);
    }

    #[test]
    fn control_access_reads_its_state_from_context_and_refuses_others() {
        let mut i = intent("control_access", Urgency::Info, "home");
        assert_eq!(
            acted(&plan_with(&[], &RateWindows::default(), &i, NOON).unwrap()),
            [("front-door".into(), "locked".into())]
        );
        i.context.insert("state".into(), "unlocked".into());
        assert_eq!(
            acted(&plan_with(&[], &RateWindows::default(), &i, NOON).unwrap()),
            [("front-door".into(), "unlocked".into())]
        );
        i.context.insert("state".into(), "toggle".into());
        let e = plan_with(&[], &RateWindows::default(), &i, NOON).unwrap_err();
        assert!(
            matches!(&e, PlanError::Field(f) if f.field == "context.state"),
            "{e}"
        );
    }

    #[test]
    fn unknown_class_lists_the_known_ones() {
        let e = plan_with(
            &[],
            &RateWindows::default(),
            &intent("teleport", Urgency::Info, "home"),
            NOON,
        )
        .unwrap_err();
        assert!(e.to_string().contains("ensure_safety"), "{e}");
    }

    #[test]
    fn emergency_overrides_soft_policies_for_capable_devices_but_never_blocks() {
        let exclude = |d: &str| Policy {
            id: format!("ex-{d}"),
            rule: Rule::ExcludeDevice {
                device: d.into(),
                class: None,
            },
        };
        let block = Policy {
            id: "no-siren".into(),
            rule: Rule::Block {
                device: "kitchen-siren".into(),
                class: None,
            },
        };
        let pols = [exclude("kitchen-siren"), exclude("kitchen-light")];
        let alert = plan_with(
            &pols,
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Alert, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert!(acted(&alert).is_empty(), "{alert:?}");
        let emerg = plan_with(
            &pols,
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Emergency, "home/kitchen"),
            NOON,
        )
        .unwrap();
        // The capable siren is overridden in; the light (not emergency-capable) stays out.
        assert_eq!(acted(&emerg), [("kitchen-siren".into(), "on".into())]);
        let blocked = plan_with(
            &[block],
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Emergency, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert_eq!(acted(&blocked), [("kitchen-light".into(), "on".into())]);
        let v = blocked
            .verdicts
            .iter()
            .find(|v| v.device == "kitchen-siren")
            .unwrap();
        assert!(v.reason.contains("absolute"), "{v:?}");
    }

    #[test]
    fn quiet_hours_confirmation_and_rate_limits() {
        let quiet = Policy {
            id: "night".into(),
            rule: Rule::QuietHours {
                start_minute: 22 * 60,
                end_minute: 7 * 60,
                classes: BTreeSet::new(),
                tags: ["noisy".to_string()].into(),
            },
        };
        let night = Clock {
            now_ms: NOON.now_ms,
            minute_of_day: 23 * 60,
        };
        let p = plan_with(
            std::slice::from_ref(&quiet),
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Alert, "home/kitchen"),
            night,
        )
        .unwrap();
        assert_eq!(acted(&p), [("kitchen-light".into(), "on".into())]);
        let p = plan_with(
            std::slice::from_ref(&quiet),
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Alert, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert_eq!(acted(&p).len(), 2);

        let confirm = Policy {
            id: "ask".into(),
            rule: Rule::RequireConfirmation {
                class: "control_access".into(),
            },
        };
        assert!(
            plan_with(
                std::slice::from_ref(&confirm),
                &RateWindows::default(),
                &intent("control_access", Urgency::Alert, "home"),
                NOON
            )
            .unwrap()
            .needs_confirmation
        );
        assert!(
            !plan_with(
                &[confirm],
                &RateWindows::default(),
                &intent("control_access", Urgency::Emergency, "home"),
                NOON
            )
            .unwrap()
            .needs_confirmation
        );

        let limit = Policy {
            id: "calm".into(),
            rule: Rule::RateLimitSource {
                max: 2,
                window_secs: 60,
            },
        };
        let mut rates = RateWindows::default();
        rates.record("agent", [], NOON.now_ms - 1000, 3600);
        rates.record("agent", [], NOON.now_ms - 500, 3600);
        let e = plan_with(
            std::slice::from_ref(&limit),
            &rates,
            &intent("notify", Urgency::Info, "home"),
            NOON,
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::RateLimited { count: 2, .. }), "{e}");
        plan_with(
            &[limit],
            &rates,
            &intent("notify", Urgency::Emergency, "home"),
            NOON,
        )
        .expect("emergencies pass rate limits");

        let per_device = Policy {
            id: "siren-rest".into(),
            rule: Rule::RateLimitDevice {
                max: 1,
                window_secs: 60,
            },
        };
        let mut rates = RateWindows::default();
        rates.record("x", ["kitchen-siren"], NOON.now_ms - 100, 3600);
        let p = plan_with(
            &[per_device],
            &rates,
            &intent("ensure_safety", Urgency::Alert, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert_eq!(acted(&p), [("kitchen-light".into(), "on".into())]);
    }

    #[test]
    fn report_status_reads_and_actuates_nothing() {
        let p = plan_with(
            &[],
            &RateWindows::default(),
            &intent("report_status", Urgency::Info, "home"),
            NOON,
        )
        .unwrap();
        assert!(p.actions.is_empty());
        assert_eq!(p.reads, ["smoke-sensor"]);
    }

    /// Exhaustive over urgencies × locations × small policy sets: the plan is deterministic,
    /// never acts outside the scope, never acts on a blocked device, and only emergencies act
    /// on a softly excluded one (and only if it is emergency-capable).
    #[test]
    fn exhaustive_plan_properties() {
        let locs = ["home", "home/kitchen", "home/hall", "garden", "garden/shed"];
        let urgencies = [
            Urgency::Info,
            Urgency::Warning,
            Urgency::Alert,
            Urgency::Emergency,
        ];
        let devices = house();
        let policy_sets: Vec<Vec<Policy>> = {
            let mut sets = vec![vec![]];
            for d in devices.keys() {
                sets.push(vec![Policy {
                    id: "ex".into(),
                    rule: Rule::ExcludeDevice {
                        device: d.clone(),
                        class: None,
                    },
                }]);
                sets.push(vec![Policy {
                    id: "bl".into(),
                    rule: Rule::Block {
                        device: d.clone(),
                        class: None,
                    },
                }]);
            }
            sets
        };
        for class in default_classes() {
            for loc in locs {
                for u in urgencies {
                    for pols in &policy_sets {
                        let mut i = intent(&class.name, u, loc);
                        i.context.insert("state".into(), "unlocked".into());
                        let a = plan_with(pols, &RateWindows::default(), &i, NOON).unwrap();
                        let b = plan_with(pols, &RateWindows::default(), &i, NOON).unwrap();
                        assert_eq!(a, b, "deterministic");
                        let scope = Location::parse("l", loc).unwrap();
                        for act in &a.actions {
                            let d = &devices[&act.device];
                            assert!(scope.contains(&d.location));
                            assert!(d.actuators[&act.capability].contains(&act.state));
                            for p in pols {
                                match &p.rule {
                                    Rule::Block { device, .. } => assert_ne!(device, &d.id),
                                    Rule::ExcludeDevice { device, .. } if device == &d.id => {
                                        assert!(u == Urgency::Emergency && d.emergency_capable)
                                    }
                                    _ => {}
                                }
                            }
                        }
                        assert_eq!(
                            a.verdicts.len(),
                            devices.len(),
                            "every device gets a verdict"
                        );
                    }
                }
            }
        }
    }
}
