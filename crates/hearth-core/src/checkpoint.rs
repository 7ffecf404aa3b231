//! Signed, witnessed checkpoints of the audit chain (`docs/AUDIT-FORMAT.md`, "Checkpoints").
//!
//! A checkpoint says "the chain hash of entry `index` is `head`", signed with a hub's Ed25519
//! key and, when the cluster has a witness, cosigned by the witness after it checked the head
//! against its own copy of the chain. A household keeps the checkpoints off the cluster; an
//! export that was rewritten as a whole (every hash recomputed) no longer matches them.
//!
//! ```text
//! signed message = "HEARTH-CHECKPOINT-V1" 0x00 ‖ index:u64be ‖ head (32 bytes)   (61 bytes)
//! ```
//!
//! Everything here is pure: the message bytes, signing with a given key and verifying, the
//! strict text format, verifying an export against checkpoints, and the witness's decision
//! to cosign ([`decide`]).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chain::Hash;
use crate::export::{ExportError, ExportReport, verify_export_visit};

/// The 21-byte domain tag that starts every signed checkpoint message.
pub const SIGN_TAG: &[u8; 21] = b"HEARTH-CHECKPOINT-V1\0";
/// Length of the signed message.
pub const MESSAGE_LEN: usize = SIGN_TAG.len() + 8 + 32;
/// First line of a checkpoint file.
pub const FILE_HEADER: &str = "hearth-checkpoints 1";

/// An Ed25519 public key (32 bytes, as in RFC 8032).
pub type PublicKey = [u8; 32];
/// An Ed25519 signature (64 bytes).
pub type SignatureBytes = [u8; 64];

/// The exact bytes that are signed for a checkpoint of `head` at `index`.
pub fn message(index: u64, head: &Hash) -> [u8; MESSAGE_LEN] {
    let mut m = [0u8; MESSAGE_LEN];
    m[..SIGN_TAG.len()].copy_from_slice(SIGN_TAG);
    m[SIGN_TAG.len()..SIGN_TAG.len() + 8].copy_from_slice(&index.to_be_bytes());
    m[SIGN_TAG.len() + 8..].copy_from_slice(head);
    m
}

/// A node's checkpoint key, made from a 32-byte secret seed (the node keeps the seed).
pub struct Keypair {
    key: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair(public {})", hex::encode(self.public()))
    }
}

impl Keypair {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        self.key.verifying_key().to_bytes()
    }

    /// Signs the checkpoint message of (`index`, `head`).
    pub fn sign(&self, index: u64, head: &Hash) -> SignatureBytes {
        self.key.sign(&message(index, head)).to_bytes()
    }

    /// The signature of node `node` over (`index`, `head`).
    pub fn signature(&self, node: u64, index: u64, head: &Hash) -> Signature {
        Signature {
            node,
            key: self.public(),
            sig: self.sign(index, head),
        }
    }
}

/// Checks `sig` over (`index`, `head`) with `key` (strict verification: no weak keys, no
/// malleable signatures).
pub fn verify_signature(
    key: &PublicKey,
    index: u64,
    head: &Hash,
    sig: &SignatureBytes,
) -> Result<(), String> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| "not a valid Ed25519 public key")?;
    let s = ed25519_dalek::Signature::from_bytes(sig);
    vk.verify_strict(&message(index, head), &s)
        .map_err(|_| "the signature does not verify".to_string())
}

/// One node's signature of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The node that signed.
    pub node: u64,
    /// Its public key.
    pub key: PublicKey,
    pub sig: SignatureBytes,
}

/// A checkpoint: a hub's signature over (index, head), and the witness's cosignature if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub index: u64,
    pub head: Hash,
    pub signer: Signature,
    pub witness: Option<Signature>,
}

impl Checkpoint {
    /// Checks every signature the checkpoint carries.
    pub fn verify_signatures(&self) -> Result<(), String> {
        verify_signature(&self.signer.key, self.index, &self.head, &self.signer.sig)
            .map_err(|e| format!("signature of node {}: {e}", self.signer.node))?;
        if let Some(w) = &self.witness {
            verify_signature(&w.key, self.index, &self.head, &w.sig)
                .map_err(|e| format!("cosignature of witness {}: {e}", w.node))?;
        }
        Ok(())
    }

    /// The checkpoint as one line of the text format (no line break).
    pub fn to_line(&self) -> String {
        let mut s = format!(
            "checkpoint index={} head={} node={} key={} sig={}",
            self.index,
            hex::encode(self.head),
            self.signer.node,
            hex::encode(self.signer.key),
            hex::encode(self.signer.sig)
        );
        if let Some(w) = &self.witness {
            s.push_str(&format!(
                " witness={} wkey={} wsig={}",
                w.node,
                hex::encode(w.key),
                hex::encode(w.sig)
            ));
        }
        s
    }

