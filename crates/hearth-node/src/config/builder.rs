//! Building a [`NodeConfig`] in code and writing it as the TOML file `hearth serve --config`
//! reads: `hearth dev`, the benchmarks and the tests make their node files this way, never by
//! formatting TOML text.
//!
//! ```
//! use hearth_node::config::{NodeConfig, Role};
//!
//! let cfg = NodeConfig::builder(1, Role::Hub, "127.0.0.1:7101", "/tmp/node1")
//!     .bootstrap(true)
//!     .peer(3, "127.0.0.1:7103", Role::Witness)
//!     .insecure()
//!     .build()
//!     .unwrap();
//! let text = cfg.to_toml().unwrap();
//! assert_eq!(NodeConfig::parse(&text).unwrap(), cfg);
//! ```

use std::path::{Path, PathBuf};

use super::{
    AssistSettings, AuthSettings, CheckpointSettings, ConfigError, HttpSettings, LimitsSettings,
    MqttBrokerSettings, NodeConfig, Peer, Role, TimingConfig, TlsSettings,
};

/// A [`NodeConfig`] under construction; [`build`](Self::build) validates it as loading a file
/// would. It starts with no peers, no bootstrap, default timing and limits, and neither TLS
/// nor `insecure`: one of [`tls`](Self::tls) with [`tokens_file`](Self::tokens_file), or
/// [`insecure`](Self::insecure), must be chosen.
#[derive(Debug, Clone)]
pub struct NodeConfigBuilder {
    config: NodeConfig,
}

