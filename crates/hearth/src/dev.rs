//! `hearth dev`: a real cluster on loopback — by default three nodes (two hubs and a witness),
//! or one hub, or two hubs without a witness (`--topology`) — with data in a temporary folder,
//! in one process. Each node is a full `serve` with its own gRPC port.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hearth_node::{NodeConfig, Role};

/// The shapes of a household cluster `hearth dev` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One hub: its own quorum; nothing takes over if it fails.
    One,
    /// Two hubs, no witness: assisted failover (a person promotes the survivor).
    Two,
    /// Two hubs and a witness: automatic failover.
    Three,
}

impl Topology {
    fn roles(self) -> &'static [(u64, Role)] {
        match self {
            Topology::One => &[(1, Role::Hub)],
            Topology::Two => &[(1, Role::Hub), (2, Role::Hub)],
            Topology::Three => &[(1, Role::Hub), (2, Role::Hub), (3, Role::Witness)],
        }
    }
}

/// How far above a node's gRPC port its REST port (DoSync's API v1, plain HTTP on loopback)
/// is: with the default base port 7101, node 1 answers DoSync clients on DoSync's own
/// default port, 47200.
const REST_OFFSET: u32 = 47200 - 7101;

/// The REST (loopback HTTP) port of the node whose gRPC port is `grpc`; `None` when it would
/// not be a port (a base port above 25436, as tests pick from the ephemeral range): that dev
/// cluster serves no REST API, and says so.
fn rest_port(grpc: u32) -> Option<u16> {
    u16::try_from(grpc + REST_OFFSET).ok()
}

