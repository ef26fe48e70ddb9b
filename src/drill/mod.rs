//! Failover drills: move the write region and measure what it cost.
//!
//! A switchover (planned) fences the old primary, waits until the target
//! has replayed the old primary's last write, promotes the target, bumps the
//! epoch and re-routes every node: zero loss. A failover (unplanned) stops
//! the old primary hard without waiting, then promotes: what the target had
//! not received is lost, and the drill says exactly which acknowledged
//! writes those were. Where the drill controls the databases (a
//! [`ClusterControl`], e.g. `swf dev`), the old primary then rejoins as a
//! replica of the new one.
//!
//! Measurement: an optional load submits workflows through every region's
//! client node during the drill ([`crate::drill::load`]); each acknowledged
//! run is then looked up on the new primary (present, lost, or
//! indeterminate when it never got an answer). RTO is the longest write
//! unavailability the load saw.

pub mod load;

mod control;
mod error;
mod phases;
mod timeline;
mod verdict;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::router::Router;

pub use control::{ClusterControl, HookControl};
pub use error::DrillError;

use error::failed;
use phases::Drill;
use timeline::ms;
use verdict::{verdict, Observed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    Switchover,
    Failover,
}

impl DrillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Switchover => "switchover",
            DrillKind::Failover => "failover",
        }
    }
}

/// The body of `POST /v1/admin/drills`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    pub kind: DrillKind,
    pub to: String,
    /// Workflows submitted per second during the drill (0: no load).
    #[serde(default)]
    pub load: f64,
    /// Refuse when the target's replay is further behind than this.
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
}

/// How far behind a drill's target may be before the drill is refused.
pub const DEFAULT_MAX_LAG_MS: u64 = 5_000;

fn default_max_lag_ms() -> u64 {
    DEFAULT_MAX_LAG_MS
}

/// One timed phase of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
}

/// The measured report (`swf drill --json`).
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub kind: DrillKind,
    pub from_region: String,
    pub to_region: String,
    pub epoch_before: u64,
    pub epoch_after: u64,
    /// From the fault to the first failed write seen (load or node).
    pub detection_ms: u64,
    /// Longest write unavailability seen by the load: first failed to first
    /// successful write, or the slowest acknowledged write (nodes retry
    /// while the primary moves), whichever is longer; without load, fault
    /// to re-routed.
    pub rto_ms: u64,
    pub acknowledged_writes: u64,
    pub lost_writes: u64,
    pub lost_run_ids: Vec<String>,
    pub indeterminate_writes: u64,
    pub failed_writes: u64,
    pub duplicate_writes: u64,
    pub stale_reads: u64,
    /// Failed writes by HTTP status and error code.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// The three slowest acknowledged writes (time from the load's start).
    pub slowest_writes: Vec<SlowWrite>,
    pub old_primary_fenced: bool,
    pub nodes_rerouted: usize,
    pub nodes_total: usize,
    pub phases: Vec<Phase>,
    pub ok: bool,
}

/// One slow acknowledged write of the drill's load.
#[derive(Debug, Clone, Serialize)]
pub struct SlowWrite {
    pub target: String,
    pub sent_at_ms: u64,
    pub ms: u64,
    pub retries: u32,
}

/// Runs a drill from this node.
/// `authorization` is the caller's `Authorization` header, which the load
/// presents to every node.
pub async fn run(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    req: &DrillRequest,
    authorization: Option<reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
    heartbeat_ms: u64,
) -> Result<DrillReport, DrillError> {
    let mut d = Drill::new(router, control, authorization, tls);
    let plan = d.preflight(req).await?;
    let (targets, all_nodes) = node_urls(router, heartbeat_ms).await.map_err(failed)?;
    let mut load = d.start_load(targets, req.load).await;

    router.take_primary_lost_at();
    let fault = Instant::now();
    let epoch_after = d.move_primary(&plan, req.kind).await?;
    let (rerouted, total) = d.reroute(&plan, epoch_after, &all_nodes).await?;
    let rerouted_at = Instant::now();
    d.rejoin(&plan).await?;

    let (attempts, fault_offset_ms) = d.stop_load(&mut load, fault).await;
    let found = d.verify(&plan, &attempts, &load.label, epoch_after).await?;
    let noticed_ms = router
        .take_primary_lost_at()
        .filter(|t| *t >= fault)
        .map(|t| ms(t - fault));
    let seen = Observed {
        from: plan.from,
        to: plan.to,
        epoch_before: plan.epoch_before,
        epoch_after,
        old_primary_fenced: found.old_primary_fenced,
        nodes_rerouted: rerouted,
        nodes_total: total,
        fault_offset_ms,
        noticed_ms,
        rerouted_ms: ms(rerouted_at - fault),
        phases: d.tl.into_phases(),
    };
    Ok(verdict(
        req,
        &attempts,
        &found.present,
        found.duplicates,
        seen,
    ))
}

/// API URLs of the healthy nodes: (client nodes: load targets, all: to re-route).
/// API URLs of the healthy client nodes, and of all healthy nodes (by the
/// same heartbeat rule as `/v1/regions`).
async fn node_urls(
    router: &Router,
    heartbeat_ms: u64,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let nodes = router.write_store().nodes().await?;
    let healthy: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.is_healthy(heartbeat_ms))
        .collect();
    let clients = healthy
        .iter()
        .filter(|n| n.is_client())
        .filter_map(|n| n.api_url.clone())
        .collect();
    let all = healthy.into_iter().filter_map(|n| n.api_url).collect();
    Ok((clients, all))
}

/// Waits until every node reports the new write region and epoch.
async fn wait_rerouted(
    urls: &[String],
    to: &str,
    epoch: u64,
    authorization: Option<&reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
) -> (usize, usize) {
    let http = tls
        .builder_with_auth(authorization)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client builds");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut done = 0;
        for u in urls {
            let info = http.get(format!("{u}/health/info")).send().await;
            if let Ok(r) = info {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["write_region"] == to && v["epoch"].as_u64().unwrap_or(0) >= epoch {
                        done += 1;
                    }
                }
            }
        }
        if done == urls.len() || Instant::now() >= deadline {
            return (done, urls.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
