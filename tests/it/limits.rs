//! Limits: handler outputs over `limits.max_output_bytes`, step inputs too
//! large for the database, a message no claim can read, the cap on queues,
//! and completion reports that outlast a primary outage.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use singularity_workflow::dev::proxy::DelayProxy;
use singularity_workflow::executor::handlers::{Registry, TaskContext};
use singularity_workflow::store::{Finish, FinishResult, Leases, Store};

use crate::harness::*;

const MIB: usize = 1 << 20;

/// A step's row as the database holds it: status, attempts, error.
async fn step_row(db: &str, run_id: &str, step: &str) -> (String, i32, Value) {
    let pool = sql(db).await;
    let row: (String, i32, Option<Value>) = sqlx::query_as(
        "SELECT status, attempts, error FROM swf.steps WHERE run_id = $1::uuid AND step_id = $2",
    )
    .bind(run_id)
    .bind(step)
    .fetch_one(&pool)
    .await
    .expect("step row");
    pool.close().await;
    (row.0, row.1, row.2.unwrap_or(Value::Null))
}

/// A run's status, read from the database (its documents may be huge).
async fn run_status(db: &str, run_id: &str) -> String {
    let pool = sql(db).await;
    let s: String = sqlx::query_scalar("SELECT status FROM swf.runs WHERE run_id = $1::uuid")
        .bind(run_id)
        .fetch_one(&pool)
        .await
        .expect("run row");
    pool.close().await;
    s
}

/// A one-step workflow on the default queue that must complete: the queue
/// still runs other work.
async fn queue_keeps_running(api: &Api) {
    let id = api
        .submit(&json!({"goal": "after", "steps": [{"id": "a", "handler": "noop", "input": 7}]}))
        .await;
    let doc = api.wait_terminal(&id, 60).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["output"], json!({"a": 7}));
}

