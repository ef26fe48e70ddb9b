//! The heartbeat task: writes this node's row (roles, pools, version) to
//! the primary every `executor.heartbeat_interval_ms`, through the router's
//! write path, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument, Span};

use crate::api::NodeInfo;
use crate::executor::Executor;
use crate::router::Router;
use crate::store::NodeRow;

/// Starts the heartbeat in `tasks`.
pub(super) fn spawn(
    router: Arc<Router>,
    executor: Option<Arc<Executor>>,
    info: Arc<NodeInfo>,
    interval: Duration,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) {
    let started_at = chrono::Utc::now();
    let beat = async move {
        loop {
            let row = row(&info, executor.as_deref(), started_at);
            // Through the router's write path: bounded attempts,
            // rediscovery and retry when the primary moves.
            let beat = router
                .write(interval, |store, epoch| {
                    let row = &row;
                    async move { store.heartbeat(row, epoch).await }
                })
                .await;
            if let Err(e) = beat {
                warn!(error = %e, "heartbeat");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    };
    tasks.spawn(beat.instrument(span.clone()));
}

fn row(
    info: &NodeInfo,
    executor: Option<&Executor>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> NodeRow {
    // Each pool advertises the handlers beyond the built-ins this node
    // runs, so edge nodes accept them for that pool's queue.
    let pools = executor
        .map(|e| {
            let handlers = e.advertised_handlers();
            let mut v = serde_json::to_value(e.status()).unwrap_or_default();
            for pool in v.as_array_mut().into_iter().flatten() {
                pool["handlers"] = serde_json::json!(handlers);
            }
            v
        })
        .unwrap_or_else(|| serde_json::json!([]));
    NodeRow {
        node_id: info.node_id.clone(),
        node_type: info.node_type.clone(),
        roles: info.roles.clone(),
        region: info.region.clone(),
        api_url: Some(info.public_url.clone()),
        pools,
        version: info.version.clone(),
        started_at,
        last_heartbeat_at: chrono::Utc::now(),
    }
}
