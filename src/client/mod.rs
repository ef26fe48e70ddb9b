//! The client role: submit, batch submit ([`batch`]), status, lineage, list,
//! cancel, and run control ([`control`]: pause, resume, signals).
//!
//! Submissions are validated here (pure), then stored through a
//! micro-batcher so concurrent submits share round trips; a batch submit is
//! stored whole, in one transaction of its own. Reads go where the
//! router says. Errors are [`ClientError`]s, which the API maps to codes.
//!
//! Tokens reach this module verified (the API checks their MAC with the
//! router's key before anything else), and even then they never set state:
//! the node's epoch moves only when a database shows a newer one, and a
//! cached document's version is the database's position ([`read_version`]).

pub mod batch;
pub mod cluster;
mod control;
mod handlers;
mod queues;
mod schedules;

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::api::wire::BulkCancelRequest;
use crate::batch::{Arrival, Batcher};
use crate::executor::handlers::Registry;
use crate::executor::Executor;
use crate::model::token::Lsn;
use crate::model::token::Token;
use crate::model::workflow::{self, Limits, ValidationError, WorkflowSpec};
use crate::router::cache::CachedDoc;
use crate::router::{LocalState, ReadPlan, ReadSource, Router};
use crate::store::{ErrorClass, NewRun, RunControl, RunDoc, RunSummary, StoreError, Submitted};

/// Client-side failures, each with a stable API code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    InvalidWorkflow(String),
    #[error("{0}")]
    UnknownHandler(String),
    #[error("{0}")]
    UnknownRegion(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("no writable primary: {0}")]
    WriteUnavailable(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    TooManyQueues(String),
    #[error("{0}")]
    AlreadyExists(String),
}

impl ClientError {
    fn from_write(e: StoreError) -> Self {
        match e {
            StoreError::TooManyQueues(m) => ClientError::TooManyQueues(m),
            e if e.is_transient() => ClientError::WriteUnavailable(e.to_string()),
            e => ClientError::Internal(e.to_string()),
        }
    }

    fn from_read(e: StoreError) -> Self {
        match e.class() {
            // A lost connection, or a replica cancelling a read that
            // conflicts with replay (a serialization failure).
            ErrorClass::Path | ErrorClass::Conflict => ClientError::Unavailable(e.to_string()),
            _ => ClientError::Internal(e.to_string()),
        }
    }
}

/// What a successful submit returns.
#[derive(Debug, Clone)]
pub struct SubmitOutcome {
    pub run_id: Uuid,
    /// False when the idempotency key matched an earlier run.
    pub created: bool,
    pub token: Token,
}

/// A page of runs plus the cursor of the next page.
#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub next: Option<String>,
}

type SubmitBatcher = Batcher<NewRun, (Submitted, Token), ClientError>;
/// Cancels, pauses, resumes and signals of concurrent callers, one
/// transaction per batch (`swf.run_controls`).
type ControlBatcher = Batcher<RunControl, (Option<String>, Token), ClientError>;

/// The client role of one node.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
    registry: Registry,
    limits: Limits,
    node_id: String,
    submitter: SubmitBatcher,
    controls: ControlBatcher,
    advertised: AdvertisedCache,
}

/// (queue, handler) pairs the cluster's executors advertise (`handlers.rs`).
type Advertised = Arc<std::collections::HashSet<(String, String)>>;

/// The advertised set as last read, and when (clones share it).
#[derive(Clone, Default)]
struct AdvertisedCache {
    cached: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Advertised)>>>,
}

