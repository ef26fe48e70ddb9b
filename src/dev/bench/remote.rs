//! `swf bench --remote-region`: how fast a region far from the primary
//! executes and submits, next to the primary's own region, on one embedded
//! two-region cluster (what `swf dev --regions us-east,eu-west
//! --wan-latency-ms MS` runs: the replica and every cross-region link
//! behind delaying proxies).
//!
//! 1. Execution, once per region: queue `default` paused, `--workflows`
//!    1-step `noop` workflows whose step is pinned to the region submitted
//!    through the primary region's node (not timed), then the clock runs
//!    from the resume until the primary counts none running. Only that
//!    region's node can claim them, so the figure is its executor's.
//! 2. Submits, once per region: as many workflows (at most
//!    [`MAX_SUBMITS`]) submitted by `--callers` concurrent callers through
//!    that region's node, onto the
//!    paused queue, so nothing executes meanwhile; timed from the first
//!    call to the last answer (each a 2xx: committed on the primary). The
//!    backlog then drains, not timed.
//! 3. Batch submits, once per region: `--workflows` workflows in batches of
//!    [`BATCH`] (`POST /v1/workflows/batch`) from the same callers. A caller
//!    far from the primary waits a round trip per call, so this is how a
//!    remote client's submits are bounded by bandwidth, not round trips.
//!
//! Each phase also reports the round trips behind it, from this process's
//! metrics (the nodes run in it): claims, completion reports and submit
//! batches, with their mean size and time, and how long tasks waited in
//! the prefetch buffer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::args::BenchArgs;
use super::report::{api_client, machine, round, submit};
use crate::api::client::ApiClient;
use crate::dev::{DevCluster, DevOptions};
use crate::executor::handlers::Registry;
use crate::store::Store;

const PRIMARY: &str = "us-east";
const REMOTE: &str = "eu-west";
const QUEUE: &str = "default";
const POLL: Duration = Duration::from_millis(50);
/// Submits per region in phase 2: one at a time per caller, a caller far
/// from the primary makes about 1 / round trip of them per second.
const MAX_SUBMITS: usize = 2000;
/// Workflows per call in phase 3.
const BATCH: usize = 100;

/// The metrics a phase reports: (histogram, what the report calls it).
const ROUND_TRIPS: [(&str, &str); 5] = [
    ("swf_claim", "claims"),
    ("swf_finish", "completion_reports"),
    ("swf_extend", "lease_extensions"),
    ("swf_submit", "submit_batches"),
    ("swf_buffer_wait", "buffer_wait"),
];

pub(super) async fn remote_region(args: &BenchArgs) -> anyhow::Result<Value> {
    let machine = machine();
    let dir = std::env::temp_dir().join(format!("swf-bench-remote-{}", std::process::id()));
    eprintln!(
        "starting an embedded two-region cluster ({PRIMARY} primary, {REMOTE} replica, {} ms one-way) under {}",
        args.wan_latency_ms,
        dir.display()
    );
    let cluster = DevCluster::start(
        &DevOptions {
            data_dir: dir.clone(),
            regions: vec![PRIMARY.into(), REMOTE.into()],
            base_port: 0,
            wan_latency_ms: args.wan_latency_ms,
            fresh: true,
            tls: false,
            pool_size: Some(args.pool_size),
            ha: None,
        },
        Registry::with_builtins(),
    )
    .await
    .context("start the two-region cluster")?;
    let report = measure(&cluster, args).await;
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = report?;
    report["machine"] = machine;
    Ok(report)
}

