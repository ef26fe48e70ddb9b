//! Node roles: an edge node and a worker node cooperating on one database.

use serde_json::json;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

#[tokio::test]
async fn edge_and_worker_cooperate() {
    let db = fresh_db().await;
    let mut edge_cfg = node_config("edge-1", &db);
    edge_cfg.enable_executor = false;
    edge_cfg.worker_pools.clear();
    let mut worker_cfg = node_config("worker-1", &db);
    worker_cfg.enable_client = false;
    worker_cfg.worker_pools.insert(
        "gpu".into(),
        singularity_workflow::config::PoolConfig {
            size: 2,
            queue: "gpu_tasks".into(),
        },
    );
    let edge = start_node(edge_cfg, Registry::with_builtins()).await;
    let worker = start_node(worker_cfg, Registry::with_builtins()).await;
    let edge_api = Api::new(&edge.url());
    let worker_api = Api::new(&worker.url());

    // Roles as reported.
    let info = edge_api.get("/health/info").await.body;
    assert_eq!(info["node_type"], "edge");
    assert_eq!(info["roles"], json!(["client"]));
    assert_eq!(info["worker_pools"], json!([]));
    let info = worker_api.get("/health/info").await.body;
    assert_eq!(info["node_type"], "worker");
    assert_eq!(info["roles"], json!(["executor"]));

    // The worker refuses the client API.
    let a = worker_api
        .post(
            "/v1/workflows",
            &json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}]}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, "client_role_disabled"));
    assert_eq!(
        worker_api.get("/v1/workflows").await.code(),
        "client_role_disabled"
    );
    assert_eq!(worker_api.get("/health").await.status, 200);

    // Work submitted to the edge runs on the worker, in the right pools.
    let id = edge_api
        .submit(&json!({"goal": "split", "steps": [
            {"id": "cpu", "handler": "noop", "input": 1},
            {"id": "gpu", "handler": "echo", "queue": "gpu_tasks", "depends_on": ["cpu"]}]}))
        .await;
    let doc = edge_api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let l = edge_api.lineage(&id).await;
    let by_step = |s: &str| {
        l["execution_trace"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["step_id"] == s)
            .unwrap()
            .clone()
    };
    assert_eq!(by_step("cpu")["node_id"], "worker-1");
    assert_eq!(by_step("cpu")["worker_pool"], "default");
    assert_eq!(by_step("gpu")["node_id"], "worker-1");
    assert_eq!(by_step("gpu")["worker_pool"], "gpu");

    // Both nodes heartbeat into the nodes table.
    let nodes = wait_for("both heartbeats", 20, || {
        let api = edge_api.clone();
        async move {
            let r = api.get("/v1/regions").await;
            let nodes = r.body["regions"][0]["nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (nodes.len() == 2).then_some(nodes)
        }
    })
    .await;
    let types: Vec<&str> = nodes
        .iter()
        .map(|n| n["node_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["edge", "worker"]);
    assert!(nodes.iter().all(|n| n["healthy"] == true));
    edge.kill().await;
    worker.kill().await;
}
