//! Liveness at the edges, in-process: a late commit must not act (issue 13.12), a wrong wall
//! clock on the leader must not defeat policies (14.6), a device that remembers an older
//! cluster refuses commands and the intent must say so, until an audited re-fence (14.7).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hearth_core::device_protocol::{DeviceCommand, Reply};
use hearth_core::domain::{ActionOutcome, FencingToken, IntentStatus};
use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};
use hearth_core::policy::{Policy, Rule};
use hearth_devices::SimBus;
use hearth_node::NodeError;
use hearth_tests::TestCluster;

const LONG: Duration = Duration::from_secs(15);
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

fn device(bus: &str, id: &str, cap: &str, states: &[&str], tags: &[&str]) -> Device {
    Device {
        id: id.into(),
        name: id.into(),
        location: Location::parse("l", "home/hall").unwrap(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        sensors: BTreeSet::new(),
        actuators: [(
            cap.to_string(),
            states.iter().map(|s| s.to_string()).collect(),
        )]
        .into(),
        emergency_capable: true,
        emergency_actions: Default::default(),
        adapter: Adapter::Sim {
            address: format!("local:{bus}"),
        },
    }
}

fn intent(class: &str, key: &str, urgency: Urgency) -> Intent {
    let mut context = BTreeMap::new();
    if class == "control_access" {
        context.insert("state".to_string(), "unlocked".to_string());
    }
    Intent {
        class: class.into(),
        urgency,
        subject: "test".into(),
        location: Location::parse("l", "home").unwrap(),
        context,
        source: "agent".into(),
        idempotency_key: key.into(),
    }
}

async fn leader(c: &TestCluster) -> u64 {
    c.wait_for_leader(&c.hubs(), LONG).await
}

async fn on_leader<T, F, Fut>(c: &TestCluster, f: F) -> T
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, NodeError>>,
{
    let deadline = Instant::now() + LONG;
    loop {
        let l = leader(c).await;
        match f(l).await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_final(c: &TestCluster, node: u64, id: &str) -> hearth_core::domain::IntentRecord {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(r) = c.node(node).get_intent(id).unwrap()
            && r.status.is_final()
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "intent {id} not final on node {node}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 13.12: "unlock the door" submitted, the leader cut off right then (its followers get the
/// entry, their acknowledgements are lost), the client told it failed; the partition heals
/// after the deadline and the entry commits. Its action must be recorded EXPIRED, and nothing
/// sent to the door. (On main: the door unlocked when the partition healed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_after_a_partition_heals_expires_and_sends_nothing() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    let door = device("t-late", "front-door", "lock", &["locked", "unlocked"], &[]);
    on_leader(&c, |l| c.node(l).register_device(door.clone(), None)).await;
    c.wait_converged(LONG).await;
    let l = leader(&c).await;
    let other = c.hubs().into_iter().find(|h| *h != l).unwrap();
    // The other hub is cut off entirely; the witness still receives the leader's appends,
    // but its answers (and its votes) are lost. No quorum can commit anything now.
    c.router.isolate(other, &c.ids());
    c.router.cut(3, l);
    let started = Instant::now();
    let err = c
        .node(l)
        .submit_intent(intent("control_access", "late-1", Urgency::Alert))
        .await
        .expect_err("no quorum: the client is told it failed");
    assert!(
        err.to_string()
            .contains("appended the request but no quorum"),
        "the entry must have been appended for this scenario: {err}"
    );
    let id = hearth_core::domain::scoped_intent_id(Some("agent"), "late-1");
    // Past the deadline (the write timeout, 1.5 s in tests), then heal.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    c.router.heal();
    let l2 = leader(&c).await;
    let r = wait_final(&c, l2, &id).await;
    assert!(
        matches!(r.actions[0].outcome, Some(ActionOutcome::Expired { .. })),
        "{r:?}"
    );
    assert_eq!(r.status, IntentStatus::Failed);
    assert!(
        bus.journal("t-late").is_empty(),
        "nothing may reach the door: {:?}",
        bus.journal("t-late")
    );
    c.wait_converged(LONG).await;
    // Every node holds the same record: EXPIRED is in the chain.
    for n in c.running() {
        let r = c.node(n).get_intent(&id).unwrap().unwrap();
        assert!(matches!(
            r.actions[0].outcome,
            Some(ActionOutcome::Expired { .. })
        ));
    }
    // A fresh intent still runs at once.
    let ok = on_leader(&c, |l| {
        c.node(l)
            .submit_intent(intent("control_access", "late-2", Urgency::Alert))
    })
    .await;
    let done = wait_final(&c, leader(&c).await, &ok.id).await;
    assert_eq!(done.status, IntentStatus::Done, "{done:?}");
    assert_eq!(bus.journal("t-late").len(), 1);
    c.check_invariants();
    c.shutdown().await;
}

/// 14.7: a device that remembers an older cluster (a higher term) refuses this cluster's
/// command as a stale token: the intent is FAILED, never done. An admin's re-fence (an entry
/// in the chain) makes the device accept this cluster again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_never_done_and_a_refence_restores_the_device() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    let siren = device("t-refence", "old-siren", "siren", &["on", "off"], &[]);
    on_leader(&c, |l| c.node(l).register_device(siren.clone(), None)).await;
    // The older cluster reached term 40 before it was rebuilt.
    let old = DeviceCommand {
        action_id: "old-cluster/0".into(),
        device: "old-siren".into(),
        capability: "siren".into(),
        state: "off".into(),
        token: FencingToken {
            term: 40,
            leader: 1,
            index: 900,
        },
        sender: 1,
    };
    assert_eq!(bus.deliver("t-refence", old).unwrap(), Reply::Applied);
    let r = on_leader(&c, |l| {
        c.node(l)
            .submit_intent(intent("ensure_safety", "stale-1", Urgency::Emergency))
    })
    .await;
    let l = leader(&c).await;
    let r = wait_final(&c, l, &r.id).await;
    assert_eq!(r.actions[0].outcome, Some(ActionOutcome::StaleToken));
    assert_eq!(
        r.status,
        IntentStatus::Failed,
        "a refused command is not done"
    );
    assert_eq!(
        hearth_node::api::record_view(&r).status,
        "failed",
        "the API says so"
    );

    // Bad re-fence requests change nothing.
    let head = c.node(l).sm.head().unwrap();
    for (devices, all, reason) in [
        (vec![], false, "x"),
        (vec!["ghost".to_string()], false, "x"),
        (vec!["old-siren".to_string()], true, "x"),
        (vec!["old-siren".to_string()], false, " "),
    ] {
        assert!(c.node(l).refence(devices, all, reason, None).await.is_err());
    }
    assert_eq!(c.node(l).sm.head().unwrap(), head, "nothing appended");

    let rf = on_leader(&c, |l| {
        c.node(l).refence(
            vec![],
            true,
            "cluster re-formed after the SD card died",
            None,
        )
    })
    .await;
    let rf = wait_final(&c, l, &rf.id).await;
    assert_eq!(rf.status, IntentStatus::Done, "{rf:?}");
    assert_eq!(rf.intent.class, hearth_core::domain::REFENCE_CLASS);
    let again = on_leader(&c, |l| {
        c.node(l)
            .submit_intent(intent("ensure_safety", "stale-2", Urgency::Emergency))
    })
    .await;
    let again = wait_final(&c, l, &again.id).await;
    assert_eq!(again.status, IntentStatus::Done, "{again:?}");
    // The re-fence is in the chain, named.
    let tail = c.node(l).tail(50).unwrap();
    assert!(
        tail.iter()
            .any(|t| hearth_node::node::describe(&t.record).contains("re-fenced")),
        "{tail:?}"
    );
    c.shutdown().await;
}

/// 14.6, −1 year: a leader whose clock jumped back stamps the chain's time, not its own, so the
/// rate window counts what the chain says happened: 3 per 5 minutes hold. (On main the
/// entries carried 2025 and every one was accepted.) `at_ms` never runs backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_clock_jumped_back_stamps_chain_time_and_rate_limits_hold() {
    let bus = SimBus::global();
    let c = TestCluster::three().await;
    let siren = device("t-clock-rate", "rate-siren", "siren", &["on", "off"], &[]);
    on_leader(&c, |l| c.node(l).register_device(siren.clone(), None)).await;
    let limit = Policy {
        id: "three-per-5-min".into(),
        emergency_override: None,
        rule: Rule::RateLimitSource {
            max: 3,
            window_secs: 300,
        },
    };
    on_leader(&c, |l| {
        c.node(l).apply_policies(vec![limit.clone()], None, None)
    })
    .await;
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..6 {
        let l = leader(&c).await;
        // Every other intent lands on a leader whose clock jumped a year back.
        c.node(l)
            .wall()
            .set_skew_ms(if n % 2 == 1 { -YEAR_MS } else { 0 });
        match c
            .node(l)
            .submit_intent(intent(
                "ensure_safety",
                &format!("rate-{n}"),
                Urgency::Alert,
            ))
            .await
        {
            Ok(_) => accepted += 1,
            Err(NodeError::Plan(e)) if e.to_string().contains("rate limit") => refused += 1,
            Err(e) => panic!("{e}"),
        }
        c.node(l).wall().set_skew_ms(0);
    }
    assert_eq!((accepted, refused), (3, 3));
    // The chain's times, in index order, never run backwards.
    let l = leader(&c).await;
    let mut recs: Vec<_> = (0..6)
        .filter_map(|n| {
            c.node(l)
                .get_intent(&hearth_core::domain::scoped_intent_id(
                    Some("agent"),
                    &format!("rate-{n}"),
                ))
                .unwrap()
        })
        .collect();
    recs.sort_by_key(|r| r.index);
    assert_eq!(recs.len(), 3, "the three accepted intents are in the chain");
    let times: Vec<u64> = recs.iter().map(|r| r.at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let _ = bus;
    c.shutdown().await;
}

/// 14.6, −6 hours: quiet hours hold on a leader whose clock jumped back into the afternoon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_on_a_leader_whose_clock_jumped_back() {
    let bus = SimBus::global();
    let mut c = TestCluster::three().await;
    let noisy = device(
        "t-clock-quiet",
        "noisy-siren",
        "siren",
        &["on", "off"],
        &["noisy"],
    );
    on_leader(&c, |l| c.node(l).register_device(noisy.clone(), None)).await;
    // Quiet hours: the hour around the real time now (UTC), for noisy devices.
    let now_min = hearth_core::clock::minute_of_day(hearth_devices::now_ms());
    let quiet = Policy {
        id: "night".into(),
        emergency_override: None,
        rule: Rule::QuietHours {
            start_minute: (now_min + 1440 - 30) % 1440,
            end_minute: (now_min + 30) % 1440,
            classes: BTreeSet::new(),
            tags: ["noisy".to_string()].into(),
        },
    };
    on_leader(&c, |l| {
        c.node(l).apply_policies(vec![quiet.clone()], None, None)
    })
    .await;
    // Something recent is in the chain (chain time = now).
    on_leader(&c, |l| {
        c.node(l)
            .submit_intent(intent("report_status", "quiet-0", Urgency::Info))
    })
    .await;
    let l = leader(&c).await;
    c.node(l).wall().set_skew_ms(-6 * 3600 * 1000);
    let res = c
        .node(l)
        .submit_intent(intent("ensure_safety", "quiet-1", Urgency::Alert))
        .await;
    c.node(l).wall().set_skew_ms(0);
    if let Ok(r) = &res {
        assert!(
            r.actions.is_empty(),
            "quiet hours excluded the siren: {r:?}"
        );
        assert!(
            r.plan
                .verdicts
                .iter()
                .any(|v| v.device == "noisy-siren" && !v.included)
        );
    }
    c.write("later", LONG).await;
    c.wait_converged(LONG).await;
    assert!(
        bus.journal("t-clock-quiet").is_empty(),
        "the noisy device must stay quiet: {:?}",
        bus.journal("t-clock-quiet")
    );
    c.shutdown().await;
}

/// 14.6, a hub whose clock is far off (+1 year, or a Pi booted in 1970): its peers' clocks
/// agree with each other and not with it, so it is judged OFF: it hands leadership over, does
/// not campaign, stamps nothing, and says so in its status. Right again, it may lead again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_clock_is_far_off_neither_leads_nor_stamps() {
    let mut c = TestCluster::three().await;
    for skew in [YEAR_MS, -56 * YEAR_MS] {
        let l = leader(&c).await;
        let other = c.hubs().into_iter().find(|h| *h != l).unwrap();
        c.node(l).wall().set_skew_ms(skew);
        // Before the verdict: a wrong-clock leader would stamp; after it, it refuses.
        let v = c.node(l).check_clock(&c.router.probe(l)).await;
        assert!(v.is_off(), "{v:?}");
        let s = c.node(l).status().await;
        assert_eq!(s.health.clock, "OFF");
        assert!(
            s.health.clock_detail.contains("clock"),
            "{}",
            s.health.clock_detail
        );
        // It hands over (each round of the watch tries again, as every 5 s in `serve`); the
        // other hub leads, and keeps leading.
        let deadline = Instant::now() + LONG;
        while !c.is_confirmed_leader(other).await {
            assert!(Instant::now() < deadline, "node {other} never took over");
            c.node(l).check_clock(&c.router.probe(l)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.write("after the hand-over", LONG).await;
        // Nor by campaigning: with the leader's heartbeats to it cut, it does not take over.
        c.router.cut(other, l);
        c.router.cut(3, l);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_ne!(
            c.node(l).status().await.state,
            hearth_node::NodeState::Candidate
        );
        assert!(
            !c.is_confirmed_leader(l).await,
            "a hub with a wrong clock must not lead"
        );
        c.router.heal();
        // The peers see its clock in its status (what they measure their offsets with).
        let seen = c.router.probe(other);
        let s = hearth_node::PeerProbe::status(&seen, l, "")
            .await
            .expect("answers");
        assert!(s.health.now_ms.abs_diff(hearth_devices::now_ms()) > 1000 * 3600);
        // Right again: it campaigns again.
        c.node(l).wall().set_skew_ms(0);
        let v = c.node(l).check_clock(&c.router.probe(l)).await;
        assert!(!v.is_off(), "{v:?}");
        c.wait_converged(LONG).await;
    }
    c.check_invariants();
    c.shutdown().await;
}
