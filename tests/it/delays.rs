//! Durable delays (DESIGN 10.2): a step's `delay_ms` after its dependencies,
//! a run's `run_at`, both held as not-yet-visible messages (no executor
//! slot), and the bad values a submit refuses by name.

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};
use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// The first attempt of `step` in a lineage document.
fn attempt<'a>(lineage: &'a Value, step: &str) -> &'a Value {
    lineage["execution_trace"]
        .as_array()
        .and_then(|t| t.iter().find(|a| a["step_id"] == step))
        .unwrap_or_else(|| panic!("no attempt of {step}: {lineage}"))
}

#[tokio::test]
async fn delayed_steps_and_runs_start_no_earlier_than_their_ready_time() {
    let db = fresh_db().await;
    let node = start_node(node_config("delays-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());

    // b waits 1.5 s after a completes.
    let chain = api
        .submit(&json!({"goal": "delayed chain", "steps": [
            {"id": "a", "handler": "noop"},
            {"id": "b", "handler": "echo", "depends_on": ["a"], "delay_ms": 1500}]}))
        .await;
    // The whole run waits until run_at.
    // (Sent in milliseconds: the time the run waits for is that one.)
    let run_at_text =
        (Utc::now() + Span::milliseconds(1500)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let run_at = at(&json!(run_at_text));
    let later = api
        .submit(&json!({"goal": "run at", "run_at": run_at_text,
                        "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    // One far ahead: visible in the queue as delayed, holding no slot.
    let far = Utc::now() + Span::hours(1);
    let parked = api
        .submit(&json!({"goal": "far", "run_at": far.to_rfc3339(),
                        "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    let queues = api.get("/v1/queues").await.body;
    let q = queues["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "default"))
        .cloned()
        .unwrap_or_else(|| panic!("{queues}"));
    assert!(q["delayed"].as_i64().unwrap() >= 1, "{q}");
    let doc = api.status(&parked).await;
    assert_eq!(doc["steps"][0]["status"], "queued", "{doc}");

    let done = api.wait_terminal(&chain, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let lineage = api.lineage(&chain).await;
    let a_done = at(&attempt(&lineage, "a")["finished_at"]);
    let b_start = at(&attempt(&lineage, "b")["started_at"]);
    assert!(
        b_start - a_done >= Span::milliseconds(1500),
        "b started {} ms after a finished: {lineage}",
        (b_start - a_done).num_milliseconds()
    );

    let done = api.wait_terminal(&later, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let lineage = api.lineage(&later).await;
    let started = at(&attempt(&lineage, "s")["started_at"]);
    assert!(
        started >= run_at,
        "started {started} before run_at {run_at}: {lineage}"
    );

    // The parked run is still waiting, and can be cancelled.
    let doc = api.status(&parked).await;
    assert_eq!(doc["status"], "running", "{doc}");
    let c = api
        .post(&format!("/v1/workflows/{parked}/cancel"), &json!({}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    node.kill().await;
}

#[tokio::test]
async fn bad_delays_are_refused_by_name_and_store_nothing() {
    let db = fresh_db().await;
    let node = start_node(node_config("delays-2", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let cases = [
        (
            json!({"goal": "g", "steps": [{"id": "s", "handler": "noop", "delay_ms": -1}]}),
            "delay_ms",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "s", "handler": "noop", "delay_ms": 1e12 as i64}]}),
            "delay_ms",
        ),
        (
            json!({"goal": "g", "run_at": "tomorrow", "steps": [{"id": "s", "handler": "noop"}]}),
            "run_at",
        ),
        (
            json!({"goal": "g", "run_at": 17, "steps": [{"id": "s", "handler": "noop"}]}),
            "run_at",
        ),
    ];
    for (wf, field) in cases {
        let a = api.post("/v1/workflows", &wf).await;
        assert_eq!(a.status, 400, "{wf}: {}", a.body);
        assert_eq!(a.code(), "invalid_workflow", "{wf}: {}", a.body);
        let msg = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(field),
            "{wf}: the error does not name {field}: {msg}"
        );
    }
    let runs = api.get("/v1/workflows").await;
    assert_eq!(runs.body["runs"], json!([]), "{}", runs.body);
    node.kill().await;
}
