//! The node configuration file (TOML), with a clear error for every invalid field.
//!
//! ```toml
//! node_id = 1
//! role = "hub"              # hub | witness
//! listen = "0.0.0.0:7101"   # gRPC: Raft transport and public API
//! advertise = "pi.local:7101"  # optional: the address peers use (default: listen)
//! metrics_listen = "0.0.0.0:9101"  # optional: Prometheus GET /metrics
//! mqtt_broker = "127.0.0.1:1883"   # optional, for mqtt devices: anonymous (insecure only) …
//! data_dir = "/var/lib/hearth"
//! bootstrap = true          # exactly one hub: forms the cluster once
//!
//! [tls]                     # node-to-node mTLS and TLS for clients (`hearth init-pki`)
//! ca = "pki/ca.pem"         # relative paths are relative to this file
//! cert = "pki/node-1.pem"
//! key = "pki/node-1.key"    # mode 0600
//!
//! [auth]
//! tokens_file = "pki/tokens.toml"  # client tokens, stored hashed (`hearth token add`)
//!
//! [http]                    # optional: DoSync's REST API v1 (docs/REST.md)
//! listen = "0.0.0.0:47200"  # on the LAN: TLS with this node's certificate
//! loopback = "127.0.0.1:47200"  # plain HTTP for clients on this host (tokens still required)
//!
//! # insecure = true         # instead of [tls] and [auth]: plain text, no client tokens
//!
//! [[peers]]
//! id = 2
//! addr = "laptop.local:7101"
//! role = "hub"
//!
//! [[peers]]
//! id = 3
//! addr = "witness.local:7101"
//! role = "witness"
//!
//! [mqtt_broker]             # … or logged in, so the broker's ACL decides who may answer
//! addr = "broker.local:8883"
//! username = "hearth-hub-1"
//! password_file = "secrets/mqtt-password"   # mode 0600; the first line is the password
//! ca = "pki/mqtt-ca.pem"    # TLS; needed unless the broker is on this machine (loopback)
//! client_cert = "pki/mqtt-hub-1.pem"        # optional, with client_key
//! client_key = "pki/mqtt-hub-1.key"
//! ack_keys_dir = "secrets/ack-keys"         # optional: <device id>.key files (0600): MAC'd acks
//!
//! [assist]                  # two hubs without a witness (docs/topologies/two-hubs.md)
//! targets = ["192.168.1.1:80"]  # independent targets a hub probes (TCP connect)
//! down_after_ms = 10000     # peer silent this long and a target answers: PEER_DOWN
//!
//! [checkpoint]              # optional: signed checkpoints of the chain (docs/OPERATIONS.md)
//! every_entries = 1000      # a hub signs after this many new entries (0: never by count)
//! every_secs = 600          # … or when this much time passed and the head advanced (0: never)
//!
//! [limits]                  # optional: what an unauthenticated host may hold open
//! max_connections = 512     # at the cap the quietest connection is closed for a new one
//! handshake_timeout_ms = 5000
//! idle_timeout_ms = 60000   # nothing moved either way this long: closed
//! emergency_max = 30        # emergency intents per source per window (they pass policies'
//! emergency_window_secs = 60  # rate limits, not this; at most 3600 s)
//!
//! [timing]                  # optional; defaults suit home Wi-Fi (see hearth_cluster::settings)
//! heartbeat_ms = 150
//! election_min_ms = 1000
//! election_max_ms = 2000
//! caretaker_patience_ms = 3000
//! write_timeout_ms = 5000
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hearth_cluster::settings::Timing;
use serde::{Deserialize, Serialize};

mod builder;
pub use builder::{NodeConfigBuilder, local_cluster};

