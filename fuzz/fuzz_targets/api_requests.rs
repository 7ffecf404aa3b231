//! The public API's request messages as the server reads them: prost decoding of each request
//! type, then the same validation the server runs before anything is appended (the functions
//! that need no node: `intent_from_pb` + `Intent::validate_request`, `device_from_pb`, the
//! class and policy documents, intent and device ids). The Raft transport's envelope too.
#![no_main]

use hearth_core::domain::check_intent_id;
use hearth_core::intent::check_id;
use hearth_node::api::{class_from_doc, device_from_pb, intent_from_pb, policies_from_doc};
use hearth_proto::raft::RaftBytes;
use hearth_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 16 {
        0 => {
            if let Ok(m) = pb::SubmitIntentRequest::decode(data)
                && let Ok(i) = intent_from_pb(&m)
            {
                let _ = i.validate_request();
            }
        }
        1 => {
            if let Ok(m) = pb::DeviceManifest::decode(data)
                && let Ok(d) = device_from_pb(&m)
            {
                d.validate().expect("device_from_pb validates");
            }
        }
        2 => {
            if let Ok(m) = pb::ApplyDocument::decode(data) {
                let _ = class_from_doc(&m.json);
                let _ = policies_from_doc(&m.json);
            }
        }
        3 => {
            if let Ok(m) = pb::GetIntentRequest::decode(data) {
                let _ = check_intent_id("id", &m.id);
            }
        }
        4 => {
            if let Ok(m) = pb::ApproveRequest::decode(data) {
                let _ = check_intent_id("id", &m.id);
                let _ = check_id("by", &m.by);
            }
        }
        5 => {
            if let Ok(m) = pb::GetDeviceRequest::decode(data) {
                let _ = check_id("id", &m.id);
            }
        }
        6 => drop(pb::AppendTestRecordRequest::decode(data)),
        7 => drop(pb::RecordActRequest::decode(data)),
        8 => drop(pb::AddMemberRequest::decode(data)),
        9 => drop(pb::ReplaceMemberRequest::decode(data)),
        10 => drop(pb::PromoteRequest::decode(data)),
        11 => drop(pb::RestartRequest::decode(data)),
        12 => drop(pb::TailRequest::decode(data)),
        13 => drop(pb::TransferLeaderRequest::decode(data)),
        14 => drop(pb::RemoveMemberRequest::decode(data)),
        _ => {
            if let Ok(m) = RaftBytes::decode(data) {
                let _ = hearth_cluster::wire::decode::<
                    openraft::raft::VoteRequest<hearth_cluster::TypeConfig>,
                >(m.format, &m.data);
            }
        }
    }
});
