//! Command-line parsing and the client commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "Hearth: a quorum-replicated hub whose Raft log is a hash-chained audit log"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// The cluster CA certificate (pki/ca.pem): talk TLS to nodes and check they are the
    /// cluster's. Default: $HEARTH_CA. Without it, plain text (clusters with insecure = true).
    #[arg(long, global = true, env = "HEARTH_CA")]
    pub ca: Option<PathBuf>,
    /// A file holding the client token (pki/admin.token, or one from `hearth token add`).
    /// Default: $HEARTH_TOKEN_FILE; $HEARTH_TOKEN may hold the token itself.
    #[arg(long, global = true, env = "HEARTH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node from a config file.
    Serve {
        #[arg(long, short, required_unless_present = "check_config")]
        config: Option<PathBuf>,
        /// Check FILE as a start would (fields, TLS files and their modes, tokens file, data
        /// directory), print every problem, exit non-zero if there is one; start nothing.
        #[arg(long, value_name = "FILE", conflicts_with = "config")]
        check_config: Option<PathBuf>,
    },
    /// Run a local cluster of two hubs and a witness on loopback (data in a temporary folder).
    Dev {
        /// Keep data and configs here instead of a temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Ports base, base+1, base+2.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
        /// three: two hubs and a witness; two: two hubs (assisted failover); one: a single hub.
        #[arg(long, value_enum, default_value = "three")]
        topology: crate::dev::Topology,
        /// Plain text and no client tokens (default: mTLS and tokens from a fresh pki/).
        #[arg(long)]
        insecure: bool,
    },
    /// Create the cluster CA, node certificates and the first admin token (or add to them).
    InitPki {
        /// Directory for the files (reused if it exists: the CA is kept).
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// A node id to issue a certificate for (repeat: --node 1 --node 2 --node 3).
        #[arg(long = "node", required = true)]
        nodes: Vec<u64>,
        /// Issue the named nodes' certificates again (rotation), with the same CA.
        #[arg(long)]
        renew: bool,
    },
    /// Add, revoke and list client tokens (stored hashed; nodes re-read the file).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Inspect the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Read, export and verify the audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Submit, explain, follow and approve intents.
    Intent {
        #[command(subcommand)]
        command: crate::domain_cli::IntentCmd,
    },
    /// Register and list devices.
    Device {
        #[command(subcommand)]
        command: crate::domain_cli::DeviceCmd,
    },
    /// Apply and show policies and intent classes.
    Policy {
        #[command(subcommand)]
        command: crate::domain_cli::PolicyCmd,
    },
    /// Measure Hearth: intent → actuation latency, or Hearth against etcd side by side.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Run a standalone simulated device (gRPC, and HTTP with --http) that journals every command.
    DeviceSim {
        #[arg(long, default_value = "127.0.0.1:7301")]
        listen: String,
        #[arg(long)]
        http: Option<String>,
        /// Append every command and reply to this JSON-lines file.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Also serve as an MQTT device through this broker (host:port) …
        #[arg(long, requires = "topic")]
        mqtt: Option<String>,
        /// … on this topic (commands on TOPIC/command, acks on TOPIC/ack).
        #[arg(long)]
        topic: Option<String>,
        /// MQTT login (the device's own account in the broker's ACL) …
        #[arg(long, requires = "mqtt_password_file")]
        mqtt_user: Option<String>,
        /// … with the password in this file (first line).
        #[arg(long, requires = "mqtt_user")]
        mqtt_password_file: Option<PathBuf>,
        /// TLS to the broker, trusting this CA (PEM).
        #[arg(long)]
        mqtt_ca: Option<PathBuf>,
        /// The key this device shares with the hubs (first line): its acks carry a MAC.
        #[arg(long)]
        mqtt_ack_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a token and print it once; only its SHA-256 goes into the file.
    Add {
        #[arg(long, default_value = "pki/tokens.toml")]
        file: PathBuf,
        /// The principal's name, as audit entries will show it.
        #[arg(long)]
        name: String,
        /// agent, operator or admin.
        #[arg(long)]
        role: String,
        /// May claim urgency emergency (agents may not unless given this).
        #[arg(long, conflicts_with = "no_emergency")]
        emergency: bool,
        /// May not claim an emergency (operators and admins may by default).
        #[arg(long)]
        no_emergency: bool,
        /// Intent classes it may use, repeatable (default: all).
        #[arg(long = "class", value_name = "CLASS")]
        classes: Vec<String>,
        /// Locations it may address (and what lies under them), repeatable (default: all).
        #[arg(long = "location", value_name = "PATH")]
        locations: Vec<String>,
    },
    /// Remove a token (nodes stop accepting it within a second of seeing the file).
    Revoke {
        #[arg(long, default_value = "pki/tokens.toml")]
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List names and roles.
    List {
        #[arg(long, default_value = "pki/tokens.toml")]
        file: PathBuf,
    },
}

impl Command {
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Serve { .. } | Command::Dev { .. } | Command::DeviceSim { .. }
        )
    }

    pub fn is_compare(&self) -> bool {
        matches!(
            self,
            Command::Bench {
                command: BenchCmd::Compare(_)
            }
        )
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Address of any node's gRPC port; several, comma-separated, to use the first that
    /// answers.
    #[arg(long, env = "HEARTH_ADDR", default_value = "127.0.0.1:7101")]
    pub addr: String,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Submit intents through the public API and time them until the device applies them.
    Intents {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 7401)]
        base_port: u16,
    },
    /// Hearth against etcd on this machine, in one run: writes at 1/16/64 clients, failover
    /// after kill -9 of the leader, and Hearth-only rows (intents, audit verify, restart,
    /// witness footprint). Needs the etcd server binary (Debian: etcd-server).
    Compare(crate::bench_compare::CompareArgs),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// A table of every member: role, state, term, log, chain head, leader, reachability.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Add a node under a new, never-used id (learner first, voter once caught up).
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
        /// The new node's advertised gRPC address.
        #[arg(long = "node-addr")]
        node_addr: String,
        /// hub or witness
        #[arg(long, default_value = "hub")]
        role: String,
    },
    /// Remove a voter (refused for the leader itself and when the rest would have no quorum).
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
    },
    /// Replace a (dead) voter by a new node under a new id: add it, then remove the old one.
    Replace {
        #[command(flatten)]
        target: Target,
        /// The voter to replace.
        #[arg(long)]
        old: u64,
        /// The new node's id (never used before in this cluster).
        #[arg(long)]
        id: u64,
        /// The new node's advertised gRPC address.
        #[arg(long = "node-addr")]
        node_addr: String,
        /// hub or witness
        #[arg(long, default_value = "hub")]
        role: String,
    },
    /// Hand leadership to the named hub.
    Transfer {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        to: u64,
    },
    /// Two hubs without a witness: make the hub at --addr a one-node cluster after its peer
    /// is lost. Only from PEER_DOWN (see `cluster status`), or with --force after checking by
    /// hand. The act is written into the chain with the operator, reason and last entry.
    Promote {
        #[command(flatten)]
        target: Target,
        /// Who is doing this (recorded in the chain).
        #[arg(long)]
        operator: String,
        /// Why (recorded in the chain).
        #[arg(long)]
        reason: String,
        /// Promote from UNCERTAIN too (never while the peer answers, nor while the hub holds
        /// evidence that its peer is alive or ahead: the refusal names it).
        #[arg(long)]
        force: bool,
    },
    /// Restart the node at --addr in place (a leader hands over first) and wait until it is back.
    /// The request is recorded in the chain first.
    Restart {
        #[command(flatten)]
        target: Target,
        /// Who asks (recorded in the chain).
        #[arg(long, default_value = "operator")]
        operator: String,
    },
    /// Restart every member one at a time, followers first, each after the previous caught up.
    RollingRestart {
        #[command(flatten)]
        target: Target,
        /// Who asks (recorded in the chain).
        #[arg(long, default_value = "operator")]
        operator: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The last entries of the chain.
    Tail {
        #[command(flatten)]
        target: Target,
        #[arg(long, short = 'n', default_value_t = 20)]
        count: u32,
    },
    /// Write the chain in the export format (docs/AUDIT-FORMAT.md).
    Export {
        #[command(flatten)]
        target: Target,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify the chain of a live node, of an export file (--file or EXPORTFILE), or of a
    /// stopped node's data directory (--data-dir; e.g. a node that refuses to start). With
    /// --checkpoint, an export file is also proved against signed checkpoints kept off the
    /// cluster (docs/AUDIT-FORMAT.md).
    Verify {
        #[command(flatten)]
        target: Target,
        #[arg(long, conflicts_with_all = ["data_dir", "export"])]
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "export")]
        data_dir: Option<PathBuf>,
        /// The export file (the same as --file).
        #[arg(value_name = "EXPORTFILE")]
        export: Option<PathBuf>,
        /// A checkpoint file (`audit checkpoint export`); repeat for several. Every checkpoint
        /// must be signed validly and match the export at its index.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// Trust only these Ed25519 public keys (64 lower-case hex digits; repeatable): each
        /// checkpoint needs a signature by one of them. Without it, the keys written in the
        /// checkpoint file are trusted, i.e. the file itself.
        #[arg(long = "trust-key", value_name = "HEX")]
        trust_keys: Vec<String>,
    },
    /// Signed checkpoints of the chain: sign one now, or export a hub's checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCmd,
    },
    /// Append an operator's test record (until intents exist).
    Append {
        #[command(flatten)]
        target: Target,
        text: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckpointCmd {
    /// The hub at --addr signs a checkpoint of its chain head now, cosigned by the witness if
    /// the cluster has one.
    Now {
        #[command(flatten)]
        target: Target,
    },
    /// Write the checkpoints the node at --addr stored, in the text format of
    /// docs/AUDIT-FORMAT.md. Keep the file off the cluster.
    Export {
        #[command(flatten)]
        target: Target,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// Writes to standard output, ignoring a closed pipe (`hearth dev | head`): for servers, which
/// must go on to stop gracefully; client commands end quietly on SIGPIPE instead.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}

/// One line on standard output for a client command (the `outln!` macro). A closed pipe ends
/// the process as SIGPIPE ends `cat` — only after the write to standard output failed, never
/// on a socket write; any other failure to write is said on standard error (exit code 1),
/// never a panic.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{args}").and_then(|()| o.flush()) {
        stdout_failed(e);
    }
}

/// Standard output could not be written: ends the process (see [`stdout_line`]).
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        #[cfg(unix)]
        // SAFETY: restores the default action of SIGPIPE and raises it on this thread; the
        // process ends there, as `cat` does on a closed pipe.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
        std::process::exit(141);
    }
    eprintln!("hearth: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// Resolves on Ctrl-C, SIGTERM (`docker stop`, systemd) or SIGHUP (the terminal closed): each
/// stops the node gracefully, handing leadership over first.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                tracing::info!("stop signal received: stopping gracefully");
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGHUP; Ctrl-C only")
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    set_client(ClientSettings::from_args(
        args.ca.as_deref(),
        args.token_file.as_deref(),
    )?);
    match args.command {
        Command::InitPki { dir, nodes, renew } => {
            let r = hearth_node::pki::init_pki(&dir, &nodes, renew)?;
            if r.created_ca {
                outln!(
                    "created the cluster CA: {}/ca.pem (key ca.key, mode 0600)",
                    dir.display()
                );
            }
            for id in &r.issued {
                outln!(
                    "issued node {id}: {0}/node-{id}.pem, {0}/node-{id}.key (0600)",
                    dir.display()
                );
            }
            for id in &r.kept {
                outln!("kept node {id}'s certificate (--renew issues a new one)");
            }
            if let Some(t) = &r.admin_token {
                outln!(
                    "first admin token: {} (0600; its SHA-256 is in {}/tokens.toml)",
                    t.display(),
                    dir.display()
                );
            }
            outln!(
                "copy ca.pem, node-N.pem, node-N.key and tokens.toml to node N and set [tls] and [auth] \
                 in its config; clients: export HEARTH_CA={0}/ca.pem HEARTH_TOKEN_FILE={0}/admin.token",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command } => {
            match command {
                TokenCmd::Add {
                    file,
                    name,
                    role,
                    emergency,
                    no_emergency,
                    classes,
                    locations,
                } => {
                    let role = hearth_node::auth::ClientRole::parse(&role)
                        .with_context(|| format!("role {role:?}: use agent, operator or admin"))?;
                    let limits = hearth_node::pki::TokenLimits {
                        emergency: (emergency || no_emergency).then_some(emergency),
                        classes: (!classes.is_empty()).then_some(classes),
                        locations: (!locations.is_empty()).then_some(locations),
                    };
                    let may_claim = limits
                        .emergency
                        .unwrap_or(role >= hearth_node::auth::ClientRole::Operator);
                    let t = hearth_node::pki::add_token_with(&file, &name, role, limits)?;
                    if !may_claim {
                        eprintln!(
                            "{name:?} may not claim an emergency (give it --emergency if it is, say, a smoke detector)"
                        );
                    }
                    eprintln!(
                        "token for {name:?} ({}) added to {}; shown once, keep it secret:",
                        role.name(),
                        file.display()
                    );
                    outln!("{t}");
                }
                TokenCmd::Revoke { file, name } => {
                    hearth_node::pki::revoke_token(&file, &name)?;
                    outln!("revoked {name:?} in {}", file.display());
                }
                TokenCmd::List { file } => {
                    for t in hearth_node::auth::TokensFile::load(&file)?.token {
                        let g = t.grants();
                        let all = |v: &Option<Vec<String>>| {
                            v.as_ref().map_or("all".to_string(), |v| v.join(","))
                        };
                        outln!(
                            "{:<24} {:<9} emergency={} classes={} locations={}",
                            t.name,
                            t.role.name(),
                            if g.emergency { "yes" } else { "no" },
                            all(&t.classes),
                            all(&t.locations)
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            check_config: Some(file),
            ..
        } => {
            let problems = hearth_node::config::check_config_file(&file);
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            if problems.is_empty() {
                outln!("{}: OK", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        Command::Serve { config, .. } => {
            let config = config.context("--config FILE is required")?;
            let cfg = hearth_node::NodeConfig::load(&config)?;
            hearth_node::server::serve(cfg, stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            dir,
            base_port,
            topology,
            insecure,
        } => {
            crate::dev::run(dir, base_port, topology, insecure).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster { command } => match command {
            ClusterCmd::Status { target } => cluster_status(&target.addr).await,
            ClusterCmd::Add {
                target,
                id,
                node_addr,
                role,
            } => {
                let mut c = ClusterClient::new(channel(&target.addr)?);
                let r = c
                    .add_member(pb::AddMemberRequest {
                        id,
                        addr: node_addr,
                        role,
                    })
                    .await
                    .map_err(|s| rpc_err(&target.addr, s))?
                    .into_inner();
                outln!(
                    "node {id} is a voter; membership entry at index {}; voters {:?}",
                    r.index, r.voters
                );
                Ok(ExitCode::SUCCESS)
            }
            ClusterCmd::Remove { target, id } => {
                let mut c = ClusterClient::new(channel(&target.addr)?);
                let r = c
                    .remove_member(pb::RemoveMemberRequest { id })
                    .await
                    .map_err(|s| rpc_err(&target.addr, s))?
                    .into_inner();
                outln!(
                    "node {id} removed; membership entry at index {}; voters {:?}",
                    r.index, r.voters
                );
                Ok(ExitCode::SUCCESS)
            }
            ClusterCmd::Replace {
                target,
                old,
                id,
                node_addr,
                role,
            } => crate::topology_cli::replace(&target.addr, old, id, node_addr, role).await,
            ClusterCmd::Transfer { target, to } => {
                crate::topology_cli::transfer(&target.addr, to).await
            }
            ClusterCmd::Promote {
                target,
                operator,
                reason,
                force,
            } => crate::topology_cli::promote(&target.addr, operator, reason, force).await,
            ClusterCmd::Restart { target, operator } => {
                crate::topology_cli::restart(&target.addr, &operator).await
            }
            ClusterCmd::RollingRestart { target, operator } => {
                crate::topology_cli::rolling_restart(&target.addr, &operator).await
            }
        },
        Command::Bench {
            command:
                BenchCmd::Intents {
                    count,
                    concurrency,
                    base_port,
                },
        } => {
            crate::bench::intents(count, concurrency, base_port).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: BenchCmd::Compare(a),
        } => {
            crate::bench_compare::compare(a).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Intent { command } => crate::domain_cli::intent(command).await,
        Command::Device { command } => crate::domain_cli::device(command).await,
        Command::Policy { command } => crate::domain_cli::policy(command).await,
        Command::DeviceSim {
            listen,
            http,
            journal,
            mqtt,
            topic,
            mqtt_user,
            mqtt_password_file,
            mqtt_ca,
            mqtt_ack_key_file,
        } => {
            let login = crate::domain_cli::SimMqttLogin {
                user: mqtt_user.zip(mqtt_password_file),
                ca: mqtt_ca,
                ack_key_file: mqtt_ack_key_file,
            };
            crate::domain_cli::device_sim(listen, http, journal, mqtt.zip(topic), login).await
        }
        Command::Audit { command } => match command {
            AuditCmd::Tail { target, count } => tail(&target.addr, count).await,
            AuditCmd::Export { target, out } => export(&target.addr, out).await,
            AuditCmd::Verify {
                file,
                export: positional,
                checkpoints,
                trust_keys,
                data_dir,
                target,
            } => match (file.or(positional), data_dir) {
                (Some(f), _) => verify_file(&f, &checkpoints, &trust_keys),
                (None, _) if !checkpoints.is_empty() || !trust_keys.is_empty() => {
                    anyhow::bail!(
                        "--checkpoint and --trust-key prove an export file: give it as EXPORTFILE \
                         (hearth audit export --out FILE writes one)"
                    )
                }
                (None, Some(d)) => verify_data_dir(&d),
                (None, None) => verify_live(&target.addr).await,
            },
            AuditCmd::Checkpoint {
                command: CheckpointCmd::Now { target },
            } => checkpoint_now(&target.addr).await,
            AuditCmd::Checkpoint {
                command: CheckpointCmd::Export { target, out },
            } => checkpoint_export(&target.addr, out).await,
            AuditCmd::Append { target, text } => append(&target.addr, text).await,
        },
    }
}

/// How this client reaches nodes: the cluster CA (TLS) and its token.
#[derive(Clone, Default)]
pub struct ClientSettings {
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
}

impl ClientSettings {
    pub fn from_args(
        ca: Option<&std::path::Path>,
        token_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let ca_pem = match ca {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read the CA certificate {}", p.display()))?,
            ),
            None => None,
        };
        let token = match token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("HEARTH_TOKEN")
                .ok()
                .map(|t| t.trim().to_string()),
        };
        Ok(Self { ca_pem, token })
    }
}

static CLIENT: std::sync::RwLock<Option<ClientSettings>> = std::sync::RwLock::new(None);

/// Sets how `channel` reaches nodes (from the command line, or by `hearth dev` for itself).
pub fn set_client(s: ClientSettings) {
    *CLIENT.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
}

fn client() -> ClientSettings {
    CLIENT
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Adds the client's token to every call.
#[derive(Clone)]
pub struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type ApiChannel = tonic::service::interceptor::InterceptedService<Channel, Credentials>;

/// `--addr` / `HEARTH_ADDR` may list several nodes (`pi.local:7101,laptop.local:7101`): the
/// client uses the first that accepts a connection, so a command still works while one node
/// is down. The choice is kept for the rest of the command.
pub fn pick_node(addrs: &str) -> String {
    static PICKED: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);
    let list: Vec<&str> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if list.len() <= 1 {
        return list.first().copied().unwrap_or(addrs).to_string();
    }
    let mut g = PICKED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((from, to)) = &*g
        && from == addrs
    {
        return to.clone();
    }
    let connect = env_ms("HEARTH_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS);
    let reachable = list.iter().find(|a| {
        use std::net::ToSocketAddrs;
        a.to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|sa| std::net::TcpStream::connect_timeout(&sa, connect).is_ok())
    });
    let chosen = match reachable {
        Some(a) => {
            if *a != list[0] {
                let _ = writeln_err(format_args!(
                    "note: {} does not answer; using {a}",
                    list[..list.iter().position(|x| x == a).unwrap_or(0)].join(", ")
                ));
            }
            a.to_string()
        }
        None => list[0].to_string(),
    };
    *g = Some((addrs.to_string(), chosen.clone()));
    chosen
}

fn writeln_err(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{args}")
}

/// How long a client waits to connect to a node (TCP and TLS), and for one answer.
/// `HEARTH_CONNECT_TIMEOUT_MS` and `HEARTH_TIMEOUT_MS` change them.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
const REQUEST_TIMEOUT_MS: u64 = 30_000;

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

/// Every client call has a deadline: connecting (TCP and the TLS handshake) within the
/// connect timeout, each answer within the request timeout (a stopped node, SIGSTOP, answers
/// nothing: the call ends with DEADLINE_EXCEEDED naming it). Streams (`--watch`) are kept by
/// HTTP/2 pings: a node that stops answering them is dropped within about 15 s.
fn client_endpoint(
    addr: &str,
    s: &ClientSettings,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let connect = env_ms("HEARTH_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS);
    let scheme = if s.ca_pem.is_some() { "https" } else { "http" };
    let mut e = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(connect)
        .timeout(env_ms("HEARTH_TIMEOUT_MS", REQUEST_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(ca) = &s.ca_pem {
        e = e.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name(hearth_cluster::tls::CLUSTER_NAME)
                // The handshake is part of connecting: a stopped node never finishes it.
                .timeout(connect),
        )?;
    }
    Ok(e)
}

/// A channel to a node's public API: TLS against the cluster CA when one is set, with the token.
pub fn channel(addr: &str) -> anyhow::Result<ApiChannel> {
    let addr = &pick_node(addr);
    let s = client();
    let ch = client_endpoint(addr, &s)
        .map(|e| e.connect_lazy())
        .with_context(|| format!("{addr:?} is not a valid node address"))?;
    if s.token.is_some() && s.ca_pem.is_none() {
        // Over plain text the token would cross the network readable by anyone (even to a
        // node that speaks TLS: the request headers leave before the node can refuse them).
        anyhow::bail!(
            "refusing to send a token in plain text: pass --ca pki/ca.pem (or set HEARTH_CA) \
             so the node is reached over TLS"
        );
    }
    let header = match &s.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .context("the token holds characters a header cannot carry")?,
        ),
        None => None,
    };
    Ok(tonic::service::interceptor::InterceptedService::new(
        ch,
        Credentials(header),
    ))
}

pub fn rpc_err(addr: &str, s: tonic::Status) -> anyhow::Error {
    let addr = &pick_node(addr);
    let hint = if client().ca_pem.is_none() && s.message().contains("h2 protocol error") {
        " — the node probably speaks TLS: pass --ca pki/ca.pem or set HEARTH_CA"
    } else {
        ""
    };
    let hint = if s.code() == tonic::Code::DeadlineExceeded && hint.is_empty() {
        " — the node did not answer in time (stopped, or overloaded); HEARTH_TIMEOUT_MS sets the deadline"
    } else {
        hint
    };
    anyhow::anyhow!("node {addr}: {} ({:?}){hint}", s.message(), s.code())
}

async fn node_status(addr: &str) -> Result<pb::NodeStatus, tonic::Status> {
    let mut c = ClusterClient::new(
        channel(addr).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?,
    );
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(1500));
    c.status(req).await.map(|r| r.into_inner())
}

fn short(h: &str) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        h.chars().take(12).collect()
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

async fn cluster_status(addr: &str) -> anyhow::Result<ExitCode> {
    let first = node_status(addr).await.map_err(|s| rpc_err(addr, s))?;
    let mut members: Vec<(u64, String, String)> = first
        .members
        .iter()
        .map(|m| (m.id, m.addr.clone(), m.role.clone()))
        .collect();
    if members.is_empty() {
        members.push((first.node_id, addr.to_string(), first.role.clone()));
    }
    outln!(
        "{:<5} {:<8} {:<10} {:>5} {:>10} {:>8} {:<13} {:>6}  {:<10} ADDRESS",
        "NODE",
        "ROLE",
        "STATE",
        "TERM",
        "LAST-INDEX",
        "APPLIED",
        "CHAIN-HEAD",
        "LEADER",
        "REACHABLE"
    );
    let mut reachable = 0;
    let mut notes: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    let mut leaders = std::collections::BTreeSet::new();
    // The leading node's own view: since when its quorum last acknowledged it.
    let mut leader_ack: Option<(u64, Option<u64>)> = None;
    let mut chain = Vec::new();
    for (id, maddr, role) in &members {
        match node_status(maddr).await {
            // It answers, but its Raft core is dead: it is down (and about to exit).
            Ok(s)
                if s.health
                    .as_ref()
                    .is_some_and(|h| !h.core_stopped.is_empty()) =>
            {
                let why = s.health.map(|h| h.core_stopped).unwrap_or_default();
                outln!(
                    "{:<5} {:<8} {:<10} {:>5} {:>10} {:>8} {:<13} {:>6}  {:<10} {} (Raft core stopped: {why})",
                    s.node_id,
                    s.role,
                    "Stopped",
                    s.term,
                    opt(s.last_index),
                    opt(s.applied_index),
                    short(&s.head_hash),
                    "-",
                    "NO",
                    maddr
                );
            }
            Ok(s) => {
                reachable += 1;
                if let Some(h) = &s.health {
                    if h.clock == "OFF" {
                        notes.push(format!(
                            "node {}: CLOCK_OFF — {}",
                            s.node_id, h.clock_detail
                        ));
                    }
                    if !h.disk_warning.is_empty() {
                        notes.push(format!("node {}: DISK_LOW — {}", s.node_id, h.disk_warning));
                    }
                }
                if s.node_state() == pb::NodeState::Leader {
                    leader_ack = Some((s.node_id, s.millis_since_quorum_ack));
                }
                keys.push((s.node_id, s.role.clone(), s.checkpoint_key.clone()));
                warnings.extend(s.device_warnings.iter().map(|w| (s.node_id, w.clone())));
                if !s.chain_fenced.is_empty() {
                    chain.push(format!(
                        "CHAIN FENCED: node {}: {}",
                        s.node_id, s.chain_fenced
                    ));
                }
                for d in &s.chain_disagreements {
                    chain.push(format!(
                        "CHAIN DISAGREEMENT: node {} finds node {}'s chain different at index {}",
                        s.node_id, d.node_id, d.index
                    ));
                }
                if let Some(l) = s.leader {
                    leaders.insert(l);
                }
                outln!(
                    "{:<5} {:<8} {:<10} {:>5} {:>10} {:>8} {:<13} {:>6}  {:<10} {}",
                    s.node_id,
                    s.role,
                    s.state,
                    s.term,
                    opt(s.last_index),
                    opt(s.applied_index),
                    short(&s.head_hash),
                    opt(s.leader),
                    "yes",
                    maddr
                );
            }
            Err(e) => outln!(
                "{:<5} {:<8} {:<10} {:>5} {:>10} {:>8} {:<13} {:>6}  {:<10} {} ({})",
                id,
                role,
                "?",
                "-",
                "-",
                "-",
                "-",
                "-",
                "NO",
                maddr,
                e.message()
            ),
        }
    }
    let n = members.len();
    outln!();
    for note in &notes {
        outln!("{note}");
    }
    match leaders.len() {
        0 => outln!("no leader known: writes fail with NO_QUORUM until a majority can elect one"),
        1 => outln!(
            "leader: node {}",
            leaders.iter().next().copied().unwrap_or_default()
        ),
        _ => outln!(
            "nodes name different leaders {leaders:?}: an election is settling (only one can commit)"
        ),
    }
    outln!(
        "reachable from here: {reachable} of {n}; a quorum needs {}",
        n / 2 + 1
    );
    if n == 1 {
        outln!("single node: nothing can take over if it fails");
    }
    if !first.assist_state.is_empty() {
        outln!(
            "two hubs, no witness (assisted failover), as seen by node {}: {}{} — {}",
            first.node_id,
            first.assist_state,
            if first.assist_destructive {
                " (DESTRUCTIVE)"
            } else {
                ""
            },
            first.assist_detail
        );
        for c in &first.assist_checks {
            outln!("  check: {c}");
        }
    }
    for r in &first.refusals {
        outln!("REFUSED by node {}: {}", r.by, r.message);
    }
    for (id, w) in &warnings {
        outln!("DEVICE UNREACHABLE from node {id}: {w}");
    }
    for line in &chain {
        outln!("{line}");
    }
    for (id, role, key) in keys.iter().filter(|(_, _, k)| !k.is_empty()) {
        outln!("checkpoint key of node {id} ({role}): {key}");
    }
    // Exit non-zero when the cluster cannot commit now: no single leader, or a leader whose
    // quorum has not acknowledged it for longer than an election would take.
    let no_quorum = match (leaders.len(), leader_ack) {
        (1, Some((_, Some(ms)))) if ms > QUORUM_STALE_MS => Some(format!(
            "the leader's quorum last acknowledged it {ms} ms ago"
        )),
        (1, _) => None,
        (0, _) => Some("no leader".to_string()),
        _ => Some("no single leader".to_string()),
    };
    if let Some(why) = no_quorum {
        outln!("NO QUORUM ({why}): writes and intents fail until a majority elects a leader");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A leader whose quorum has been silent longer than this is reported as without a quorum.
const QUORUM_STALE_MS: u64 = 5_000;

async fn tail(addr: &str, count: u32) -> anyhow::Result<ExitCode> {
    let mut c = AuditClient::new(channel(addr)?);
    let r = c
        .tail(pb::TailRequest { count })
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    outln!(
        "{:>8} {:>5} {:>6}  {:<13} ENTRY",
        "INDEX", "TERM", "LEADER", "HASH"
    );
    for e in r.entries {
        outln!(
            "{:>8} {:>5} {:>6}  {:<13} {}",
            e.index,
            e.term,
            e.leader,
            short(&e.hash),
            e.kind
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(addr: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    use std::io::Write;
    let mut c = AuditClient::new(channel(addr)?);
    let mut stream = c
        .export(pb::ExportRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        for l in chunk.map_err(|s| rpc_err(addr, s))?.lines {
            writeln!(w, "{l}")?;
            lines += 1;
        }
    }
    w.flush()?;
    if let Some(p) = out {
        eprintln!(
            "wrote {} entries to {}",
            lines.saturating_sub(1),
            p.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_file(
    path: &PathBuf,
    checkpoint_files: &[PathBuf],
    trust_keys: &[String],
) -> anyhow::Result<ExitCode> {
    use hearth_core::checkpoint::{Trust, parse_file, parse_hex, verify_export_against};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !trust_keys.is_empty() && checkpoint_files.is_empty() {
        anyhow::bail!("--trust-key needs --checkpoint FILE: keys are checked on checkpoints");
    }
    let mut trust = Trust::default();
    for k in trust_keys {
        trust
            .pinned
            .insert(parse_hex::<32>("--trust-key", k).map_err(|e| anyhow::anyhow!("{e}: {k:?}"))?);
    }
    let mut code = ExitCode::SUCCESS;
    for cf in checkpoint_files {
        let ctext =
            std::fs::read_to_string(cf).with_context(|| format!("reading {}", cf.display()))?;
        let cps = parse_file(&ctext)
            .map_err(|e| anyhow::anyhow!("{} is not a valid checkpoint file: {e}", cf.display()))?;
        let r = verify_export_against(text.lines(), &cps, &trust)
            .with_context(|| format!("{} is not a Hearth audit export", path.display()))?;
        match &r.export.failure {
            Some(f) => outln!(
                "FAILED at index {}: {f} ({} entries before it verified)",
                f.index(),
                r.export.entries
            ),
            None => outln!(
                "OK: {} entries ({}..={}) from node {} verify; head {}",
                r.export.entries,
                opt(r.export.first_index),
                opt(r.export.last_index),
                r.export.node,
                hex::encode(r.export.head)
            ),
        }
        match &r.failure {
            None => outln!(
                "OK: {} checkpoint(s) of {} ({} signatures valid{}) match the export",
                r.matched,
                cf.display(),
                cps.iter()
                    .map(|c| 1 + usize::from(c.witness.is_some()))
                    .sum::<usize>(),
                if trust.pinned.is_empty() {
                    ", keys as written in the file"
                } else {
                    ", each signed by a trusted key"
                }
            ),
            Some(f) => outln!("FAILED: {} ({f})", cf.display()),
        }
        if !r.ok() {
            code = ExitCode::from(1);
        }
    }
    if !checkpoint_files.is_empty() {
        return Ok(code);
    }
    let r = hearth_core::export::verify_export(text.lines())
        .with_context(|| format!("{} is not a Hearth audit export", path.display()))?;
    match r.failure {
        None => {
            outln!(
                "OK: {} entries ({}..={}) from node {} verify; head {}",
                r.entries,
                opt(r.first_index),
                opt(r.last_index),
                r.node,
                hex::encode(r.head)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            outln!(
                "FAILED at index {}: {f} ({} entries before it verified)",
                f.index(),
                r.entries
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn verify_data_dir(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match hearth_node::node::verify_data_dir(dir) {
        Ok(r) => match r.failure {
            None => {
                outln!(
                    "OK: {} entries verify; head {}",
                    r.checked,
                    r.head
                        .map(|(i, h)| format!("{i} {}", hex::encode(h)))
                        .unwrap_or_else(|| "-".into())
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(f) => {
                outln!("FAILED at index {}: {f}", f.index());
                Ok(ExitCode::from(1))
            }
        },
        Err(hearth_node::StartError::Store(hearth_store::StoreError::CorruptLog {
            index,
            reason,
            path,
        })) => {
            outln!(
                "FAILED at index {index}: the Raft log {} is corrupt ({reason})",
                path.display()
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn verify_live(addr: &str) -> anyhow::Result<ExitCode> {
    let mut c = AuditClient::new(channel(addr)?);
    let r = c
        .verify(pb::VerifyRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    if r.ok {
        outln!(
            "OK: {} entries verify; head {} {}",
            r.checked,
            opt(r.head_index),
            r.head_hash
        );
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("FAILED at index {}: {}", opt(r.first_bad_index), r.reason);
        Ok(ExitCode::from(1))
    }
}

async fn checkpoint_now(addr: &str) -> anyhow::Result<ExitCode> {
    let mut c = AuditClient::new(channel(addr)?);
    let r = c
        .checkpoint(pb::CheckpointRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    outln!(
        "{} checkpoint at index {} head {}; {}",
        if r.fresh { "signed" } else { "last" },
        r.index,
        r.head,
        r.witness
    );
    outln!("{}", r.line);
    Ok(if r.fork {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn checkpoint_export(addr: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    let mut c = AuditClient::new(channel(addr)?);
    let mut stream = c
        .export_checkpoints(pb::ExportCheckpointsRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for l in chunk.map_err(|s| rpc_err(addr, s))?.lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    // Check what the node sent before keeping it.
    let cps = hearth_core::checkpoint::parse_file(&text)
        .map_err(|e| anyhow::anyhow!("node {addr} sent an invalid checkpoint file: {e}"))?;
    hearth_core::checkpoint::check_signatures(&cps, &Default::default())
        .map_err(|e| anyhow::anyhow!("node {addr} sent a bad checkpoint: {e}"))?;
    match &out {
        Some(p) => {
            use std::io::Write;
            let mut f =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            eprintln!(
                "wrote {} checkpoints ({} cosigned) to {}",
                cps.len(),
                cps.iter().filter(|c| c.witness.is_some()).count(),
                p.display()
            );
        }
        None => {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            if let Err(e) = o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
                stdout_failed(e);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn append(addr: &str, text: String) -> anyhow::Result<ExitCode> {
    let mut c = ClusterClient::new(channel(addr)?);
    let r = c
        .append_test_record(pb::AppendTestRecordRequest { text })
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    outln!(
        "committed at index {} (term {}, leader {}), chain hash {}",
        r.index, r.term, r.leader, r.hash
    );
    Ok(ExitCode::SUCCESS)
}
