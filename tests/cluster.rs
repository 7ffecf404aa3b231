//! In-process cluster scenarios. Each ends with the invariant check: every node's chain
//! verifies and is identical up to the shortest; no acknowledged entry is lost.

use std::time::{Duration, Instant};

use hearth_node::NodeError;
use hearth_tests::TestCluster;

const LONG: Duration = Duration::from_secs(15);
/// Stated liveness bound for a failover with the test timing (elections after 300–600 ms,
/// caretaker retry 1 s): election timeout + leader lease + caretaker campaign + hand-over
/// stay well under this, even when the caretaker's first campaign does not take.
const FAILOVER_BOUND: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_and_chains_agree() {
    let mut c = TestCluster::three().await;
    for i in 0..20 {
        c.write(&format!("record {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    c.check_invariants();
    // The chain holds Raft's own entries too: the initial membership and a leader change.
    let first = c.node(1).links(0, 1).unwrap();
    assert_eq!(first[0].record.kind, hearth_core::EntryKind::Membership);
    assert_eq!(first[1].record.kind, hearth_core::EntryKind::Blank);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_the_other_hub_leads_and_writes_continue() {
    let mut c = TestCluster::three().await;
    for i in 0..5 {
        c.write(&format!("before {i}"), LONG).await;
    }
    let old = c.wait_for_leader(&c.hubs(), LONG).await;
    let other = c.hubs().into_iter().find(|h| *h != old).unwrap();
    let t0 = Instant::now();
    c.stop(old).await;
    let new = c.wait_for_leader(&[other], LONG).await;
    assert_eq!(new, other);
    c.write("after failover", LONG).await;
    println!("failover_ms={}", t0.elapsed().as_millis());
    // The killed leader comes back and catches up from disk and the new leader.
    c.start(old).await.unwrap();
    c.write("after restart", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_commits_nothing_and_its_tail_is_replaced() {
    let mut c = TestCluster::three().await;
    c.write("before", LONG).await;
    let old = c.wait_for_leader(&c.hubs(), LONG).await;
    let ids = c.ids();
    c.router.isolate(old, &ids);

    // The isolated leader cannot commit: the write fails with NO_QUORUM and is not acknowledged.
    let err = c.write_on(old, "from the minority").await.unwrap_err();
    assert!(
        matches!(err, NodeError::NoQuorum(_)),
        "expected NO_QUORUM, got {err}"
    );
    assert!(err.to_string().starts_with("NO_QUORUM"), "{err}");
    let minority_last = c.node(old).log.last_log_id().unwrap().unwrap().index;

    // The majority elects the other hub and commits.
    let other = c.hubs().into_iter().find(|h| *h != old).unwrap();
    assert_eq!(c.wait_for_leader(&[other], LONG).await, other);
    for i in 0..3 {
        c.write_on(other, &format!("majority {i}")).await.unwrap();
    }

    c.router.heal();
    c.wait_converged(LONG).await;
    // The old leader's uncommitted entry was replaced by the majority's.
    let at = c.node(old).links(minority_last, minority_last).unwrap();
    let theirs = c.node(other).links(minority_last, minority_last).unwrap();
    assert_eq!(at, theirs);
    assert!(!hearth_node::node::describe(&at[0].record).contains("from the minority"));
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_to_hub_link_cut_while_both_reach_the_witness() {
    let mut c = TestCluster::three().await;
    c.write("before", LONG).await;
    c.router.cut_both(1, 2);
    // Writes keep committing through whichever hub the witness follows.
    for i in 0..10 {
        c.write(&format!("bridge {i}"), LONG).await;
    }
    c.router.heal();
    c.write("healed", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// docs/DESIGN.md §6, the witness caretaker case: the witness holds committed entries the surviving hub
/// lacks, the leader dies, and no hub can win an election on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_holding_the_newest_log_hands_over_to_a_hub() {
    let mut c = TestCluster::three().await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let other = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    c.router.cut_both(leader, other);
    for i in 0..3 {
        c.write_on(leader, &format!("only leader and witness {i}"))
            .await
            .unwrap();
    }
    let witness_last = c.node(3).log.last_log_id().unwrap().unwrap().index;
    let hub_last = c.node(other).log.last_log_id().unwrap().map(|l| l.index);
    assert!(
        Some(witness_last) > hub_last,
        "the witness must be ahead of the surviving hub"
    );

    let t0 = Instant::now();
    c.stop(leader).await;
    let new = c.wait_for_leader(&[other], FAILOVER_BOUND).await;
    let took = t0.elapsed();
    println!("caretaker_handover_ms={}", took.as_millis());
    assert_eq!(new, other);
    c.write_on(other, "after the caretaker").await.unwrap();
    // The witness never stays leader and never accepts writes.
    assert_ne!(
        c.node(3).status().await.state,
        hearth_node::NodeState::Leader
    );
    c.start(leader).await.unwrap();
    c.router.heal();
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_from_disk_keeps_the_chain_and_serves_again() {
    let mut c = TestCluster::three().await;
    for i in 0..10 {
        c.write(&format!("r{i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let head_before = c.node(1).sm.head().unwrap();
    for id in c.ids() {
        c.stop(id).await;
    }
    for id in c.ids() {
        c.start(id).await.unwrap();
    }
    for id in c.ids() {
        assert_eq!(
            c.node(id).sm.head().unwrap(),
            head_before,
            "node {id} lost its head"
        );
    }
    c.wait_for_leader(&c.hubs(), LONG).await;
    c.write("after restart", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// Opens a stopped node's state machine. A start that just failed in this process may still be
/// letting go of sled's lock (its threads wind down after the error): wait for it, as a node's
/// own start does (`datadir::open_state`), at most 5 s.
async fn open_state(dir: &std::path::Path) -> hearth_store::StateMachine {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match hearth_store::StateMachine::open(dir) {
            Ok(sm) => return sm,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_entry_is_named_and_the_node_refuses_to_serve() {
    let mut c = TestCluster::three().await;
    for i in 0..6 {
        c.write(&format!("r{i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let victim = 2;
    c.stop(victim).await;

    // 1. A stored chain hash altered (the state database): verification names the index.
    let dir = c.data_dir(victim);
    {
        let sm = open_state(&dir.join("state")).await;
        let mut h = sm.hash_at(4).unwrap().unwrap();
        h[0] ^= 1;
        sm.corrupt_hash_for_test(4, h).unwrap();
    }
    let report = hearth_node::node::verify_data_dir(&dir).unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.index()), Some(4));
    match c.start(victim).await {
        Err(hearth_node::StartError::ChainBroken { index, .. }) => assert_eq!(index, 4),
        Err(e) => panic!("wrong error: {e}"),
        Ok(()) => panic!("a node with a broken chain must not serve"),
    }
    {
        let sm = open_state(&dir.join("state")).await;
        let mut h = sm.hash_at(4).unwrap().unwrap();
        h[0] ^= 1;
        sm.corrupt_hash_for_test(4, h).unwrap();
    }
    c.start(victim).await.expect("repaired node starts");
    c.stop(victim).await;

    // 2. A flipped byte inside entry 3 of the Raft log file: refused at open, naming index 3.
    let log_path = dir.join("raft").join(hearth_store::log::LOG_FILE);
    let mut bytes = std::fs::read(&log_path).unwrap();
    let mut off = 0usize;
    for _ in 0..3 {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
    }
    bytes[off + 8 + 2] ^= 0x20; // inside the index field of entry 3
    std::fs::write(&log_path, &bytes).unwrap();
    match c.start(victim).await {
        Err(hearth_node::StartError::Store(hearth_store::StoreError::CorruptLog {
            index, ..
        })) => {
            assert_eq!(index, 3)
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(()) => panic!("a node with a corrupt log must not serve"),
    }
    // The rest of the cluster is unaffected.
    c.write("still serving", LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_answers_no_quorum_and_executes_nothing() {
    let mut c = TestCluster::three().await;
    c.write("before", LONG).await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let before = c.node(leader).sm.head().unwrap();
    for id in c.ids().into_iter().filter(|i| *i != leader) {
        c.stop(id).await;
    }
    let err = c.write_on(leader, "alone").await.unwrap_err();
    assert!(err.to_string().starts_with("NO_QUORUM"), "{err}");
    assert_eq!(
        c.node(leader).sm.head().unwrap(),
        before,
        "nothing may be applied without a quorum"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_appends_nothing() {
    let mut c = TestCluster::three().await;
    c.write("before", LONG).await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let before = c.node(leader).sm.head().unwrap();
    let big = "x".repeat(hearth_node::node::MAX_TEST_RECORD + 1);
    match c.write_on(leader, &big).await {
        Err(NodeError::Invalid { field, .. }) => assert_eq!(field, "text"),
        other => panic!("oversized record must be refused, got {other:?}"),
    }
    assert_eq!(c.node(leader).sm.head().unwrap(), before);
    c.shutdown().await;
}

/// Data directories are never silently re-initialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_nodes_are_refused_and_vote_again_only_after_an_explicit_rejoin() {
    let mut c = TestCluster::three().await;
    c.write("history", LONG).await;
    c.wait_converged(LONG).await;

    // The bootstrap hub wiped: it must not form a second cluster.
    c.stop(1).await;
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    c.start(1).await.unwrap();
    let err = c
        .node(1)
        .bootstrap(&c.router.probe(1), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, hearth_node::StartError::AlreadyFormed { .. }),
        "{err}"
    );
    c.stop(1).await;

    // A follower wiped: it starts and takes the log, but under its old id it never votes
    // until an admin's explicit rejoin admits its new data directory (issue 14.1).
    let leader = c.wait_for_leader(&[2], LONG).await;
    assert_eq!(leader, 2);
    c.stop(3).await;
    std::fs::remove_dir_all(c.data_dir(3)).unwrap();
    c.start(3).await.unwrap();
    c.node(3).check_not_wiped(&c.router.probe(3)).await.unwrap();
    let old = c
        .node(2)
        .admitted_incarnation(3)
        .unwrap()
        .expect("admitted at formation");
    assert_ne!(
        old,
        c.node(3).incarnation,
        "a wiped card has a new incarnation"
    );
    // Caught up (a held node still takes the log and acknowledges it) …
    let target = c.node(2).log.last_log_id().unwrap().unwrap().index;
    wait_until(LONG, || {
        c.node(3)
            .sm
            .applied()
            .unwrap()
            .is_some_and(|l| l.index >= target)
    })
    .await;
    // … and still held: the chain admits the old directory, not this one.
    for _ in 0..20 {
        assert!(
            c.node(3).handler.hold().is_some(),
            "a wiped node voted without a rejoin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = c.node(3).status().await;
    assert!(
        s.hold_reason
            .as_deref()
            .is_some_and(|r| r.contains("hearth cluster rejoin --id 3")),
        "{:?}",
        s.hold_reason
    );
    // The rejoin: only through the leader, naming the person, once.
    let (index, _) = c.node(2).rejoin_member(3, "ana").await.unwrap();
    assert_eq!(
        c.node(2).admitted_incarnation(3).unwrap().as_deref(),
        Some(c.node(3).incarnation.as_str())
    );
    let entry = c
        .node(2)
        .tail(50)
        .unwrap()
        .into_iter()
        .find(|l| l.record.index == index)
        .unwrap();
    let text = hearth_node::describe(&entry.record);
    assert!(
        text.contains("admitted to vote by ana") && text.contains("rejoin"),
        "{text}"
    );
    wait_until(LONG, || c.node(3).handler.hold().is_none()).await;
    let again = c.node(2).rejoin_member(3, "ana").await.unwrap_err();
    assert!(again.to_string().contains("nothing to rejoin"), "{again}");
    let unknown = c.node(2).rejoin_member(9, "ana").await.unwrap_err();
    assert!(unknown.to_string().contains("not a member"), "{unknown}");
    // The careless admin: a rejoin of a member that is down (node 1, stopped above) is refused
    // with what to do, and admits nothing.
    let down = c.node(2).rejoin_member(1, "ana").await.unwrap_err();
    assert!(
        matches!(down, NodeError::NoQuorum(_)) && down.to_string().contains("does not answer"),
        "{down}"
    );
    c.shutdown().await;
}

/// Waits until `f` holds, failing after `within`.
async fn wait_until(within: Duration, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_node_is_refused() {
    let mut c = TestCluster::three().await;
    c.stop(1).await;
    c.stop(2).await;
    // node 2's config now points at node 1's data.
    std::fs::remove_dir_all(c.data_dir(2)).unwrap();
    std::fs::rename(c.data_dir(1), c.data_dir(2)).unwrap();
    match c.start(2).await {
        Err(hearth_node::StartError::WrongNode {
            found, expected, ..
        }) => assert_eq!((found, expected), (1, 2)),
        Err(e) => panic!("wrong error {e}"),
        Ok(()) => panic!("must refuse another node's data"),
    }
    c.shutdown().await;
}

/// The documented way back for a wiped node: a new id, added through the leader, and the old
/// id removed. Ids are never reused; a removal that would leave no quorum is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_witness_is_replaced_under_a_new_id() {
    let mut c = TestCluster::three().await;
    c.write("history", LONG).await;
    c.wait_converged(LONG).await;
    c.stop(3).await;
    std::fs::remove_dir_all(c.data_dir(3)).unwrap();

    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    // Reusing the wiped node's id is refused.
    let err = c
        .node(leader)
        .add_member(3, "127.0.0.1:17003", hearth_node::Role::Witness)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    c.declare(4, hearth_node::Role::Witness);
    c.start(4).await.unwrap();
    c.node(4)
        .check_not_wiped(&c.router.probe(4))
        .await
        .expect("a new id is not a wiped node");
    let (_, voters) = c
        .node(leader)
        .add_member(4, "127.0.0.1:17004", hearth_node::Role::Witness)
        .await
        .unwrap();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    let (_, voters) = c.node(leader).remove_member(3).await.unwrap();
    assert_eq!(voters, vec![1, 2, 4]);
    c.roles.remove(&3);

    // With the other hub down, removing the new witness would leave no quorum: refused.
    let other = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    c.stop(other).await;
    let deadline = Instant::now() + LONG;
    while c.node(leader).reachable_peers().0.contains(&other) {
        assert!(
            Instant::now() < deadline,
            "the leader never noticed node {other} is gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = c.node(leader).remove_member(4).await.unwrap_err();
    assert!(err.to_string().contains("no quorum"), "{err}");
    c.start(other).await.unwrap();
    c.write("after the replacement", LONG).await;
    c.wait_converged(LONG).await;
    c.check_invariants();
    c.shutdown().await;
}

/// Failover, measured: the leader is stopped five times in a row (restarted each time); each
/// time, from the stop to the first write acknowledged by the new leader. Prints every figure
/// and the median; asserts only the liveness bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_times() {
    let mut c = TestCluster::three().await;
    let mut times = Vec::new();
    let mut caretaker_needed = 0;
    for round in 0..5 {
        c.write(&format!("round {round}"), LONG).await;
        let old = c.wait_for_leader(&c.hubs(), LONG).await;
        let other = c.hubs().into_iter().find(|h| *h != old).unwrap();
        let hub_last = c.node(other).log.last_log_id().unwrap().map(|l| l.index);
        let witness_last = c.node(3).log.last_log_id().unwrap().map(|l| l.index);
        if witness_last > hub_last {
            caretaker_needed += 1;
        }
        let t0 = Instant::now();
        c.stop(old).await;
        c.write(&format!("after failover {round}"), FAILOVER_BOUND)
            .await;
        times.push(t0.elapsed().as_millis() as u64);
        c.start(old).await.unwrap();
        c.wait_converged(LONG).await;
    }
    let mut sorted = times.clone();
    sorted.sort_unstable();
    println!(
        "failover_ms={times:?} median={} max={} (witness ahead of the surviving hub in {caretaker_needed} of 5)",
        sorted[2], sorted[4]
    );
    c.check_invariants();
    c.shutdown().await;
}

/// How long a node with a rewritten history may serve after its applied head meets the
/// others' (two cross-check rounds of at most 2 s, plus slack for re-applying).
const FENCE_BOUND: Duration = Duration::from_secs(10);

/// Issue 13 item 5, the exact sequence: stop node 2, change entry 18's payload in
/// `raft-log.bin` and recompute that frame's CRC, delete `state/` (and, as an attacker with the
/// disk would, its `checkpoints.txt`, so the start-time check has nothing to compare), start
/// it. Its chain verifies on its own; the running cross-check finds a majority against it: it
/// is fenced within `FENCE_BOUND` (stops serving audit, intents and checkpoints, stops its Raft
/// core, says so in status and /metrics), and the other nodes name it in their status. On main
/// it served the forged chain with no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_rewritten_history_is_fenced_and_named() {
    let mut c = TestCluster::three().await;
    for i in 0..20 {
        c.write(&format!("record {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let original = c.node(1).links(18, 18).unwrap()[0].clone();
    assert!(matches!(
        hearth_core::domain::Command::decode(&original.record.payload),
        Ok(hearth_core::domain::Command::TestRecord { .. })
    ));
    c.stop(2).await;
    let dir = c.data_dir(2);
    hearth_tests::cluster::forge_log_entry(&dir, 18, |r| {
        r.payload = hearth_core::domain::Command::TestRecord {
            text: "FORGED: the front door was never unlocked".into(),
        }
        .encode();
    });
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let _ = std::fs::remove_file(dir.join(hearth_node::checkpoint::STORE_FILE));
    c.start(2)
        .await
        .expect("the forged log opens: it verifies on its own");
    let t0 = Instant::now();
    c.write("after node 2 returned", LONG).await;

    // Node 2 is fenced within the bound, and says why.
    let fenced = loop {
        if let Some(f) = c.node(2).status().await.chain_fenced {
            break f;
        }
        assert!(
            t0.elapsed() < FENCE_BOUND,
            "node 2 still serves a rewritten chain after {:?}: {:?}",
            t0.elapsed(),
            c.node(2).chain_check()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("node 2 fenced after {:?}: {fenced}", t0.elapsed());
    assert!(fenced.contains("disagrees with the majority"), "{fenced}");
    assert!(
        fenced.contains("node 1 at index") && fenced.contains("node 3 at index"),
        "{fenced}"
    );
    // It no longer serves that chain: audit, export, intents, checkpoints are refused.
    for err in [
        c.node(2).verify().map(|_| ()).unwrap_err(),
        c.node(2).export_lines().map(|_| ()).unwrap_err(),
        c.node(2).tail(5).map(|_| ()).unwrap_err(),
        c.node(2).get_intent("x").map(|_| ()).unwrap_err(),
        c.node(2).checkpoint_now().await.map(|_| ()).unwrap_err(),
    ] {
        assert!(err.to_string().contains("FENCED"), "{err}");
    }
    let metrics =
        hearth_node::metrics::render(c.node(2), &hearth_node::metrics::Counters::default()).await;
    assert!(
        metrics.contains("hearth_chain_fenced{node=\"2\"} 1"),
        "{metrics}"
    );
    // The others name node 2 in their status (once each has compared).
    for id in [1, 3] {
        let deadline = Instant::now() + FENCE_BOUND;
        loop {
            let s = c.node(id).status().await;
            if s.chain_disagreeing.iter().any(|(p, _)| *p == 2) {
                assert!(s.chain_fenced.is_none());
                assert!(c.node(id).chain_check().majority_with_us);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} does not name node 2: {:?}",
                c.node(id).chain_check()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The majority keeps serving the true history.
    c.roles.remove(&2);
    c.write("still serving", LONG).await;
    assert_eq!(c.node(1).links(18, 18).unwrap()[0].hash, original.hash);
    c.shutdown().await;
}

/// A follower forwards writes to the leader it hears from. When the leader's public API does
/// not answer (a connection accepted and never served: a hung process, a path cut between
/// the two), the follower says NO_QUORUM naming the leader within the one forward deadline —
/// a membership change waited 120 s for it before — and nothing changes. A leader whose
/// address refuses connections (stopped) is named at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_to_a_leader_that_does_not_answer_is_no_quorum_within_the_deadline() {
    use hearth_proto::v1 as pb;
    use hearth_proto::v1::cluster_server::Cluster;
    use hearth_proto::v1::policies_server::Policies;

    let c = TestCluster::three().await;
    let leader = c.wait_for_leader(&c.hubs(), LONG).await;
    let follower = c.hubs().into_iter().find(|h| *h != leader).unwrap();
    let addr = c.config(leader).listen.clone();
    let hole = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            open.push(s);
        }
    });
    let api = hearth_node::api::Api::new(
        c.node(follower).clone(),
        std::sync::Arc::new(hearth_node::metrics::Counters::default()),
    );
    let deadline = hearth_node::api::forward_deadline(&c.node(follower).config().timing);
    let voters = c.node(leader).voters();
    let policies = c.node(leader).policies().unwrap();
    let named = format!("to the leader, node {leader} at {addr}");
    let check = |what: &str, took: Duration, r: Result<(), tonic::Status>| {
        let s = r.expect_err(what);
        assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
        assert!(s.message().starts_with("NO_QUORUM"), "{what}: {s:?}");
        assert!(s.message().contains(&named), "{what}: {s:?}");
        assert!(
            took >= deadline - Duration::from_millis(100) && took < deadline + LONG / 5,
            "{what}: answered after {took:?}, the forward deadline is {deadline:?}"
        );
    };

    let t0 = Instant::now();
    let add = pb::AddMemberRequest {
        id: 9,
        addr: "127.0.0.1:17009".into(),
        role: "hub".into(),
    };
    let r = tokio::time::timeout(deadline + LONG, api.add_member(tonic::Request::new(add)))
        .await
        .expect("the forward has a deadline");
    check("add_member", t0.elapsed(), r.map(drop));

    let t0 = Instant::now();
    let remove = pb::RemovePolicyRequest { id: "quiet".into() };
    let r = tokio::time::timeout(
        deadline + LONG,
        api.remove_policy(tonic::Request::new(remove)),
    )
    .await
    .expect("the forward has a deadline");
    check("remove_policy", t0.elapsed(), r.map(drop));

    assert_eq!(c.node(leader).voters(), voters);
    assert_eq!(c.node(leader).policies().unwrap(), policies);

    // Stopped: nothing listens at the leader's address any more.
    held.abort();
    let _ = held.await;
    let t0 = Instant::now();
    let text = pb::AppendTestRecordRequest {
        text: "through a follower".into(),
    };
    let s = api
        .append_test_record(tonic::Request::new(text))
        .await
        .expect_err("the leader's address refuses connections");
    assert!(t0.elapsed() < deadline, "{:?}", t0.elapsed());
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(s.message().starts_with("NO_QUORUM"), "{s:?}");
    assert!(s.message().contains(&named), "{s:?}");
    c.check_invariants();
    c.shutdown().await;
}
