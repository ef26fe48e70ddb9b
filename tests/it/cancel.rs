//! Bulk cancel (`POST /v1/workflows/cancel`, DESIGN 10.3) and the CLI's
//! `swf runs` and `swf cancel`.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

async fn statuses(api: &Api, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(api.status(id).await["status"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn bulk_cancel_takes_what_the_filter_names_and_nothing_else() {
    let db = fresh_db().await;
    // Client role only: the runs stay running until cancelled.
    let mut cfg = node_config("cancel-1", &db);
    cfg.enable_executor = false;
    cfg.worker_pools.clear();
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let before_all = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut alpha = Vec::new();
    let mut beta = Vec::new();
    for i in 0..3 {
        alpha.push(
            api.submit(
                &json!({"goal": "alpha", "steps": [{"id": "s", "handler": "noop", "input": i}]}),
            )
            .await,
        );
    }
    for i in 0..2 {
        beta.push(
            api.submit(
                &json!({"goal": "beta", "steps": [{"id": "s", "handler": "noop", "input": i}]}),
            )
            .await,
        );
    }

    // Bad filters: 400 naming the field, nothing cancelled.
    let bad: [(Value, &str); 4] = [
        (json!({"status": "done"}), "status"),
        (
            json!({"status": "running", "created_after": "yesterday"}),
            "created_after",
        ),
        (json!({"status": "running", "goal": 7}), "goal"),
        (
            json!({"status": "running", "everything": true}),
            "everything",
        ),
    ];
    for (body, field) in bad {
        let a = api.post("/v1/workflows/cancel", &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.code(), "invalid_request", "{body}: {}", a.body);
        assert!(a.body.to_string().contains(field), "{body}: {}", a.body);
    }
    // A window that holds none of them.
    let none = api
        .post(
            "/v1/workflows/cancel",
            &json!({"status": "running", "created_before": before_all.to_rfc3339()}),
        )
        .await;
    assert_eq!(
        (none.status, none.body["cancelled"].clone()),
        (200, json!(0)),
        "{}",
        none.body
    );
    assert_eq!(statuses(&api, &alpha).await, ["running"; 3]);

    // By goal: the three alpha runs only.
    let a = api
        .post(
            "/v1/workflows/cancel",
            &json!({"status": "running", "goal": "alpha"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["cancelled"], 3, "{}", a.body);
    assert!(a.header("swf-consistency-token").is_some());
    assert_eq!(statuses(&api, &alpha).await, ["cancelled"; 3]);
    assert_eq!(statuses(&api, &beta).await, ["running"; 2]);

    // From the CLI: the rest, then the list.
    let (code, out, err) = swf_cli(&[
        "cancel",
        "--api",
        &node.url(),
        "--status",
        "running",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["cancelled"], 2, "{doc}");
    let (code, out, err) = swf_cli(&[
        "runs",
        "--api",
        &node.url(),
        "--status",
        "cancelled",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(5), "{doc}");
    // One run by id: already cancelled, a no-op.
    let (code, out, err) = swf_cli(&["cancel", "--api", &node.url(), &alpha[0]]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("run {}: cancelled", alpha[0]));
    let (code, out, _) = swf_cli(&["runs", "--api", &node.url(), "--limit", "2"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("cancelled")).count(),
        2,
        "{out}"
    );
    assert!(out.contains("more: --after "), "{out}");
    node.kill().await;
}