/// Serialising writes only what differs from the defaults (`NodeConfig::to_toml`): a section
/// or a field left at its default is not written, so a file reads as what was chosen, and a
/// binary older than a section it does not set still reads it.
fn at_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `at_X(v)`: `v` is what `d_X()` gives (a field's default, for `skip_serializing_if`).
macro_rules! at_defaults {
    ($($at:ident: $t:ty = $d:ident;)*) => {
        $(fn $at(v: &$t) -> bool { *v == $d() })*
    };
}

at_defaults! {
    at_heartbeat: u64 = d_heartbeat;
    at_emin: u64 = d_emin;
    at_emax: u64 = d_emax;
    at_patience: u64 = d_patience;
    at_write_timeout: u64 = d_write_timeout;
    at_max_connections: usize = d_max_connections;
    at_handshake_ms: u64 = d_handshake_ms;
    at_idle_ms: u64 = d_idle_ms;
    at_emergency_max: u32 = d_emergency_max;
    at_emergency_window: u32 = d_emergency_window;
    at_every_entries: u64 = d_every_entries;
    at_every_secs: u64 = d_every_secs;
    at_down_after: u64 = d_down_after;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Hub,
    Witness,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Witness => "witness",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    #[serde(default = "d_heartbeat", skip_serializing_if = "at_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "d_emin", skip_serializing_if = "at_emin")]
    pub election_min_ms: u64,
    #[serde(default = "d_emax", skip_serializing_if = "at_emax")]
    pub election_max_ms: u64,
    /// How long the witness caretaker waits before a second attempt (a campaign or a
    /// hand-over that did not take). It acts first as soon as a hub that cannot win asks for
    /// its vote after the leader was silent for `election_min_ms`.
    #[serde(default = "d_patience", skip_serializing_if = "at_patience")]
    pub caretaker_patience_ms: u64,
    /// How long a write may wait for a quorum before the client gets `NO_QUORUM`.
    #[serde(default = "d_write_timeout", skip_serializing_if = "at_write_timeout")]
    pub write_timeout_ms: u64,
}

fn d_heartbeat() -> u64 {
    Timing::default().heartbeat_ms
}
fn d_emin() -> u64 {
    Timing::default().election_min_ms
}
fn d_emax() -> u64 {
    Timing::default().election_max_ms
}
fn d_patience() -> u64 {
    Timing::default().caretaker_patience_ms
}
fn d_write_timeout() -> u64 {
    5000
}

impl Default for TimingConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: d_heartbeat(),
            election_min_ms: d_emin(),
            election_max_ms: d_emax(),
            caretaker_patience_ms: d_patience(),
            write_timeout_ms: d_write_timeout(),
        }
    }
}

impl TimingConfig {
    pub fn raft(&self) -> Timing {
        Timing {
            heartbeat_ms: self.heartbeat_ms,
            election_min_ms: self.election_min_ms,
            election_max_ms: self.election_max_ms,
            caretaker_patience_ms: self.caretaker_patience_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u64,
    pub role: Role,
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The household's MQTT broker, for devices with the `mqtt` adapter.
    #[serde(
        default,
        deserialize_with = "de_mqtt_broker",
        skip_serializing_if = "Option::is_none"
    )]
    pub mqtt_broker: Option<MqttBrokerSettings>,
    /// Optional `IP:port` for the Prometheus `GET /metrics` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    #[serde(default, skip_serializing_if = "at_default")]
    pub timing: TimingConfig,
    #[serde(default, skip_serializing_if = "at_default")]
    pub assist: AssistSettings,
    #[serde(default, skip_serializing_if = "at_default")]
    pub checkpoint: CheckpointSettings,
    /// Plain-text transport and no client authentication. Must be asked for; every start
    /// logs a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSettings>,
    #[serde(default, skip_serializing_if = "at_default")]
    pub limits: LimitsSettings,
    /// The HTTP face: DoSync's REST API v1 (docs/REST.md). Off unless an address is given.
    #[serde(default, skip_serializing_if = "at_default")]
    pub http: HttpSettings,
}

/// Where a node serves HTTP (DoSync's REST API v1, docs/REST.md). Tokens are required on
/// both addresses whenever the node has client authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `IP:port` on the LAN: TLS with the node's own certificate (plain text only with
    /// `insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A loopback `IP:port` served in plain HTTP, for DoSync clients on this host (they speak
    /// plain HTTP to 127.0.0.1). Refused unless the address is a loopback one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback: Option<String>,
}

