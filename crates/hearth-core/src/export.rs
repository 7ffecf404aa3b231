//! The audit export format: JSON Lines, one header line then one line per entry.
//! `docs/AUDIT-FORMAT.md` is the normative description; `tools/verify_audit_export.py` is an
//! independent verifier of it.

use serde::{Deserialize, Serialize};

use crate::EntryKind;
use crate::chain::{ChainVerifier, Hash, Record, VerifyFailure, ZERO_HASH};

pub const FORMAT_NAME: &str = "hearth-audit-export";
pub const FORMAT_VERSION: u32 = 1;

/// First line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub version: u32,
    /// Node that wrote the export.
    pub node: u64,
    /// Index of the entry just before the first exported one, and its hash. Absent when the
    /// export starts at the beginning of the chain (index 0, previous hash = 32 zero bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub index: u64,
    pub hash: String,
}

/// One entry line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportLine {
    pub index: u64,
    pub term: u64,
    pub leader: u64,
    pub kind: String,
    /// Lower-case hex of the payload bytes.
    pub payload: String,
    /// Lower-case hex of the chain hash of this entry.
    pub hash: String,
}

impl ExportHeader {
    pub fn new(node: u64, anchor: Option<(u64, Hash)>) -> Self {
        Self {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            node,
            anchor: anchor.map(|(index, h)| Anchor {
                index,
                hash: hex::encode(h),
            }),
        }
    }
}

impl ExportLine {
    pub fn new(rec: &Record, hash: &Hash) -> Self {
        Self {
            index: rec.index,
            term: rec.term,
            leader: rec.leader,
            kind: rec.kind.name().to_string(),
            payload: hex::encode(&rec.payload),
            hash: hex::encode(hash),
        }
    }

    fn to_record(&self) -> Result<(Record, Hash), String> {
        let kind = EntryKind::from_name(&self.kind).map_err(|e| e.to_string())?;
        let payload = lower_hex(&self.payload).map_err(|e| format!("payload {e}"))?;
        Ok((
            Record {
                index: self.index,
                term: self.term,
                leader: self.leader,
                kind,
                payload,
            },
            parse_hash(&self.hash)?,
        ))
    }
}

/// Decodes lower-case hex only: an export has exactly one text per history, so `AB` where the
/// format says `ab` is refused instead of verifying as the same bytes.
fn lower_hex(s: &str) -> Result<Vec<u8>, String> {
    if let Some(c) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!("is not lower-case hex (found {c:?})"));
    }
    hex::decode(s).map_err(|e| format!("is not hex: {e}"))
}

pub fn parse_hash(s: &str) -> Result<Hash, String> {
    let v = lower_hex(s).map_err(|e| format!("hash {e}"))?;
    v.try_into()
        .map_err(|v: Vec<u8>| format!("hash has {} bytes, expected 32", v.len()))
}

/// Result of verifying an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub node: u64,
    pub entries: u64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub head: Hash,
    /// The first problem found; entries after it were not checked.
    pub failure: Option<VerifyFailure>,
}

/// Why an export could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the export is empty (no header line)")]
    Empty,
    #[error("line 1 is not a hearth audit export header: {0}")]
    BadHeader(String),
    #[error("unsupported export version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u32),
}

/// Verifies an export given as lines of text. Empty lines are ignored.
pub fn verify_export<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<ExportReport, ExportError> {
    verify_export_visit(lines, |_, _| {})
}

