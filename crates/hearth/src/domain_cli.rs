//! `hearth intent …`, `hearth device …`, `hearth policy …`, `hearth device-sim`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_client::DevicesClient;
use hearth_proto::v1::intents_client::IntentsClient;
use hearth_proto::v1::policies_client::PoliciesClient;

use crate::cli::{Target, channel, rpc_err};

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
    fn request(&self, dry_run: bool) -> anyhow::Result<pb::SubmitIntentRequest> {
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
    },
    /// The plan and why each device is in or out, executing nothing.
    Explain {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        intent: IntentArgs,
    },
    /// Show an intent and its actions.
    Get {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Follow an intent's progress.
    Watch {
        #[command(flatten)]
        target: Target,
        id: String,
    },
    /// Approve an intent that waits for confirmation.
    Approve {
        #[command(flatten)]
        target: Target,
        id: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    List {
        #[command(flatten)]
        target: Target,
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
    /// Print the current policies and classes as JSON.
    Show {
        #[command(flatten)]
        target: Target,
    },
}

/// Reads a TOML or JSON document into JSON text.
fn document_json(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        return Ok(v.to_string());
    }
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(serde_json::to_string(&v)?)
}

/// The 1-based line of each `[[policies]]` entry's `id` in a TOML file, to point errors at
/// the household's own file rather than at the JSON sent to the node.
fn policy_lines(text: &str) -> Vec<Option<usize>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        policies: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: Option<toml::Spanned<String>>,
    }
    toml::from_str::<Doc>(text).map_or_else(
        |_| Vec::new(),
        |d| {
            d.policies
                .iter()
                .map(|e| {
                    e.id.as_ref().and_then(|s| {
                        text.get(..s.span().start)
                            .map(|before| before.matches('\n').count() + 1)
                    })
                })
                .collect()
        },
    )
}

/// A policy file read strictly: unknown fields refused with their TOML (or JSON) line,
/// every policy well-formed, ids unique. Set-level errors name the line of that policy.
fn read_policies(path: &Path) -> anyhow::Result<(Vec<hearth_core::policy::Policy>, String)> {
    use hearth_core::policy::PolicyDocument;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let doc: PolicyDocument = if json {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    let lines = if json {
        Vec::new()
    } else {
        policy_lines(&text)
    };
    let at = |field: &str| {
        let n: Option<usize> = field
            .strip_prefix("policies[")
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse().ok());
        match n.and_then(|n| lines.get(n).copied().flatten()) {
            Some(l) => format!("{}, line {l}", path.display()),
            None => path.display().to_string(),
        }
    };
    if let Err(e) = hearth_core::policy::validate_set(&doc.policies) {
        anyhow::bail!("{}: {e}", at(&e.field));
    }
    let body = serde_json::to_string(&doc)?;
    Ok((doc.policies, body))
}

/// The policies, classes and devices in force, and the SHA-256 of the policy set.
async fn in_force(
    addr: &str,
) -> anyhow::Result<(
    Vec<hearth_core::policy::Policy>,
    std::collections::BTreeMap<String, hearth_core::intent::IntentClass>,
    std::collections::BTreeMap<String, hearth_core::intent::Device>,
    String,
)> {
    #[derive(serde::Deserialize)]
    struct Shown {
        policies: Vec<hearth_core::policy::Policy>,
        classes: Vec<hearth_core::intent::IntentClass>,
    }
    let r = PoliciesClient::new(channel(addr)?)
        .show(pb::ShowPoliciesRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    let shown: Shown = serde_json::from_str(&r.json).context("the node's policy set")?;
    let devices = DevicesClient::new(channel(addr)?)
        .list(pb::ListDevicesRequest {})
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner()
        .devices;
    let mut devs = std::collections::BTreeMap::new();
    for d in &devices {
        let d = hearth_node::api::device_from_pb(d)
            .map_err(|e| anyhow::anyhow!("device {} from the node: {e}", d.id))?;
        devs.insert(d.id.clone(), d);
    }
    let classes = shown
        .classes
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    Ok((shown.policies, classes, devs, r.sha256))
}

/// Asks a person to confirm on the terminal; `false` when stdin is not one.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = write!(o, "{question} [y/N] ").and_then(|()| o.flush()) {
        crate::cli::stdout_failed(e);
    }
    drop(o);
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// Whether an intent in this state ended without doing what was asked (exit code 1).
fn unsuccessful(v: &pb::IntentView) -> bool {
    match v.status.as_str() {
        "no_action" => true,
        "done" => v
            .actions
            .iter()
            .any(|a| a.outcome != "APPLIED" && a.outcome != "ALREADY_APPLIED"),
        _ => false,
    }
}

