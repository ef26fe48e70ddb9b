//! Authentication and request limits over real HTTP.

use serde_json::json;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

#[tokio::test]
async fn tokens_scopes_and_limits() {
    let db = fresh_db().await;
    let mut cfg = node_config("auth-node", &db);
    cfg.auth.enabled = true;
    cfg.auth.protect_info = true;
    cfg.auth.tokens = vec![
        token("reader", "r-secret", &["read"]),
        token("writer", "w-secret", &["read", "submit"]),
    ];
    cfg.limits.per_token_rate_per_s = 20;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let wf = json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}]});
    let call = |method: &str, path: &str, tok: Option<&str>| {
        let mut r = api
            .http
            .request(method.parse().unwrap(), format!("{}{path}", api.base));
        if method == "POST" {
            r = r.json(&wf);
        }
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r
    };
    // (method, path, token, status, code)
    let cases = [
        ("GET", "/health", None, 200, ""),
        ("GET", "/health/ready", None, 200, ""),
        ("GET", "/health/info", None, 401, "unauthorized"),
        ("GET", "/health/info", Some("r-secret"), 200, ""),
        ("GET", "/v1/workflows", None, 401, "unauthorized"),
        ("GET", "/v1/workflows", Some("wrong"), 401, "unauthorized"),
        ("GET", "/v1/workflows", Some("r-secret"), 200, ""),
        ("POST", "/v1/workflows", Some("r-secret"), 403, "forbidden"),
        ("POST", "/v1/workflows", Some("w-secret"), 201, ""),
        (
            "POST",
            "/v1/admin/drills",
            Some("w-secret"),
            403,
            "forbidden",
        ),
    ];
    for (method, path, tok, status, code) in cases {
        let a = api.send(call(method, path, tok)).await;
        assert_eq!(a.status, status, "{method} {path} {tok:?}: {}", a.body);
        if !code.is_empty() {
            assert_eq!(a.code(), code, "{method} {path}");
            // Secrets never come back.
            assert!(!a.body.to_string().contains("secret"), "{}", a.body);
        }
    }
    // Refused calls changed nothing: one run (the writer's).
    let list = api
        .send(call("GET", "/v1/workflows", Some("r-secret")))
        .await;
    assert_eq!(list.body["runs"].as_array().unwrap().len(), 1);
    // Over the token's rate: 429 with Retry-After; another token is unaffected.
    let answers = futures::future::join_all(
        (0..80).map(|_| api.send(call("GET", "/v1/workflows", Some("r-secret")))),
    )
    .await;
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!limited.is_empty(), "no request was rate limited");
    assert_eq!(limited[0].code(), "rate_limited");
    assert_eq!(limited[0].header("retry-after"), Some("1"));
    assert_eq!(
        api.send(call("GET", "/v1/workflows", Some("w-secret")))
            .await
            .status,
        200
    );
    node.kill().await;
}

#[tokio::test]
async fn concurrency_and_time_limits_answer_with_their_codes() {
    let db = fresh_db().await;
    let mut cfg = node_config("limits-node", &db);
    cfg.limits.max_concurrent_requests = 1;
    cfg.limits.request_timeout_ms = 300;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // A request whose body never finishes holds the only slot...
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"{\"goal\":".to_vec())).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let slow = tokio::spawn({
        let api = api.clone();
        async move { api.post_raw("/v1/workflows", body).await }
    });
    // ...so another is shed with 503 and Retry-After while it lasts.
    let shed = wait_for("a request to be shed", 10, || {
        let api = api.clone();
        async move {
            let a = api.get("/v1/workflows").await;
            (a.status == 503).then_some(a)
        }
    })
    .await;
    assert_eq!(shed.code(), "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    // The stalled request itself times out with its code.
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status, slow.code()),
        (504, "request_timeout"),
        "{}",
        slow.body
    );
    drop(tx);
    // The slot is free again; nothing was stored.
    let list = wait_for("the node to serve again", 10, || {
        let api = api.clone();
        async move {
            let a = api.get("/v1/workflows").await;
            (a.status == 200).then_some(a)
        }
    })
    .await;
    assert_eq!(list.body["runs"].as_array().unwrap().len(), 0);
    node.kill().await;
}

/// A stream of the chunks sent on `rx`.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}
