//! The only module that issues SQL.
//!
//! A [`Store`] wraps one database (a primary or a replica) with a sqlx pool.
//! Each method is one named operation and, for engine transitions, one round
//! trip: the transitions themselves are PL/pgSQL functions in `migrations/`.
//! Database errors are translated into [`StoreError`] here, once: read-only
//! (a replica or a fenced primary), stale epoch, unavailable, not found.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};
use uuid::Uuid;

use crate::model::token::{Lsn, Token};
use crate::model::workflow::PlannedStep;

/// Migrations of the engine schema, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Advisory lock key held while migrating, so several nodes may run
/// `swf migrate` at once.
const MIGRATE_LOCK: i64 = 0x5357_465f_4d49_4752; // "SWF_MIGR"

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database is read-only (a replica or a fenced primary)")]
    ReadOnly,
    #[error("database epoch is older than one this node has seen: {0}")]
    StaleEpoch(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migrate(String),
}

impl StoreError {
    /// Errors of the write path rather than of the request (deadlock,
    /// lost connection, a replica or fenced or stale primary): retrying,
    /// possibly against a newly discovered primary, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::ReadOnly | StoreError::StaleEpoch(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("25006") => StoreError::ReadOnly,
                Some("SWF01") => StoreError::StaleEpoch(db.message().to_string()),
                // deadlock, serialization failure, admin shutdown, cannot connect now
                Some("40P01") | Some("40001") | Some("57P01") | Some("57P03") => {
                    StoreError::Unavailable(db.message().to_string())
                }
                _ => StoreError::Database(e.to_string()),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A connection cut mid-handshake (a server stopping, a proxy
            // whose upstream is down) surfaces as a protocol error.
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A run to store, validated.
#[derive(Debug, Clone, Serialize)]
pub struct NewRun {
    pub run_id: Uuid,
    pub goal: String,
    pub input: Option<Value>,
    pub idempotency_key: Option<String>,
    pub decomposer: Option<String>,
    pub submitted_by: String,
    pub submitted_region: String,
    pub steps: Vec<PlannedStep>,
}

/// What storing a run did: `created` is false when the idempotency key
/// matched an existing run, whose id is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: Uuid,
    pub created: bool,
}

/// A task claimed by an executor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTask {
    pub run_id: Uuid,
    pub step_id: String,
    pub attempt: i32,
    pub handler: String,
    pub timeout_ms: i32,
    pub input: Value,
}

impl ClaimedTask {
    /// The attempt this claim is.
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            run_id: self.run_id,
            step_id: self.step_id.clone(),
            attempt: self.attempt,
        }
    }
}

/// An LSN as PostgreSQL prints it (`0/19A1D18`).
fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse()
        .map_err(|_| StoreError::Database(format!("bad LSN {text}")))
}

/// Identifies one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::FromRow)]
pub struct AttemptRef {
    pub run_id: Uuid,
    pub step_id: String,
    pub attempt: i32,
}

/// How an attempt ended, as reported by an executor.
#[derive(Debug, Clone)]
pub enum Finish {
    Completed(Value),
    Failed { error: Value, timed_out: bool },
}

impl Finish {
    /// PostgreSQL's jsonb cannot hold NUL characters; a handler's output or
    /// error that has some gets them replaced by U+FFFD rather than failing
    /// the report (and every other report batched with it).
    pub fn sanitized(self) -> Finish {
        match self {
            Finish::Completed(v) => Finish::Completed(strip_nul(v)),
            Finish::Failed { error, timed_out } => Finish::Failed {
                error: strip_nul(error),
                timed_out,
            },
        }
    }
}

/// Replaces NUL characters in every string and key of `v`; a value without
/// any (nearly always) is returned as it is, not rebuilt.
pub fn strip_nul(v: Value) -> Value {
    if !crate::model::workflow::has_nul(&v) {
        return v;
    }
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nul).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), strip_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The engine's answer to a completion or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishResult {
    Completed,
    Retrying,
    Failed,
    /// Refused: not the current attempt, or the step or run already ended.
    Stale,
}

/// The two documents a run can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunDoc {
    Status,
    Lineage,
}

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

    /// Runs the client role (serves `/v1`).
    pub fn is_client(&self) -> bool {
        self.roles.iter().any(|r| r == "client")
    }
}

/// One row of `GET /v1/workflows`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub goal: String,
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Executor-side timing parameters passed to claim/extend/fail.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    pub lease_ms: i32,
    pub margin_ms: i32,
    pub backoff_base_ms: i32,
    pub backoff_cap_ms: i32,
}

/// How a database's schema relates to the one this binary was built for.
/// Only [`SchemaCompat::Current`] is served: an older schema needs
/// `swf migrate`, a newer one a newer binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCompat {
    Current(i64),
    Unmigrated { known: i64 },
    Older { found: i64, known: i64 },
    Newer { found: i64, known: i64 },
}

