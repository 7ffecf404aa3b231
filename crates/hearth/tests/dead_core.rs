//! Dead but running (issue 14.4), with real `hearth serve` processes: the leader's disk fills
//! up (ENOSPC through the store's failpoint), its Raft core stops. The process must exit
//! non-zero (so systemd's `Restart=on-failure` restarts it) instead of staying up answering
//! "the Raft core has stopped" and showing `Leader`; the others go on; once space is back the
//! restarted node catches up and no acknowledged write is lost. Status reports free disk space.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;

mod common;

use common::{Procs, leader, status, wait_applied};

/// Starts node `id` with the full-disk seam: appends fail with ENOSPC while `disk-full-{id}`
/// exists in the cluster's folder; and any disk is "nearly full" for node 1: its warning must
/// show before anything fails.
fn start(p: &mut Procs, id: u64) {
    let seam = p.dir.join(format!("disk-full-{id}"));
    p.start_with(id, |c| {
        c.env("HEARTH_FAILPOINT_ENOSPC", seam).env(
            "HEARTH_DISK_WARN_BYTES",
            if id == 1 {
                u64::MAX.to_string()
            } else {
                "0".to_string()
            },
        );
    });
}

async fn append(addr: &str, text: &str) -> Result<pb::AppendTestRecordResponse, tonic::Status> {
    let ch = common::channel(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(pb::AppendTestRecordRequest {
        text: text.to_string(),
    });
    req.set_timeout(Duration::from_secs(3));
    ClusterClient::new(ch)
        .append_test_record(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_exits_nonzero_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Procs::new(dir.path(), common::THREE);
    for id in [1, 2, 3] {
        start(&mut p, id);
    }
    let l = leader(&p.addrs, Duration::from_secs(20)).await;
    // The cluster this test faults is the formed one: the peers vote (under load the first
    // write could otherwise meet a leader whose peers had not yet joined: NO_QUORUM).
    p.wait_voting(&[2, 3], Duration::from_secs(20)).await;
    let mut acked = Vec::new();
    for n in 0..5 {
        let r = append(&p.addrs[&l], &format!("before-{n}"))
            .await
            .expect("write");
        acked.push(r.index);
    }
    let s = status(&p.addrs[&l]).await.expect("status");
    let health = s.health.expect("status carries health");
    assert!(health.disk_free_bytes.is_some_and(|b| b > 0), "{health:?}");
    assert_eq!(health.core_stopped, "");
    assert_eq!(health.disk_warning.is_empty(), l != 1, "{health:?}");
    let one = status(&p.addrs[&1])
        .await
        .and_then(|s| s.health)
        .expect("health");
    assert!(one.disk_warning.contains("MiB free"), "{one:?}");
    let log1 = std::fs::read_to_string(dir.path().join("node1.log")).unwrap();
    assert!(log1.contains("DISK_LOW"), "{log1}");

    // The leader's disk is full: its next append fails.
    std::fs::write(dir.path().join(format!("disk-full-{l}")), b"").unwrap();
    let _ = append(&p.addrs[&l], "into a full disk").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(st) = p.exited(l) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "node {l}'s core stopped but the process is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!code.success(), "it must exit non-zero: {code:?}");
    let log = std::fs::read_to_string(dir.path().join(format!("node{l}.log"))).unwrap();
    assert!(log.contains("CORE_STOPPED"), "{log}");

    // The other two go on.
    let others: BTreeMap<u64, String> = p
        .addrs
        .iter()
        .filter(|(i, _)| **i != l)
        .map(|(i, a)| (*i, a.clone()))
        .collect();
    let l2 = leader(&others, Duration::from_secs(20)).await;
    let r = append(&p.addrs[&l2], "while it is down")
        .await
        .expect("write");
    acked.push(r.index);

    // Space is back; the service manager restarts it; it catches up.
    std::fs::remove_file(dir.path().join(format!("disk-full-{l}"))).unwrap();
    start(&mut p, l);
    wait_applied(&p.addrs[&l], r.index, Duration::from_secs(20)).await;
    let s = status(&p.addrs[&l]).await.expect("status");
    assert_ne!(s.node_state(), pb::NodeState::Stopped);
    let max = *acked.iter().max().unwrap();
    for a in p.addrs.values() {
        wait_applied(a, max, Duration::from_secs(20)).await;
    }
    // One chain: every node converges on the same head.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut heads = Vec::new();
        for a in p.addrs.values() {
            heads.push(status(a).await.map(|s| (s.applied_index, s.head_hash)));
        }
        if heads.windows(2).all(|w| w[0] == w[1]) && heads[0].is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "heads differ: {heads:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
