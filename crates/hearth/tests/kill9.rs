//! Durability under `kill -9`: three real `hearth serve` processes, a client writing
//! continuously, the leader (or a follower, or all three at once) killed with SIGKILL in the
//! middle of writes and restarted. Afterwards every node's chain verifies, all are identical,
//! and every write the client saw acknowledged is in it with the acknowledged hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Procs {
    dir: PathBuf,
    addrs: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
}

impl Procs {
    fn new(dir: &Path) -> Self {
        let addrs: BTreeMap<u64, String> = [1u64, 2, 3]
            .iter()
            .map(|i| (*i, format!("127.0.0.1:{}", free_port())))
            .collect();
        let roles = BTreeMap::from([(1u64, "hub"), (2, "hub"), (3, "witness")]);
        for id in [1u64, 2, 3] {
            let mut text = format!(
                "insecure = true\nnode_id = {id}\nrole = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nbootstrap = {}\n",
                roles[&id],
                addrs[&id],
                dir.join(format!("node{id}")).display(),
                id == 1
            );
            for p in [1u64, 2, 3].into_iter().filter(|p| *p != id) {
                text.push_str(&format!(
                    "[[peers]]\nid = {p}\naddr = \"{}\"\nrole = \"{}\"\n",
                    addrs[&p], roles[&p]
                ));
            }
            text.push_str("[timing]\nheartbeat_ms = 50\nelection_min_ms = 300\nelection_max_ms = 600\ncaretaker_patience_ms = 1000\nwrite_timeout_ms = 1500\n");
            std::fs::write(dir.join(format!("node{id}.toml")), text).unwrap();
        }
        Procs {
            dir: dir.to_path_buf(),
            addrs,
            children: BTreeMap::new(),
        }
    }

    fn start(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{id}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["serve", "--config"])
            .arg(self.dir.join(format!("node{id}.toml")))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hearth serve");
        self.children.insert(id, child);
    }

    /// SIGKILL: no shutdown path runs; whatever was not fsynced is lost.
    fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for id in self.children.keys().copied().collect::<Vec<_>>() {
            self.kill9(id);
        }
    }
}

async fn status(addr: &str) -> Option<pb::NodeStatus> {
    let ch = hearth_cluster::grpc::lazy_channel(addr).ok()?;
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(400));
    ClusterClient::new(ch)
        .status(req)
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn leader(addrs: &BTreeMap<u64, String>, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        for (id, a) in addrs {
            if let Some(s) = status(a).await
                && s.node_state() == pb::NodeState::Leader
                && s.role == "hub"
                && s.leader == Some(*id)
            {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_applied(addr: &str, index: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while status(addr)
        .await
        .and_then(|s| s.applied_index)
        .is_none_or(|a| a < index)
    {
        assert!(
            Instant::now() < deadline,
            "{addr} did not apply {index} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loop_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Procs::new(dir.path());
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
                let Ok(ch) = hearth_cluster::grpc::lazy_channel(addr) else {
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
        let mut c = AuditClient::new(hearth_cluster::grpc::lazy_channel(a).unwrap());
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
