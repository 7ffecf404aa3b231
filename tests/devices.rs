//! Device adapters against real peers: a mosquitto broker (Debian's package, started here),
//! `hearth device-sim`'s HTTP and gRPC faces. Each checks fencing and once-only application.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_core::domain::{ActionOutcome, FencingToken, IntentStatus};
use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};
use hearth_core::sim::{DeviceCommand, Reply};
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
        broker.addr.clone(),
        "home/door".into(),
        sim.clone(),
    ));
    let gw = Devices {
        mqtt_broker: Some(broker.addr.clone()),
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
        mqtt_broker: Some(format!("127.0.0.1:{}", free_port())),
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
        broker.addr.clone(),
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
    c.node(leader).register_device(siren).await.unwrap();
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
