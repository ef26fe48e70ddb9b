//! `POST /v1/workflows/batch` and `swf submit --batch`: a batch is stored
//! whole, in one transaction, or not at all; a refusal names the index of
//! the first bad workflow with the words a single submit would use.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use singularity_workflow::api::client::{ApiClient, CallError, RetryPolicy, SubmitError};
use singularity_workflow::api::wire::{BatchSubmitted, ErrorCode, RunState, H_TOKEN};
use singularity_workflow::config::Config;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

const BATCH: &str = "/v1/workflows/batch";

/// A one-step workflow whose output names `i`.
fn one_step(i: usize) -> Value {
    json!({"goal": format!("batch-{i}"), "steps": [{"id": "a", "handler": "noop", "input": i}]})
}

/// A node with the client role only: runs stay as they were stored.
fn client_only(id: &str, db: &str) -> Config {
    let mut cfg = node_config(id, db);
    cfg.enable_executor = false;
    cfg.worker_pools.clear();
    cfg
}

/// Runs per status, read from the database.
async fn runs_by_status(db: &str) -> Vec<(String, i64)> {
    let pool = sql(db).await;
    let rows =
        sqlx::query_as("SELECT status, count(*) FROM swf.runs GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .expect("runs by status");
    pool.close().await;
    rows
}

/// The typed answer of a batch, asserting 201.
async fn submit_batch(api: &Api, workflows: &[Value]) -> BatchSubmitted {
    let a = api
        .client
        .submit_batch(
            &json!({ "workflows": workflows }),
            RetryPolicy::ONCE,
            |_, _| {},
        )
        .await
        .unwrap_or_else(|e| panic!("batch: {e}"));
    assert_eq!(a.status, 201);
    assert_eq!(a.token.as_deref(), Some(&*a.body.consistency_token));
    a.body
}

#[tokio::test]
async fn a_thousand_workflows_are_stored_in_one_transaction_and_all_complete() {
    let db = fresh_db().await;
    let client = start_node(client_only("batch-c", &db), Registry::with_builtins()).await;
    let api = Api::new(&client.url());
    // One past limits.max_batch (default 1000) is refused before anything.
    let over: Vec<Value> = (0..1001).map(one_step).collect();
    let refused = api.post(BATCH, &json!({ "workflows": over })).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_request"));
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1001") && message.contains("limits.max_batch"),
        "{message}"
    );
    assert!(refused.body["error"].get("index").is_none());
    assert_eq!(stored(&db).await, 0);

    let workflows: Vec<Value> = (0..1000).map(one_step).collect();
    let answer = submit_batch(&api, &workflows).await;
    assert_eq!(answer.runs.len(), 1000);
    assert!(answer.runs.iter().all(|r| r.status == RunState::Running));
    let pool = sql(&db).await;
    // Every run, in request order, and all of them written by one
    // transaction (one xmin: nothing has touched them since).
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT run_id, goal FROM swf.runs")
        .fetch_all(&pool)
        .await
        .unwrap();
    let goals: std::collections::HashMap<_, _> = rows.into_iter().collect();
    assert_eq!(goals.len(), 1000);
    for (i, r) in answer.runs.iter().enumerate() {
        assert_eq!(goals[&r.run_id], format!("batch-{i}"));
    }
    let writers: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM swf.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        writers, 1,
        "the runs were written by more than one transaction"
    );
    pool.close().await;

    // An executor node takes them all through to completion.
    let worker = start_node(node_config("batch-w", &db), Registry::with_builtins()).await;
    let dbc = db.clone();
    wait_for("the batch's runs to complete", 180, || {
        let db = dbc.clone();
        async move {
            let by = runs_by_status(&db).await;
            (by.iter().all(|(s, _)| s != "running")).then_some(())
        }
    })
    .await;
    assert_eq!(runs_by_status(&db).await, vec![("completed".into(), 1000)]);
    // Outputs are each run's own, read with the batch's token.
    let reader = Api::with_client(api.client.with_token(Some(&answer.consistency_token)));
    for i in [0, 517, 999] {
        let doc = reader.status(&answer.runs[i].run_id.to_string()).await;
        assert_eq!(doc["output"], json!({"a": i}), "run {i}");
    }
    worker.kill().await;
    client.kill().await;
}

