//! The engine's transitions: storing runs, claiming, finishing, extending
//! and releasing tasks, cancelling runs. Each is one round trip to a
//! PL/pgSQL entry point of the same name in `migrations/` (where the state
//! machine is documented; claims go through `swf.claim_tasks_reusing`),
//! and each carries the node's epoch.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use super::conn::{parse_lsn, Result, Store, StoreError};
use crate::model::token::Token;
use crate::model::workflow::PlannedStep;

/// One control of a run ([`Store::run_controls`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RunControl {
    Cancel {
        run_id: Uuid,
    },
    Pause {
        run_id: Uuid,
    },
    Resume {
        run_id: Uuid,
    },
    Signal {
        run_id: Uuid,
        name: String,
        payload: Option<Value>,
    },
}

impl RunControl {
    pub fn run_id(&self) -> Uuid {
        match self {
            RunControl::Cancel { run_id }
            | RunControl::Pause { run_id }
            | RunControl::Resume { run_id }
            | RunControl::Signal { run_id, .. } => *run_id,
        }
    }
}

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
    /// When the root steps become ready (None: at once).
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The run's priority (its steps carry their own).
    pub priority: i32,
    /// The run's concurrency key and limit (its steps carry their own).
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<i32>,
    pub steps: Vec<PlannedStep>,
}

impl NewRun {
    /// Whether every step is ready at submit: no dependencies, map, signal
    /// wait, delay, run_at or concurrency key (`swf.submit_plain` stores
    /// such runs in one statement).
    pub fn is_plain(&self) -> bool {
        self.run_at.is_none()
            && self.concurrency_key.is_none()
            && self.steps.iter().all(|s| {
                s.depends_on.is_empty()
                    && s.map.is_none()
                    && s.wait_signal.is_none()
                    && s.delay_ms == 0
                    && s.concurrency_key.is_none()
            })
    }
}

/// The one queue of a batch of plain runs ([`NewRun::is_plain`]) whose
/// steps all go there: `swf.submit_plain` stores it in one statement, and
/// with a pool's offer starts its steps there too. None: any other batch.
pub fn plain_mq(runs: &[NewRun]) -> Option<&str> {
    let first = runs.first()?.steps.first()?.mq.as_str();
    runs.iter()
        .all(|r| r.is_plain() && r.steps.iter().all(|s| s.mq == first))
        .then_some(first)
}

/// What storing a run did: `created` is false when the idempotency key
/// matched an existing run, whose id is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: Uuid,
    pub created: bool,
}

/// A claim made with a submit ([`Store::submit_and_claim`]): up to `qty`
/// tasks of the queues `mqs` (in order) for pool `pool` of node `node_id`.
#[derive(Debug, Clone)]
pub struct EagerClaim {
    pub mqs: Vec<String>,
    pub qty: usize,
    pub node_id: String,
    pub region: String,
    pub pool: String,
    pub leases: Leases,
    /// The handlers the claiming node runs beyond the built-ins, as
    /// [`Store::claim_tasks`] takes them.
    pub handlers: String,
    /// A start offer (`executor/handoff.rs`): a batch of plain runs on one
    /// of `mqs` stores its first `qty` steps started instead of claiming
    /// through the queues.
    pub start: bool,
}

/// Where a claim is recorded: the executor's node, region and pool.
#[derive(Debug, Clone, Copy)]
pub struct Claimer<'a> {
    pub node_id: &'a str,
    pub region: &'a str,
    pub pool: &'a str,
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
    /// The step's concurrency key, when the claim says (see
    /// [`Store::claim_tasks_reusing`]); None: unkeyed, or not said.
    #[sqlx(default)]
    pub concurrency_key: Option<String>,
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

/// Identifies one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::FromRow)]
pub struct AttemptRef {
    pub run_id: Uuid,
    pub step_id: String,
    pub attempt: i32,
}

