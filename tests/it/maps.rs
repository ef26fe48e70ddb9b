//! Map steps (DESIGN 10.2): one task per element of the run's input or of
//! a dependency's output, each with its own attempts and lineage; the
//! outputs in order; an empty array at once; a bad source or a failing
//! item fails the step.

use serde_json::json;
use singularity_workflow::executor::handlers::{HandlerError, Registry, TaskContext};

use crate::harness::*;

fn registry() -> Registry {
    let mut reg = Registry::with_builtins();
    // Doubles its item; item 99 always fails.
    reg.register("double", |ctx: TaskContext| async move {
        let item = ctx.input["item"].as_i64().unwrap_or(0);
        if item == 99 {
            return Err(HandlerError::message("99 is not welcome"));
        }
        Ok(json!({"index": ctx.input["index"].clone(), "twice": item * 2}))
    });
    reg.register("list", |_ctx: TaskContext| async move { Ok(json!([5, 6])) });
    reg
}

fn step<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {doc}"))
}

#[tokio::test]
async fn a_map_runs_one_task_per_item_and_keeps_their_order() {
    let db = fresh_db().await;
    let node = start_node(node_config("map-1", &db), registry()).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(
            &json!({"goal": "map the input", "input": [1, 2, 3], "steps": [
            {"id": "m", "handler": "double", "map": "$run"},
            {"id": "sum", "handler": "echo", "depends_on": ["m"]}]}),
        )
        .await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = json!([{"index": 0, "twice": 2}, {"index": 1, "twice": 4}, {"index": 2, "twice": 6}]);
    assert_eq!(step(&done, "m")["output"], out, "{done}");
    assert_eq!(done["output"]["sum"]["deps"]["m"], out, "{done}");
    // Each item is a step with its index, attempts and lineage entries.
    for i in 0..3 {
        let item = step(&done, &format!("m[{i}]"));
        assert_eq!(item["index"], i, "{done}");
        assert_eq!(item["status"], "completed", "{done}");
        let l = api.lineage(&id).await;
        assert_eq!(attempts_of(&l, &format!("m[{i}]")).len(), 1, "{l}");
    }
    // The run's output is its leaf steps' only, not the items'.
    assert_eq!(
        done["output"].as_object().map(|o| o.len()),
        Some(1),
        "{done}"
    );

    // Over a dependency's output.
    let dep = api
        .submit(&json!({"goal": "map a dependency", "steps": [
            {"id": "l", "handler": "list"},
            {"id": "m", "handler": "double", "map": "l", "depends_on": ["l"]}]}))
        .await;
    let done = api.wait_terminal(&dep, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        step(&done, "m")["output"],
        json!([{"index": 0, "twice": 10}, {"index": 1, "twice": 12}])
    );

    // An empty array completes at once with [].
    let empty = api
        .submit(&json!({"goal": "empty", "input": [], "steps": [
            {"id": "m", "handler": "double", "map": "$run"},
            {"id": "after", "handler": "echo", "depends_on": ["m"]}]}))
        .await;
    let done = api.wait_terminal(&empty, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(step(&done, "m")["output"], json!([]));
    node.kill().await;
}

#[tokio::test]
async fn a_bad_source_or_a_failing_item_fails_the_map_step() {
    let db = fresh_db().await;
    let node = start_node(node_config("map-2", &db), registry()).await;
    let api = Api::new(&node.url());
    let not_array = api
        .submit(&json!({"goal": "object", "input": {"a": 1}, "steps": [
            {"id": "m", "handler": "double", "map": "$run"}]}))
        .await;
    let done = api.wait_terminal(&not_array, 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(step(&done, "m")["error"]["code"], "map_source_not_array");
    assert!(
        step(&done, "m")["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("object, not an array"),
        "{done}"
    );

    let failing = api
        .submit(
            &json!({"goal": "one bad item", "input": [1, 99, 3], "steps": [
            {"id": "m", "handler": "double", "map": "$run", "max_attempts": 2}]}),
        )
        .await;
    let done = api.wait_terminal(&failing, 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(step(&done, "m")["status"], "failed", "{done}");
    assert_eq!(step(&done, "m")["error"]["index"], 1, "{done}");
    assert_eq!(step(&done, "m[1]")["attempts"], 2, "{done}");
    let l = api.lineage(&failing).await;
    assert!(
        attempts_of(&l, "m[1]")
            .iter()
            .all(|(_, _, o)| o == "failed"),
        "{l}"
    );

    // Retried: only the failed item runs again (it fails again here).
    let r = api
        .post(&format!("/v1/workflows/{failing}/retry"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let again = api.wait_terminal(&failing, 30).await;
    assert_eq!(again["status"], "failed", "{again}");
    let l = api.lineage(&failing).await;
    assert_eq!(attempts_of(&l, "m[1]").len(), 4, "{l}");

    // A map over an unknown step: 400 naming `map`, nothing stored.
    let a = api
        .post(
            "/v1/workflows",
            &json!({"goal": "g", "steps": [
                {"id": "m", "handler": "double", "map": "nope"}]}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.to_string().contains("map `nope`"), "{}", a.body);
    node.kill().await;
}
