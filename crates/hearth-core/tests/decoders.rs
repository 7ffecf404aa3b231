//! Property tests of the decoders that read untrusted bytes: stored records, commands (the
//! log's payloads), and audit exports (files a person hands to `audit verify --file`). None may
//! panic on any input, and a tampered export must never verify as the original.

use hearth_core::chain::{ZERO_HASH, link_hash};
use hearth_core::domain::Command;
use hearth_core::export::{ExportHeader, ExportLine, verify_export};
use hearth_core::{EntryKind, Record};
use proptest::prelude::*;

fn export(n: u64) -> Vec<String> {
    let mut lines = vec![serde_json::to_string(&ExportHeader::new(1, None)).unwrap()];
    let mut prev = ZERO_HASH;
    for i in 0..n {
        let rec = Record {
            index: i,
            term: 1 + i / 5,
            leader: 1,
            kind: if i == 0 {
                EntryKind::Membership
            } else {
                EntryKind::Command
            },
            payload: Command::TestRecord {
                text: format!("record {i}"),
            }
            .encode(),
        };
        prev = link_hash(&prev, &rec.encode());
        lines.push(serde_json::to_string(&ExportLine::new(&rec, &prev)).unwrap());
    }
    lines
}

fn verifies(lines: &[String]) -> bool {
    matches!(verify_export(lines.iter().map(String::as_str)), Ok(r) if r.failure.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Record::decode(&bytes);
    }

    #[test]
    fn record_decode_roundtrips(index in any::<u64>(), term in any::<u64>(), leader in any::<u64>(),
                                kind in 0u8..3, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let kind = EntryKind::from_u8(kind).unwrap();
        let r = Record { index, term, leader, kind, payload };
        prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn command_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn command_decode_never_panics_on_near_json(s in r#"\{"type":"[a-z_]{0,20}"(,"[a-z_]{1,12}":("[^"]{0,10}"|[0-9]{1,25}|\[\]|\{\}|null|true))*\}"#) {
        let _ = Command::decode(s.as_bytes());
    }

    #[test]
    fn export_parsing_never_panics(lines in proptest::collection::vec(".{0,200}", 0..8)) {
        let _ = verify_export(lines.iter().map(String::as_str));
    }

    /// Any one character of any entry line replaced: either the export no longer verifies, or
    /// it still says exactly the same thing. (The header's `node`, which node exported it, is
    /// not covered by the chain; checkpoints, issue 7, will sign what matters.) This found that
    /// upper-case hex verified as the same bytes; the verifiers now refuse it.
    #[test]
    fn a_tampered_export_never_verifies_as_something_else(line in 1usize..13, at in any::<prop::sample::Index>(),
                                                         c in any::<char>()) {
        let original = export(12);
        let mut lines = original.clone();
        let chars: Vec<char> = lines[line].chars().collect();
        let i = at.index(chars.len());
        let mut changed = chars.clone();
        changed[i] = c;
        lines[line] = changed.into_iter().collect();
        if verifies(&lines) {
            let a: Vec<serde_json::Value> = original.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            let b: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            prop_assert_eq!(a, b, "a changed export verified: line {} char {} -> {:?}", line, i, c);
        }
    }
}

#[test]
fn the_generated_export_verifies() {
    assert!(verifies(&export(12)));
}
