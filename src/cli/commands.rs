//! The client commands (`submit`, `submit --batch`, `status`, `lineage`, `regions`, `queues`, `runs`, `cancel`, `retry`, `pause`, `resume`, `signal`, `schedules`, `drill`,
//! `drill list`, `drill recover`):
//! each one call (or poll) of [`ApiClient`], printed with [`super::render`]
//! or, with `--json`, as the typed answer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use super::args::{ApiArgs, DrillArgs, PartitionArgs};
use super::render::{
    render_drill, render_drill_list, render_lineage, render_queues, render_recover, render_regions,
    render_runs, render_schedules, render_status, to_json,
};
use crate::api::client::{ApiClient, CallError, RetryPolicy};
use crate::api::wire::{
    BulkCancelRequest, DrillKind, DrillRequest, ListQuery, RunState, ScheduleRequest,
};

/// A client that sends the API token, if one is given, and trusts what
/// `--ca-cert` says.
fn client(api: &ApiArgs, timeout: Duration) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::from_access(&api.api, &api.access, timeout)?)
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&to_json(v))?);
    Ok(())
}

/// Prints `doc` as JSON with `--json`, else as `render` lays it out.
fn show<T: Serialize>(
    json: bool,
    doc: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_json(doc)
    } else {
        print!("{}", render(doc));
        Ok(())
    }
}

/// The JSON in `file`, or on standard input for `-`.
fn read_json(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("read stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))
}

pub async fn submit(api: &ApiArgs, file: &str) -> anyhow::Result<i32> {
    let body = read_json(file)?;
    let answer = client(api, Duration::from_secs(30))?
        .submit(&body, RetryPolicy::PATIENT, |_, why| {
            tracing::info!("submit: {why}; retrying with the same idempotency key")
        })
        .await?;
    let doc = answer.body;
    if api.json {
        print_json(&doc)?;
    } else {
        println!("run_id: {}", doc.run_id);
        println!("status: {}", doc.status.as_str());
        println!("token:  {}", doc.consistency_token);
    }
    Ok(0)
}

/// `swf submit --batch`: the file's workflows in one `POST /v1/workflows/batch`.
pub async fn submit_batch(api: &ApiArgs, file: &str) -> anyhow::Result<i32> {
    let body = match read_json(file)? {
        Value::Array(list) => serde_json::json!({ "workflows": list }),
        v @ Value::Object(_) if v.get("workflows").is_some() => v,
        _ => bail!(
            "{file} holds no batch: expected {{\"workflows\": [workflow, ...]}} or a JSON array \
             of workflows"
        ),
    };
    // A thousand runs are stored in one transaction: give it time.
    let answer = client(api, Duration::from_secs(60))?
        .submit_batch(&body, RetryPolicy::PATIENT, |_, why| {
            tracing::info!("submit --batch: {why}; retrying with the same idempotency keys")
        })
        .await?;
    let doc = answer.body;
    if api.json {
        print_json(&doc)?;
    } else {
        for r in &doc.runs {
            println!("{}  {}", r.run_id, r.status.as_str());
        }
        println!("token: {}", doc.consistency_token);
    }
    Ok(0)
}

pub async fn status(
    api: &ApiArgs,
    run_id: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let c = client(api, Duration::from_secs(30))?;
    let deadline = Instant::now() + timeout;
    let doc = loop {
        let doc = c.status(run_id).await?.body;
        if !wait || doc.status.is_terminal() {
            break doc;
        }
        if Instant::now() >= deadline {
            bail!("run {run_id} still running after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    show(api.json, &doc, render_status)?;
    Ok(if wait && doc.status != RunState::Completed {
        3
    } else {
        0
    })
}

pub async fn lineage(api: &ApiArgs, run_id: &str) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?
        .lineage(run_id)
        .await?
        .body;
    show(api.json, &doc, render_lineage)?;
    Ok(0)
}

pub async fn regions(api: &ApiArgs) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?.regions().await?.body;
    show(api.json, &doc, render_regions)?;
    Ok(0)
}

/// `swf runs`: one page of runs, newest first.
pub async fn runs(
    api: &ApiArgs,
    status: Option<String>,
    limit: u32,
    after: Option<String>,
) -> anyhow::Result<i32> {
    let q = ListQuery {
        status,
        limit: Some(limit.to_string()),
        after,
    };
    let doc = client(api, Duration::from_secs(30))?.list(&q).await?.body;
    show(api.json, &doc, render_runs)?;
    Ok(0)
}

/// `swf cancel RUN`.
pub async fn cancel(api: &ApiArgs, run_id: &str) -> anyhow::Result<i32> {
    let id = run_id_arg(run_id)?;
    let doc = client(api, Duration::from_secs(30))?.cancel(id).await?.body;
    show(api.json, &doc, |d| {
        format!("run {}: {}\n", d.run_id, d.status.as_str())
    })?;
    Ok(0)
}

/// `swf retry RUN`.
pub async fn retry(api: &ApiArgs, run_id: &str) -> anyhow::Result<i32> {
    let id = run_id_arg(run_id)?;
    let doc = client(api, Duration::from_secs(30))?.retry(id).await?.body;
    show(api.json, &doc, |d| {
        format!("run {}: {}\n", d.run_id, d.status.as_str())
    })?;
    Ok(0)
}

/// `swf pause RUN` and `swf resume RUN`.
pub async fn set_run_paused(api: &ApiArgs, run_id: &str, paused: bool) -> anyhow::Result<i32> {
    let id = run_id_arg(run_id)?;
    let doc = client(api, Duration::from_secs(30))?
        .set_paused(id, paused)
        .await?
        .body;
    show(api.json, &doc, |d| {
        format!("run {}: {}\n", d.run_id, d.status.as_str())
    })?;
    Ok(0)
}

/// `swf signal RUN NAME [--payload JSON]`.
pub async fn signal(
    api: &ApiArgs,
    run_id: &str,
    name: &str,
    payload: Option<&str>,
) -> anyhow::Result<i32> {
    let id = run_id_arg(run_id)?;
    let payload = payload
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p)
                .map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))
        })
        .transpose()?;
    let req = crate::api::wire::SignalRequest { payload };
    let doc = client(api, Duration::from_secs(30))?
        .signal(id, name, &req)
        .await?
        .body;
    show(api.json, &doc, |d| {
        format!("run {}: signal {} sent\n", d.run_id, d.signal)
    })?;
    Ok(0)
}

