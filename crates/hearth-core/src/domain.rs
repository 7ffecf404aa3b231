//! The replicated domain state and the commands that change it.
//!
//! Every change to devices, classes, policies, intents, the outbox of actions and the
//! idempotency keys is a [`Command`] in a committed log entry, applied by [`DomainState::apply`]
//! — a pure function of the state, the command and the entry's index. Nothing here sends
//! anything: the dispatcher reads the outbox on the leading hub only.
//!
//! Commands are stored in the log as their JSON bytes, produced once by the proposer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::intent::{Device, Intent, IntentClass, default_classes};
use crate::policy::{Policy, RateWindows};
use crate::resolver::{Clock, Plan, PlanError, PlannedAction, World, resolve};

/// How long rate-limit windows are remembered.
pub const RATE_MEMORY_SECS: u32 = 24 * 3600;

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// An operator's test record: changes nothing but the chain.
    TestRecord { text: String },
    /// Adds or replaces a device manifest. `by`: the authenticated principal (absent on
    /// clusters without client authentication, and in entries older than it).
    RegisterDevice {
        device: Device,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Adds or replaces an intent class.
    ApplyClass {
        class: IntentClass,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Replaces the whole policy set.
    ApplyPolicies {
        policies: Vec<Policy>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An intent as the leader received it, with the time it fixed for planning.
    SubmitIntent {
        intent: Intent,
        at_ms: u64,
        minute_of_day: u16,
        /// The bound on emergencies per source the leader applied (absent in older entries:
        /// none then, so a replay gives the same state).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emergency_limit: Option<crate::policy::EmergencyLimit>,
    },
    /// A person approves an intent that waits for confirmation.
    Approve { intent_id: String, by: String },
    /// The leading hub records what a device answered (a conditional write: it commits only
    /// while the leadership that dispatched still leads).
    RecordOutcome {
        intent_id: String,
        action_id: String,
        outcome: ActionOutcome,
        token: FencingToken,
    },
    /// An operator's act on the cluster that changes no replicated state (a node restart),
    /// recorded so that the chain says who did what.
    OperatorAct { act: String, by: String },
    /// A person turned one hub of a two-hub cluster into a one-node cluster (assisted
    /// failover). The first entry after the last one the hub shared with its lost peer.
    Promote { promotion: Promotion },
}

/// The record of a forced promotion: who, why, from what, and what it removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The hub that became the only voter.
    pub node: u64,
    /// The voters it removed; they are refused from then on and rejoin only under new ids.
    pub removed: Vec<u64>,
    /// Who asked (free text until client identities exist).
    pub operator: String,
    pub reason: String,
    /// The assisted-failover state when it was asked (`PEER_DOWN` unless forced).
    pub assessed: String,
    pub forced: bool,
    /// The lost peer may hold entries this hub lacks.
    pub destructive: bool,
    /// The last entry this hub had when promoted: `(term, index)`, and its chain hash (hex).
    pub last: Option<(u64, u64)>,
    pub last_hash: Option<String>,
    pub at_ms: u64,
}

/// `(term, leader node, log index of the deciding entry)`: sent with every device command.
/// Devices keep the highest `(term, leader)` seen and refuse older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken {
    pub term: u64,
    pub leader: u64,
    pub index: u64,
}