    /// Parses one checkpoint line (strict; see the module docs and `docs/AUDIT-FORMAT.md`).
    pub fn parse_line(line: &str) -> Result<Self, String> {
        const FIELDS: [&str; 8] = [
            "index", "head", "node", "key", "sig", "witness", "wkey", "wsig",
        ];
        let mut tokens = line.split(' ');
        match tokens.next() {
            Some("checkpoint") => {}
            Some("") => {
                return Err(
                    "empty line or a line starting with a space (neither is allowed)".into(),
                );
            }
            Some(other) => {
                return Err(format!(
                    "unknown line {:?}: every line after the header starts with \"checkpoint \"",
                    clip(other)
                ));
            }
            None => unreachable!("split yields at least one item"),
        }
        let mut values: Vec<&str> = Vec::with_capacity(8);
        for tok in tokens {
            if tok.is_empty() {
                return Err("two spaces in a row, or a space at the end of the line".into());
            }
            let Some((name, value)) = tok.split_once('=') else {
                return Err(format!("field {:?} is not name=value", clip(tok)));
            };
            let Some(pos) = FIELDS.iter().position(|f| *f == name) else {
                return Err(format!("unknown field {:?}", clip(name)));
            };
            if pos < values.len() {
                return Err(format!("duplicate field {name}"));
            }
            if pos > values.len() {
                return Err(format!(
                    "field {name} out of order or missing field {} before it",
                    FIELDS[values.len()]
                ));
            }
            values.push(value);
        }
        if values.len() != 5 && values.len() != 8 {
            return Err(format!("missing field {}", FIELDS[values.len()]));
        }
        let index = parse_u64("index", values[0])?;
        let head = parse_hex::<32>("head", values[1])?;
        let signer = Signature {
            node: parse_node("node", values[2])?,
            key: parse_hex::<32>("key", values[3])?,
            sig: parse_hex::<64>("sig", values[4])?,
        };
        let witness = if values.len() == 8 {
            let w = Signature {
                node: parse_node("witness", values[5])?,
                key: parse_hex::<32>("wkey", values[6])?,
                sig: parse_hex::<64>("wsig", values[7])?,
            };
            if w.node == signer.node {
                return Err(format!(
                    "witness {} is the signing node itself; a cosignature comes from another node",
                    w.node
                ));
            }
            Some(w)
        } else {
            None
        };
        Ok(Self {
            index,
            head,
            signer,
            witness,
        })
    }
}

/// At most 40 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse_u64(field: &str, v: &str) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "field {field}: {:?} is not a decimal number",
            clip(v)
        ));
    }
    if v.len() > 1 && v.starts_with('0') {
        return Err(format!("field {field}: {v:?} has a leading zero"));
    }
    v.parse::<u64>()
        .map_err(|_| format!("field {field}: {:?} does not fit in 64 bits", clip(v)))
}

fn parse_node(field: &str, v: &str) -> Result<u64, String> {
    match parse_u64(field, v)? {
        0 => Err(format!("field {field}: node id 0 is reserved")),
        n => Ok(n),
    }
}

