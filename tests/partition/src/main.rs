//! The Docker partition suite. Runs the `docker-compose.yml` cluster (hub-a, hub-b, witness,
//! device-sim; image `hearth:dev`), makes faults from outside the nodes under a steady client
//! load, heals, and checks the invariants after every scenario:
//!
//! - every node's exported chain verifies and all are identical;
//! - every intent the client saw acknowledged is in the chain, at the index it was told;
//! - the device journal holds no command without a committed action, every token names a real
//!   leadership and the deciding entry, no command was applied after a newer leadership
//!   existed, no action id was applied twice, the witness sent nothing, and nobody sent anything
//!   while it had no quorum;
//! - a leader existed again within [`LEADER_BOUND`].
//!
//! The two-hub scenario (assisted failover, `two_hubs.rs`) runs last: it removes the witness
//! and ends with one promoted hub.
//!
//! Prints a table and exits non-zero with the evidence when an invariant is violated.
//! `tests/partition/run.sh` builds the image and runs it.

mod check;
mod docker;
mod load;
mod two_hubs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hearth_core::device_protocol::{JournalEntry, Reply};
use hearth_proto::device::device_sim_client::DeviceSimClient;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;

use check::{Ack, Quiet};
use docker::Docker;
use load::{Load, channel};

/// A hub must lead again within this long after any fault that removes the leader. With the
/// default timing (elections after 1–2 s, caretaker retry 3 s): lease + election, or lease +
/// caretaker campaign + hand-over (+ one retry), stays well under it.
const LEADER_BOUND: Duration = Duration::from_secs(15);
/// A node may finish a send it had confirmed just before the fault.
const GRACE_MS: u64 = 500;
const PERIOD: Duration = Duration::from_millis(200);
const INTENT_DEADLINE: Duration = Duration::from_secs(20);
const DEVICE_SIM: &str = "127.0.0.1:7301";

#[derive(Clone, Copy)]
struct NodeRef {
    id: u64,
    container: &'static str,
    api: &'static str,
    witness: bool,
}

const NODES: [NodeRef; 3] = [
    NodeRef {
        id: 1,
        container: "hearth-hub-a",
        api: "127.0.0.1:7101",
        witness: false,
    },
    NodeRef {
        id: 2,
        container: "hearth-hub-b",
        api: "127.0.0.1:7102",
        witness: false,
    },
    NodeRef {
        id: 3,
        container: "hearth-witness",
        api: "127.0.0.1:7103",
        witness: true,
    },
];

fn node(id: u64) -> NodeRef {
    NODES.into_iter().find(|n| n.id == id).unwrap_or(NODES[0])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Parser)]
#[command(about = "Hearth's Docker partition suite")]
struct Args {
    /// Repository root (holds docker-compose.yml).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Leave the containers running at the end (for a look around).
    #[arg(long)]
    keep: bool,
}

struct Row {
    name: &'static str,
    /// How leadership moved.
    path: String,
    leader_ms: Option<u64>,
    actuation_ms: Option<u64>,
    acked: usize,
    failed: usize,
    no_quorum: usize,
    violations: Vec<String>,
    secs: f64,
}

struct Suite {
    docker: Docker,
    acked: Vec<Ack>,
    refused_upfront: Vec<String>,
    quiet: Vec<Quiet>,
}

async fn status(addr: &str) -> Option<pb::NodeStatus> {
    static CHANNELS: std::sync::OnceLock<
        std::sync::Mutex<BTreeMap<String, tonic::transport::Channel>>,
    > = std::sync::OnceLock::new();
    let ch = CHANNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(addr.to_string())
        .or_insert_with(|| channel(addr))
        .clone();
    let mut c = ClusterClient::new(ch);
    match tokio::time::timeout(Duration::from_millis(200), c.status(pb::StatusRequest {})).await {
        Ok(Ok(s)) => Some(s.into_inner()),
        _ => None,
    }
}

/// Every node's status, asked concurrently (a paused node never answers; 1 s timeout).
async fn statuses() -> Vec<Option<pb::NodeStatus>> {
    futures::future::join_all(NODES.iter().map(|n| status(n.api))).await
}

