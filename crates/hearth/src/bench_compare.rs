//! `hearth bench compare`: Hearth against etcd, side by side on this machine in one run.
//!
//! Both systems run as three real processes on loopback with fsync on and the same Raft timing
//! (heartbeat 100 ms, election timeout 1000 ms; Hearth draws its election timeout from
//! 1000–2000 ms, as etcd randomizes its own between 1× and 2× the setting). Hearth's three
//! nodes are its standard topology: two hubs and a witness. The write workloads alternate
//! between the two systems (H, E, then E, H, …) and the best round of each is reported.
//! Nothing here asserts an absolute time: the numbers are printed and written as JSON.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

use crate::bench::pct;

/// The hand-written subset of etcd's v3 API (crates/hearth/proto/etcd_min.proto).
#[allow(clippy::all, clippy::pedantic)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdpb::kv_client::KvClient;
use etcdpb::maintenance_client::MaintenanceClient;

/// Bytes of every written payload (an audit record's text, an etcd value).
pub const PAYLOAD: usize = 256;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// A run of seconds for CI: short phases, small counts, a 10k-entry chain.
    #[arg(long)]
    pub smoke: bool,
    /// Seconds each write run measures (after a short warm-up).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Runs per system and client count, alternating the systems; the best one is reported.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Concurrent clients of the write runs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Leader kills per system.
    #[arg(long)]
    pub failovers: Option<usize>,
    /// Entries of the audit chain for `audit verify` and restart-to-serving.
    #[arg(long)]
    pub chain: Option<u64>,
    /// Seconds over which idle CPU is measured.
    #[arg(long)]
    pub idle_seconds: Option<f64>,
    /// Intents of the intent → actuation run.
    #[arg(long)]
    pub intents: Option<usize>,
    /// Hearth nodes use base..base+2, etcd clients base+10.., etcd peers base+20..,
    /// the intent cluster base+40.., the single chain node base+50.
    #[arg(long, default_value_t = 7501)]
    pub base_port: u16,
    /// Where the JSON results are written.
    #[arg(long, default_value = "target/bench/compare.json")]
    pub json: PathBuf,
    /// The etcd server binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// Skip the Hearth-only rows (intents, chain, restart).
    #[arg(long)]
    pub skip_hearth_only: bool,
    /// Another hearth binary (say, a build of an earlier commit) run as a third cluster on
    /// ports base+30.., alternating with the other two, for before/after figures in one run.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Hearth's election_max_ms (its election timeout is drawn from 1000 ms to this; openraft
    /// also uses it as a follower's leader lease). The default matches etcd's 1×–2× range.
    #[arg(long, default_value_t = 2 * ELECTION_MS)]
    pub hearth_election_max: u64,
    /// Keep the temporary folder (data directories and every process's log) afterwards.
    #[arg(long)]
    pub keep: bool,
}

struct Plan {
    seconds: f64,
    warmup: f64,
    rounds: usize,
    clients: Vec<usize>,
    failovers: usize,
    chain: u64,
    idle_seconds: f64,
    intents: usize,
}

impl Plan {
    fn of(a: &CompareArgs) -> Plan {
        let (seconds, warmup, rounds, clients, failovers, chain, idle, intents) = if a.smoke {
            (1.0, 0.3, 1, vec![1, 16], 1, 10_000, 1.0, 50)
        } else {
            (5.0, 1.0, 3, vec![1, 16, 64], 5, 1_000_000, 10.0, 1000)
        };
        Plan {
            seconds: a.seconds.unwrap_or(seconds),
            warmup,
            rounds: a.rounds.unwrap_or(rounds).max(1),
            clients: a.clients.clone().unwrap_or(clients),
            failovers: a.failovers.unwrap_or(failovers),
            chain: a.chain.unwrap_or(chain),
            idle_seconds: a.idle_seconds.unwrap_or(idle),
            intents: a.intents.unwrap_or(intents),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Hearth,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Hearth => "hearth",
            System::Etcd => "etcd",
        }
    }
}

