//! Chain-head cross-checks between running nodes (DESIGN.md "The audit chain": nodes
//! cross-check heads at the same index, and a node whose local chain disagrees fences itself
//! and says so). Issue 13 item 5: one node's log rewritten on disk (payload changed, frame CRC
//! recomputed, `state/` deleted) re-applies into a chain that verifies on its own; only a
//! comparison with the other nodes shows it.
//!
//! Each node periodically learns its peers' applied heads `(index, hash)` and compares each with
//! its own hash at that index. [`judge`] then decides, from the comparisons alone: a node that
//! a majority of the cluster contradicts is fenced (it stops serving its chain); nodes that
//! contradict a majority are named. Pure: no I/O, same input, same verdict.

use crate::Hash;

/// What one comparison with a peer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// Same hash at a common index.
    Agree { index: u64 },
    /// Different hashes at a common index.
    Disagree {
        index: u64,
        ours: Hash,
        theirs: Hash,
    },
    /// Nothing to compare (the peer did not answer, has applied nothing, or is ahead of this
    /// node: then it compares at this node's head instead).
    Unknown,
}

/// Compares a peer's applied head with this node's chain. `ours(i)` is this node's hash at
/// index `i`, if it has applied `i`.
pub fn compare(peer_head: Option<(u64, Hash)>, ours: impl Fn(u64) -> Option<Hash>) -> Compared {
    let Some((index, theirs)) = peer_head else {
        return Compared::Unknown;
    };
    match ours(index) {
        Some(o) if o == theirs => Compared::Agree { index },
        Some(o) => Compared::Disagree {
            index,
            ours: o,
            theirs,
        },
        None => Compared::Unknown,
    }
}

/// The outcome of one round of comparisons.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// A majority of the cluster holds another chain: this node must stop serving its own.
    /// (peer, index) of every contradicting peer.
    pub fenced: Option<Vec<(u64, u64)>>,
    /// Peers whose chain differs from this node's at a common index: (peer, index).
    pub disagreeing: Vec<(u64, u64)>,
    /// Whether this node's side (itself and the peers agreeing with it) is a majority of the
    /// cluster: then `disagreeing` are the nodes that disagree with the majority.
    pub majority_with_us: bool,
}

/// Decides from this node's comparisons with its peers, in a cluster of `members` nodes
/// (this one included). Fenced when the peers that contradict this node are a majority of the
/// cluster; the disagreeing peers are named always, with whether the majority sides with us.
/// With two nodes neither side is a majority: both name the other, nobody is fenced.
pub fn judge(members: usize, comparisons: &[(u64, Compared)]) -> Verdict {
    let majority = members / 2 + 1;
    let disagreeing: Vec<(u64, u64)> = comparisons
        .iter()
        .filter_map(|(p, c)| match c {
            Compared::Disagree { index, .. } => Some((*p, *index)),
            _ => None,
        })
        .collect();
    let agreeing = comparisons
        .iter()
        .filter(|(_, c)| matches!(c, Compared::Agree { .. }))
        .count();
    let fenced =
        (!disagreeing.is_empty() && disagreeing.len() >= majority).then(|| disagreeing.clone());
    Verdict {
        majority_with_us: fenced.is_none() && agreeing + 1 >= majority,
        fenced,
        disagreeing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Hash = [1; 32];
    const B: Hash = [2; 32];

    fn own(i: u64) -> Option<Hash> {
        (i <= 20).then_some(if i >= 18 { B } else { A })
    }

    #[test]
    fn comparisons() {
        assert_eq!(compare(None, own), Compared::Unknown);
        assert_eq!(compare(Some((10, A)), own), Compared::Agree { index: 10 });
        assert_eq!(
            compare(Some((19, A)), own),
            Compared::Disagree {
                index: 19,
                ours: B,
                theirs: A
            }
        );
        assert_eq!(compare(Some((21, A)), own), Compared::Unknown, "peer ahead");
    }

    /// Issue 13 item 5: three nodes, node 2's entry 18 forged. Node 2 sees both others
    /// disagree: fenced. Nodes 1 and 3 agree with each other and name node 2.
    #[test]
    fn the_forged_node_of_three_is_fenced_and_named_by_the_others() {
        let d = Compared::Disagree {
            index: 20,
            ours: B,
            theirs: A,
        };
        let v2 = judge(3, &[(1, d), (3, d)]);
        assert_eq!(v2.fenced, Some(vec![(1, 20), (3, 20)]));
        assert!(!v2.majority_with_us);
        let v1 = judge(3, &[(2, d), (3, Compared::Agree { index: 20 })]);
        assert_eq!(v1.fenced, None);
        assert_eq!(v1.disagreeing, vec![(2, 20)]);
        assert!(v1.majority_with_us);
        // Node 1 while node 3 has not answered yet: names node 2, no majority either way.
        let v = judge(3, &[(2, d), (3, Compared::Unknown)]);
        assert_eq!(v.fenced, None);
        assert_eq!(v.disagreeing, vec![(2, 20)]);
        assert!(!v.majority_with_us);
        // Two hubs: neither is fenced, each names the other.
        let v = judge(2, &[(1, d)]);
        assert_eq!((v.fenced, v.disagreeing), (None, vec![(1, 20)]));
    }

    /// Exhaustive over clusters of 1..=5 and every mix of comparison outcomes.
    #[test]
    fn exhaustive() {
        let kinds = [
            Compared::Agree { index: 5 },
            Compared::Disagree {
                index: 5,
                ours: A,
                theirs: B,
            },
            Compared::Unknown,
        ];
        for members in 1usize..=5 {
            let peers = members - 1;
            let combos = 3usize.pow(peers as u32);
            for mut code in 0..combos {
                let mut cs = Vec::new();
                for p in 0..peers {
                    cs.push((p as u64 + 10, kinds[code % 3]));
                    code /= 3;
                }
                let v = judge(members, &cs);
                let dis = cs
                    .iter()
                    .filter(|(_, c)| matches!(c, Compared::Disagree { .. }))
                    .count();
                let agr = cs
                    .iter()
                    .filter(|(_, c)| matches!(c, Compared::Agree { .. }))
                    .count();
                let majority = members / 2 + 1;
                assert_eq!(v.disagreeing.len(), dis);
                // Fenced exactly when the contradicting peers are a majority of the cluster.
                assert_eq!(v.fenced.is_some(), dis >= majority && dis > 0, "{cs:?}");
                // Never both fenced and on the majority side; both sides can't be majorities.
                assert!(!(v.fenced.is_some() && v.majority_with_us));
                assert_eq!(v.majority_with_us, dis < majority && agr + 1 >= majority);
                // Agreement alone never fences; a lone node is never fenced.
                if dis == 0 || members == 1 {
                    assert!(v.fenced.is_none());
                }
            }
        }
    }
}
