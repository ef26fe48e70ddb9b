//! The write load a drill runs while it moves the write region, and the
//! Jepsen-style bookkeeping of every write that load attempted.
//!
//! [`LoadHandle::start`] submits one workflow per tick (open loop) through
//! each target node in turn. Every attempt ends in exactly one [`Outcome`]:
//! `Acked` (a 2xx with a run id: the run is committed on the primary),
//! `Failed` (a definite refusal) or `Indeterminate` (no answer: the write may
//! or may not have happened). Nothing is guessed: an attempt still in flight
//! when the load stops is `Indeterminate`, and a read-back that got no answer
//! leaves `stale_read` at `None`.
//!
//! [`summarize`] turns the attempts into counts and the RTO seen by the load;
//! [`classify`] checks each acknowledged write against the runs found on the
//! new primary after the drill. Duplicates (two runs for one attempt) are
//! found by the drill from the runs' goals, which are unique per attempt
//! ([`goal`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::api::client::{ApiClient, CallError, RetryPolicy, SubmitError, TransportKind};
use crate::api::wire::{StepSpec, WorkflowSpec};

/// Submits in flight at once; a tick that finds this many is skipped.
const MAX_IN_FLIGHT: usize = 256;
/// A retryable submit is retried until this long after it was first sent.
const RETRY_WINDOW: Duration = RetryPolicy::DRILL_LOAD.window;
/// How long [`LoadHandle::stop`] waits for in-flight submits.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// Tick period bounds. Tokio's timer has millisecond resolution, so rates
/// above about 1000/s are capped by it.
const MIN_PERIOD: Duration = Duration::from_micros(100);
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// Error text of an attempt that had not settled when the load stopped.
const IN_FLIGHT_AT_STOP: &str = "still in flight when the load stopped";

/// What load to generate.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Node API base URLs, used round-robin.
    pub targets: Vec<String>,
    /// Submits per second. Zero, negative or non-finite submits nothing.
    pub rate_per_s: f64,
    /// Per HTTP request (each try, and the read-back), e.g. 2 s.
    pub request_timeout: Duration,
    /// Put in every goal: `drill-<label>-<n>`.
    pub label: String,
    /// `Authorization` header value sent with every request (the drill
    /// caller's own token, so the load has exactly its rights).
    pub authorization: Option<reqwest::header::HeaderValue>,
    /// What the load's HTTP client trusts and presents (HTTPS nodes).
    pub tls: crate::api::tls::ClientTls,
}

/// How one attempted write ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A 200/201 with a run id and a consistency token.
    Acked { run_id: String, token: String },
    /// A definite refusal. `status` is 0 when no try ever reached the server
    /// (connection refused for the whole retry window).
    Failed { status: u16, code: String },
    /// No usable answer: the write may or may not have been committed.
    Indeterminate { error: String },
}

/// One attempted write and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempted {
    pub n: u64,
    pub target: String,
    pub idempotency_key: String,
    /// Milliseconds since the load started, at the first try.
    pub sent_at_ms: u64,
    /// Milliseconds since the load started, when the outcome was known
    /// (before the read-back), or when the load stopped if it never was.
    pub done_at_ms: u64,
    pub outcome: Outcome,
    /// `Some(true)` if the read with the write's token, right after the ack
    /// at the same node, did not find the run; `None` if not acked or the
    /// read got no answer.
    pub stale_read: Option<bool>,
    /// Tries after the first (all with the same idempotency key).
    pub retries: u32,
}

/// Counts and availability over a load's attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadSummary {
    pub attempted: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Attempts that needed at least one retry, whatever their outcome.
    pub retried: u64,
    pub stale_reads: u64,
    /// The longest write unavailability seen by the load (see [`summarize`]).
    pub rto_ms: u64,
    /// False if some failure was followed by no acknowledged write.
    pub recovered: bool,
    /// Earliest and latest failure instants (`sent_at_ms` of failing writes).
    pub first_failure_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
}

/// The goal of attempt `n`; unique per attempt, so the drill can find
/// duplicate runs of one attempt on the new primary.
pub fn goal(label: &str, n: u64) -> String {
    format!("{}{n}", goal_prefix(label))
}

/// What every goal of the load labelled `label` starts with.
pub fn goal_prefix(label: &str) -> String {
    format!("drill-{label}-")
}

/// A running load. Dropping it without [`LoadHandle::stop`] stops the ticker
/// and abandons the attempts.
pub struct LoadHandle {
    shared: Arc<Shared>,
    stop_tx: oneshot::Sender<()>,
    ticker: JoinHandle<JoinSet<()>>,
}

