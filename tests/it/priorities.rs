//! Priorities (DESIGN 10.2): within a queue, higher priority is claimed
//! first; out-of-range priorities are refused by name.

use std::sync::{Arc, Mutex};

use serde_json::json;
use singularity_workflow::executor::handlers::{Registry, TaskContext};

use crate::harness::*;

#[tokio::test]
async fn high_priority_runs_overtake_low_ones_on_a_resumed_queue() {
    let db = fresh_db().await;
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut reg = Registry::with_builtins();
    let seen = order.clone();
    reg.register("record", move |ctx: TaskContext| {
        let seen = seen.clone();
        async move {
            let tag = ctx.step_input()["tag"].as_str().unwrap_or("").to_string();
            seen.lock().unwrap().push(tag);
            Ok(json!(null))
        }
    });
    let mut cfg = node_config("prio-1", &db);
    for p in cfg.worker_pools.values_mut() {
        p.size = 1;
    }
    let node = start_node(cfg, reg).await;
    let api = Api::new(&node.url());
    let p = api.post("/v1/queues/default/pause", &json!({})).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let mut ids = Vec::new();
    for (tag, priority) in [("low", -10), ("high", 10)] {
        for i in 0..15 {
            ids.push(
                api.submit(&json!({"goal": format!("{tag} {i}"), "priority": priority,
                                   "steps": [{"id": "s", "handler": "record", "input": {"tag": tag}}]}))
                    .await,
            );
        }
    }
    let r = api.post("/v1/queues/default/resume", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for id in &ids {
        assert_eq!(api.wait_terminal(id, 60).await["status"], "completed");
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 30, "{order:?}");
    assert!(
        order[..15].iter().all(|t| t == "high") && order[15..].iter().all(|t| t == "low"),
        "submitted low first, yet ran: {order:?}"
    );

    // Out of range: refused by name, nothing stored.
    for (wf, names) in [
        (
            json!({"goal": "g", "priority": 101, "steps": [{"id": "s", "handler": "noop"}]}),
            "`priority`",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "s", "handler": "noop", "priority": -101}]}),
            "priority",
        ),
        (
            json!({"goal": "g", "priority": "high", "steps": [{"id": "s", "handler": "noop"}]}),
            "priority",
        ),
    ] {
        let a = api.post("/v1/workflows", &wf).await;
        assert_eq!(a.status, 400, "{wf}: {}", a.body);
        assert_eq!(a.code(), "invalid_workflow", "{}", a.body);
        assert!(a.body.to_string().contains(names), "{wf}: {}", a.body);
    }
    let runs = api.get("/v1/workflows?limit=1000").await;
    assert_eq!(
        runs.body["runs"].as_array().map(Vec::len),
        Some(30),
        "{}",
        runs.body
    );
    node.kill().await;
}
