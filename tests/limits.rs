//! What an unauthenticated host on the LAN can cost a node (issue 13 item 6), over a real
//! `serve` with mutual TLS on loopback: idle and half-open connections are closed, a flood of
//! them beyond the cap does not lock the household out, and a large Raft message from a
//! connection without a node certificate is refused before its body is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_node::config::LimitsSettings;
use hearth_node::{NodeConfig, Role};
use hearth_proto::raft::RaftBytes;
use hearth_proto::raft::raft_client::RaftClient;
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use hearth_proto::v1::devices_client::DevicesClient;
use hearth_proto::v1::intents_client::IntentsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use hearth_tests::free_port;

struct OneNode {
    _dir: tempfile::TempDir,
    pki: PathBuf,
    addr: String,
    admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OneNode {
    fn start(limits: LimitsSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        hearth_node::pki::init_pki(&pki, &[1], false).unwrap();
        let admin = std::fs::read_to_string(pki.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = NodeConfig::builder(1, Role::Hub, addr.clone(), dir.path().join("node1"))
            .bootstrap(true)
            .timing(hearth_tests::cluster::test_timing())
            .tls(
                pki.join("ca.pem"),
                pki.join("node-1.pem"),
                pki.join("node-1.key"),
            )
            .tokens_file(pki.join("tokens.toml"))
            .limits(limits)
            .build()
            .unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            if let Err(e) = hearth_node::server::serve(cfg, async move {
                let _ = rx.await;
            })
            .await
            {
                panic!("node failed: {e}");
            }
        });
        OneNode {
            _dir: dir,
            pki,
            addr,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn channel(&self, addr: &str) -> Channel {
        let ca = std::fs::read(self.pki.join("ca.pem")).unwrap();
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(hearth_cluster::tls::CLUSTER_NAME),
            )
            .unwrap()
            .connect_lazy()
    }

    /// The household's write: a record appended and committed (a fresh connection).
    async fn write(&self, text: &str) -> Result<u64, tonic::Status> {
        let mut req = tonic::Request::new(pb::AppendTestRecordRequest { text: text.into() });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.admin).parse().unwrap(),
        );
        ClusterClient::new(self.channel(&self.addr))
            .append_test_record(req)
            .await
            .map(|r| r.into_inner().index)
    }

    async fn wait_writable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = self.write("ready?").await {
            assert!(
                Instant::now() < deadline,
                "the node never took a write: {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Waits until the peer closes `s` (read returns 0 or an error), at most `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_half_open_connections_are_closed_and_the_household_still_writes() {
    hearth_tests::init_tracing();
    let limits = LimitsSettings {
        max_connections: 32,
        handshake_timeout_ms: 500,
        idle_timeout_ms: 1500,
        ..Default::default()
    };
    let mut node = OneNode::start(limits);
    node.wait_writable().await;

    // The attack: 60 half-open connections (TCP only, no ClientHello) — more than the cap —
    // and 10 idle TLS/HTTP-2 connections that never send a request.
    let mut half_open = Vec::new();
    for _ in 0..60 {
        half_open.push(TcpStream::connect(&node.addr).await.unwrap());
    }
    let mut idle = Vec::new();
    for _ in 0..10 {
        let ch = Endpoint::from_shared(format!("https://{}", node.addr))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(
                        std::fs::read(node.pki.join("ca.pem")).unwrap(),
                    ))
                    .domain_name(hearth_cluster::tls::CLUSTER_NAME),
            )
            .unwrap();
        // A connect that fails was evicted at the cap by a later one: that is the point.
        if let Ok(c) = ch.connect().await {
            idle.push(c);
        }
    }

    // The household's write still commits, on a fresh connection, while all that is open.
    let index = node
        .write("front door: lock")
        .await
        .expect("the household's write");
    assert!(index > 0);

    // Every half-open connection is closed by the node: by the cap, the handshake deadline or
    // the idle deadline (bounded wait: ten handshake deadlines).
    let mut still_open = 0;
    for s in &mut half_open {
        if !closed_within(s, Duration::from_secs(5)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-open connections the node never closed");

    // An idle HTTP/2 connection is closed too: one of them, raw, after its handshake.
    let mut raw = TcpStream::connect(&node.addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut raw, Duration::from_secs(15)).await,
        "an idle connection stayed open"
    );
    drop(idle);

    // And after the attack, writes go on.
    node.write("front door: unlock")
        .await
        .expect("a write after the attack");
    node.stop().await;
}

