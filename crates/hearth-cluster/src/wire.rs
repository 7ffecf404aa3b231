//! Encoding of openraft messages inside `hearth.raft.v1.RaftBytes`.
//!
//! Format 1 was JSON (serde) with command bytes as arrays of numbers; format 2 is the same JSON
//! with command bytes as hex strings (`hearth_store::Command`). openraft's serde output is not
//! stable across openraft versions (docs/DESIGN.md §9): every node of a cluster must run the
//! same Hearth release; a new encoding gets a new format number.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const FORMAT_JSON: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "unsupported Raft message format {0} (this node speaks format {FORMAT_JSON}); run the same Hearth release on every node"
    )]
    Format(u32),
    #[error("malformed Raft message: {0}")]
    Decode(String),
    #[error("cannot encode Raft message: {0}")]
    Encode(String),
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(v).map_err(|e| WireError::Encode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(format: u32, data: &[u8]) -> Result<T, WireError> {
    if format != FORMAT_JSON {
        return Err(WireError::Format(format));
    }
    serde_json::from_slice(data).map_err(|e| WireError::Decode(e.to_string()))
}
