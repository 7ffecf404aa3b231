//! DoSync's REST API v1 on a real Hearth cluster: two hubs and a witness in this process,
//! each a full `serve` with mTLS between nodes, client tokens, and the HTTP face on loopback;
//! every request goes over real HTTP/1.1 (hyper's client) through a real socket. One test per
//! behaviour of DoSync's spec (spec/openapi.json, §7), named for it.
//!
//! Most tests share one cluster (started once, on a runtime of its own). Those that write or
//! count the chain take [`SERIAL`], so "nothing was appended" is measured with no other
//! writer. The NO_QUORUM test builds its own cluster, to stop two of its nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_node::auth::ClientRole;
use hearth_node::config::{TimingConfig, local_cluster};
use hearth_node::{NodeConfig, Role};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Writers and chain counters take turns (tests run in parallel threads).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Tokens {
    admin: String,
    operator: String,
    agent: String,
}

/// A running cluster: each node's HTTP address, and a stop switch per node.
struct Cluster {
    http: Vec<(u64, SocketAddr)>,
    /// Node 1's LAN listener (`[http] listen`): TLS with its node certificate.
    https: SocketAddr,
    ca: PathBuf,
    tokens: Tokens,
    stops: Vec<(u64, tokio::sync::broadcast::Sender<()>)>,
    tasks: std::sync::Mutex<Vec<hearth_node::local::NodeTask>>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn timing() -> TimingConfig {
    TimingConfig {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        caretaker_patience_ms: 1000,
        write_timeout_ms: 1500,
    }
}

fn abs(p: &Path) -> String {
    p.display().to_string()
}

/// Two hubs and a witness with mTLS, tokens, and `[http] loopback`, started on the current
/// runtime.
fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki: PathBuf = dir.path().join("pki");
    hearth_node::pki::init_pki(&pki, &[1, 2, 3], false).expect("pki");
    let tokens_file = pki.join("tokens.toml");
    let tokens = Tokens {
        admin: std::fs::read_to_string(pki.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string(),
        operator: hearth_node::pki::add_token(&tokens_file, "olga", ClientRole::Operator)
            .expect("operator token"),
        agent: hearth_node::pki::add_token(&tokens_file, "ann", ClientRole::Agent)
            .expect("agent token"),
    };
    let members: Vec<(u64, Role, String)> = [(1, Role::Hub), (2, Role::Hub), (3, Role::Witness)]
        .into_iter()
        .map(|(id, r)| (id, r, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut http = Vec::new();
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut configs: Vec<NodeConfig> = Vec::new();
    for (b, (id, _, _)) in local_cluster(dir.path(), &members)
        .into_iter()
        .zip(&members)
    {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        http.push((*id, addr));
        let b = if *id == 1 {
            b.http_listen(https.to_string())
        } else {
            b
        };
        configs.push(
            b.tls(
                abs(&pki.join("ca.pem")),
                abs(&pki.join(format!("node-{id}.pem"))),
                abs(&pki.join(format!("node-{id}.key"))),
            )
            .tokens_file(abs(&tokens_file))
            .timing(timing())
            .http_loopback(addr.to_string())
            .build()
            .expect("config"),
        );
    }
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for cfg in configs {
        let id = cfg.node_id;
        let (stop, t) = hearth_node::local::spawn_in_process(vec![cfg]);
        stops.push((id, stop));
        tasks.extend(t);
    }
    Cluster {
        http,
        https,
        ca: pki.join("ca.pem"),
        tokens,
        stops,
        tasks: std::sync::Mutex::new(tasks),
        _dir: dir,
    }
}

/// The shared cluster, on a runtime that lives as long as the test binary.
fn shared() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // Ports are picked free and then bound by the nodes: another process on this
                // machine can take one in between. A cluster whose node could not start is
                // started again on new ports (twice at most).
                for attempt in 1..=3 {
                    let c = start_cluster();
                    match formed(&c).await {
                        Ok(()) => {
                            let _ = tx.send(c);
                            std::future::pending::<()>().await;
                        }
                        Err(why) if attempt < 3 => {
                            eprintln!("cluster attempt {attempt}: {why}; starting another");
                            for (id, _) in &c.http {
                                c.stop(*id);
                            }
                        }
                        Err(why) => panic!("{why}"),
                    }
                }
            });
        });
        rx.recv().expect("cluster started")
    })
}