/// Lower-case hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(field: &str, v: &str) -> Result<[u8; N], String> {
    if let Some(c) = v.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!(
            "field {field}: not lower-case hex (found {c:?}; upper case is refused)"
        ));
    }
    if v.len() != 2 * N {
        return Err(format!(
            "field {field}: {} hex digits, expected {} ({N} bytes)",
            v.len(),
            2 * N
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(v, &mut out).map_err(|e| format!("field {field}: {e}"))?;
    Ok(out)
}

/// Why a checkpoint file could not be read, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The text of a checkpoint file: the header line, then one line per checkpoint, each ending
/// in a line feed.
pub fn format_file(checkpoints: &[Checkpoint]) -> String {
    let mut s = format!("{FILE_HEADER}\n");
    for c in checkpoints {
        s.push_str(&c.to_line());
        s.push('\n');
    }
    s
}

/// Parses a checkpoint file strictly: the header line first, then only checkpoint lines, with
/// strictly increasing indices; every line ends in `\n` (the last one may omit it); no empty
/// lines, no carriage returns, no comments. The first problem is returned with its line number.
/// Signatures are not checked here ([`Checkpoint::verify_signatures`]).
pub fn parse_file(text: &str) -> Result<Vec<Checkpoint>, ParseError> {
    let err = |line: usize, message: String| ParseError { line, message };
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Err(err(
            1,
            format!("the file is empty; it starts with {FILE_HEADER:?}"),
        ));
    }
    let mut out: Vec<Checkpoint> = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        if line.contains('\r') {
            return Err(err(n, "carriage return (the format uses \\n only)".into()));
        }
        if n == 1 {
            if line != FILE_HEADER {
                return Err(err(
                    1,
                    format!(
                        "not a Hearth checkpoint file: the first line is {:?}, expected {FILE_HEADER:?}",
                        clip(line)
                    ),
                ));
            }
            continue;
        }
        let c = Checkpoint::parse_line(line).map_err(|m| err(n, m))?;
        if let Some(prev) = out.last()
            && c.index <= prev.index
        {
            return Err(err(
                n,
                format!(
                    "index {} does not follow index {} of the line before (indices strictly increase)",
                    c.index, prev.index
                ),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// Which keys the verifier trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Pinned keys (`--trust-key`). Empty: every key written in the checkpoint file is
    /// trusted, i.e. the file itself (kept off the cluster) is what is trusted.
    pub pinned: BTreeSet<PublicKey>,
}

/// A checkpoint that does not hold for an export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint at index {index}: {reason}")]
pub struct CheckpointFailure {
    pub index: u64,
    pub reason: String,
}

/// The outcome of verifying an export against checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedExport {
    /// The export's own verification (its first bad entry, if any, is `export.failure`).
    pub export: ExportReport,
    /// Checkpoints that matched the export.
    pub matched: u64,
    /// The first checkpoint (lowest index) that does not hold.
    pub failure: Option<CheckpointFailure>,
}

impl CheckedExport {
    pub fn ok(&self) -> bool {
        self.export.failure.is_none() && self.failure.is_none()
    }
}

/// Checks the signatures of every checkpoint and, with pinned keys, that each carries at
/// least one signature by a pinned key. Returns the first failure.
pub fn check_signatures(
    checkpoints: &[Checkpoint],
    trust: &Trust,
) -> Result<(), CheckpointFailure> {
    for c in checkpoints {
        c.verify_signatures().map_err(|reason| CheckpointFailure {
            index: c.index,
            reason,
        })?;
        if !trust.pinned.is_empty() {
            let trusted = std::iter::once(&c.signer)
                .chain(c.witness.as_ref())
                .any(|s| trust.pinned.contains(&s.key));
            if !trusted {
                return Err(CheckpointFailure {
                    index: c.index,
                    reason: format!(
                        "signed by key {} (node {}){}, none of which is a trusted key",
                        hex::encode(c.signer.key),
                        c.signer.node,
                        c.witness
                            .as_ref()
                            .map(|w| format!(" and {} (witness {})", hex::encode(w.key), w.node))
                            .unwrap_or_default()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Verifies an export (lines of text) against checkpoints: every signature must be valid
/// (and trusted, with pinned keys); the export's own chain is verified as by
/// [`crate::export::verify_export`]; and for every checkpoint, the export must hold its index
/// and the verified chain hash there must equal the checkpoint's head.
///
/// When the export's chain breaks at index `b`, `export.failure` names `b` and checkpoints at
/// `b` or later are reported as not checkable. A signature problem is returned as the failure
/// and the export is still walked.
pub fn verify_export_against<'a>(
    lines: impl Iterator<Item = &'a str>,
    checkpoints: &[Checkpoint],
    trust: &Trust,
) -> Result<CheckedExport, ExportError> {
    let wanted: BTreeSet<u64> = checkpoints.iter().map(|c| c.index).collect();
    let mut seen: BTreeMap<u64, Hash> = BTreeMap::new();
    let export = verify_export_visit(lines, |i, h| {
        if wanted.contains(&i) {
            seen.insert(i, *h);
        }
    })?;
    let mut out = CheckedExport {
        export,
        matched: 0,
        failure: None,
    };
    if let Err(f) = check_signatures(checkpoints, trust) {
        out.failure = Some(f);
        return Ok(out);
    }
    for c in checkpoints {
        let reason = match seen.get(&c.index) {
            Some(h) if *h == c.head => {
                out.matched += 1;
                continue;
            }
            Some(h) => format!(
                "the export's chain hash there is {}, the checkpoint says {} (signed by node {}{}): \
                 the history was rewritten, or this export is of another cluster",
                hex::encode(h),
                hex::encode(c.head),
                c.signer.node,
                c.witness
                    .as_ref()
                    .map(|w| format!(", cosigned by witness {}", w.node))
                    .unwrap_or_default()
            ),
            None => not_in_export(c.index, &out.export),
        };
        out.failure = Some(CheckpointFailure {
            index: c.index,
            reason,
        });
        break;
    }
    Ok(out)
}

fn not_in_export(index: u64, r: &ExportReport) -> String {
    if let Some(f) = &r.failure
        && index >= f.index()
    {
        return format!(
            "not checked: the export's chain is broken at index {} (before or at the checkpoint)",
            f.index()
        );
    }
    match (r.first_index, r.last_index) {
        (Some(first), _) if index < first => format!(
            "the export starts after it (first entry {first}); export from a node that holds it"
        ),
        (_, Some(last)) => format!(
            "the export ends at index {last}, before the checkpoint: it was cut short or is older"
        ),
        _ => "the export holds no entries".to_string(),
    }
}

/// Why the witness refuses to cosign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The proposed head differs from the witness's own chain hash at that index.
    #[error(
        "FORK: the head {proposed} at index {index} differs from the witness's own chain hash {own} there; \
         the proposing hub's chain has forked from the cluster's. Nothing was cosigned"
    )]
    Fork {
        index: u64,
        own: String,
        proposed: String,
    },
    /// The witness's own chain no longer has, at the last cosigned index, the head it cosigned.
    #[error(
        "FORK: the witness cosigned head {stored} at index {index}, but its own chain now has {own} there; \
         history was rewritten under it. Nothing was cosigned"
    )]
    CosignedHeadChanged {
        index: u64,
        stored: String,
        own: String,
    },
    /// The index does not advance past the last one cosigned for this hub.
    #[error(
        "index {index} is not after index {last}, the last one cosigned for this hub; a checkpoint must extend the last one"
    )]
    NotNewer { index: u64, last: u64 },
    /// The witness has not applied the index (even after waiting a little).
    #[error(
        "index {index} is not yet applied on the witness (it has applied {applied:?}); retry later. This is not a fork"
    )]
    NotYetApplied { index: u64, applied: Option<u64> },
    /// The witness does not hold the chain hash there (its chain starts after it).
    #[error("the witness holds no chain hash for index {index} (its chain starts after it)")]
    Unavailable { index: u64 },
    /// Anything else (bad signature, wrong sender, not a witness, storage error).
    #[error("{0}")]
    Invalid(String),
}

