//! A Prometheus text endpoint (`GET /metrics` on `metrics_listen`): the node's Raft state, log
//! and chain positions, and write counters. Plain HTTP/1.1, one response per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::node::Node;

/// Counters the API layer updates.
#[derive(Debug, Default)]
pub struct Counters {
    pub writes_ok: AtomicU64,
    pub writes_no_quorum: AtomicU64,
    pub writes_rejected: AtomicU64,
    pub writes_forwarded: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders the metrics page.
pub async fn render(node: &Node, c: &Counters) -> String {
    let s = node.status().await;
    let last_checkpoint = node.checkpoints.last().await.map_or(0, |c| c.index);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{}\"}} {v}\n",
            s.node_id
        ));
    };
    gauge("hearth_term", "Current Raft term.", s.term);
    gauge(
        "hearth_vote_held",
        "1 while this node neither votes nor leads: its data directory is new, copied, restored or behind what it held, until the cluster has caught it up.",
        u64::from(node.handler.hold().is_some()),
    );
    gauge(
        "hearth_state_rebuilds",
        "State machines rebuilt from the Raft log since this process started (damaged, rolled back or ahead of the log).",
        crate::datadir::STATE_REBUILDS.load(std::sync::atomic::Ordering::Relaxed),
    );
    gauge(
        "hearth_is_leader",
        "1 while this node leads.",
        u64::from(s.state == crate::node::NodeState::Leader),
    );
    gauge(
        "hearth_last_log_index",
        "Last index in the durable Raft log.",
        s.last_log.map_or(0, |(_, i)| i),
    );
    gauge(
        "hearth_applied_index",
        "Last applied index (the chain head).",
        s.applied.unwrap_or(0),
    );
    gauge(
        "hearth_members",
        "Members in the current configuration.",
        s.members.len() as u64,
    );
    gauge(
        "hearth_millis_since_quorum_ack",
        "Leader only: milliseconds since a quorum last acknowledged it.",
        s.millis_since_quorum_ack.unwrap_or(0),
    );
    gauge(
        "hearth_refused_by_peers",
        "Peers that refuse this node (e.g. it was removed by a forced promotion).",
        s.refused_by.len() as u64,
    );
    gauge(
        "hearth_chain_fenced",
        "1 when a majority's chain contradicts this node's: it stopped serving its chain.",
        u64::from(s.chain_fenced.is_some()),
    );
    gauge(
        "hearth_chain_disagreeing_peers",
        "Peers whose chain differs from this node's at a common index (cross-check).",
        s.chain_disagreeing.len() as u64,
    );
    gauge(
        "hearth_devices_unreachable",
        "Hub: registered devices it could not drive if it led (an adapter it has not configured).",
        s.device_warnings.len() as u64,
    );
    gauge(
        "hearth_checkpoint_last_index",
        "Hub: index of the last checkpoint it signed (0: none).",
        last_checkpoint,
    );
    gauge(
        "hearth_core_running",
        "1 while the Raft core runs; 0 once it stopped (the process then exits).",
        u64::from(s.health.core_stopped.is_empty()),
    );
    gauge(
        "hearth_disk_free_bytes",
        "Free bytes on the data directory's file system.",
        s.health.disk_free_bytes.unwrap_or(0),
    );
    gauge(
        "hearth_disk_low",
        "1 when free space is below the warning threshold.",
        u64::from(!s.health.disk_warning.is_empty()),
    );
    gauge(
        "hearth_clock_off",
        "1 when this hub's clock is judged wrong (it neither leads nor stamps).",
        u64::from(s.health.clock_off()),
    );
    gauge(
        "hearth_clock_offset_max_ms",
        "Largest measured clock offset to a peer (ms, absolute).",
        node.clock_offset_max_ms(),
    );
    if let Some(a) = &s.assist {
        let name = "hearth_assist_state";
        out.push_str(&format!(
            "# HELP {name} Two hubs without a witness: 1 for the current assisted-failover state.\n# TYPE {name} gauge\n"
        ));
        for state in ["HEALTHY", "PEER_SUSPECT", "PEER_DOWN", "UNCERTAIN"] {
            out.push_str(&format!(
                "{name}{{node=\"{}\",state=\"{state}\"}} {}\n",
                s.node_id,
                u8::from(a.state == state)
            ));
        }
    }
    let cp = &node.checkpoints;
    for (name, help, v) in [
        (
            "hearth_checkpoints_signed_total",
            "Hub: checkpoints signed by this node since it started.",
            &cp.signed,
        ),
        (
            "hearth_checkpoints_cosigned_total",
            "Witness: checkpoints cosigned by this node since it started.",
            &cp.cosigned,
        ),
        (
            "hearth_checkpoint_forks_refused_total",
            "Witness: checkpoints refused because their head is not this node's chain (a fork).",
            &cp.forks_refused,
        ),
        (
            "hearth_writes_committed_total",
            "Writes committed through this node.",
            &c.writes_ok,
        ),
        (
            "hearth_writes_no_quorum_total",
            "Writes refused with NO_QUORUM.",
            &c.writes_no_quorum,
        ),
        (
            "hearth_writes_rejected_total",
            "Writes refused as invalid.",
            &c.writes_rejected,
        ),
        (
            "hearth_writes_forwarded_total",
            "Writes forwarded to the leader.",
            &c.writes_forwarded,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{}\"}} {}\n",
            s.node_id,
            v.load(Ordering::Relaxed)
        ));
    }
    let name = "hearth_device_acks_ignored_total";
    out.push_str(&format!(
        "# HELP {name} Messages on device ack topics that were not the answer awaited (another action id or fencing token, unreadable, retained): forged, stale or misdirected.\n# TYPE {name} counter\n{name}{{node=\"{}\"}} {}\n",
        s.node_id,
        node.ignored_device_acks()
    ));
    out
}

/// Serves `/metrics` until the task is aborted.
pub async fn serve(listener: TcpListener, node: Arc<Node>, counters: Arc<Counters>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let (node, counters) = (node.clone(), counters.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics ") {
                ("200 OK", render(&node, &counters).await)
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
