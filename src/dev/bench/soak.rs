//! `swf bench --soak SECS`: a steady mixed load for SECS seconds, every run
//! followed to its end and checked, with this process's RSS sampled along
//! the way (embedded, the node runs in it).
//!
//! Each second `--rate` workflows start, in a fixed mix of 20:
//! - 12 two-step chains (`noop` then `echo`): must complete;
//! - 2 maps over three items then a step after them: must complete;
//! - 2 with a step that always fails (2 attempts): must fail; then the run
//!   is retried once through the API and must fail again, with 4 attempts;
//! - 2 with a 5 s `sleep` step, cancelled right after the submit: must end
//!   cancelled;
//! - 2 paused after the submit and resumed a second later: must complete.
//!
//! Right after each submit the run is read back with the submit's
//! consistency token (a 404 there is a stale read); then it is polled until
//! it finishes. Everything that is not what the mix says it must be is an
//! error, counted by kind: `--json` prints `{"soak": {"secs", "completed",
//! "errors", "rss_mb_start", "rss_mb_end", ...}}`. The exit code is 1 when
//! there were errors.
//!
//! Memory is the node's, read from its `/metrics` every [`RSS_EVERY`]
//! (`swf_process_rss_bytes`, `swf_cache_bytes`), so a soak against `--api`
//! measures the node and not this load generator; the generator keeps
//! constant memory itself (read latencies in a fixed histogram).
//! `rss_mb_start` is the sample at the end of the warm-up: a tenth of the
//! run (at most a minute), and on until the lineage cache holds 95% of the
//! most it held in the run (a cache filling to its bound is warm-up, not
//! growth); `rss_mb_end` is the last sample, after every run ended.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::args::BenchArgs;
use super::embedded::{Embedded, Roles};
use super::report::{api_client, machine, round, submit};
use crate::api::client::ApiClient;
use crate::api::wire::RunState;

/// How often RSS is sampled.
const RSS_EVERY: Duration = Duration::from_secs(10);
/// How often a run is polled until it ends.
const POLL: Duration = Duration::from_millis(250);
/// How long a run may take to end after its submit before it counts as an error.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What one workflow of the mix does and how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chain,
    Map,
    FailRetry,
    Cancel,
    PauseResume,
}

impl Kind {
    fn of(i: u64) -> Kind {
        match i % 20 {
            0..=11 => Kind::Chain,
            12 | 13 => Kind::Map,
            14 | 15 => Kind::FailRetry,
            16 | 17 => Kind::Cancel,
            _ => Kind::PauseResume,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Chain => "chain",
            Kind::Map => "map",
            Kind::FailRetry => "fail_retry",
            Kind::Cancel => "cancel",
            Kind::PauseResume => "pause_resume",
        }
    }

    fn workflow(self, i: u64) -> Value {
        let goal = format!("soak-{}-{i}", self.name());
        match self {
            Kind::Chain | Kind::PauseResume => json!({"goal": goal, "input": {"i": i}, "steps": [
                {"id": "a", "handler": "noop", "input": {"i": i}},
                {"id": "b", "handler": "echo", "depends_on": ["a"]}]}),
            Kind::Map => json!({"goal": goal, "input": [1, 2, 3], "steps": [
                {"id": "each", "handler": "echo", "map": "$run"},
                {"id": "after", "handler": "noop", "depends_on": ["each"]}]}),
            Kind::FailRetry => json!({"goal": goal, "steps": [
                {"id": "a", "handler": "noop"},
                {"id": "b", "handler": "fail", "depends_on": ["a"], "max_attempts": 2,
                 "input": {"message": "soak: fails on purpose"}}]}),
            Kind::Cancel => json!({"goal": goal, "steps": [
                {"id": "a", "handler": "sleep", "input": {"ms": 5000}}]}),
        }
    }

    fn must_end(self) -> RunState {
        match self {
            Kind::Chain | Kind::Map | Kind::PauseResume => RunState::Completed,
            Kind::FailRetry => RunState::Failed,
            Kind::Cancel => RunState::Cancelled,
        }
    }
}

/// What the workers share: counts and errors by kind, read latencies.
#[derive(Default)]
struct Tally {
    ended_as_expected: u64,
    by_kind: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    token_reads: Histogram,
}

