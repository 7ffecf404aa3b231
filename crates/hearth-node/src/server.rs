//! `hearth serve`: one node listening on one gRPC port for the Raft transport, the public API,
//! health and reflection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hearth_cluster::grpc::{GrpcNetworkFactory, RaftGrpc};
use hearth_proto::raft::raft_server::RaftServer;
use hearth_proto::v1::audit_server::AuditServer;
use hearth_proto::v1::cluster_server::ClusterServer;
use hearth_proto::v1::devices_server::DevicesServer;
use hearth_proto::v1::intents_server::IntentsServer;
use hearth_proto::v1::policies_server::PoliciesServer;
use tokio::net::TcpListener;

use crate::api::{Api, GrpcProbe, MAX_REQUEST};
use crate::auth::{AuthLayer, Authenticator};
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::node::Node;

/// Largest Raft message accepted from a peer.
const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source} (is another node already running there?)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(
        "the Raft core of this node stopped ({0}); the process exits so that its service manager restarts it (systemd: Restart=on-failure). If the disk is full, free space first"
    )]
    CoreStopped(String),
}

/// How often a node compares its clock with its peers'.
const CLOCK_EVERY: Duration = Duration::from_secs(5);

/// Runs a node until `shutdown` completes or a startup check fails. When the node asks for a
/// restart (a forced promotion, `hearth cluster restart`), it is stopped like on a planned stop
/// and started again from the same configuration: stores reopened, chain verified again.
pub async fn serve(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    loop {
        match serve_once(config.clone(), &mut shutdown).await? {
            Exit::Stopped => return Ok(()),
            Exit::Restart => tracing::info!(node = config.node_id, "restarting the node"),
        }
    }
}

enum Exit {
    Stopped,
    Restart,
}

