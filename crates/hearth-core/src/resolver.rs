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
    /// Held until a person approves: an emergency got the rest of the plan past a
    /// confirmation policy, not this action (not one of its device's emergency actions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_approval: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub device: String,
    pub included: bool,
    pub reason: String,
}

impl Plan {
    /// Some actions go now and others wait for an approval (an emergency under a confirmation
    /// policy that lets only some devices' actions past it).
    pub fn partly_held(&self) -> bool {
        self.needs_confirmation
            && self.actions.iter().any(|a| a.needs_approval)
            && self.actions.iter().any(|a| !a.needs_approval)
    }
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
    /// What a person should know about the plan as a whole: an emergency's location that
    /// names no device, why it waits for approval or why an emergency did not need one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Set when the plan acts on nothing and reads nothing: why. Such an intent is
    /// finished as `no_action`, never `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nothing_to_do: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown intent class {class:?}; known classes: {known}")]
    UnknownClass { class: String, known: String },
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(
        "no device is at or under location {location:?}; known locations: {known}. Check the spelling (`hearth device list`)"
    )]
    UnknownLocation { location: String, known: String },
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

/// The non-absolute policies that stop a device (for `class`, now), by id.
fn soft_exclusions<'p>(
    world: &World<'p>,
    class: &str,
    device: &Device,
    clock: Clock,
) -> Vec<&'p Policy> {
    world
        .policies
        .iter()
        .filter(|p| match &p.rule {
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
        })
        .collect()
}