/// The error body of a single submit of `wf`: what a batch must say of it.
async fn single_refusal(api: &Api, wf: &Value) -> (u16, String, String) {
    let a = api.post("/v1/workflows", wf).await;
    let message = a.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (a.status, a.code().to_string(), message)
}

#[tokio::test]
async fn a_bad_workflow_refuses_the_whole_batch_with_its_index_and_stores_nothing() {
    let db = fresh_db().await;
    let mut cfg = client_only("batch-bad", &db);
    cfg.limits.max_body_bytes = 4096;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let before = stored(&db).await;
    // (index, bad workflow, code)
    let cases = [
        (
            0,
            json!({"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}),
            "unknown_handler",
        ),
        (
            3,
            json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["b"]},
                                          {"id": "b", "handler": "noop", "depends_on": ["a"]}]}),
            "invalid_workflow",
        ),
        (
            5,
            json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}], "colour": "red"}),
            "invalid_workflow",
        ),
        (
            2,
            json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "region": "mars"}]}),
            "unknown_region",
        ),
        (4, json!({"goal": "", "steps": []}), "invalid_workflow"),
        (1, json!(["not", "a", "workflow"]), "invalid_workflow"),
        (
            3,
            json!({"goal": "big", "input": "x".repeat(5000),
                   "steps": [{"id": "a", "handler": "noop"}]}),
            "payload_too_large",
        ),
    ];
    for (k, bad, code) in cases {
        let (status, single_code, single_message) = single_refusal(&api, &bad).await;
        assert_eq!(single_code, code, "{bad}");
        let mut workflows: Vec<Value> = (0..6).map(one_step).collect();
        workflows[k] = bad.clone();
        // Later workflows are bad too: only the first is named.
        workflows.push(json!({"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}));
        let a = api.post(BATCH, &json!({ "workflows": workflows })).await;
        assert_eq!((a.status, a.code()), (status, code), "{}", a.body);
        assert_eq!(a.body["error"]["index"], json!(k), "{}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        if code == "payload_too_large" {
            // The single submit refuses the body, the batch the workflow in it.
            assert!(message.contains("limits.max_body_bytes"), "{message}");
        } else {
            assert_eq!(message, single_message, "{bad}");
        }
        assert_eq!(stored(&db).await, before, "{bad}");
    }

    // The typed client reads the index, and its error names it.
    let err = api
        .client
        .submit_batch(
            &json!({"workflows": [one_step(0), {"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}]}),
            RetryPolicy::ONCE,
            |_, _| {},
        )
        .await
        .expect_err("refused");
    let SubmitError::Call(CallError::Api(f)) = &err else {
        panic!("{err}");
    };
    assert_eq!((f.code, f.index), (ErrorCode::UnknownHandler, Some(1)));
    assert!(err.to_string().contains("workflows[1]: "), "{err}");

    // Refusals of the batch itself name no index.
    let whole = [
        (json!({"workflows": []}), "invalid_request", "at least one"),
        (json!([one_step(0)]), "invalid_request", "workflows"),
        (
            json!({"workflows": [one_step(0)], "extra": 1}),
            "invalid_request",
            "extra",
        ),
        (
            json!({"workflows": {"goal": "g"}}),
            "invalid_request",
            "workflows",
        ),
    ];
    for (body, code, says) in whole {
        let a = api.post(BATCH, &body).await;
        assert_eq!((a.status, a.code()), (400, code), "{body}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(a.body["error"].get("index").is_none(), "{}", a.body);
    }
    let a = api.post_raw(BATCH, "{\"workflows\": [").await;
    assert_eq!((a.status, a.code()), (400, "invalid_json"));
    assert_eq!(stored(&db).await, before);
    // The same batch with every workflow valid is stored.
    let ok = submit_batch(&api, &(0..6).map(one_step).collect::<Vec<_>>()).await;
    assert_eq!(ok.runs.len(), 6);
    assert_eq!(stored(&db).await, before + 6_000_006);
    node.kill().await;
}

#[tokio::test]
async fn batch_limits_come_from_the_config() {
    let db = fresh_db().await;
    let mut cfg = client_only("batch-limits", &db);
    cfg.limits.max_batch = 3;
    cfg.limits.max_batch_body_bytes = 2048;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let a = api
        .post(
            BATCH,
            &json!({"workflows": (0..4).map(one_step).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "invalid_request"));
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the limit is 3 (limits.max_batch)"));
    // Past the batch body limit: 413 naming its key, whatever the count.
    let big =
        json!({"goal": "g", "input": "x".repeat(3000), "steps": [{"id": "a", "handler": "noop"}]});
    let a = api.post(BATCH, &json!({ "workflows": [big] })).await;
    assert_eq!((a.status, a.code()), (413, "payload_too_large"));
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limits.max_batch_body_bytes"));
    assert_eq!(stored(&db).await, 0);
    let ok = submit_batch(&api, &(0..3).map(one_step).collect::<Vec<_>>()).await;
    assert_eq!(ok.runs.len(), 3);
    node.kill().await;
}

fn on_queues(queues: &[&str]) -> Value {
    let steps: Vec<Value> = queues
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"id": format!("s{i}"), "handler": "noop", "queue": q}))
        .collect();
    json!({"goal": "queues", "steps": steps})
}

#[tokio::test]
async fn a_batch_past_the_queue_cap_names_the_first_workflow_that_does_not_fit() {
    let db = fresh_db().await;
    let mut cfg = client_only("batch-queues", &db);
    cfg.limits.max_queues = 8;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let pool = sql(&db).await;
    let queue_count = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.meta")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    api.submit(&on_queues(&["q0", "q1", "q2", "q3", "q4"]))
        .await;
    assert_eq!(queue_count().await, 5);
    let before = stored(&db).await;
    // Each workflow alone fits; together, the one at index 3 takes the
    // database past 8 queues. Only the database knows: it refuses.
    let workflows = [
        on_queues(&["q0"]),
        on_queues(&["q5", "q6"]),
        on_queues(&["q7", "q1"]),
        on_queues(&["q8"]),
        on_queues(&["q9"]),
    ];
    let a = api.post(BATCH, &json!({ "workflows": workflows })).await;
    assert_eq!((a.status, a.code()), (400, "too_many_queues"), "{}", a.body);
    assert_eq!(a.body["error"]["index"], json!(3), "{}", a.body);
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limits.max_queues"), "{message}");
    assert_eq!(stored(&db).await, before);
    assert_eq!(
        queue_count().await,
        5,
        "no queue of a refused batch is kept"
    );
    // One workflow with more queues than the cap: refused by validation.
    let wide: Vec<String> = (0..9).map(|i| format!("w{i}")).collect();
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    let a = api
        .post(
            BATCH,
            &json!({"workflows": [on_queues(&["q0"]), on_queues(&wide)]}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "too_many_queues"));
    assert_eq!(a.body["error"]["index"], json!(1));
    assert_eq!(stored(&db).await, before);
    // Without the last two, the batch fits: exactly 8 queues.
    let ok = submit_batch(&api, &workflows[..3]).await;
    assert_eq!(ok.runs.len(), 3);
    assert_eq!(queue_count().await, 8);
    pool.close().await;
    node.kill().await;
}

#[tokio::test]
async fn idempotency_keys_name_runs_stored_before_and_repeats_within_a_batch() {
    let db = fresh_db().await;
    let node = start_node(node_config("batch-keys", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let keyed = |key: &str, i: usize| {
        let mut wf = one_step(i);
        wf["idempotency_key"] = key.into();
        wf
    };
    let earlier = api.submit(&keyed("k1", 100)).await;
    assert_eq!(api.wait_terminal(&earlier, 30).await["status"], "completed");
    let before = stored(&db).await;
    let answer = submit_batch(
        &api,
        &[keyed("k1", 0), keyed("k2", 1), one_step(2), keyed("k2", 3)],
    )
    .await;
    let ids: Vec<String> = answer.runs.iter().map(|r| r.run_id.to_string()).collect();
    // A key seen before: that run, as it is now.
    assert_eq!(ids[0], earlier);
    assert_eq!(answer.runs[0].status, RunState::Completed);
    // A key repeated in the batch: stored once, by its first workflow.
    assert_eq!(ids[3], ids[1]);
    assert_eq!(answer.runs[1].status, RunState::Running);
    assert_ne!(ids[2], ids[1]);
    assert_eq!(stored(&db).await, before + 2_000_002);
    let first_of_k2 = api.wait_terminal(&ids[1], 30).await;
    assert_eq!(
        first_of_k2["output"],
        json!({"a": 1}),
        "the first workflow with k2 ran"
    );
    // The same keys again: the same runs, nothing new.
    let again = submit_batch(&api, &[keyed("k2", 7), keyed("k1", 8)]).await;
    let again: Vec<(String, RunState)> = again
        .runs
        .iter()
        .map(|r| (r.run_id.to_string(), r.status))
        .collect();
    assert_eq!(
        again,
        vec![
            (ids[1].clone(), RunState::Completed),
            (earlier.clone(), RunState::Completed)
        ]
    );
    assert_eq!(stored(&db).await, before + 2_000_002);
    node.kill().await;
}

/// `swf` with `args`, `stdin` on its standard input: (exit code, stdout, stderr).
fn swf(args: &[&str], stdin: Option<String>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swf"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run swf");
    let input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut { input }, text.as_bytes()).expect("write stdin");
    } else {
        drop(input);
    }
    let out = child.wait_with_output().expect("swf output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn swf_async(args: Vec<String>, stdin: Option<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        swf(&args, stdin)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn swf_submit_batch_prints_every_run_and_names_the_bad_index() {
    let db = fresh_db().await;
    let node = start_node(node_config("batch-cli", &db), Registry::with_builtins()).await;
    let url = node.url();
    let api = Api::new(&url);
    let dir = std::env::temp_dir().join(format!("swf-batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("batch.json");
    std::fs::write(
        &file,
        json!({"workflows": [one_step(0), one_step(1), one_step(2)]}).to_string(),
    )
    .unwrap();
    let path = file.display().to_string();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["submit", "--batch", "--api", &url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (code, out, err) = swf_async(args(&[&path]), None).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].starts_with("token: "), "{out}");
    for (i, line) in lines[..3].iter().enumerate() {
        let (id, status) = line.split_once("  ").expect("run id and status");
        assert_eq!(status, "running", "{line}");
        let doc = api.wait_terminal(id, 30).await;
        assert_eq!(doc["output"], json!({"a": i}), "{line}");
    }

    // A bare array on standard input, answered as JSON: the wire type.
    let before = stored(&db).await;
    let (code, out, err) = swf_async(
        args(&["--json", "-"]),
        Some(json!([one_step(5), one_step(6)]).to_string()),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let answer: BatchSubmitted = serde_json::from_str(&out).expect("the answer's wire type");
    assert_eq!(answer.runs.len(), 2);
    assert_eq!(stored(&db).await, before + 2_000_002);

    // A bad workflow: nothing stored, and the error names its index.
    let before = stored(&db).await;
    let bad = json!([one_step(0), {"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}]);
    let (code, _, err) = swf_async(args(&["-"]), Some(bad.to_string())).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown_handler") && err.contains("workflows[1]") && err.contains("nope"),
        "{err}"
    );
    assert_eq!(stored(&db).await, before);
    // A file that holds no batch is refused before any call.
    let (code, _, err) = swf_async(args(&["-"]), Some(one_step(0).to_string())).await;
    assert_ne!(code, 0);
    assert!(err.contains("holds no batch"), "{err}");
    assert_eq!(stored(&db).await, before);
    let _ = std::fs::remove_dir_all(&dir);
    node.kill().await;
}

#[tokio::test]
async fn the_batch_answer_carries_the_token_header_and_reads_into_the_wire_type() {
    let db = fresh_db().await;
    let node = start_node(node_config("batch-wire", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let a = api
        .post(BATCH, &json!({"workflows": [one_step(0), one_step(1)]}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        a.header(H_TOKEN),
        a.body["consistency_token"].as_str(),
        "{}",
        a.body
    );
    // Exactly the documented fields: deny_unknown_fields refuses any other.
    let typed: BatchSubmitted = serde_json::from_value(a.body.clone()).expect("wire type");
    assert_eq!(typed.runs.len(), 2);
    let keys: Vec<&str> = a.body["runs"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["run_id", "status"]);
    // The token reads the batch's writes.
    let reader = ApiClient::new(&node.url()).with_token(Some(&typed.consistency_token));
    let doc = reader
        .status(&typed.runs[1].run_id.to_string())
        .await
        .expect("status with the batch's token");
    assert_eq!(doc.body.goal, "batch-1");
    node.kill().await;
}