/// The node that claims leadership in the highest term, if any answers.
async fn leader() -> Option<(u64, u64)> {
    statuses()
        .await
        .into_iter()
        .flatten()
        .filter(|s| s.node_state() == pb::NodeState::Leader)
        .max_by_key(|s| s.term)
        .map(|s| (s.node_id, s.term))
}

/// Waits for a hub to lead in a term above `above` (a witness leads only as a caretaker and
/// dispatches nothing); returns it, how long it took, and whether the witness led meanwhile.
async fn wait_leader(above: u64, bound: Duration) -> anyhow::Result<((u64, u64), Duration, bool)> {
    let t0 = Instant::now();
    let mut caretaker = false;
    loop {
        if let Some((id, term)) = leader().await
            && term > above
        {
            if !node(id).witness {
                return Ok(((id, term), t0.elapsed(), caretaker));
            }
            caretaker = true;
        }
        if t0.elapsed() > bound {
            bail!("no hub leads above term {above} within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn export(addr: &str) -> anyhow::Result<Vec<String>> {
    let mut c = AuditClient::new(channel(addr));
    let mut s = tokio::time::timeout(Duration::from_secs(10), c.export(pb::ExportRequest {}))
        .await
        .context("export timed out")??
        .into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = s.next().await {
        lines.extend(chunk?.lines);
    }
    Ok(lines)
}

async fn journal() -> anyhow::Result<Vec<JournalEntry>> {
    let mut c = DeviceSimClient::new(channel(DEVICE_SIM));
    let r = c
        .journal(hearth_proto::device::JournalRequest {})
        .await
        .context("device-sim journal")?
        .into_inner();
    r.entries
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("journal line {l}")))
        .collect()
}

/// First command a device applied under a term above `term`, at or after `since_ms`.
fn first_actuation(journal: &[JournalEntry], term: u64, since_ms: u64) -> Option<u64> {
    journal
        .iter()
        .filter(|j| j.reply == Reply::Applied && j.command.token.term > term && j.at_ms >= since_ms)
        .map(|j| j.at_ms)
        .min()
}

impl Suite {
    /// All three nodes answer, agree on the applied index and head, a leader exists, and
    /// every committed action has an outcome.
    async fn converge(&self, bound: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let mut last = String::new();
        loop {
            let st = statuses().await;
            let all: Vec<_> = st.iter().flatten().collect();
            if all.len() == 3
                && all.iter().any(|s| s.node_state() == pb::NodeState::Leader)
                && all.iter().all(|s| {
                    s.applied_index == all[0].applied_index && s.head_hash == all[0].head_hash
                })
            {
                if let Some((l, _)) = leader().await {
                    let lines = export(node(l).api).await?;
                    let chain = check::replay(&lines).map_err(anyhow::Error::msg)?;
                    let open = check::open_actions(&chain);
                    if open.is_empty() {
                        return Ok(());
                    }
                    last = format!("actions without an outcome: {open:?}");
                }
            } else {
                last = format!(
                    "{:?}",
                    st.iter()
                        .map(|s| s.as_ref().map(|s| (
                            s.node_id,
                            s.state.clone(),
                            s.term,
                            s.applied_index
                        )))
                        .collect::<Vec<_>>()
                );
            }
            if t0.elapsed() > bound {
                bail!("cluster did not converge within {bound:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn evidence(&self) -> anyhow::Result<Vec<String>> {
        let mut exports = Vec::new();
        for n in NODES {
            exports.push((n.id, export(n.api).await?));
        }
        let j = journal().await?;
        let witnesses: Vec<u64> = NODES.iter().filter(|n| n.witness).map(|n| n.id).collect();
        let (_, mut bad) = check::check(&check::Evidence {
            exports: &exports,
            journal: &j,
            acked: &self.acked,
            refused_upfront: &self.refused_upfront,
            quiet: &self.quiet,
            witnesses: &witnesses,
        });
        bad.dedup();
        Ok(bad)
    }

    fn load(&self, tag: &str) -> Load {
        Load::start(
            NODES.iter().map(|n| n.api.to_string()).collect(),
            tag.to_string(),
            PERIOD,
            INTENT_DEADLINE,
        )
    }

    async fn register_device(&self) -> anyhow::Result<()> {
        let d = pb::DeviceManifest {
            id: "suite-siren".into(),
            name: "Hall siren".into(),
            location: "home".into(),
            actuators: [(
                "siren".to_string(),
                pb::StateList {
                    states: vec!["on".into()],
                },
            )]
            .into(),
            emergency_capable: true,
            emergency_actions: Default::default(),
            adapter_kind: "sim".into(),
            adapter_target: "device-sim:7301".into(),
            ..Default::default()
        };
        let t0 = Instant::now();
        loop {
            let mut c = hearth_proto::v1::devices_client::DevicesClient::new(channel(NODES[0].api));
            match c.register(d.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                    tracing_note(&format!("register device: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => bail!("cannot register the suite's device: {e}"),
            }
        }
    }

    /// Submits one fresh intent straight to `addr` and expects a clear `NO_QUORUM`.
    async fn expect_no_quorum(&mut self, addr: &str, key: &str, bad: &mut Vec<String>) {
        match load::submit_once(addr, key).await {
            Ok(v) => bad.push(format!(
                "{addr} acknowledged intent {} without a quorum",
                v.id
            )),
            Err(s) if s.message().starts_with("NO_QUORUM") => {
                println!("    {addr} answered: {:?}: {}", s.code(), s.message());
                if s.message().contains("nothing was appended") {
                    self.refused_upfront
                        .push(hearth_core::domain::scoped_intent_id(
                            Some(load::SOURCE),
                            key,
                        ));
                }
            }
            Err(s) => bad.push(format!(
                "{addr} without a quorum answered {:?}: {} (expected NO_QUORUM)",
                s.code(),
                s.message()
            )),
        }
    }

    async fn run(&mut self, name: &'static str) -> anyhow::Result<Row> {
        println!("== {name}");
        let started = Instant::now();
        self.converge(Duration::from_secs(60)).await?;
        let (old_leader, old_term) = wait_leader(0, LEADER_BOUND).await?.0;
        let mut path = String::new();
        let load = self.load(name);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut bad = Vec::new();
        let mut leader_ms = None;
        let mut actuation_from = None;
        let mut expect_failures = false;
        let l = node(old_leader);
        let other_hub = NODES
            .into_iter()
            .find(|n| !n.witness && n.id != old_leader)
            .unwrap_or(NODES[1]);
        let witness = NODES[2];
        match name {
            "kill -9 leader" => {
                let t0 = now_ms();
                self.docker.kill(l.container)?;
                let ((id, _), took, care) = wait_leader(old_term, LEADER_BOUND).await?;
                leader_ms = Some(took.as_millis() as u64);
                path = via(id, care);
                actuation_from = Some(t0);
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.docker.start(l.container)?;
            }
            "isolate leader" => {
                self.docker.cut(l.container, other_hub.container)?;
                self.docker.cut(l.container, witness.container)?;
                let t0 = now_ms();
                let ((id, _), took, care) = wait_leader(old_term, LEADER_BOUND).await?;
                leader_ms = Some(took.as_millis() as u64);
                path = via(id, care);
                actuation_from = Some(t0);
                tokio::time::sleep(Duration::from_secs(3)).await;
                self.expect_no_quorum(l.api, &format!("{name}-probe"), &mut bad)
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.docker.heal(l.container)?;
                self.docker.heal(other_hub.container)?;
                self.docker.heal(witness.container)?;
                self.quiet.push(Quiet {
                    node: Some(l.id),
                    from_ms: t0 + GRACE_MS,
                    to_ms: now_ms(),
                    why: "isolated from both peers".into(),
                });
            }
            "isolate a hub entirely" => {
                // The follower hub loses every link (peers and devices); the cluster goes on.
                let f = other_hub;
                for other in [l.container, witness.container, "hearth-device-sim"] {
                    self.docker.cut(f.container, other)?;
                }
                let t0 = now_ms();
                tokio::time::sleep(Duration::from_secs(6)).await;
                let now = leader().await;
                path = match now {
                    Some((id, t)) if t == old_term => format!("node {id} kept leading"),
                    other => {
                        actuation_from = Some(t0);
                        format!("moved: {other:?}")
                    }
                };
                self.expect_no_quorum(f.api, &format!("{name}-probe"), &mut bad)
                    .await;
                for c in [
                    f.container,
                    l.container,
                    witness.container,
                    "hearth-device-sim",
                ] {
                    self.docker.heal(c)?;
                }
                self.quiet.push(Quiet {
                    node: Some(f.id),
                    from_ms: t0 + GRACE_MS,
                    to_ms: now_ms(),
                    why: "isolated entirely".into(),
                });
            }
            "cut hub-a <-> hub-b" => {
                self.docker.cut(NODES[0].container, NODES[1].container)?;
                let t0 = now_ms();
                tokio::time::sleep(Duration::from_secs(8)).await;
                let now = leader().await;
                println!(
                    "    leader before: node {old_leader} (term {old_term}); during the cut: {now:?}"
                );
                if now.is_none_or(|(_, t)| t != old_term) {
                    actuation_from = Some(t0);
                    path = format!("moved: {now:?}");
                } else {
                    path = format!("node {old_leader} kept leading");
                }
                self.docker.heal(NODES[0].container)?;
                self.docker.heal(NODES[1].container)?;
            }
            "lose witness, then a hub" => {
                self.docker.kill(witness.container)?;
                tokio::time::sleep(Duration::from_secs(4)).await;
                // Still a quorum: the leader and the other hub.
                let (now, _, _) = wait_leader(0, LEADER_BOUND).await?;
                path = format!("node {} kept leading, then NO_QUORUM", now.0);
                let survivor = node(now.0);
                let victim = NODES
                    .into_iter()
                    .find(|n| !n.witness && n.id != now.0)
                    .unwrap_or(NODES[1]);
                expect_failures = true;
                self.docker.kill(victim.container)?;
                let t0 = now_ms();
                tokio::time::sleep(Duration::from_secs(3)).await;
                for i in 0..3 {
                    self.expect_no_quorum(survivor.api, &format!("{name}-probe-{i}"), &mut bad)
                        .await;
                }
                if let Some(s) = status(survivor.api).await {
                    println!(
                        "    survivor status: state {}, last quorum ack {:?} ms ago",
                        s.state, s.millis_since_quorum_ack
                    );
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.quiet.push(Quiet {
                    node: None,
                    from_ms: t0 + GRACE_MS,
                    to_ms: now_ms(),
                    why: "no quorum".into(),
                });
                self.docker.start(witness.container)?;
                self.docker.start(victim.container)?;
            }
            "pause leader" => {
                self.docker.pause(l.container)?;
                let t0 = now_ms();
                let ((id, _), took, care) = wait_leader(old_term, LEADER_BOUND).await?;
                leader_ms = Some(took.as_millis() as u64);
                path = via(id, care);
                actuation_from = Some(t0);
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.docker.unpause(l.container)?;
                tokio::time::sleep(Duration::from_secs(4)).await;
                self.quiet.push(Quiet {
                    node: Some(l.id),
                    from_ms: t0 + GRACE_MS,
                    to_ms: now_ms(),
                    why: "paused past the election timeout, then a stale leader".into(),
                });
            }
            "rolling restart" => {
                let order = [other_hub, witness, l];
                for n in order {
                    let before = leader().await;
                    let t0 = now_ms();
                    let started = Instant::now();
                    self.docker.stop(n.container)?;
                    self.docker.start(n.container)?;
                    if before.is_some_and(|(id, _)| id == n.id) {
                        let ((id, _), took, care) = wait_leader(old_term, LEADER_BOUND).await?;
                        leader_ms = Some(took.as_millis() as u64);
                        path = via(id, care);
                        actuation_from = Some(t0);
                    }
                    self.converge(Duration::from_secs(60)).await?;
                    println!(
                        "    restarted {} in {:.1} s (caught up)",
                        n.container,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            other => bail!("unknown scenario {other}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = load.finish().await;
        self.converge(Duration::from_secs(90)).await?;
        if leader().await.is_none() {
            bad.push("no leader after healing".into());
        }
        self.acked.extend(report.acked.iter().cloned());
        for f in &report.failed {
            if f.never_appended {
                self.refused_upfront.push(f.intent_id.clone());
            }
            if !expect_failures {
                bad.push(format!(
                    "intent {} (key {}) failed: {}",
                    f.intent_id, f.key, f.last_error
                ));
            }
        }
        bad.extend(self.evidence().await?);
        let actuation_ms = match actuation_from {
            Some(t0) => first_actuation(&journal().await?, old_term, t0).map(|t| t - t0),
            None => None,
        };
        if actuation_from.is_some() && actuation_ms.is_none() {
            bad.push("the new leader actuated nothing".into());
        }
        Ok(Row {
            name,
            path,
            leader_ms,
            actuation_ms,
            acked: report.acked.len(),
            failed: report.failed.len(),
            no_quorum: report.no_quorum_answers,
            violations: bad,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

/// Evidence for a failed run: each node's last log lines.
fn dump_logs(docker: &Docker) {
    for n in NODES {
        println!(
            "--- last logs of {}:\n{}",
            n.container,
            docker.logs(n.container, 40)
        );
    }
}

fn via(id: u64, caretaker: bool) -> String {
    if caretaker {
        format!("node {id}, after the witness took care")
    } else {
        format!("node {id}")
    }
}

fn tracing_note(s: &str) {
    eprintln!("    .. {s}");
}

fn print_table(rows: &[Row]) {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    println!();
    println!(
        "| {:<26} | {:<36} | {:>13} | {:>15} | {:>5} | {:>6} | {:>9} | {:<10} | {:>5} |",
        "scenario",
        "leadership",
        "new leader ms",
        "1st actuation ms",
        "acked",
        "failed",
        "NO_QUORUM",
        "invariants",
        "s"
    );
    println!(
        "|{:-<28}|{:-<38}|{:->15}|{:->17}|{:->7}|{:->8}|{:->11}|{:-<12}|{:->7}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<26} | {:<36} | {:>13} | {:>15} | {:>5} | {:>6} | {:>9} | {:<10} | {:>5.0} |",
            r.name,
            r.path,
            opt(r.leader_ms),
            opt(r.actuation_ms),
            r.acked,
            r.failed,
            r.no_quorum,
            if r.violations.is_empty() {
                "held".to_string()
            } else {
                format!("BROKEN ({})", r.violations.len())
            },
            r.secs
        );
    }
}

const SCENARIOS: [&str; 7] = [
    "kill -9 leader",
    "isolate leader",
    "isolate a hub entirely",
    "cut hub-a <-> hub-b",
    "lose witness, then a hub",
    "pause leader",
    "rolling restart",
];

async fn main_inner(args: Args) -> anyhow::Result<bool> {
    docker::engine_check()?;
    let root = std::fs::canonicalize(&args.root)?;
    let docker = Docker {
        root,
        project: "hearth-partition".into(),
    };
    let t0 = Instant::now();
    docker.down()?;
    docker.up()?;
    let mut suite = Suite {
        docker,
        acked: Vec::new(),
        refused_upfront: Vec::new(),
        quiet: Vec::new(),
    };
    let res = async {
        wait_leader(0, Duration::from_secs(60)).await?;
        suite.register_device().await?;
        let mut rows = Vec::new();
        for name in SCENARIOS {
            if args
                .only
                .as_ref()
                .is_some_and(|o| !name.contains(o.as_str()))
            {
                continue;
            }
            let row = suite.run(name).await?;
            for v in &row.violations {
                println!("    VIOLATION: {v}");
            }
            rows.push(row);
        }
        // Last: it removes the witness and ends with a one-hub cluster.
        if args
            .only
            .as_ref()
            .is_none_or(|o| two_hubs::NAME.contains(o.as_str()))
        {
            let row = suite.two_hubs().await?;
            for v in &row.violations {
                println!("    VIOLATION: {v}");
            }
            rows.push(row);
        }
        anyhow::Ok(rows)
    }
    .await;
    let rows = match res {
        Ok(rows) => rows,
        Err(e) => {
            dump_logs(&suite.docker);
            if !args.keep {
                let _ = suite.docker.down();
            }
            return Err(e);
        }
    };
    print_table(&rows);
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for e in journal().await? {
        if e.reply == Reply::Applied {
            *per_node.entry(e.command.sender).or_default() += 1;
        }
    }
    println!(
        "\nsuite took {:.0} s; {} intents acknowledged in all; device commands applied per sending node: {per_node:?}",
        t0.elapsed().as_secs_f64(),
        suite.acked.len()
    );
    let ok = rows.iter().all(|r| r.violations.is_empty());
    if !ok {
        dump_logs(&suite.docker);
    }
    if !args.keep {
        suite.docker.down()?;
    }
    Ok(ok)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match main_inner(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("partition suite: invariants VIOLATED (evidence above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("partition suite could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}
