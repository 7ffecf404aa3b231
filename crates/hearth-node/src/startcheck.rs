//! The start-time check of a node's chain against what it signed or cosigned before (issue 13
//! item 5): a log rewritten on disk (an entry's payload changed and its frame's CRC recomputed,
//! `state/` deleted so nothing remembers the old hashes) verifies on its own, but its chain no
//! longer reaches the heads this node signed (`checkpoints.txt`, a hub's, with the witness's
//! cosignatures) or cosigned (`checkpoint-witness.json`, a witness's last head per hub). The
//! node then refuses to start, naming the index and the file.
//!
//! Runs in `Node::start` after the applied chain is verified and before Raft opens the log. The
//! decision is `hearth_core::checkpoint::cosigned_still_held`; this module only reads.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_core::Hash;
use hearth_core::checkpoint::{Refusal, cosigned_still_held};
use hearth_store::{LogStore, StateMachine};

use crate::checkpoint::{STORE_FILE, WITNESS_FILE};
use crate::error::StartError;

/// The heads this node stored, by index, with the file each came from and who signed it.
fn stored_heads(dir: &Path) -> Result<BTreeMap<u64, (Hash, String)>, StartError> {
    let mut out = BTreeMap::new();
    for cp in crate::checkpoint::read_store(&dir.join(STORE_FILE))? {
        let who = match &cp.witness {
            Some(w) => format!(
                "{STORE_FILE} (signed by node {}, cosigned by witness {})",
                cp.signer.node, w.node
            ),
            None => format!("{STORE_FILE} (signed by node {})", cp.signer.node),
        };
        out.insert(cp.index, (cp.head, who));
    }
    for (hub, (index, head)) in crate::checkpoint::read_witness(&dir.join(WITNESS_FILE))? {
        out.entry(index)
            .or_insert((head, format!("{WITNESS_FILE} (cosigned for hub {hub})")));
    }
    Ok(out)
}

/// The chain hashes of this node's log at `indices` (ascending): applied ones from the state
/// machine (already verified against the log), the rest by extending the chain over the log's
/// stored records in one pass. An index past the log's end is absent.
fn own_hashes(
    log: &LogStore,
    sm: &StateMachine,
    indices: &[u64],
) -> Result<BTreeMap<u64, Hash>, StartError> {
    let mut out = BTreeMap::new();
    let head = sm.head()?;
    let (mut at, mut hash) = match head {
        Some((i, h)) => (Some(i), h),
        None => match sm.anchor()? {
            Some((i, h)) => (Some(i), h),
            None => (None, hearth_core::chain::ZERO_HASH),
        },
    };
    for &index in indices {
        if at.is_some_and(|a| index <= a) {
            if let Some(h) = sm.hash_at(index)? {
                out.insert(index, h);
            }
            continue;
        }
        loop {
            let next = at.map(|i| i + 1).unwrap_or(0);
            if next > index {
                break;
            }
            let Some(bytes) = log.record_bytes(next)? else {
                return Ok(out);
            };
            hash = hearth_core::chain::link_hash(&hash, &bytes);
            at = Some(next);
        }
        out.insert(index, hash);
    }
    Ok(out)
}

/// Refuses a chain that no longer holds a head this node signed or cosigned. Returns how many
/// stored heads were checked. Heads past the end of the log are not compared here (a log
/// shorter than what it signed is the data-directory checks' business): they are logged.
pub fn check_stored_heads(
    node: u64,
    dir: &Path,
    log: &LogStore,
    sm: &StateMachine,
) -> Result<usize, StartError> {
    let stored = stored_heads(dir)?;
    if stored.is_empty() {
        return Ok(0);
    }
    let indices: Vec<u64> = stored.keys().copied().collect();
    let own = own_hashes(log, sm, &indices)?;
    let present: Vec<(u64, Hash)> = stored
        .iter()
        .filter(|(i, _)| own.contains_key(i))
        .map(|(i, (h, _))| (*i, *h))
        .collect();
    for i in indices.iter().filter(|i| !own.contains_key(i)) {
        tracing::error!(
            node,
            index = i,
            "this node stored a checkpoint head at index {i}, past the end of its log"
        );
    }
    match cosigned_still_held(present.iter().copied(), |i| own.get(&i).copied()) {
        None => Ok(present.len()),
        Some(Refusal::CosignedHeadChanged {
            index,
            stored: s,
            own: o,
        }) => {
            let file = stored
                .get(&index)
                .map(|(_, f)| f.as_str())
                .unwrap_or(STORE_FILE);
            let reason = format!(
                "the chain through entry {index} of raft/{} ends in {o}, but {file} in {} \
                 holds {s} for that index: an entry at or before {index} was rewritten on disk \
                 after this node signed that head. It refuses to serve it; restore the data \
                 directory from a backup or rejoin the node under a new id",
                hearth_store::log::LOG_FILE,
                dir.display()
            );
            tracing::error!(node, index, "{reason}");
            Err(StartError::ChainBroken { index, reason })
        }
        Some(other) => Err(StartError::ChainBroken {
            index: 0,
            reason: other.to_string(),
        }),
    }
}
