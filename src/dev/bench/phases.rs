//! The phases of the default `swf bench` (and `--primary-region`'s region
//! reads), over the HTTP API of any cluster: submit-to-start latency at
//! light load, throughput per shape, read latency by source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::report::{percentiles, round, shape, submit, ts};
use crate::api::client::{Answer, ApiClient};
use crate::api::wire::{ListQuery, RunState};

pub(super) async fn throughput_phase(
    api: &ApiClient,
    shape_name: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let (_, tasks_per) = shape(shape_name, 0)?;
    let sem = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let api = api.clone();
        let (wf, _) = shape(shape_name, i)?;
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = submit(&api, &wf).await;
            drop(permit);
            r.map(|a| (a.body.run_id.to_string(), t.elapsed()))
        }));
    }
    let mut ids = Vec::with_capacity(n);
    let mut submit_lat = Vec::with_capacity(n);
    for h in handles {
        let (id, lat) = h.await??;
        ids.push(id);
        submit_lat.push(lat);
    }
    let submitted = start.elapsed();
    // Wait until no run is running (one cheap indexed list query per poll,
    // so the benchmark's own reads do not compete with the engine), then
    // check that every run of this phase completed.
    let deadline = Instant::now() + Duration::from_secs(600);
    let running = ListQuery {
        status: Some("running".into()),
        limit: Some("1".into()),
        after: None,
    };
    loop {
        if api.list(&running).await?.body.runs.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("runs still running after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for id in &ids {
        let doc = api.status(id).await?.body;
        if doc.status != RunState::Completed {
            bail!("run {id} ended {}: {}", doc.status.as_str(), json!(doc));
        }
    }
    Ok(json!({
        "shape": shape_name,
        "workflows": n,
        "tasks": n * tasks_per,
        "seconds": round(elapsed, 3),
        "workflows_per_s": round(n as f64 / elapsed, 1),
        "tasks_per_s": round((n * tasks_per) as f64 / elapsed, 1),
        "submit_phase_s": round(submitted.as_secs_f64(), 3),
        "submit_latency_ms": percentiles(&mut submit_lat),
    }))
}

