//! The witness caretaker rule (docs/DESIGN.md §6).
//!
//! A voter refuses a candidate whose log is behind its own. If the witness holds entries that
//! every live hub lacks and the leader is gone, no hub can win an election and the witness
//! never campaigns: the cluster is stuck. The caretaker decides, from plain observations,
//! when the witness should campaign once, and to which hub it must hand leadership at once.
//! The witness never accepts intents or dispatches while it is a caretaker leader.

/// A position in the log, ordered as Raft orders logs: by term of the last entry, then index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos {
    pub term: u64,
    pub index: u64,
}

/// What the witness knows about one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubView {
    pub id: u64,
    /// The hub answered its last status probe.
    pub reachable: bool,
    /// The hub's last log position from that probe.
    pub last_log: Option<LogPos>,
    /// While the witness leads: the highest index replicated to that hub.
    pub matched: Option<u64>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The witness currently holds leadership (as a caretaker).
    pub i_lead: bool,
    /// Some node is known to lead (the witness follows it).
    pub leader_known: bool,
    /// How long no leader has been known, in milliseconds.
    pub leaderless_ms: u64,
    /// The witness's own last log position.
    pub my_last: Option<LogPos>,
    pub hubs: Vec<HubView>,
}

/// How long to wait without a leader before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaretakerConfig {
    /// The leader must have been silent at least this long (the election timeout: any voter
    /// would grant a vote by then).
    pub lease_ms: u64,
}

/// What the witness should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: a leader exists, or a hub can win by itself, or we must wait longer.
    Wait,
    /// Campaign once: the witness holds entries no live hub has.
    Campaign,
    /// Lead only long enough to replicate; hand over to this hub now.
    TransferTo(u64),
    /// Leading, but no hub has caught up yet: keep replicating.
    KeepReplicating,
}