struct Shared {
    start: Instant,
    acked: AtomicU64,
    /// Every attempt by `n`, updated in place as it progresses, so `stop`
    /// can report an attempt whose task it had to abort.
    slots: Mutex<BTreeMap<u64, Slot>>,
}

struct Slot {
    attempt: Attempted,
    settled: bool,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<u64, Slot>> {
        // A panicking submit task cannot leave a slot half-written in a way
        // that matters: every update is a single field assignment.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, n: u64, f: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.slots().get_mut(&n) {
            f(slot);
        }
    }
}

impl LoadHandle {
    /// Starts submitting `{"goal": "drill-<label>-<n>", "idempotency_key":
    /// "<uuid>", "steps": [{"id": "a", "handler": "noop"}]}` at the given
    /// rate: open loop, one task per submit, at most 256 in flight (a tick
    /// that finds 256 is skipped and counts as nothing).
    ///
    /// A 503 or a connection error is retried with the same idempotency key
    /// every 50 ms until it succeeds or 3 s have passed since the first try.
    /// Any other non-2xx is `Failed` at once; a timeout is `Indeterminate` at
    /// once. After an ack the run is read back at the same target with the
    /// write's consistency token.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(spec: LoadSpec) -> LoadHandle {
        let api = ApiClient::builder("")
            .tls(&spec.tls)
            .authorization(spec.authorization.clone())
            .connect_timeout(spec.request_timeout)
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build();
        let shared = Arc::new(Shared {
            start: Instant::now(),
            acked: AtomicU64::new(0),
            slots: Mutex::new(BTreeMap::new()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let ticker = tokio::spawn(tick(spec, api, Arc::clone(&shared), stop_rx));
        LoadHandle {
            shared,
            stop_tx,
            ticker,
        }
    }

    /// Stops ticking, waits (at most 10 s) for in-flight submits, and returns
    /// every attempt sorted by `n`. Attempts still unsettled then are aborted
    /// and reported `Indeterminate`; an acked one whose read-back was cut
    /// short keeps its ack with `stale_read: None`.
    pub async fn stop(self) -> Vec<Attempted> {
        self.stop_within(STOP_BOUND).await
    }

    /// When the load started; `sent_at_ms` and `done_at_ms` count from here.
    pub fn started_at(&self) -> Instant {
        self.shared.start
    }

    /// Writes acknowledged so far.
    pub fn acked_so_far(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Writes sent so far (acknowledged or not).
    pub fn sent_so_far(&self) -> usize {
        self.shared.slots.lock().expect("load slots").len()
    }

    async fn stop_within(self, bound: Duration) -> Vec<Attempted> {
        // An error means the ticker is already gone; joining it says why.
        let _ = self.stop_tx.send(());
        match self.ticker.await {
            Ok(mut set) => {
                let drained = tokio::time::timeout(bound, async {
                    while let Some(res) = set.join_next().await {
                        log_join(res);
                    }
                })
                .await;
                if drained.is_err() {
                    tracing::warn!(
                        in_flight = set.len(),
                        bound_ms = bound.as_millis() as u64,
                        "drill load: submits still in flight at stop; reporting them indeterminate"
                    );
                    set.abort_all();
                    // Wait for the aborts to land so no task touches a slot
                    // after it has been read below.
                    while set.join_next().await.is_some() {}
                }
            }
            // The JoinSet died with the ticker, which aborted its tasks.
            Err(e) => tracing::error!(error = %e, "drill load: the ticker task failed"),
        }
        let now = self.shared.elapsed_ms();
        let slots = std::mem::take(&mut *self.shared.slots());
        slots
            .into_values()
            .map(|slot| {
                let mut a = slot.attempt;
                if !slot.settled {
                    a.done_at_ms = now;
                }
                a
            })
            .collect()
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!(error = %e, "drill load: a submit task panicked");
        }
    }
}

async fn tick(
    spec: LoadSpec,
    api: ApiClient,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<()>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let rate = spec.rate_per_s;
    if spec.targets.is_empty() || !rate.is_finite() || rate <= 0.0 {
        tracing::warn!(
            rate,
            targets = spec.targets.len(),
            "drill load: nothing to do (no targets or no positive rate)"
        );
        return set;
    }
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(MAX_PERIOD)
        .clamp(MIN_PERIOD, MAX_PERIOD);
    let mut ticker = tokio::time::interval(period);
    // After a stall, keep the rate rather than burst to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let label: Arc<str> = spec.label.into();
    let mut n: u64 = 0;
    let mut skipped: u64 = 0;
    loop {
        tokio::select! {
            biased;
            // Sent, or the handle was dropped: stop either way.
            _ = &mut stop_rx => break,
            _ = ticker.tick() => {}
        }
        while let Some(res) = set.try_join_next() {
            log_join(res);
        }
        if set.len() >= MAX_IN_FLIGHT {
            skipped += 1;
            continue;
        }
        let idx = usize::try_from(n % spec.targets.len() as u64).unwrap_or(0);
        let target = spec.targets[idx].trim_end_matches('/').to_string();
        let key = uuid::Uuid::new_v4().to_string();
        shared.slots().insert(
            n,
            Slot {
                attempt: Attempted {
                    n,
                    target: target.clone(),
                    idempotency_key: key.clone(),
                    sent_at_ms: shared.elapsed_ms(),
                    done_at_ms: 0,
                    outcome: Outcome::Indeterminate {
                        error: IN_FLIGHT_AT_STOP.to_string(),
                    },
                    stale_read: None,
                    retries: 0,
                },
                settled: false,
            },
        );
        let sub = Submit {
            api: api.at(&target).with_timeout(spec.request_timeout),
            shared: Arc::clone(&shared),
            n,
            goal: goal(&label, n),
            key,
            timeout: spec.request_timeout,
        };
        set.spawn(sub.run());
        n += 1;
    }
    if skipped > 0 {
        tracing::info!(
            skipped,
            "drill load: ticks skipped because {MAX_IN_FLIGHT} submits were in flight"
        );
    }
    set
}

struct Submit {
    /// Pointed at the attempt's target, with the per-request timeout.
    api: ApiClient,
    shared: Arc<Shared>,
    n: u64,
    goal: String,
    key: String,
    timeout: Duration,
}

/// The part of a status answer a read-back needs (any status document has it).
#[derive(Deserialize)]
struct RunRef {
    run_id: String,
}

impl Submit {
    async fn run(self) {
        let outcome = self.submit().await;
        let done_at_ms = self.shared.elapsed_ms();
        let acked = match &outcome {
            Outcome::Acked { run_id, token } => Some((run_id.clone(), token.clone())),
            _ => None,
        };
        if acked.is_some() {
            self.shared.acked.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.update(self.n, |s| {
            s.attempt.outcome = outcome;
            s.attempt.done_at_ms = done_at_ms;
            s.settled = true;
        });
        if let Some((run_id, token)) = acked {
            let stale = self.read_back(&run_id, &token).await;
            self.shared.update(self.n, |s| s.attempt.stale_read = stale);
        }
    }

    /// One write through [`ApiClient::submit`] (the one retry policy:
    /// [`RetryPolicy::DRILL_LOAD`]), its result read as an [`Outcome`].
    async fn submit(&self) -> Outcome {
        let body = WorkflowSpec {
            goal: self.goal.clone(),
            steps: vec![StepSpec {
                id: "a".into(),
                handler: "noop".into(),
                depends_on: vec![],
                queue: None,
                input: None,
                max_attempts: None,
                timeout_ms: None,
                region: None,
                delay_ms: None,
                priority: None,
                concurrency: None,
                map: None,
                wait_for: None,
            }],
            input: None,
            idempotency_key: Some(self.key.clone()),
            decomposer: None,
            run_at: None,
            priority: None,
            concurrency: None,
        };
        let (shared, n) = (&self.shared, self.n);
        let result = self
            .api
            .submit(&body, RetryPolicy::DRILL_LOAD, |retries, _| {
                shared.update(n, |s| s.attempt.retries = retries + 1)
            })
            .await;
        match result {
            Ok(a) => Outcome::Acked {
                run_id: a.body.run_id.to_string(),
                token: a.body.consistency_token,
            },
            Err(SubmitError::Call(e)) => self.refused(e),
            Err(SubmitError::GaveUp {
                last,
                lost_answer,
                retries,
                ..
            }) => {
                tracing::debug!(n, target = %self.api.base(), retries, "drill load: gave up");
                match (lost_answer, last.status()) {
                    (Some(e), _) => Outcome::Indeterminate {
                        error: format!(
                            "gave up after {RETRY_WINDOW:?} of retries; a try's answer was lost: {e}"
                        ),
                    },
                    (None, Some(_)) => failed(&last),
                    (None, None) => Outcome::Failed {
                        status: 0,
                        code: "connect_error".to_string(),
                    },
                }
            }
        }
    }

    /// A try that ended the submit without retries.
    fn refused(&self, e: CallError) -> Outcome {
        match e {
            // A 2xx without run id and token cannot be checked, so it is
            // indeterminate rather than a guessed ack.
            CallError::Decode { status, detail, .. } if (200..300).contains(&status) => {
                Outcome::Indeterminate {
                    error: format!("HTTP {status} but the body was unreadable: {detail}"),
                }
            }
            CallError::Transport {
                kind: TransportKind::Timeout,
                detail,
                ..
            } => Outcome::Indeterminate {
                error: format!("no answer within {:?}: {detail}", self.timeout),
            },
            CallError::Transport { detail, .. } => Outcome::Indeterminate { error: detail },
            other => failed(&other),
        }
    }

    /// `Some(false)` if the node shows the run, `Some(true)` on a 404,
    /// `None` for anything else (no answer is not evidence either way).
    async fn read_back(&self, run_id: &str, token: &str) -> Option<bool> {
        let read = self
            .api
            .with_token(Some(token))
            .get::<RunRef>(&format!("/v1/workflows/{run_id}"))
            .await;
        match read {
            Ok(a) => (a.body.run_id == run_id).then_some(false),
            Err(e) if e.status() == Some(404) => Some(true),
            Err(_) => None,
        }
    }
}

/// A definite refusal: its status and `error.code` (else `http_<status>`).
fn failed(e: &CallError) -> Outcome {
    let status = e.status().unwrap_or(0);
    Outcome::Failed {
        status,
        code: e
            .api()
            .map(|f| f.code_text.clone())
            .unwrap_or_else(|| format!("http_{status}")),
    }
}

/// Counts, and the RTO: a failure is a write that ended `Failed` or
/// `Indeterminate`, or was acked only after retries, and happens at its
/// `sent_at_ms`. Each failure is recovered by the first acked write whose
/// `done_at_ms` is at or after it, whatever its target; `rto_ms` is the
/// longest such interval. A failure with no ack after it counts until the
/// last `done_at_ms` of any attempt and makes `recovered` false. No
/// failures: `rto_ms` 0, `recovered` true.
pub fn summarize(attempts: &[Attempted]) -> LoadSummary {
    let mut s = LoadSummary {
        attempted: attempts.len() as u64,
        ..LoadSummary::default()
    };
    let mut failures = Vec::new();
    let mut acks = Vec::new();
    for a in attempts {
        if a.retries > 0 {
            s.retried += 1;
        }
        if a.stale_read == Some(true) {
            s.stale_reads += 1;
        }
        match a.outcome {
            Outcome::Acked { .. } => {
                s.acknowledged += 1;
                acks.push(a.done_at_ms);
                if a.retries > 0 {
                    failures.push(a.sent_at_ms);
                }
            }
            Outcome::Failed { .. } => {
                s.failed += 1;
                failures.push(a.sent_at_ms);
            }
            Outcome::Indeterminate { .. } => {
                s.indeterminate += 1;
                failures.push(a.sent_at_ms);
            }
        }
    }
    failures.sort_unstable();
    acks.sort_unstable();
    s.first_failure_ms = failures.first().copied();
    s.last_failure_ms = failures.last().copied();
    s.recovered = true;
    let last_done = attempts.iter().map(|a| a.done_at_ms).max().unwrap_or(0);
    for &f in &failures {
        let recovery = acks.get(acks.partition_point(|&d| d < f)).copied();
        let end = recovery.unwrap_or_else(|| {
            s.recovered = false;
            last_done
        });
        s.rto_ms = s.rto_ms.max(end.saturating_sub(f));
    }
    s
}

/// Jepsen-style check of the acknowledged writes against the run ids found
/// on the new primary: `(present, lost)`, in attempt order. Failed and
/// indeterminate attempts are in neither list (`summarize` counts them).
pub fn classify(attempts: &[Attempted], present: &HashSet<String>) -> (Vec<String>, Vec<String>) {
    let mut found = Vec::new();
    let mut lost = Vec::new();
    for a in attempts {
        if let Outcome::Acked { run_id, .. } = &a.outcome {
            if present.contains(run_id) {
                found.push(run_id.clone());
            } else {
                lost.push(run_id.clone());
            }
        }
    }
    (found, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::H_TOKEN;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU8;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    #[repr(u8)]
    enum Mode {
        Normal = 0,
        Unavailable = 1,
        Forgetful = 2,
        /// Submits never answer.
        HangSubmits = 3,
        /// Submits answer; reads never do.
        HangReads = 4,
    }

    const TOKEN: &str = "1-0/1";

    #[derive(Default)]
    struct ServerState {
        mode: AtomicU8,
        /// idempotency key -> run id
        runs: Mutex<HashMap<String, String>>,
        /// idempotency key -> POSTs seen (any mode)
        posts: Mutex<HashMap<String, u32>>,
        goals: Mutex<HashSet<String>>,
        bad_read_tokens: AtomicU64,
    }

    struct TestServer {
        url: String,
        state: Arc<ServerState>,
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        async fn start(mode: Mode) -> TestServer {
            let state = Arc::new(ServerState::default());
            state.mode.store(mode as u8, Ordering::SeqCst);
            let app = Router::new()
                .route("/v1/workflows", post(submit))
                .route("/v1/workflows/{run_id}", get(status))
                .with_state(Arc::clone(&state));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            TestServer { url, state, task }
        }

        fn set_mode(&self, mode: Mode) {
            self.state.mode.store(mode as u8, Ordering::SeqCst);
        }

        fn posts_total(&self) -> u32 {
            self.state.posts.lock().unwrap().values().sum()
        }
    }

    fn mode(st: &ServerState) -> Mode {
        match st.mode.load(Ordering::SeqCst) {
            0 => Mode::Normal,
            1 => Mode::Unavailable,
            2 => Mode::Forgetful,
            3 => Mode::HangSubmits,
            _ => Mode::HangReads,
        }
    }

    fn err(status: StatusCode, code: &str) -> (StatusCode, Json<Value>) {
        (
            status,
            Json(json!({"error": {"code": code, "message": code}})),
        )
    }

    async fn submit(
        State(st): State<Arc<ServerState>>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let key = body["idempotency_key"].as_str().unwrap_or("").to_string();
        *st.posts.lock().unwrap().entry(key.clone()).or_default() += 1;
        match mode(&st) {
            Mode::Unavailable => return err(StatusCode::SERVICE_UNAVAILABLE, "write_unavailable"),
            Mode::HangSubmits => std::future::pending::<()>().await,
            _ => {}
        }
        if let Some(goal) = body["goal"].as_str() {
            st.goals.lock().unwrap().insert(goal.to_string());
        }
        let mut runs = st.runs.lock().unwrap();
        let (status, run_id) = match runs.get(&key) {
            Some(id) => (StatusCode::OK, id.clone()),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                runs.insert(key, id.clone());
                (StatusCode::CREATED, id)
            }
        };
        let answer = json!({"run_id": run_id, "status": "running", "consistency_token": TOKEN});
        (status, Json(answer))
    }

    async fn status(
        State(st): State<Arc<ServerState>>,
        Path(run_id): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, Json<Value>) {
        if headers.get(H_TOKEN).and_then(|v| v.to_str().ok()) != Some(TOKEN) {
            st.bad_read_tokens.fetch_add(1, Ordering::SeqCst);
        }
        match mode(&st) {
            Mode::Forgetful => return err(StatusCode::NOT_FOUND, "not_found"),
            Mode::HangReads => std::future::pending::<()>().await,
            _ => {}
        }
        let known = st.runs.lock().unwrap().values().any(|id| *id == run_id);
        if known {
            (
                StatusCode::OK,
                Json(json!({"run_id": run_id, "status": "running"})),
            )
        } else {
            err(StatusCode::NOT_FOUND, "not_found")
        }
    }

    fn spec(targets: Vec<String>, rate: f64, label: &str) -> LoadSpec {
        LoadSpec {
            targets,
            rate_per_s: rate,
            request_timeout: Duration::from_secs(2),
            label: label.to_string(),
            authorization: None,
            tls: crate::api::tls::ClientTls::default(),
        }
    }

    /// Waits for a condition, failing the test at the deadline.
    async fn wait_until(what: &str, deadline: Duration, cond: impl FnMut() -> bool) {
        let held = crate::wait::until_true(deadline, Duration::from_millis(5), cond).await;
        assert!(held, "timed out waiting for {what}");
    }

    #[tokio::test]
    async fn steady_load_is_all_acked_round_robin_without_stale_reads() {
        let a = TestServer::start(Mode::Normal).await;
        let b = TestServer::start(Mode::Normal).await;
        let load = LoadHandle::start(spec(
            vec![a.url.clone(), format!("{}/", b.url)],
            50.0,
            "steady",
        ));
        wait_until("20 acks", Duration::from_secs(20), || {
            load.acked_so_far() >= 20
        })
        .await;
        let seen = load.acked_so_far();
        let ran = load.started_at().elapsed();
        let attempts = load.stop().await;
        let s = summarize(&attempts);

        // Paced: never more than the rate allows for the time it ran.
        let allowed = (50.0 * (ran.as_secs_f64() + 0.2)).ceil() as u64 + 2;
        assert!(
            s.attempted >= 20 && s.attempted <= allowed,
            "{s:?} in {ran:?}"
        );
        assert!(seen > 0 && seen <= s.acknowledged);
        assert_eq!(s.acknowledged, s.attempted, "{s:?}");
        assert_eq!((s.stale_reads, s.rto_ms, s.retried), (0, 0, 0));
        assert!(s.recovered && s.first_failure_ms.is_none());
        assert!(attempts.iter().all(|x| x.stale_read == Some(false)));
        for (i, x) in attempts.iter().enumerate() {
            assert_eq!(x.n, i as u64);
            let want = if i % 2 == 0 { &a.url } else { &b.url };
            assert_eq!(&x.target, want);
            assert!(x.done_at_ms >= x.sent_at_ms);
        }
        let keys: HashSet<_> = attempts.iter().map(|x| &x.idempotency_key).collect();
        assert_eq!(keys.len(), attempts.len());
        assert!(a.state.goals.lock().unwrap().contains("drill-steady-0"));
        assert!(b.state.goals.lock().unwrap().contains("drill-steady-1"));
        assert_eq!(a.state.bad_read_tokens.load(Ordering::SeqCst), 0);
        let present: HashSet<String> = a
            .state
            .runs
            .lock()
            .unwrap()
            .values()
            .chain(b.state.runs.lock().unwrap().values())
            .cloned()
            .collect();
        let (found, lost) = classify(&attempts, &present);
        assert_eq!((found.len() as u64, lost.len()), (s.acknowledged, 0));
    }

    #[tokio::test]
    async fn an_unavailable_window_is_ridden_out_by_retries_with_the_same_key() {
        let srv = TestServer::start(Mode::Normal).await;
        let load = LoadHandle::start(spec(vec![srv.url.clone()], 50.0, "window"));
        wait_until("first acks", Duration::from_secs(5), || {
            load.acked_so_far() >= 3
        })
        .await;
        srv.set_mode(Mode::Unavailable);
        tokio::time::sleep(Duration::from_millis(400)).await;
        srv.set_mode(Mode::Normal);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let attempts = load.stop().await;
        let s = summarize(&attempts);

        assert_eq!(s.acknowledged, s.attempted, "{s:?}");
        assert!(s.retried > 0, "{s:?}");
        assert!(s.rto_ms >= 300, "{s:?}");
        assert!(s.recovered, "{s:?}");
        assert_eq!(s.stale_reads, 0);
        let runs = srv.state.runs.lock().unwrap();
        let posts = srv.state.posts.lock().unwrap();
        for x in attempts.iter().filter(|x| x.retries > 0) {
            let Outcome::Acked { run_id, .. } = &x.outcome else {
                panic!("retried but not acked: {x:?}");
            };
            assert_eq!(runs.get(&x.idempotency_key), Some(run_id));
            assert!(posts[&x.idempotency_key] >= 2);
        }
    }

    #[tokio::test]
    async fn a_long_outage_fails_writes_after_the_retry_window() {
        let srv = TestServer::start(Mode::Unavailable).await;
        let load = LoadHandle::start(spec(vec![srv.url.clone()], 20.0, "outage"));
        wait_until("a refused submit", Duration::from_secs(10), || {
            srv.posts_total() > 0
        })
        .await;
        let attempts = load.stop().await;
        let s = summarize(&attempts);

        assert!(s.failed > 0, "{s:?}");
        assert_eq!((s.acknowledged, s.indeterminate), (0, 0));
        assert!(!s.recovered && s.rto_ms >= 3000, "{s:?}");
        for x in &attempts {
            assert_eq!(
                x.outcome,
                Outcome::Failed {
                    status: 503,
                    code: "write_unavailable".into()
                }
            );
            assert!(
                x.retries > 0 && x.done_at_ms - x.sent_at_ms >= 3000,
                "{x:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_forgetful_node_shows_stale_reads() {
        let srv = TestServer::start(Mode::Forgetful).await;
        let load = LoadHandle::start(spec(vec![srv.url.clone()], 50.0, "forget"));
        wait_until("3 acks", Duration::from_secs(10), || {
            load.acked_so_far() >= 3
        })
        .await;
        let attempts = load.stop().await;
        let s = summarize(&attempts);
        assert!(s.stale_reads > 0, "{s:?}");
        assert_eq!(s.stale_reads, s.acknowledged);
    }

    #[tokio::test]
    async fn a_timeout_is_indeterminate_and_never_lost() {
        let srv = TestServer::start(Mode::HangSubmits).await;
        let mut sp = spec(vec![srv.url.clone()], 20.0, "hang");
        sp.request_timeout = Duration::from_millis(200);
        let load = LoadHandle::start(sp);
        // Stop once the server holds a submit (the load has sent one).
        let sent =
            crate::wait::until_true(Duration::from_secs(10), Duration::from_millis(5), || {
                srv.posts_total() > 0
            })
            .await;
        assert!(sent, "the load sent no submit within 10 s");
        let attempts = load.stop().await;
        let s = summarize(&attempts);
        assert!(
            s.indeterminate > 0 && s.indeterminate == s.attempted,
            "{s:?}"
        );
        assert!(attempts
            .iter()
            .all(|x| x.retries == 0 && x.stale_read.is_none()));
        assert_eq!(classify(&attempts, &HashSet::new()), (vec![], vec![]));
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_failed() {
        // A bound socket that never listens: connections to it are refused,
        // and no other test can take its port while it is held.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = reserved.local_addr().unwrap().port();
        let load = LoadHandle::start(spec(
            vec![format!("http://127.0.0.1:{port}")],
            10.0,
            "refused",
        ));
        wait_until("a sent submit", Duration::from_secs(10), || {
            load.sent_so_far() > 0
        })
        .await;
        let attempts = load.stop().await;
        assert!(!attempts.is_empty());
        for x in &attempts {
            assert_eq!(
                x.outcome,
                Outcome::Failed {
                    status: 0,
                    code: "connect_error".into()
                }
            );
            assert!(
                x.retries > 0 && x.done_at_ms - x.sent_at_ms >= 3000,
                "{x:?}"
            );
        }
    }

    #[tokio::test]
    async fn in_flight_submits_are_bounded_and_reported_indeterminate_at_stop() {
        let srv = TestServer::start(Mode::HangSubmits).await;
        let mut sp = spec(vec![srv.url.clone()], 2000.0, "bound");
        sp.request_timeout = Duration::from_secs(60);
        let load = LoadHandle::start(sp);
        wait_until("256 submits at the server", Duration::from_secs(20), || {
            srv.posts_total() >= MAX_IN_FLIGHT as u32
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let attempts = load.stop_within(Duration::from_millis(100)).await;
        assert_eq!(attempts.len(), MAX_IN_FLIGHT);
        for x in &attempts {
            assert_eq!(
                x.outcome,
                Outcome::Indeterminate {
                    error: IN_FLIGHT_AT_STOP.into()
                }
            );
            assert!(x.done_at_ms >= x.sent_at_ms);
        }
    }

    #[tokio::test]
    async fn an_ack_survives_a_read_back_cut_short_at_stop() {
        let srv = TestServer::start(Mode::HangReads).await;
        let load = LoadHandle::start(spec(vec![srv.url.clone()], 50.0, "readhang"));
        wait_until("acks", Duration::from_secs(5), || load.acked_so_far() >= 3).await;
        let attempts = load.stop_within(Duration::from_millis(100)).await;
        let s = summarize(&attempts);
        assert!(s.acknowledged >= 3, "{s:?}");
        for x in attempts
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Acked { .. }))
        {
            assert_eq!(x.stale_read, None);
        }
    }

    #[tokio::test]
    async fn no_rate_or_no_targets_submits_nothing() {
        for sp in [
            spec(vec![], 10.0, "x"),
            spec(vec!["http://127.0.0.1:9".into()], 0.0, "x"),
            spec(vec!["http://127.0.0.1:9".into()], f64::NAN, "x"),
        ] {
            assert!(LoadHandle::start(sp).stop().await.is_empty());
        }
    }

    // ---- pure functions ----

    fn at(n: u64, target: &str, sent: u64, done: u64, outcome: Outcome, retries: u32) -> Attempted {
        Attempted {
            n,
            target: target.to_string(),
            idempotency_key: format!("k{n}"),
            sent_at_ms: sent,
            done_at_ms: done,
            stale_read: matches!(outcome, Outcome::Acked { .. }).then_some(false),
            outcome,
            retries,
        }
    }

    fn ack(id: &str) -> Outcome {
        Outcome::Acked {
            run_id: id.to_string(),
            token: TOKEN.to_string(),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            status: 503,
            code: "write_unavailable".to_string(),
        }
    }

    fn indet() -> Outcome {
        Outcome::Indeterminate {
            error: "timeout".to_string(),
        }
    }

    #[test]
    fn summarize_table() {
        struct Case {
            name: &'static str,
            attempts: Vec<Attempted>,
            rto: u64,
            recovered: bool,
            first: Option<u64>,
            last: Option<u64>,
        }
        let cases = vec![
            Case {
                name: "empty",
                attempts: vec![],
                rto: 0,
                recovered: true,
                first: None,
                last: None,
            },
            Case {
                name: "all acked",
                attempts: vec![
                    at(0, "a", 0, 5, ack("r0"), 0),
                    at(1, "b", 20, 26, ack("r1"), 0),
                ],
                rto: 0,
                recovered: true,
                first: None,
                last: None,
            },
            Case {
                // b fails at 100 and 140 while a is still acking slowly; the
                // first ack done after 100 is a's at 130 (another target).
                name: "interleaved targets",
                attempts: vec![
                    at(0, "a", 90, 130, ack("r0"), 0),
                    at(1, "b", 100, 3100, failed(), 60),
                    at(2, "a", 120, 3120, indet(), 0),
                    at(3, "b", 140, 900, ack("r3"), 14),
                    at(4, "a", 160, 170, ack("r4"), 0),
                ],
                // failures at 100 -> 130, 120 -> 130, 140 -> 170 (r4 done).
                rto: 30,
                recovered: true,
                first: Some(100),
                last: Some(140),
            },
            Case {
                name: "retried ack is its own recovery",
                attempts: vec![
                    at(0, "a", 0, 10, ack("r0"), 0),
                    at(1, "b", 20, 470, ack("r1"), 8),
                    at(2, "a", 40, 480, ack("r2"), 8),
                ],
                rto: 450,
                recovered: true,
                first: Some(20),
                last: Some(40),
            },
            Case {
                name: "two outages, the longer counts",
                attempts: vec![
                    at(0, "a", 0, 3000, failed(), 59),
                    at(1, "b", 500, 600, ack("r1"), 0),
                    at(2, "a", 1000, 1100, indet(), 0),
                    at(3, "b", 1100, 1900, ack("r3"), 0),
                ],
                rto: 900,
                recovered: true,
                first: Some(0),
                last: Some(1000),
            },
            Case {
                name: "never recovered",
                attempts: vec![
                    at(0, "a", 0, 10, ack("r0"), 0),
                    at(1, "b", 50, 3050, failed(), 59),
                    at(2, "a", 70, 3070, failed(), 59),
                ],
                rto: 3020,
                recovered: false,
                first: Some(50),
                last: Some(70),
            },
        ];
        for c in cases {
            let s = summarize(&c.attempts);
            assert_eq!(s.rto_ms, c.rto, "{}: {s:?}", c.name);
            assert_eq!(s.recovered, c.recovered, "{}", c.name);
            assert_eq!(s.first_failure_ms, c.first, "{}", c.name);
            assert_eq!(s.last_failure_ms, c.last, "{}", c.name);
            assert_eq!(s.attempted, c.attempts.len() as u64, "{}", c.name);
        }
    }

    #[test]
    fn summarize_counts() {
        let mut stale = at(3, "b", 30, 40, ack("r3"), 0);
        stale.stale_read = Some(true);
        let attempts = vec![
            at(0, "a", 0, 10, ack("r0"), 2),
            at(1, "b", 10, 20, failed(), 3),
            at(2, "a", 20, 30, indet(), 0),
            stale,
        ];
        let s = summarize(&attempts);
        assert_eq!(
            (
                s.attempted,
                s.acknowledged,
                s.failed,
                s.indeterminate,
                s.retried,
                s.stale_reads
            ),
            (4, 2, 1, 1, 2, 1)
        );
    }

    #[test]
    fn classify_table() {
        let attempts = vec![
            at(0, "a", 0, 1, ack("present"), 0),
            at(1, "b", 1, 2, ack("gone"), 3),
            at(2, "a", 2, 3, indet(), 0),
            at(3, "b", 3, 4, failed(), 0),
            at(4, "a", 4, 5, ack("also-present"), 0),
        ];
        // (name, run ids on the new primary, want present, want lost)
        type Case = (
            &'static str,
            Vec<&'static str>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing on the new primary",
                vec![],
                vec![],
                vec!["present", "gone", "also-present"],
            ),
            (
                "all there",
                vec!["present", "gone", "also-present"],
                vec!["present", "gone", "also-present"],
                vec![],
            ),
            (
                "one lost",
                vec!["present", "also-present", "unrelated"],
                vec!["present", "also-present"],
                vec!["gone"],
            ),
        ];
        for (name, on_primary, want_present, want_lost) in cases {
            let set: HashSet<String> = on_primary.iter().map(|s| s.to_string()).collect();
            let (p, l) = classify(&attempts, &set);
            assert_eq!(p, want_present, "{name}");
            assert_eq!(l, want_lost, "{name}");
        }
    }

    #[test]
    fn outcome_serializes_tagged() {
        let v = serde_json::to_value(ack("r")).unwrap();
        assert_eq!(v, json!({"kind": "acked", "run_id": "r", "token": TOKEN}));
    }
}
