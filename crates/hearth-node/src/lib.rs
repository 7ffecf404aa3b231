//! The Hearth server: configuration, node startup and bootstrap, and the public gRPC API.
//! Thin I/O around `hearth-core` (decisions) and `hearth-cluster` (Raft).

pub mod api;
pub mod assist;
pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod conn;
pub mod datadir;
pub mod dispatcher;
pub mod error;
pub mod health;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod server;
pub mod startcheck;

pub use config::{NodeConfig, Role};
/// The running chain-head cross-check is part of the node (`node::crosscheck`).
pub use node::crosscheck;
pub use node::{Node, NodeError, NodeState, PeerProbe, StartError, StatusView};
