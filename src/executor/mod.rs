//! The executor role: worker pools that claim tasks from pgmq queues on the
//! primary, run their handlers and report the outcome.
//!
//! Each pool has `size` slots (a semaphore) and one claim loop that asks for
//! as many tasks as it has free slots (up to `claim_batch`) in one round
//! trip. Idle loops sleep until a NOTIFY on their queue's channel (one shared
//! LISTEN connection per node) or the poll interval. Completions and
//! failures from all pools go through one micro-batcher. A task whose step
//! timeout exceeds the lease has its visibility extended while it runs.
//!
//! Shutdown: stop claiming, let in-flight tasks finish until the grace
//! deadline, then release the rest to the queue. `kill` (tests) drops
//! everything without telling the database, like a crashed process.

pub mod handlers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::batch::Batcher;
use crate::executor::handlers::{HandlerError, Registry, TaskContext};
use crate::model::workflow::mq_name;
use crate::router::Router;
use crate::store::{AttemptRef, ClaimedTask, Finish, FinishResult, Leases};

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
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub leases: Leases,
}

/// Live counters of one pool (shown in /health/info, heartbeats, metrics).
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub queue: String,
    pub size: usize,
    pub busy: usize,
    pub completed: u64,
    pub failed: u64,
}

struct Pool {
    spec: PoolSpec,
    mqs: Vec<String>,
    slots: Arc<Semaphore>,
    wake: Notify,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Pool {
    fn status(&self) -> PoolStatus {
        PoolStatus {
            name: self.spec.name.clone(),
            queue: self.spec.queue.clone(),
            size: self.spec.size,
            busy: self.spec.size - self.slots.available_permits(),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

type Finisher = Batcher<(AttemptRef, Finish), FinishResult, ReportError>;

/// Shared state of a node's executor.
pub struct Executor {
    settings: ExecutorSettings,
    router: Arc<Router>,
    registry: Registry,
    pools: Vec<Arc<Pool>>,
    in_flight: Mutex<HashMap<AttemptRef, InFlight>>,
    finisher: Finisher,
    /// Claim loops still running; drain waits for them so no claim that
    /// returns during shutdown is left unreleased.
    claiming: AtomicUsize,
}

/// A running task: its abort handle and whether its handler already
/// finished and its outcome is being reported (then it must not be aborted:
/// the result is on its way to the database).
struct InFlight {
    abort: AbortHandle,
    reporting: Arc<AtomicBool>,
}

/// Aborts a task when dropped (a handler outlives nothing that owns it).
struct AbortOnDrop(AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Executor {
    /// Starts the pools, the listener and the finisher; their tasks join `tasks`.
    pub fn start(
        router: Arc<Router>,
        registry: Registry,
        settings: ExecutorSettings,
        shutdown: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Arc<Executor> {
        let pools = settings
            .pools
            .iter()
            .map(|p| {
                Arc::new(Pool {
                    // Region-pinned variant first, so pinned work is not starved.
                    mqs: vec![
                        mq_name(&p.queue, Some(&settings.region)),
                        mq_name(&p.queue, None),
                    ],
                    spec: p.clone(),
                    slots: Arc::new(Semaphore::new(p.size)),
                    wake: Notify::new(),
                    completed: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                })
            })
            .collect::<Vec<_>>();
        let r = router.clone();
        let leases = settings.leases;
        let finisher = Batcher::spawn(
            64,
            4,
            |e: &ReportError| !e.transient,
            move |items: Vec<(AttemptRef, Finish)>| {
                let r = r.clone();
                async move { finish_batch(&r, &items, leases).await }
            },
        );
        let ex = Arc::new(Executor {
            settings,
            router,
            registry,
            pools,
            in_flight: Mutex::new(HashMap::new()),
            finisher,
            claiming: AtomicUsize::new(0),
        });
        // Fired once the queues exist (a one-shot latch).
        let ready = CancellationToken::new();
        {
            let ex = ex.clone();
            let shutdown = shutdown.clone();
            let ready = ready.clone();
            tasks.spawn(async move { ex.listen_loop(shutdown, ready).await }.in_current_span());
        }
        for pool in ex.pools.clone() {
            ex.claiming.fetch_add(1, Ordering::SeqCst);
            let ex = ex.clone();
            let shutdown = shutdown.clone();
            let ready = ready.clone();
            tasks.spawn(
                async move {
                    // Claim only once the queues exist (the listener creates them).
                    tokio::select! {
                        _ = ready.cancelled() => ex.clone().claim_loop(pool, shutdown).await,
                        _ = shutdown.cancelled() => {}
                    }
                    ex.claiming.fetch_sub(1, Ordering::SeqCst);
                }
                .in_current_span(),
            );
        }
        ex
    }

    /// Pool counters, in config order.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools.iter().map(|p| p.status()).collect()
    }

    /// Creates the queues, then LISTENs on their channels and wakes pools.
    async fn listen_loop(self: Arc<Self>, shutdown: CancellationToken, ready: CancellationToken) {
        let mut by_channel: HashMap<String, Vec<Arc<Pool>>> = HashMap::new();
        for p in &self.pools {
            for mq in &p.mqs {
                by_channel
                    .entry(crate::store::notify_channel(mq))
                    .or_default()
                    .push(p.clone());
            }
        }
        let mqs: Vec<String> = self.pools.iter().flat_map(|p| p.mqs.clone()).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let store = self.router.write_store().clone();
            let attempt = async {
                store.ensure_queues(&mqs, self.router.epoch()).await?;
                ready.cancel();
                store.listen(&mqs).await
            };
            let mut listener = tokio::select! {
                r = attempt => match r {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "listen for queue notifications; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            backoff = Duration::from_millis(100);
            // Anything enqueued while we were not listening is found by a claim.
            for p in &self.pools {
                p.wake.notify_one();
            }
            loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(n) => {
                            for p in by_channel.get(n.channel()).into_iter().flatten() {
                                p.wake.notify_one();
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "queue notification connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    async fn claim_loop(self: Arc<Self>, pool: Arc<Pool>, shutdown: CancellationToken) {
        let s = &self.settings;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = pool.slots.available_permits();
            if free == 0 {
                tokio::select! {
                    p = pool.slots.clone().acquire_owned() => drop(p),
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let want = free.min(s.claim_batch);
            let claimed = self
                .router
                .write_store()
                .claim_tasks(
                    &pool.mqs,
                    want,
                    &s.node_id,
                    &s.region,
                    &pool.spec.name,
                    s.leases,
                    self.router.epoch(),
                )
                .await;
            match claimed {
                Ok(tasks) if shutdown.is_cancelled() => {
                    // Claimed while stopping: give them straight back.
                    let refs: Vec<AttemptRef> = tasks.iter().map(|t| t.attempt_ref()).collect();
                    if let Err(e) = self
                        .router
                        .write_store()
                        .release_tasks(&refs, self.router.epoch())
                        .await
                    {
                        warn!(error = %e, "release tasks claimed during shutdown");
                    }
                    break;
                }
                Ok(tasks) => {
                    let got = tasks.len();
                    metrics::counter!("swf_tasks_claimed_total", "pool" => pool.spec.name.clone())
                        .increment(got as u64);
                    for t in tasks {
                        self.clone().spawn_task(&pool, t);
                    }
                    if got == want {
                        continue; // more may be waiting
                    }
                }
                Err(e) => {
                    // Claiming pauses while no writable primary is known.
                    warn!(pool = %pool.spec.name, error = %e, "claim tasks");
                    self.router.write_failed().await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = pool.wake.notified() => {}
                _ = tokio::time::sleep(s.poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        debug!(pool = %pool.spec.name, "claim loop stopped");
    }

    fn spawn_task(self: Arc<Self>, pool: &Arc<Pool>, t: ClaimedTask) {
        let Ok(permit) = pool.slots.clone().try_acquire_owned() else {
            // Cannot happen: only the claim loop takes slots, and it asked for
            // no more than were free. Let the visibility timeout re-deliver.
            warn!(run_id = %t.run_id, step_id = %t.step_id, "no free slot for a claimed task");
            return;
        };
        let a = t.attempt_ref();
        let pool = pool.clone();
        let ex = self.clone();
        let key = a.clone();
        let reporting = Arc::new(AtomicBool::new(false));
        let flag = reporting.clone();
        let mut guard = self.in_flight.lock().expect("in_flight lock");
        let span = tracing::info_span!("task", run_id = %t.run_id, step_id = %t.step_id,
                                       attempt = t.attempt, pool = %pool.spec.name);
        let handle = tokio::spawn(
            async move {
                let finish = ex.run_handler(&a, t).await;
                flag.store(true, Ordering::SeqCst);
                if let Some(finish) = finish {
                    let finish = finish.sanitized();
                    let failed = matches!(finish, Finish::Failed { .. });
                    match ex.finisher.call((a.clone(), finish)).await {
                        Ok(Ok(FinishResult::Stale)) => {
                            debug!(run_id = %a.run_id, step_id = %a.step_id, attempt = a.attempt,
                               "completion refused: attempt is stale");
                        }
                        Ok(Ok(_)) => {
                            // This node saw the run change: its cached reads are old.
                            ex.router.cache().invalidate(a.run_id).await;
                            let c = if failed {
                                &pool.failed
                            } else {
                                &pool.completed
                            };
                            c.fetch_add(1, Ordering::Relaxed);
                            let name = if failed {
                                "swf_tasks_failed_total"
                            } else {
                                "swf_tasks_completed_total"
                            };
                            metrics::counter!(name, "pool" => pool.spec.name.clone()).increment(1);
                        }
                        Ok(Err(e)) => {
                            warn!(run_id = %a.run_id, step_id = %a.step_id, error = %e.message,
                              "report task outcome; the visibility timeout will re-deliver it");
                        }
                        Err(_) => {}
                    }
                }
                ex.in_flight.lock().expect("in_flight lock").remove(&a);
                drop(permit);
            }
            .instrument(span),
        );
        guard.insert(
            key,
            InFlight {
                abort: handle.abort_handle(),
                reporting,
            },
        );
    }

    /// Runs one handler under its timeout, extending the lease while it runs.
    /// None: the attempt stopped being current (cancelled or re-claimed).
    async fn run_handler(&self, a: &AttemptRef, t: ClaimedTask) -> Option<Finish> {
        let Some(handler) = self.registry.handler(&t.handler) else {
            return Some(Finish::Failed {
                error: json!({"message": format!("handler `{}` is not registered on node {}",
                                                  t.handler, self.settings.node_id)}),
                timed_out: false,
            });
        };
        let ctx = TaskContext {
            run_id: t.run_id,
            step_id: t.step_id.clone(),
            attempt: t.attempt,
            input: t.input,
        };
        let timeout = Duration::from_millis(t.timeout_ms.max(1) as u64);
        let job = tokio::spawn(handler.call(ctx));
        let _abort = AbortOnDrop(job.abort_handle());
        let run = tokio::time::timeout(timeout, job);
        tokio::pin!(run);
        let lease = self.settings.leases.lease_ms as u64;
        let extend_every = Duration::from_millis((lease / 3).max(50));
        let needs_extension = t.timeout_ms as u64 > lease;
        loop {
            tokio::select! {
                r = &mut run => {
                    return Some(match r {
                        Ok(Ok(Ok(output))) => Finish::Completed(output),
                        Ok(Ok(Err(HandlerError(error)))) => Finish::Failed { error, timed_out: false },
                        Ok(Err(join)) => Finish::Failed {
                            error: json!({"message": format!("handler panicked: {join}")}),
                            timed_out: false,
                        },
                        Err(_) => Finish::Failed {
                            error: json!({"message": format!("timed out after {} ms", t.timeout_ms)}),
                            timed_out: true,
                        },
                    });
                }
                _ = tokio::time::sleep(extend_every), if needs_extension => {
                    match self.router.write_store()
                        .extend_tasks(std::slice::from_ref(a), self.settings.leases, self.router.epoch())
                        .await
                    {
                        Ok(current) if current.is_empty() => {
                            info!(run_id = %a.run_id, step_id = %a.step_id,
                                  "attempt no longer current (cancelled or re-claimed); stopping it");
                            return None;
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "extend task lease"),
                    }
                }
            }
        }
    }

    /// At shutdown, after cancelling: wait for the claim loops to stop, let
    /// in-flight tasks finish until the grace deadline, then release the rest
    /// so another executor runs them. Tasks already reporting an outcome are
    /// not aborted; their report is awaited (bounded).
    pub async fn drain(&self) {
        let grace = tokio::time::Instant::now() + self.settings.shutdown_grace;
        let busy = || self.in_flight.lock().expect("in_flight lock").len();
        while (self.claiming.load(Ordering::SeqCst) > 0 || busy() > 0)
            && tokio::time::Instant::now() < grace
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left: Vec<(AttemptRef, InFlight)> = {
            let mut map = self.in_flight.lock().expect("in_flight lock");
            let keys: Vec<AttemptRef> = map
                .iter()
                .filter(|(_, f)| !f.reporting.load(Ordering::SeqCst))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| map.remove(&k).map(|f| (k, f)))
                .collect()
        };
        for (_, f) in &left {
            f.abort.abort();
        }
        if !left.is_empty() {
            let refs: Vec<AttemptRef> = left.into_iter().map(|(a, _)| a).collect();
            match self
                .router
                .write_store()
                .release_tasks(&refs, self.router.epoch())
                .await
            {
                Ok(n) => info!(released = n, "released unfinished tasks at shutdown"),
                Err(e) => {
                    warn!(error = %e, "release tasks at shutdown; their visibility timeout will re-deliver them")
                }
            }
        }
        // Outcomes already on their way to the database: let them land.
        let report_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while busy() > 0 && tokio::time::Instant::now() < report_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops every in-flight task without telling the database (a crash).
    pub fn kill(&self) {
        for (_, f) in self.in_flight.lock().expect("in_flight lock").drain() {
            f.abort.abort();
        }
    }
}

/// Why a report failed; `transient` errors belong to the write path, the
/// others to an item (the batcher then reports each item alone).
#[derive(Debug, Clone)]
struct ReportError {
    message: String,
    transient: bool,
}

/// Reports a batch through the router's write path (transient errors are
/// retried there for up to 10 s).
async fn finish_batch(
    router: &Router,
    items: &[(AttemptRef, Finish)],
    leases: Leases,
) -> Result<Vec<FinishResult>, ReportError> {
    router
        .write(Duration::from_secs(10), |store, epoch| async move {
            store.finish_tasks(items, leases, epoch).await
        })
        .await
        .map_err(|e| ReportError {
            message: e.to_string(),
            transient: e.is_transient(),
        })
}
