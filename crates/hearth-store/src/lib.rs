//! Durable storage of a Hearth node.
//!
//! - [`log::LogStore`]: the Raft log and vote in an append-only file of CRC-framed records,
//!   `fsync`ed before openraft is told an append or a vote is durable. The stored record bytes
//!   are exactly the bytes the audit chain hashes (see `hearth_core::chain`).
//! - [`state::StateMachine`]: the applied state in sled: the chain hash of every applied entry,
//!   the chain head, the last applied log id and membership. It may lag after a crash; openraft
//!   re-applies from the durable log, and apply is deterministic.
//! - [`audit`]: walking the chain over both (verify, export, tail).
//!
//! This crate does not dispatch anything and knows nothing of the network.

pub mod audit;
pub mod log;
pub mod private;
pub mod state;
pub mod types;

pub use log::LogStore;
pub use state::StateMachine;
pub use types::{Applied, Command, Member, TypeConfig};

/// Errors opening or checking a node's data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the Raft log {path} is corrupt at index {index} ({reason}); this node must not serve it. \
         Move the data directory aside and rejoin the node as a new member (docs/OPERATIONS.md)"
    )]
    CorruptLog {
        path: std::path::PathBuf,
        index: u64,
        reason: String,
    },
    #[error("the metadata file {path} is unreadable: {reason}")]
    CorruptMeta {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("state machine database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("state machine record {key} is unreadable: {reason}")]
    CorruptState { key: String, reason: String },
}

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod suite_test;
