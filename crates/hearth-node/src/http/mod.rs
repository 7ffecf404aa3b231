//! The HTTP face of a node: one server per node, on up to two addresses (`[http]` in the
//! config): `listen` on the LAN with TLS and the node's own certificate (plain text only for
//! an `insecure` node), and `loopback`, plain HTTP on 127.0.0.1 for clients on the same host
//! (DoSync's clients and `certify.py` speak plain HTTP to 127.0.0.1). Tokens are required on
//! both whenever the node has client authentication.
//!
//! What it serves is one [`axum::Router`], built by [`router`]: DoSync's REST API v1
//! ([`dosync`]) and `/metrics` today; the MCP endpoint (`/mcp`) and the web page (`/`) are
//! meant to be merged into the same router. Handlers call the same API functions as the gRPC
//! services ([`crate::api::Api`], in process, as the caller), so any node answers and a write
//! reaching a follower goes to the leader through the one forwarding path.
//!
//! It is not a second API: no decision is made here that gRPC clients do not also get. It
//! translates DoSync's shapes to Hearth's and back (docs/REST.md says what differs).

mod dosync;
pub mod error;
mod input;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::api::Api;
use crate::auth::{Authenticator, ClientRole, Principal};
use crate::metrics::Counters;
use crate::node::Node;
use error::RestError;

/// DoSync's protocol version that this API speaks (`X-DoSync-Protocol-Version`).
pub const DOSYNC_PROTOCOL_VERSION: &str = "0.5";
/// DoSync's REST API version (`X-DoSync-API-Version`, the `/v1/` prefix).
pub const DOSYNC_API_VERSION: &str = "1";

/// How long one request may take before the client is told so (504): a forwarded write's
/// own deadline plus a margin, so a leader that does not answer is reported by the forward
/// (`NO_QUORUM`, 503) first.
fn request_timeout(node: &Node) -> Duration {
    crate::api::forward_deadline(&node.config().timing) + Duration::from_secs(2)
}

/// What every handler shares.
pub struct HttpState {
    pub node: Arc<Node>,
    pub api: Api,
    pub auth: Arc<Authenticator>,
    pub counters: Arc<Counters>,
    pub started: Instant,
}

impl HttpState {
    /// The caller of a request that needs `role`: its bearer token checked exactly as a gRPC
    /// call's (`None` when the node has no client authentication).
    fn caller(
        &self,
        headers: &HeaderMap,
        role: ClientRole,
        what: &str,
    ) -> Result<Option<Principal>, RestError> {
        if !self.auth.enabled() {
            return Ok(None);
        }
        let h = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        self.auth
            .check_role(what, role, h)
            .map(Some)
            .map_err(RestError::from)
    }

    /// The operator of a request DoSync reserves to its operator credential (confirm, deny,
    /// direct control): the bearer token must be valid, and `X-DoSync-Operator-Token` (or
    /// `X-Operator-Token`) must carry a Hearth token with the operator role. The operator's
    /// token is the principal the API (and the chain) sees.
    fn operator(&self, headers: &HeaderMap, what: &str) -> Result<Option<Principal>, RestError> {
        self.caller(headers, ClientRole::Agent, what)?;
        if !self.auth.enabled() {
            return Ok(None);
        }
        let Some(token) = ["x-dosync-operator-token", "x-operator-token"]
            .iter()
            .find_map(|h| headers.get(*h))
        else {
            return Err(RestError::Forbidden(format!(
                "operator_credential_required: {what} needs the operator credential: send \
                 X-DoSync-Operator-Token with a Hearth token whose role is operator or admin. \
                 Agents fire intents."
            )));
        };
        let token = token
            .to_str()
            .map_err(|_| RestError::Forbidden("the operator token is not valid text".into()))?;
        let bearer = format!("Bearer {}", token.trim());
        // An unknown or too-low operator token is a 403 (the bearer itself was good).
        self.auth
            .check_role(what, ClientRole::Operator, Some(bearer.as_bytes()))
            .map(Some)
            .map_err(|s| RestError::Forbidden(format!("operator credential: {}", s.message())))
    }
}