impl HttpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.listen {
            a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "http.listen",
                    format!("{a:?} is not an IP:port to bind (for example \"0.0.0.0:47200\")"),
                )
            })?;
        }
        if let Some(a) = &self.loopback {
            match a.parse::<SocketAddr>() {
                Ok(s) if s.ip().is_loopback() => {}
                Ok(_) => {
                    return Err(invalid(
                        "http.loopback",
                        format!(
                            "{a:?} is not a loopback address: plain HTTP is served only on \
                             127.0.0.1 or ::1 (use http.listen for the LAN, with TLS)"
                        ),
                    ));
                }
                Err(_) => {
                    return Err(invalid(
                        "http.loopback",
                        format!("{a:?} is not an IP:port (for example \"127.0.0.1:47200\")"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What one host on the LAN may cost a node before it proved anything (docs/SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Open connections at most (kept below the open-files limit, read at start); at the cap
    /// the connection quiet longest is closed to make room.
    #[serde(
        default = "d_max_connections",
        skip_serializing_if = "at_max_connections"
    )]
    pub max_connections: usize,
    /// A TLS handshake must finish within this.
    #[serde(default = "d_handshake_ms", skip_serializing_if = "at_handshake_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection on which nothing moved for this long is closed.
    #[serde(default = "d_idle_ms", skip_serializing_if = "at_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Emergency intents one source may send within `emergency_window_secs` (emergencies pass
    /// the household's rate-limit policies; this bound is separate, high, and written into
    /// each intent's entry by the leader).
    #[serde(default = "d_emergency_max", skip_serializing_if = "at_emergency_max")]
    pub emergency_max: u32,
    #[serde(
        default = "d_emergency_window",
        skip_serializing_if = "at_emergency_window"
    )]
    pub emergency_window_secs: u32,
}

impl LimitsSettings {
    pub fn emergency_limit(&self) -> hearth_core::policy::EmergencyLimit {
        hearth_core::policy::EmergencyLimit {
            max: self.emergency_max,
            window_secs: self.emergency_window_secs,
        }
    }
}

fn d_emergency_max() -> u32 {
    hearth_core::policy::DEFAULT_EMERGENCY_LIMIT.max
}
fn d_emergency_window() -> u32 {
    hearth_core::policy::DEFAULT_EMERGENCY_LIMIT.window_secs
}

fn d_max_connections() -> usize {
    512
}
fn d_handshake_ms() -> u64 {
    5_000
}
fn d_idle_ms() -> u64 {
    60_000
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_connections: d_max_connections(),
            handshake_timeout_ms: d_handshake_ms(),
            idle_timeout_ms: d_idle_ms(),
            emergency_max: d_emergency_max(),
            emergency_window_secs: d_emergency_window(),
        }
    }
}

/// How a hub reaches the household's MQTT broker: `mqtt_broker = "host:port"` (anonymous,
/// plain TCP: accepted only with `insecure = true`) or a table. The password is read from
/// `password_file` when the node starts; it is never in this struct, a log or the chain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBrokerSettings {
    /// `host:port`; with TLS the broker's certificate must be valid for `host`.
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The CA that signed the broker's certificate: TLS to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Keys shared with devices: a directory of `<device id>.key` files (mode 0600, the
    /// first line is the key, at least 16 characters). Such a device's acks must carry a
    /// valid MAC (docs/INTENTS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_keys_dir: Option<PathBuf>,
}

impl MqttBrokerSettings {
    /// An anonymous plain-TCP broker (lab setups, `insecure = true`).
    pub fn plain(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            username: None,
            password_file: None,
            ca: None,
            client_cert: None,
            client_key: None,
            ack_keys_dir: None,
        }
    }

    fn is_loopback(&self) -> bool {
        let host = self
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.addr);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn validate(&self, insecure: bool) -> Result<(), ConfigError> {
        check_addr("mqtt_broker.addr", &self.addr)?;
        match (&self.username, &self.password_file) {
            (Some(u), Some(_)) if u.is_empty() || u.chars().any(char::is_control) => {
                return Err(invalid("mqtt_broker.username", "must be a non-empty name"));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "mqtt_broker.password_file",
                    "missing: username needs a password_file (the password is never written in this file)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt_broker.username",
                    "missing: password_file needs a username",
                ));
            }
            _ => {}
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "mqtt_broker.client_key",
                    "missing: client_cert needs it",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "mqtt_broker.client_cert",
                    "missing: client_key needs it",
                ));
            }
            (Some(_), Some(_)) if self.ca.is_none() => {
                return Err(invalid(
                    "mqtt_broker.ca",
                    "missing: a client certificate is only sent over TLS; name the broker's CA",
                ));
            }
            _ => {}
        }
        if insecure {
            return Ok(());
        }
        if self.username.is_none() && self.client_cert.is_none() {
            return Err(invalid(
                "mqtt_broker",
                "the hub must log in to the broker (username and password_file, or \
                 client_cert/client_key): on an anonymous broker any host on the LAN can \
                 publish a device's ack and make Hearth record an action that never happened \
                 (docs/SECURITY.md: broker ACLs); or set insecure = true for a lab setup",
            ));
        }
        if self.ca.is_none() && !self.is_loopback() {
            return Err(invalid(
                "mqtt_broker.ca",
                format!(
                    "missing: the broker {} is not on this machine, so the hub talks to it \
                     over TLS (name the CA of the broker's certificate); a password sent in \
                     plain text on the LAN lets anyone who hears it answer for the devices",
                    self.addr
                ),
            ));
        }
        Ok(())
    }

    /// Reads the password, CA and client certificate, and the device keys: the broker as the
    /// device adapter uses it. Secret files must not be readable by group or others.
    pub fn load(&self) -> Result<hearth_devices::mqtt::MqttBroker, ConfigError> {
        let read = |field: &str, p: &Path| {
            std::fs::read(p).map_err(|e| invalid(field, format!("{}: {e}", p.display())))
        };
        let mut b = hearth_devices::mqtt::MqttBroker::plain(self.addr.clone());
        if let (Some(user), Some(pf)) = (&self.username, &self.password_file) {
            let password = read_secret("mqtt_broker.password_file", pf, 1)?;
            b = b.with_login(user.clone(), password);
        }
        if let Some(dir) = &self.ack_keys_dir {
            let field = "mqtt_broker.ack_keys_dir";
            let mut keys = std::collections::BTreeMap::new();
            let entries = std::fs::read_dir(dir)
                .map_err(|e| invalid(field, format!("{}: {e}", dir.display())))?;
            for e in entries {
                let e = e.map_err(|e| invalid(field, format!("{}: {e}", dir.display())))?;
                let name = e.file_name().to_string_lossy().to_string();
                let Some(device) = name.strip_suffix(".key") else {
                    continue;
                };
                hearth_core::intent::check_id(field, device)
                    .map_err(|_| invalid(field, format!("{name}: not <device id>.key")))?;
                keys.insert(device.to_string(), read_secret(field, &e.path(), 16)?);
            }
            b = b.with_ack_keys(keys);
        }
        if let Some(ca) = &self.ca {
            let ca_pem = read("mqtt_broker.ca", ca)?;
            let client = match (&self.client_cert, &self.client_key) {
                (Some(c), Some(k)) => Some((
                    read("mqtt_broker.client_cert", c)?,
                    read("mqtt_broker.client_key", k)?,
                )),
                _ => None,
            };
            let tls = hearth_devices::mqtt::tls_client_config(
                &ca_pem,
                client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )
            .map_err(|e| invalid("mqtt_broker", e))?;
            b = b.with_tls(tls);
        }
        Ok(b)
    }
}