/// A loopback relay that counts the bytes a client sent through it to `to`.
async fn counting_relay(to: String) -> (String, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let Ok(mut server) = TcpStream::connect(&to).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_raft_message_without_a_node_certificate_is_refused_unread() {
    hearth_tests::init_tracing();
    let mut node = OneNode::start(LimitsSettings::default());
    node.wait_writable().await;
    let (relay, sent) = counting_relay(node.addr.clone()).await;

    // 60 MiB claiming to be an append from node 2, from a client with no certificate (the
    // issue's 63 MiB message, under the 64 MiB limit a node certificate holder gets).
    let body = vec![b'x'; 60 * 1024 * 1024];
    let mut req = tonic::Request::new(RaftBytes {
        format: hearth_cluster::wire::FORMAT_JSON,
        from: 2,
        to: 1,
        data: body,
    });
    req.set_timeout(Duration::from_secs(30));
    let r = RaftClient::new(node.channel(&relay))
        .max_encoding_message_size(128 * 1024 * 1024)
        .append_entries(req)
        .await;
    let status = r.expect_err("a Raft call without a certificate was answered");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let read = sent.load(Ordering::Relaxed);
    // HTTP/2 flow control lets a client send at most a window (64 KiB by default) before the
    // server reads; the refusal comes from the headers, so the node took a tiny part of it.
    assert!(
        read < 4 * 1024 * 1024,
        "the node read {read} bytes of a message it should have refused from its headers"
    );
    eprintln!(
        "bytes the client got to send: {read} of {}",
        60 * 1024 * 1024
    );
    // The node still writes.
    node.write("after")
        .await
        .expect("a write after the refused message");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emergencies_from_one_source_are_bounded_over_the_api() {
    hearth_tests::init_tracing();
    let mut node = OneNode::start(LimitsSettings {
        emergency_max: 3,
        emergency_window_secs: 3600,
        ..Default::default()
    });
    node.wait_writable().await;
    fn auth<T>(admin: &str, mut r: tonic::Request<T>) -> tonic::Request<T> {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {admin}").parse().unwrap());
        r
    }
    DevicesClient::new(node.channel(&node.addr))
        .register(auth(
            &node.admin,
            tonic::Request::new(pb::DeviceManifest {
                id: "siren".into(),
                name: "Siren".into(),
                location: "home".into(),
                actuators: [(
                    "siren".to_string(),
                    pb::StateList {
                        states: vec!["on".into(), "off".into()],
                    },
                )]
                .into(),
                emergency_capable: true,
                adapter_kind: "sim".into(),
                adapter_target: "local:limits-test".into(),
                ..Default::default()
            }),
        ))
        .await
        .expect("register the siren");
    let send = |n: u32| {
        let req = auth(
            &node.admin,
            tonic::Request::new(pb::SubmitIntentRequest {
                class: "ensure_safety".into(),
                urgency: "emergency".into(),
                location: "home".into(),
                idempotency_key: format!("flood-{n}"),
                ..Default::default()
            }),
        );
        let ch = node.channel(&node.addr);
        async move { IntentsClient::new(ch).submit(req).await }
    };
    let mut accepted = 0;
    let mut refused = Vec::new();
    for n in 0..10 {
        match send(n).await {
            Ok(_) => accepted += 1,
            Err(s) => refused.push(s),
        }
    }
    assert_eq!(accepted, 3, "{refused:?}");
    assert_eq!(refused.len(), 7);
    for s in &refused {
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("emergency rate limit"), "{s:?}");
    }
    // The refused emergencies are visible to an operator (never in the chain), naming who
    // and what they were told, without the token.
    let seen = hearth_proto::v1::audit_client::AuditClient::new(node.channel(&node.addr))
        .refusals(auth(
            &node.admin,
            tonic::Request::new(pb::RefusalsRequest::default()),
        ))
        .await
        .expect("an admin reads the refusals")
        .into_inner();
    let limited: Vec<_> = seen
        .refused
        .iter()
        .filter(|r| r.code == "RESOURCE_EXHAUSTED" && r.method == "/hearth.v1.Intents/Submit")
        .collect();
    assert_eq!(limited.len(), 7, "{seen:?}");
    for r in &limited {
        assert!(r.message.contains("emergency rate limit"), "{r:?}");
        assert_eq!(r.principal, "admin", "{r:?}");
        assert!(!r.message.contains(&node.admin), "{r:?}");
        assert!(r.at_ms > 0 && !r.peer.is_empty(), "{r:?}");
    }
    // The household's other writes go on.
    node.write("after the flood").await.expect("a write");
    node.stop().await;
}
