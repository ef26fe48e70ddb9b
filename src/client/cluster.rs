//! The cluster as the API shows it, read through the router: the regions
//! view (`/v1/regions`: each region's role, lag and nodes), readiness, the
//! write path's reachability, the API URL of a region's client node, and
//! the gauges `/metrics` refreshes. Free functions over a [`Router`], since
//! nodes without the client role serve `/health*` and `/metrics` too.

use std::collections::{HashMap, HashSet};

use crate::api::wire::{DbRole, NodeView, Ready, RegionView, Regions};
use crate::router::Router;
use crate::store::{SchemaCompat, StoreError};

/// `/v1/regions`: the write region, the primary's epoch, and per region its
/// role, replay lag (this node's own measurement for its region, the
/// primary's `pg_stat_replication` for the others) and heartbeating nodes.
pub async fn regions(router: &Router, heartbeat_ms: u64) -> Result<Regions, StoreError> {
    let primary = router.write_store();
    let nodes = router.local_store().nodes().await?;
    let (epoch, _) = primary.role().await?;
    let lags: HashMap<String, i64> = primary
        .replication_lags()
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    let write_region = router.write_region();
    let local = router.local_state();
    let regions = router
        .region_names()
        .iter()
        .map(|r| {
            let nodes = nodes
                .iter()
                .filter(|n| &n.region == r)
                .map(|n| NodeView {
                    node_id: n.node_id.clone(),
                    node_type: n.node_type.clone(),
                    api_url: n.api_url.clone(),
                    last_heartbeat_at: n.last_heartbeat_at,
                    healthy: n.is_healthy(heartbeat_ms),
                    pools: n.pool_infos(),
                })
                .collect();
            let primary_here = *r == write_region;
            let lag_ms = if primary_here {
                0
            } else if r == router.region() {
                local.lag_ms as i64
            } else {
                lags.get(r).copied().unwrap_or(0)
            };
            RegionView {
                name: r.clone(),
                role: if primary_here {
                    DbRole::Primary
                } else {
                    DbRole::Replica
                },
                lag_ms,
                nodes,
            }
        })
        .collect();
    Ok(Regions {
        write_region,
        epoch,
        regions,
    })
}

/// The API URL of a client node of `region`: the regions file's `api_url`,
/// else a healthy client node from the heartbeat table.
pub async fn peer_url(router: &Router, region: &str, heartbeat_ms: u64) -> Option<String> {
    if let Some(u) = router
        .regions()
        .iter()
        .find(|r| r.name == region)
        .and_then(|r| r.api_url.clone())
    {
        return Some(u);
    }
    let nodes = router.local_store().nodes().await.ok()?;
    nodes
        .into_iter()
        .filter(|n| n.region == region && n.is_client() && n.is_healthy(heartbeat_ms))
        .find_map(|n| n.api_url)
}

/// Whether the local database is reachable and migrated to this binary's schema.
pub async fn ready(router: &Router) -> Ready {
    match router.local_store().schema_compat().await {
        Ok(SchemaCompat::Current(v)) => Ready::current(v),
        Ok(c) => Ready::not_ready(c.problem().unwrap_or_default()),
        // The detail goes to the log; anonymous callers learn only which
        // database is not answering.
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the local database did not answer");
            Ready::not_ready("the local database is not reachable; see the node's log".to_string())
        }
    }
}

/// Whether the database writes go to answers.
pub async fn write_reachable(router: &Router) -> bool {
    router.write_store().ping().await.is_ok()
}

/// The database-derived gauges of `/metrics`: queue depths, live runs
/// (running, paused) by status, primary reachability, unhealthy nodes. One task of the node
/// refreshes them (`node::gauges`), so a scrape costs no query. A label that
/// disappears from the database (a queue dropped, no run left in a status)
/// is set to 0 rather than left at its last value.
#[derive(Debug, Default)]
pub struct Gauges {
    queues: HashSet<String>,
    statuses: HashSet<String>,
}

impl Gauges {
    /// Reads the gauges from the local database (the primary's ping for
    /// reachability) and sets them; what cannot be read keeps its value.
    pub async fn refresh(&mut self, router: &Router, heartbeat_ms: u64) {
        let store = router.local_store();
        if let Ok(depths) = store.queue_depths().await {
            set_labelled("swf_queue_depth", "queue", depths, &mut self.queues);
        }
        if let Ok(by) = store.live_runs_by_status().await {
            set_labelled("swf_runs", "status", by, &mut self.statuses);
        }
        let reachable = write_reachable(router).await;
        metrics::gauge!("swf_primary_reachable").set(if reachable { 1.0 } else { 0.0 });
        if let Ok(nodes) = store.nodes().await {
            let unhealthy = nodes.iter().filter(|n| !n.is_healthy(heartbeat_ms)).count();
            metrics::gauge!("swf_nodes_unhealthy").set(unhealthy as f64);
        }
    }
}

/// Sets `name{label=value}` for each row, and 0 for each value of `seen`
/// that is no longer among them; `seen` becomes the rows' values.
fn set_labelled(
    name: &'static str,
    label: &'static str,
    rows: Vec<(String, i64)>,
    seen: &mut HashSet<String>,
) {
    let now: HashSet<String> = rows.iter().map(|(v, _)| v.clone()).collect();
    for gone in seen.difference(&now) {
        metrics::gauge!(name, label => gone.clone()).set(0.0);
    }
    for (v, n) in rows {
        metrics::gauge!(name, label => v).set(n as f64);
    }
    *seen = now;
}