impl SchemaCompat {
    /// Why this binary cannot serve the schema, or None when it can.
    pub fn problem(&self) -> Option<String> {
        match *self {
            SchemaCompat::Current(_) => None,
            SchemaCompat::Unmigrated { known } => Some(format!(
                "the database is not migrated (this binary needs schema version {known}): run `swf migrate`"
            )),
            SchemaCompat::Older { found, known } => Some(format!(
                "database schema version {found} is older than {known}: run `swf migrate`"
            )),
            SchemaCompat::Newer { found, known } => Some(format!(
                "database schema version {found} is newer than this binary knows ({known}); upgrade swf"
            )),
        }
    }
}

/// One database: a pool plus the operations on it.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &crate::config::redact_url(&self.url))
            .finish()
    }
}

impl Store {
    /// Opens a lazily connecting pool to `url` with at most `max` connections.
    pub fn connect_lazy(url: &str, max: u32) -> Result<Store> {
        let opts: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?
            .application_name("swf")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            // No ping before each use: from a remote region it would double
            // every round trip. A dead connection fails its query instead,
            // which callers treat as transient.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        Ok(Store {
            pool,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Installs pgmq (the extension where the server has it, otherwise the
    /// pgmq crate's embedded SQL) and applies the engine migrations, under an
    /// advisory lock so concurrent callers serialise. Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        let mut lock = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *lock)
            .await?;
        let result = self.migrate_locked().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn migrate_locked(&self) -> Result<()> {
        let installed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')")
                .fetch_one(&self.pool)
                .await?;
        let available: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq')",
        )
        .fetch_one(&self.pool)
        .await?;
        if available {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pgmq")
                .execute(&self.pool)
                .await?;
        } else if !installed || self.pgmq_sql_installed().await? {
            pgmq::install::install_sql_from_embedded(&self.pool)
                .await
                .map_err(|e| StoreError::Migrate(format!("install pgmq SQL: {e}")))?;
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        Ok(())
    }

    async fn pgmq_sql_installed(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgmq')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Latest applied migration version, or None on an unmigrated database.
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar("SELECT max(version) FROM public._sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Whether this binary can run against the database's schema: the one
    /// rule behind node start and `/health/ready`.
    pub async fn schema_compat(&self) -> Result<SchemaCompat> {
        let known = Self::known_schema_version();
        Ok(match self.schema_version().await? {
            None => SchemaCompat::Unmigrated { known },
            Some(v) if v == known => SchemaCompat::Current(v),
            Some(v) if v < known => SchemaCompat::Older { found: v, known },
            Some(v) => SchemaCompat::Newer { found: v, known },
        })
    }

    /// The newest migration this binary knows.
    pub fn known_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Cheap liveness probe.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the database is in recovery (a replica), its epoch, and its
    /// replay position (replica) or WAL write position (primary).
    pub async fn position(&self) -> Result<(bool, u64, Lsn)> {
        let row = sqlx::query(
            "SELECT pg_is_in_recovery(), (SELECT epoch FROM swf.cluster_state),
                    coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                  ELSE pg_current_wal_lsn() END, '0/0')::text",
        )
        .fetch_one(&self.pool)
        .await?;
        let lsn: String = row.try_get(2)?;
        Ok((
            row.try_get(0)?,
            row.try_get::<i64, _>(1)? as u64,
            parse_lsn(&lsn)?,
        ))
    }

    /// The database's epoch and whether it refuses writes: in recovery (a
    /// replica) or fenced (read-only by default).
    pub async fn role(&self) -> Result<(u64, bool)> {
        let row = sqlx::query(
            "SELECT (SELECT epoch FROM swf.cluster_state),
                    pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get::<i64, _>(0) as u64, row.get(1)))
    }

    /// Fences a primary: new sessions are read-only and every other client
    /// session is terminated, so no write lands here after this returns.
    /// Returns the WAL position at which writes stopped.
    pub async fn fence(&self) -> Result<Lsn> {
        let mut c = self.pool.acquire().await?;
        sqlx::query("ALTER SYSTEM SET default_transaction_read_only = on")
            .execute(&mut *c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *c)
            .await?;
        // Sessions already open keep their settings: end them.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .execute(&mut *c)
        .await?;
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut *c)
            .await?;
        // This connection was opened before the fence: do not reuse it.
        c.detach();
        parse_lsn(&lsn)
    }

    /// Undoes [`Store::fence`] (a drill that aborts before promotion).
    pub async fn unfence(&self) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        sqlx::query("ALTER SYSTEM RESET default_transaction_read_only")
            .execute(&mut *c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *c)
            .await?;
        c.detach();
        Ok(())
    }

