//! Raft RPCs over tonic.
//!
//! Client side: one lazily connected `Channel` per peer address, cached in the factory
//! (`new_client` runs on every vote broadcast, so it must not connect); every RPC carries the
//! deadline openraft gives (`soft_ttl`), snapshots a long one. Errors map as openraft expects:
//! a peer that cannot be reached is `Unreachable` (openraft backs off), anything else is a
//! `Network` error; a remote Raft error (the peer's core is down) is `Unreachable` too.
//!
//! Server side: [`RaftGrpc`] decodes, checks that the RPC was meant for this node, and hands
//! it to the [`RaftHandler`].
//!
//! `Cosign` (hub → witness, checkpoints) goes the same way; its client is [`GrpcCosignClient`].

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hearth_core::checkpoint::{CosignReply, CosignRequest};
use hearth_proto::raft::RaftBytes;
use hearth_proto::raft::raft_client::RaftClient;
use hearth_proto::raft::raft_server::Raft as RaftRpc;
use hearth_store::Member;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::handler::CosignClient;
use crate::settings::SNAPSHOT_TIMEOUT_MS;
use crate::tls::{Security, check_peer_identity};
use crate::wire::{self, FORMAT_JSON};
use crate::{RaftHandler, TypeConfig};

type TResult<T> = Result<T, RPCError<TypeConfig>>;

fn unreachable(msg: impl Into<String>) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg.into())))
}

fn network(msg: impl Into<String>) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg.into())))
}

/// A lazily connected plain-text channel to `addr` (clusters with `insecure = true`, tests).
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    node_channel(addr, &Security::Insecure, None)
}

/// Makes a lazily connected channel to `addr`; with TLS, the server must prove it is node
/// `peer` (`None`: any node of the cluster) and this node presents its own certificate.
pub fn node_channel(
    addr: &str,
    security: &Security,
    peer: Option<u64>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(format!("{}://{addr}", security.scheme()))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = security.client_config(peer) {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_lazy())
}

/// A lazily connected channel to `addr`, shared by the whole process: forwarding a client
/// request to the leader or probing a peer reuses one HTTP/2 connection instead of opening a
/// new one per call.
/// Channels are cached per (address, identity): nodes of a test share one process.
pub fn shared_channel(addr: &str, security: &Security) -> Result<Channel, tonic::transport::Error> {
    static CHANNELS: std::sync::OnceLock<Mutex<HashMap<(String, String), Channel>>> =
        std::sync::OnceLock::new();
    let key = (addr.to_string(), security.cache_key());
    let mut g = CHANNELS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = g.get(&key) {
        return Ok(c.clone());
    }
    let c = node_channel(addr, security, None)?;
    g.insert(key, c.clone());
    Ok(c)
}

/// One line a minute per peer that cannot be reached, instead of openraft's warning on every
/// heartbeat and append (its replication warnings are filtered out by default).
mod reach {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    const EVERY: Duration = Duration::from_secs(60);

    struct Down {
        since: Instant,
        logged: Instant,
        failures: u64,
    }

    fn book() -> &'static Mutex<HashMap<(u64, u64), Down>> {
        static B: OnceLock<Mutex<HashMap<(u64, u64), Down>>> = OnceLock::new();
        B.get_or_init(Mutex::default)
    }

    pub fn unreachable(from: u64, target: u64, addr: &str, why: &str) {
        let mut g = book().lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let d = g.entry((from, target)).or_insert_with(|| Down {
            since: now,
            logged: now - EVERY,
            failures: 0,
        });
        d.failures += 1;
        if now.duration_since(d.logged) >= EVERY {
            d.logged = now;
            tracing::warn!(
                node = from,
                peer = target,
                "peer {target} at {addr} unreachable since {}s ago ({} failed calls): {why}",
                now.duration_since(d.since).as_secs(),
                d.failures
            );
        }
    }

    pub fn reachable(from: u64, target: u64) {
        let mut g = book().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = g.remove(&(from, target)) {
            tracing::info!(
                node = from,
                peer = target,
                "peer {target} reachable again after {}s",
                d.since.elapsed().as_secs()
            );
        }
    }
}

/// Creates Raft clients for one node; caches one channel per peer address.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    self_id: u64,
    security: Security,
    channels: Arc<Mutex<HashMap<(u64, String), Channel>>>,
}

impl GrpcNetworkFactory {
    pub fn new(self_id: u64, security: Security) -> Self {
        Self {
            self_id,
            security,
            channels: Arc::default(),
        }
    }

