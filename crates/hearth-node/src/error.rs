//! What can go wrong in a node, in two types: [`StartError`], why a node did not start, form
//! or join its cluster (the operator fixes a config or a data directory, and the process
//! exits); and [`NodeError`], why a request was refused or failed (the client sees it as a
//! gRPC status: `api::status` maps every variant). In its own file, so that the modules
//! around the node (data directory, checkpoints, promotions, start checks) name them without
//! depending on `node`.

use std::path::PathBuf;

use hearth_store::StoreError;

/// Why a node did not start, form its cluster or join it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the audit chain on this node fails verification at index {index}: {reason}. \
         The node refuses to serve it; keep the data directory for inspection and rejoin the \
         node under a new id (docs/OPERATIONS.md)"
    )]
    ChainBroken { index: u64, reason: String },
    #[error(
        "data directory {dir} belongs to node {found}, but this config says node {expected}; point data_dir elsewhere"
    )]
    WrongNode {
        dir: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "data directory {dir} holds a Raft log but no node.json; it was not written by Hearth or was damaged"
    )]
    UnknownDataDir { dir: PathBuf },
    #[error("invalid Raft settings: {0}")]
    Settings(String),
    #[error("the Raft core of this node has stopped: {0}; restart the node")]
    Fatal(String),
    #[error("checkpoints: {0}")]
    Checkpoints(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("NO_QUORUM: {0}")]
    NoQuorum(String),
    #[error(
        "refusing to form a new cluster: node {peer} already has one (last index {last_index:?}). \
         This node's data directory is empty: if it was wiped, do not reuse node id {self_id}; \
         add a replacement node with a new id (docs/OPERATIONS.md)"
    )]
    AlreadyFormed {
        self_id: u64,
        peer: u64,
        last_index: Option<u64>,
    },
}

/// Why a request was refused or failed: the node's answer to a client (a gRPC status).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the audit chain on this node fails verification at index {index}: {reason}. \
         The node refuses to serve it; keep the data directory for inspection and rejoin the \
         node under a new id (docs/OPERATIONS.md)"
    )]
    ChainBroken { index: u64, reason: String },
    #[error("the Raft core of this node has stopped: {0}; restart the node")]
    Fatal(String),
    #[error("NO_QUORUM: {0}")]
    NoQuorum(String),
    #[error("node {self_id} is not the leader; the leader is node {leader} at {addr}")]
    NotLeader {
        self_id: u64,
        leader: u64,
        addr: String,
    },
    #[error(
        "this witness leads only as a caretaker while handing over to a hub; retry in a few seconds"
    )]
    WitnessCaretaker,
    #[error(
        "the entry was discarded by a leader change; it may or may not commit: check `hearth audit tail` before retrying"
    )]
    Discarded,
    #[error(transparent)]
    Field(#[from] hearth_core::intent::FieldError),
    #[error(transparent)]
    Plan(#[from] hearth_core::resolver::PlanError),
    #[error(
        "idempotency key already used for intent {0} with a different body; use a new key for a new intent"
    )]
    KeyConflict(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// What the request names does not exist (nothing was appended).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}
