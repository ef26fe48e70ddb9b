//! Helpers every phase of `swf bench` shares: the API client, workflow
//! shapes, one unretried submit, rounding, latency percentiles and the
//! machine's description.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::api::client::{Answer, ApiClient, RetryPolicy};
use crate::api::wire::Submitted;

use super::args::BenchArgs;
use crate::telemetry::rss::load_average;

/// The API client of the benchmark's submitters and readers, at `base`.
pub(super) fn api_client(base: &str, args: &BenchArgs) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::builder(base)
        .tls(&args.access.client()?)
        .bearer(args.access.token.as_deref())?
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build())
}

/// Cores and the load average when the benchmark started (the machine may
/// be shared with other work).
pub(super) fn machine() -> Value {
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_avg": load_average(),
    })
}

/// Workflow `i` of shape `name` and its number of tasks.
pub(super) fn shape(name: &str, i: usize) -> anyhow::Result<(Value, usize)> {
    let goal = format!("bench-{name}-{i}");
    Ok(match name {
        "one" => (
            json!({"goal": goal, "steps": [{"id": "a", "handler": "noop"}]}),
            1,
        ),
        "chain" => (
            json!({"goal": goal, "steps": [
                {"id": "s1", "handler": "noop"},
                {"id": "s2", "handler": "noop", "depends_on": ["s1"]},
                {"id": "s3", "handler": "noop", "depends_on": ["s2"]},
                {"id": "s4", "handler": "noop", "depends_on": ["s3"]},
                {"id": "s5", "handler": "noop", "depends_on": ["s4"]}]}),
            5,
        ),
        "fanout" => (
            json!({"goal": goal, "steps": [
                {"id": "root", "handler": "noop"},
                {"id": "f1", "handler": "noop", "depends_on": ["root"]},
                {"id": "f2", "handler": "noop", "depends_on": ["root"]},
                {"id": "f3", "handler": "noop", "depends_on": ["root"]},
                {"id": "join", "handler": "noop", "depends_on": ["f1", "f2", "f3"]}]}),
            5,
        ),
        other => bail!("unknown shape `{other}`: use one, chain or fanout"),
    })
}

/// One submit, not retried (a benchmark measures what it gets).
pub(super) async fn submit(api: &ApiClient, wf: &Value) -> anyhow::Result<Answer<Submitted>> {
    api.submit(wf, RetryPolicy::ONCE, |_, _| {})
        .await
        .context("submit")
}

pub(super) fn ts(v: &str) -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
    Ok(chrono::DateTime::parse_from_rfc3339(v)?)
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// p50/p99/max in milliseconds.
pub(super) fn percentiles(v: &mut [Duration]) -> Value {
    if v.is_empty() {
        return json!({"samples": 0});
    }
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        round(v[i].as_secs_f64() * 1000.0, 3)
    };
    json!({"samples": v.len(), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)})
}
