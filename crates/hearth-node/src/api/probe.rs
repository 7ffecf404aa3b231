//! Asking a peer for its status over the public API (bootstrap, clock and chain checks,
//! promotion).

use futures::future::BoxFuture;
use hearth_proto::v1 as pb;
use hearth_proto::v1::cluster_client::ClusterClient;
use std::time::Duration;
use tonic::Request;

use crate::node::{PeerProbe, StatusView};

/// Asks peers for their status over the public API.
pub struct GrpcProbe {
    pub timeout: Duration,
    pub security: hearth_cluster::tls::Security,
}

impl PeerProbe for GrpcProbe {
    fn status<'a>(&'a self, _id: u64, addr: &'a str) -> BoxFuture<'a, Option<StatusView>> {
        Box::pin(async move {
            let channel = hearth_cluster::grpc::shared_channel(addr, &self.security).ok()?;
            let mut client = ClusterClient::new(channel);
            let mut req = Request::new(pb::StatusRequest {});
            req.set_timeout(self.timeout);
            let s = tokio::time::timeout(self.timeout, client.status(req))
                .await
                .ok()?
                .ok()?;
            Some(super::status_from_proto(&s.into_inner()))
        })
    }
}
