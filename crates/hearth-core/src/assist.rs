//! Assisted failover for two hubs without a witness (DoSync's design, docs/DESIGN.md §2 "Roles and
//! topologies"). With two voters a survivor that loses its peer has no quorum: it commits
//! nothing and never promotes itself. This module decides, from plain observations, what it
//! tells the household: nothing is wrong, the peer looks unwell, the peer looks down (a
//! proposal for a human to promote this hub), or "I am probably the one cut off" (hold).
//!
//! Pure: the caller measures (peer heartbeats, probes of independent targets such as the LAN
//! gateway) and acts (status, metrics, the `promote` call's gate).

use crate::caretaker::LogPos;

/// Tuning, from the node's timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssistConfig {
    /// Peer silent this long: suspect (typically the election timeout).
    pub suspect_after_ms: u64,
    /// Peer silent this long, with an independent target reachable: propose promotion.
    pub down_after_ms: u64,
}

/// One probe of an independent target (a TCP connect to the gateway's web page, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetProbe {
    pub target: String,
    pub reachable: bool,
}

/// Everything the assessment looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistObservation {
    /// How long since the peer last answered (0 = it answers now).
    pub peer_silent_ms: u64,
    /// The peer led when it was last heard from.
    pub peer_was_leader: bool,
    /// The newest log position the peer was known to hold, if known.
    pub peer_last: Option<LogPos>,
    /// This hub's last log position.
    pub my_last: Option<LogPos>,
    /// The latest probes of the configured independent targets.
    pub targets: Vec<TargetProbe>,
}

/// What the survivor should say and do. Never a self-promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssistState {
    /// The peer answers.
    Healthy,
    /// The peer has been silent past the election timeout; too early to conclude.
    PeerSuspect,
    /// The peer looks down while this hub still reaches its independent targets: a human may
    /// promote this hub.
    PeerDown(Proposal),
    /// This hub reaches neither its peer nor its targets (or has none to ask): it is probably
    /// the one cut off. Hold and propose nothing.
    Uncertain { reason: String },
}

impl AssistState {
    pub fn name(&self) -> &'static str {
        match self {
            AssistState::Healthy => "HEALTHY",
            AssistState::PeerSuspect => "PEER_SUSPECT",
            AssistState::PeerDown(_) => "PEER_DOWN",
            AssistState::Uncertain { .. } => "UNCERTAIN",
        }
    }
}

/// A promotion proposal for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Promoting may discard entries the lost peer holds and this hub lacks.
    pub destructive: bool,
    /// What a person should check before promoting, most important first.
    pub checks: Vec<String>,
    /// This hub's last entry: the promotion entry will name it.
    pub my_last: Option<LogPos>,
}

