//! The same three-node cluster over real gRPC on loopback: every node is a full `serve`
//! (Raft transport, public API, health, reflection). Clients use the public API only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_node::{NodeConfig, Role};
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;
use tokio::sync::oneshot;

use hearth_tests::free_port;

struct Cluster {
    metrics: BTreeMap<u64, u16>,
    addrs: BTreeMap<u64, String>,
    stops: BTreeMap<u64, oneshot::Sender<()>>,
    tasks: BTreeMap<u64, tokio::task::JoinHandle<()>>,
    configs: BTreeMap<u64, NodeConfig>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let roles = [(1u64, Role::Hub), (2, Role::Hub), (3, Role::Witness)];
        let addrs: BTreeMap<u64, String> = roles
            .iter()
            .map(|(id, _)| (*id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let metrics: BTreeMap<u64, u16> = roles.iter().map(|(id, _)| (*id, free_port())).collect();
        let members: Vec<(u64, Role, String)> = roles
            .iter()
            .map(|(id, role)| (*id, *role, addrs[id].clone()))
            .collect();
        let configs = hearth_node::config::local_cluster(dir.path(), &members)
            .into_iter()
            .map(|b| {
                let cfg = b
                    .timing(hearth_tests::cluster::test_timing())
                    // Plain text here; tests/security.rs runs the same over mTLS with tokens.
                    .insecure();
                let cfg = cfg.build().unwrap();
                let id = cfg.node_id;
                let cfg = NodeConfig {
                    metrics_listen: Some(format!("127.0.0.1:{}", metrics[&id])),
                    ..cfg
                };
                cfg.validate().unwrap();
                (id, cfg)
            })
            .collect();
        Cluster {
            metrics,
            addrs,
            stops: BTreeMap::new(),
            tasks: BTreeMap::new(),
            configs,
            _dir: dir,
        }
    }

    fn start(&mut self, id: u64) {
        let (tx, rx) = oneshot::channel();
        let cfg = self.configs[&id].clone();
        self.stops.insert(id, tx);
        self.tasks.insert(
            id,
            tokio::spawn(async move {
                if let Err(e) = hearth_node::server::serve(cfg, async move {
                    let _ = rx.await;
                })
                .await
                {
                    panic!("node {id} failed: {e}");
                }
            }),
        );
    }

    async fn stop(&mut self, id: u64) {
        if let Some(tx) = self.stops.remove(&id) {
            let _ = tx.send(());
        }
        if let Some(t) = self.tasks.remove(&id) {
            t.await.unwrap();
        }
    }

    fn client(&self, id: u64) -> ClusterClient<tonic::transport::Channel> {
        ClusterClient::new(hearth_cluster::grpc::lazy_channel(&self.addrs[&id]).unwrap())
    }

    async fn status(&self, id: u64) -> Option<pb::NodeStatus> {
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        self.client(id)
            .status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until every running node names the same leader, and that leader says it leads.
    async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.stops.keys() {
                leaders.push(self.status(*id).await.and_then(|s| s.leader));
            }
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && self.stops.contains_key(l)
                && self
                    .status(*l)
                    .await
                    .is_some_and(|s| s.node_state() == pb::NodeState::Leader)
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn append(&self, via: u64, text: &str, within: Duration) -> pb::AppendTestRecordResponse {
        let deadline = Instant::now() + within;
        loop {
            match self
                .client(via)
                .append_test_record(pb::AppendTestRecordRequest { text: text.into() })
                .await
            {
                Ok(r) => return r.into_inner(),
                Err(s) => assert!(Instant::now() < deadline, "append via {via} failed: {s}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn export(&self, id: u64, to: &Path) -> Vec<String> {
        let mut c = AuditClient::new(hearth_cluster::grpc::lazy_channel(&self.addrs[&id]).unwrap());
        let mut s = c.export(pb::ExportRequest {}).await.unwrap().into_inner();
        let mut lines = Vec::new();
        while let Some(chunk) = s.next().await {
            lines.extend(chunk.unwrap().lines);
        }
        std::fs::write(to, lines.join("\n") + "\n").unwrap();
        lines
    }

    /// Waits until every node answers, none holds its vote, none has a notice waiting for the
    /// chain, and all applied the same index.
    async fn wait_settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut applied = Vec::new();
            for id in self.stops.keys() {
                if let Some(s) = self.status(*id).await
                    && !s.state.contains("held")
                    && s.health.as_ref().is_some_and(|h| h.notices.is_empty())
                {
                    applied.push(s.applied_index);
                }
            }
            if applied.len() == self.stops.len() && applied.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_applied(&self, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        for id in self.stops.keys() {
            loop {
                if self
                    .status(*id)
                    .await
                    .and_then(|s| s.applied_index)
                    .is_some_and(|a| a >= index)
                {
                    break;
                }
                assert!(Instant::now() < deadline, "node {id} did not apply {index}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn python_verify(path: &Path) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/verify_audit_export.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 runs (it is part of the test environment)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_serve_forward_export_and_fail_over() {
    hearth_tests::init_tracing();
    let mut c = Cluster::new();
    for id in [1, 2, 3] {
        c.start(id);
    }
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    // Formed: every node votes and the chain carries their join notices (the leader appends
    // them by itself), so the writes below are the chain's last entries.
    c.wait_settled(Duration::from_secs(15)).await;

    // Health service answers (so grpcurl and orchestrators can probe).
    let mut health = tonic_health_client(&c.addrs[&follower]).await;
    assert_eq!(health, 1, "SERVING");

    // A write sent to a follower is forwarded to the leader.
    let mut last = c
        .append(follower, "via a follower", Duration::from_secs(10))
        .await;
    assert_eq!(last.leader, leader);
    for i in 0..10 {
        last = c
            .append(follower, &format!("record {i}"), Duration::from_secs(10))
            .await;
    }
    c.wait_applied(last.index, Duration::from_secs(10)).await;

    // The metrics endpoint reports the leader and the committed writes.
    let page = http_get(c.metrics[&leader], "/metrics").await;
    assert!(
        page.contains(&format!("hearth_is_leader{{node=\"{leader}\"}} 1")),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "hearth_applied_index{{node=\"{leader}\"}} {}",
            last.index
        )),
        "{page}"
    );
    assert!(
        http_get(c.metrics[&leader], "/other")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // Bad input: an oversized record is refused with INVALID_ARGUMENT.
    let err = c
        .client(leader)
        .append_test_record(pb::AppendTestRecordRequest {
            text: "x".repeat(5000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // Exports of every node verify, in Rust and with the independent Python script, and agree.
    let dir = tempfile::tempdir().unwrap();
    let mut exports = Vec::new();
    for id in [1, 2, 3] {
        let path = dir.path().join(format!("node{id}.jsonl"));
        let lines = c.export(id, &path).await;
        let r = hearth_core::export::verify_export(lines.iter().map(String::as_str)).unwrap();
        assert!(r.failure.is_none(), "node {id}: {:?}", r.failure);
        assert_eq!(r.last_index, Some(last.index));
        let (ok, out) = python_verify(&path);
        assert!(ok, "python verifier on node {id}: {out}");
        exports.push(lines[1..].to_vec());
    }
    assert!(
        exports.windows(2).all(|w| w[0] == w[1]),
        "nodes exported different chains"
    );

    // A tampered export fails at the right index, in both verifiers.
    let path = dir.path().join("node1.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let victim = 5; // line 6 = index 5
    let mut e: serde_json::Value = serde_json::from_str(&lines[victim + 1]).unwrap();
    e["payload"] = serde_json::Value::String(hex::encode(
        b"{\"type\":\"test_record\",\"text\":\"forged\"}",
    ));
    lines[victim + 1] = e.to_string();
    let forged = dir.path().join("forged.jsonl");
    std::fs::write(&forged, lines.join("\n")).unwrap();
    let (ok, out) = python_verify(&forged);
    assert!(!ok && out.contains(&format!("index {victim}")), "{out}");
    let r = hearth_core::export::verify_export(lines.iter().map(String::as_str)).unwrap();
    assert_eq!(r.failure.map(|f| f.index()), Some(victim as u64));

    // Over real gRPC: the leading hub signs a checkpoint on demand, the witness cosigns it
    // (Raft.Cosign), the hub's checkpoint file proves its export, the keys are in the status.
    let mut audit =
        AuditClient::new(hearth_cluster::grpc::lazy_channel(&c.addrs[&leader]).unwrap());
    let cp = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(cp.fresh && cp.cosigned && !cp.fork, "{cp:?}");
    assert_eq!(cp.index, last.index);
    let mut s = audit
        .export_checkpoints(pb::ExportCheckpointsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = s.next().await {
        for l in chunk.unwrap().lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    let cps = hearth_core::checkpoint::parse_file(&text).unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].to_line(), cp.line);
    let witness_key = c.status(3).await.unwrap().checkpoint_key;
    assert_eq!(
        cps[0].witness.as_ref().map(|w| hex::encode(w.key)),
        Some(witness_key)
    );
    let lines = c.export(leader, &dir.path().join("cp.jsonl")).await;
    let r = hearth_core::checkpoint::verify_export_against(
        lines.iter().map(String::as_str),
        &cps,
        &Default::default(),
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    let page = http_get(c.metrics[&3], "/metrics").await;
    assert!(
        page.contains("hearth_checkpoints_cosigned_total{node=\"3\"} 1")
            && page.contains("hearth_checkpoint_forks_refused_total{node=\"3\"} 0"),
        "{page}"
    );
    // A witness signs no checkpoint of its own.
    let err = AuditClient::new(hearth_cluster::grpc::lazy_channel(&c.addrs[&3]).unwrap())
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    // Kill the leader: the other hub leads and writes continue, through any node.
    let t0 = Instant::now();
    c.stop(leader).await;
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    assert_ne!(new_leader, 3, "the witness must not stay leader");
    let after = c.append(3, "after failover", Duration::from_secs(20)).await;
    println!("grpc_failover_ms={}", t0.elapsed().as_millis());
    assert!(after.index > last.index);
    health = tonic_health_client(&c.addrs[&new_leader]).await;
    assert_eq!(health, 1);

    // The old leader returns and catches up; all chains agree.
    c.start(leader);
    c.wait_applied(after.index, Duration::from_secs(20)).await;
    let mut heads = Vec::new();
    for id in [1, 2, 3] {
        let lines = c
            .export(id, &dir.path().join(format!("final{id}.jsonl")))
            .await;
        let r = hearth_core::export::verify_export(lines.iter().map(String::as_str)).unwrap();
        assert!(r.failure.is_none());
        heads.push((r.last_index, r.head));
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

/// Asks the standard gRPC health service; returns the serving status number (1 = SERVING).
async fn tonic_health_client(addr: &str) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    let mut h = HealthClient::new(hearth_cluster::grpc::lazy_channel(addr).unwrap());
    h.check(tonic_health::pb::HealthCheckRequest {
        service: "hearth.v1.Cluster".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .status
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Intents through the public API only: register and submit through a follower (forwarded),
/// watch the progress stream, retry with the same key elsewhere, and get clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_over_grpc_forwarded_watched_and_idempotent() {
    use hearth_proto::v1::devices_client::DevicesClient;
    use hearth_proto::v1::intents_client::IntentsClient;
    hearth_tests::init_tracing();
    let mut c = Cluster::new();
    for id in [1, 2, 3] {
        c.start(id);
    }
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = [1, 2].into_iter().find(|i| *i != leader).unwrap();
    let ch = |id: u64| hearth_cluster::grpc::lazy_channel(&c.addrs[&id]).unwrap();

    let manifest = pb::DeviceManifest {
        id: "front-door".into(),
        name: "Front door".into(),
        location: "home/hall".into(),
        tags: vec!["escape_route".into()],
        actuators: [(
            "lock".to_string(),
            pb::StateList {
                states: vec!["locked".into(), "unlocked".into()],
            },
        )]
        .into(),
        emergency_capable: true,
        emergency_actions: Default::default(),
        adapter_kind: "sim".into(),
        adapter_target: "local:grpc-intents".into(),
        ..Default::default()
    };
    DevicesClient::new(ch(follower))
        .register(manifest.clone())
        .await
        .unwrap();
    let mut bad = manifest.clone();
    bad.adapter_kind = "telepathy".into();
    let e = DevicesClient::new(ch(follower))
        .register(bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("adapter_kind"), "{e}");

    let req = pb::SubmitIntentRequest {
        class: "control_access".into(),
        urgency: "alert".into(),
        subject: "leaving home".into(),
        location: "home".into(),
        context: [("state".to_string(), "locked".to_string())].into(),
        idempotency_key: "grpc-lock-1".into(),
        source: "phone".into(),
        dry_run: false,
    };
    let v = IntentsClient::new(ch(follower))
        .submit(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.actions.len(), 1);
    let mut stream = IntentsClient::new(ch(follower))
        .watch(pb::GetIntentRequest { id: v.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut stages = Vec::new();
    while let Some(ev) = stream.next().await {
        stages.push(ev.unwrap().stage);
    }
    assert_eq!(stages, ["accepted", "dispatched", "outcome", "done"]);

    // The same key and body through the witness: the original intent, nothing runs again.
    let again = IntentsClient::new(ch(3))
        .submit(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.id.clone(), again.index), (v.id.clone(), v.index));
    let journal = hearth_devices::SimBus::global().journal("grpc-intents");
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].command.sender, leader);

    let mut other = req.clone();
    other.subject = "something else".into();
    let e = IntentsClient::new(ch(leader))
        .submit(other)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
    let mut unknown = req.clone();
    unknown.class = "teleport".into();
    unknown.idempotency_key = "grpc-2".into();
    let e = IntentsClient::new(ch(follower))
        .submit(unknown)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let mut bad_urgency = req.clone();
    bad_urgency.urgency = "panic".into();
    let e = IntentsClient::new(ch(follower))
        .explain(bad_urgency)
        .await
        .unwrap_err();
    assert!(e.message().contains("urgency"), "{e}");
    let plan = IntentsClient::new(ch(3))
        .explain(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.status, "dry_run");
    assert!(
        plan.verdicts
            .iter()
            .any(|v| v.device == "front-door" && v.included)
    );
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

/// `Cluster.Restart` over gRPC: the request is recorded in the chain (naming who asked), the
/// node restarts in place inside `serve` (new incarnation, chain re-verified), catches up, and a
/// restarted leader hands over first. Writes go on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restart_in_place_and_the_request_is_in_the_chain() {
    hearth_tests::init_tracing();
    let mut c = Cluster::new();
    for id in [1, 2, 3] {
        c.start(id);
    }
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = [1, 2].into_iter().find(|i| *i != leader).unwrap();
    c.append(leader, "before", Duration::from_secs(10)).await;
    for id in [follower, leader] {
        let before = c.status(id).await.unwrap();
        let r = c
            .client(id)
            .restart(pb::RestartRequest { by: "ana".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.node_id, id);
        // A new incarnation answers, with a leader known, caught up to the recorded request.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.status(id).await
                && s.started_ms != before.started_ms
                && s.leader.is_some()
                && s.applied_index >= Some(r.recorded_index)
            {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = c.wait_leader(Duration::from_secs(15)).await;
        if id == leader {
            assert_ne!(now, leader, "a restarting leader hands over first");
        }
        let tail = AuditClient::new(hearth_cluster::grpc::lazy_channel(&c.addrs[&now]).unwrap())
            .tail(pb::TailRequest { count: 50 })
            .await
            .unwrap()
            .into_inner();
        let e = tail
            .entries
            .iter()
            .find(|e| e.index == r.recorded_index)
            .expect("the recorded request is in the chain");
        assert_eq!(
            e.kind,
            format!("restart of node {id} requested (by \"ana\")")
        );
        c.append(
            now,
            &format!("after restarting {id}"),
            Duration::from_secs(10),
        )
        .await;
    }
    // A bad principal is refused and restarts nothing.
    let before = c.status(follower).await.unwrap().started_ms;
    let err = c
        .client(follower)
        .restart(pb::RestartRequest { by: "".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.status(follower).await.unwrap().started_ms, before);
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}
