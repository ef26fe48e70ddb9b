//! Node heartbeats: each node upserts its row (carrying its epoch, like
//! every write); `/v1/cluster` and discovery read them all.

use serde::Serialize;
use serde_json::Value;

use super::conn::{Result, Store};

/// Node heartbeat row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub node_type: String,
    pub roles: Vec<String>,
    pub region: String,
    pub api_url: Option<String>,
    pub pools: Value,
    pub version: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub last_heartbeat_at: chrono::DateTime<chrono::Utc>,
}

impl NodeRow {
    /// Heard from within 3 heartbeat intervals.
    pub fn is_healthy(&self, interval_ms: u64) -> bool {
        (chrono::Utc::now() - self.last_heartbeat_at).num_milliseconds() <= (3 * interval_ms) as i64
    }

    /// The worker pools of the heartbeat (the handlers each advertises left
    /// out); a pool entry that does not read as one is skipped.
    pub fn pool_infos(&self) -> Vec<crate::api::wire::PoolInfo> {
        self.pools
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let mut p = p.clone();
                p.as_object_mut()?.remove("handlers");
                serde_json::from_value(p).ok()
            })
            .collect()
    }

    /// Runs the client role (serves `/v1`).
    pub fn is_client(&self) -> bool {
        self.roles.iter().any(|r| r == "client")
    }
}

impl Store {
    /// Upserts this node's heartbeat row. A database of an epoch older than
    /// `epoch` (a stale old primary) refuses it.
    /// The (queue, handler) pairs the executor pools of nodes heard from
    /// within `within_ms` advertise (their heartbeat's pools, each with
    /// the handlers beyond the built-ins the node runs).
    pub async fn advertised_handlers(&self, within_ms: u64) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT p->>'queue', h
               FROM swf.nodes n,
                    jsonb_array_elements(n.pools) AS p,
                    jsonb_array_elements_text(coalesce(p->'handlers', '[]')) AS h
              WHERE n.last_heartbeat_at > now() - make_interval(secs => $1 / 1000.0)
                AND p->>'queue' IS NOT NULL",
        )
        .bind(within_ms as f64)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn heartbeat(&self, n: &NodeRow, epoch: u64) -> Result<()> {
        // swf.assert_epoch as the only FROM item runs exactly once, before
        // the row is written, and raises on a stale primary.
        sqlx::query(
            "INSERT INTO swf.nodes (node_id, node_type, roles, region, api_url, pools, version,
                                    started_at, last_heartbeat_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, now() FROM swf.assert_epoch($9)
             ON CONFLICT (node_id) DO UPDATE SET
                node_type = EXCLUDED.node_type, roles = EXCLUDED.roles, region = EXCLUDED.region,
                api_url = EXCLUDED.api_url, pools = EXCLUDED.pools, version = EXCLUDED.version,
                started_at = EXCLUDED.started_at, last_heartbeat_at = now()",
        )
        .bind(&n.node_id)
        .bind(&n.node_type)
        .bind(&n.roles)
        .bind(&n.region)
        .bind(&n.api_url)
        .bind(&n.pools)
        .bind(&n.version)
        .bind(n.started_at)
        .bind(epoch as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// All heartbeat rows.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        Ok(sqlx::query_as::<_, NodeRow>(
            "SELECT node_id, node_type, roles, region, api_url, pools, version, started_at,
                    last_heartbeat_at FROM swf.nodes ORDER BY region, node_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