/// The assessment. Pure: same observation, same state.
pub fn assess(cfg: AssistConfig, obs: &AssistObservation) -> AssistState {
    if obs.peer_silent_ms < cfg.suspect_after_ms {
        return AssistState::Healthy;
    }
    if obs.peer_silent_ms < cfg.down_after_ms {
        return AssistState::PeerSuspect;
    }
    if obs.targets.is_empty() {
        return AssistState::Uncertain {
            reason: "no independent target is configured, so this hub cannot tell whether the \
                     peer or itself is cut off"
                .into(),
        };
    }
    let reached: Vec<&str> = obs
        .targets
        .iter()
        .filter(|t| t.reachable)
        .map(|t| t.target.as_str())
        .collect();
    if reached.is_empty() {
        return AssistState::Uncertain {
            reason: format!(
                "neither the peer nor any independent target ({}) answers: this hub is \
                 probably the one cut off",
                obs.targets
                    .iter()
                    .map(|t| t.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    // Two voters commit only what both hold, so every acknowledged entry is here. The peer
    // may still hold entries this hub lacks: ones it appended as leader but never got
    // confirmed, or a history of its own if it was promoted on its side.
    let destructive = obs.peer_was_leader || obs.peer_last.is_none_or(|p| Some(p) > obs.my_last);
    let mut checks = vec![
        format!(
            "the peer has not answered for {} s while this hub reaches {}: check that the peer \
             is powered off or unplugged, not merely cut off",
            obs.peer_silent_ms / 1000,
            reached.join(", ")
        ),
        "promote only one hub: if the peer is running and someone promotes it too, the \
         household gets two histories"
            .to_string(),
    ];
    if destructive {
        checks.push(match obs.peer_last {
            Some(p) if Some(p) > obs.my_last => format!(
                "DESTRUCTIVE: the peer held entries up to index {} (term {}) and this hub only to \
                 {}; promoting discards what it lacks (never anything a client saw acknowledged)",
                p.index,
                p.term,
                obs.my_last
                    .map(|m| m.index.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
            _ => "DESTRUCTIVE: the peer led and may hold entries this hub never received; \
                  promoting discards them (never anything a client saw acknowledged)"
                .to_string(),
        });
    }
    AssistState::PeerDown(Proposal {
        destructive,
        checks,
        my_last: obs.my_last,
    })
}

/// Why a promotion is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteRefusal {
    #[error("the peer answers: remove it with `hearth cluster remove` instead of promoting")]
    PeerAnswers,
    #[error("state is {0}: promotion needs PEER_DOWN, or --force after checking the peer by hand")]
    NotDown(&'static str),
    #[error(
        "refused, even with --force: the peer is alive or ahead, and promoting this hub would \
         make a second one-node cluster beside it: {}. If the peer was promoted, this hub \
         rejoins it under a new id (docs/topologies/two-hubs.md)",
        list(.0)
    )]
    PeerAliveOrAhead(Vec<Evidence>),
}

/// The gate in front of a forced promotion: only from `PEER_DOWN`, or with `force` from
/// `PEER_SUSPECT`/`UNCERTAIN`; never while the peer answers.
pub fn may_promote(state: &AssistState, force: bool) -> Result<(), PromoteRefusal> {
    match state {
        AssistState::Healthy => Err(PromoteRefusal::PeerAnswers),
        AssistState::PeerDown(_) => Ok(()),
        _ if force => Ok(()),
        other => Err(PromoteRefusal::NotDown(other.name())),
    }
}

/// What a hub holds about its peer besides the silence `assess` looks at: the facts that can
/// show the peer alive or ahead even while it does not answer this hub (issue 13 item 1: an old
/// primary that returns after its peer was promoted is refused by that peer; it must not then
/// promote itself into a second one-node cluster).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerFacts {
    /// The peer's id.
    pub peer: u64,
    /// How long this hub has been watching its peer (since it started), ms.
    pub watched_ms: u64,
    /// How long ago the peer last sent this hub any Raft RPC, if it did since the start.
    pub peer_rpc_ago_ms: Option<u64>,
    /// What the peer said when it refused this hub's RPCs (since the start).
    pub refusals: Vec<String>,
    /// Promotion records in this hub's own chain that removed this hub.
    pub promotions: Vec<String>,
    /// The longest log the peer is known to hold (from its campaigns, or replication).
    pub peer_known_last: Option<LogPos>,
    /// This hub's last log position.
    pub my_last: Option<LogPos>,
    /// What the peer said when this hub asked it for its status just before deciding, if it
    /// answered at all.
    pub peer_answered: Option<String>,
}

/// One piece of evidence that the peer is alive or ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// The peer answered this hub's RPCs with a refusal: it runs.
    PeerRefused { peer: u64, message: String },
    /// The peer answered a status request just now: it runs.
    PeerAnswered { peer: u64, detail: String },
    /// This hub's chain records a promotion that removed it.
    RemovedByPromotion { record: String },
    /// The peer sent this hub an RPC within the down window.
    PeerHeard {
        peer: u64,
        ago_ms: u64,
        window_ms: u64,
    },
    /// This hub has not watched for a whole down window, so it cannot know.
    NotWatchedLongEnough { watched_ms: u64, window_ms: u64 },
    /// The peer is known to hold a longer log than this hub.
    PeerLogLonger {
        peer: u64,
        theirs: LogPos,
        mine: Option<LogPos>,
    },
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::PeerRefused { peer, message } => {
                write!(
                    f,
                    "node {peer} answered this hub with a refusal ({message})"
                )
            }
            Evidence::PeerAnswered { peer, detail } => {
                write!(
                    f,
                    "node {peer} answered a status request just now ({detail})"
                )
            }
            Evidence::RemovedByPromotion { record } => {
                write!(f, "this hub's own chain records its removal: {record}")
            }
            Evidence::PeerHeard {
                peer,
                ago_ms,
                window_ms,
            } => write!(
                f,
                "node {peer} sent this hub a Raft RPC {ago_ms} ms ago, within the down window of {window_ms} ms"
            ),
            Evidence::NotWatchedLongEnough {
                watched_ms,
                window_ms,
            } => write!(
                f,
                "this hub started {watched_ms} ms ago and has not yet watched its peer for a whole down window ({window_ms} ms)"
            ),
            Evidence::PeerLogLonger { peer, theirs, mine } => write!(
                f,
                "node {peer} is known to hold a longer log (index {} term {}) than this hub ({})",
                theirs.index,
                theirs.term,
                mine.map(|m| format!("index {} term {}", m.index, m.term))
                    .unwrap_or_else(|| "nothing".into())
            ),
        }
    }
}