fn print_view(v: &pb::IntentView) {
    outln!(
        "intent {} [{}] class {} urgency {} (entry {})",
        if v.id.is_empty() { "-" } else { &v.id },
        v.status,
        v.class,
        v.urgency,
        v.index
    );
    let held = v
        .actions
        .iter()
        .any(|a| a.needs_approval && a.outcome.is_empty());
    if v.needs_confirmation
        && v.approved_by.is_empty()
        && (v.status == "awaiting_approval" || (v.status == "accepted" && held))
    {
        outln!("  waits for approval: hearth intent approve {}", v.id);
    }
    for a in &v.actions {
        let outcome = if a.outcome.is_empty() && a.needs_approval && v.approved_by.is_empty() {
            "held for approval".to_string()
        } else if a.outcome.is_empty() {
            "pending".to_string()
        } else {
            a.outcome.clone()
        };
        outln!(
            "  {:<22} {:<16} {:<10} -> {:<10} {} {}",
            a.id, a.device, a.capability, a.state, outcome, a.detail
        );
    }
    for r in &v.reads {
        outln!("  read sensors of {r}");
    }
    for n in &v.notes {
        outln!("  note: {n}");
    }
    if !v.nothing_to_do.is_empty() {
        outln!("  NOTHING WILL BE DONE: {}", v.nothing_to_do);
    }
}