async fn measure(cluster: &DevCluster, args: &BenchArgs) -> anyhow::Result<Value> {
    let url = |region: &str| -> anyhow::Result<String> {
        cluster
            .cluster
            .regions
            .iter()
            .find(|r| r.name == region)
            .map(|r| r.api_url.clone())
            .with_context(|| format!("region {region} in the cluster"))
    };
    let apis: BTreeMap<&str, ApiClient> = [
        (PRIMARY, api_client(&url(PRIMARY)?, args)?),
        (REMOTE, api_client(&url(REMOTE)?, args)?),
    ]
    .into();
    for (region, api) in &apis {
        crate::wait::until(Duration::from_secs(60), POLL, || async {
            api.ready().await.ok().map(|_| ())
        })
        .await
        .map_err(|_| anyhow::anyhow!("the node of {region} was not ready within 60 s"))?;
    }
    let primary_db = &cluster
        .cluster
        .regions
        .iter()
        .find(|r| r.name == PRIMARY)
        .context("the primary region")?
        .database_url;
    let counts = Store::connect_lazy(primary_db, 1)?;
    let n = args.workflows;
    let mut execution = serde_json::Map::new();
    let mut submits = serde_json::Map::new();
    let mut batches = serde_json::Map::new();
    let result = async {
        for region in [PRIMARY, REMOTE] {
            execution.insert(
                region.into(),
                execute(&apis[PRIMARY], &counts, region, n, args.concurrency).await?,
            );
        }
        for region in [PRIMARY, REMOTE] {
            submits.insert(
                region.into(),
                submit_through(
                    &apis[PRIMARY],
                    &apis[region],
                    &counts,
                    region,
                    n.min(MAX_SUBMITS),
                    args,
                    1,
                )
                .await?,
            );
        }
        for region in [PRIMARY, REMOTE] {
            batches.insert(
                region.into(),
                submit_through(
                    &apis[PRIMARY],
                    &apis[region],
                    &counts,
                    region,
                    n,
                    args,
                    BATCH,
                )
                .await?,
            );
        }
        anyhow::Ok(())
    }
    .await;
    counts.close().await;
    result?;
    let ratio = |m: &serde_json::Map<String, Value>| {
        let of = |r: &str| m[r]["workflows_per_s"].as_f64().unwrap_or(0.0);
        round(of(REMOTE) / of(PRIMARY).max(f64::MIN_POSITIVE), 3)
    };
    Ok(json!({"remote_region": {
        "primary_region": PRIMARY,
        "remote_region": REMOTE,
        "wan_latency_ms": args.wan_latency_ms,
        "workflows": n,
        "pool": args.pool_size,
        "execution": execution.clone(),
        "execution_ratio": ratio(&execution),
        "submit_callers": args.callers,
        "submit": submits.clone(),
        "submit_ratio": ratio(&submits),
        "batch_size": BATCH,
        "batch_submit": batches.clone(),
        "batch_submit_ratio": ratio(&batches),
    }}))
}

/// Phase 1 for `region`: the drain of `n` workflows pinned to it.
async fn execute(
    primary: &ApiClient,
    counts: &Store,
    region: &str,
    n: usize,
    submitters: usize,
) -> anyhow::Result<Value> {
    let before = counts.runs_running().await?;
    primary
        .set_queue_paused(QUEUE, true)
        .await
        .context("pause queue `default`")?;
    let wf = move |i: usize| {
        json!({"goal": format!("remote-bench-{region}-{i}"),
               "steps": [{"id": "a", "handler": "noop", "region": region}]})
    };
    submit_all(primary, n, submitters, wf).await?;
    let held = counts.runs_running().await?;
    ensure!(
        held == before + n as i64,
        "after submitting {n} workflows to the paused queue {held} runs are running (before: {before}): something executed them early"
    );
    let metrics = Snapshot::take();
    let start = Instant::now();
    primary
        .set_queue_paused(QUEUE, false)
        .await
        .context("resume queue `default`")?;
    let seconds = drained(counts, before, n, start).await?.as_secs_f64();
    Ok(json!({
        "seconds": round(seconds, 3),
        "workflows_per_s": round(n as f64 / seconds, 1),
        "round_trips": metrics.since(),
    }))
}

/// Phases 2 and 3 for the node of `region`: `n` workflows submitted `batch`
/// at a time (1: `POST /v1/workflows`) from `--callers` callers onto the
/// paused queue, then the drain (not timed).
async fn submit_through(
    primary: &ApiClient,
    api: &ApiClient,
    counts: &Store,
    region: &str,
    n: usize,
    args: &BenchArgs,
    batch: usize,
) -> anyhow::Result<Value> {
    let before = counts.runs_running().await?;
    primary
        .set_queue_paused(QUEUE, true)
        .await
        .context("pause queue `default`")?;
    let wf = move |i: usize| {
        json!({"goal": format!("remote-submit-{region}-{i}"),
               "steps": [{"id": "a", "handler": "noop", "region": region}]})
    };
    let metrics = Snapshot::take();
    let start = Instant::now();
    let latencies = if batch == 1 {
        submit_all(api, n, args.callers, wf).await?
    } else {
        submit_batches(api, n, args.callers, batch, wf).await?
    };
    let seconds = start.elapsed().as_secs_f64();
    let round_trips = metrics.since();
    primary
        .set_queue_paused(QUEUE, false)
        .await
        .context("resume queue `default`")?;
    drained(counts, before, n, Instant::now()).await?;
    let mut lat = latencies;
    Ok(json!({
        "workflows": n,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(n as f64 / seconds, 1),
        "latency_ms": super::report::percentiles(&mut lat),
        "round_trips": round_trips,
    }))
}

/// Submits `n` workflows `wf(i)` through `api` from `callers` concurrent
/// callers; each must be accepted. Answers each call's latency.
async fn submit_all(
    api: &ApiClient,
    n: usize,
    callers: usize,
    wf: impl Fn(usize) -> Value,
) -> anyhow::Result<Vec<Duration>> {
    timed_calls(api, callers, (0..n).map(wf), |api, body| async move {
        submit(&api, &body).await.map(|_| ()).context("submit")
    })
    .await
}

