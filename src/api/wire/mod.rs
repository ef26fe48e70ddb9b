//! The wire format of the HTTP API (DESIGN sections 6 and 10.3): every
//! request and response body of `/v1`, `/health*` and the drills as serde
//! types, the one [`ErrorCode`] enum with its HTTP status, the error body,
//! and the header names.
//!
//! The server answers with these types and every consumer (the CLI, the
//! bench, the drill load, the tests) reads them through
//! [`crate::api::client::ApiClient`], so both sides share one definition.
//! This module depends on nothing in the crate but `crate::model`.
//!
//! Status and lineage documents are built by SQL and passed through by the
//! server as they are; [`RunStatus`] and [`RunLineage`] describe them for
//! clients (an integration test keeps them in step with the SQL). Their
//! timestamps stay strings exactly as PostgreSQL writes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use crate::model::workflow::{StepSpec, WorkflowSpec};

mod drills;
pub use drills::*;

/// Response: the node that served the call (every `/v1` response).
pub const H_SERVED_BY: &str = "swf-served-by";
/// Request: pin the call to a region. Response: the serving node's region.
pub const H_REGION: &str = "swf-region";
/// Response of reads: `cache`, `replica` or `primary`.
pub const H_READ_SOURCE: &str = "swf-read-source";
/// Request: read-your-writes token. Response of writes: the write's token.
pub const H_TOKEN: &str = "swf-consistency-token";
/// Set on a forwarded call; a node that would forward it again refuses (one hop at most).
pub const H_FORWARDED_BY: &str = "swf-forwarded-by";

/// Every error code the API answers with; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidWorkflow,
    InvalidRequest,
    InvalidToken,
    UnknownHandler,
    UnknownRegion,
    PayloadTooLarge,
    NotFound,
    Unauthorized,
    Forbidden,
    RateLimited,
    Overloaded,
    RequestTimeout,
    ClientRoleDisabled,
    RegionUnavailable,
    WriteUnavailable,
    InvalidState,
    ForwardingLoop,
    Internal,
    /// Another drill (or a recovery) is running, or an interrupted drill
    /// awaits `swf drill recover` (409).
    DrillInProgress,
    /// A submit would take the cluster past `limits.max_queues` queues (400).
    TooManyQueues,
    /// Creating something (a schedule) whose name is taken (409).
    AlreadyExists,
    /// A code this client does not know (a newer server); never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code the server sends, for tables and tests.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidWorkflow,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidToken,
        ErrorCode::UnknownHandler,
        ErrorCode::UnknownRegion,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::RequestTimeout,
        ErrorCode::ClientRoleDisabled,
        ErrorCode::RegionUnavailable,
        ErrorCode::WriteUnavailable,
        ErrorCode::InvalidState,
        ErrorCode::ForwardingLoop,
        ErrorCode::Internal,
        ErrorCode::DrillInProgress,
        ErrorCode::TooManyQueues,
        ErrorCode::AlreadyExists,
    ];

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidWorkflow | InvalidRequest | InvalidToken | UnknownHandler
            | UnknownRegion | TooManyQueues => 400,
            Unauthorized => 401,
            Forbidden | ClientRoleDisabled => 403,
            NotFound => 404,
            InvalidState | DrillInProgress | AlreadyExists => 409,
            PayloadTooLarge => 413,
            RateLimited => 429,
            Internal | Unknown => 500,
            Overloaded | RegionUnavailable | WriteUnavailable => 503,
            RequestTimeout => 504,
            ForwardingLoop => 508,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidWorkflow => "invalid_workflow",
            InvalidRequest => "invalid_request",
            InvalidToken => "invalid_token",
            UnknownHandler => "unknown_handler",
            UnknownRegion => "unknown_region",
            PayloadTooLarge => "payload_too_large",
            NotFound => "not_found",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            RateLimited => "rate_limited",
            Overloaded => "overloaded",
            RequestTimeout => "request_timeout",
            ClientRoleDisabled => "client_role_disabled",
            RegionUnavailable => "region_unavailable",
            WriteUnavailable => "write_unavailable",
            InvalidState => "invalid_state",
            ForwardingLoop => "forwarding_loop",
            Internal => "internal",
            DrillInProgress => "drill_in_progress",
            TooManyQueues => "too_many_queues",
            AlreadyExists => "already_exists",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `code` of an attempt's error (lineage `execution_trace[].error`,
