//! Queues (DESIGN 10.3): `GET /v1/queues`, and pausing and resuming a queue
//! cluster-wide, over HTTP and from the CLI.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::store::{Leases, Store};

use crate::harness::*;

fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("queue {name} not listed: {list}"))
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_it_is_resumed() {
    let db = fresh_db().await;
    let node = start_node(node_config("queues-1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());

    // Paused before its first task, from the CLI.
    let (code, out, err) = swf_cli(&["queues", "--api", &node.url(), "pause", "default"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("queue default: paused (was not paused)"),
        "{out}"
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.submit(&json!({"goal": format!("held {i}"), "steps": [
                {"id": "s", "handler": "echo", "input": {"i": i}}]}))
                .await,
        );
    }
    // A hybrid node claims what it submits in the submit's transaction
    // when it has free slots: the steps are still queued, so it did not.
    for id in &ids {
        let doc = api.status(id).await;
        assert_eq!(doc["status"], "running", "{doc}");
        assert_eq!(doc["steps"][0]["status"], "queued", "{doc}");
    }
    // Nor does any other claim take them.
    let store = Store::connect_lazy(&db, 2).unwrap();
    let leases = Leases {
        lease_ms: 15_000,
        margin_ms: 1,
        backoff_base_ms: 100,
        backoff_cap_ms: 100,
    };
    let claimed = store
        .claim_tasks(
            &["default".into()],
            10,
            "other",
            "us-east",
            "default",
            leases,
            1,
            None,
        )
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "a paused queue's task was claimed: {claimed:?}"
    );

    let list = api.get("/v1/queues").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let q = queue(&list.body, "default");
    assert_eq!(q["paused"], true, "{q}");
    assert_eq!(q["depth"], 3, "{q}");
    assert_eq!(q["in_flight"], 0, "{q}");
    assert!(q["oldest_age_ms"].as_i64().is_some(), "{q}");
    let (code, out, err) = swf_cli(&["queues", "--api", &node.url()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("default ") && l.ends_with("PAUSED")),
        "{out}"
    );

    // Resumed: every run completes.
    let resumed = api.post("/v1/queues/default/resume", &json!({})).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(
        resumed.body,
        json!({"name": "default", "paused": false, "was_paused": true})
    );
    for id in &ids {
        let done = api.wait_terminal(id, 30).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let list = api.get("/v1/queues").await;
    let q = queue(&list.body, "default");
    assert_eq!(
        (q["paused"].clone(), q["depth"].clone()),
        (json!(false), json!(0)),
        "{q}"
    );
    let (code, out, err) = swf_cli(&["queues", "--api", &node.url(), "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(queue(&doc, "default")["paused"], false, "{doc}");

    // A name that cannot be a queue: 400 naming it, nothing stored.
    let bad = api.post("/v1/queues/gpu.v2/pause", &json!({})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.code(), "invalid_request");
    assert!(bad.body.to_string().contains("gpu.v2"), "{}", bad.body);
    let list = api.get("/v1/queues").await;
    assert!(
        list.body["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["name"] != "gpu.v2"),
        "{}",
        list.body
    );
    node.kill().await;
}
