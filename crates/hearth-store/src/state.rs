//! The replicated state machine, kept in sled, and the audit chain's hashes.
//!
//! One sled tree holds everything, so each `apply` batch is atomic:
//! `m/applied` (last applied log id), `m/membership`, `m/head` (index ‖ hash of the last
//! applied entry), `m/anchor` (index ‖ hash the chain continues from after a snapshot install)
//! and `c/<index:u64be>` → the 32-byte chain hash of that entry.
//!
//! `apply` hashes each committed entry's stored record (`hearth_core::chain::link_hash`),
//! writes the batch atomically, answers the proposers, then flushes before it returns (so
//! before the next batch is applied). The answer does not wait for the flush: the entries it
//! reports are committed in the fsynced Raft log of a quorum, and a state machine that lags
//! after a crash is re-applied from that log, deterministically, to the same hashes. What is
//! reported as applied to openraft at startup (`applied_state`) is read back from sled, so it
//! never exceeds what sled kept. Business outcomes are answers, never `Err`: an `Err` from
//! here stops the Raft node.

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use hearth_core::chain::link_hash;
use hearth_core::{Hash, ZERO_HASH};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::types::{Applied, LogIdT, TypeConfig, entry_to_record};
use hearth_core::domain::{Command, DomainState, EntryPos, Outcome};

const K_APPLIED: &[u8] = b"m/applied";
const K_MEMBERSHIP: &[u8] = b"m/membership";
const K_HEAD: &[u8] = b"m/head";
const K_ANCHOR: &[u8] = b"m/anchor";
const K_SNAPSHOT: &[u8] = b"m/snapshot";
const CHAIN_PREFIX: &[u8] = b"c/";
const DEVICE_PREFIX: &str = "d/device/";
const CLASS_PREFIX: &str = "d/class/";
const INTENT_PREFIX: &str = "d/intent/";
const K_POLICIES: &[u8] = b"d/policies";
const K_RATES: &[u8] = b"d/rates";
const K_RETIRED: &[u8] = b"d/retired";
const K_NOTICES: &[u8] = b"d/notices";
const K_INCARNATIONS: &[u8] = b"d/incarnations";
const DOMAIN_PREFIX: &[u8] = b"d/";

fn chain_key(index: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(CHAIN_PREFIX);
    k[2..].copy_from_slice(&index.to_be_bytes());
    k
}

fn pos_bytes(index: u64, hash: &Hash) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend_from_slice(hash);
    v
}

fn parse_pos(b: &[u8]) -> Option<(u64, Hash)> {
    if b.len() != 40 {
        return None;
    }
    let index = u64::from_be_bytes(b[..8].try_into().ok()?);
    let hash: Hash = b[8..].try_into().ok()?;
    Some((index, hash))
}

