//! `hearth-bench intents`: intent → actuation latency on a local three-node cluster (two hubs
//! and a witness, real processes' code in one process, gRPC on loopback, fsync on), measured
//! from the client's `Submit` to the moment the simulated device applies the action.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use hearth_proto::v1::intents_client::IntentsClient;

use crate::net::channel;

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// What one `intents` run measured (latencies sorted ascending).
pub struct IntentStats {
    pub commit: Vec<Duration>,
    pub actuate: Vec<Duration>,
    pub wall: Duration,
}

pub async fn intents(count: usize, concurrency: usize, base_port: u16) -> anyhow::Result<()> {
    let IntentStats {
        commit,
        actuate,
        wall,
    } = measure_intents(count, concurrency, base_port).await?;
    outln!(
        "hearth-bench intents: {count} intents, {concurrency} concurrent clients, 3 nodes on loopback, fsync on"
    );
    outln!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)",
        "p50",
        "p90",
        "p99",
        "max"
    );
    for (name, v) in [
        ("submit -> committed (client ack)", &commit),
        ("submit -> device applied", &actuate),
    ] {
        outln!(
            "{:<34} {:>8} {:>8} {:>8} {:>8}",
            name,
            ms(pct(v, 0.5)),
            ms(pct(v, 0.9)),
            ms(pct(v, 0.99)),
            ms(pct(v, 1.0))
        );
    }
    outln!(
        "throughput: {:.0} intents/s ({} in {:.2} s)",
        count as f64 / wall.as_secs_f64(),
        count,
        wall.as_secs_f64()
    );
    Ok(())
}

/// The in-process cluster of the intent runs: two hubs and a witness on `addrs`, plain text
/// (the benchmarks compare with an etcd without TLS), and no bound on emergencies per source
/// (30 a minute by default): the runs submit thousands of them from one source.
fn intent_cluster(
    dir: &std::path::Path,
    addrs: &[String],
) -> anyhow::Result<Vec<hearth_node::NodeConfig>> {
    use hearth_node::Role;
    let [a, b, c] = addrs else {
        anyhow::bail!("the intent cluster has three nodes, not {}", addrs.len());
    };
    let members = [
        (1, Role::Hub, a.clone()),
        (2, Role::Hub, b.clone()),
        (3, Role::Witness, c.clone()),
    ];
    let limits = hearth_node::config::LimitsSettings {
        emergency_max: 1_000_000,
        ..Default::default()
    };
    hearth_node::config::local_cluster(dir, &members)
        .into_iter()
        .map(|b| Ok(b.insecure().limits(limits.clone()).build()?))
        .collect()
}

/// Runs the intent → actuation workload on a local in-process cluster (two hubs and a
/// witness, gRPC on loopback, fsync on, the simulated device on the in-process bus) and
/// returns the latencies.
pub async fn measure_intents(
    count: usize,
    concurrency: usize,
    base_port: u16,
) -> anyhow::Result<IntentStats> {
    let dir = tempfile::Builder::new().prefix("hearth-bench-").tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect();
    let (stop_tx, nodes) =
        hearth_node::local::spawn_in_process(intent_cluster(dir.path(), &addrs)?);
    // Find the leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader_addr = loop {
        let mut found = None;
        for a in &addrs {
            if let Ok(s) = ClusterClient::new(channel(a)?)
                .status(pb::StatusRequest {})
                .await
                && s.get_ref().node_state() == pb::NodeState::Leader
            {
                found = Some(a.clone());
            }
        }
        if let Some(a) = found {
            break a;
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let device = hearth_core::intent::Device {
        id: "bench-siren".into(),
        name: "Bench siren".into(),
        location: hearth_core::intent::Location::parse("location", "home")?,
        tags: Default::default(),
        sensors: Default::default(),
        actuators: [("siren".to_string(), ["on".to_string()].into())].into(),
        emergency_capable: true,
        emergency_actions: Default::default(),
        adapter: hearth_core::intent::Adapter::Sim {
            address: "local:bench".into(),
        },
    };
    hearth_proto::v1::devices_client::DevicesClient::new(channel(&leader_addr)?)
        .register(hearth_node::api::device_to_pb(&device))
        .await
        .context("registering the bench device")?;

    let bus = hearth_devices::SimBus::global();
    let next = Arc::new(AtomicUsize::new(0));
    let run = |n: usize, tag: &'static str| {
        let next = next.clone();
        let leader_addr = leader_addr.clone();
        let bus = bus.clone();
        async move {
            next.store(0, Ordering::SeqCst);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (next, leader_addr, bus) = (next.clone(), leader_addr.clone(), bus.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = IntentsClient::new(channel(&leader_addr)?);
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            return anyhow::Ok(out);
                        }
                        let t0 = Instant::now();
                        let v = client
                            .submit(pb::SubmitIntentRequest {
                                class: "ensure_safety".into(),
                                urgency: "emergency".into(),
                                location: "home".into(),
                                idempotency_key: format!("bench-{tag}-{i}"),
                                source: "bench".into(),
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        let committed = t0.elapsed();
                        let action = format!("{}/0", v.id);
                        let wait_until = Instant::now() + Duration::from_secs(30);
                        let applied = loop {
                            if let Some(at) = bus.applied_at("bench", &action) {
                                break at.duration_since(t0);
                            }
                            anyhow::ensure!(
                                Instant::now() < wait_until,
                                "{action} never reached the device"
                            );
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        };
                        out.push((committed, applied));
                    }
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            anyhow::Ok((all, started.elapsed()))
        }
    };
    run(50.min(count), "warmup").await?;
    let (samples, wall) = run(count, "run").await?;
    let mut commit: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut actuate: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    commit.sort();
    actuate.sort();
    let _ = stop_tx.send(());
    for n in nodes {
        let _ = n.await;
    }
    Ok(IntentStats {
        commit,
        actuate,
        wall,
    })
}
