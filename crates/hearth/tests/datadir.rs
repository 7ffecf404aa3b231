//! Issue 14.1 and 14.2 on three real `hearth serve` processes: a reflashed witness and a hub
//! restored from an older copy of its data directory. Each sequence counts the acknowledged
//! writes the cluster lost (goal: none) and checks that the stale side never led.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;

mod common;

use common::Procs;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// One write through `addr` (forwarded to the leader if needed): (index, hash) if acknowledged.
async fn write(addr: &str, text: &str) -> Option<(u64, String)> {
    let ch = common::channel(addr).ok()?;
    let mut req = tonic::Request::new(pb::AppendTestRecordRequest {
        text: text.to_string(),
    });
    req.set_timeout(Duration::from_secs(3));
    let r = ClusterClient::new(ch)
        .append_test_record(req)
        .await
        .ok()?
        .into_inner();
    Some((r.index, r.hash))
}

async fn write_within(addr: &str, text: &str, within: Duration) -> Option<(u64, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(a) = write(addr, text).await {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until every node in `addrs` answers that all of them are voters, none is held, and
/// all have applied the same index: the cluster is formed and converged. (Formation adds the
/// peers after the bootstrap hub has formed alone; a write acknowledged before that is held by
/// hub 1 alone, and a scenario that then kills hub 1 tests nothing.)
async fn wait_formed(addrs: &BTreeMap<u64, String>, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        let mut applied = Vec::new();
        for a in addrs.values() {
            match common::status(a).await {
                Some(s) => {
                    let voters = s.members.iter().filter(|m| m.voter).count();
                    last = format!(
                        "{a}: {voters} voters, state {}, applied {:?}",
                        s.state, s.applied_index
                    );
                    if voters == addrs.len() && !s.state.contains("held") {
                        applied.push(s.applied_index);
                    }
                }
                None => last = format!("{a}: no answer"),
            }
        }
        if applied.len() == addrs.len() && applied.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not form within {within:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The exported chain of the node at `addr`, by index.
async fn chain(addr: &str) -> Option<BTreeMap<u64, String>> {
    let mut c = AuditClient::new(common::channel(addr).ok()?);
    let mut s = c.export(pb::ExportRequest {}).await.ok()?.into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = s.next().await {
        lines.extend(chunk.ok()?.lines);
    }
    Some(
        lines
            .get(1..)?
            .iter()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((v["index"].as_u64()?, v["hash"].as_str()?.to_string()))
            })
            .collect(),
    )
}

/// Acknowledged writes missing from (or replaced in) the chain of the node at `addr`, once it
/// holds at least the last acknowledged index (waits up to `within`).
async fn lost(addr: &str, acked: &[(u64, String)], within: Duration) -> usize {
    let last = acked.iter().map(|a| a.0).max().unwrap_or(0);
    let deadline = Instant::now() + within;
    loop {
        if let Some(c) = chain(addr).await
            && (c.keys().next_back().is_some_and(|i| *i >= last) || Instant::now() > deadline)
        {
            return acked.iter().filter(|(i, h)| c.get(i) != Some(h)).count();
        }
        assert!(Instant::now() < deadline, "{addr} never answered an export");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LONG: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(5);

/// 14.1: hub 1 down; 10 writes acknowledged by hub 2 and the witness; the witness reflashed;
/// hub 2 killed; the witness and hub 1 started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflashed_witness_does_not_elect_a_stale_hub() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Procs::new(dir.path(), common::THREE);
    for id in [1, 2, 3] {
        p.start(id);
    }
    // Hub 2 and the witness vote before anything is faulted (a write acknowledged while they
    // were still learners, and hub 1 killed then, left a cluster that could never elect).
    p.wait_voting(&[2, 3], LONG).await;
    let a = p.addrs.clone();
    let mut acked = vec![
        write_within(&a[&1], "before", LONG)
            .await
            .expect("first write"),
    ];
    wait_formed(&a, LONG).await;
    p.kill9(1);
    for i in 0..10 {
        acked.push(
            write_within(&a[&2], &format!("acked by hub 2 and the witness {i}"), LONG)
                .await
                .expect("write with hub 1 down"),
        );
    }
    p.kill9(3);
    std::fs::remove_dir_all(p.data(3)).unwrap();
    p.kill9(2);
    p.start(3);
    p.start(1);
    let stale = write_within(&a[&1], "written by the stale hub", QUIET).await;
    println!("14.1 (processes): the stale hub acknowledged {stale:?}");
    assert_eq!(
        stale, None,
        "hub 1 led with the vote of a reflashed witness"
    );
    p.start(2);
    acked.push(
        write_within(&a[&2], "after hub 2 returned", LONG)
            .await
            .expect("hub 2 leads"),
    );
    let mut worst = 0;
    for id in [1, 2, 3] {
        worst = worst.max(lost(&a[&id], &acked, LONG).await);
    }
    println!("14.1 (processes): acknowledged writes lost: {worst}");
    assert_eq!(worst, 0);

    // Caught up, the reflashed witness still does not vote, and says what ends the hold.
    let s = common::status(&a[&3]).await.expect("the witness answers");
    assert!(s.vote_held, "the reflashed witness votes without a rejoin");
    assert!(
        s.hold_reason.contains("hearth cluster rejoin --id 3"),
        "{}",
        s.hold_reason
    );
    // An admin's explicit rejoin, through any node (a follower forwards it to the leader).
    let follower = common::leader(&a, LONG).await % 2 + 1;
    let rejoin = |via: &str| {
        common::hearth()
            .args(["cluster", "rejoin", "--id", "3", "--addr", via])
            .output()
            .expect("run hearth")
    };
    let o = rejoin(&a[&follower]);
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    println!("14.1 (processes): `hearth cluster rejoin --id 3` said: {said}");
    assert!(o.status.success() && said.contains("admitted"), "{said}");
    let deadline = Instant::now() + LONG;
    while common::status(&a[&3]).await.is_none_or(|s| s.vote_held) {
        assert!(
            Instant::now() < deadline,
            "the witness stayed held after the rejoin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second rejoin has nothing to do, and says so (exit non-zero).
    let o = rejoin(&a[&1]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && said.contains("nothing to rejoin"),
        "{said}"
    );
}

/// 14.2: witness down; 20 writes acknowledged by both hubs; hub 2's data directory restored
/// from an older copy; hub 1 killed; the witness and hub 2 started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restored_from_a_backup_does_not_lead_without_the_newer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Procs::new(dir.path(), common::THREE);
    for id in [1, 2, 3] {
        p.start(id);
    }
    let a = p.addrs.clone();
    let mut acked = vec![
        write_within(&a[&1], "early", LONG)
            .await
            .expect("first write"),
    ];
    // Let every node apply it, then take the household's backup of hub 2 (stopped).
    wait_formed(&a, LONG).await;
    p.kill9(2);
    let backup = dir.path().join("backup2");
    copy_dir(&p.data(2), &backup);
    p.start(2);
    wait_formed(&a, LONG).await;
    p.kill9(3);
    for i in 0..20 {
        acked.push(
            write_within(&a[&1], &format!("acked by both hubs {i}"), LONG)
                .await
                .expect("write with the witness down"),
        );
    }
    p.kill9(2);
    std::fs::remove_dir_all(p.data(2)).unwrap();
    copy_dir(&backup, &p.data(2));
    p.kill9(1);
    p.start(3);
    p.start(2);
    let stale = write_within(&a[&2], "written by the restored hub", QUIET).await;
    println!("14.2 (processes): the restored hub acknowledged {stale:?}");
    assert_eq!(stale, None, "the restored hub led without the 20 writes");
    p.start(1);
    acked.push(
        write_within(&a[&1], "after hub 1 returned", LONG)
            .await
            .expect("hub 1 leads"),
    );
    let mut worst = 0;
    for id in [1, 2, 3] {
        worst = worst.max(lost(&a[&id], &acked, LONG).await);
    }
    println!("14.2 (processes): acknowledged writes lost: {worst}");
    assert_eq!(worst, 0);
}
