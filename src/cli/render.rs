//! Human rendering of the API's answers (the typed [`crate::api::wire`]
//! values); `--json` prints the values themselves.

use serde::Serialize;
use serde_json::Value;

use crate::api::wire::{
    DrillList, DrillReport, QueueList, RecoverReport, Regions, RunLineage, RunList, RunStatus,
    ScheduleList,
};

/// A JSON value as a cell: `-` for null, a string as is, else its JSON.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An optional text as a cell (`-` when absent).
fn o(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// A typed value as JSON (the keys in the order `--json` prints them).
pub fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Human rendering of a status document.
pub fn render_status(doc: &RunStatus) -> String {
    let mut out = format!(
        "run {}  {}\n  goal: {}\n  created: {}  completed: {}\n",
        doc.run_id,
        doc.status.as_str(),
        doc.goal,
        doc.created_at,
        o(&doc.completed_at)
    );
    if !doc.error.is_null() {
        out += &format!("  error: {}\n", doc.error);
    }
    out += &format!(
        "  {:<20} {:<10} {:<12} {:>8}  output\n",
        "step", "status", "handler", "attempts"
    );
    for st in &doc.steps {
        let mut output = s(&st.output);
        if output.len() > 60 {
            output = format!("{}…", output.chars().take(60).collect::<String>());
        }
        out += &format!(
            "  {:<20} {:<10} {:<12} {:>8}  {}\n",
            st.id,
            s(&to_json(&st.status)),
            st.handler,
            st.attempts,
            output
        );
    }
    if !doc.output.is_null() {
        out += &format!("  output: {}\n", doc.output);
    }
    out
}

/// Human rendering of a lineage document.
pub fn render_lineage(doc: &RunLineage) -> String {
    let mut out = format!("run {}  {}\n  dag:\n", doc.run_id, doc.status.as_str());
    for st in &doc.dag.steps {
        out += &format!(
            "    {}{}\n",
            st.id,
            if st.depends_on.is_empty() {
                String::new()
            } else {
                format!(" <- {}", st.depends_on.join(", "))
            }
        );
    }
    out += "  trace:\n";
    out += &format!(
        "    {:<16} {:>3}  {:<10} {:<16} {:<10} {:<10} {}\n",
        "step", "try", "outcome", "node", "region", "pool", "started_at"
    );
    for a in &doc.execution_trace {
        out += &format!(
            "    {:<16} {:>3}  {:<10} {:<16} {:<10} {:<10} {}\n",
            a.step_id,
            a.attempt,
            s(&to_json(&a.outcome)),
            a.node_id,
            a.region,
            a.worker_pool,
            a.started_at
        );
    }
    out += &format!("  metrics: {}\n", to_json(&doc.metrics));
    out
}

/// Human rendering of `/v1/regions`.
pub fn render_regions(doc: &Regions) -> String {
    let mut out = format!("write region: {}  epoch: {}\n", doc.write_region, doc.epoch);
    for r in &doc.regions {
        out += &format!(
            "  {:<12} {:<8} lag {} ms\n",
            r.name,
            r.role.as_str(),
            r.lag_ms
        );
        for n in &r.nodes {
            out += &format!(
                "    {:<20} {:<7} {:<28} {}\n",
                n.node_id,
                n.node_type,
                o(&n.api_url),
                if n.healthy { "healthy" } else { "UNHEALTHY" }
            );
        }
    }
    out
}

/// A page of runs, one line each (and the next page's cursor).
pub fn render_runs(doc: &RunList) -> String {
    if doc.runs.is_empty() {
        return "no runs\n".into();
    }
    let mut out = String::new();
    for r in &doc.runs {
        out += &format!(
            "{}  {:<9}  {}  {}\n",
            r.run_id,
            r.status.as_str(),
            r.created_at,
            r.goal
        );
    }
    if let Some(next) = &doc.next {
        out += &format!("more: --after {next}\n");
    }
    out
}

/// The schedules, one line each.
pub fn render_schedules(doc: &ScheduleList) -> String {
    if doc.schedules.is_empty() {
        return "no schedules\n".into();
    }
    let mut out = format!(
        "{:<20} {:<16} {:<7} {:<25} last run\n",
        "schedule", "cron", "state", "next run"
    );
    for s in &doc.schedules {
        out += &format!(
            "{:<20} {:<16} {:<7} {:<25} {}\n",
            s.name,
            s.cron,
            if s.paused { "PAUSED" } else { "active" },
            s.next_run_at,
            s.last_run_id.map_or("-".into(), |r| r.to_string())
        );
    }
    out
}

/// The queues, one line each.
pub fn render_queues(doc: &QueueList) -> String {
    if doc.queues.is_empty() {
        return "no queues yet\n".into();
    }
    let mut out = format!(
        "{:<24} {:>8} {:>9} {:>8} {:>7} {:>12}  state\n",
        "queue", "depth", "in flight", "delayed", "parked", "oldest (ms)"
    );
    for q in &doc.queues {
        out += &format!(
            "{:<24} {:>8} {:>9} {:>8} {:>7} {:>12}  {}\n",
            q.name,
            q.depth,
            q.in_flight,
            q.delayed,
            q.parked,
            q.oldest_age_ms.map_or("-".into(), |a| a.to_string()),
            if q.paused { "PAUSED" } else { "active" }
        );
    }
    out
}

/// Human rendering of a drill report: the timeline, then the measurements.
pub fn render_drill(r: &DrillReport) -> String {
    let mut out = match &r.partition {
        Some(p) => format!(
            "partition of {} (primary {})  epoch {} -> {}\n  timeline:\n",
            p.region, r.from_region, r.epoch_before, r.epoch_after
        ),
        None => format!(
            "{} {} -> {}  epoch {} -> {}{}\n  timeline:\n",
            r.kind.as_str(),
            r.from_region,
            r.to_region,
            r.epoch_before,
            r.epoch_after,
            r.manager
                .as_deref()
                .map(|m| format!("  (through {m})"))
                .unwrap_or_default()
        ),
    };
    let mut total = 0;
    for p in &r.phases {
        total += p.ms;
        out += &format!("    {:>7} ms  {:>7} ms  {}\n", p.ms, total, p.name);
    }
    out += &format!(
        "  detection {} ms, RTO {} ms\n  writes: {} acknowledged, {} lost, {} duplicated, {} indeterminate, {} failed\n",
        r.detection_ms,
        r.rto_ms,
        r.acknowledged_writes,
        r.lost_writes,
        r.duplicate_writes,
        r.indeterminate_writes,
        r.failed_writes,
    );
    out += &match &r.partition {
        Some(p) => format!(
            "  {} links of {} cut for {} s; writes refused: {}; stale token reads: {}\n  converged {} ms after healing; nodes agreeing on the primary: {}/{}\n",
            p.links_cut,
            p.region,
            p.secs,
            p.writes_refused,
            p.stale_token_reads,
            p.converge_ms,
            r.nodes_rerouted,
            r.nodes_total,
        ),
        None => format!(
            "  stale reads: {}; old primary fenced: {} ({}); nodes re-routed: {}/{}\n",
            r.stale_reads,
            r.old_primary_fenced,
            to_json(&r.old_primary).as_str().unwrap_or(""),
            r.nodes_rerouted,
            r.nodes_total,
        ),
    };
    out += if r.ok { "  OK\n" } else { "  NOT OK\n" };
    if !r.failures.is_empty() {
        out += &format!("  failed writes by answer: {}\n", to_json(&r.failures));
    }
    out
}

/// Human rendering of the drill journal: one line per drill, newest first.
pub fn render_drill_list(doc: &DrillList) -> String {
    if doc.drills.is_empty() {
        return "no drills\n".to_string();
    }
    let mut out = format!(
        "{:<36}  {:<10}  {:<25}  {:<11}  {:<20}  {}\n",
        "id", "kind", "from -> to", "state", "started", "finished"
    );
    let time = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    for d in &doc.drills {
        out += &format!(
            "{:<36}  {:<10}  {:<25}  {:<11}  {:<20}  {}\n",
            d.id,
            d.kind.as_str(),
            format!("{} -> {}", d.from_region, d.to_region),
            d.state.as_str(),
            time(&d.started_at),
            d.finished_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| format!("(phase {})", d.phase)),
        );
    }
    out
}

/// Human rendering of a recovery: what it found, what it did.
pub fn render_recover(r: &RecoverReport) -> String {
    let mut out = "found:\n".to_string();
    for f in &r.regions {
        out += &format!(
            "  {:<12} {:<11} epoch {}{}\n",
            f.region,
            to_json(&f.found).as_str().unwrap_or(""),
            f.epoch.map_or("-".to_string(), |e| e.to_string()),
            f.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    if r.actions.is_empty() {
        out += &format!(
            "nothing to do: one writable primary ({}, epoch {}) and no interrupted drill\n",
            r.write_region, r.epoch
        );
    } else {
        out += "done:\n";
        for a in &r.actions {
            out += &format!("  {a}\n");
        }
        out += &format!(
            "write region {} (epoch {}) is the one writable primary\n",
            r.write_region, r.epoch
        );
    }
    for o in &r.operator {
        out += &format!("for the operator: {o}\n");
    }
    out
}