const MAX_SUBMIT_BATCH: usize = 64;
/// How long a write keeps retrying while the primary moves before the
/// caller gets 503 `write_unavailable`. Idempotency keys make its retry safe.
const WRITE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one attempt of a bulk write (a bulk cancel) may take.
const BULK_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(300);
/// Submit batches in flight at once near the primary. One, so that
/// concurrent submits gather into larger batches: each call has a fixed
/// cost in PostgreSQL that dominates a one-run batch. Measured with `swf
/// bench --shapes one` (1-step submit + completion): 2 in flight gave 738
/// workflows/s with 8 submitters and 2,183/s with 64, against 586/s and
/// 1,683/s with 8 in flight; on 2026-12-05 one in flight gave 715-768/s with
/// 8 and 2,236-2,480/s with 64, against 604-701/s and 1,940-2,161/s with 2.
const SUBMIT_BATCHES_IN_FLIGHT: usize = 1;
/// With one submit batch in flight, a batch smaller than the previous one
/// waits up to this long (and no longer than the previous batch took) for
/// the previous batch's callers to come back (`batch`'s gathering). With 8
/// HTTP connections each waiting for its answer before its next submit, the
/// callers had split into two groups of about 4 that took turns, each batch
/// paying a submit's fixed cost. Measured 2026-12-05 (`swf bench --shapes
/// one --concurrency 8 --workflows 10000`, alternating builds): 1,382-1,454
/// workflows/s against 1,019-1,188, submit p50 4.8-5.2 ms against 6.2-7.3;
/// against a separate `swf dev` 1,182-1,267 against 1,093-1,094. 64
/// submitters and light-load latency did not move.
const SUBMIT_GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// A node far from the primary keeps more submit batches in flight: one
/// per this much of the last batch's round trip (at 80 ms, 4), up to
/// [`MAX_SUBMIT_BATCHES_IN_FLIGHT`]. Its callers wait a round trip each,
/// so without more batches on the way the round trip, not the primary,
/// would bound its submits.
const ROUND_TRIP_PER_BATCH_IN_FLIGHT: std::time::Duration = std::time::Duration::from_millis(20);
const MAX_SUBMIT_BATCHES_IN_FLIGHT: usize = 32;

/// Submit batches to keep in flight after one took `round_trip`.
fn in_flight_for(round_trip: std::time::Duration) -> usize {
    let n = round_trip.as_micros() / ROUND_TRIP_PER_BATCH_IN_FLIGHT.as_micros().max(1);
    (n as usize).clamp(SUBMIT_BATCHES_IN_FLIGHT, MAX_SUBMIT_BATCHES_IN_FLIGHT)
}

