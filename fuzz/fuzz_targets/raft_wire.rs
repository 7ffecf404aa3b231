//! The Raft transport's payloads (`RaftBytes.data`, `hearth_cluster::wire` format 2) as a node
//! decodes them: requests on the server side, answers on the client side. A decoded append is
//! also turned into stored records and back, as the log store does.
#![no_main]

use hearth_cluster::TypeConfig;
use hearth_cluster::wire::{self, FORMAT_JSON};
use hearth_store::types::{entry_to_record, record_to_entry};
use libfuzzer_sys::fuzz_target;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let f = FORMAT_JSON;
    match which % 8 {
        0 => {
            if let Ok(req) = wire::decode::<AppendEntriesRequest<TypeConfig>>(f, data) {
                for e in &req.entries {
                    if let Ok(rec) = entry_to_record(e) {
                        let bytes = rec.encode();
                        let back = hearth_core::Record::decode(&bytes).expect("own encoding");
                        assert_eq!(back, rec);
                        let _ = record_to_entry(back);
                    }
                }
            }
        }
        1 => drop(wire::decode::<VoteRequest<TypeConfig>>(f, data)),
        2 => drop(wire::decode::<(
            VoteOf<TypeConfig>,
            SnapshotMetaOf<TypeConfig>,
            Vec<u8>,
        )>(f, data)),
        3 => drop(wire::decode::<TransferLeaderRequest<TypeConfig>>(f, data)),
        4 => drop(wire::decode::<
            Result<AppendEntriesResponse<TypeConfig>, String>,
        >(f, data)),
        5 => drop(wire::decode::<Result<VoteResponse<TypeConfig>, String>>(
            f, data,
        )),
        6 => drop(wire::decode::<Result<SnapshotResponse<TypeConfig>, String>>(f, data)),
        _ => {
            // Any other format number is refused before the bytes are read.
            let format = u32::from(which);
            assert!(
                format == FORMAT_JSON
                    || wire::decode::<VoteRequest<TypeConfig>>(format, data).is_err()
            );
        }
    }
});
