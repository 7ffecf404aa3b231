//! Security over real gRPC: three nodes (two hubs, a witness) as full `serve`s with mutual TLS
//! from `hearth init-pki` and client tokens. A node with a foreign certificate cannot join or
//! vote; a Raft RPC whose certificate does not prove its claimed node id is refused; every
//! privileged call is refused without a token, with a wrong token and with a role too small,
//! and changes nothing; allowed acts are audit entries naming the principal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_node::auth::ClientRole;
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
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use hearth_tests::free_port;

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A TLS channel checking the server against `ca` for `domain`, optionally presenting a
/// client certificate.
fn tls_channel(addr: &str, ca: &Path, domain: &str, identity: Option<(&Path, &Path)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .domain_name(domain);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_secs(5));
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

struct Tokens {
    admin: String,
    operator: String,
    agent: String,
    other_agent: String,
}

struct SecureCluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    configs: BTreeMap<u64, NodeConfig>,
    stops: BTreeMap<u64, oneshot::Sender<()>>,
    tasks: BTreeMap<u64, tokio::task::JoinHandle<()>>,
    tokens: Tokens,
}

fn node_config(
    id: u64,
    role: Role,
    addrs: &BTreeMap<u64, String>,
    roles: &[(u64, Role)],
    data: PathBuf,
    pki: &Path,
    bootstrap: bool,
) -> NodeConfig {
    let mut b = NodeConfig::builder(id, role, addrs[&id].clone(), data)
        .bootstrap(bootstrap)
        .timing(hearth_tests::cluster::test_timing())
        .tls(
            pki.join("ca.pem"),
            pki.join(format!("node-{id}.pem")),
            pki.join(format!("node-{id}.key")),
        )
        .tokens_file(pki.join("tokens.toml"));
    for (p, r) in roles.iter().filter(|(p, _)| *p != id) {
        b = b.peer(*p, addrs[p].clone(), *r);
    }
    b.build()
        .unwrap_or_else(|e| panic!("node {id}'s test config: {e}"))
}

