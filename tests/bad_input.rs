//! Bad input over real gRPC (issue 7): a one-hub node (`serve`, bootstrap, no peers) on
//! loopback gets, on every method of every public service, an oversized request, malformed
//! protobuf bytes and invalid UTF-8 in string fields (sent raw through a pass-through codec),
//! then path-like, unknown and oversized field values through the generated clients; the Raft
//! service gets garbage. Every one must be refused with a clear status, and afterwards the
//! chain must be exactly as before (same last index, same head, same last entries) and the
//! node must still serve a valid request.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use hearth_node::{NodeConfig, Role};
use hearth_proto::raft::RaftBytes;
use hearth_proto::raft::raft_client::RaftClient;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;
use hearth_proto::v1::devices_client::DevicesClient;
use hearth_proto::v1::intents_client::IntentsClient;
use hearth_proto::v1::policies_client::PoliciesClient;
use tokio::sync::oneshot;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

// ---------------------------------------------------------------------------------------------
// One hub over real gRPC

struct Hub {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

use hearth_tests::free_port;

/// What "nothing was appended" compares: Status's last and applied index, the head hash, and
/// the last entries of `Audit.Tail`.
#[derive(Debug, PartialEq, Eq)]
struct ChainView {
    last_index: Option<u64>,
    applied_index: Option<u64>,
    head_hash: String,
    tail: Vec<(u64, String)>,
}

impl Hub {
    async fn start() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = NodeConfig::builder(1, Role::Hub, addr.clone(), dir.path().join("node1"))
            .bootstrap(true)
            .timing(hearth_tests::cluster::test_timing())
            // Plain text: this test is about request decoding; tests/security.rs covers TLS.
            .insecure()
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
        let hub = Hub {
            addr,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        hub.wait_settled().await;
        hub
    }

    fn ch(&self) -> Channel {
        hearth_cluster::grpc::lazy_channel(&self.addr).unwrap()
    }