fn other(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// The applied state that openraft asks about.
#[derive(Debug, Clone, Default)]
struct Cached {
    applied: Option<LogIdT>,
    membership: StoredMembershipOf<TypeConfig>,
    /// Index and hash of the last applied entry; `None` before the first.
    head: Option<(u64, Hash)>,
    /// Where the chain held here starts: the entry before the first hash stored here.
    anchor: Option<(u64, Hash)>,
    /// Devices, classes, policies, intents and their outbox, rate windows.
    domain: DomainState,
}

/// What a snapshot carries: the small state plus the chain head. Entries are never in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotData {
    head: Option<(u64, Hash)>,
    domain: DomainState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

/// The state machine of one node. Cloning shares the database.
#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    cached: Arc<Mutex<Cached>>,
    /// The last applied index, for tasks that react to new entries (the dispatcher).
    applied_tx: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachine {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = db.open_tree("sm")?;
        let read_json = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(tree.get(key)?.map(|v| v.to_vec()))
        };
        let corrupt = |key: &str, reason: String| StoreError::CorruptState {
            key: key.to_string(),
            reason,
        };
        let applied = match read_json(K_APPLIED)? {
            Some(b) => {
                Some(serde_json::from_slice(&b).map_err(|e| corrupt("m/applied", e.to_string()))?)
            }
            None => None,
        };
        let membership = match read_json(K_MEMBERSHIP)? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| corrupt("m/membership", e.to_string()))?
            }
            None => StoredMembership::default(),
        };
        let pos = |key: &[u8], name: &str| -> Result<Option<(u64, Hash)>, StoreError> {
            match tree.get(key)? {
                Some(b) => parse_pos(&b)
                    .map(Some)
                    .ok_or_else(|| corrupt(name, format!("{} bytes, expected 40", b.len()))),
                None => Ok(None),
            }
        };
        let head = pos(K_HEAD, "m/head")?;
        let anchor = pos(K_ANCHOR, "m/anchor")?;
        let domain = load_domain(&tree)?;
        Ok(Self {
            cached: Arc::new(Mutex::new(Cached {
                applied,
                membership,
                head,
                anchor,
                domain,
            })),
            applied_tx: Arc::new(tokio::sync::watch::channel(head.map_or(0, |(i, _)| i)).0),
            db,
            tree,
        })
    }

    fn cached(&self) -> io::Result<std::sync::MutexGuard<'_, Cached>> {
        self.cached
            .lock()
            .map_err(|_| other("state machine lock poisoned"))
    }

    /// Index and hash of the last applied entry.
    /// How many handles share this state machine (this one included). Raft's workers hold
    /// clones; a stopping node waits until it holds the last one, so that sled's lock on the
    /// directory is released when it says it has stopped.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.cached)
    }

    pub fn head(&self) -> io::Result<Option<(u64, Hash)>> {
        Ok(self.cached()?.head)
    }

    /// The entry the stored chain continues from (set by a snapshot install), if any.
    pub fn anchor(&self) -> io::Result<Option<(u64, Hash)>> {
        Ok(self.cached()?.anchor)
    }

    pub fn applied(&self) -> io::Result<Option<LogIdT>> {
        Ok(self.cached()?.applied)
    }

    pub fn membership(&self) -> io::Result<StoredMembershipOf<TypeConfig>> {
        Ok(self.cached()?.membership.clone())
    }

    /// Changes whenever entries are applied (its value is the last applied index).
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// Reads the domain state (devices, classes, policies, intents).
    pub fn with_domain<R>(&self, f: impl FnOnce(&DomainState) -> R) -> io::Result<R> {
        Ok(f(&self.cached()?.domain))
    }

    /// The stored chain hash of `index`.
    pub fn hash_at(&self, index: u64) -> io::Result<Option<Hash>> {
        match self.tree.get(chain_key(index)).map_err(other)? {
            Some(v) => Ok(Some(v.as_ref().try_into().map_err(|_| {
                other(format!("chain hash of {index} has {} bytes", v.len()))
            })?)),
            None => Ok(None),
        }
    }

    /// Overwrites a stored hash. For fault-injection tests only (it models disk corruption).
    #[doc(hidden)]
    pub fn corrupt_hash_for_test(&self, index: u64, hash: Hash) -> io::Result<()> {
        self.tree
            .insert(chain_key(index), &hash[..])
            .map_err(other)?;
        self.tree.flush().map_err(other)?;
        Ok(())
    }

    /// Makes everything applied so far durable (sled `flush`).
    pub async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(other)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        let (meta, data) = {
            let c = self.cached()?;
            let meta = SnapshotMetaOf::<TypeConfig> {
                last_log_id: c.applied,
                last_membership: c.membership.clone(),
            };
            let data = serde_json::to_vec(&SnapshotData {
                head: c.head,
                domain: c.domain.clone(),
            })
            .map_err(other)?;
            (meta, data)
        };
        let stored = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .map_err(other)?;
        self.tree.insert(K_SNAPSHOT, stored).map_err(other)?;
        self.flush().await?;
        Ok(SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdT>, StoredMembershipOf<TypeConfig>), io::Error> {
        let c = self.cached()?;
        Ok((c.applied, c.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut next = self.cached()?.clone();
        let mut batch = sled::Batch::default();
        let mut responses = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let rec = entry_to_record(&entry).map_err(other)?;
            let prev = match next.head {
                Some((i, h)) if i + 1 == rec.index => h,
                None if rec.index == 0 => ZERO_HASH,
                // A fresh state machine asked to start mid-log (openraft's storage conformance
                // suite does this). The chain here then starts from an unknown predecessor: the
                // anchor records that, and verification reports the chain as unanchored.
                // Anything else — a fresh state machine asked to start mid-log, or a gap — cannot
                // happen under openraft's ordering except in its storage conformance suite, which
                // applies arbitrary indexes. Applying stays total (an `Err` would stop the node),
                // but the chain here then continues from an unknown predecessor: the anchor says
                // so and `audit::verify` reports it, so the node refuses to serve it.
                gap => {
                    tracing::error!(index = rec.index, head = ?gap.map(|(i, _)| i),
                        "apply does not follow the chain head: chain marked unverifiable");
                    next.anchor = Some((rec.index.saturating_sub(1), ZERO_HASH));
                    batch.insert(K_ANCHOR, pos_bytes(rec.index.saturating_sub(1), &ZERO_HASH));
                    ZERO_HASH
                }
            };
            let hash = link_hash(&prev, &rec.encode());
            batch.insert(&chain_key(rec.index), &hash[..]);
            next.head = Some((rec.index, hash));
            next.applied = Some(entry.log_id());
            if let EntryPayload::Membership(m) = &entry.payload {
                next.membership = StoredMembership::new(Some(entry.log_id()), m.clone());
            }
            let outcome = match &entry.payload {
                EntryPayload::Normal(c) => {
                    let pos = EntryPos {
                        index: rec.index,
                        term: rec.term,
                        leader: rec.leader,
                    };
                    Some(apply_command(&mut next.domain, &c.0, pos, &mut batch)?)
                }
                _ => None,
            };
            if let Some(r) = responder {
                responses.push((
                    r,
                    Applied {
                        index: rec.index,
                        hash,
                        outcome,
                    },
                ));
            }
        }
        if let Some((i, h)) = next.head {
            batch.insert(K_HEAD, pos_bytes(i, &h));
        }
        batch.insert(K_APPLIED, serde_json::to_vec(&next.applied).map_err(other)?);
        batch.insert(
            K_MEMBERSHIP,
            serde_json::to_vec(&next.membership).map_err(other)?,
        );
        self.tree.apply_batch(batch).map_err(other)?;
        let head_index = next.head.map_or(0, |(i, _)| i);
        *self.cached()? = next;
        self.applied_tx.send_replace(head_index);
        for (r, applied) in responses {
            r.send(applied);
        }
        // Before the next batch, but after the answers: the flush is off the commit path.
        self.flush().await?;
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(other)?;
        let mut batch = sled::Batch::default();
        for prefix in [CHAIN_PREFIX, DOMAIN_PREFIX] {
            for k in self.tree.scan_prefix(prefix).keys() {
                batch.remove(k.map_err(other)?);
            }
        }
        write_domain(&data.domain, &mut batch)?;
        match data.head {
            Some((i, h)) => {
                batch.insert(K_HEAD, pos_bytes(i, &h));
                batch.insert(K_ANCHOR, pos_bytes(i, &h));
            }
            None => {
                batch.remove(K_HEAD);
                batch.remove(K_ANCHOR);
            }
        }
        batch.insert(
            K_APPLIED,
            serde_json::to_vec(&meta.last_log_id).map_err(other)?,
        );
        batch.insert(
            K_MEMBERSHIP,
            serde_json::to_vec(&meta.last_membership).map_err(other)?,
        );
        let stored = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        })
        .map_err(other)?;
        batch.insert(K_SNAPSHOT, stored);
        self.tree.apply_batch(batch).map_err(other)?;
        self.flush().await?;
        *self.cached()? = Cached {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            head: data.head,
            anchor: data.head,
            domain: data.domain,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>>, io::Error> {
        let Some(b) = self.tree.get(K_SNAPSHOT).map_err(other)? else {
            return Ok(None);
        };
        let s: StoredSnapshot = serde_json::from_slice(&b).map_err(other)?;
        Ok(Some(SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
            meta: s.meta,
            snapshot: Cursor::new(s.data),
        }))
    }
}

