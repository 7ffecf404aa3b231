//! Signed checkpoints on a node: the key file, the hub's signing (on a schedule and on
//! demand) and its append-only store, and the witness's cosigning with its persisted last
//! cosigned heads. The rules (message bytes, format, the cosign decision) are pure functions in
//! `hearth_core::checkpoint`; this module only does the I/O around them.
//!
//! Files in the data directory:
//! - `checkpoint.key`: the node's Ed25519 seed, 64 lower-case hex digits and a line feed,
//!   mode 0600, made on first start;
//! - `checkpoints.txt` (hubs): every checkpoint this hub signed, in the text format of
//!   `docs/AUDIT-FORMAT.md`, appended and fsynced line by line;
//! - `checkpoint-witness.json` (witness): the last (index, head) cosigned for each hub,
//!   replaced atomically (write, fsync, rename, fsync the directory) before a cosignature is
//!   returned.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hearth_cluster::{CosignClient, CosignHandler, HearthRaft};
use hearth_core::Hash;
use hearth_core::checkpoint::{
    Checkpoint, CosignReply, CosignRequest, Decision, Keypair, PublicKey, Refusal,
    cosigned_still_held, decide, parse_file, parse_hex,
};
use hearth_store::StateMachine;
use openraft::type_config::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::config::{CheckpointSettings, Role};
use crate::error::{NodeError, StartError};

pub const KEY_FILE: &str = "checkpoint.key";
pub const STORE_FILE: &str = "checkpoints.txt";
pub const WITNESS_FILE: &str = "checkpoint-witness.json";
/// How long the witness waits for a proposed index to be applied before it answers "not yet
/// applied" (the hub signs its applied head; the witness is usually a heartbeat behind).
pub const NOT_YET_WAIT: Duration = Duration::from_secs(2);
/// The hub's deadline for the witness's answer.
pub const COSIGN_TIMEOUT: Duration = Duration::from_secs(5);

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> StartError {
    StartError::Checkpoints(format!(
        "{}: {why}. Move the file aside to start the node (the copies kept off the cluster \
         are what a household trusts)",
        path.display()
    ))
}

/// Reads the node's checkpoint key, or makes one (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, StartError> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hexed = text.strip_suffix('\n').unwrap_or(&text);
            let seed: [u8; 32] = parse_hex("seed", hexed).map_err(|e| corrupt(&path, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                        "the checkpoint key is readable by other users; chmod 600 it");
                }
            }
            Ok(Keypair::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed)
                .map_err(|e| StartError::Checkpoints(format!("no randomness for a key: {e}")))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = opts.open(&tmp)?;
            f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
            let k = Keypair::from_seed(&seed);
            seed.fill(0);
            tracing::info!(path = %path.display(), public = %hex::encode(k.public()),
                "made this node's checkpoint key");
            Ok(k)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the hub's checkpoint store: cuts a torn last line (never acknowledged), then parses
/// the rest strictly.
pub(crate) fn read_store(path: &Path) -> Result<Vec<Checkpoint>, StartError> {
    open_store(path)
}

/// The witness's last cosigned (index, head) per hub, as stored.
pub(crate) fn read_witness(path: &Path) -> Result<BTreeMap<u64, (u64, Hash)>, StartError> {
    load_witness(path)
}

fn open_store(path: &Path) -> Result<Vec<Checkpoint>, StartError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        let keep = text.rfind('\n').map_or(0, |i| i + 1);
        tracing::warn!(path = %path.display(), cut = text.len() - keep,
            "cutting a torn last line from the checkpoint store (it was never acknowledged)");
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(keep as u64)?;
        f.sync_all()?;
        return open_store(path);
    }
    if text.is_empty() {
        return Ok(Vec::new());
    }
    parse_file(&text).map_err(|e| corrupt(path, e))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WitnessFile {
    format: u32,
    /// Hub id → the last cosigned (index, lower-case hex head).
    last: BTreeMap<u64, (u64, String)>,
}

