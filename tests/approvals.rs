//! Approvals on an in-process cluster (issue 17 item 3): a held intent is denied by itself
//! when its approval expires, with nobody acting; after a failover the new leader expires it.
//! The device's journal is the evidence that nothing was sent; the chain's entries say who.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hearth_core::approval::{Decision, SYSTEM};
use hearth_core::domain::{ActionOutcome, Command, IntentRecord, IntentStatus};
use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};
use hearth_core::policy::{Policy, Rule};
use hearth_devices::SimBus;
use hearth_tests::TestCluster;

const LONG: Duration = Duration::from_secs(15);

fn door(bus_name: &str) -> Device {
    Device {
        id: "front-door".into(),
        name: "Front door".into(),
        location: Location::parse("l", "home/hall").unwrap(),
        tags: BTreeSet::new(),
        sensors: BTreeSet::new(),
        actuators: [(
            "lock".to_string(),
            ["locked".to_string(), "unlocked".to_string()].into(),
        )]
        .into(),
        emergency_capable: false,
        emergency_actions: Default::default(),
        adapter: Adapter::Sim {
            address: format!("local:{bus_name}"),
        },
    }
}

fn unlock(key: &str) -> Intent {
    Intent {
        class: "control_access".into(),
        urgency: Urgency::Info,
        subject: "let the plumber in".into(),
        location: Location::parse("l", "home/hall").unwrap(),
        context: BTreeMap::from([("state".to_string(), "unlocked".to_string())]),
        source: "agent-a".into(),
        idempotency_key: key.into(),
    }
}

/// The held intents' house: the door, `ask` on control_access, and the class's approval
/// timeout set to `timeout_ms`.
async fn house(c: &TestCluster, bus_name: &str, timeout_ms: u64) {
    let l = c.wait_for_leader(&c.hubs(), LONG).await;
    let n = c.node(l);
    n.register_device(door(bus_name), None).await.unwrap();
    n.apply_policies(
        vec![Policy::new(
            "ask",
            Rule::RequireConfirmation {
                class: "control_access".into(),
            },
        )],
        None,
        None,
    )
    .await
    .unwrap();
    set_timeout(c, l, timeout_ms).await;
}

async fn set_timeout(c: &TestCluster, l: u64, timeout_ms: u64) {
    let n = c.node(l);
    let mut class = n
        .classes()
        .unwrap()
        .into_iter()
        .find(|k| k.name == "control_access")
        .unwrap();
    class.approval_timeout_ms = Some(timeout_ms);
    n.apply_class(class, None).await.unwrap();
}

