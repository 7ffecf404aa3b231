//! `hearth cluster …`: status, membership and topology changes.

use std::process::ExitCode;
use std::time::Duration;

use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use serde_json::{Value, json};

use super::args::{ClusterCmd, Output};
use super::client::Client;
use super::{output, topology};

pub async fn run(client: &Client, cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Status { target, out } => status(client, &target.addr, out).await,
        ClusterCmd::Add {
            target,
            id,
            node_addr,
            role,
        } => {
            let mut c = ClusterClient::new(client.channel(&target.addr)?);
            let r = c
                .add_member(pb::AddMemberRequest {
                    id,
                    addr: node_addr,
                    role,
                })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "node {id} is a voter; membership entry at index {}; voters {:?}",
                r.index,
                r.voters
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Remove { target, id } => {
            let mut c = ClusterClient::new(client.channel(&target.addr)?);
            let r = c
                .remove_member(pb::RemoveMemberRequest { id })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "node {id} removed; membership entry at index {}; voters {:?}",
                r.index,
                r.voters
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Rejoin { target, id } => {
            let mut c = ClusterClient::new(client.channel(&target.addr)?);
            let r = c
                .rejoin(pb::RejoinRequest { id })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "node {id}'s new data directory is admitted (entry at index {}): it votes again \
                 within a second; voters {:?}",
                r.index,
                r.voters
            );
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Replace {
            target,
            old,
            id,
            node_addr,
            role,
        } => topology::replace(client, &target.addr, old, id, node_addr, role).await,
        ClusterCmd::Transfer { target, to } => topology::transfer(client, &target.addr, to).await,
        ClusterCmd::Promote {
            target,
            operator,
            reason,
            force,
        } => topology::promote(client, &target.addr, operator, reason, force).await,
        ClusterCmd::Restart { target, operator } => {
            topology::restart(client, &target.addr, &operator).await
        }
        ClusterCmd::RollingRestart { target, operator } => {
            topology::rolling_restart(client, &target.addr, &operator).await
        }
    }
}

async fn node_status(client: &Client, addr: &str) -> Result<pb::NodeStatus, tonic::Status> {
    let mut c = ClusterClient::new(
        client
            .channel(addr)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?,
    );
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(1500));
    c.status(req).await.map(|r| r.into_inner())
}

pub fn short(h: &str) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        h.chars().take(12).collect()
    }
}

pub fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

async fn status(client: &Client, addr: &str, out: Output) -> anyhow::Result<ExitCode> {
    let first = node_status(client, addr)
        .await
        .map_err(|s| client.rpc_err(addr, s))?;
    let human = !out.json();
    // Text for a person, or (--output json) one object at the end.
    macro_rules! say {
        ($($t:tt)*) => {
            if human {
                outln!($($t)*);
            }
        };
    }
    let mut nodes: Vec<Value> = Vec::new();
    let mut members: Vec<(u64, String, String)> = first
        .members
        .iter()
        .map(|m| (m.id, m.addr.clone(), m.role.clone()))
        .collect();
    if members.is_empty() {
        members.push((first.node_id, addr.to_string(), first.role.clone()));
    }
    say!(
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
        match node_status(client, maddr).await {
            // It answers, but its Raft core is dead: it is down (and about to exit).
            Ok(s)
                if s.health
                    .as_ref()
                    .is_some_and(|h| !h.core_stopped.is_empty()) =>
            {
                let why = s.health.map(|h| h.core_stopped).unwrap_or_default();
                nodes.push(json!({
                    "node": s.node_id, "role": s.role, "state": "Stopped", "term": s.term,
                    "last_index": s.last_index, "applied_index": s.applied_index,
                    "head": (!s.head_hash.is_empty()).then_some(&s.head_hash),
                    "leader": null, "reachable": false, "address": maddr,
                    "error": format!("Raft core stopped: {why}"),
                }));
                say!(
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
                if !s.hold_reason.is_empty() {
                    notes.push(format!("node {}: VOTE HELD — {}", s.node_id, s.hold_reason));
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
                nodes.push(json!({
                    "node": s.node_id, "role": s.role, "state": s.state, "term": s.term,
                    "last_index": s.last_index, "applied_index": s.applied_index,
                    "head": (!s.head_hash.is_empty()).then_some(&s.head_hash),
                    "leader": s.leader, "reachable": true, "address": maddr,
                    "vote_held": s.vote_held,
                    "hold_reason": (!s.hold_reason.is_empty()).then_some(&s.hold_reason),
                    "incarnation": (!s.incarnation.is_empty()).then_some(&s.incarnation),
                    "error": null,
                }));
                say!(
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
            Err(e) => {
                nodes.push(json!({
                    "node": id, "role": role, "state": null, "term": null,
                    "last_index": null, "applied_index": null, "head": null,
                    "leader": null, "reachable": false, "address": maddr,
                    "error": e.message(),
                }));
                say!(
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
                );
            }
        }
    }
    let n = members.len();
    say!();
    for note in &notes {
        say!("{note}");
    }
    match leaders.len() {
        0 => say!("no leader known: writes fail with NO_QUORUM until a majority can elect one"),
        1 => say!(
            "leader: node {}",
            leaders.iter().next().copied().unwrap_or_default()
        ),
        _ => say!(
            "nodes name different leaders {leaders:?}: an election is settling (only one can commit)"
        ),
    }
    say!(
        "reachable from here: {reachable} of {n}; a quorum needs {}",
        n / 2 + 1
    );
    if n == 1 {
        say!("single node: nothing can take over if it fails");
    }
    if !first.assist_state.is_empty() {
        say!(
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
            say!("  check: {c}");
        }
    }
    for r in &first.refusals {
        say!("REFUSED by node {}: {}", r.by, r.message);
    }
    for (id, w) in &warnings {
        say!("DEVICE UNREACHABLE from node {id}: {w}");
    }
    for line in &chain {
        say!("{line}");
    }
    for (id, role, key) in keys.iter().filter(|(_, _, k)| !k.is_empty()) {
        say!("checkpoint key of node {id} ({role}): {key}");
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
    if !human {
        output::print(&json!({
            "nodes": nodes,
            "leader": (leaders.len() == 1).then(|| leaders.iter().next().copied()).flatten(),
            "leaders": leaders,
            "reachable": reachable,
            "members": n,
            "quorum_needs": n / 2 + 1,
            "no_quorum": no_quorum,
            "notes": notes,
            "assisted_failover": (!first.assist_state.is_empty()).then(|| json!({
                "seen_by": first.node_id,
                "state": first.assist_state,
                "destructive": first.assist_destructive,
                "detail": first.assist_detail,
                "checks": first.assist_checks,
            })),
            "refused_by_peers": first.refusals.iter().map(|r| json!({
                "by": r.by, "message": r.message,
            })).collect::<Vec<_>>(),
            "device_warnings": warnings.iter().map(|(id, w)| json!({
                "node": id, "warning": w,
            })).collect::<Vec<_>>(),
            "chain": chain,
            "checkpoint_keys": keys.iter().filter(|(_, _, k)| !k.is_empty()).map(|(id, role, key)| json!({
                "node": id, "role": role, "key": key,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(why) = no_quorum {
        say!("NO QUORUM ({why}): writes and intents fail until a majority elects a leader");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A leader whose quorum has been silent longer than this is reported as without a quorum.
const QUORUM_STALE_MS: u64 = 5_000;