fn load_witness(path: &Path) -> Result<BTreeMap<u64, (u64, Hash)>, StartError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let f: WitnessFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e))?;
    f.last
        .into_iter()
        .map(|(hub, (i, h))| -> Result<_, StartError> {
            Ok((
                hub,
                (
                    i,
                    parse_hex::<32>("head", &h).map_err(|e| corrupt(path, e))?,
                ),
            ))
        })
        .collect()
}

fn save_witness(dir: &Path, last: &BTreeMap<u64, (u64, Hash)>) -> std::io::Result<()> {
    let f = WitnessFile {
        format: 1,
        last: last
            .iter()
            .map(|(hub, (i, h))| (*hub, (*i, hex::encode(h))))
            .collect(),
    };
    let tmp = dir.join(format!("{WITNESS_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&f).map_err(std::io::Error::other)?,
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(WITNESS_FILE))?;
    sync_dir(dir)
}

/// What became of the witness's cosignature for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessOutcome {
    Cosigned {
        witness: u64,
    },
    /// The cluster has no witness (or no transport to it is set up).
    NoWitness,
    Refused {
        witness: u64,
        refusal: Refusal,
    },
    /// The witness could not be asked, or its answer was unusable.
    Failed {
        witness: u64,
        error: String,
    },
    /// Nothing new was signed (the head did not advance): the last checkpoint is returned.
    NotAsked,
}

impl std::fmt::Display for WitnessOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cosigned { witness } => write!(f, "cosigned by witness {witness}"),
            Self::NoWitness => write!(f, "no witness in this cluster"),
            Self::Refused { witness, refusal } => {
                write!(f, "witness {witness} REFUSED to cosign: {refusal}")
            }
            Self::Failed { witness, error } => {
                write!(f, "witness {witness} could not cosign: {error}")
            }
            Self::NotAsked => write!(f, "the head has not advanced; nothing new signed"),
        }
    }
}

/// A checkpoint as made (or found) on demand.
#[derive(Debug, Clone)]
pub struct Made {
    pub checkpoint: Checkpoint,
    /// Whether it was signed now (false: the head had not advanced past the last one).
    pub fresh: bool,
    pub witness: WitnessOutcome,
}

#[derive(Default)]
struct HubState {
    last: Option<Checkpoint>,
    last_at: Option<Instant>,
}

/// A node's checkpoint machinery (both roles).
pub struct Checkpoints {
    id: u64,
    role: Role,
    dir: PathBuf,
    key: Keypair,
    sm: StateMachine,
    /// Serializes signing (held across the witness's answer).
    hub: Mutex<HubState>,
    /// The last checkpoint signed, for readers that must not wait for a signing in progress
    /// (status, /metrics).
    published: std::sync::Mutex<Option<Checkpoint>>,
    /// Witness: the last cosigned (index, head) per hub.
    witness: Mutex<BTreeMap<u64, (u64, Hash)>>,
    client: std::sync::Mutex<Option<Arc<dyn CosignClient>>>,
    started: Instant,
    pub signed: AtomicU64,
    pub cosigned: AtomicU64,
    pub forks_refused: AtomicU64,
}

impl Checkpoints {
    /// Opens (or creates) the key and the node's checkpoint files.
    pub fn open(id: u64, role: Role, dir: &Path, sm: StateMachine) -> Result<Self, StartError> {
        let key = load_or_create_key(dir)?;
        let stored = open_store(&dir.join(STORE_FILE))?;
        let witness = load_witness(&dir.join(WITNESS_FILE))?;
        Ok(Self {
            id,
            role,
            dir: dir.to_path_buf(),
            key,
            sm,
            published: std::sync::Mutex::new(stored.last().cloned()),
            hub: Mutex::new(HubState {
                last: stored.last().cloned(),
                last_at: None,
            }),
            witness: Mutex::new(witness),
            client: std::sync::Mutex::default(),
            started: Instant::now(),
            signed: AtomicU64::new(0),
            cosigned: AtomicU64::new(0),
            forks_refused: AtomicU64::new(0),
        })
    }