impl SecureCluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        hearth_node::pki::init_pki(&pki, &[1, 2, 3], false).unwrap();
        let tokens_file = pki.join("tokens.toml");
        let tokens = Tokens {
            admin: std::fs::read_to_string(pki.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
            operator: hearth_node::pki::add_token(&tokens_file, "olga", ClientRole::Operator)
                .unwrap(),
            // The household's smoke detector: an agent allowed to claim emergencies.
            agent: hearth_node::pki::add_token_with(
                &tokens_file,
                "robot",
                ClientRole::Agent,
                hearth_node::pki::TokenLimits {
                    emergency: Some(true),
                    ..Default::default()
                },
            )
            .unwrap(),
            other_agent: hearth_node::pki::add_token(&tokens_file, "other", ClientRole::Agent)
                .unwrap(),
        };
        let roles = [(1u64, Role::Hub), (2, Role::Hub), (3, Role::Witness)];
        let addrs: BTreeMap<u64, String> = roles
            .iter()
            .map(|(id, _)| (*id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let configs = roles
            .iter()
            .map(|(id, role)| {
                let cfg = node_config(
                    *id,
                    *role,
                    &addrs,
                    &roles,
                    dir.path().join(format!("node{id}")),
                    &pki,
                    *id == 1,
                );
                cfg.validate().unwrap();
                (*id, cfg)
            })
            .collect();
        SecureCluster {
            dir,
            addrs,
            configs,
            stops: BTreeMap::new(),
            tasks: BTreeMap::new(),
            tokens,
        }
    }

    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    fn start_config(&mut self, id: u64, cfg: NodeConfig) {
        let (tx, rx) = oneshot::channel();
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

    async fn stop_all(&mut self) {
        for (_, tx) in std::mem::take(&mut self.stops) {
            let _ = tx.send(());
        }
        for (_, t) in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// A client channel as `hearth --ca pki/ca.pem` makes it (no client certificate).
    fn api(&self, id: u64) -> Channel {
        tls_channel(
            &self.addrs[&id],
            &self.pki().join("ca.pem"),
            hearth_cluster::tls::CLUSTER_NAME,
            None,
        )
    }

    async fn status(&self, id: u64) -> Option<pb::NodeStatus> {
        ClusterClient::new(self.api(id))
            .status(with_token(pb::StatusRequest {}, Some(&self.tokens.admin)))
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.stops.keys().filter(|id| **id <= 3) {
                leaders.push(self.status(*id).await.and_then(|s| s.leader));
            }
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && self
                    .status(*l)
                    .await
                    .is_some_and(|s| s.node_state() == pb::NodeState::Leader)
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader over mTLS: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the cluster is formed and quiet: one leader, every node a voter whose data
    /// directory the chain admits, no notice waiting for the chain, and every node applied up
    /// to the same index twice in a row (formation appends admissions and notices by itself).
    async fn wait_settled(&self, within: Duration) -> u64 {
        let leader = self.wait_leader(within).await;
        let deadline = Instant::now() + within;
        let mut seen = None;
        loop {
            let mut indexes = Vec::new();
            for id in self.stops.keys().filter(|id| **id <= 3) {
                if let Some(s) = self.status(*id).await
                    && s.admitted
                    && !s.vote_held
                    && s.members.iter().filter(|m| m.voter).count() == 3
                    && s.health.as_ref().is_some_and(|h| h.notices.is_empty())
                    && s.last_index == s.applied_index
                {
                    indexes.push(s.applied_index);
                }
            }
            let all = self.stops.keys().filter(|id| **id <= 3).count();
            if indexes.len() == all && indexes.windows(2).all(|w| w[0] == w[1]) {
                if seen == indexes.first().copied() {
                    return leader;
                }
                seen = indexes.first().copied();
            }
            assert!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tail(&self, id: u64, count: u32) -> Vec<pb::AuditEntry> {
        AuditClient::new(self.api(id))
            .tail(with_token(
                pb::TailRequest { count },
                Some(&self.tokens.admin),
            ))
            .await
            .unwrap()
            .into_inner()
            .entries
    }
}

fn device(id: &str) -> pb::DeviceManifest {
    pb::DeviceManifest {
        id: id.into(),
        name: "Siren".into(),
        location: "home".into(),
        tags: vec![],
        sensors: vec![],
        actuators: [(
            "siren".to_string(),
            pb::StateList {
                states: vec!["on".into(), "off".into()],
            },
        )]
        .into(),
        emergency_capable: true,
        emergency_actions: Default::default(),
        adapter_kind: "sim".into(),
        adapter_target: "local:security-test".into(),
    }
}

/// Calls one method that needs more than `agent`, as `token`; returns the status code.
async fn privileged(ch: Channel, method: &str, token: Option<&str>) -> Code {
    let t = token;
    let r: Result<(), tonic::Status> = match method {
        "Cluster/AppendTestRecord" => ClusterClient::new(ch)
            .append_test_record(with_token(
                pb::AppendTestRecordRequest { text: "x".into() },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/AddMember" => ClusterClient::new(ch)
            .add_member(with_token(
                pb::AddMemberRequest {
                    id: 9,
                    addr: "127.0.0.1:1".into(),
                    role: "hub".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/RemoveMember" => ClusterClient::new(ch)
            .remove_member(with_token(pb::RemoveMemberRequest { id: 2 }, t))
            .await
            .map(|_| ()),
        "Cluster/ReplaceMember" => ClusterClient::new(ch)
            .replace_member(with_token(
                pb::ReplaceMemberRequest {
                    old_id: 2,
                    new_id: 9,
                    addr: "127.0.0.1:1".into(),
                    role: "hub".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/TransferLeader" => ClusterClient::new(ch)
            .transfer_leader(with_token(pb::TransferLeaderRequest { to: 2 }, t))
            .await
            .map(|_| ()),
        "Cluster/Promote" => ClusterClient::new(ch)
            .promote(with_token(
                pb::PromoteRequest {
                    operator: "mallory".into(),
                    reason: "x".into(),
                    force: true,
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/Restart" => ClusterClient::new(ch)
            .restart(with_token(
                pb::RestartRequest {
                    by: "mallory".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/RecordAct" => ClusterClient::new(ch)
            .record_act(with_token(
                pb::RecordActRequest {
                    act: "x".into(),
                    by: "mallory".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Cluster/Rejoin" => ClusterClient::new(ch)
            .rejoin(with_token(pb::RejoinRequest { id: 2 }, t))
            .await
            .map(|_| ()),
        "Intents/Deny" => IntentsClient::new(ch)
            .deny(with_token(
                pb::DenyRequest {
                    id: "nope".into(),
                    reason: "no".into(),
                    by: "mallory".into(),
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Intents/Approve" => IntentsClient::new(ch)
            .approve(with_token(
                pb::ApproveRequest {
                    id: "nope".into(),
                    by: "mallory".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Devices/Register" => DevicesClient::new(ch)
            .register(with_token(device("evil"), t))
            .await
            .map(|_| ()),
        "Devices/Remove" => DevicesClient::new(ch)
            .remove(with_token(
                pb::RemoveDeviceRequest { id: "siren".into() },
                t,
            ))
            .await
            .map(|_| ()),
        "Audit/Refusals" => AuditClient::new(ch)
            .refusals(with_token(pb::RefusalsRequest::default(), t))
            .await
            .map(|_| ()),
        "Policies/ApplyClass" => PoliciesClient::new(ch)
            .apply_class(with_token(
                pb::ApplyDocument {
                    json: "x".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Policies/ApplyPolicies" => PoliciesClient::new(ch)
            .apply_policies(with_token(
                pb::ApplyDocument {
                    json: "x".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Policies/AddPolicy" => PoliciesClient::new(ch)
            .add_policy(with_token(
                pb::ApplyDocument {
                    json: "x".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| ()),
        "Policies/RemovePolicy" => PoliciesClient::new(ch)
            .remove_policy(with_token(pb::RemovePolicyRequest { id: "p".into() }, t))
            .await
            .map(|_| ()),
        "Policies/Show" => PoliciesClient::new(ch)
            .show(with_token(pb::ShowPoliciesRequest {}, t))
            .await
            .map(|_| ()),
        "Audit/Tail" => AuditClient::new(ch)
            .tail(with_token(pb::TailRequest { count: 1 }, t))
            .await
            .map(|_| ()),
        "Audit/Export" => AuditClient::new(ch)
            .export(with_token(pb::ExportRequest {}, t))
            .await
            .map(|_| ()),
        "Audit/Verify" => AuditClient::new(ch)
            .verify(with_token(pb::VerifyRequest {}, t))
            .await
            .map(|_| ()),
        other => panic!("unknown method {other}"),
    };
    match r {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_roles_guard_every_privileged_call() {
    hearth_tests::init_tracing();
    let mut c = SecureCluster::new();
    for id in [1, 2, 3] {
        let cfg = c.configs[&id].clone();
        c.start_config(id, cfg);
    }
    let leader = c.wait_settled(Duration::from_secs(20)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let before = c.status(leader).await.unwrap().last_index;

    let admin_only = [
        "Cluster/AppendTestRecord",
        "Cluster/AddMember",
        "Cluster/RemoveMember",
        "Cluster/ReplaceMember",
        "Cluster/TransferLeader",
        "Cluster/Promote",
        "Cluster/Restart",
        "Cluster/RecordAct",
        "Cluster/Rejoin",
    ];
    let operator = [
        "Intents/Approve",
        "Intents/Deny",
        "Devices/Register",
        "Devices/Remove",
        "Policies/ApplyClass",
        "Policies/ApplyPolicies",
        "Policies/AddPolicy",
        "Policies/RemovePolicy",
        "Policies/Show",
        "Audit/Tail",
        "Audit/Export",
        "Audit/Verify",
        "Audit/Refusals",
    ];
    let t = &c.tokens;
    // On the leader and on a follower (which would forward): refused the same way.
    for id in [leader, follower] {
        for m in admin_only.iter().chain(operator.iter()) {
            let ch = c.api(id);
            assert_eq!(
                privileged(ch.clone(), m, None).await,
                Code::Unauthenticated,
                "{m} without a token"
            );
            assert_eq!(
                privileged(ch.clone(), m, Some("hth_not-a-real-token")).await,
                Code::Unauthenticated,
                "{m} with a wrong token"
            );
            assert_eq!(
                privileged(ch.clone(), m, Some(&t.agent)).await,
                Code::PermissionDenied,
                "{m} as an agent"
            );
        }
        for m in admin_only {
            assert_eq!(
                privileged(c.api(id), m, Some(&t.operator)).await,
                Code::PermissionDenied,
                "{m} as an operator"
            );
        }
    }
    // Nothing was appended, and nobody restarted or was removed.
    let after = c.status(leader).await.unwrap();
    assert_eq!(
        after.last_index, before,
        "a refused call appended something"
    );
    assert_eq!(after.members.iter().filter(|m| m.voter).count(), 3);

    // Allowed acts are audit entries naming the authenticated principal, not a typed name.
    let r = ClusterClient::new(c.api(follower))
        .record_act(with_token(
            pb::RecordActRequest {
                act: "front door lock replaced".into(),
                by: "someone-else".into(),
            },
            Some(&t.admin),
        ))
        .await
        .expect("admin records an act through a follower (forwarded with its token)");
    let idx = r.into_inner().index;
    DevicesClient::new(c.api(leader))
        .register(with_token(device("siren"), Some(&t.operator)))
        .await
        .expect("an operator registers a device");
    let tail = c.tail(leader, 5).await;
    let act = tail.iter().find(|e| e.index == idx).unwrap();
    assert!(act.kind.contains("by \"admin\""), "{}", act.kind);
    assert!(!act.kind.contains("someone-else"), "{}", act.kind);
    assert!(
        tail.iter()
            .any(|e| e.kind.contains("device siren registered by \"olga\"")),
        "{tail:?}"
    );
    // A membership act by the admin is recorded before the change, naming the admin.
    ClusterClient::new(c.api(leader))
        .transfer_leader(with_token(
            pb::TransferLeaderRequest { to: follower },
            Some(&t.admin),
        ))
        .await
        .expect("admin transfers leadership");
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(new_leader, follower);
    let tail = c.tail(new_leader, 10).await;
    assert!(
        tail.iter().any(|e| e.kind
            == format!("leadership transfer to node {follower} requested (by \"admin\")")),
        "{tail:?}"
    );

    // Agents submit intents as themselves and read only their own.
    let submitted = IntentsClient::new(c.api(leader))
        .submit(with_token(
            pb::SubmitIntentRequest {
                class: "ensure_safety".into(),
                urgency: "emergency".into(),
                location: "home".into(),
                idempotency_key: "sec-test-1".into(),
                ..Default::default()
            },
            Some(&t.agent),
        ))
        .await
        .expect("an agent submits an intent")
        .into_inner();
    let as_someone_else = IntentsClient::new(c.api(leader))
        .submit(with_token(
            pb::SubmitIntentRequest {
                class: "ensure_safety".into(),
                urgency: "emergency".into(),
                location: "home".into(),
                idempotency_key: "sec-test-2".into(),
                source: "olga".into(),
                ..Default::default()
            },
            Some(&t.agent),
        ))
        .await
        .unwrap_err();
    assert_eq!(as_someone_else.code(), Code::PermissionDenied);
    let get = |token: &str| {
        let ch = c.api(new_leader);
        let id = submitted.id.clone();
        let token = token.to_string();
        async move {
            IntentsClient::new(ch)
                .get(with_token(pb::GetIntentRequest { id }, Some(&token)))
                .await
        }
    };
    let own = get(&t.agent).await.expect("an agent reads its own intent");
    assert_eq!(own.into_inner().id, submitted.id);
    let tail = c.tail(new_leader, 20).await;
    assert!(
        tail.iter()
            .any(|e| e.kind.contains(&format!("intent {}", submitted.id))
                && e.kind.ends_with("from robot")),
        "the intent's source is not the agent: {tail:?}"
    );
    assert_eq!(
        get(&t.other_agent).await.unwrap_err().code(),
        Code::PermissionDenied,
        "an agent read another agent's intent"
    );
    get(&t.operator)
        .await
        .expect("an operator reads any intent");

    // A checkpoint on demand is cosigned by the witness over the mutual-TLS Raft transport.
    let cp = AuditClient::new(c.api(new_leader))
        .checkpoint(with_token(pb::CheckpointRequest {}, Some(&t.operator)))
        .await
        .expect("an operator asks for a checkpoint")
        .into_inner();
    assert!(cp.cosigned && !cp.fork, "not cosigned over TLS: {cp:?}");
    assert_eq!(
        AuditClient::new(c.api(new_leader))
            .checkpoint(with_token(pb::CheckpointRequest {}, Some(&t.agent)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_foreign_certificate_cannot_join_or_vote() {
    hearth_tests::init_tracing();
    let mut c = SecureCluster::new();
    for id in [1, 2, 3] {
        let cfg = c.configs[&id].clone();
        c.start_config(id, cfg);
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let term = c.status(leader).await.unwrap().term;

    // Node 4 has a certificate for node-4.hearth from another CA (same software, same names).
    let foreign = c.dir.path().join("foreign");
    hearth_node::pki::init_pki(&foreign, &[1, 4], false).unwrap();
    let mut addrs = c.addrs.clone();
    addrs.insert(4, format!("127.0.0.1:{}", free_port()));
    let roles = [
        (1u64, Role::Hub),
        (2, Role::Hub),
        (3, Role::Witness),
        (4, Role::Hub),
    ];
    let cfg4 = node_config(
        4,
        Role::Hub,
        &addrs,
        &roles,
        c.dir.path().join("node4"),
        &foreign,
        false,
    );
    c.start_config(4, cfg4);
    let foreign_admin = std::fs::read_to_string(foreign.join("admin.token")).unwrap();
    let node4_status = || async {
        ClusterClient::new(tls_channel(
            &addrs[&4],
            &foreign.join("ca.pem"),
            "hearth",
            None,
        ))
        .status(with_token(pb::StatusRequest {}, Some(foreign_admin.trim())))
        .await
        .map(|r| r.into_inner())
    };
    // Node 4 runs (its own API answers).
    let deadline = Instant::now() + Duration::from_secs(10);
    while node4_status().await.is_err() {
        assert!(Instant::now() < deadline, "node 4 does not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Join: the admin adds it; the leader's TLS refuses node 4's server certificate, so it
    // never receives an entry and never becomes a voter.
    let add = ClusterClient::new(c.api(leader))
        .add_member(with_token(
            pb::AddMemberRequest {
                id: 4,
                addr: addrs[&4].clone(),
                role: "hub".into(),
            },
            Some(&c.tokens.admin),
        ))
        .await;
    // (The call waits for a learner that never catches up: it ends with an error or the
    // client's deadline.)
    assert!(
        add.is_err(),
        "adding a node with a foreign certificate succeeded: {add:?}; node 4: {:?}",
        node4_status().await
    );
    let s4 = node4_status().await.unwrap();
    assert_eq!(s4.last_index, None, "node 4 received entries: {s4:?}");
    let s = c.status(leader).await.unwrap();
    let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(voters, vec![1, 2, 3]);
    // The leader gives up on it (not made a voter) and the learner can be removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = ClusterClient::new(c.api(leader))
            .remove_member(with_token(
                pb::RemoveMemberRequest { id: 4 },
                Some(&c.tokens.admin),
            ))
            .await;
        match r {
            Ok(r) => {
                assert_eq!(r.into_inner().voters, vec![1, 2, 3]);
                break;
            }
            // The add is still waiting for the learner (a membership change in progress).
            Err(e) => assert!(Instant::now() < deadline, "cannot remove learner 4: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s4 = node4_status().await.unwrap();
    assert_eq!(s4.last_index, None, "node 4 received entries: {s4:?}");

    // Vote: a vote request with a huge term, sent straight to a hub over TLS …
    let send = |ch: Channel, from: u64, to: u64| {
        let data = hearth_tests::cluster::vote_request_bytes(1000, from);
        async move {
            RaftClient::new(ch)
                .vote(tonic::Request::new(RaftBytes {
                    format: hearth_cluster::wire::FORMAT_JSON,
                    from,
                    to,
                    data,
                }))
                .await
        }
    };
    let target = if leader == 1 { 2 } else { 1 };
    let cluster_ca = c.pki().join("ca.pem");
    // … with the foreign certificate: the TLS handshake fails.
    let r = send(
        tls_channel(
            &c.addrs[&target],
            &cluster_ca,
            &hearth_cluster::tls::node_name(target),
            Some((&foreign.join("node-4.pem"), &foreign.join("node-4.key"))),
        ),
        4,
        target,
    )
    .await;
    assert!(r.is_err(), "a foreign certificate was accepted");
    assert_ne!(r.unwrap_err().code(), Code::Ok);
    // … with the foreign CA's "node 1" certificate, claiming to be node 1: also refused.
    let r = send(
        tls_channel(
            &c.addrs[&target],
            &cluster_ca,
            &hearth_cluster::tls::node_name(target),
            Some((&foreign.join("node-1.pem"), &foreign.join("node-1.key"))),
        ),
        1,
        target,
    )
    .await;
    assert!(r.is_err(), "a foreign node-1 certificate was accepted");
    // … without a client certificate: refused before decoding.
    let r = send(c.api(target), 4, target).await.unwrap_err();
    assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
    assert!(r.message().contains("no client certificate"), "{r:?}");
    // … with a real cluster certificate of node 3, claiming to be node 1: refused.
    let pki = c.pki();
    let r = send(
        tls_channel(
            &c.addrs[&target],
            &cluster_ca,
            &hearth_cluster::tls::node_name(target),
            Some((&pki.join("node-3.pem"), &pki.join("node-3.key"))),
        ),
        1,
        target,
    )
    .await
    .unwrap_err();
    assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
    assert!(r.message().contains("node-1.hearth"), "{r:?}");
    // … over node 3's own certificate, as node 3, but campaigning in node 1's name: refused.
    let r = RaftClient::new(tls_channel(
        &c.addrs[&target],
        &cluster_ca,
        &hearth_cluster::tls::node_name(target),
        Some((&pki.join("node-3.pem"), &pki.join("node-3.key"))),
    ))
    .vote(tonic::Request::new(RaftBytes {
        format: hearth_cluster::wire::FORMAT_JSON,
        from: 3,
        to: target,
        data: hearth_tests::cluster::vote_request_bytes(1000, 1),
    }))
    .await
    .unwrap_err();
    assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    assert!(r.message().contains("in the name of node 1"), "{r:?}");
    // None of it moved the cluster: same leader, term not raised to 1000.
    let s = c.status(target).await.unwrap();
    assert!(s.term < 1000, "a refused vote raised the term: {s:?}");
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader);
    assert!(c.status(leader).await.unwrap().term >= term);

    // The control: the same vote over a certificate that proves its sender is heard (node 3's
    // certificate, claiming node 3: accepted and answered), so only identity stopped the others.
    let ok = send(
        tls_channel(
            &c.addrs[&target],
            &cluster_ca,
            &hearth_cluster::tls::node_name(target),
            Some((&pki.join("node-3.pem"), &pki.join("node-3.key"))),
        ),
        3,
        target,
    )
    .await;
    assert!(ok.is_ok(), "a well-identified vote was refused: {ok:?}");
    c.stop_all().await;
}

/// Issue 13 item 7: InstallSnapshot and TransferLeader are checked like vote and append — a
/// stolen witness certificate cannot send them in a hub's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_witness_certificate_cannot_snapshot_or_transfer_in_a_hubs_name() {
    hearth_tests::init_tracing();
    let mut c = SecureCluster::new();
    for id in [1, 2, 3] {
        let cfg = c.configs[&id].clone();
        c.start_config(id, cfg);
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let term = c.status(leader).await.unwrap().term;
    let target = if leader == 1 { 2 } else { 1 };
    let pki = c.pki();
    let cluster_ca = pki.join("ca.pem");
    let as_node = |id: u64| {
        RaftClient::new(tls_channel(
            &c.addrs[&target],
            &cluster_ca,
            &hearth_cluster::tls::node_name(target),
            Some((
                &pki.join(format!("node-{id}.pem")),
                &pki.join(format!("node-{id}.key")),
            )),
        ))
    };
    let bytes = |data: Vec<u8>, from: u64| {
        tonic::Request::new(RaftBytes {
            format: hearth_cluster::wire::FORMAT_JSON,
            from,
            to: target,
            data,
        })
    };
    // The witness's certificate, as the witness, sends a snapshot in the leader's name, with
    // a term far ahead: refused before openraft sees it.
    let r = as_node(3)
        .install_snapshot(bytes(
            hearth_tests::cluster::snapshot_request_bytes(1000, leader),
            3,
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    assert!(
        r.message()
            .contains(&format!("in the name of node {leader}")),
        "{r:?}"
    );
    // … and hands the leadership to the other hub in the leader's name (its real vote).
    let r = as_node(3)
        .transfer_leader(bytes(
            hearth_tests::cluster::transfer_leader_request_bytes(term, leader, target),
            3,
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::PermissionDenied, "{r:?}");
    assert!(
        r.message()
            .contains(&format!("in the name of node {leader}")),
        "{r:?}"
    );
    // Nothing moved: same leader, same term (a transfer would have made `target` campaign,
    // the snapshot would have raised the term to 1000).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader);
    let s = c.status(target).await.unwrap();
    assert_eq!(s.term, term, "a refused RPC moved the term: {s:?}");

    // The control: the same transfer over the leader's own certificate is accepted and the
    // other hub takes over, so only identity stopped the witness's.
    let ok = as_node(leader)
        .transfer_leader(bytes(
            hearth_tests::cluster::transfer_leader_request_bytes(term, leader, target),
            leader,
        ))
        .await;
    assert!(ok.is_ok(), "the leader's own transfer was refused: {ok:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .status(target)
        .await
        .is_none_or(|s| s.node_state() != pb::NodeState::Leader)
    {
        assert!(
            Instant::now() < deadline,
            "the transfer to {target} did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop_all().await;
}

fn lock(id: &str, location: &str, tags: &[&str], legacy_capable: bool) -> pb::DeviceManifest {
    pb::DeviceManifest {
        id: id.into(),
        name: id.into(),
        location: location.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        actuators: [(
            "lock".to_string(),
            pb::StateList {
                states: vec!["locked".into(), "unlocked".into()],
            },
        )]
        .into(),
        emergency_capable: legacy_capable,
        adapter_kind: "sim".into(),
        adapter_target: "local:security-grants".into(),
        ..Default::default()
    }
}

fn lamp() -> pb::DeviceManifest {
    pb::DeviceManifest {
        id: "hall-lamp".into(),
        name: "Hall lamp".into(),
        location: "home/hall".into(),
        actuators: [(
            "light".to_string(),
            pb::StateList {
                states: vec!["on".into(), "off".into()],
            },
        )]
        .into(),
        emergency_capable: false,
        adapter_kind: "sim".into(),
        adapter_target: "local:security-grants".into(),
        ..Default::default()
    }
}

fn ask(class: &str, location: &str, urgency: &str, key: &str) -> pb::SubmitIntentRequest {
    pb::SubmitIntentRequest {
        class: class.into(),
        urgency: urgency.into(),
        location: location.into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn policy_doc(policies: serde_json::Value) -> pb::ApplyDocument {
    pb::ApplyDocument {
        json: serde_json::json!({ "policies": policies }).to_string(),
        ..Default::default()
    }
}

/// Issue 13 items 2, 3, 4 and 13 over real gRPC with tokens, on the leader and through a
/// follower (which forwards the caller's token; the leader checks again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emergencies_tokens_keys_and_policy_files_at_the_edge() {
    hearth_tests::init_tracing();
    let mut c = SecureCluster::new();
    for id in [1, 2, 3] {
        let cfg = c.configs[&id].clone();
        c.start_config(id, cfg);
    }
    let leader = c.wait_settled(Duration::from_secs(20)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let t = &c.tokens;
    let op = Some(t.operator.as_str());
    // The household: a front door (escape route, legacy emergency-capable), a back door
    // registered with emergency_capable = false, a siren.
    for d in [
        lock("front-door", "home/hall", &["escape_route"], true),
        lock("back-door", "home/back", &["escape_route"], false),
        device("siren"),
        lamp(),
    ] {
        DevicesClient::new(c.api(leader))
            .register(with_token(d, op))
            .await
            .expect("register");
    }
    PoliciesClient::new(c.api(leader))
        .apply_policies(with_token(
            policy_doc(serde_json::json!([{"id": "ask-before-unlocking",
                "rule": {"kind": "require_confirmation", "class": "control_access"}}])),
            op,
        ))
        .await
        .expect("the confirmation policy");
    let submit = |id: u64, req: pb::SubmitIntentRequest, token: &str| {
        let ch = c.api(id);
        let token = token.to_string();
        async move {
            IntentsClient::new(ch)
                .submit(with_token(req, Some(&token)))
                .await
                .map(|r| r.into_inner())
        }
    };
    // A token just added: each node re-reads the tokens file on its own; retry while one does
    // not know it yet.
    let submit_new = |id: u64, req: pb::SubmitIntentRequest, token: String| {
        let submit = &submit;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let r = submit(id, req.clone(), &token).await;
                match &r {
                    Err(e) if e.code() == Code::Unauthenticated && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    _ => return r,
                }
            }
        }
    };
    let before = c.status(leader).await.unwrap().last_index;

    // Item 2, as an agent without the emergency grant: both sequences refused, on the leader
    // and through a follower, for submit, dry run and explain; nothing appended.
    let mut unlock = ask("control_access", "home", "emergency", "agent-unlock");
    unlock.context.insert("state".into(), "unlocked".into());
    let safety = ask("ensure_safety", "home", "emergency", "agent-safety");
    for id in [leader, follower] {
        for req in [unlock.clone(), safety.clone()] {
            let e = submit(id, req.clone(), &t.other_agent).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
            assert!(
                e.message().contains("may not claim an emergency"),
                "{}",
                e.message()
            );
            let mut dry = req.clone();
            dry.dry_run = true;
            assert_eq!(
                submit(id, dry, &t.other_agent).await.unwrap_err().code(),
                Code::PermissionDenied
            );
            let e = IntentsClient::new(c.api(id))
                .explain(with_token(req, Some(&t.other_agent)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied);
        }
    }
    assert_eq!(
        c.status(leader).await.unwrap().last_index,
        before,
        "a refused intent appended something"
    );

    // The same by a token allowed to claim emergencies: as the policy says. The unlock waits
    // for approval (the confirmation policy does not let an emergency past it, and neither
    // door lists the unlock as an emergency action): nothing is dispatched.
    let held = submit(follower, unlock.clone(), &t.agent)
        .await
        .expect("held");
    assert_eq!(held.status, "awaiting_approval", "{held:?}");
    assert!(held.actions.iter().all(|a| a.outcome.is_empty()));
    assert!(
        held.notes.iter().any(|n| n.contains("waits for approval")),
        "{held:?}"
    );
    // ensure_safety has no confirmation policy: its class unlocks the escape routes.
    let safe = submit(leader, safety.clone(), &t.agent)
        .await
        .expect("safety");
    assert_eq!(safe.status, "accepted", "{safe:?}");
    let devices: Vec<&str> = safe.actions.iter().map(|a| a.device.as_str()).collect();
    assert!(
        devices.contains(&"siren") && devices.contains(&"front-door"),
        "{devices:?}"
    );
    assert!(
        !devices.contains(&"back-door"),
        "emergency_capable = false: {devices:?}"
    );
    // Without an emergency, ensure_safety unlocks nothing.
    let alert = submit(
        leader,
        ask("ensure_safety", "home", "alert", "agent-alert"),
        &t.other_agent,
    )
    .await
    .expect("an alert");
    assert!(
        alert.actions.iter().all(|a| a.capability != "lock"),
        "{alert:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = IntentsClient::new(c.api(leader))
        .get(with_token(
            pb::GetIntentRequest {
                id: held.id.clone(),
            },
            op,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "awaiting_approval");
    assert!(
        again.actions.iter().all(|a| a.outcome.is_empty()),
        "{again:?}"
    );

    // Classes and locations: a token limited to notify in the kitchen.
    let limited = hearth_node::pki::add_token_with(
        &c.pki().join("tokens.toml"),
        "kitchen-screen",
        ClientRole::Agent,
        hearth_node::pki::TokenLimits {
            classes: Some(vec!["notify".into()]),
            locations: Some(vec!["home/kitchen".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    let e = submit_new(
        follower,
        ask("control_access", "home/kitchen", "info", "l-1"),
        limited.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("class"), "{}", e.message());
    let e = submit_new(
        leader,
        ask("notify", "home", "info", "l-2"),
        limited.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("location"), "{}", e.message());
    // A token limited to the hall, allowed emergencies, cannot widen one to the whole house
    // through a misspelt room under its own location.
    let hall = hearth_node::pki::add_token_with(
        &c.pki().join("tokens.toml"),
        "hall-smoke",
        ClientRole::Agent,
        hearth_node::pki::TokenLimits {
            emergency: Some(true),
            locations: Some(vec!["home/hall".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    let e = submit_new(
        leader,
        ask("ensure_safety", "home/hall/closett", "emergency", "w-1"),
        hall.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("act everywhere"), "{}", e.message());
    submit_new(
        follower,
        ask("ensure_safety", "home/hall", "emergency", "w-2"),
        hall.clone(),
    )
    .await
    .expect("its own location");

    // Per action: under a confirmation policy that lets emergencies past it, the siren and
    // the escape route go at once; the lamp (not emergency-capable) waits for a person.
    PoliciesClient::new(c.api(leader))
        .add_policy(with_token(
            policy_doc(
                serde_json::json!([{"id": "ask-safety", "emergency_override": true,
                "rule": {"kind": "require_confirmation", "class": "ensure_safety"}}]),
            ),
            op,
        ))
        .await
        .expect("the safety confirmation");
    let part = submit(
        leader,
        ask("ensure_safety", "home", "emergency", "partial-1"),
        &t.agent,
    )
    .await
    .expect("partly held");
    assert_eq!(part.status, "accepted", "{part:?}");
    let held: Vec<(&str, bool)> = part
        .actions
        .iter()
        .map(|a| (a.device.as_str(), a.needs_approval))
        .collect();
    assert!(
        held.contains(&("hall-lamp", true)) && held.contains(&("siren", false)),
        "{held:?}"
    );
    let get_op = |id: String| {
        let ch = c.api(leader);
        let op = t.operator.clone();
        async move {
            IntentsClient::new(ch)
                .get(with_token(pb::GetIntentRequest { id }, Some(&op)))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let outcome = |v: &pb::IntentView, d: &str| {
        v.actions
            .iter()
            .find(|a| a.device == d)
            .map(|a| a.outcome.clone())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = get_op(part.id.clone()).await;
        if !outcome(&v, "siren").is_empty() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome(&v, "siren"), "APPLIED", "{v:?}");
    assert_eq!(
        outcome(&v, "hall-lamp"),
        "",
        "the held lamp was dispatched: {v:?}"
    );
    IntentsClient::new(c.api(follower))
        .approve(with_token(
            pb::ApproveRequest {
                id: part.id.clone(),
                by: "olga".into(),
                ..Default::default()
            },
            op,
        ))
        .await
        .expect("approve the held part");
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = get_op(part.id.clone()).await;
        if !outcome(&v, "hall-lamp").is_empty() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome(&v, "hall-lamp"), "APPLIED", "{v:?}");
    PoliciesClient::new(c.api(leader))
        .remove_policy(with_token(
            pb::RemovePolicyRequest {
                id: "ask-safety".into(),
            },
            op,
        ))
        .await
        .expect("remove the safety confirmation");

    // Item 4: agent B ("other") uses A's predictable key first; A's emergency still runs, and
    // nothing names B's intent to A.
    let b = submit(
        leader,
        ask("ensure_safety", "home", "alert", "smoke-kitchen-42"),
        &t.other_agent,
    )
    .await
    .expect("B's intent");
    let a = submit(
        follower,
        ask("ensure_safety", "home", "emergency", "smoke-kitchen-42"),
        &t.agent,
    )
    .await
    .expect("A's emergency is not refused ALREADY_EXISTS");
    assert_ne!(a.id, b.id);
    assert_eq!(a.urgency, "emergency");
    // A's own retry is still idempotent, and a different body under A's key is A's conflict.
    let a2 = submit(
        leader,
        ask("ensure_safety", "home", "emergency", "smoke-kitchen-42"),
        &t.agent,
    )
    .await
    .unwrap();
    assert_eq!(a2.id, a.id);
    let e = submit(
        leader,
        ask(
            "ensure_safety",
            "home/hall",
            "emergency",
            "smoke-kitchen-42",
        ),
        &t.agent,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(
        e.message().contains(&a.id) && !e.message().contains(&b.id),
        "{}",
        e.message()
    );

    // Item 3: a misspelt location is refused naming it; as an emergency, every device that
    // may act in one acts and the intent says the location was not found.
    let e = submit(
        leader,
        ask("ensure_safety", "home/kitchn", "alert", "typo-1"),
        &t.agent,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("home/kitchn"), "{}", e.message());
    let typo = submit(
        follower,
        ask("ensure_safety", "home/kitchn", "emergency", "typo-2"),
        &t.agent,
    )
    .await
    .unwrap();
    assert!(
        typo.notes
            .iter()
            .any(|n| n.contains("home/kitchn was not found")),
        "{typo:?}"
    );
    let acted: Vec<&str> = typo.actions.iter().map(|a| a.device.as_str()).collect();
    // Only emergency actions: the siren and the emergency-capable escape route; never the
    // back door registered with emergency_capable = false.
    assert_eq!(acted, ["siren", "front-door"], "{typo:?}");
    // An intent whose every device a policy excluded is no_action, with the reason.
    for d in ["siren", "front-door", "back-door", "hall-lamp"] {
        PoliciesClient::new(c.api(follower))
            .add_policy(with_token(
                policy_doc(serde_json::json!([{"id": format!("hush-{d}"),
                    "rule": {"kind": "exclude_device", "device": d}}])),
                op,
            ))
            .await
            .expect("add one policy");
    }
    // Adding an id that exists is refused naming it (through a follower: the leader checks).
    let e = PoliciesClient::new(c.api(follower))
        .add_policy(with_token(
            policy_doc(serde_json::json!([{"id": "hush-siren",
                "rule": {"kind": "exclude_device", "device": "back-door"}}])),
            op,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("policies[0].id") && e.message().contains("remove it first"));
    let quiet = submit(
        leader,
        ask("ensure_safety", "home", "alert", "none-1"),
        &t.agent,
    )
    .await
    .unwrap();
    assert_eq!(quiet.status, "no_action", "{quiet:?}");
    assert!(quiet.actions.is_empty());
    assert!(
        quiet.nothing_to_do.contains("policy hush-siren"),
        "{quiet:?}"
    );

    // Item 13: unknown fields, duplicate ids and devices that do not exist are refused with
    // the field named, on the leader and through a follower; the set in force is unchanged.
    let shown = |id: u64| {
        let ch = c.api(id);
        let op = t.operator.clone();
        async move {
            PoliciesClient::new(ch)
                .show(with_token(pb::ShowPoliciesRequest {}, Some(&op)))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let in_force = shown(leader).await;
    for id in [leader, follower] {
        for (doc, field) in [
            (
                serde_json::json!([{"id": "night", "timezone": "Europe/Paris",
                    "rule": {"kind": "quiet_hours", "start_minute": 1320, "end_minute": 420}}]),
                "timezone",
            ),
            (
                serde_json::json!([{"id": "g", "rule": {"kind": "block", "device": "garage-dor"}}]),
                "policies[0].rule.device",
            ),
            (
                serde_json::json!([
                    {"id": "g", "rule": {"kind": "block", "device": "siren"}},
                    {"id": "g", "rule": {"kind": "block", "device": "front-door"}}]),
                "policies[1].id",
            ),
        ] {
            let e = PoliciesClient::new(c.api(id))
                .apply_policies(with_token(policy_doc(doc), op))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        let e = PoliciesClient::new(c.api(id))
            .add_policy(with_token(
                policy_doc(
                    serde_json::json!([{"id": "x", "rule": {"kind": "block", "device": "nope"}}]),
                ),
                op,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }
    assert_eq!(
        shown(leader).await.json,
        in_force.json,
        "a refused set changed something"
    );
    // A set applied against a stale view is refused; against the current one it applies.
    let mut stale = policy_doc(serde_json::json!([]));
    stale.expect_sha256 = "0".repeat(64);
    let e = PoliciesClient::new(c.api(leader))
        .apply_policies(with_token(stale, op))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    PoliciesClient::new(c.api(follower))
        .remove_policy(with_token(
            pb::RemovePolicyRequest {
                id: "hush-siren".into(),
            },
            op,
        ))
        .await
        .expect("remove one policy");
    let e = PoliciesClient::new(c.api(leader))
        .remove_policy(with_token(
            pb::RemovePolicyRequest {
                id: "hush-siren".into(),
            },
            op,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let tail = c.tail(leader, 40).await;
    assert!(
        tail.iter()
            .any(|e| e.kind == "policy hush-siren added by \"olga\""),
        "{tail:?}"
    );
    assert!(
        tail.iter()
            .any(|e| e.kind == "policy hush-siren removed by \"olga\"")
    );
    c.stop_all().await;
}
