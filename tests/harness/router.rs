//! In-process Raft transport with directed link faults.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use hearth_cluster::{RaftHandler, TypeConfig};
use hearth_node::{Node, PeerProbe, StatusView};
use hearth_store::Member;
use openraft::OptionalSend;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

#[derive(Default)]
struct Inner {
    handlers: BTreeMap<u64, RaftHandler>,
    nodes: BTreeMap<u64, Arc<Node>>,
    blocked: BTreeSet<(u64, u64)>,
}

/// Shared routing table. Cloning shares it.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<Inner>>,
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)))
}

impl Router {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn register(&self, node: Arc<Node>) {
        self.with(|i| {
            i.handlers.insert(node.id, node.handler.clone());
            i.nodes.insert(node.id, node);
        });
    }

    /// Takes a node off the network (it was stopped).
    pub fn unregister(&self, id: u64) -> Option<Arc<Node>> {
        self.with(|i| {
            i.handlers.remove(&id);
            i.nodes.remove(&id)
        })
    }

    /// Drops messages from `from` to `to` (one direction only).
    pub fn cut(&self, from: u64, to: u64) {
        self.with(|i| i.blocked.insert((from, to)));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: u64, b: u64) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts `id` from every other node in `all`, both ways.
    pub fn isolate(&self, id: u64, all: &[u64]) {
        for o in all.iter().filter(|o| **o != id) {
            self.cut_both(id, *o);
        }
    }

    pub fn heal(&self) {
        self.with(|i| i.blocked.clear());
    }

    pub fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.with(|i| i.blocked.contains(&(from, to)))
    }

    fn handler(&self, id: u64) -> Option<RaftHandler> {
        self.with(|i| i.handlers.get(&id).cloned())
    }

    fn node(&self, id: u64) -> Option<Arc<Node>> {
        self.with(|i| i.nodes.get(&id).cloned())
    }

    /// The network factory for node `from`.
    pub fn factory(&self, from: u64) -> RouterFactory {
        RouterFactory {
            from,
            router: self.clone(),
        }
    }

    /// How hubs reach the witness's `Cosign` through this router (honours cut links).
    pub fn cosign_client(&self) -> RouterCosign {
        RouterCosign {
            router: self.clone(),
        }
    }

    pub fn probe(&self, from: u64) -> RouterProbe {
        RouterProbe {
            from,
            router: self.clone(),
        }
    }
}

pub struct RouterFactory {
    from: u64,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for RouterFactory {
    type Network = RouterPeer;

    async fn new_client(&mut self, target: u64, _node: &Member) -> RouterPeer {
        RouterPeer {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

pub struct RouterPeer {
    from: u64,
    to: u64,
    router: Router,
}

impl RouterPeer {
    async fn call<T, E: std::fmt::Display, F>(
        &self,
        option: &RPCOption,
        f: impl FnOnce(RaftHandler) -> F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: Future<Output = Result<T, E>>,
    {
        if self.router.is_blocked(self.from, self.to) {
            return Err(unreachable(format!(
                "link {} -> {} is cut",
                self.from, self.to
            )));
        }
        let Some(h) = self.router.handler(self.to) else {
            return Err(unreachable(format!("node {} is down", self.to)));
        };
        if let Some(why) = h.refusal(self.from) {
            hearth_cluster::notices::record(self.from, self.to, &why);
            return Err(unreachable(why));
        }
        let res = tokio::time::timeout(option.soft_ttl(), f(h))
            .await
            .map_err(|_| unreachable(format!("rpc {} -> {} timed out", self.from, self.to)))?;
        if self.router.is_blocked(self.to, self.from) {
            return Err(unreachable(format!(
                "link {} -> {} is cut (response lost)",
                self.to, self.from
            )));
        }
        res.map_err(|e| unreachable(format!("node {}: {e}", self.to)))
    }
}

impl RaftNetworkV2<TypeConfig> for RouterPeer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&option, |h| async move { h.append_entries(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&option, |h| async move { h.vote(rpc).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&option, |h| async move { h.pre_vote(rpc).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let long = RPCOption::new(std::time::Duration::from_secs(30));
        let _ = option;
        Ok(self
            .call(&long, |h| async move {
                h.install_snapshot(vote, snapshot).await
            })
            .await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&option, |h| async move { h.transfer_leader(req).await })
            .await
    }
}

/// Peer status through the router (honours cut links).
pub struct RouterProbe {
    from: u64,
    router: Router,
}

impl PeerProbe for RouterProbe {
    fn status<'a>(&'a self, id: u64, _addr: &'a str) -> BoxFuture<'a, Option<StatusView>> {
        Box::pin(async move {
            if self.router.is_blocked(self.from, id) || self.router.is_blocked(id, self.from) {
                return None;
            }
            let n = self.router.node(id)?;
            Some(n.status().await)
        })
    }
}

/// `Cosign` through the router: the same checks as the gRPC service (cut links, the target's
/// refusal of retired senders), then the target's [`RaftHandler::cosign`].
pub struct RouterCosign {
    router: Router,
}

impl hearth_cluster::CosignClient for RouterCosign {
    fn cosign<'a>(
        &'a self,
        from: u64,
        to: u64,
        _addr: &'a str,
        req: hearth_core::checkpoint::CosignRequest,
    ) -> BoxFuture<'a, Result<hearth_core::checkpoint::CosignReply, String>> {
        Box::pin(async move {
            if self.router.is_blocked(from, to) {
                return Err(format!("link {from} -> {to} is cut"));
            }
            let Some(h) = self.router.handler(to) else {
                return Err(format!("node {to} is down"));
            };
            if let Some(why) = h.refusal(from) {
                return Err(why);
            }
            let reply = h.cosign(from, req).await;
            if self.router.is_blocked(to, from) {
                return Err(format!("link {to} -> {from} is cut (response lost)"));
            }
            Ok(reply)
        })
    }
}