/// The caretaker decision. Pure: same observation, same decision.
pub fn decide(cfg: CaretakerConfig, obs: &Observation) -> Decision {
    if obs.i_lead {
        // Hand over to the most up-to-date reachable hub that has everything we have.
        let my_index = obs.my_last.map(|p| p.index);
        let best = obs
            .hubs
            .iter()
            .filter(|h| h.reachable)
            .filter(|h| match (h.matched, my_index) {
                (Some(m), Some(mine)) => m >= mine,
                (_, None) => true,
                (None, Some(_)) => false,
            })
            .max_by_key(|h| (h.matched, std::cmp::Reverse(h.id)));
        return match best {
            Some(h) => Decision::TransferTo(h.id),
            None => Decision::KeepReplicating,
        };
    }
    // No patience beyond the lease: a live hub is only known here because it asked for our
    // vote (so it lost the leader too), and if every such hub is behind us none can win
    // without us; waiting longer only makes the household wait.
    if obs.leader_known || obs.leaderless_ms < cfg.lease_ms {
        return Decision::Wait;
    }
    let live: Vec<&HubView> = obs.hubs.iter().filter(|h| h.reachable).collect();
    if live.is_empty() {
        // No hub to hand over to: campaigning would only raise terms.
        return Decision::Wait;
    }
    // A hub whose log is at least as new as ours can win with our vote: let it.
    let some_hub_can_win = live.iter().any(|h| h.last_log >= obs.my_last);
    if some_hub_can_win {
        Decision::Wait
    } else {
        Decision::Campaign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: CaretakerConfig = CaretakerConfig { lease_ms: 1000 };

    fn pos(term: u64, index: u64) -> Option<LogPos> {
        Some(LogPos { term, index })
    }

    fn hub(id: u64, reachable: bool, last: Option<LogPos>) -> HubView {
        HubView {
            id,
            reachable,
            last_log: last,
            matched: None,
        }
    }

    fn obs(leaderless_ms: u64, my_last: Option<LogPos>, hubs: Vec<HubView>) -> Observation {
        Observation {
            i_lead: false,
            leader_known: false,
            leaderless_ms,
            my_last,
            hubs,
        }
    }

    #[test]
    fn campaigns_only_when_ahead_of_every_live_hub_after_the_lease() {
        let ahead = obs(
            5000,
            pos(2, 10),
            vec![hub(1, false, None), hub(2, true, pos(2, 7))],
        );
        assert_eq!(decide(CFG, &ahead), Decision::Campaign);

        let impatient = Observation {
            leaderless_ms: 100,
            ..ahead.clone()
        };
        assert_eq!(decide(CFG, &impatient), Decision::Wait);

        let led = Observation {
            leader_known: true,
            ..ahead.clone()
        };
        assert_eq!(decide(CFG, &led), Decision::Wait);

        let hub_equal = obs(5000, pos(2, 10), vec![hub(2, true, pos(2, 10))]);
        assert_eq!(decide(CFG, &hub_equal), Decision::Wait);

        let hub_newer_term = obs(5000, pos(2, 10), vec![hub(2, true, pos(3, 4))]);
        assert_eq!(decide(CFG, &hub_newer_term), Decision::Wait);

        let no_live_hub = obs(
            5000,
            pos(2, 10),
            vec![hub(1, false, None), hub(2, false, None)],
        );
        assert_eq!(decide(CFG, &no_live_hub), Decision::Wait);

        let hub_unknown_log = obs(5000, pos(1, 1), vec![hub(2, true, None)]);
        assert_eq!(decide(CFG, &hub_unknown_log), Decision::Campaign);
    }

    #[test]
    fn leading_witness_hands_over_to_a_caught_up_hub() {
        let mut o = obs(0, pos(3, 10), vec![hub(1, false, None), hub(2, true, None)]);
        o.i_lead = true;
        assert_eq!(decide(CFG, &o), Decision::KeepReplicating);
        o.hubs[1].matched = Some(9);
        assert_eq!(decide(CFG, &o), Decision::KeepReplicating);
        o.hubs[1].matched = Some(10);
        assert_eq!(decide(CFG, &o), Decision::TransferTo(2));
        // Both caught up: prefer the lower id deterministically.
        o.hubs[0] = HubView {
            id: 1,
            reachable: true,
            last_log: None,
            matched: Some(10),
        };
        assert_eq!(decide(CFG, &o), Decision::TransferTo(1));
    }

    /// Exhaustive over small observations: never campaign while a leader is known, never
    /// campaign when a live hub could win, never hand over to an unreachable hub.
    #[test]
    fn exhaustive_safety_properties() {
        let positions = [None, pos(1, 1), pos(1, 2), pos(2, 1)];
        for i_lead in [false, true] {
            for leader_known in [false, true] {
                for leaderless_ms in [0, 5000] {
                    for my in positions {
                        for (r1, r2) in [(false, false), (false, true), (true, false), (true, true)]
                        {
                            for l1 in positions {
                                for l2 in positions {
                                    for m in [None, Some(1), Some(2)] {
                                        let o = Observation {
                                            i_lead,
                                            leader_known,
                                            leaderless_ms,
                                            my_last: my,
                                            hubs: vec![
                                                HubView {
                                                    id: 1,
                                                    reachable: r1,
                                                    last_log: l1,
                                                    matched: m,
                                                },
                                                HubView {
                                                    id: 2,
                                                    reachable: r2,
                                                    last_log: l2,
                                                    matched: m,
                                                },
                                            ],
                                        };
                                        match decide(CFG, &o) {
                                            Decision::Campaign => {
                                                assert!(!i_lead && !leader_known);
                                                assert!(o.hubs.iter().any(|h| h.reachable));
                                                assert!(
                                                    o.hubs
                                                        .iter()
                                                        .filter(|h| h.reachable)
                                                        .all(|h| h.last_log < my)
                                                );
                                            }
                                            Decision::TransferTo(id) => {
                                                assert!(i_lead);
                                                assert!(
                                                    o.hubs
                                                        .iter()
                                                        .any(|h| h.id == id && h.reachable)
                                                );
                                            }
                                            Decision::KeepReplicating => assert!(i_lead),
                                            Decision::Wait => assert!(!i_lead),
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
