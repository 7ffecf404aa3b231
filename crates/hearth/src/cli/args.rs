//! The command line: every command and its arguments (clap).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hearth_proto::v1 as pb;

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
        command: IntentCmd,
    },
    /// Register, list, show and remove devices.
    Device {
        #[command(subcommand)]
        command: DeviceCmd,
    },
    /// Apply and show policies and intent classes.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `hearth completions bash > /etc/bash_completion.d/hearth`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        #[command(flatten)]
        out: Output,
    },
}

impl Command {
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Serve { .. } | Command::Dev { .. } | Command::DeviceSim { .. }
        )
    }
}

/// How a command that reads prints what it read.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns and sentences, for a person.
    #[default]
    Text,
    /// Stable JSON objects for scripts and agents: one object, or one per line for lists that
    /// grow (audit tail, intent watch).
    Json,
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Output {
    /// text (for a person) or json (for scripts and agents).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

impl Output {
    pub fn json(self) -> bool {
        self.output == Format::Json
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
pub enum ClusterCmd {
    /// A table of every member: role, state, term, log, chain head, leader, reachability.
    Status {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        out: Output,
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
    /// Let a member whose data directory was wiped vote again under its id, once it has caught
    /// up from the cluster (admits its new data directory; an audit entry naming you).
    Rejoin {
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
    /// The last entries of the chain, one a line: time, index, principal, device, state and
    /// what happened. Entries that carry no time of their own show the time of the entry
    /// before that did, as `>=TIME` (they came later). --refused shows the calls this node
    /// refused before anything was appended (bad token, role, grant, rate limit), which are
    /// never in the chain.
    Tail {
        #[command(flatten)]
        target: Target,
        /// How many lines (the last ones that pass the filters).
        #[arg(long, short = 'n', default_value_t = 20)]
        count: u32,
        /// Keep printing new entries as they are applied (Ctrl-C stops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only entries about this device (registered, removed, re-fenced, an intent acting
        /// on it, its outcomes).
        #[arg(long)]
        device: Option<String>,
        /// Only entries by this principal or source (a token's name, an intent's source).
        #[arg(long)]
        source: Option<String>,
        /// Only entries from this time on: a duration back from now (30s, 10m, 2h, 1d), a UTC
        /// time (2026-12-01T16:40:00Z) or milliseconds since the Unix epoch.
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
        /// How many of the last entries the filters look through (at most 10000).
        #[arg(long, default_value_t = 2000)]
        scan: u32,
        /// Refused calls instead of chain entries (this node's last 1024, since it started).
        #[arg(long)]
        refused: bool,
        #[command(flatten)]
        out: Output,
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
        #[command(flatten)]
        out: Output,
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

#[derive(clap::Args, Debug, Clone)]
pub struct IntentArgs {
    /// Intent class: ensure_safety, alert_anomaly, control_access, report_status, notify, or your own.
    pub class: String,
    /// emergency | alert | warning | info
    #[arg(long, default_value = "info")]
    pub urgency: String,
    /// Where, as a path: home, home/kitchen, …
    #[arg(long)]
    pub location: String,
    #[arg(long, default_value = "")]
    pub subject: String,
    /// Extra context, repeatable: --context state=unlocked
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Idempotency key: send the same key when you retry (default: a new one).
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long, default_value = "cli")]
    pub source: String,
}

impl IntentArgs {
    pub fn request(&self, dry_run: bool) -> anyhow::Result<pb::SubmitIntentRequest> {
        let mut context = std::collections::HashMap::new();
        for kv in &self.context {
            let (k, v) = kv.split_once('=').with_context(|| {
                format!("--context {kv:?}: write KEY=VALUE, e.g. --context state=unlocked")
            })?;
            context.insert(k.to_string(), v.to_string());
        }
        let key = self.key.clone().unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("cli-{}-{nanos}", std::process::id())
        });
        Ok(pb::SubmitIntentRequest {
            class: self.class.clone(),
            urgency: self.urgency.clone(),
            subject: self.subject.clone(),
            location: self.location.clone(),
            context,
            idempotency_key: key,
            source: self.source.clone(),
            dry_run,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum IntentCmd {
    /// Submit an intent; --watch follows it until every action has an outcome.
    Send {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        intent: IntentArgs,
        #[arg(long)]
        watch: bool,
        /// Plan only: execute nothing, append nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        out: Output,
    },
    /// The plan and why each device is in or out, executing nothing.
    Explain {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        intent: IntentArgs,
        #[command(flatten)]
        out: Output,
    },
    /// Show an intent and its actions.
    Get {
        #[command(flatten)]
        target: Target,
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Follow an intent's progress.
    Watch {
        #[command(flatten)]
        target: Target,
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// The intents that wait for a person: who asked, what for (which actions on which
    /// devices, the policy), how long they have waited and until when (an agent sees its own).
    Pending {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        out: Output,
    },
    /// Approve an intent that waits for confirmation (operators and admins).
    Approve {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Why (optional), recorded in the chain.
        #[arg(long, default_value = "")]
        reason: String,
        /// The name recorded without client authentication (a token names its principal).
        #[arg(long, default_value = "operator")]
        by: String,
        #[command(flatten)]
        out: Output,
    },
    /// Deny an intent that waits for confirmation: its held actions are never sent
    /// (operators and admins).
    Deny {
        #[command(flatten)]
        target: Target,
        id: String,
        /// Why (required), recorded in the chain.
        #[arg(long)]
        reason: String,
        /// The name recorded without client authentication (a token names its principal).
        #[arg(long, default_value = "operator")]
        by: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// The registered devices.
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        out: Output,
    },
    /// One device's manifest.
    Show {
        #[command(flatten)]
        target: Target,
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Remove a device (an audited entry naming you). Its actions not yet done end CANCELLED
    /// ("device ID removed by YOU"). It can be registered again later.
    Remove {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Register (or replace) a device from a TOML or JSON manifest (docs/INTENTS.md).
    Register {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
    /// Admin: re-fence devices after the cluster was re-formed (they remember an older
    /// cluster's tokens and refuse this one's as stale). Audited: writes a chain entry, then
    /// sends each device a `hearth.refence` command under the current leadership.
    Refence {
        #[command(flatten)]
        target: Target,
        /// Device ids (or --all).
        devices: Vec<String>,
        #[arg(long)]
        all: bool,
        /// Why (goes into the chain).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Replace the policy set with the `policies` of a TOML or JSON file (docs/INTENTS.md):
    /// shows what it adds, changes and removes, then asks (or --yes).
    Apply {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
        /// Show the changes and apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply without asking (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Add one policy from a TOML or JSON file holding exactly one `[[policies]]` entry.
    Add {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
    /// Remove one policy by its id.
    Remove {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Add or replace an intent class from a TOML or JSON file.
    ApplyClass {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
    /// Print the current policies and classes as JSON (--output json: on one line, with the
    /// set's SHA-256).
    Show {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        out: Output,
    },
    /// The policies in force, one a line.
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        out: Output,
    },
}

/// `--since`: a duration back from now (`30s`, `10m`, `2h`, `1d`), a UTC time
/// (`2026-12-01T16:40:00Z`, seconds optional) or milliseconds since the Unix epoch.
pub fn parse_since(s: &str) -> Result<u64, String> {
    super::timefmt::parse_since(s, super::timefmt::now_ms())
}
