//! Hearth's Raft layer. openraft is used only through this crate (and the storage traits in
//! `hearth-store`): the type configuration, the node-to-node transport over tonic, the
//! receiving side of Raft RPCs with the witness guards, and the witness caretaker task.
//!
//! It does not decide what goes into the log (that is the node's job) and never touches a
//! device.

pub mod caretaker;
pub mod grpc;
pub mod handler;
pub mod notices;
pub mod settings;
pub mod tls;
pub mod wire;

pub use handler::{CosignClient, CosignHandler, RaftHandler};
pub use hearth_store::TypeConfig;

/// A Hearth Raft node.
pub type HearthRaft = openraft::Raft<TypeConfig, hearth_store::StateMachine>;