/// Submits `n` workflows `wf(i)` through `api` in batches of `batch` from
/// `callers` concurrent callers; each batch must be accepted whole.
/// Answers each call's latency.
async fn submit_batches(
    api: &ApiClient,
    n: usize,
    callers: usize,
    batch: usize,
    wf: impl Fn(usize) -> Value,
) -> anyhow::Result<Vec<Duration>> {
    let bodies = (0..n).step_by(batch).map(
        |first| json!({"workflows": (first..(first + batch).min(n)).map(&wf).collect::<Vec<_>>()}),
    );
    timed_calls(api, callers, bodies, |api, body| async move {
        api.submit_batch(&body, crate::api::client::RetryPolicy::ONCE, |_, _| {})
            .await
            .map(|_| ())
            .context("batch submit")
    })
    .await
}

/// Makes `call(api, body)` for each body, at most `callers` at once; each
/// must succeed. Answers each call's latency.
async fn timed_calls<F, Fut>(
    api: &ApiClient,
    callers: usize,
    bodies: impl Iterator<Item = Value>,
    call: F,
) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(ApiClient, Value) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(callers));
    let mut handles = Vec::new();
    for body in bodies {
        let permit = sem.clone().acquire_owned().await?;
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = call(api, body).await;
            drop(permit);
            r.map(|_| t.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// Waits until the primary counts no more running runs than `before`;
/// answers the time since `start`.
async fn drained(
    counts: &Store,
    before: i64,
    n: usize,
    start: Instant,
) -> anyhow::Result<Duration> {
    let within = Duration::from_secs(300) + Duration::from_millis(20 * n as u64);
    let r = crate::wait::until(within, POLL, || async {
        match counts.runs_running().await {
            Ok(r) if r <= before => Some(Ok(start.elapsed())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    })
    .await;
    match r {
        Ok(r) => Ok(r?),
        Err(_) => bail!(
            "{n} workflows were not done within {within:?}: {} still running",
            counts.runs_running().await.unwrap_or(-1) - before
        ),
    }
}

/// Sums and counts of the round-trip histograms at one moment.
struct Snapshot(BTreeMap<String, f64>);

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot(histogram_totals(&crate::telemetry::prometheus().render()))
    }

    /// What happened since: per kind, round trips, their mean size and time.
    fn since(&self) -> Value {
        let now = Snapshot::take().0;
        let delta =
            |k: &str| now.get(k).copied().unwrap_or(0.0) - self.0.get(k).copied().unwrap_or(0.0);
        let mut out = serde_json::Map::new();
        for (metric, name) in ROUND_TRIPS {
            let v = if metric == "swf_buffer_wait" {
                let c = delta("swf_buffer_wait_seconds_count");
                json!({
                    "tasks": c,
                    "mean_ms": round(1000.0 * delta("swf_buffer_wait_seconds_sum") / c.max(1.0), 2),
                })
            } else {
                let c = delta(&format!("{metric}_round_trip_seconds_count"));
                json!({
                    "round_trips": c,
                    "mean_size": round(delta(&format!("{metric}_batch_size_sum")) / c.max(1.0), 1),
                    "mean_ms": round(1000.0 * delta(&format!("{metric}_round_trip_seconds_sum")) / c.max(1.0), 2),
                })
            };
            out.insert(name.into(), v);
        }
        Value::Object(out)
    }
}

/// `<name>_sum` and `<name>_count` of every histogram in a Prometheus text
/// rendering, summed over their labels.
fn histogram_totals(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !(name.ends_with("_sum") || name.ends_with("_count")) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_totals_sum_each_series_over_its_labels() {
        let text = "# TYPE swf_claim_batch_size histogram\n\
            swf_claim_batch_size_bucket{pool=\"a\",le=\"1\"} 3\n\
            swf_claim_batch_size_sum{pool=\"a\"} 40\n\
            swf_claim_batch_size_count{pool=\"a\"} 4\n\
            swf_claim_batch_size_sum{pool=\"b\"} 2\n\
            swf_claim_batch_size_count{pool=\"b\"} 1\n\
            swf_finish_round_trip_seconds_sum 0.5\n\
            swf_finish_round_trip_seconds_count 5\n";
        let t = histogram_totals(text);
        assert_eq!(t["swf_claim_batch_size_sum"], 42.0);
        assert_eq!(t["swf_claim_batch_size_count"], 5.0);
        assert_eq!(t["swf_finish_round_trip_seconds_count"], 5.0);
        assert!(!t.contains_key("swf_claim_batch_size_bucket"));
    }
}