impl Client {
    /// The submit batcher's task joins `tasks` (the node's supervised set).
    /// With the node's own `executor` (a hybrid node), a submit batch also
    /// claims tasks for its free slots in the same transaction and hands
    /// them over (see `executor/handoff.rs`).
    pub fn new(
        router: Arc<Router>,
        registry: Registry,
        limits: Limits,
        node_id: &str,
        executor: Option<Arc<Executor>>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Client {
        let r = router.clone();
        let max_queues = limits.max_queues;
        let in_flight = crate::batch::InFlight::new(SUBMIT_BATCHES_IN_FLIGHT);
        let limit = in_flight.clone();
        let submitter = Batcher::start_with_arrival(
            MAX_SUBMIT_BATCH,
            in_flight,
            Some(SUBMIT_GATHER),
            // A batch refused for a reason other than the write path (e.g.
            // one run PostgreSQL cannot store, or whose new queues would
            // pass the cap) is submitted run by run.
            |e: &ClientError| matches!(e, ClientError::Internal(_) | ClientError::TooManyQueues(_)),
            move |runs: Vec<NewRun>, arrival: Arrival| {
                let r = r.clone();
                let ex = executor.clone();
                let limit = limit.clone();
                async move {
                    let runs = &runs;
                    // A plain batch on a queue of our pool starts its steps
                    // as it stores them; any other claims only when it
                    // reached an idle batcher (see `executor/handoff.rs`):
                    // under load the pool's own claims keep up while the
                    // serial submit stays short.
                    let eager = ex.as_ref().and_then(|e| {
                        let starts = crate::store::plain_mq(runs).and_then(|mq| {
                            let steps = runs.iter().map(|r| r.steps.len()).sum();
                            e.eager_claim(Some((mq, steps)))
                        });
                        match arrival {
                            Arrival::Idle => starts.or_else(|| e.eager_claim(None)),
                            Arrival::Behind => starts,
                        }
                    });
                    let claim = eager.as_ref().map(|(_, c)| c);
                    let sent = tokio::time::Instant::now();
                    let mut stored = r
                        .write(WRITE_RETRY, |store, epoch| async move {
                            store.submit_and_claim(runs, max_queues, claim, epoch).await
                        })
                        .await;
                    // Handed over even when none or failed: the pool then
                    // publishes its next offer.
                    if let (Some(ex), Some((pool, _))) = (&ex, &eager) {
                        let tasks = stored
                            .as_mut()
                            .map(|(_, _, t)| std::mem::take(t))
                            .unwrap_or_default();
                        ex.hand_off(*pool, tasks, sent);
                    }
                    let took = sent.elapsed();
                    metrics::histogram!("swf_submit_round_trip_seconds").record(took);
                    limit.set(in_flight_for(took));
                    metrics::histogram!("swf_submit_batch_size").record(runs.len() as f64);
                    let (out, token, _) = stored.map_err(ClientError::from_write)?;
                    r.observe_epoch(token.epoch);
                    Ok(out.into_iter().map(|s| (s, token)).collect())
                }
            },
            tasks,
        );
        let controls = Self::start_controls(router.clone(), tasks);
        Client {
            router,
            registry,
            limits,
            node_id: node_id.to_string(),
            submitter,
            controls,
            advertised: AdvertisedCache::default(),
        }
    }

    /// Validates and stores a workflow. A 2xx-worthy answer means the run
    /// is committed on the primary.
    pub async fn submit(&self, spec: WorkflowSpec) -> Result<SubmitOutcome, ClientError> {
        let advertised = self.advertised_for(&[&spec]).await?;
        let run = self.plan(spec, advertised.as_ref())?;
        let (s, token) = self
            .submitter
            .call(run)
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
        Ok(SubmitOutcome {
            run_id: s.run_id,
            created: s.created,
            token,
        })
    }

    /// A workflow made ready to store (pure): its decomposer expanded, then
    /// validated, with a new run id. Submit and the batch submit share it,
    /// so both refuse the same workflows with the same words.
    fn plan(
        &self,
        mut spec: WorkflowSpec,
        advertised: Option<&Advertised>,
    ) -> Result<NewRun, ClientError> {
        if spec.steps.is_empty() {
            if let Some(name) = spec.decomposer.clone() {
                let d = self.registry.decomposer(&name).ok_or_else(|| {
                    ClientError::InvalidWorkflow(format!("unknown decomposer `{name}`"))
                })?;
                spec.steps = d.decompose(&spec.goal, spec.input.as_ref()).map_err(|e| {
                    ClientError::InvalidWorkflow(format!("decomposer `{name}` failed: {e}"))
                })?;
            }
        }
        let steps = workflow::validate(
            &spec,
            &self.limits,
            |h, q| self.handler_known(advertised, h, q),
            |r| self.router.region_names().iter().any(|x| x == r),
        )
        .map_err(|e| match e {
            ValidationError::Invalid(m) => ClientError::InvalidWorkflow(m),
            e @ ValidationError::UnknownHandler { .. } => {
                ClientError::UnknownHandler(e.to_string())
            }
            e @ ValidationError::UnknownRegion { .. } => ClientError::UnknownRegion(e.to_string()),
            e @ ValidationError::TooManyQueues { .. } => ClientError::TooManyQueues(e.to_string()),
        })?;
        let run_at =
            workflow::run_at(&spec).map_err(|e| ClientError::InvalidWorkflow(e.to_string()))?;
        Ok(NewRun {
            run_id: Uuid::now_v7(),
            run_at,
            priority: spec.priority.unwrap_or(0) as i32,
            concurrency_key: spec.concurrency.as_ref().map(|c| c.key.clone()),
            concurrency_limit: spec.concurrency.as_ref().map(|c| c.limit as i32),
            goal: spec.goal,
            input: spec.input,
            idempotency_key: spec.idempotency_key,
            decomposer: spec.decomposer,
            submitted_by: self.node_id.clone(),
            submitted_region: self.router.region().to_string(),
            steps,
        })
    }

    /// The status document of a run and where it was read from.
    pub async fn status(
        &self,
        run_id: Uuid,
        token: Option<&Token>,
    ) -> Result<(Arc<Value>, ReadSource), ClientError> {
        self.document(run_id, RunDoc::Status, token).await
    }

    /// The lineage document of a run and where it was read from.
    pub async fn lineage(
        &self,
        run_id: Uuid,
        token: Option<&Token>,
    ) -> Result<(Arc<Value>, ReadSource), ClientError> {
        self.document(run_id, RunDoc::Lineage, token).await
    }

    /// Refuses a (verified) token whose epoch no database shows: a caller's
    /// token never moves this node's epoch, it only makes it look for the
    /// primary again (a database restored from before the token's write).
    async fn check_token(&self, token: Option<&Token>) -> Result<(), ClientError> {
        match token {
            Some(t) if !self.router.epoch_reached(t.epoch).await => {
                Err(ClientError::InvalidToken(format!(
                    "swf-consistency-token names epoch {}, but no database of the cluster \
                     shows an epoch past {}",
                    t.epoch,
                    self.router.epoch()
                )))
            }
            _ => Ok(()),
        }
    }

    async fn document(
        &self,
        run_id: Uuid,
        kind: RunDoc,
        token: Option<&Token>,
    ) -> Result<(Arc<Value>, ReadSource), ClientError> {
        self.check_token(token).await?;
        // Documents are shared with the cache, never copied.
        let cache = self.router.cache();
        let cached = cache.get(run_id, kind, token).await;
        let plan = self.router.plan(token, cached.as_ref());
        if let (ReadPlan::Cache, Some(c)) = (plan, cached) {
            metrics::counter!("swf_reads_total", "source" => "cache").increment(1);
            return Ok((c.doc, ReadSource::Cache));
        }
        let epoch_before = self.router.epoch();
        let (source, (epoch, lsn), doc) = self
            .read_planned(plan, token, |store| async move {
                store.run_document(run_id, kind).await
            })
            .await?;
        let doc = doc.ok_or_else(|| ClientError::NotFound(format!("run {run_id} not found")))?;
        let bytes = crate::router::cache::held_bytes(&doc);
        let doc = Arc::new(doc);
        let terminal = doc["status"].as_str().is_some_and(|s| s != "running");
        // A read that straddled an epoch change is not kept: the change may
        // have cleared the cache before this put.
        if self.router.epoch() == epoch_before {
            let entry = CachedDoc {
                doc: doc.clone(),
                epoch,
                lsn,
                terminal,
                bytes,
                stored_at: std::time::Instant::now(),
            };
            cache.put(run_id, kind, entry).await;
        }
        Ok((doc, source))
    }

    /// Runs a read where `plan` says. Returns the source, the version the
    /// data is known to reflect ([`read_version`], for the cache), and the
    /// answer. A replica that does not know a run yet (no token, so it may
    /// lag) is asked again on the primary.
    async fn read_planned<T, F, Fut>(
        &self,
        plan: ReadPlan,
        token: Option<&Token>,
        read: F,
    ) -> Result<(ReadSource, (u64, Lsn), Option<T>), ClientError>
    where
        F: Fn(crate::store::Store) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        let local_ok = match plan {
            ReadPlan::Local(src) => Some(src),
            ReadPlan::WaitForReplica => match token {
                Some(t) if self.router.wait_for_token(t).await => Some(ReadSource::Replica),
                _ => None,
            },
            ReadPlan::Primary | ReadPlan::Cache => None,
        };
        if let Some(src) = local_ok {
            // Taken before the query: what it reflects at least.
            let version = read_version(src, &self.router.local_state(), self.router.epoch(), token);
            let got = read(self.router.local_store().clone())
                .await
                .map_err(ClientError::from_read)?;
            if got.is_some() || token.is_some() || src == ReadSource::Primary {
                metrics::counter!("swf_reads_total", "source" => src.as_str()).increment(1);
                return Ok((src, version, got));
            }
        }
        let version = read_version(
            ReadSource::Primary,
            &self.router.local_state(),
            self.router.epoch(),
            token,
        );
        let got = read(self.router.write_store())
            .await
            .map_err(ClientError::from_read)?;
        metrics::counter!("swf_reads_total", "source" => "primary").increment(1);
        Ok((ReadSource::Primary, version, got))
    }