#[tokio::test]
async fn an_echo_chain_past_max_output_bytes_fails_once_with_output_too_large() {
    let db = fresh_db().await;
    let node = start_node(node_config("out-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // echo returns its whole input {run, step, deps}: `e1` outputs the
    // 700 KB run input, `e2` that plus `e1`'s output, past 1 MiB.
    let blob = "x".repeat(700_000);
    let id = api
        .submit(&json!({"goal": "grow", "input": {"blob": blob}, "steps": [
            {"id": "e1", "handler": "echo"},
            {"id": "e2", "handler": "echo", "depends_on": ["e1"], "max_attempts": 3},
            {"id": "e3", "handler": "echo", "depends_on": ["e2"]},
            {"id": "e4", "handler": "echo", "depends_on": ["e3"]}]}))
        .await;
    let doc = api.wait_terminal(&id, 60).await;
    assert_eq!(doc["status"], "failed", "{}", doc["error"]);
    assert_eq!(doc["error"]["step_id"], "e2");
    assert_eq!(doc["error"]["error"]["code"], "output_too_large");
    let message = doc["error"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("step `e2`") && message.contains("limits.max_output_bytes"),
        "{message}"
    );
    let steps: Vec<(Value, Value)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["status"].clone(), s["attempts"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (json!("completed"), json!(1)),
            (json!("failed"), json!(1)),
            (json!("cancelled"), json!(0)),
            (json!("cancelled"), json!(0)),
        ]
    );
    // Not retried: one attempt, whatever max_attempts allowed.
    let lineage = api.lineage(&id).await;
    assert_eq!(
        attempts_of(&lineage, "e2"),
        vec![(1, "out-1".into(), "failed".into())]
    );
    // Nothing over the limit reached the database.
    let pool = sql(&db).await;
    let largest: Option<i32> =
        sqlx::query_scalar("SELECT max(octet_length(output::text)) FROM swf.steps")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(largest.unwrap_or(0) as usize <= MIB, "{largest:?}");
    pool.close().await;
    queue_keeps_running(&api).await;
    node.kill().await;
}

#[tokio::test]
async fn a_step_input_too_large_for_the_database_fails_its_step_and_the_queue_keeps_running() {
    let db = fresh_db().await;
    let node = start_node(node_config("in-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // `join` runs on the node's queue; its two dependencies on a queue no
    // node serves, where this test is their executor (through the store,
    // so their 136 MB outputs are not held to the node's output limit).
    // Together they are past jsonb's 256 MiB: claiming `join` raises
    // inside the database.
    let id = api
        .submit(&json!({"goal": "fan-in", "steps": [
            {"id": "b1", "handler": "noop", "queue": "manual"},
            {"id": "b2", "handler": "noop", "queue": "manual"},
            {"id": "join", "handler": "echo", "depends_on": ["b1", "b2"]}]}))
        .await;
    let store = Store::connect_lazy(&db, 2).unwrap();
    let leases = Leases {
        lease_ms: 600_000,
        margin_ms: 1_000,
        backoff_base_ms: 10,
        backoff_cap_ms: 10,
    };
    let big = store
        .claim_tasks(
            &["manual".into()],
            2,
            "test",
            "us-east",
            "manual",
            leases,
            1,
            None,
        )
        .await
        .unwrap();
    assert_eq!(big.len(), 2);
    for t in &big {
        let output = Finish::completed(json!("y".repeat(136_000_000)));
        let done = store
            .finish_tasks(&[(t.attempt_ref(), output)], leases, 1)
            .await
            .unwrap();
        assert_eq!(done, vec![FinishResult::Completed]);
    }
    store.close().await;
    let run = id.clone();
    let dbc = db.clone();
    wait_for("the run to fail", 120, || {
        let (run, db) = (run.clone(), dbc.clone());
        async move { (run_status(&db, &run).await != "running").then_some(()) }
    })
    .await;
    assert_eq!(run_status(&db, &id).await, "failed");
    for s in ["b1", "b2"] {
        let (status, _, error) = step_row(&db, &id, s).await;
        assert_eq!(status, "completed", "{s}: {error}");
    }
    let (status, attempts, error) = step_row(&db, &id, "join").await;
    assert_eq!((status.as_str(), attempts), ("failed", 1), "{error}");
    assert_eq!(error["code"], "input_too_large", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("step `join`") && message.contains("272000"),
        "the message names the step and its size: {message}"
    );
    let pool = sql(&db).await;
    let (outcome, node_id): (String, String) = sqlx::query_as(
        "SELECT outcome, node_id FROM swf.attempts WHERE run_id = $1::uuid AND step_id = 'join'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((outcome.as_str(), node_id.as_str()), ("failed", "in-1"));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.q_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the rejected message was removed");
    pool.close().await;
    queue_keeps_running(&api).await;
    node.kill().await;
}

#[tokio::test]
async fn a_message_no_claim_can_read_is_archived_and_the_queue_keeps_running() {
    let db = fresh_db().await;
    // Not a task of this engine: its run_id is no UUID, so the set-based
    // claim raises on it whichever messages it is read with. It waits at
    // the head of the queue before the node starts.
    let pool = sql(&db).await;
    sqlx::query("SELECT swf.ensure_queues(ARRAY['default'], 1)")
        .execute(&pool)
        .await
        .unwrap();
    let poison: i64 = sqlx::query_scalar("SELECT pgmq.send('default', '{\"run_id\": \"nope\"}')")
        .fetch_one(&pool)
        .await
        .unwrap();
    let node = start_node(node_config("poison-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    queue_keeps_running(&api).await;
    let archived: Vec<i64> = sqlx::query_scalar("SELECT msg_id FROM pgmq.a_default")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(archived, vec![poison]);
    pool.close().await;
    node.kill().await;
}

/// A workflow with one step per queue of `queues`.
fn on_queues(queues: impl Iterator<Item = String>) -> Value {
    let steps: Vec<Value> = queues
        .enumerate()
        .map(|(i, q)| json!({"id": format!("s{i}"), "handler": "noop", "queue": q}))
        .collect();
    json!({"goal": "queues", "steps": steps})
}

#[tokio::test]
async fn the_257th_queue_is_refused_with_too_many_queues_and_nothing_is_stored() {
    let db = fresh_db().await;
    // A client node only: no executor creates queues of its own.
    let mut cfg = node_config("queues-1", &db);
    cfg.enable_executor = false;
    cfg.worker_pools.clear();
    assert_eq!(cfg.limits.max_queues, 256);
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let pool = sql(&db).await;
    let queues = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.meta")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    assert_eq!(queues().await, 0);
    // 255 queues, 51 per workflow.
    for chunk in 0..5 {
        api.submit(&on_queues((0..51).map(|i| format!("q{}", chunk * 51 + i))))
            .await;
    }
    assert_eq!(queues().await, 255);
    // Two new queues at once: exactly one gets the last place.
    let before = stored(&db).await;
    let (wf_a, wf_b) = (
        on_queues(["new_a".to_string()].into_iter()),
        on_queues(["new_b".to_string()].into_iter()),
    );
    let (a, b) = tokio::join!(
        api.post("/v1/workflows", &wf_a),
        api.post("/v1/workflows", &wf_b)
    );
    let mut answers = [
        (a.status, a.code().to_string()),
        (b.status, b.code().to_string()),
    ];
    answers.sort();
    assert_eq!(
        answers,
        [(201, String::new()), (400, "too_many_queues".to_string())],
        "{} / {}",
        a.body,
        b.body
    );
    assert_eq!(queues().await, 256);
    assert_eq!(stored(&db).await, before + 1_000_001);
    // The 257th is refused and nothing is stored; the message says why.
    let before = stored(&db).await;
    let refused = api
        .post(
            "/v1/workflows",
            &on_queues(["q7".to_string(), "q257".to_string()].into_iter()),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (400, "too_many_queues"));
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("q257") && message.contains("limits.max_queues"),
        "{message}"
    );
    assert_eq!(stored(&db).await, before);
    assert_eq!(queues().await, 256);
    // More distinct queues in one workflow than the cap: refused as such.
    let wide = api
        .post(
            "/v1/workflows",
            &on_queues((0..257).map(|i| format!("w{i}"))),
        )
        .await;
    assert_eq!((wide.status, wide.code()), (400, "too_many_queues"));
    assert!(wide.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("uses 257 queues"));
    assert_eq!(stored(&db).await, before);
    // Existing queues stay usable.
    api.submit(&on_queues(["q7".to_string(), "q8".to_string()].into_iter()))
        .await;
    pool.close().await;
    node.kill().await;
}

#[tokio::test]
async fn a_completion_report_outlasting_a_primary_outage_lands_and_the_task_runs_once() {
    let db = fresh_db().await;
    let port = port_of(&db);
    let proxy = Arc::new(
        DelayProxy::start(
            ([127, 0, 0, 1], 0).into(),
            ([127, 0, 0, 1], port).into(),
            Duration::ZERO,
            "primary",
        )
        .await
        .unwrap(),
    );
    // The handler cuts the node off its database the moment it is done,
    // so its completion report fails until the link is back.
    let calls = Arc::new(AtomicU32::new(0));
    let mut reg = Registry::with_builtins();
    {
        let (calls, proxy) = (calls.clone(), proxy.clone());
        reg.register("once", move |ctx: TaskContext| {
            let (calls, proxy) = (calls.clone(), proxy.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    proxy.set_blocked(true);
                }
                Ok(json!({"attempt": ctx.attempt}))
            }
        });
    }
    // The default 15 s lease; the step's 60 s timeout makes it the lease.
    let node = start_node(node_config("report-1", &through(&db, &proxy)), reg).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(&json!({"goal": "outage", "steps": [{"id": "s", "handler": "once"}]}))
        .await;
    let c = calls.clone();
    wait_for("the handler to run", 30, || {
        let c = c.clone();
        async move { (c.load(Ordering::SeqCst) > 0).then_some(()) }
    })
    .await;
    // The outage outlasts the 10 s a report used to be retried for, and
    // ends within the lease.
    tokio::time::sleep(Duration::from_secs(11)).await;
    proxy.set_blocked(false);
    let dbc = db.clone();
    let run = id.clone();
    wait_for("the run to finish", 60, || {
        let (run, db) = (run.clone(), dbc.clone());
        async move { (run_status(&db, &run).await != "running").then_some(()) }
    })
    .await;
    assert_eq!(run_status(&db, &id).await, "completed");
    let (status, attempts, _) = step_row(&db, &id, "s").await;
    assert_eq!((status.as_str(), attempts), ("completed", 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the task ran twice");
    let doc = api.status(&id).await;
    assert_eq!(doc["output"], json!({"s": {"attempt": 1}}));
    node.kill().await;
}
