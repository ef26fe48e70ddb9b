//! Handlers for real work (DESIGN 10.4), run by a real node against a real
//! HTTP server and real processes: `http:<name>` (signed, 4xx not retried,
//! 5xx retried) and `command:<name>` (stdin/stdout JSON, non-zero exits,
//! the process group killed on timeout).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};
use singularity_workflow::config::{CommandHandlerConfig, HttpHandlerConfig};
use singularity_workflow::executor::handlers::http::signature;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

const SECRET: &str = "a-shared-secret-of-some-length";

/// A receiver: `/ok` answers what it got and whether the signature holds,
/// `/bad` 422, `/flaky` 503 on its first call and 200 after.
async fn receiver() -> String {
    let calls = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new()
        .route(
            "/ok",
            post(|h: HeaderMap, body: Bytes| async move {
                let sig = h
                    .get("swf-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let got: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Json(json!({
                    "got": got,
                    "signed": sig == signature(SECRET.as_bytes(), &body),
                }))
            }),
        )
        .route(
            "/bad",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "no such thing") }),
        )
        .route(
            "/flaky",
            post(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"try": "again"})),
                        )
                    } else {
                        (StatusCode::OK, Json(json!({"fine": true})))
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http(url: String, secret: Option<&str>) -> HttpHandlerConfig {
    HttpHandlerConfig {
        url,
        timeout_ms: 5_000,
        secret: secret.map(str::to_string),
    }
}

fn command(program: &str, args: &[&str], timeout_ms: u64) -> CommandHandlerConfig {
    CommandHandlerConfig {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        timeout_ms,
        env: vec![("SWF_TEST_GREETING".into(), "hello".into())],
    }
}

#[tokio::test]
async fn http_and_command_handlers_run_real_work() {
    let db = fresh_db().await;
    let base = receiver().await;
    let pid_file = std::env::temp_dir().join(format!("swf-handler-{}.pid", uuid::Uuid::now_v7()));
    let mut cfg = node_config("handlers-1", &db);
    let h = &mut cfg.handlers;
    h.http
        .insert("ok".into(), http(format!("{base}/ok"), Some(SECRET)));
    h.http
        .insert("bad".into(), http(format!("{base}/bad"), None));
    h.http
        .insert("flaky".into(), http(format!("{base}/flaky"), None));
    h.command.insert("cat".into(), command("cat", &[], 5_000));
    h.command.insert(
        "greet".into(),
        command(
            "sh",
            &[
                "-c",
                "printf '{\"greeting\": \"%s\"}' \"$SWF_TEST_GREETING\"",
            ],
            5_000,
        ),
    );
    h.command.insert(
        "broken".into(),
        command("sh", &["-c", "echo 'something broke' >&2; exit 3"], 5_000),
    );
    let script = format!(
        "echo $$ > {}; sleep 60 & sleep 60; wait",
        pid_file.display()
    );
    h.command
        .insert("stuck".into(), command("sh", &["-c", &script], 300));
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let one = |handler: &str, attempts: u32| {
        json!({"goal": handler, "steps": [
            {"id": "s", "handler": handler, "input": {"x": 1}, "max_attempts": attempts}]})
    };

    // http: signed, output is the answer.
    let id = api.submit(&one("http:ok", 1)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = &done["output"]["s"];
    assert_eq!(out["signed"], true, "{done}");
    assert_eq!(out["got"]["step"], json!({"x": 1}), "{done}");
    assert_eq!(out["got"]["run_id"], json!(id), "{done}");
    assert_eq!(out["got"]["attempt"], 1, "{done}");

    // A 4xx is not retried, whatever attempts are left.
    let id = api.submit(&one("http:bad", 3)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(attempts_of(&api.lineage(&id).await, "s").len(), 1);
    assert_eq!(done["steps"][0]["error"]["status"], 422, "{done}");

    // A 5xx is.
    let id = api.submit(&one("http:flaky", 3)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["s"], json!({"fine": true}), "{done}");
    let outcomes: Vec<String> = attempts_of(&api.lineage(&id).await, "s")
        .into_iter()
        .map(|a| a.2)
        .collect();
    assert_eq!(outcomes, ["failed", "completed"]);

    // command: the input on stdin, stdout is the output; env is passed.
    let id = api.submit(&one("command:cat", 1)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["s"]["step"], json!({"x": 1}), "{done}");
    assert_eq!(done["output"]["s"]["step_id"], "s", "{done}");
    let id = api.submit(&one("command:greet", 1)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["output"]["s"], json!({"greeting": "hello"}), "{done}");

    // A non-zero exit fails with stderr's end.
    let id = api.submit(&one("command:broken", 1)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = &done["steps"][0]["error"];
    assert_eq!(error["exit_code"], 3, "{done}");
    assert!(
        error["stderr"]
            .as_str()
            .unwrap()
            .contains("something broke"),
        "{done}"
    );

    // Past its timeout the whole process group is killed (the shell and
    // both of its sleeps).
    let id = api.submit(&one("command:stuck", 1)).await;
    let done = api.wait_terminal(&id, 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["steps"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{done}"
    );
    let pgid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the stuck command wrote its pid")
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the stuck command's process group to be gone",
        10,
        || async move {
            // SAFETY: signal 0 only checks whether the group has members.
            let r = unsafe { libc::killpg(pgid, 0) };
            (r == -1).then_some(())
        },
    )
    .await;
    let _ = std::fs::remove_file(&pid_file);
    node.kill().await;
}

#[tokio::test]
async fn a_node_accepts_only_handlers_some_executor_advertises_for_the_queue_and_only_they_run_them(
) {
    let db = fresh_db().await;
    let base = receiver().await;
    let mut wcfg = node_config("handlers-worker", &db);
    wcfg.enable_client = false;
    wcfg.handlers
        .http
        .insert("ok".into(), http(format!("{base}/ok"), Some(SECRET)));
    let worker = start_node(wcfg, Registry::with_builtins()).await;
    // A hybrid node without the handler: it accepts the step (the worker
    // advertises it) but neither its submit nor its pool claims it.
    let edge = start_node(
        node_config("handlers-hybrid", &db),
        Registry::with_builtins(),
    )
    .await;
    let api = Api::new(&edge.url());
    let store = singularity_workflow::store::Store::connect_lazy(&db, 2).unwrap();
    wait_for("the worker to advertise http:ok", 30, || {
        let store = store.clone();
        async move {
            let pairs = store.advertised_handlers(15_000).await.ok()?;
            pairs
                .contains(&("default".to_string(), "http:ok".to_string()))
                .then_some(())
        }
    })
    .await;

    let wf = |handler: &str, queue: &str| json!({"goal": "edge", "steps": [{"id": "s", "handler": handler, "queue": queue}]});
    let mut ids = Vec::new();
    for _ in 0..5 {
        let a = api.post("/v1/workflows", &wf("http:ok", "default")).await;
        assert_eq!(a.status, 201, "{}", a.body);
        ids.push(a.body["run_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let done = api.wait_terminal(id, 30).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["output"]["s"]["signed"], true, "{done}");
        let ran = attempts_of(&api.lineage(id).await, "s");
        assert_eq!(ran.len(), 1, "{ran:?}");
        assert_eq!(ran[0].1, "handlers-worker", "{ran:?}");
    }
    // Not advertised for that queue, or by no one: refused by name, not stored.
    for (handler, queue) in [
        ("http:ok", "other"),
        ("http:nope", "default"),
        ("command:x", "default"),
    ] {
        let r = api.post("/v1/workflows", &wf(handler, queue)).await;
        assert_eq!(r.status, 400, "{handler} on {queue}: {}", r.body);
        assert_eq!(r.code(), "unknown_handler", "{}", r.body);
        assert!(r.body.to_string().contains(handler), "{}", r.body);
    }
    let runs = api.get("/v1/workflows").await;
    assert_eq!(
        runs.body["runs"].as_array().map(Vec::len),
        Some(5),
        "{}",
        runs.body
    );
    edge.kill().await;
    worker.kill().await;
}
