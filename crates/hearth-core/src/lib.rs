//! Hearth's pure core: the audit chain (record layout, hashing, verification, export format)
//! and the witness caretaker decision. Nothing here does I/O or knows about Raft, tonic or
//! sled; every function is a plain function over data, so it can be tested exhaustively.

pub mod approval;
pub mod assist;
pub mod caretaker;
pub mod chain;
pub mod checkpoint;
pub mod clock;
pub mod crosscheck;
pub mod datadir;
pub mod device_protocol;
pub mod domain;
pub mod election;
pub mod export;
pub mod intent;
pub mod policy;
pub mod resolver;

pub use chain::{ChainError, EntryKind, Hash, Record, ZERO_HASH};