impl NodeConfig {
    /// A builder for node `node_id` with `role`, listening on `listen` (`IP:port`), keeping
    /// its data in `data_dir`.
    pub fn builder(
        node_id: u64,
        role: Role,
        listen: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> NodeConfigBuilder {
        NodeConfigBuilder {
            config: NodeConfig {
                node_id,
                role,
                listen: listen.into(),
                advertise: None,
                mqtt_broker: None,
                metrics_listen: None,
                data_dir: data_dir.into(),
                bootstrap: false,
                peers: Vec::new(),
                timing: TimingConfig::default(),
                assist: AssistSettings::default(),
                checkpoint: CheckpointSettings::default(),
                insecure: false,
                tls: None,
                auth: None,
                limits: LimitsSettings::default(),
                http: HttpSettings::default(),
            },
        }
    }

    /// This configuration as a config file: what [`NodeConfig::parse`] reads back as the same
    /// configuration. Sections and fields at their defaults are left out.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize {
            node_id: self.node_id,
            message: e.to_string(),
        })
    }

    /// Writes [`to_toml`](Self::to_toml) to `path`, after a first line `# {comment}` when
    /// `comment` is not empty. Relative TLS and token paths in it are then relative to the
    /// file's directory (as [`NodeConfig::load`] reads them).
    pub fn write_to(&self, path: &Path, comment: &str) -> Result<(), ConfigError> {
        let mut text = String::new();
        for line in comment.lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&self.to_toml()?);
        std::fs::write(path, text).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl NodeConfigBuilder {
    /// Whether this hub forms the cluster (exactly one hub does).
    pub fn bootstrap(mut self, yes: bool) -> Self {
        self.config.bootstrap = yes;
        self
    }

    /// Adds a peer.
    pub fn peer(mut self, id: u64, addr: impl Into<String>, role: Role) -> Self {
        self.config.peers.push(Peer {
            id,
            addr: addr.into(),
            role,
        });
        self
    }

    /// The address peers reach this node at, when it is not `listen`.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.config.advertise = Some(addr.into());
        self
    }

    /// Plain text and no client tokens (lab setups; every start warns). Drops TLS and tokens.
    pub fn insecure(mut self) -> Self {
        self.config.insecure = true;
        self.config.tls = None;
        self.config.auth = None;
        self
    }

    /// Mutual TLS with these PEM files (`hearth init-pki`). Clears `insecure`.
    pub fn tls(
        mut self,
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.config.insecure = false;
        self.config.tls = Some(TlsSettings {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// The hashed client tokens file. Clears `insecure`.
    pub fn tokens_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.insecure = false;
        self.config.auth = Some(AuthSettings {
            tokens_file: path.into(),
        });
        self
    }

    pub fn timing(mut self, timing: TimingConfig) -> Self {
        self.config.timing = timing;
        self
    }

    pub fn limits(mut self, limits: LimitsSettings) -> Self {
        self.config.limits = limits;
        self
    }

    pub fn checkpoint(mut self, checkpoint: CheckpointSettings) -> Self {
        self.config.checkpoint = checkpoint;
        self
    }

    pub fn assist(mut self, assist: AssistSettings) -> Self {
        self.config.assist = assist;
        self
    }

    pub fn mqtt_broker(mut self, broker: MqttBrokerSettings) -> Self {
        self.config.mqtt_broker = Some(broker);
        self
    }

    pub fn metrics_listen(mut self, addr: impl Into<String>) -> Self {
        self.config.metrics_listen = Some(addr.into());
        self
    }

    /// The HTTP face on the LAN (TLS unless insecure).
    pub fn http_listen(mut self, addr: impl Into<String>) -> Self {
        self.config.http.listen = Some(addr.into());
        self
    }

    /// The HTTP face on loopback, plain HTTP (tokens still required).
    pub fn http_loopback(mut self, addr: impl Into<String>) -> Self {
        self.config.http.loopback = Some(addr.into());
        self
    }

    /// The configuration, validated as [`NodeConfig::parse`] validates a file.
    pub fn build(self) -> Result<NodeConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// The nodes of one cluster on this machine, one builder each: every member lists all the
/// others as peers, the first member bootstraps, and member `id` keeps its data in
/// `dir/node{id}`. `members` are `(id, role, listen address)`. Security (TLS or `insecure`)
/// and timing are the caller's to add.
pub fn local_cluster(dir: &Path, members: &[(u64, Role, String)]) -> Vec<NodeConfigBuilder> {
    members
        .iter()
        .enumerate()
        .map(|(i, (id, role, addr))| {
            let mut b =
                NodeConfig::builder(*id, *role, addr.clone(), dir.join(format!("node{id}")))
                    .bootstrap(i == 0);
            for (pid, prole, paddr) in members.iter().filter(|(p, _, _)| p != id) {
                b = b.peer(*pid, paddr.clone(), *prole);
            }
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(dir: &Path) -> Vec<NodeConfigBuilder> {
        local_cluster(
            dir,
            &[
                (1, Role::Hub, "127.0.0.1:7101".into()),
                (2, Role::Hub, "127.0.0.1:7102".into()),
                (3, Role::Witness, "127.0.0.1:7103".into()),
            ],
        )
    }

    #[test]
    fn a_built_config_reads_back_as_itself() {
        let timing = TimingConfig {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            caretaker_patience_ms: 1000,
            write_timeout_ms: 1500,
        };
        let limits = LimitsSettings {
            emergency_max: 1_000_000,
            ..Default::default()
        };
        let mut mqtt = MqttBrokerSettings::plain("127.0.0.1:1883");
        mqtt.username = Some("hub-1".into());
        mqtt.password_file = Some("secrets/pw".into());
        let secure = NodeConfig::builder(1, Role::Hub, "0.0.0.0:7101", "/var/lib/hearth")
            .bootstrap(true)
            .advertise("pi.local:7101")
            .peer(2, "laptop.local:7101", Role::Hub)
            .peer(3, "witness.local:7101", Role::Witness)
            .tls("pki/ca.pem", "pki/node-1.pem", "pki/node-1.key")
            .tokens_file("pki/tokens.toml")
            .timing(timing.clone())
            .limits(limits)
            .mqtt_broker(mqtt)
            .metrics_listen("127.0.0.1:9101")
            .checkpoint(CheckpointSettings {
                every_entries: 0,
                every_secs: 60,
            })
            .assist(AssistSettings {
                targets: vec!["192.168.1.1:80".into()],
                down_after_ms: 20_000,
            })
            .build()
            .unwrap();
        let text = secure.to_toml().unwrap();
        assert_eq!(NodeConfig::parse(&text).unwrap(), secure, "{text}");
        for b in three(Path::new("/tmp/c")) {
            let cfg = b.insecure().timing(timing.clone()).build().unwrap();
            let text = cfg.to_toml().unwrap();
            assert_eq!(NodeConfig::parse(&text).unwrap(), cfg, "{text}");
        }
    }

    #[test]
    fn defaults_are_left_out_and_chosen_values_written() {
        let cfg = three(Path::new("/d")).remove(1).insecure().build().unwrap();
        let text = cfg.to_toml().unwrap();
        for absent in ["[timing]", "[limits]", "[checkpoint]", "[assist]", "[tls]"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        for present in [
            "node_id = 2",
            "role = \"hub\"",
            "bootstrap = false",
            "insecure = true",
            "data_dir = \"/d/node2\"",
        ] {
            assert!(text.contains(present), "{present} not in {text}");
        }
        assert_eq!(text.matches("[[peers]]").count(), 2, "{text}");
        // One field changed: only it is written, so an older binary without the others
        // still reads the file.
        let one = three(Path::new("/d"))
            .remove(0)
            .insecure()
            .limits(LimitsSettings {
                emergency_max: 1000,
                ..Default::default()
            })
            .build()
            .unwrap();
        let text = one.to_toml().unwrap();
        assert!(text.contains("[limits]\nemergency_max = 1000\n"), "{text}");
        assert!(!text.contains("max_connections"), "{text}");
    }

    #[test]
    fn the_cluster_lists_every_other_member_and_one_bootstraps() {
        let cfgs: Vec<NodeConfig> = three(Path::new("/d"))
            .into_iter()
            .map(|b| b.insecure().build().unwrap())
            .collect();
        assert_eq!(
            cfgs.iter().map(|c| c.bootstrap).collect::<Vec<_>>(),
            [true, false, false]
        );
        for c in &cfgs {
            let mut ids: Vec<u64> = c.peers.iter().map(|p| p.id).collect();
            ids.push(c.node_id);
            ids.sort();
            assert_eq!(ids, [1, 2, 3]);
        }
        assert_eq!(cfgs[2].role, Role::Witness);
        assert_eq!(cfgs[0].peers[1].addr, "127.0.0.1:7103");
    }

    #[test]
    fn a_bad_build_names_the_field_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = || NodeConfig::builder(1, Role::Hub, "127.0.0.1:7101", dir.path().join("n1"));
        let field = |r: Result<NodeConfig, ConfigError>| match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        };
        // Neither TLS nor insecure.
        assert_eq!(field(base().build()), "tls");
        // TLS without tokens.
        assert_eq!(field(base().tls("ca", "c", "k").build()), "auth");
        // A typo in an address, a peer with this node's id, a bootstrapping witness.
        assert_eq!(
            field(base().insecure().peer(2, "127.0.0.1", Role::Hub).build()),
            "peers[0].addr"
        );
        assert_eq!(
            field(
                base()
                    .insecure()
                    .peer(1, "127.0.0.1:7102", Role::Hub)
                    .build()
            ),
            "peers[0].id"
        );
        assert_eq!(
            field(
                NodeConfig::builder(3, Role::Witness, "127.0.0.1:7103", "/d")
                    .bootstrap(true)
                    .peer(1, "127.0.0.1:7101", Role::Hub)
                    .insecure()
                    .build()
            ),
            "bootstrap"
        );
        assert_eq!(
            field(
                NodeConfig::builder(1, Role::Hub, "127.0.0.1", "/d")
                    .insecure()
                    .build()
            ),
            "listen"
        );
        // insecure after TLS drops it, and TLS after insecure clears it.
        let cfg = base()
            .tls("ca", "c", "k")
            .tokens_file("t")
            .insecure()
            .build()
            .unwrap();
        assert!(cfg.insecure && cfg.tls.is_none() && cfg.auth.is_none());
        assert_eq!(field(base().insecure().tls("ca", "c", "k").build()), "auth");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_to_puts_the_comment_first_and_fails_clearly_on_a_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::builder(1, Role::Hub, "127.0.0.1:7101", dir.path().join("n1"))
            .bootstrap(true)
            .insecure()
            .build()
            .unwrap();
        let p = dir.path().join("node1.toml");
        cfg.write_to(&p, "hearth dev: node 1").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# hearth dev: node 1\n"), "{text}");
        assert_eq!(NodeConfig::load(&p).unwrap(), cfg);
        let missing = dir.path().join("no-such-folder").join("node1.toml");
        let e = cfg.write_to(&missing, "").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Write { path, .. } if *path == missing),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_utf8_is_an_error_not_a_mangled_file() {
        use std::os::unix::ffi::OsStrExt;
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/\xff"));
        let cfg = NodeConfig::builder(7, Role::Hub, "127.0.0.1:7101", bad)
            .bootstrap(true)
            .insecure()
            .build()
            .unwrap();
        let e = cfg.to_toml().unwrap_err();
        assert!(
            matches!(e, ConfigError::Serialize { node_id: 7, .. }),
            "{e}"
        );
    }
}