    /// Lists runs newest first. `after` is the `next` cursor of a previous page.
    pub async fn list(
        &self,
        status: Option<&str>,
        limit: Option<i64>,
        after: Option<&str>,
        token: Option<&Token>,
    ) -> Result<(RunPage, ReadSource), ClientError> {
        if let Some(s) = status {
            if !["running", "completed", "failed", "cancelled"].contains(&s) {
                return Err(ClientError::InvalidRequest(format!(
                    "status must be one of running, completed, failed, cancelled (got `{s}`)"
                )));
            }
        }
        let limit = limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ClientError::InvalidRequest(
                "limit must be between 1 and 1000".into(),
            ));
        }
        let cursor = after.map(decode_cursor).transpose()?;
        self.check_token(token).await?;
        let plan = self.router.plan(token, None);
        let (source, _, runs) = self
            .read_planned(plan, token, |store| async move {
                store.list_runs(status, limit, cursor).await.map(Some)
            })
            .await?;
        let runs = runs.unwrap_or_default();
        let next = if runs.len() as i64 == limit {
            runs.last().map(|r| encode_cursor(r.created_at, r.run_id))
        } else {
            None
        };
        Ok((RunPage { runs, next }, source))
    }

    /// Retries a failed or cancelled run (its steps that did not complete
    /// run again); any other status is `invalid_state`.
    pub async fn retry(&self, run_id: Uuid) -> Result<Token, ClientError> {
        self.run_write(
            run_id,
            |store, epoch| async move { store.retry_run(run_id, epoch).await },
            |s| s == "running",
            |other| {
                format!("run {run_id} is {other}; only a failed or cancelled run can be retried")
            },
        )
        .await
    }

    /// The run-control batcher's task joins `tasks`. A batch the database
    /// refuses for one control's sake (a payload it cannot store) is sent
    /// again control by control.
    fn start_controls(router: Arc<Router>, tasks: &mut tokio::task::JoinSet<()>) -> ControlBatcher {
        let in_flight = crate::batch::InFlight::new(SUBMIT_BATCHES_IN_FLIGHT);
        let limit = in_flight.clone();
        Batcher::start(
            MAX_SUBMIT_BATCH,
            in_flight,
            |e: &ClientError| matches!(e, ClientError::Internal(_)),
            move |ops: Vec<RunControl>| {
                let (r, limit) = (router.clone(), limit.clone());
                async move {
                    let ops = &ops;
                    let sent = tokio::time::Instant::now();
                    let (statuses, token) = r
                        .write(WRITE_RETRY, |store, epoch| async move {
                            store.run_controls(ops, epoch).await
                        })
                        .await
                        .map_err(ClientError::from_write)?;
                    limit.set(in_flight_for(sent.elapsed()));
                    Ok(statuses.into_iter().map(|s| (s, token)).collect())
                }
            },
            tasks,
        )
    }

    /// A control of a run (cancel, pause, resume, signal), batched with
    /// other callers' into one transaction on the primary; then as
    /// [`Client::run_write`].
    pub(crate) async fn run_control(
        &self,
        op: RunControl,
        done: impl FnOnce(&str) -> bool,
        refused: impl FnOnce(&str) -> String,
    ) -> Result<Token, ClientError> {
        let run_id = op.run_id();
        let (status, token) = self
            .controls
            .call(op)
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
        self.settle(run_id, status, token, done, refused).await
    }

    /// A write that moves run `run_id`: `write` runs on the primary and
    /// answers the run's status (None: unknown run, 404) and a token. The
    /// node then knows the token's epoch and drops its cached documents of
    /// the run; a status `done` refuses is `invalid_state` with `refused`'s
    /// message.
    pub(crate) async fn run_write<F, Fut>(
        &self,
        run_id: Uuid,
        write: F,
        done: impl FnOnce(&str) -> bool,
        refused: impl FnOnce(&str) -> String,
    ) -> Result<Token, ClientError>
    where
        F: Fn(crate::store::Store, u64) -> Fut,
        Fut: std::future::Future<Output = Result<(Option<String>, Token), StoreError>>,
    {
        let (status, token) = self
            .router
            .write(WRITE_RETRY, write)
            .await
            .map_err(ClientError::from_write)?;
        self.settle(run_id, status, token, done, refused).await
    }

    /// After a write moved run `run_id` to `status` (None: unknown run):
    /// the node knows the token's epoch and drops its cached documents of
    /// the run; the answer is the token, 404, or `invalid_state`.
    async fn settle(
        &self,
        run_id: Uuid,
        status: Option<String>,
        token: Token,
        done: impl FnOnce(&str) -> bool,
        refused: impl FnOnce(&str) -> String,
    ) -> Result<Token, ClientError> {
        self.router.observe_epoch(token.epoch);
        self.router.cache().invalidate(run_id).await;
        match status.as_deref() {
            None => Err(ClientError::NotFound(format!("run {run_id} not found"))),
            Some(s) if done(s) => Ok(token),
            Some(other) => Err(ClientError::InvalidState(refused(other))),
        }
    }

    /// Cancels every run the filter matches (see [`BulkCancelRequest`]);
    /// returns how many it cancelled and the token.
    pub async fn cancel_many(&self, req: &BulkCancelRequest) -> Result<(u64, Token), ClientError> {
        if !["running", "paused"].contains(&req.status.as_str()) {
            return Err(ClientError::InvalidRequest(format!(
                "status must be running or paused (got `{}`)",
                req.status
            )));
        }
        let time = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| workflow::parse_time(name, t).map_err(ClientError::InvalidRequest))
                .transpose()
        };
        let after = time("created_after", &req.created_after)?;
        let before = time("created_before", &req.created_before)?;
        let goal = req.goal.as_deref();
        // Many runs may take long; each batch of 500 commits on its own.
        let (ids, token) = self
            .router
            .write_within(WRITE_RETRY, BULK_ATTEMPT, |store, epoch| async move {
                store
                    .cancel_runs(&req.status, goal, after, before, epoch)
                    .await
            })
            .await
            .map_err(ClientError::from_write)?;
        self.router.observe_epoch(token.epoch);
        for id in &ids {
            self.router.cache().invalidate(*id).await;
        }
        Ok((ids.len() as u64, token))
    }

    /// Cancels a running run. Cancelling a cancelled run is a no-op; a run
    /// that completed or failed cannot be cancelled.
    pub async fn cancel(&self, run_id: Uuid) -> Result<Token, ClientError> {
        self.run_control(
            RunControl::Cancel { run_id },
            |s| s == "cancelled",
            |other| format!("run {run_id} is already {other} and cannot be cancelled"),
        )
        .await
    }
}

