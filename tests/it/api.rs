//! Every route and error code of the HTTP API; bad input changes nothing.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

fn diamond(goal: &str) -> Value {
    json!({"goal": goal, "input": {"n": 7}, "steps": [
        {"id": "a", "handler": "noop", "input": {"x": 1}},
        {"id": "b", "handler": "echo", "depends_on": ["a"]},
        {"id": "c", "handler": "noop", "depends_on": ["a"], "input": "C"},
        {"id": "d", "handler": "echo", "depends_on": ["b", "c"]}]})
}

#[tokio::test]
async fn diamond_outputs_flow_through_deps() {
    let db = fresh_db().await;
    let node = start_node(node_config("n1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let run_id = api.submit(&diamond("diamond")).await;
    let doc = api.wait_terminal(&run_id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let step = |id: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    // b echoes its whole input: run input, its own (null) input and a's output.
    assert_eq!(
        step("b")["output"],
        json!({"run": {"n": 7}, "step": null, "deps": {"a": {"x": 1}}})
    );
    // d sees both b's and c's outputs.
    assert_eq!(step("d")["output"]["deps"]["c"], json!("C"));
    assert_eq!(step("d")["output"]["deps"]["b"], step("b")["output"]);
    // The run's output is the object of its leaf outputs.
    assert_eq!(doc["output"], json!({"d": step("d")["output"]}));
    assert_eq!(doc["metrics"]["completed_steps"], 4);
    let lineage = api.lineage(&run_id).await;
    assert_eq!(lineage["dag"]["steps"].as_array().unwrap().len(), 4);
    assert_eq!(lineage["execution_trace"].as_array().unwrap().len(), 4);
    for a in lineage["execution_trace"].as_array().unwrap() {
        assert_eq!(a["node_id"], "n1");
        assert_eq!(a["region"], "us-east");
        assert_eq!(a["worker_pool"], "default");
        assert_eq!(a["outcome"], "completed");
    }
    assert_eq!(lineage["metrics"]["total_attempts"], 4);
    node.kill().await;
}

#[tokio::test]
async fn routes_headers_and_error_codes() {
    let db = fresh_db().await;
    let mut cfg = node_config("api-node", &db);
    cfg.limits.max_body_bytes = 4096;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());

    // Health routes.
    let h = api.get("/health").await;
    assert_eq!((h.status, h.body.clone()), (200, json!({"status": "ok"})));
    assert_eq!(api.get("/health/ready").await.status, 200);
    let info = api.get("/health/info").await;
    assert_eq!(info.body["node_type"], "hybrid");
    assert_eq!(info.body["roles"], json!(["client", "executor"]));
    assert_eq!(info.body["worker_pools"][0]["name"], "default");
    assert_eq!(info.body["worker_pools"][0]["size"], 10);
    assert_eq!(info.body["database"]["write"]["reachable"], true);

    // Submit: 201, token in header and body, node headers.
    let a = api.post("/v1/workflows", &diamond("routes")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["status"], "running");
    let token = a.body["consistency_token"].as_str().unwrap().to_string();
    assert_eq!(a.header("swf-consistency-token"), Some(token.as_str()));
    assert_eq!(a.header("swf-served-by"), Some("api-node"));
    assert_eq!(a.header("swf-region"), Some("us-east"));
    let run_id = a.body["run_id"].as_str().unwrap().to_string();

    // Reads carry the read source.
    let g = api
        .send(
            api.http
                .get(format!("{}/v1/workflows/{run_id}", api.base))
                .header("swf-consistency-token", &token),
        )
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["run_id"], run_id.as_str());
    assert_eq!(g.header("swf-read-source"), Some("primary"));
    let l = api.get(&format!("/v1/workflows/{run_id}/lineage")).await;
    assert_eq!(l.status, 200);
    assert!(l.header("swf-read-source").is_some());
    api.wait_terminal(&run_id, 30).await;

    // Metrics after some work; the database gauges follow within a
    // refresh period of the node's gauges task.
    let names = [
        "swf_http_request_duration_seconds",
        "swf_tasks_claimed_total",
        "swf_tasks_completed_total",
        "swf_queue_depth",
        "swf_runs",
        "swf_primary_reachable 1",
        "swf_nodes_unhealthy",
    ];
    wait_for("the metrics after some work", 30, || async {
        let m = api.get("/metrics").await;
        let text = m.body.as_str().unwrap_or("").to_string();
        names.iter().all(|n| text.contains(n)).then_some(())
    })
    .await;

    let before = stored(&db).await;
    // (body, expected status, expected code)
    let bad: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (json!({"goal": "g", "steps": []}).to_string(), 400, "invalid_workflow"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["b"]}, {"id": "b", "handler": "noop", "depends_on": ["a"]}]}).to_string(), 400, "invalid_workflow"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["zz"]}]}).to_string(), 400, "invalid_workflow"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}, {"id": "a", "handler": "noop"}]}).to_string(), 400, "invalid_workflow"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "bogus": 1}]}).to_string(), 400, "invalid_workflow"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}).to_string(), 400, "unknown_handler"),
        (json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "region": "mars"}]}).to_string(), 400, "unknown_region"),
        (json!({"goal": "g", "input": "x".repeat(5000), "steps": [{"id": "a", "handler": "noop"}]}).to_string(), 413, "payload_too_large"),
        (r#"{"goal": "g", "input": "a\u0000b", "steps": [{"id": "a", "handler": "noop"}]}"#.to_string(), 400, "invalid_workflow"),
    ];
    for (body, status, code) in bad {
        let a = api.post_raw("/v1/workflows", body.clone()).await;
        assert_eq!((a.status, a.code()), (status, code), "{body}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Chunked body over the limit (no content-length) is refused too.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let a = api
        .post_raw("/v1/workflows", reqwest::Body::wrap_stream(chunks))
        .await;
    assert_eq!((a.status, a.code()), (413, "payload_too_large"));
    assert_eq!(stored(&db).await, before, "bad input changed the database");

    // Unknown and malformed run ids.
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/v1/workflows/{unknown}"),
        format!("/v1/workflows/{unknown}/lineage"),
        "/v1/workflows/not-a-uuid".to_string(),
    ] {
        let a = api.get(&path).await;
        assert_eq!((a.status, a.code()), (404, "not_found"), "{path}");
    }
    let a = api
        .post(&format!("/v1/workflows/{unknown}/cancel"), &json!({}))
        .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    assert_eq!(api.get("/no/such/route").await.code(), "not_found");

    // Region pinning without other regions.
    let run_path = format!("/v1/workflows/{run_id}");
    let a = api.get_in("mars", &run_path).await;
    assert_eq!((a.status, a.code()), (400, "unknown_region"));
    let a = api.get_in("us-east", &run_path).await;
    assert_eq!(a.status, 200);

    // Bad list parameters and a bad token.
    for q in ["?status=weird", "?limit=0", "?limit=abc", "?after=garbage"] {
        let a = api.get(&format!("/v1/workflows{q}")).await;
        assert_eq!((a.status, a.code()), (400, "invalid_request"), "{q}");
    }
    let a = api
        .send(
            api.http
                .get(format!("{}/v1/workflows/{run_id}", api.base))
                .header("swf-consistency-token", "garbage"),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "invalid_token"));

    // Regions (single region).
    let r = api.get("/v1/regions").await;
    assert_eq!(r.body["write_region"], "us-east");
    assert_eq!(r.body["regions"][0]["role"], "primary");
    assert_eq!(r.body["regions"][0]["nodes"][0]["node_id"], "api-node");
    node.kill().await;
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let db = fresh_db().await;
    let mut cfg = node_config("lister", &db);
    cfg.enable_executor = false; // keep runs running
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            api.submit(
                &json!({"goal": format!("g{i}"), "steps": [{"id": "a", "handler": "noop"}]}),
            )
            .await,
        );
    }
    let cancelled = ids[0].clone();
    let c = api
        .post(&format!("/v1/workflows/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["status"], "cancelled");
    assert!(c.header("swf-consistency-token").is_some());

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/v1/workflows?limit=3&after={a}"),
            None => "/v1/workflows?limit=3".to_string(),
        };
        let page = api.get(&q).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for r in page.body["runs"].as_array().unwrap() {
            seen.push(r["run_id"].as_str().unwrap().to_string());
        }
        match page.body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    // Newest first, each run once.
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(seen, want);
    let running = api.get("/v1/workflows?status=running&limit=100").await;
    assert_eq!(running.body["runs"].as_array().unwrap().len(), 6);
    let c = api.get("/v1/workflows?status=cancelled").await;
    assert_eq!(c.body["runs"][0]["run_id"], cancelled.as_str());
    node.kill().await;
}

