//! Device adapters: how the dispatcher's commands reach devices, and how a simulated device
//! answers. Thin I/O around `hearth_core::device_protocol` (the device's logic).
//!
//! - `sim` with address `local:<name>`: a simulator inside this process, shared by every node
//!   of the process ([`SimBus`]; the dev cluster and in-process tests use it);
//! - `sim` with address `host:port`: a `hearth device-sim` over gRPC;
//! - `http` with a URL: a webhook receiving the command as JSON (`POST`), answering a reply;
//! - `mqtt` with a topic: through the household's broker ([`mqtt`]).
//!
//! This crate never decides *whether* to send: the dispatcher on the leading hub does.

pub mod http;
pub mod mqtt;
pub mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use hearth_core::device_protocol::{DeviceCommand, JournalEntry, Reply, SimDevices};
use hearth_core::intent::Adapter;
use hearth_proto::device as pb;

/// Wall-clock milliseconds since the Unix epoch (the journal's receive time).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a command could not be delivered (the device's answer is a [`Reply`], not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("device {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("device {0} answered something unreadable: {1}")]
    BadReply(String, String),
    #[error("adapter {0} is not available in this build: {1}")]
    Unsupported(&'static str, String),
}

/// Sends device commands.
pub trait Gateway: Send + Sync {
    fn send<'a>(
        &'a self,
        adapter: &'a Adapter,
        cmd: DeviceCommand,
    ) -> BoxFuture<'a, Result<Reply, AdapterError>>;

    /// Messages on ack topics that were not the answer being waited for (forged, stale or
    /// misdirected), since this gateway was made.
    fn ignored_acks(&self) -> u64 {
        0
    }
}

/// Simulated devices living in this process, by name.
#[derive(Clone, Default)]
pub struct SimBus {
    devices: Arc<Mutex<HashMap<String, Arc<Mutex<SimState>>>>>,
}

#[derive(Default)]
struct SimState {
    devices: SimDevices,
    offline: bool,
    /// When each action id was applied (for latency measurements).
    applied_at: HashMap<String, std::time::Instant>,
}

impl SimBus {
    /// The process-wide bus.
    pub fn global() -> SimBus {
        static BUS: OnceLock<SimBus> = OnceLock::new();
        BUS.get_or_init(SimBus::default).clone()
    }

    fn get(&self, name: &str) -> Arc<Mutex<SimState>> {
        let mut g = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(name.to_string()).or_default().clone()
    }

    /// Takes a simulator off the network (commands fail as unreachable) or back on.
    pub fn set_offline(&self, name: &str, offline: bool) {
        self.get(name)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offline = offline;
    }

    pub fn journal(&self, name: &str) -> Vec<JournalEntry> {
        self.get(name)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .devices
            .journal()
            .to_vec()
    }

    /// Delivers a command to a simulator directly (tests use it to play a stale leader).
    pub fn deliver(&self, name: &str, cmd: DeviceCommand) -> Result<Reply, AdapterError> {
        let s = self.get(name);
        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
        if g.offline {
            return Err(AdapterError::Unreachable(
                cmd.device,
                format!("simulator {name} is offline"),
            ));
        }
        let id = cmd.action_id.clone();
        let reply = g.devices.receive(cmd, now_ms());
        if reply == Reply::Applied {
            g.applied_at.insert(id, std::time::Instant::now());
        }
        Ok(reply)
    }

    /// When `action_id` was applied by simulator `name`, if it was.
    pub fn applied_at(&self, name: &str, action_id: &str) -> Option<std::time::Instant> {
        self.get(name)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied_at
            .get(action_id)
            .copied()
    }
}

/// The gateway every hub uses: routes by adapter kind.
pub struct Devices {
    pub bus: SimBus,
    pub timeout: Duration,
    /// The household's MQTT broker, for `mqtt` devices (address, login, TLS).
    pub mqtt: Option<mqtt::MqttBroker>,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            bus: SimBus::global(),
            timeout: Duration::from_secs(3),
            mqtt: None,
        }
    }
}

