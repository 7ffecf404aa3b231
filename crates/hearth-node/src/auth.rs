//! Client authentication and roles for the public API.
//!
//! Clients send `authorization: Bearer <token>`. Nodes keep only the SHA-256 of each token, in
//! a TOML file (`[auth] tokens_file`, written by `hearth init-pki` and `hearth token add`):
//!
//! ```toml
//! [[token]]
//! name = "ana"           # the principal named in audit entries
//! role = "operator"      # agent | operator | admin
//! sha256 = "<64 lower-case hex digits: SHA-256 of the token's UTF-8 bytes>"
//! # What the holder may ask for in intents (all optional):
//! emergency = false      # may claim urgency = emergency (default: no for agents, yes otherwise)
//! classes = ["notify"]   # intent classes it may use (default: all)
//! locations = ["home/kitchen"]  # it may address only these and what lies under them (default: all)
//! ```
//!
//! The file is read again when it changes (checked at most once a second), so adding or
//! revoking a token needs no restart.
//!
//! Which role each method needs is one table, [`need`]; a method missing from it needs
//! `admin` (deny by default), and a test checks that every method of the API is listed.
//! The check runs in a tower layer in front of every service; the principal it found is
//! available to handlers through [`current`] (a task-local), and a follower forwarding a call
//! to the leader forwards the caller's token, which the leader checks again.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hearth_core::policy::Grants;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

/// What a client may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ClientRole {
    /// Submits intents and reads its own intents; reads devices.
    Agent,
    /// Approves and denies intents, registers devices, applies classes and policies, reads the audit log.
    Operator,
    /// Membership, promotion, restarts, leadership transfer, test records.
    Admin,
}

impl ClientRole {
    pub fn name(self) -> &'static str {
        match self {
            ClientRole::Agent => "agent",
            ClientRole::Operator => "operator",
            ClientRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(ClientRole::Agent),
            "operator" => Some(ClientRole::Operator),
            "admin" => Some(ClientRole::Admin),
            _ => None,
        }
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone (health checks, reflection).
    Open,
    /// Node-to-node Raft traffic: the Raft service checks the node certificate itself.
    NodeCertificate,
    /// A token with at least this role, or a node certificate of this cluster.
    RoleOrNode(ClientRole),
    /// A token with at least this role.
    Role(ClientRole),
}

/// The table: which role each method of the API needs (deny by default: admin).
pub fn need(path: &str) -> Need {
    listed(path).unwrap_or(Need::Role(ClientRole::Admin))
}

fn listed(path: &str) -> Option<Need> {
    use ClientRole::*;
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("grpc.health.v1.Health", _) => Need::Open,
        ("grpc.reflection.v1.ServerReflection", _) => Need::Open,
        ("hearth.raft.v1.Raft", _) => Need::NodeCertificate,
        ("hearth.v1.Cluster", "Status") => Need::RoleOrNode(Agent),
        (
            "hearth.v1.Cluster",
            "AppendTestRecord" | "AddMember" | "RemoveMember" | "ReplaceMember" | "TransferLeader"
            | "Promote" | "Restart" | "RecordAct" | "Rejoin",
        ) => Need::Role(Admin),
        (
            "hearth.v1.Audit",
            "Tail" | "Export" | "Verify" | "ExportCheckpoints" | "Checkpoint" | "Refusals",
        ) => Need::Role(Operator),
        // An agent lists only its own pending intents (the handler filters); it never decides.
        ("hearth.v1.Intents", "Submit" | "Get" | "Watch" | "Explain" | "ListPending") => {
            Need::Role(Agent)
        }
        ("hearth.v1.Intents", "Approve" | "Deny") => Need::Role(Operator),
        ("hearth.v1.Devices", "List" | "Get") => Need::Role(Agent),
        ("hearth.v1.Devices", "Register" | "Remove") => Need::Role(Operator),
        ("hearth.v1.Devices", "Refence") => Need::Role(Admin),
        (
            "hearth.v1.Policies",
            "ApplyClass" | "ApplyPolicies" | "Show" | "AddPolicy" | "RemovePolicy",
        ) => Need::Role(Operator),
        _ => return None,
    })
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (`ana`), or `cluster node` for a node certificate.
    pub name: String,
    pub role: Option<ClientRole>,
    /// The `authorization` header as received, forwarded with calls to the leader.
    pub authorization: Option<String>,
    /// What it may ask for in intents (everything for a node certificate).
    pub grants: Grants,
}

