//! Durable storage of a Hearth node.
//!
//! - [`log::LogStore`]: the Raft log and vote in an append-only file of CRC-framed records,
//!   `fsync`ed before openraft is told an append or a vote is durable. The stored record bytes
//!   are exactly the bytes the audit chain hashes (see `hearth_core::chain`).
//! - [`state::StateMachine`]: the applied state in sled: the chain hash of every applied entry,
//!   the chain head, the last applied log id and membership. It may lag after a crash; openraft
//!   re-applies from the durable log, and apply is deterministic.
//! - [`audit`]: walking the chain over both (verify, export, tail).
//! - [`bulk`]: lengthening a stopped node's chain without Raft (benchmarks).
//!
//! This crate does not dispatch anything and knows nothing of the network.

pub mod audit;
pub mod bulk;
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
    #[error(
        "the vote file {path} is {}, but the Raft log holds entries of term {log_term} (up to \
         index {last_index}): this node has forgotten whom it voted for and could vote twice in \
         one term. It refuses to start. Restore the file only if you have the exact copy taken \
         with this log; otherwise move the data directory aside and rejoin the node under a new \
         id (docs/OPERATIONS.md, \"Lost vote file\")",
        match vote_term { None => "missing".to_string(), Some(t) => format!("at term {t}, older than the log") }
    )]
    VoteLost {
        path: std::path::PathBuf,
        vote_term: Option<u64>,
        log_term: u64,
        last_index: u64,
    },
    #[error("state machine database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("state machine record {key} is unreadable: {reason}")]
    CorruptState { key: String, reason: String },
}

impl StoreError {
    /// Whether this is damage to the state machine database itself (sled reports corruption,
    /// or a record does not decode): the state machine can then be rebuilt from the log.
    pub fn is_state_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Corruption { .. }) | StoreError::CorruptState { .. }
        )
    }
}

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod suite_test;
