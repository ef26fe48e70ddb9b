//! Which benchmark to run, on which cluster, and how to print it.

use serde_json::{json, Value};

use super::args::BenchArgs;
use super::burn::burn_down;
use super::embedded::{Embedded, Roles};
use super::phases::{print_human, read_phase, region_reads, start_latency_phase, throughput_phase};
use super::remote::remote_region;
use super::report::{api_client, machine};
use super::soak::soak;
use crate::api::client::ApiClient;
use crate::telemetry::rss::Rss;

/// Runs the benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    args.check()?;
    let (report, ok) = match (args.burn_down, args.soak) {
        _ if args.remote_region => (remote_region(&args).await?, true),
        (Some(n), _) => (burn_down(&args, n).await?, true),
        (None, Some(secs)) => soak(&args, secs).await?,
        (None, None) => (phases(&args).await?, true),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.get("burn_down").is_some() {
        print_burn_down(&report);
    } else if report.get("soak").is_some() {
        print_soak(&report);
    } else if report.get("remote_region").is_some() {
        print_remote(&report);
    } else {
        print_human(&report);
    }
    Ok(if ok { 0 } else { 1 })
}

fn print_remote(r: &Value) {
    let m = &r["remote_region"];
    println!(
        "swf bench --remote-region: {} primary, {} {} ms one-way away; {} workflows, pool {}",
        m["primary_region"], m["remote_region"], m["wan_latency_ms"], m["workflows"], m["pool"]
    );
    for (what, key, ratio) in [
        (
            "execution (burn-down of steps pinned to the region)",
            "execution",
            "execution_ratio",
        ),
        (
            "submits through the region's node",
            "submit",
            "submit_ratio",
        ),
        (
            "batch submits through the region's node",
            "batch_submit",
            "batch_submit_ratio",
        ),
    ] {
        println!("{what}:");
        for (region, v) in m[key].as_object().into_iter().flatten() {
            println!(
                "  {region:<8} {:>9.1} workflows/s in {:>7.3} s; round trips {}",
                v["workflows_per_s"].as_f64().unwrap_or(0.0),
                v["seconds"].as_f64().unwrap_or(0.0),
                v["round_trips"]
            );
        }
        println!("  remote / primary: {}", m[ratio]);
    }
}

fn print_soak(r: &Value) {
    let s = &r["soak"];
    println!(
        "swf bench --soak: {} s at {} workflows/s (achieved {}): {} started, {} ended as they must, {} errors",
        s["secs"], s["rate"], s["rate_achieved"], s["started"], s["completed"], s["errors"]
    );
    println!("  by kind: {}", s["by_kind"]);
    if s["errors"].as_u64().unwrap_or(0) > 0 {
        println!("  errors: {}", s["error_kinds"]);
    }
    println!("  read with the submit's token: {}", s["token_read_ms"]);
    println!(
        "  RSS: {} MiB after the {} s warm-up, {} MiB at the end",
        s["rss_mb_start"], s["warmup_s"], s["rss_mb_end"]
    );
}

/// The default phases (or the region reads) against `--api`, or against
/// an embedded cluster with one hybrid node.
async fn phases(args: &BenchArgs) -> anyhow::Result<Value> {
    let Some(base) = &args.api else {
        let cluster = Embedded::start().await?.with_cache_mib(args.cache_mib);
        let report = match cluster.node("bench-1", Roles::Hybrid, args.pool_size).await {
            Ok(mut node) => {
                let r = match api_client(&node.url(), args) {
                    Ok(api) => measure(&api, args).await,
                    Err(e) => Err(e),
                };
                // The node runs in this process: its peak is ours.
                let rss = Rss::read();
                node.shutdown().await;
                r.map(|mut r| {
                    r["rss_mb_peak"] = json!(rss.map(|r| r.peak_mib()));
                    r["rss_mb"] = json!(rss.map(|r| r.current_mib()));
                    r
                })
            }
            Err(e) => Err(e),
        };
        cluster.stop().await;
        return report;
    };
    let api = api_client(base.trim_end_matches('/'), args)?;
    let mut report = measure(&api, args).await?;
    // The node runs elsewhere: its memory is not this process's.
    report["rss_mb_peak"] = Value::Null;
    Ok(report)
}

async fn measure(api: &ApiClient, args: &BenchArgs) -> anyhow::Result<Value> {
    if let Some(primary) = &args.primary_region {
        return region_reads(api, primary, args.samples).await;
    }
    // Light load first, on a quiet cluster; the throughput phases after it
    // leave checkpoints and vacuum work behind that would colour it.
    let (start_lat, ids) = start_latency_phase(api, args.samples).await?;
    let mut throughput = Vec::new();
    for s in &args.shapes {
        throughput.push(throughput_phase(api, s, args.workflows, args.concurrency).await?);
    }
    let reads = read_phase(api, &ids).await?;
    Ok(json!({
        "api": api.base(),
        "concurrency": args.concurrency,
        "throughput": throughput,
        "submit_to_start_ms": start_lat,
        "read_latency_ms": reads,
        "machine": machine(),
    }))
}

fn print_burn_down(r: &Value) {
    let b = &r["burn_down"];
    let runs: Vec<&Value> = match b["repeats"].as_array() {
        Some(all) => all.iter().collect(),
        None => vec![b],
    };
    println!(
        "swf bench --burn-down: one executor-only node, {} slots (load average at start {})",
        b["pool"], r["machine"]["load_avg"]
    );
    for run in &runs {
        println!(
            "  run {}: {} workflows drained in {:.3} s: {:.1} workflows/s (node start {} s; pre-submit {} s); RSS peak {} MiB, after {} MiB",
            run["run"],
            run["workflows"],
            run["seconds"].as_f64().unwrap_or(0.0),
            run["workflows_per_s"].as_f64().unwrap_or(0.0),
            run["node_start_s"],
            run["submit_s"],
            run["rss_mb_peak"],
            run["rss_mb_after"]
        );
    }
    if runs.len() > 1 {
        println!(
            "  median rate: run {}, {:.1} workflows/s",
            b["run"],
            b["workflows_per_s"].as_f64().unwrap_or(0.0)
        );
    }
}