pub fn reply_from_pb(device: &str, r: pb::DeviceReply) -> Result<Reply, AdapterError> {
    Ok(match r.reply.as_str() {
        "applied" => Reply::Applied,
        "already_applied" => Reply::AlreadyApplied,
        "stale_token" => Reply::StaleToken {
            highest_term: r.highest_term,
            highest_leader: r.highest_leader,
        },
        "refused" => Reply::Refused { reason: r.reason },
        other => {
            return Err(AdapterError::BadReply(
                device.to_string(),
                format!("unknown reply {other:?}"),
            ));
        }
    })
}

pub fn reply_to_pb(r: &Reply) -> pb::DeviceReply {
    let (reply, ht, hl, reason) = match r {
        Reply::Applied => ("applied", 0, 0, String::new()),
        Reply::AlreadyApplied => ("already_applied", 0, 0, String::new()),
        Reply::StaleToken {
            highest_term,
            highest_leader,
        } => ("stale_token", *highest_term, *highest_leader, String::new()),
        Reply::Refused { reason } => ("refused", 0, 0, reason.clone()),
    };
    pb::DeviceReply {
        reply: reply.into(),
        highest_term: ht,
        highest_leader: hl,
        reason,
    }
}

pub fn command_to_pb(c: &DeviceCommand) -> pb::DeviceCommand {
    pb::DeviceCommand {
        action_id: c.action_id.clone(),
        device: c.device.clone(),
        capability: c.capability.clone(),
        state: c.state.clone(),
        term: c.token.term,
        leader: c.token.leader,
        index: c.token.index,
        sender: c.sender,
    }
}

pub fn command_from_pb(c: pb::DeviceCommand) -> DeviceCommand {
    DeviceCommand {
        action_id: c.action_id,
        device: c.device,
        capability: c.capability,
        state: c.state,
        token: hearth_core::domain::FencingToken {
            term: c.term,
            leader: c.leader,
            index: c.index,
        },
        sender: c.sender,
    }
}

impl Gateway for Devices {
    fn ignored_acks(&self) -> u64 {
        self.mqtt.as_ref().map_or(0, mqtt::MqttBroker::ignored_acks)
    }

    fn send<'a>(
        &'a self,
        adapter: &'a Adapter,
        cmd: DeviceCommand,
    ) -> BoxFuture<'a, Result<Reply, AdapterError>> {
        Box::pin(async move {
            let device = cmd.device.clone();
            let fut = async {
                match adapter {
                    Adapter::Sim { address } => match address.strip_prefix("local:") {
                        Some(name) => self.bus.deliver(name, cmd),
                        None => {
                            let ch = tonic::transport::Endpoint::from_shared(format!(
                                "http://{address}"
                            ))
                            .map_err(|e| AdapterError::Unreachable(device.clone(), e.to_string()))?
                            .connect_timeout(Duration::from_millis(500))
                            .connect_lazy();
                            let mut c = pb::device_sim_client::DeviceSimClient::new(ch);
                            let r = c.command(command_to_pb(&cmd)).await.map_err(|s| {
                                AdapterError::Unreachable(device.clone(), s.message().to_string())
                            })?;
                            reply_from_pb(&device, r.into_inner())
                        }
                    },
                    Adapter::Http { url } => http::post_command(url, &cmd).await,
                    Adapter::Mqtt { topic } => match &self.mqtt {
                        Some(b) => mqtt::send(b, topic, &cmd).await,
                        None => Err(AdapterError::Unsupported(
                            "mqtt",
                            format!("topic {topic}: set mqtt_broker in this node's config"),
                        )),
                    },
                }
            };
            tokio::time::timeout(self.timeout, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(AdapterError::Unreachable(
                        device.clone(),
                        format!("no answer within {:?}", self.timeout),
                    ))
                })
        })
    }
}