impl AttemptRef {
    /// How [`Store::claim_tasks_reusing`] names an attempt whose handler
    /// ended: `run_id:attempt:step_id` (the key slot's occupant, as the
    /// database spells it).
    pub fn ended_name(&self) -> String {
        format!("{}:{}:{}", self.run_id, self.attempt, self.step_id)
    }
}

/// How an attempt ended, as reported by an executor.
#[derive(Debug, Clone)]
pub enum Finish {
    /// The handler's output, serialized once ([`Finish::completed`]): what
    /// output limits measure is what the database is sent.
    Completed(Box<RawValue>),
    /// The handler failed or timed out; retried while attempts are left.
    Failed { error: Value, timed_out: bool },
    /// A failure a retry cannot fix (its output was over
    /// `limits.max_output_bytes`): the step fails at once, whatever
    /// attempts are left.
    Fatal { error: Value },
}

impl Finish {
    /// A completion with `output`, NUL characters replaced (see
    /// [`Finish::sanitized`]) and serialized.
    pub fn completed(output: Value) -> Finish {
        let raw = serde_json::value::to_raw_value(&strip_nul(output))
            .expect("a JSON value always serializes");
        Finish::Completed(raw)
    }

    /// Bytes of a completion's serialized output (0 for a failure).
    pub fn output_bytes(&self) -> usize {
        match self {
            Finish::Completed(raw) => raw.get().len(),
            _ => 0,
        }
    }

