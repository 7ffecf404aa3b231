//! The I/O around assisted failover (two hubs, no witness): probing the independent targets,
//! and the forced promotion, which rewrites the tail of this hub's own log while Raft is
//! stopped. The decisions are pure functions in `hearth_core::assist`.
//!
//! A promotion is two steps so that it survives a crash at any point:
//! 1. the `Promote` call checks the gate and writes `promotion.pending.json` (fsynced), then the
//!    node restarts;
//! 2. at startup, before Raft opens the log, the pending promotion becomes two log entries after
//!    this hub's last one — the `Promote` record (operator, reason, the last entry it had) and a
//!    membership entry naming this hub as the only voter — under a new term this hub voted for.
//!    Raft then elects the hub (it is the only voter) and commits both. The pending file is
//!    moved to `promotions.jsonl` (the local history) only after the entries are durable; a
//!    crash in between finds the entries already there and does not write them twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_core::assist::TargetProbe;
use hearth_core::domain::{Command as DomainCommand, Promotion};
use hearth_core::{EntryKind, Record};
use hearth_store::types::{Entry, log_id};
use hearth_store::{Command, LogStore, Member, StateMachine, StoreError};
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, Membership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{NodeError, StartError};

pub const PENDING_FILE: &str = "promotion.pending.json";
pub const HISTORY_FILE: &str = "promotions.jsonl";

/// Probes every target by TCP connect, every `every`, until shutdown. Only a completed
/// connection counts as reachable: a refusal can come from anything on the way (some routers
/// and sandboxes answer for hosts they cannot reach), and erring towards UNCERTAIN only means
/// a person must add --force.
pub async fn probe_targets(
    targets: Vec<String>,
    out: Arc<Mutex<Vec<TargetProbe>>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let probes = targets.iter().map(|t| async move {
            let reachable = match tokio::time::timeout(
                Duration::from_millis(1000),
                tokio::net::TcpStream::connect(t.as_str()),
            )
            .await
            {
                Ok(Ok(_)) => true,
                Ok(Err(_)) | Err(_) => false,
            };
            TargetProbe {
                target: t.clone(),
                reachable,
            }
        });
        let results = futures::future::join_all(probes).await;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = results;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A promotion asked for and not yet written into the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub promotion: Promotion,
    /// This hub's address, for the new membership.
    pub addr: String,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the pending promotion durably (write, fsync, rename, fsync the directory).
pub fn write_pending(data_dir: &Path, p: &Pending) -> Result<(), NodeError> {
    let tmp = data_dir.join(format!("{PENDING_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(PENDING_FILE))?;
    sync_dir(data_dir)?;
    Ok(())
}

fn read_pending(data_dir: &Path) -> Result<Option<Pending>, StartError> {
    let path = data_dir.join(PENDING_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            StartError::Store(StoreError::CorruptMeta {
                path,
                reason: e.to_string(),
            })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Node ids removed by promotions of this hub, from its local history (they are refused even
/// before the promotion entry is applied), with the reason.
pub fn removed_locally(data_dir: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(data_dir.join(HISTORY_FILE)) else {
        return out;
    };
    for line in text.lines() {
        if let Ok(p) = serde_json::from_str::<Promotion>(line) {
            for id in &p.removed {
                out.insert(
                    *id,
                    format!(
                        "node {id} was removed when node {} was promoted to a one-node cluster \
                         by {:?} ({:?})",
                        p.node, p.operator, p.reason
                    ),
                );
            }
        }
    }
    out
}

/// The chain hash of entry `index` (applied or not): the applied head, extended over the
/// log's records up to `index`.
pub fn hash_through(
    log: &LogStore,
    sm: &StateMachine,
    index: u64,
) -> std::io::Result<Option<[u8; 32]>> {
    let (mut at, mut hash) = match sm.head()? {
        Some((i, h)) if i <= index => (Some(i), h),
        Some(_) => return sm.hash_at(index),
        None => match sm.anchor()? {
            Some((i, h)) => (Some(i), h),
            None => (None, hearth_core::chain::ZERO_HASH),
        },
    };
    loop {
        let next = at.map(|i| i + 1).unwrap_or(0);
        if next > index {
            return Ok(Some(hash));
        }
        let Some(bytes) = log.record_bytes(next)? else {
            return Ok(None);
        };
        hash = hearth_core::chain::link_hash(&hash, &bytes);
        at = Some(next);
    }
}

fn is_this_promotion(bytes: &[u8], p: &Promotion) -> bool {
    let Ok(rec) = Record::decode(bytes) else {
        return false;
    };
    rec.kind == EntryKind::Command
        && matches!(DomainCommand::decode(&rec.payload),
            Ok(DomainCommand::Promote { promotion }) if promotion == *p)
}

/// Turns a pending promotion into log entries (see the module docs). Returns the promotion
/// written, if there was one. Runs before Raft starts, on the node's own stores only.
pub async fn apply_pending(
    data_dir: &Path,
    id: u64,
    log: &LogStore,
) -> Result<Option<Promotion>, StartError> {
    let Some(pending) = read_pending(data_dir)? else {
        return Ok(None);
    };
    let p = pending.promotion.clone();
    let mut log = log.clone();
    let last = log.last_log_id()?;
    // Already written by a start that crashed before finishing? (The record is at most two
    // entries from the end: it is followed by the membership entry.)
    let already = match last {
        Some(l) => (l.index.saturating_sub(1)..=l.index)
            .filter_map(|i| log.record_bytes(i).ok().flatten())
            .any(|b| is_this_promotion(&b, &p)),
        None => false,
    };
    if !already {
        let vote = log.read_vote().await?;
        let term = vote
            .map(|v| v.leader_id.term)
            .unwrap_or(0)
            .max(last.map(|l| l.leader_id.term).unwrap_or(0))
            + 1;
        let next = last.map(|l| l.index + 1).unwrap_or(0);
        let membership = Membership::new(
            vec![[id].into()],
            BTreeMap::from([(
                id,
                Member {
                    addr: pending.addr.clone(),
                    witness: false,
                },
            )]),
        )
        .map_err(|e| StartError::Settings(format!("promotion membership: {e}")))?;
        let entries = vec![
            Entry {
                log_id: log_id(term, id, next),
                payload: EntryPayload::Normal(Command(
                    DomainCommand::Promote {
                        promotion: p.clone(),
                    }
                    .encode(),
                )),
            },
            Entry {
                log_id: log_id(term, id, next + 1),
                payload: EntryPayload::Membership(membership),
            },
        ];
        // The vote first: the new entries' leadership must never be ahead of the vote.
        log.save_vote(&openraft::Vote::new(term, id)).await?;
        let (tx, rx) = <hearth_store::TypeConfig as TypeConfigExt>::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await?;
        rx.await
            .map_err(|_| StartError::Fatal("log flush was dropped".into()))??;
        tracing::warn!(node = id, term, index = next, operator = %p.operator, reason = %p.reason,
            removed = ?p.removed, "forced promotion written: this hub is now the only voter");
    }
    // Record it in the local history, then drop the pending file.
    let line = serde_json::to_string(&p).map_err(std::io::Error::other)?;
    let history = data_dir.join(HISTORY_FILE);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history)?;
        writeln!(f, "{line}")?;
        f.sync_all()?;
    }
    std::fs::remove_file(data_dir.join(PENDING_FILE))?;
    sync_dir(data_dir)?;
    Ok(Some(p))
}
