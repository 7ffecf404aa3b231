//! The Hearth server: configuration, node startup and bootstrap, the public gRPC API and its
//! HTTP face (DoSync's REST API v1).
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
pub mod expiry;
pub mod health;
pub mod http;
pub mod local;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod refusals;
pub mod server;
pub mod startcheck;

pub use config::{NodeConfig, Role};
/// The store's errors, as [`StartError::Store`] carries them (`hearth audit verify --data-dir`
/// reports a corrupt log by its index).
pub use hearth_store::StoreError;

/// What `hearth device-sim` runs: the simulated device and its MQTT face, from
/// `hearth-devices` (the binary reaches devices only through this crate).
pub mod device_sim {
    pub use hearth_devices::mqtt::{MqttBroker, Secret, serve_device_keyed, tls_client_config};
    pub use hearth_devices::server::DeviceSim;
}
/// The running chain-head cross-check is part of the node (`node::crosscheck`).
pub use node::crosscheck;
pub use node::{Node, NodeError, NodeState, PeerProbe, StartError, StatusView, describe};