async fn serve_once(
    config: NodeConfig,
    shutdown: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<Exit, ServeError> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let id = config.node_id;
    let security = config
        .security()
        .map_err(|e| StartError::Settings(e.to_string()))?;
    let authenticator = Arc::new(match &config.auth {
        Some(a) => Authenticator::from_file(&a.tokens_file)
            .map_err(|e| StartError::Settings(e.to_string()))?,
        None => Authenticator::disabled(),
    });
    let node = Arc::new(Node::start(config, GrpcNetworkFactory::new(id, security.clone())).await?);
    // The stores made their files at this start: the whole directory is the user's only.
    if let Err(e) = hearth_store::private::tighten(&node.config().data_dir) {
        tracing::warn!(error = %e, "cannot make the data directory private (0700/0600)");
    }
    node.checkpoints
        .set_client(Arc::new(hearth_cluster::grpc::GrpcCosignClient {
            timeout: crate::checkpoint::COSIGN_TIMEOUT,
            security: security.clone(),
        }));

    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<ClusterServer<Api>>().await;
    health.set_serving::<AuditServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hearth_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Settings(format!("reflection: {e}")))?;
    health.set_serving::<IntentsServer<Api>>().await;
    let counters = Arc::new(crate::metrics::Counters::default());
    // Calls refused before anything was appended, kept apart from the chain (Audit.Refusals).
    let refusals = Arc::new(crate::refusals::Refusals::new(node.config().node_id));
    let api = Api::new(node.clone(), counters.clone()).with_refusals(refusals.clone());
    // The HTTP face (DoSync's REST API v1), bound before the node answers gRPC so a taken
    // port fails the start like the gRPC one does.
    let http_listeners = crate::http::bind(&node).await?;
    let http_state = Arc::new(crate::http::HttpState {
        node: node.clone(),
        api: api.clone(),
        auth: authenticator.clone(),
        counters: counters.clone(),
        started: std::time::Instant::now(),
    });
    let metrics = match &node.config().metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            Some(tokio::spawn(crate::metrics::serve(
                l,
                node.clone(),
                counters,
            )))
        }
        None => None,
    };

    // The running chain-head cross-check (issue 13 item 5).
    let crosscheck = tokio::spawn(crate::crosscheck::run(
        Arc::downgrade(&node),
        Arc::new(GrpcProbe {
            timeout: Duration::from_secs(2),
            security: node.security().clone(),
        }),
        crate::crosscheck::period(node.config().timing.heartbeat_ms),
    ));
    // Startup checks that need peers run once the server answers, so peers can ask us too.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<StartError>(1);
    let checker = {
        let node = node.clone();
        tokio::spawn(async move {
            let probe = GrpcProbe {
                timeout: Duration::from_secs(2),
                security: node.security().clone(),
            };
            let res = async {
                node.check_not_wiped(&probe).await?;
                node.bootstrap(&probe, Duration::from_secs(1)).await
            }
            .await;
            if let Err(e) = res {
                let _ = fatal_tx.send(e).await;
            }
        })
    };

    // Peers' clocks, every 5 s: a hub whose clock is wrong neither leads nor stamps.
    let clock_watch = node.spawn_clock_watch(
        Arc::new(GrpcProbe {
            timeout: Duration::from_secs(2),
            security: node.security().clone(),
        }),
        CLOCK_EVERY,
    );
    // Free disk space, every 30 s: warned about before the log cannot be written.
    let disk_watch = {
        let dir = node.config().data_dir.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let (free, warning) = crate::health::disk(&dir);
                if !warning.is_empty() && !warned {
                    tracing::warn!(node = id, free_bytes = ?free, "DISK_LOW: {warning}");
                } else if warning.is_empty() && warned {
                    tracing::info!(node = id, free_bytes = ?free, "disk space is back above the warning threshold");
                }
                warned = !warning.is_empty();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = {
        let l = &node.config().limits;
        crate::conn::ConnLimits {
            max_connections: crate::conn::connection_cap(l.max_connections),
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
        }
    };
    // The open connections; a call with a valid token marks its connection as proven.
    let registry = crate::conn::Registry::new();
    let router = tonic::transport::Server::builder()
        // Every call passes the token check first (auth::need says what each method needs);
        // with TLS, a Raft call without a node certificate is refused before its body is read.
        .layer(
            AuthLayer::new(authenticator)
                .require_node_certificates(security.is_tls())
                .proving(registry.clone())
                .recording(refusals),
        )
        .add_service(
            RaftServer::new(RaftGrpc::new(node.handler.clone(), security.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE),
        )
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST))
        .add_service(AuditServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST))
        .add_service(IntentsServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST))
        .add_service(DevicesServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST))
        .add_service(PoliciesServer::new(api).max_decoding_message_size(MAX_REQUEST))
        .add_service(health_svc)
        .add_service(reflection);
    let stop = async {
        let _ = stop_rx.await;
    };
    // Our own accept loop (crate::conn): a connection cap, a TLS handshake deadline and an
    // idle deadline; it also sets TCP_NODELAY on every accepted connection (with Nagle on, a
    // small reply written in pieces waits ~40 ms for the peer's delayed ACK).
    let (acceptor, server): (
        crate::conn::Acceptor,
        Pin<Box<dyn Future<Output = _> + Send>>,
    ) = match security.rustls_server_config() {
        Some(cfg) => {
            let cfg = cfg.map_err(|e| StartError::Settings(format!("tls: {e}")))?;
            let (a, incoming) = crate::conn::tls(listener, limits, registry, cfg);
            (
                a,
                Box::pin(router.serve_with_incoming_shutdown(incoming, stop)),
            )
        }
        None => {
            let (a, incoming) = crate::conn::plain(listener, limits, registry);
            (
                a,
                Box::pin(router.serve_with_incoming_shutdown(incoming, stop)),
            )
        }
    };
    let server = tokio::spawn(server);
    let http = (!http_listeners.is_empty()).then(|| {
        for l in &http_listeners {
            if let Ok(a) = l.listener.local_addr() {
                let scheme = if l.tls.is_some() { "https" } else { "http" };
                tracing::info!(node = id, "REST API v1 (DoSync) at {scheme}://{a}/v1/");
            }
        }
        crate::http::serve(crate::http::router(http_state), http_listeners, limits)
    });
    tracing::info!(node = id, "serving");

    let mut restart = node.restart_requested();
    let result = tokio::select! {
        _ = shutdown.as_mut() => Ok(Exit::Stopped),
        Some(e) = fatal_rx.recv() => Err(ServeError::Start(e)),
        _ = restart.wait_for(|r| *r) => Ok(Exit::Restart),
        // A node whose Raft core stopped (ENOSPC, any fatal storage error, a panic in the
        // core) must not stay up answering "stopped": exit non-zero, systemd restarts it.
        why = node.core_stopped() => {
            tracing::error!(node = id, reason = %why, "CORE_STOPPED: the Raft core has stopped; exiting so the service manager restarts this node");
            Err(ServeError::CoreStopped(why))
        }
    };
    checker.abort();
    clock_watch.abort();
    disk_watch.abort();
    crosscheck.abort();
    let _ = crosscheck.await;
    // A planned stop: hand leadership over while the Raft service still answers.
    node.hand_over_leadership(Duration::from_millis(
        node.config().timing.election_max_ms * 2,
    ))
    .await;
    if let Some(m) = metrics {
        m.abort();
        let _ = m.await;
    }
    drop(http);
    let _ = stop_tx.send(());
    let server_result = server.await;
    drop(acceptor);
    match server_result {
        Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        Ok(Ok(())) => {}
    }
    match Arc::try_unwrap(node) {
        Ok(n) => n.shutdown().await,
        Err(n) => {
            if let Err(e) = n.raft.shutdown().await {
                tracing::warn!(error = %e, "Raft shutdown reported an error");
            }
        }
    }
    result
}
