//! `hearth dev`: a real three-node cluster (two hubs and a witness) on loopback, with data in a
//! temporary folder, in one process. Each node is a full `serve` with its own gRPC port.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hearth_node::NodeConfig;

/// Writes the three config files and returns their paths.
pub fn write_configs(dir: &Path, base_port: u16) -> anyhow::Result<Vec<PathBuf>> {
    let roles = [(1u64, "hub"), (2, "hub"), (3, "witness")];
    let addr = |i: u64| format!("127.0.0.1:{}", base_port + (i as u16) - 1);
    let mut paths = Vec::new();
    for (id, role) in roles {
        let mut text = format!(
            "# hearth dev: node {id}\nnode_id = {id}\nrole = \"{role}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nbootstrap = {}\n",
            addr(id),
            dir.join(format!("node{id}")).display(),
            id == 1
        );
        for (pid, prole) in roles.iter().filter(|(p, _)| *p != id) {
            text.push_str(&format!(
                "\n[[peers]]\nid = {pid}\naddr = \"{}\"\nrole = \"{prole}\"\n",
                addr(*pid)
            ));
        }
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

pub async fn run(dir: Option<PathBuf>, base_port: u16) -> anyhow::Result<()> {
    let (_guard, dir) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            (None, d)
        }
        None => {
            let t = tempfile::Builder::new().prefix("hearth-dev-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let paths = write_configs(&dir, base_port)?;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut nodes = Vec::new();
    for p in &paths {
        let cfg = NodeConfig::load(p)?;
        let mut rx = stop_tx.subscribe();
        nodes.push(tokio::spawn(async move {
            let id = cfg.node_id;
            let res = hearth_node::server::serve(cfg, async move {
                let _ = rx.recv().await;
            })
            .await;
            (id, res)
        }));
    }
    let a = base_port;
    println!(
        "Hearth dev cluster: hub 1 on 127.0.0.1:{a}, hub 2 on 127.0.0.1:{}, witness 3 on 127.0.0.1:{}\n\
         data and configs in {}{}\n\
         In another terminal:\n  \
         cargo run -p hearth -- cluster status\n  \
         cargo run -p hearth -- audit append \"hello from the dev cluster\"\n  \
         cargo run -p hearth -- audit tail\n  \
         cargo run -p hearth -- audit verify\n\
         Ctrl-C stops all three nodes.",
        a + 1,
        a + 2,
        dir.display(),
        if _guard.is_some() {
            " (deleted on exit)"
        } else {
            ""
        }
    );
    let mut failed = None;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; }
        (res, _, _) = futures::future::select_all(nodes.iter_mut()) => {
            if let Ok((id, Err(e))) = res {
                failed = Some(anyhow::anyhow!("node {id} stopped: {e}"));
            }
        }
    }
    let _ = stop_tx.send(());
    for n in nodes {
        if let Ok((id, Err(e))) = n.await {
            eprintln!("node {id}: {e}");
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
