//! How a client command reaches nodes: the settings (CA, token) and the node it picked,
//! passed explicitly to every command — nothing process-global.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

/// How this client reaches nodes: the cluster CA (TLS) and its token.
#[derive(Clone, Default)]
pub struct ClientSettings {
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
}

impl ClientSettings {
    pub fn from_args(
        ca: Option<&std::path::Path>,
        token_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let ca_pem = match ca {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read the CA certificate {}", p.display()))?,
            ),
            None => None,
        };
        let token = match token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("HEARTH_TOKEN")
                .ok()
                .map(|t| t.trim().to_string()),
        };
        Ok(Self { ca_pem, token })
    }
}

/// A client: its settings, and which of several `--addr` nodes it picked (kept for the rest
/// of the command).
#[derive(Default)]
pub struct Client {
    settings: ClientSettings,
    picked: Mutex<Option<(String, String)>>,
}

/// Adds the client's token to every call.
#[derive(Clone)]
pub struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type ApiChannel = tonic::service::interceptor::InterceptedService<Channel, Credentials>;

/// How long a client waits to connect to a node (TCP and TLS), and for one answer.
/// `HEARTH_CONNECT_TIMEOUT_MS` and `HEARTH_TIMEOUT_MS` change them.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
const REQUEST_TIMEOUT_MS: u64 = 30_000;

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

fn writeln_err(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{args}")
}

/// Every client call has a deadline: connecting (TCP and the TLS handshake) within the
/// connect timeout, each answer within the request timeout (a stopped node, SIGSTOP, answers
/// nothing: the call ends with DEADLINE_EXCEEDED naming it). Streams (`--watch`) are kept by
/// HTTP/2 pings: a node that stops answering them is dropped within about 15 s.
fn client_endpoint(
    addr: &str,
    s: &ClientSettings,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let connect = env_ms("HEARTH_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS);
    let scheme = if s.ca_pem.is_some() { "https" } else { "http" };
    let mut e = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(connect)
        .timeout(env_ms("HEARTH_TIMEOUT_MS", REQUEST_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(ca) = &s.ca_pem {
        e = e.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name(hearth_node::pki::CLUSTER_NAME)
                // The handshake is part of connecting: a stopped node never finishes it.
                .timeout(connect),
        )?;
    }
    Ok(e)
}

impl Client {
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            settings,
            picked: Mutex::new(None),
        }
    }

    /// `--addr` / `HEARTH_ADDR` may list several nodes (`pi.local:7101,laptop.local:7101`):
    /// the client uses the first that accepts a connection, so a command still works while
    /// one node is down. The choice is kept for the rest of the command.
    pub fn pick_node(&self, addrs: &str) -> String {
        let list: Vec<&str> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if list.len() <= 1 {
            return list.first().copied().unwrap_or(addrs).to_string();
        }
        let mut g = self.picked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, to)) = &*g
            && from == addrs
        {
            return to.clone();
        }
        let connect = env_ms("HEARTH_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS);
        let reachable = list.iter().find(|a| {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs()
                .ok()
                .into_iter()
                .flatten()
                .any(|sa| std::net::TcpStream::connect_timeout(&sa, connect).is_ok())
        });
        let chosen = match reachable {
            Some(a) => {
                if *a != list[0] {
                    let _ = writeln_err(format_args!(
                        "note: {} does not answer; using {a}",
                        list[..list.iter().position(|x| x == a).unwrap_or(0)].join(", ")
                    ));
                }
                a.to_string()
            }
            None => list[0].to_string(),
        };
        *g = Some((addrs.to_string(), chosen.clone()));
        chosen
    }

    /// A channel to a node's public API: TLS against the cluster CA when one is set, with the
    /// token.
    pub fn channel(&self, addr: &str) -> anyhow::Result<ApiChannel> {
        let addr = &self.pick_node(addr);
        let s = &self.settings;
        let ch = client_endpoint(addr, s)
            .map(|e| e.connect_lazy())
            .with_context(|| format!("{addr:?} is not a valid node address"))?;
        if s.token.is_some() && s.ca_pem.is_none() {
            // Over plain text the token would cross the network readable by anyone (even to a
            // node that speaks TLS: the request headers leave before the node can refuse them).
            anyhow::bail!(
                "refusing to send a token in plain text: pass --ca pki/ca.pem (or set HEARTH_CA) \
                 so the node is reached over TLS"
            );
        }
        let header = match &s.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .context("the token holds characters a header cannot carry")?,
            ),
            None => None,
        };
        Ok(tonic::service::interceptor::InterceptedService::new(
            ch,
            Credentials(header),
        ))
    }

    /// A node's refusal or failure as an error naming the node, with a hint where one helps.
    pub fn rpc_err(&self, addr: &str, s: tonic::Status) -> anyhow::Error {
        let addr = &self.pick_node(addr);
        let hint = if self.settings.ca_pem.is_none() && s.message().contains("h2 protocol error") {
            " — the node probably speaks TLS: pass --ca pki/ca.pem or set HEARTH_CA"
        } else {
            ""
        };
        let hint = if s.code() == tonic::Code::DeadlineExceeded && hint.is_empty() {
            " — the node did not answer in time (stopped, or overloaded); HEARTH_TIMEOUT_MS sets the deadline"
        } else {
            hint
        };
        anyhow::anyhow!("node {addr}: {} ({:?}){hint}", s.message(), s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_never_sent_in_plain_text() {
        let c = Client::new(ClientSettings {
            ca_pem: None,
            token: Some("hth_secret".into()),
        });
        let e = c.channel("127.0.0.1:1").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("plain text")));
        assert!(Client::default().channel("127.0.0.1:1").is_ok());
        assert!(Client::default().channel("not an address\u{0}").is_err());
    }

    #[test]
    fn two_clients_keep_their_own_settings() {
        let plain = Client::default();
        let tls = Client::new(ClientSettings {
            ca_pem: Some(b"not a pem".to_vec()),
            token: None,
        });
        let s = tonic::Status::unavailable("h2 protocol error: x");
        assert!(
            plain
                .rpc_err("a:1", s.clone())
                .to_string()
                .contains("HEARTH_CA")
        );
        assert!(!tls.rpc_err("a:1", s).to_string().contains("HEARTH_CA"));
    }
}