/// Writes one config file per node of `topology` (`DIR/node{id}.toml`, data in
/// `DIR/node{id}`, node `id` on port `base_port + id - 1`) and returns their paths.
fn write_topology(
    dir: &Path,
    base_port: u16,
    topology: Topology,
    secure: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let roles = topology.roles();
    if secure {
        let ids: Vec<u64> = roles.iter().map(|(id, _)| *id).collect();
        node_pki(dir, &ids)?;
    }
    let members: Vec<(u64, Role, String)> = roles
        .iter()
        .map(|&(id, role)| {
            let port = u32::from(base_port) + u32::try_from(id - 1).unwrap_or(u32::MAX);
            (id, role, format!("127.0.0.1:{port}"))
        })
        .collect();
    let mut paths = Vec::new();
    let builders = hearth_node::config::local_cluster(dir, &members);
    for (b, (id, _, addr)) in builders.into_iter().zip(&members) {
        let grpc: u32 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(u32::from(base_port));
        let b = match rest_port(grpc) {
            Some(port) => b.http_loopback(format!("127.0.0.1:{port}")),
            None => b,
        };
        let b = if secure {
            // Relative to the config file: DIR/pki/.
            b.tls(
                "pki/ca.pem",
                format!("pki/node-{id}.pem"),
                format!("pki/node-{id}.key"),
            )
            .tokens_file("pki/tokens.toml")
        } else {
            b.insecure()
        };
        let path = dir.join(format!("node{id}.toml"));
        b.build()?
            .write_to(&path, &format!("hearth dev: node {id}"))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The CA (with its key) lives in `DIR/ca/`, which no node reads; the nodes get `DIR/pki/`:
/// the CA certificate, their own certificates and keys, the tokens file and the admin token.
fn node_pki(dir: &Path, ids: &[u64]) -> anyhow::Result<()> {
    let ca = dir.join("ca");
    hearth_node::pki::init_pki(&ca, ids, false)?;
    let pki = dir.join("pki");
    hearth_node::pki::create_private_dir(&pki)?;
    if pki.join("ca.key").exists() {
        tracing::warn!(
            "{} holds a CA key from an older `hearth dev`: this folder's nodes no longer use \
             it (their CA is in {}); move it off the nodes' folder",
            pki.join("ca.key").display(),
            ca.display()
        );
    }
    let mut files = vec!["ca.pem".to_string()];
    for id in ids {
        files.push(format!("node-{id}.pem"));
        files.push(format!("node-{id}.key"));
    }
    // Tokens added since (`hearth token add --file DIR/pki/tokens.toml`) are kept.
    for f in ["tokens.toml", "admin.token"] {
        if !pki.join(f).exists() {
            files.push(f.to_string());
        }
    }
    for f in files {
        let (from, to) = (ca.join(&f), pki.join(&f));
        let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        hearth_node::pki::write_private(&to, &bytes)
            .with_context(|| format!("writing {}", to.display()))?;
    }
    // The token DoSync clients (certify.py, its MCP server) send as their bearer key: an
    // operator's, since DoSync's key registers devices and reads the audit (docs/REST.md).
    let dosync = pki.join("dosync.token");
    if !dosync.exists() {
        let tokens = pki.join("tokens.toml");
        // A `dosync` token whose secret was lost with its file is replaced.
        let _ = hearth_node::pki::revoke_token(&tokens, "dosync");
        let t = hearth_node::pki::add_token(
            &tokens,
            "dosync",
            hearth_node::auth::ClientRole::Operator,
        )?;
        hearth_node::pki::write_private(&dosync, format!("{t}\n").as_bytes())
            .with_context(|| format!("writing {}", dosync.display()))?;
    }
    Ok(())
}

/// What `hearth dev` prints about the REST API: each node's base URL and the token to use.
fn rest_banner(base_port: u16, topology: Topology, pki: Option<&Path>) -> anyhow::Result<String> {
    let mut out =
        String::from("DoSync REST API v1 on every node (plain HTTP on loopback; docs/REST.md):\n");
    let mut follower = None;
    for &(id, role) in topology.roles() {
        let grpc = u32::from(base_port) + u32::try_from(id - 1).unwrap_or(u32::MAX);
        let Some(port) = rest_port(grpc) else {
            return Ok(format!(
                "DoSync REST API v1: off (--base-port {base_port} leaves no room for REST ports \
                 at gRPC port + {REST_OFFSET}; use a base port up to {})\n",
                u32::from(u16::MAX) - REST_OFFSET - 2
            ));
        };
        if id == 2 {
            follower = Some(port);
        }
        out.push_str(&format!(
            "  node {id} ({}): http://127.0.0.1:{port}/v1/\n",
            role.name()
        ));
    }
    match pki {
        Some(pki) => {
            // The path, never the secret (terminals are logged and shared).
            out.push_str(&format!(
                "  token for DoSync clients (an operator's): {}\n  \
                 export DOSYNC_TOKEN=$(cat {0}) DOSYNC_OPERATOR_TOKEN=$(cat {0})\n",
                pki.join("dosync.token").display()
            ));
        }
        None => out.push_str("  no token needed (--insecure)\n"),
    }
    if let Some(port) = follower {
        out.push_str(&format!(
            "  e.g. python3 certify.py --host 127.0.0.1 --port {port} --tier conformance\n"
        ));
    }
    Ok(out)
}

/// Refuses to start when a port of the cluster is taken, before anything is written.
fn check_ports_free(base_port: u16, topology: Topology) -> anyhow::Result<()> {
    for &(id, _) in topology.roles() {
        let port = u32::from(base_port) + u32::try_from(id - 1).unwrap_or(u32::MAX);
        let port = u16::try_from(port)
            .map_err(|_| anyhow::anyhow!("--base-port {base_port} leaves no room for node {id}"))?;
        for port in std::iter::once(port).chain(rest_port(u32::from(port))) {
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                anyhow::bail!(
                    "port {port} (node {id}) is not free: {e}; is another `hearth dev` running? \
                     pick others with --base-port"
                );
            }
        }
    }
    Ok(())
}

/// Starts one `serve` per config file in this process; sending on the returned channel stops them.
fn spawn_nodes(
    paths: &[PathBuf],
) -> anyhow::Result<(
    tokio::sync::broadcast::Sender<()>,
    Vec<hearth_node::local::NodeTask>,
)> {
    let configs = paths
        .iter()
        .map(|p| NodeConfig::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(hearth_node::local::spawn_in_process(configs))
}

pub async fn run(
    dir: Option<PathBuf>,
    base_port: u16,
    topology: Topology,
    insecure: bool,
) -> anyhow::Result<()> {
    check_ports_free(base_port, topology)?;
    let (_guard, dir) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (None, d)
        }
        None => {
            // 0700 (tempfile's default): the CA key and the history inside are the user's.
            let t = tempfile::Builder::new().prefix("hearth-dev-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let paths = write_topology(&dir, base_port, topology, !insecure)?;
    let pki = dir.join("pki");
    let (client, client_env) = if insecure {
        (crate::cli::Client::default(), String::new())
    } else {
        let client = crate::cli::Client::new(crate::cli::ClientSettings::from_args(
            Some(&pki.join("ca.pem")),
            Some(&pki.join("admin.token")),
        )?);
        let env = format!(
            "  export HEARTH_CA={} HEARTH_TOKEN_FILE={}\n  ",
            pki.join("ca.pem").display(),
            pki.join("admin.token").display()
        );
        (client, env)
    };
    let (stop_tx, mut nodes) = spawn_nodes(&paths)?;
    let seed_addr = format!("127.0.0.1:{base_port}");
    let seeding = tokio::spawn(async move {
        if let Err(e) = seed_devices(&client, &seed_addr).await {
            eprintln!("could not register the simulated devices: {e:#}");
        }
    });
    let a = base_port;
    let shape = match topology {
        Topology::One => {
            format!("one hub (node 1) on 127.0.0.1:{a}: nothing takes over if it fails")
        }
        Topology::Two => format!(
            "hub 1 on 127.0.0.1:{a}, hub 2 on 127.0.0.1:{}, no witness: if one stops, the other \
             commits nothing until a person promotes it (docs/topologies/two-hubs.md)",
            a + 1
        ),
        Topology::Three => format!(
            "hub 1 on 127.0.0.1:{a}, hub 2 on 127.0.0.1:{}, witness 3 on 127.0.0.1:{}",
            a + 1,
            a + 2
        ),
    };
    // The commands work as printed: with the port of node 1 unless it is the default.
    let at = if base_port == 7101 {
        String::new()
    } else {
        format!(" --addr 127.0.0.1:{base_port}")
    };
    let rest = rest_banner(base_port, topology, (!insecure).then_some(pki.as_path()))?;
    crate::cli::out(format_args!(
        "Hearth dev cluster: {shape}\n\
         data and configs in {}{}\n\
         {}\n\
         {rest}\
         In another terminal:\n{client_env}\
         cargo run -p hearth -- cluster status{at}\n  \
         cargo run -p hearth -- device list{at}\n  \
         cargo run -p hearth -- intent send ensure_safety --urgency emergency --location home/kitchen --watch{at}\n  \
         cargo run -p hearth -- intent explain control_access --location home --context state=unlocked{at}\n  \
         cargo run -p hearth -- audit tail{at}\n  \
         cargo run -p hearth -- audit verify{at}\n\
         Ctrl-C stops every node.",
        dir.display(),
        if _guard.is_some() {
            " (deleted on exit)"
        } else {
            ""
        },
        if insecure {
            "INSECURE: plain text, no client tokens (--insecure)"
        } else {
            "mutual TLS between nodes (pki/; the CA key apart in ca/), clients need the CA and a token (pki/admin.token: admin)"
        }
    ));
    let mut failed = None;
    tokio::select! {
        _ = crate::cli::stop_signal() => {}
        (res, _, _) = futures::future::select_all(nodes.iter_mut()) => {
            if let Ok((id, Err(e))) = res {
                failed = Some(anyhow::anyhow!("node {id} stopped: {e}"));
            }
        }
    }
    seeding.abort();
    let _ = stop_tx.send(());
    for n in nodes {
        if let Ok((id, Err(e))) = n.await {
            eprintln!("node {id}: {e}");
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The simulated household of the dev cluster: devices on the in-process simulator bus
/// (`local:dev`), shared by the three nodes like a real device reachable from every hub.
fn demo_devices() -> Vec<hearth_core::intent::Device> {
    use hearth_core::intent::{Adapter, Device, Location};
    let dev = |id: &str,
               name: &str,
               loc: &str,
               caps: &[(&str, &[&str])],
               sensors: &[&str],
               tags: &[&str],
               emergency: bool| Device {
        id: id.into(),
        name: name.into(),
        location: Location::parse("location", loc)
            .unwrap_or_else(|e| panic!("demo device location: {e}")),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        sensors: sensors.iter().map(|s| s.to_string()).collect(),
        actuators: caps
            .iter()
            .map(|(c, st)| (c.to_string(), st.iter().map(|s| s.to_string()).collect()))
            .collect(),
        emergency_capable: emergency,
        emergency_actions: Default::default(),
        adapter: Adapter::Sim {
            address: "local:dev".into(),
        },
    };
    vec![
        dev(
            "kitchen-siren",
            "Kitchen siren",
            "home/kitchen",
            &[("siren", &["on", "off"])],
            &[],
            &["noisy"],
            true,
        ),
        dev(
            "kitchen-light",
            "Kitchen light",
            "home/kitchen",
            &[("light", &["on", "off", "flash"])],
            &[],
            &[],
            false,
        ),
        dev(
            "smoke-sensor",
            "Kitchen smoke sensor",
            "home/kitchen",
            &[],
            &["smoke"],
            &[],
            false,
        ),
        dev(
            "front-door",
            "Front door lock",
            "home/hall",
            &[("lock", &["locked", "unlocked"])],
            &[],
            &["escape_route"],
            true,
        ),
        dev(
            "hall-screen",
            "Hall screen",
            "home/hall",
            &[("notifier", &["message", "alert"])],
            &[],
            &[],
            false,
        ),
        dev(
            "garden-light",
            "Garden light",
            "garden",
            &[("light", &["on", "off", "flash"])],
            &[],
            &[],
            false,
        ),
    ]
}

/// Registers the demo devices once a leader serves (retrying until then).
async fn seed_devices(c: &crate::cli::Client, addr: &str) -> anyhow::Result<()> {
    let mut client = hearth_proto::v1::devices_client::DevicesClient::new(c.channel(addr)?);
    for d in demo_devices() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match client.register(hearth_node::api::device_to_pb(&d)).await {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for a leader to register demo devices");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => anyhow::bail!("registering {}: {}", d.id, e.message()),
            }
        }
    }
    crate::cli::out(format_args!(
        "registered {} simulated devices (hearth device list)",
        demo_devices().len()
    ));
    Ok(())
}