impl Tally {
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// Runs the soak on `--api` or an embedded cluster with one hybrid node.
pub(super) async fn soak(args: &BenchArgs, secs: u64) -> anyhow::Result<(Value, bool)> {
    let machine = machine();
    let Some(base) = &args.api else {
        let cluster = Embedded::start().await?.with_cache_mib(args.cache_mib);
        let out = match cluster.node("soak-1", Roles::Hybrid, args.pool_size).await {
            Ok(mut node) => {
                let r = match api_client(&node.url(), args) {
                    Ok(api) => drive(&api, args, secs).await,
                    Err(e) => Err(e),
                };
                node.shutdown().await;
                r
            }
            Err(e) => Err(e),
        };
        cluster.stop().await;
        return out.map(|(mut r, ok)| {
            r["machine"] = machine;
            (r, ok)
        });
    };
    let api = api_client(base.trim_end_matches('/'), args)?;
    let (mut r, ok) = drive(&api, args, secs).await?;
    r["machine"] = machine;
    Ok((r, ok))
}

async fn drive(api: &ApiClient, args: &BenchArgs, secs: u64) -> anyhow::Result<(Value, bool)> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let start = Instant::now();
    let sampler = {
        let (samples, api) = (samples.clone(), api.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RSS_EVERY);
            loop {
                every.tick().await;
                if let Some(s) = sample(&api, start).await {
                    samples.lock().expect("samples lock").push(s);
                }
            }
        })
    };
    // At most `--concurrency` workflows in flight: past it the rate drops,
    // which the report shows (`rate_achieved`).
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1) * 16));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut workers = tokio::task::JoinSet::new();
    let mut started = 0u64;
    let end = start + Duration::from_secs(secs);
    let mut next_report = start + Duration::from_secs(60);
    while Instant::now() < end {
        tick.tick().await;
        let permit = slots.clone().acquire_owned().await?;
        let (api, shared, i) = (api.clone(), tally.clone(), started);
        workers.spawn(async move {
            one(&api, Kind::of(i), i, &shared).await;
            drop(permit);
        });
        started += 1;
        while workers.try_join_next().is_some() {}
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            let t = tally.lock().expect("tally lock");
            eprintln!(
                "soak: {:.0} s, {started} started, {} ended as expected, {} errors",
                start.elapsed().as_secs_f64(),
                t.ended_as_expected,
                t.errors.values().sum::<u64>()
            );
        }
    }
    let load_s = start.elapsed().as_secs_f64();
    while workers.join_next().await.is_some() {}
    if let Some(s) = sample(api, start).await {
        samples.lock().expect("samples lock").push(s);
    }
    sampler.abort();
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    let (warmup, rss_start) = warm(&samples, secs);
    let rss_end = samples.last().map(|s| s.rss_mb);
    let t = std::mem::take(&mut *tally.lock().expect("tally lock"));
    let errors: u64 = t.errors.values().sum();
    let report = json!({"soak": {
        "secs": secs,
        "rate": args.rate,
        "rate_achieved": round(started as f64 / load_s, 1),
        "started": started,
        "completed": t.ended_as_expected,
        "by_kind": t.by_kind,
        "errors": errors,
        "error_kinds": t.errors,
        "token_read_ms": t.token_reads.summary(),
        "warmup_s": round(warmup, 1),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_samples": samples.iter().map(|s| json!([round(s.at_s, 1), s.rss_mb])).collect::<Vec<_>>(),
        "cache_mb_samples": samples.iter().map(|s| json!([round(s.at_s, 1), s.cache_mb])).collect::<Vec<_>>(),
    }});
    Ok((report, errors == 0))
}