/// [`verify_export`], calling `visit(index, hash)` for the anchor (if any) and for every entry
/// whose link verified, in index order. Nothing after the first failure is visited.
pub fn verify_export_visit<'a>(
    mut lines: impl Iterator<Item = &'a str>,
    mut visit: impl FnMut(u64, &Hash),
) -> Result<ExportReport, ExportError> {
    let header_line = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())
        .ok_or(ExportError::Empty)?;
    let header: ExportHeader =
        serde_json::from_str(header_line).map_err(|e| ExportError::BadHeader(e.to_string()))?;
    if header.format != FORMAT_NAME {
        return Err(ExportError::BadHeader(format!(
            "format is {:?}, expected {FORMAT_NAME:?}",
            header.format
        )));
    }
    if header.version != FORMAT_VERSION {
        return Err(ExportError::Version(header.version));
    }
    if header.anchor.as_ref().is_some_and(|a| a.index == u64::MAX) {
        return Err(ExportError::BadHeader(
            "anchor index 18446744073709551615 (u64::MAX) leaves no entry after it".into(),
        ));
    }
    let mut v = match &header.anchor {
        None => ChainVerifier::new_genesis(),
        Some(a) => ChainVerifier::after(
            a.index,
            parse_hash(&a.hash).map_err(|e| ExportError::BadHeader(format!("anchor: {e}")))?,
        ),
    };
    let mut report = ExportReport {
        node: header.node,
        entries: 0,
        first_index: None,
        last_index: None,
        head: header
            .anchor
            .as_ref()
            .and_then(|a| parse_hash(&a.hash).ok())
            .unwrap_or(ZERO_HASH),
        failure: None,
    };
    if let Some(a) = &header.anchor {
        visit(a.index, &report.head);
    }
    let mut expected_next = header
        .anchor
        .as_ref()
        .map_or(0, |a| a.index.saturating_add(1));
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let parsed: Result<(Record, Hash), String> = serde_json::from_str::<ExportLine>(line)
            .map_err(|e| format!("not an export line: {e}"))
            .and_then(|l| l.to_record());
        let (rec, stored) = match parsed {
            Ok(x) => x,
            Err(reason) => {
                report.failure = Some(VerifyFailure::Malformed {
                    index: expected_next,
                    reason,
                });
                return Ok(report);
            }
        };
        match v.push(&rec.encode(), &stored) {
            Ok(h) => {
                visit(rec.index, &h);
                report.head = h;
                report.entries += 1;
                report.first_index.get_or_insert(rec.index);
                report.last_index = Some(rec.index);
                expected_next = rec.index.saturating_add(1);
            }
            Err(f) => {
                report.failure = Some(f);
                return Ok(report);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::link_hash;

    fn export(n: u64) -> String {
        let mut out = serde_json::to_string(&ExportHeader::new(1, None)).unwrap();
        out.push('\n');
        let mut prev = ZERO_HASH;
        for i in 0..n {
            let r = Record {
                index: i,
                term: 1,
                leader: 1,
                kind: if i == 0 {
                    EntryKind::Membership
                } else {
                    EntryKind::Command
                },
                payload: format!("{{\"n\":{i}}}").into_bytes(),
            };
            prev = link_hash(&prev, &r.encode());
            out.push_str(&serde_json::to_string(&ExportLine::new(&r, &prev)).unwrap());
            out.push('\n');
        }
        out
    }

    #[test]
    fn good_export_verifies() {
        let r = verify_export(export(20).lines()).unwrap();
        assert_eq!(r.failure, None);
        assert_eq!(
            (r.entries, r.first_index, r.last_index),
            (20, Some(0), Some(19))
        );
    }

    #[test]
    fn tampered_payload_is_named_by_index() {
        let text = export(10).replace("7b226e223a357d", "7b226e223a397d"); // {"n":5} -> {"n":9}
        let r = verify_export(text.lines()).unwrap();
        assert_eq!(r.failure.unwrap().index(), 5);
        assert_eq!(r.entries, 5);
    }

    #[test]
    fn removed_line_is_a_gap() {
        let full = export(10);
        let mut cut: Vec<&str> = full.lines().collect();
        cut.remove(4); // entry 3
        let r = verify_export(cut.into_iter()).unwrap();
        assert_eq!(
            r.failure.unwrap(),
            VerifyFailure::IndexGap {
                expected: 3,
                found: 4
            }
        );
    }

    /// Found while writing the fuzz target (fuzz/README.md): an anchor or an entry at index
    /// u64::MAX overflowed `index + 1` (a panic in debug builds, a wrap in release).
    #[test]
    fn the_largest_index_is_refused_not_overflowed() {
        let max = u64::MAX;
        let header = format!(
            r#"{{"format":"hearth-audit-export","version":1,"node":1,"anchor":{{"index":{max},"hash":"{}"}}}}"#,
            hex::encode(ZERO_HASH)
        );
        assert!(matches!(
            verify_export([header.as_str()].into_iter()),
            Err(ExportError::BadHeader(m)) if m.contains("u64::MAX")
        ));
        let r = Record {
            index: max,
            term: 1,
            leader: 1,
            kind: EntryKind::Command,
            payload: b"{}".to_vec(),
        };
        let anchored = ExportHeader::new(1, Some((max - 1, ZERO_HASH)));
        let lines = [
            serde_json::to_string(&anchored).unwrap(),
            serde_json::to_string(&ExportLine::new(&r, &link_hash(&ZERO_HASH, &r.encode())))
                .unwrap(),
        ];
        let report = verify_export(lines.iter().map(String::as_str)).unwrap();
        assert!(
            matches!(report.failure, Some(VerifyFailure::Malformed { index, .. }) if index == max),
            "{report:?}"
        );
    }

    #[test]
    fn malformed_inputs_are_clear_errors() {
        assert_eq!(verify_export("".lines()).unwrap_err(), ExportError::Empty);
        assert!(matches!(
            verify_export("{}".lines()),
            Err(ExportError::BadHeader(_))
        ));
        let mut text = export(3);
        text.push_str("{\"index\": 3, \"garbage\": true}\n");
        let r = verify_export(text.lines()).unwrap();
        assert_eq!(r.failure.unwrap().index(), 3);
        let bad_kind = export(2).replace("\"command\"", "\"teleport\"");
        let r = verify_export(bad_kind.lines()).unwrap();
        assert!(r.failure.unwrap().to_string().contains("teleport"));
    }
}