    /// This node's checkpoint public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Sets how this hub reaches the witness (gRPC in `serve`, the router in tests).
    pub fn set_client(&self, c: Arc<dyn CosignClient>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    /// The last cosigned (index, head) for hub `hub` (witness).
    pub async fn last_cosigned(&self, hub: u64) -> Option<(u64, Hash)> {
        self.witness.lock().await.get(&hub).copied()
    }

    /// The last checkpoint this hub signed (does not wait for a signing in progress).
    pub async fn last(&self) -> Option<Checkpoint> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The text of this hub's checkpoint store (the header alone if it signed none).
    pub fn export_text(&self) -> Result<String, NodeError> {
        match std::fs::read_to_string(self.dir.join(STORE_FILE)) {
            Ok(t) if !t.is_empty() => Ok(t),
            Ok(_) => Ok(hearth_core::checkpoint::format_file(&[])),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(hearth_core::checkpoint::format_file(&[]))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn append(&self, c: &Checkpoint) -> std::io::Result<()> {
        let path = self.dir.join(STORE_FILE);
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut text = String::new();
        if f.metadata()?.len() == 0 {
            text.push_str(hearth_core::checkpoint::FILE_HEADER);
            text.push('\n');
        }
        text.push_str(&c.to_line());
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Signs a checkpoint of this hub's applied head, has `witness` (id, address) cosign it if
    /// given, and stores it. When the head has not advanced since the last checkpoint, returns
    /// that one instead.
    pub async fn checkpoint(&self, witness: Option<(u64, String)>) -> Result<Made, NodeError> {
        if self.role != Role::Hub {
            return Err(NodeError::Refused(
                "only a hub signs checkpoints; a witness cosigns them".into(),
            ));
        }
        let Some((index, head)) = self.sm.head()? else {
            return Err(NodeError::Refused(
                "nothing is applied on this hub yet; there is no head to sign".into(),
            ));
        };
        let mut st = self.hub.lock().await;
        if let Some(last) = &st.last
            && last.index >= index
        {
            // Never hand out a stored checkpoint this node's chain no longer holds.
            let own = self.sm.hash_at(last.index)?;
            if own != Some(last.head) {
                return Err(NodeError::ChainBroken {
                    index: last.index,
                    reason: format!(
                        "the last checkpoint in {STORE_FILE} holds head {} at index {}, but this \
                         node's chain has {} there",
                        hex::encode(last.head),
                        last.index,
                        own.map(hex::encode).unwrap_or_else(|| "nothing".into())
                    ),
                });
            }
            return Ok(Made {
                checkpoint: last.clone(),
                fresh: false,
                witness: WitnessOutcome::NotAsked,
            });
        }
        let mut cp = Checkpoint {
            index,
            head,
            signer: self.key.signature(self.id, index, &head),
            witness: None,
        };
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let outcome = match (witness, client) {
            (Some((w, addr)), Some(client)) => {
                let req = CosignRequest {
                    checkpoint: cp.to_line(),
                };
                let answer =
                    tokio::time::timeout(COSIGN_TIMEOUT, client.cosign(self.id, w, &addr, req))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {COSIGN_TIMEOUT:?}")));
                match answer {
                    Ok(CosignReply::Cosigned { checkpoint }) => {
                        match accept_cosigned(&cp, w, &checkpoint) {
                            Ok(c) => {
                                cp = c;
                                WitnessOutcome::Cosigned { witness: w }
                            }
                            Err(error) => WitnessOutcome::Failed { witness: w, error },
                        }
                    }
                    Ok(CosignReply::Refused(refusal)) => WitnessOutcome::Refused {
                        witness: w,
                        refusal,
                    },
                    Err(error) => WitnessOutcome::Failed { witness: w, error },
                }
            }
            (Some((w, _)), None) => WitnessOutcome::Failed {
                witness: w,
                error: "this node has no transport to the witness".into(),
            },
            (None, _) => WitnessOutcome::NoWitness,
        };
        match &outcome {
            WitnessOutcome::Refused { refusal, .. } if refusal.is_fork() => {
                tracing::error!(node = self.id, index, "checkpoint: {outcome}");
            }
            WitnessOutcome::Refused { .. } | WitnessOutcome::Failed { .. } => {
                tracing::warn!(node = self.id, index, "checkpoint: {outcome}");
            }
            _ => tracing::info!(node = self.id, index, "checkpoint signed: {outcome}"),
        }
        self.append(&cp)?;
        self.signed.fetch_add(1, Ordering::Relaxed);
        st.last = Some(cp.clone());
        st.last_at = Some(Instant::now());
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp.clone());
        Ok(Made {
            checkpoint: cp,
            fresh: true,
            witness: outcome,
        })
    }

    /// Witness: decides on a hub's checkpoint and cosigns it, persisting the new last cosigned
    /// head first; refuses otherwise (a fork loudly).
    async fn answer(&self, from: u64, req: CosignRequest) -> CosignReply {
        let invalid = |m: String| CosignReply::Refused(Refusal::Invalid(m));
        if self.role != Role::Witness {
            return invalid(format!(
                "node {} is a hub; only a witness cosigns checkpoints",
                self.id
            ));
        }
        let cp = match Checkpoint::parse_line(&req.checkpoint) {
            Ok(c) => c,
            Err(e) => return invalid(format!("malformed checkpoint: {e}")),
        };
        if cp.witness.is_some() {
            return invalid("the checkpoint already carries a cosignature".into());
        }
        if cp.signer.node != from {
            return invalid(format!(
                "the checkpoint is signed as node {} but was sent by node {from}",
                cp.signer.node
            ));
        }
        if let Err(e) = cp.verify_signatures() {
            return invalid(format!("checkpoint at index {}: {e}", cp.index));
        }
        // Wait (bounded) until the index is applied here, without holding the state.
        let mut applied = self.sm.subscribe_applied();
        let deadline = tokio::time::Instant::now() + NOT_YET_WAIT;
        while self
            .sm
            .head()
            .ok()
            .flatten()
            .is_none_or(|(i, _)| i < cp.index)
        {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let mut last = self.witness.lock().await;
        let head = self.sm.head().ok().flatten();
        let own = |i| self.sm.hash_at(i).ok().flatten();
        let decision = match decide(
            last.get(&from).copied(),
            head.map(|(i, _)| i),
            own,
            cp.index,
            &cp.head,
        ) {
            // Its own chain must still hold what it cosigned for the other hubs too.
            Decision::Cosign => match cosigned_still_held(last.values().copied(), own) {
                Some(r) => Decision::Refuse(r),
                None => Decision::Cosign,
            },
            other => other,
        };
        let refusal = match decision {
            Decision::Cosign => {
                let mut next = last.clone();
                next.insert(from, (cp.index, cp.head));
                if let Err(e) = save_witness(&self.dir, &next) {
                    tracing::error!(node = self.id, error = %e, "cannot persist the last cosigned checkpoint");
                    return invalid(format!(
                        "the witness cannot persist its last cosigned checkpoint: {e}"
                    ));
                }
                *last = next;
                self.cosigned.fetch_add(1, Ordering::Relaxed);
                let mut c = cp;
                c.witness = Some(self.key.signature(self.id, c.index, &c.head));
                tracing::info!(
                    node = self.id,
                    hub = from,
                    index = c.index,
                    "checkpoint cosigned"
                );
                return CosignReply::Cosigned {
                    checkpoint: c.to_line(),
                };
            }
            Decision::NotYet => Refusal::NotYetApplied {
                index: cp.index,
                applied: head.map(|(i, _)| i),
            },
            Decision::Refuse(r) => r,
        };
        if refusal.is_fork() {
            self.forks_refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                node = self.id,
                hub = from,
                index = cp.index,
                "REFUSED TO COSIGN A FORKED CHECKPOINT: {refusal}"
            );
        } else {
            tracing::warn!(
                node = self.id,
                hub = from,
                index = cp.index,
                "checkpoint not cosigned: {refusal}"
            );
        }
        CosignReply::Refused(refusal)
    }
}

/// Checks the witness's answer: the same checkpoint, cosigned by `witness`, every signature
/// valid.
fn accept_cosigned(mine: &Checkpoint, witness: u64, line: &str) -> Result<Checkpoint, String> {
    let c = Checkpoint::parse_line(line).map_err(|e| format!("malformed answer: {e}"))?;
    if c.index != mine.index || c.head != mine.head || c.signer != mine.signer {
        return Err("the answer is not the checkpoint that was sent".into());
    }
    match &c.witness {
        Some(w) if w.node == witness => {}
        _ => {
            return Err(format!(
                "the answer carries no cosignature of node {witness}"
            ));
        }
    }
    c.verify_signatures()?;
    Ok(c)
}

impl CosignHandler for Checkpoints {
    fn cosign<'a>(&'a self, from: u64, req: CosignRequest) -> BoxFuture<'a, CosignReply> {
        Box::pin(self.answer(from, req))
    }
}

/// The witness voter of the cluster, if any: (id, address).
pub fn witness_member(raft: &HearthRaft) -> Option<(u64, String)> {
    let m = raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    membership
        .voter_ids()
        .filter_map(|v| membership.get_node(&v).map(|n| (v, n)))
        .find(|(_, n)| n.witness)
        .map(|(v, n)| (v, n.addr.clone()))
}

/// A hub's schedule: signs when `settings` say it is due (`hearth_core::checkpoint::due`).
pub async fn schedule(
    cps: Arc<Checkpoints>,
    raft: HearthRaft,
    settings: CheckpointSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    if settings.every_entries == 0 && settings.every_secs == 0 {
        return;
    }
    let tick = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let Ok(Some((head, _))) = cps.sm.head() else {
            continue;
        };
        let (last, since) = {
            let st = cps.hub.lock().await;
            (
                st.last.as_ref().map(|c| c.index),
                st.last_at.unwrap_or(cps.started).elapsed().as_secs(),
            )
        };
        if !hearth_core::checkpoint::due(
            head,
            last,
            since,
            settings.every_entries,
            settings.every_secs,
        ) {
            continue;
        }
        if let Err(e) = cps.checkpoint(witness_member(&raft)).await {
            tracing::warn!(node = cps.id, error = %e, "scheduled checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another directory, another key.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create_key(other.path()).unwrap().public(),
            a.public()
        );
        // A damaged key file is refused, naming the file.
        std::fs::write(dir.path().join(KEY_FILE), "00AB\n").unwrap();
        let e = load_or_create_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains(KEY_FILE), "{e}");
    }

