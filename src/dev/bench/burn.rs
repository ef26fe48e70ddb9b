//! `swf bench --burn-down N`: how fast one executor-only node drains a
//! backlog of N pre-submitted 1-step workflows (what graphile-worker's
//! burn-down measures with pre-inserted jobs).
//!
//! On the embedded cluster, each run (DESIGN 10.5): queue `default` is
//! paused, an executor-only node with a `--pool-size` pool starts (it
//! claims nothing of a paused queue), and an edge node (client only)
//! accepts N `noop` workflows from `--concurrency` submitters (not timed;
//! the database is checked to hold them all running). Then the clock runs
//! from the queue's resume until the database counts no run running. The
//! count is one query of the running runs every [`POLL`] on the
//! benchmark's own connection, once the node's own count of finished tasks
//! says all are done, so the result is late by at most one poll;
//! `--history N` first inserts N finished runs, so that the drain runs
//! against that much history.
//!
//! Memory: the peak RSS of this process (the node runs in it) is reset just
//! before the executor starts where Linux allows, so `rss_mb_peak` is the
//! drain's peak; `rss_mb_after` is the RSS once that node has stopped, the
//! figure to compare across `--repeat` runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::args::BenchArgs;
use super::embedded::{Embedded, Roles};
use super::report::{api_client, machine, round, submit};
use crate::api::client::ApiClient;
use crate::api::wire::RunState;
use crate::node::Node;
use crate::store::Store;
use crate::telemetry::rss::{reset_peak, Rss};

/// How often the drain's running count is read (a range of the status
/// index as large as what is left of the backlog, a few ms of PostgreSQL
/// CPU at 20,000), so not more often; the figure is late by at most this.
const POLL: Duration = Duration::from_millis(100);

/// The queue the backlog waits on, paused, until the clock starts.
const QUEUE: &str = "default";

/// Runs `--repeat` burn-downs of `n` workflows on a fresh embedded cluster;
/// returns the report.
pub(super) async fn burn_down(args: &BenchArgs, n: usize) -> anyhow::Result<Value> {
    let machine = machine();
    let cluster = Embedded::start().await?.with_cache_mib(args.cache_mib);
    let history = fill_history(&cluster, args.history).await;
    let runs = match history {
        Ok(()) => repeat(&cluster, args, n).await,
        Err(e) => Err(e),
    };
    cluster.stop().await;
    let mut runs = runs?;
    // The run of median rate stands for all of them; every run is listed.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|a, b| rate(&runs[*a]).total_cmp(&rate(&runs[*b])));
    let mut report = runs[order[order.len() / 2]].clone();
    if runs.len() > 1 {
        report["runs"] = json!(runs.len());
        report["reported_run"] = report["run"].clone();
        report["repeats"] = Value::Array(std::mem::take(&mut runs));
    }
    report["history"] = json!(args.history);
    Ok(json!({"burn_down": report, "machine": machine}))
}

/// `--history N`: N finished runs inserted before the first run.
async fn fill_history(cluster: &Embedded, n: u64) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let store = cluster.store(1)?;
    let t = Instant::now();
    let filled = store.fill_history(n, "us-east").await;
    store.close().await;
    filled.with_context(|| format!("insert {n} finished runs of history"))?;
    tracing::info!(
        runs = n,
        seconds = t.elapsed().as_secs_f64(),
        "history inserted"
    );
    Ok(())
}

fn rate(run: &Value) -> f64 {
    run["workflows_per_s"].as_f64().unwrap_or(0.0)
}

async fn repeat(cluster: &Embedded, args: &BenchArgs, n: usize) -> anyhow::Result<Vec<Value>> {
    let counts = cluster.store(1)?;
    let mut runs = Vec::with_capacity(args.repeat);
    let mut result = Ok(());
    for k in 1..=args.repeat {
        match one_run(cluster, &counts, args, n, k).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                result = Err(e.context(format!("burn-down run {k} of {}", args.repeat)));
                break;
            }
        }
    }
    counts.close().await;
    result.map(|()| runs)
}

/// Runs by status, from the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    running: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
}

impl Counts {
    async fn read(store: &Store) -> anyhow::Result<Counts> {
        let by: BTreeMap<String, i64> = store
            .runs_by_status()
            .await
            .context("count runs by status")?
            .into_iter()
            .collect();
        let of = |s: RunState| by.get(s.as_str()).copied().unwrap_or(0);
        Ok(Counts {
            running: of(RunState::Running),
            completed: of(RunState::Completed),
            failed: of(RunState::Failed),
            cancelled: of(RunState::Cancelled),
        })
    }

    fn finished(&self) -> i64 {
        self.completed + self.failed + self.cancelled
    }
}

