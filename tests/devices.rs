//! Device adapters against real peers: a mosquitto broker (Debian's package, started here),
//! `hearth device-sim`'s HTTP and gRPC faces. Each checks fencing and once-only application.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_core::device_protocol::{DeviceCommand, Reply};
use hearth_core::domain::{ActionOutcome, FencingToken, IntentStatus};
use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};
use hearth_devices::mqtt::MqttBroker;
use hearth_devices::server::DeviceSim;
use hearth_devices::{Devices, Gateway};

use hearth_tests::free_port;

/// A mosquitto broker on a free loopback port, stopped on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("mosquitto is not installed: `apt-get install mosquitto` (.ci/run does this)");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(id: &str, term: u64, leader: u64, state: &str) -> DeviceCommand {
    DeviceCommand {
        action_id: id.into(),
        device: "door".into(),
        capability: "lock".into(),
        state: state.into(),
        token: FencingToken {
            term,
            leader,
            index: 5,
        },
        sender: leader,
    }
}

/// The same script against any adapter: apply, re-send, stale leader.
async fn fencing_script(gw: &dyn Gateway, adapter: &Adapter) {
    assert_eq!(
        gw.send(adapter, cmd("a/0", 2, 1, "locked")).await.unwrap(),
        Reply::Applied
    );
    assert_eq!(
        gw.send(adapter, cmd("a/0", 3, 2, "locked")).await.unwrap(),
        Reply::AlreadyApplied
    );
    assert!(matches!(
        gw.send(adapter, cmd("b/0", 2, 1, "unlocked"))
            .await
            .unwrap(),
        Reply::StaleToken { .. }
    ));
    assert_eq!(
        gw.send(adapter, cmd("c/0", 3, 2, "unlocked"))
            .await
            .unwrap(),
        Reply::Applied
    );
}

fn applied_ids(sim: &DeviceSim) -> Vec<String> {
    sim.journal_lines()
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["reply"]["reply"] == "applied")
                .then(|| v["command"]["action_id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_adapter_through_a_real_mosquitto_broker() {
    let broker = Broker::start();
    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device(
        MqttBroker::plain(&broker.addr),
        "home/door".into(),
        sim.clone(),
    ));
    let gw = Devices {
        mqtt: Some(MqttBroker::plain(&broker.addr)),
        ..Default::default()
    };
    let adapter = Adapter::Mqtt {
        topic: "home/door".into(),
    };
    // The simulated device subscribes asynchronously: wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gw.send(&adapter, cmd("probe/0", 1, 1, "locked")).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "mqtt device never answered: {e}"),
        }
    }
    fencing_script(&gw, &adapter).await;
    assert_eq!(applied_ids(&sim), ["probe/0", "a/0", "c/0"]);
    // No broker: a clear error, not a hang.
    let none = Devices {
        mqtt: Some(MqttBroker::plain(format!("127.0.0.1:{}", free_port()))),
        ..Default::default()
    };
    assert!(
        none.send(&adapter, cmd("x/0", 9, 1, "locked"))
            .await
            .is_err()
    );
    device.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_webhook_and_grpc_device_sim() {
    let sim = DeviceSim::new(None).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(sim.clone().serve_http(http));
    let gw = Devices::default();
    fencing_script(
        &gw,
        &Adapter::Http {
            url: format!("http://{http_addr}/command"),
        },
    )
    .await;
    assert_eq!(applied_ids(&sim), ["a/0", "c/0"]);
    let bad = gw
        .send(
            &Adapter::Http {
                url: format!("http://{http_addr}/nowhere"),
            },
            cmd("z/0", 9, 9, "locked"),
        )
        .await;
    assert!(bad.unwrap_err().to_string().contains("404"));

    let sim2 = DeviceSim::new(None).unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                hearth_proto::device::device_sim_server::DeviceSimServer::new(sim2.clone()),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc)),
    );
    fencing_script(
        &gw,
        &Adapter::Sim {
            address: grpc_addr.to_string(),
        },
    )
    .await;
    assert_eq!(applied_ids(&sim2), ["a/0", "c/0"]);
}