impl Refusal {
    /// Whether this refusal is a fork (the loud case: logged as an error and counted).
    pub fn is_fork(&self) -> bool {
        matches!(self, Self::Fork { .. } | Self::CosignedHeadChanged { .. })
    }
}

/// The witness's decision on a proposed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Cosign,
    /// The index is not applied here yet: wait a little and decide again, then refuse with
    /// [`Refusal::NotYetApplied`].
    NotYet,
    Refuse(Refusal),
}

/// The witness's cosign rule, over data only.
///
/// - `last`: the last (index, head) it cosigned for the proposing hub, if any;
/// - `applied`: its own last applied index;
/// - `own(i)`: its own chain hash at applied index `i` (`None` when it does not hold it);
/// - `(index, head)`: the proposal (its hub signature is checked before).
///
/// The proposal is cosigned only when the witness's own hash at `index` equals `head`, its own
/// hash at the last cosigned index still equals the stored head, and `index` is after it. A
/// mismatch of either hash is a fork; it is checked before the index order so a forked head is
/// always reported as a fork.
pub fn decide(
    last: Option<(u64, Hash)>,
    applied: Option<u64>,
    own: impl Fn(u64) -> Option<Hash>,
    index: u64,
    head: &Hash,
) -> Decision {
    if applied.is_none_or(|a| index > a) {
        return Decision::NotYet;
    }
    let Some(mine) = own(index) else {
        return Decision::Refuse(Refusal::Unavailable { index });
    };
    if mine != *head {
        return Decision::Refuse(Refusal::Fork {
            index,
            own: hex::encode(mine),
            proposed: hex::encode(head),
        });
    }
    if let Some((li, lh)) = last {
        match own(li) {
            Some(o) if o == lh => {}
            Some(o) => {
                return Decision::Refuse(Refusal::CosignedHeadChanged {
                    index: li,
                    stored: hex::encode(lh),
                    own: hex::encode(o),
                });
            }
            None => return Decision::Refuse(Refusal::Unavailable { index: li }),
        }
        if index <= li {
            return Decision::Refuse(Refusal::NotNewer { index, last: li });
        }
    }
    Decision::Cosign
}

/// The witness keeps its last cosigned head per hub (two hubs sign on their own schedules, at
/// nearly the same indices: one "last" for all would refuse the slower hub's every checkpoint
/// as not newer). Before cosigning for any hub it checks that its own chain still holds every
/// head it cosigned for any hub: the first one that does not is a fork.
pub fn cosigned_still_held(
    cosigned: impl IntoIterator<Item = (u64, Hash)>,
    own: impl Fn(u64) -> Option<Hash>,
) -> Option<Refusal> {
    cosigned
        .into_iter()
        .find_map(|(index, stored)| match own(index) {
            Some(o) if o == stored => None,
            Some(o) => Some(Refusal::CosignedHeadChanged {
                index,
                stored: hex::encode(stored),
                own: hex::encode(o),
            }),
            None => Some(Refusal::Unavailable { index }),
        })
}

/// Whether a hub's schedule is due to sign: the applied head advanced past the last checkpoint
/// and either `every_entries` entries were applied since it (counting from the start when there
/// is none) or `every_secs` seconds passed since it. A zero setting disables that trigger.
pub fn due(
    head: u64,
    last: Option<u64>,
    secs_since_last: u64,
    every_entries: u64,
    every_secs: u64,
) -> bool {
    let new_entries = match last {
        Some(l) if head <= l => return false,
        Some(l) => head - l,
        None => head.saturating_add(1),
    };
    (every_entries > 0 && new_entries >= every_entries)
        || (every_secs > 0 && secs_since_last >= every_secs)
}