    /// Promotes this replica and bumps the epoch; returns the new epoch.
    pub async fn promote(&self, region: &str) -> Result<u64> {
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
            .fetch_one(&self.pool)
            .await?;
        if !promoted {
            return Err(StoreError::Database(
                "pg_promote did not finish within 60 s".into(),
            ));
        }
        self.bump_epoch(region).await
    }

    /// Starts a new epoch on a freshly promoted primary; returns it.
    pub async fn bump_epoch(&self, region: &str) -> Result<u64> {
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE swf.cluster_state SET epoch = epoch + 1, write_region = $1, updated_at = now()
             RETURNING epoch",
        )
        .bind(region)
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch as u64)
    }

    /// Which of `run_ids` exist here.
    pub async fn existing_runs(&self, run_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT run_id FROM swf.runs WHERE run_id = ANY($1)")
                .bind(run_ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Drill labels that name more than one run (a duplicated submit).
    pub async fn duplicate_goals(&self, prefix: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT goal FROM swf.runs WHERE goal LIKE $1 || '%'
                                    GROUP BY goal HAVING count(*) > 1) d",
        )
        .bind(prefix)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stores a batch of validated runs in one transaction and one round
    /// trip. Returns one [`Submitted`] per input (same order) and the token.
    pub async fn submit_runs(
        &self,
        runs: &[NewRun],
        epoch: u64,
    ) -> Result<(Vec<Submitted>, Token)> {
        let row = sqlx::query("CALL swf.submit_runs($1, $2)")
            .bind(sqlx::types::Json(runs))
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        let result: Value = row.try_get("p_runs")?;
        let token = token_from_row(&row)?;
        let items = result
            .as_array()
            .ok_or_else(|| StoreError::Database("submit_runs returned no array".into()))?;
        let out = items
            .iter()
            .map(|v| {
                Ok(Submitted {
                    run_id: v["run_id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| StoreError::Database("submit_runs: bad run_id".into()))?,
                    created: v["created"].as_bool().unwrap_or(false),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out, token))
    }

    /// Cancels a run. Returns its status afterwards (None: unknown run) and the token.
    pub async fn cancel_run(&self, run_id: Uuid, epoch: u64) -> Result<(Option<String>, Token)> {
        let row = sqlx::query("CALL swf.cancel($1, $2)")
            .bind(run_id)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_status")?, token_from_row(&row)?))
    }

    /// Claims up to `qty` tasks from the pgmq queues `mqs` (in order).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_tasks(
        &self,
        mqs: &[String],
        qty: usize,
        node_id: &str,
        region: &str,
        pool: &str,
        leases: Leases,
        epoch: u64,
    ) -> Result<Vec<ClaimedTask>> {
        Ok(sqlx::query_as::<_, ClaimedTask>(
            "SELECT run_id, step_id, attempt, handler, timeout_ms, input
               FROM swf.claim_tasks($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(mqs)
        .bind(qty as i32)
        .bind(node_id)
        .bind(region)
        .bind(pool)
        .bind(leases.lease_ms)
        .bind(leases.margin_ms)
        .bind(epoch as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a batch of finished attempts (completions and failures), one
    /// round trip per kind present. Results come back in input order.
    pub async fn finish_tasks(
        &self,
        items: &[(AttemptRef, Finish)],
        leases: Leases,
        epoch: u64,
    ) -> Result<Vec<FinishResult>> {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (a, f) in items {
            match f {
                Finish::Completed(output) => done.push(serde_json::json!({
                    "run_id": a.run_id, "step_id": a.step_id, "attempt": a.attempt, "output": output,
                })),
                Finish::Failed { error, timed_out } => failed.push(serde_json::json!({
                    "run_id": a.run_id, "step_id": a.step_id, "attempt": a.attempt, "error": error,
                    "outcome": if *timed_out { "timed_out" } else { "failed" },
                })),
            }
        }
        // One statement, so one round trip and one implicit transaction: a
        // mixed batch commits both halves together, and an answer is never
        // an error for work that was in fact recorded. Both functions take
        // an empty array.
        let rows = sqlx::query(
            "SELECT run_id, step_id, attempt, result FROM swf.complete_tasks($1, $2)
             UNION ALL
             SELECT run_id, step_id, attempt, result FROM swf.fail_tasks($3, $2, $4, $5)",
        )
        .bind(Value::Array(done))
        .bind(epoch as i64)
        .bind(Value::Array(failed))
        .bind(leases.backoff_base_ms)
        .bind(leases.backoff_cap_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut answers = std::collections::HashMap::new();
        collect_results(rows, &mut answers)?;
        // Duplicates within one batch get the later answer ("stale"), which
        // is exactly what the engine said to the second report.
        Ok(items
            .iter()
            .map(|(a, _)| answers.get(a).copied().unwrap_or(FinishResult::Stale))
            .collect())
    }

    /// Extends the leases of running attempts; returns those still current.
    pub async fn extend_tasks(
        &self,
        items: &[AttemptRef],
        leases: Leases,
        epoch: u64,
    ) -> Result<Vec<AttemptRef>> {
        Ok(sqlx::query_as::<_, AttemptRef>(
            "SELECT run_id, step_id, attempt FROM swf.extend_tasks($1, $2, $3, $4)",
        )
        .bind(sqlx::types::Json(items))
        .bind(leases.lease_ms)
        .bind(leases.margin_ms)
        .bind(epoch as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gives claimed attempts back to the queue (executor shutdown).
    pub async fn release_tasks(&self, items: &[AttemptRef], epoch: u64) -> Result<i32> {
        Ok(sqlx::query_scalar("SELECT swf.release_tasks($1, $2)")
            .bind(sqlx::types::Json(items))
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?)
    }

    /// A run's status or lineage document (DESIGN section 6), or None.
    pub async fn run_document(&self, run_id: Uuid, kind: RunDoc) -> Result<Option<Value>> {
        let sql = match kind {
            RunDoc::Status => "SELECT swf.run_status($1)",
            RunDoc::Lineage => "SELECT swf.run_lineage($1)",
        };
        Ok(sqlx::query_scalar(sql)
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Runs newest first, optionally filtered by status, after a cursor
    /// `(created_at, run_id)` of the previous page's last row.
    pub async fn list_runs(
        &self,
        status: Option<&str>,
        limit: i64,
        after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    ) -> Result<Vec<RunSummary>> {
        let (after_ts, after_id) = match after {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        Ok(sqlx::query_as::<_, RunSummary>(
            "SELECT run_id, goal, status, created_at FROM swf.runs
              WHERE ($1::text IS NULL OR status = $1)
                AND ($2::timestamptz IS NULL OR (created_at, run_id) < ($2, $3))
              ORDER BY created_at DESC, run_id DESC
              LIMIT $4",
        )
        .bind(status)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Upserts this node's heartbeat row.
    pub async fn heartbeat(&self, n: &NodeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO swf.nodes (node_id, node_type, roles, region, api_url, pools, version,
                                    started_at, last_heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replay lag per standby (by application_name) as the primary measures
    /// it; a caught-up, idle standby reports 0.
    pub async fn replication_lags(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT application_name,
                    coalesce(floor(extract(epoch FROM replay_lag) * 1000), 0)::bigint
               FROM pg_stat_replication",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
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

    /// Creates the pgmq queues an executor polls (idempotent).
    pub async fn ensure_queues(&self, mqs: &[String]) -> Result<()> {
        for mq in mqs {
            sqlx::query("SELECT swf.ensure_queue($1)")
                .bind(mq)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Visible (ready) messages per pgmq queue.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT queue_name, queue_length FROM pgmq.metrics_all()")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Number of runs per status.
    pub async fn runs_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, count(*) FROM swf.runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// A listener on the channels that wake pollers of `mqs`.
    pub async fn listen(&self, mqs: &[String]) -> Result<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        let channels: Vec<String> = mqs.iter().map(|m| notify_channel(m)).collect();
        l.listen_all(channels.iter().map(String::as_str)).await?;
        Ok(l)
    }

    /// Runs `sql` as is (test and dev helpers only: creating databases).
    pub async fn execute_admin(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// True when a database of this name exists on the server.
    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// The NOTIFY channel that wakes pollers of pgmq queue `mq`.
pub fn notify_channel(mq: &str) -> String {
    format!("swf_{mq}")
}

fn token_from_row(row: &sqlx::postgres::PgRow) -> Result<Token> {
    let epoch: i64 = row.try_get("p_epoch")?;
    let lsn: String = row.try_get("p_lsn")?;
    Ok(Token {
        epoch: epoch as u64,
        lsn: parse_lsn(&lsn)?,
    })
}

fn collect_results(
    rows: Vec<sqlx::postgres::PgRow>,
    out: &mut std::collections::HashMap<AttemptRef, FinishResult>,
) -> Result<()> {
    for r in rows {
        let a = AttemptRef {
            run_id: r.try_get(0)?,
            step_id: r.try_get(1)?,
            attempt: r.try_get(2)?,
        };
        let res = match r.try_get::<String, _>(3)?.as_str() {
            "completed" => FinishResult::Completed,
            "retrying" => FinishResult::Retrying,
            "failed" => FinishResult::Failed,
            _ => FinishResult::Stale,
        };
        out.insert(a, res);
    }
    Ok(())
}
