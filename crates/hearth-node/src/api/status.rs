//! A node's error as the gRPC status a client sees: the one place this mapping is made, with
//! every variant named (a new one does not compile until it is mapped).

use tonic::Status;

use crate::error::NodeError;

/// Maps a node error to a gRPC status with a message a person can act on.
pub fn to_status(e: NodeError) -> Status {
    let msg = e.to_string();
    match e {
        NodeError::NoQuorum(_) | NodeError::WitnessCaretaker | NodeError::NotLeader { .. } => {
            Status::unavailable(msg)
        }
        NodeError::Invalid { .. } | NodeError::Field(_) => Status::invalid_argument(msg),
        NodeError::Plan(hearth_core::resolver::PlanError::RateLimited { .. }) => {
            Status::resource_exhausted(msg)
        }
        NodeError::Plan(_) => Status::invalid_argument(msg),
        NodeError::KeyConflict(_) => Status::already_exists(msg),
        // The bound on emergencies per source is a rate limit like the policies' ones.
        NodeError::Refused(m) if m.starts_with("emergency rate limit") => {
            Status::resource_exhausted(msg)
        }
        NodeError::Refused(_) => Status::failed_precondition(msg),
        NodeError::Forbidden(_) => Status::permission_denied(msg),
        NodeError::NotFound(_) => Status::not_found(msg),
        NodeError::Discarded => Status::aborted(msg),
        NodeError::ChainBroken { .. } => Status::data_loss(msg),
        // This node's own trouble, not the request's: its stores, its files, its Raft core.
        NodeError::Store(_) | NodeError::Io(_) | NodeError::Fatal(_) => Status::internal(msg),
    }
}