async fn wait_final(c: &TestCluster, node: u64, id: &str) -> IntentRecord {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(r) = c.node(node).get_intent(id).unwrap()
            && r.status.is_final()
        {
            return r;
        }
        assert!(Instant::now() < deadline, "intent {id} never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The chain's commands on `node` about intent `id`, with the leader of each entry.
fn entries_about(c: &TestCluster, node: u64, id: &str) -> Vec<(u64, Command)> {
    c.node(node)
        .tail(10_000)
        .unwrap()
        .into_iter()
        .filter_map(|l| {
            let cmd = Command::decode(&l.record.payload).ok()?;
            let about = match &cmd {
                Command::Approve { intent_id, .. }
                | Command::Deny { intent_id, .. }
                | Command::ExpireApproval { intent_id, .. } => intent_id == id,
                _ => false,
            };
            about.then_some((l.record.leader, cmd))
        })
        .collect()
}

fn assert_expired_by(r: &IntentRecord, what: &str) {
    assert_eq!(r.status, IntentStatus::Denied, "{what}: {r:?}");
    let d = r.denied.as_ref().expect("denied");
    assert!(d.expired, "{what}: {d:?}");
    assert_eq!(d.by, SYSTEM);
    assert!(d.reason.starts_with("approval expired after"), "{d:?}");
    assert!(
        matches!(&r.actions[0].outcome, Some(ActionOutcome::Denied { reason }) if reason.contains("approval expired")),
        "{what}: {:?}",
        r.actions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_intent_expires_by_itself_and_a_new_leader_expires_what_fell_due() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    house(&c, "t-approvals", 1000).await;
    let l = c.wait_for_leader(&c.hubs(), LONG).await;

    // Nobody acts: the leader denies it by itself, and the door was never told anything.
    let r = c.node(l).submit_intent(unlock("expire-1")).await.unwrap();
    assert_eq!(r.status, IntentStatus::AwaitingApproval);
    let hold = r.hold.clone().expect("a hold with an expiry");
    assert_eq!(hold.timeout_ms, 1000);
    assert_eq!(hold.policies, ["ask"]);
    let (pending, _) = c.node(l).pending(None).unwrap();
    assert_eq!(pending.len(), 1);
    let done = wait_final(&c, l, &r.id).await;
    assert_expired_by(&done, "expired with nobody acting");
    let d = done.denied.clone().unwrap();
    assert!(d.at_ms >= hold.expires_at_ms, "{d:?} before {hold:?}");
    assert!(
        bus.journal("t-approvals").is_empty(),
        "a held door was sent a command"
    );
    let about = entries_about(&c, l, &r.id);
    assert!(
        matches!(about.as_slice(), [(_, Command::ExpireApproval { node, .. })] if *node == l),
        "{about:?}"
    );
    // Too late to approve: refused, nothing appended.
    let head = c.node(l).sm.head().unwrap();
    let e = c
        .node(l)
        .decide(&r.id, Decision::Approve, "ana", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("approval expired"), "{e}");
    assert_eq!(
        c.node(l).sm.head().unwrap(),
        head,
        "a refusal appended something"
    );

    // Held under one leader, which stops before it is due: the next leader expires it.
    set_timeout(&c, l, 3000).await;
    let r = c.node(l).submit_intent(unlock("expire-2")).await.unwrap();
    assert_eq!(r.status, IntentStatus::AwaitingApproval);
    c.wait_converged(LONG).await;
    let other = *c.hubs().iter().find(|h| **h != l).unwrap();
    c.stop(l).await;
    let new = c.wait_for_leader(&[other], LONG).await;
    let done = wait_final(&c, new, &r.id).await;
    assert_expired_by(&done, "expired after the failover");
    let about = entries_about(&c, new, &r.id);
    assert!(
        matches!(about.as_slice(), [(leader, Command::ExpireApproval { node, .. })] if *node == new && *leader == new),
        "the new leader expires it: {about:?}"
    );
    assert!(bus.journal("t-approvals").is_empty());
    c.shutdown().await;
}

/// A person denies a held intent through a follower's node API: refused there (the leader
/// decides), then on the leader one entry naming the person; a retry is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_intent_never_reaches_its_device_and_a_retry_changes_nothing() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    house(&c, "t-deny", 60_000).await;
    let l = c.wait_for_leader(&c.hubs(), LONG).await;
    let r = c.node(l).submit_intent(unlock("deny-1")).await.unwrap();
    let other = *c.hubs().iter().find(|h| **h != l).unwrap();
    let e = c
        .node(other)
        .decide(&r.id, Decision::Deny, "ana", Some("not today"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, hearth_node::NodeError::NotLeader { leader, .. } if leader == l),
        "{e}"
    );
    let denied = c
        .node(l)
        .decide(&r.id, Decision::Deny, "ana", Some("not today"), None)
        .await
        .unwrap();
    assert_eq!(denied.status, IntentStatus::Denied);
    let head = c.node(l).sm.head().unwrap();
    for d in [Decision::Deny, Decision::Approve] {
        let e = c
            .node(l)
            .decide(&r.id, d, "ana", Some("not today"), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already denied by ana"), "{e}");
    }
    assert_eq!(c.node(l).sm.head().unwrap(), head);
    let about = entries_about(&c, l, &r.id);
    assert!(
        matches!(about.as_slice(), [(_, Command::Deny { by, reason, .. })] if by == "ana" && reason == "not today"),
        "{about:?}"
    );
    // The dispatcher had every chance: a later entry, and nothing was sent.
    c.node(l).append_test_record("later").await.unwrap();
    c.wait_converged(LONG).await;
    assert!(bus.journal("t-deny").is_empty());
    assert!(c.node(l).pending(None).unwrap().0.is_empty());
    c.shutdown().await;
}
