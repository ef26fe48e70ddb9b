//! The executor's settings (taken from the node config) and the live
//! counters it reports (in /health/info, heartbeats and metrics).

use std::time::Duration;

use crate::store::Leases;

/// One worker pool as configured.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    pub queue: String,
    pub size: usize,
}

/// Executor settings taken from the node config.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub node_id: String,
    pub region: String,
    pub pools: Vec<PoolSpec>,
    pub claim_batch: usize,
    /// `executor.prefetch_min`: the prefetch buffer's floor.
    pub prefetch_min: usize,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub leases: Leases,
    /// `limits.max_output_bytes`: larger outputs fail with `output_too_large`.
    pub max_output_bytes: usize,
}

/// Live counters of one pool (shown in /health/info, heartbeats, metrics):
/// the wire type itself, so the API serves it as it is.
pub type PoolStatus = crate::api::wire::PoolInfo;
