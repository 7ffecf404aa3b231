//! Transport security between nodes (and from clients to nodes): mutual TLS with a small
//! cluster CA (`hearth init-pki`).
//!
//! Identity: every node certificate names `node-<id>.hearth` (its identity) and `hearth` (any
//! node of this cluster) as DNS names. Addresses are not in certificates, so a hub may change
//! its IP without a new certificate:
//! - a node dialing peer N checks that the server's certificate is valid for `node-N.hearth`;
//! - a node answering a Raft RPC that claims to come from node N checks that the client
//!   certificate (already verified against the cluster CA by rustls) is valid for
//!   `node-N.hearth` ([`check_peer_identity`]);
//! - a client of the public API checks the server against `hearth`.
//!
//! Plain text is only used with [`Security::Insecure`], which a configuration must ask for.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name in node `id`'s certificate that proves its identity.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.hearth")
}

/// The DNS name every node certificate of a cluster carries; API clients check it.
pub const CLUSTER_NAME: &str = "hearth";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}: {problem}")]
    Pem {
        what: &'static str,
        path: String,
        expected: &'static str,
        problem: String,
    },
    #[error(
        "certificate {path} is not node {node}'s: it is not valid for {name} ({problem}); \
         issue one with `hearth init-pki --dir DIR --node {node}`"
    )]
    WrongNode {
        path: String,
        node: u64,
        name: String,
        problem: String,
    },
    #[error("private key {path} is readable by other users (mode {mode:o}); run chmod 600 {path}")]
    KeyPermissions { path: String, mode: u32 },
}

/// The PEM files of one node.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

struct Material {
    node_id: u64,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// Short fingerprint of the node certificate, for channel caches and logs.
    fingerprint: String,
}

/// How a node talks to other nodes (and clients to nodes).
#[derive(Clone)]
pub enum Security {
    /// Plain-text HTTP/2: only when the configuration says `insecure = true`.
    Insecure,
    Tls(Arc<TlsMaterialHandle>),
}

/// Loaded certificate material (opaque).
pub struct TlsMaterialHandle(Material);

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Insecure => f.write_str("Insecure"),
            Security::Tls(m) => write!(f, "Tls(node {}, {})", m.0.node_id, m.0.fingerprint),
        }
    }
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_string(),
        source,
    })
}

fn first_cert(
    what: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| TlsError::Pem {
            what,
            path: path.to_string(),
            expected: "CERTIFICATE",
            problem: "no certificate block".into(),
        })?
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_string(),
            expected: "CERTIFICATE",
            problem: e.to_string(),
        })
}

/// Is `cert` (DER) valid for `name`? (Chain validation is rustls's job, done before this.)
fn valid_for(cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let ee =
        webpki::EndEntityCert::try_from(cert).map_err(|e| format!("not a certificate: {e}"))?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| e.to_string())
}

impl Security {
    /// Loads and checks node `node_id`'s files: the certificate must name `node-<id>.hearth`
    /// and the key must not be readable by others.
    pub fn load(node_id: u64, files: &TlsFiles) -> Result<Self, TlsError> {
        let ca_pem = read("CA certificate", &files.ca)?;
        first_cert("CA certificate", &files.ca, &ca_pem)?;
        let cert_pem = read("node certificate", &files.cert)?;
        let cert = first_cert("node certificate", &files.cert, &cert_pem)?;
        let name = node_name(node_id);
        valid_for(&cert, &name).map_err(|problem| TlsError::WrongNode {
            path: files.cert.clone(),
            node: node_id,
            name: name.clone(),
            problem,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key)
                .map_err(|source| TlsError::Read {
                    what: "private key",
                    path: files.key.clone(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(TlsError::KeyPermissions {
                    path: files.key.clone(),
                    mode: mode & 0o777,
                });
            }
        }
        let key_pem = read("private key", &files.key)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            path: files.key.clone(),
            expected: "PRIVATE KEY",
            problem: e.to_string(),
        })?;
        let fingerprint = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(cert.as_ref())[..8])
        };
        Ok(Security::Tls(Arc::new(TlsMaterialHandle(Material {
            node_id,
            ca_pem,
            cert_pem,
            key_pem,
            fingerprint,
        }))))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }

    /// A key that tells channels made with different identities apart in a cache.
    pub fn cache_key(&self) -> String {
        match self {
            Security::Insecure => "insecure".into(),
            Security::Tls(m) => m.0.fingerprint.clone(),
        }
    }

    /// The server side: this node's identity; client certificates optional (API clients use
    /// tokens) but, when presented, they must come from the cluster CA.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        match self {
            Security::Insecure => None,
            Security::Tls(m) => Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&m.0.cert_pem, &m.0.key_pem))
                    .client_ca_root(Certificate::from_pem(&m.0.ca_pem))
                    .client_auth_optional(true),
            ),
        }
    }

    /// The same server side as [`Security::server_config`], as a rustls configuration for an
    /// accept loop of our own (handshake deadline, connection cap): HTTP/2 only, client
    /// certificates optional but checked against the cluster CA when presented.
    pub fn rustls_server_config(&self) -> Option<Result<Arc<rustls::ServerConfig>, String>> {
        let Security::Tls(m) = self else {
            return None;
        };
        Some((|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&m.0.ca_pem) {
                let c = c.map_err(|e| format!("CA certificate: {e}"))?;
                roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&m.0.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("node certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&m.0.key_pem)
                .map_err(|e| format!("private key: {e}"))?;
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .map_err(|e| format!("node certificate and key: {e}"))?;
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(cfg))
        })())
    }

    /// The client side towards `peer` (`Some(id)`: that node exactly; `None`: any node of the
    /// cluster), presenting this node's certificate.
    pub fn client_config(&self, peer: Option<u64>) -> Option<ClientTlsConfig> {
        match self {
            Security::Insecure => None,
            Security::Tls(m) => Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&m.0.ca_pem))
                    .identity(Identity::from_pem(&m.0.cert_pem, &m.0.key_pem))
                    .domain_name(peer.map(node_name).unwrap_or_else(|| CLUSTER_NAME.into())),
            ),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Security::Insecure => "http",
            Security::Tls(_) => "https",
        }
    }
}

/// Checks that the client certificate of a Raft RPC proves the node id it claims. With TLS on,
/// rustls has already checked the chain against the cluster CA; this checks the identity.
pub fn check_peer_identity(
    security: &Security,
    certs: Option<&[CertificateDer<'static>]>,
    claimed: u64,
) -> Result<(), String> {
    if !security.is_tls() {
        return Ok(());
    }
    let Some(cert) = certs.and_then(|c| c.first()) else {
        return Err(format!(
            "a Raft RPC claiming to come from node {claimed} presented no client certificate: \
             only nodes with a certificate from this cluster's CA may take part"
        ));
    };
    let name = node_name(claimed);
    valid_for(cert, &name).map_err(|problem| {
        format!(
            "a Raft RPC claims to come from node {claimed}, but its certificate is not valid for \
             {name} ({problem}): refused"
        )
    })
}