/// Run `k`: pre-submit, then time the drain.
async fn one_run(
    cluster: &Embedded,
    counts: &Store,
    args: &BenchArgs,
    n: usize,
    k: usize,
) -> anyhow::Result<Value> {
    let before = Counts::read(counts).await?;
    let n_i = n as i64;

    // 1. Queue `default` paused, the executor-only node started (it claims
    // nothing while the queue is paused), and the backlog submitted
    // through an edge node (none of this timed).
    let mut edge = cluster
        .node(&format!("bench-edge-{k}"), Roles::Edge, args.pool_size)
        .await
        .context("start the edge node")?;
    let api = api_client(&edge.url(), args)?;
    let paused = api.set_queue_paused(QUEUE, true).await;
    let node_start = Instant::now();
    let worker = match paused {
        Ok(_) => cluster
            .node(&format!("bench-worker-{k}"), Roles::Worker, args.pool_size)
            .await
            .context("start the executor-only node"),
        Err(e) => Err(anyhow::Error::new(e).context("pause queue `default`")),
    };
    let mut worker = match worker {
        Ok(w) => w,
        Err(e) => {
            edge.shutdown().await;
            return Err(e);
        }
    };
    let node_start_s = node_start.elapsed().as_secs_f64();
    let drained = drain(counts, &api, &worker, args, n, k, before).await;
    let peak = Rss::read();
    worker.shutdown().await;
    edge.shutdown().await;
    let (elapsed, submit_s, peak_is_drains) = drained?;
    let done = Counts::read(counts).await?;
    ensure!(
        done.finished() >= before.finished() + n_i,
        "no run is running, yet only {} of {n} finished (counts {done:?}, before {before:?})",
        done.finished() - before.finished()
    );
    let completed = done.completed - before.completed;
    ensure!(
        completed == n_i,
        "{} of {n} runs completed; the others ended failed or cancelled (counts {done:?}, before {before:?})",
        completed
    );
    let after = Rss::read();
    let seconds = elapsed.as_secs_f64();
    Ok(json!({
        "run": k,
        "workflows": n,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(n as f64 / seconds, 1),
        "completed": completed,
        "pool": args.pool_size,
        "node_start_s": round(node_start_s, 3),
        "poll_ms": POLL.as_millis() as u64,
        "submit_s": round(submit_s, 3),
        "submit_workflows_per_s": round(n as f64 / submit_s, 1),
        "submitters": args.concurrency,
        "key_limit": args.key_limit,
        "keys": args.key_limit.map(|_| args.keys),
        "rss_mb_peak": peak.map(|r| r.peak_mib()),
        "rss_peak_since": if peak_is_drains { "drain start" } else { "process start" },
        "rss_mb_after": after.map(|r| r.current_mib()),
    }))
}

/// The timed part of run `k`: the backlog submitted through `api` onto the
/// paused queue (checked to wait there), then a checkpoint, and the clock
/// runs from the resume until `worker` has finished `n` tasks and the
/// database counts no run running that was not running `before`. Returns
/// the drain's time, the pre-submit's seconds, and whether the RSS peak
/// was reset at the drain's start.
async fn drain(
    counts: &Store,
    api: &ApiClient,
    worker: &Node,
    args: &BenchArgs,
    n: usize,
    k: usize,
    before: Counts,
) -> anyhow::Result<(Duration, f64, bool)> {
    let n_i = n as i64;
    let submit_start = Instant::now();
    pre_submit(api, args, n, k).await?;
    let submit_s = submit_start.elapsed().as_secs_f64();
    let queued = Counts::read(counts).await?;
    ensure!(
        queued.running == before.running + n_i && queued.finished() == before.finished(),
        "after submitting {n} workflows to the paused queue the database holds {queued:?} \
         (before: {before:?}): something executed the backlog early"
    );
    // As the peer benchmark does before its workers start.
    counts
        .checkpoint()
        .await
        .context("checkpoint before the drain")?;
    let peak_is_drains = reset_peak();
    let start = Instant::now();
    api.set_queue_paused(QUEUE, false)
        .await
        .context("resume queue `default`")?;
    let within = Duration::from_secs(600) + Duration::from_millis(10 * n as u64);
    // Polled: the worker's own count of finished tasks (no query, so the
    // poll takes nothing from the database being measured); once it has
    // finished n, the running runs confirm (one per poll until they do);
    // then all counts once.
    let drained = crate::wait::until(within, POLL, || async {
        if worker.tasks_finished() < n as u64 {
            return None;
        }
        match counts.runs_running().await {
            Ok(r) if r <= before.running => Some(Ok(start.elapsed())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    })
    .await;
    let elapsed = match drained {
        Ok(r) => r.context("count running runs")?,
        Err(t) => {
            let now = Counts::read(counts).await.ok();
            bail!(
                "the backlog was not drained within {:?}: {} of {n} finished (counts {now:?})",
                t.0,
                now.map_or(0, |c| c.finished() - before.finished())
            );
        }
    };
    Ok((elapsed, submit_s, peak_is_drains))
}

/// Submits `n` 1-step `noop` workflows through the node at `base` from
/// `--concurrency` submitters; each must be accepted.
async fn pre_submit(api: &ApiClient, args: &BenchArgs, n: usize, k: usize) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let api = api.clone();
        let mut wf = json!({"goal": format!("burn-down-{k}-{i}"),
                            "steps": [{"id": "a", "handler": "noop"}]});
        if let Some(limit) = args.key_limit {
            wf["concurrency"] = json!({"key": format!("bench-{}", i % args.keys), "limit": limit});
        }
        handles.push(tokio::spawn(async move {
            let r = submit(&api, &wf).await;
            drop(permit);
            r.map(|_| ())
        }));
    }
    for h in handles {
        h.await?.context("pre-submit")?;
    }
    Ok(())
}