impl FencingToken {
    /// The leadership part, which orders tokens for fencing.
    pub fn leadership(&self) -> (u64, u64) {
        (self.term, self.leader)
    }
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionOutcome {
    /// The device applied the command.
    Applied,
    /// The device had already applied this action id (a re-send after a failover).
    AlreadyApplied,
    /// The device refused the token as older than one it has seen.
    StaleToken,
    /// The device refused or failed.
    Failed { reason: String },
    /// A class that must not repeat an action lost track of it across a leader change: a human
    /// must check the device.
    OutcomeUnknown { reason: String },
}

/// Where an entry sits in the log: what `apply` knows beyond the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPos {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a plain data enum of strings, maps and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The id of an intent: derived from its idempotency key, so a retry on any node, before or
/// after a failover, names the same intent.
pub fn intent_id(idempotency_key: &str) -> String {
    let h = Sha256::digest(idempotency_key.as_bytes());
    format!("i-{}", hex::encode(&h[..8]))
}

/// Checks that `s` has the shape of an intent id (`i-` and 16 lower-case hex digits), so a
/// lookup by a path-like or otherwise foreign string is refused with the field named.
pub fn check_intent_id(field: &str, s: &str) -> Result<(), crate::intent::FieldError> {
    let ok = s.len() == 18
        && s.starts_with("i-")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(crate::intent::FieldError::new(
            field,
            format!("{s:?} is not an intent id (i- and 16 hex digits, as Submit returns)"),
        ))
    }
}

/// Hash of an intent's body, to tell a retry (same body) from a conflicting reuse of a key.
pub fn body_hash(intent: &Intent) -> String {
    let bytes = serde_json::to_vec(intent).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Planned; waits for an `Approve`.
    AwaitingApproval,
    /// Planned and committed; actions wait for the dispatcher.
    Accepted,
    /// Every action has an outcome.
    Done,
}

/// An action in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// `<intent id>/<n>`: the device's idempotency key for this command.
    pub id: String,
    pub action: PlannedAction,
    /// Set once, when the leading hub records what the device answered.
    #[serde(default)]
    pub outcome: Option<ActionOutcome>,
    /// The token the outcome was obtained with.
    #[serde(default)]
    pub token: Option<FencingToken>,
}

/// An accepted intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub id: String,
    pub intent: Intent,
    pub body_hash: String,
    /// Index of the entry that accepted it (the deciding entry; part of the fencing token).
    pub index: u64,
    /// Term and leader of that entry: a later leader knows the intent came before its time.
    pub term: u64,
    pub leader: u64,
    pub at_ms: u64,
    pub plan: Plan,
    pub status: IntentStatus,
    pub actions: Vec<ActionRecord>,
    #[serde(default)]
    pub approved_by: Option<String>,
}

/// What applying a command answers. Business refusals are answers, never errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Done,
    /// A new intent was accepted at this entry.
    Accepted {
        intent_id: String,
    },
    /// The same key and body were seen before: nothing new happens.
    Duplicate {
        intent_id: String,
    },
    /// The key was used before with a different body.
    KeyConflict {
        intent_id: String,
    },
    /// The command was refused; the state is unchanged.
    Refused {
        reason: String,
    },
}

/// The replicated domain state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    pub devices: BTreeMap<String, Device>,
    pub classes: BTreeMap<String, IntentClass>,
    pub policies: Vec<Policy>,
    pub rates: RateWindows,
    pub intents: BTreeMap<String, IntentRecord>,
    /// Node ids removed by a forced promotion, with the reason they are refused.
    #[serde(default)]
    pub retired: BTreeMap<u64, String>,
}

impl Default for DomainState {
    fn default() -> Self {
        Self {
            devices: BTreeMap::new(),
            classes: default_classes()
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            policies: Vec::new(),
            rates: RateWindows::default(),
            intents: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }
}

impl DomainState {
    pub fn world(&self) -> World<'_> {
        World {
            devices: &self.devices,
            classes: &self.classes,
            policies: &self.policies,
            rates: &self.rates,
        }
    }

    /// Why an emergency intent is refused by `limit` (the bound on emergencies per source),
    /// or `None` (not an emergency, no limit, or within it).
    pub fn emergency_limited(
        &self,
        intent: &Intent,
        at_ms: u64,
        limit: Option<crate::policy::EmergencyLimit>,
    ) -> Option<String> {
        if intent.urgency != crate::intent::Urgency::Emergency {
            return None;
        }
        limit?.refuses(&self.rates, &intent.source, at_ms)
    }