fn ids(ps: &[&Policy]) -> String {
    ps.iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an emergency overrides the policies `hits` for `device` putting `capability` in
/// `state`: the device lists the action among its emergency actions and every policy allows
/// an override. `Err` says why not.
pub fn emergency_overrides(
    device: &Device,
    capability: &str,
    state: &str,
    hits: &[&Policy],
) -> Result<(), String> {
    if !device.is_emergency_action(capability, state) {
        return Err(format!(
            "{capability} -> {state} is not one of {}'s emergency actions",
            device.id
        ));
    }
    let firm: Vec<&Policy> = hits
        .iter()
        .copied()
        .filter(|p| !p.emergency_may_override())
        .collect();
    if !firm.is_empty() {
        return Err(format!(
            "policy {} does not allow an emergency override",
            ids(&firm)
        ));
    }
    Ok(())
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

/// Which planning rules an entry was decided under. `apply` must give an old entry the plan it
/// got when it was first applied, so entries written before these rules (issue 13: emergencies
/// per device and policy, unknown locations, `no_action`) replay under [`Rules::Legacy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// An emergency overrides every non-absolute policy for `emergency_capable` devices and
    /// skips confirmation; unknown locations plan nothing; `emergency_only` is ignored.
    Legacy,
    Current,
}

/// Plans an intent under the current rules.
pub fn resolve(world: &World<'_>, intent: &Intent, clock: Clock) -> Result<Plan, PlanError> {
    resolve_under(world, intent, clock, Rules::Current)
}

/// Plans an intent under `rules`.
pub fn resolve_under(
    world: &World<'_>,
    intent: &Intent,
    clock: Clock,
    rules: Rules,
) -> Result<Plan, PlanError> {
    let legacy = rules == Rules::Legacy;
    intent.validate()?;
    let class = world
        .classes
        .get(&intent.class)
        .ok_or_else(|| PlanError::UnknownClass {
            class: intent.class.clone(),
            known: world.classes.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    let emergency = intent.urgency == Urgency::Emergency;
    let mut notes = Vec::new();

    for p in world.policies {
        if let Rule::RateLimitSource { max, window_secs } = &p.rule {
            let count = world
                .rates
                .count_source(&intent.source, clock.now_ms, *window_secs);
            if count >= *max as usize && !(emergency && p.emergency_may_override()) {
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

    // Devices in scope, in plan order: devices with emergency actions first, then by id.
    let mut in_scope: Vec<&Device> = world
        .devices
        .values()
        .filter(|d| intent.location.contains(&d.location))
        .collect();
    // A location that names no device is a typo or a room without devices: refused, except
    // in an emergency, where every device that may act in one does, and the plan says so.
    let mut widened = false;
    if in_scope.is_empty() && !legacy {
        let known: BTreeSet<String> = world
            .devices
            .values()
            .map(|d| d.location.to_string())
            .collect();
        let known = if known.is_empty() {
            "none (no device is registered)".to_string()
        } else {
            known.into_iter().collect::<Vec<_>>().join(", ")
        };
        if !emergency {
            return Err(PlanError::UnknownLocation {
                location: intent.location.to_string(),
                known,
            });
        }
        widened = true;
        notes.push(format!(
            "location {} was not found (no device is at or under it; known: {known}): every \
             device that may act in an emergency acts, everywhere",
            intent.location
        ));
        in_scope = world.devices.values().collect();
    }
    in_scope.sort_by(|a, b| {
        b.has_emergency_actions()
            .cmp(&a.has_emergency_actions())
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
            if !legacy
                && step.emergency_only
                && !(emergency && d.is_emergency_action(&step.capability, &state))
            {
                note(
                    &d.id,
                    false,
                    format!(
                        "{} -> {state}: only in an emergency, and only for a device that lists \
                         it among its emergency actions",
                        step.capability
                    ),
                );
                continue;
            }
            if widened && !d.is_emergency_action(&step.capability, &state) {
                note(
                    &d.id,
                    false,
                    format!(
                        "{} -> {state}: outside the intent's location, and not one of the \
                         device's emergency actions",
                        step.capability
                    ),
                );
                continue;
            }
            let hits = soft_exclusions(world, &class.name, d, clock);
            if hits.is_empty() {
                note(&d.id, true, format!("{} -> {state}", step.capability));
            } else if !emergency {
                note(
                    &d.id,
                    false,
                    format!("{}: excluded by policy {}", step.capability, ids(&hits)),
                );
                continue;
            } else {
                let verdict = if legacy {
                    if d.emergency_capable {
                        Ok(())
                    } else {
                        Err("not emergency-capable".to_string())
                    }
                } else {
                    emergency_overrides(d, &step.capability, &state, &hits)
                };
                match verdict {
                    Ok(()) => note(
                        &d.id,
                        true,
                        format!(
                            "{} -> {state}: emergency overrides policy {}",
                            step.capability,
                            ids(&hits)
                        ),
                    ),
                    Err(why) => {
                        note(
                            &d.id,
                            false,
                            format!(
                                "{}: excluded by policy {} ({why})",
                                step.capability,
                                ids(&hits)
                            ),
                        );
                        continue;
                    }
                }
            }
            if planned.insert((d.id.clone(), step.capability.clone())) {
                actions.push(PlannedAction {
                    device: d.id.clone(),
                    capability: step.capability.clone(),
                    state: state.clone(),
                    adapter: d.adapter.clone(),
                    needs_approval: false,
                });
            }
        }
    }

    // Confirmation, per action: an emergency skips it for an action only if every
    // confirmation policy allows that and the action is an emergency action of its device; the
    // other actions wait for a person (the rest of the plan goes now).
    let confirm: Vec<&Policy> = world
        .policies
        .iter()
        .filter(|p| matches!(&p.rule, Rule::RequireConfirmation { class: c } if c == &class.name))
        .collect();
    let mut needs_confirmation = !confirm.is_empty();
    if legacy {
        needs_confirmation &= !emergency;
    } else if needs_confirmation && emergency {
        let mut held = Vec::new();
        for a in actions.iter_mut() {
            let why = match world.devices.get(&a.device) {
                Some(d) => emergency_overrides(d, &a.capability, &a.state, &confirm).err(),
                None => Some(format!("device {} is not registered", a.device)),
            };
            if let Some(why) = why {
                a.needs_approval = true;
                held.push(why);
            }
        }
        if held.is_empty() {
            needs_confirmation = false;
            notes.push(format!(
                "emergency overrides policy {} (every action is an emergency action of its device)",
                ids(&confirm)
            ));
        } else if held.len() == actions.len() {
            notes.push(format!(
                "waits for approval (policy {}) despite the emergency: {}",
                ids(&confirm),
                held.join("; ")
            ));
        } else {
            notes.push(format!(
                "the emergency actions go now; the rest wait for approval (policy {}): {}",
                ids(&confirm),
                held.join("; ")
            ));
        }
    } else if needs_confirmation {
        notes.push(format!("waits for approval (policy {})", ids(&confirm)));
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
    let nothing_to_do = (!legacy && actions.is_empty() && reads.is_empty()).then(|| {
        let why: Vec<String> = verdicts
            .iter()
            .filter(|v| reasons_in_scope(v, intent, widened, world))
            .map(|v| format!("{}: {}", v.device, v.reason))
            .collect();
        if why.is_empty() {
            format!(
                "no device at {} has a capability that {} uses",
                intent.location, class.name
            )
        } else {
            format!("no device acts: {}", why.join("; "))
        }
    });
    Ok(Plan {
        class: class.name.clone(),
        urgency: intent.urgency,
        actions,
        reads,
        verdicts,
        needs_confirmation,
        notes,
        nothing_to_do,
    })
}

/// Whether a verdict concerns a device the intent addressed (for the "nothing to do" reason).
fn reasons_in_scope(v: &Verdict, intent: &Intent, widened: bool, world: &World<'_>) -> bool {
    widened
        || world
            .devices
            .get(&v.device)
            .is_some_and(|d| intent.location.contains(&d.location))
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
            emergency_actions: Default::default(),
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
            emergency_override: None,
            rule: Rule::ExcludeDevice {
                device: d.into(),
                class: None,
            },
        };
        let block = Policy {
            id: "no-siren".into(),
            emergency_override: None,
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
            emergency_override: None,
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
            emergency_override: None,
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
        // Changed on purpose (issue 13 item 2): an emergency no longer skips a confirmation
        // policy by default; only one that says `emergency_override = true`, and only for
        // emergency actions (locking the legacy emergency-capable front door is one).
        assert!(
            plan_with(
                std::slice::from_ref(&confirm),
                &RateWindows::default(),
                &intent("control_access", Urgency::Emergency, "home"),
                NOON
            )
            .unwrap()
            .needs_confirmation
        );
        let mut waived = confirm.clone();
        waived.emergency_override = Some(true);
        assert!(
            !plan_with(
                &[waived],
                &RateWindows::default(),
                &intent("control_access", Urgency::Emergency, "home"),
                NOON
            )
            .unwrap()
            .needs_confirmation
        );

        let limit = Policy {
            id: "calm".into(),
            emergency_override: None,
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
            emergency_override: None,
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
                    emergency_override: None,
                    rule: Rule::ExcludeDevice {
                        device: d.clone(),
                        class: None,
                    },
                }]);
                sets.push(vec![Policy {
                    id: "bl".into(),
                    emergency_override: None,
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

    fn plan_in(
        devices: &BTreeMap<String, Device>,
        policies: &[Policy],
        i: &Intent,
    ) -> Result<Plan, PlanError> {
        let classes: BTreeMap<String, IntentClass> = default_classes()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        resolve(
            &World {
                devices,
                classes: &classes,
                policies,
                rates: &RateWindows::default(),
            },
            i,
            NOON,
        )
    }

    fn confirm_access(over: Option<bool>) -> Policy {
        Policy {
            id: "ask-before-unlocking".into(),
            rule: Rule::RequireConfirmation {
                class: "control_access".into(),
            },
            emergency_override: over,
        }
    }

    /// Issue 13 item 2, first sequence: with `require_confirmation` on `control_access`, an
    /// emergency unlock waited for nobody and opened the front door and a door registered with
    /// `emergency_capable = false`. Now it waits for approval, and says why.
    #[test]
    fn an_emergency_unlock_waits_for_approval_unless_both_sides_said_so() {
        let mut i = intent("control_access", Urgency::Emergency, "home");
        i.context.insert("state".into(), "unlocked".into());
        let mut devices = house();
        // A second door inside home, not emergency-capable.
        let mut back = devices["shed-lock"].clone();
        back.id = "back-door".into();
        back.location = Location::parse("l", "home/back").unwrap();
        devices.insert(back.id.clone(), back);
        for over in [None, Some(false), Some(true)] {
            let p = plan_in(&devices, &[confirm_access(over)], &i).unwrap();
            assert!(p.needs_confirmation, "{over:?}: {p:?}");
            assert!(p.notes.iter().any(|n| n.contains("approval")), "{p:?}");
            assert!(
                p.actions
                    .iter()
                    .any(|a| a.device == "back-door" && a.needs_approval),
                "the back door's unlock is held: {p:?}"
            );
        }
        // The household declares the unlock on the front door only; the back door stays a
        // reason to wait.
        devices.get_mut("front-door").unwrap().emergency_actions =
            [("lock".to_string(), ["unlocked".to_string()].into())].into();
        let p = plan_in(&devices, &[confirm_access(Some(true))], &i).unwrap();
        assert!(
            p.needs_confirmation,
            "the back door's unlock is not declared"
        );
        assert!(
            p.notes.iter().any(|n| n.contains("back-door")),
            "{:?}",
            p.notes
        );
        devices.remove("back-door");
        let p = plan_in(&devices, &[confirm_access(Some(true))], &i).unwrap();
        assert!(!p.needs_confirmation, "{p:?}");
        assert_eq!(acted(&p), [("front-door".into(), "unlocked".into())]);
        // Without the policy's consent, the declaration alone does not skip approval.
        let p = plan_in(&devices, &[confirm_access(None)], &i).unwrap();
        assert!(p.needs_confirmation);
    }

    /// An excluded door is unlocked by an emergency only where its manifest lists the unlock;
    /// the legacy `emergency_capable = true` never implies one.
    #[test]
    fn an_emergency_overrides_an_exclusion_only_for_declared_actions() {
        let exclude = Policy::new(
            "no-front-door",
            Rule::ExcludeDevice {
                device: "front-door".into(),
                class: None,
            },
        );
        let mut i = intent("control_access", Urgency::Emergency, "home/hall");
        i.context.insert("state".into(), "unlocked".into());
        let mut devices = house();
        // Registered with emergency_capable = false: never unlocked past a policy.
        devices.get_mut("front-door").unwrap().emergency_capable = false;
        let p = plan_in(&devices, std::slice::from_ref(&exclude), &i).unwrap();
        assert!(acted(&p).is_empty(), "{p:?}");
        let v = p
            .verdicts
            .iter()
            .find(|v| v.device == "front-door")
            .unwrap();
        assert!(
            v.reason
                .contains("not one of front-door's emergency actions"),
            "{v:?}"
        );
        assert!(p.nothing_to_do.is_some(), "{p:?}");
        devices.get_mut("front-door").unwrap().emergency_actions =
            [("lock".to_string(), ["unlocked".to_string()].into())].into();
        let p = plan_in(&devices, std::slice::from_ref(&exclude), &i).unwrap();
        assert_eq!(acted(&p), [("front-door".into(), "unlocked".into())]);
        let mut firm = exclude.clone();
        firm.emergency_override = Some(false);
        let p = plan_in(&devices, &[firm], &i).unwrap();
        assert!(acted(&p).is_empty());
        assert!(
            p.verdicts
                .iter()
                .any(|v| v.reason.contains("does not allow an emergency override")),
            "{p:?}"
        );
    }

    /// Issue 13 item 3: an emergency to a misspelt location used to plan nothing and finish
    /// "done". Now a non-emergency is refused naming the location; an emergency acts with every
    /// device that may act in one, and says the location was not found.
    #[test]
    fn an_unknown_location_is_refused_or_widened_for_an_emergency() {
        let e = plan_with(
            &[],
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Alert, "home/kitchn"),
            NOON,
        )
        .unwrap_err();
        assert!(
            matches!(&e, PlanError::UnknownLocation { location, .. } if location == "home/kitchn"),
            "{e}"
        );
        assert!(e.to_string().contains("home/kitchen"), "{e}");
        let p = plan_with(
            &[],
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Emergency, "home/kitchn"),
            NOON,
        )
        .unwrap();
        // The legacy emergency-capable siren sounds and the legacy emergency-capable escape
        // route opens; the light and the shed lock (not capable) do not.
        assert_eq!(
            acted(&p),
            [
                ("kitchen-siren".into(), "on".into()),
                ("front-door".into(), "unlocked".into())
            ]
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("home/kitchn was not found")),
            "{p:?}"
        );
        assert!(p.nothing_to_do.is_none());
        // With no device at all, even an emergency has nothing to do, and says so.
        let none = BTreeMap::new();
        let p = plan_in(
            &none,
            &[],
            &intent("ensure_safety", Urgency::Emergency, "home"),
        )
        .unwrap();
        assert!(p.actions.is_empty() && p.nothing_to_do.is_some(), "{p:?}");
    }

    /// Issue 13 item 3: an intent whose every device a policy excluded has nothing to do, and
    /// the plan says why (it must never be reported as done).
    #[test]
    fn a_plan_that_acts_on_nothing_says_why() {
        let pols = [
            Policy::new(
                "a",
                Rule::ExcludeDevice {
                    device: "kitchen-siren".into(),
                    class: None,
                },
            ),
            Policy::new(
                "b",
                Rule::ExcludeDevice {
                    device: "kitchen-light".into(),
                    class: None,
                },
            ),
        ];
        let p = plan_with(
            &pols,
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Alert, "home/kitchen"),
            NOON,
        )
        .unwrap();
        let why = p.nothing_to_do.expect("nothing to do");
        assert!(
            why.contains("kitchen-siren") && why.contains("policy a"),
            "{why}"
        );
        let p = plan_with(
            &[],
            &RateWindows::default(),
            &intent("notify", Urgency::Info, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert!(p.nothing_to_do.is_some(), "no notifier in the kitchen");
        let p = plan_with(
            &[],
            &RateWindows::default(),
            &intent("report_status", Urgency::Info, "home"),
            NOON,
        )
        .unwrap();
        assert!(p.nothing_to_do.is_none(), "reading sensors is something");
    }

    /// Exhaustive over device declarations × policy kinds × override settings × urgencies ×
    /// target states: an action a soft policy would stop is planned exactly when the intent is
    /// an emergency, the device lists the action, and the policy allows it; confirmation is
    /// skipped exactly when the intent is an emergency, the policy allows it and every action is
    /// declared; an unlock is never planned past a policy without a declaration.
    #[test]
    fn exhaustive_emergency_override_rules() {
        let decls: [(bool, &[&str]); 5] = [
            (false, &[]),
            (true, &[]),
            (false, &["unlocked"]),
            (false, &["locked"]),
            (true, &["locked", "unlocked"]),
        ];
        let urgencies = [Urgency::Info, Urgency::Alert, Urgency::Emergency];
        for (capable, declared) in decls {
            let mut door = dev(
                "door",
                "home/hall",
                &[("lock", &["locked", "unlocked"])],
                &[],
                capable,
            );
            if !declared.is_empty() {
                door.emergency_actions = [(
                    "lock".to_string(),
                    declared.iter().map(|s| s.to_string()).collect(),
                )]
                .into();
            }
            let devices: BTreeMap<String, Device> = [(door.id.clone(), door.clone())].into();
            for over in [None, Some(false), Some(true)] {
                let rules = [
                    Rule::ExcludeDevice {
                        device: "door".into(),
                        class: None,
                    },
                    Rule::QuietHours {
                        start_minute: 0,
                        end_minute: 1439,
                        classes: BTreeSet::new(),
                        tags: BTreeSet::new(),
                    },
                    Rule::RequireConfirmation {
                        class: "control_access".into(),
                    },
                ];
                for rule in rules {
                    let pol = Policy {
                        id: "p".into(),
                        rule: rule.clone(),
                        emergency_override: over,
                    };
                    let confirm = matches!(rule, Rule::RequireConfirmation { .. });
                    for u in urgencies {
                        for state in ["locked", "unlocked"] {
                            let mut i = intent("control_access", u, "home");
                            i.context.insert("state".into(), state.into());
                            let p = plan_in(&devices, std::slice::from_ref(&pol), &i).unwrap();
                            let lists = door.is_emergency_action("lock", state);
                            let allowed = pol.emergency_may_override();
                            let overrides = u == Urgency::Emergency && lists && allowed;
                            assert_eq!(
                                lists,
                                declared.contains(&state)
                                    || (declared.is_empty() && capable && state != "unlocked")
                            );
                            let mut tagged = door.clone();
                            tagged.tags.insert("escape_route".into());
                            assert_eq!(
                                tagged.is_emergency_action("lock", state),
                                declared.contains(&state) || (declared.is_empty() && capable),
                                "legacy: an escape route's unlock counts"
                            );
                            let ctx =
                                format!("{capable} {declared:?} {over:?} {rule:?} {u:?} {state}");
                            if confirm {
                                assert_eq!(acted(&p).len(), 1, "{ctx}");
                                assert_eq!(p.needs_confirmation, !overrides, "{ctx}");
                            } else {
                                assert!(!p.needs_confirmation, "{ctx}");
                                assert_eq!(!acted(&p).is_empty(), overrides, "{ctx}");
                                assert_eq!(p.nothing_to_do.is_some(), !overrides, "{ctx}");
                            }
                            if state == "unlocked"
                                && (overrides || !confirm)
                                && !acted(&p).is_empty()
                            {
                                assert!(declared.contains(&"unlocked"), "{ctx}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Issue 13 item 2, second sequence, without an emergency: `ensure_safety` at `alert`
    /// unlocked every escape route for any agent. Its unlock step now acts only in an
    /// emergency, and only on doors that list the unlock (or, legacy, are emergency-capable
    /// escape routes).
    #[test]
    fn ensure_safety_unlocks_escape_routes_only_in_an_emergency() {
        let mut devices = house();
        let mut back = devices["front-door"].clone();
        back.id = "back-door".into();
        back.emergency_capable = false;
        devices.insert(back.id.clone(), back);
        for u in [Urgency::Info, Urgency::Warning, Urgency::Alert] {
            let p = plan_in(&devices, &[], &intent("ensure_safety", u, "home")).unwrap();
            assert!(
                p.actions.iter().all(|a| a.capability != "lock"),
                "{u:?}: {:?}",
                acted(&p)
            );
            let v = p
                .verdicts
                .iter()
                .find(|v| v.device == "front-door")
                .unwrap();
            assert!(v.reason.contains("only in an emergency"), "{v:?}");
        }
        let p = plan_in(
            &devices,
            &[],
            &intent("ensure_safety", Urgency::Emergency, "home"),
        )
        .unwrap();
        let locks: Vec<(String, String)> = acted(&p)
            .into_iter()
            .filter(|(d, _)| d.ends_with("door"))
            .collect();
        assert_eq!(
            locks,
            [("front-door".into(), "unlocked".into())],
            "not the back door"
        );
    }

    /// Per device, not per intent: under a confirmation policy that lets emergencies past it,
    /// the siren (an emergency action) goes now and the light (not emergency-capable) waits.
    #[test]
    fn an_emergency_past_confirmation_holds_only_the_actions_that_may_not_skip_it() {
        let mut ask = Policy::new(
            "ask",
            Rule::RequireConfirmation {
                class: "ensure_safety".into(),
            },
        );
        ask.emergency_override = Some(true);
        let p = plan_with(
            &[ask],
            &RateWindows::default(),
            &intent("ensure_safety", Urgency::Emergency, "home/kitchen"),
            NOON,
        )
        .unwrap();
        assert!(p.needs_confirmation && p.partly_held(), "{p:?}");
        let held: Vec<(&str, bool)> = p
            .actions
            .iter()
            .map(|a| (a.device.as_str(), a.needs_approval))
            .collect();
        assert_eq!(held, [("kitchen-siren", false), ("kitchen-light", true)]);
    }
}
