//! What a node's data directory says about itself at startup, and what the node must do about
//! it (issue 14.1, 14.2, 14.5). Pure: the node gathers the facts, this decides.
//!
//! Two outcomes, independent of each other:
//! - **rebuild the state machine** from the log when it cannot be trusted: it claims entries
//!   the log no longer holds (a torn or restored log), or it lost entries it had reported
//!   durable (sled's silent rollback). The state machine is derived data; the log is the truth.
//! - **hold the vote**: the node neither votes nor campaigns until a leader elected without it
//!   has caught it up. A node whose log may be missing entries it acknowledged could otherwise
//!   elect a leader without them (acknowledged writes lost).

/// What the node found in its data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub node_id: u64,
    /// The directory was created by this start (no identity file).
    pub fresh: bool,
    /// The directory's marker file is not the one Hearth wrote (another inode): the directory
    /// was copied or restored from a backup.
    pub copied: bool,
    /// Last index in the Raft log.
    pub log_last: Option<u64>,
    /// Last index the state machine reports applied.
    pub sm_applied: Option<u64>,
    /// The durable applied high-water mark (written after the state machine was flushed).
    pub high_water: Option<u64>,
    /// Index of this node's own last signed checkpoint.
    pub own_checkpoint: Option<u64>,
    /// A hold persisted by an earlier start that has not been lifted yet.
    pub pending: Option<Hold>,
}

/// Why a node's vote is held, and what its log must reach before it is released.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// Index the log must hold (the most this node is known to have held), if known.
    pub floor: Option<u64>,
    pub reason: String,
    /// The data directory is new: besides being caught up, the chain must admit this
    /// directory's own incarnation (`Command::AdmitNode`) before the node votes. A node whose
    /// id the chain knows under another incarnation was wiped, and only an admin's explicit
    /// `hearth cluster rejoin` admits it (issue 14.1).
    #[serde(default)]
    pub needs_admission: bool,
}

/// What the chain says about a node's own incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The chain admits this very incarnation.
    Admitted,
    /// The chain admits no incarnation under this id yet (a node being added or formed).
    NotYet,
    /// The chain admits another incarnation under this id: this data directory replaced the
    /// one the cluster knew (it was wiped, or the id is reused on another card).
    Other(String),
}