/// One workflow of the mix, from its submit to its end; what went wrong
/// goes to the tally.
async fn one(api: &ApiClient, kind: Kind, i: u64, tally: &Mutex<Tally>) {
    let err = |what: String| tally.lock().expect("tally lock").error(what);
    let submitted = match submit(api, &kind.workflow(i)).await {
        Ok(a) => a.body,
        Err(e) => return err(format!("submit: {}", short(&e.to_string()))),
    };
    let id = submitted.run_id;
    // Read-your-write with the submit's token.
    let reader = api.with_token(Some(&submitted.consistency_token));
    let t = Instant::now();
    match reader.status(&id.to_string()).await {
        Ok(_) => tally
            .lock()
            .expect("tally lock")
            .token_reads
            .record(t.elapsed()),
        Err(e) => return err(format!("read with token: {}", short(&e.to_string()))),
    }
    let acted = match kind {
        Kind::Cancel => api.cancel(id).await.map(|_| ()),
        Kind::PauseResume => pause_resume(api, id).await,
        _ => Ok(()),
    };
    if let Err(e) = acted {
        return err(format!("{}: {}", kind.name(), short(&e.to_string())));
    }
    let Some(end) = follow(api, id, &err).await else {
        return;
    };
    let end = if kind == Kind::FailRetry && end == RunState::Failed {
        if let Err(e) = api.retry(id).await {
            return err(format!("retry: {}", short(&e.to_string())));
        }
        let Some(again) = follow(api, id, &err).await else {
            return;
        };
        let attempts = api
            .status(&id.to_string())
            .await
            .map(|a| a.body.metrics.total_attempts)
            .unwrap_or(0);
        // a once, b twice, then b twice more.
        if attempts != 5 {
            return err(format!("fail_retry: {attempts} attempts, not 5"));
        }
        again
    } else {
        end
    };
    if end != kind.must_end() {
        return err(format!(
            "{} ended {}, not {}",
            kind.name(),
            end.as_str(),
            kind.must_end().as_str()
        ));
    }
    let mut t = tally.lock().expect("tally lock");
    t.ended_as_expected += 1;
    *t.by_kind.entry(kind.name()).or_default() += 1;
}