async fn watch(addr: &str, id: &str) -> anyhow::Result<ExitCode> {
    let mut c = IntentsClient::new(channel(addr)?);
    let mut s = c
        .watch(pb::GetIntentRequest { id: id.to_string() })
        .await
        .map_err(|s| rpc_err(addr, s))?
        .into_inner();
    let mut last = String::new();
    while let Some(ev) = s.next().await {
        let ev = ev.map_err(|s| rpc_err(addr, s))?;
        outln!("{:<18} {}", ev.stage, ev.detail);
        last = ev.stage;
    }
    Ok(if last == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn intent(cmd: IntentCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        IntentCmd::Send {
            target,
            intent,
            watch: w,
            dry_run,
        } => {
            let mut c = IntentsClient::new(channel(&target.addr)?);
            // Built once: a retry sends the same idempotency key, so it never runs twice.
            let req = intent.request(dry_run)?;
            let patience = std::time::Instant::now() + ELECTION_PATIENCE;
            let v = loop {
                match c.submit(req.clone()).await {
                    Ok(v) => break v.into_inner(),
                    Err(s) => match election_retry_after(&s) {
                        Some(wait) if std::time::Instant::now() + wait < patience => {
                            eprintln!(
                                "note: the cluster is electing a leader; sending the intent \
                                 again (same idempotency key) in {} ms",
                                wait.as_millis()
                            );
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(rpc_err(&target.addr, s)),
                    },
                }
            };
            print_view(&v);
            if v.status == "no_action" || (dry_run && !v.nothing_to_do.is_empty()) {
                return Ok(ExitCode::from(1));
            }
            if w && !dry_run {
                return watch(&target.addr, &v.id).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Explain { target, intent } => {
            let mut c = IntentsClient::new(channel(&target.addr)?);
            let v = c
                .explain(intent.request(true)?)
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            print_view(&v);
            outln!("why:");
            for d in &v.verdicts {
                outln!(
                    "  {:<16} {:<4} {}",
                    d.device,
                    if d.included { "in" } else { "out" },
                    d.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Get { target, id } => {
            let mut c = IntentsClient::new(channel(&target.addr)?);
            let v = c
                .get(pb::GetIntentRequest { id })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            print_view(&v);
            Ok(if unsuccessful(&v) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        IntentCmd::Watch { target, id } => watch(&target.addr, &id).await,
        IntentCmd::Approve { target, id, by } => {
            let mut c = IntentsClient::new(channel(&target.addr)?);
            let v = c
                .approve(pb::ApproveRequest { id, by })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            print_view(&v);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn device(cmd: DeviceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCmd::List { target } => {
            let mut c = DevicesClient::new(channel(&target.addr)?);
            let r = c
                .list(pb::ListDevicesRequest {})
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "{:<16} {:<16} {:<9} {:<30} ADAPTER",
                "ID", "LOCATION", "EMERG", "ACTUATORS / SENSORS"
            );
            for d in r.devices {
                let mut caps: Vec<String> = d
                    .actuators
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.states.join("|")))
                    .collect();
                caps.sort();
                caps.extend(d.sensors.iter().map(|s| format!("({s})")));
                outln!(
                    "{:<16} {:<16} {:<9} {:<30} {}:{}",
                    d.id,
                    d.location,
                    if !d.emergency_actions.is_empty() {
                        let mut e: Vec<String> = d
                            .emergency_actions
                            .iter()
                            .map(|(k, v)| format!("{k}:{}", v.states.join("|")))
                            .collect();
                        e.sort();
                        e.join(",")
                    } else if d.emergency_capable {
                        "legacy".to_string()
                    } else {
                        "no".to_string()
                    },
                    caps.join(" "),
                    d.adapter_kind,
                    d.adapter_target
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Register { target, file } => {
            let json = document_json(&file)?;
            let dev: hearth_core::intent::Device =
                serde_json::from_str(&json).with_context(|| {
                    format!(
                        "{} is not a device manifest (docs/INTENTS.md)",
                        file.display()
                    )
                })?;
            let mut c = DevicesClient::new(channel(&target.addr)?);
            let r = c
                .register(hearth_node::api::device_to_pb(&dev))
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!("device {} registered at {}", r.id, r.location);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Refence {
            target,
            devices,
            all,
            reason,
        } => {
            let mut c = DevicesClient::new(channel(&target.addr)?);
            let v = c
                .refence(pb::RefenceRequest {
                    devices,
                    all,
                    reason,
                })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "re-fence {} recorded at entry {}; watch it with `hearth intent watch {}`",
                v.id, v.index, v.id
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn policy(cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Apply {
            target,
            file,
            dry_run,
            yes,
        } => {
            let (proposed, json) = read_policies(&file)?;
            let (current, classes, devices, sha256) = in_force(&target.addr).await?;
            if let Err(e) = hearth_core::policy::check_references(&proposed, &devices, &classes) {
                let lines = policy_lines(&std::fs::read_to_string(&file).unwrap_or_default());
                let n: Option<usize> = e
                    .field
                    .strip_prefix("policies[")
                    .and_then(|r| r.split(']').next())
                    .and_then(|n| n.parse().ok());
                let line = n
                    .and_then(|n| lines.get(n).copied().flatten())
                    .map(|l| format!(", line {l}"))
                    .unwrap_or_default();
                anyhow::bail!("{}{line}: {e}", file.display());
            }
            let changes = hearth_core::policy::diff(&current, &proposed);
            if changes.is_empty() {
                outln!(
                    "no change: the policies in force are those of {}",
                    file.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "applying {} changes the policies in force ({} now, {} after):",
                file.display(),
                current.len(),
                proposed.len()
            );
            for c in &changes {
                outln!("  {c}");
            }
            if dry_run {
                outln!("dry run: nothing applied");
                return Ok(ExitCode::SUCCESS);
            }
            if !yes && !confirm("apply these changes?") {
                eprintln!(
                    "nothing applied: confirm on a terminal, or pass --yes (--dry-run only shows the changes)"
                );
                return Ok(ExitCode::from(1));
            }
            let r = PoliciesClient::new(channel(&target.addr)?)
                .apply_policies(pb::ApplyDocument {
                    json,
                    expect_sha256: sha256,
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!("policies applied at entry {}", r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Add { target, file } => {
            let (proposed, json) = read_policies(&file)?;
            let [one] = proposed.as_slice() else {
                anyhow::bail!(
                    "{}: holds {} policies; `policy add` takes exactly one [[policies]] entry (`policy apply` replaces the set)",
                    file.display(),
                    proposed.len()
                );
            };
            outln!("  {}", hearth_core::policy::Change::Added(one.clone()));
            let r = PoliciesClient::new(channel(&target.addr)?)
                .add_policy(pb::ApplyDocument {
                    json,
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!("policy {} added at entry {}", one.id, r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Remove { target, id } => {
            let (current, ..) = in_force(&target.addr).await?;
            if let Some(p) = current.iter().find(|p| p.id == id) {
                outln!("  {}", hearth_core::policy::Change::Removed(p.clone()));
            }
            let r = PoliciesClient::new(channel(&target.addr)?)
                .remove_policy(pb::RemovePolicyRequest { id: id.clone() })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!("policy {id} removed at entry {}", r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::ApplyClass { target, file } => {
            let json = document_json(&file)?;
            let mut c = PoliciesClient::new(channel(&target.addr)?);
            let r = c
                .apply_class(pb::ApplyDocument {
                    json,
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            outln!("intent class applied at entry {}", r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Show { target } => {
            let mut c = PoliciesClient::new(channel(&target.addr)?);
            let r = c
                .show(pb::ShowPoliciesRequest {})
                .await
                .map_err(|s| rpc_err(&target.addr, s))?
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&r.json)?;
            outln!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `hearth device-sim` logs in to the MQTT broker (all optional).
#[derive(Debug, Default)]
pub struct SimMqttLogin {
    pub user: Option<(String, PathBuf)>,
    pub ca: Option<PathBuf>,
    pub ack_key_file: Option<PathBuf>,
}

fn first_line(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    anyhow::ensure!(
        !line.is_empty(),
        "{}: the first line is empty",
        path.display()
    );
    Ok(line.to_string())
}

/// `hearth device-sim`: serve a simulated device until Ctrl-C.
pub async fn device_sim(
    listen: String,
    http: Option<String>,
    journal: Option<PathBuf>,
    mqtt: Option<(String, String)>,
    login: SimMqttLogin,
) -> anyhow::Result<ExitCode> {
    let sim = hearth_devices::server::DeviceSim::new(journal.clone())
        .context("opening the journal file")?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    if let Some(h) = &http {
        let l = tokio::net::TcpListener::bind(h)
            .await
            .with_context(|| format!("listening on {h}"))?;
        tokio::spawn(sim.clone().serve_http(l));
        outln!("device-sim HTTP on {h}: POST /command, GET /journal");
    }
    if let Some((broker, topic)) = mqtt {
        outln!("device-sim MQTT via {broker}: commands on {topic}/command, acks on {topic}/ack");
        use hearth_devices::mqtt::{MqttBroker, Secret, tls_client_config};
        let mut b = MqttBroker::plain(broker);
        if let Some((user, pw)) = &login.user {
            b = b.with_login(user.clone(), Secret::new(first_line(pw)?));
        }
        if let Some(ca) = &login.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b.with_tls(tls_client_config(&pem, None).map_err(anyhow::Error::msg)?);
        }
        let key = match &login.ack_key_file {
            Some(k) => Some(Secret::new(first_line(k)?)),
            None => None,
        };
        tokio::spawn(hearth_devices::mqtt::serve_device_keyed(
            b,
            topic,
            sim.clone(),
            key,
        ));
    }
    outln!(
        "device-sim gRPC on {listen}{}",
        journal
            .map(|j| format!("; journal {}", j.display()))
            .unwrap_or_default()
    );
    tonic::transport::Server::builder()
        .add_service(hearth_proto::device::device_sim_server::DeviceSimServer::new(sim))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// How long `intent send` keeps retrying while the cluster elects a leader (a few elections).
const ELECTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// A refusal that says the cluster is electing a leader names when to retry
/// (`NO_QUORUM: electing a leader, retry in N ms: …`): that wait, bounded, or `None` for any
/// other error (a real NO_QUORUM, a refusal, a bad request) — those are never retried.
fn election_retry_after(s: &tonic::Status) -> Option<std::time::Duration> {
    if s.code() != tonic::Code::Unavailable {
        return None;
    }
    let rest = s.message().split("electing a leader, retry in ").nth(1)?;
    let ms: u64 = rest.split(" ms").next()?.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(ms.clamp(50, 2_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_election_in_progress_is_retried() {
        let electing = tonic::Status::unavailable(
            "NO_QUORUM: electing a leader, retry in 1500 ms: node 2 has no leader",
        );
        assert_eq!(
            election_retry_after(&electing),
            Some(std::time::Duration::from_millis(1500))
        );
        let long = tonic::Status::unavailable("NO_QUORUM: electing a leader, retry in 90000 ms: x");
        assert_eq!(
            election_retry_after(&long),
            Some(std::time::Duration::from_millis(2000))
        );
        for other in [
            tonic::Status::unavailable(
                "NO_QUORUM: node 2 cannot reach a majority; peers answering: []",
            ),
            tonic::Status::invalid_argument("electing a leader, retry in 10 ms"),
            tonic::Status::unavailable("NO_QUORUM: electing a leader, retry in soon ms"),
            tonic::Status::resource_exhausted("emergency rate limit"),
        ] {
            assert_eq!(election_retry_after(&other), None, "{other:?}");
        }
    }
}