    /// PostgreSQL's jsonb cannot hold NUL characters; a handler's output or
    /// error that has some gets them replaced by U+FFFD rather than failing
    /// the report (and every other report batched with it). Outputs are
    /// replaced when made ([`Finish::completed`]), errors here.
    pub fn sanitized(self) -> Finish {
        match self {
            Finish::Completed(raw) => Finish::Completed(raw),
            Finish::Failed { error, timed_out } => Finish::Failed {
                error: strip_nul(error),
                timed_out,
            },
            Finish::Fatal { error } => Finish::Fatal {
                error: strip_nul(error),
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

/// Executor-side timing parameters passed to claim/extend/fail.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    pub lease_ms: i32,
    pub margin_ms: i32,
    pub backoff_base_ms: i32,
    pub backoff_cap_ms: i32,
}

impl Store {
    /// Stores a batch of validated runs in one transaction and one round
    /// trip. Returns one [`Submitted`] per input (same order) and the token.
    ///
    /// With `max_queues`, the pgmq queues of every step are created first
    /// where missing, and the batch is refused ([`StoreError::TooManyQueues`],
    /// nothing stored) when that would pass `max_queues` queues in the
    /// database. Without (tools, tests), queues are created uncapped as
    /// steps become ready.
    pub async fn submit_runs(
        &self,
        runs: &[NewRun],
        max_queues: Option<usize>,
        epoch: u64,
    ) -> Result<(Vec<Submitted>, Token)> {
        let Some(max) = max_queues else {
            let row = sqlx::query("CALL swf.submit_runs($1, $2)")
                .bind(sqlx::types::Json(runs))
                .bind(epoch as i64)
                .fetch_one(&self.pool)
                .await?;
            return submitted_from_row(&row);
        };
        let (out, token, _) = self.submit_and_claim(runs, max, None, epoch).await?;
        Ok((out, token))
    }

    /// [`Store::submit_runs`] with the queue cap that also claims, with
    /// `claim`, in the same transaction, up to `claim.qty` tasks of
    /// `claim.mqs` for the calling node's pool: a hybrid node starting what
    /// it submits without a second round trip. A claim that fails claims
    /// nothing and leaves the submit stored. Without `claim`, no task.
    pub async fn submit_and_claim(
        &self,
        runs: &[NewRun],
        max_queues: usize,
        claim: Option<&EagerClaim>,
        epoch: u64,
    ) -> Result<(Vec<Submitted>, Token, Vec<ClaimedTask>)> {
        let plain = plain_mq(runs);
        let spec = claim.map(|c| {
            serde_json::json!({
                "mqs": c.mqs, "qty": c.qty, "node_id": c.node_id,
                "region": c.region, "pool": c.pool,
                "lease_ms": c.leases.lease_ms, "margin_ms": c.leases.margin_ms,
                "handlers": c.handlers, "start": c.start,
            })
        });
        // A batch of plain runs all on one queue is stored in one statement.
        let q = sqlx::query(if plain.is_some() {
            "CALL swf.submit_plain($1, $2, $3, $4, $5)"
        } else {
            "CALL swf.submit_and_claim($1, $2, $3, $4, $5)"
        })
        .bind(sqlx::types::Json(runs))
        .bind(epoch as i64);
        let q = match plain {
            Some(mq) => q.bind(mq),
            None => {
                let mqs: std::collections::BTreeSet<&str> = runs
                    .iter()
                    .flat_map(|r| r.steps.iter().map(|s| s.mq.as_str()))
                    .collect();
                q.bind(mqs.into_iter().collect::<Vec<_>>())
            }
        };
        let row = q
            .bind(i32::try_from(max_queues).unwrap_or(i32::MAX))
            .bind(spec)
            .fetch_one(&self.pool)
            .await?;
        let (out, token) = submitted_from_row(&row)?;
        let claimed: Value = row.try_get("p_claimed")?;
        let bad = || StoreError::Database("submit_and_claim: a malformed claimed task".into());
        let tasks = claimed
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|t| {
                Ok(ClaimedTask {
                    run_id: t[0].as_str().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
                    step_id: t[1].as_str().ok_or_else(bad)?.to_string(),
                    attempt: t[2].as_i64().ok_or_else(bad)? as i32,
                    handler: t[3].as_str().ok_or_else(bad)?.to_string(),
                    timeout_ms: t[4].as_i64().ok_or_else(bad)? as i32,
                    input: t[5].clone(),
                    concurrency_key: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out, token, tasks))
    }

    /// Cancels a run. Returns its status afterwards (None: unknown run) and the token.
    pub async fn cancel_run(&self, run_id: Uuid, epoch: u64) -> Result<(Option<String>, Token)> {
        let row = sqlx::query("CALL swf.cancel_run($1, $2)")
            .bind(run_id)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_status")?, token_from_row(&row)?))
    }

    /// Retries a failed or cancelled run: its steps that did not complete
    /// run again. Returns its status afterwards (`running` when retried;
    /// None: unknown run) and the token.
    pub async fn retry_run(&self, run_id: Uuid, epoch: u64) -> Result<(Option<String>, Token)> {
        let row = sqlx::query("CALL swf.retry_run($1, $2)")
            .bind(run_id)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_status")?, token_from_row(&row)?))
    }

    /// Pauses (`paused`) or resumes a run. Returns its status afterwards
    /// (`paused`/`running` when done or already so; any other status is
    /// left as it is; None: unknown run) and the token.
    pub async fn set_run_paused(
        &self,
        run_id: Uuid,
        paused: bool,
        epoch: u64,
    ) -> Result<(Option<String>, Token)> {
        let row = sqlx::query("CALL swf.set_run_paused($1, $2, $3)")
            .bind(run_id)
            .bind(paused)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_status")?, token_from_row(&row)?))
    }

    /// Sends signal `name` with `payload` to a run: the first step waiting
    /// for it completes, or it is kept for one that waits later. Returns
    /// the run's status before it (`running`/`paused`: stored; another:
    /// nothing stored; None: unknown run) and the token.
    pub async fn send_signal(
        &self,
        run_id: Uuid,
        name: &str,
        payload: Option<&Value>,
        epoch: u64,
    ) -> Result<(Option<String>, Token)> {
        let row = sqlx::query("CALL swf.send_signal($1, $2, $3, $4)")
            .bind(run_id)
            .bind(name)
            .bind(payload.map(sqlx::types::Json))
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_status")?, token_from_row(&row)?))
    }

    /// Applies many run controls in one transaction, each as its single
    /// call does ([`Store::cancel_run`], [`Store::set_run_paused`],
    /// [`Store::send_signal`]). Returns each one's status, in order, and the
    /// token of the one commit.
    pub async fn run_controls(
        &self,
        ops: &[RunControl],
        epoch: u64,
    ) -> Result<(Vec<Option<String>>, Token)> {
        let row = sqlx::query("CALL swf.run_controls($1, $2)")
            .bind(sqlx::types::Json(ops))
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        let sqlx::types::Json(statuses): sqlx::types::Json<Vec<Option<String>>> =
            row.try_get("p_ops")?;
        if statuses.len() != ops.len() {
            return Err(StoreError::Database(format!(
                "run_controls answered {} statuses for {} controls",
                statuses.len(),
                ops.len()
            )));
        }
        Ok((statuses, token_from_row(&row)?))
    }

    /// Fails up to `limit` waiting steps whose timeout passed (`timed_out`);
    /// returns the runs that failed.
    pub async fn expire_waits(&self, limit: i32, epoch: u64) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar("SELECT swf.expire_waits($1, $2)")
            .bind(epoch as i64)
            .bind(limit)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Cancels every run of `status` matching the filter (an exact `goal`,
    /// created at or after `after` and before `before`), in batches of 500
    /// per transaction. Returns the runs it cancelled and the token.
    pub async fn cancel_runs(
        &self,
        status: &str,
        goal: Option<&str>,
        after: Option<chrono::DateTime<chrono::Utc>>,
        before: Option<chrono::DateTime<chrono::Utc>>,
        epoch: u64,
    ) -> Result<(Vec<Uuid>, Token)> {
        let row = sqlx::query("CALL swf.cancel_runs($1, $2, $3, $4, $5)")
            .bind(status)
            .bind(goal)
            .bind(after)
            .bind(before)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("p_ids")?, token_from_row(&row)?))
    }

    /// Claims up to `qty` tasks from the pgmq queues `mqs` (in order): any
    /// task, or with `handlers` (`,` then the handlers the node runs beyond
    /// the built-ins, comma-separated) only those the node can run. Each
    /// task says its concurrency key (see [`Store::claim_tasks_reusing`]).
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
        handlers: Option<&str>,
    ) -> Result<Vec<ClaimedTask>> {
        let by = Claimer {
            node_id,
            region,
            pool,
        };
        self.claim_tasks_reusing(mqs, qty, by, leases, epoch, handlers, &[])
            .await
    }

    /// [`Store::claim_tasks`], where the slots of concurrency keys held by
    /// `ended` (attempts of this node whose handlers have ended and whose
    /// outcomes are not yet recorded, as [`AttemptRef::ended_name`] names them)
    /// count as free; each claimed task says its concurrency key.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_tasks_reusing(
        &self,
        mqs: &[String],
        qty: usize,
        by: Claimer<'_>,
        leases: Leases,
        epoch: u64,
        handlers: Option<&str>,
        ended: &[String],
    ) -> Result<Vec<ClaimedTask>> {
        let q = sqlx::query_as::<_, ClaimedTask>(
            "SELECT run_id, step_id, attempt, handler, timeout_ms, input, concurrency_key
               FROM swf.claim_tasks_reusing($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(handlers)
        .bind(ended)
        .bind(mqs)
        .bind(qty as i32);
        Ok(bind_claimer(q, by, leases, epoch)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records a batch of finished attempts (completions and failures) in
    /// one round trip. Results come back in input order.
    pub async fn finish_tasks<F: std::borrow::Borrow<Finish>>(
        &self,
        items: &[(AttemptRef, F)],
        leases: Leases,
        epoch: u64,
    ) -> Result<Vec<FinishResult>> {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (a, f) in items {
            let (error, outcome, retry) = match f.borrow() {
                Finish::Completed(output) => {
                    done.push(DoneItem {
                        run_id: a.run_id,
                        step_id: &a.step_id,
                        attempt: a.attempt,
                        output,
                    });
                    continue;
                }
                Finish::Failed { error, timed_out } => {
                    let outcome = if *timed_out { "timed_out" } else { "failed" };
                    (error, outcome, true)
                }
                Finish::Fatal { error } => (error, "failed", false),
            };
            failed.push(FailedItem {
                run_id: a.run_id,
                step_id: &a.step_id,
                attempt: a.attempt,
                error,
                outcome,
                retry,
            });
        }
        // One call, so one round trip and one transaction: a mixed batch
        // commits both halves together, and an answer is never an error for
        // work that was in fact recorded. The procedure wakes the pollers of
        // queues that got dependents after its COMMIT (see migration
        // 20261203000007). Both halves take an empty array.
        let row = sqlx::query("CALL swf.finish_tasks($1, $2, $3, $4, $5)")
            .bind(sqlx::types::Json(&done))
            .bind(sqlx::types::Json(&failed))
            .bind(epoch as i64)
            .bind(leases.backoff_base_ms)
            .bind(leases.backoff_cap_ms)
            .fetch_one(&self.pool)
            .await?;
        let rows: sqlx::types::Json<Vec<(Uuid, String, i32, String)>> = row.try_get("p_results")?;
        let mut answers = std::collections::HashMap::new();
        collect_results(rows.0, &mut answers);
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
}

/// One completion as `swf.complete_tasks` reads it; the output goes as it
/// was serialized.
#[derive(Serialize)]
struct DoneItem<'a> {
    run_id: Uuid,
    step_id: &'a str,
    attempt: i32,
    output: &'a RawValue,
}

/// One failure as `swf.fail_tasks` reads it (`retry` only when false).
#[derive(Serialize)]
struct FailedItem<'a> {
    run_id: Uuid,
    step_id: &'a str,
    attempt: i32,
    error: &'a Value,
    outcome: &'static str,
    #[serde(skip_serializing_if = "is_true")]
    retry: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Binds where a claim is recorded, its leases and the epoch, in the order
/// the claim functions take them after their own first arguments.
pub(super) fn bind_claimer<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    by: Claimer<'q>,
    leases: Leases,
    epoch: u64,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(by.node_id)
        .bind(by.region)
        .bind(by.pool)
        .bind(leases.lease_ms)
        .bind(leases.margin_ms)
        .bind(epoch as i64)
}

/// The runs stored and the token of a submit procedure's answer.
fn submitted_from_row(row: &sqlx::postgres::PgRow) -> Result<(Vec<Submitted>, Token)> {
    let result: Value = row.try_get("p_runs")?;
    let token = token_from_row(row)?;
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

/// The consistency token a procedure returns after its COMMIT.
fn token_from_row(row: &sqlx::postgres::PgRow) -> Result<Token> {
    let epoch: i64 = row.try_get("p_epoch")?;
    let lsn: String = row.try_get("p_lsn")?;
    Ok(Token {
        epoch: epoch as u64,
        lsn: parse_lsn(&lsn)?,
    })
}

fn collect_results(
    rows: Vec<(Uuid, String, i32, String)>,
    out: &mut std::collections::HashMap<AttemptRef, FinishResult>,
) {
    for (run_id, step_id, attempt, result) in rows {
        let res = match result.as_str() {
            "completed" => FinishResult::Completed,
            "retrying" => FinishResult::Retrying,
            "failed" => FinishResult::Failed,
            _ => FinishResult::Stale,
        };
        out.insert(
            AttemptRef {
                run_id,
                step_id,
                attempt,
            },
            res,
        );
    }
}