/// End to end: an intent on a cluster drives an MQTT device once, through the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_reaches_an_mqtt_device_once() {
    let broker = Broker::start();
    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device(
        MqttBroker::plain(&broker.addr),
        "house/siren".into(),
        sim.clone(),
    ));
    let c = hearth_tests::TestCluster::three_with_mqtt(&broker.addr).await;
    let leader = c.wait_for_leader(&c.hubs(), Duration::from_secs(15)).await;
    let siren = Device {
        id: "siren".into(),
        name: "Siren".into(),
        location: Location::parse("l", "home").unwrap(),
        tags: BTreeSet::new(),
        sensors: BTreeSet::new(),
        actuators: [("siren".to_string(), ["on".to_string()].into())].into(),
        emergency_capable: true,
        emergency_actions: Default::default(),
        adapter: Adapter::Mqtt {
            topic: "house/siren".into(),
        },
    };
    c.node(leader).register_device(siren, None).await.unwrap();
    let intent = Intent {
        class: "ensure_safety".into(),
        urgency: Urgency::Emergency,
        subject: "test".into(),
        location: Location::parse("l", "home").unwrap(),
        context: BTreeMap::new(),
        source: "test".into(),
        idempotency_key: "mqtt-1".into(),
    };
    let r = c.node(leader).submit_intent(intent).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = c.node(leader).get_intent(&r.id).unwrap().unwrap();
        if now.status == IntentStatus::Done {
            assert_eq!(now.actions[0].outcome, Some(ActionOutcome::Applied));
            break;
        }
        assert!(Instant::now() < deadline, "mqtt intent not done: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(applied_ids(&sim), [format!("{}/0", r.id)]);
    device.abort();
    c.shutdown().await;
}

// ---- Who may answer for a device: a broker with passwords, an ACL and TLS (issue 13, 8). ----

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_devices::AdapterError;
use hearth_devices::mqtt::{Secret, tls_client_config};
use hearth_node::config::MqttBrokerSettings;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};

const HUB: (&str, &str) = ("hearth-hub", "hub-secret-1");
const LOCK: (&str, &str) = ("porch-lock", "lock-secret-2");
const INTRUDER: (&str, &str) = ("intruder", "guest-pass-3");
const PORCH: &str = "home/porch";

/// The household's ACL: the hub writes commands and reads acks, the lock the other way round,
/// and the guest account (a LAN host with a login of its own) only its garden.
const ACL: &str = "\
user hearth-hub
topic write home/porch/command
topic read home/porch/ack
user porch-lock
topic read home/porch/command
topic write home/porch/ack
user intruder
topic readwrite home/garden/#
";

