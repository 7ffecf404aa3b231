//! The two-hub scenario (assisted failover), run last because it ends the suite's cluster: the
//! witness is removed, so two hubs remain (the device simulator's HTTP port is their
//! "gateway" target), then, under load:
//!
//! 1. the follower hub is cut from its peer and from the gateway: it must say `UNCERTAIN`,
//!    the leader (which still reaches the gateway) `PEER_DOWN`; nobody commits or actuates;
//! 2. healed; the leading hub is killed: the survivor goes `PEER_DOWN`, proposes promotion and
//!    does not promote itself; nothing commits or actuates;
//! 3. a person promotes the survivor (`Cluster.Promote`): it leads alone and the load commits
//!    and actuates again;
//! 4. the old hub is started again with its old membership: it is refused, commits and
//!    actuates nothing, and its chain is a prefix of the survivor's (one history);
//! 5. a person forces a promotion on the old hub: refused (its peer refused it), it does not
//!    restart, and no device command comes from it.

use std::time::{Duration, Instant};

use anyhow::bail;
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;

use crate::check::{self, Quiet};
use crate::load::channel;
use crate::{
    GRACE_MS, NODES, NodeRef, Row, Suite, export, first_actuation, journal, leader, node, now_ms,
    status, wait_leader,
};

pub const NAME: &str = "two hubs: promote survivor";
/// `assist.down_after_ms` in deploy/compose/hub-*.toml, plus probing and polling slack.
const ASSIST_BOUND: Duration = Duration::from_secs(15);

