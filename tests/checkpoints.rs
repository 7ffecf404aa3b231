//! Signed, witnessed checkpoints in an in-process cluster of two hubs and a witness: a hub's
//! checkpoint on demand is cosigned by the witness; the hub's stored checkpoints prove its
//! export; a tampered or a consistently rewritten export is caught; the witness refuses forked
//! heads (loudly: counted in /metrics), old indices and unapplied ones, and keeps its last
//! cosigned head across a restart.

use std::time::{Duration, Instant};

use hearth_cluster::CosignClient;
use hearth_core::Record;
use hearth_core::chain::{ZERO_HASH, link_hash};
use hearth_core::checkpoint::{
    Checkpoint, CosignReply, CosignRequest, Keypair, Refusal, Trust, parse_file, parse_hex,
    verify_export_against,
};
use hearth_core::export::{ExportHeader, ExportLine};
use hearth_node::checkpoint::{KEY_FILE, WitnessOutcome};
use hearth_tests::TestCluster;

const LONG: Duration = Duration::from_secs(15);

async fn cluster_with(records: usize) -> TestCluster {
    let mut c = TestCluster::three().await;
    for i in 0..records {
        c.write(&format!("record {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    c
}

/// The hub's checkpoint key, read from its data directory as an operator could.
fn hub_key(c: &TestCluster, id: u64) -> Keypair {
    let text = std::fs::read_to_string(c.data_dir(id).join(KEY_FILE)).unwrap();
    Keypair::from_seed(&parse_hex::<32>("seed", text.trim_end()).unwrap())
}

/// Parses an export into (header, lines).
fn parse_export(lines: &[String]) -> (ExportHeader, Vec<ExportLine>) {
    let header = serde_json::from_str(&lines[0]).unwrap();
    let entries = lines[1..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (header, entries)
}

fn render(header: &ExportHeader, entries: &[ExportLine]) -> Vec<String> {
    std::iter::once(serde_json::to_string(header).unwrap())
        .chain(entries.iter().map(|e| serde_json::to_string(e).unwrap()))
        .collect()
}

fn check(lines: &[String], cps: &[Checkpoint]) -> hearth_core::checkpoint::CheckedExport {
    verify_export_against(lines.iter().map(String::as_str), cps, &Trust::default()).unwrap()
}

/// The index of the first test record's entry in an export.
fn first_command(entries: &[ExportLine]) -> usize {
    entries.iter().position(|e| e.kind == "command").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_checkpoints_are_cosigned_and_prove_the_export() {
    let mut c = cluster_with(5).await;
    let hub = c.node(1).clone();
    let witness_key = c.node(3).checkpoints.public_key();

    // On demand: signed by hub 1, cosigned by witness 3, over hub 1's applied head.
    let m = hub.checkpoint_now().await.unwrap();
    assert!(m.fresh);
    assert_eq!(m.witness, WitnessOutcome::Cosigned { witness: 3 });
    let cp1 = m.checkpoint.clone();
    assert_eq!(Some((cp1.index, cp1.head)), hub.sm.head().unwrap());
    assert_eq!(cp1.signer.node, 1);
    assert_eq!(cp1.signer.key, hub.checkpoints.public_key());
    let w = cp1.witness.as_ref().expect("cosignature");
    assert_eq!((w.node, w.key), (3, witness_key));
    cp1.verify_signatures().unwrap();
    assert_eq!(
        c.node(3).checkpoints.last_cosigned(1).await,
        Some((cp1.index, cp1.head))
    );
    // Public keys are in the status.
    assert_eq!(
        c.node(3).status().await.checkpoint_key,
        hex::encode(witness_key)
    );

    // Nothing new applied: the same checkpoint, nothing signed again.
    let again = hub.checkpoint_now().await.unwrap();
    assert!(!again.fresh);
    assert_eq!(again.checkpoint, cp1);

    // More entries, a second checkpoint extends the first; the other hub signs its own too.
    for i in 0..5 {
        c.write(&format!("more {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let cp2 = hub.checkpoint_now().await.unwrap().checkpoint;
    assert!(cp2.index > cp1.index && cp2.witness.is_some());
    let m2 = c.node(2).checkpoint_now().await.unwrap();
    assert_eq!(m2.witness, WitnessOutcome::Cosigned { witness: 3 });
    // A witness signs nothing of its own.
    assert!(c.node(3).checkpoint_now().await.is_err());

    // The hub's store holds both, in the documented format, and survives a restart.
    let stored = parse_file(&hub.checkpoints.export_text().unwrap()).unwrap();
    assert_eq!(stored, vec![cp1.clone(), cp2.clone()]);
    drop(hub);
    c.stop(1).await;
    c.start(1).await.unwrap();
    assert_eq!(c.node(1).checkpoints.last().await, Some(cp2.clone()));
    c.wait_converged(LONG).await;

    // The export verifies against the checkpoints, with the file's keys or pinned ones.
    let lines = c.node(1).export_lines().unwrap();
    let r = check(&lines, &stored);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.matched, 2);
    let pinned = Trust {
        pinned: [witness_key].into(),
    };
    let r = verify_export_against(lines.iter().map(String::as_str), &stored, &pinned).unwrap();
    assert!(r.ok(), "{r:?}");
    let stranger = Trust {
        pinned: [Keypair::from_seed(&[42; 32]).public()].into(),
    };
    let r = verify_export_against(lines.iter().map(String::as_str), &stored, &stranger).unwrap();
    assert_eq!(r.failure.unwrap().index, cp1.index);

    let (header, entries) = parse_export(&lines);
    let victim = first_command(&entries);
    let victim_index = entries[victim].index;
    assert!(victim_index < cp1.index);

    // Tampered: one entry's payload changed, hashes left alone → fails at that entry.
    let mut tampered = entries.clone();
    tampered[victim].payload = hex::encode(br#"{"type":"test_record","text":"forged"}"#);
    let r = check(&render(&header, &tampered), &stored);
    assert_eq!(
        r.export.failure.as_ref().map(|f| f.index()),
        Some(victim_index)
    );
    assert!(!r.ok());

    // Rewritten consistently: the same change, every later hash recomputed with the chain's
    // own code → the export verifies on its own, and fails at the first checkpoint.
    let mut rewritten = entries.clone();
    rewritten[victim].payload = tampered[victim].payload.clone();
    let mut prev = if victim == 0 {
        ZERO_HASH
    } else {
        parse_hex::<32>("hash", &entries[victim - 1].hash).unwrap()
    };
    for e in &mut rewritten[victim..] {
        let rec = Record {
            index: e.index,
            term: e.term,
            leader: e.leader,
            kind: hearth_core::EntryKind::from_name(&e.kind).unwrap(),
            payload: hex::decode(&e.payload).unwrap(),
        };
        prev = link_hash(&prev, &rec.encode());
        *e = ExportLine::new(&rec, &prev);
    }
    let rewritten = render(&header, &rewritten);
    assert!(
        hearth_core::export::verify_export(rewritten.iter().map(String::as_str))
            .unwrap()
            .failure
            .is_none(),
        "the rewrite is consistent"
    );
    let r = check(&rewritten, &stored);
    assert_eq!(r.export.failure, None);
    let f = r.failure.expect("the checkpoint catches the rewrite");
    assert_eq!(f.index, cp1.index);
    assert!(f.to_string().contains("rewritten"), "{f}");

    c.check_invariants();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_refuses_forks_old_and_unapplied_indices() {
    let mut c = cluster_with(4).await;
    let good = c.node(1).checkpoint_now().await.unwrap().checkpoint;
    assert!(good.witness.is_some());
    let key = hub_key(&c, 1);
    assert_eq!(key.public(), good.signer.key);
    let router = c.router.clone();
    let send = |cp: Checkpoint, from: u64| {
        let client = router.cosign_client();
        async move {
            client
                .cosign(
                    from,
                    3,
                    "",
                    CosignRequest {
                        checkpoint: cp.to_line(),
                    },
                )
                .await
                .expect("the witness answers")
        }
    };
    let signed = |index: u64, head: [u8; 32]| Checkpoint {
        index,
        head,
        signer: key.signature(1, index, &head),
        witness: None,
    };
    let witness = c.node(3).clone();
    let forks = || {
        witness
            .checkpoints
            .forks_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let metric = |n: u64| format!("hearth_checkpoint_forks_refused_total{{node=\"3\"}} {n}\n");
    let metrics = || {
        let w = witness.clone();
        async move { hearth_node::metrics::render(&w, &hearth_node::metrics::Counters::default()).await }
    };
    assert!(metrics().await.contains(&metric(0)));

    // New entries so that a later index exists on the witness.
    for i in 0..3 {
        c.write(&format!("later {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let (head_index, head) = witness.sm.head().unwrap().unwrap();
    assert!(head_index > good.index);

    // A forked head at an applied, newer index: refused as a FORK, counted, nothing cosigned.
    let mut forged = head;
    forged[0] ^= 0xff;
    let reply = send(signed(head_index, forged), 1).await;
    let CosignReply::Refused(r) = reply else {
        panic!("a fork was cosigned: {reply:?}")
    };
    assert!(r.is_fork(), "{r:?}");
    assert!(
        matches!(r, Refusal::Fork { index, .. } if index == head_index),
        "{r:?}"
    );
    assert!(r.to_string().starts_with("FORK"), "{r}");
    assert_eq!(forks(), 1);
    assert!(metrics().await.contains(&metric(1)));
    assert_eq!(
        witness.checkpoints.last_cosigned(1).await,
        Some((good.index, good.head))
    );

    // The same index as the last cosigned one, and an older one: refused, not forks.
    for index in [good.index, good.index - 1] {
        let own = witness.sm.hash_at(index).unwrap().unwrap();
        match send(signed(index, own), 1).await {
            CosignReply::Refused(Refusal::NotNewer { index: i, last }) => {
                assert_eq!((i, last), (index, good.index));
            }
            other => panic!("index {index}: {other:?}"),
        }
    }
    // An index not yet applied: refused after a bounded wait, not a fork.
    let t0 = Instant::now();
    match send(signed(head_index + 1000, head), 1).await {
        CosignReply::Refused(r @ Refusal::NotYetApplied { .. }) => assert!(!r.is_fork()),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A checkpoint signed by another key, or sent by another node: refused.
    let stranger = Keypair::from_seed(&[9; 32]);
    let bad = Checkpoint {
        signer: stranger.signature(1, head_index, &head),
        ..signed(head_index, head)
    };
    let mut wrong_sig = bad.clone();
    wrong_sig.signer.key = key.public();
    assert!(matches!(
        send(wrong_sig, 1).await,
        CosignReply::Refused(Refusal::Invalid(_))
    ));
    assert!(matches!(
        send(signed(head_index, head), 2).await,
        CosignReply::Refused(Refusal::Invalid(_))
    ));
    // A hub does not cosign.
    let hub_reply = c
        .router
        .cosign_client()
        .cosign(
            1,
            2,
            "",
            CosignRequest {
                checkpoint: signed(head_index, head).to_line(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        hub_reply,
        CosignReply::Refused(Refusal::Invalid(_))
    ));
    assert_eq!(forks(), 1);
    assert_eq!(
        witness.checkpoints.last_cosigned(1).await,
        Some((good.index, good.head))
    );

    // The witness keeps its last cosigned head across a restart, and still cosigns a real
    // extension of it.
    drop(witness);
    c.stop(3).await;
    c.start(3).await.unwrap();
    assert_eq!(
        c.node(3).checkpoints.last_cosigned(1).await,
        Some((good.index, good.head))
    );
    c.wait_converged(LONG).await;
    let m = c.node(1).checkpoint_now().await.unwrap();
    assert_eq!(m.witness, WitnessOutcome::Cosigned { witness: 3 });
    assert!(m.checkpoint.index > good.index);

    // The witness's own chain no longer holds a head it cosigned (here: its record of it is
    // changed while it is stopped). Since issue 13 item 5 a node checks its chain against the
    // heads it stored at start: the witness refuses to start, naming the index and the file
    // (it used to start and refuse every hub's checkpoint as a fork).
    c.stop(3).await;
    let path = c.data_dir(3).join(hearth_node::checkpoint::WITNESS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen(&hex::encode(m.checkpoint.head), &hex::encode([7u8; 32]), 1);
    assert_ne!(changed, text);
    std::fs::write(&path, &changed).unwrap();
    match c.start(3).await {
        Err(hearth_node::StartError::ChainBroken { index, reason }) => {
            assert_eq!(index, m.checkpoint.index, "{reason}");
            assert!(
                reason.contains(hearth_node::checkpoint::WITNESS_FILE),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(()) => panic!("the witness started with a cosigned head its chain does not hold"),
    }
    // Its record restored, it starts and cosigns again.
    std::fs::write(&path, &text).unwrap();
    c.start(3).await.unwrap();
    c.write("after the witness restarted", LONG).await;
    c.wait_converged(LONG).await;
    let m2 = c.node(2).checkpoint_now().await.unwrap();
    assert_eq!(m2.witness, WitnessOutcome::Cosigned { witness: 3 });

    c.check_invariants();
    c.shutdown().await;
}

/// Waits until hub `id` has signed a checkpoint at or after `index`; returns it.
async fn wait_checkpoint(c: &TestCluster, id: u64, index: u64, within: Duration) -> Checkpoint {
    let deadline = Instant::now() + within;
    loop {
        if let Some(cp) = c.node(id).checkpoints.last().await
            && cp.index >= index
        {
            return cp;
        }
        assert!(
            Instant::now() < deadline,
            "hub {id} signed no checkpoint at or after {index} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_sign_on_their_schedule_by_count_and_by_time() {
    let mut c = cluster_with(6).await;
    // Hub 2 signs every 5 entries (time trigger off); hub 1 every second (count trigger off).
    c.set_checkpoint_schedule(2, 5, 0);
    c.set_checkpoint_schedule(1, 0, 1);
    for id in [2, 1] {
        c.stop(id).await;
        c.start(id).await.unwrap();
    }
    c.wait_for_leader(&c.hubs(), LONG).await;
    // By count, from the start of the chain: more than 5 entries already, so hub 2 signs at
    // its first tick, and the witness cosigns.
    let first = wait_checkpoint(&c, 2, 0, LONG).await;
    assert_eq!(first.signer.node, 2);
    assert!(first.witness.is_some(), "{first:?}");
    // Fewer than 5 new entries: nothing new signed.
    for i in 0..3 {
        c.write(&format!("scheduled {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.node(2).checkpoints.last().await, Some(first.clone()));
    // Five or more: signed at the next tick.
    for i in 3..6 {
        c.write(&format!("scheduled {i}"), LONG).await;
    }
    c.wait_converged(LONG).await;
    let head = c.node(2).sm.head().unwrap().unwrap().0;
    assert!(head >= first.index + 6);
    let second = wait_checkpoint(&c, 2, first.index + 5, LONG).await;
    assert!(second.witness.is_some(), "{second:?}");
    let all = parse_file(&c.node(2).checkpoints.export_text().unwrap()).unwrap();
    assert_eq!(all, vec![first, second]);
    // By time: hub 1 signs its advanced head within about a second.
    let cp1 = wait_checkpoint(&c, 1, head, Duration::from_secs(5)).await;
    assert!(cp1.witness.is_some(), "{cp1:?}");
    // Nothing new applied: no new checkpoint by time either (unless an entry, e.g. a leader
    // change under load, was applied meanwhile).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stored = parse_file(&c.node(1).checkpoints.export_text().unwrap()).unwrap();
    if c.node(1).sm.head().unwrap().unwrap().0 == cp1.index {
        assert_eq!(stored.last(), Some(&cp1), "{stored:?}");
    }
    assert!(stored.windows(2).all(|w| w[1].index > w[0].index));
    c.check_invariants();
    c.shutdown().await;
}

/// Issue 13 item 5, the exact sequence: node 2 (a hub) has signed a checkpoint, cosigned by the
/// witness; it is stopped, entry 18's payload is changed in `raft-log.bin` with the frame's CRC
/// recomputed, `state/` is deleted, and it is started: it refuses to start, naming the index of
/// the stored head its chain no longer reaches (the checkpoint over entry 18) and
/// `checkpoints.txt`. (On main it started, re-applied the forged entry and served it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_is_refused_at_start_naming_the_index_and_the_file() {
    let mut c = cluster_with(20).await;
    let m = c.node(2).checkpoint_now().await.unwrap();
    assert_eq!(m.witness, WitnessOutcome::Cosigned { witness: 3 });
    let signed = m.checkpoint.index;
    assert!(signed > 18, "the checkpoint covers entry 18: {signed}");
    let before = c.node(2).links(18, 18).unwrap()[0].record.clone();
    let original = match hearth_core::domain::Command::decode(&before.payload).unwrap() {
        hearth_core::domain::Command::TestRecord { text } => text,
        other => panic!("entry 18 is not a test record: {other:?}"),
    };
    c.stop(2).await;
    let dir = c.data_dir(2);
    let forged = hearth_tests::cluster::forge_log_entry(&dir, 18, |r| {
        r.payload = hearth_core::domain::Command::TestRecord {
            text: "FORGED: the front door was never unlocked".into(),
        }
        .encode();
    });
    assert_ne!(forged.payload, before.payload);
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    // The forged log opens and, alone, verifies: only the stored heads can tell.
    match c.start(2).await {
        Err(hearth_node::StartError::ChainBroken { index, reason }) => {
            assert_eq!(index, signed, "{reason}");
            assert!(
                reason.contains(&format!("at or before {signed}")),
                "{reason}"
            );
            assert!(reason.contains("checkpoints.txt"), "{reason}");
            assert!(reason.contains("cosigned by witness 3"), "{reason}");
            assert!(reason.contains("raft-log.bin"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(()) => panic!(
            "node 2 started on a rewritten history (entry 18 was {original:?}) and serves it"
        ),
    }
    // The rest of the cluster is unaffected.
    c.roles.remove(&2);
    c.write("still serving", LONG).await;
    c.shutdown().await;
}