/// The version `(epoch, lsn)` a document read from `src` is cached at,
/// taken before the query: always the database's own position, never the
/// caller's. A replica read: the epoch and replay position the tracker
/// published (replay only moves forward, so the query saw at least that). A
/// primary read: the router's epoch (the primary's), and as LSN the token's
/// only if it is of that epoch (a verified token: a position the database
/// issued for a write this read reflects), else 0. The primary's current WAL
/// position is no floor: a commit can be written before it is visible.
pub(crate) fn read_version(
    src: ReadSource,
    local: &LocalState,
    primary_epoch: u64,
    token: Option<&Token>,
) -> (u64, Lsn) {
    match src {
        ReadSource::Replica => (local.epoch, local.lsn),
        ReadSource::Primary | ReadSource::Cache => {
            let lsn = token
                .filter(|t| t.same_timeline(primary_epoch))
                .map_or(Lsn(0), |t| t.lsn);
            (primary_epoch, lsn)
        }
    }
}

/// Cursor text: `<created_at micros>.<run_id>`.
fn encode_cursor(t: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    format!("{}.{}", t.timestamp_micros(), id.simple())
}

fn decode_cursor(s: &str) -> Result<(chrono::DateTime<chrono::Utc>, Uuid), ClientError> {
    let bad = || ClientError::InvalidRequest(format!("`after` cursor `{s}` is malformed"));
    let (t, id) = s.split_once('.').ok_or_else(bad)?;
    let micros: i64 = t.parse().map_err(|_| bad())?;
    let t = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((t, id.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_versions_come_from_the_database_never_the_caller() {
        let replica = LocalState {
            healthy: true,
            is_primary: false,
            epoch: 3,
            lsn: Lsn(0x500),
            lag_ms: 0,
        };
        let primary = LocalState {
            is_primary: true,
            ..replica
        };
        let tok = |epoch, lsn| Token {
            epoch,
            lsn: Lsn(lsn),
        };
        let high = tok(3, u64::MAX);
        let newer_epoch = tok(9, 0x100);
        use ReadSource::{Primary, Replica};
        // (source, local state, router epoch, token, expected version)
        let cases = [
            (Replica, replica, 3, None, (3, 0x500)),
            // A replica read is as new as its replay, whatever the token says.
            (Replica, replica, 3, Some(high), (3, 0x500)),
            (Replica, replica, 3, Some(newer_epoch), (3, 0x500)),
            // A primary read: the router's epoch; the LSN of a token of that
            // epoch (the database issued it), else 0.
            (Primary, primary, 3, None, (3, 0)),
            (Primary, replica, 3, Some(tok(3, 0x900)), (3, 0x900)),
            (Primary, replica, 4, Some(tok(3, 0x900)), (4, 0)),
            (Primary, primary, 3, Some(newer_epoch), (3, 0)),
        ];
        for (src, local, epoch, token, (we, wl)) in cases {
            assert_eq!(
                read_version(src, &local, epoch, token.as_ref()),
                (we, Lsn(wl)),
                "{src:?} {local:?} epoch {epoch} {token:?}"
            );
        }
    }

    #[test]
    fn cursor_round_trip() {
        let t = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(t, id)).unwrap(), (t, id));
        for bad in ["", "x", "1.", ".abc", "1.nope"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
