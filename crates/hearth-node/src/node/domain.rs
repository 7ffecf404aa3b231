//! Devices, intent classes, policies and intents: checked before anything is appended,
//! then proposed through the write path.

use hearth_core::approval::Decision;
use hearth_core::domain::Command as DomainCommand;
use hearth_core::domain::IntentRecord;
use hearth_core::domain::Outcome;
use hearth_core::intent::Adapter;
use hearth_core::intent::Device;
use hearth_core::intent::Intent;
use hearth_core::intent::IntentClass;
use hearth_core::policy::Policy;
use hearth_core::resolver::Plan;
use hearth_store::Applied;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::auth::Principal;
use crate::auth::client_name;
use crate::config::Role;

use super::{Node, NodeError};

/// The SHA-256 (lower-case hex) of a policy set as stored: what `policy apply` diffed against.
pub fn policies_sha256(policies: &[Policy]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(policies).unwrap_or_default(),
    ))
}

impl Node {
    /// Why this hub could not drive a device reached through `adapter`, if it could not.
    pub(super) fn unreachable_adapter(&self, adapter: &Adapter) -> Option<String> {
        match adapter {
            Adapter::Mqtt { .. } if self.config.mqtt_broker.is_none() => Some(format!(
                "mqtt: node {} has no mqtt_broker in its config, so it cannot reach this device \
                 while it leads",
                self.id
            )),
            _ => None,
        }
    }

