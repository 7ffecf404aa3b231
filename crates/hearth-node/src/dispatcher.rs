//! The dispatcher: runs on every hub, acts only while that hub leads. Never on a witness,
//! never inside `apply`.
//!
//! Each round, if the replicated outbox holds committed actions without an outcome:
//! 1. confirm leadership with a fresh quorum round (ReadIndex); a stale or isolated leader
//!    fails here and sends nothing;
//! 2. send each action with its fencing token `(term, leader, index of the deciding entry)` and
//!    its action id;
//! 3. record the device's answer with a conditional write that commits only while the same
//!    leadership leads.
//!
//! A new leader finds the actions its predecessor left without an outcome and sends them again
//! under its own (higher) token: devices apply each action id once. For classes that must not
//! repeat an action, an action accepted under an earlier leadership is not re-sent; it is
//! recorded as `OUTCOME_UNKNOWN` for a human.
//!
//! Deadlines: an intent carries a dispatch deadline (its class's, at most the write timeout the
//! client waited). An action a leader is about to send for the first time after that deadline
//! (a write that committed only when a partition healed, minutes after the client was told it
//! failed) is recorded `EXPIRED` and never sent — by whichever leader finds it. "Now" is this
//! hub's wall clock, never less than the chain's time; a hub whose clock is judged wrong does
//! not dispatch at all (it hands leadership over).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_cluster::HearthRaft;
use hearth_core::device_protocol::{DeviceCommand, Reply};
use hearth_core::domain::ActionRecord;
use hearth_core::domain::{ActionOutcome, Command as DomainCommand, FencingToken, IntentRecord};
use hearth_devices::Gateway;
use hearth_store::{Command, StateMachine, TypeConfig};
use openraft::ServerState;
use openraft::impls::ProgressResponder;
use openraft::raft::ReadPolicy;
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tracing::Instrument;

/// How often the dispatcher looks at the outbox without news (retries, leadership changes);
/// a newly applied entry wakes it at once.
const TICK: Duration = Duration::from_millis(100);
/// How long an unreachable device is retried before its action is recorded as failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Longest wait between two attempts at an unreachable device.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Retry bookkeeping for one action whose device did not answer.
struct Retry {
    first_failure: Instant,
    next_try: Instant,
    backoff: Duration,
}

pub struct Dispatcher {
    pub id: u64,
    pub raft: HearthRaft,
    pub sm: StateMachine,
    pub gateway: Arc<dyn Gateway>,
    pub wall: crate::health::WallClock,
    pub clock_watch: Arc<crate::health::ClockWatch>,
}

fn outcome_of(reply: Reply) -> ActionOutcome {
    match reply {
        Reply::Applied => ActionOutcome::Applied,
        Reply::AlreadyApplied => ActionOutcome::AlreadyApplied,
        Reply::StaleToken { .. } => ActionOutcome::StaleToken,
        Reply::Refused { reason } => ActionOutcome::Failed { reason },
    }
}

