//! Multi-region routing on a real primary and real streaming replicas:
//! read sources, read-your-writes tokens, lag bounds, the cache, pinned
//! calls and region-pinned steps.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

fn get_with(api: &Api, path: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut r = api.http.get(format!("{}{path}", api.base));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r
}

async fn two_nodes(executors: bool) -> (String, Api, Api, Vec<singularity_workflow::node::Node>) {
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (mut us, mut eu) = two_regions(&db, &eu_db);
    if !executors {
        us.enable_executor = false;
        eu.enable_executor = false;
    }
    let us = start_node(us, Registry::with_builtins()).await;
    let eu = start_node(eu, Registry::with_builtins()).await;
    let (us_api, eu_api) = (Api::new(&us.url()), Api::new(&eu.url()));
    (db, us_api, eu_api, vec![us, eu])
}

/// GET `path` with a consistency token.
async fn read_with_token(api: &Api, path: &str, token: &str) -> Answer {
    api.send(get_with(api, path, &[("swf-consistency-token", token)]))
        .await
}

const ONE: &str = r#"{"goal": "g", "steps": [{"id": "a", "handler": "noop"}]}"#;

#[tokio::test]
async fn reads_follow_tokens_and_the_cache() {
    let (_db, us_api, eu_api, nodes) = two_nodes(true).await;
    let wf: Value = serde_json::from_str(ONE).unwrap();

    // A write through eu-west goes to the primary; the read with its token
    // is served in eu-west (never a trip to the primary when replication keeps up).
    let a = eu_api.post("/v1/workflows", &wf).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.header("swf-served-by"), Some("eu-west-1"));
    let token_a = a.body["consistency_token"].as_str().unwrap().to_string();
    let run_a = a.body["run_id"].as_str().unwrap().to_string();
    let r = read_with_token(&eu_api, &format!("/v1/workflows/{run_a}"), &token_a).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("swf-read-source"), Some("replica"));
    assert_eq!(r.header("swf-region"), Some("eu-west"));

    // Once terminal, the run is cached: a second read is a cache hit.
    us_api.wait_terminal(&run_a, 30).await;
    let doc = wait_for("eu-west to see the completion", 20, || {
        let api = eu_api.clone();
        let id = run_a.clone();
        async move {
            let d = api.status(&id).await;
            (d["status"] == "completed").then_some(d)
        }
    })
    .await;
    assert_eq!(doc["output"], json!({"a": null}));
    let hit = eu_api.get(&format!("/v1/workflows/{run_a}")).await;
    assert_eq!(hit.header("swf-read-source"), Some("cache"));
    assert_eq!(hit.body["status"], "completed");

    // A newer token (from another write) bypasses the cached entry; the
    // older token is still served by the cache.
    let b = eu_api.post("/v1/workflows", &wf).await;
    let token_b = b.body["consistency_token"].as_str().unwrap().to_string();
    let r = read_with_token(&eu_api, &format!("/v1/workflows/{run_a}"), &token_b).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("swf-read-source"), Some("cache"));
    let r = read_with_token(&eu_api, &format!("/v1/workflows/{run_a}"), &token_a).await;
    assert_eq!(r.header("swf-read-source"), Some("cache"));

    // Reads without a token go to the local replica; on the primary's node,
    // to the primary.
    let list = eu_api.get("/v1/workflows?limit=10").await;
    assert_eq!(list.header("swf-read-source"), Some("replica"));
    let list = us_api.get("/v1/workflows?limit=10").await;
    assert_eq!(list.header("swf-read-source"), Some("primary"));

    // /v1/regions and /health/info describe the topology.
    let regions = eu_api.get("/v1/regions").await.body;
    assert_eq!(regions["write_region"], "us-east");
    let roles: Vec<(String, String)> = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("us-east".into(), "primary".into()),
            ("eu-west".into(), "replica".into())
        ]
    );
    let info = eu_api.get("/health/info").await.body;
    assert_eq!(info["database"]["local"]["role"], "replica");
    assert_eq!(info["write_region"], "us-east");
    let metrics = eu_api.get("/metrics").await.body;
    let text = metrics.as_str().unwrap_or("");
    for name in [
        "swf_reads_total",
        "swf_cache_hits_total",
        "swf_replica_lag_ms",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test]
