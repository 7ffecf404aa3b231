//! The audit chain: one SHA-256 link per committed Raft entry.
//!
//! A [`Record`] is the exact byte layout in which an entry is stored in the Raft log and in
//! which it is hashed; nothing is ever re-encoded before hashing. The layout, pinned by the
//! golden vectors in the tests below and documented in `docs/AUDIT-FORMAT.md`, is
//!
//! ```text
//! record = index:u64be ‖ term:u64be ‖ leader:u64be ‖ kind:u8 ‖ payload bytes
//! hash_i = SHA-256("HEARTH-AUDIT-V1\0" ‖ hash_{i-1} ‖ record_i)      hash_{-1} = 32 × 0x00
//! ```
//!
//! This module is pure: it neither reads files nor knows about openraft.

use sha2::{Digest, Sha256};

/// 16-byte domain tag that starts every hash input.
pub const DOMAIN_TAG: &[u8; 16] = b"HEARTH-AUDIT-V1\0";
/// The "previous hash" of the very first entry of a chain.
pub const ZERO_HASH: Hash = [0u8; 32];
/// Bytes before the payload in an encoded record.
pub const HEADER_LEN: usize = 8 + 8 + 8 + 1;

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

/// What a Raft entry carries. The numeric values are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The empty entry each new leader appends (a leader change).
    Blank = 0,
    /// A membership configuration (node joined, left, cluster formed).
    Membership = 1,
    /// An application command (today: an operator's test record).
    Command = 2,
}

impl EntryKind {
    pub fn from_u8(b: u8) -> Result<Self, ChainError> {
        match b {
            0 => Ok(Self::Blank),
            1 => Ok(Self::Membership),
            2 => Ok(Self::Command),
            other => Err(ChainError::UnknownKind(other)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Blank => "blank",
            Self::Membership => "membership",
            Self::Command => "command",
        }
    }

    pub fn from_name(s: &str) -> Result<Self, ChainError> {
        match s {
            "blank" => Ok(Self::Blank),
            "membership" => Ok(Self::Membership),
            "command" => Ok(Self::Command),
            other => Err(ChainError::UnknownKindName(other.to_string())),
        }
    }
}

/// Errors of the pure chain code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("record is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("unknown entry kind byte {0}")]
    UnknownKind(u8),
    #[error("unknown entry kind name {0:?} (expected blank, membership or command)")]
    UnknownKindName(String),
}

/// One entry of the log, in the layout in which it is stored and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub term: u64,
    /// Node id of the leader that proposed the entry (0 for the initial membership).
    pub leader: u64,
    pub kind: EntryKind,
    pub payload: Vec<u8>,
}

impl Record {
    /// The stored bytes of this record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the stored bytes of this record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&self.leader.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
    }

    /// Parses stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChainError> {
        if bytes.len() < HEADER_LEN {
            return Err(ChainError::Truncated(bytes.len()));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            index: u64_at(0),
            term: u64_at(8),
            leader: u64_at(16),
            kind: EntryKind::from_u8(bytes[24])?,
            payload: bytes[HEADER_LEN..].to_vec(),
        })
    }
}

/// `SHA-256(DOMAIN_TAG ‖ prev ‖ record_bytes)`.
pub fn link_hash(prev: &Hash, record_bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(DOMAIN_TAG);
    h.update(prev);
    h.update(record_bytes);
    h.finalize().into()
}

/// Why a chain failed verification, at which index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    #[error(
        "index {index}: stored hash {stored} != computed {computed} (entry or an earlier link was altered)"
    )]
    HashMismatch {
        index: u64,
        stored: String,
        computed: String,
    },
    #[error("index {found}: expected index {expected} (gap or reordering in the chain)")]
    IndexGap { expected: u64, found: u64 },
    #[error("index {index}: {reason}")]
    Malformed { index: u64, reason: String },
}

impl VerifyFailure {
    /// The first index at which the chain is known to be bad.
    pub fn index(&self) -> u64 {
        match self {
            Self::HashMismatch { index, .. } | Self::Malformed { index, .. } => *index,
            Self::IndexGap { expected, .. } => *expected,
        }
    }
}

/// Walks a chain link by link. Start it at the genesis (`new_genesis`) or at an anchor: the
/// index and hash of the entry just before the first one to be checked.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_index: Option<u64>,
    prev: Hash,
    checked: u64,
}

impl ChainVerifier {
    pub fn new_genesis() -> Self {
        Self {
            next_index: Some(0),
            prev: ZERO_HASH,
            checked: 0,
        }
    }

    /// Continue after `anchor_index`, whose hash is `anchor_hash`.
    pub fn after(anchor_index: u64, anchor_hash: Hash) -> Self {
        Self {
            // An anchor at u64::MAX has no next entry: `push` refuses that index.
            next_index: Some(anchor_index.saturating_add(1)),
            prev: anchor_hash,
            checked: 0,
        }
    }

    /// Accepts any first index (used when the start of the chain is not known in advance).
    pub fn from_prev(prev: Hash) -> Self {
        Self {
            next_index: None,
            prev,
            checked: 0,
        }
    }

