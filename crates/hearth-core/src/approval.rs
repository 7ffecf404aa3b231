//! Approvals a person gives (issue 17 item 3): which held intents wait, for what and until
//! when; approving, denying, and the expiry that denies a held intent by itself.
//!
//! Pure functions over the domain state. [`crate::domain::DomainState::apply`] calls them for
//! `Approve`, `Deny` and `ExpireApproval`, and the leader's expiry task asks [`due`] which held
//! intents to expire at the time it stamps (its wall clock, never before the chain's time).
//! The rules:
//!
//! - An intent held for approval by an entry that carries an approval timeout gets a [`Hold`]:
//!   the policies that hold it and when its approval expires (its class's
//!   `approval_timeout_ms`, else the default the leader wrote into the entry). Entries older
//!   than expiries carry none and never expire, so a replay gives the state it gave then.
//! - Approve and deny are accepted only while the intent waits ([`check`]): one that is not
//!   held, already approved, denied, or expired is refused, naming who decided, and nothing
//!   changes. An approval stamped after the expiry is refused even before the expiry entry is
//!   in the chain: every node decides it from the entries alone.
//! - A denial ends every held action `DENIED` with who and why ([`deny`]); an intent whose
//!   every action was denied is `Denied`, never done.
//!
//! Not here: who may decide (the node's roles), the clock, or the task that appends expiries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{ActionOutcome, DomainState, IntentRecord, IntentStatus};
use crate::intent::{FieldError, IntentClass};
use crate::policy::{Policy, Rule};
use crate::resolver::Plan;

/// How long a held intent waits when its class says nothing: long enough for a person to
/// look at their phone, short enough that an agent's stale ask does not unlock a door later.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 5 * 60_000;
/// The shortest approval timeout a class may set (a second: tests, and "now or never").
pub const MIN_APPROVAL_TIMEOUT_MS: u64 = 1_000;
/// The longest (a week): a held action is not a standing order.
pub const MAX_APPROVAL_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// The longest reason a person may give (bytes).
pub const MAX_REASON: usize = 500;
/// The principal of an expiry: nobody decided, the cluster did.
pub const SYSTEM: &str = "system";

/// Why and until when an intent waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The `require_confirmation` policies that hold it, by id.
    pub policies: Vec<String>,
    /// Chain time of the entry that held it (ms).
    pub since_ms: u64,
    pub timeout_ms: u64,
    /// From this chain time on, the approval has expired: the leader denies it by itself.
    pub expires_at_ms: u64,
}

/// A person's (or the expiry's) denial of a held intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The principal that denied it ([`SYSTEM`] for an expiry).
    pub by: String,
    pub reason: String,
    /// Chain time of the entry that denied it.
    pub at_ms: u64,
    /// Denied by the expiry, not by a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// What a person decides about a held intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// Checks an approval timeout a class sets.
pub fn check_timeout(field: &str, ms: u64) -> Result<(), FieldError> {
    if (MIN_APPROVAL_TIMEOUT_MS..=MAX_APPROVAL_TIMEOUT_MS).contains(&ms) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{ms} ms; an approval may wait from {MIN_APPROVAL_TIMEOUT_MS} ms to \
                 {MAX_APPROVAL_TIMEOUT_MS} ms (a week)"
            ),
        ))
    }
}

/// Checks the reason a person gives: 1-[`MAX_REASON`] bytes of printable text, not blank.
pub fn check_reason(field: &str, reason: &str) -> Result<(), FieldError> {
    if reason.trim().is_empty() {
        return Err(FieldError::new(field, "say why (it goes into the chain)"));
    }
    if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_REASON} bytes of printable text"),
        ));
    }
    Ok(())
}