    /// Plans without changing anything (explain, and the leader's check before proposing).
    pub fn plan(&self, intent: &Intent, clock: Clock) -> Result<Plan, PlanError> {
        resolve(&self.world(), intent, clock)
    }

    /// Applies one committed command. Deterministic: same state, command and index give the
    /// same state and outcome on every node.
    pub fn apply(&mut self, cmd: &Command, pos: EntryPos) -> Outcome {
        let index = pos.index;
        match cmd {
            Command::TestRecord { .. } | Command::OperatorAct { .. } => Outcome::Done,
            Command::Promote { promotion: p } => {
                for id in &p.removed {
                    self.retired.insert(
                        *id,
                        format!(
                            "node {id} was removed when node {} was promoted to a one-node \
                             cluster at entry {index} by {:?} ({:?})",
                            p.node, p.operator, p.reason
                        ),
                    );
                }
                Outcome::Done
            }
            Command::RegisterDevice { device, .. } => match device.validate() {
                Ok(()) => {
                    self.devices.insert(device.id.clone(), device.clone());
                    Outcome::Done
                }
                Err(e) => Outcome::Refused {
                    reason: e.to_string(),
                },
            },
            Command::ApplyClass { class, .. } => {
                if let Err(e) = crate::intent::check_id("name", &class.name) {
                    return Outcome::Refused {
                        reason: e.to_string(),
                    };
                }
                self.classes.insert(class.name.clone(), class.clone());
                Outcome::Done
            }
            Command::ApplyPolicies { policies, .. } => {
                if let Some(e) = policies.iter().find_map(|p| p.validate().err()) {
                    return Outcome::Refused {
                        reason: e.to_string(),
                    };
                }
                self.policies = policies.clone();
                Outcome::Done
            }
            Command::SubmitIntent {
                intent,
                at_ms,
                minute_of_day,
                emergency_limit,
            } => {
                let id = intent_id(&intent.idempotency_key);
                let hash = body_hash(intent);
                if let Some(existing) = self.intents.get(&id) {
                    return if existing.body_hash == hash {
                        Outcome::Duplicate { intent_id: id }
                    } else {
                        Outcome::KeyConflict { intent_id: id }
                    };
                }
                let clock = Clock {
                    now_ms: *at_ms,
                    minute_of_day: *minute_of_day,
                };
                if let Some(why) = self.emergency_limited(intent, *at_ms, *emergency_limit) {
                    return Outcome::Refused { reason: why };
                }
                let plan = match self.plan(intent, clock) {
                    Ok(p) => p,
                    Err(e) => {
                        return Outcome::Refused {
                            reason: e.to_string(),
                        };
                    }
                };
                let actions: Vec<ActionRecord> = plan
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(n, a)| ActionRecord {
                        id: format!("{id}/{n}"),
                        action: a.clone(),
                        outcome: None,
                        token: None,
                    })
                    .collect();
                self.rates.record(
                    &intent.source,
                    actions.iter().map(|a| a.action.device.as_str()),
                    *at_ms,
                    RATE_MEMORY_SECS,
                );
                if intent.urgency == crate::intent::Urgency::Emergency {
                    self.rates.record_emergency(&intent.source, *at_ms);
                }
                let status = if plan.needs_confirmation {
                    IntentStatus::AwaitingApproval
                } else if actions.is_empty() {
                    IntentStatus::Done
                } else {
                    IntentStatus::Accepted
                };
                self.intents.insert(
                    id.clone(),
                    IntentRecord {
                        id: id.clone(),
                        intent: intent.clone(),
                        body_hash: hash,
                        index,
                        term: pos.term,
                        leader: pos.leader,
                        at_ms: *at_ms,
                        plan,
                        status,
                        actions,
                        approved_by: None,
                    },
                );
                Outcome::Accepted { intent_id: id }
            }
            Command::Approve { intent_id, by } => match self.intents.get_mut(intent_id) {
                Some(r) if r.status == IntentStatus::AwaitingApproval => {
                    r.status = if r.actions.is_empty() {
                        IntentStatus::Done
                    } else {
                        IntentStatus::Accepted
                    };
                    r.approved_by = Some(by.clone());
                    Outcome::Done
                }
                Some(r) => Outcome::Refused {
                    reason: format!(
                        "intent {intent_id} does not wait for approval (it is {:?})",
                        r.status
                    ),
                },
                None => Outcome::Refused {
                    reason: format!("no intent {intent_id}"),
                },
            },
            Command::RecordOutcome {
                intent_id,
                action_id,
                outcome,
                token,
            } => {
                let Some(r) = self.intents.get_mut(intent_id) else {
                    return Outcome::Refused {
                        reason: format!("no intent {intent_id}"),
                    };
                };
                let Some(a) = r.actions.iter_mut().find(|a| &a.id == action_id) else {
                    return Outcome::Refused {
                        reason: format!("intent {intent_id} has no action {action_id}"),
                    };
                };
                if a.outcome.is_some() {
                    // The first recorded outcome stands; a later one (a re-send) changes nothing.
                    return Outcome::Duplicate {
                        intent_id: intent_id.clone(),
                    };
                }
                a.outcome = Some(outcome.clone());
                a.token = Some(*token);
                if r.actions.iter().all(|a| a.outcome.is_some()) {
                    r.status = IntentStatus::Done;
                }
                Outcome::Done
            }
        }
    }

    /// Actions committed for dispatch that have no outcome yet, in intent order.
    pub fn outbox(&self) -> Vec<(&IntentRecord, &ActionRecord)> {
        let mut v: Vec<(&IntentRecord, &ActionRecord)> = self
            .intents
            .values()
            .filter(|r| r.status == IntentStatus::Accepted)
            .flat_map(|r| {
                r.actions
                    .iter()
                    .filter(|a| a.outcome.is_none())
                    .map(move |a| (r, a))
            })
            .collect();
        v.sort_by_key(|(r, a)| (r.index, a.id.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::intent::{Adapter, Location, Urgency};
    use crate::policy::Rule;

    fn siren() -> Device {
        Device {
            id: "siren".into(),
            name: "Siren".into(),
            location: Location::parse("l", "home/kitchen").unwrap(),
            tags: BTreeSet::new(),
            sensors: BTreeSet::new(),
            actuators: [(
                "siren".to_string(),
                ["on".to_string(), "off".to_string()].into(),
            )]
            .into(),
            emergency_capable: true,
            adapter: Adapter::Sim {
                address: "local".into(),
            },
        }
    }

    fn intent(key: &str, subject: &str) -> Intent {
        Intent {
            class: "ensure_safety".into(),
            urgency: Urgency::Emergency,
            subject: subject.into(),
            location: Location::parse("l", "home").unwrap(),
            context: BTreeMap::new(),
            source: "agent".into(),
            idempotency_key: key.into(),
        }
    }

    fn at(index: u64) -> EntryPos {
        EntryPos {
            index,
            term: 1,
            leader: 1,
        }
    }

    #[test]
    fn a_promotion_retires_the_removed_peer_and_survives_encoding() {
        let cmd = Command::Promote {
            promotion: Promotion {
                node: 2,
                removed: vec![1],
                operator: "ana".into(),
                reason: "pi dead".into(),
                assessed: "PEER_DOWN".into(),
                forced: false,
                destructive: true,
                last: Some((3, 41)),
                last_hash: Some("ab".repeat(32)),
                at_ms: 7,
            },
        };
        assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
        let mut d = DomainState::default();
        assert_eq!(d.apply(&cmd, at(43)), Outcome::Done);
        let why = d.retired.get(&1).expect("node 1 retired");
        assert!(why.contains("entry 43") && why.contains("ana"), "{why}");
        assert!(!d.retired.contains_key(&2));
        // A state written before this field existed still loads.
        let mut old = serde_json::to_value(DomainState::default()).unwrap();
        old.as_object_mut().unwrap().remove("retired");
        let loaded: DomainState = serde_json::from_value(old).unwrap();
        assert!(loaded.retired.is_empty());
    }

    fn submit(i: Intent) -> Command {
        Command::SubmitIntent {
            intent: i,
            at_ms: 1000,
            minute_of_day: 600,
            emergency_limit: None,
        }
    }

    #[test]
    fn emergencies_from_one_source_are_bounded_and_forgotten() {
        use crate::policy::{DEFAULT_EMERGENCY_LIMIT, MAX_EMERGENCY_WINDOW_SECS};
        let flood = |limit: Option<crate::policy::EmergencyLimit>| {
            let mut s = DomainState::default();
            s.apply(
                &Command::RegisterDevice {
                    device: siren(),
                    by: None,
                },
                at(1),
            );
            // The flood: 2,000 emergency intents from one agent in 57 s.
            let mut accepted = 0;
            for n in 0..2000u64 {
                let cmd = Command::SubmitIntent {
                    intent: intent(&format!("k{n}"), "smoke"),
                    at_ms: 1_000_000 + n * 57_000 / 2000,
                    minute_of_day: 600,
                    emergency_limit: limit,
                };
                if matches!(s.apply(&cmd, at(2 + n)), Outcome::Accepted { .. }) {
                    accepted += 1;
                }
            }
            (s, accepted)
        };
        // An entry from before the bound (no limit written in it) replays as it was.
        assert_eq!(flood(None).1, 2000);
        let (mut s, accepted) = flood(Some(DEFAULT_EMERGENCY_LIMIT));
        assert_eq!(accepted, DEFAULT_EMERGENCY_LIMIT.max as usize);
        // The refusal says why; another source's emergency still goes through.
        let mut other = intent("other-1", "smoke");
        other.source = "smoke-detector".into();
        let limit = Some(DEFAULT_EMERGENCY_LIMIT);
        assert!(
            s.emergency_limited(&intent("k-next", "smoke"), 1_057_000, limit)
                .is_some_and(|w| w.contains("emergency rate limit") && w.contains("agent"))
        );
        assert_eq!(s.emergency_limited(&other, 1_057_000, limit), None);
        // Once the window passed, the agent may send emergencies again …
        let later = 1_000_000 + u64::from(DEFAULT_EMERGENCY_LIMIT.window_secs) * 1000 + 1;
        assert_eq!(
            s.emergency_limited(&intent("k-later", "smoke"), later, limit),
            None
        );
        // … and what is older than the longest window is pruned from the state.
        let much_later = 1_000_000 + u64::from(MAX_EMERGENCY_WINDOW_SECS) * 1000 + 60_000;
        let out = s.apply(
            &Command::SubmitIntent {
                intent: other,
                at_ms: much_later,
                minute_of_day: 600,
                emergency_limit: limit,
            },
            at(5000),
        );
        assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
        assert_eq!(s.rates.emergencies_by_source.get("agent"), None);
        assert_eq!(s.rates.emergencies_by_source["smoke-detector"].len(), 1);
        // A state written before the field existed still loads.
        let mut old = serde_json::to_value(&s.rates).unwrap();
        old.as_object_mut().unwrap().remove("emergencies_by_source");
        let loaded: RateWindows = serde_json::from_value(old).unwrap();
        assert!(loaded.emergencies_by_source.is_empty());
    }

    #[test]
    fn accepted_intent_fills_the_outbox_with_stable_action_ids() {
        let mut s = DomainState::default();
        assert_eq!(
            s.apply(
                &Command::RegisterDevice {
                    device: siren(),
                    by: None
                },
                at(1)
            ),
            Outcome::Done
        );
        let out = s.apply(&submit(intent("k1", "smoke")), at(2));
        let id = intent_id("k1");
        assert_eq!(
            out,
            Outcome::Accepted {
                intent_id: id.clone()
            }
        );
        let ob = s.outbox();
        assert_eq!(ob.len(), 1);
        assert_eq!(ob[0].1.id, format!("{id}/0"));
        assert_eq!(ob[0].0.index, 2);
    }

    #[test]
    fn idempotency_same_body_is_a_duplicate_other_body_a_conflict() {
        let mut s = DomainState::default();
        s.apply(
            &Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            at(1),
        );
        s.apply(&submit(intent("k1", "smoke")), at(2));
        let before = s.clone();
        assert_eq!(
            s.apply(&submit(intent("k1", "smoke")), at(3)),
            Outcome::Duplicate {
                intent_id: intent_id("k1")
            }
        );
        assert_eq!(
            s.apply(&submit(intent("k1", "fire")), at(4)),
            Outcome::KeyConflict {
                intent_id: intent_id("k1")
            }
        );
        assert_eq!(
            s, before,
            "neither a duplicate nor a conflict changes anything"
        );
    }

    #[test]
    fn confirmation_holds_the_outbox_until_approved() {
        let mut s = DomainState::default();
        s.apply(
            &Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            at(1),
        );
        let ask = Policy {
            id: "ask".into(),
            rule: Rule::RequireConfirmation {
                class: "ensure_safety".into(),
            },
        };
        s.apply(
            &Command::ApplyPolicies {
                by: None,
                policies: vec![ask],
            },
            at(2),
        );
        let mut i = intent("k2", "maybe smoke");
        i.urgency = Urgency::Alert;
        s.apply(&submit(i), at(3));
        assert!(s.outbox().is_empty());
        let id = intent_id("k2");
        assert_eq!(
            s.apply(
                &Command::Approve {
                    intent_id: id.clone(),
                    by: "alice".into()
                },
                at(4)
            ),
            Outcome::Done
        );
        assert_eq!(s.outbox().len(), 1);
        assert!(matches!(
            s.apply(
                &Command::Approve {
                    intent_id: id,
                    by: "bob".into()
                },
                at(5)
            ),
            Outcome::Refused { .. }
        ));
    }

    #[test]
    fn outcomes_are_recorded_once_and_finish_the_intent() {
        let mut s = DomainState::default();
        s.apply(
            &Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            at(1),
        );
        s.apply(&submit(intent("k4", "smoke")), at(2));
        let id = intent_id("k4");
        let token = FencingToken {
            term: 1,
            leader: 1,
            index: 2,
        };
        let rec = |o: ActionOutcome| Command::RecordOutcome {
            intent_id: id.clone(),
            action_id: format!("{id}/0"),
            outcome: o,
            token,
        };
        assert_eq!(s.apply(&rec(ActionOutcome::Applied), at(3)), Outcome::Done);
        assert!(s.outbox().is_empty());
        assert_eq!(s.intents[&id].status, IntentStatus::Done);
        assert_eq!(
            s.apply(&rec(ActionOutcome::StaleToken), at(4)),
            Outcome::Duplicate {
                intent_id: id.clone()
            }
        );
        assert_eq!(
            s.intents[&id].actions[0].outcome,
            Some(ActionOutcome::Applied)
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let mut s = DomainState::default();
        let before = s.clone();
        let mut bad = siren();
        bad.id = "../etc".into();
        assert!(matches!(
            s.apply(
                &Command::RegisterDevice {
                    device: bad,
                    by: None
                },
                at(1)
            ),
            Outcome::Refused { .. }
        ));
        let mut i = intent("k3", "x");
        i.class = "teleport".into();
        assert!(matches!(
            s.apply(&submit(i), at(2)),
            Outcome::Refused { .. }
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn commands_roundtrip_through_their_bytes() {
        for c in [
            submit(intent("k", "s")),
            Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            Command::TestRecord { text: "t".into() },
        ] {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        assert!(Command::decode(b"{\"type\":\"launch_missiles\"}").is_err());
    }
}