/// and the step's and run's `error`) when the engine or the executor, not
/// the handler, decided the failure. These fail the step at once, whatever
/// attempts are left: a retry would fail the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskErrorCode {
    /// The handler's output (serialized JSON) was larger than
    /// `limits.max_output_bytes`; it was not stored.
    OutputTooLarge,
    /// The task's input (run input, step input and its dependencies'
    /// outputs) would be larger than the database can hold in one value.
    InputTooLarge,
    /// Claiming the task raised another error that belongs to it (the
    /// message names it).
    ClaimFailed,
}

impl TaskErrorCode {
    /// The code as it appears in an error object.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorCode::OutputTooLarge => "output_too_large",
            TaskErrorCode::InputTooLarge => "input_too_large",
            TaskErrorCode::ClaimFailed => "claim_failed",
        }
    }
}

/// `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// `POST /v1/workflows/batch`: the position in `workflows` of the first
    /// workflow refused (absent when the refusal is of the whole batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Starts no new task until resumed; started tasks finish.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses the status column's text.
    pub fn parse(s: &str) -> Option<RunState> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    /// Completed, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Running | RunState::Paused)
    }
}

/// Status of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Created,
    Queued,
    Started,
    /// A `wait_for` step waiting for its signal, or a `map` step waiting
    /// for its items.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    Completed,
    Failed,
    TimedOut,
    Abandoned,
}

/// `POST /v1/workflows`: 201 (created) or 200 (idempotency key seen before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Submitted {
    pub run_id: Uuid,
    pub status: RunState,
    pub consistency_token: String,
}

/// The body of `POST /v1/workflows/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub workflows: Vec<WorkflowSpec>,
}

/// `POST /v1/workflows/batch`: 201, one entry per workflow in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmitted {
    pub runs: Vec<BatchRun>,
    /// One token for the whole batch (it was one transaction).
    pub consistency_token: String,
}

/// One run of a [`BatchSubmitted`]: the new run (`running`), or the run an
/// idempotency key already named, as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRun {
    pub run_id: Uuid,
    pub status: RunState,
}

/// `POST /v1/workflows/{run_id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancelled {
    pub run_id: Uuid,
    pub status: RunState,
    pub consistency_token: String,
}

/// `POST /v1/workflows/{run_id}/retry`: a cancel's shape, status `running`.
pub type Retried = Cancelled;

/// `POST /v1/workflows/{run_id}/pause` and `.../resume`: a cancel's shape,
/// status `paused` or `running`.
pub type PausedRun = Cancelled;

/// The body of `POST /v1/workflows/{run_id}/signals/{name}` (may be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    #[serde(default)]
    pub payload: Option<Value>,
}

/// `POST /v1/workflows/{run_id}/signals/{name}`: the signal is stored and
/// delivered to the first step waiting for it (now or later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signalled {
    pub run_id: Uuid,
    pub signal: String,
    pub consistency_token: String,
}

/// `POST /v1/workflows/cancel`: cancel every run of `status` (`running` or
/// `paused`), optionally only those with this exact `goal` and created in
/// `[created_after, created_before)` (RFC 3339).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancelRequest {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
}

/// The answer to a [`BulkCancelRequest`]: how many runs it cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancelled {
    pub cancelled: u64,
    pub consistency_token: String,
}

/// `POST /v1/schedules`: a cron schedule (5 fields, UTC) whose every tick
/// submits `workflow` (once per tick, idempotency key
/// `schedule:<name>:<tick>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub name: String,
    pub cron: String,
    pub workflow: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInfo {
    pub name: String,
    pub cron: String,
    pub paused: bool,
    /// The tick it waits for (RFC 3339, UTC).
    pub next_run_at: String,
    /// The run its latest tick started.
    pub last_run_id: Option<Uuid>,
    pub workflow: Value,
}

