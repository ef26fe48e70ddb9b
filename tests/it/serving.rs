//! How the API server holds up under careless or hostile callers: metric
//! labels from fixed sets, scrapes that cost no query, anonymous calls that
//! cannot starve `/v1`, idle keep-alive connections closed, and readiness
//! that does not leak database errors.

use std::collections::BTreeSet;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use serde_json::json;
use singularity_workflow::api::auth::hash_token;
use singularity_workflow::config::{Config, TokenSpec};
use singularity_workflow::executor::handlers::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::harness::*;

fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        sha256: hash_token(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

async fn metrics_text(api: &Api) -> String {
    let a = api.get("/metrics").await;
    assert_eq!(a.status, 200, "/metrics: {}", a.body);
    a.body.as_str().unwrap_or("").to_string()
}

/// The value of the series `name{label="value"}` in a scrape, if present.
fn gauge(text: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let head = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse().ok())
}

/// The values of `label` over every series of `metric` in a scrape.
fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let pat = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let v = l.split(pat.as_str()).nth(1)?.split('"').next()?;
            Some(v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn http_metric_labels_are_route_templates_methods_and_status_classes() {
    let db = fresh_db().await;
    let mut cfg = node_config("labels-node", &db);
    cfg.enable_executor = false;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let run_id = api
        .submit(&json!({"goal": "labels", "steps": [
        {"id": "a", "handler": "noop"}]}))
        .await;
    // Every request carries a marker in its path; none may become a label.
    let marker = format!("zq{}", uuid::Uuid::new_v4().simple());
    let paths = [
        format!("/v1/workflows/{run_id}"),
        format!("/v1/workflows/{}", uuid::Uuid::new_v4()),
        format!("/v1/workflows/{marker}"),
        format!("/v1/workflows/{marker}/lineage"),
        format!("/v1/workflows/{marker}/cancel"),
        format!("/v1/workflows/{run_id}/{marker}"),
        format!("/v1/{marker}"),
        format!("/health/{marker}"),
        format!("/metrics/{marker}"),
        format!("/{marker}"),
    ];
    let methods = ["GET", "POST", "DELETE", "BREW", "X-ODD"];
    for path in &paths {
        for m in methods {
            let m = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
            let req = api.client.request(m, path).header("x-probe", &marker);
            let a = api.send(req).await;
            assert!(a.status < 500, "{path}: {} {}", a.status, a.body);
        }
    }
    let text = metrics_text(&api).await;
    assert!(
        !text.contains(&marker),
        "a request's path became part of /metrics"
    );
    assert!(!text.contains(&run_id), "a run id became part of /metrics");
    let metric = "swf_http_request_duration_seconds_count";
    // Every series of the process (all tests' nodes) keeps to the sets.
    let (_, table) = singularity_workflow::api::table::v1_routes()
        .merge(singularity_workflow::api::table::node_routes())
        .split();
    let mut routes: BTreeSet<String> = table.templates().map(str::to_string).collect();
    routes.insert("unmatched".into());
    let seen = label_values(&text, metric, "route");
    assert!(seen.contains("unmatched") && seen.contains("/v1/workflows/{run_id}"));
    assert!(
        seen.is_subset(&routes),
        "route labels {seen:?} not all in {routes:?}"
    );
    let methods: BTreeSet<String> = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let seen = label_values(&text, metric, "method");
    assert!(seen.is_subset(&methods), "method labels {seen:?}");
    let classes: BTreeSet<String> = ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let seen = label_values(&text, metric, "status");
    assert!(seen.is_subset(&classes), "status labels {seen:?}");
}

#[tokio::test]
async fn scrapes_cost_no_query_and_the_gauges_still_move() {
    let db = fresh_db().await;
    let mut cfg = node_config("gauges-node", &db);
    cfg.enable_executor = false;
    cfg.api.anonymous_concurrency = 64;
    // A scrape that waited on the database would answer 504 after this.
    cfg.limits.request_timeout_ms = 5_000;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // A queue of this test's own: its depth gauge is set by this node only.
    let queue = format!("gauges_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let run_id = api
        .submit(&json!({"goal": "gauges", "steps": [
            {"id": "a", "handler": "noop", "queue": queue}]}))
        .await;
    let depth = |want: f64| {
        let (api, queue) = (api.clone(), queue.clone());
        move || {
            let (api, queue) = (api.clone(), queue.clone());
            async move {
                let text = metrics_text(&api).await;
                (gauge(&text, "swf_queue_depth", "queue", &queue) == Some(want)).then_some(())
            }
        }
    };
    wait_for(
        "the queue depth gauge to show the queued task",
        30,
        depth(1.0),
    )
    .await;

    // Lock what the gauges are read from: a scrape that queried any of it
    // would wait (and time out) instead of answering.
    let pool = sql(&db).await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE swf.runs, swf.nodes, pgmq.q_{queue} IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *lock)
    .await
    .unwrap();
    let scrapes = (0..40).map(|_| {
        let api = api.clone();
        async move { api.get("/metrics").await }
    });
    let answers = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(scrapes))
        .await
        .expect("40 scrapes answer while the gauges' tables are locked");
    for a in &answers {
        assert_eq!(a.status, 200, "a scrape waited on the database: {}", a.body);
        let text = a.body.as_str().unwrap_or("");
        assert_eq!(gauge(text, "swf_queue_depth", "queue", &queue), Some(1.0));
    }
    lock.commit().await.unwrap();
    pool.close().await;

    // The gauges follow the database: cancelling removes the queued task.
    let a = api
        .post(&format!("/v1/workflows/{run_id}/cancel"), &json!({}))
        .await;
    assert_eq!(a.status, 200, "cancel: {}", a.body);
    wait_for("the queue depth gauge to drop to 0", 30, depth(0.0)).await;

    // Memory: the process's resident set, and what the lineage cache holds
    // once reads put the run's document there (moka counts lazily).
    wait_for(
        "the cache bytes gauge to count a cached document",
        30,
        || {
            let (api, run_id) = (api.clone(), run_id.clone());
            async move {
                let a = api.get(&format!("/v1/workflows/{run_id}")).await;
                assert_eq!(a.status, 200, "{}", a.body);
                let text = metrics_text(&api).await;
                let held = gauge(&text, "swf_cache_bytes", "cache", "lineage-gauges-node")?;
                (held > 0.0).then_some(())
            }
        },
    )
    .await;
    let text = metrics_text(&api).await;
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("swf_process_rss_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("swf_process_rss_bytes in /metrics");
    assert!(rss > 1024.0 * 1024.0, "RSS {rss} bytes");
}

/// A node with auth on: `w-secret` may read and submit.
fn authenticated(id: &str, db: &str) -> Config {
    let mut cfg = node_config(id, db);
    cfg.enable_executor = false;
    cfg.auth.enabled = true;
    cfg.auth.tokens = vec![token("writer", "w-secret", &["read", "submit"])];
    cfg
}

#[tokio::test]
async fn anonymous_calls_past_their_limit_are_shed_and_v1_carries_on() {
    let db = fresh_db().await;
    let mut cfg = authenticated("anon-node", &db);
    cfg.api.anonymous_concurrency = 2;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let writer = singularity_workflow::api::client::ApiClient::builder(&node.url())
        .bearer(Some("w-secret"))
        .unwrap()
        .build();
    assert_eq!(api.get("/health/ready").await.status, 200);

    // Hold two readiness probes in flight: they wait on a lock of the
    // table they read, so they keep both anonymous permits.
    let pool = sql(&db).await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE public._sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.get("/health/ready").await.status })
        })
        .collect();
    let watch = sql(&db).await;
    wait_for("two readiness probes to wait on the lock", 30, || {
        let watch = watch.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE '%_sqlx_migrations%'",
            )
            .fetch_one(&watch)
            .await
            .ok()?;
            (n == 2).then_some(())
        }
    })
    .await;

    // Further anonymous calls are shed at once, whatever the path.
    for path in [
        "/health",
        "/health/ready",
        "/metrics",
        "/health/info",
        "/nowhere",
    ] {
        let a = api.get(path).await;
        assert_eq!(
            (a.status, a.code()),
            (503, "overloaded"),
            "{path}: {}",
            a.body
        );
        assert_eq!(a.header("retry-after"), Some("1"));
        let msg = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("api.anonymous_concurrency"), "{msg}");
    }
    // Authenticated /v1 traffic is not: writes and reads go on.
    let wf = json!({"goal": "while probes wait", "steps": [{"id": "a", "handler": "noop"}]});
    let a = api
        .send(
            writer
                .request(reqwest::Method::POST, "/v1/workflows")
                .json(&wf),
        )
        .await;
    assert_eq!(
        a.status, 201,
        "submit while anonymous calls are shed: {}",
        a.body
    );
    let run_id = a.body["run_id"].as_str().unwrap().to_string();
    let a = api
        .send(writer.request(reqwest::Method::GET, &format!("/v1/workflows/{run_id}")))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A /v1 call without a token is refused by auth, not shed.
    assert_eq!(api.get("/v1/workflows").await.status, 401);

    lock.commit().await.unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200, "a held probe finished");
    }
    assert_eq!(api.get("/health").await.status, 200, "permits came back");
    pool.close().await;
    watch.close().await;
}

