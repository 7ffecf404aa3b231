//! Several nodes in one process, each a full [`serve`](crate::server::serve) with its own gRPC
//! port: `hearth dev` and the in-process benchmark (`hearth-bench intents`).

use crate::NodeConfig;
use crate::server::ServeError;

/// A running node of a local cluster: its id and how `serve` ended.
pub type NodeTask = tokio::task::JoinHandle<(u64, Result<(), ServeError>)>;

/// Starts one `serve` per configuration in this process (on the current tokio runtime);
/// sending on the returned channel stops them all.
pub fn spawn_in_process(
    configs: Vec<NodeConfig>,
) -> (tokio::sync::broadcast::Sender<()>, Vec<NodeTask>) {
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut nodes = Vec::new();
    for cfg in configs {
        let mut rx = stop_tx.subscribe();
        nodes.push(tokio::spawn(async move {
            let id = cfg.node_id;
            let res = crate::server::serve(cfg, async move {
                let _ = rx.recv().await;
            })
            .await;
            (id, res)
        }));
    }
    (stop_tx, nodes)
}
