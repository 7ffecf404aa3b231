//! `hearth device …` and `hearth device-sim`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hearth_proto::v1 as pb;
use hearth_proto::v1::devices_client::DevicesClient;
use serde_json::json;

use super::args::DeviceCmd;
use super::client::Client;
use super::output;
use super::policy::document_json;

pub async fn run(client: &Client, cmd: DeviceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCmd::List { target, out } => {
            let mut c = DevicesClient::new(client.channel(&target.addr)?);
            let r = c
                .list(pb::ListDevicesRequest {})
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            if out.json() {
                let mut devices = r.devices;
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                output::print(&json!({
                    "devices": devices.iter().map(output::device).collect::<Vec<_>>(),
                }));
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{:<16} {:<16} {:<9} {:<30} ADAPTER",
                "ID",
                "LOCATION",
                "EMERG",
                "ACTUATORS / SENSORS"
            );
            for d in r.devices {
                let mut caps: Vec<String> = d
                    .actuators
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.states.join("|")))
                    .collect();
                caps.sort();
                caps.extend(d.sensors.iter().map(|s| format!("({s})")));
                outln!(
                    "{:<16} {:<16} {:<9} {:<30} {}:{}",
                    d.id,
                    d.location,
                    if !d.emergency_actions.is_empty() {
                        let mut e: Vec<String> = d
                            .emergency_actions
                            .iter()
                            .map(|(k, v)| format!("{k}:{}", v.states.join("|")))
                            .collect();
                        e.sort();
                        e.join(",")
                    } else if d.emergency_capable {
                        "legacy".to_string()
                    } else {
                        "no".to_string()
                    },
                    caps.join(" "),
                    d.adapter_kind,
                    d.adapter_target
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Show { target, id, out } => {
            let d = DevicesClient::new(client.channel(&target.addr)?)
                .get(pb::GetDeviceRequest { id })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            if out.json() {
                output::print(&output::device(&d));
                return Ok(ExitCode::SUCCESS);
            }
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            let states = |m: &std::collections::HashMap<String, pb::StateList>| {
                let mut v: Vec<String> = m
                    .iter()
                    .map(|(k, s)| format!("{k}: {}", s.states.join("|")))
                    .collect();
                v.sort();
                list(&v)
            };
            outln!("device    {}", d.id);
            outln!("name      {}", d.name);
            outln!("location  {}", d.location);
            outln!("tags      {}", list(&d.tags));
            outln!("sensors   {}", list(&d.sensors));
            outln!("actuators {}", states(&d.actuators));
            outln!(
                "emergency {}",
                if !d.emergency_actions.is_empty() {
                    states(&d.emergency_actions)
                } else if d.emergency_capable {
                    "legacy (any state)".to_string()
                } else {
                    "no".to_string()
                }
            );
            outln!("adapter   {}:{}", d.adapter_kind, d.adapter_target);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Remove { target, id } => {
            let r = DevicesClient::new(client.channel(&target.addr)?)
                .remove(pb::RemoveDeviceRequest { id })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!("device {} removed by {} at entry {}", r.id, r.by, r.index);
            for i in &r.cancelled_intents {
                outln!(
                    "  intent {i}: its actions on {} are CANCELLED (hearth intent get {i})",
                    r.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Register { target, file } => {
            let json = document_json(&file)?;
            let dev: hearth_core::intent::Device =
                serde_json::from_str(&json).with_context(|| {
                    format!(
                        "{} is not a device manifest (docs/INTENTS.md)",
                        file.display()
                    )
                })?;
            let mut c = DevicesClient::new(client.channel(&target.addr)?);
            let r = c
                .register(hearth_node::api::device_to_pb(&dev))
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!("device {} registered at {}", r.id, r.location);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Refence {
            target,
            devices,
            all,
            reason,
        } => {
            let mut c = DevicesClient::new(client.channel(&target.addr)?);
            let v = c
                .refence(pb::RefenceRequest {
                    devices,
                    all,
                    reason,
                })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            outln!(
                "re-fence {} recorded at entry {}; watch it with `hearth intent watch {}`",
                v.id,
                v.index,
                v.id
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `hearth device-sim` logs in to the MQTT broker (all optional).
#[derive(Debug, Default)]
pub struct SimMqttLogin {
    pub user: Option<(String, PathBuf)>,
    pub ca: Option<PathBuf>,
    pub ack_key_file: Option<PathBuf>,
}

fn first_line(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    anyhow::ensure!(
        !line.is_empty(),
        "{}: the first line is empty",
        path.display()
    );
    Ok(line.to_string())
}

/// `hearth device-sim`: serve a simulated device until Ctrl-C.
pub async fn device_sim(
    listen: String,
    http: Option<String>,
    journal: Option<PathBuf>,
    mqtt: Option<(String, String)>,
    login: SimMqttLogin,
) -> anyhow::Result<ExitCode> {
    let sim = hearth_node::device_sim::DeviceSim::new(journal.clone())
        .context("opening the journal file")?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    if let Some(h) = &http {
        let l = tokio::net::TcpListener::bind(h)
            .await
            .with_context(|| format!("listening on {h}"))?;
        tokio::spawn(sim.clone().serve_http(l));
        outln!("device-sim HTTP on {h}: POST /command, GET /journal");
    }
    if let Some((broker, topic)) = mqtt {
        outln!("device-sim MQTT via {broker}: commands on {topic}/command, acks on {topic}/ack");
        use hearth_node::device_sim::{MqttBroker, Secret, tls_client_config};
        let mut b = MqttBroker::plain(broker);
        if let Some((user, pw)) = &login.user {
            b = b.with_login(user.clone(), Secret::new(first_line(pw)?));
        }
        if let Some(ca) = &login.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b.with_tls(tls_client_config(&pem, None).map_err(anyhow::Error::msg)?);
        }
        let key = match &login.ack_key_file {
            Some(k) => Some(Secret::new(first_line(k)?)),
            None => None,
        };
        tokio::spawn(hearth_node::device_sim::serve_device_keyed(
            b,
            topic,
            sim.clone(),
            key,
        ));
    }
    outln!(
        "device-sim gRPC on {listen}{}",
        journal
            .map(|j| format!("; journal {}", j.display()))
            .unwrap_or_default()
    );
    tonic::transport::Server::builder()
        .add_service(hearth_proto::device::device_sim_server::DeviceSimServer::new(sim))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}