/// `GET /v1/schedules`: every schedule, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// One queue of `GET /v1/queues`: tasks ready to claim (`depth`), claimed
/// and not finished (`in_flight`), waiting for their ready-at time
/// (`delayed`), held by paused runs (`parked`), the age of the oldest
/// ready one (null when none), and whether the queue is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueInfo {
    pub name: String,
    pub depth: i64,
    pub in_flight: i64,
    pub delayed: i64,
    #[serde(default)]
    pub parked: i64,
    pub oldest_age_ms: Option<i64>,
    pub paused: bool,
}

/// `GET /v1/queues`: every queue that holds tasks or was paused, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// `POST /v1/queues/{name}/pause` and `.../resume`: the queue's state now,
/// and whether it was paused before the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePaused {
    pub name: String,
    pub paused: bool,
    pub was_paused: bool,
}

/// Query of `GET /v1/workflows` (kept as text so the server can say what
/// was wrong with a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `GET /v1/workflows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// Cursor of the next page (`after=`), if there is one.
    pub next: Option<String>,
}

/// One run of a [`RunList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub goal: String,
    pub status: RunState,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /v1/workflows/{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStatus {
    pub run_id: Uuid,
    pub goal: String,
    pub status: RunState,
    pub input: Value,
    pub output: Value,
    pub error: Value,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub steps: Vec<StepStatus>,
    pub metrics: Metrics,
    /// The schedule that started the run, if one did.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// One step of a [`RunStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepStatus {
    pub id: String,
    pub handler: String,
    pub queue: String,
    pub region: Option<String>,
    pub depends_on: Vec<String>,
    pub status: StepState,
    pub attempts: u32,
    pub output: Value,
    pub error: Value,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// An item of a `map` step (id `<map step>[<index>]`): its index.
    #[serde(default)]
    pub index: Option<u32>,
    /// The step's own `input` from the workflow (null when it has none).
    #[serde(default)]
    pub input: Value,
}

/// A run's counters, in status and lineage documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub total_steps: u64,
    pub completed_steps: u64,
    pub failed_steps: u64,
    pub total_tasks: u64,
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    pub total_attempts: u64,
    pub duration_ms: u64,
}

/// `GET /v1/workflows/{run_id}/lineage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLineage {
    pub run_id: Uuid,
    pub goal: String,
    pub status: RunState,
    pub dag: Dag,
    pub execution_trace: Vec<TraceEntry>,
    pub metrics: Metrics,
}

/// The DAG of a [`RunLineage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dag {
    pub steps: Vec<DagStep>,
}

/// One vertex of a [`Dag`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagStep {
    pub id: String,
    pub depends_on: Vec<String>,
}

/// One attempt in a [`RunLineage`]'s execution trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceEntry {
    pub step_id: String,
    pub attempt: u32,
    pub node_id: String,
    pub region: String,
    pub worker_pool: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: AttemptOutcome,
    pub error: Value,
}

/// Role of a region's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DbRole {
    Primary,
    Replica,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        }
    }
}

/// `GET /v1/regions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Regions {
    pub write_region: String,
    pub epoch: u64,
    pub regions: Vec<RegionView>,
}

/// One region of [`Regions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionView {
    pub name: String,
    pub role: DbRole,
    pub lag_ms: i64,
    pub nodes: Vec<NodeView>,
}

/// One node of a [`RegionView`], from the heartbeat table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    pub node_id: String,
    pub node_type: String,
    pub api_url: Option<String>,
    pub last_heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub healthy: bool,
    /// The worker pools of its last heartbeat (none on edge nodes).
    #[serde(default)]
    pub pools: Vec<PoolInfo>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /health/ready`: 200 `{"status": "ready", "schema_version"}` or 503
/// `{"status": "not_ready", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Ready {
    pub fn current(schema_version: i64) -> Ready {
        Ready {
            status: "ready".into(),
            schema_version: Some(schema_version),
            reason: None,
        }
    }
    pub fn not_ready(reason: impl Into<String>) -> Ready {
        Ready {
            status: "not_ready".into(),
            schema_version: None,
            reason: Some(reason.into()),
        }
    }
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// `GET /health/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeInfoBody {
    pub node_id: String,
    pub node_type: String,
    pub roles: Vec<String>,
    pub region: String,
    pub write_region: String,
    pub epoch: u64,
    pub worker_pools: Vec<PoolInfo>,
    pub database: DatabaseInfo,
    pub schema_version: i64,
    pub version: String,
}

/// One worker pool of [`NodeInfoBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolInfo {
    pub name: String,
    pub queue: String,
    pub size: usize,
    pub busy: usize,
    pub completed: u64,
    pub failed: u64,
}

