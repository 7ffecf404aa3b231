//! Intents to device actions on an in-process cluster: leader-only, commit-before-dispatch,
//! fenced, re-driven after failover, idempotent. Devices are simulators on the in-process bus;
//! their journals are the evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hearth_core::device_protocol::{DeviceCommand, JournalEntry, Reply};
use hearth_core::domain::{ActionOutcome, FencingToken, IntentRecord, IntentStatus};
use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};
use hearth_core::policy::{Policy, Rule};
use hearth_devices::SimBus;
use hearth_node::NodeError;
use hearth_tests::TestCluster;

const LONG: Duration = Duration::from_secs(15);

fn siren(bus_name: &str) -> Device {
    Device {
        id: "kitchen-siren".into(),
        name: "Kitchen siren".into(),
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
            address: format!("local:{bus_name}"),
        },
    }
}

fn notifier(bus_name: &str) -> Device {
    Device {
        id: "hall-screen".into(),
        name: "Hall screen".into(),
        location: Location::parse("l", "home/hall").unwrap(),
        tags: BTreeSet::new(),
        sensors: BTreeSet::new(),
        actuators: [(
            "notifier".to_string(),
            ["message".to_string(), "alert".to_string()].into(),
        )]
        .into(),
        emergency_capable: false,
        emergency_actions: Default::default(),
        adapter: Adapter::Sim {
            address: format!("local:{bus_name}"),
        },
    }
}

fn intent(class: &str, key: &str) -> Intent {
    Intent {
        class: class.into(),
        urgency: Urgency::Emergency,
        subject: "smoke in the kitchen".into(),
        location: Location::parse("l", "home").unwrap(),
        context: BTreeMap::new(),
        source: "agent".into(),
        idempotency_key: key.into(),
    }
}

async fn leader(c: &TestCluster) -> u64 {
    c.wait_for_leader(&c.hubs(), LONG).await
}

async fn register(c: &TestCluster, d: Device) {
    let deadline = Instant::now() + LONG;
    loop {
        let l = leader(c).await;
        match c.node(l).register_device(d.clone(), None).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "register failed: {e}"),
        }
    }
}

async fn submit(c: &TestCluster, i: &Intent) -> IntentRecord {
    let deadline = Instant::now() + LONG;
    loop {
        let l = leader(c).await;
        match c.node(l).submit_intent(i.clone()).await {
            Ok(r) => return r,
            Err(e @ (NodeError::KeyConflict(_) | NodeError::Plan(_) | NodeError::Field(_))) => {
                panic!("{e}")
            }
            Err(e) => assert!(Instant::now() < deadline, "submit failed: {e}"),
        }
    }
}

