//! `hearth policy …`: apply, add, remove, show and list policies and intent classes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_client::DevicesClient;
use hearth_proto::v1::policies_client::PoliciesClient;

use super::args::PolicyCmd;
use super::client::Client;
use super::output;

/// Reads a TOML or JSON document into JSON text.
pub fn document_json(path: &Path) -> anyhow::Result<String> {
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
    client: &Client,
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
    let r = PoliciesClient::new(client.channel(addr)?)
        .show(pb::ShowPoliciesRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    let shown: Shown = serde_json::from_str(&r.json).context("the node's policy set")?;
    let devices = DevicesClient::new(client.channel(addr)?)
        .list(pb::ListDevicesRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
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

pub async fn run(client: &Client, cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Apply {
            target,
            file,
            dry_run,
            yes,
        } => {
            let (proposed, json) = read_policies(&file)?;
            let (current, classes, devices, sha256) = in_force(client, &target.addr).await?;
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
            let r = PoliciesClient::new(client.channel(&target.addr)?)
                .apply_policies(pb::ApplyDocument {
                    json,
                    expect_sha256: sha256,
                    ..Default::default()
                })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
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
            let r = PoliciesClient::new(client.channel(&target.addr)?)
                .add_policy(pb::ApplyDocument {
                    json,
                    ..Default::default()
                })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!("policy {} added at entry {}", one.id, r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Remove { target, id } => {
            let (current, ..) = in_force(client, &target.addr).await?;
            if let Some(p) = current.iter().find(|p| p.id == id) {
                outln!("  {}", hearth_core::policy::Change::Removed(p.clone()));
            }
            let r = PoliciesClient::new(client.channel(&target.addr)?)
                .remove_policy(pb::RemovePolicyRequest { id: id.clone() })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!("policy {id} removed at entry {}", r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::ApplyClass { target, file } => {
            let json = document_json(&file)?;
            let mut c = PoliciesClient::new(client.channel(&target.addr)?);
            let r = c
                .apply_class(pb::ApplyDocument {
                    json,
                    ..Default::default()
                })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!("intent class applied at entry {}", r.index);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Show { target, out } => {
            let mut c = PoliciesClient::new(client.channel(&target.addr)?);
            let r = c
                .show(pb::ShowPoliciesRequest {})
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            let mut v: serde_json::Value =
                serde_json::from_str(&r.json).context("the node's policy set is not JSON")?;
            if out.json() {
                v["sha256"] = serde_json::json!(r.sha256);
                output::print(&v);
            } else {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::List { target, out } => {
            let (policies, ..) = in_force(client, &target.addr).await?;
            if out.json() {
                output::print(&serde_json::json!({ "policies": policies }));
                return Ok(ExitCode::SUCCESS);
            }
            outln!("{:<24} RULE", "ID");
            for p in &policies {
                outln!(
                    "{:<24} {}{}",
                    p.id,
                    serde_json::to_string(&p.rule)?,
                    match &p.emergency_override {
                        Some(o) => format!(" (emergency override: {})", serde_json::to_string(o)?),
                        None => String::new(),
                    }
                );
            }
            if policies.is_empty() {
                outln!("(no policies: every intent class decides alone)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
