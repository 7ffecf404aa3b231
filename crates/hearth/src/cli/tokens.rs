//! `hearth init-pki` and `hearth token …`: files on this machine, no node involved.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::args::{Output, TokenCmd};
use super::output;

pub fn init_pki(dir: PathBuf, nodes: Vec<u64>, renew: bool) -> anyhow::Result<ExitCode> {
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

pub fn run(command: TokenCmd) -> anyhow::Result<ExitCode> {
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
        TokenCmd::List { file, out } => {
            list(&file, out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(file: &std::path::Path, out: Output) -> anyhow::Result<()> {
    let tokens = hearth_node::auth::TokensFile::load(file)?.token;
    if out.json() {
        // Names, roles and grants; the file holds only hashes, and none is shown.
        output::print(&json!({
            "tokens": tokens.iter().map(|t| {
                let g = t.grants();
                json!({
                    "name": t.name,
                    "role": t.role.name(),
                    "emergency": g.emergency,
                    "classes": t.classes,
                    "locations": t.locations,
                })
            }).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for t in tokens {
        let g = t.grants();
        let all = |v: &Option<Vec<String>>| v.as_ref().map_or("all".to_string(), |v| v.join(","));
        outln!(
            "{:<24} {:<9} emergency={} classes={} locations={}",
            t.name,
            t.role.name(),
            if g.emergency { "yes" } else { "no" },
            all(&t.classes),
            all(&t.locations)
        );
    }
    Ok(())
}