/// The evidence in `facts` that the peer is alive or ahead. Empty: nothing known against a
/// promotion. Pure: same facts, same list, in a fixed order.
pub fn peer_evidence(cfg: AssistConfig, facts: &PeerFacts) -> Vec<Evidence> {
    let mut out = Vec::new();
    for message in &facts.refusals {
        out.push(Evidence::PeerRefused {
            peer: facts.peer,
            message: message.clone(),
        });
    }
    if let Some(detail) = &facts.peer_answered {
        out.push(Evidence::PeerAnswered {
            peer: facts.peer,
            detail: detail.clone(),
        });
    }
    for record in &facts.promotions {
        out.push(Evidence::RemovedByPromotion {
            record: record.clone(),
        });
    }
    match facts.peer_rpc_ago_ms {
        Some(ago) if ago < cfg.down_after_ms => out.push(Evidence::PeerHeard {
            peer: facts.peer,
            ago_ms: ago,
            window_ms: cfg.down_after_ms,
        }),
        _ => {}
    }
    if facts.watched_ms < cfg.down_after_ms {
        out.push(Evidence::NotWatchedLongEnough {
            watched_ms: facts.watched_ms,
            window_ms: cfg.down_after_ms,
        });
    }
    if let Some(theirs) = facts.peer_known_last
        && Some(theirs) > facts.my_last
    {
        out.push(Evidence::PeerLogLonger {
            peer: facts.peer,
            theirs,
            mine: facts.my_last,
        });
    }
    out
}