/// Waits until `node` has recorded an outcome for every action of `id` (final: done, or
/// failed when an action did not apply).
async fn wait_done(c: &TestCluster, node: u64, id: &str) -> IntentRecord {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(r) = c.node(node).get_intent(id).unwrap()
            && r.status.is_final()
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "intent {id} not done on node {node}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// P4 and P5 over a journal: every command a device accepted maps to a committed intent with
/// the same action, a token naming that intent's deciding entry, sent by a hub (never the
/// witness); no action id was applied twice.
fn check_journal(c: &TestCluster, journal: &[JournalEntry]) {
    let mut applied = BTreeSet::new();
    for j in journal {
        assert_ne!(j.command.sender, 3, "the witness sent a command: {j:?}");
        if !matches!(j.reply, Reply::Applied) {
            continue;
        }
        assert!(
            applied.insert(j.command.action_id.clone()),
            "action {} applied twice",
            j.command.action_id
        );
        let intent_id = j.command.action_id.split('/').next().unwrap();
        for id in c.running() {
            let r = c
                .node(id)
                .get_intent(intent_id)
                .unwrap()
                .unwrap_or_else(|| panic!("node {id} has no committed intent for {j:?}"));
            assert_eq!(
                r.index, j.command.token.index,
                "token must name the deciding entry"
            );
            let a = r
                .actions
                .iter()
                .find(|a| a.id == j.command.action_id)
                .expect("action in the intent");
            assert_eq!(
                (&a.action.device, &a.action.state),
                (&j.command.device, &j.command.state)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_is_dispatched_once_by_the_leader_after_commit() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    register(&c, siren("t-basic")).await;
    let r = submit(&c, &intent("ensure_safety", "basic-1")).await;
    let l = leader(&c).await;
    let done = wait_done(&c, l, &r.id).await;
    assert_eq!(done.actions[0].outcome, Some(ActionOutcome::Applied));
    let journal = bus.journal("t-basic");
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].command.sender, l);
    assert_eq!(journal[0].command.state, "on");
    c.wait_converged(LONG).await;
    check_journal(&c, &journal);
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_dies_after_commit_before_dispatch_and_the_new_leader_performs_it() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    register(&c, siren("t-redrive")).await;
    bus.set_offline("t-redrive", true);
    let r = submit(&c, &intent("ensure_safety", "redrive-1")).await;
    c.wait_converged(LONG).await;
    let old = leader(&c).await;
    c.stop(old).await;
    bus.set_offline("t-redrive", false);
    let new = leader(&c).await;
    assert_ne!(new, old);
    let done = wait_done(&c, new, &r.id).await;
    assert_eq!(done.actions[0].token.map(|t| t.leader), Some(new));
    let journal = bus.journal("t-redrive");
    assert_eq!(
        journal.iter().filter(|j| j.reply == Reply::Applied).count(),
        1
    );
    assert!(
        journal.iter().all(|j| j.command.sender == new),
        "{journal:?}"
    );
    check_journal(&c, &journal);
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_old_leader_cannot_get_a_command_applied() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    register(&c, siren("t-isolate")).await;
    bus.set_offline("t-isolate", true);
    let r = submit(&c, &intent("ensure_safety", "isolate-1")).await;
    c.wait_converged(LONG).await;
    let old = leader(&c).await;
    let old_term = c.node(old).status().await.term;
    let ids = c.ids();
    c.router.isolate(old, &ids);
    bus.set_offline("t-isolate", false);
    let other = c.hubs().into_iter().find(|h| *h != old).unwrap();
    assert_eq!(c.wait_for_leader(&[other], LONG).await, other);
    // From here on a newer leadership exists. (A send the old leader fenced just before the
    // isolation may still land before this: no newer leadership had acted then, and the new
    // leader's re-send is answered ALREADY_APPLIED — no duplicate actuation.)
    let newer_exists_ms = hearth_devices::now_ms();
    wait_done(&c, other, &r.id).await;
    // The old leader still believes it leads for a while; its dispatcher's fence fails, and
    // a command with its stale token is refused by the device.
    let stale = DeviceCommand {
        action_id: "forged/0".into(),
        device: "kitchen-siren".into(),
        capability: "siren".into(),
        state: "off".into(),
        token: FencingToken {
            term: old_term,
            leader: old,
            index: r.index,
        },
        sender: old,
    };
    assert!(matches!(
        bus.deliver("t-isolate", stale).unwrap(),
        Reply::StaleToken { .. }
    ));
    let journal = bus.journal("t-isolate");
    assert!(
        journal
            .iter()
            .filter(|j| j.command.sender == old && j.at_ms >= newer_exists_ms)
            .all(|j| j.reply != Reply::Applied),
        "{journal:?}"
    );
    assert_eq!(
        journal.iter().filter(|j| j.reply == Reply::Applied).count(),
        1,
        "the action ran exactly once: {journal:?}"
    );
    c.router.heal();
    c.wait_converged(LONG).await;
    check_journal(&c, &journal);
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_after_failover_runs_once_and_another_body_is_refused() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    register(&c, siren("t-idem")).await;
    let i = intent("ensure_safety", "idem-1");
    let first = submit(&c, &i).await;
    let l = leader(&c).await;
    wait_done(&c, l, &first.id).await;
    c.wait_converged(LONG).await;
    c.stop(l).await;
    let again = submit(&c, &i).await;
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.index, first.index,
        "the original intent, not a new one"
    );
    let mut other_body = i.clone();
    other_body.subject = "something else".into();
    let new_leader = leader(&c).await;
    let head = c.node(new_leader).sm.head().unwrap();
    match c.node(new_leader).submit_intent(other_body).await {
        Err(NodeError::KeyConflict(id)) => assert_eq!(id, first.id),
        other => panic!("a different body with the same key must be refused, got {other:?}"),
    }
    assert_eq!(
        c.node(new_leader).sm.head().unwrap(),
        head,
        "a refused request appends nothing"
    );
    let journal = bus.journal("t-idem");
    assert_eq!(journal.len(), 1, "{journal:?}");
    check_journal(&c, &journal);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_that_must_not_repeat_records_outcome_unknown_after_failover() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    register(&c, notifier("t-unknown")).await;
    bus.set_offline("t-unknown", true);
    let r = submit(&c, &intent("notify", "unknown-1")).await;
    c.wait_converged(LONG).await;
    let old = leader(&c).await;
    c.stop(old).await;
    bus.set_offline("t-unknown", false);
    let new = leader(&c).await;
    let done = wait_done(&c, new, &r.id).await;
    assert!(
        matches!(
            done.actions[0].outcome,
            Some(ActionOutcome::OutcomeUnknown { .. })
        ),
        "{done:?}"
    );
    assert_eq!(done.status, IntentStatus::Failed, "unknown is not done");
    assert!(
        bus.journal("t-unknown").is_empty(),
        "nothing may be sent again"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_holds_dispatch_until_a_person_approves() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    register(&c, siren("t-confirm")).await;
    let l = leader(&c).await;
    let ask = Policy {
        id: "ask-first".into(),
        emergency_override: None,
        rule: Rule::RequireConfirmation {
            class: "ensure_safety".into(),
        },
    };
    c.node(l)
        .apply_policies(vec![ask], None, None)
        .await
        .unwrap();
    let mut i = intent("ensure_safety", "confirm-1");
    i.urgency = Urgency::Alert;
    let r = submit(&c, &i).await;
    assert_eq!(r.status, IntentStatus::AwaitingApproval);
    // Give a dispatcher every chance to misbehave, then check nothing was sent.
    c.write("a later entry", LONG).await;
    c.wait_converged(LONG).await;
    assert!(bus.journal("t-confirm").is_empty());
    let l = leader(&c).await;
    c.node(l).approve(&r.id, "alice", None).await.unwrap();
    let done = wait_done(&c, l, &r.id).await;
    assert_eq!(done.approved_by.as_deref(), Some("alice"));
    assert_eq!(bus.journal("t-confirm").len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_append_nothing() {
    let c = TestCluster::three().await;
    register(&c, siren("t-bad")).await;
    c.wait_converged(LONG).await;
    let l = leader(&c).await;
    let head = c.node(l).sm.head().unwrap();
    let n = c.node(l);

    let e = n
        .submit_intent(intent("teleport", "bad-1"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown intent class \"teleport\""),
        "{e}"
    );

    let mut big = intent("ensure_safety", "bad-2");
    big.context.insert("blob".into(), "x".repeat(5000));
    let e = n.submit_intent(big).await.unwrap_err();
    assert!(e.to_string().contains("field `context`"), "{e}");

    let mut bad_source = intent("ensure_safety", "bad-3");
    bad_source.source = "../root".into();
    let e = n.submit_intent(bad_source).await.unwrap_err();
    assert!(e.to_string().contains("field `source`"), "{e}");

    let mut no_key = intent("ensure_safety", "");
    no_key.idempotency_key.clear();
    assert!(
        n.submit_intent(no_key)
            .await
            .unwrap_err()
            .to_string()
            .contains("idempotency_key")
    );

    let mut bad_dev = siren("t-bad");
    bad_dev.id = "Kitchen Siren".into();
    assert!(
        n.register_device(bad_dev, None)
            .await
            .unwrap_err()
            .to_string()
            .contains("field `id`")
    );

    let e = n
        .approve("i-0000000000000000", "alice", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no intent"), "{e}");
    // Not the shape of an intent id at all: refused naming the field.
    let e = n
        .approve("i-doesnotexist", "alice", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("field `id`"), "{e}");

    let bad_policy = Policy {
        id: "p".into(),
        emergency_override: None,
        rule: Rule::RateLimitSource {
            max: 0,
            window_secs: 0,
        },
    };
    assert!(
        n.apply_policies(vec![bad_policy], None, None)
            .await
            .unwrap_err()
            .to_string()
            .contains("field `policies[0].rule.max`")
    );

    assert!(n.explain(&intent("teleport", "x")).is_err());
    let ok = n.explain(&intent("ensure_safety", "x")).unwrap();
    assert_eq!(ok.actions.len(), 1, "explain plans without executing");
    assert_eq!(
        n.sm.head().unwrap(),
        head,
        "explain and refused requests append nothing"
    );
    c.shutdown().await;
}
