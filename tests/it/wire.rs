//! The wire types describe the real answers: status and lineage documents
//! (built by SQL) read into the `deny_unknown_fields` types of `api::wire`,
//! so a field added or renamed on one side fails here.

use std::time::Duration;

use serde_json::json;
use singularity_workflow::api::client::{ApiClient, RetryPolicy};
use singularity_workflow::api::wire::{
    AttemptOutcome, ListQuery, RunState, StepState, H_READ_SOURCE,
};
use singularity_workflow::executor::handlers::{HandlerError, Registry, TaskContext};

use crate::harness::*;

#[tokio::test]
async fn status_and_lineage_answers_match_the_wire_types() {
    let db = fresh_db().await;
    let mut reg = Registry::with_builtins();
    // Fails its first attempt, succeeds on the second.
    reg.register("flaky", |ctx: TaskContext| async move {
        if ctx.attempt < 2 {
            Err(HandlerError::message("flake"))
        } else {
            Ok(json!({"ok_on": ctx.attempt}))
        }
    });
    let node = start_node(node_config("wire-1", &db), reg).await;
    let api = ApiClient::builder(&node.url())
        .timeout(Duration::from_secs(10))
        .build();
    let wf = json!({"goal": "wire", "input": {"n": 1}, "steps": [
        {"id": "a", "handler": "noop", "input": {"x": 1}},
        {"id": "b", "handler": "flaky", "depends_on": ["a"], "max_attempts": 3},
        {"id": "c", "handler": "noop", "depends_on": ["a"]},
        {"id": "d", "handler": "echo", "depends_on": ["b", "c"]}]});
    let sub = api
        .submit(&wf, RetryPolicy::PATIENT, |_, _| {})
        .await
        .expect("submit");
    assert_eq!(sub.status, 201);
    assert_eq!(sub.body.status, RunState::Running);
    assert_eq!(sub.token.as_deref(), Some(&*sub.body.consistency_token));
    let id = sub.body.run_id.to_string();
    let reader = api.with_token(Some(&sub.body.consistency_token));
    let done = wait_for("the run to finish", 30, || {
        let reader = reader.clone();
        let id = id.clone();
        async move {
            let a = reader.status(&id).await.expect("status");
            a.body.status.is_terminal().then_some(a)
        }
    })
    .await;
    assert!(done.read_source.is_some() && done.served_by.as_deref() == Some("wire-1"));
    let status = done.body;
    assert_eq!(status.status, RunState::Completed, "{status:?}");
    assert_eq!(status.steps.len(), 4);
    let b = status.steps.iter().find(|s| s.id == "b").unwrap();
    assert_eq!((b.status, b.attempts), (StepState::Completed, 2));
    assert_eq!(status.metrics.total_attempts, 5);

    let lineage = reader.lineage(&id).await.expect("lineage");
    assert!(lineage.read_source.is_some());
    let lineage = lineage.body;
    assert_eq!(lineage.dag.steps.len(), 4);
    let b_outcomes: Vec<AttemptOutcome> = lineage
        .execution_trace
        .iter()
        .filter(|t| t.step_id == "b")
        .map(|t| t.outcome)
        .collect();
    assert_eq!(
        b_outcomes,
        [AttemptOutcome::Failed, AttemptOutcome::Completed]
    );
    assert_eq!(lineage.metrics, status.metrics);

    // The list, the regions view and the node's info read as their types too.
    let list = api.list(&ListQuery::default()).await.expect("list");
    assert!(list.body.runs.iter().any(|r| r.run_id == sub.body.run_id));
    assert!(list.read_source.is_some());
    let regions = api.regions().await.expect("regions");
    assert_eq!(regions.body.write_region, "us-east");
    let info = api.health_info().await.expect("info");
    assert_eq!(info.body.node_id, "wire-1");
    assert!(api.ready().await.expect("ready").body.is_ready());

    // A cancel of a finished run is refused with a typed error code.
    let err = api.cancel(sub.body.run_id).await.unwrap_err();
    let f = err.api().expect("an API error");
    assert_eq!(f.code.status(), f.status);
    // A raw request through the client keeps its headers.
    let raw = api
        .request(reqwest::Method::GET, &format!("/v1/workflows/{id}"))
        .send()
        .await
        .unwrap();
    assert!(raw.headers().contains_key(H_READ_SOURCE));
    node.kill().await;
}
