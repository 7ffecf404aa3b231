//! The MQTT adapter. A command is published (QoS 1) as JSON to `<topic>/command`; the device
//! (or its bridge) answers on `<topic>/ack` with `{"action_id": …, "reply": …}`. The adapter
//! subscribes to the ack topic before publishing and waits for the ack of its action id.
//!
//! One short-lived connection per command: simple and robust for a household's command rate;
//! a pooled connection is a later optimisation.

use std::time::Duration;

use hearth_core::sim::{DeviceCommand, Reply};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use crate::AdapterError;
use crate::server::DeviceSim;

/// What a device publishes on `<topic>/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub action_id: String,
    pub reply: Reply,
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

/// Publishes `cmd` and waits for its ack.
pub async fn send(broker: &str, topic: &str, cmd: &DeviceCommand) -> Result<Reply, AdapterError> {
    let dev = || cmd.device.clone();
    let (host, port) = split_broker(broker).map_err(|e| AdapterError::Unreachable(dev(), e))?;
    let mut opts = MqttOptions::new(client_id("hearth"), host, port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 10);
    let ack_topic = format!("{topic}/ack");
    client
        .subscribe(&ack_topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), e.to_string()))?;
    let payload =
        serde_json::to_vec(cmd).map_err(|e| AdapterError::BadReply(dev(), e.to_string()))?;
    let mut published = false;
    let result = loop {
        let ev = match events.poll().await {
            Ok(ev) => ev,
            Err(e) => {
                break Err(AdapterError::Unreachable(
                    dev(),
                    format!("mqtt broker {broker}: {e}"),
                ));
            }
        };
        match ev {
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
                match serde_json::from_slice::<Ack>(&p.payload) {
                    Ok(ack) if ack.action_id == cmd.action_id => break Ok(ack.reply),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, topic = %p.topic, "ignoring an unreadable ack")
                    }
                }
            }
            _ => {}
        }
    };
    let _ = client.disconnect().await;
    result
}

/// Serves a simulated device over MQTT until the task is aborted: reads `<topic>/command`,
/// answers on `<topic>/ack`. Reconnects after broker errors.
pub async fn serve_device(broker: String, topic: String, sim: DeviceSim) {
    let Ok((host, port)) = split_broker(&broker) else {
        tracing::error!(broker, "invalid mqtt broker address");
        return;
    };
    let mut opts = MqttOptions::new(client_id("hearth-device-sim"), host, port);
    opts.set_keep_alive(Duration::from_secs(5));
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
                let action_id = cmd.action_id.clone();
                let reply = sim.receive(cmd);
                let ack = Ack { action_id, reply };
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