/// Random JSON (and random bytes) against the submit endpoint: never a
/// panic or a 5xx, only the specified codes, and the node keeps serving.
#[tokio::test]
async fn submit_survives_random_input() {
    use rand::{Rng, SeedableRng};
    let db = fresh_db().await;
    let mut cfg = node_config("fuzz", &db);
    cfg.enable_executor = false;
    cfg.limits.max_body_bytes = 16 * 1024;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    const KEYS: &[&str] = &[
        "goal",
        "steps",
        "input",
        "idempotency_key",
        "decomposer",
        "id",
        "handler",
        "depends_on",
        "queue",
        "max_attempts",
        "timeout_ms",
        "region",
        "x",
    ];
    fn value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
        let pick = if depth > 4 {
            rng.random_range(0..4)
        } else {
            rng.random_range(0..7)
        };
        match pick {
            0 => Value::Null,
            1 => json!(rng.random_bool(0.5)),
            2 => json!(rng.random_range(-1_000_000i64..1_000_000)),
            3 => {
                let words = [
                    "a", "noop", "echo", "fail", "us-east", "", "a b", "\u{0}", "💥", "default",
                ];
                json!(words[rng.random_range(0..words.len())])
            }
            4 => json!(rng.random::<f64>() * 1e12),
            5 => Value::Array(
                (0..rng.random_range(0..5))
                    .map(|_| value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..6))
                    .map(|_| {
                        (
                            KEYS[rng.random_range(0..KEYS.len())].to_string(),
                            value(rng, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }
    let allowed = [
        "invalid_json",
        "invalid_workflow",
        "unknown_handler",
        "unknown_region",
        "payload_too_large",
    ];
    let (mut created, mut repeated) = (0, 0);
    for i in 0..400 {
        let body: Vec<u8> = if i % 10 == 0 {
            (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect()
        } else {
            // Mostly workflow-shaped objects, so validation paths are exercised.
            let mut v = value(&mut rng, 0);
            if i % 2 == 0 {
                let steps: Vec<Value> = (0..rng.random_range(0..4))
                    .map(|_| {
                        let mut s = json!({"id": format!("s{}", rng.random_range(0..3)), "handler": "noop"});
                        if rng.random_bool(0.5) {
                            s[KEYS[rng.random_range(0..KEYS.len())]] = value(&mut rng, 2);
                        }
                        s
                    })
                    .collect();
                v = json!({"goal": "fuzz", "steps": steps});
            }
            serde_json::to_vec(&v).unwrap()
        };
        let a = api.post_raw("/v1/workflows", body.clone()).await;
        match a.status {
            201 => created += 1,
            200 => repeated += 1, // an idempotency key seen before
            400 | 413 => assert!(
                allowed.contains(&a.code()),
                "{}: {}",
                a.code(),
                String::from_utf8_lossy(&body)
            ),
            s => panic!(
                "status {s} for {}: {}",
                String::from_utf8_lossy(&body),
                a.body
            ),
        }
    }
    assert!(created > 0, "no random workflow was valid");
    assert_eq!(api.get("/health/ready").await.status, 200);
    let pool = sql(&db).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        runs, created,
        "only accepted submits stored runs ({repeated} repeats)"
    );
    node.kill().await;
}

#[tokio::test]
async fn each_workflow_limit_is_named_in_its_error_and_changes_nothing() {
    let db = fresh_db().await;
    let mut c = node_config("limits-1", &db);
    c.limits.max_steps = 3;
    c.limits.max_id_len = 8;
    c.limits.max_goal_len = 10;
    c.limits.max_json_depth = 3;
    c.limits.max_body_bytes = 2000;
    let node = start_node(c, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let step = |id: &str| json!({"id": id, "handler": "noop"});
    let deep = json!({"a": {"b": {"c": {"d": 1}}}});
    // Right at each limit: accepted.
    let ok = json!({"goal": "x".repeat(10), "input": {"a": {"b": {"c": 1}}},
        "steps": [step("abcdefgh"), step("b"), step("c")]});
    api.submit(&ok).await;
    let before = stored(&db).await;
    // One past each limit: (body, code, the limit's key in the message).
    let cases = [
        (
            json!({"goal": "g", "steps": [step("a"), step("b"), step("c"), step("d")]}),
            400,
            "invalid_workflow",
            "limits.max_steps",
        ),
        (
            json!({"goal": "g", "steps": [step("abcdefghi")]}),
            400,
            "invalid_workflow",
            "limits.max_id_len",
        ),
        (
            json!({"goal": "x".repeat(11), "steps": [step("a")]}),
            400,
            "invalid_workflow",
            "limits.max_goal_len",
        ),
        (
            json!({"goal": "g", "input": deep, "steps": [step("a")]}),
            400,
            "invalid_workflow",
            "limits.max_json_depth",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "input": deep}]}),
            400,
            "invalid_workflow",
            "limits.max_json_depth",
        ),
        (
            json!({"goal": "g", "input": "x".repeat(2000), "steps": [step("a")]}),
            413,
            "payload_too_large",
            "limits.max_body_bytes",
        ),
    ];
    for (body, status, code, key) in cases {
        let a = api.post("/v1/workflows", &body).await;
        assert_eq!((a.status, a.code()), (status, code), "{body}: {}", a.body);
        let msg = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(key), "{key} not named in {msg:?}");
    }
    assert_eq!(stored(&db).await, before, "a refused workflow was stored");
    let mut node = node;
    node.shutdown().await;
}

