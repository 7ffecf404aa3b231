//! Starting a node: the data directory's identity (`node.json`), opening the stores,
//! verifying the whole chain (a node never serves a chain it cannot verify), starting Raft and
//! the node's tasks (dispatcher or caretaker, checkpoints, target probes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hearth_cluster::HearthRaft;
use hearth_cluster::RaftHandler;
use hearth_cluster::settings;
use hearth_core::caretaker::CaretakerConfig;
use hearth_store::LogStore;
use hearth_store::StateMachine;
use hearth_store::StoreError;
use hearth_store::TypeConfig;
use hearth_store::audit;
use hearth_store::audit::NodeVerify;
use openraft::network::RaftNetworkFactory;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::config::Role;

use super::{Node, StartError};

pub(super) const IDENTITY_FILE: &str = "node.json";

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Identity {
    node_id: u64,
    format: u32,
}

/// Checks or writes the identity file. Returns whether the directory is new.
pub(super) fn claim_data_dir(dir: &Path, id: u64) -> Result<bool, StartError> {
    // 0700 and 0600 inside, also for a directory an older version made 0755.
    hearth_store::private::create_dir(dir)?;
    hearth_store::private::tighten(dir)?;
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            let ident: Identity =
                serde_json::from_slice(&b).map_err(|e| StoreError::CorruptMeta {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if ident.node_id != id {
                return Err(StartError::WrongNode {
                    dir: dir.to_path_buf(),
                    found: ident.node_id,
                    expected: id,
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("raft").join(hearth_store::log::LOG_FILE).exists() {
                return Err(StartError::UnknownDataDir {
                    dir: dir.to_path_buf(),
                });
            }
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            std::fs::write(
                &tmp,
                serde_json::to_vec(&Identity {
                    node_id: id,
                    format: 1,
                })
                .map_err(std::io::Error::other)?,
            )?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies the chain of a stopped node's data directory without starting or changing
/// anything in the log.
pub fn verify_data_dir(dir: &Path) -> Result<NodeVerify, StartError> {
    let log = LogStore::open_read_only(&dir.join("raft"))?;
    let sm = StateMachine::open(&dir.join("state"))?;
    Ok(audit::verify(&log, &sm)?)
}

impl Node {
    /// Opens the data directory, verifies the chain and starts Raft, with the default device
    /// gateway. Does not form a cluster.
    pub async fn start<N>(config: NodeConfig, network: N) -> Result<Node, StartError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network:
            openraft::network::NetSnapshot<TypeConfig, SnapshotData = std::io::Cursor<Vec<u8>>>,
    {
        let mqtt = match &config.mqtt_broker {
            Some(m) => Some(m.load().map_err(|e| StartError::Settings(e.to_string()))?),
            None => None,
        };
        if let Some(m) = &config.mqtt_broker
            && m.username.is_none()
            && m.client_cert.is_none()
        {
            tracing::warn!(
                node = config.node_id,
                broker = %m.addr,
                "the mqtt broker is used anonymously: any host that reaches it can answer for the devices (insecure lab setup)"
            );
        }
        let devices = hearth_devices::Devices {
            mqtt,
            ..Default::default()
        };
        Self::start_with(config, network, Arc::new(devices)).await
    }

    /// [`Node::start`] with a given device gateway.
    pub async fn start_with<N>(
        config: NodeConfig,
        network: N,
        gateway: Arc<dyn hearth_devices::Gateway>,
    ) -> Result<Node, StartError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network:
            openraft::network::NetSnapshot<TypeConfig, SnapshotData = std::io::Cursor<Vec<u8>>>,
    {
        let id = config.node_id;
        let witness = config.role == Role::Witness;
        let security = config
            .security()
            .map_err(|e| StartError::Settings(e.to_string()))?;
        if !security.is_tls() {
            tracing::warn!(
                node = id,
                "INSECURE: insecure = true — plain-text transport and no client tokens; anyone \
                 on this network can read the traffic, join as a node and call every method"
            );
        }
        let fresh = claim_data_dir(&config.data_dir, id)?;
        let log = LogStore::open(&config.data_dir.join("raft"))?;
        let (sm, rebuilt) = crate::datadir::open_state(&config.data_dir.join("state")).await?;
        let own_checkpoint = match config.role {
            Role::Witness => None,
            _ => {
                crate::checkpoint::Checkpoints::open(id, config.role, &config.data_dir, sm.clone())?
                    .last()
                    .await
                    .map(|c| c.index)
            }
        };
        let (sm, hold) = crate::datadir::prepare(
            &config.data_dir,
            id,
            fresh,
            &log,
            sm,
            rebuilt,
            own_checkpoint,
        )
        .await?;
        let incarnation = crate::datadir::incarnation(&config.data_dir, id)?;
        let report = audit::verify(&log, &sm)?;
        if let Some(f) = report.failure {
            return Err(StartError::ChainBroken {
                index: f.index(),
                reason: f.to_string(),
            });
        }
        let heads = crate::startcheck::check_stored_heads(id, &config.data_dir, &log, &sm)?;
        tracing::info!(node = id, role = config.role.name(), checked = report.checked,
            head = ?report.head.map(|(i, _)| i), stored_heads = heads, fresh, %incarnation,
            "chain verified; starting Raft");
        let checkpoints = Arc::new(crate::checkpoint::Checkpoints::open(
            id,
            config.role,
            &config.data_dir,
            sm.clone(),
        )?);
        let promoted = crate::assist::apply_pending(&config.data_dir, id, &log).await?;
        let raft_cfg = settings::raft_config(&config.timing.raft(), witness)
            .map_err(|e| StartError::Settings(e.to_string()))?;
        let raft = HearthRaft::new(id, Arc::new(raft_cfg), network, log.clone(), sm.clone())
            .await
            .map_err(|e| StartError::Fatal(e.to_string()))?;
        let handler = RaftHandler::new(raft.clone(), id, witness);
        if let Some(h) = hold {
            raft.runtime_config().elect(false);
            handler.set_hold(Some(h));
        }
        if witness {
            handler.set_cosigner(checkpoints.clone());
        }
        {
            // Refuse node ids removed by a forced promotion: the replicated list, and this
            // hub's own promotions (known before their entry is applied).
            let local = crate::assist::removed_locally(&config.data_dir);
            let sm = sm.clone();
            handler.set_gate(Arc::new(move |from| {
                sm.with_domain(|d| d.retired.get(&from).cloned())
                    .ok()
                    .flatten()
                    .or_else(|| local.get(&from).cloned())
            }));
        }
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::datadir::watch(
            handler.clone(),
            raft.clone(),
            sm.clone(),
            config.data_dir.clone(),
            incarnation.clone(),
            rx.clone(),
        )));
        let wall = crate::health::WallClock::default();
        let clock_watch = Arc::new(crate::health::ClockWatch::default());
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        if !witness && !config.assist.targets.is_empty() {
            tasks.push(tokio::spawn(crate::assist::probe_targets(
                config.assist.targets.clone(),
                targets.clone(),
                Duration::from_millis(config.timing.heartbeat_ms.max(100) * 5),
                rx.clone(),
            )));
        }
        if witness {
            // A witness never dispatches: it has no dispatcher at all.
            let cfg = CaretakerConfig {
                lease_ms: config.timing.election_min_ms,
            };
            tasks.push(tokio::spawn(hearth_cluster::caretaker::run(
                handler.clone(),
                log.clone(),
                cfg,
                Duration::from_millis(config.timing.caretaker_patience_ms),
                rx,
            )));
        } else {
            let d = crate::dispatcher::Dispatcher {
                id,
                raft: raft.clone(),
                sm: sm.clone(),
                gateway: gateway.clone(),
                wall: wall.clone(),
                clock_watch: clock_watch.clone(),
            };
            tasks.push(tokio::spawn(crate::checkpoint::schedule(
                checkpoints.clone(),
                raft.clone(),
                config.checkpoint.clone(),
                rx.clone(),
            )));
            // Held intents whose approval expired are denied by the leader, nobody acting.
            let e = crate::expiry::Expiry {
                id,
                raft: raft.clone(),
                sm: sm.clone(),
                wall: wall.clone(),
                clock_watch: clock_watch.clone(),
                every: crate::expiry::period(config.timing.heartbeat_ms),
            };
            tasks.push(tokio::spawn(e.run(rx.clone())));
            tasks.push(tokio::spawn(d.run(rx)));
        }
        Ok(Node {
            id,
            role: config.role,
            raft,
            handler,
            log,
            sm,
            config,
            fresh,
            shutdown,
            tasks,
            targets,
            restart: watch::channel(false).0,
            promoted,
            started_ms: wall.now_ms(),
            security,
            checkpoints,
            wall,
            clock_watch,
            chain_check: Default::default(),
            gateway,
            incarnation,
            probe: std::sync::OnceLock::new(),
        })
        .inspect(|n| {
            // Loudly, at every start: a hub that may lead and could not reach a device.
            for w in n.device_warnings() {
                tracing::error!(node = n.id, "{w}; configure it before this hub leads");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error names the identity file by its real name (error.rs spells it out, so that
    /// it does not depend on this module).
    #[test]
    fn a_data_dir_without_identity_names_the_file() {
        let e = StartError::UnknownDataDir {
            dir: std::path::PathBuf::from("/var/lib/hearth"),
        };
        assert!(e.to_string().contains(IDENTITY_FILE), "{e}");
    }
}