fn json<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(other)
}

/// Applies one command's bytes to the domain state and stages exactly the keys it changed.
/// Undecodable bytes are refused (an answer, not an error: an `Err` would stop the node).
fn apply_command(
    domain: &mut DomainState,
    bytes: &[u8],
    pos: EntryPos,
    batch: &mut sled::Batch,
) -> io::Result<Outcome> {
    let cmd = match Command::decode(bytes) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Outcome::Refused {
                reason: format!("undecodable command: {e}"),
            });
        }
    };
    // The intents a removal finishes or changes, known before it applies.
    let pending = match &cmd {
        Command::RemoveDevice { id, .. } => domain.pending_for_device(id),
        _ => Vec::new(),
    };
    let outcome = domain.apply(&cmd, pos);
    if matches!(
        outcome,
        Outcome::Refused { .. } | Outcome::Duplicate { .. } | Outcome::KeyConflict { .. }
    ) {
        return Ok(outcome);
    }
    match &cmd {
        Command::TestRecord { .. } | Command::OperatorAct { .. } => {}
        Command::Promote { .. } => batch.insert(K_RETIRED, json(&domain.retired)?),
        Command::NodeNotice { .. } => batch.insert(K_NOTICES, json(&domain.notices)?),
        Command::AdmitNode { .. } => batch.insert(K_INCARNATIONS, json(&domain.incarnations)?),
        Command::RegisterDevice { device, .. } => batch.insert(
            format!("{DEVICE_PREFIX}{}", device.id).as_bytes(),
            json(device)?,
        ),
        Command::RemoveDevice { id, .. } => {
            batch.remove(format!("{DEVICE_PREFIX}{id}").as_bytes());
            for intent_id in &pending {
                if let Some(r) = domain.intents.get(intent_id) {
                    batch.insert(format!("{INTENT_PREFIX}{intent_id}").as_bytes(), json(r)?);
                }
            }
        }
        Command::ApplyClass { class, .. } => batch.insert(
            format!("{CLASS_PREFIX}{}", class.name).as_bytes(),
            json(class)?,
        ),
        Command::ApplyPolicies { .. }
        | Command::AddPolicy { .. }
        | Command::RemovePolicy { .. } => batch.insert(K_POLICIES, json(&domain.policies)?),
        Command::SubmitIntent { .. } => {
            let Outcome::Accepted { intent_id: id } = &outcome else {
                return Ok(outcome);
            };
            if let Some(r) = domain.intents.get(id) {
                batch.insert(format!("{INTENT_PREFIX}{id}").as_bytes(), json(r)?);
            }
            batch.insert(K_RATES, json(&domain.rates)?);
        }
        Command::Refence { .. } => {
            let id = hearth_core::domain::DomainState::refence_id(pos.index);
            if let Some(r) = domain.intents.get(&id) {
                batch.insert(format!("{INTENT_PREFIX}{id}").as_bytes(), json(r)?);
            }
            batch.insert(K_RATES, json(&domain.rates)?);
        }
        // A denial moves the chain's time (it is stamped): the rates carry it.
        Command::Deny { intent_id, .. } | Command::ExpireApproval { intent_id, .. } => {
            if let Some(r) = domain.intents.get(intent_id) {
                batch.insert(format!("{INTENT_PREFIX}{intent_id}").as_bytes(), json(r)?);
            }
            batch.insert(K_RATES, json(&domain.rates)?);
        }
        Command::Approve { intent_id, .. } | Command::RecordOutcome { intent_id, .. } => {
            if let Some(r) = domain.intents.get(intent_id) {
                batch.insert(format!("{INTENT_PREFIX}{intent_id}").as_bytes(), json(r)?);
            }
        }
    }
    Ok(outcome)
}

