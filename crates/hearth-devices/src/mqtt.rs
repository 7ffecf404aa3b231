//! The MQTT adapter. A command is published (QoS 1) as JSON to `<topic>/command`; the device
//! (or its bridge) answers on `<topic>/ack` with the command's action id and fencing token and
//! its reply, flat (`hearth_core::device_protocol::Ack`, docs/INTENTS.md). The adapter subscribes to the
//! ack topic before publishing and takes as the answer only an ack naming its action id *and*
//! token; anything else on the topic is ignored, counted and logged.
//!
//! Who may publish on `<topic>/ack` is the broker's business: the hub logs in with a username
//! and password (and over TLS, optionally with a client certificate), so that the broker's
//! ACL can let only the device write its ack topic (docs/SECURITY.md).
//!
//! One short-lived connection per command: simple and robust for a household's command rate;
//! a pooled connection is a later optimisation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hearth_core::device_protocol::{
    Ack, AckVerdict, DeviceCommand, MAX_ACK_BYTES, Reply, judge_ack,
};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::AdapterError;
use crate::server::DeviceSim;

/// A password, never printed (Debug and Display say `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How this process reaches the household's MQTT broker.
#[derive(Clone)]
pub struct MqttBroker {
    /// `host:port`; with TLS the broker's certificate must be valid for `host`.
    pub addr: String,
    /// Username and password to log in with (the broker's ACL is written for this user).
    pub login: Option<(String, Secret)>,
    /// TLS to the broker (see [`tls_client_config`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Messages on an ack topic that were not the answer being waited for (another action id
    /// or token, unreadable, retained, a bad MAC): forged, stale or misdirected.
    pub ignored_acks: Arc<AtomicU64>,
    /// Keys shared with devices, by device id: such a device's acks must carry a valid MAC.
    pub ack_keys: Arc<BTreeMap<String, Secret>>,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("addr", &self.addr)
            .field("username", &self.login.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field("ack_keys", &self.ack_keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MqttBroker {
    /// An anonymous, plain-TCP broker (a lab setup; anyone on the LAN can then forge acks).
    pub fn plain(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            login: None,
            tls: None,
            ignored_acks: Arc::default(),
            ack_keys: Arc::default(),
        }
    }

    /// Devices whose acks must carry a MAC under their key.
    pub fn with_ack_keys(mut self, keys: BTreeMap<String, Secret>) -> Self {
        self.ack_keys = Arc::new(keys);
        self
    }

    pub fn with_login(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.login = Some((username.into(), password));
        self
    }

    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How many acks were ignored so far.
    pub fn ignored_acks(&self) -> u64 {
        self.ignored_acks.load(Ordering::Relaxed)
    }

    fn options(&self, prefix: &str) -> Result<MqttOptions, String> {
        let (host, port) = split_broker(&self.addr)?;
        let mut opts = MqttOptions::new(client_id(prefix), host, port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(MAX_ACK_BYTES + 1024, 64 * 1024);
        if let Some((user, password)) = &self.login {
            opts.set_credentials(user.clone(), password.expose().to_string());
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        Ok(opts)
    }
}

/// A rustls client configuration (ring provider) trusting the CA certificates in `ca_pem`,
/// with a client certificate and key (PEM) if given.
pub fn tls_client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| format!("CA file: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("CA file: a certificate rustls refuses: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA file holds no certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            if certs.is_empty() {
                return Err("client certificate file holds no certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key: {e}"))?
        }
    };
    Ok(Arc::new(cfg))
}

fn split_broker(broker: &str) -> Result<(String, u16), String> {
    let (h, p) = broker
        .rsplit_once(':')
        .ok_or_else(|| format!("mqtt broker {broker:?} is not host:port"))?;
    let port = p
        .parse()
        .map_err(|_| format!("mqtt broker {broker:?} has no valid port"))?;
    Ok((h.to_string(), port))
}

fn client_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn suback_refused(s: &rumqttc::SubAck) -> bool {
    s.return_codes
        .iter()
        .any(|c| matches!(c, SubscribeReasonCode::Failure))
}

/// Publishes `cmd` and waits for its ack (the caller bounds the wait).
pub async fn send(
    broker: &MqttBroker,
    topic: &str,
    cmd: &DeviceCommand,
) -> Result<Reply, AdapterError> {
    let dev = || cmd.device.clone();
    let opts = broker
        .options("hearth")
        .map_err(|e| AdapterError::Unreachable(dev(), e))?;
    let (client, mut events) = AsyncClient::new(opts, 10);
    let ack_topic = format!("{topic}/ack");
    client
        .subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), e.to_string()))?;
    let payload =
        serde_json::to_vec(cmd).map_err(|e| AdapterError::BadReply(dev(), e.to_string()))?;
    let mut published = false;
    // Summed up when this wait ends, also when the caller's timeout drops it.
    let mut ignored_here = IgnoredSummary {
        count: 0,
        topic: &ack_topic,
        action: &cmd.action_id,
    };
    let result = loop {
        let ev = match events.poll().await {
            Ok(ev) => ev,
            Err(e) => {
                break Err(AdapterError::Unreachable(
                    dev(),
                    format!("mqtt broker {}: {e}", broker.addr),
                ));
            }
        };
        match ev {
            Event::Incoming(Packet::SubAck(s)) if suback_refused(&s) => {
                break Err(AdapterError::Unreachable(
                    dev(),
                    format!(
                        "mqtt broker {} refused this hub's subscription to {ack_topic} (check its ACL)",
                        broker.addr
                    ),
                ));
            }
            Event::Incoming(Packet::SubAck(_)) if !published => {
                published = true;
                if let Err(e) = client
                    .publish(
                        format!("{topic}/command"),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                {
                    break Err(AdapterError::Unreachable(dev(), e.to_string()));
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == ack_topic => {
                let key = broker
                    .ack_keys
                    .get(&cmd.device)
                    .map(|k| k.expose().as_bytes());
                match judge_ack(cmd, &p.payload, p.retain, key) {
                    AckVerdict::Ours(reply) => break Ok(reply),
                    AckVerdict::Ignored(why) => {
                        broker.ignored_acks.fetch_add(1, Ordering::Relaxed);
                        ignored_here.count += 1;
                        // A flood must not fill the disk with log lines: the first few, then
                        // one summary when the wait ends.
                        if ignored_here.count <= LOGGED_PER_COMMAND {
                            tracing::warn!(
                                topic = %p.topic,
                                action = %cmd.action_id,
                                %why,
                                "ignoring a message on the ack topic: not the answer to this command (forged, stale or misdirected)"
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    };
    drop(ignored_here);
    let _ = client.disconnect().await;
    result
}

/// Ignored acks logged one by one per command; more are summed up.
const LOGGED_PER_COMMAND: u64 = 3;

struct IgnoredSummary<'a> {
    count: u64,
    topic: &'a str,
    action: &'a str,
}

impl Drop for IgnoredSummary<'_> {
    fn drop(&mut self) {
        if self.count > LOGGED_PER_COMMAND {
            tracing::warn!(
                topic = %self.topic,
                action = %self.action,
                ignored = self.count,
                "ignored this many messages on the ack topic while waiting for one answer"
            );
        }
    }
}

/// Serves a simulated device over MQTT until the task is aborted: reads `<topic>/command`,
/// answers on `<topic>/ack` in the documented format. Reconnects after broker errors.
pub async fn serve_device(broker: MqttBroker, topic: String, sim: DeviceSim) {
    serve_device_keyed(broker, topic, sim, None).await
}

/// [`serve_device`] for a device sharing `key` with the hubs: its acks carry a MAC.
pub async fn serve_device_keyed(
    broker: MqttBroker,
    topic: String,
    sim: DeviceSim,
    key: Option<Secret>,
) {
    let opts = match broker.options("hearth-device-sim") {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "invalid mqtt broker address");
            return;
        }
    };
    let (client, mut events) = AsyncClient::new(opts, 64);
    let cmd_topic = format!("{topic}/command");
    let ack_topic = format!("{topic}/ack");
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(e) = client.subscribe(&cmd_topic, QoS::AtLeastOnce).await {
                    tracing::error!(error = %e, "device-sim cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                let Ok(cmd) = serde_json::from_slice::<DeviceCommand>(&p.payload) else {
                    tracing::warn!("device-sim ignores an unreadable command");
                    continue;
                };
                let reply = sim.receive(cmd.clone());
                let ack = Ack::answer(&cmd, reply, key.as_ref().map(|k| k.expose().as_bytes()));
                if let Ok(bytes) = serde_json::to_vec(&ack)
                    && let Err(e) = client
                        .publish(&ack_topic, QoS::AtLeastOnce, false, bytes)
                        .await
                {
                    tracing::error!(error = %e, "device-sim cannot publish an ack");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "device-sim lost the broker; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
