//! The witness caretaker task: observes, asks `hearth_core::caretaker::decide`, acts.
//! The decision itself is pure and tested exhaustively in `hearth-core`.

use std::time::{Duration, Instant};

use hearth_core::caretaker::{CaretakerConfig, Decision, HubView, LogPos, Observation, decide};
use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::RaftHandler;

/// How often the caretaker looks.
const TICK: Duration = Duration::from_millis(200);

/// Runs on a witness until `shutdown` turns true. The hubs are the non-witness voters of the
/// current membership.
pub async fn run(
    handler: RaftHandler,
    log: hearth_store::LogStore,
    cfg: CaretakerConfig,
    retry_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let raft = handler.raft.clone();
    let mut last_action: Option<(Instant, Decision)> = None;
    let recent = retry_after.saturating_mul(2).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let m = raft.metrics().borrow_watched().clone();
        let i_lead = m.state == ServerState::Leader;
        let now = Instant::now();
        let contact = handler.last_leader_contact();
        let leaderless_ms = if i_lead {
            0
        } else {
            now.duration_since(contact).as_millis() as u64
        };
        let campaigners = handler.campaigners();
        let replication = m.replication.clone().unwrap_or_default();
        let membership = m.membership_config.membership();
        let hubs: Vec<u64> = membership
            .voter_ids()
            .filter(|id| membership.get_node(id).is_some_and(|n| !n.witness))
            .collect();
        let hub_views: Vec<HubView> = hubs
            .iter()
            .map(|id| {
                // Only a request made since the leader went silent shows the hub lost it too.
                let seen = campaigners
                    .get(id)
                    .filter(|c| c.at > contact && now.duration_since(c.at) < recent);
                HubView {
                    id: *id,
                    reachable: seen.is_some()
                        || (i_lead && replication.get(id).is_some_and(|x| x.is_some())),
                    last_log: seen.and_then(|c| c.last_log.as_ref()).map(|l| LogPos {
                        term: l.leader_id.term,
                        index: l.index,
                    }),
                    matched: replication
                        .get(id)
                        .and_then(|x| x.as_ref())
                        .map(|l| l.index),
                }
            })
            .collect();
        let obs = Observation {
            i_lead,
            leader_known: !i_lead && leaderless_ms < cfg.lease_ms,
            leaderless_ms,
            my_last: log.last_log_id().ok().flatten().map(|l| LogPos {
                term: l.leader_id.term,
                index: l.index,
            }),
            hubs: hub_views,
        };
        // Repeat an action at most once per `retry_after`, so it can take effect; the
        // hand-over that follows a won campaign goes at once.
        let decision = decide(cfg, &obs);
        if last_action.as_ref().is_some_and(|(t, d)| {
            now.duration_since(*t) < retry_after
                && std::mem::discriminant(d) == std::mem::discriminant(&decision)
        }) {
            continue;
        }
        match decision {
            Decision::Wait | Decision::KeepReplicating => {}
            Decision::Campaign if handler.vote_refusal().is_some() => {
                // A held witness (new, copied or restored data) neither votes nor leads.
                tracing::warn!(node = handler.id, why = ?handler.vote_refusal(),
                    "caretaker: would campaign, but this witness's vote is held");
                last_action = Some((now, Decision::Campaign));
            }
            Decision::Campaign => {
                tracing::warn!(node = handler.id, ?obs.my_last, "caretaker: no leader and this witness holds entries no live hub has; campaigning once");
                last_action = Some((now, Decision::Campaign));
                if let Err(e) = raft.trigger().elect(false).await {
                    tracing::error!(error = %e, "caretaker campaign failed");
                }
            }
            Decision::TransferTo(hub) => {
                tracing::warn!(
                    node = handler.id,
                    hub,
                    "caretaker: handing leadership to the caught-up hub"
                );
                last_action = Some((now, Decision::TransferTo(hub)));
                if let Err(e) = raft.trigger().transfer_leader(hub).await {
                    tracing::error!(error = %e, "caretaker transfer failed");
                }
            }
        }
    }
}
