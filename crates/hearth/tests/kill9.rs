//! Durability under `kill -9`: three real `hearth serve` processes, a client writing
//! continuously, the leader (or a follower, or all three at once) killed with SIGKILL in the
//! middle of writes and restarted. Afterwards every node's chain verifies, all are identical,
//! and every write the client saw acknowledged is in it with the acknowledged hash.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;

mod common;

use common::{Procs, leader, wait_applied};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loop_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Procs::new(dir.path(), common::THREE);
    for id in [1, 2, 3] {
        p.start(id);
    }
    leader(&p.addrs, Duration::from_secs(20)).await;

    // A client writing continuously through every node in turn, logging what was acknowledged.
    let acked: Arc<Mutex<Vec<(u64, String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), p.addrs.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let addr = &addrs[&(1 + n % 3)];
                n += 1;
                let text = format!("w{n}");
                let Ok(ch) = common::channel(addr) else {
                    continue;
                };
                let mut req =
                    tonic::Request::new(pb::AppendTestRecordRequest { text: text.clone() });
                req.set_timeout(Duration::from_secs(3));
                match ClusterClient::new(ch).append_test_record(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        acked.lock().unwrap().push((r.index, r.hash, text));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    let acks = || acked.lock().unwrap().len();
    let wait_acks = |more: usize| {
        let start = acks();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while acks() < start + more {
                assert!(Instant::now() < deadline, "writes stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    for cycle in 0..6 {
        wait_acks(5).await;
        let l = leader(&p.addrs, Duration::from_secs(20)).await;
        let victim = if cycle % 2 == 0 {
            l
        } else {
            [1, 2, 3].into_iter().find(|i| *i != l).unwrap()
        };
        p.kill9(victim);
        wait_acks(5).await; // the survivors keep committing
        p.start(victim);
    }
    // All three at once, mid-write (the household breaker trips).
    wait_acks(5).await;
    for id in [1, 2, 3] {
        p.kill9(id);
    }
    for id in [1, 2, 3] {
        p.start(id);
    }
    wait_acks(10).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let last = acked.iter().map(|a| a.0).max().unwrap();
    for a in p.addrs.values() {
        wait_applied(a, last, Duration::from_secs(30)).await;
    }
    let mut chains = Vec::new();
    for (id, a) in &p.addrs {
        let mut c = AuditClient::new(common::channel(a).unwrap());
        let mut s = c.export(pb::ExportRequest {}).await.unwrap().into_inner();
        let mut lines = Vec::new();
        while let Some(chunk) = s.next().await {
            lines.extend(chunk.unwrap().lines);
        }
        let r = hearth_core::export::verify_export(lines.iter().map(String::as_str)).unwrap();
        assert!(r.failure.is_none(), "node {id}: {:?}", r.failure);
        let by_index: BTreeMap<u64, String> = lines[1..]
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["index"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        chains.push(by_index);
    }
    let shortest = chains.iter().map(|c| c.len()).min().unwrap();
    for c in &chains[1..] {
        assert!(
            chains[0].iter().take(shortest).eq(c.iter().take(shortest)),
            "chains differ"
        );
    }
    for (index, hash, text) in &acked {
        for c in &chains {
            assert_eq!(
                c.get(index),
                Some(hash),
                "acknowledged {text} at {index} is missing or different"
            );
        }
    }
    println!(
        "kill9: {} acknowledged writes, 7 kill cycles, chains of {shortest} entries agree",
        acked.len()
    );

    // Offline verification of a stopped node's data directory, before and after corruption.
    p.kill9(2);
    let data = dir.path().join("node2");
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = data.join("raft").join("raft-log.bin");
    let mut bytes = std::fs::read(&log).unwrap();
    // Flip a payload byte of the first command entry after index 2 (its frame's CRC breaks).
    let mut off = 0usize;
    let mut index = 0u64;
    loop {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if index >= 2 && len > 25 + 5 {
            break;
        }
        off += 8 + len;
        index += 1;
    }
    bytes[off + 8 + 25 + 2] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("FAILED at index {index}")), "{text}");
}
