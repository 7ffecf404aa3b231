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
use crate::resolver::{
    Clock, Plan, PlanError, PlannedAction, Rules, World, resolve, resolve_under,
};

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
    /// Removes a device from the registry (an operator's audited act). Its actions that have
    /// no outcome yet end `CANCELLED`, naming `by`; it may be registered again later.
    RemoveDevice { id: String, by: String },
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
    /// Adds one policy (refused if its id is taken).
    AddPolicy {
        policy: Policy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Removes one policy by id (refused if there is none).
    RemovePolicy {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An intent as the leader received it, with the time it fixed for planning.
    SubmitIntent {
        intent: Intent,
        at_ms: u64,
        minute_of_day: u16,
        /// How long after it becomes dispatchable its actions may still be sent (ms); a leader
        /// that finds one later records it `EXPIRED`. Absent in entries older than deadlines.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
        /// Whose idempotency keys this one is among: the intent's source (an agent's is its
        /// token name). Absent in entries older than it: their keys were global.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_scope: Option<String>,
        /// The bound on emergencies per source the leader applied (absent in older entries:
        /// none then, so a replay gives the same state).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emergency_limit: Option<crate::policy::EmergencyLimit>,
        /// How long a held intent waits for approval unless its class says otherwise (ms):
        /// the leader's default. Absent in entries older than expiries: they never expire.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_timeout_ms: Option<u64>,
    },
    /// A person approves an intent that waits for confirmation. `at_ms`: the leader's stamp
    /// (absent in older entries); the intent's deadline runs from then.
    Approve {
        intent_id: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<u64>,
        /// Why, if the person said (absent in older entries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A person denies an intent that waits for approval: its held actions end `DENIED`
    /// naming `by` and `reason`, and are never sent. `at_ms`: the leader's stamp.
    Deny {
        intent_id: String,
        by: String,
        reason: String,
        at_ms: u64,
    },
    /// The leader (`node`) denies a held intent whose approval expired by chain time `at_ms`
    /// (principal `system`); refused unless it is due then (`approval::is_due`).
    ExpireApproval {
        intent_id: String,
        node: u64,
        at_ms: u64,
    },
    /// An administrator re-fences devices after the cluster was re-formed: each device is sent
    /// a `hearth.refence` command under the current leadership, which resets the highest
    /// token it remembers (from an older cluster) to this one. Recorded as an intent of class
    /// `hearth.refence` whose actions are the devices' answers.
    Refence {
        devices: Vec<String>,
        by: String,
        reason: String,
        at_ms: u64,
    },
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
    /// What a node had to say about its own data, recorded by the leader once per notice id so
    /// that the chain carries it (issue 14): it rebuilt its state machine from the log, or it
    /// votes again after its data directory was new, copied or restored and a leader elected
    /// without it caught it up. Changes nothing but the set of recorded notice ids.
    NodeNotice {
        node: u64,
        /// Chosen by the node (unique per notice); a repeated id changes nothing.
        id: String,
        text: String,
        at_ms: u64,
    },
    /// The cluster admits `incarnation` of node `node` (the random id of its data directory)
    /// as the one that may vote under that id (issue 14.1). Recorded by the leader when it
    /// makes a new node a voter (forming the cluster, `cluster add`), and by an admin's
    /// `hearth cluster rejoin` for a node whose data directory was wiped: a new data
    /// directory votes only once the chain admits its own incarnation. `by`: the principal
    /// (or `node N` for the leader's own act); `reason`: why, in words.
    AdmitNode {
        node: u64,
        incarnation: String,
        by: String,
        reason: String,
        at_ms: u64,
    },
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
    /// Not dispatched before its deadline: never sent (the client had been told it failed).
    Expired { reason: String },
    /// Ended without being sent by a later act (the device was removed); `reason` says which
    /// and who.
    Cancelled { reason: String },
    /// Held for approval and denied (by a person, or by itself when the approval expired):
    /// never sent. `reason` names who and why.
    Denied { reason: String },
}

impl ActionOutcome {
    /// Whether the device is in the state the action asked for.
    pub fn applied(&self) -> bool {
        matches!(self, ActionOutcome::Applied | ActionOutcome::AlreadyApplied)
    }
}

/// The capability of a re-fence command (see [`Command::Refence`]).
pub const REFENCE_CAPABILITY: &str = "hearth.refence";
/// The class name re-fence records carry.
pub const REFENCE_CLASS: &str = "hearth.refence";

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

/// The id of an intent whose key is scoped to `scope` (its source): two sources using the
/// same key name two different intents. `None`: the global id of entries older than scoping.
pub fn scoped_intent_id(scope: Option<&str>, idempotency_key: &str) -> String {
    let Some(scope) = scope else {
        return intent_id(idempotency_key);
    };
    let mut h = Sha256::new();
    h.update(b"hearth intent key scoped v1\0");
    h.update(scope.as_bytes());
    h.update(b"\0");
    h.update(idempotency_key.as_bytes());
    format!("i-{}", hex::encode(&h.finalize()[..8]))
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
    /// Every action has an outcome and every one applied.
    Done,
    /// The plan acts on nothing and reads nothing (every device excluded, none capable):
    /// finished, and not a success. The plan's `nothing_to_do` says why.
    NoAction,
    /// Every action has an outcome and at least one did not apply (refused, stale token,
    /// failed, expired, unknown): never "done".
    Failed,
    /// A person denied it, or its approval expired, and nothing it asked for was done (every
    /// action denied): never "done".
    Denied,
}

impl IntentStatus {
    /// Nothing more will happen to the intent.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            IntentStatus::Done
                | IntentStatus::Failed
                | IntentStatus::NoAction
                | IntentStatus::Denied
        )
    }
}