/// Pauses the run, and resumes it a second later. A run may finish before
/// the pause arrives, or while paused (the task it had started was its
/// last): 409 `invalid_state` then, which is no error; how it ended is
/// checked after.
async fn pause_resume(api: &ApiClient, id: Uuid) -> Result<(), crate::api::client::CallError> {
    let finished = |e: &crate::api::client::CallError| e.api().is_some_and(|f| f.status == 409);
    match api.set_paused(id, true).await {
        Ok(_) => {}
        Err(e) if finished(&e) => return Ok(()),
        Err(e) => return Err(e),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    match api.set_paused(id, false).await {
        Err(e) if !finished(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Polls the run until it is finished; its end, or None after an error.
async fn follow(api: &ApiClient, id: Uuid, err: &impl Fn(String)) -> Option<RunState> {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        match api.status(&id.to_string()).await {
            Ok(a) if a.body.status.is_terminal() => return Some(a.body.status),
            Ok(_) if Instant::now() > deadline => {
                err(format!(
                    "not finished {} s after its submit",
                    RUN_DEADLINE.as_secs()
                ));
                return None;
            }
            Ok(_) => tokio::time::sleep(POLL).await,
            Err(e) => {
                err(format!("status: {}", short(&e.to_string())));
                return None;
            }
        }
    }
}

/// An error's text without what differs per call (ids), cut short, so
/// errors of one cause count under one key.
fn short(s: &str) -> String {
    let mut out: String = s
        .split_whitespace()
        .map(|w| {
            if Uuid::parse_str(w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
                .is_ok()
            {
                "<id>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    out.truncate(160);
    out
}

/// One sample of the node's memory, from its `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_s: f64,
    rss_mb: f64,
    cache_mb: f64,
}

/// The node's RSS and lineage cache size now; None when its `/metrics`
/// does not answer or lacks the RSS.
async fn sample(api: &ApiClient, start: Instant) -> Option<Sample> {
    let r = api
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .ok()?;
    let text = r.error_for_status().ok()?.text().await.ok()?;
    let (rss, cache) = memory_gauges(&text)?;
    let mb = |b: f64| (b / 1024.0 / 1024.0 * 10.0).round() / 10.0;
    Some(Sample {
        at_s: start.elapsed().as_secs_f64(),
        rss_mb: mb(rss),
        cache_mb: mb(cache),
    })
}

/// `swf_process_rss_bytes` and the sum of `swf_cache_bytes` over the
/// node's caches in a Prometheus text.
fn memory_gauges(text: &str) -> Option<(f64, f64)> {
    let value = |l: &str| l.rsplit(' ').next()?.trim().parse::<f64>().ok();
    let rss = text
        .lines()
        .find(|l| l.starts_with("swf_process_rss_bytes "))
        .and_then(value)?;
    let cache = text
        .lines()
        .filter(|l| l.starts_with("swf_cache_bytes{"))
        .filter_map(value)
        .sum();
    Some((rss, cache))
}

/// The warm-up's length and the RSS at its end: the first sample past a
/// tenth of the run (at most a minute) at which the cache holds 95% of the
/// most it held.
fn warm(samples: &[Sample], secs: u64) -> (f64, Option<f64>) {
    let min = (secs as f64 / 10.0).min(60.0);
    let most = samples.iter().map(|s| s.cache_mb).fold(0.0, f64::max);
    let end = samples
        .iter()
        .find(|s| s.at_s >= min && s.cache_mb >= most * 0.95)
        .or(samples.first());
    (end.map_or(min, |s| s.at_s), end.map(|s| s.rss_mb))
}

/// Latencies in buckets 2% apart (from 1 µs): constant memory however long
/// the soak runs, percentiles within 2%.
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Self::BUCKETS],
            n: 0,
            max: Duration::ZERO,
        }
    }
}

impl Histogram {
    /// 1.02^1300 µs is about 45 hours.
    const BUCKETS: usize = 1300;

    fn bucket(d: Duration) -> usize {
        let us = d.as_secs_f64() * 1e6;
        if us <= 1.0 {
            return 0;
        }
        ((us.ln() / 1.02f64.ln()).ceil() as usize).min(Self::BUCKETS - 1)
    }

    fn record(&mut self, d: Duration) {
        self.counts[Self::bucket(d)] += 1;
        self.n += 1;
        self.max = self.max.max(d);
    }

    /// The upper bound (ms) of the bucket holding the `q` quantile.
    fn quantile_ms(&self, q: f64) -> f64 {
        let rank = ((self.n as f64 - 1.0) * q).round() as u64 + 1;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper_ms = 1.02f64.powi(i as i32) / 1000.0;
                return round(upper_ms.min(self.max.as_secs_f64() * 1000.0), 3);
            }
        }
        round(self.max.as_secs_f64() * 1000.0, 3)
    }

    fn summary(&self) -> Value {
        if self.n == 0 {
            return json!({"samples": 0});
        }
        json!({"samples": self.n, "p50": self.quantile_ms(0.5), "p99": self.quantile_ms(0.99),
               "max": round(self.max.as_secs_f64() * 1000.0, 3)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_twelve_chains_two_of_each_other_kind_in_twenty() {
        let mut n: BTreeMap<&str, u64> = BTreeMap::new();
        for i in 0..200 {
            *n.entry(Kind::of(i).name()).or_default() += 1;
        }
        assert_eq!(n["chain"], 120);
        for k in ["map", "fail_retry", "cancel", "pause_resume"] {
            assert_eq!(n[k], 20, "{k}");
        }
        assert_eq!(
            short("run 01a24336-70ae-7045-98a3-51141d33c61f not found"),
            "run <id> not found"
        );
    }

    #[test]
    fn percentiles_of_the_histogram_are_within_two_percent() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.021;
        assert!(close(h.quantile_ms(0.5), 500.0), "{}", h.quantile_ms(0.5));
        assert!(close(h.quantile_ms(0.99), 990.0), "{}", h.quantile_ms(0.99));
        assert_eq!(h.summary()["max"], 1000.0);
        assert_eq!(h.summary()["samples"], 1000);
        assert_eq!(Histogram::default().summary()["samples"], 0);
        h.record(Duration::from_secs(1_000_000));
        assert_eq!(h.counts[Histogram::BUCKETS - 1], 1);
    }

    #[test]
    fn the_warm_up_lasts_until_the_cache_is_nearly_full() {
        let s = |at_s: f64, rss_mb: f64, cache_mb: f64| Sample {
            at_s,
            rss_mb,
            cache_mb,
        };
        let filling = [
            s(10.0, 40.0, 5.0),
            s(60.0, 60.0, 30.0),
            s(120.0, 90.0, 61.0),
            s(180.0, 95.0, 64.0),
            s(600.0, 99.0, 64.0),
        ];
        assert_eq!(warm(&filling, 1800), (120.0, Some(90.0)));
        // No cache: a tenth of the run, at most a minute.
        let none = [s(10.0, 20.0, 0.0), s(30.0, 21.0, 0.0), s(70.0, 22.0, 0.0)];
        assert_eq!(warm(&none, 300), (30.0, Some(21.0)));
        assert_eq!(warm(&none, 1800), (70.0, Some(22.0)));
        assert_eq!(warm(&[], 60), (6.0, None));
        let text = "# TYPE swf_process_rss_bytes gauge\nswf_process_rss_bytes 1048576\n\
                    swf_cache_bytes{cache=\"lineage-a\"} 2097152\nswf_cache_bytes{cache=\"lineage-b\"} 1048576\n";
        assert_eq!(memory_gauges(text), Some((1048576.0, 3145728.0)));
        assert_eq!(memory_gauges("swf_cache_bytes{cache=\"a\"} 1\n"), None);
    }
}