/// `1500 ms`, `90 s`, `5 min`, `2 h 30 min`: a duration as a person reads it.
pub fn human_duration(ms: u64) -> String {
    if ms < 10_000 && !ms.is_multiple_of(1000) {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    if s < 120 || (s < 3600 && !s.is_multiple_of(60)) {
        return format!("{s} s");
    }
    let m = s / 60;
    if m < 120 {
        return format!("{m} min");
    }
    match m % 60 {
        0 => format!("{} h", m / 60),
        r => format!("{} h {r} min", m / 60),
    }
}

/// The ids of the `require_confirmation` policies on `class`.
pub fn confirming(policies: &[Policy], class: &str) -> Vec<String> {
    policies
        .iter()
        .filter(|p| matches!(&p.rule, Rule::RequireConfirmation { class: c } if c == class))
        .map(|p| p.id.clone())
        .collect()
}

/// The hold a newly planned intent gets at chain time `now_ms`: `Some` when it waits for an
/// approval (wholly, or some of its actions) and its entry carries a default timeout
/// (`default_ms`; `None` in entries older than expiries: no hold, no expiry).
pub fn hold_for(
    policies: &[Policy],
    class: Option<&IntentClass>,
    plan: &Plan,
    status: IntentStatus,
    now_ms: u64,
    default_ms: Option<u64>,
) -> Option<Hold> {
    let default_ms = default_ms?;
    let held = status == IntentStatus::AwaitingApproval
        || (status == IntentStatus::Accepted && plan.actions.iter().any(|a| a.needs_approval));
    if !held {
        return None;
    }
    let timeout_ms = class
        .and_then(|c| c.approval_timeout_ms)
        .unwrap_or(default_ms);
    Some(Hold {
        policies: confirming(policies, &plan.class),
        since_ms: now_ms,
        timeout_ms,
        expires_at_ms: now_ms.saturating_add(timeout_ms),
    })
}

/// Whether `decision` on intent `id` (`r`, if it exists) is accepted at chain time `now_ms`
/// (`None`: an approval from an entry older than stamps). The refusal says what the intent is
/// and who decided it. The leader asks this before appending; `apply` asks it again.
pub fn check(
    id: &str,
    r: Option<&IntentRecord>,
    decision: Decision,
    now_ms: Option<u64>,
) -> Result<(), String> {
    let Some(r) = r else {
        return Err(format!("no intent {id}"));
    };
    if let Some(d) = &r.denied {
        return Err(if d.expired {
            format!(
                "intent {id} no longer waits for approval: {} (denied by itself at chain time {} \
                 ms); nothing changed. Send the intent again to ask anew",
                d.reason, d.at_ms
            )
        } else {
            format!(
                "intent {id} was already denied by {} ({}); nothing changed",
                d.by, d.reason
            )
        });
    }
    if let Some(by) = &r.approved_by
        && r.plan.needs_confirmation
    {
        return Err(format!(
            "intent {id} was already approved by {by}; nothing changed"
        ));
    }
    if !r.awaits_approval() {
        return Err(format!(
            "intent {id} does not wait for approval (it is {:?})",
            r.status
        ));
    }
    if decision == Decision::Approve
        && let (Some(now), Some(h)) = (now_ms, &r.hold)
        && now >= h.expires_at_ms
    {
        return Err(format!(
            "intent {id}'s approval expired at chain time {} ms ({} after it was held): it is \
             denied by itself; nothing was approved. Send the intent again to ask anew",
            h.expires_at_ms,
            human_duration(h.timeout_ms)
        ));
    }
    Ok(())
}

/// Whether an expiry of `r` is due at chain time `now_ms`: it waits, and its hold expired.
pub fn is_due(r: &IntentRecord, now_ms: u64) -> bool {
    r.denied.is_none()
        && r.awaits_approval()
        && r.hold.as_ref().is_some_and(|h| now_ms >= h.expires_at_ms)
}

/// The held intents whose approval has expired at chain time `now_ms`, in entry order: what
/// the leader's expiry task appends an `ExpireApproval` for.
pub fn due(intents: &BTreeMap<String, IntentRecord>, now_ms: u64) -> Vec<String> {
    let mut v: Vec<&IntentRecord> = intents.values().filter(|r| is_due(r, now_ms)).collect();
    v.sort_by_key(|r| r.index);
    v.into_iter().map(|r| r.id.clone()).collect()
}

/// The intents that wait for a person now, in entry order (oldest first).
pub fn pending(state: &DomainState) -> Vec<&IntentRecord> {
    let mut v: Vec<&IntentRecord> = state
        .intents
        .values()
        .filter(|r| r.denied.is_none() && r.awaits_approval())
        .collect();
    v.sort_by_key(|r| r.index);
    v
}

/// The reason an expiry entry gives.
pub fn expiry_reason(hold: &Hold) -> String {
    let policy = if hold.policies.is_empty() {
        String::new()
    } else {
        format!(" (policy {})", hold.policies.join(", "))
    };
    format!(
        "approval expired after {}: nobody approved or denied it{policy}",
        human_duration(hold.timeout_ms)
    )
}

/// One action a held intent waits to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAction {
    pub id: String,
    pub device: String,
    pub capability: String,
    pub state: String,
}