fn run_id_arg(run_id: &str) -> anyhow::Result<uuid::Uuid> {
    run_id
        .parse()
        .with_context(|| format!("`{run_id}` is not a run id (a UUID)"))
}

/// `swf cancel --status S [...]`: bulk cancel.
pub async fn cancel_many(api: &ApiArgs, req: &BulkCancelRequest) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(330))?
        .cancel_many(req)
        .await?
        .body;
    show(api.json, &doc, |d| {
        format!("cancelled {} runs\n", d.cancelled)
    })?;
    Ok(0)
}

/// `swf schedules list`.
pub async fn schedules(api: &ApiArgs) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?
        .schedules()
        .await?
        .body;
    show(api.json, &doc, render_schedules)?;
    Ok(0)
}

/// `swf schedules create FILE`.
pub async fn create_schedule(api: &ApiArgs, file: &str) -> anyhow::Result<i32> {
    let req: ScheduleRequest = serde_json::from_value(read_json(file)?).with_context(|| {
        format!("{file}: a schedule is {{\"name\", \"cron\", \"workflow\", \"paused\"?}}")
    })?;
    let doc = client(api, Duration::from_secs(30))?
        .create_schedule(&req)
        .await?
        .body;
    show(api.json, &doc, |d| {
        format!(
            "schedule {} created; next run at {}\n",
            d.name, d.next_run_at
        )
    })?;
    Ok(0)
}

/// `swf schedules delete NAME`.
pub async fn delete_schedule(api: &ApiArgs, name: &str) -> anyhow::Result<i32> {
    client(api, Duration::from_secs(30))?
        .delete_schedule(name)
        .await?;
    if api.json {
        print_json(&serde_json::json!({"name": name, "deleted": true}))?;
    } else {
        println!("schedule {name} deleted");
    }
    Ok(0)
}

/// `swf schedules pause NAME` and `... resume NAME`.
pub async fn set_schedule_paused(api: &ApiArgs, name: &str, paused: bool) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?
        .set_schedule_paused(name, paused)
        .await?
        .body;
    show(api.json, &doc, |d| {
        if d.paused {
            format!("schedule {} paused\n", d.name)
        } else {
            format!(
                "schedule {} resumed; next run at {}\n",
                d.name, d.next_run_at
            )
        }
    })?;
    Ok(0)
}

pub async fn queues(api: &ApiArgs) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?.queues().await?.body;
    show(api.json, &doc, render_queues)?;
    Ok(0)
}

