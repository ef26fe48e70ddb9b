//! Run control (DESIGN 10.2, 10.3): pausing and resuming a run, and
//! signals to `wait_for` steps (kept when sent early, timing out, refused
//! for a finished run).

use std::sync::Arc;

use serde_json::json;
use singularity_workflow::executor::handlers::{Registry, TaskContext};
use tokio::sync::Semaphore;

use crate::harness::*;

/// A registry whose `gate` handler waits for a permit of the returned
/// semaphore (released by the test) and echoes its step input.
fn gated() -> (Registry, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let mut reg = Registry::with_builtins();
    let g = gate.clone();
    reg.register("gate", move |ctx: TaskContext| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(ctx.step_input().clone())
        }
    });
    (reg, gate)
}

fn step<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {doc}"))
}

#[tokio::test]
async fn a_paused_run_starts_nothing_new_until_resumed() {
    let db = fresh_db().await;
    let (reg, gate) = gated();
    let node = start_node(node_config("pause-1", &db), reg).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(&json!({"goal": "pause me", "steps": [
            {"id": "a", "handler": "gate", "input": {"n": 1}},
            {"id": "b", "handler": "echo", "depends_on": ["a"]}]}))
        .await;
    wait_for("a to start", 20, || {
        let api = api.clone();
        let id = id.clone();
        async move { (step(&api.status(&id).await, "a")["status"] == "started").then_some(()) }
    })
    .await;
    let (code, out, err) = swf_cli(&["pause", "--api", &node.url(), &id]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("run {id}: paused"));
    // Pausing again changes nothing and succeeds.
    let again = api
        .post(&format!("/v1/workflows/{id}/pause"), &json!({}))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["status"], "paused");
    assert!(again.header("swf-consistency-token").is_some());
    // The started task finishes; its dependent is queued but parked.
    gate.add_permits(1);
    let pool = sql(&db).await;
    wait_for("b to be queued and parked", 20, || {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            let parked: Option<bool> = sqlx::query_scalar(
                "SELECT q.vt = 'infinity' FROM swf.steps st JOIN pgmq.q_default q
                     ON q.msg_id = st.msg_id
                  WHERE st.run_id = $1::uuid AND st.step_id = 'b' AND st.status = 'queued'",
            )
            .bind(&id)
            .fetch_optional(&pool)
            .await
            .unwrap();
            (parked == Some(true)).then_some(())
        }
    })
    .await;
    let queues = api.get("/v1/queues").await;
    assert_eq!(queues.body["queues"][0]["parked"], 1, "{}", queues.body);
    assert_eq!(queues.body["queues"][0]["in_flight"], 0, "{}", queues.body);
    let doc = api.status(&id).await;
    assert_eq!(doc["status"], "paused", "{doc}");
    assert_eq!(step(&doc, "a")["status"], "completed", "{doc}");
    assert_eq!(step(&doc, "b")["attempts"], 0, "{doc}");

    let (code, out, err) = swf_cli(&["resume", "--api", &node.url(), &id, "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "running", "{out}");
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["b"]["deps"]["a"], json!({"n": 1}), "{done}");

    // A finished run cannot be paused or resumed; an unknown one is 404.
    for verb in ["pause", "resume"] {
        let a = api
            .post(&format!("/v1/workflows/{id}/{verb}"), &json!({}))
            .await;
        assert_eq!(a.status, 409, "{verb}: {}", a.body);
        assert_eq!(a.code(), "invalid_state");
    }
    let unknown = api
        .post(
            &format!("/v1/workflows/{}/pause", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // A paused run is cancelled by a bulk cancel of paused runs.
    let held = api
        .submit(&json!({"goal": "held", "steps": [
            {"id": "s", "handler": "noop", "delay_ms": 60000}]}))
        .await;
    let p = api
        .post(&format!("/v1/workflows/{held}/pause"), &json!({}))
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let c = api
        .post("/v1/workflows/cancel", &json!({"status": "paused"}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["cancelled"], 1, "{}", c.body);
    assert_eq!(api.status(&held).await["status"], "cancelled");
    node.kill().await;
}

#[tokio::test]
async fn signals_complete_waiting_steps_early_late_or_time_out() {
    let db = fresh_db().await;
    let (reg, gate) = gated();
    let node = start_node(node_config("signal-1", &db), reg).await;
    let api = Api::new(&node.url());

    // A signal to a step already waiting: the CLI sends it.
    let id = api
        .submit(&json!({"goal": "approve", "steps": [
            {"id": "prepare", "handler": "echo", "input": {"doc": 7}},
            {"id": "approval", "depends_on": ["prepare"], "wait_for": {"signal": "approved"}},
            {"id": "publish", "handler": "echo", "depends_on": ["approval"]}]}))
        .await;
    wait_for("the approval step to wait", 20, || {
        let api = api.clone();
        let id = id.clone();
        async move {
            (step(&api.status(&id).await, "approval")["status"] == "waiting").then_some(())
        }
    })
    .await;
    let (code, out, err) = swf_cli(&[
        "signal",
        "--api",
        &node.url(),
        &id,
        "approved",
        "--payload",
        r#"{"by": "ops"}"#,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("run {id}: signal approved sent"));
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(step(&done, "approval")["output"], json!({"by": "ops"}));
    assert_eq!(
        done["output"]["publish"]["deps"]["approval"],
        json!({"by": "ops"}),
        "{done}"
    );

    // A signal sent before its step waits is kept for it.
    let early = api
        .submit(&json!({"goal": "early", "steps": [
            {"id": "work", "handler": "gate"},
            {"id": "go", "depends_on": ["work"], "wait_for": {"signal": "go"}}]}))
        .await;
    let s = api
        .post(
            &format!("/v1/workflows/{early}/signals/go"),
            &json!({"payload": [1, 2]}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.body["signal"], "go");
    assert!(s.header("swf-consistency-token").is_some());
    assert_eq!(step(&api.status(&early).await, "go")["status"], "created");
    gate.add_permits(1);
    let done = api.wait_terminal(&early, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(step(&done, "go")["output"], json!([1, 2]));

    // No signal within the timeout: the step fails with `timed_out`.
    let late = api
        .submit(&json!({"goal": "late", "steps": [
            {"id": "w", "wait_for": {"signal": "never", "timeout_ms": 300}}]}))
        .await;
    let failed = api.wait_terminal(&late, 30).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(step(&failed, "w")["error"]["code"], "timed_out", "{failed}");

    // A finished run refuses signals (409) and stores none.
    let refused = api
        .post(&format!("/v1/workflows/{late}/signals/never"), &json!({}))
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.code(), "invalid_state");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM swf.signals WHERE run_id = $1::uuid")
            .bind(&late)
            .fetch_one(&sql(&db).await)
            .await
            .unwrap();
    assert_eq!(stored, 0);
    let bad = api
        .post(
            &format!("/v1/workflows/{id}/signals/no%20spaces"),
            &json!({}),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Bad wait steps: 400 naming the field, nothing stored.
    let before = stored_runs(&api).await;
    for (wf, names) in [
        (
            json!({"goal": "g", "steps": [{"id": "w", "handler": "noop", "wait_for": {"signal": "x"}}]}),
            "`wait_for` and `handler`",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "w", "wait_for": {"signal": "x", "timeout_ms": 0}}]}),
            "wait_for.timeout_ms",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "w"}]}),
            "`handler` is required",
        ),
    ] {
        let a = api.post("/v1/workflows", &wf).await;
        assert_eq!(a.status, 400, "{wf}: {}", a.body);
        assert!(a.body.to_string().contains(names), "{wf}: {}", a.body);
    }
    assert_eq!(stored_runs(&api).await, before);
    node.kill().await;
}