/// mosquitto with `allow_anonymous false`, a password file, the ACL above, and two loopback
/// listeners: plain TCP and TLS (a CA and a server certificate for 127.0.0.1 made here).
struct SecureBroker {
    child: Child,
    dir: tempfile::TempDir,
    plain: String,
    tls: String,
    /// TLS that requires a client certificate; its common name is the username.
    mtls: String,
    ca_pem: Vec<u8>,
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl SecureBroker {
    fn start() -> SecureBroker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test broker CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        let cert = sp.signed_by(&key, &issuer).unwrap();
        // The hub's client certificate: common name = its broker username.
        let hub_key = rcgen::KeyPair::generate().unwrap();
        let mut hp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        hp.distinguished_name.push(rcgen::DnType::CommonName, HUB.0);
        hp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let hub_cert = hp.signed_by(&hub_key, &issuer).unwrap();
        std::fs::write(d.join("hub.pem"), hub_cert.pem()).unwrap();
        write_private(&d.join("hub.key"), hub_key.serialize_pem().as_bytes());
        std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(d.join("server.pem"), cert.pem()).unwrap();
        write_private(&d.join("server.key"), key.serialize_pem().as_bytes());
        let passwd = d.join("passwd");
        for (i, (u, p)) in [HUB, LOCK, INTRUDER].into_iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            c.arg("-b");
            if i == 0 {
                c.arg("-c");
            }
            let ok = c
                .arg(&passwd)
                .args([u, p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("mosquitto_passwd (package mosquitto)");
            assert!(ok.success(), "mosquitto_passwd failed");
        }
        write_private(&d.join("acl"), ACL.as_bytes());
        let (p1, p2, p3) = (free_port(), free_port(), free_port());
        let conf = format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {pw}\n\
             acl_file {acl}\nuser root\nlistener {p1} 127.0.0.1\nlistener {p2} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\nlistener {p3} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n\
             use_identity_as_username true\n",
            pw = passwd.display(),
            acl = d.join("acl").display(),
            ca = d.join("ca.pem").display(),
            cert = d.join("server.pem").display(),
            key = d.join("server.key").display(),
        );
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("mosquitto is not installed: `apt-get install mosquitto` (.ci/run does this)");
        let log = std::fs::File::create(d.join("mosquitto.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let mut b = SecureBroker {
            child,
            plain: format!("127.0.0.1:{p1}"),
            tls: format!("127.0.0.1:{p2}"),
            mtls: format!("127.0.0.1:{p3}"),
            ca_pem: ca_cert.pem().into_bytes(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in [p1, p2, p3] {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Ok(Some(st)) = b.child.try_wait() {
                    let log = std::fs::read_to_string(b.dir.path().join("mosquitto.log"));
                    panic!("mosquitto exited ({st}): {log:?}");
                }
                assert!(Instant::now() < deadline, "mosquitto did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        b
    }

    /// The adapter's view of this broker, logged in as `login` (over TLS if `tls`).
    fn login(&self, login: (&str, &str), tls: bool) -> MqttBroker {
        let addr = if tls { &self.tls } else { &self.plain };
        let b = MqttBroker::plain(addr).with_login(login.0, Secret::new(login.1));
        if tls {
            b.with_tls(tls_client_config(&self.ca_pem, None).unwrap())
        } else {
            b
        }
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw MQTT client (an attacker, or a device written from the docs), connected: the broker
/// answered its CONNECT with success. Its event loop is returned for the caller to drive.
async fn connect(
    addr: &str,
    login: Option<(&str, &str)>,
    ca_pem: Option<&[u8]>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let id = format!("raw-{}", free_port());
    let mut o = MqttOptions::new(id, host, port.parse().unwrap());
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    if let Some(ca) = ca_pem {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(
            tls_client_config(ca, None).unwrap(),
        )));
    }
    let (c, mut ev) = AsyncClient::new(o, 256);
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => return Ok(()),
                _ => continue,
            }
        }
    })
    .await
    .expect("the broker answers a CONNECT within 5 s");
    connected.map(|()| (c, ev))
}

fn bound_ack(c: &DeviceCommand, token: FencingToken) -> String {
    format!(
        r#"{{"action_id":"{}","token":{{"term":{},"leader":{},"index":{}}},"reply":"applied"}}"#,
        c.action_id, token.term, token.leader, token.index
    )
}

fn porch() -> Adapter {
    Adapter::Mqtt {
        topic: PORCH.into(),
    }
}

/// Sends probes until the device behind `adapter` answers (it subscribes asynchronously).
async fn wait_until_answering(gw: &Devices, adapter: &Adapter) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        match gw
            .send(adapter, cmd(&format!("probe/{n}"), 1, 1, "locked"))
            .await
        {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "device never answered: {e}"),
        }
    }
}