impl Dispatcher {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut retries: BTreeMap<String, Retry> = BTreeMap::new();
        let mut applied = self.sm.subscribe_applied();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                r = applied.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if self.raft.metrics().borrow_watched().state != ServerState::Leader {
                retries.clear();
                continue;
            }
            let pending: Vec<(IntentRecord, ActionRecord, bool)> = match self.sm.with_domain(|d| {
                d.outbox()
                    .into_iter()
                    .map(|(r, a)| {
                        let repeat_safe =
                            d.classes.get(&r.intent.class).is_none_or(|c| c.repeat_safe);
                        (r.clone(), a.clone(), repeat_safe)
                    })
                    .collect()
            }) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(node = self.id, error = %e, "dispatcher cannot read the outbox");
                    continue;
                }
            };
            if pending.is_empty() {
                continue;
            }
            // 1. Fence: a quorum must confirm this leadership now.
            let opt = LinearizerOption::from(ReadPolicy::ReadIndex)
                .with_wait_timeout(Duration::from_millis(500));
            let read = match tokio::time::timeout(
                Duration::from_secs(1),
                self.raft.ensure_linearizable(opt),
            )
            .await
            {
                Ok(Ok(r)) => r,
                _ => {
                    tracing::debug!(
                        node = self.id,
                        "dispatcher: leadership not confirmed by a quorum; sending nothing"
                    );
                    continue;
                }
            };
            let leader = *read.committed_leader_id();
            if leader.node_id != self.id {
                continue;
            }
            if self.clock_watch.is_off() {
                tracing::warn!(
                    node = self.id,
                    "dispatcher: this hub's clock is judged wrong; sending nothing"
                );
                continue;
            }
            let chain_ms = self
                .sm
                .with_domain(|d| d.rates.chain_ms)
                .unwrap_or_default();
            let now_ms = hearth_core::clock::stamp(self.wall.now_ms(), chain_ms);
            // 2. Send every due action concurrently (a slow device does not hold up the others).
            let now = Instant::now();
            let due: Vec<_> = pending
                .into_iter()
                .filter(|(_, a, _)| retries.get(&a.id).is_none_or(|r| r.next_try <= now))
                .collect();
            let (gateway, me) = (&self.gateway, self.id);
            let sends = due.into_iter().map(|(intent, action, repeat_safe)| {
                let token = FencingToken {
                    term: leader.term,
                    leader: leader.node_id,
                    index: intent.index,
                };
                // A first send (no failed attempt under this leadership yet) after the deadline
                // never happens. A retry of a device that did not answer is not a first send:
                // it was dispatched in time and keeps its retry window.
                let first_send = !retries.contains_key(&action.id);
                async move {
                    if first_send && intent.expired(now_ms) {
                        let since = intent.dispatchable_ms.unwrap_or(intent.at_ms);
                        let reason = format!(
                            "not dispatched within its deadline of {} ms (dispatchable at {since} ms, found at {now_ms} ms by node {me} in term {}): never sent",
                            intent.deadline_ms.unwrap_or_default(),
                            leader.term
                        );
                        tracing::warn!(node = me, intent = %intent.id, action = %action.id, "{reason}");
                        return (intent, action, token, Ok(ActionOutcome::Expired { reason }));
                    }
                    if !repeat_safe && intent.term < leader.term {
                        let reason = format!(
                            "accepted under the leadership of term {} and left without an outcome; class {} must not repeat actions: check device {}",
                            intent.term, intent.intent.class, action.action.device
                        );
                        return (intent, action, token, Ok(ActionOutcome::OutcomeUnknown { reason }));
                    }
                    let cmd = DeviceCommand {
                        action_id: action.id.clone(),
                        device: action.action.device.clone(),
                        capability: action.action.capability.clone(),
                        state: action.action.state.clone(),
                        token,
                        sender: me,
                    };
                    let span = tracing::info_span!("dispatch", node = me, term = token.term, intent = %intent.id, action = %action.id);
                    let res = gateway.send(&action.action.adapter, cmd).instrument(span).await;
                    (intent, action, token, res.map(outcome_of))
                }
            });
            let results = futures::future::join_all(sends).await;

            // 3. Record outcomes with conditional writes (commit only while this leadership
            //    leads), all proposed at once, then awaited.
            let mut waiting = Vec::new();
            for (intent, action, token, res) in results {
                let outcome = match res {
                    Ok(o) => o,
                    Err(e) => {
                        let now = Instant::now();
                        let r = retries.entry(action.id.clone()).or_insert(Retry {
                            first_failure: now,
                            next_try: now,
                            backoff: Duration::from_millis(25),
                        });
                        if now.duration_since(r.first_failure) < GIVE_UP_AFTER {
                            r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
                            r.next_try = now + r.backoff;
                            tracing::warn!(node = self.id, action = %action.id, error = %e, retry_in = ?r.backoff, "device not reached; will retry");
                            continue;
                        }
                        ActionOutcome::Failed {
                            reason: format!("{e} (retried for {GIVE_UP_AFTER:?})"),
                        }
                    }
                };
                retries.remove(&action.id);
                let cmd = DomainCommand::RecordOutcome {
                    intent_id: intent.id.clone(),
                    action_id: action.id.clone(),
                    outcome,
                    token,
                };
                let (responder, rx) = ProgressResponder::<TypeConfig, _>::complete_only();
                if let Err(e) = self
                    .raft
                    .write(Command(cmd.encode()))
                    .with_leader(leader)
                    .responder(responder)
                    .await
                {
                    tracing::error!(error = %e, "Raft stopped while recording an outcome");
                    return;
                }
                waiting.push((action.id, rx));
            }
            for (action_id, rx) in waiting {
                let committed = tokio::time::timeout(Duration::from_secs(5), rx).await;
                if !matches!(committed, Ok(Ok(Ok(_)))) {
                    tracing::warn!(node = self.id, action = %action_id, "outcome not recorded (leadership changed?); the next leader re-drives");
                }
            }
        }
    }
}