impl Principal {
    pub fn is_node(&self) -> bool {
        self.role.is_none()
    }
}

tokio::task_local! {
    static CURRENT: Principal;
}

/// The authenticated caller of the call being handled, if client authentication is on: read
/// once by the API handler (`api::Call`), which passes it on explicitly.
pub fn current() -> Option<Principal> {
    CURRENT.try_with(|p| p.clone()).ok()
}

/// The name of `caller` when it is a client (not a node), for audit entries.
pub fn client_name(caller: Option<&Principal>) -> Option<&str> {
    caller.filter(|p| !p.is_node()).map(|p| p.name.as_str())
}

/// An agent acts only as itself: an intent it submits carries its name as the source, and it
/// reads only intents with that source. Operators and admins are not limited.
pub fn agent_of(caller: Option<&Principal>) -> Option<&str> {
    caller
        .filter(|p| p.role == Some(ClientRole::Agent))
        .map(|p| p.name.as_str())
}

/// Whether `caller` may approve or deny a held intent: operators and admins (and, without
/// client authentication, anyone). The method table already refuses an agent on gRPC; this
/// says the same to every face that calls the API functions.
pub fn check_decider(caller: Option<&Principal>) -> Result<(), String> {
    match caller.and_then(|p| p.role.map(|r| (p, r))) {
        Some((p, r)) if r < ClientRole::Operator => Err(format!(
            "{:?} has the role {}; approving or denying an intent needs operator: a person \
             decides, never an agent",
            p.name,
            r.name()
        )),
        _ => Ok(()),
    }
}

/// Whether `caller` may ask for `intent` (its token's emergency, class and location
/// grants); without client authentication everything is allowed. Checked where intents are
/// submitted and explained, on the node that receives the call and again on the leader.
pub fn check_grants(
    caller: Option<&Principal>,
    intent: &hearth_core::intent::Intent,
    devices: &[hearth_core::intent::Device],
) -> Result<(), hearth_core::intent::FieldError> {
    match caller {
        Some(p) if !p.is_node() => {
            p.grants
                .permits_with(&p.name, intent, devices.iter().map(|d| &d.location))
        }
        _ => Ok(()),
    }
}

/// SHA-256 of a token, lower-case hex: what the tokens file stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: ClientRole,
    pub sha256: String,
    /// May claim an emergency; absent: no for agents, yes for operators and admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<bool>,
    /// Intent classes it may use; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Locations it may address (and what lies under them); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
}