async fn token_reads_never_stale_while_replay_is_paused() {
    let db = fresh_db().await;
    let (mut replica, eu_db) = replica_of("paused", &db).await;
    let (_, mut eu) = two_regions(&db, &eu_db);
    eu.enable_executor = false; // keep runs as they are
    eu.routing.max_replica_lag_ms = 300;
    eu.routing.token_wait_ms = 200;
    let node = start_node(eu, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let wf: Value = serde_json::from_str(ONE).unwrap();

    let replica_sql = sql(&eu_db).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica_sql)
        .await
        .unwrap();
    let a = api.post("/v1/workflows", &wf).await;
    assert_eq!(a.status, 201);
    let token = a.body["consistency_token"].as_str().unwrap().to_string();
    let run = a.body["run_id"].as_str().unwrap().to_string();

    // The replica cannot show the write: the token read goes to the primary
    // (after the bounded wait) and finds it.
    let r = read_with_token(&api, &format!("/v1/workflows/{run}"), &token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("swf-read-source"), Some("primary"));
    assert_eq!(r.body["run_id"], run.as_str());
    let l = read_with_token(&api, &format!("/v1/workflows/{run}/lineage"), &token).await;
    assert_eq!(l.status, 200);
    assert_ne!(l.header("swf-read-source"), Some("replica"));

    // Without a token, reads go to the primary once the lag exceeds the bound.
    wait_for("the replica lag to exceed 300 ms", 30, || {
        let api = api.clone();
        async move {
            let info = api.get("/health/info").await.body;
            (info["database"]["local"]["lag_ms"].as_u64().unwrap_or(0) > 300).then_some(())
        }
    })
    .await;
    let list = api.get("/v1/workflows").await;
    assert_eq!(list.header("swf-read-source"), Some("primary"));
    assert_eq!(list.body["runs"][0]["run_id"], run.as_str());

    // Resume replay: the same token read is soon served by the replica.
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica_sql)
        .await
        .unwrap();
    wait_for("a replica read with the token", 30, || {
        let api = api.clone();
        let (run, token) = (run.clone(), token.clone());
        async move {
            let r = read_with_token(&api, &format!("/v1/workflows/{run}"), &token).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.body["run_id"],
                run.as_str(),
                "a token read must always find the run"
            );
            (r.header("swf-read-source") == Some("replica")).then_some(())
        }
    })
    .await;
    replica_sql.close().await;
    node.kill().await;
    replica.stop().unwrap();
}

#[tokio::test]
async fn pinned_calls_are_forwarded_once() {
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (mut us, mut eu) = two_regions(&db, &eu_db);
    // A third region with no node at all.
    let ap = singularity_workflow::config::RegionSpec {
        name: "ap-south".into(),
        database_url: eu_db.clone(),
        api_url: None,
    };
    us.regions.push(ap.clone());
    eu.regions.push(ap);
    let us = start_node(us, Registry::with_builtins()).await;
    let eu = start_node(eu, Registry::with_builtins()).await;
    let eu_api = Api::new(&eu.url());
    // The heartbeat of us-east must be visible from eu-west (it replicates).
    wait_for("us-east's heartbeat in eu-west", 30, || {
        let api = eu_api.clone();
        async move {
            let r = api.get("/v1/regions").await.body;
            let healthy = r["regions"][0]["nodes"][0]["healthy"] == true;
            healthy.then_some(())
        }
    })
    .await;

    // A pinned submit and read through eu-west are served by us-east.
    let wf: Value = serde_json::from_str(ONE).unwrap();
    let a = eu_api.post_in("us-east", "/v1/workflows", &wf).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("swf-region"), Some("us-east"));
    assert_eq!(a.header("swf-served-by"), Some("us-east-1"));
    assert!(a.header("swf-consistency-token").is_some());
    let run = a.body["run_id"].as_str().unwrap();
    let r = eu_api
        .get_in("us-east", &format!("/v1/workflows/{run}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("swf-region"), Some("us-east"));
    assert_eq!(r.header("swf-read-source"), Some("primary"));
    // Pinned to its own region: served locally.
    let r = eu_api
        .get_in("eu-west", &format!("/v1/workflows/{run}"))
        .await;
    assert_eq!(r.header("swf-served-by"), Some("eu-west-1"));

    // A call that was already forwarded is not forwarded again.
    // A call already forwarded is not forwarded again; an unknown region;
    // a region without a node. (headers, status, code)
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 3] = [
        (
            &[("swf-region", "us-east"), ("swf-forwarded-by", "somewhere")],
            508,
            "forwarding_loop",
        ),
        (&[("swf-region", "mars")], 400, "unknown_region"),
        (&[("swf-region", "ap-south")], 503, "region_unavailable"),
    ];
    for (headers, status, code) in cases {
        let r = eu_api
            .send(get_with(&eu_api, "/v1/workflows", headers))
            .await;
        assert_eq!((r.status, r.code()), (status, code), "{headers:?}");
    }
    us.kill().await;
    eu.kill().await;
}