/// Compares a node's own incarnation with the one its caught-up chain admits.
pub fn admission(own: &str, recorded: Option<&str>) -> Admission {
    match recorded {
        Some(r) if r == own => Admission::Admitted,
        Some(r) => Admission::Other(r.to_string()),
        None => Admission::NotYet,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Rebuild the state machine from the log, for this reason.
    pub rebuild_state: Option<String>,
    pub hold: Option<Hold>,
}

fn above(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Decides what a node must do before it serves Raft.
pub fn assess(f: &Facts) -> Verdict {
    let id = f.node_id;
    let mut v = Verdict::default();
    let log = f
        .log_last
        .map_or("no entry".to_string(), |i| format!("index {i}"));
    if above(f.sm_applied, f.log_last) {
        v.rebuild_state = Some(format!(
            "the state machine reports index {} applied but the Raft log ends at {log}",
            f.sm_applied.unwrap_or(0)
        ));
    } else if above(f.high_water, f.sm_applied) {
        v.rebuild_state = Some(format!(
            "the state machine reports {} applied but had durably applied index {} \
             (high-water mark): it lost entries",
            f.sm_applied
                .map_or("nothing".to_string(), |i| format!("index {i}")),
            f.high_water.unwrap_or(0)
        ));
    }
    let held = [f.sm_applied, f.high_water, f.own_checkpoint]
        .into_iter()
        .flatten()
        .max();
    let mut reasons = Vec::new();
    let mut floor = None;
    if let Some(p) = &f.pending {
        reasons.push(p.reason.clone());
        floor = p.floor;
    }
    if above(held, f.log_last) {
        reasons.push(format!(
            "node {id}'s Raft log ends at {log} but this node had held index {} \
             (its data went backwards: restored from an older copy, or the disk lost writes)",
            held.unwrap_or(0)
        ));
        floor = floor.max(held);
    }
    if f.copied && f.pending.is_none() {
        reasons.push(format!(
            "node {id}'s data directory was copied or restored (its marker file is not the one \
             this node wrote); it may be older than what the node acknowledged"
        ));
    }
    let mut needs_admission = f.pending.as_ref().is_some_and(|p| p.needs_admission);
    if f.fresh && f.pending.is_none() {
        reasons.push(format!(
            "node {id}'s data directory is new (first start, or wiped)"
        ));
        needs_admission = true;
    }
    if !reasons.is_empty() {
        v.hold = Some(Hold {
            floor,
            reason: reasons.join("; "),
            needs_admission,
        });
    }
    v
}

/// What one peer, asked at this node's start, knows this node held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerKnows {
    pub peer: u64,
    /// The peer leads and had replicated up to this index to this node.
    pub leader_matched: Option<u64>,
    /// The peer is the witness and cosigned this hub's checkpoint at this index (the hub then
    /// held it: it signed its own head there).
    pub cosigned: Option<u64>,
}

/// Whether what peers know this node held lies beyond its log (`log_last`): its data went
/// backwards. Returns the floor (the most any peer knows it held) and why, naming each peer.
pub fn peers_say_backwards(
    id: u64,
    log_last: Option<u64>,
    knows: &[PeerKnows],
) -> Option<(u64, String)> {
    let log = log_last.map_or("no entry".to_string(), |i| format!("index {i}"));
    let mut floor = None;
    let mut why = Vec::new();
    for k in knows {
        if let Some(m) = k.leader_matched.filter(|m| above(Some(*m), log_last)) {
            why.push(format!(
                "leader {} had replicated index {m} to node {id}",
                k.peer
            ));
            floor = floor.max(Some(m));
        }
        if let Some(c) = k.cosigned.filter(|c| above(Some(*c), log_last)) {
            why.push(format!(
                "witness {} cosigned node {id}'s checkpoint at index {c}",
                k.peer
            ));
            floor = floor.max(Some(c));
        }
    }
    let floor = floor?;
    Some((
        floor,
        format!(
            "{}, but node {id}'s Raft log ends at {log}: its data went backwards (restored from \
             an older copy, or lost writes)",
            why.join(" and ")
        ),
    ))
}

/// Whether a held node may vote again: a leader other than itself has replicated to it, it
/// has applied both what that leader had committed and its own floor, and — for a new data
/// directory — its caught-up chain admits this directory's incarnation.
pub fn may_release(
    hold: &Hold,
    leader_commit: Option<u64>,
    applied: Option<u64>,
    admitted: &Admission,
) -> bool {
    let Some(c) = leader_commit else { return false };
    let target = hold.floor.map_or(c, |f| f.max(c));
    applied.is_some_and(|a| a >= target)
        && (!hold.needs_admission || *admitted == Admission::Admitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            node_id: 2,
            log_last: Some(10),
            sm_applied: Some(10),
            high_water: Some(8),
            own_checkpoint: Some(9),
            ..Facts::default()
        }
    }

    #[test]
    fn a_healthy_restart_changes_nothing() {
        assert_eq!(assess(&facts()), Verdict::default());
        // The state machine may lag the log after a crash (it is re-applied).
        let f = Facts {
            sm_applied: Some(9),
            high_water: Some(9),
            ..facts()
        };
        assert_eq!(assess(&f), Verdict::default());
    }

    #[test]
    fn a_state_machine_ahead_of_its_log_is_rebuilt_and_the_vote_held() {
        let f = Facts {
            log_last: Some(7),
            ..facts()
        };
        let v = assess(&f);
        assert!(v.rebuild_state.unwrap().contains("ends at index 7"));
        let h = v.hold.unwrap();
        assert_eq!(h.floor, Some(10));
        assert!(h.reason.contains("went backwards"), "{}", h.reason);
        // An empty log with applied state: same.
        let v = assess(&Facts {
            log_last: None,
            ..facts()
        });
        assert!(v.rebuild_state.is_some() && v.hold.unwrap().floor == Some(10));
    }

    #[test]
    fn a_rolled_back_state_machine_is_rebuilt_without_holding_an_intact_log() {
        let f = Facts {
            sm_applied: Some(3),
            high_water: Some(8),
            ..facts()
        };
        let v = assess(&f);
        assert!(v.rebuild_state.unwrap().contains("lost entries"));
        assert_eq!(v.hold, None, "the log still holds index 10");
        let v = assess(&Facts {
            sm_applied: None,
            ..f
        });
        assert!(v.rebuild_state.unwrap().contains("nothing"));
    }

    #[test]
    fn a_checkpoint_or_high_water_beyond_the_log_holds_the_vote() {
        for f in [
            Facts {
                own_checkpoint: Some(12),
                ..facts()
            },
            Facts {
                high_water: Some(11),
                sm_applied: Some(11),
                ..facts()
            },
        ] {
            let v = assess(&f);
            assert!(v.hold.unwrap().floor.unwrap() > 10, "{f:?}");
        }
    }

    #[test]
    fn new_and_copied_directories_are_held_without_a_floor() {
        let fresh = Facts {
            node_id: 3,
            fresh: true,
            ..Facts::default()
        };
        let h = assess(&fresh).hold.unwrap();
        assert_eq!(h.floor, None);
        assert!(h.reason.contains("node 3") && h.reason.contains("new"));
        assert!(
            h.needs_admission,
            "a new directory votes only once admitted"
        );
        // The need survives a restart before the admission.
        let again = assess(&Facts {
            fresh: false,
            pending: Some(h.clone()),
            ..fresh.clone()
        });
        assert_eq!(again.hold, Some(h));
        let h = assess(&Facts {
            copied: true,
            ..facts()
        })
        .hold
        .unwrap();
        assert!(h.reason.contains("copied or restored"));
        assert_eq!(h.floor, None);
        assert!(
            !h.needs_admission,
            "a restored copy keeps its own incarnation: catching up is enough"
        );
    }

    #[test]
    fn a_pending_hold_survives_a_restart_and_keeps_its_floor() {
        let pending = Hold {
            floor: Some(40),
            reason: "earlier".into(),
            needs_admission: false,
        };
        let v = assess(&Facts {
            pending: Some(pending.clone()),
            copied: true,
            ..facts()
        });
        assert_eq!(v.hold, Some(pending));
    }

    #[test]
    fn release_needs_a_leader_and_both_the_floor_and_its_commit() {
        let h = Hold {
            floor: Some(10),
            reason: String::new(),
            needs_admission: false,
        };
        let no = Admission::NotYet;
        assert!(!may_release(&h, None, Some(100), &no), "no leader yet");
        assert!(!may_release(&h, Some(5), Some(9), &no), "below the floor");
        assert!(
            !may_release(&h, Some(12), Some(11), &no),
            "below the leader's commit"
        );
        assert!(may_release(&h, Some(12), Some(12), &no));
        let open = Hold {
            floor: None,
            reason: String::new(),
            needs_admission: false,
        };
        assert!(!may_release(&open, Some(3), None, &no));
        assert!(may_release(&open, Some(3), Some(3), &no));
    }

    #[test]
    fn a_leader_or_a_witness_that_knows_more_than_the_log_holds_says_it_went_backwards() {
        let k = |peer, leader_matched, cosigned| PeerKnows {
            peer,
            leader_matched,
            cosigned,
        };
        // Nothing known beyond the log: nothing to say.
        assert_eq!(peers_say_backwards(2, Some(30), &[]), None);
        assert_eq!(
            peers_say_backwards(2, Some(30), &[k(1, Some(30), None), k(3, None, Some(29))]),
            None
        );
        // The witness cosigned this hub's head at 40 (the leader is down, or knows less).
        let (floor, why) =
            peers_say_backwards(2, Some(30), &[k(1, Some(25), None), k(3, None, Some(40))])
                .unwrap();
        assert_eq!(floor, 40);
        assert!(
            why.contains("witness 3 cosigned node 2's checkpoint at index 40")
                && why.contains("ends at index 30")
                && !why.contains("leader 1"),
            "{why}"
        );
        // Both know more: the floor is the most either knows, and both are named.
        let (floor, why) =
            peers_say_backwards(2, None, &[k(1, Some(50), None), k(3, None, Some(40))]).unwrap();
        assert_eq!(floor, 50);
        assert!(
            why.contains("leader 1 had replicated index 50") && why.contains("witness 3"),
            "{why}"
        );
        assert!(why.contains("ends at no entry"), "{why}");
    }

    #[test]
    fn a_new_directory_votes_only_once_the_chain_admits_its_own_incarnation() {
        assert_eq!(admission("a1", Some("a1")), Admission::Admitted);
        assert_eq!(admission("a1", None), Admission::NotYet);
        assert_eq!(admission("a1", Some("b2")), Admission::Other("b2".into()));
        let h = Hold {
            floor: None,
            reason: "new".into(),
            needs_admission: true,
        };
        let caught_up = (Some(20), Some(20));
        for (adm, votes) in [
            (Admission::Admitted, true),
            (Admission::NotYet, false),
            // Wiped: the chain admits the directory the card had before. Caught up or not,
            // only an admin's rejoin (a new admission) lets it vote.
            (Admission::Other("b2".into()), false),
        ] {
            assert_eq!(
                may_release(&h, caught_up.0, caught_up.1, &adm),
                votes,
                "{adm:?}"
            );
        }
        // Admitted but not caught up: still held.
        assert!(!may_release(&h, Some(20), Some(19), &Admission::Admitted));
        assert!(!may_release(&h, None, Some(20), &Admission::Admitted));
        // A hold written before admissions existed decodes as not needing one.
        let old: Hold = serde_json::from_str(r#"{"floor":null,"reason":"x"}"#).unwrap();
        assert!(!old.needs_admission);
    }
}