    /// Checks one link. `record_bytes` are the stored bytes, `stored` the hash kept beside them.
    pub fn push(&mut self, record_bytes: &[u8], stored: &Hash) -> Result<Hash, VerifyFailure> {
        let rec_index = if record_bytes.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&record_bytes[..8]);
            u64::from_be_bytes(b)
        } else {
            return Err(VerifyFailure::Malformed {
                index: self.next_index.unwrap_or(0),
                reason: format!("record of {} bytes has no header", record_bytes.len()),
            });
        };
        if let Err(e) = Record::decode(record_bytes) {
            return Err(VerifyFailure::Malformed {
                index: rec_index,
                reason: e.to_string(),
            });
        }
        if rec_index == u64::MAX {
            // No log reaches it, and it would leave no next index (an input, not a chain).
            return Err(VerifyFailure::Malformed {
                index: rec_index,
                reason: "index 18446744073709551615 (u64::MAX) is beyond any log".into(),
            });
        }
        if let Some(expected) = self.next_index
            && rec_index != expected
        {
            return Err(VerifyFailure::IndexGap {
                expected,
                found: rec_index,
            });
        }
        let computed = link_hash(&self.prev, record_bytes);
        if &computed != stored {
            return Err(VerifyFailure::HashMismatch {
                index: rec_index,
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            });
        }
        self.prev = computed;
        self.next_index = Some(rec_index + 1);
        self.checked += 1;
        Ok(computed)
    }

    pub fn head(&self) -> Hash {
        self.prev
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, kind: EntryKind, payload: &[u8]) -> Record {
        Record {
            index,
            term: 3,
            leader: 1,
            kind,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn encode_decode_roundtrip_every_kind() {
        for kind in [EntryKind::Blank, EntryKind::Membership, EntryKind::Command] {
            for payload in [&b""[..], b"x", &[0u8, 255, 7][..]] {
                let r = rec(u64::MAX - 1, kind, payload);
                assert_eq!(Record::decode(&r.encode()).unwrap(), r);
            }
        }
    }

    #[test]
    fn decode_rejects_short_and_unknown_kind() {
        assert_eq!(Record::decode(&[0u8; 24]), Err(ChainError::Truncated(24)));
        let mut b = rec(1, EntryKind::Blank, b"").encode();
        b[24] = 9;
        assert_eq!(Record::decode(&b), Err(ChainError::UnknownKind(9)));
    }

    /// Golden vector: pins the byte layout and the hash. If this changes, old exports no longer
    /// verify: bump the domain tag and write a migration instead.
    #[test]
    fn golden_vector() {
        let r = Record {
            index: 1,
            term: 2,
            leader: 3,
            kind: EntryKind::Command,
            payload: b"hello".to_vec(),
        };
        let bytes = r.encode();
        assert_eq!(
            hex::encode(&bytes),
            "0000000000000001000000000000000200000000000000030268656c6c6f"
        );
        let h = link_hash(&ZERO_HASH, &bytes);
        let mut manual = Vec::new();
        manual.extend_from_slice(DOMAIN_TAG);
        manual.extend_from_slice(&ZERO_HASH);
        manual.extend_from_slice(&bytes);
        let expect: Hash = Sha256::digest(&manual).into();
        assert_eq!(h, expect);
        assert_eq!(
            hex::encode(h),
            "9faeb2c38390342c81f9149ba424879b280ac8d2be709caa293f5fbbca444166"
        );
    }

    fn build(n: u64) -> Vec<(Vec<u8>, Hash)> {
        let mut prev = ZERO_HASH;
        (0..n)
            .map(|i| {
                let b = rec(i, EntryKind::Command, format!("p{i}").as_bytes()).encode();
                prev = link_hash(&prev, &b);
                (b, prev)
            })
            .collect()
    }

    #[test]
    fn verifier_accepts_good_chain() {
        let chain = build(50);
        let mut v = ChainVerifier::new_genesis();
        for (b, h) in &chain {
            v.push(b, h).unwrap();
        }
        assert_eq!(v.checked(), 50);
        assert_eq!(v.head(), chain[49].1);
    }

    #[test]
    fn verifier_names_the_first_bad_index_for_every_single_byte_flip() {
        let chain = build(6);
        for victim in 0..chain.len() {
            for byte in 0..chain[victim].0.len() {
                let mut c = chain.clone();
                c[victim].0[byte] ^= 0x40;
                let mut v = ChainVerifier::new_genesis();
                let err = c
                    .iter()
                    .find_map(|(b, h)| v.push(b, h).err())
                    .expect("a flipped byte must fail");
                assert_eq!(
                    err.index(),
                    victim as u64,
                    "flip byte {byte} of {victim}: {err}"
                );
            }
        }
    }

    #[test]
    fn verifier_detects_gap_and_altered_hash() {
        let chain = build(4);
        let mut v = ChainVerifier::new_genesis();
        v.push(&chain[0].0, &chain[0].1).unwrap();
        let e = v.push(&chain[2].0, &chain[2].1).unwrap_err();
        assert_eq!(
            e,
            VerifyFailure::IndexGap {
                expected: 1,
                found: 2
            }
        );

        let mut v = ChainVerifier::new_genesis();
        let mut bad = chain[0].1;
        bad[0] ^= 1;
        assert_eq!(v.push(&chain[0].0, &bad).unwrap_err().index(), 0);
    }

    #[test]
    fn verifier_can_start_after_an_anchor() {
        let chain = build(10);
        let mut v = ChainVerifier::after(4, chain[4].1);
        for (b, h) in &chain[5..] {
            v.push(b, h).unwrap();
        }
        assert_eq!(v.checked(), 5);
    }
}