async fn wait_assist(n: NodeRef, state: &str) -> anyhow::Result<pb::NodeStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = status(n.api).await
            && s.assist_state == state
        {
            return Ok(s);
        }
        if t0.elapsed() > ASSIST_BOUND {
            bail!(
                "node {} did not report {state} within {ASSIST_BOUND:?} (last: {:?})",
                n.id,
                status(n.api)
                    .await
                    .map(|s| (s.assist_state, s.assist_detail))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn voters(s: &pb::NodeStatus) -> Vec<u64> {
    s.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

impl Suite {
    /// Any node that answers `NO_QUORUM` to a fresh intent, and still has both hubs as voters.
    async fn expect_held(&mut self, n: NodeRef, tag: &str, bad: &mut Vec<String>) {
        self.expect_no_quorum(n.api, tag, bad).await;
        match status(n.api).await {
            Some(s) if voters(&s) == [1, 2] => {}
            Some(s) => bad.push(format!(
                "node {} changed its voters to {:?} without a person",
                n.id,
                voters(&s)
            )),
            None => bad.push(format!("node {} stopped answering", n.id)),
        }
    }

    pub async fn two_hubs(&mut self) -> anyhow::Result<Row> {
        println!("== {NAME}");
        let started = Instant::now();
        self.converge(Duration::from_secs(60)).await?;
        let witness = NODES[2];
        let mut c = ClusterClient::new(channel(NODES[0].api));
        let r = c
            .remove_member(pb::RemoveMemberRequest { id: witness.id })
            .await?
            .into_inner();
        println!(
            "    witness removed at index {}; voters {:?}",
            r.index, r.voters
        );
        self.docker.stop(witness.container)?;
        let (l_id, old_term) = wait_leader(0, crate::LEADER_BOUND).await?.0;
        let l = node(l_id);
        let s = NODES
            .into_iter()
            .find(|n| !n.witness && n.id != l_id)
            .unwrap_or(NODES[1]);
        wait_assist(l, "HEALTHY").await?;
        wait_assist(s, "HEALTHY").await?;
        let load = self.load(NAME);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut bad = Vec::new();

        // 1. The follower loses its peer and its gateway.
        self.docker.cut(s.container, l.container)?;
        self.docker.cut(s.container, "hearth-device-sim")?;
        let t0 = now_ms();
        let su = wait_assist(s, "UNCERTAIN").await?;
        println!("    cut-off hub: UNCERTAIN: {}", su.assist_detail);
        let lu = wait_assist(l, "PEER_DOWN").await?;
        println!(
            "    leader that still reaches the gateway: PEER_DOWN, checks {:?}",
            lu.assist_checks
        );
        self.expect_held(s, "two-hubs-uncertain-s", &mut bad).await;
        self.expect_held(l, "two-hubs-uncertain-l", &mut bad).await;
        for c in [s.container, l.container, "hearth-device-sim"] {
            self.docker.heal(c)?;
        }
        self.quiet.push(Quiet {
            node: None,
            from_ms: t0 + GRACE_MS,
            to_ms: now_ms(),
            why: "two hubs cut apart: no quorum".into(),
        });
        wait_assist(s, "HEALTHY").await?;
        let (l_id, term) = wait_leader(0, crate::LEADER_BOUND).await?.0;
        let old_term = term.max(old_term);
        let l = node(l_id);
        let s = NODES
            .into_iter()
            .find(|n| !n.witness && n.id != l_id)
            .unwrap_or(NODES[1]);

        // 2. The leading hub dies: the survivor proposes, and does not act.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.docker.kill(l.container)?;
        let t_kill = now_ms();
        let kill_at = Instant::now();
        wait_assist(s, "PEER_SUSPECT").await?;
        let down = wait_assist(s, "PEER_DOWN").await?;
        println!(
            "    survivor: PEER_DOWN after {} ms{}; checks {:?}",
            kill_at.elapsed().as_millis(),
            if down.assist_destructive {
                " (destructive)"
            } else {
                ""
            },
            down.assist_checks
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.expect_held(s, "two-hubs-down", &mut bad).await;

        // 3. A person promotes it.
        let before = status(s.api).await.map(|x| x.started_ms).unwrap_or(0);
        let t_promote = now_ms();
        self.quiet.push(Quiet {
            node: None,
            from_ms: t_kill + GRACE_MS,
            to_ms: t_promote,
            why: "two hubs, one dead, not yet promoted: no quorum".into(),
        });
        let p = ClusterClient::new(channel(s.api))
            .promote(pb::PromoteRequest {
                operator: "partition-suite".into(),
                reason: "hub killed by the suite".into(),
                force: false,
            })
            .await?
            .into_inner();
        println!(
            "    promoted node {} (assessed {}, destructive {}), last entry {:?}",
            p.node_id, p.assessed, p.destructive, p.last_index
        );
        let t = Instant::now();
        let alone = loop {
            if let Some(x) = status(s.api).await
                && x.started_ms != before
                && x.node_state() == pb::NodeState::Leader
                && voters(&x) == [s.id]
            {
                break x;
            }
            if t.elapsed() > crate::LEADER_BOUND {
                bail!("node {} did not lead alone after the promotion", s.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let leader_ms = kill_at.elapsed().as_millis() as u64;
        println!(
            "    node {} leads alone in term {} ({} ms after the promotion call)",
            s.id,
            alone.term,
            t.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;

        // 4. The old hub returns with its old membership.
        self.docker.start(l.container)?;
        let t_back = now_ms();
        let t = Instant::now();
        loop {
            if let Some(x) = status(l.api).await
                && let Some(r) = x.refusals.first()
            {
                println!("    returning hub: {}", r.message);
                break;
            }
            if t.elapsed() > ASSIST_BOUND {
                bad.push(format!("the returning node {} was never refused", l.id));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.expect_no_quorum(l.api, "two-hubs-returned", &mut bad)
            .await;

        // 5. On the returning hub a person forces a promotion (issue 13 item 1): refused, naming
        //    its peer's refusal; it does not restart, keeps its old voters and commits nothing,
        //    and it sends no device command (the check below: every command a device accepted
        //    maps to an entry of the survivor's chain).
        if let Err(e) = wait_assist(l, "PEER_DOWN").await {
            bad.push(format!(
                "the returning hub never looked PEER_DOWN on its own: {e}"
            ));
        }
        let before = status(l.api).await.map(|x| x.started_ms).unwrap_or(0);
        let forced = ClusterClient::new(channel(l.api))
            .promote(pb::PromoteRequest {
                operator: "partition-suite".into(),
                reason: "the returning hub forces a promotion".into(),
                force: true,
            })
            .await;
        match forced {
            Ok(p) => bad.push(format!(
                "the returning node {} accepted a forced promotion: {:?}",
                l.id,
                p.into_inner()
            )),
            Err(e) if e.message().contains("alive or ahead") => {
                println!(
                    "    returning hub, forced promotion refused: {}",
                    e.message()
                )
            }
            Err(e) => bad.push(format!(
                "the returning node's forced promotion failed for another reason: {e}"
            )),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        match status(l.api).await {
            Some(x) if x.started_ms == before && voters(&x) == [1, 2] => {}
            other => bad.push(format!(
                "after a refused forced promotion the returning hub restarted or changed its \
                 voters: {:?}",
                other.map(|x| (x.started_ms, voters(&x)))
            )),
        }
        self.expect_no_quorum(l.api, "two-hubs-forced", &mut bad)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = load.finish().await;
        self.quiet.push(Quiet {
            node: Some(l.id),
            from_ms: t_back,
            to_ms: now_ms(),
            why: "removed by the promotion".into(),
        });

        // Invariants: the survivor's chain is the history; the old hub's is a prefix of it.
        let t = Instant::now();
        let (mine, survivor) = loop {
            let survivor = export(s.api).await?;
            let chain = check::replay(&survivor).map_err(anyhow::Error::msg)?;
            if check::open_actions(&chain).is_empty() {
                break (export(l.api).await?, survivor);
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("the promoted hub left actions without an outcome");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if mine.is_empty() || mine.len() > survivor.len() || mine[1..] != survivor[1..mine.len()] {
            bad.push(format!(
                "the returning hub's chain ({} lines) is not a prefix of the survivor's ({} lines): two histories",
                mine.len(),
                survivor.len()
            ));
        }
        if leader().await.map(|(id, _)| id) != Some(s.id) {
            bad.push(format!("node {} does not lead after the scenario", s.id));
        }
        self.acked.extend(report.acked.iter().cloned());
        for f in &report.failed {
            if f.never_appended {
                self.refused_upfront.push(f.intent_id.clone());
            }
        }
        let j = journal().await?;
        let (_, more) = check::check(&check::Evidence {
            exports: &[(s.id, survivor)],
            journal: &j,
            acked: &self.acked,
            refused_upfront: &self.refused_upfront,
            quiet: &self.quiet,
            witnesses: &[witness.id],
        });
        bad.extend(more);
        bad.dedup();
        let actuation_ms = first_actuation(&j, old_term, t_promote).map(|t| t - t_kill);
        if actuation_ms.is_none() {
            bad.push("the promoted hub actuated nothing".into());
        }
        Ok(Row {
            name: NAME,
            path: format!("node {} promoted by a person", s.id),
            leader_ms: Some(leader_ms),
            actuation_ms,
            acked: report.acked.len(),
            failed: report.failed.len(),
            no_quorum: report.no_quorum_answers,
            violations: bad,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}