    async fn status(&self) -> Option<pb::NodeStatus> {
        let mut req = Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        ClusterClient::new(self.ch())
            .status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until the hub leads and everything in its log is applied, twice in a row.
    async fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = None;
        loop {
            // Admitted: the hub's first entries (its own data directory's admission) are in.
            if let Some(s) = self.status().await
                && s.node_state() == pb::NodeState::Leader
                && s.admitted
                && s.last_index.is_some()
                && s.last_index == s.applied_index
            {
                if seen == Some(s.last_index) {
                    return;
                }
                seen = Some(s.last_index);
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not settle as leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn chain(&self) -> ChainView {
        let s = self.status().await.expect("status");
        let tail = AuditClient::new(self.ch())
            .tail(pb::TailRequest { count: 5 })
            .await
            .unwrap()
            .into_inner()
            .entries
            .into_iter()
            .map(|e| (e.index, e.hash))
            .collect();
        ChainView {
            last_index: s.last_index,
            applied_index: s.applied_index,
            head_hash: s.head_hash,
            tail,
        }
    }

    /// The chain is unchanged, verifies, and the node still answers a valid write right after
    /// the last entry it had.
    async fn assert_unchanged_and_serving(&self, before: &ChainView) {
        let after = self.chain().await;
        assert_eq!(&after, before, "bad input appended to the chain");
        let v = AuditClient::new(self.ch())
            .verify(pb::VerifyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(v.ok, "chain fails verification: {}", v.reason);
        let a = ClusterClient::new(self.ch())
            .append_test_record(pb::AppendTestRecordRequest {
                text: "still serving".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(Some(a.index), before.last_index.map(|i| i + 1));
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw bytes on a method path: a pass-through codec

#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Sends `body` as the request message of `path`, reads the whole answer (every message of a
/// stream), and returns the status it ended with.
async fn raw_call(ch: Channel, path: &'static str, streaming: bool, body: Vec<u8>) -> Status {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let path = PathAndQuery::from_static(path);
    let mut req = Request::new(body);
    req.set_timeout(Duration::from_secs(10));
    if streaming {
        match g.server_streaming(req, path, RawCodec).await {
            Err(s) => s,
            Ok(r) => {
                let mut s = r.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Status::ok("stream ended"),
                        Err(e) => return e,
                    }
                }
            }
        }
    } else {
        match g.unary(req, path, RawCodec).await {
            Ok(_) => Status::ok("answered"),
            Err(s) => s,
        }
    }
}

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2) with `bytes` as its content.
fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(field) << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Every method of every public service: its path, whether it answers with a stream, and the
/// number of one of its request's `string` fields (None: the request has none).
const METHODS: &[(&str, bool, Option<u32>)] = &[
    ("/hearth.v1.Cluster/Status", false, None),
    ("/hearth.v1.Cluster/AppendTestRecord", false, Some(1)),
    ("/hearth.v1.Cluster/AddMember", false, Some(2)),
    ("/hearth.v1.Cluster/RemoveMember", false, None),
    ("/hearth.v1.Cluster/ReplaceMember", false, Some(3)),
    ("/hearth.v1.Cluster/TransferLeader", false, None),
    ("/hearth.v1.Cluster/Promote", false, Some(1)),
    ("/hearth.v1.Cluster/Restart", false, Some(1)),
    ("/hearth.v1.Cluster/RecordAct", false, Some(2)),
    ("/hearth.v1.Audit/Tail", false, None),
    ("/hearth.v1.Audit/Export", true, None),
    ("/hearth.v1.Audit/Verify", false, None),
    ("/hearth.v1.Intents/Submit", false, Some(6)),
    ("/hearth.v1.Intents/Get", false, Some(1)),
    ("/hearth.v1.Intents/Watch", true, Some(1)),
    ("/hearth.v1.Intents/Explain", false, Some(1)),
    ("/hearth.v1.Intents/Approve", false, Some(2)),
    ("/hearth.v1.Devices/Register", false, Some(1)),
    ("/hearth.v1.Devices/List", false, None),
    ("/hearth.v1.Devices/Get", false, Some(1)),
    ("/hearth.v1.Devices/Remove", false, Some(1)),
    ("/hearth.v1.Audit/Refusals", false, None),
    ("/hearth.v1.Policies/ApplyClass", false, Some(1)),
    ("/hearth.v1.Policies/ApplyPolicies", false, Some(1)),
    ("/hearth.v1.Policies/Show", false, None),
];

/// Bytes no protobuf decoder accepts, whatever the message.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Field 1, length-delimited, claiming 4 GiB that are not there.
        (
            "length past the end",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("truncated varint", vec![0x08, 0x80]),
        ("wire type 7", vec![0x0f]),
        ("field number 0", vec![0x00, 0x01]),
        ("varint of 11 bytes", {
            let mut v = vec![0x08];
            v.extend([0xff; 10]);
            v.push(0x01);
            v
        }),
    ]
}

fn assert_code(s: &Status, codes: &[Code], needle: &str, what: &str) {
    assert!(
        codes.contains(&s.code()) && s.message().contains(needle),
        "{what}: expected {codes:?} mentioning {needle:?}, got {:?}: {}",
        s.code(),
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_public_method_refuses_oversized_malformed_and_non_utf8_requests() {
    let hub = Hub::start().await;
    let before = hub.chain().await;
    let limit = hearth_node::api::MAX_REQUEST;

    for &(path, streaming, string_field) in METHODS {
        // Above MAX_REQUEST: refused by the size limit before any decoding. (An unknown field
        // makes it a well-formed message of every type.)
        let big = len_field(15, &vec![b'x'; limit + 1]);
        let s = raw_call(hub.ch(), path, streaming, big).await;
        assert_code(
            &s,
            &[Code::OutOfRange, Code::ResourceExhausted],
            "too large",
            &format!("{path} oversized"),
        );

        for (what, bytes) in malformed() {
            let s = raw_call(hub.ch(), path, streaming, bytes).await;
            assert_code(
                &s,
                &[Code::Internal, Code::InvalidArgument],
                "failed to decode Protobuf message",
                &format!("{path} {what}"),
            );
        }

        if let Some(field) = string_field {
            for bad in [&[0xff, 0xfe][..], b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
                let s = raw_call(hub.ch(), path, streaming, len_field(field, bad)).await;
                assert_code(
                    &s,
                    &[Code::Internal, Code::InvalidArgument],
                    "UTF-8",
                    &format!("{path} field {field} = {bad:?}"),
                );
            }
        }
    }

    // Invalid UTF-8 deeper down: a key of the `context` map, a repeated `tags` entry.
    let entry = [len_field(1, b"\xff"), len_field(2, b"x")].concat();
    let s = raw_call(
        hub.ch(),
        "/hearth.v1.Intents/Submit",
        false,
        len_field(5, &entry),
    )
    .await;
    assert_code(&s, &[Code::Internal], "UTF-8", "context key");
    let s = raw_call(
        hub.ch(),
        "/hearth.v1.Devices/Register",
        false,
        [len_field(1, b"lamp"), len_field(4, b"a\x80")].concat(),
    )
    .await;
    assert_code(&s, &[Code::Internal], "UTF-8", "tags entry");

    // The typed clients, just above the limit.
    let e = ClusterClient::new(hub.ch())
        .append_test_record(pb::AppendTestRecordRequest {
            text: "x".repeat(limit),
        })
        .await
        .unwrap_err();
    assert_code(&e, &[Code::OutOfRange], "too large", "typed oversized text");
    let e = PoliciesClient::new(hub.ch())
        .apply_policies(pb::ApplyDocument {
            json: format!(r#"{{"policies": [], "pad": "{}"}}"#, "x".repeat(limit)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(&e, &[Code::OutOfRange], "too large", "typed oversized doc");

    hub.assert_unchanged_and_serving(&before).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Field values

/// Ids that must never be accepted where an id is expected: paths, separators, NUL, empty,
/// too long, upper case, and look-alikes of valid ids.
fn bad_ids() -> Vec<String> {
    vec![
        "../etc/passwd".into(),
        "..".into(),
        "a/b".into(),
        "a\\b".into(),
        "\0".into(),
        "lamp\0".into(),
        String::new(),
        "a".repeat(129),
        "a".repeat(10_000),
        "Front-Door".into(),
        "front door".into(),
        "fr\u{043e}nt-door".into(), // Cyrillic o
        "\u{ff46}ront".into(),      // fullwidth f
        "front\u{200b}door".into(), // zero-width space
        "front\u{2024}door".into(), // one dot leader
        "l\u{0430}mp".into(),       // Cyrillic a
    ]
}

fn assert_field<T>(r: Result<T, Status>, field: &str, what: &str) {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(s) => assert!(
            s.code() == Code::InvalidArgument && s.message().contains(&format!("field `{field}`")),
            "{what}: expected INVALID_ARGUMENT naming `{field}`, got {:?}: {}",
            s.code(),
            s.message()
        ),
    }
}

fn lamp() -> pb::DeviceManifest {
    pb::DeviceManifest {
        id: "lamp".into(),
        name: "Kitchen lamp".into(),
        location: "home/kitchen".into(),
        actuators: [(
            "light".to_string(),
            pb::StateList {
                states: vec!["on".into(), "off".into(), "flash".into()],
            },
        )]
        .into(),
        adapter_kind: "sim".into(),
        adapter_target: "local:bad-input-lamp".into(),
        ..Default::default()
    }
}

fn intent() -> pb::SubmitIntentRequest {
    pb::SubmitIntentRequest {
        class: "alert_anomaly".into(),
        urgency: "info".into(),
        subject: "test".into(),
        location: "home".into(),
        context: Default::default(),
        idempotency_key: "bad-input-1".into(),
        source: "tester".into(),
        dry_run: false,
    }
}

fn class_doc(name: &str, capability: &str, state: &str, tag: &str) -> pb::ApplyDocument {
    let doc = serde_json::json!({
        "name": name,
        "description": "test class",
        "steps": [{"capability": capability, "target": {"state": state}, "tags": [tag]}],
        "repeat_safe": true,
    });
    pb::ApplyDocument {
        json: doc.to_string(),
        ..Default::default()
    }
}

fn policies_doc(rule: serde_json::Value) -> pb::ApplyDocument {
    pb::ApplyDocument {
        json: serde_json::json!({"policies": [{"id": "p1", "rule": rule}]}).to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_like_unknown_and_oversized_values_are_refused_naming_the_field() {
    let hub = Hub::start().await;
    let devices = || DevicesClient::new(hub.ch());
    let intents = || IntentsClient::new(hub.ch());
    let policies = || PoliciesClient::new(hub.ch());
    let cluster = || ClusterClient::new(hub.ch());
    // A valid device first, so that intents have something to plan for.
    devices().register(lamp()).await.unwrap();
    hub.wait_settled().await;
    let started = hub.status().await.unwrap().started_ms;
    let before = hub.chain().await;

    for bad in bad_ids() {
        let what = |f: &str| format!("{f} = {bad:?}");
        // Devices: the id, every id-like list, the location.
        let mut d = lamp();
        d.id = bad.clone();
        assert_field(devices().register(d).await, "id", &what("device id"));
        let mut d = lamp();
        d.tags = vec![bad.clone()];
        assert_field(devices().register(d).await, "tags", &what("device tag"));
        let mut d = lamp();
        d.sensors = vec![bad.clone()];
        assert_field(devices().register(d).await, "sensors", &what("sensor"));
        let mut d = lamp();
        d.actuators.insert(
            bad.clone(),
            pb::StateList {
                states: vec!["on".into()],
            },
        );
        assert_field(
            devices().register(d).await,
            "actuators",
            &what("capability"),
        );
        let mut d = lamp();
        d.actuators.get_mut("light").unwrap().states = vec![bad.clone()];
        assert_field(devices().register(d).await, "actuators", &what("state"));
        if bad != "a/b" {
            let mut d = lamp();
            d.location = bad.clone();
            assert_field(devices().register(d).await, "location", &what("location"));
        }
        let r = devices()
            .get(pb::GetDeviceRequest { id: bad.clone() })
            .await;
        assert_field(r, "id", &what("Devices.Get id"));

        // Intents: class, source, idempotency key, location, context keys; Submit, its
        // dry run and Explain alike.
        let mut cases: Vec<(&str, pb::SubmitIntentRequest)> = Vec::new();
        let mut i = intent();
        i.class = bad.clone();
        cases.push(("class", i));
        if !bad.is_empty() {
            // An empty source means "client".
            let mut i = intent();
            i.source = bad.clone();
            cases.push(("source", i));
        }
        if bad != "Front-Door" && bad != "front door" {
            // Keys may have upper case (UUIDs) and spaces (any printable ASCII but / and \).
            let mut i = intent();
            i.idempotency_key = bad.clone();
            cases.push(("idempotency_key", i));
        }
        if bad != "a/b" {
            // A valid location.
            let mut i = intent();
            i.location = bad.clone();
            cases.push(("location", i));
        }
        let mut i = intent();
        i.context.insert(bad.clone(), "x".into());
        cases.push(("context", i));
        for (field, req) in cases {
            let mut dry = req.clone();
            dry.dry_run = true;
            assert_field(intents().submit(req.clone()).await, field, &what(field));
            assert_field(intents().submit(dry).await, field, &what(field));
            if field != "idempotency_key" || !bad.is_empty() {
                // Explain fills in an empty key.
                assert_field(intents().explain(req).await, field, &what(field));
            }
        }
        // Intent ids: Get, Watch, Approve; and who approves.
        let id = pb::GetIntentRequest { id: bad.clone() };
        assert_field(intents().get(id.clone()).await, "id", &what("Get id"));
        assert_field(intents().watch(id).await, "id", &what("Watch id"));
        let r = intents()
            .approve(pb::ApproveRequest {
                id: bad.clone(),
                by: "alice".into(),
                ..Default::default()
            })
            .await;
        assert_field(r, "id", &what("Approve id"));
        let r = intents()
            .deny(pb::DenyRequest {
                id: bad.clone(),
                by: "alice".into(),
                reason: "no".into(),
            })
            .await;
        assert_field(r, "id", &what("Deny id"));
        if !bad.is_empty() {
            // An empty approver means "operator".
            let r = intents()
                .approve(pb::ApproveRequest {
                    id: "i-0123456789abcdef".into(),
                    by: bad.clone(),
                    ..Default::default()
                })
                .await;
            assert_field(r, "by", &what("Approve by"));
            let r = intents()
                .deny(pb::DenyRequest {
                    id: "i-0123456789abcdef".into(),
                    by: bad.clone(),
                    reason: "no".into(),
                })
                .await;
            assert_field(r, "by", &what("Deny by"));
        }

        // Policies: a class's name, capability, target state and tags; a policy's ids.
        let r = policies()
            .apply_class(class_doc(&bad, "light", "on", "x"))
            .await;
        assert_field(r, "name", &what("class name"));
        let r = policies()
            .apply_class(class_doc("c", &bad, "on", "x"))
            .await;
        assert_field(r, "steps[0].capability", &what("class capability"));
        let r = policies()
            .apply_class(class_doc("c", "light", &bad, "x"))
            .await;
        assert_field(r, "steps[0].target", &what("class state"));
        let r = policies()
            .apply_class(class_doc("c", "light", "on", &bad))
            .await;
        assert_field(r, "steps[0].tags", &what("class tag"));
        let doc = pb::ApplyDocument {
            json: serde_json::json!({"policies": [{"id": bad, "rule": {"kind": "require_confirmation", "class": "notify"}}]}).to_string(),
            ..Default::default()
        };
        assert_field(
            policies().apply_policies(doc).await,
            "policies[0].id",
            &what("policy id"),
        );
        let r = policies()
            .apply_policies(policies_doc(
                serde_json::json!({"kind": "block", "device": bad}),
            ))
            .await;
        assert_field(r, "policies[0].rule.device", &what("policy device"));
        let r = policies()
            .apply_policies(policies_doc(
                serde_json::json!({"kind": "exclude_device", "device": "lamp", "class": bad}),
            ))
            .await;
        assert_field(r, "policies[0].rule.class", &what("policy class"));
        let r = policies()
            .apply_policies(policies_doc(serde_json::json!({"kind": "quiet_hours",
                "start_minute": 0, "end_minute": 60, "tags": [bad]})))
            .await;
        assert_field(r, "policies[0].rule.tags", &what("quiet hours tag"));
        let r = policies()
            .apply_policies(policies_doc(serde_json::json!({"kind": "quiet_hours",
                "start_minute": 0, "end_minute": 60, "classes": [bad]})))
            .await;
        assert_field(r, "policies[0].rule.classes", &what("quiet hours class"));

        // Cluster: who acts, who promotes, who restarts (nothing may restart).
        let r = cluster()
            .record_act(pb::RecordActRequest {
                act: "test".into(),
                by: bad.clone(),
            })
            .await;
        assert_field(r, "by", &what("RecordAct by"));
        let r = cluster()
            .restart(pb::RestartRequest { by: bad.clone() })
            .await;
        assert_field(r, "by", &what("Restart by"));
        let r = cluster()
            .promote(pb::PromoteRequest {
                operator: bad.clone(),
                reason: "test".into(),
                force: true,
            })
            .await;
        assert_field(r, "operator", &what("Promote operator"));
        let r = cluster()
            .add_member(pb::AddMemberRequest {
                id: 9,
                addr: bad.clone(),
                role: "hub".into(),
            })
            .await;
        assert_field(r, "addr", &what("AddMember addr"));
    }

    // "Enum" values: the API has no protobuf enums; its closed sets are strings, and an unknown
    // one is named.
    let mut i = intent();
    i.urgency = "panic".into();
    assert_field(intents().submit(i).await, "urgency", "urgency");
    let mut d = lamp();
    d.adapter_kind = "telepathy".into();
    assert_field(devices().register(d).await, "adapter_kind", "adapter kind");
    for role in ["leader", "HUB", "witness\0"] {
        let r = cluster()
            .add_member(pb::AddMemberRequest {
                id: 9,
                addr: "127.0.0.1:1".into(),
                role: role.into(),
            })
            .await;
        assert_field(r, "role", role);
        let r = cluster()
            .replace_member(pb::ReplaceMemberRequest {
                old_id: 1,
                new_id: 9,
                addr: "127.0.0.1:1".into(),
                role: role.into(),
            })
            .await;
        assert_field(r, "role", role);
    }
    let r = policies()
        .apply_policies(policies_doc(serde_json::json!({"kind": "self_destruct"})))
        .await;
    assert_field(r, "json", "unknown policy kind");
    let doc = pb::ApplyDocument {
        json: r#"{"name":"c","description":"","steps":[{"capability":"light","target":{"teleport":"x"}}],"repeat_safe":true}"#.into(),
        ..Default::default()
    };
    assert_field(policies().apply_class(doc).await, "json", "unknown target");

    // Documents that are not what they claim.
    for json in [
        "",
        "{",
        "null",
        "[]",
        "{\"policies\": 5}",
        "\u{0}",
        "{\"policies\": [], \"x\": 1}",
    ] {
        let doc = pb::ApplyDocument {
            json: json.into(),
            ..Default::default()
        };
        assert_field(policies().apply_policies(doc.clone()).await, "json", json);
        assert_field(policies().apply_class(doc).await, "json", json);
    }

    // Oversized fields inside the size limit.
    let long = "x".repeat(60_000);
    let mut i = intent();
    i.subject = long.clone();
    assert_field(intents().submit(i).await, "subject", "long subject");
    let mut i = intent();
    i.subject = "smoke\0in the kitchen".into();
    assert_field(intents().submit(i).await, "subject", "subject with NUL");
    let mut i = intent();
    i.context.insert("note".into(), long.clone());
    assert_field(intents().submit(i).await, "context", "long context");
    let mut d = lamp();
    d.name = long.clone();
    assert_field(devices().register(d).await, "name", "long device name");
    let mut d = lamp();
    d.name = "lamp\u{1b}[2J".into();
    assert_field(devices().register(d).await, "name", "device name with ESC");
    let mut d = lamp();
    d.adapter_target = long.clone();
    assert_field(devices().register(d).await, "adapter_target", "long target");
    let mut d = lamp();
    d.adapter_target = "local:x\0y".into();
    assert_field(devices().register(d).await, "adapter_target", "target NUL");
    let r = policies()
        .apply_class(pb::ApplyDocument {
            json: serde_json::json!({"name": "c", "description": long, "steps": [],
                "repeat_safe": true})
            .to_string(),
            ..Default::default()
        })
        .await;
    assert_field(r, "description", "long class description");
    let steps: Vec<_> = (0..65)
        .map(|_| serde_json::json!({"capability": "light", "target": {"state": "on"}}))
        .collect();
    let r = policies()
        .apply_class(pb::ApplyDocument {
            json: serde_json::json!({"name": "c", "description": "", "steps": steps,
                "repeat_safe": true})
            .to_string(),
            ..Default::default()
        })
        .await;
    assert_field(r, "steps", "too many steps");
    let r = cluster()
        .append_test_record(pb::AppendTestRecordRequest {
            text: "x".repeat(10_000),
        })
        .await;
    assert_field(r, "text", "long test record");
    for act in ["x".repeat(501), "line\nbreak".into(), String::new()] {
        let r = cluster()
            .record_act(pb::RecordActRequest {
                act,
                by: "alice".into(),
            })
            .await;
        assert_field(r, "act", "bad act");
    }
    let r = cluster()
        .promote(pb::PromoteRequest {
            operator: "alice".into(),
            reason: long.clone(),
            force: true,
        })
        .await;
    assert_field(r, "reason", "long promote reason");

    // Nothing was appended, nothing restarted, and the node still serves.
    assert_eq!(hub.status().await.unwrap().started_ms, started);
    hub.assert_unchanged_and_serving(&before).await;
    let v = intents().submit(intent()).await.unwrap().into_inner();
    let got = intents()
        .get(pb::GetIntentRequest { id: v.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, v.id);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The Raft transport

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raft_service_refuses_garbage() {
    let hub = Hub::start().await;
    let before = hub.chain().await;
    let term = hub.status().await.unwrap().term;
    let raft = || RaftClient::new(hub.ch());
    let msg = |format: u32, to: u64, data: &[u8]| RaftBytes {
        format,
        from: 2,
        to,
        data: data.to_vec(),
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\x00garbage".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"{\"Ok\": 1}".to_vec(),
        br#"{"vote":{"leader_id":{"term":"x"}}}"#.to_vec(),
        deep.into_bytes(),
        vec![b'"'; 1000],
        vec![0; 1 << 20],
    ];
    for method in ["append", "vote", "pre_vote", "snapshot", "transfer"] {
        let call = |m: RaftBytes| {
            let mut c = raft();
            async move {
                match method {
                    "append" => c.append_entries(m).await,
                    "vote" => c.vote(m).await,
                    "pre_vote" => c.pre_vote(m).await,
                    "snapshot" => c.install_snapshot(m).await,
                    _ => c.transfer_leader(m).await,
                }
            }
        };
        for data in &garbage {
            let e = call(msg(2, 1, data)).await.unwrap_err();
            assert_code(
                &e,
                &[Code::InvalidArgument],
                "malformed Raft message",
                &format!(
                    "{method} {:?}",
                    String::from_utf8_lossy(&data[..data.len().min(40)])
                ),
            );
        }
        for format in [0, 1, 3, u32::MAX] {
            let e = call(msg(format, 1, b"{}")).await.unwrap_err();
            assert_code(
                &e,
                &[Code::InvalidArgument],
                &format!("unsupported Raft message format {format}"),
                method,
            );
        }
        for to in [0, 2, u64::MAX] {
            let e = call(msg(2, to, b"{}")).await.unwrap_err();
            assert_code(
                &e,
                &[Code::FailedPrecondition],
                &format!("this is node 1, not node {to}"),
                method,
            );
        }
    }
    // Raw bytes on the Raft paths: malformed protobuf, bad UTF-8 is not possible (no strings),
    // and a message above the Raft limit.
    for path in [
        "/hearth.raft.v1.Raft/AppendEntries",
        "/hearth.raft.v1.Raft/Vote",
        "/hearth.raft.v1.Raft/PreVote",
        "/hearth.raft.v1.Raft/InstallSnapshot",
        "/hearth.raft.v1.Raft/TransferLeader",
    ] {
        for (what, bytes) in malformed() {
            let s = raw_call(hub.ch(), path, false, bytes).await;
            assert_code(
                &s,
                &[Code::Internal],
                "failed to decode Protobuf message",
                &format!("{path} {what}"),
            );
        }
    }
    let big = len_field(4, &vec![0u8; 64 * 1024 * 1024 + 1]);
    let s = raw_call(hub.ch(), "/hearth.raft.v1.Raft/AppendEntries", false, big).await;
    assert_code(&s, &[Code::OutOfRange], "too large", "Raft above its limit");

    let s = hub.status().await.unwrap();
    assert_eq!((s.node_state(), s.term), (pb::NodeState::Leader, term));
    hub.assert_unchanged_and_serving(&before).await;
    hub.stop().await;
}
