//! The drill types of the wire: a drill's request, its report and phases,
//! the journal's records, and what `swf drill recover` found and did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    Switchover,
    Failover,
    /// Every link of one region cut for a while, then healed (`swf dev`).
    Partition,
}

impl DrillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Switchover => "switchover",
            DrillKind::Failover => "failover",
            DrillKind::Partition => "partition",
        }
    }
}

/// The body of `POST /v1/admin/drills`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    pub kind: DrillKind,
    /// Switchover and failover: the region to move the write region to.
    #[serde(default)]
    pub to: String,
    /// Partition: the region whose links are cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Partition: how long the links stay cut, in seconds (1-600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secs: Option<u64>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
}

/// The measured report (`swf drill --json`), the answer of `POST /v1/admin/drills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    pub failures: BTreeMap<String, u64>,
    /// The three slowest acknowledged writes (time from the load's start).
    pub slowest_writes: Vec<SlowWrite>,
    pub old_primary_fenced: bool,
    /// What a write attempted on the old primary at the new epoch met:
    /// fenced, replica and stale_epoch count as fenced.
    #[serde(default)]
    pub old_primary: OldPrimary,
    pub nodes_rerouted: usize,
    pub nodes_total: usize,
    pub phases: Vec<Phase>,
    /// A partition drill's own measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionReport>,
    /// The HA manager that switched, failed over and rejoined the
    /// databases (`patroni`); absent when the drill did it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    pub ok: bool,
}

/// What a partition drill measured besides the writes (`report.partition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PartitionReport {
    /// The region cut off.
    pub region: String,
    /// How long its links were cut.
    pub secs: u64,
    /// Links cut (node to database, replication, node to node).
    pub links_cut: usize,
    /// Writes the nodes refused while the links were cut, by answer (also
    /// in `failures`).
    pub writes_refused: u64,
    /// Reads with a write's token that came back without the write, at the
    /// node that acknowledged it: none may.
    pub stale_token_reads: u64,
    /// From healing until every replica replayed the primary's position
    /// at the heal and every node agreed on the primary and epoch.
    pub converge_ms: u64,
}

/// What a write attempted on a drill's old primary met (the report's
/// `old_primary`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OldPrimary {
    /// Refused: read-only.
    Fenced,
    /// Refused: in recovery (it rejoined as a replica).
    Replica,
    /// Refused: its epoch is older than the new one.
    StaleEpoch,
    /// No answer: not known to be fenced.
    #[default]
    Unreachable,
    /// Accepted: not fenced.
    Writable,
}

impl OldPrimary {
    /// Whether the old primary refuses writes for a fencing reason.
    pub fn is_fenced(self) -> bool {
        matches!(
            self,
            OldPrimary::Fenced | OldPrimary::Replica | OldPrimary::StaleEpoch
        )
    }
}

/// A drill's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillState {
    Running,
    Ok,
    Failed,
    Interrupted,
    Recovered,
}

impl DrillState {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillState::Running => "running",
            DrillState::Ok => "ok",
            DrillState::Failed => "failed",
            DrillState::Interrupted => "interrupted",
            DrillState::Recovered => "recovered",
        }
    }

    /// Running or interrupted: a new drill must wait (or `swf drill recover`).
    pub fn is_unresolved(self) -> bool {
        matches!(self, DrillState::Running | DrillState::Interrupted)
    }
}

/// One drill of the journal: `GET /v1/admin/drills/{id}`, and each entry of
/// `GET /v1/admin/drills`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillRecord {
    pub id: Uuid,
    pub kind: DrillKind,
    pub from_region: String,
    pub to_region: String,
    pub state: DrillState,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The drill's report when it finished; `{"error"}` when it aborted;
    /// `recovery` added by `swf drill recover`.
    pub report: Option<Value>,
    /// The node that runs (ran) it.
    #[serde(default)]
    pub node_id: String,
    /// The last phase it started.
    #[serde(default)]
    pub phase: String,
    /// The answering node's process runs this drill right now.
    #[serde(default)]
    pub active: bool,
}

/// `GET /v1/admin/drills`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillList {
    pub drills: Vec<DrillRecord>,
}

/// A region's database as `swf drill recover` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DbFound {
    /// Out of recovery and takes writes.
    Writable,
    /// Out of recovery but read-only: a fenced primary.
    Fenced,
    /// In recovery.
    Replica,
    Unreachable,
}

/// One region in a recovery report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegionFound {
    pub region: String,
    pub found: DbFound,
    pub epoch: Option<u64>,
    /// The WAL timeline of a database out of recovery.
    pub timeline: Option<u64>,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// The answer of `POST /v1/admin/drills/recover` (`swf drill recover`):
/// what it found, what it did, and the write region it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecoverReport {
    pub regions: Vec<RegionFound>,
    /// Unresolved drills it found (running or interrupted) and marked recovered.
    pub drills: Vec<Uuid>,
    /// What it did, in order; empty when nothing was wrong.
    pub actions: Vec<String>,
    /// What is left to the operator (no control of the databases).
    pub operator: Vec<String>,
    /// The one writable primary it left, and its epoch.
    pub write_region: String,
    pub epoch: u64,
    /// Whether it changed anything.
    pub changed: bool,
}

/// One slow acknowledged write of the drill's load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlowWrite {
    pub target: String,
    pub sent_at_ms: u64,
    pub ms: u64,
    pub retries: u32,
}