/// One HTTP answer: status, headers, body as JSON (`Value::Null` when not JSON).
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
    text: String,
}

/// A request over any connection (plain or TLS).
async fn exchange<IO>(
    io: IO,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// A request over a new connection: `headers` besides Content-Type, `body` sent raw.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(stream, addr, method, path, headers, body).await
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let auth = format!("Bearer {token}");
    raw(
        addr,
        method,
        path,
        &[("authorization", &auth)],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

impl Cluster {
    fn addr(&self, id: u64) -> SocketAddr {
        self.http
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, a)| *a)
            .expect("node")
    }

    /// The node that leads, as node 1 sees it.
    async fn leader(&self) -> u64 {
        let a = call(
            self.addr(1),
            "GET",
            "/v1/hub/peers",
            &self.tokens.agent,
            None,
        )
        .await;
        a.body["leader"].as_u64().expect("a leader")
    }

    /// A hub that does not lead (a follower's address).
    async fn follower_hub(&self) -> SocketAddr {
        let l = self.leader().await;
        self.addr(if l == 1 { 2 } else { 1 })
    }

    /// Entries in the chain, as the leader reads it.
    async fn chain_len(&self) -> u64 {
        let l = self.leader().await;
        let a = call(
            self.addr(l),
            "GET",
            "/v1/audit?limit=1",
            &self.tokens.operator,
            None,
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["count"].as_u64().expect("count")
    }

    fn stop(&self, id: u64) {
        if let Some((_, s)) = self.stops.iter().find(|(i, _)| *i == id) {
            let _ = s.send(());
        }
    }
}

/// Waits until every node names the same leader, all three are voters, and every node has
/// applied the same chain head (the join notices the leader appends by itself are in).
async fn wait_formed(c: &Cluster) {
    if let Err(why) = formed(c).await {
        panic!("{why}");
    }
}

/// [`wait_formed`], saying why not: a node that stopped (its error), or no formation in time.
async fn formed(c: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let mut t = c.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.iter().position(|h| h.is_finished()).map(|i| t.remove(i))
        };
        if let Some(h) = done {
            return Err(match h.await {
                Ok((id, res)) => format!("node {id} stopped: {res:?}"),
                Err(e) => format!("a node's task failed: {e}"),
            });
        }
        let mut leaders = Vec::new();
        let mut heads = Vec::new();
        let mut voters = 0;
        for (id, addr) in &c.http {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                    .await
            else {
                break;
            };
            drop(stream);
            let p = call(*addr, "GET", "/v1/hub/peers", &c.tokens.agent, None).await;
            let s = call(*addr, "GET", "/v1/status", &c.tokens.agent, None).await;
            leaders.push(p.body["leader"].as_u64());
            heads.push(s.body["audit_head"].clone());
            if *id == 1 {
                voters = p.body["members"].as_array().map_or(0, |m| {
                    m.iter().filter(|m| m["voter"] == json!(true)).count()
                });
            }
        }
        let settled = leaders.len() == c.http.len()
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
            && heads.iter().all(|h| *h == heads[0] && !h.is_null())
            && voters == 3;
        // Formation appends by itself after the voters exist: each joining node's notice
        // ("votes again …") once the leader has read it; wait for both.
        let settled = settled && {
            let log = call(c.addr(1), "GET", "/v1/audit", &c.tokens.operator, None).await;
            let count = |ty: &str| {
                log.body["entries"]
                    .as_array()
                    .map_or(0, |v| v.iter().filter(|e| e["type"] == ty).count())
            };
            count("node_admitted") >= 3 && count("node_notice") >= 2
        };
        if settled {
            // Twice the same head a moment apart: nothing is still being appended.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = call(c.addr(1), "GET", "/v1/status", &c.tokens.agent, None).await;
            if again.body["audit_head"] == heads[0] {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the cluster did not form: {leaders:?} {heads:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` until it returns `Some`, for at most 20 s.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn light(id: &str) -> Value {
    json!({
        "device_id": id, "device_name": "Hall light", "manufacturer": "Acme", "model": "L1",
        "firmware": "1.0", "category": "actuator", "tags": ["light"],
        "sensors": [{"id": "lux", "type": "illuminance"}],
        "actuators": [{"id": "on", "type": "turn_on"}, {"id": "off", "type": "turn_off"}],
        "emergency_capable": true, "emergency_actions": ["turn_on"],
        "adapter_config": {"secret": "never shown"},
    })
}

async fn register(c: &Cluster, at: SocketAddr, id: &str) {
    let a = call(
        at,
        "POST",
        "/v1/devices/register",
        &c.tokens.operator,
        Some(light(id)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "registered");
}

#[tokio::test]
async fn status_declares_protocol_and_api_versions_in_body_and_headers() {
    let c = shared();
    let a = call(c.addr(3), "GET", "/v1/status", &c.tokens.agent, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    for f in [
        "name",
        "version",
        "protocol",
        "status",
        "devices",
        "audit_entries",
        "audit_integrity",
    ] {
        assert!(a.body.get(f).is_some(), "missing {f}: {}", a.text);
    }
    assert_eq!(a.body["protocol"], "dosync/0.5");
    assert_eq!(a.body["protocol_version"], "0.5");
    assert_eq!(a.body["api_version"], "1");
    assert_eq!(a.body["audit_integrity"], true);
    assert_eq!(a.headers["x-dosync-protocol-version"], "0.5");
    assert_eq!(a.headers["x-dosync-api-version"], "1");
    // On errors too.
    let e = call(c.addr(3), "GET", "/v1/nowhere", &c.tokens.agent, None).await;
    assert_eq!(e.status, 404);
    assert_eq!(e.headers["x-dosync-api-version"], "1");
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_401() {
    let c = shared();
    let none = raw(c.addr(1), "GET", "/v1/devices", &[], None).await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let wrong = call(
        c.addr(2),
        "GET",
        "/v1/devices",
        "invalid-token-certify-test",
        None,
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(wrong.body["error"], "UNAUTHENTICATED");
    let basic = raw(
        c.addr(2),
        "GET",
        "/v1/devices",
        &[("authorization", "Basic eDp5")],
        None,
    )
    .await;
    assert_eq!(basic.status, 401);
}

#[tokio::test]
async fn an_agent_token_is_refused_operator_endpoints_with_403_and_nothing_appended() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let before = c.chain_len().await;
    let at = c.follower_hub().await;
    let a = call(
        at,
        "POST",
        "/v1/devices/register",
        &c.tokens.agent,
        Some(light("agent-lamp")),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = call(at, "GET", "/v1/audit", &c.tokens.agent, None).await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = call(
        at,
        "DELETE",
        "/v1/devices/agent-lamp",
        &c.tokens.agent,
        None,
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text);
    // Confirm needs the operator header AND an operator token in it.
    let id = "/v1/intents/i-0123456789abcdef/confirm";
    let a = call(at, "POST", id, &c.tokens.operator, None).await;
    assert_eq!(a.status, 403, "no operator header: {}", a.text);
    assert!(
        a.text.contains("operator_credential_required"),
        "{}",
        a.text
    );
    let bearer = format!("Bearer {}", c.tokens.agent);
    let a = raw(
        at,
        "POST",
        id,
        &[
            ("authorization", &bearer),
            ("x-dosync-operator-token", &c.tokens.agent),
        ],
        None,
    )
    .await;
    assert_eq!(a.status, 403, "an agent token as operator: {}", a.text);
    assert_eq!(c.chain_len().await, before);
}

#[tokio::test]
async fn devices_register_list_get_patch_delete_through_a_follower() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let at = c.follower_hub().await;
    register(c, at, "hall-light").await;
    // Registered through a follower: the leader appended it; every node reads it.
    for (_, addr) in &c.http {
        let got = until("the device on every node", || async {
            let a = call(
                *addr,
                "GET",
                "/v1/devices/hall-light",
                &c.tokens.agent,
                None,
            )
            .await;
            (a.status == 200).then_some(a)
        })
        .await;
        for f in ["device_id", "device_name", "capabilities", "tags"] {
            assert!(got.body.get(f).is_some(), "missing {f}: {}", got.text);
        }
        assert!(
            got.body.get("adapter_config").is_none(),
            "adapter_config is never shown"
        );
        assert!(!got.text.contains("never shown"));
    }
    let list = call(at, "GET", "/v1/devices", &c.tokens.agent, None).await;
    assert!(
        list.body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|d| d["device_id"] == "hall-light")
    );
    // Registering again is fine (DoSync: 200 or 409, never 500).
    register(c, at, "hall-light").await;
    let p = call(
        at,
        "PATCH",
        "/v1/devices/hall-light",
        &c.tokens.operator,
        Some(json!({"device_name": "Porch", "location": "home/porch"})),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    let got = until("the rename", || async {
        let a = call(at, "GET", "/v1/devices/hall-light", &c.tokens.agent, None).await;
        (a.body["device_name"] == "Porch").then_some(a)
    })
    .await;
    assert_eq!(got.body["location"], "home/porch");
    let d = call(
        at,
        "DELETE",
        "/v1/devices/hall-light",
        &c.tokens.operator,
        None,
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["status"], "unregistered");
    until("the removal", || async {
        let a = call(at, "GET", "/v1/devices/hall-light", &c.tokens.agent, None).await;
        (a.status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unknown_device_is_404() {
    let c = shared();
    let a = call(
        c.addr(2),
        "GET",
        "/v1/devices/device-that-does-not-exist",
        &c.tokens.agent,
        None,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = call(
        c.addr(2),
        "DELETE",
        "/v1/devices/device-that-does-not-exist",
        &c.tokens.operator,
        None,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn an_intent_is_accepted_on_a_follower_and_polled_to_its_outcome() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let at = c.follower_hub().await;
    register(c, at, "porch-light").await;
    let body = json!({"intent": "ensure_safety", "urgency": "alert", "source": "certify",
                      "idempotency_key": "rest-test-1"});
    let a = call(
        at,
        "POST",
        "/v1/intent/async",
        &c.tokens.operator,
        Some(body.clone()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let id = a.body["intent_id"].as_str().expect("intent_id").to_string();
    assert!(a.body.get("status").is_some());
    // The same key and body: the same intent, nothing run twice.
    let again = call(
        at,
        "POST",
        "/v1/intent/async",
        &c.tokens.operator,
        Some(body),
    )
    .await;
    assert_eq!(again.body["intent_id"], json!(id));
    let done = until("the intent's outcome", || {
        let id = id.clone();
        async move {
            let a = call(
                at,
                "GET",
                &format!("/v1/intent/{id}"),
                &c.tokens.operator,
                None,
            )
            .await;
            (a.status == 200 && a.body["status"] != "pending").then_some(a)
        }
    })
    .await;
    for f in ["intent_id", "success", "status", "results"] {
        assert!(done.body.get(f).is_some(), "missing {f}: {}", done.text);
    }
    assert_eq!(done.body["status"], "success", "{}", done.text);
    let r = &done.body["results"][0];
    assert_eq!(r["device_id"], "porch-light");
    assert_eq!(r["action"], "turn_on");
    // The audit names who asked (the token), as the chain does.
    let log = call(at, "GET", "/v1/audit?limit=50", &c.tokens.operator, None).await;
    let accepted: Vec<&Value> = log.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["type"] == "intent_accepted" && e["intent_id"] == json!(id))
        .collect();
    assert_eq!(accepted.len(), 1, "{}", log.text);
    assert_eq!(accepted[0]["source"], "olga");
    // Finished: the entry of its last outcome is DoSync's `intent_executed`, once, with the
    // fields DoSync's readers take from it.
    let executed: Vec<&Value> = log.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["type"] == "intent_executed" && e["intent_id"] == json!(id))
        .collect();
    assert_eq!(executed.len(), 1, "{}", log.text);
    let e = executed[0];
    for f in [
        "intent",
        "urgency",
        "timestamp",
        "actions",
        "success",
        "hash",
        "prev_hash",
        "source",
    ] {
        assert!(e.get(f).is_some(), "intent_executed lacks {f}: {e}");
    }
    assert_eq!(e["intent"], "ensure_safety");
    assert_eq!(e["source"], "olga");
    assert_eq!(e["success"], json!(true));
    assert_eq!(e["actions"], json!(1));
    assert!(
        e["index"].as_u64() > accepted[0]["index"].as_u64(),
        "executed after it was accepted: {e}"
    );
    let d = call(
        at,
        "DELETE",
        "/v1/devices/porch-light",
        &c.tokens.operator,
        None,
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text);
}

#[tokio::test]
async fn bad_intents_are_422_and_append_nothing() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let at = c.follower_hub().await;
    let before = c.chain_len().await;
    for (body, why) in [
        (
            json!({"intent": "intent_that_does_not_exist", "urgency": "info"}),
            "unknown class",
        ),
        (
            json!({"intent": "ensure_safety", "urgency": "superurgent"}),
            "bad urgency",
        ),
        (json!({"intent": "notify", "urgency": 3}), "wrong type"),
        (
            json!({"intent": "notify", "colour": "red"}),
            "unknown field",
        ),
        (json!({"urgency": "info"}), "no intent"),
        (json!({"intent": "../notify"}), "path-like class"),
        (
            json!({"intent": "notify", "context": {"location": "home/../etc"}}),
            "path-like location",
        ),
    ] {
        let a = call(
            at,
            "POST",
            "/v1/intent/async",
            &c.tokens.operator,
            Some(body),
        )
        .await;
        assert_eq!(a.status, 422, "{why}: {}", a.text);
        assert!(a.body.get("detail").is_some(), "{why}: {}", a.text);
    }
    let a = raw(
        at,
        "POST",
        "/v1/intent/async",
        &[("authorization", &format!("Bearer {}", c.tokens.operator))],
        Some(b"{\"intent\": ".to_vec()),
    )
    .await;
    assert_eq!(a.status, 422, "malformed JSON: {}", a.text);
    assert_eq!(a.body["detail"][0]["type"], "json_invalid");
    assert_eq!(c.chain_len().await, before);
}

#[tokio::test]
async fn bad_manifests_and_path_like_ids_are_refused_and_append_nothing() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let at = c.follower_hub().await;
    let before = c.chain_len().await;
    let mut schema = light("cert-schema-test");
    schema["actuators"][0]["params_schema"] = json!({"type": "object", "properties": {"brightness": {"type": "integer", "minimum": "low"}}});
    let mut extra = light("x-1");
    extra["colour"] = json!("red");
    let mut tags = light("x-2");
    tags["tags"] = json!("light");
    let mut path = light("x-3");
    path["device_id"] = json!("../../etc/passwd");
    let mut upper = light("x-4");
    upper["tags"] = json!(["Light"]);
    for (body, why) in [
        (schema, "malformed params_schema"),
        (extra, "unknown field"),
        (tags, "wrong type"),
        (path, "path-like id"),
        (upper, "a tag Hearth refuses"),
    ] {
        let a = call(
            at,
            "POST",
            "/v1/devices/register",
            &c.tokens.operator,
            Some(body),
        )
        .await;
        assert_eq!(a.status, 422, "{why}: {}", a.text);
    }
    for p in [
        "/v1/devices/..",
        "/v1/devices/UPPER",
        "/v1/devices/a%2Fb",
        "/v1/intent/..",
        "/v1/intent/i-zz",
    ] {
        let a = call(at, "GET", p, &c.tokens.operator, None).await;
        assert!(
            a.status == 422 || a.status == 404,
            "{p}: {} {}",
            a.status,
            a.text
        );
        assert_ne!(a.status, 200);
    }
    let big = vec![b' '; 70 * 1024];
    let a = raw(
        at,
        "POST",
        "/v1/devices/register",
        &[("authorization", &format!("Bearer {}", c.tokens.operator))],
        Some(big),
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.text);
    let a = call(at, "GET", "/v1/audit?limit=0", &c.tokens.operator, None).await;
    assert_eq!(a.status, 422, "{}", a.text);
    let a = call(at, "GET", "/v1/audit?limt=5", &c.tokens.operator, None).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(c.chain_len().await, before);
}

#[tokio::test]
async fn explain_lists_evaluated_and_included_devices() {
    let _g = SERIAL.lock().await;
    let c = shared();
    register(c, c.addr(1), "explain-light").await;
    let at = c.addr(3);
    let a = until("the device on the witness", || async {
        let a = call(
            at,
            "GET",
            "/v1/intents/ensure_safety/explain?urgency=emergency",
            &c.tokens.operator,
            None,
        )
        .await;
        (a.status == 200 && a.body["devices_included"] == json!(1)).then_some(a)
    })
    .await;
    for f in [
        "intent",
        "devices_evaluated",
        "devices_included",
        "included",
    ] {
        assert!(a.body.get(f).is_some(), "missing {f}: {}", a.text);
    }
    assert_eq!(a.body["included"][0]["device_id"], "explain-light");
    assert_eq!(a.body["included"][0]["actions"], json!(["turn_on"]));
    // An agent's token has no emergency grant: it may not even ask what one would do.
    let agent = call(
        at,
        "GET",
        "/v1/intents/ensure_safety/explain?urgency=emergency",
        &c.tokens.agent,
        None,
    )
    .await;
    assert_eq!(agent.status, 403, "{}", agent.text);
    let bad = call(
        at,
        "GET",
        "/v1/intents/ensure_safety/explain?urgency=loud",
        &c.tokens.agent,
        None,
    )
    .await;
    assert_eq!(bad.status, 422);
    call(
        c.addr(1),
        "DELETE",
        "/v1/devices/explain-light",
        &c.tokens.operator,
        None,
    )
    .await;
}

#[tokio::test]
async fn intent_classes_list_the_universal_ones() {
    let c = shared();
    let a = call(
        c.addr(2),
        "GET",
        "/v1/intent-classes",
        &c.tokens.agent,
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let names: Vec<&str> = a.body["intent_classes"]
        .as_array()
        .expect("classes")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for n in [
        "ensure_safety",
        "alert_anomaly",
        "control_access",
        "report_status",
        "notify",
    ] {
        assert!(names.contains(&n), "{n} missing: {names:?}");
    }
}

#[tokio::test]
async fn audit_hashes_chain_and_integrity_is_verified() {
    let c = shared();
    let a = call(
        c.addr(2),
        "GET",
        "/v1/audit?limit=5",
        &c.tokens.operator,
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["integrity"], true);
    let e = a.body["entries"].as_array().expect("entries");
    assert!(!e.is_empty() && e.len() <= 5);
    assert!(a.body["count"].as_u64().expect("count") >= e.len() as u64);
    for w in e.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["index"].as_u64(),
            w[0]["index"].as_u64().map(|i| i + 1)
        );
        assert_eq!(w[0]["hash"].as_str().map(str::len), Some(64));
    }
}

#[tokio::test]
async fn heartbeat_names_one_primary_and_the_others_standby() {
    let c = shared();
    let mut primaries = 0;
    for (_, addr) in &c.http {
        // The heartbeat is open, as in DoSync.
        let a = raw(*addr, "GET", "/v1/hub/heartbeat", &[], None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        for f in ["hub_id", "status", "protocol_version", "devices", "role"] {
            assert!(a.body.get(f).is_some(), "missing {f}: {}", a.text);
        }
        if a.body["role"] == "primary" {
            primaries += 1;
        }
    }
    assert_eq!(primaries, 1);
}

#[tokio::test]
async fn metrics_serve_the_nodes_render_to_an_operator() {
    let c = shared();
    let a = call(c.addr(1), "GET", "/metrics", &c.tokens.operator, None).await;
    assert_eq!(a.status, 200);
    assert!(a.text.contains("hearth_term"), "{}", a.text);
    let a = call(c.addr(1), "GET", "/metrics", &c.tokens.agent, None).await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn direct_control_is_closed_and_events_are_not_taken() {
    let c = shared();
    let s = call(c.addr(1), "GET", "/v1/status", &c.tokens.agent, None).await;
    assert_eq!(s.body["direct_control"], "off");
    let a = call(
        c.addr(1),
        "POST",
        "/v1/device/action",
        &c.tokens.operator,
        Some(json!({"device_id": "x", "action": "turn_on"})),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("direct_control_disabled"), "{}", a.text);
    let a = call(
        c.addr(1),
        "POST",
        "/v1/event",
        &c.tokens.agent,
        Some(json!({"device_id": "nobody-here", "event_id": "e", "severity": "info"})),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_is_a_503_with_the_reason() {
    let c = start_cluster();
    wait_formed(&c).await;
    register(&c, c.addr(1), "nq-light").await;
    let l = c.leader().await;
    let survivor = if l == 1 { 2 } else { 1 };
    for (id, _) in &c.http {
        if *id != survivor {
            c.stop(*id);
        }
    }
    let at = c.addr(survivor);
    let a = until("NO_QUORUM", || async {
        let a = call(
            at,
            "POST",
            "/v1/intent/async",
            &c.tokens.operator,
            Some(json!({"intent": "notify", "idempotency_key": "nq-1"})),
        )
        .await;
        (a.status == 503).then_some(a)
    })
    .await;
    assert_eq!(a.body["error"], "NO_QUORUM", "{}", a.text);
    assert!(
        a.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("NO_QUORUM")),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn promote_is_refused_where_the_cluster_fails_over_by_itself() {
    let c = shared();
    let a = call(
        c.addr(1),
        "POST",
        "/v1/hub/promote",
        &c.tokens.operator,
        None,
    )
    .await;
    assert_eq!(a.status, 403, "promotion is an admin's: {}", a.text);
    let a = call(
        c.addr(1),
        "POST",
        "/v1/hub/promote",
        &c.tokens.admin,
        Some(json!({"force": true})),
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("exactly two hubs"), "{}", a.text);
}

#[tokio::test]
async fn the_lan_listener_speaks_tls_with_the_nodes_certificate_and_still_needs_a_token() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let c = shared();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tls = |path: &'static str, token: Option<String>| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(c.https)
                .await
                .expect("connect");
            let name = ServerName::try_from("node-1.hearth").expect("name");
            let io = connector
                .connect(name, tcp)
                .await
                .expect("a TLS handshake verified by the cluster CA");
            let auth = token.map(|t| format!("Bearer {t}"));
            let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
            exchange(io, c.https, "GET", path, &h, None).await
        }
    };
    let a = tls("/v1/status", Some(c.tokens.agent.clone())).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["protocol"], "dosync/0.5");
    let a = tls("/v1/status", None).await;
    assert_eq!(a.status, 401, "{}", a.text);
    // Plain HTTP to the TLS listener gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(c.https)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "plain HTTP answered on the TLS port"
    );
}

#[tokio::test]
async fn bad_input_on_the_other_writing_endpoints_is_refused_and_appends_nothing() {
    let _g = SERIAL.lock().await;
    let c = shared();
    let at = c.follower_hub().await;
    register(c, c.addr(1), "patch-light").await;
    let before = c.chain_len().await;
    let op = c.tokens.operator.clone();
    for (method, path, body, want) in [
        (
            "PATCH",
            "/v1/devices/patch-light",
            json!({"device_name": 3}),
            422,
        ),
        (
            "PATCH",
            "/v1/devices/patch-light",
            json!({"colour": "red"}),
            422,
        ),
        ("PATCH", "/v1/devices/patch-light", json!({}), 422),
        (
            "PATCH",
            "/v1/devices/patch-light",
            json!({"location": "home//x"}),
            422,
        ),
        (
            "PATCH",
            "/v1/devices/patch-light",
            json!({"emergency_actions": ["unlock"]}),
            422,
        ),
        (
            "PATCH",
            "/v1/devices/nobody-here",
            json!({"device_name": "x"}),
            404,
        ),
        (
            "POST",
            "/v1/event",
            json!({"device_id": "patch-light", "severity": "info"}),
            422,
        ),
        (
            "POST",
            "/v1/event",
            json!({"device_id": "patch-light", "event_id": "e", "severity": "loud"}),
            422,
        ),
        ("POST", "/v1/hub/promote", json!({"force": "yes"}), 403),
        ("POST", "/v1/intents/i-00/confirm", json!({}), 403),
    ] {
        let a = call(at, method, path, &op, Some(body)).await;
        assert_eq!(a.status, want, "{method} {path}: {}", a.text);
    }
    let bearer = format!("Bearer {op}");
    let h = [
        ("authorization", bearer.as_str()),
        ("x-dosync-operator-token", op.as_str()),
    ];
    let a = raw(at, "POST", "/v1/intents/..%2F..%2Fetc/confirm", &h, None).await;
    assert!(a.status == 422 || a.status == 404, "{}", a.text);
    let a = raw(
        at,
        "POST",
        "/v1/intents/i-0123456789abcdef/confirm",
        &h,
        None,
    )
    .await;
    assert_eq!(
        a.status, 404,
        "nothing held for an unknown intent: {}",
        a.text
    );
    // Deny goes to the leader's Intents.Deny: nothing is held for an unknown intent (404),
    // and a body that is not DoSync's is refused (422); nothing is appended either way.
    let a = raw(at, "POST", "/v1/intents/i-0123456789abcdef/deny", &h, None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    assert!(a.text.contains("No actions are held"), "{}", a.text);
    let a = call(
        at,
        "POST",
        "/v1/intents/i-0123456789abcdef/deny",
        &op,
        Some(json!({"reason": 7})),
    )
    .await;
    assert!(a.status == 422 || a.status == 403, "{}", a.text);
    // Every held intent, for an operator's console: none here (an agent may read it too).
    for token in [&op, &c.tokens.agent] {
        let a = call(at, "GET", "/v1/confirmations", token, None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["pending"], json!([]), "{}", a.text);
        assert_eq!(a.body["timeout_seconds"], json!(300), "{}", a.text);
    }
    assert_eq!(c.chain_len().await, before);
    call(c.addr(1), "DELETE", "/v1/devices/patch-light", &op, None).await;
}