/// Sends one request on `s`, reads its whole answer, then waits (up to a
/// deadline) for the server to close the connection.
async fn one_request_then_silence<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> bool {
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("{\"status\":\"ok\"}") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("the answer arrives")
            .expect("read the answer");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_over_http_and_https() {
    let db = fresh_db().await;
    let pki = pki();
    for tls in [false, true] {
        let mut cfg = node_config(&format!("idle-{tls}"), &db);
        cfg.enable_executor = false;
        cfg.api.idle_timeout_ms = 300;
        // Only the idle bound can close the connection within the test.
        cfg.api.header_read_timeout_ms = 600_000;
        if tls {
            cfg.api.tls_cert = Some(pki.cert.clone());
            cfg.api.tls_key = Some(pki.key.clone());
        }
        let node = start_node(cfg, Registry::with_builtins()).await;
        let url = node.url();
        let addr = url.split("://").nth(1).unwrap().to_string();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let closed = if tls {
            let pem = std::fs::read(&pki.ca_cert).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            one_request_then_silence(stream).await
        } else {
            one_request_then_silence(tcp).await
        };
        assert!(closed, "an idle keep-alive connection is closed ({url})");
        let mut node = node;
        node.shutdown().await;
    }
}

#[tokio::test]
async fn ready_names_an_unreachable_database_without_the_driver_text() {
    let db = fresh_db().await;
    let (replica, eu_db) = replica_of("ready-hides", &db).await;
    let (_, mut eu) = two_regions(&db, &eu_db);
    eu.enable_executor = false;
    let node = start_node(eu, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    assert_eq!(api.get("/health/ready").await.status, 200);
    let port = replica.port().to_string();
    // Stop the node's own database.
    drop(replica);
    let a = wait_for("readiness to turn 503", 60, || {
        let api = api.clone();
        async move {
            let a = api.get("/health/ready").await;
            (a.status == 503).then_some(a)
        }
    })
    .await;
    assert_eq!(a.body["status"], "not_ready", "{}", a.body);
    let reason = a.body["reason"].as_str().unwrap_or("").to_lowercase();
    assert!(
        reason.contains("local database is not reachable"),
        "the reason names the problem: {reason}"
    );
    let text = a.body.to_string().to_lowercase();
    for raw in [
        port.as_str(),
        "127.0.0.1",
        "os error",
        "refused",
        "pool timed out",
        "error communicating",
        "postgres",
        "sqlx",
    ] {
        assert!(!text.contains(raw), "raw database text `{raw}` in {text}");
    }
    node.kill().await;
}