/// `swf queues pause NAME` and `swf queues resume NAME`.
pub async fn set_queue_paused(api: &ApiArgs, name: &str, paused: bool) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?
        .set_queue_paused(name, paused)
        .await?
        .body;
    show(api.json, &doc, |d| {
        let now = if d.paused { "paused" } else { "resumed" };
        let before = if d.was_paused { "paused" } else { "not paused" };
        format!("queue {}: {now} (was {before})\n", d.name)
    })?;
    Ok(0)
}

pub async fn drill(kind: DrillKind, a: DrillArgs) -> anyhow::Result<i32> {
    let body = DrillRequest {
        kind,
        to: a.to.clone(),
        region: None,
        secs: None,
        load: a.load,
        max_lag_ms: a.max_lag_ms,
    };
    let what = format!("{} to {}", kind.as_str(), a.to);
    run_drill(&a.api, &body, &what).await
}

pub async fn partition(a: PartitionArgs) -> anyhow::Result<i32> {
    let body = DrillRequest {
        kind: DrillKind::Partition,
        to: String::new(),
        region: Some(a.region.clone()),
        secs: Some(a.secs),
        load: a.load,
        max_lag_ms: crate::api::wire::DEFAULT_MAX_LAG_MS,
    };
    let what = format!("partition of {} for {} s", a.region, a.secs);
    run_drill(&a.api, &body, &what).await
}

/// Runs a drill through `api` (progress on stderr) and prints its report;
/// exit code 4 when it did not pass.
async fn run_drill(api: &ApiArgs, body: &DrillRequest, what: &str) -> anyhow::Result<i32> {
    let c = client(api, Duration::from_secs(900))?;
    if !api.json {
        eprintln!("drill: {what} (load {}/s) via {}", body.load, api.api);
    }
    let call = c.drill(body);
    tokio::pin!(call);
    let start = Instant::now();
    let answer = loop {
        tokio::select! {
            r = &mut call => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)), if !api.json => {
                eprint!("\r  running… {:>3} s", start.elapsed().as_secs());
            }
        }
    };
    // No answer at all: the error line follows the progress line directly.
    if let Err(e @ CallError::Transport { .. }) = answer {
        return Err(e.into());
    }
    if !api.json {
        eprintln!();
    }
    let report = answer?.body;
    if api.json {
        print_json(&report)?;
    } else {
        print!("{}", render_drill(&report));
    }
    Ok(if report.ok { 0 } else { 4 })
}

pub async fn drill_list(api: &ApiArgs) -> anyhow::Result<i32> {
    let doc = client(api, Duration::from_secs(30))?.drills().await?.body;
    show(api.json, &doc, render_drill_list)?;
    Ok(0)
}

pub async fn drill_recover(api: &ApiArgs) -> anyhow::Result<i32> {
    // Re-cloning a database as a replica may take a while.
    let report = client(api, Duration::from_secs(600))?.recover().await?.body;
    show(api.json, &report, render_recover)?;
    Ok(0)
}

/// Patroni's `on_role_change` callback: a member promoted to leader starts
/// a new epoch naming its region, unless the epoch already does (the drill
/// that asked for the promotion bumped it). The promoted server may still
/// be finishing its promotion: tries for 30 s. A database without the
/// product's schema yet (a new cluster's bootstrap) needs no new epoch.
pub async fn patroni_callback(
    database_url: &str,
    region: &str,
    action: &str,
    role: &str,
) -> anyhow::Result<i32> {
    if action != "on_role_change" || !matches!(role, "master" | "primary") {
        return Ok(0);
    }
    let store = crate::store::Store::connect_lazy(database_url, 1)?;
    let bumped = crate::wait::until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match store.bump_epoch_for(region).await {
                Ok(e) => Some(Ok(e)),
                Err(e) if e.to_string().contains("does not exist") => Some(Err(e.to_string())),
                Err(e) => {
                    eprintln!("swf patroni-callback: {e}; trying again");
                    None
                }
            }
        },
    )
    .await;
    store.close().await;
    match bumped {
        Ok(Ok(Some(e))) => println!("swf: epoch {e}, write region {region}"),
        Ok(Ok(None)) => println!("swf: the epoch already names {region}"),
        Ok(Err(e)) => println!("swf: no schema to bump an epoch in ({e})"),
        Err(_) => bail!("no new epoch for {region} within 30 s"),
    }
    Ok(0)
}