/// The hub → witness cosign request (carried in `hearth.raft.v1.Raft/Cosign`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignRequest {
    /// One checkpoint line signed by the hub, without a witness part.
    pub checkpoint: String,
}

/// The witness's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CosignReply {
    /// The checkpoint line with the witness's cosignature.
    Cosigned {
        checkpoint: String,
    },
    Refused(Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{VerifyFailure, ZERO_HASH, link_hash};
    use crate::export::{ExportHeader, ExportLine};
    use crate::{EntryKind, Record};

    fn kp(n: u8) -> Keypair {
        Keypair::from_seed(&[n; 32])
    }

    fn cp(index: u64, head: Hash, hub: &Keypair, witness: Option<&Keypair>) -> Checkpoint {
        Checkpoint {
            index,
            head,
            signer: hub.signature(1, index, &head),
            witness: witness.map(|w| w.signature(3, index, &head)),
        }
    }

    /// Golden vector: pins the message layout and the Ed25519 signature of a fixed seed. The
    /// expected key and signature were computed independently (Python `cryptography`).
    #[test]
    fn message_layout_and_golden_signature() {
        let head = [0xab; 32];
        let m = message(0x0102, &head);
        assert_eq!(m.len(), 61);
        assert_eq!(&m[..21], b"HEARTH-CHECKPOINT-V1\0");
        assert_eq!(&m[21..29], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&m[29..], &head);
        let k = kp(7);
        let sig = k.sign(0x0102, &head);
        // Ed25519 is deterministic: same seed, same message, same signature.
        assert_eq!(sig, k.sign(0x0102, &head));
        verify_signature(&k.public(), 0x0102, &head, &sig).unwrap();
        assert_eq!(
            hex::encode(k.public()),
            GOLDEN_PUBLIC,
            "public key of seed 07×32"
        );
        assert_eq!(
            hex::encode(sig),
            GOLDEN_SIG,
            "signature of the golden message"
        );
    }

    const GOLDEN_PUBLIC: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    const GOLDEN_SIG: &str = "69d7da9392cf0e8b4cada8d5d8b8dce10c46d23d448a31da47d34adabe221989b50cec9953bae2c910302b39864a4e3e63d901a2fe0fe58febde47859553d109";

    #[test]
    fn signatures_bind_index_head_and_key() {
        let (a, b) = (kp(1), kp(2));
        let head = [5u8; 32];
        let sig = a.sign(10, &head);
        verify_signature(&a.public(), 10, &head, &sig).unwrap();
        assert!(verify_signature(&a.public(), 11, &head, &sig).is_err());
        let mut h2 = head;
        h2[31] ^= 1;
        assert!(verify_signature(&a.public(), 10, &h2, &sig).is_err());
        assert!(verify_signature(&b.public(), 10, &head, &sig).is_err());
        for byte in 0..64 {
            let mut s = sig;
            s[byte] ^= 0x10;
            assert!(verify_signature(&a.public(), 10, &head, &s).is_err());
        }
    }

    #[test]
    fn line_roundtrip_with_and_without_witness() {
        for w in [None, Some(&kp(9))] {
            let c = cp(1234, [7u8; 32], &kp(1), w);
            let line = c.to_line();
            assert_eq!(Checkpoint::parse_line(&line).unwrap(), c);
            c.verify_signatures().unwrap();
        }
        let file = format_file(&[cp(1, [1; 32], &kp(1), None), cp(5, [2; 32], &kp(1), None)]);
        assert!(file.starts_with("hearth-checkpoints 1\ncheckpoint index=1 head=0101"));
        assert_eq!(parse_file(&file).unwrap().len(), 2);
        assert_eq!(parse_file(file.trim_end()).unwrap().len(), 2);
        assert_eq!(parse_file("hearth-checkpoints 1\n").unwrap(), vec![]);
    }

    fn line_err(line: &str) -> String {
        Checkpoint::parse_line(line).unwrap_err()
    }

    #[test]
    fn parser_is_strict_about_every_field() {
        let good = cp(42, [3; 32], &kp(1), Some(&kp(2))).to_line();
        let hub_only = cp(42, [3; 32], &kp(1), None).to_line();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replacen("checkpoint", "checkpointx", 1),
                "unknown line",
            ),
            (format!(" {good}"), "starting with a space"),
            (format!("{good} "), "space at the end"),
            (good.replacen(" head=", "  head=", 1), "two spaces"),
            (good.replacen("index=42", "index=042", 1), "leading zero"),
            (good.replacen("index=42", "index=+42", 1), "not a decimal"),
            (good.replacen("index=42", "index=", 1), "not a decimal"),
            (
                good.replacen("index=42", "index=18446744073709551616", 1),
                "64 bits",
            ),
            (good.replacen("head=03", "head=0A", 1), "lower-case hex"),
            (good.replacen("head=0303", "head=03", 1), "hex digits"),
            (good.replacen("node=1", "node=0", 1), "reserved"),
            (
                good.replacen("witness=3", "witness=1", 1),
                "signing node itself",
            ),
            (
                good.replacen(" node=1", " node=1 node=1", 1),
                "duplicate field node",
            ),
            (good.replacen("index=42 ", "", 1), "out of order"),
            (
                good.replacen(" head=", " colour=red head=", 1),
                "unknown field",
            ),
            (good.replacen(" head=", " head ", 1), "not name=value"),
            (format!("{hub_only} witness=3"), "missing field wkey"),
            (format!("{good} wsig=00"), "duplicate field wsig"),
            (format!("{good} extra=1"), "unknown field"),
            ("checkpoint".to_string(), "missing field index"),
        ];
        for (line, needle) in cases {
            let e = line_err(&line);
            assert!(e.contains(needle), "{line:?}: {e:?} lacks {needle:?}");
        }
        // Key of the wrong length and signature of the wrong length.
        let e = line_err(&good.replacen(" key=", " key=00", 1));
        assert!(e.contains("field key"), "{e}");
        let e = line_err(&hub_only.replacen(" sig=", " sig=ff", 1));
        assert!(e.contains("field sig"), "{e}");
    }

    #[test]
    fn file_errors_name_the_line() {
        let a = cp(1, [1; 32], &kp(1), None).to_line();
        let b = cp(2, [2; 32], &kp(1), None).to_line();
        let cases = [
            (String::new(), 1, "empty"),
            (format!("hearth-checkpoints 2\n{a}\n"), 1, "not a Hearth"),
            (format!("{a}\n"), 1, "not a Hearth"),
            (
                format!("hearth-checkpoints 1\n{a}\n\n{b}\n"),
                3,
                "empty line",
            ),
            (format!("hearth-checkpoints 1\r\n{a}\n"), 1, "carriage"),
            (
                format!("hearth-checkpoints 1\n{a}\n# note\n"),
                3,
                "unknown line",
            ),
            (
                format!("hearth-checkpoints 1\n{b}\n{a}\n"),
                3,
                "strictly increase",
            ),
            (
                format!("hearth-checkpoints 1\n{a}\n{a}\n"),
                3,
                "strictly increase",
            ),
            (format!("hearth-checkpoints 1\n{a}\n\n"), 3, "empty line"),
        ];
        for (text, line, needle) in cases {
            let e = parse_file(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    fn export_of(payloads: &[&str]) -> (String, Vec<Hash>) {
        let mut out = serde_json::to_string(&ExportHeader::new(1, None)).unwrap();
        out.push('\n');
        let mut prev = ZERO_HASH;
        let mut hashes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let r = Record {
                index: i as u64,
                term: 1,
                leader: 1,
                kind: EntryKind::Command,
                payload: p.as_bytes().to_vec(),
            };
            prev = link_hash(&prev, &r.encode());
            hashes.push(prev);
            out.push_str(&serde_json::to_string(&ExportLine::new(&r, &prev)).unwrap());
            out.push('\n');
        }
        (out, hashes)
    }

    const PAYLOADS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    #[test]
    fn export_matching_checkpoints_verifies() {
        let (text, h) = export_of(&PAYLOADS);
        let cps = vec![cp(2, h[2], &kp(1), Some(&kp(2))), cp(7, h[7], &kp(1), None)];
        let r = verify_export_against(text.lines(), &cps, &Trust::default()).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.matched, 2);
    }

    #[test]
    fn consistent_rewrite_fails_at_the_checkpoint() {
        let (_, h) = export_of(&PAYLOADS);
        let mut changed = PAYLOADS;
        changed[1] = "B";
        let (rewritten, _) = export_of(&changed);
        let cps = vec![cp(0, h[0], &kp(1), None), cp(5, h[5], &kp(1), None)];
        let r = verify_export_against(rewritten.lines(), &cps, &Trust::default()).unwrap();
        assert_eq!(r.export.failure, None, "the rewrite is consistent");
        assert_eq!(r.matched, 1);
        let f = r.failure.unwrap();
        assert_eq!(f.index, 5);
        assert!(f.reason.contains("rewritten"), "{f}");
    }

    #[test]
    fn tampered_entry_fails_at_the_entry_and_later_checkpoints_are_unchecked() {
        let (text, h) = export_of(&PAYLOADS);
        // payload "c" (hex 63) at index 2 becomes "x" (78), hashes unchanged.
        let tampered = text.replacen("\"payload\":\"63\"", "\"payload\":\"78\"", 1);
        assert_ne!(tampered, text);
        let cps = vec![cp(1, h[1], &kp(1), None), cp(6, h[6], &kp(1), None)];
        let r = verify_export_against(tampered.lines(), &cps, &Trust::default()).unwrap();
        assert_eq!(r.export.failure.as_ref().map(VerifyFailure::index), Some(2));
        let f = r.failure.unwrap();
        assert_eq!(f.index, 6);
        assert!(f.reason.contains("broken at index 2"), "{f}");
    }

    #[test]
    fn checkpoint_outside_the_export_fails() {
        let (text, h) = export_of(&PAYLOADS[..4]);
        let cps = vec![cp(3, h[3], &kp(1), None), cp(9, [0; 32], &kp(1), None)];
        let r = verify_export_against(text.lines(), &cps, &Trust::default()).unwrap();
        let f = r.failure.unwrap();
        assert_eq!(f.index, 9);
        assert!(f.reason.contains("ends at index 3"), "{f}");
    }

    #[test]
    fn anchored_export_checks_the_anchor_and_refuses_earlier_checkpoints() {
        let (_, h) = export_of(&PAYLOADS);
        // An export that starts after index 3 (anchor 3).
        let mut text = serde_json::to_string(&ExportHeader::new(1, Some((3, h[3])))).unwrap();
        text.push('\n');
        let (full, _) = export_of(&PAYLOADS);
        for l in full.lines().skip(5) {
            text.push_str(l);
            text.push('\n');
        }
        let ok = vec![cp(3, h[3], &kp(1), None), cp(7, h[7], &kp(1), None)];
        let r = verify_export_against(text.lines(), &ok, &Trust::default()).unwrap();
        assert!(r.ok(), "{r:?}");
        let early = vec![cp(1, h[1], &kp(1), None)];
        let r = verify_export_against(text.lines(), &early, &Trust::default()).unwrap();
        let f = r.failure.unwrap();
        assert_eq!(f.index, 1);
        assert!(f.reason.contains("starts after it"), "{f}");
    }

    #[test]
    fn bad_or_untrusted_signatures_fail() {
        let (text, h) = export_of(&PAYLOADS);
        let mut bad = cp(4, h[4], &kp(1), Some(&kp(2)));
        bad.witness.as_mut().unwrap().sig[0] ^= 1;
        let r = verify_export_against(text.lines(), &[bad], &Trust::default()).unwrap();
        let f = r.failure.unwrap();
        assert_eq!(f.index, 4);
        assert!(f.reason.contains("witness 3"), "{f}");

        // A forger's checkpoint of a rewritten history verifies with the file's own keys, but
        // not against pinned keys.
        let forged = cp(4, h[4], &kp(66), None);
        let pinned = Trust {
            pinned: [kp(1).public()].into(),
        };
        let r =
            verify_export_against(text.lines(), std::slice::from_ref(&forged), &pinned).unwrap();
        assert!(r.failure.unwrap().reason.contains("trusted"));
        let good = cp(4, h[4], &kp(1), None);
        assert!(
            verify_export_against(text.lines(), &[good], &pinned)
                .unwrap()
                .ok()
        );
        // Pinning the witness key alone is enough for a cosigned checkpoint.
        let cosigned = cp(4, h[4], &kp(66), Some(&kp(2)));
        let witness_only = Trust {
            pinned: [kp(2).public()].into(),
        };
        assert!(
            verify_export_against(text.lines(), &[cosigned], &witness_only)
                .unwrap()
                .ok()
        );
    }

    fn chain(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&i.to_be_bytes());
                h[31] = 0xee;
                h
            })
            .collect()
    }

    fn decide_on(c: &[Hash], last: Option<(u64, Hash)>, index: u64, head: &Hash) -> Decision {
        let applied = (!c.is_empty()).then(|| c.len() as u64 - 1);
        decide(last, applied, |i| c.get(i as usize).copied(), index, head)
    }

    #[test]
    fn witness_cosigns_an_extension_of_its_own_chain() {
        let c = chain(10);
        assert_eq!(decide_on(&c, None, 4, &c[4]), Decision::Cosign);
        assert_eq!(decide_on(&c, Some((4, c[4])), 9, &c[9]), Decision::Cosign);
        assert_eq!(decide_on(&c, Some((0, c[0])), 1, &c[1]), Decision::Cosign);
    }

    #[test]
    fn witness_refuses_forks_loudly() {
        let c = chain(10);
        let mut other = c[6];
        other[0] ^= 1;
        let d = decide_on(&c, Some((4, c[4])), 6, &other);
        let Decision::Refuse(r) = d else {
            panic!("{d:?}")
        };
        assert!(r.is_fork());
        assert!(r.to_string().starts_with("FORK"), "{r}");
        // A forked head at an old index is still a fork, not merely "not newer".
        let Decision::Refuse(r) = decide_on(&c, Some((8, c[8])), 6, &other) else {
            panic!()
        };
        assert!(matches!(r, Refusal::Fork { index: 6, .. }), "{r:?}");
        // The witness's own chain changed under the last cosigned head.
        let mut stored = c[4];
        stored[5] ^= 1;
        let Decision::Refuse(r) = decide_on(&c, Some((4, stored)), 6, &c[6]) else {
            panic!()
        };
        assert!(r.is_fork());
        assert!(matches!(r, Refusal::CosignedHeadChanged { index: 4, .. }));
    }

    #[test]
    fn witness_refuses_old_indices_and_waits_for_unapplied_ones() {
        let c = chain(10);
        for i in [2, 4] {
            let d = decide_on(&c, Some((4, c[4])), i, &c[i as usize]);
            assert_eq!(d, Decision::Refuse(Refusal::NotNewer { index: i, last: 4 }));
        }
        assert_eq!(
            decide_on(&c, Some((4, c[4])), 10, &[0; 32]),
            Decision::NotYet
        );
        assert_eq!(decide_on(&[], None, 0, &[0; 32]), Decision::NotYet);
        // A chain that starts after the index (snapshot anchor): no hash, refused, no fork.
        let d = decide(
            None,
            Some(9),
            |i| (i >= 5).then_some(c[i as usize]),
            3,
            &c[3],
        );
        assert_eq!(d, Decision::Refuse(Refusal::Unavailable { index: 3 }));
    }

    /// Every combination over a small chain: cosign exactly when the rule says so.
    #[test]
    fn decide_exhaustively_on_a_small_chain() {
        let c = chain(6);
        let mut wrong = c.clone();
        for h in &mut wrong {
            h[1] ^= 0xff;
        }
        let lasts: Vec<Option<(u64, Hash)>> = std::iter::once(None)
            .chain((0..6).map(|i| Some((i, c[i as usize]))))
            .chain((0..6).map(|i| Some((i, wrong[i as usize]))))
            .collect();
        for last in &lasts {
            for index in 0..8u64 {
                for forked in [false, true] {
                    let head = if index < 6 {
                        if forked {
                            wrong[index as usize]
                        } else {
                            c[index as usize]
                        }
                    } else {
                        [9; 32]
                    };
                    let d = decide_on(&c, *last, index, &head);
                    let expect = if index >= 6 {
                        Decision::NotYet
                    } else if forked {
                        Decision::Refuse(Refusal::Fork {
                            index,
                            own: hex::encode(c[index as usize]),
                            proposed: hex::encode(head),
                        })
                    } else {
                        match last {
                            None => Decision::Cosign,
                            Some((li, lh)) if *lh != c[*li as usize] => {
                                Decision::Refuse(Refusal::CosignedHeadChanged {
                                    index: *li,
                                    stored: hex::encode(lh),
                                    own: hex::encode(c[*li as usize]),
                                })
                            }
                            Some((li, _)) if index <= *li => {
                                Decision::Refuse(Refusal::NotNewer { index, last: *li })
                            }
                            Some(_) => Decision::Cosign,
                        }
                    };
                    assert_eq!(d, expect, "last {last:?} index {index} forked {forked}");
                }
            }
        }
    }

    #[test]
    fn every_cosigned_head_must_still_be_held() {
        let c = chain(6);
        assert_eq!(
            cosigned_still_held([(1, c[1]), (4, c[4])], |i| c.get(i as usize).copied()),
            None
        );
        assert_eq!(cosigned_still_held([], |_| None), None);
        let mut bad = c[4];
        bad[9] ^= 1;
        let r = cosigned_still_held([(1, c[1]), (4, bad)], |i| c.get(i as usize).copied()).unwrap();
        assert!(r.is_fork());
        assert!(matches!(r, Refusal::CosignedHeadChanged { index: 4, .. }));
        assert_eq!(
            cosigned_still_held([(9, c[1])], |i| c.get(i as usize).copied()),
            Some(Refusal::Unavailable { index: 9 })
        );
    }

    #[test]
    fn schedule_is_due_when_either_threshold_is_reached_and_the_head_advanced() {
        // (head, last, secs, entries setting, secs setting) -> due
        let cases = [
            ((999, None, 0, 1000, 600), true),
            ((998, None, 0, 1000, 600), false),
            ((998, None, 600, 1000, 600), true),
            ((1500, Some(1000), 10, 1000, 600), false),
            ((2000, Some(1000), 10, 1000, 600), true),
            ((1001, Some(1000), 600, 1000, 600), true),
            ((1000, Some(1000), 6000, 1000, 600), false),
            ((900, Some(1000), 6000, 1, 1), false),
            ((5000, Some(1000), 6000, 0, 0), false),
            ((5000, Some(1000), 10, 0, 600), false),
            ((1001, Some(1000), 0, 1, 0), true),
            ((u64::MAX, None, 0, 1000, 0), true),
        ];
        for ((head, last, secs, e, s), want) in cases {
            assert_eq!(
                due(head, last, secs, e, s),
                want,
                "{head} {last:?} {secs} {e} {s}"
            );
        }
    }

    #[test]
    fn cosign_messages_roundtrip_as_json() {
        let r = CosignReply::Refused(Refusal::NotYetApplied {
            index: 3,
            applied: Some(1),
        });
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<CosignReply>(&j).unwrap(), r);
    }
}