/// `GET /v1/whoami`: what the caller's token may do on this node (the
/// dashboard shows only the actions its scopes allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoAmI {
    /// Whether this node checks tokens (`auth.enabled`).
    pub auth: bool,
    /// The token's name in the tokens file; null when auth is off.
    pub token: Option<String>,
    /// `read`, `submit`, `admin` (admin implies the others): every scope when auth is off.
    pub scopes: Vec<String>,
}

/// The databases as a node sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseInfo {
    pub local: LocalDbInfo,
    pub write: WriteDbInfo,
}

/// The node's own region's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalDbInfo {
    pub role: DbRole,
    pub lag_ms: u64,
    pub healthy: bool,
}

/// The database writes go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteDbInfo {
    pub region: String,
    pub reachable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_snake_case_with_their_status() {
        let cases = [
            (ErrorCode::InvalidJson, "invalid_json", 400),
            (ErrorCode::PayloadTooLarge, "payload_too_large", 413),
            (ErrorCode::NotFound, "not_found", 404),
            (ErrorCode::Unauthorized, "unauthorized", 401),
            (ErrorCode::ClientRoleDisabled, "client_role_disabled", 403),
            (ErrorCode::RateLimited, "rate_limited", 429),
            (ErrorCode::InvalidState, "invalid_state", 409),
            (ErrorCode::DrillInProgress, "drill_in_progress", 409),
            (ErrorCode::RegionUnavailable, "region_unavailable", 503),
            (ErrorCode::RequestTimeout, "request_timeout", 504),
            (ErrorCode::ForwardingLoop, "forwarding_loop", 508),
            (ErrorCode::Internal, "internal", 500),
            (ErrorCode::TooManyQueues, "too_many_queues", 400),
        ];
        for (code, text, status) in cases {
            assert_eq!(serde_json::to_value(code).unwrap(), Value::from(text));
            assert_eq!(code.status(), status, "{text}");
        }
        for code in ErrorCode::ALL {
            let v = serde_json::to_value(code).unwrap();
            assert_eq!(v, Value::from(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(v).unwrap(), code);
        }
        let odd: ErrorCode = serde_json::from_str("\"some_new_code\"").unwrap();
        assert_eq!(odd, ErrorCode::Unknown);
    }

    #[test]
    fn task_error_codes_serialize_as_their_text() {
        use TaskErrorCode::*;
        for code in [OutputTooLarge, InputTooLarge, ClaimFailed] {
            let v = serde_json::to_value(code).unwrap();
            assert_eq!(v, Value::from(code.as_str()));
            assert_eq!(serde_json::from_value::<TaskErrorCode>(v).unwrap(), code);
        }
    }

    #[test]
    fn error_body_shape() {
        let b = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::NotFound,
                message: "m".into(),
                index: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "m"}})
        );
        let mut at = b.clone();
        at.error.index = Some(3);
        assert_eq!(
            serde_json::to_value(&at).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "m", "index": 3}})
        );
    }

    #[test]
    fn drill_request_defaults() {
        let r: DrillRequest = serde_json::from_str(r#"{"kind": "failover", "to": "eu"}"#).unwrap();
        assert_eq!(
            (r.kind, r.load, r.max_lag_ms),
            (DrillKind::Failover, 0.0, 5_000)
        );
        assert!(serde_json::from_str::<DrillRequest>(r#"{"kind": "x", "to": "eu"}"#).is_err());
    }
}