/// One child process, killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    exe: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(name: &str, exe: &Path, args: Vec<OsString>, log: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            args,
            log,
            child: None,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let child = Process::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.exe.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`, and reap it.
    fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().with_context(|| format!("killing {}", self.name))?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM (a planned stop), then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let _ = Process::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Fails with the tail of its log if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({st}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// What a node says about itself.
#[derive(Debug, Clone, Copy)]
struct View {
    leads: bool,
    leader: Option<u64>,
    applied: u64,
}

/// A three-process cluster of one system.
struct Cluster {
    system: System,
    /// `hearth`, `etcd` or `before` (the baseline Hearth binary).
    label: &'static str,
    procs: Vec<Proc>,
    addrs: Vec<String>,
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    // Plain text, like the etcd it is compared with.
    hearth_cluster::grpc::lazy_channel(addr).with_context(|| format!("{addr:?}"))
}

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
    }
}

impl Cluster {
    async fn view(&self, i: usize) -> Option<View> {
        let ch = channel(&self.addrs[i]).ok()?;
        let t = Duration::from_millis(500);
        match self.system {
            System::Hearth => {
                let s = with_timeout(t, ClusterClient::new(ch).status(pb::StatusRequest {}))
                    .await
                    .ok()?
                    .into_inner();
                Some(View {
                    leads: s.state == "Leader",
                    leader: s.leader,
                    applied: s.applied_index.unwrap_or(0),
                })
            }
            System::Etcd => {
                let s = with_timeout(
                    t,
                    MaintenanceClient::new(ch).status(etcdpb::StatusRequest {}),
                )
                .await
                .ok()?
                .into_inner();
                let me = s.header.map(|h| h.member_id).unwrap_or(0);
                Some(View {
                    leads: s.leader != 0 && s.leader == me,
                    leader: (s.leader != 0).then_some(s.leader),
                    applied: s.raft_applied_index,
                })
            }
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.check_alive()?;
        }
        Ok(())
    }

    /// Waits until every node answers, all name the same leader, one of them leads, and all
    /// have applied the same index. Returns the leader's position.
    async fn wait_whole(&mut self, limit: Duration) -> anyhow::Result<usize> {
        let until = Instant::now() + limit;
        loop {
            self.check_alive()?;
            let mut views = Vec::new();
            for i in 0..self.procs.len() {
                views.push(self.view(i).await);
            }
            if views.iter().all(Option::is_some) {
                let v: Vec<View> = views.into_iter().flatten().collect();
                let leaders: Vec<usize> = (0..v.len()).filter(|i| v[*i].leads).collect();
                if leaders.len() == 1
                    && v.iter()
                        .all(|x| x.leader.is_some() && x.leader == v[0].leader)
                    && v.iter().all(|x| x.applied == v[0].applied)
                {
                    return Ok(leaders[0]);
                }
            }
            if Instant::now() > until {
                bail!(
                    "{} cluster not whole (every node up, one leader, same applied index) within {} s; logs in {}",
                    self.label,
                    limit.as_secs(),
                    self.procs
                        .first()
                        .and_then(|p| p.log.parent())
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const HEARTBEAT_MS: u64 = 100;
const ELECTION_MS: u64 = 1000;

fn timing_toml(election_max_ms: u64) -> String {
    format!(
        "\n[timing]\nheartbeat_ms = {HEARTBEAT_MS}\nelection_min_ms = {ELECTION_MS}\nelection_max_ms = {election_max_ms}\n"
    )
}

fn start_hearth(
    exe: &Path,
    dir: &Path,
    base_port: u16,
    label: &'static str,
    election_max_ms: u64,
) -> anyhow::Result<Cluster> {
    // The write clusters send no emergencies: the plain dev topology, which a `--baseline`
    // binary older than the `[limits]` section still reads (write_configs adds it).
    let paths = crate::dev::write_topology(dir, base_port, crate::dev::Topology::Three, false)?;
    let mut procs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let mut text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        text.push_str(&timing_toml(election_max_ms));
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        let mut proc = Proc::new(
            &format!("{label} node {}", i + 1),
            exe,
            vec!["serve".into(), "--config".into(), p.into()],
            dir.join(format!("node{}.log", i + 1)),
        );
        proc.start()?;
        procs.push(proc);
    }
    Ok(Cluster {
        system: System::Hearth,
        label,
        procs,
        addrs: (0..3)
            .map(|i| format!("127.0.0.1:{}", base_port + i))
            .collect(),
    })
}

fn start_etcd(
    etcd: &Path,
    dir: &Path,
    client_base: u16,
    peer_base: u16,
) -> anyhow::Result<Cluster> {
    let peer = |i: u16| format!("http://127.0.0.1:{}", peer_base + i);
    let initial: Vec<String> = (0..3).map(|i| format!("e{}={}", i + 1, peer(i))).collect();
    let initial = initial.join(",");
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3u16 {
        let client = format!("127.0.0.1:{}", client_base + i);
        let args: Vec<OsString> = [
            "--name".to_string(),
            format!("e{}", i + 1),
            "--data-dir".into(),
            dir.join(format!("etcd{}", i + 1)).display().to_string(),
            "--listen-client-urls".into(),
            format!("http://{client}"),
            "--advertise-client-urls".into(),
            format!("http://{client}"),
            "--listen-peer-urls".into(),
            peer(i),
            "--initial-advertise-peer-urls".into(),
            peer(i),
            "--initial-cluster".into(),
            initial.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            "hearth-bench".into(),
            "--heartbeat-interval".into(),
            HEARTBEAT_MS.to_string(),
            "--election-timeout".into(),
            ELECTION_MS.to_string(),
            "--logger".into(),
            "zap".into(),
            "--log-level".into(),
            "warn".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let mut proc = Proc::new(
            &format!("etcd member e{}", i + 1),
            etcd,
            args,
            dir.join(format!("etcd{}.log", i + 1)),
        );
        proc.start()?;
        procs.push(proc);
        addrs.push(client);
    }
    Ok(Cluster {
        system: System::Etcd,
        label: "etcd",
        procs,
        addrs,
    })
}

/// One write client of either system, on its own connection.
enum Writer {
    Hearth(ClusterClient<Channel>),
    Etcd(KvClient<Channel>),
}

impl Writer {
    fn new(system: System, addr: &str) -> anyhow::Result<Writer> {
        let ch = channel(addr)?;
        Ok(match system {
            System::Hearth => Writer::Hearth(ClusterClient::new(ch)),
            System::Etcd => Writer::Etcd(KvClient::new(ch)),
        })
    }

    /// One quorum-committed write of `payload` (an audit record; an etcd Put under `key`).
    async fn put(&mut self, key: &str, payload: &str) -> Result<(), tonic::Status> {
        match self {
            Writer::Hearth(c) => {
                c.append_test_record(pb::AppendTestRecordRequest {
                    text: payload.to_string(),
                })
                .await?;
            }
            Writer::Etcd(c) => {
                c.put(etcdpb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: payload.as_bytes().to_vec(),
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// A payload of exactly [`PAYLOAD`] bytes that names its writer and sequence number.
fn payload(key: &str) -> String {
    let mut s = format!("bench {key} ");
    while s.len() < PAYLOAD {
        s.push('x');
    }
    s.truncate(PAYLOAD);
    s
}

#[derive(Debug, Clone, serde::Serialize)]
struct LoadRun {
    system: &'static str,
    clients: usize,
    round: usize,
    ops: u64,
    errors: u64,
    seconds: f64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `clients` writers against `addr` for `warmup` + `seconds`; only requests started inside
/// the measured window count.
async fn load(
    system: System,
    label: &'static str,
    addr: &str,
    clients: usize,
    warmup: f64,
    seconds: f64,
    round: usize,
) -> anyhow::Result<LoadRun> {
    let t_start = Instant::now();
    let measure_from = t_start + Duration::from_secs_f64(warmup);
    let measure_to = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut w = Writer::new(system, addr)?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= measure_to {
                    break;
                }
                let key = format!("r{round}/c{clients}/w{c}/{seq}");
                seq += 1;
                let p = payload(&key);
                let res = with_timeout(Duration::from_secs(10), w.put(&key, &p)).await;
                let d = t0.elapsed();
                match res {
                    Ok(()) if t0 >= measure_from => lat.push(d),
                    Ok(()) => {}
                    Err(e) => {
                        if t0 >= measure_from {
                            errors += 1;
                        }
                        if errors == 1 {
                            tracing::warn!(system = system.name(), error = %e, "write failed");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.context("a write client panicked")?;
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    let ops = lat.len() as u64;
    Ok(LoadRun {
        system: label,
        clients,
        round,
        ops,
        errors,
        seconds,
        ops_per_s: ops as f64 / seconds,
        p50_ms: ms_f(pct(&lat, 0.5)),
        p99_ms: ms_f(pct(&lat, 0.99)),
        p999_ms: ms_f(pct(&lat, 0.999)),
        max_ms: ms_f(pct(&lat, 1.0)),
    })
}

/// Kills the leader with SIGKILL under a light write load (two clients that try every node
/// in turn) and returns the time from the kill until a write issued after it succeeds.
/// Restarts the killed node and waits for the cluster to be whole again.
async fn failover_once(c: &mut Cluster, k: usize, settle: f64) -> anyhow::Result<Duration> {
    let leader = c.wait_whole(Duration::from_secs(60)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..2usize {
        let mut writers = Vec::new();
        for a in &c.addrs {
            writers.push(Writer::new(c.system, a)?);
        }
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let n = writers.len();
            let mut cur = w % n;
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("failover/{k}/w{w}/{seq}");
                seq += 1;
                let p = payload(&key);
                let t0 = Instant::now();
                match with_timeout(Duration::from_secs(1), writers[cur].put(&key, &p)).await {
                    Ok(()) => {
                        if let Ok(mut g) = done.lock() {
                            g.push((t0, Instant::now()));
                        }
                    }
                    Err(_) => {
                        cur = (cur + 1) % n;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let killed_at = Instant::now();
    c.procs[leader].kill9()?;
    let until = killed_at + Duration::from_secs(60);
    let result = loop {
        let first = done.lock().ok().and_then(|g| {
            g.iter()
                .filter(|(s, _)| *s >= killed_at)
                .map(|(_, e)| *e)
                .min()
        });
        if let Some(e) = first {
            break Ok(e.duration_since(killed_at));
        }
        if Instant::now() > until {
            break Err(anyhow::anyhow!(
                "{}: no write succeeded within 60 s of killing the leader",
                c.label
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    c.procs[leader].start()?;
    c.wait_whole(Duration::from_secs(60)).await?;
    result
}

/// Resident memory (MiB) and CPU ticks (user + system) of a process.
fn proc_sample(pid: u32) -> anyhow::Result<(f64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses: state is field 3, utime 14,
    // stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .context("unexpected /proc/PID/stat")
    };
    Ok((rss_kb / 1024.0, tick(11)? + tick(12)?))
}

fn clock_ticks() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Idle RSS (MiB, at the end) and CPU (% of one core) of each pid over `secs`.
async fn idle(pids: &[u32], secs: f64) -> anyhow::Result<Vec<(f64, f64)>> {
    let before: Vec<u64> = pids
        .iter()
        .map(|p| proc_sample(*p).map(|s| s.1))
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let hz = clock_ticks();
    let mut out = Vec::new();
    for (p, b) in pids.iter().zip(before) {
        let (rss, after) = proc_sample(*p)?;
        out.push((rss, (after.saturating_sub(b)) as f64 / hz / wall * 100.0));
    }
    Ok(out)
}

/// Result of the chain measurements.
struct ChainResult {
    entries: u64,
    build_s: f64,
    verify_s: f64,
    verified: u64,
    to_status_s: f64,
    to_write_s: f64,
}

/// Builds a single-node Hearth data directory whose chain has `entries` entries: the node
/// forms its cluster and commits a first record through Raft, is stopped, and the rest is
/// appended to its log (fsynced per chunk) and applied to its state machine (hashes, sled)
/// through the same store code the node uses, without a Raft round trip per entry. Then times
/// `hearth audit verify --data-dir` and a restart until the node answers and commits a write.
async fn chain(exe: &Path, dir: &Path, port: u16, entries: u64) -> anyhow::Result<ChainResult> {
    use hearth_store::types::{Entry, log_id};
    use hearth_store::{LogStore, StateMachine, TypeConfig};
    use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
    use openraft::type_config::TypeConfigExt;

    let data = dir.join("single");
    let cfg = dir.join("single.toml");
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        &cfg,
        format!(
            "insecure = true\nnode_id = 1\nrole = \"hub\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nbootstrap = true\n{}",
            data.display(),
            timing_toml(ELECTION_MS * 2)
        ),
    )
    .with_context(|| format!("writing {}", cfg.display()))?;
    let serve_args: Vec<OsString> = vec!["serve".into(), "--config".into(), cfg.clone().into()];
    let mut node = Proc::new(
        "hearth single node",
        exe,
        serve_args,
        dir.join("single.log"),
    );

    let first_write = |node: &mut Proc| {
        let addr = addr.clone();
        let alive = node.check_alive();
        async move {
            alive?;
            let mut c = ClusterClient::new(channel(&addr)?);
            let r = with_timeout(
                Duration::from_secs(2),
                c.append_test_record(pb::AppendTestRecordRequest {
                    text: payload("restart"),
                }),
            )
            .await;
            anyhow::Ok(r.is_ok())
        }
    };

    node.start()?;
    let until = Instant::now() + Duration::from_secs(60);
    while !first_write(&mut node).await? {
        anyhow::ensure!(
            Instant::now() < until,
            "the single node did not commit a write within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop(Duration::from_secs(10))?;

    let t_build = Instant::now();
    let mut log = LogStore::open(&data.join("raft")).context("opening the single node's log")?;
    let mut sm =
        StateMachine::open(&data.join("state")).context("opening the single node's state")?;
    let last = log
        .last_log_id()?
        .context("the single node's log is empty")?;
    anyhow::ensure!(
        sm.applied()? == Some(last),
        "the single node has not applied its whole log"
    );
    let (term, leader) = (last.leader_id.term, last.leader_id.node_id);
    let target = entries.saturating_sub(1).max(last.index);
    let mut next = last.index + 1;
    const CHUNK: u64 = 20_000;
    while next <= target {
        let end = (next + CHUNK - 1).min(target);
        let batch: Vec<Entry> = (next..=end)
            .map(|i| Entry {
                log_id: log_id(term, leader, i),
                payload: openraft::EntryPayload::Normal(hearth_store::Command(
                    hearth_core::domain::Command::TestRecord {
                        text: payload(&format!("chain/{i}")),
                    }
                    .encode(),
                )),
            })
            .collect();
        let (tx, rx) = TypeConfig::oneshot();
        log.append(batch.clone(), IOFlushed::signal(tx)).await?;
        rx.await
            .context("the log store dropped its flush callback")?
            .context("fsync of the log")?;
        sm.apply(futures::stream::iter(
            batch.into_iter().map(|e| Ok((e, None))),
        ))
        .await?;
        next = end + 1;
    }
    drop(log);
    drop(sm);
    let build_s = t_build.elapsed().as_secs_f64();

    let t_verify = Instant::now();
    let out = Process::new(exe)
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .context("running hearth audit verify")?;
    let verify_s = t_verify.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "audit verify failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: u64 = text
        .strip_prefix("OK: ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected audit verify output: {text}"))?;

    let t0 = Instant::now();
    node.start()?;
    let until = t0 + Duration::from_secs(120);
    let to_status_s = loop {
        node.check_alive()?;
        let ok = match channel(&addr) {
            Ok(ch) => with_timeout(
                Duration::from_millis(500),
                ClusterClient::new(ch).status(pb::StatusRequest {}),
            )
            .await
            .is_ok(),
            Err(_) => false,
        };
        if ok {
            break t0.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the restarted node did not answer within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    while !first_write(&mut node).await? {
        anyhow::ensure!(
            Instant::now() < until,
            "the restarted node did not commit a write within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_write_s = t0.elapsed().as_secs_f64();
    node.stop(Duration::from_secs(10))?;
    Ok(ChainResult {
        entries: target + 1,
        build_s,
        verify_s,
        verified,
        to_status_s,
        to_write_s,
    })
}

/// A write-run figure: its name, unit, whether higher is better, and how to read it.
type Metric = (&'static str, &'static str, bool, fn(&LoadRun) -> f64);

/// One line of the table.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    name: String,
    unit: &'static str,
    better: &'static str,
    hearth: Option<f64>,
    etcd: Option<f64>,
    ratio: Option<f64>,
    /// The baseline binary's figure (`--baseline`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<f64>,
}

fn row(
    name: String,
    unit: &'static str,
    higher_better: bool,
    h: Option<f64>,
    e: Option<f64>,
) -> Row {
    let ratio = match (h, e) {
        (Some(h), Some(e)) if e != 0.0 => Some(h / e),
        _ => None,
    };
    Row {
        name,
        unit,
        better: if higher_better { "higher" } else { "lower" },
        hearth: h,
        etcd: e,
        ratio,
        before: None,
    }
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    serde_json::json!({ "cpu": cpu, "cores": cores, "kernel": kernel })
}

pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let plan = Plan::of(&args);
    let exe = std::env::current_exe().context("finding the hearth binary")?;
    let version = Process::new(&args.etcd).arg("--version").output();
    let etcd_version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => bail!(
            "cannot run {} --version: install etcd (Debian: apt-get install etcd-server etcd-client) or pass --etcd PATH",
            args.etcd.display()
        ),
    };
    let dir = tempfile::Builder::new()
        .prefix("hearth-compare-")
        .tempdir()
        .context("creating a temporary folder")?;
    let bp = args.base_port;
    eprintln!(
        "hearth bench compare: Hearth (2 hubs + witness, its standard 3-node topology) vs {etcd_version} (3 members); \
         both on loopback, fsync on, heartbeat {HEARTBEAT_MS} ms, election {ELECTION_MS} ms; data in {}",
        dir.path().display()
    );
    let hdir = dir.path().join("hearth");
    let edir = dir.path().join("etcd");
    std::fs::create_dir_all(&hdir)?;
    std::fs::create_dir_all(&edir)?;
    // clusters[0] is Hearth, [1] etcd, [2] the baseline Hearth binary if given.
    let mut clusters = vec![
        start_hearth(&exe, &hdir, bp, "hearth", args.hearth_election_max)?,
        start_etcd(&args.etcd, &edir, bp + 10, bp + 20)?,
    ];
    if let Some(b) = &args.baseline {
        let bdir = dir.path().join("before");
        std::fs::create_dir_all(&bdir)?;
        clusters.push(start_hearth(
            b,
            &bdir,
            bp + 30,
            "before",
            args.hearth_election_max,
        )?);
    }
    for c in &mut clusters {
        c.wait_whole(Duration::from_secs(60)).await?;
    }
    let n = clusters.len();

    let mut rows = Vec::new();
    let mut runs: Vec<LoadRun> = Vec::new();

    // Quorum-committed writes, alternating the systems: each round starts with the next one.
    for &clients in &plan.clients {
        for round in 0..plan.rounds {
            for k in 0..n {
                let c = &mut clusters[(round + k) % n];
                let leader = c.wait_whole(Duration::from_secs(60)).await?;
                let r = load(
                    c.system,
                    c.label,
                    &c.addrs[leader],
                    clients,
                    plan.warmup,
                    plan.seconds,
                    round,
                )
                .await?;
                eprintln!(
                    "  writes {:<6} {:>2} clients round {}: {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  errors {}",
                    r.system, clients, round, r.ops_per_s, r.p50_ms, r.p99_ms, r.p999_ms, r.errors
                );
                runs.push(r);
            }
        }
        let best = |label: &str| {
            runs.iter()
                .filter(|r| r.system == label && r.clients == clients)
                .max_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s))
                .cloned()
        };
        let (h, e, b) = (best("hearth"), best("etcd"), best("before"));
        let cl = if clients == 1 { "client" } else { "clients" };
        let metrics: [Metric; 4] = [
            ("writes/s", "ops/s", true, |r| r.ops_per_s),
            ("write p50", "ms", false, |r| r.p50_ms),
            ("write p99", "ms", false, |r| r.p99_ms),
            ("write p999", "ms", false, |r| r.p999_ms),
        ];
        for (name, unit, higher, f) in metrics {
            let mut r = row(
                format!("{name}, {clients} {cl}"),
                unit,
                higher,
                h.as_ref().map(f),
                e.as_ref().map(f),
            );
            r.before = b.as_ref().map(f);
            rows.push(r);
        }
    }

    // Idle footprint over the same window: Hearth's witness, an etcd follower.
    let mut pids = Vec::new();
    for c in &mut clusters {
        let leader = c.wait_whole(Duration::from_secs(60)).await?;
        // Hearth's witness is node 3; for etcd any follower.
        let i = if c.system == System::Hearth {
            2
        } else {
            (leader + 1) % 3
        };
        pids.push(
            c.procs[i]
                .pid()
                .with_context(|| format!("{} is not running", c.procs[i].name))?,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_v = idle(&pids, plan.idle_seconds).await?;
    let mut r = row(
        "idle RSS (Hearth witness; etcd follower)".into(),
        "MiB",
        false,
        Some(idle_v[0].0),
        Some(idle_v[1].0),
    );
    r.before = idle_v.get(2).map(|v| v.0);
    rows.push(r);
    let mut r = row(
        format!("idle CPU over {} s (witness; follower)", plan.idle_seconds),
        "% core",
        false,
        Some(idle_v[0].1),
        Some(idle_v[1].1),
    );
    r.before = idle_v.get(2).map(|v| v.1);
    rows.push(r);

    // Failover: kill -9 the leader under a light load, alternating the systems.
    let mut fo: Vec<Vec<f64>> = vec![Vec::new(); n];
    let settle = if args.smoke { 0.5 } else { 1.0 };
    for k in 0..plan.failovers {
        for (i, c) in clusters.iter_mut().enumerate() {
            let d = failover_once(c, k, settle).await?;
            eprintln!("  failover {:<6} #{k}: {:.0} ms", c.label, ms_f(d));
            fo[i].push(ms_f(d));
        }
    }
    if plan.failovers > 0 {
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let mut r = row(
            format!("failover (kill -9 leader) median, n={}", plan.failovers),
            "ms",
            false,
            median(&fo[0]),
            median(&fo[1]),
        );
        r.before = fo.get(2).and_then(|v| median(v));
        rows.push(r);
        let mut r = row(
            format!("failover (kill -9 leader) max, n={}", plan.failovers),
            "ms",
            false,
            max(&fo[0]),
            max(&fo[1]),
        );
        r.before = fo.get(2).and_then(|v| max(v));
        rows.push(r);
    }
    for c in &mut clusters {
        for p in &mut c.procs {
            p.kill9()?;
        }
    }

    // Hearth alone.
    let mut chain_json = serde_json::Value::Null;
    if !args.skip_hearth_only {
        eprintln!(
            "  intent -> actuation: {} intents, 8 clients (in-process 2 hubs + witness)",
            plan.intents
        );
        let s = crate::bench::measure_intents(plan.intents, 8, bp + 40).await?;
        for (name, v) in [
            ("intent -> committed", &s.commit),
            ("intent -> device applied", &s.actuate),
        ] {
            rows.push(row(
                format!("{name} p50"),
                "ms",
                false,
                Some(ms_f(pct(v, 0.5))),
                None,
            ));
            rows.push(row(
                format!("{name} p99"),
                "ms",
                false,
                Some(ms_f(pct(v, 0.99))),
                None,
            ));
        }
        eprintln!("  audit chain of {} entries (single node)", plan.chain);
        let cdir = dir.path().join("chain");
        std::fs::create_dir_all(&cdir)?;
        let c = chain(&exe, &cdir, bp + 50, plan.chain).await?;
        let n = c.entries;
        rows.push(row(
            format!("audit verify --data-dir, {n} entries"),
            "entries/s",
            true,
            Some(c.verified as f64 / c.verify_s),
            None,
        ));
        rows.push(row(
            format!("restart -> Status answers, {n} entries"),
            "s",
            false,
            Some(c.to_status_s),
            None,
        ));
        rows.push(row(
            format!("restart -> serves a write, {n} entries"),
            "s",
            false,
            Some(c.to_write_s),
            None,
        ));
        chain_json = serde_json::json!({
            "entries": n, "build_s": c.build_s, "verify_s": c.verify_s,
            "verified": c.verified, "restart_to_status_s": c.to_status_s,
            "restart_to_write_s": c.to_write_s,
        });
    }

    // The table.
    let emax = if args.hearth_election_max == 2 * ELECTION_MS {
        String::new()
    } else {
        format!(" (Hearth's election max {} ms)", args.hearth_election_max)
    };
    outln!(
        "Hearth (2 hubs + witness) vs {etcd_version} (3 members), loopback, fsync on, heartbeat {HEARTBEAT_MS} ms / election {ELECTION_MS} ms{emax}; \
         {PAYLOAD}-byte writes to the leader, best of {} alternating runs of {} s",
        plan.rounds,
        plan.seconds
    );
    let with_before = args.baseline.is_some();
    let ratio = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let mut header = format!(
        "{:<46} {:>9} {:>11} {:>11} {:>12}",
        "measurement", "unit", "Hearth", "etcd", "Hearth/etcd"
    );
    if with_before {
        header.push_str(&format!(" {:>11} {:>12}", "before", "before/etcd"));
    }
    outln!("{header}");
    for r in &rows {
        let mut line = format!(
            "{:<46} {:>9} {:>11} {:>11} {:>12}",
            r.name,
            r.unit,
            fmt_num(r.hearth),
            fmt_num(r.etcd),
            ratio(r.ratio)
        );
        if with_before {
            let rb = match (r.before, r.etcd) {
                (Some(b), Some(e)) if e != 0.0 => Some(b / e),
                _ => None,
            };
            line.push_str(&format!(" {:>11} {:>12}", fmt_num(r.before), ratio(rb)));
        }
        outln!("{line}");
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        outln!("note: {errors} writes failed during the write runs (see the JSON)");
    }
    let doc = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "smoke": args.smoke,
        "machine": machine(),
        "etcd": etcd_version,
        "topology": {
            "hearth": "2 hubs + 1 witness, separate processes, loopback",
            "etcd": "3 members, separate processes, loopback",
        },
        "timing": {
            "heartbeat_ms": HEARTBEAT_MS,
            "election_ms": ELECTION_MS,
            "hearth_election_max_ms": args.hearth_election_max,
        },
        "payload_bytes": PAYLOAD,
        "rows": rows,
        "write_runs": runs,
        "failover_ms": {
            "hearth": fo[0],
            "etcd": fo[1],
            "before": fo.get(2),
        },
        "baseline": args.baseline.as_ref().map(|p| p.display().to_string()),
        "chain": chain_json,
    });
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    outln!("JSON: {}", args.json.display());
    if args.keep {
        let kept = dir.keep();
        outln!("data and logs kept in {}", kept.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_fixed_size_and_name_their_key() {
        for key in ["a", "r0/c64/w63/123456", &"k".repeat(400)] {
            let p = payload(key);
            assert_eq!(p.len(), PAYLOAD);
        }
        assert!(payload("r1/c1/w0/7").starts_with("bench r1/c1/w0/7 x"));
    }

    #[test]
    fn median_ratio_and_formatting() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let r = row("x".into(), "ms", false, Some(2.0), Some(4.0));
        assert_eq!(r.ratio, Some(0.5));
        assert_eq!(row("y".into(), "ms", false, Some(2.0), None).ratio, None);
        assert_eq!(fmt_num(None), "-");
        assert_eq!(fmt_num(Some(1234.4)), "1234");
        assert_eq!(fmt_num(Some(12.34)), "12.3");
        assert_eq!(fmt_num(Some(1.234)), "1.23");
    }

    #[test]
    fn reads_its_own_memory_and_cpu_from_proc() {
        let (rss, _ticks) = proc_sample(std::process::id()).unwrap();
        assert!(rss > 0.0);
        assert!(proc_sample(u32::MAX).is_err());
    }
}