/// What a held intent waits for, as an agent and a person read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub actions: Vec<HeldAction>,
    pub policies: Vec<String>,
    /// Absent for intents held before expiries existed: they wait until someone decides.
    pub expires_at_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// One sentence: who must act, on what, why, and until when.
    pub text: String,
}

/// The actions of `r` held for approval (none once it is decided).
pub fn held_actions(r: &IntentRecord) -> Vec<&crate::domain::ActionRecord> {
    let whole = r.status == IntentStatus::AwaitingApproval;
    r.actions
        .iter()
        .filter(|a| a.outcome.is_none() && (whole || a.action.needs_approval))
        .collect()
}

/// What `r` waits for, or `None` when it does not wait for a person.
pub fn waiting_for(r: &IntentRecord) -> Option<Waiting> {
    if r.denied.is_some() || !r.awaits_approval() {
        return None;
    }
    let actions: Vec<HeldAction> = held_actions(r)
        .into_iter()
        .map(|a| HeldAction {
            id: a.id.clone(),
            device: a.action.device.clone(),
            capability: a.action.capability.clone(),
            state: a.action.state.clone(),
        })
        .collect();
    let policies = r
        .hold
        .as_ref()
        .map(|h| h.policies.clone())
        .unwrap_or_default();
    let what = if actions.is_empty() {
        "the intent (it acts on no device; its sensors are read once approved)".to_string()
    } else {
        actions
            .iter()
            .map(|a| format!("{} {} -> {}", a.device, a.capability, a.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = if policies.is_empty() {
        String::new()
    } else {
        format!(" (policy {})", policies.join(", "))
    };
    let until = match &r.hold {
        Some(h) => format!(
            "; denied by itself {} after it was held (at chain time {} ms) unless someone decides",
            human_duration(h.timeout_ms),
            h.expires_at_ms
        ),
        None => "; it waits until someone decides".to_string(),
    };
    Some(Waiting {
        text: format!(
            "waits for approval by an operator (`hearth intent approve {}` or `deny`) of: \
             {what}{why}{until}",
            r.id
        ),
        actions,
        policies,
        expires_at_ms: r.hold.as_ref().map(|h| h.expires_at_ms),
        timeout_ms: r.hold.as_ref().map(|h| h.timeout_ms),
    })
}

/// Ends a held intent as denied: every held action `DENIED` naming who and why, the others
/// (an emergency's actions that went at once) as they are. The intent is finished when every
/// action has an outcome: `Denied` if every one was denied, else failed.
pub fn deny(r: &mut IntentRecord, denial: Denial) {
    let whole = r.status == IntentStatus::AwaitingApproval;
    let said = format!("denied by {}: {}", denial.by, denial.reason);
    for a in r
        .actions
        .iter_mut()
        .filter(|a| a.outcome.is_none() && (whole || a.action.needs_approval))
    {
        a.outcome = Some(ActionOutcome::Denied {
            reason: said.clone(),
        });
    }
    if whole && r.actions.is_empty() {
        r.status = IntentStatus::Denied;
    } else if r.actions.iter().all(|a| a.outcome.is_some()) {
        r.status = crate::domain::final_status(&r.actions);
    } else {
        // Some of an emergency's actions are still under way: the dispatcher finishes them.
        r.status = IntentStatus::Accepted;
    }
    r.denied = Some(denial);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_says_them() {
        for (ms, want) in [
            (1500, "1500 ms"),
            (1000, "1 s"),
            (90_000, "90 s"),
            (300_000, "5 min"),
            (330_000, "330 s"),
            (3_600_000, "60 min"),
            (9_000_000, "2 h 30 min"),
            (7_200_000, "2 h"),
        ] {
            assert_eq!(human_duration(ms), want, "{ms}");
        }
    }

    #[test]
    fn reasons_and_timeouts_are_checked() {
        for bad in ["", "   ", "a\nb", &"x".repeat(MAX_REASON + 1)] {
            let e = check_reason("reason", bad).unwrap_err();
            assert_eq!(e.field, "reason", "{bad:?}");
        }
        assert!(check_reason("reason", "not at night").is_ok());
        assert!(check_reason("reason", &"x".repeat(MAX_REASON)).is_ok());
        for bad in [0, 999, MAX_APPROVAL_TIMEOUT_MS + 1] {
            assert!(check_timeout("approval_timeout_ms", bad).is_err(), "{bad}");
        }
        for ok in [1000, DEFAULT_APPROVAL_TIMEOUT_MS, MAX_APPROVAL_TIMEOUT_MS] {
            assert!(check_timeout("approval_timeout_ms", ok).is_ok(), "{ok}");
        }
    }
}

#[cfg(test)]
mod state_tests {
    //! The approval rules as `apply` runs them: every decision on every kind of held intent.

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::domain::{Command, EntryPos, FencingToken, Outcome, scoped_intent_id};
    use crate::intent::{Adapter, Device, Intent, Location, Urgency};

    const T0: u64 = 1_000_000;

    fn door(id: &str, emergency_unlock: bool) -> Device {
        let lock: BTreeSet<String> = ["locked".to_string(), "unlocked".to_string()].into();
        Device {
            id: id.into(),
            name: id.into(),
            location: Location::parse("l", "home/hall").unwrap(),
            tags: BTreeSet::new(),
            sensors: BTreeSet::new(),
            actuators: [("lock".to_string(), lock)].into(),
            emergency_capable: true,
            emergency_actions: if emergency_unlock {
                [("lock".to_string(), ["unlocked".to_string()].into())].into()
            } else {
                Default::default()
            },
            adapter: Adapter::Sim {
                address: "local".into(),
            },
        }
    }

    fn at(index: u64) -> EntryPos {
        EntryPos {
            index,
            term: 1,
            leader: 1,
        }
    }

    fn ask(emergency_override: Option<bool>) -> Policy {
        let mut p = Policy::new(
            "ask",
            Rule::RequireConfirmation {
                class: "control_access".into(),
            },
        );
        p.emergency_override = emergency_override;
        p
    }

    /// A household with two doors and the `ask` policy on `control_access`.
    fn house(emergency_override: Option<bool>) -> DomainState {
        let mut s = DomainState::default();
        for d in [door("front", false), door("back", true)] {
            s.apply(
                &Command::RegisterDevice {
                    device: d,
                    by: None,
                },
                at(1),
            );
        }
        s.apply(
            &Command::AddPolicy {
                policy: ask(emergency_override),
                by: None,
            },
            at(2),
        );
        s
    }

    fn unlock(key: &str, urgency: Urgency) -> Intent {
        Intent {
            class: "control_access".into(),
            urgency,
            subject: "let the plumber in".into(),
            location: Location::parse("l", "home").unwrap(),
            context: BTreeMap::from([("state".to_string(), "unlocked".to_string())]),
            source: "agent".into(),
            idempotency_key: key.into(),
        }
    }

    fn submit_with(i: Intent, timeout: Option<u64>) -> Command {
        Command::SubmitIntent {
            key_scope: Some(i.source.clone()),
            intent: i,
            at_ms: T0,
            minute_of_day: 600,
            deadline_ms: Some(5000),
            emergency_limit: None,
            approval_timeout_ms: timeout,
        }
    }

    /// Submits a held unlock of both doors (default timeout) at index 3; its id.
    fn held(s: &mut DomainState, key: &str) -> String {
        let out = s.apply(
            &submit_with(
                unlock(key, Urgency::Info),
                Some(DEFAULT_APPROVAL_TIMEOUT_MS),
            ),
            at(3),
        );
        let Outcome::Accepted { intent_id } = out else {
            panic!("{out:?}")
        };
        assert_eq!(s.intents[&intent_id].status, IntentStatus::AwaitingApproval);
        intent_id
    }

    fn deny(id: &str, by: &str, reason: &str, at_ms: u64) -> Command {
        Command::Deny {
            intent_id: id.into(),
            by: by.into(),
            reason: reason.into(),
            at_ms,
        }
    }

    fn approve(id: &str, by: &str, at_ms: u64) -> Command {
        Command::Approve {
            intent_id: id.into(),
            by: by.into(),
            at_ms: Some(at_ms),
            reason: Some("I know her".into()),
        }
    }

    fn expire(id: &str, at_ms: u64) -> Command {
        Command::ExpireApproval {
            intent_id: id.into(),
            node: 1,
            at_ms,
        }
    }

    /// Applies `cmd` and checks it is refused with a reason containing every one of `says`,
    /// changing nothing.
    fn refused(s: &mut DomainState, cmd: &Command, says: &[&str]) {
        let before = s.clone();
        match s.apply(cmd, at(99)) {
            Outcome::Refused { reason } => {
                for w in says {
                    assert!(reason.contains(w), "{cmd:?}: {reason:?} lacks {w:?}");
                }
            }
            other => panic!("{cmd:?} was not refused: {other:?}"),
        }
        assert_eq!(*s, before, "a refused {cmd:?} changed the state");
    }

    #[test]
    fn a_held_intent_expires_after_its_class_timeout_or_the_entrys_default() {
        let mut s = house(None);
        let id = held(&mut s, "k1");
        let h = s.intents[&id].hold.clone().expect("a hold");
        assert_eq!(h.policies, ["ask"]);
        assert_eq!(h.since_ms, T0);
        assert_eq!(h.timeout_ms, DEFAULT_APPROVAL_TIMEOUT_MS);
        assert_eq!(h.expires_at_ms, T0 + DEFAULT_APPROVAL_TIMEOUT_MS);
        // The class's own setting wins over the entry's default.
        let mut class = s.classes["control_access"].clone();
        class.approval_timeout_ms = Some(2000);
        s.apply(&Command::ApplyClass { class, by: None }, at(4));
        s.apply(
            &submit_with(
                unlock("k2", Urgency::Info),
                Some(DEFAULT_APPROVAL_TIMEOUT_MS),
            ),
            at(5),
        );
        let h2 = s.intents[&scoped_intent_id(Some("agent"), "k2")]
            .hold
            .clone()
            .unwrap();
        assert_eq!((h2.timeout_ms, h2.expires_at_ms), (2000, T0 + 2000));
        // An entry older than expiries (no default in it) holds without an expiry, forever.
        s.apply(&submit_with(unlock("k3", Urgency::Info), None), at(6));
        let old = &s.intents[&scoped_intent_id(Some("agent"), "k3")];
        assert_eq!(old.status, IntentStatus::AwaitingApproval);
        assert!(old.hold.is_none());
        assert!(!is_due(old, u64::MAX));
        // An intent that is not held gets no hold.
        let mut free = house(None);
        free.apply(
            &Command::RemovePolicy {
                id: "ask".into(),
                by: None,
            },
            at(3),
        );
        free.apply(
            &submit_with(
                unlock("k4", Urgency::Info),
                Some(DEFAULT_APPROVAL_TIMEOUT_MS),
            ),
            at(4),
        );
        assert!(
            free.intents[&scoped_intent_id(Some("agent"), "k4")]
                .hold
                .is_none()
        );
    }

    #[test]
    fn a_denied_intent_sends_nothing_and_reads_denied_naming_who_and_why() {
        let mut s = house(None);
        let id = held(&mut s, "k");
        assert!(s.outbox().is_empty(), "held: nothing to send");
        assert_eq!(pending(&s).len(), 1);
        assert_eq!(
            s.apply(&deny(&id, "ana", "not today", T0 + 10), at(4)),
            Outcome::Done
        );
        let r = &s.intents[&id];
        assert_eq!(r.status, IntentStatus::Denied);
        assert!(r.status.is_final());
        assert_eq!(r.actions.len(), 2);
        for a in &r.actions {
            assert_eq!(
                a.outcome,
                Some(ActionOutcome::Denied {
                    reason: "denied by ana: not today".into()
                })
            );
            assert!(!a.outcome.as_ref().unwrap().applied());
        }
        assert_eq!(
            r.denied,
            Some(Denial {
                by: "ana".into(),
                reason: "not today".into(),
                at_ms: T0 + 10,
                expired: false
            })
        );
        assert!(r.approved_by.is_none());
        assert!(s.outbox().is_empty(), "a denied action is never sent");
        assert!(pending(&s).is_empty());
        assert!(waiting_for(r).is_none());
        assert!(
            due(&s.intents, u64::MAX).is_empty(),
            "a denied intent never expires"
        );
        assert_eq!(
            s.rates.chain_ms,
            T0 + 10,
            "a stamped entry moves chain time"
        );
        assert!(s.pending_for_device("front").is_empty());
    }

    #[test]
    fn decisions_on_an_intent_that_does_not_wait_are_refused_and_change_nothing() {
        let mut s = house(None);
        let id = held(&mut s, "k");
        // Unknown ids, and a deny without a reason.
        refused(
            &mut s,
            &deny("i-0000000000000000", "ana", "x", T0),
            &["no intent"],
        );
        refused(
            &mut s,
            &approve("i-0000000000000000", "ana", T0),
            &["no intent"],
        );
        refused(&mut s, &deny(&id, "ana", "", T0), &["reason"]);
        refused(&mut s, &deny(&id, "ana", "  ", T0), &["reason"]);
        // Approved: approving again, or denying, is refused naming the approver.
        assert_eq!(s.apply(&approve(&id, "ana", T0 + 5), at(4)), Outcome::Done);
        assert_eq!(
            s.intents[&id].approval_reason.as_deref(),
            Some("I know her")
        );
        assert_eq!(s.outbox().len(), 2);
        refused(
            &mut s,
            &approve(&id, "bob", T0 + 6),
            &["already approved by ana"],
        );
        refused(
            &mut s,
            &deny(&id, "bob", "no", T0 + 6),
            &["already approved by ana"],
        );
        refused(
            &mut s,
            &expire(&id, u64::MAX / 2),
            &["already approved by ana"],
        );
        // Denied: approving, or denying again (a retry), is refused naming the denier.
        let mut s = house(None);
        let id = held(&mut s, "k");
        s.apply(&deny(&id, "ana", "no", T0 + 5), at(4));
        refused(
            &mut s,
            &approve(&id, "bob", T0 + 6),
            &["already denied by ana", "no"],
        );
        refused(
            &mut s,
            &deny(&id, "ana", "no", T0 + 6),
            &["already denied by ana"],
        );
        refused(
            &mut s,
            &expire(&id, u64::MAX / 2),
            &["already denied by ana"],
        );
        // Finished without ever waiting: refused as before.
        let mut s = house(None);
        s.apply(
            &Command::RemovePolicy {
                id: "ask".into(),
                by: None,
            },
            at(3),
        );
        let Outcome::Accepted { intent_id: free } = s.apply(
            &submit_with(
                unlock("f", Urgency::Info),
                Some(DEFAULT_APPROVAL_TIMEOUT_MS),
            ),
            at(4),
        ) else {
            panic!()
        };
        refused(
            &mut s,
            &deny(&free, "ana", "no", T0),
            &["does not wait for approval"],
        );
        refused(
            &mut s,
            &approve(&free, "ana", T0),
            &["does not wait for approval"],
        );
    }

    #[test]
    fn an_approval_expires_at_its_time_and_not_a_millisecond_before() {
        let mut s = house(None);
        let id = held(&mut s, "k");
        let t = T0 + DEFAULT_APPROVAL_TIMEOUT_MS;
        assert!(due(&s.intents, t - 1).is_empty());
        refused(
            &mut s,
            &expire(&id, t - 1),
            &["expires at chain time", "not yet"],
        );
        assert_eq!(due(&s.intents, t), vec![id.clone()]);
        // An approval stamped at or after the expiry is refused, though no expiry entry is in.
        refused(
            &mut s,
            &approve(&id, "ana", t),
            &["expired", "nothing was approved"],
        );
        // One stamped earlier than the chain's time counts at the chain's time.
        s.rates.chain_ms = t;
        refused(&mut s, &approve(&id, "ana", T0 + 1), &["expired"]);
        s.rates.chain_ms = T0;
        assert_eq!(s.apply(&expire(&id, t), at(4)), Outcome::Done);
        let r = &s.intents[&id];
        assert_eq!(r.status, IntentStatus::Denied);
        let d = r.denied.clone().unwrap();
        assert!(d.expired);
        assert_eq!(d.by, SYSTEM);
        assert_eq!(
            d.reason,
            "approval expired after 5 min: nobody approved or denied it (policy ask)"
        );
        assert!(matches!(
            &r.actions[0].outcome,
            Some(ActionOutcome::Denied { reason }) if reason.starts_with("denied by system: approval expired after 5 min")
        ));
        assert!(due(&s.intents, u64::MAX).is_empty());
        refused(
            &mut s,
            &expire(&id, t + 1),
            &["no longer waits", "approval expired"],
        );
        refused(&mut s, &approve(&id, "ana", t + 1), &["no longer waits"]);
        refused(
            &mut s,
            &deny(&id, "ana", "late", t + 1),
            &["no longer waits"],
        );
        assert!(s.outbox().is_empty());
    }

    #[test]
    fn approving_in_time_stops_the_expiry() {
        let mut s = house(None);
        let id = held(&mut s, "k");
        let t = T0 + DEFAULT_APPROVAL_TIMEOUT_MS;
        assert_eq!(s.apply(&approve(&id, "ana", t - 1), at(4)), Outcome::Done);
        assert!(due(&s.intents, t + 1).is_empty());
        refused(&mut s, &expire(&id, t + 1), &["already approved"]);
        assert_eq!(s.outbox().len(), 2);
    }

    #[test]
    fn due_lists_held_intents_in_entry_order() {
        let mut s = house(None);
        let mut ids = Vec::new();
        for (n, k) in ["z", "a", "m"].iter().enumerate() {
            s.apply(
                &submit_with(unlock(k, Urgency::Info), Some(DEFAULT_APPROVAL_TIMEOUT_MS)),
                at(3 + n as u64),
            );
            ids.push(scoped_intent_id(Some("agent"), k));
        }
        assert_eq!(due(&s.intents, T0 + DEFAULT_APPROVAL_TIMEOUT_MS), ids);
        let listed: Vec<&str> = pending(&s).iter().map(|r| r.id.as_str()).collect();
        assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
        s.apply(&deny(&ids[1], "ana", "no", T0), at(9));
        assert_eq!(
            due(&s.intents, T0 + DEFAULT_APPROVAL_TIMEOUT_MS),
            vec![ids[0].clone(), ids[2].clone()]
        );
    }

    /// An emergency under `ask` with an override: the back door (its unlock an emergency
    /// action) goes now, the front door is held. Denying ends only the held one.
    #[test]
    fn denying_a_partly_held_emergency_ends_only_the_held_actions() {
        let mut s = house(Some(true));
        let cmd = submit_with(unlock("fire", Urgency::Emergency), Some(2000));
        s.apply(&cmd, at(3));
        let id = scoped_intent_id(Some("agent"), "fire");
        let r = &s.intents[&id];
        assert_eq!(r.status, IntentStatus::Accepted);
        assert!(r.awaits_partial_approval());
        assert!(r.hold.is_some(), "the held part expires too");
        let w = waiting_for(r).unwrap();
        assert_eq!(w.actions.len(), 1);
        assert_eq!(w.actions[0].device, "front");
        let sent: Vec<&str> = s
            .outbox()
            .iter()
            .map(|(_, a)| a.action.device.as_str())
            .collect();
        assert_eq!(sent, ["back"]);
        assert_eq!(
            s.apply(&deny(&id, "ana", "no fire", T0 + 1), at(4)),
            Outcome::Done
        );
        let r = &s.intents[&id];
        assert_eq!(
            r.status,
            IntentStatus::Accepted,
            "the back door is still under way"
        );
        let sent: Vec<&str> = s
            .outbox()
            .iter()
            .map(|(_, a)| a.action.device.as_str())
            .collect();
        assert_eq!(sent, ["back"], "the denied front door is never sent");
        let back = r
            .actions
            .iter()
            .find(|a| a.action.device == "back")
            .unwrap();
        s.apply(
            &Command::RecordOutcome {
                intent_id: id.clone(),
                action_id: back.id.clone(),
                outcome: ActionOutcome::Applied,
                token: FencingToken {
                    term: 1,
                    leader: 1,
                    index: 3,
                },
            },
            at(5),
        );
        assert_eq!(
            s.intents[&id].status,
            IntentStatus::Failed,
            "part done, part denied: never done"
        );
        assert!(due(&s.intents, u64::MAX).is_empty());
    }

    #[test]
    fn waiting_for_says_who_must_act_on_what_why_and_until_when() {
        let mut s = house(None);
        let id = held(&mut s, "k");
        let w = waiting_for(&s.intents[&id]).unwrap();
        assert_eq!(w.policies, ["ask"]);
        assert_eq!(w.expires_at_ms, Some(T0 + DEFAULT_APPROVAL_TIMEOUT_MS));
        let devices: Vec<&str> = w.actions.iter().map(|a| a.device.as_str()).collect();
        assert_eq!(devices, ["back", "front"]);
        for part in [
            "operator",
            "back lock -> unlocked",
            "front lock -> unlocked",
            "policy ask",
            "5 min",
            &id,
        ] {
            assert!(w.text.contains(part), "{:?} lacks {part:?}", w.text);
        }
    }

    #[test]
    fn entries_and_records_from_before_approvals_still_decode() {
        let old_approve = r#"{"type":"approve","intent_id":"i-0000000000000001","by":"ana"}"#;
        assert_eq!(
            Command::decode(old_approve.as_bytes()).unwrap(),
            Command::Approve {
                intent_id: "i-0000000000000001".into(),
                by: "ana".into(),
                at_ms: None,
                reason: None
            }
        );
        let mut s = house(None);
        let id = held(&mut s, "k");
        let mut v = serde_json::to_value(&s.intents[&id]).unwrap();
        for f in ["hold", "denied", "approval_reason"] {
            v.as_object_mut().unwrap().remove(f);
        }
        let r: IntentRecord = serde_json::from_value(v).unwrap();
        assert!(r.hold.is_none() && r.denied.is_none());
        // An approval of an intent held before expiries works as it always did.
        let mut s2 = s.clone();
        s2.intents.insert(id.clone(), r);
        assert_eq!(
            s2.apply(&approve(&id, "ana", u64::MAX / 2), at(5)),
            Outcome::Done
        );
        // The new entries' JSON, as docs/AUDIT-FORMAT.md shows it.
        let d = deny(&id, "ana", "no", 7);
        assert_eq!(
            String::from_utf8(d.encode()).unwrap(),
            format!(r#"{{"type":"deny","intent_id":"{id}","by":"ana","reason":"no","at_ms":7}}"#)
        );
        let e = expire(&id, 8);
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            format!(r#"{{"type":"expire_approval","intent_id":"{id}","node":1,"at_ms":8}}"#)
        );
        for c in [d, e, approve(&id, "ana", 9)] {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
    }
}