/// The final status of an intent whose every action has an outcome: done if every one
/// applied, denied if every one was denied, else failed.
pub fn final_status(actions: &[ActionRecord]) -> IntentStatus {
    if actions
        .iter()
        .all(|a| a.outcome.as_ref().is_some_and(ActionOutcome::applied))
    {
        IntentStatus::Done
    } else if !actions.is_empty()
        && actions
            .iter()
            .all(|a| matches!(a.outcome, Some(ActionOutcome::Denied { .. })))
    {
        IntentStatus::Denied
    } else {
        IntentStatus::Failed
    }
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
    /// The dispatch deadline (ms after `dispatchable_ms`); absent in older entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Chain time at which the actions became dispatchable (accepted, or approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatchable_ms: Option<u64>,
    /// Why and until when it waits for approval (absent if it never waited, or was held by
    /// an entry older than expiries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<crate::approval::Hold>,
    /// The reason the approver gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_reason: Option<String>,
    /// Set when it was denied (by a person, or by the expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<crate::approval::Denial>,
}

impl IntentRecord {
    /// Whether an action of this intent must no longer be sent, judged at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        match self.dispatchable_ms {
            Some(since) => crate::clock::expired(since, self.deadline_ms, now_ms),
            None => false,
        }
    }
}

impl IntentRecord {
    /// Accepted, with some actions still held for an approval nobody gave yet.
    pub fn awaits_partial_approval(&self) -> bool {
        self.status == IntentStatus::Accepted
            && self.approved_by.is_none()
            && self
                .actions
                .iter()
                .any(|a| a.action.needs_approval && a.outcome.is_none())
    }

    /// Whether `approve` would be accepted now.
    pub fn awaits_approval(&self) -> bool {
        self.status == IntentStatus::AwaitingApproval || self.awaits_partial_approval()
    }
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
    /// A device was removed; these intents had actions on it that are now cancelled.
    Removed {
        cancelled: Vec<String>,
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
    /// Ids of the node notices the chain carries (`Command::NodeNotice`).
    #[serde(default)]
    pub notices: std::collections::BTreeSet<String>,
    /// The incarnation (data directory) of each node id that the chain admits to vote
    /// (`Command::AdmitNode`); the last admission wins.
    #[serde(default)]
    pub incarnations: BTreeMap<u64, String>,
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
            notices: Default::default(),
            incarnations: BTreeMap::new(),
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

    /// The intent an idempotency key already names for this submission, if any: the one with
    /// the same scoped id, or an intent from an older (global-key) entry with the same key and
    /// the same source, so a retry across the upgrade still runs once.
    pub fn existing_for_key(
        &self,
        intent: &Intent,
        key_scope: Option<&str>,
    ) -> Option<&IntentRecord> {
        let id = scoped_intent_id(key_scope, &intent.idempotency_key);
        if let Some(r) = self.intents.get(&id) {
            return Some(r);
        }
        key_scope?;
        self.intents
            .get(&intent_id(&intent.idempotency_key))
            .filter(|r| r.intent.source == intent.source)
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
            Command::NodeNotice { id, .. } => {
                self.notices.insert(id.clone());
                Outcome::Done
            }
            Command::AdmitNode {
                node, incarnation, ..
            } => {
                self.incarnations.insert(*node, incarnation.clone());
                Outcome::Done
            }
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
            Command::RemoveDevice { id, by } => self.remove_device(id, by),
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
            Command::AddPolicy { policy, .. } => {
                if let Err(e) = policy.validate() {
                    return Outcome::Refused {
                        reason: e.to_string(),
                    };
                }
                if self.policies.iter().any(|p| p.id == policy.id) {
                    return Outcome::Refused {
                        reason: format!(
                            "a policy {:?} exists; remove it first (`hearth policy remove {}`)",
                            policy.id, policy.id
                        ),
                    };
                }
                self.policies.push(policy.clone());
                Outcome::Done
            }
            Command::RemovePolicy { id, .. } => {
                let before = self.policies.len();
                self.policies.retain(|p| &p.id != id);
                if self.policies.len() == before {
                    return Outcome::Refused {
                        reason: format!(
                            "no policy {id:?} (policies: {})",
                            self.policies
                                .iter()
                                .map(|p| p.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                }
                Outcome::Done
            }
            Command::SubmitIntent {
                intent,
                at_ms,
                minute_of_day,
                deadline_ms,
                key_scope,
                emergency_limit,
                approval_timeout_ms,
            } => {
                // Chain time never runs backwards: an entry stamped earlier than the chain's
                // time is planned (rate windows, quiet hours) at the chain's time.
                let chain = self.rates.chain_ms;
                let now = crate::clock::effective(*at_ms, chain);
                let minute_of_day = if now == *at_ms {
                    *minute_of_day
                } else {
                    crate::clock::minute_of_day(now)
                };
                let id = scoped_intent_id(key_scope.as_deref(), &intent.idempotency_key);
                let hash = body_hash(intent);
                if let Some(existing) = self.existing_for_key(intent, key_scope.as_deref()) {
                    let intent_id = existing.id.clone();
                    return if existing.body_hash == hash {
                        Outcome::Duplicate { intent_id }
                    } else {
                        Outcome::KeyConflict { intent_id }
                    };
                }
                let clock = Clock {
                    now_ms: now,
                    minute_of_day,
                };
                if let Some(why) = self.emergency_limited(intent, now, *emergency_limit) {
                    return Outcome::Refused { reason: why };
                }
                // Entries from before scoped keys were decided under the rules of their time.
                let rules = if key_scope.is_some() {
                    Rules::Current
                } else {
                    Rules::Legacy
                };
                let plan = match resolve_under(&self.world(), intent, clock, rules) {
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
                self.rates.chain_ms = now;
                self.rates.record(
                    &intent.source,
                    actions.iter().map(|a| a.action.device.as_str()),
                    now,
                    RATE_MEMORY_SECS,
                );
                if intent.urgency == crate::intent::Urgency::Emergency {
                    self.rates.record_emergency(&intent.source, now);
                }
                let status = if plan.nothing_to_do.is_some() {
                    IntentStatus::NoAction
                } else if plan.needs_confirmation && !plan.partly_held() {
                    IntentStatus::AwaitingApproval
                } else if actions.is_empty() {
                    IntentStatus::Done
                } else {
                    IntentStatus::Accepted
                };
                let hold = crate::approval::hold_for(
                    &self.policies,
                    self.classes.get(&intent.class),
                    &plan,
                    status,
                    now,
                    *approval_timeout_ms,
                );
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
                        dispatchable_ms: (status == IntentStatus::Accepted).then_some(now),
                        plan,
                        status,
                        actions,
                        approved_by: None,
                        deadline_ms: *deadline_ms,
                        hold,
                        approval_reason: None,
                        denied: None,
                    },
                );
                Outcome::Accepted { intent_id: id }
            }
            Command::Approve {
                intent_id,
                by,
                at_ms,
                reason,
            } => {
                // An intent held under expiries (or denied) is checked by the approval rules: an
                // approval stamped after its expiry is refused on every node, even before the
                // expiry entry is in. Older intents keep the rules of their time.
                if let Some(r) = self.intents.get(intent_id)
                    && (r.hold.is_some() || r.denied.is_some())
                {
                    let now = at_ms.map(|t| crate::clock::effective(t, self.rates.chain_ms));
                    if let Err(reason) = crate::approval::check(
                        intent_id,
                        Some(r),
                        crate::approval::Decision::Approve,
                        now,
                    ) {
                        return Outcome::Refused { reason };
                    }
                }
                self.approve(intent_id, by, *at_ms, reason.clone())
            }
            Command::Deny {
                intent_id,
                by,
                reason,
                at_ms,
            } => self.deny(intent_id, by, reason, *at_ms, false),
            Command::ExpireApproval {
                intent_id, at_ms, ..
            } => {
                let now = crate::clock::effective(*at_ms, self.rates.chain_ms);
                match self.intents.get(intent_id) {
                    Some(r) if crate::approval::is_due(r, now) => {
                        let why = r
                            .hold
                            .as_ref()
                            .map(crate::approval::expiry_reason)
                            .unwrap_or_default();
                        self.deny(intent_id, crate::approval::SYSTEM, &why, *at_ms, true)
                    }
                    Some(r) => Outcome::Refused {
                        reason: match &r.hold {
                            Some(h) if r.denied.is_none() && r.awaits_approval() => format!(
                                "intent {intent_id}'s approval expires at chain time {} ms, not yet at {now} ms",
                                h.expires_at_ms
                            ),
                            _ => crate::approval::check(
                                intent_id,
                                Some(r),
                                crate::approval::Decision::Deny,
                                Some(now),
                            )
                            .err()
                            .unwrap_or_else(|| {
                                format!("intent {intent_id} has no approval that expires")
                            }),
                        },
                    },
                    None => Outcome::Refused {
                        reason: format!("no intent {intent_id}"),
                    },
                }
            }
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
                    r.status = final_status(&r.actions);
                }
                Outcome::Done
            }
            Command::Refence {
                devices,
                by,
                reason,
                at_ms,
            } => self.refence(devices, by, reason, *at_ms, pos),
        }
    }