/// Methods seen in `swf_http_request_duration_seconds` series other than the
/// standard ones (every series of the metric, whichever test made it).
fn odd_method_series(metrics: &str) -> std::collections::BTreeSet<String> {
    const STANDARD: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    metrics
        .lines()
        .filter(|l| l.starts_with("swf_http_request_duration_seconds_count{"))
        .filter_map(|l| {
            let m = l.split("method=\"").nth(1)?.split('"').next()?;
            (!STANDARD.contains(&m)).then(|| m.to_string())
        })
        .collect()
}

#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let db = fresh_db().await;
    let node = start_node(node_config("metrics-node", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    for round in 0..2 {
        for i in 0..60 {
            let method = reqwest::Method::from_bytes(format!("ODD{round}X{i}").as_bytes()).unwrap();
            let path = if i % 2 == 0 {
                "/v1/workflows"
            } else {
                "/no/such/path"
            };
            let a = api.send(api.client.request(method, path)).await;
            assert!(a.status == 404 || a.status == 405, "status {}", a.status);
        }
    }
    let text = api
        .get("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or("")
        .to_string();
    let odd = odd_method_series(&text);
    assert!(
        odd.iter().all(|m| m == "other"),
        "120 made-up methods became metric labels: {} series ({:?}...)",
        odd.len(),
        odd.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        text.contains("method=\"other\""),
        "odd methods are counted as `other`"
    );
    // Writes still work afterwards.
    let run_id = api.submit(&diamond("after odd methods")).await;
    assert_eq!(api.wait_terminal(&run_id, 30).await["status"], "completed");
}

#[tokio::test]
async fn a_forged_token_is_refused_and_changes_no_epoch() {
    let db = fresh_db().await;
    let node = start_node(node_config("token-node", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let run_id = api.submit(&diamond("before forgery")).await;
    api.wait_terminal(&run_id, 30).await;
    let epoch = api.get("/health/info").await.body["epoch"].clone();
    for (path, token) in [
        (format!("/v1/workflows/{run_id}"), "999999-0/0"),
        (
            format!("/v1/workflows/{run_id}/lineage"),
            "999999-FFFFFFFF/FFFFFFFF",
        ),
        ("/v1/workflows".to_string(), "2-0/0"),
        (format!("/v1/workflows/{run_id}"), "not-a-token"),
    ] {
        let a = api
            .send(
                api.http
                    .get(format!("{}{path}", api.base))
                    .header("swf-consistency-token", token),
            )
            .await;
        assert_eq!(
            (a.status, a.code()),
            (400, "invalid_token"),
            "{path} {token}"
        );
    }
    // The node's epoch did not move, and writes and executors carry on.
    assert_eq!(api.get("/health/info").await.body["epoch"], epoch);
    let a = api.post("/v1/workflows", &diamond("after forgery")).await;
    assert_eq!(a.status, 201);
    let (after, token) = (
        a.body["run_id"].as_str().unwrap(),
        a.header("swf-consistency-token").unwrap(),
    );
    assert_eq!(api.wait_terminal(after, 30).await["status"], "completed");
    // The token the write answered is served.
    let ok = api
        .send(
            api.http
                .get(format!("{}/v1/workflows/{after}", api.base))
                .header("swf-consistency-token", token),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db().await;
    let mut cfg = node_config("slow-headers", &db);
    cfg.api.header_read_timeout_ms = 300;
    cfg.api.max_connections = 3;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let addr = node.url().trim_start_matches("http://").to_string();
    // Three clients take every connection slot and never end their heads.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A real request is still served: the slow ones are cut off.
    let ok = tokio::time::timeout(std::time::Duration::from_secs(20), api.get("/health"))
        .await
        .expect("the node answers while slow clients hold its connections");
    assert_eq!(ok.status, 200);
    for mut s in slow {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue, // hyper may answer 408 before closing
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(
            closed,
            "a client that never finished its headers is disconnected"
        );
    }
}
