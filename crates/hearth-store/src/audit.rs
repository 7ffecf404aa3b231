//! Walking the audit chain of one node: the stored record bytes come from the Raft log, the
//! hashes from the state machine. Used by `hearth audit verify|export|tail` and at startup.

use std::io;

use hearth_core::chain::{ChainVerifier, VerifyFailure};
use hearth_core::{Hash, Record};

use crate::{LogStore, StateMachine};

/// One link of the chain as stored on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub record: Record,
    pub hash: Hash,
}

/// Outcome of verifying a node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVerify {
    /// Index the walk started after, with its hash (`None`: from the genesis).
    pub anchor: Option<(u64, Hash)>,
    pub checked: u64,
    pub head: Option<(u64, Hash)>,
    pub failure: Option<VerifyFailure>,
}

/// The anchor a walk of this node's chain starts from: the genesis, a snapshot's head, or
/// (when the log was purged) the stored hash just before the first entry still in the log.
pub fn start_point(log: &LogStore, sm: &StateMachine) -> io::Result<Option<(u64, Hash)>> {
    let anchor = sm.anchor()?;
    let first_in_log = log.bounds()?.map(|(f, _)| f);
    match (anchor, first_in_log) {
        (Some((ai, ah)), Some(f)) if f <= ai + 1 => Ok(Some((ai, ah))),
        (_, Some(0)) | (_, None) => Ok(anchor),
        (_, Some(f)) => Ok(sm.hash_at(f - 1)?.map(|h| (f - 1, h))),
    }
}

/// Reads links `from..=to` (both must be applied).
pub fn links(log: &LogStore, sm: &StateMachine, from: u64, to: u64) -> io::Result<Vec<Link>> {
    let mut out = Vec::new();
    for i in from..=to {
        let bytes = log
            .record_bytes(i)?
            .ok_or_else(|| io::Error::other(format!("entry {i} is not in the Raft log")))?;
        let hash = sm
            .hash_at(i)?
            .ok_or_else(|| io::Error::other(format!("entry {i} has no chain hash")))?;
        let record = Record::decode(&bytes).map_err(io::Error::other)?;
        out.push(Link { record, hash });
    }
    Ok(out)
}

/// Verifies every applied entry of this node: each stored record against its stored hash and
/// its predecessor. Stops at the first bad index.
pub fn verify(log: &LogStore, sm: &StateMachine) -> io::Result<NodeVerify> {
    let anchor = start_point(log, sm)?;
    let head = sm.head()?;
    let mut v = match anchor {
        None => ChainVerifier::new_genesis(),
        Some((i, h)) => ChainVerifier::after(i, h),
    };
    let mut report = NodeVerify {
        anchor,
        checked: 0,
        head,
        failure: None,
    };
    let Some((last, _)) = head else {
        return Ok(report);
    };
    let first = anchor.map(|(i, _)| i + 1).unwrap_or(0);
    if let Some((_, h)) = anchor
        && h == hearth_core::ZERO_HASH
        && first > 0
    {
        report.failure = Some(VerifyFailure::Malformed {
            index: first,
            reason: "the chain on this node starts mid-log from an unknown predecessor".into(),
        });
        return Ok(report);
    }
    for i in first..=last {
        let bytes = match log.record_bytes(i) {
            Ok(Some(b)) => b,
            Ok(None) => {
                report.failure = Some(VerifyFailure::Malformed {
                    index: i,
                    reason: "applied entry is missing from the Raft log".into(),
                });
                break;
            }
            Err(e) => {
                report.failure = Some(VerifyFailure::Malformed {
                    index: i,
                    reason: e.to_string(),
                });
                break;
            }
        };
        let Some(stored) = sm.hash_at(i)? else {
            report.failure = Some(VerifyFailure::Malformed {
                index: i,
                reason: "applied entry has no stored chain hash".into(),
            });
            break;
        };
        if let Err(f) = v.push(&bytes, &stored) {
            report.failure = Some(f);
            break;
        }
    }
    report.checked = v.checked();
    Ok(report)
}

/// Every node id that ever appeared in a membership entry of the log. Node ids are never
/// reused (a reused id with an empty log can vote twice), so additions are checked against it.
pub fn ids_ever_used(log: &LogStore) -> io::Result<std::collections::BTreeSet<u64>> {
    let mut ids = std::collections::BTreeSet::new();
    let Some((first, last)) = log.bounds()? else {
        return Ok(ids);
    };
    for i in first..=last {
        let Some(bytes) = log.record_bytes(i)? else {
            continue;
        };
        let rec = Record::decode(&bytes).map_err(io::Error::other)?;
        if rec.kind != hearth_core::EntryKind::Membership {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&rec.payload).map_err(io::Error::other)?;
        if let Some(nodes) = v.get("nodes").and_then(|n| n.as_object()) {
            ids.extend(nodes.keys().filter_map(|k| k.parse::<u64>().ok()));
        }
    }
    Ok(ids)
}