/// Stages the whole domain state (snapshot install).
fn write_domain(d: &DomainState, batch: &mut sled::Batch) -> io::Result<()> {
    for (id, dev) in &d.devices {
        batch.insert(format!("{DEVICE_PREFIX}{id}").as_bytes(), json(dev)?);
    }
    for (name, c) in &d.classes {
        batch.insert(format!("{CLASS_PREFIX}{name}").as_bytes(), json(c)?);
    }
    for (id, r) in &d.intents {
        batch.insert(format!("{INTENT_PREFIX}{id}").as_bytes(), json(r)?);
    }
    batch.insert(K_POLICIES, json(&d.policies)?);
    batch.insert(K_RATES, json(&d.rates)?);
    batch.insert(K_RETIRED, json(&d.retired)?);
    batch.insert(K_NOTICES, json(&d.notices)?);
    batch.insert(K_INCARNATIONS, json(&d.incarnations)?);
    Ok(())
}

/// Loads the domain state; classes start from the defaults, stored ones override them.
fn load_domain(tree: &sled::Tree) -> Result<DomainState, StoreError> {
    let mut d = DomainState::default();
    for item in tree.scan_prefix(DOMAIN_PREFIX) {
        let (k, v) = item?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let bad = |e: serde_json::Error| StoreError::CorruptState {
            key: key.clone(),
            reason: e.to_string(),
        };
        if let Some(id) = key.strip_prefix(DEVICE_PREFIX) {
            d.devices
                .insert(id.to_string(), serde_json::from_slice(&v).map_err(bad)?);
        } else if let Some(name) = key.strip_prefix(CLASS_PREFIX) {
            d.classes
                .insert(name.to_string(), serde_json::from_slice(&v).map_err(bad)?);
        } else if let Some(id) = key.strip_prefix(INTENT_PREFIX) {
            d.intents
                .insert(id.to_string(), serde_json::from_slice(&v).map_err(bad)?);
        } else if k.as_ref() == K_POLICIES {
            d.policies = serde_json::from_slice(&v).map_err(bad)?;
        } else if k.as_ref() == K_RATES {
            d.rates = serde_json::from_slice(&v).map_err(bad)?;
        } else if k.as_ref() == K_RETIRED {
            d.retired = serde_json::from_slice(&v).map_err(bad)?;
        } else if k.as_ref() == K_NOTICES {
            d.notices = serde_json::from_slice(&v).map_err(bad)?;
        } else if k.as_ref() == K_INCARNATIONS {
            d.incarnations = serde_json::from_slice(&v).map_err(bad)?;
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::domain::{ActionOutcome, IntentStatus};
    use hearth_core::intent::{Adapter, Device, Intent, Location, Urgency};

    fn siren() -> Device {
        Device {
            id: "siren".into(),
            name: "Siren".into(),
            location: Location::parse("l", "home").unwrap(),
            tags: Default::default(),
            sensors: Default::default(),
            actuators: [("siren".to_string(), ["on".to_string()].into())].into(),
            emergency_capable: true,
            emergency_actions: Default::default(),
            adapter: Adapter::Sim {
                address: "local".into(),
            },
        }
    }

    /// Applies `cmds` as the state machine does (staged keys, one batch each) and returns the
    /// in-memory state and the state read back from sled.
    fn apply_and_reload(cmds: &[Command]) -> (DomainState, DomainState, Vec<Outcome>) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut domain = DomainState::default();
        let mut outcomes = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            let mut batch = sled::Batch::default();
            let pos = EntryPos {
                index: i as u64 + 1,
                term: 1,
                leader: 1,
            };
            outcomes.push(apply_command(&mut domain, &c.encode(), pos, &mut batch).unwrap());
            tree.apply_batch(batch).unwrap();
        }
        let loaded = load_domain(&tree).unwrap();
        (domain, loaded, outcomes)
    }

    #[test]
    fn a_removal_is_stored_as_applied_and_a_refused_one_stores_nothing() {
        let submit = Command::SubmitIntent {
            intent: Intent {
                class: "ensure_safety".into(),
                urgency: Urgency::Emergency,
                subject: String::new(),
                location: Location::parse("l", "home").unwrap(),
                context: Default::default(),
                source: "agent".into(),
                idempotency_key: "k".into(),
            },
            at_ms: 1000,
            minute_of_day: 0,
            deadline_ms: None,
            key_scope: Some("agent".into()),
            emergency_limit: None,
            approval_timeout_ms: None,
        };
        let register = Command::RegisterDevice {
            device: siren(),
            by: None,
        };
        let remove = Command::RemoveDevice {
            id: "siren".into(),
            by: "ana".into(),
        };
        let (mem, disk, outcomes) =
            apply_and_reload(&[register.clone(), submit, remove.clone(), remove]);
        assert!(matches!(&outcomes[2], Outcome::Removed { cancelled } if cancelled.len() == 1));
        assert!(
            matches!(&outcomes[3], Outcome::Refused { .. }),
            "{outcomes:?}"
        );
        assert_eq!(disk, mem, "sled holds what apply made");
        assert!(!disk.devices.contains_key("siren"));
        let r = disk.intents.values().next().unwrap();
        assert_eq!(r.status, IntentStatus::Failed);
        assert!(matches!(
            &r.actions[0].outcome,
            Some(ActionOutcome::Cancelled { reason }) if reason == "device siren removed by ana"
        ));
        // Registered again after a restart: there.
        let (mem, disk, _) = apply_and_reload(&[
            register.clone(),
            Command::RemoveDevice {
                id: "siren".into(),
                by: "ana".into(),
            },
            register,
        ]);
        assert_eq!(disk, mem);
        assert!(disk.devices.contains_key("siren"));
    }
}
