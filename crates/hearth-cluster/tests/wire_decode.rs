//! Property tests of the Raft transport's payload decoder (`wire::decode`, format 2), which
//! reads bytes from the network: valid messages round-trip, and no input — random bytes, or
//! a valid message with one byte changed — makes it panic. `fuzz/` runs the same decoder
//! under libFuzzer for longer (fuzz/README.md).

use hearth_cluster::TypeConfig;
use hearth_cluster::wire::{self, FORMAT_JSON, WireError};
use hearth_store::Command;
use hearth_store::types::{Entry, log_id};
use openraft::EntryPayload;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};
use proptest::prelude::*;

fn vote(term: u64, node: u64) -> VoteOf<TypeConfig> {
    VoteOf::<TypeConfig>::new(term, node)
}

fn append(
    term: u64,
    leader: u64,
    first: u64,
    payloads: &[Vec<u8>],
) -> AppendEntriesRequest<TypeConfig> {
    let entries = payloads
        .iter()
        .enumerate()
        .map(|(n, p)| Entry {
            log_id: log_id(term, leader, first + n as u64),
            payload: if p.is_empty() {
                EntryPayload::Blank
            } else {
                EntryPayload::Normal(Command(p.clone()))
            },
        })
        .collect();
    AppendEntriesRequest {
        vote: vote(term, leader),
        prev_log_id: first.checked_sub(1).map(|i| log_id(term, leader, i)),
        entries,
        leader_commit: None,
    }
}

/// Valid encodings of every message a node decodes, with the decoder to use (0–6, as in
/// `fuzz/fuzz_targets/raft_wire.rs`).
pub fn samples() -> Vec<(u8, Vec<u8>)> {
    let a = append(
        3,
        1,
        7,
        &[
            vec![],
            b"{\"type\":\"test_record\",\"text\":\"x\"}".to_vec(),
        ],
    );
    let v = VoteRequest::<TypeConfig>::new(vote(4, 2), Some(log_id(3, 1, 8)));
    let t = TransferLeaderRequest::<TypeConfig>::new(vote(3, 1), 2, Some(log_id(3, 1, 8)));
    let meta = SnapshotMetaOf::<TypeConfig>::default();
    let ok: Result<AppendEntriesResponse<TypeConfig>, String> = Ok(AppendEntriesResponse::Success);
    let vr: Result<VoteResponse<TypeConfig>, String> =
        Ok(VoteResponse::new(vote(4, 2), Some(log_id(3, 1, 8)), true));
    let sr: Result<SnapshotResponse<TypeConfig>, String> = Ok(SnapshotResponse::new(vote(3, 1)));
    let e = |v: &dyn erased::Enc| v.enc();
    vec![
        (0, e(&a)),
        (1, e(&v)),
        (
            2,
            wire::encode(&(vote(3, 1), meta, vec![1u8, 2, 3])).unwrap(),
        ),
        (3, e(&t)),
        (4, e(&ok)),
        (
            4,
            wire::encode(&Err::<AppendEntriesResponse<TypeConfig>, _>(
                "stopped".to_string(),
            ))
            .unwrap(),
        ),
        (5, e(&vr)),
        (6, e(&sr)),
    ]
}

mod erased {
    pub trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            hearth_cluster::wire::encode(self).unwrap()
        }
    }
}

/// Decodes `data` as message kind `which`; true when it decoded.
fn decode(which: u8, data: &[u8]) -> bool {
    let f = FORMAT_JSON;
    match which % 7 {
        0 => wire::decode::<AppendEntriesRequest<TypeConfig>>(f, data).is_ok(),
        1 => wire::decode::<VoteRequest<TypeConfig>>(f, data).is_ok(),
        2 => wire::decode::<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, Vec<u8>)>(f, data)
            .is_ok(),
        3 => wire::decode::<TransferLeaderRequest<TypeConfig>>(f, data).is_ok(),
        4 => wire::decode::<Result<AppendEntriesResponse<TypeConfig>, String>>(f, data).is_ok(),
        5 => wire::decode::<Result<VoteResponse<TypeConfig>, String>>(f, data).is_ok(),
        _ => wire::decode::<Result<SnapshotResponse<TypeConfig>, String>>(f, data).is_ok(),
    }
}

#[test]
fn every_sample_decodes() {
    for (which, data) in samples() {
        assert!(
            decode(which, &data),
            "{which}: {}",
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn other_formats_and_garbage_are_clear_errors() {
    let data = &samples()[0].1;
    for format in [0, 1, 3, u32::MAX] {
        let e = wire::decode::<AppendEntriesRequest<TypeConfig>>(format, data).unwrap_err();
        assert!(matches!(e, WireError::Format(f) if f == format), "{e}");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for bad in [&b""[..], b"\xff", b"{}", b"null", deep.as_bytes()] {
        let e = wire::decode::<AppendEntriesRequest<TypeConfig>>(FORMAT_JSON, bad).unwrap_err();
        assert!(e.to_string().starts_with("malformed Raft message"), "{e}");
    }
}

/// Writes `samples()` as seed inputs for `cargo fuzz run raft_wire` (fuzz/README.md):
/// `cargo test -p hearth-cluster --test wire_decode -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/raft_wire");
    std::fs::create_dir_all(&dir).unwrap();
    for (n, (which, data)) in samples().into_iter().enumerate() {
        let mut bytes = vec![which];
        bytes.extend(data);
        std::fs::write(dir.join(format!("sample-{n}")), bytes).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn append_entries_roundtrip(term in 0u64..1 << 40, leader in any::<u64>(), first in any::<u32>(),
                                payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5)) {
        let req = append(term, leader, u64::from(first), &payloads);
        let bytes = wire::encode(&req).unwrap();
        let back: AppendEntriesRequest<TypeConfig> = wire::decode(FORMAT_JSON, &bytes).unwrap();
        prop_assert_eq!(wire::encode(&back).unwrap(), bytes);
    }

    #[test]
    fn decode_never_panics(which in 0u8..7, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        decode(which, &bytes);
    }

    #[test]
    fn decode_never_panics_on_a_changed_sample(n in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
                                              b in any::<u8>(), which in 0u8..7) {
        let s = samples();
        let (_, mut data) = s[n.index(s.len())].clone();
        let i = at.index(data.len());
        data[i] = b;
        decode(which, &data);
    }
}
