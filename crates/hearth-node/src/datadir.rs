//! What a node's data directory says about itself at startup, and the hold on its vote
//! (issue 14.1, 14.2, 14.5). The decisions are `hearth_core::datadir`; this is the I/O.
//!
//! Files it keeps in the data directory:
//! - `incarnation.json`: records its own inode. A copy or a restore from a backup writes new
//!   files, so the inode no longer matches: the directory may be older than what the node
//!   acknowledged.
//! - `high-water.json`: the last index the state machine had durably applied (written after a
//!   sled flush, about once a second). Applied means committed, so the log never legitimately
//!   ends below it, and sled never legitimately reports less.
//! - `hold.json`: a hold on the node's vote that has not been lifted yet (survives restarts).
//! - `notices.json`: what this node has to say about its own data that the chain does not carry
//!   yet (it rebuilt its state machine; it votes again after a hold). The node reports them in
//!   its status; the leader records each once (`NodeNotice`), and the node drops those the
//!   chain carries.
//!
//! A held node grants no vote or pre-vote and does not campaign (its election timer is off);
//! the hold is lifted, with a log line, once a leader elected without it has replicated to it
//! and it has applied that leader's commit index and its own floor.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hearth_cluster::{HearthRaft, RaftHandler};
use hearth_core::datadir::{Admission, Facts, Hold, admission, assess, may_release};
use hearth_store::{LogStore, StateMachine, StoreError};
use openraft::type_config::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::StartError;

pub const MARKER_FILE: &str = "incarnation.json";
pub const HIGH_WATER_FILE: &str = "high-water.json";
pub const HOLD_FILE: &str = "hold.json";
pub const NOTICES_FILE: &str = "notices.json";

/// Longest notice text a node records (and a leader accepts from a peer).
pub const NOTICE_MAX: usize = 500;
/// Most notices a node keeps waiting for the chain (older ones are dropped, and say so).
const NOTICES_KEPT: usize = 16;

/// Something a node has to say about its own data, waiting to be recorded in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Unique per notice (Unix ms and a random part).
    pub id: String,
    pub text: String,
}

impl Notice {
    /// Whether a notice a peer reported is fit for the chain: a short id of `[0-9a-f-]` and a
    /// printable text of at most [`NOTICE_MAX`] bytes.
    pub fn is_valid(&self) -> bool {
        !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            && !self.text.is_empty()
            && self.text.len() <= NOTICE_MAX
            && !self.text.chars().any(char::is_control)
    }
}

/// The notices waiting in `data_dir` (none when the file is absent or unreadable: a notice is
/// an audit courtesy, never a reason to stop).
pub fn pending_notices(data_dir: &Path) -> Vec<Notice> {
    match read_json::<Vec<Notice>>(&data_dir.join(NOTICES_FILE)) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "{NOTICES_FILE} is unreadable; its notices are lost");
            Vec::new()
        }
    }
}

