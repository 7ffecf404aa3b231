//! Generated protobuf and gRPC code. No hand-written logic lives here.

#![allow(clippy::all, clippy::pedantic)]

/// The public API, `hearth.v1`.
pub mod v1 {
    tonic::include_proto!("hearth.v1");
}

/// The internal Raft transport, `hearth.raft.v1`.
pub mod raft {
    tonic::include_proto!("hearth.raft.v1");
}

/// Encoded file descriptor set of every Hearth proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hearth_descriptor.bin"));

/// The device simulator's API, `hearth.device.v1`.
pub mod device {
    tonic::include_proto!("hearth.device.v1");
}