/// The node's HTTP router: DoSync's v1 API and `/metrics`, every answer stamped with DoSync's
/// version headers, each request bounded in time, anything else a JSON 404.
pub fn router(state: Arc<HttpState>) -> Router {
    let timeout = request_timeout(&state.node);
    let node = state.node.id;
    dosync::routes()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                use tracing::Instrument;
                let span = tracing::info_span!(
                    "http",
                    node,
                    method = %req.method(),
                    path = %req.uri().path()
                );
                let mut resp = match tokio::time::timeout(timeout, next.run(req))
                    .instrument(span)
                    .await
                {
                    Ok(r) => r,
                    Err(_) => RestError::Timeout(format!(
                        "no answer within {} ms; a write may still commit: retry with the same \
                         idempotency key",
                        timeout.as_millis()
                    ))
                    .into_response(),
                };
                let h = resp.headers_mut();
                h.insert(
                    "x-dosync-protocol-version",
                    HeaderValue::from_static(DOSYNC_PROTOCOL_VERSION),
                );
                h.insert(
                    "x-dosync-api-version",
                    HeaderValue::from_static(DOSYNC_API_VERSION),
                );
                resp
            },
        ))
}

/// A JSON answer (axum's own `Json` needs features this crate leaves out).
pub struct Json(pub serde_json::Value);

impl IntoResponse for Json {
    fn into_response(self) -> axum::response::Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

async fn not_found() -> RestError {
    RestError::NotFound("Not Found: no such endpoint (docs/REST.md lists them)".into())
}

/// `GET /metrics`: the same page as `metrics_listen` serves, behind a token (operator), as
/// the rest of the node's internals are.
async fn metrics(
    axum::extract::State(s): axum::extract::State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, RestError> {
    s.caller(&headers, ClientRole::Operator, "GET /metrics")?;
    let body = crate::metrics::render(&s.node, &s.counters).await;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response())
}

/// The running HTTP listeners of a node; dropping it stops them.
pub struct HttpServers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _acceptors: Vec<crate::conn::Acceptor>,
}

impl Drop for HttpServers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A listener to serve: its socket, and whether it is the TLS (LAN) one.
pub struct HttpListener {
    pub listener: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `router` on each listener with the node's connection limits (a cap, a TLS
/// handshake deadline, an idle deadline) and a deadline for a request's headers.
pub fn serve(
    router: Router,
    listeners: Vec<HttpListener>,
    limits: crate::conn::ConnLimits,
) -> HttpServers {
    let mut tasks = Vec::new();
    let mut acceptors = Vec::new();
    for l in listeners {
        let registry = crate::conn::Registry::new();
        let router = router.clone();
        let header_timeout = limits.handshake_timeout;
        match l.tls {
            Some(cfg) => {
                // HTTP/1.1 over TLS: the gRPC config offers only h2 by ALPN.
                let mut cfg = (*cfg).clone();
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                let (a, incoming) = crate::conn::tls(l.listener, limits, registry, Arc::new(cfg));
                acceptors.push(a);
                tasks.push(tokio::spawn(accept_loop(incoming, router, header_timeout)));
            }
            None => {
                let (a, incoming) = crate::conn::plain(l.listener, limits, registry);
                acceptors.push(a);
                tasks.push(tokio::spawn(accept_loop(incoming, router, header_timeout)));
            }
        }
    }
    HttpServers {
        tasks,
        _acceptors: acceptors,
    }
}

async fn accept_loop<IO>(
    mut incoming: crate::conn::Incoming<IO>,
    router: Router,
    header_timeout: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;
    while let Some(io) = incoming.next().await {
        let Ok(io) = io else { continue };
        let svc = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(io), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Binds the node's `[http]` addresses (none: no HTTP face).
pub async fn bind(node: &Node) -> Result<Vec<HttpListener>, crate::server::ServeError> {
    let cfg = &node.config().http;
    let mut out = Vec::new();
    let bind = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| crate::server::ServeError::Bind { addr, source })
    };
    if let Some(addr) = &cfg.listen {
        let tls = match node.security().rustls_server_config() {
            Some(c) => {
                Some(c.map_err(|e| crate::error::StartError::Settings(format!("http tls: {e}")))?)
            }
            None => None,
        };
        out.push(HttpListener {
            listener: bind(addr.clone()).await?,
            tls,
        });
    }
    if let Some(addr) = &cfg.loopback {
        out.push(HttpListener {
            listener: bind(addr.clone()).await?,
            tls: None,
        });
    }
    Ok(out)
}