pub(super) async fn start_latency_phase(
    api: &ApiClient,
    samples: usize,
) -> anyhow::Result<(Value, Vec<String>)> {
    let mut ids = Vec::with_capacity(samples);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let (wf, _) = shape("one", i)?;
        let id = submit(api, &wf).await?.body.run_id.to_string();
        // Light load: wait for this run before the next.
        let lineage = loop {
            let doc = api.lineage(&id).await?.body;
            if doc.status.is_terminal() {
                break doc;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let doc = api.status(&id).await?.body;
        let created = ts(&doc.created_at)?;
        let started = lineage
            .execution_trace
            .iter()
            .filter_map(|a| ts(&a.started_at).ok())
            .min()
            .context("lineage without attempts")?;
        lat.push((started - created).to_std().unwrap_or_default());
        ids.push(id);
    }
    Ok((percentiles(&mut lat), ids))
}

fn source_of<T>(a: &Answer<T>) -> String {
    a.read_source.clone().unwrap_or_else(|| "unknown".into())
}

pub(super) async fn read_phase(api: &ApiClient, ids: &[String]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for kind in ["status", "lineage"] {
        let mut by_source: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for id in ids {
            let t = Instant::now();
            let src = if kind == "status" {
                source_of(&api.status(id).await?)
            } else {
                source_of(&api.lineage(id).await?)
            };
            by_source.entry(src).or_default().push(t.elapsed());
        }
        let v: serde_json::Map<String, Value> = by_source
            .into_iter()
            .map(|(k, mut v)| (k, percentiles(&mut v)))
            .collect();
        out.insert(kind.to_string(), Value::Object(v));
    }
    Ok(Value::Object(out))
}

/// Read-after-own-write and reads by source, from one (non-primary) node.
pub(super) async fn region_reads(
    api: &ApiClient,
    primary_region: &str,
    samples: usize,
) -> anyhow::Result<Value> {
    // 1. Write, then read at once with the write's token.
    let mut ids = Vec::with_capacity(samples);
    let mut raw: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut write_lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let (wf, _) = shape("one", i)?;
        let t = Instant::now();
        let sub = submit(api, &wf).await?.body;
        write_lat.push(t.elapsed());
        let id = sub.run_id.to_string();
        let t = Instant::now();
        let read = api
            .with_token(Some(&sub.consistency_token))
            .status(&id)
            .await
            .context("read with token")?;
        if read.body.run_id != sub.run_id {
            bail!("read with token missed the write of {id}");
        }
        raw.entry(source_of(&read)).or_default().push(t.elapsed());
        ids.push(id);
    }
    let total = samples.max(1) as f64;
    let from_primary = raw.get("primary").map_or(0, |v| v.len()) as f64;
    let raw_json: serde_json::Map<String, Value> = raw
        .into_iter()
        .map(|(k, mut v)| (k, percentiles(&mut v)))
        .collect();

    // 2. Let the runs finish and replicate, and running entries leave the cache.
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            if api.status(id).await?.body.status == RunState::Completed {
                break;
            }
            if Instant::now() > deadline {
                bail!("run {id} did not complete");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // 3. Status reads by source: first reads after the wait (replica or a
    //    cache entry from step 2), second reads (cache), pinned reads (primary).
    let mut by_source: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for pass in 0..2 {
        for id in &ids {
            let t = Instant::now();
            let src = if pass == 0 {
                // A fresh lineage read: not cached yet, served by the replica.
                source_of(&api.lineage(id).await?)
            } else {
                source_of(&api.status(id).await?)
            };
            by_source.entry(src).or_default().push(t.elapsed());
        }
    }
    let mut pinned = Vec::with_capacity(ids.len());
    let in_primary = api.in_region(Some(primary_region));
    for id in &ids {
        let t = Instant::now();
        let src = source_of(&in_primary.status(id).await?);
        if src == "primary" {
            pinned.push(t.elapsed());
        }
    }
    let mut by: serde_json::Map<String, Value> = by_source
        .into_iter()
        .map(|(k, mut v)| (k, percentiles(&mut v)))
        .collect();
    by.insert(
        format!("primary (pinned to {primary_region})"),
        percentiles(&mut pinned),
    );
    Ok(json!({
        "api": api.base(),
        "submit_latency_ms": percentiles(&mut write_lat),
        "read_after_own_write_ms": raw_json,
        "read_after_own_write_without_primary": round(1.0 - from_primary / total, 4),
        "status_read_ms_by_source": by,
    }))
}

pub(super) fn print_human(r: &Value) {
    if r.get("status_read_ms_by_source").is_some() {
        println!(
            "swf bench region reads against {}",
            r["api"].as_str().unwrap_or("")
        );
        println!("submit: {}", r["submit_latency_ms"]);
        println!(
            "read after own write, with the token, by source: {}",
            r["read_after_own_write_ms"]
        );
        println!(
            "  served without a trip to the primary: {:.1}%",
            r["read_after_own_write_without_primary"]
                .as_f64()
                .unwrap_or(0.0)
                * 100.0
        );
        for (src, p) in r["status_read_ms_by_source"]
            .as_object()
            .into_iter()
            .flatten()
        {
            println!(
                "read from {src}: p50 {} ms, p99 {} ms ({} samples)",
                p["p50"], p["p99"], p["samples"]
            );
        }
        return;
    }
    println!("swf bench against {}", r["api"].as_str().unwrap_or(""));
    println!("throughput ({} concurrent submitters):", r["concurrency"]);
    for t in r["throughput"].as_array().into_iter().flatten() {
        println!(
            "  {:<7} {:>6} workflows {:>7} tasks in {:>7.2} s: {:>8.1} workflows/s {:>8.1} tasks/s (submit p50 {} ms, p99 {} ms)",
            t["shape"].as_str().unwrap_or(""),
            t["workflows"],
            t["tasks"],
            t["seconds"].as_f64().unwrap_or(0.0),
            t["workflows_per_s"].as_f64().unwrap_or(0.0),
            t["tasks_per_s"].as_f64().unwrap_or(0.0),
            t["submit_latency_ms"]["p50"],
            t["submit_latency_ms"]["p99"]
        );
    }
    let s = &r["submit_to_start_ms"];
    println!(
        "submit-to-start at light load: p50 {} ms, p99 {} ms ({} samples)",
        s["p50"], s["p99"], s["samples"]
    );
    for kind in ["status", "lineage"] {
        if let Some(m) = r["read_latency_ms"][kind].as_object() {
            for (src, p) in m {
                println!(
                    "{kind} read from {src}: p50 {} ms, p99 {} ms ({} samples)",
                    p["p50"], p["p99"], p["samples"]
                );
            }
        }
    }
}