/// Adds a notice for the chain (written durably before this returns).
pub fn add_notice(data_dir: &Path, text: &str) -> std::io::Result<()> {
    let mut v = pending_notices(data_dir);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut r = [0u8; 4];
    getrandom::getrandom(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.len() > NOTICE_MAX {
        let mut cut = NOTICE_MAX - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    v.push(Notice {
        id: format!("{ms:x}-{}", hex::encode(r)),
        text,
    });
    if v.len() > NOTICES_KEPT {
        let dropped = v.len() - NOTICES_KEPT;
        tracing::warn!(
            dropped,
            "more than {NOTICES_KEPT} notices wait for the chain; the oldest are dropped"
        );
        v.drain(..dropped);
    }
    write_atomic(
        data_dir,
        NOTICES_FILE,
        &serde_json::to_vec(&v).map_err(std::io::Error::other)?,
    )
}

/// Drops the notices the chain carries (`recorded`), keeping the others.
fn drop_recorded(data_dir: &Path, recorded: impl Fn(&str) -> bool) -> std::io::Result<()> {
    let v = pending_notices(data_dir);
    if v.is_empty() {
        return Ok(());
    }
    let keep: Vec<Notice> = v.iter().filter(|n| !recorded(&n.id)).cloned().collect();
    if keep.len() == v.len() {
        return Ok(());
    }
    if keep.is_empty() {
        return match std::fs::remove_file(data_dir.join(NOTICES_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    write_atomic(
        data_dir,
        NOTICES_FILE,
        &serde_json::to_vec(&keep).map_err(std::io::Error::other)?,
    )
}

/// State machines rebuilt from the log since this process started (a metric).
pub static STATE_REBUILDS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    node_id: u64,
    inode: u64,
    /// The file's creation time (statx birth time, ns since the epoch) where the file system
    /// records one. A restore deletes the directory and writes new files, and ext4 can hand
    /// the freed inode number to the new marker (seen in the in-process suite: a restored hub
    /// passed for its own directory and led without 20 acknowledged writes); no copy tool
    /// can set a birth time, so the pair identifies the file this node wrote. Absent in
    /// markers written before it, and where the file system keeps no birth time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_ns: Option<u64>,
    /// A random id of this data directory, chosen when it was created and kept for its life
    /// (copies and restores keep it; a wiped card gets a new one). The chain admits the
    /// incarnation that may vote under the node id (`AdmitNode`, issue 14.1). Absent in
    /// markers written before it; added at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incarnation: Option<String>,
}

/// A new random incarnation id (128 bits, lower-case hex).
fn new_incarnation() -> std::io::Result<String> {
    let mut r = [0u8; 16];
    getrandom::getrandom(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(r))
}

/// This data directory's incarnation id, giving a directory whose marker predates them one
/// now (the marker must exist: `prepare` writes it).
pub fn incarnation(dir: &Path, node_id: u64) -> Result<String, StartError> {
    if let Some(Marker {
        incarnation: Some(i),
        ..
    }) = read_json::<Marker>(&dir.join(MARKER_FILE))?
    {
        return Ok(i);
    }
    write_marker(dir, node_id)?;
    match read_json::<Marker>(&dir.join(MARKER_FILE))? {
        Some(Marker {
            incarnation: Some(i),
            ..
        }) => Ok(i),
        _ => Err(StartError::Refused(format!(
            "{} has no incarnation id after it was written",
            dir.join(MARKER_FILE).display()
        ))),
    }
}

/// A file's birth time in ns since the epoch, if the file system keeps one.
fn created_ns(meta: &std::fs::Metadata) -> Option<u64> {
    let d = meta
        .created()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(d.as_nanos()).ok()
}

#[derive(Debug, Serialize, Deserialize)]
struct HighWater {
    applied: u64,
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StartError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            StartError::Store(StoreError::CorruptMeta {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the marker: the file records the inode it was created with (renaming keeps it) and
/// the directory's incarnation (kept from the marker it replaces, new for a new directory).
pub fn write_marker(dir: &Path, node_id: u64) -> std::io::Result<()> {
    use std::io::Write;
    let kept = std::fs::read(dir.join(MARKER_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        .filter(|m| m.node_id == node_id)
        .and_then(|m| m.incarnation);
    let incarnation = match kept {
        Some(i) => i,
        None => new_incarnation()?,
    };
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let meta = f.metadata()?;
    let marker = Marker {
        node_id,
        inode: meta.ino(),
        created_ns: created_ns(&meta),
        incarnation: Some(incarnation),
    };
    f.write_all(&serde_json::to_vec(&marker).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Whether the marker is not the file this node wrote (`None`: there is no marker yet).
fn copied(dir: &Path) -> Result<Option<bool>, StartError> {
    let path = dir.join(MARKER_FILE);
    let Some(m) = read_json::<Marker>(&path)? else {
        return Ok(None);
    };
    let meta = std::fs::metadata(&path)?;
    Ok(Some(
        meta.ino() != m.inode || (m.created_ns.is_some() && created_ns(&meta) != m.created_ns),
    ))
}

/// Opens the state machine in `dir`. Waits up to 5 s while an earlier incarnation of this node
/// in the same process still holds sled's lock. A database sled reports corrupt, or whose
/// records do not decode, is moved aside (named in the log) and rebuilt empty: openraft
/// re-applies it from the Raft log, which is the truth. Other errors are returned. The flag
/// says whether it was rebuilt (empty) here.
pub async fn open_state(dir: &Path) -> Result<(StateMachine, bool), StartError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match StateMachine::open(dir) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(dir = %dir.display(), "state machine still locked; waiting");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.is_state_damage() => {
                return Ok((
                    rebuild_state(dir, &format!("it is unreadable ({e})"))?,
                    true,
                ));
            }
            Err(e) => {
                return Err(StartError::Refused(format!(
                    "the state machine database {} cannot be opened: {e}. It is rebuilt from the \
                     Raft log by itself only when it is damaged; fix the cause (permissions, disk \
                     space, another process holding it) and start again",
                    dir.display()
                )));
            }
            Ok(sm) => return Ok((sm, false)),
        }
    }
}

/// Moves the state machine directory aside and opens an empty one in its place.
fn rebuild_state(dir: &Path, why: &str) -> Result<StateMachine, StartError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = PathBuf::from(format!("{}.damaged-{ms}", dir.display()));
    std::fs::rename(dir, &aside)?;
    STATE_REBUILDS.fetch_add(1, Ordering::Relaxed);
    tracing::error!(state = %dir.display(), moved_to = %aside.display(), why,
        "REBUILDING the state machine from the Raft log: {why}; the old database is kept at \
         {} for inspection and can be deleted", aside.display());
    if let Some(data_dir) = dir.parent()
        && let Err(e) = add_notice(
            data_dir,
            &format!(
                "rebuilt its state machine from the Raft log: {why}; the old database was kept \
                 as {}",
                aside
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        )
    {
        tracing::warn!(error = %e, "could not keep the rebuild's notice for the chain");
    }
    Ok(StateMachine::open(dir)?)
}

/// Gathers the facts of the data directory, rebuilds the state machine if it cannot be
/// trusted, and returns the (possibly new) state machine with the hold on the vote, if any
/// (also persisted in `hold.json`).
pub async fn prepare(
    data_dir: &Path,
    node_id: u64,
    fresh: bool,
    log: &LogStore,
    sm: StateMachine,
    rebuilt: bool,
    own_checkpoint: Option<u64>,
) -> Result<(StateMachine, Option<Hold>), StartError> {
    let copied = match copied(data_dir)? {
        Some(c) => c,
        None => {
            // New directory, or one written before markers existed: mark it now.
            write_marker(data_dir, node_id)?;
            false
        }
    };
    let high_water = read_json::<HighWater>(&data_dir.join(HIGH_WATER_FILE))?.map(|h| h.applied);
    let facts = Facts {
        node_id,
        fresh,
        copied,
        log_last: log.last_log_id()?.map(|l| l.index),
        sm_applied: sm.applied()?.map(|l| l.index),
        high_water,
        own_checkpoint,
        pending: read_json::<Hold>(&data_dir.join(HOLD_FILE))?,
    };
    let verdict = assess(&facts);
    let mut sm = sm;
    // A state machine rebuilt empty by `open_state` just now is not rebuilt again (its
    // "nothing applied" is the rebuild itself: openraft replays the log into it).
    if let Some(why) = verdict.rebuild_state.as_ref().filter(|_| !rebuilt) {
        let state_dir = data_dir.join("state");
        drop(sm);
        sm = rebuild_state(&state_dir, why)?;
    }
    if let Some(h) = &verdict.hold {
        persist_hold(data_dir, h)?;
        if fresh && !copied && facts.log_last.is_none() {
            tracing::info!(
                node = node_id,
                "new data directory: this node votes once a leader \
                has given it a log naming it a voter (or once it forms the cluster)"
            );
        } else {
            tracing::error!(node = node_id, floor = ?h.floor, reason = %h.reason,
                "NODE {node_id} WILL NOT VOTE OR LEAD until a leader elected without it has \
                 caught it up: {}", h.reason);
        }
    }
    Ok((sm, verdict.hold))
}

/// Records a hold so that it survives a restart.
pub fn persist_hold(data_dir: &Path, h: &Hold) -> std::io::Result<()> {
    write_atomic(
        data_dir,
        HOLD_FILE,
        &serde_json::to_vec(h).map_err(std::io::Error::other)?,
    )
}

/// Holds the vote of a running node (and turns its election timer off).
pub fn hold(handler: &RaftHandler, data_dir: &Path, h: Hold) -> std::io::Result<()> {
    persist_hold(data_dir, &h)?;
    handler.raft.runtime_config().elect(false);
    handler.set_hold(Some(h));
    Ok(())
}

/// Lifts the hold: the node votes again, and a hub campaigns again.
pub fn release(handler: &RaftHandler, data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(HOLD_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The directory is this node's own again (a copy is now caught up).
    write_marker(data_dir, handler.id)?;
    handler.set_hold(None);
    // A hub campaigns again unless its clock is judged OFF (the clock watch turns the timer
    // on once the clock is right); the witness never does.
    handler.raft.runtime_config().elect(handler.may_campaign());
    Ok(())
}

/// Runs for the node's lifetime: lifts the hold once the node has been caught up, and keeps
/// `high-water.json` at the durably applied index.
pub async fn watch(
    handler: RaftHandler,
    raft: HearthRaft,
    sm: StateMachine,
    data_dir: PathBuf,
    incarnation: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut written = read_json::<HighWater>(&data_dir.join(HIGH_WATER_FILE))
        .ok()
        .flatten()
        .map(|h| h.applied);
    let mut last_mark = std::time::Instant::now();
    let mut last_warn = std::time::Instant::now();
    let mut last_notice_check = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if *stop.borrow() {
            return;
        }
        let m = raft.metrics().borrow_watched().clone();
        let applied = m.last_applied.as_ref().map(|l| l.index);
        if let Some(h) = handler.hold() {
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == handler.id);
            let commit = handler.leader_commit();
            let alone = voter && m.membership_config.membership().voter_ids().count() == 1;
            if alone {
                // The only voter (a one-hub cluster): no other node holds anything to catch it
                // up from, and its vote cannot elect anyone else.
                match release(&handler, &data_dir) {
                    Ok(()) => {
                        tracing::warn!(node = handler.id, was = %h.reason,
                            "node {} is the cluster's only voter: it leads with the data it has",
                            handler.id);
                        notice(
                            &data_dir,
                            &format!(
                                "leads with the data it has, as the cluster's only voter, although {}",
                                h.reason
                            ),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "could not lift the hold on the vote"),
                }
            } else if voter
                && may_release(
                    &h,
                    commit,
                    applied,
                    &admitted(&sm, handler.id, &incarnation),
                )
            {
                match release(&handler, &data_dir) {
                    Ok(()) => {
                        tracing::warn!(node = handler.id, leader = ?handler.last_leader(),
                            applied = ?applied, was = %h.reason,
                            "node {} was caught up by the cluster and votes again", handler.id);
                        let admitted = if h.needs_admission {
                            format!(
                                ", and the chain admits its incarnation {}",
                                short(&incarnation)
                            )
                        } else {
                            String::new()
                        };
                        notice(
                            &data_dir,
                            &format!(
                                "votes again: {}; a leader elected without it (node {}) caught it up \
                             to index {}{admitted}",
                                h.reason,
                                handler.last_leader().map_or("?".into(), |l| l.to_string()),
                                applied.map_or("?".into(), |a| a.to_string()),
                            ),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "could not lift the hold on the vote"),
                }
            } else if last_warn.elapsed() > Duration::from_secs(30) {
                last_warn = std::time::Instant::now();
                match admitted(&sm, handler.id, &incarnation) {
                    Admission::Other(known) if h.needs_admission => {
                        tracing::error!(node = handler.id, incarnation = %incarnation,
                            admitted = %known, leader_commit = ?commit, applied = ?applied,
                            "NODE {id} WILL NOT VOTE OR LEAD: {}", wiped_text(handler.id, &incarnation, &known),
                            id = handler.id);
                    }
                    _ => {
                        tracing::warn!(node = handler.id, floor = ?h.floor, leader_commit = ?commit,
                        applied = ?applied, reason = %h.reason,
                        "this node's vote is still held: waiting for a leader elected without it to \
                         catch it up")
                    }
                }
            }
        }
        if last_notice_check.elapsed() >= Duration::from_secs(1) {
            last_notice_check = std::time::Instant::now();
            let recorded = |id: &str| sm.with_domain(|d| d.notices.contains(id)).unwrap_or(false);
            if let Err(e) = drop_recorded(&data_dir, recorded) {
                tracing::warn!(error = %e, "could not update {NOTICES_FILE}");
            }
        }
        if applied > written && last_mark.elapsed() >= Duration::from_secs(1) {
            last_mark = std::time::Instant::now();
            // Only what sled has made durable may go into the mark.
            let durable = match sm.flush().await {
                Ok(()) => sm.applied().ok().flatten().map(|l| l.index),
                Err(_) => None,
            };
            if let Some(a) = durable
                && Some(a) > written
            {
                let bytes = serde_json::to_vec(&HighWater { applied: a }).unwrap_or_default();
                match write_atomic(&data_dir, HIGH_WATER_FILE, &bytes) {
                    Ok(()) => written = Some(a),
                    Err(e) => tracing::warn!(error = %e, "could not write {HIGH_WATER_FILE}"),
                }
            }
        }
    }
}

/// What this node's applied chain says about its incarnation.
fn admitted(sm: &StateMachine, id: u64, own: &str) -> Admission {
    let recorded = sm
        .with_domain(|d| d.incarnations.get(&id).cloned())
        .ok()
        .flatten();
    admission(own, recorded.as_deref())
}

/// The first 8 characters of an incarnation id (enough to tell two apart in a log line).
pub fn short(incarnation: &str) -> &str {
    incarnation.get(..8).unwrap_or(incarnation)
}

/// Why a node whose id the chain knows under another incarnation does not vote, and what to
/// do (status and the log say it).
pub fn wiped_text(id: u64, own: &str, known: &str) -> String {
    format!(
        "node {id}'s data directory is new (incarnation {}), but the chain admits incarnation {} \
         for node {id}: its data was wiped or it was replaced. It receives the log but never \
         votes until an admin, once it is caught up, runs `hearth cluster rejoin --id {id}` \
         (or it is replaced under a new id: docs/OPERATIONS.md)",
        short(own),
        short(known)
    )
}

/// Keeps a notice for the chain, logging (never failing) when it cannot.
fn notice(data_dir: &Path, text: &str) {
    if let Err(e) = add_notice(data_dir, text) {
        tracing::warn!(error = %e, "could not keep a notice for the chain: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_this_nodes_own_only_with_its_inode_and_birth_time() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(copied(d.path()).unwrap(), None);
        write_marker(d.path(), 2).unwrap();
        assert_eq!(copied(d.path()).unwrap(), Some(false));
        let path = d.path().join(MARKER_FILE);
        let m: Marker = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // Rewritten in place (same inode, same birth time): still this node's own.
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(copied(d.path()).unwrap(), Some(false));
        // A restored copy: new file, new inode.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        if meta.ino() != m.inode {
            assert_eq!(copied(d.path()).unwrap(), Some(true));
        }
        // The same inode number handed to the restored file (ext4 reuses freed numbers): the
        // birth time still tells, where the file system keeps one.
        if let Some(born) = created_ns(&meta) {
            let forged = Marker {
                node_id: 2,
                inode: meta.ino(),
                created_ns: m.created_ns.or(Some(born.wrapping_sub(1))),
                incarnation: m.incarnation.clone(),
            };
            std::fs::write(&path, serde_json::to_vec(&forged).unwrap()).unwrap();
            assert_ne!(
                forged.created_ns,
                Some(born),
                "the restore made a new birth time"
            );
            assert_eq!(copied(d.path()).unwrap(), Some(true));
        }
        // A marker written before birth times were kept compares the inode only.
        let old =
            serde_json::json!({ "node_id": 2, "inode": std::fs::metadata(&path).unwrap().ino() });
        std::fs::write(&path, old.to_string()).unwrap();
        assert_eq!(copied(d.path()).unwrap(), Some(false));
    }

    #[test]
    fn a_directory_keeps_its_incarnation_for_life_and_a_new_one_gets_another() {
        let d = tempfile::tempdir().unwrap();
        write_marker(d.path(), 2).unwrap();
        let first = incarnation(d.path(), 2).unwrap();
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        // Rewriting the marker (a hold lifted) keeps it.
        write_marker(d.path(), 2).unwrap();
        assert_eq!(incarnation(d.path(), 2).unwrap(), first);
        // A copy keeps it too (it is the same directory's content) …
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(d.path().join(MARKER_FILE), copy.path().join(MARKER_FILE)).unwrap();
        assert_eq!(incarnation(copy.path(), 2).unwrap(), first);
        // … and a wiped one, created anew, gets another.
        let wiped = tempfile::tempdir().unwrap();
        write_marker(wiped.path(), 2).unwrap();
        assert_ne!(incarnation(wiped.path(), 2).unwrap(), first);
        // A marker written before incarnations existed gets one, once.
        let old = tempfile::tempdir().unwrap();
        let path = old.path().join(MARKER_FILE);
        std::fs::write(&path, r#"{"node_id":2,"inode":1}"#).unwrap();
        let given = incarnation(old.path(), 2).unwrap();
        assert_eq!(incarnation(old.path(), 2).unwrap(), given);
        assert_eq!(copied(old.path()).unwrap(), Some(false));
    }

    #[test]
    fn notices_wait_until_the_chain_carries_them_and_bad_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(pending_notices(d.path()).is_empty());
        add_notice(d.path(), "rebuilt its state machine\nfrom the log").unwrap();
        add_notice(d.path(), &"é".repeat(400)).unwrap();
        let v = pending_notices(d.path());
        assert_eq!(v.len(), 2);
        assert_ne!(v[0].id, v[1].id);
        assert!(v.iter().all(Notice::is_valid), "{v:?}");
        assert_eq!(v[0].text, "rebuilt its state machine from the log");
        assert!(v[1].text.len() <= NOTICE_MAX && v[1].text.ends_with("..."));
        let first = v[0].id.clone();
        drop_recorded(d.path(), |id| id == first).unwrap();
        assert_eq!(pending_notices(d.path()), vec![v[1].clone()]);
        drop_recorded(d.path(), |_| true).unwrap();
        assert!(!d.path().join(NOTICES_FILE).exists());
        for _ in 0..(NOTICES_KEPT + 3) {
            add_notice(d.path(), "x").unwrap();
        }
        assert_eq!(pending_notices(d.path()).len(), NOTICES_KEPT);
        // What a peer may report: checked before a leader records it.
        for (id, text) in [
            ("", "x"),
            ("zz", "x"),
            (&"a".repeat(65)[..], "x"),
            ("ab-12", ""),
            ("ab-12", "bell\u{7}"),
            ("ab-12", &"x".repeat(NOTICE_MAX + 1)[..]),
        ] {
            let n = Notice {
                id: id.into(),
                text: text.into(),
            };
            assert!(!n.is_valid(), "{n:?}");
        }
        assert!(
            Notice {
                id: "19a-0f".into(),
                text: "ok".into()
            }
            .is_valid()
        );
    }
}
