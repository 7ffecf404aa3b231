//! The Hearth server: configuration, node startup and bootstrap, and the public gRPC API.
//! Thin I/O around `hearth-core` (decisions) and `hearth-cluster` (Raft).

pub mod api;
pub mod assist;
pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod conn;
pub mod crosscheck;
pub mod datadir;
pub mod dispatcher;
pub mod health;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod server;
pub mod startcheck;

pub use config::{NodeConfig, Role};
pub use node::{Node, NodeError, NodeState, PeerProbe, StatusView};
