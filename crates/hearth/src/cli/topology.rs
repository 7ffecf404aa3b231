//! `hearth cluster promote | transfer | replace | restart | rolling-restart`: the membership
//! and topology commands that do more than one call (they wait until the change is visible).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;

use super::client::Client;

async fn status(client: &Client, addr: &str) -> Option<pb::NodeStatus> {
    let mut c = ClusterClient::new(client.channel(addr).ok()?);
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_millis(1000));
    c.status(req).await.ok().map(|r| r.into_inner())
}

/// Polls `addr` until `done` holds for its status, or fails after `within`.
async fn wait_status(
    client: &Client,
    addr: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&pb::NodeStatus) -> bool,
) -> anyhow::Result<pb::NodeStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status(client, addr).await
            && done(&s)
        {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {addr}: {what} did not happen within {} s",
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn voters(s: &pb::NodeStatus) -> Vec<u64> {
    s.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

pub async fn promote(
    client: &Client,
    addr: &str,
    operator: String,
    reason: String,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let before = status(client, addr)
        .await
        .with_context(|| format!("node {addr} does not answer"))?;
    let mut c = ClusterClient::new(client.channel(addr)?);
    let r = c
        .promote(pb::PromoteRequest {
            operator,
            reason,
            force,
        })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!(
        "promotion of node {} accepted (state {}{}); it restarts as a one-node cluster, removing {:?}",
        r.node_id,
        r.assessed,
        if r.destructive { ", DESTRUCTIVE" } else { "" },
        r.removed
    );
    let last = r.last_index;
    let s = wait_status(
        client,
        addr,
        Duration::from_secs(60),
        "leading alone with the promotion applied",
        |s| {
            s.started_ms != before.started_ms
                && s.node_state() == pb::NodeState::Leader
                && voters(s) == [r.node_id]
                && s.applied_index >= Some(last.map(|l| l + 2).unwrap_or(1))
        },
    )
    .await?;
    outln!(
        "node {} leads alone in term {}; voters {:?}",
        s.node_id,
        s.term,
        voters(&s)
    );
    let mut a = AuditClient::new(client.channel(addr)?);
    let tail = a
        .tail(pb::TailRequest { count: 10 })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    let from = last.map(|l| l + 1).unwrap_or(0);
    for e in tail.entries.iter().filter(|e| e.index >= from) {
        outln!("{:>8} term {:<4} {}", e.index, e.term, e.kind);
    }
    outln!(
        "the old peer is refused from now on; to bring that machine back, wipe its data and add it \
         under a new id (docs/topologies/two-hubs.md)"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn transfer(client: &Client, addr: &str, to: u64) -> anyhow::Result<ExitCode> {
    let mut c = ClusterClient::new(client.channel(addr)?);
    let r = c
        .transfer_leader(pb::TransferLeaderRequest { to })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!("node {} leads (term {})", r.leader, r.term);
    Ok(ExitCode::SUCCESS)
}

pub async fn replace(
    client: &Client,
    addr: &str,
    old_id: u64,
    new_id: u64,
    node_addr: String,
    role: String,
) -> anyhow::Result<ExitCode> {
    let mut c = ClusterClient::new(client.channel(addr)?);
    let r = c
        .replace_member(pb::ReplaceMemberRequest {
            old_id,
            new_id,
            addr: node_addr,
            role,
        })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!(
        "node {new_id} replaced node {old_id}; membership entry at index {}; voters {:?}",
        r.index,
        r.voters
    );
    Ok(ExitCode::SUCCESS)
}

/// Restarts the node at `addr` and waits until its new incarnation has caught up with `goal`
/// (an applied index) and a leader is known.
async fn restart_one(
    client: &Client,
    addr: &str,
    goal: Option<u64>,
    by: &str,
) -> anyhow::Result<Duration> {
    let before = status(client, addr)
        .await
        .with_context(|| format!("node {addr} does not answer"))?;
    let t0 = Instant::now();
    let r = ClusterClient::new(client.channel(addr)?)
        .restart(pb::RestartRequest { by: by.to_string() })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!(
        "node {} restarting (recorded at chain index {})",
        r.node_id,
        r.recorded_index
    );
    wait_status(
        client,
        addr,
        Duration::from_secs(60),
        "restart and catch-up",
        |s| s.started_ms != before.started_ms && s.leader.is_some() && s.applied_index >= goal,
    )
    .await?;
    Ok(t0.elapsed())
}

pub async fn restart(client: &Client, addr: &str, by: &str) -> anyhow::Result<ExitCode> {
    let s = status(client, addr)
        .await
        .with_context(|| format!("node {addr} does not answer"))?;
    let took = restart_one(client, addr, s.applied_index, by).await?;
    outln!(
        "node {} restarted and caught up in {} ms",
        s.node_id,
        took.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// Restarts every member, one at a time: followers first, the leader last (it hands over
/// before it stops), each only once the previous one is back and caught up.
pub async fn rolling_restart(client: &Client, addr: &str, by: &str) -> anyhow::Result<ExitCode> {
    let s = status(client, addr)
        .await
        .with_context(|| format!("node {addr} does not answer"))?;
    let leader = s.leader;
    let mut order: Vec<(u64, String)> = s.members.iter().map(|m| (m.id, m.addr.clone())).collect();
    order.sort_by_key(|(id, _)| (Some(*id) == leader, *id));
    for (id, maddr) in &order {
        // Every other member must answer first: restarting one while another is down could
        // leave no quorum.
        for (other, oaddr) in order.iter().filter(|(o, _)| o != id) {
            anyhow::ensure!(
                status(client, oaddr).await.is_some(),
                "node {other} at {oaddr} does not answer; not restarting node {id} (the cluster \
                 could lose its quorum)"
            );
        }
        let goal = status(client, maddr).await.and_then(|s| s.applied_index);
        let took = restart_one(client, maddr, goal, by).await?;
        outln!(
            "node {id} restarted and caught up in {} ms",
            took.as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}
