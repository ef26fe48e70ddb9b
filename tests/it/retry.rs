//! Retry of a failed or cancelled run (`POST /v1/workflows/{id}/retry`,
//! `swf retry`): only what did not complete runs again, with new attempts,
//! completed outputs kept, every old attempt still in the lineage.

use serde_json::json;
use singularity_workflow::executor::handlers::{HandlerError, Registry, TaskContext};

use crate::harness::*;

fn outcomes(lineage: &serde_json::Value, step: &str) -> Vec<(i64, String)> {
    attempts_of(lineage, step)
        .into_iter()
        .map(|(n, _, o)| (n, o))
        .collect()
}

#[tokio::test]
async fn a_failed_run_retried_runs_its_failed_step_and_dependents_only() {
    let db = fresh_db().await;
    let mut reg = Registry::with_builtins();
    // Fails on attempts 1 and 2, succeeds from 3 on.
    reg.register("flaky", |ctx: TaskContext| async move {
        if ctx.attempt < 3 {
            Err(HandlerError::message(format!("flake {}", ctx.attempt)))
        } else {
            Ok(json!({"ok_on": ctx.attempt, "deps": ctx.input["deps"].clone()}))
        }
    });
    let node = start_node(node_config("retry-1", &db), reg).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(&json!({"goal": "retry me", "steps": [
            {"id": "a", "handler": "echo", "input": {"v": 1}},
            {"id": "b", "handler": "flaky", "depends_on": ["a"], "max_attempts": 2},
            {"id": "c", "handler": "echo", "depends_on": ["b"]},
            {"id": "d", "handler": "noop"}]}))
        .await;
    let failed = api.wait_terminal(&id, 30).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    // Only failed and cancelled runs can be retried.
    let ok = api
        .submit(&json!({"goal": "fine", "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    assert_eq!(api.wait_terminal(&ok, 30).await["status"], "completed");
    let refused = api
        .post(&format!("/v1/workflows/{ok}/retry"), &json!({}))
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.code(), "invalid_state");
    let unknown = api
        .post(
            &format!("/v1/workflows/{}/retry", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let retried = api
        .post(&format!("/v1/workflows/{id}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["status"], "running", "{}", retried.body);
    assert!(retried.header("swf-consistency-token").is_some());
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let lineage = api.lineage(&id).await;
    // a and d completed the first time and did not run again; b kept its
    // two failed attempts and completed on the third; c ran once.
    assert_eq!(outcomes(&lineage, "a"), [(1, "completed".to_string())]);
    assert_eq!(outcomes(&lineage, "d"), [(1, "completed".to_string())]);
    assert_eq!(
        outcomes(&lineage, "b"),
        [
            (1, "failed".to_string()),
            (2, "failed".to_string()),
            (3, "completed".to_string())
        ]
    );
    assert_eq!(outcomes(&lineage, "c"), [(1, "completed".to_string())]);
    // b received a's kept output (echo answers with its whole input).
    let a_out = json!({"deps": {}, "run": null, "step": {"v": 1}});
    assert_eq!(done["steps"][0]["output"], a_out, "{done}");
    assert_eq!(
        done["steps"][1]["output"],
        json!({"ok_on": 3, "deps": {"a": a_out}}),
        "{done}"
    );
    node.kill().await;
}

#[tokio::test]
async fn a_cancelled_run_retried_from_the_cli_completes() {
    let db = fresh_db().await;
    let node = start_node(node_config("retry-2", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // Held on a paused queue, then cancelled before it ran.
    let p = api.post("/v1/queues/default/pause", &json!({})).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let id = api
        .submit(&json!({"goal": "cancel then retry", "steps": [
            {"id": "s", "handler": "echo", "input": {"x": 2}}]}))
        .await;
    let c = api
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let r = api.post("/v1/queues/default/resume", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, stdout, stderr) = swf_cli(&["retry", "--api", &node.url(), &id]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("run {id}: running"));
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["s"]["step"], json!({"x": 2}), "{done}");
    node.kill().await;
}