/// Issue 13, item 8, first sequence as a LAN attacker would try it, at the broker: no login,
/// a wrong password, then a login of its own (the guest account) publishing a perfectly bound
/// ack for the porch lock while the hub waits. The broker refuses the first two; its ACL
/// drops the third (nor can that account read the porch's commands). Then the real lock
/// answers and only its answer counts. On main the hub could not log in at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_anonymous_and_wrong_clients_and_its_acl_a_logged_in_intruder() {
    let b = SecureBroker::start();
    for login in [None, Some(("porch-lock", "wrong")), Some(("nobody", "x"))] {
        let e = connect(&b.plain, login, None).await.err();
        assert!(
            matches!(e, Some(ConnectionError::ConnectionRefused(_))),
            "{login:?} was let in: {e:?}"
        );
    }
    // A hub without a login: a clear refusal, not an outcome.
    let anon = Devices {
        mqtt: Some(MqttBroker::plain(&b.plain)),
        ..Default::default()
    };
    let e = anon
        .send(&porch(), cmd("anon/0", 1, 1, "locked"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AdapterError::Unreachable(_, m) if m.contains("refused")),
        "{e}"
    );

    let (intruder, mut iev) = connect(&b.plain, Some(INTRUDER), None).await.unwrap();
    intruder
        .subscribe("home/porch/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let pump = tokio::spawn(async move {
        while let Ok(ev) = iev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev
                && p.topic.starts_with("home/porch/")
            {
                seen2.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let target = cmd("i-00000000000000aa/0", 2, 1, "unlocked");
    let forged = bound_ack(&target, target.token);
    let intr = intruder.clone();
    let flood = tokio::spawn(async move {
        loop {
            let _ = intr
                .publish("home/porch/ack", QoS::AtLeastOnce, false, forged.clone())
                .await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let hub_broker = b.login(HUB, false);
    let hub = Devices {
        mqtt: Some(hub_broker.clone()),
        timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let r = hub.send(&porch(), target.clone()).await;
    assert!(
        matches!(&r, Err(AdapterError::Unreachable(_, m)) if m.contains("no answer")),
        "a forged ack was taken: {r:?}"
    );
    assert_eq!(
        hub_broker.ignored_acks(),
        0,
        "the broker delivered the intruder's ack"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the intruder read the porch's topics"
    );

    // The real lock, with its own login: its answer is recorded.
    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device(
        b.login(LOCK, false),
        PORCH.into(),
        sim.clone(),
    ));
    wait_until_answering(&hub, &porch()).await;
    assert_eq!(hub.send(&porch(), target).await.unwrap(), Reply::Applied);
    assert_eq!(
        applied_ids(&sim)
            .iter()
            .filter(|i| *i == "i-00000000000000aa/0")
            .count(),
        1
    );
    flood.abort();
    pump.abort();
    device.abort();
}

/// Binding, for whoever can publish on the ack topic anyway (an anonymous lab broker here):
/// the exact forgery that main took as APPLIED (`{"action_id", "reply": {"reply": "applied"}}`
/// with the right action id, no token), the documented shape without a token, another token,
/// another action, and a retained ack left for the hub, are all ignored and counted. With no
/// device present the command ends as not answered, never as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_for_another_action_or_token_are_ignored_and_counted() {
    let broker = Broker::start();
    let target = cmd("i-00000000000000bb/0", 3, 1, "unlocked");
    let (forger, mut fev) = connect(&broker.addr, None, None).await.unwrap();
    let (puback_tx, mut puback) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = fev.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = ev {
                let _ = puback_tx.send(());
            }
        }
    });
    // Left on the broker (acknowledged) before the hub subscribes: delivered as retained.
    forger
        .publish(
            "home/porch/ack",
            QoS::AtLeastOnce,
            true,
            bound_ack(&target, target.token),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), puback.recv())
        .await
        .expect("the broker acknowledges the retained ack");
    let id = target.action_id.clone();
    let t = target.token;
    let forgeries = vec![
        format!(r#"{{"action_id":"{id}","reply":{{"reply":"applied"}}}}"#),
        format!(r#"{{"action_id":"{id}","reply":"applied"}}"#),
        bound_ack(
            &target,
            FencingToken {
                index: t.index + 1,
                ..t
            },
        ),
        bound_ack(
            &target,
            FencingToken {
                term: t.term + 1,
                ..t
            },
        ),
        bound_ack(&cmd("i-00000000000000cc/0", 3, 1, "unlocked"), t),
    ];
    let f = forger.clone();
    let flood = tokio::spawn(async move {
        loop {
            for p in &forgeries {
                let _ = f
                    .publish("home/porch/ack", QoS::AtLeastOnce, false, p.clone())
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let hub_broker = MqttBroker::plain(&broker.addr);
    let hub = Devices {
        mqtt: Some(hub_broker.clone()),
        timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let r = hub.send(&porch(), target).await;
    assert!(
        matches!(&r, Err(AdapterError::Unreachable(_, m)) if m.contains("no answer")),
        "a forged ack was taken: {r:?}"
    );
    assert!(
        hub_broker.ignored_acks() >= 6,
        "ignored acks not counted: {}",
        hub_broker.ignored_acks()
    );
    flood.abort();
}

/// Issue 13, item 8, second sequence: a device written from docs/INTENTS.md answers
/// `{"action_id": …, "token": {…}, "reply": "applied"}`. On main the adapter read only its own
/// nested shape and reported such a device unreachable. Here through TLS and passwords, with
/// the hub's broker settings loaded as a node config names them (password from a file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_answering_exactly_as_documented_is_applied() {
    let b = SecureBroker::start();
    let (dev, mut dev_ev) = connect(&b.tls, Some(LOCK), Some(&b.ca_pem)).await.unwrap();
    dev.subscribe("home/porch/command", QoS::AtLeastOnce)
        .await
        .unwrap();
    let dev2 = dev.clone();
    let device = tokio::spawn(async move {
        while let Ok(ev) = dev_ev.poll().await {
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            let c: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let (id, tok) = (&c["action_id"], &c["token"]);
            let answer = if c["state"] == "locked" {
                r#""reply": "applied""#.to_string()
            } else {
                r#""reply": "refused", "reason": "the bolt is jammed""#.to_string()
            };
            let ack = format!(
                r#"{{"action_id": {id}, "token": {{"term": {}, "leader": {}, "index": {}}}, {answer}}}"#,
                tok["term"], tok["leader"], tok["index"]
            );
            let _ = dev2
                .publish("home/porch/ack", QoS::AtLeastOnce, false, ack)
                .await;
        }
    });
    let pw = b.dir.path().join("hub-password");
    write_private(&pw, format!("{}\n", HUB.1).as_bytes());
    let settings = MqttBrokerSettings {
        addr: b.tls.clone(),
        username: Some(HUB.0.into()),
        password_file: Some(pw),
        ca: Some(b.dir.path().join("ca.pem")),
        client_cert: None,
        client_key: None,
        ack_keys_dir: None,
    };
    let hub_broker = settings.load().unwrap();
    assert!(
        !format!("{hub_broker:?}").contains(HUB.1),
        "the password is printed"
    );
    let hub = Devices {
        mqtt: Some(hub_broker),
        ..Default::default()
    };
    wait_until_answering(&hub, &porch()).await;
    assert_eq!(
        hub.send(&porch(), cmd("i-00000000000000dd/0", 2, 1, "locked"))
            .await
            .unwrap(),
        Reply::Applied
    );
    assert_eq!(
        hub.send(&porch(), cmd("i-00000000000000dd/1", 2, 1, "unlocked"))
            .await
            .unwrap(),
        Reply::Refused {
            reason: "the bolt is jammed".into()
        }
    );
    // Over TLS, without a login: refused.
    let no_login = Devices {
        mqtt: Some(MqttBroker::plain(&b.tls).with_tls(tls_client_config(&b.ca_pem, None).unwrap())),
        ..Default::default()
    };
    assert!(
        no_login
            .send(&porch(), cmd("x/0", 2, 1, "locked"))
            .await
            .is_err()
    );
    device.abort();
}

fn porch_lock(adapter: Adapter, states: &[&str]) -> Device {
    Device {
        id: "porch-lock".into(),
        name: "Porch lock".into(),
        location: Location::parse("l", "home/porch").unwrap(),
        tags: BTreeSet::new(),
        sensors: BTreeSet::new(),
        actuators: [(
            "lock".to_string(),
            states.iter().map(|s| s.to_string()).collect(),
        )]
        .into(),
        emergency_capable: false,
        emergency_actions: Default::default(),
        adapter,
    }
}

fn lock_porch(key: &str) -> Intent {
    Intent {
        class: "control_access".into(),
        urgency: Urgency::Info,
        subject: "lock the porch".into(),
        location: Location::parse("l", "home/porch").unwrap(),
        context: [("state".to_string(), "locked".to_string())].into(),
        source: "test".into(),
        idempotency_key: key.into(),
    }
}

/// Issue 13, item 8, the first sequence end to end: `porch-lock` is registered, an intent
/// locks it, no device is present, and a LAN host floods the ack topic with forged acks (the
/// action id is predictable; tokens guessed). Anonymous it cannot even connect; with a login
/// of its own the ACL drops what it publishes. No outcome is recorded while no device
/// answers; when the real lock comes up, its answer is recorded, once. On main the forged ack
/// made Hearth record `porch-lock -> locked: APPLIED` with no device present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_ack_is_never_recorded_and_the_real_devices_answer_is() {
    let b = SecureBroker::start();
    let pw = b.dir.path().join("hub-password");
    write_private(&pw, HUB.1.as_bytes());
    let hub = MqttBrokerSettings {
        addr: b.tls.clone(),
        username: Some(HUB.0.into()),
        password_file: Some(pw),
        ca: Some(b.dir.path().join("ca.pem")),
        client_cert: None,
        client_key: None,
        ack_keys_dir: None,
    };
    let c = hearth_tests::TestCluster::three_with_mqtt_on(
        [1, 2].into_iter().map(|id| (id, hub.clone())).collect(),
    )
    .await;
    let leader = c.wait_for_leader(&c.hubs(), Duration::from_secs(15)).await;
    c.node(leader)
        .register_device(porch_lock(porch(), &["locked", "unlocked"]), None)
        .await
        .unwrap();
    assert!(
        connect(&b.tls, None, Some(&b.ca_pem)).await.is_err(),
        "anonymous client let in"
    );
    let r = c
        .node(leader)
        .submit_intent(lock_porch("porch-1"))
        .await
        .unwrap();
    let action = format!("{}/0", r.id);
    let (intruder, mut iev) = connect(&b.tls, Some(INTRUDER), Some(&b.ca_pem))
        .await
        .unwrap();
    tokio::spawn(async move { while iev.poll().await.is_ok() {} });
    let flood = tokio::spawn(async move {
        loop {
            for term in 1..=3 {
                for leader in 1..=2 {
                    for index in 1..=40 {
                        let p = format!(
                            r#"{{"action_id":"{action}","token":{{"term":{term},"leader":{leader},"index":{index}}},"reply":"applied"}}"#
                        );
                        let _ = intruder
                            .publish("home/porch/ack", QoS::AtMostOnce, false, p)
                            .await;
                    }
                }
            }
            let old = format!(r#"{{"action_id":"{action}","reply":{{"reply":"applied"}}}}"#);
            let _ = intruder
                .publish("home/porch/ack", QoS::AtMostOnce, false, old)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Long enough for the dispatcher to send, time out (3 s) and retry while being flooded.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let now = c.node(leader).get_intent(&r.id).unwrap().unwrap();
        assert_eq!(
            now.actions[0].outcome, None,
            "an outcome was recorded with no device present: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device(
        b.login(LOCK, true),
        PORCH.into(),
        sim.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = c.node(leader).get_intent(&r.id).unwrap().unwrap();
        if now.status == IntentStatus::Done {
            assert_eq!(now.actions[0].outcome, Some(ActionOutcome::Applied));
            break;
        }
        assert!(Instant::now() < deadline, "intent not done: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(applied_ids(&sim), [format!("{}/0", r.id)]);
    assert_eq!(
        c.node(leader).ignored_device_acks(),
        0,
        "the broker delivered the intruder's acks to the hub"
    );
    flood.abort();
    device.abort();
    c.shutdown().await;
}

/// Issue 13, item 8, the last two sequences: on a cluster without `mqtt_broker`, registering
/// an mqtt device succeeded (and failed only when an emergency needed it), and a manifest
/// with `toggle` was accepted. Now both are refused with the field named, as are webhook
/// URLs that cannot work, and nothing is registered. A hub with a broker registers the
/// device; a hub without one names it in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_what_cannot_work() {
    let c = hearth_tests::TestCluster::three().await;
    let leader = c.wait_for_leader(&c.hubs(), Duration::from_secs(15)).await;
    let sim = || Adapter::Sim {
        address: "local:porch".into(),
    };
    let cases = [
        (porch_lock(porch(), &["locked", "unlocked"]), "adapter.kind"),
        (porch_lock(sim(), &["locked", "toggle"]), "actuators.lock"),
        (
            porch_lock(
                Adapter::Http {
                    url: "https://bridge.local/porch".into(),
                },
                &["locked"],
            ),
            "adapter.url",
        ),
        (
            porch_lock(
                Adapter::Http {
                    url: "http://admin:hunter2@bridge.local/porch".into(),
                },
                &["locked"],
            ),
            "adapter.url",
        ),
    ];
    for (d, field) in cases {
        let e = c
            .node(leader)
            .register_device(d.clone(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{:?}: {e}", d.adapter);
    }
    let e = c
        .node(leader)
        .register_device(porch_lock(porch(), &["locked"]), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt_broker"), "{e}");
    let n = c.node(leader).sm.with_domain(|d| d.devices.len()).unwrap();
    assert_eq!(n, 0, "a refused device was registered");
    c.shutdown().await;

    // Hub 1 has a broker, hub 2 has none.
    let broker = Broker::start();
    let c = hearth_tests::TestCluster::three_with_mqtt_on(
        [(1, MqttBrokerSettings::plain(&broker.addr))].into(),
    )
    .await;
    let leader = c.wait_for_leader(&c.hubs(), Duration::from_secs(15)).await;
    let r = c
        .node(leader)
        .register_device(porch_lock(porch(), &["locked", "unlocked"]), None)
        .await;
    if leader == 1 {
        r.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.node(2).sm.with_domain(|d| d.devices.len()).unwrap() == 0 {
            assert!(Instant::now() < deadline, "registration not replicated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let w = c.node(2).status().await.device_warnings;
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("porch-lock") && w[0].contains("mqtt_broker"),
            "{w:?}"
        );
        assert!(c.node(1).status().await.device_warnings.is_empty());
        assert!(c.node(3).status().await.device_warnings.is_empty());
    } else {
        assert!(r.unwrap_err().to_string().contains("adapter.kind"));
    }
    c.shutdown().await;
}

/// With a key shared between the hubs and a device, even a LAN host that reads the command
/// topic (an anonymous lab broker here) and answers at once with the right action id and
/// token is not believed: its ack has no valid MAC. The real device's MAC'd ack is. The
/// key comes from the node config's `ack_keys_dir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_device_is_believed_and_a_reader_of_its_commands_is_not() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ack-keys");
    std::fs::create_dir(&keys).unwrap();
    let key = "porch-lock-key-0123456789";
    write_private(&keys.join("door.key"), format!("{key}\n").as_bytes());
    let hub_broker = MqttBrokerSettings {
        ack_keys_dir: Some(keys),
        ..MqttBrokerSettings::plain(&broker.addr)
    }
    .load()
    .unwrap();
    assert!(!format!("{hub_broker:?}").contains(key));
    let hub = Devices {
        mqtt: Some(hub_broker.clone()),
        timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    // The eavesdropper: reads every command and answers it as fast as it can, bound (right
    // id and token), once without a MAC and once with a MAC under a guessed key.
    let (spy, mut sev) = connect(&broker.addr, None, None).await.unwrap();
    spy.subscribe("home/porch/command", QoS::AtLeastOnce)
        .await
        .unwrap();
    let spy2 = spy.clone();
    let eavesdropper = tokio::spawn(async move {
        while let Ok(ev) = sev.poll().await {
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            let Ok(c) = serde_json::from_slice::<DeviceCommand>(&p.payload) else {
                continue;
            };
            for k in [None, Some(&b"guessed-key-guessed-key"[..])] {
                let forged = hearth_core::device_protocol::Ack::answer(&c, Reply::Applied, k);
                let _ = spy2
                    .publish(
                        "home/porch/ack",
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&forged).unwrap(),
                    )
                    .await;
            }
        }
    });
    // Wait until the eavesdropper is subscribed: its forgeries then arrive for this command.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let before = hub_broker.ignored_acks();
        let r = hub
            .send(&porch(), cmd("i-00000000000000ee/0", 2, 1, "unlocked"))
            .await;
        if hub_broker.ignored_acks() >= before + 2 || Instant::now() > deadline {
            break r;
        }
    };
    assert!(
        matches!(&r, Err(AdapterError::Unreachable(_, m)) if m.contains("no answer")),
        "a forged ack was taken: {r:?}"
    );
    assert!(hub_broker.ignored_acks() >= 2, "forgeries not counted");

    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device_keyed(
        MqttBroker::plain(&broker.addr),
        PORCH.into(),
        sim.clone(),
        Some(Secret::new(key)),
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match hub
            .send(&porch(), cmd("i-00000000000000ee/1", 2, 1, "locked"))
            .await
        {
            Ok(r) => {
                assert_eq!(r, Reply::Applied);
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "keyed device never believed: {e}"
            ),
        }
    }
    // The same device without its key is not believed.
    device.abort();
    let unkeyed = tokio::spawn(hearth_devices::mqtt::serve_device(
        MqttBroker::plain(&broker.addr),
        PORCH.into(),
        DeviceSim::new(None).unwrap(),
    ));
    // Until its unkeyed ack is seen too (eavesdropper: 2 per command, the device: 1).
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 2.. {
        let before = hub_broker.ignored_acks();
        let r = hub
            .send(
                &porch(),
                cmd(&format!("i-00000000000000ee/{n}"), 2, 1, "locked"),
            )
            .await;
        assert!(r.is_err(), "an ack without a MAC was believed: {r:?}");
        if hub_broker.ignored_acks() >= before + 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unkeyed device never answered"
        );
    }
    unkeyed.abort();
    eavesdropper.abort();
}

/// The hub identified by a client certificate instead of a password (the broker takes the
/// certificate's common name as the username, so the same ACL applies): the lock's answer is
/// recorded; the same listener without a client certificate refuses the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_logs_in_with_a_client_certificate() {
    let b = SecureBroker::start();
    let d = b.dir.path();
    let settings = MqttBrokerSettings {
        ca: Some(d.join("ca.pem")),
        client_cert: Some(d.join("hub.pem")),
        client_key: Some(d.join("hub.key")),
        ..MqttBrokerSettings::plain(&b.mtls)
    };
    let hub = Devices {
        mqtt: Some(settings.load().unwrap()),
        ..Default::default()
    };
    let sim = DeviceSim::new(None).unwrap();
    let device = tokio::spawn(hearth_devices::mqtt::serve_device(
        b.login(LOCK, true),
        PORCH.into(),
        sim.clone(),
    ));
    wait_until_answering(&hub, &porch()).await;
    assert_eq!(
        hub.send(&porch(), cmd("i-00000000000000ff/0", 2, 1, "locked"))
            .await
            .unwrap(),
        Reply::Applied
    );
    let no_cert = Devices {
        mqtt: Some(
            MqttBroker::plain(&b.mtls).with_tls(tls_client_config(&b.ca_pem, None).unwrap()),
        ),
        ..Default::default()
    };
    assert!(
        no_cert
            .send(&porch(), cmd("i-00000000000000ff/1", 2, 1, "locked"))
            .await
            .is_err()
    );
    device.abort();
}
