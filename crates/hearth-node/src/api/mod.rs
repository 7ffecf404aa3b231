//! The public gRPC API (`hearth.v1`): one [`Api`] serving every service, a file per service.
//!
//! Each handler reads its request through [`convert`], calls [`Node`], and maps a
//! [`NodeError`] to a status in one place ([`to_status`]). A write that reaches a follower is
//! forwarded to the leader once, through the one [`forward`] function: one deadline
//! ([`forward::FORWARD_MARGIN`] past the leader's own write timeout), the caller's token
//! forwarded, and a leader that does not answer reported as `NO_QUORUM` naming it.

mod audit;
mod cluster;
mod convert;
mod devices;
pub mod forward;
mod intents;
mod policies;
mod probe;
mod status;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::error::NodeError;
use crate::metrics::Counters;
use crate::node::Node;

/// What clients use to build requests exactly as the server reads them (the CLI, `hearth
/// dev`, tests), and to read the answers.
pub use convert::{
    class_from_doc, device_from_pb, device_to_pb, intent_from_pb, plan_view, policies_from_doc,
    record_view, status_from_proto, status_to_proto,
};
pub use forward::{FORWARD_MARGIN, forward_deadline};
pub use probe::GrpcProbe;
pub use status::to_status;

/// Largest public request accepted (bytes).
pub const MAX_REQUEST: usize = 64 * 1024;

/// The public API of one node: every `hearth.v1` service.
#[derive(Clone)]
pub struct Api {
    node: Arc<Node>,
    counters: Arc<Counters>,
    refusals: Arc<crate::refusals::Refusals>,
}

impl Api {
    pub fn new(node: Arc<Node>, counters: Arc<Counters>) -> Self {
        let refusals = Arc::new(crate::refusals::Refusals::new(node.config().node_id));
        Self {
            node,
            counters,
            refusals,
        }
    }

    /// Serves `Audit.Refusals` from `ring` (the one the auth layer records into).
    pub fn with_refusals(mut self, ring: Arc<crate::refusals::Refusals>) -> Self {
        self.refusals = ring;
        self
    }
}

/// A request as a handler reads it: the message, who sent it (set by the auth layer; `None`
/// without client authentication), and whether another node forwarded it to this one.
pub(crate) struct Call<T> {
    pub msg: T,
    pub caller: Option<Principal>,
    pub forwarded: bool,
}

impl<T> Call<T> {
    pub fn new(req: Request<T>) -> Self {
        let forwarded = forward::is_forwarded(&req);
        Self {
            msg: req.into_inner(),
            caller: crate::auth::current(),
            forwarded,
        }
    }

    /// The authenticated client's name (not a node's), for audit entries.
    pub fn name(&self) -> Option<&str> {
        crate::auth::client_name(self.caller.as_ref())
    }
}

impl Api {
    /// The answer to `call` given what this node made of it: its own answer, or on a
    /// follower (and only for a call not forwarded already) the leader's, through `rpc`.
    async fn answer<T, R, F, Fut>(
        &self,
        call: Call<T>,
        res: Result<R, NodeError>,
        rpc: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(tonic::transport::Channel, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        match res {
            Ok(v) => Ok(Response::new(v)),
            Err(NodeError::NotLeader { leader, addr, .. }) if !call.forwarded => {
                forward::to_leader(
                    &self.node,
                    leader,
                    &addr,
                    call.caller.as_ref(),
                    call.msg,
                    rpc,
                )
                .await
            }
            Err(e) => Err(to_status(e)),
        }
    }
}