impl<'de> Deserialize<'de> for MqttBrokerSettingsOrAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MqttBrokerSettingsOrAddr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "\"host:port\" or a table with addr, username, password_file, ca, \
                     client_cert, client_key",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MqttBrokerSettingsOrAddr(MqttBrokerSettings::plain(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                MqttBrokerSettings::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(MqttBrokerSettingsOrAddr)
            }
        }
        d.deserialize_any(V)
    }
}

/// `mqtt_broker` as written: a string or a table.
struct MqttBrokerSettingsOrAddr(MqttBrokerSettings);

fn de_mqtt_broker<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<MqttBrokerSettings>, D::Error> {
    Ok(Some(MqttBrokerSettingsOrAddr::deserialize(d)?.0))
}

/// The first line of a secret file that only its owner may read, at least `min` characters.
fn read_secret(
    field: &str,
    path: &Path,
    min: usize,
) -> Result<hearth_devices::mqtt::Secret, ConfigError> {
    let at = |e: String| invalid(field, format!("{}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| at(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(at(format!(
                "readable by other users (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    let text = String::from_utf8(text).map_err(|_| at("not UTF-8".into()))?;
    let secret = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if secret.is_empty() {
        return Err(at("the first line (the secret) is empty".into()));
    }
    if secret.chars().count() < min {
        return Err(at(format!("the secret is shorter than {min} characters")));
    }
    Ok(hearth_devices::mqtt::Secret::new(secret))
}

/// The PEM files `hearth init-pki` wrote for this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Client authentication: who may call which service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The hashed client tokens (see `hearth_node::auth` for the format).
    pub tokens_file: PathBuf,
}

/// When a hub signs a checkpoint of its chain on its own (it also signs on demand): when
/// either threshold is reached and its applied head advanced since the last checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// New applied entries since the last checkpoint (0: never by count).
    #[serde(default = "d_every_entries", skip_serializing_if = "at_every_entries")]
    pub every_entries: u64,
    /// Seconds since the last checkpoint (0: never by time).
    #[serde(default = "d_every_secs", skip_serializing_if = "at_every_secs")]
    pub every_secs: u64,
}

fn d_every_entries() -> u64 {
    1000
}
fn d_every_secs() -> u64 {
    600
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            every_entries: d_every_entries(),
            every_secs: d_every_secs(),
        }
    }
}

/// Assisted failover of two hubs without a witness: what the survivor probes before it
/// proposes a promotion to a person (it never promotes itself).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssistSettings {
    /// `host:port` of independent targets (the LAN gateway's web page, say), probed by a TCP
    /// connect: reaching one while the peer is silent means the peer, not this hub, is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// How long the peer must be silent, with a target answering, before `PEER_DOWN`.
    #[serde(default = "d_down_after", skip_serializing_if = "at_down_after")]
    pub down_after_ms: u64,
}

