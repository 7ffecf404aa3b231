//! Every topology a household runs, in process with the fault router: one hub; two hubs with
//! assisted failover (a person promotes the survivor); two hubs upgraded with a witness; and
//! membership changes (replace a dead hub under load, hand leadership over).
//!
//! The "gateway" of the assisted-failover cases is a real TCP listener on loopback (reachable)
//! or a loopback port nothing listens on (unreachable).

use std::time::{Duration, Instant};

use hearth_node::{NodeError, Role};
use hearth_tests::TestCluster;
use hearth_tests::cluster::ASSIST_DOWN_AFTER_MS;

const LONG: Duration = Duration::from_secs(15);
/// Nothing accepts connections there: a refused connect does not count as reachable.
const DEAD_GATEWAY: &str = "127.0.0.1:1";

async fn wait_assist(c: &TestCluster, id: u64, state: &str) -> hearth_node::node::AssistView {
    let deadline = Instant::now() + LONG;
    loop {
        let s = c.node(id).status().await;
        if let Some(a) = &s.assist
            && a.state == state
        {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never reached {state}: {:?}",
            s.assist
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn voters(c: &TestCluster, id: u64) -> Vec<u64> {
    c.node(id).voters()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hub_is_its_own_quorum_and_restarts_from_disk() {
    let mut c = TestCluster::with_roles(&[(1, Role::Hub)]).await;
    for i in 0..5 {
        c.write(&format!("alone {i}"), LONG).await;
    }
    let s = c.node(1).status().await;
    assert_eq!(s.members.len(), 1);
    assert_eq!(s.assist, None, "no assisted failover for a single hub");
    c.stop(1).await;
    c.start(1).await.unwrap();
    c.wait_for_leader(&[1], LONG).await;
    c.write("after restart", LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// Two hubs, node 1 leads; node 2 keeps a reachable gateway. Node 1 dies: node 2 commits
/// nothing, goes PEER_SUSPECT then PEER_DOWN with a proposal, and never promotes itself. A
/// person promotes it: it leads alone, its chain verifies, and the first entry after the last
/// shared one records operator, reason and that last entry. Node 1 returns: refused, no fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_survivor_proposes_promotion_and_a_person_promotes_it() {
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway.local_addr().unwrap().to_string();
    let mut c = TestCluster::with_roles(&[(1, Role::Hub), (2, Role::Hub)]).await;
    c.set_assist_targets(2, vec![gw.clone()]);
    c.stop(2).await;
    c.start(2).await.unwrap();
    let leader = c.wait_for_leader(&[1, 2], LONG).await;
    if leader != 1 {
        c.node(leader).transfer_leadership(1).await.unwrap();
        c.wait_for_leader(&[1], LONG).await;
    }
    for i in 0..10 {
        c.write(&format!("shared {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    assert_eq!(wait_assist(&c, 2, "HEALTHY").await.checks.len(), 0);
    // Healthy: promotion is refused even with --force.
    let err = c
        .node(2)
        .request_promotion("ana", "testing", true)
        .unwrap_err();
    assert!(err.to_string().contains("peer answers"), "{err}");

    c.stop(1).await;
    let t0 = Instant::now();
    wait_assist(&c, 2, "PEER_SUSPECT").await;
    // Without --force a suspect peer is not enough.
    let err = c
        .node(2)
        .request_promotion("ana", "too early", false)
        .unwrap_err();
    assert!(err.to_string().contains("PEER_SUSPECT"), "{err}");
    let down = wait_assist(&c, 2, "PEER_DOWN").await;
    assert!(t0.elapsed() >= Duration::from_millis(ASSIST_DOWN_AFTER_MS - 200));
    assert!(down.destructive, "the lost peer led: it may hold more");
    assert!(
        down.checks.iter().any(|c| c.contains(&gw)),
        "the proposal names the target that answered: {:?}",
        down.checks
    );
    let metrics =
        hearth_node::metrics::render(c.node(2), &hearth_node::metrics::Counters::default()).await;
    assert!(
        metrics.contains("hearth_assist_state{node=\"2\",state=\"PEER_DOWN\"} 1"),
        "{metrics}"
    );
    // Nothing promoted by itself, and nothing commits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(voters(&c, 2), vec![1, 2]);
    let err = c.node(2).append_test_record("alone?").await.unwrap_err();
    assert!(matches!(err, NodeError::NoQuorum(_)), "{err}");

    // A person promotes node 2 (the harness restarts it, as `serve` does).
    let last_shared = c.node(2).log.last_log_id().unwrap().unwrap();
    let p = c
        .node(2)
        .request_promotion("ana", "the pi in the hall is dead", false)
        .unwrap();
    assert_eq!(p.removed, vec![1]);
    assert_eq!(p.assessed, "PEER_DOWN");
    assert_eq!(
        p.last,
        Some((last_shared.leader_id.term, last_shared.index))
    );
    c.stop(2).await;
    c.start(2).await.unwrap();
    assert!(c.node(2).promoted.is_some());
    c.wait_for_leader(&[2], LONG).await;
    assert_eq!(voters(&c, 2), vec![2]);
    c.roles.remove(&1);
    c.write("after promotion", LONG).await;
    c.check_invariants();

    // The act is the first entry after the last shared one, and names all of it.
    let first_new = c
        .node(2)
        .links(last_shared.index + 1, last_shared.index + 1)
        .unwrap();
    let rec = &first_new[0].record;
    match hearth_core::domain::Command::decode(&rec.payload).unwrap() {
        hearth_core::domain::Command::Promote { promotion } => {
            assert_eq!(promotion.operator, "ana");
            assert_eq!(promotion.reason, "the pi in the hall is dead");
            assert_eq!(
                promotion.last,
                Some((last_shared.leader_id.term, last_shared.index))
            );
            let shared_hash = c
                .node(2)
                .links(last_shared.index, last_shared.index)
                .unwrap()[0]
                .hash;
            assert_eq!(promotion.last_hash, Some(hex::encode(shared_hash)));
        }
        other => panic!("expected the promotion record, got {other:?}"),
    }
    assert!(hearth_node::node::describe(rec).contains("promoted to a one-node cluster by \"ana\""));
    let v = c.node(2).verify().unwrap();
    assert!(v.failure.is_none());

    // The old primary returns with its old membership: refused, it commits nothing, and node 2's
    // chain never takes anything from it.
    let head_before = c.node(2).sm.head().unwrap();
    c.declare(1, Role::Hub);
    c.start(1).await.unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let s = c.node(1).status().await;
        if let Some((by, m)) = s.refused_by.first() {
            assert_eq!(*by, 2);
            assert!(m.contains("new id"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "node 1 was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = c.node(1).append_test_record("split?").await.unwrap_err();
    assert!(matches!(err, NodeError::NoQuorum(_)), "{err}");
    assert!(err.to_string().contains("node 2 refuses node 1"), "{err}");
    c.write("node 2 still serves", LONG).await;
    assert!(c.node(2).sm.head().unwrap() > head_before);
    assert_eq!(voters(&c, 2), vec![2]);
    // Node 1's applied chain is a prefix of node 2's: one history.
    let (h1, _) = c.node(1).sm.head().unwrap().unwrap();
    let mine = c.node(1).links(0, h1).unwrap();
    let theirs = c.node(2).links(0, h1).unwrap();
    assert_eq!(
        mine.iter().map(|l| l.hash).collect::<Vec<_>>(),
        theirs.iter().map(|l| l.hash).collect::<Vec<_>>()
    );
    c.stop(1).await;
    c.roles.remove(&1);

    // The documented way back: the machine's data is moved away and it joins under a new id.
    let err = c
        .node(2)
        .add_member(1, "127.0.0.1:17001", Role::Hub)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    c.declare(3, Role::Hub);
    c.start(3).await.unwrap();
    let (_, v) = c
        .node(2)
        .add_member(3, "127.0.0.1:17003", Role::Hub)
        .await
        .unwrap();
    assert_eq!(v, vec![2, 3]);
    c.write("two hubs again", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    assert_eq!(wait_assist(&c, 3, "HEALTHY").await.state, "HEALTHY");
    c.shutdown().await;
}

/// Two hubs; the standby loses the primary AND its gateway: it is probably the one cut off. It
/// says UNCERTAIN, proposes nothing, commits nothing; promotion needs --force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_standby_that_loses_the_gateway_too_holds() {
    let mut c = TestCluster::with_roles(&[(1, Role::Hub), (2, Role::Hub)]).await;
    c.set_assist_targets(2, vec![DEAD_GATEWAY.to_string()]);
    c.stop(2).await;
    c.start(2).await.unwrap();
    c.write("shared", LONG).await;
    c.wait_converged(LONG).await;
    let ids = c.ids();
    c.router.isolate(2, &ids);
    let a = wait_assist(&c, 2, "UNCERTAIN").await;
    assert!(
        a.detail.contains("probably the one cut off"),
        "{}",
        a.detail
    );
    assert!(a.checks.is_empty());
    let err = c.node(2).request_promotion("bo", "no", false).unwrap_err();
    assert!(err.to_string().contains("UNCERTAIN"), "{err}");
    let err = c.node(2).append_test_record("alone?").await.unwrap_err();
    assert!(matches!(err, NodeError::NoQuorum(_)), "{err}");
    assert_eq!(voters(&c, 2), vec![1, 2]);
    // Healed: healthy again, and the pair commits.
    c.router.heal();
    wait_assist(&c, 2, "HEALTHY").await;
    c.write("healed", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// The upgrade path: two hubs, then a witness is added (learner, then voter); from then on
/// losing the leading hub fails over by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_plus_a_witness_fail_over_automatically() {
    let mut c = TestCluster::with_roles(&[(1, Role::Hub), (2, Role::Hub)]).await;
    for i in 0..5 {
        c.write(&format!("pair {i}"), LONG).await;
    }
    assert!(c.node(1).status().await.assist.is_some());
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    c.declare(3, Role::Witness);
    c.start(3).await.unwrap();
    let (_, v) = c
        .node(leader)
        .add_member(3, "127.0.0.1:17003", Role::Witness)
        .await
        .unwrap();
    assert_eq!(v, vec![1, 2, 3]);
    assert!(
        c.node(1).status().await.assist.is_none(),
        "three voters: no assisted failover any more"
    );
    let other = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    let t0 = Instant::now();
    c.stop(leader).await;
    c.wait_for_leader(&[other], LONG).await;
    c.write("after automatic failover", LONG).await;
    println!("upgrade_failover_ms={}", t0.elapsed().as_millis());
    c.start(leader).await.unwrap();
    c.write("all three", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// A hub dies; under a steady stream of writes it is replaced by a new hub under a new id (the
/// dead one's id is refused). Every acknowledged write survives, and the new hub can lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hub_is_replaced_under_load() {
    let mut c = TestCluster::three().await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let dead = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    c.write("before", LONG).await;
    c.stop(dead).await;

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let node = c.node(leader).clone();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let acks_reach = |n: usize| {
        let count = count.clone();
        async move {
            let deadline = Instant::now() + LONG;
            while count.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the load stopped committing");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let load = {
        let (stop, count) = (stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let text = format!("load {i}");
                if let Ok(a) = node.append_test_record(&text).await {
                    acked.push(hearth_tests::cluster::Ack {
                        index: a.index,
                        hash: a.hash,
                        text,
                    });
                    count.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    acks_reach(10).await;
    // Reusing the dead hub's id is refused.
    let err = c
        .node(leader)
        .replace_member(dead, dead, "127.0.0.1:17009", Role::Hub)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    c.declare(4, Role::Hub);
    c.start(4).await.unwrap();
    let (_, v) = c
        .node(leader)
        .replace_member(dead, 4, "127.0.0.1:17004", Role::Hub)
        .await
        .unwrap();
    let mut expect: Vec<u64> = vec![leader, 3, 4];
    expect.sort();
    assert_eq!(v, expect);
    let so_far = count.load(Ordering::SeqCst);
    acks_reach(so_far + 10).await;
    stop.store(true, Ordering::SeqCst);
    let acked = load.await.unwrap();
    c.acked.extend(acked);
    c.roles.remove(&dead);

    // The replacement takes over when the leader goes.
    c.stop(leader).await;
    c.wait_for_leader(&[4], LONG).await;
    c.write("the new hub leads", LONG).await;
    c.start(leader).await.unwrap();
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_is_handed_to_a_named_hub_never_to_the_witness() {
    let mut c = TestCluster::three().await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let other = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    let err = c.node(leader).transfer_leadership(3).await.unwrap_err();
    assert!(err.to_string().contains("witness"), "{err}");
    let err = c.node(leader).transfer_leadership(9).await.unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
    let (l, _) = c.node(leader).transfer_leadership(other).await.unwrap();
    assert_eq!(l, other);
    c.wait_for_leader(&[other], LONG).await;
    c.write("after the hand-over", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// Issue 13 item 1, the exact sequence: two hubs, both with a reachable gateway (as `hearth dev
/// --topology two` with an `[assist]` target); the leading hub dies; the survivor is promoted;
/// the old hub starts again and is refused by it. Then `cluster promote` and `cluster promote
/// --force` on the old hub are refused, naming the peer's refusal: no second one-node cluster,
/// nothing pending, and a restart (as `serve` would do) leaves it a refused follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_hub_cannot_force_a_second_promotion() {
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway.local_addr().unwrap().to_string();
    let mut c = TestCluster::with_roles(&[(1, Role::Hub), (2, Role::Hub)]).await;
    for id in [1, 2] {
        c.set_assist_targets(id, vec![gw.clone()]);
        c.stop(id).await;
    }
    for id in [1, 2] {
        c.start(id).await.unwrap();
    }
    let leader = c.wait_for_leader(&[1, 2], LONG).await;
    if leader != 1 {
        c.node(leader).transfer_leadership(1).await.unwrap();
        c.wait_for_leader(&[1], LONG).await;
    }
    for i in 0..5 {
        c.write(&format!("shared {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;

    // The leading hub dies; the survivor is promoted as documented (through the API's path:
    // it asks the dead peer for its status first, which does not answer).
    c.stop(1).await;
    wait_assist(&c, 2, "PEER_DOWN").await;
    c.node(2)
        .request_promotion_probed(
            "ana",
            "the pi in the hall is dead",
            false,
            &c.router.probe(2),
        )
        .await
        .unwrap();
    c.stop(2).await;
    c.start(2).await.unwrap();
    c.wait_for_leader(&[2], LONG).await;
    c.roles.remove(&1);
    c.write("after promotion", LONG).await;
    let head_2 = c.node(2).sm.head().unwrap();

    // The old hub starts again: refused, as documented.
    c.declare(1, Role::Hub);
    c.start(1).await.unwrap();
    let deadline = Instant::now() + LONG;
    while c.node(1).status().await.refused_by.is_empty() {
        assert!(Instant::now() < deadline, "node 1 was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It watches past the down window: its gateway answers and its peer never does, so on its
    // own it looks like PEER_DOWN, but its status says promotion is refused, and why.
    let a = wait_assist(&c, 1, "PEER_DOWN").await;
    assert!(
        a.checks
            .iter()
            .any(|c| c.starts_with("PROMOTION REFUSED") && c.contains("node 2 answered")),
        "{a:?}"
    );
    // `cluster promote` and `cluster promote --force` on it: both refused, naming the evidence.
    // (On main both were accepted: `Promotion { node: 1, removed: [2], assessed: "PEER_DOWN" … }`.)
    for force in [false, true] {
        let err = c
            .node(1)
            .request_promotion("bo", "the other hub looks dead", force)
            .unwrap_err();
        assert!(matches!(err, NodeError::Refused(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("alive or ahead"), "{text}");
        assert!(
            text.contains("node 2 answered this hub with a refusal"),
            "{text}"
        );
        assert!(text.contains("promoted"), "{text}");
    }
    // Through the API's path, which first asks the peer for its status: the peer answers, and
    // says it was promoted.
    let err = c
        .node(1)
        .request_promotion_probed("bo", "the other hub looks dead", true, &c.router.probe(1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("node 2 answered a status request just now"),
        "{text}"
    );
    assert!(
        text.contains("voters [2]: it was promoted to a one-node cluster"),
        "{text}"
    );
    assert!(
        !c.data_dir(1)
            .join(hearth_node::assist::PENDING_FILE)
            .exists(),
        "a refused promotion left a pending file"
    );
    // Restarted anyway (as `serve` would after an accepted one): still a refused follower of
    // the old pair, committing nothing; node 2 alone serves the one history.
    c.stop(1).await;
    c.start(1).await.unwrap();
    assert!(c.node(1).promoted.is_none());
    let deadline = Instant::now() + LONG;
    while voters(&c, 1).is_empty() {
        assert!(
            Instant::now() < deadline,
            "node 1 never loaded its membership"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(voters(&c, 1), vec![1, 2]);
    let err = c.node(1).append_test_record("split?").await.unwrap_err();
    assert!(matches!(err, NodeError::NoQuorum(_)), "{err}");
    c.write("node 2 still serves", LONG).await;
    assert!(c.node(2).sm.head().unwrap() > head_2);
    assert_eq!(voters(&c, 2), vec![2]);
    c.stop(1).await;
    c.shutdown().await;
}