    fn line(index: u64) -> String {
        let k = Keypair::from_seed(&[1; 32]);
        let head = [index as u8; 32];
        Checkpoint {
            index,
            head,
            signer: k.signature(1, index, &head),
            witness: None,
        }
        .to_line()
    }

    #[test]
    fn the_store_cuts_a_torn_last_line_and_refuses_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        assert_eq!(open_store(&path).unwrap(), vec![]);
        let good = format!("hearth-checkpoints 1\n{}\n{}\n", line(3), line(7));
        let torn = format!("{good}{}", &line(9)[..40]);
        std::fs::write(&path, &torn).unwrap();
        let cps = open_store(&path).unwrap();
        assert_eq!(cps.iter().map(|c| c.index).collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        // A torn header: nothing was ever acknowledged.
        std::fs::write(&path, "hearth-check").unwrap();
        assert_eq!(open_store(&path).unwrap(), vec![]);
        // A damaged line in the middle is not torn: refused, naming file and line.
        let damaged = good.replacen("index=3", "index=03", 1);
        std::fs::write(&path, damaged).unwrap();
        let e = open_store(&path).unwrap_err().to_string();
        assert!(e.contains(STORE_FILE) && e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_witness_file_roundtrips_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WITNESS_FILE);
        assert!(load_witness(&path).unwrap().is_empty());
        let m: BTreeMap<u64, (u64, Hash)> = [(1, (10, [1; 32])), (2, (12, [2; 32]))].into();
        save_witness(dir.path(), &m).unwrap();
        assert_eq!(load_witness(&path).unwrap(), m);
        assert!(!dir.path().join(format!("{WITNESS_FILE}.tmp")).exists());
        std::fs::write(&path, "{").unwrap();
        assert!(
            load_witness(&path)
                .unwrap_err()
                .to_string()
                .contains(WITNESS_FILE)
        );
    }
}