fn d_down_after() -> u64 {
    10_000
}

impl Default for AssistSettings {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            down_after_ms: d_down_after(),
        }
    }
}

/// Largest timing setting accepted (ms).
pub const MAX_TIMING_MS: u64 = 3_600_000;

/// A configuration problem, naming the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("the config of node {node_id} cannot be written as TOML: {message}")]
    Serialize { node_id: u64, message: String },
    #[error("cannot write config file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

pub(crate) fn check_addr(field: &str, addr: &str) -> Result<(), ConfigError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(invalid(
            field,
            format!("{addr:?} is not host:port (for example \"192.168.1.20:7101\")"),
        ));
    };
    if host.is_empty() {
        return Err(invalid(field, format!("{addr:?} has no host part")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid(
            field,
            format!("{addr:?} has no valid port (1-65535)"),
        )),
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        if let Some(base) = path.parent() {
            cfg.resolve_relative_to(base);
        }
        Ok(cfg)
    }

    /// Makes the TLS and token file paths relative to `base` (the config file's directory).
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.tls {
            fix(&mut t.ca);
            fix(&mut t.cert);
            fix(&mut t.key);
        }
        if let Some(a) = &mut self.auth {
            fix(&mut a.tokens_file);
        }
        if let Some(m) = &mut self.mqtt_broker {
            for p in [
                &mut m.password_file,
                &mut m.ca,
                &mut m.client_cert,
                &mut m.client_key,
                &mut m.ack_keys_dir,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
    }

    /// The transport security this configuration asks for, with its files loaded and checked.
    pub fn security(&self) -> Result<hearth_cluster::tls::Security, ConfigError> {
        match &self.tls {
            None => Ok(hearth_cluster::tls::Security::Insecure),
            Some(t) => hearth_cluster::tls::Security::load(
                self.node_id,
                &hearth_cluster::tls::TlsFiles {
                    ca: t.ca.display().to_string(),
                    cert: t.cert.display().to_string(),
                    key: t.key.display().to_string(),
                },
            )
            .map_err(|e| invalid("tls", e.to_string())),
        }
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The address peers reach this node at.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid(
                "node_id",
                "0 is reserved; use 1, 2, 3, … and never reuse an id",
            ));
        }
        self.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen",
                format!(
                    "{:?} is not an IP:port to bind (for example \"0.0.0.0:7101\")",
                    self.listen
                ),
            )
        })?;
        if let Some(a) = &self.advertise {
            check_addr("advertise", a)?;
        }
        if let Some(b) = &self.mqtt_broker {
            b.validate(self.insecure)?;
        }
        if let Some(m) = &self.metrics_listen {
            m.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("{m:?} is not an IP:port to bind (for example \"0.0.0.0:9101\")"),
                )
            })?;
        }
        self.http.validate()?;
        if self.limits.max_connections < 4 {
            return Err(invalid(
                "limits.max_connections",
                "at least 4 (peers and a client need room)",
            ));
        }
        for (f, v) in [
            (
                "limits.handshake_timeout_ms",
                self.limits.handshake_timeout_ms,
            ),
            ("limits.idle_timeout_ms", self.limits.idle_timeout_ms),
        ] {
            if !(100..=MAX_TIMING_MS).contains(&v) {
                return Err(invalid(
                    f,
                    format!("{v} is outside 100..={MAX_TIMING_MS} ms"),
                ));
            }
        }
        self.limits.emergency_limit().validate().map_err(|e| {
            invalid(
                "limits.emergency_max / limits.emergency_window_secs",
                e.to_string(),
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must name a directory"));
        }
        if self.bootstrap && self.role == Role::Witness {
            return Err(invalid(
                "bootstrap",
                "a witness never forms the cluster; set bootstrap = true on exactly one hub",
            ));
        }
        let mut ids = BTreeSet::from([self.node_id]);
        for (i, p) in self.peers.iter().enumerate() {
            let f = format!("peers[{i}]");
            if p.id == 0 {
                return Err(invalid(format!("{f}.id"), "0 is reserved"));
            }
            if !ids.insert(p.id) {
                return Err(invalid(
                    format!("{f}.id"),
                    format!(
                        "node id {} appears twice (this node or another peer has it)",
                        p.id
                    ),
                ));
            }
            check_addr(&format!("{f}.addr"), &p.addr)?;
        }
        let hubs = self.members().filter(|(_, _, r)| *r == Role::Hub).count();
        if hubs == 0 {
            return Err(invalid("peers", "a cluster needs at least one hub"));
        }
        if self.role == Role::Witness && self.peers.is_empty() {
            return Err(invalid(
                "peers",
                "a witness alone has nothing to witness; list the hubs",
            ));
        }
        for (i, t) in self.assist.targets.iter().enumerate() {
            check_addr(&format!("assist.targets[{i}]"), t)?;
        }
        match (self.insecure, self.tls.is_some(), self.auth.is_some()) {
            (true, false, false) | (false, true, true) => {}
            (true, _, _) => {
                return Err(invalid(
                    "insecure",
                    "insecure = true turns TLS and client tokens off; remove it or remove [tls] and [auth]",
                ));
            }
            (false, false, _) => {
                return Err(invalid(
                    "tls",
                    "missing: nodes talk over mutual TLS (run `hearth init-pki` and add [tls] \
                     ca/cert/key), or set insecure = true for a plain-text lab setup",
                ));
            }
            (false, true, false) => {
                return Err(invalid(
                    "auth",
                    "missing: clients need tokens (add [auth] tokens_file; `hearth init-pki` \
                     writes one), or set insecure = true for a lab setup",
                ));
            }
        }
        let t = &self.timing;
        // Bounded, so that no arithmetic on them can overflow (`election_max_ms * 2` on stop).
        for (field, v) in [
            ("timing.heartbeat_ms", t.heartbeat_ms),
            ("timing.election_min_ms", t.election_min_ms),
            ("timing.election_max_ms", t.election_max_ms),
            ("timing.caretaker_patience_ms", t.caretaker_patience_ms),
            ("timing.write_timeout_ms", t.write_timeout_ms),
            ("assist.down_after_ms", self.assist.down_after_ms),
        ] {
            if v > MAX_TIMING_MS {
                return Err(invalid(
                    field,
                    format!("{v} ms; at most {MAX_TIMING_MS} (one hour)"),
                ));
            }
        }
        if self.assist.down_after_ms <= t.election_max_ms {
            return Err(invalid(
                "assist.down_after_ms",
                format!(
                    "must exceed timing.election_max_ms ({}): a peer is suspect first",
                    t.election_max_ms
                ),
            ));
        }
        if t.heartbeat_ms == 0 {
            return Err(invalid("timing.heartbeat_ms", "must be > 0"));
        }
        if t.election_min_ms <= t.heartbeat_ms {
            return Err(invalid(
                "timing.election_min_ms",
                format!("must exceed heartbeat_ms ({})", t.heartbeat_ms),
            ));
        }
        if t.election_max_ms <= t.election_min_ms {
            return Err(invalid(
                "timing.election_max_ms",
                format!("must exceed election_min_ms ({})", t.election_min_ms),
            ));
        }
        if t.write_timeout_ms < t.election_max_ms {
            return Err(invalid(
                "timing.write_timeout_ms",
                format!("must be at least election_max_ms ({})", t.election_max_ms),
            ));
        }
        if t.caretaker_patience_ms < t.election_max_ms {
            return Err(invalid(
                "timing.caretaker_patience_ms",
                format!(
                    "must be at least election_max_ms ({}) so a campaign or hand-over can finish before the next attempt",
                    t.election_max_ms
                ),
            ));
        }
        Ok(())
    }

    /// Every member of the cluster, this node included: (id, address, role).
    pub fn members(&self) -> impl Iterator<Item = (u64, String, Role)> + '_ {
        std::iter::once((self.node_id, self.advertised().to_string(), self.role))
            .chain(self.peers.iter().map(|p| (p.id, p.addr.clone(), p.role)))
    }
}