    /// Approves a held intent (the checks of the approval rules were made by the caller).
    fn approve(
        &mut self,
        intent_id: &str,
        by: &str,
        at_ms: Option<u64>,
        reason: Option<String>,
    ) -> Outcome {
        let chain_ms = self.rates.chain_ms;
        match self.intents.get_mut(intent_id) {
            Some(r) if r.awaits_partial_approval() => {
                r.approved_by = Some(by.to_string());
                r.approval_reason = reason.clone();
                // The held actions may be sent from now: their deadline runs from the
                // approval (older entries: no stamp, the submit time stays).
                if let Some(t) = at_ms {
                    r.dispatchable_ms = Some(crate::clock::effective(t, chain_ms));
                }
                Outcome::Done
            }
            Some(r) if r.status == IntentStatus::AwaitingApproval => {
                r.status = if r.actions.is_empty() {
                    IntentStatus::Done
                } else {
                    IntentStatus::Accepted
                };
                r.approved_by = Some(by.to_string());
                r.approval_reason = reason.clone();
                // The deadline runs from the approval (older entries: no stamp, no expiry).
                r.dispatchable_ms = at_ms.map(|t| crate::clock::effective(t, chain_ms));
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
        }
    }

    /// Denies a held intent (a person's `Deny`, or with `expired` the leader's
    /// `ExpireApproval`, whose due-ness the caller checked): refused, changing nothing, unless
    /// it waits for approval and `reason` is given.
    fn deny(
        &mut self,
        intent_id: &str,
        by: &str,
        reason: &str,
        at_ms: u64,
        expired: bool,
    ) -> Outcome {
        if let Err(e) = crate::approval::check_reason("reason", reason) {
            return Outcome::Refused {
                reason: e.to_string(),
            };
        }
        let now = crate::clock::effective(at_ms, self.rates.chain_ms);
        let r = self.intents.get(intent_id);
        if let Err(reason) =
            crate::approval::check(intent_id, r, crate::approval::Decision::Deny, Some(now))
        {
            return Outcome::Refused { reason };
        }
        let Some(r) = self.intents.get_mut(intent_id) else {
            return Outcome::Refused {
                reason: format!("no intent {intent_id}"),
            };
        };
        crate::approval::deny(
            r,
            crate::approval::Denial {
                by: by.to_string(),
                reason: reason.to_string(),
                at_ms: now,
                expired,
            },
        );
        self.rates.chain_ms = now;
        Outcome::Done
    }

    /// The intents that still wait to act on `device`: not finished, with an action on it
    /// that has no outcome (held for approval or not yet sent). In id order.
    pub fn pending_for_device(&self, device: &str) -> Vec<String> {
        self.intents
            .values()
            .filter(|r| !r.status.is_final())
            .filter(|r| {
                r.actions
                    .iter()
                    .any(|a| a.outcome.is_none() && a.action.device == device)
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// Removes a device: refused (state unchanged) when none has that id. Every action on it
    /// still without an outcome ends `Cancelled` with the principal named, and an intent whose
    /// every action now has an outcome is finished (`Failed`: not everything it asked for was
    /// done). The device may be registered again; its old actions stay cancelled.
    fn remove_device(&mut self, id: &str, by: &str) -> Outcome {
        if self.devices.remove(id).is_none() {
            return Outcome::Refused {
                reason: format!(
                    "no device {id:?} is registered (registered: {})",
                    if self.devices.is_empty() {
                        "none".to_string()
                    } else {
                        self.devices.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            };
        }
        let reason = format!("device {id} removed by {by}");
        let cancelled = self.pending_for_device(id);
        for intent_id in &cancelled {
            let Some(r) = self.intents.get_mut(intent_id) else {
                continue;
            };
            for a in r
                .actions
                .iter_mut()
                .filter(|a| a.outcome.is_none() && a.action.device == id)
            {
                a.outcome = Some(ActionOutcome::Cancelled {
                    reason: reason.clone(),
                });
            }
            if r.actions.iter().all(|a| a.outcome.is_some()) {
                r.status = final_status(&r.actions);
            }
        }
        Outcome::Removed { cancelled }
    }

    /// The id of the re-fence record decided at `index`.
    pub fn refence_id(index: u64) -> String {
        intent_id(&format!("{REFENCE_CLASS}@{index}"))
    }

    fn refence(
        &mut self,
        devices: &[String],
        by: &str,
        reason: &str,
        at_ms: u64,
        pos: EntryPos,
    ) -> Outcome {
        if devices.is_empty() {
            return Outcome::Refused {
                reason: "no device to re-fence".into(),
            };
        }
        if let Some(d) = devices.iter().find(|d| !self.devices.contains_key(*d)) {
            return Outcome::Refused {
                reason: format!("no device {d:?} is registered"),
            };
        }
        let now = crate::clock::effective(at_ms, self.rates.chain_ms);
        self.rates.chain_ms = now;
        let id = Self::refence_id(pos.index);
        let actions: Vec<ActionRecord> = devices
            .iter()
            .enumerate()
            .map(|(n, d)| ActionRecord {
                id: format!("{id}/{n}"),
                action: PlannedAction {
                    device: d.clone(),
                    capability: REFENCE_CAPABILITY.into(),
                    state: "reset".into(),
                    adapter: self.devices[d.as_str()].adapter.clone(),
                    needs_approval: false,
                },
                outcome: None,
                token: None,
            })
            .collect();
        let intent = Intent {
            class: REFENCE_CLASS.into(),
            urgency: crate::intent::Urgency::Info,
            subject: reason.to_string(),
            // Descriptive only: where the first device is.
            location: self.devices[&devices[0]].location.clone(),
            context: BTreeMap::new(),
            source: by.to_string(),
            idempotency_key: format!("{REFENCE_CLASS}@{}", pos.index),
        };
        let plan = Plan {
            class: REFENCE_CLASS.into(),
            urgency: crate::intent::Urgency::Info,
            actions: actions.iter().map(|a| a.action.clone()).collect(),
            reads: Vec::new(),
            verdicts: Vec::new(),
            needs_confirmation: false,
            notes: Vec::new(),
            nothing_to_do: None,
        };
        self.intents.insert(
            id.clone(),
            IntentRecord {
                id: id.clone(),
                body_hash: body_hash(&intent),
                intent,
                index: pos.index,
                term: pos.term,
                leader: pos.leader,
                at_ms,
                plan,
                status: IntentStatus::Accepted,
                actions,
                approved_by: None,
                // Re-fencing is not urgent and repeat-safe: no deadline.
                deadline_ms: None,
                dispatchable_ms: Some(now),
                hold: None,
                approval_reason: None,
                denied: None,
            },
        );
        Outcome::Accepted { intent_id: id }
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
                    .filter(|a| !a.action.needs_approval || r.approved_by.is_some())
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
            emergency_actions: Default::default(),
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
    fn a_node_notice_is_recorded_once_and_changes_nothing_else() {
        let cmd = Command::NodeNotice {
            node: 3,
            id: "19a-0f".into(),
            text: "votes again: its data directory is new".into(),
            at_ms: 9,
        };
        let bytes = cmd.encode();
        assert!(
            String::from_utf8_lossy(&bytes).contains(r#""type":"node_notice""#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(Command::decode(&bytes).unwrap(), cmd);
        let mut d = DomainState::default();
        let before = d.clone();
        assert_eq!(d.apply(&cmd, at(7)), Outcome::Done);
        assert!(d.notices.contains("19a-0f"));
        let once = d.clone();
        assert_eq!(d.apply(&cmd, at(8)), Outcome::Done);
        assert_eq!(d, once, "a repeated notice changes nothing");
        let mut rest = once.clone();
        rest.notices.clear();
        assert_eq!(rest, before, "a notice changes nothing but the notice ids");
        // A state written before notices existed still loads.
        let mut old = serde_json::to_value(DomainState::default()).unwrap();
        old.as_object_mut().unwrap().remove("notices");
        let old: DomainState = serde_json::from_value(old).unwrap();
        assert!(old.notices.is_empty());
    }

    #[test]
    fn an_admission_names_the_incarnation_that_votes_and_the_last_one_wins() {
        let admit = |incarnation: &str, by: &str| Command::AdmitNode {
            node: 3,
            incarnation: incarnation.into(),
            by: by.into(),
            reason: "joined when the cluster was formed".into(),
            at_ms: 5,
        };
        let cmd = admit("9f0c", "node 1");
        let bytes = cmd.encode();
        assert!(
            String::from_utf8_lossy(&bytes).contains(r#""type":"admit_node""#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(Command::decode(&bytes).unwrap(), cmd);
        let mut d = DomainState::default();
        let before = d.clone();
        assert_eq!(d.apply(&cmd, at(4)), Outcome::Done);
        assert_eq!(d.incarnations.get(&3).map(String::as_str), Some("9f0c"));
        let mut rest = d.clone();
        rest.incarnations.clear();
        assert_eq!(rest, before, "an admission changes nothing else");
        // A wiped node's new incarnation, admitted by an admin, replaces the old one.
        assert_eq!(d.apply(&admit("77aa", "ana"), at(9)), Outcome::Done);
        assert_eq!(d.incarnations.get(&3).map(String::as_str), Some("77aa"));
        assert_eq!(d.incarnations.len(), 1);
        // A state written before admissions existed still loads, admitting nobody.
        let mut old = serde_json::to_value(DomainState::default()).unwrap();
        old.as_object_mut().unwrap().remove("incarnations");
        let old: DomainState = serde_json::from_value(old).unwrap();
        assert!(old.incarnations.is_empty());
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
            deadline_ms: None,
            key_scope: None,
            emergency_limit: None,
            approval_timeout_ms: None,
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
            // The issue's flood: 2,000 emergency intents from one agent in 57 s.
            let mut accepted = 0;
            for n in 0..2000u64 {
                let cmd = Command::SubmitIntent {
                    intent: intent(&format!("k{n}"), "smoke"),
                    at_ms: 1_000_000 + n * 57_000 / 2000,
                    minute_of_day: 600,
                    emergency_limit: limit,
                    approval_timeout_ms: None,
                    deadline_ms: None,
                    key_scope: None,
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
                approval_timeout_ms: None,
                deadline_ms: None,
                key_scope: None,
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
            emergency_override: None,
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
                    by: "alice".into(),
                    at_ms: None,
                    reason: None,
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
                    by: "bob".into(),
                    at_ms: None,
                    reason: None,
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

    fn with_siren() -> DomainState {
        let mut s = DomainState::default();
        s.apply(
            &Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            at(1),
        );
        s
    }

    fn submit_at(key: &str, at_ms: u64, deadline_ms: Option<u64>) -> Command {
        Command::SubmitIntent {
            intent: intent(key, "smoke"),
            at_ms,
            minute_of_day: crate::clock::minute_of_day(at_ms),
            deadline_ms,
            key_scope: None,
            emergency_limit: None,
            approval_timeout_ms: None,
        }
    }

    #[test]
    fn an_intent_carries_its_deadline_and_expires_after_it() {
        let mut s = with_siren();
        s.apply(&submit_at("d1", 10_000, Some(5_000)), at(2));
        let r = &s.intents[&intent_id("d1")];
        assert_eq!(
            (r.deadline_ms, r.dispatchable_ms),
            (Some(5_000), Some(10_000))
        );
        assert!(!r.expired(15_000) && r.expired(15_001));
        // An entry without a deadline (older logs) never expires.
        s.apply(&submit_at("d2", 10_000, None), at(3));
        assert!(!s.intents[&intent_id("d2")].expired(u64::MAX));
        // The deadline survives encoding, and an entry without it still decodes.
        let c = submit_at("d3", 1, Some(7));
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        let old = br#"{"type":"submit_intent","intent":{"class":"notify","urgency":"info","subject":"","location":"home","context":{},"source":"a","idempotency_key":"k"},"at_ms":5,"minute_of_day":0}"#;
        assert!(matches!(
            Command::decode(old),
            Ok(Command::SubmitIntent {
                deadline_ms: None,
                ..
            })
        ));
    }

    #[test]
    fn an_approval_restarts_the_deadline() {
        let mut s = with_siren();
        let ask = Policy {
            id: "ask".into(),
            emergency_override: None,
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
        let mut i = intent("d4", "smoke?");
        i.urgency = Urgency::Alert;
        s.apply(
            &Command::SubmitIntent {
                intent: i,
                at_ms: 1_000,
                minute_of_day: 0,
                deadline_ms: Some(5_000),
                key_scope: None,
                emergency_limit: None,
                approval_timeout_ms: None,
            },
            at(3),
        );
        let id = intent_id("d4");
        assert_eq!(s.intents[&id].dispatchable_ms, None);
        assert!(!s.intents[&id].expired(u64::MAX), "waiting is not expiring");
        s.apply(
            &Command::Approve {
                intent_id: id.clone(),
                by: "ana".into(),
                at_ms: Some(3_600_000),
                reason: None,
            },
            at(4),
        );
        assert!(!s.intents[&id].expired(3_605_000));
        assert!(s.intents[&id].expired(3_605_001));
    }

    #[test]
    fn chain_time_never_runs_backwards_and_rate_windows_count_it() {
        // 12 intents from one source while leadership moves between hubs whose clocks are
        // real, +1 y and -1 y: the chain's time sticks at the latest, so a limit of 3 per
        // 5 min holds.
        const YEAR: u64 = 365 * 24 * 3600 * 1000;
        const NOW: u64 = 1_780_000_000_000;
        let mut s = with_siren();
        s.apply(
            &Command::ApplyPolicies {
                by: None,
                policies: vec![Policy {
                    id: "rate".into(),
                    emergency_override: None,
                    rule: Rule::RateLimitSource {
                        max: 3,
                        window_secs: 300,
                    },
                }],
            },
            at(2),
        );
        let clocks = [NOW, NOW + YEAR, NOW - YEAR];
        let mut accepted = 0;
        for n in 0..12u64 {
            let wall = clocks[n as usize % 3] + n * 5_000;
            // The leader stamps at least the chain's time.
            let stamped = crate::clock::stamp(wall, s.rates.chain_ms);
            let mut i = intent(&format!("r{n}"), "x");
            i.urgency = Urgency::Alert;
            let before = s.rates.chain_ms;
            let out = s.apply(
                &Command::SubmitIntent {
                    intent: i,
                    at_ms: stamped,
                    minute_of_day: crate::clock::minute_of_day(stamped),
                    deadline_ms: None,
                    key_scope: None,
                    emergency_limit: None,
                    approval_timeout_ms: None,
                },
                at(3 + n),
            );
            assert!(s.rates.chain_ms >= before, "chain time ran backwards");
            if matches!(out, Outcome::Accepted { .. }) {
                accepted += 1;
            }
        }
        // 3 before the +1 y leader's first stamp, 1 after its forward jump (the window of the
        // real time lies a year behind): a clock that jumps forward is caught by
        // `clock::judge` on the node, which then neither leads nor stamps. Backward jumps
        // gain nothing: without monotone stamps this was 12.
        assert_eq!(
            accepted, 4,
            "the rate limit holds across backward clock jumps"
        );
        // An entry stamped behind the chain (an older leader's, or one written before
        // stamping was monotone) is planned at the chain's time.
        let mut i = intent("late", "x");
        i.urgency = Urgency::Alert;
        i.source = "other".into();
        s.apply(
            &Command::SubmitIntent {
                intent: i,
                at_ms: 5,
                minute_of_day: 0,
                deadline_ms: None,
                key_scope: None,
                emergency_limit: None,
                approval_timeout_ms: None,
            },
            at(40),
        );
        assert!(s.rates.by_source["other"][0] >= NOW + YEAR);
    }

    #[test]
    fn an_intent_with_a_refused_action_is_never_done() {
        let token = FencingToken {
            term: 1,
            leader: 1,
            index: 2,
        };
        for (outcome, status) in [
            (ActionOutcome::Applied, IntentStatus::Done),
            (ActionOutcome::AlreadyApplied, IntentStatus::Done),
            (ActionOutcome::StaleToken, IntentStatus::Failed),
            (
                ActionOutcome::Failed { reason: "x".into() },
                IntentStatus::Failed,
            ),
            (
                ActionOutcome::Expired { reason: "x".into() },
                IntentStatus::Failed,
            ),
            (
                ActionOutcome::OutcomeUnknown { reason: "x".into() },
                IntentStatus::Failed,
            ),
        ] {
            let mut s = with_siren();
            s.apply(&submit(intent("f", "smoke")), at(2));
            let id = intent_id("f");
            s.apply(
                &Command::RecordOutcome {
                    intent_id: id.clone(),
                    action_id: format!("{id}/0"),
                    outcome: outcome.clone(),
                    token,
                },
                at(3),
            );
            assert_eq!(s.intents[&id].status, status, "{outcome:?}");
            assert!(s.intents[&id].status.is_final());
            assert!(s.outbox().is_empty());
        }
    }

    #[test]
    fn a_refence_puts_one_action_per_device_in_the_outbox() {
        let mut s = with_siren();
        let before = s.clone();
        let rf = |devices: Vec<String>| Command::Refence {
            devices,
            by: "admin".into(),
            reason: "cluster re-formed".into(),
            at_ms: 50,
        };
        assert!(matches!(
            s.apply(&rf(vec![]), at(2)),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            s.apply(&rf(vec!["siren".into(), "ghost".into()]), at(2)),
            Outcome::Refused { .. }
        ));
        assert_eq!(s, before, "a refused re-fence changes nothing");
        assert_eq!(
            Command::decode(&rf(vec!["siren".into()]).encode()).unwrap(),
            rf(vec!["siren".into()])
        );
        let out = s.apply(&rf(vec!["siren".into()]), at(3));
        let id = DomainState::refence_id(3);
        assert_eq!(
            out,
            Outcome::Accepted {
                intent_id: id.clone()
            }
        );
        let ob = s.outbox();
        assert_eq!(ob.len(), 1);
        assert_eq!(ob[0].1.action.capability, REFENCE_CAPABILITY);
        assert_eq!(ob[0].0.intent.source, "admin");
        assert!(!ob[0].0.expired(u64::MAX));
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

    fn remove(id: &str, by: &str) -> Command {
        Command::RemoveDevice {
            id: id.into(),
            by: by.into(),
        }
    }

    #[test]
    fn removing_an_unknown_device_is_refused_and_changes_nothing() {
        let mut s = with_siren();
        let before = s.clone();
        match s.apply(&remove("sirne", "ana"), at(2)) {
            Outcome::Refused { reason } => {
                assert!(
                    reason.contains("\"sirne\"") && reason.contains("siren"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s, before);
        let mut empty = DomainState::default();
        assert!(matches!(
            empty.apply(&remove("siren", "ana"), at(1)),
            Outcome::Refused { .. }
        ));
    }

    #[test]
    fn removing_a_device_cancels_its_pending_actions_naming_the_principal() {
        let mut s = with_siren();
        s.apply(&submit(intent("r1", "smoke")), at(2));
        let id = intent_id("r1");
        assert_eq!(s.outbox().len(), 1);
        assert_eq!(s.pending_for_device("siren"), vec![id.clone()]);
        assert!(s.pending_for_device("lamp").is_empty());
        assert_eq!(
            s.apply(&remove("siren", "ana"), at(3)),
            Outcome::Removed {
                cancelled: vec![id.clone()]
            }
        );
        assert!(!s.devices.contains_key("siren"));
        assert!(s.outbox().is_empty(), "nothing is sent to a removed device");
        let r = &s.intents[&id];
        assert_eq!(
            r.actions[0].outcome,
            Some(ActionOutcome::Cancelled {
                reason: "device siren removed by ana".into()
            })
        );
        assert_eq!(r.status, IntentStatus::Failed, "never done");
        // The device answering late (a send already under way) changes nothing.
        let late = Command::RecordOutcome {
            intent_id: id.clone(),
            action_id: format!("{id}/0"),
            outcome: ActionOutcome::Applied,
            token: FencingToken {
                term: 1,
                leader: 1,
                index: 2,
            },
        };
        assert!(matches!(s.apply(&late, at(4)), Outcome::Duplicate { .. }));
        assert!(s.pending_for_device("siren").is_empty());
        // Registered again, it is a device like any other; the old action stays cancelled.
        register(&mut s, 5);
        assert!(s.devices.contains_key("siren"));
        assert!(s.outbox().is_empty());
        s.apply(&submit(intent("r2", "smoke again")), at(6));
        assert_eq!(s.outbox().len(), 1);
    }

    #[test]
    fn removing_a_device_ends_actions_held_for_approval_and_keeps_finished_ones() {
        let mut s = with_siren();
        // A finished intent's outcomes are history: removal leaves them as they are.
        s.apply(&submit(intent("done", "smoke")), at(2));
        let done = intent_id("done");
        s.apply(
            &Command::RecordOutcome {
                intent_id: done.clone(),
                action_id: format!("{done}/0"),
                outcome: ActionOutcome::Applied,
                token: FencingToken {
                    term: 1,
                    leader: 1,
                    index: 2,
                },
            },
            at(3),
        );
        let ask = Policy {
            id: "ask".into(),
            emergency_override: None,
            rule: Rule::RequireConfirmation {
                class: "ensure_safety".into(),
            },
        };
        s.apply(
            &Command::ApplyPolicies {
                by: None,
                policies: vec![ask],
            },
            at(4),
        );
        let mut i = intent("held", "maybe smoke");
        i.urgency = Urgency::Alert;
        s.apply(&submit(i), at(5));
        let held = intent_id("held");
        assert_eq!(s.intents[&held].status, IntentStatus::AwaitingApproval);
        assert_eq!(
            s.apply(&remove("siren", "bob"), at(6)),
            Outcome::Removed {
                cancelled: vec![held.clone()]
            },
            "the finished intent is not among them"
        );
        let r = &s.intents[&held];
        assert_eq!(r.status, IntentStatus::Failed);
        assert!(matches!(
            &r.actions[0].outcome,
            Some(ActionOutcome::Cancelled { reason }) if reason.contains("bob")
        ));
        assert!(!r.awaits_approval(), "nothing is left to approve");
        assert_eq!(
            s.intents[&done].actions[0].outcome,
            Some(ActionOutcome::Applied)
        );
        assert_eq!(s.intents[&done].status, IntentStatus::Done);
        // Removal and its bytes round-trip like every command.
        let c = remove("siren", "bob");
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }

    fn register(s: &mut DomainState, n: u64) {
        s.apply(
            &Command::RegisterDevice {
                device: siren(),
                by: None,
            },
            at(n),
        );
    }

    /// Issue 13 item 4: agent B used agent A's key first, and A's emergency was refused as a
    /// key conflict naming A's... B's intent. Keys are scoped to the source now.
    #[test]
    fn idempotency_keys_are_scoped_to_the_source() {
        let mut s = DomainState::default();
        register(&mut s, 1);
        let scoped = |i: Intent| Command::SubmitIntent {
            key_scope: Some(i.source.clone()),
            intent: i,
            at_ms: 1000,
            minute_of_day: 600,
            deadline_ms: None,
            emergency_limit: None,
            approval_timeout_ms: None,
        };
        let mut by_b = intent("smoke-kitchen-42", "a prank");
        by_b.source = "agent-b".into();
        by_b.urgency = Urgency::Alert;
        let mut by_a = intent("smoke-kitchen-42", "smoke");
        by_a.source = "agent-a".into();
        let Outcome::Accepted { intent_id: b_id } = s.apply(&scoped(by_b.clone()), at(2)) else {
            panic!()
        };
        let Outcome::Accepted { intent_id: a_id } = s.apply(&scoped(by_a.clone()), at(3)) else {
            panic!("A's emergency must be accepted")
        };
        assert_ne!(a_id, b_id);
        assert_eq!(a_id, scoped_intent_id(Some("agent-a"), "smoke-kitchen-42"));
        assert_eq!(
            s.apply(&scoped(by_a.clone()), at(4)),
            Outcome::Duplicate {
                intent_id: a_id.clone()
            }
        );
        let mut other = by_a.clone();
        other.subject = "fire".into();
        assert_eq!(
            s.apply(&scoped(other), at(5)),
            Outcome::KeyConflict { intent_id: a_id }
        );
        // An intent from an older entry (global key): the same source retrying after the
        // upgrade gets it back; another source does not collide with it.
        let mut s = DomainState::default();
        register(&mut s, 1);
        s.apply(&submit(intent("old-key", "smoke")), at(2));
        assert_eq!(
            s.apply(&scoped(intent("old-key", "smoke")), at(3)),
            Outcome::Duplicate {
                intent_id: intent_id("old-key")
            }
        );
        let mut stranger = intent("old-key", "smoke");
        stranger.source = "someone-else".into();
        assert!(matches!(
            s.apply(&scoped(stranger), at(4)),
            Outcome::Accepted { .. }
        ));
    }

    /// Issue 13 item 3: an intent that acts on nothing is finished as `no_action`, not done,
    /// and leaves nothing in the outbox.
    #[test]
    fn an_intent_that_acts_on_nothing_is_no_action() {
        let mut s = DomainState::default();
        register(&mut s, 1);
        s.apply(
            &Command::AddPolicy {
                policy: Policy::new(
                    "quiet",
                    Rule::ExcludeDevice {
                        device: "siren".into(),
                        class: None,
                    },
                ),
                by: None,
            },
            at(2),
        );
        let mut i = intent("k", "x");
        i.urgency = Urgency::Alert;
        s.apply(
            &Command::SubmitIntent {
                key_scope: Some(i.source.clone()),
                intent: i.clone(),
                at_ms: 1000,
                minute_of_day: 600,
                deadline_ms: None,
                emergency_limit: None,
                approval_timeout_ms: None,
            },
            at(3),
        );
        let r = &s.intents[&scoped_intent_id(Some("agent"), "k")];
        assert_eq!(r.status, IntentStatus::NoAction);
        assert!(
            r.plan
                .nothing_to_do
                .as_deref()
                .is_some_and(|w| w.contains("policy quiet"))
        );
        assert!(s.outbox().is_empty());
    }

    #[test]
    fn one_policy_is_added_or_removed_alone() {
        let mut s = DomainState::default();
        let p = |id: &str| {
            Policy::new(
                id,
                Rule::RequireConfirmation {
                    class: "notify".into(),
                },
            )
        };
        for id in ["a", "b"] {
            assert_eq!(
                s.apply(
                    &Command::AddPolicy {
                        policy: p(id),
                        by: None
                    },
                    at(1)
                ),
                Outcome::Done
            );
        }
        assert!(matches!(
            s.apply(
                &Command::AddPolicy {
                    policy: p("a"),
                    by: None
                },
                at(2)
            ),
            Outcome::Refused { .. }
        ));
        assert_eq!(
            s.apply(
                &Command::RemovePolicy {
                    id: "a".into(),
                    by: None
                },
                at(3)
            ),
            Outcome::Done
        );
        assert_eq!(s.policies, [p("b")]);
        let before = s.clone();
        let Outcome::Refused { reason } = s.apply(
            &Command::RemovePolicy {
                id: "zz".into(),
                by: None,
            },
            at(4),
        ) else {
            panic!()
        };
        assert!(
            reason.contains("\"zz\"") && reason.contains('b'),
            "{reason}"
        );
        assert_eq!(s, before);
    }

    /// `apply` is deterministic across versions: an entry written before these rules (no
    /// `key_scope`) replays to the plan it got then, a new one gets the new rules.
    #[test]
    fn old_entries_replay_under_the_rules_of_their_time() {
        let mut s = DomainState::default();
        register(&mut s, 1);
        let mut typo = intent("old-typo", "smoke");
        typo.location = crate::intent::Location::parse("l", "home/kitchn").unwrap();
        let mut typo_alert = typo.clone();
        typo_alert.urgency = Urgency::Alert;
        typo_alert.idempotency_key = "old-typo-alert".into();
        s.apply(&submit(typo_alert), at(2));
        assert_eq!(
            s.intents[&intent_id("old-typo-alert")].status,
            IntentStatus::Done,
            "then: an unknown location planned nothing and was done"
        );
        s.apply(
            &Command::ApplyPolicies {
                policies: vec![Policy::new(
                    "ask",
                    Rule::RequireConfirmation {
                        class: "ensure_safety".into(),
                    },
                )],
                by: None,
            },
            at(2),
        );
        s.apply(&submit(intent("old", "smoke")), at(3));
        let old = &s.intents[&intent_id("old")];
        assert_eq!(
            old.status,
            IntentStatus::Accepted,
            "then: no approval in an emergency"
        );
        let new = Command::SubmitIntent {
            key_scope: Some("agent".into()),
            intent: intent("new", "smoke"),
            at_ms: 1000,
            minute_of_day: 600,
            deadline_ms: None,
            emergency_limit: None,
            approval_timeout_ms: None,
        };
        s.apply(&new, at(5));
        assert_eq!(
            s.intents[&scoped_intent_id(Some("agent"), "new")].status,
            IntentStatus::AwaitingApproval
        );
    }

    /// The held part of a partly held emergency is dispatched only after an approval; the
    /// rest goes at once.
    #[test]
    fn a_partly_held_emergency_dispatches_the_rest_and_waits_for_approval() {
        let mut s = DomainState::default();
        register(&mut s, 1);
        let mut lamp = siren();
        lamp.id = "lamp".into();
        lamp.emergency_capable = false;
        lamp.actuators = [("light".to_string(), ["on".to_string()].into())].into();
        s.apply(
            &Command::RegisterDevice {
                device: lamp,
                by: None,
            },
            at(2),
        );
        let mut ask = Policy::new(
            "ask",
            Rule::RequireConfirmation {
                class: "ensure_safety".into(),
            },
        );
        ask.emergency_override = Some(true);
        s.apply(
            &Command::AddPolicy {
                policy: ask,
                by: None,
            },
            at(3),
        );
        let cmd = Command::SubmitIntent {
            key_scope: Some("agent".into()),
            intent: intent("fire", "smoke"),
            at_ms: 1000,
            minute_of_day: 600,
            deadline_ms: None,
            emergency_limit: None,
            approval_timeout_ms: None,
        };
        s.apply(&cmd, at(4));
        let id = scoped_intent_id(Some("agent"), "fire");
        assert_eq!(s.intents[&id].status, IntentStatus::Accepted);
        let now: Vec<String> = s
            .outbox()
            .iter()
            .map(|(_, a)| a.action.device.clone())
            .collect();
        assert_eq!(now, ["siren"], "only the emergency action goes now");
        assert!(s.intents[&id].awaits_approval());
        assert_eq!(
            s.apply(
                &Command::Approve {
                    intent_id: id.clone(),
                    by: "ana".into(),
                    at_ms: None,
                    reason: None,
                },
                at(5)
            ),
            Outcome::Done
        );
        let now: Vec<String> = s
            .outbox()
            .iter()
            .map(|(_, a)| a.action.device.clone())
            .collect();
        assert_eq!(now, ["siren", "lamp"]);
        assert!(matches!(
            s.apply(
                &Command::Approve {
                    intent_id: id,
                    by: "bob".into(),
                    at_ms: None,
                    reason: None,
                },
                at(6)
            ),
            Outcome::Refused { .. }
        ));
    }
}