async fn stored_runs(api: &Api) -> usize {
    api.get("/v1/workflows?limit=1000").await.body["runs"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn the_example_workflows_are_valid() {
    use singularity_workflow::model::workflow::{validate, Limits, WorkflowSpec};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let spec: WorkflowSpec =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        validate(&spec, &Limits::default(), |_, _| true, |_| true)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 4, "{seen} example workflows in {}", dir.display());
}

/// Issue 15: cancels, pauses and signals of many callers to a node 20 ms
/// (one way) from its primary share transactions, and each caller still
/// gets its own answer: 200 with a token, 404 for an unknown run, 409 for
/// a finished one. Each control's transaction shows as the `xmin` of the
/// run row it changed.
#[tokio::test]
async fn controls_of_concurrent_callers_share_transactions_and_keep_their_own_answers() {
    let db = fresh_db().await;
    let proxy = singularity_workflow::dev::proxy::DelayProxy::start(
        ([127, 0, 0, 1], 0).into(),
        ([127, 0, 0, 1], port_of(&db)).into(),
        std::time::Duration::from_millis(20),
        "wan",
    )
    .await
    .unwrap();
    let mut cfg = node_config("far-edge", &through(&db, &proxy));
    cfg.enable_executor = false;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let wait = |i: usize| {
        json!({"goal": format!("held {i}"),
               "steps": [{"id": "w", "wait_for": {"signal": "go"}}]})
    };
    let batch: Vec<serde_json::Value> = (0..60).map(wait).collect();
    let stored = api
        .post("/v1/workflows/batch", &json!({"workflows": batch}))
        .await;
    assert!(stored.status < 300, "{}", stored.body);
    let ids: Vec<String> = stored.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    // A run that is already cancelled, for the 409.
    let done = &ids[59];
    assert_eq!(
        api.post(&format!("/v1/workflows/{done}/cancel"), &json!({}))
            .await
            .status,
        200
    );
    // 20 cancels, 20 pauses, 19 signals and two odd ones, all at once.
    let calls = ids[..59].iter().enumerate().map(|(i, id)| {
        let path = match i % 3 {
            0 => format!("/v1/workflows/{id}/cancel"),
            1 => format!("/v1/workflows/{id}/pause"),
            _ => format!("/v1/workflows/{id}/signals/go"),
        };
        let api = api.clone();
        async move { (i, api.post(&path, &json!({"payload": {"n": i}})).await) }
    });
    let unknown = format!("/v1/workflows/{}/cancel", uuid::Uuid::now_v7());
    let finished = format!("/v1/workflows/{done}/signals/go");
    let empty = json!({});
    let (answers, odd) = tokio::join!(futures::future::join_all(calls), async {
        tokio::join!(api.post(&unknown, &empty), api.post(&finished, &empty))
    });
    for (i, a) in &answers {
        assert_eq!(a.status, 200, "call {i}: {}", a.body);
        assert!(
            a.body["consistency_token"].is_string(),
            "call {i}: {}",
            a.body
        );
    }
    assert_eq!(odd.0.status, 404, "{}", odd.0.body);
    assert_eq!(odd.1.status, 409, "{}", odd.1.body);
    assert_eq!(odd.1.code(), "invalid_state", "{}", odd.1.body);
    // Each did what it says.
    for (i, id) in ids[..59].iter().enumerate() {
        let doc = api.status(id).await;
        match i % 3 {
            0 => assert_eq!(doc["status"], "cancelled", "{doc}"),
            1 => assert_eq!(doc["status"], "paused", "{doc}"),
            _ => {
                assert_eq!(doc["status"], "completed", "{doc}");
                assert_eq!(step(&doc, "w")["output"], json!({"n": i}), "{doc}");
            }
        }
    }
    let pool = sql(&db).await;
    let ids: Vec<uuid::Uuid> = ids[..59].iter().map(|i| i.parse().unwrap()).collect();
    let writers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM swf.runs WHERE run_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(writers * 3 <= 59, "59 controls took {writers} transactions");
    pool.close().await;
    node.kill().await;
}