#[tokio::test]
async fn region_pinned_steps_run_only_in_their_region() {
    let (_db, us_api, _eu_api, nodes) = two_nodes(true).await;
    let id = us_api
        .submit(&json!({"goal": "pinned", "steps": [
            {"id": "eu", "handler": "noop", "region": "eu-west"},
            {"id": "us", "handler": "noop", "region": "us-east", "depends_on": ["eu"]},
            {"id": "eu2", "handler": "echo", "region": "eu-west", "depends_on": ["us"]}]}))
        .await;
    let doc = us_api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let l = us_api.lineage(&id).await;
    for a in l["execution_trace"].as_array().unwrap() {
        let step = a["step_id"].as_str().unwrap();
        let want = if step == "us" { "us-east" } else { "eu-west" };
        assert_eq!(a["region"], want, "{a}");
        assert_eq!(a["node_id"], format!("{want}-1"));
    }
    assert_eq!(doc["steps"][0]["region"], "eu-west");
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test]
async fn edge_in_eu_west_and_worker_in_us_east_cooperate() {
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (mut us, mut eu) = two_regions(&db, &eu_db);
    us.enable_client = false; // worker
    eu.enable_executor = false; // edge
    eu.worker_pools.clear();
    let worker = start_node(us, Registry::with_builtins()).await;
    let edge = start_node(eu, Registry::with_builtins()).await;
    let api = Api::new(&edge.url());
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            api.submit(&json!({"goal": format!("e{i}"), "steps": [
                {"id": "a", "handler": "noop", "input": i},
                {"id": "b", "handler": "echo", "depends_on": ["a"]}]}))
                .await,
        );
    }
    for id in &ids {
        let doc = api.wait_terminal(id, 30).await;
        assert_eq!(doc["status"], "completed", "{doc}");
        let l = api.lineage(id).await;
        for a in l["execution_trace"].as_array().unwrap() {
            assert_eq!(a["node_id"], "us-east-1");
            assert_eq!(a["region"], "us-east");
        }
    }
    let w = Api::new(&worker.url());
    assert_eq!(w.get("/v1/workflows").await.code(), "client_role_disabled");
    worker.kill().await;
    edge.kill().await;
}

#[tokio::test]
async fn run_control_from_the_replica_region_goes_to_the_primary_with_tokens() {
    let (_db, _us_api, eu_api, nodes) = two_nodes(true).await;
    let wf = json!({"goal": "approve in eu", "steps": [
        {"id": "w", "wait_for": {"signal": "ok"}},
        {"id": "after", "handler": "echo", "depends_on": ["w"]}]});
    let a = eu_api.post("/v1/workflows", &wf).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let run = a.body["run_id"].as_str().unwrap().to_string();
    // Pause and resume, then the signal, all through eu-west: each a write
    // answered with a token that eu-west's reads honour.
    for (path, status) in [("pause", "paused"), ("resume", "running")] {
        let r = eu_api
            .post(&format!("/v1/workflows/{run}/{path}"), &json!({}))
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("swf-served-by"), Some("eu-west-1"));
        let token = r.body["consistency_token"].as_str().unwrap().to_string();
        let doc = read_with_token(&eu_api, &format!("/v1/workflows/{run}"), &token).await;
        assert_eq!(doc.body["status"], status, "{}", doc.body);
    }
    let s = eu_api
        .post(
            &format!("/v1/workflows/{run}/signals/ok"),
            &json!({"payload": {"from": "eu"}}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let token = s.body["consistency_token"].as_str().unwrap().to_string();
    let doc = read_with_token(&eu_api, &format!("/v1/workflows/{run}"), &token).await;
    assert_eq!(doc.status, 200, "{}", doc.body);
    assert_eq!(doc.body["steps"][0]["status"], "completed", "{}", doc.body);
    assert_eq!(doc.body["steps"][0]["output"], json!({"from": "eu"}));
    let done = eu_api.wait_terminal(&run, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    for n in nodes {
        n.kill().await;
    }
}