    /// Registered devices this hub could not drive if it led (a hub that may lead one day
    /// says so in its status, loudly).
    pub fn device_warnings(&self) -> Vec<String> {
        if self.role == Role::Witness {
            return Vec::new();
        }
        let devices = self
            .sm
            .with_domain(|d| d.devices.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        devices
            .iter()
            .filter_map(|d| {
                self.unreachable_adapter(&d.adapter)
                    .map(|why| format!("device {}: {why}", d.id))
            })
            .collect()
    }

    /// Registers a device. The leader that registers it refuses an adapter it has not
    /// configured (an mqtt device without `mqtt_broker`): it would fail only when an
    /// emergency needs it. Other hubs lead later only if configured alike; one that is not
    /// names the device in its status (`device_warnings`). The audit entry names the
    /// authenticated `caller`, if any.
    pub async fn register_device(
        &self,
        device: Device,
        caller: Option<&Principal>,
    ) -> Result<Applied, NodeError> {
        device.validate_request().map_err(NodeError::from)?;
        let leads = self.raft.metrics().borrow_watched().current_leader == Some(self.id);
        if leads && let Some(why) = self.unreachable_adapter(&device.adapter) {
            return Err(NodeError::from(hearth_core::intent::FieldError::new(
                "adapter.kind",
                format!(
                    "{why} (it is the leader registering it); a device Hearth cannot reach \
                     fails only when an emergency needs it: add mqtt_broker to every hub's \
                     config (any hub may lead), restart them, then register again"
                ),
            )));
        }
        let by = client_name(caller).map(str::to_string);
        self.propose_checked(&DomainCommand::RegisterDevice { device, by })
            .await
    }

    /// Removes a registered device: checked against the registry on the leader before anything
    /// is appended (an unknown id is `NotFound`, a device a policy names is refused), then one
    /// `RemoveDevice` entry naming the `caller` ("operator" without client authentication).
    /// Its pending and held actions end `CANCELLED`. Returns the entry's index, who removed
    /// it, and the intents it cancelled. A follower answers `NotLeader` (the API forwards).
    pub async fn remove_device(
        &self,
        id: &str,
        caller: Option<&Principal>,
    ) -> Result<(u64, String, Vec<String>), NodeError> {
        hearth_core::intent::check_id("id", id).map_err(NodeError::from)?;
        let by = client_name(caller).unwrap_or("operator").to_string();
        if self.is_leader() {
            let mut devices: std::collections::BTreeMap<String, Device> = self
                .devices()?
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect();
            if devices.remove(id).is_none() {
                return Err(NodeError::NotFound(format!(
                    "no device {id:?} is registered; `hearth device list` shows the registered ones"
                )));
            }
            let classes = self
                .classes()?
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect();
            if let Err(e) =
                hearth_core::policy::check_references(&self.policies()?, &devices, &classes)
            {
                return Err(NodeError::Refused(format!(
                    "device {id} cannot be removed while a policy names it: {}; change or remove \
                     that policy first (`hearth policy remove ID`)",
                    e.problem
                )));
            }
        }
        let a = self
            .propose(&DomainCommand::RemoveDevice {
                id: id.to_string(),
                by: by.clone(),
            })
            .await?;
        match a.outcome {
            Some(Outcome::Removed { cancelled }) => Ok((a.index, by, cancelled)),
            // Removed by someone else between the check and the commit.
            Some(Outcome::Refused { reason }) => Err(NodeError::NotFound(reason)),
            other => Err(NodeError::Fatal(format!(
                "unexpected outcome of a device removal: {other:?}"
            ))),
        }
    }

    pub async fn apply_class(
        &self,
        class: IntentClass,
        caller: Option<&Principal>,
    ) -> Result<Applied, NodeError> {
        class.validate().map_err(NodeError::from)?;
        let by = client_name(caller).map(str::to_string);
        self.propose_checked(&DomainCommand::ApplyClass { class, by })
            .await
    }

    /// Replaces the policy set. Refused with the field named: a malformed policy, a duplicate
    /// id, and (checked here on the leader, against its registry) a device, class or tag that
    /// does not exist; with `expect`, a set in force other than the one the client diffed.
    pub async fn apply_policies(
        &self,
        policies: Vec<Policy>,
        expect: Option<&str>,
        caller: Option<&Principal>,
    ) -> Result<Applied, NodeError> {
        hearth_core::policy::validate_set(&policies).map_err(NodeError::from)?;
        if self.is_leader() {
            self.check_policy_refs(&policies)?;
            if let Some(want) = expect {
                let now = self.sm.with_domain(|d| policies_sha256(&d.policies))?;
                if now != want {
                    return Err(NodeError::Refused(
                        "the policies in force changed since the diff was shown; run the command again to see the new diff".into(),
                    ));
                }
            }
        }
        let by = client_name(caller).map(str::to_string);
        self.propose_checked(&DomainCommand::ApplyPolicies { policies, by })
            .await
    }

    /// Adds one policy (refused if its id is taken), checked like [`Node::apply_policies`].
    pub async fn add_policy(
        &self,
        policy: Policy,
        caller: Option<&Principal>,
    ) -> Result<Applied, NodeError> {
        hearth_core::policy::validate_set(std::slice::from_ref(&policy))
            .map_err(NodeError::from)?;
        if self.is_leader() {
            if self
                .sm
                .with_domain(|d| d.policies.iter().any(|p| p.id == policy.id))?
            {
                return Err(NodeError::Invalid {
                    field: "policies[0].id",
                    problem: format!(
                        "a policy {:?} exists; remove it first (`hearth policy remove {}`)",
                        policy.id, policy.id
                    ),
                });
            }
            self.check_policy_refs(std::slice::from_ref(&policy))?;
        }
        let by = client_name(caller).map(str::to_string);
        self.propose_checked(&DomainCommand::AddPolicy { policy, by })
            .await
    }

    /// Removes one policy by id (refused if there is none).
    pub async fn remove_policy(
        &self,
        id: &str,
        caller: Option<&Principal>,
    ) -> Result<Applied, NodeError> {
        hearth_core::intent::check_id("id", id).map_err(NodeError::from)?;
        let by = client_name(caller).map(str::to_string);
        self.propose_checked(&DomainCommand::RemovePolicy {
            id: id.to_string(),
            by,
        })
        .await
    }

    pub(super) fn check_policy_refs(&self, policies: &[Policy]) -> Result<(), NodeError> {
        self.sm
            .with_domain(|d| {
                hearth_core::policy::check_references(policies, &d.devices, &d.classes)
            })?
            .map_err(NodeError::from)
    }

    /// The plan an intent would get now, executing nothing and appending nothing.
    pub fn explain(&self, intent: &Intent) -> Result<Plan, NodeError> {
        intent.validate_request().map_err(NodeError::from)?;
        // Read the clock first: it reads the domain state too (no nested lock).
        let clock = self.clock();
        self.sm
            .with_domain(|d| d.plan(intent, clock))?
            .map_err(NodeError::from)
    }

    /// Submits an intent. A retry with the same key and body returns the original intent and
    /// runs nothing again; the same key with another body is refused. Bad requests (unknown
    /// class, malformed fields, oversized context) are refused before anything is appended.
    #[tracing::instrument(skip_all, fields(node = self.id, intent = tracing::field::Empty))]
    pub async fn submit_intent(&self, intent: Intent) -> Result<IntentRecord, NodeError> {
        intent.validate_request().map_err(NodeError::from)?;
        // Keys are scoped to the source (an agent's is its token name): another source's key
        // neither collides with this one nor reveals its intent.
        let key_scope = Some(intent.source.clone());
        let id =
            hearth_core::domain::scoped_intent_id(key_scope.as_deref(), &intent.idempotency_key);
        tracing::Span::current().record("intent", id.as_str());
        let hash = hearth_core::domain::body_hash(&intent);
        let known = self
            .sm
            .with_domain(|d| d.existing_for_key(&intent, key_scope.as_deref()).cloned())?;
        match known {
            Some(r) if r.body_hash == hash => return Ok(r),
            Some(r) => return Err(NodeError::KeyConflict(r.id)),
            None => {}
        }
        // Only the leader plans: a follower's state may lag (a device registered a moment ago
        // is not yet applied here), so it would refuse what the leader accepts.
        self.require_leader()?;
        let clock = self.stamp()?;
        let emergency_limit = Some(self.config.limits.emergency_limit());
        if let Some(why) = self
            .sm
            .with_domain(|d| d.emergency_limited(&intent, clock.now_ms, emergency_limit))?
        {
            return Err(NodeError::Refused(why));
        }
        let class_deadline = self.sm.with_domain(|d| {
            d.plan(&intent, clock)
                .map(|_| d.classes.get(&intent.class).and_then(|c| c.deadline_ms))
        })?;
        let class_deadline = class_deadline.map_err(NodeError::from)?;
        // At most what the client is told: after the write timeout it hears "not confirmed".
        let wait = self.config.timing.write_timeout_ms;
        let deadline_ms = hearth_core::clock::deadline(class_deadline, wait, wait);
        let a = self
            .propose(&DomainCommand::SubmitIntent {
                intent,
                at_ms: clock.now_ms,
                minute_of_day: clock.minute_of_day,
                deadline_ms: Some(deadline_ms),
                key_scope,
                emergency_limit,
                // A held intent is denied by itself after its class's approval timeout, or
                // this default (the household reads it in docs/INTENTS.md).
                approval_timeout_ms: Some(hearth_core::approval::DEFAULT_APPROVAL_TIMEOUT_MS),
            })
            .await?;
        let id = match a.outcome {
            Some(Outcome::Accepted { intent_id }) | Some(Outcome::Duplicate { intent_id }) => {
                intent_id
            }
            Some(Outcome::KeyConflict { intent_id }) => {
                return Err(NodeError::KeyConflict(intent_id));
            }
            Some(Outcome::Refused { reason }) => return Err(NodeError::Refused(reason)),
            other => return Err(NodeError::Fatal(format!("unexpected outcome {other:?}"))),
        };
        self.get_intent(&id)?
            .ok_or_else(|| NodeError::Fatal(format!("intent {id} vanished after commit")))
    }

    pub fn get_intent(&self, id: &str) -> Result<Option<IntentRecord>, NodeError> {
        self.serving_chain()?;
        Ok(self.sm.with_domain(|d| d.intents.get(id).cloned())?)
    }

    /// Approves an intent that waits for it. The audit entry names the authenticated
    /// `caller`, or without client authentication the name `by` the client typed.
    pub async fn approve(
        &self,
        intent_id: &str,
        by: &str,
        caller: Option<&Principal>,
    ) -> Result<IntentRecord, NodeError> {
        self.decide(intent_id, Decision::Approve, by, None, caller)
            .await
    }

    /// Approves (`reason` optional) or denies (`reason` required) an intent that waits for a
    /// person: one `Approve` or `Deny` entry naming the authenticated `caller` (without client
    /// authentication, the name `by` the client typed). On the leader, whose applied state is
    /// current, what `apply` would refuse — an unknown id, an intent that does not wait, one
    /// already approved, denied or expired — is refused before anything is appended, by the
    /// same rules (`hearth_core::approval::check`). A follower answers `NotLeader` (the API
    /// forwards). Who may decide is the API's to check.
    #[tracing::instrument(skip_all, fields(node = self.id, intent = intent_id, decision = ?decision))]
    pub async fn decide(
        &self,
        intent_id: &str,
        decision: Decision,
        by: &str,
        reason: Option<&str>,
        caller: Option<&Principal>,
    ) -> Result<IntentRecord, NodeError> {
        hearth_core::domain::check_intent_id("id", intent_id).map_err(NodeError::from)?;
        // A token's principal is named as the tokens file spells it; a typed name is checked.
        let by = match client_name(caller) {
            Some(name) => name.to_string(),
            None => {
                hearth_core::intent::check_id("by", by).map_err(NodeError::from)?;
                by.to_string()
            }
        };
        let reason = reason.filter(|r| !r.is_empty() || decision == Decision::Deny);
        if let Some(r) = reason {
            hearth_core::approval::check_reason("reason", r).map_err(NodeError::from)?;
        } else if decision == Decision::Deny {
            return Err(NodeError::Invalid {
                field: "reason",
                problem: "say why the intent is denied (it goes into the chain)".into(),
            });
        }
        self.require_leader()?;
        let at_ms = self.stamp()?.now_ms;
        let known = self.get_intent(intent_id)?;
        hearth_core::approval::check(intent_id, known.as_ref(), decision, Some(at_ms))
            .map_err(NodeError::Refused)?;
        let cmd = match decision {
            Decision::Approve => DomainCommand::Approve {
                intent_id: intent_id.to_string(),
                by,
                at_ms: Some(at_ms),
                reason: reason.map(str::to_string),
            },
            Decision::Deny => DomainCommand::Deny {
                intent_id: intent_id.to_string(),
                by,
                reason: reason.unwrap_or_default().to_string(),
                at_ms,
            },
        };
        self.propose_checked(&cmd).await?;
        self.get_intent(intent_id)?
            .ok_or_else(|| NodeError::Fatal(format!("intent {intent_id} vanished after commit")))
    }

    /// The intents that wait for a person, oldest first (`agent`: only that agent's), and
    /// the time this node reads as now (its wall clock, never before the chain's time), to
    /// tell how long each has left. Served from this node's applied state (a follower's may
    /// lag the leader's by a moment, as every read).
    pub fn pending(&self, agent: Option<&str>) -> Result<(Vec<IntentRecord>, u64), NodeError> {
        self.serving_chain()?;
        let list = self.sm.with_domain(|d| {
            hearth_core::approval::pending(d)
                .into_iter()
                .filter(|r| agent.is_none_or(|a| r.intent.source == a))
                .cloned()
                .collect()
        })?;
        Ok((list, self.clock().now_ms))
    }

    /// Re-fences devices after the cluster was re-formed (an admin's audited act): appends a
    /// `Refence` entry naming who and why; the dispatcher then sends each device a
    /// `hearth.refence` command under the current leadership, which makes a device that
    /// remembers an older cluster's higher token accept this cluster's commands again.
    /// `devices` empty and `all`: every registered device.
    pub async fn refence(
        &self,
        devices: Vec<String>,
        all: bool,
        reason: &str,
        caller: Option<&Principal>,
    ) -> Result<IntentRecord, NodeError> {
        if reason.trim().is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
            return Err(NodeError::Invalid {
                field: "reason",
                problem: "say why in 1-500 printable characters".into(),
            });
        }
        let known: Vec<String> = self
            .sm
            .with_domain(|d| d.devices.keys().cloned().collect())?;
        let devices = match (all, devices.is_empty()) {
            (true, true) => known.clone(),
            (false, false) => devices,
            (true, false) => {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: "name devices or say --all, not both".into(),
                });
            }
            (false, true) => {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: "name the devices to re-fence, or --all".into(),
                });
            }
        };
        if devices.is_empty() {
            return Err(NodeError::Refused("no device is registered".into()));
        }
        for d in &devices {
            hearth_core::intent::check_id("devices", d).map_err(NodeError::from)?;
            if !known.contains(d) {
                return Err(NodeError::Invalid {
                    field: "devices",
                    problem: format!("no device {d:?} is registered"),
                });
            }
        }
        let by = client_name(caller).unwrap_or("operator").to_string();
        let at_ms = self.stamp()?.now_ms;
        let a = self
            .propose_checked(&DomainCommand::Refence {
                devices,
                by,
                reason: reason.to_string(),
                at_ms,
            })
            .await?;
        let id = hearth_core::domain::DomainState::refence_id(a.index);
        self.get_intent(&id)?
            .ok_or_else(|| NodeError::Fatal(format!("re-fence record {id} missing after commit")))
    }
}