/// `hearth serve --check-config FILE`: everything a start would refuse, found without
/// starting: the file parses and validates, the TLS files exist, load and are this node's,
/// the private key and tokens file are safe, the tokens file loads, and a data directory
/// that exists is readable by its owner only. Returns the problems (empty: all good).
pub fn check_config_file(path: &Path) -> Vec<String> {
    let cfg = match NodeConfig::load(path) {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if let Err(e) = cfg.security() {
        problems.push(e.to_string());
    }
    if let Some(t) = &cfg.tls {
        for (what, p) in [
            ("tls.ca", &t.ca),
            ("tls.cert", &t.cert),
            ("tls.key", &t.key),
        ] {
            if let Some(m) = writable_by_others(p) {
                problems.push(format!(
                    "{what} {} is writable by other users (mode {m:o}): chmod go-w {0}",
                    p.display()
                ));
            }
        }
    }
    if let Some(a) = &cfg.auth {
        if let Err(e) = crate::auth::TokensFile::load(&a.tokens_file) {
            problems.push(format!("auth.tokens_file: {e}"));
        }
        if let Some(m) = writable_by_others(&a.tokens_file) {
            problems.push(format!(
                "auth.tokens_file {} is writable by other users (mode {m:o}): anyone could add a \
                 token; chmod go-w {0}",
                a.tokens_file.display()
            ));
        }
    }
    if let Some(m) = writable_by_others(path) {
        problems.push(format!(
            "the config file {} is writable by other users (mode {m:o}): chmod go-w {0}",
            path.display()
        ));
    }
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(&cfg.data_dir) {
        use std::os::unix::fs::PermissionsExt;
        let m = meta.permissions().mode() & 0o777;
        if !meta.is_dir() {
            problems.push(format!(
                "data_dir {} exists and is not a directory",
                cfg.data_dir.display()
            ));
        } else if m & 0o077 != 0 {
            problems.push(format!(
                "data_dir {} is readable by other users (mode {m:o}): the node makes it 0700 at \
                 start; chmod 700 {0} to be sure",
                cfg.data_dir.display()
            ));
        }
    }
    problems
}

fn writable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (m & 0o022 != 0).then_some(m)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
role = "hub"
listen = "127.0.0.1:7101"
data_dir = "/tmp/x"
bootstrap = true
insecure = true
[[peers]]
id = 2
addr = "127.0.0.1:7102"
role = "hub"
[[peers]]
id = 3
addr = "127.0.0.1:7103"
role = "witness"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.members().count(), 3);
        assert_eq!(c.timing, TimingConfig::default());
        assert_eq!(c.checkpoint, CheckpointSettings::default());
        assert_eq!(
            (c.checkpoint.every_entries, c.checkpoint.every_secs),
            (1000, 600)
        );
        let c = NodeConfig::parse(&format!("{GOOD}\n[checkpoint]\nevery_secs = 0\n")).unwrap();
        assert_eq!(
            (c.checkpoint.every_entries, c.checkpoint.every_secs),
            (1000, 0)
        );
        assert!(err_of(&format!("{GOOD}\n[checkpoint]\nevery = 1\n")).contains("every"));
    }

    fn err_of(text: &str) -> String {
        NodeConfig::parse(text).unwrap_err().to_string()
    }

    /// GOOD as a secure node (TLS and tokens), with `extra` appended.
    fn secure(extra: &str) -> String {
        format!(
            "{}\n[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n[auth]\ntokens_file = \"t.toml\"\n{extra}",
            GOOD.replace("insecure = true\n", "")
        )
    }

    #[test]
    fn mqtt_broker_is_an_address_or_a_logged_in_table() {
        // The plain string form: anonymous, so only for insecure setups.
        let lab = GOOD.replace(
            "bootstrap = true",
            "bootstrap = true\nmqtt_broker = \"10.0.0.2:1883\"",
        );
        let c = NodeConfig::parse(&lab).unwrap();
        assert_eq!(
            c.mqtt_broker,
            Some(MqttBrokerSettings::plain("10.0.0.2:1883"))
        );
        let e = err_of(&GOOD.replace(
            "bootstrap = true",
            "bootstrap = true\nmqtt_broker = \"nowhere\"",
        ));
        assert!(e.contains("mqtt_broker.addr"), "{e}");
        // A secure node: the string form is refused (an anonymous broker lets any LAN host
        // answer for a device), and so is a login without TLS to a broker on another host.
        let top =
            |t: &str| secure("").replacen("bootstrap = true", &format!("bootstrap = true\n{t}"), 1);
        let e = err_of(&top("mqtt_broker = \"10.0.0.2:1883\""));
        assert!(e.contains("`mqtt_broker`") && e.contains("ack"), "{e}");
        let login =
            "[mqtt_broker]\naddr = \"10.0.0.2:8883\"\nusername = \"hub\"\npassword_file = \"pw\"\n";
        let e = err_of(&secure(login));
        assert!(e.contains("mqtt_broker.ca"), "{e}");
        let c = NodeConfig::parse(&secure(&format!("{login}ca = \"mqtt-ca.pem\"\n"))).unwrap();
        let m = c.mqtt_broker.unwrap();
        assert_eq!((m.username.as_deref(), m.ca.is_some()), (Some("hub"), true));
        // On this machine, a login without TLS is enough.
        NodeConfig::parse(&secure(&login.replace("10.0.0.2:8883", "127.0.0.1:1883"))).unwrap();
        for (table, field) in [
            (
                "addr = \"h:1\"\nusername = \"hub\"\nca = \"c\"",
                "mqtt_broker.password_file",
            ),
            (
                "addr = \"h:1\"\npassword_file = \"p\"\nca = \"c\"",
                "mqtt_broker.username",
            ),
            (
                "addr = \"h:1\"\nclient_cert = \"c\"",
                "mqtt_broker.client_key",
            ),
            (
                "addr = \"h:1\"\nclient_key = \"k\"",
                "mqtt_broker.client_cert",
            ),
            (
                "addr = \"h:1\"\nclient_cert = \"c\"\nclient_key = \"k\"",
                "mqtt_broker.ca",
            ),
            ("addr = \"h:1\"\npassword = \"in-the-file\"", "password"),
            ("username = \"hub\"", "addr"),
        ] {
            let e = err_of(&secure(&format!("[mqtt_broker]\n{table}\n")));
            assert!(e.contains(field), "{table}: {e}");
        }
    }

    #[test]
    fn the_mqtt_password_comes_from_a_private_file_and_is_never_printed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\nignored\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut m = MqttBrokerSettings::plain("127.0.0.1:1883");
        m.username = Some("hub".into());
        m.password_file = Some(pw.clone());
        let e = m.load().unwrap_err().to_string();
        assert!(
            e.contains("mqtt_broker.password_file") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let b = m.load().unwrap();
        assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
        assert!(!format!("{m:?}").contains("s3cret"));
        std::fs::write(&pw, "\n").unwrap();
        assert!(m.load().unwrap_err().to_string().contains("empty"));
        m.password_file = Some(dir.path().join("missing"));
        assert!(
            m.load()
                .unwrap_err()
                .to_string()
                .contains("mqtt_broker.password_file")
        );
        // A CA file that holds no certificate is refused when the node starts.
        std::fs::write(&pw, "x\n").unwrap();
        m.password_file = Some(pw);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        m.ca = Some(ca);
        assert!(m.load().unwrap_err().to_string().contains("mqtt_broker"));
    }

    #[test]
    fn device_ack_keys_are_private_files_named_by_device() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        put("porch-lock.key", "0123456789abcdef-porch\n", 0o600);
        put("README", "not a key", 0o644);
        let mut m = MqttBrokerSettings::plain("127.0.0.1:1883");
        m.ack_keys_dir = Some(dir.path().to_path_buf());
        let b = m.load().unwrap();
        assert_eq!(b.ack_keys.keys().collect::<Vec<_>>(), ["porch-lock"]);
        assert!(!format!("{b:?}").contains("0123456789abcdef"));
        for (name, text, mode, needle) in [
            ("short.key", "too-short", 0o600, "shorter than 16"),
            ("open.key", "0123456789abcdef-open", 0o644, "chmod 600"),
            (
                "Bad Name.key",
                "0123456789abcdef-bad",
                0o600,
                "<device id>.key",
            ),
        ] {
            put(name, text, mode);
            let e = m.load().unwrap_err().to_string();
            assert!(
                e.contains("mqtt_broker.ack_keys_dir") && e.contains(needle),
                "{name}: {e}"
            );
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        m.ack_keys_dir = Some(dir.path().join("missing"));
        assert!(
            m.load()
                .unwrap_err()
                .to_string()
                .contains("mqtt_broker.ack_keys_dir")
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("node_id = 1", "node_id = 0", "node_id"),
            ("role = \"hub\"", "role = \"boss\"", "boss"),
            (
                "listen = \"127.0.0.1:7101\"",
                "listen = \"nowhere\"",
                "listen",
            ),
            ("data_dir = \"/tmp/x\"", "data_dir = \"\"", "data_dir"),
            ("id = 2", "id = 1", "peers[0].id"),
            (
                "addr = \"127.0.0.1:7102\"",
                "addr = \"127.0.0.1\"",
                "peers[0].addr",
            ),
            (
                "addr = \"127.0.0.1:7102\"",
                "addr = \"h:99999\"",
                "peers[0].addr",
            ),
            ("bootstrap = true", "bootstrap = true\ncolour = 1", "colour"),
        ];
        for (from, to, needle) in cases {
            let text = GOOD.replacen(from, to, 1);
            let e = err_of(&text);
            assert!(e.contains(needle), "{to}: {e}");
        }
        let witness_bootstrap =
            GOOD.replace("role = \"hub\"\nlisten", "role = \"witness\"\nlisten");
        assert!(err_of(&witness_bootstrap).contains("bootstrap"));
        let timing = format!("{GOOD}\n[timing]\nelection_min_ms = 100\nheartbeat_ms = 150\n");
        assert!(err_of(&timing).contains("timing.election_min_ms"));
        let timing = format!("{GOOD}\n[timing]\nelection_max_ms = 900\n");
        assert!(err_of(&timing).contains("timing.election_max_ms"));
    }
}
