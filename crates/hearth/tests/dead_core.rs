//! Dead but running (issue 14.4), with real `hearth serve` processes: the leader's disk fills
//! up (ENOSPC through the store's failpoint), its Raft core stops. The process must exit
//! non-zero (so systemd's `Restart=on-failure` restarts it) instead of staying up answering
//! "the Raft core has stopped" and showing `Leader`; the others go on; once space is back the
//! restarted node catches up and no acknowledged write is lost. Status reports free disk space.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_proto::v1 as pb;
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
            // The full-disk seam: appends fail with ENOSPC while this file exists.
            .env(
                "HEARTH_FAILPOINT_ENOSPC",
                self.dir.join(format!("disk-full-{id}")),
            )
            // Any disk is "nearly full" for node 1: its warning must show before anything fails.
            .env(
                "HEARTH_DISK_WARN_BYTES",
                if id == 1 {
                    u64::MAX.to_string()
                } else {
                    "0".to_string()
                },
            )
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

async fn append(addr: &str, text: &str) -> Result<pb::AppendTestRecordResponse, tonic::Status> {
    let ch = hearth_cluster::grpc::lazy_channel(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
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
    let mut p = Procs::new(dir.path());
    for id in [1, 2, 3] {
        p.start(id);
    }
    let l = leader(&p.addrs, Duration::from_secs(20)).await;
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
        let child = p.children.get_mut(&l).expect("child");
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "node {l}'s core stopped but the process is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!code.success(), "it must exit non-zero: {code:?}");
    p.children.remove(&l);
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
    p.start(l);
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
