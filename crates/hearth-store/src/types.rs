//! The openraft type configuration of Hearth, and the mapping between openraft entries and the
//! audit chain's [`Record`] layout (which is also the on-disk layout of the log).

use std::fmt;

use hearth_core::{EntryKind, Record};
use openraft::Membership;
use openraft::alias::{EntryOf, LogIdOf};
use openraft::{EntryPayload, LogId};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Hearth's Raft types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = Member,
);

/// A cluster member as recorded in membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the node's gRPC listener (Raft and public API share it).
    pub addr: String,
    /// A witness votes and stores the log but never campaigns on its own or dispatches.
    #[serde(default)]
    pub witness: bool,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.witness { "witness" } else { "hub" };
        write!(f, "{role}@{}", self.addr)
    }
}

/// An application command: the exact payload bytes that go into the log and the chain.
/// Whoever proposes a command fixes its bytes once; nothing re-encodes them afterwards.
///
/// With serde (the Raft transport's JSON, `hearth_cluster::wire` format 2) the bytes are one
/// hex string: as a byte array they were a list of numbers, over four times the size and, on
/// a follower, most of the cost of decoding an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command(pub Vec<u8>);

impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexBytes;
        impl serde::de::Visitor<'_> for HexBytes {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command's bytes as a hex string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Command, E> {
                hex::decode(v).map(Command).map_err(E::custom)
            }
        }
        d.deserialize_str(HexBytes)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command({} bytes)", self.0.len())
    }
}

/// What applying an entry returns to the proposer: where it landed in the chain, and what
/// the command did (for commands; `None` for Raft's own entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub hash: [u8; 32],
    pub outcome: Option<hearth_core::domain::Outcome>,
}

pub type Entry = EntryOf<TypeConfig>;
pub type LogIdT = LogIdOf<TypeConfig>;

/// Error converting between a stored record and an openraft entry.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Chain(#[from] hearth_core::ChainError),
    #[error("membership payload is not valid: {0}")]
    Membership(String),
}

/// The record (stored and hashed layout) of an openraft entry.
pub fn entry_to_record(entry: &Entry) -> Result<Record, RecordError> {
    let (kind, payload) = match &entry.payload {
        EntryPayload::Blank => (EntryKind::Blank, Vec::new()),
        EntryPayload::Normal(c) => (EntryKind::Command, c.0.clone()),
        EntryPayload::Membership(m) => (
            EntryKind::Membership,
            // Membership is a struct of BTreeMaps/BTreeSets: its JSON is deterministic. These
            // bytes are stored in the log and hashed as stored; they are never recomputed from
            // a decoded value for verification.
            serde_json::to_vec(m).map_err(|e| RecordError::Membership(e.to_string()))?,
        ),
    };
    Ok(Record {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        leader: entry.log_id.leader_id.node_id,
        kind,
        payload,
    })
}

/// The openraft entry of a stored record.
pub fn record_to_entry(rec: Record) -> Result<Entry, RecordError> {
    let log_id = log_id(rec.term, rec.leader, rec.index);
    let payload = match rec.kind {
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Command => EntryPayload::Normal(Command(rec.payload)),
        EntryKind::Membership => {
            let m: Membership<u64, Member> = serde_json::from_slice(&rec.payload)
                .map_err(|e| RecordError::Membership(e.to_string()))?;
            EntryPayload::Membership(m)
        }
    };
    Ok(Entry { log_id, payload })
}

pub fn log_id(term: u64, leader: u64, index: u64) -> LogIdT {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term,
            node_id: leader,
        },
        index,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn a_command_travels_as_one_hex_string_and_bad_hex_is_refused() {
        let c = Command(vec![0, 1, 0xab, 0xff]);
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"0001abff\"");
        assert_eq!(serde_json::from_str::<Command>("\"0001abff\"").unwrap(), c);
        assert!(serde_json::from_str::<Command>("\"0g\"").is_err());
        assert!(serde_json::from_str::<Command>("[0,1]").is_err());
    }

    #[test]
    fn every_entry_kind_roundtrips_through_its_record() {
        let nodes: BTreeMap<u64, Member> = [
            (
                1,
                Member {
                    addr: "a:1".into(),
                    witness: false,
                },
            ),
            (
                3,
                Member {
                    addr: "c:3".into(),
                    witness: true,
                },
            ),
        ]
        .into();
        let m = Membership::new(vec![BTreeSet::from([1, 3])], nodes).unwrap();
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Command(b"xyz".to_vec())),
            EntryPayload::Membership(m),
        ] {
            let e = Entry {
                log_id: log_id(4, 2, 9),
                payload,
            };
            let rec = entry_to_record(&e).unwrap();
            let back = record_to_entry(Record::decode(&rec.encode()).unwrap()).unwrap();
            assert_eq!(back, e);
            let json = serde_json::to_vec(&e).unwrap();
            assert_eq!(serde_json::from_slice::<Entry>(&json).unwrap(), e);
        }
    }
}