impl TokenEntry {
    /// What its holder may ask for in intents.
    pub fn grants(&self) -> Grants {
        Grants {
            emergency: self.emergency.unwrap_or(self.role >= ClientRole::Operator),
            classes: self.classes.as_ref().map(|c| c.iter().cloned().collect()),
            locations: self.locations.as_ref().map(|l| {
                l.iter()
                    .filter_map(|s| hearth_core::intent::Location::parse("locations", s).ok())
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default)]
    pub token: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {path} is not valid: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl TokensFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in f.token.iter().enumerate() {
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(format!(
                    "token[{i}].name {:?}: 1-64 characters of a-z, 0-9, - _ . @",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("token[{i}].name {:?} appears twice", t.name));
            }
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "token[{i}].sha256 must be 64 lower-case hex digits (the SHA-256 of the token)"
                ));
            }
            for c in t.classes.iter().flatten() {
                hearth_core::intent::check_id("classes", c)
                    .map_err(|e| format!("token[{i}].classes: {}", e.problem))?;
            }
            for l in t.locations.iter().flatten() {
                hearth_core::intent::Location::parse("locations", l)
                    .map_err(|e| format!("token[{i}].locations: {}", e.problem))?;
            }
        }
        Ok(f)
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|problem| AuthError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Hearth client tokens: the SHA-256 of each token, never the token itself.\n\
             # Add with `hearth token add`, revoke with `hearth token revoke`; nodes re-read this file.\n",
        );
        if let Ok(body) = toml::to_string(self) {
            out.push_str(&body);
        }
        out
    }

    fn find(&self, token: &str) -> Option<&TokenEntry> {
        let h = token_hash(token);
        // Compare every entry fully: the time taken does not say which entry matched.
        let mut found = None;
        for t in &self.token {
            let eq = t
                .sha256
                .bytes()
                .zip(h.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if eq && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

struct Loaded {
    file: TokensFile,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// Client authentication for one node.
pub struct Authenticator {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl Authenticator {
    /// Authentication off: every call is let through (an `insecure` configuration).
    pub fn disabled() -> Self {
        Self {
            path: None,
            loaded: Mutex::new(Loaded {
                file: TokensFile::default(),
                modified: None,
                checked: Instant::now(),
            }),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let file = TokensFile::load(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path: Some(path.to_path_buf()),
            loaded: Mutex::new(Loaded {
                file,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    fn lookup(&self, token: &str) -> Option<TokenEntry> {
        let path = self.path.as_ref()?;
        let mut g = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let found = g.file.find(token).cloned();
        // Look at the file at most once a second, or sooner (10 times a second at most) for a
        // token it does not know: one just added works within a tenth of a second.
        let due = g.checked.elapsed() >= Duration::from_secs(1)
            || (found.is_none() && g.checked.elapsed() >= Duration::from_millis(100));
        if due {
            g.checked = Instant::now();
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != g.modified {
                match TokensFile::load(path) {
                    Ok(f) => {
                        tracing::info!(path = %path.display(), tokens = f.token.len(), "tokens file re-read");
                        g.file = f;
                        g.modified = modified;
                    }
                    // Keep the last good set: a half-written or broken file locks nobody out
                    // and lets nobody new in.
                    Err(e) => tracing::error!("{e}; keeping the tokens read before"),
                }
            }
        }
        g.file.find(token).cloned()
    }

    /// Decides one call: `Ok(Some(principal))` to go on as that principal, `Ok(None)` to go
    /// on unauthenticated (open methods, Raft, authentication off), `Err` to refuse it.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        node_certificate: bool,
    ) -> Result<Option<Principal>, Status> {
        let need = need(path);
        let required = match need {
            Need::Role(r) | Need::RoleOrNode(r) if self.enabled() => r,
            _ => return Ok(None),
        };
        if authorization.is_none() && node_certificate && matches!(need, Need::RoleOrNode(_)) {
            return Ok(Some(Principal {
                name: "cluster node".into(),
                role: None,
                authorization: None,
                grants: Grants::all(),
            }));
        }
        self.check_role(path, required, authorization).map(Some)
    }

    /// The token check itself, for any transport: the `authorization` header (`Bearer
    /// <token>`) must name a known token whose role is at least `required`. `what` names the
    /// method or endpoint in the refusal. Only call it with authentication enabled.
    pub fn check_role(
        &self,
        what: &str,
        required: ClientRole,
        authorization: Option<&[u8]>,
    ) -> Result<Principal, Status> {
        let path = what;
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(format!(
                "{path} needs a client token: pass --token-file FILE or set HEARTH_TOKEN_FILE \
                 (`hearth init-pki` wrote admin.token; `hearth token add` makes more)"
            )));
        };
        let header = std::str::from_utf8(header).map_err(|_| {
            Status::unauthenticated("the authorization header is not valid text".to_string())
        })?;
        let Some(token) = header.strip_prefix("Bearer ") else {
            return Err(Status::unauthenticated(
                "the authorization header must be `Bearer <token>`".to_string(),
            ));
        };
        let Some(entry) = self.lookup(token.trim()) else {
            return Err(Status::unauthenticated(
                "this token is not known to the cluster (mistyped, or revoked)".to_string(),
            ));
        };
        if entry.role < required {
            return Err(Status::permission_denied(format!(
                "{:?} has the role {}; {path} needs {}",
                entry.name,
                entry.role.name(),
                required.name()
            )));
        }
        Ok(Principal {
            grants: entry.grants(),
            name: entry.name,
            role: Some(entry.role),
            authorization: Some(header.to_string()),
        })
    }
}

/// Runs `f` as `caller`: what the auth layer does for a gRPC call, for a call that reached
/// the API another way (the HTTP face), so the API reads the same principal ([`current`]).
pub async fn as_caller<F: Future>(caller: Option<Principal>, f: F) -> F::Output {
    match caller {
        Some(p) => CURRENT.scope(p, f).await,
        None => f.await,
    }
}

/// The tower layer that runs [`Authenticator::check`] in front of every service.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    node_certificates: bool,
    connections: Option<Arc<crate::conn::Registry>>,
    refusals: Option<Arc<crate::refusals::Refusals>>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self {
            auth,
            node_certificates: false,
            connections: None,
            refusals: None,
        }
    }

    /// Every call refused (a bad token, a role too low, a grant not held, a rate limit) is
    /// kept in `ring` (never in the chain; see `refusals`).
    pub fn recording(mut self, ring: Arc<crate::refusals::Refusals>) -> Self {
        self.refusals = Some(ring);
        self
    }

    /// A call with a valid token marks its connection in `registry` as proven (kept when
    /// room must be made for new connections).
    pub fn proving(mut self, registry: Arc<crate::conn::Registry>) -> Self {
        self.connections = Some(registry);
        self
    }

    /// With TLS on: a Raft call from a connection without a client certificate is refused
    /// from its headers, before its (up to 64 MiB) body is read.
    pub fn require_node_certificates(mut self, on: bool) -> Self {
        self.node_certificates = on;
        self
    }
}

/// Refuses, from the path alone, a call that needs a node certificate when the connection
/// presented none (the identity inside the certificate is checked after decoding).
pub fn refuse_before_body(
    path: &str,
    node_certificates: bool,
    has_certificate: bool,
) -> Option<Status> {
    (node_certificates && !has_certificate && need(path) == Need::NodeCertificate).then(|| {
        Status::unauthenticated(format!(
            "{path} is node-to-node traffic and this connection presented no client certificate (a node's): \
             refused before reading the message"
        ))
    })
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            node_certificates: self.node_certificates,
            connections: self.connections.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    node_certificates: bool,
    connections: Option<Arc<crate::conn::Registry>>,
    refusals: Option<Arc<crate::refusals::Refusals>>,
}

/// What a refusal is recorded with: the ring, the method, who and from where, and the token
/// presented (to keep it out of the message).
struct RefusalRecorder {
    ring: Arc<crate::refusals::Refusals>,
    method: String,
    principal: Option<String>,
    peer: Option<std::net::SocketAddr>,
    token: Option<String>,
}

impl RefusalRecorder {
    fn record(&self, status: &Status) {
        if crate::refusals::is_refusal(status.code()) {
            self.ring.record(crate::refusals::Refused::new(
                &self.method,
                status,
                self.principal.clone(),
                self.peer,
                self.token.as_deref(),
            ));
        }
    }

    /// Records the refusal an inner service answered, if it did (a refusal is a
    /// trailers-only response: its status is in the headers).
    fn observe<B>(&self, res: &http::Response<B>) {
        if let Some(status) = Status::from_header_map(res.headers()) {
            self.record(&status);
        }
    }
}

fn remote_addr<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .map(|i| i.get_ref())
        .or_else(|| req.extensions().get::<TcpConnectInfo>())
        .and_then(|i| i.remote_addr())
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn has_node_certificate<B>(req: &http::Request<B>) -> bool {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty())
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFut<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(status) = refuse_before_body(
            req.uri().path(),
            self.node_certificates,
            has_node_certificate(&req),
        ) {
            tracing::warn!(path = %req.uri().path(), "refused: {}", status.message());
            // Dropping the request drops its body unread: hyper resets the stream.
            drop(req);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let decision = self
            .auth
            .check(req.uri().path(), authorization, has_node_certificate(&req));
        // Client calls only: node-to-node Raft traffic and open methods (health) are not
        // what a household reads refusals for, and Raft's hot path stays as it was.
        let client_call = matches!(need(req.uri().path()), Need::Role(_) | Need::RoleOrNode(_));
        let recorder = self.refusals.as_ref().filter(|_| client_call).map(|ring| {
            let token = authorization
                .and_then(|h| std::str::from_utf8(h).ok())
                .map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim().to_string());
            RefusalRecorder {
                ring: ring.clone(),
                method: req.uri().path().to_string(),
                principal: match &decision {
                    Ok(Some(p)) if !p.is_node() => Some(p.name.clone()),
                    Ok(_) => None,
                    Err(_) => token
                        .as_deref()
                        .and_then(|t| self.auth.lookup(t))
                        .map(|e| e.name),
                },
                peer: remote_addr(&req),
                token,
            }
        });
        match decision {
            Ok(None) => observed(self.inner.call(req), recorder),
            Ok(Some(p)) => {
                if p.role.is_some()
                    && let (Some(reg), Some(addr)) = (&self.connections, remote_addr(&req))
                {
                    reg.prove(addr);
                }
                observed(CURRENT.scope(p, self.inner.call(req)), recorder)
            }
            Err(status) => {
                tracing::warn!(path = %req.uri().path(), code = ?status.code(), "refused: {}", status.message());
                if let Some(w) = &recorder {
                    w.record(&status);
                }
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Runs `fut` (the inner service's answer) and records it in the ring if it is a refusal.
fn observed<F, R, E>(fut: F, recorder: Option<RefusalRecorder>) -> BoxFut<http::Response<R>, E>
where
    F: Future<Output = Result<http::Response<R>, E>> + Send + 'static,
{
    Box::pin(async move {
        let res = fut.await;
        if let (Some(w), Ok(r)) = (&recorder, &res) {
            w.observe(r);
        }
        res
    })
}

/// Adds the caller's token to a call this node forwards to the leader.
pub fn forward_credentials<T>(req: &mut tonic::Request<T>) {
    if let Some(auth) = current().and_then(|p| p.authorization)
        && let Ok(v) = auth.parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, ClientRole, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let f = TokensFile {
            token: entries
                .iter()
                .map(|(n, r, t)| TokenEntry {
                    name: n.to_string(),
                    role: *r,
                    sha256: token_hash(t),
                    emergency: None,
                    classes: None,
                    locations: None,
                })
                .collect(),
        };
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, f.render()).unwrap();
        (dir, path)
    }

    #[test]
    fn every_role_against_every_need() {
        let (_d, path) = file(&[
            ("ag", ClientRole::Agent, "t-agent"),
            ("op", ClientRole::Operator, "t-op"),
            ("ad", ClientRole::Admin, "t-admin"),
        ]);
        let a = Authenticator::from_file(&path).unwrap();
        let paths = [
            ("/hearth.v1.Intents/Submit", ClientRole::Agent),
            ("/hearth.v1.Intents/Approve", ClientRole::Operator),
            ("/hearth.v1.Intents/Deny", ClientRole::Operator),
            ("/hearth.v1.Intents/ListPending", ClientRole::Agent),
            ("/hearth.v1.Devices/Register", ClientRole::Operator),
            ("/hearth.v1.Devices/Refence", ClientRole::Admin),
            ("/hearth.v1.Audit/Export", ClientRole::Operator),
            ("/hearth.v1.Cluster/AddMember", ClientRole::Admin),
            ("/hearth.v1.Cluster/Rejoin", ClientRole::Admin),
            ("/hearth.v1.Cluster/Promote", ClientRole::Admin),
            ("/hearth.v1.Unknown/Thing", ClientRole::Admin),
            ("garbage", ClientRole::Admin),
        ];
        for (p, required) in paths {
            for (tok, role) in [
                ("t-agent", ClientRole::Agent),
                ("t-op", ClientRole::Operator),
                ("t-admin", ClientRole::Admin),
            ] {
                let h = format!("Bearer {tok}");
                let r = a.check(p, Some(h.as_bytes()), false);
                if role >= required {
                    let p = r.unwrap().unwrap();
                    assert_eq!(p.role, Some(role));
                } else {
                    assert_eq!(
                        r.unwrap_err().code(),
                        tonic::Code::PermissionDenied,
                        "{p} {tok}"
                    );
                }
            }
            let e = a.check(p, None, false).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            let e = a.check(p, Some(b"Bearer nope"), false).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            let e = a.check(p, Some(b"Basic dA=="), false).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            let e = a.check(p, Some(&[0xff, 0xfe]), false).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            // A node certificate alone does not open privileged methods.
            assert!(a.check(p, None, true).is_err());
        }
        // Open methods and Raft pass without a token (Raft checks certificates itself).
        assert_eq!(
            a.check("/grpc.health.v1.Health/Check", None, false)
                .unwrap(),
            None
        );
        assert_eq!(
            a.check("/hearth.raft.v1.Raft/Vote", None, false).unwrap(),
            None
        );
        // A node certificate may ask for status (peers probe each other).
        assert!(
            a.check("/hearth.v1.Cluster/Status", None, true)
                .unwrap()
                .unwrap()
                .is_node()
        );
        // Authentication off lets everything through.
        let off = Authenticator::disabled();
        assert_eq!(
            off.check("/hearth.v1.Cluster/Promote", None, false)
                .unwrap(),
            None
        );
    }

    /// Every face of the API (gRPC, and the HTTP one) refuses an agent's decision the same
    /// way; a node certificate or no authentication at all is not an agent.
    #[test]
    fn only_operators_and_admins_decide_on_held_intents() {
        let p = |role| Principal {
            name: "x".into(),
            role,
            authorization: None,
            grants: Grants::all(),
        };
        let e = check_decider(Some(&p(Some(ClientRole::Agent)))).unwrap_err();
        assert!(
            e.contains("needs operator") && e.contains("never an agent"),
            "{e}"
        );
        for ok in [Some(ClientRole::Operator), Some(ClientRole::Admin), None] {
            assert!(check_decider(Some(&p(ok))).is_ok(), "{ok:?}");
        }
        assert!(check_decider(None).is_ok());
        assert_eq!(
            need("/hearth.v1.Intents/Deny"),
            Need::Role(ClientRole::Operator)
        );
        assert_eq!(
            need("/hearth.v1.Intents/ListPending"),
            Need::Role(ClientRole::Agent)
        );
    }

    #[test]
    fn every_api_method_is_in_the_table() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(hearth_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut n = 0;
        // hearth.device.v1 is the device simulator's own service, not served by nodes.
        for f in set
            .file
            .iter()
            .filter(|f| f.package() != "hearth.device.v1")
        {
            for s in &f.service {
                for m in &s.method {
                    let path = format!("/{}.{}/{}", f.package(), s.name(), m.name());
                    // Deny-by-default gives admin to unknown methods; every real one is named
                    // explicitly, so the table and the API cannot drift apart silently.
                    assert!(listed(&path).is_some(), "{path} is not in auth::need");
                    n += 1;
                }
            }
        }
        assert!(n >= 25, "only {n} methods found");
    }

    #[test]
    fn tokens_file_is_strict_and_reloads() {
        assert!(
            TokensFile::parse("[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n")
                .is_err()
        );
        let bad_hash = format!(
            "[[token]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
            "A".repeat(64)
        );
        assert!(
            TokensFile::parse(&bad_hash)
                .unwrap_err()
                .contains("lower-case")
        );
        let dup = format!(
            "[[token]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{0}\"\n[[token]]\nname = \"a\"\nrole = \"agent\"\nsha256 = \"{0}\"\n",
            "0".repeat(64)
        );
        assert!(TokensFile::parse(&dup).unwrap_err().contains("twice"));
        let (_d, path) = file(&[("ag", ClientRole::Agent, "t1")]);
        let a = Authenticator::from_file(&path).unwrap();
        assert!(
            a.check("/hearth.v1.Intents/Submit", Some(b"Bearer t1"), false)
                .is_ok()
        );
        // Revoke: the file changes; after the re-read interval the token is refused.
        std::fs::write(&path, TokensFile::default().render()).unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        a.loaded.lock().unwrap().checked = Instant::now() - Duration::from_secs(2);
        assert!(
            a.check("/hearth.v1.Intents/Submit", Some(b"Bearer t1"), false)
                .is_err()
        );
        // A broken file keeps the last good set (here: empty).
        std::fs::write(&path, "not toml [[").unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(9))
            .unwrap();
        a.loaded.lock().unwrap().checked = Instant::now() - Duration::from_secs(2);
        assert!(
            a.check("/hearth.v1.Intents/Submit", Some(b"Bearer t1"), false)
                .is_err()
        );
    }
}