fn list(evidence: &[Evidence]) -> String {
    evidence
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The full gate: [`may_promote`] first (its refusals keep their words), then any evidence
/// that the peer is alive or ahead refuses the promotion, forced or not, naming the evidence.
pub fn may_promote_given(
    state: &AssistState,
    force: bool,
    evidence: &[Evidence],
) -> Result<(), PromoteRefusal> {
    may_promote(state, force)?;
    if evidence.is_empty() {
        Ok(())
    } else {
        Err(PromoteRefusal::PeerAliveOrAhead(evidence.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: AssistConfig = AssistConfig {
        suspect_after_ms: 2_000,
        down_after_ms: 10_000,
    };

    fn pos(term: u64, index: u64) -> Option<LogPos> {
        Some(LogPos { term, index })
    }

    fn probe(reachable: bool) -> TargetProbe {
        TargetProbe {
            target: "gateway 192.168.1.1:80".into(),
            reachable,
        }
    }

    fn obs(silent: u64, targets: Vec<TargetProbe>) -> AssistObservation {
        AssistObservation {
            peer_silent_ms: silent,
            peer_was_leader: false,
            peer_last: pos(2, 10),
            my_last: pos(2, 10),
            targets,
        }
    }

    #[test]
    fn the_seed_cases() {
        // The peer answers.
        assert_eq!(
            assess(CFG, &obs(0, vec![probe(true)])),
            AssistState::Healthy
        );
        // Silent past the election timeout: suspect, whatever the gateway says.
        assert_eq!(
            assess(CFG, &obs(3_000, vec![probe(false)])),
            AssistState::PeerSuspect
        );
        // Primary lost, gateway reachable: propose, not destructive (same log, peer followed).
        match assess(CFG, &obs(12_000, vec![probe(true)])) {
            AssistState::PeerDown(p) => {
                assert!(!p.destructive);
                assert_eq!(p.my_last, pos(2, 10));
                assert!(p.checks[0].contains("192.168.1.1"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
        // Primary and gateway lost: I am probably the one cut off.
        assert!(matches!(
            assess(CFG, &obs(12_000, vec![probe(false)])),
            AssistState::Uncertain { .. }
        ));
        // No target configured: cannot tell.
        assert!(matches!(
            assess(CFG, &obs(12_000, vec![])),
            AssistState::Uncertain { .. }
        ));
    }

    #[test]
    fn destructive_when_the_peer_may_hold_more() {
        let mut o = obs(12_000, vec![probe(false), probe(true)]);
        o.peer_last = pos(2, 12);
        let AssistState::PeerDown(p) = assess(CFG, &o) else {
            panic!()
        };
        assert!(p.destructive);
        assert!(
            p.checks.iter().any(|c| c.contains("up to index 12")),
            "{p:?}"
        );
        o.peer_last = pos(2, 10);
        o.peer_was_leader = true;
        let AssistState::PeerDown(p) = assess(CFG, &o) else {
            panic!()
        };
        assert!(p.destructive);
        o.peer_was_leader = false;
        o.peer_last = None;
        let AssistState::PeerDown(p) = assess(CFG, &o) else {
            panic!()
        };
        assert!(p.destructive, "an unknown peer log is assumed ahead");
    }

    #[test]
    fn promotion_gate() {
        let down = assess(CFG, &obs(12_000, vec![probe(true)]));
        assert_eq!(may_promote(&down, false), Ok(()));
        let healthy = AssistState::Healthy;
        assert_eq!(
            may_promote(&healthy, true),
            Err(PromoteRefusal::PeerAnswers)
        );
        for s in [
            AssistState::PeerSuspect,
            AssistState::Uncertain { reason: "x".into() },
        ] {
            assert!(may_promote(&s, false).is_err());
            assert_eq!(may_promote(&s, true), Ok(()));
        }
    }

    /// Exhaustive over a grid of observations: the properties the household relies on.
    #[test]
    fn exhaustive_properties() {
        let silences = [0, 1_999, 2_000, 9_999, 10_000, 60_000];
        let positions = [None, pos(1, 5), pos(2, 10), pos(2, 12), pos(3, 1)];
        let target_sets: Vec<Vec<TargetProbe>> = vec![
            vec![],
            vec![probe(false)],
            vec![probe(true)],
            vec![probe(false), probe(true)],
            vec![probe(false), probe(false)],
        ];
        for silent in silences {
            for was_leader in [false, true] {
                for peer_last in positions {
                    for my_last in positions {
                        for targets in &target_sets {
                            let o = AssistObservation {
                                peer_silent_ms: silent,
                                peer_was_leader: was_leader,
                                peer_last,
                                my_last,
                                targets: targets.clone(),
                            };
                            let s = assess(CFG, &o);
                            let any_target = targets.iter().any(|t| t.reachable);
                            // Healthy exactly while the peer answers within the timeout.
                            assert_eq!(s == AssistState::Healthy, silent < CFG.suspect_after_ms);
                            match &s {
                                AssistState::PeerDown(p) => {
                                    // Never a proposal without an independent target answering,
                                    // nor before the down threshold.
                                    assert!(any_target && silent >= CFG.down_after_ms);
                                    // Destructive whenever the peer might hold more.
                                    let ahead = peer_last.is_none_or(|p| Some(p) > my_last);
                                    assert_eq!(p.destructive, was_leader || ahead);
                                    assert_eq!(p.my_last, my_last);
                                }
                                AssistState::Uncertain { .. } => {
                                    assert!(!any_target && silent >= CFG.down_after_ms)
                                }
                                AssistState::PeerSuspect => assert!(
                                    (CFG.suspect_after_ms..CFG.down_after_ms).contains(&silent)
                                ),
                                AssistState::Healthy => {}
                            }
                            // Promotion without force only from PEER_DOWN; never while healthy.
                            assert_eq!(
                                may_promote(&s, false).is_ok(),
                                matches!(s, AssistState::PeerDown(_))
                            );
                            assert_eq!(may_promote(&s, true).is_ok(), s != AssistState::Healthy);
                        }
                    }
                }
            }
        }
    }

    fn facts() -> PeerFacts {
        PeerFacts {
            peer: 2,
            watched_ms: 60_000,
            peer_rpc_ago_ms: None,
            refusals: vec![],
            promotions: vec![],
            peer_known_last: pos(2, 10),
            my_last: pos(2, 10),
            peer_answered: None,
        }
    }

    /// Issue 13 item 1, the exact case: the old primary returns after its peer was promoted,
    /// watches past the down window (PEER_DOWN: its gateway answers, its peer never does) and
    /// is refused by the peer. Neither `promote` nor `promote --force` is accepted, and the
    /// refusal names the peer's answer.
    #[test]
    fn a_returning_hub_refused_by_its_promoted_peer_cannot_promote_itself() {
        let down = assess(CFG, &obs(12_000, vec![probe(true)]));
        assert!(matches!(down, AssistState::PeerDown(_)));
        let mut f = facts();
        f.refusals = vec![
            "node 2 refuses node 1: node 1 was removed when node 2 was promoted \
                           to a one-node cluster by \"ana\""
                .into(),
        ];
        let e = peer_evidence(CFG, &f);
        assert_eq!(e.len(), 1);
        for force in [false, true] {
            let err = may_promote_given(&down, force, &e).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("even with --force"), "{text}");
            assert!(
                text.contains("node 2 answered this hub with a refusal"),
                "{text}"
            );
            assert!(text.contains("was promoted"), "{text}");
        }
        // The same hub without that evidence would have been allowed (the bug on main).
        assert_eq!(may_promote_given(&down, true, &[]), Ok(()));
    }

    #[test]
    fn each_kind_of_evidence_is_named() {
        let mut f = facts();
        assert!(peer_evidence(CFG, &f).is_empty());
        f.promotions = vec!["node 2 promoted by \"ana\"; removed [1]".into()];
        assert!(matches!(
            &peer_evidence(CFG, &f)[..],
            [Evidence::RemovedByPromotion { .. }]
        ));
        let mut f = facts();
        f.peer_answered = Some("Leader in term 4, voters [2]".into());
        let e = peer_evidence(CFG, &f);
        assert!(
            e[0].to_string()
                .contains("node 2 answered a status request just now (Leader in term 4"),
            "{e:?}"
        );
        let mut f = facts();
        f.peer_rpc_ago_ms = Some(9_999);
        let e = peer_evidence(CFG, &f);
        assert!(e[0].to_string().contains("9999 ms ago"), "{e:?}");
        f.peer_rpc_ago_ms = Some(10_000);
        assert!(peer_evidence(CFG, &f).is_empty(), "outside the window");
        let mut f = facts();
        f.watched_ms = 3_000;
        let e = peer_evidence(CFG, &f);
        assert!(e[0].to_string().contains("started 3000 ms ago"), "{e:?}");
        let mut f = facts();
        f.peer_known_last = pos(2, 11);
        let e = peer_evidence(CFG, &f);
        assert!(
            e[0].to_string().contains("longer log (index 11 term 2)"),
            "{e:?}"
        );
        f.peer_known_last = pos(3, 1);
        assert_eq!(peer_evidence(CFG, &f).len(), 1, "a later term is longer");
        f.my_last = None;
        assert!(peer_evidence(CFG, &f)[0].to_string().contains("(nothing)"));
        f.peer_known_last = None;
        assert!(peer_evidence(CFG, &f).is_empty());
    }

    /// Exhaustive over a grid of facts and states: evidence refuses every promotion, forced or
    /// not; without evidence the old gate decides unchanged; the refusal names every piece.
    #[test]
    fn exhaustive_evidence_gate() {
        let states = [
            AssistState::Healthy,
            AssistState::PeerSuspect,
            assess(CFG, &obs(12_000, vec![probe(true)])),
            AssistState::Uncertain { reason: "x".into() },
        ];
        let positions = [None, pos(1, 5), pos(2, 10), pos(2, 12), pos(3, 1)];
        for watched in [0, 9_999, 10_000, 60_000] {
            for rpc in [None, Some(0), Some(9_999), Some(10_000), Some(60_000)] {
                for refused in [false, true] {
                    for answered in [false, true] {
                        for removed in [false, true] {
                            for theirs in positions {
                                for mine in positions {
                                    let f = PeerFacts {
                                        peer: 7,
                                        watched_ms: watched,
                                        peer_rpc_ago_ms: rpc,
                                        refusals: if refused { vec!["no".into()] } else { vec![] },
                                        promotions: if removed { vec!["p".into()] } else { vec![] },
                                        peer_known_last: theirs,
                                        my_last: mine,
                                        peer_answered: answered.then(|| "up".to_string()),
                                    };
                                    let e = peer_evidence(CFG, &f);
                                    let alive_or_ahead = refused
                                        || answered
                                        || removed
                                        || rpc.is_some_and(|a| a < CFG.down_after_ms)
                                        || watched < CFG.down_after_ms
                                        || theirs.is_some_and(|t| Some(t) > mine);
                                    assert_eq!(!e.is_empty(), alive_or_ahead, "{f:?}");
                                    for s in &states {
                                        for force in [false, true] {
                                            let r = may_promote_given(s, force, &e);
                                            let old = may_promote(s, force);
                                            if old.is_err() {
                                                assert_eq!(r, old);
                                            } else if alive_or_ahead {
                                                let Err(PromoteRefusal::PeerAliveOrAhead(named)) =
                                                    &r
                                                else {
                                                    panic!("{r:?}")
                                                };
                                                assert_eq!(named, &e);
                                                let text = r.unwrap_err().to_string();
                                                for piece in &e {
                                                    assert!(text.contains(&piece.to_string()));
                                                }
                                            } else {
                                                assert_eq!(r, Ok(()));
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