    fn channel(&self, target: u64, addr: &str) -> Option<Channel> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(&(target, addr.to_string())) {
            return Some(c.clone());
        }
        match node_channel(addr, &self.security, Some(target)) {
            Ok(c) => {
                g.insert((target, addr.to_string()), c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::error!(target, addr, error = %e, "invalid peer address in membership");
                None
            }
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: u64, node: &Member) -> GrpcPeer {
        GrpcPeer {
            from: self.self_id,
            target,
            addr: node.addr.clone(),
            client: self.channel(target, &node.addr).map(RaftClient::new),
        }
    }
}

/// Raft client for one peer.
pub struct GrpcPeer {
    from: u64,
    target: u64,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Append,
    Vote,
    PreVote,
    Snapshot,
    Transfer,
}

impl GrpcPeer {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> TResult<Resp> {
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable(format!(
                "node {} has an invalid address {:?}",
                self.target, self.addr
            )));
        };
        let data = wire::encode(req).map_err(|e| network(e.to_string()))?;
        let mut request = Request::new(RaftBytes {
            format: FORMAT_JSON,
            from: self.from,
            to: self.target,
            data,
        });
        request.set_timeout(timeout);
        let res = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::PreVote => client.pre_vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
            Method::Transfer => client.transfer_leader(request).await,
        };
        let reply = match res {
            Ok(r) => {
                reach::reachable(self.from, self.target);
                r.into_inner()
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                reach::unreachable(self.from, self.target, &self.addr, s.message());
                return Err(unreachable(format!(
                    "{method:?} to node {} at {}: {}",
                    self.target,
                    self.addr,
                    s.message()
                )));
            }
            Err(s) if s.code() == Code::PermissionDenied => {
                // The peer refuses this node for good (e.g. it was removed by a forced
                // promotion there): keep the reason for status and errors, log it once a minute.
                if crate::notices::record(self.from, self.target, s.message()) {
                    tracing::error!(node = self.from, by = self.target, "{}", s.message());
                }
                return Err(unreachable(format!(
                    "node {} refuses this node: {}",
                    self.target,
                    s.message()
                )));
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                // Wrong node at that address, or the peer's Raft core is down.
                return Err(unreachable(format!(
                    "node {} at {}: {}",
                    self.target,
                    self.addr,
                    s.message()
                )));
            }
            Err(s) => return Err(network(format!("{method:?} to node {}: {s}", self.target))),
        };
        let res: Result<Resp, String> =
            wire::decode(reply.format, &reply.data).map_err(|e| network(e.to_string()))?;
        res.map_err(|remote| {
            unreachable(format!(
                "node {} answered with an error: {remote}",
                self.target
            ))
        })
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcPeer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> TResult<AppendEntriesResponse<TypeConfig>> {
        self.call(Method::Append, &rpc, option.soft_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> TResult<VoteResponse<TypeConfig>> {
        self.call(Method::Vote, &rpc, option.soft_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> TResult<VoteResponse<TypeConfig>> {
        self.call(Method::PreVote, &rpc, option.soft_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        let timeout = Duration::from_millis(SNAPSHOT_TIMEOUT_MS);
        tokio::pin!(cancel);
        tokio::select! {
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
            res = self.call(Method::Snapshot, &req, timeout) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> TResult<TransferLeaderResponse<TypeConfig>> {
        self.call(Method::Transfer, &req, option.soft_ttl()).await
    }
}

/// Sends checkpoints to the witness over the Raft service (`Cosign`), on a channel of its own
/// that checks the witness's certificate for its node id.
pub struct GrpcCosignClient {
    /// Deadline of one request (the witness may wait a little for the index to be applied).
    pub timeout: Duration,
    /// With TLS, the witness must prove it is node `to`.
    pub security: Security,
}

impl CosignClient for GrpcCosignClient {
    fn cosign<'a>(
        &'a self,
        from: u64,
        to: u64,
        addr: &'a str,
        req: CosignRequest,
    ) -> BoxFuture<'a, Result<CosignReply, String>> {
        Box::pin(async move {
            // Checkpoints are rare: a channel per request, checked for exactly node `to`.
            let channel = node_channel(addr, &self.security, Some(to))
                .map_err(|e| format!("address {addr:?}: {e}"))?;
            let data = wire::encode(&req).map_err(|e| e.to_string())?;
            let mut request = Request::new(RaftBytes {
                format: FORMAT_JSON,
                from,
                to,
                data,
            });
            request.set_timeout(self.timeout);
            let reply = RaftClient::new(channel)
                .cosign(request)
                .await
                .map_err(|s| format!("node {to} at {addr}: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            let res: Result<CosignReply, String> =
                wire::decode(reply.format, &reply.data).map_err(|e| e.to_string())?;
            res.map_err(|remote| format!("node {to} answered with an error: {remote}"))
        })
    }
}

/// The tonic service answering Raft RPCs for one node.
pub struct RaftGrpc {
    handler: RaftHandler,
    security: Security,
}

impl RaftGrpc {
    pub fn new(handler: RaftHandler, security: Security) -> Self {
        Self { handler, security }
    }

    fn open<T: DeserializeOwned>(&self, req: Request<RaftBytes>) -> Result<(u64, T), Status> {
        let certs = req.peer_certs();
        let m = req.into_inner();
        check_peer_identity(
            &self.security,
            certs.as_deref().map(|c| c.as_slice()),
            m.from,
        )
        .map_err(|why| {
            tracing::warn!(node = self.handler.id, claimed = m.from, "{why}");
            Status::unauthenticated(why)
        })?;
        if m.to != self.handler.id {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: the peer's membership has a stale address",
                self.handler.id, m.to
            )));
        }
        if let Some(why) = self.handler.refusal(m.from) {
            return Err(Status::permission_denied(why));
        }
        let v =
            wire::decode(m.format, &m.data).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok((m.from, v))
    }

    /// A node campaigns and leads only in its own name: the vote inside a vote request, an
    /// append, a snapshot or a leadership transfer must be the sender's (whose id its
    /// certificate proved in `open`).
    fn in_own_name(&self, from: u64, vote: &VoteOf<TypeConfig>, what: &str) -> Result<(), Status> {
        use openraft::vote::RaftLeaderId;
        let named = *vote.leader_id().node_id();
        if named == from {
            return Ok(());
        }
        let why = format!(
            "node {from} sent a {what} in the name of node {named}: a node campaigns and leads \
             only as itself; refused"
        );
        tracing::warn!(node = self.handler.id, from, named, "{why}");
        Err(Status::permission_denied(why))
    }

    fn reply<T: Serialize, E: std::fmt::Display>(
        &self,
        res: Result<T, E>,
    ) -> Result<Response<RaftBytes>, Status> {
        let res: Result<T, String> = res.map_err(|e| e.to_string());
        let data = wire::encode(&res).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftBytes {
            format: FORMAT_JSON,
            from: self.handler.id,
            to: 0,
            data,
        }))
    }
}

fn raft_err_text(e: RaftError<TypeConfig>) -> String {
    e.to_string()
}

#[tonic::async_trait]
impl RaftRpc for RaftGrpc {
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let (from, rpc) = self.open::<AppendEntriesRequest<TypeConfig>>(req)?;
        self.in_own_name(from, &rpc.vote, "append")?;
        self.reply(
            self.handler
                .append_entries(rpc)
                .await
                .map_err(raft_err_text),
        )
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let (from, rpc) = self.open::<VoteRequest<TypeConfig>>(req)?;
        self.in_own_name(from, &rpc.vote, "vote request")?;
        self.reply(self.handler.vote(rpc).await.map_err(raft_err_text))
    }

    async fn pre_vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let (from, rpc) = self.open::<VoteRequest<TypeConfig>>(req)?;
        self.in_own_name(from, &rpc.vote, "pre-vote request")?;
        self.reply(self.handler.pre_vote(rpc).await.map_err(raft_err_text))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let (from, (vote, meta, data)): (u64, (VoteOf<TypeConfig>, _, Vec<u8>)) = self.open(req)?;
        self.in_own_name(from, &vote, "snapshot")?;
        let snapshot = Snapshot {
            meta,
            snapshot: Cursor::new(data),
        };
        self.reply(self.handler.install_snapshot(vote, snapshot).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let (from, rpc): (u64, TransferLeaderRequest<TypeConfig>) = self.open(req)?;
        self.in_own_name(from, rpc.from_leader(), "leadership transfer")?;
        self.reply(self.handler.transfer_leader(rpc).await)
    }

    async fn cosign(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let (from, rpc): (u64, CosignRequest) = self.open(req)?;
        self.reply(Ok::<_, String>(self.handler.cosign(from, rpc).await))
    }
}
