//! Failover drills on real clusters: a primary and a streaming replica in
//! two regions (each test starts its own, as `swf dev` does), driven over
//! the real HTTP API.

use serde_json::{json, Value};
use singularity_workflow::dev::{DevCluster, DevOptions};
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::router::{RegionDb, Router};
use singularity_workflow::store::{Store, StoreError};

use crate::harness::*;

fn options() -> DevOptions {
    let dir = std::env::temp_dir().join(format!("swf-drill-{}", uuid::Uuid::new_v4().simple()));
    DevOptions {
        data_dir: dir,
        regions: vec!["us-east".into(), "eu-west".into()],
        base_port: 0,
        wan_latency_ms: 2,
        fresh: true,
        tls: false,
        pool_size: None,
        ha: None,
    }
}

async fn cluster() -> (DevCluster, Api, Api) {
    start(&options()).await
}

/// An edge node (no executor) of `c` on its first region's database, knowing
/// every region.
fn edge_config(c: &DevCluster, id: &str) -> singularity_workflow::config::Config {
    let mut cfg = node_config(id, &c.cluster.regions[0].database_url);
    cfg.enable_executor = false;
    cfg.worker_pools.clear();
    cfg.regions = c
        .cluster
        .regions
        .iter()
        .map(|r| singularity_workflow::config::RegionSpec {
            name: r.name.clone(),
            database_url: r.database_url.clone(),
            api_url: None,
        })
        .collect();
    cfg
}

async fn start(opts: &DevOptions) -> (DevCluster, Api, Api) {
    let c = DevCluster::start(opts, Registry::with_builtins())
        .await
        .expect("start a two-region cluster");
    let us = Api::new(&c.cluster.regions[0].api_url);
    let eu = Api::new(&c.cluster.regions[1].api_url);
    (c, us, eu)
}

async fn drill(api: &Api, kind: &str, to: &str, load: f64) -> Answer {
    post_drill(api, json!({"kind": kind, "to": to, "load": load})).await
}

/// `POST /v1/admin/drills` with `body`, waiting up to 120 s for the report.
async fn post_drill(api: &Api, body: Value) -> Answer {
    api.send(
        api.http
            .post(format!("{}/v1/admin/drills", api.base))
            .timeout(std::time::Duration::from_secs(120))
            .json(&body),
    )
    .await
}

/// Stops the cluster and removes its data dir.
async fn finish(c: DevCluster) {
    let dir = c.cluster_path.parent().map(|p| p.to_path_buf());
    c.stop().await;
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn check_report(r: &Value, kind: &str, from: &str, to: &str) {
    assert_eq!(r["kind"], kind);
    assert_eq!(r["from_region"], from);
    assert_eq!(r["to_region"], to);
    assert_eq!(
        r["epoch_after"].as_u64().unwrap(),
        r["epoch_before"].as_u64().unwrap() + 1
    );
    assert_eq!(r["duplicate_writes"], 0, "{r}");
    assert_eq!(r["stale_reads"], 0, "{r}");
    assert_eq!(r["old_primary_fenced"], true, "{r}");
    assert_eq!(r["nodes_rerouted"], r["nodes_total"], "{r}");
    for key in [
        "detection_ms",
        "rto_ms",
        "acknowledged_writes",
        "lost_writes",
        "phases",
    ] {
        assert!(!r[key].is_null(), "report lacks {key}");
    }
}

#[tokio::test]
async fn switchover_under_load_loses_nothing_and_moves_back() {
    let opts = options();
    let (c, us, eu) = start(&opts).await;
    // Work in flight across the switch: a chain of short sleeps.
    let inflight = us
        .submit(&json!({"goal": "across", "steps": [
            {"id": "a", "handler": "sleep", "input": {"ms": 300}},
            {"id": "b", "handler": "sleep", "input": {"ms": 300}, "depends_on": ["a"]},
            {"id": "c", "handler": "sleep", "input": {"ms": 300}, "depends_on": ["b"]}]}))
        .await;

    let r = drill(&us, "switchover", "eu-west", 50.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    check_report(&r.body, "switchover", "us-east", "eu-west");
    assert_eq!(r.body["lost_writes"], 0, "{}", r.body);
    assert!(
        r.body["acknowledged_writes"].as_u64().unwrap() > 20,
        "{}",
        r.body
    );
    assert_eq!(r.body["ok"], true, "{}", r.body);

    // The topology moved: eu-west writes, us-east is its replica.
    let regions = us.get("/v1/regions").await.body;
    assert_eq!(regions["write_region"], "eu-west");
    assert_eq!(regions["epoch"], 2);
    let roles: Vec<&str> = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["replica", "primary"]);
    // Executors resumed: the in-flight run and new runs submitted to either
    // node complete, and tokens are honoured on both.
    assert_eq!(us.wait_terminal(&inflight, 60).await["status"], "completed");
    for api in [&us, &eu] {
        let a = api
            .post(
                "/v1/workflows",
                &json!({"goal": "after", "steps": [{"id": "a", "handler": "noop"}]}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        let token = a.body["consistency_token"].as_str().unwrap();
        assert!(token.starts_with("2-"), "{token}");
        let id = a.body["run_id"].as_str().unwrap();
        let read = api
            .send(
                api.http
                    .get(format!("{}/v1/workflows/{id}", api.base))
                    .header("swf-consistency-token", token),
            )
            .await;
        assert_eq!(read.status, 200);
        assert_eq!(api.wait_terminal(id, 30).await["status"], "completed");
    }

    // A restart of the dev cluster keeps the promoted region as primary.
    c.stop().await;
    let (c, us, eu) = start(&opts).await;
    assert_eq!(c.cluster.write_region, "eu-west");
    assert_eq!(us.get("/v1/regions").await.body["write_region"], "eu-west");

    // And back again, driven from the other node.
    let r = drill(&eu, "switchover", "us-east", 50.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    check_report(&r.body, "switchover", "eu-west", "us-east");
    assert_eq!(r.body["lost_writes"], 0);
    assert_eq!(r.body["ok"], true, "{}", r.body);
    assert_eq!(eu.get("/v1/regions").await.body["write_region"], "us-east");
    finish(c).await;
}

#[tokio::test]
async fn failover_reports_lost_writes_exactly() {
    let (c, us, _eu) = cluster().await;
    let r = drill(&us, "failover", "eu-west", 100.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    check_report(&r.body, "failover", "us-east", "eu-west");
    // Every acknowledged write is either present on the new primary or in
    // the lost list, which names exactly the missing ones.
    let new_primary = sql(&c.cluster.regions[1].database_url).await;
    let lost: Vec<uuid::Uuid> = r.body["lost_run_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lost.len() as u64, r.body["lost_writes"].as_u64().unwrap());
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.runs WHERE run_id = ANY($1)")
        .bind(&lost)
        .fetch_one(&new_primary)
        .await
        .unwrap();
    assert_eq!(found, 0, "a run reported lost is present");
    let drill_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM swf.runs WHERE goal LIKE 'drill-%'")
            .fetch_one(&new_primary)
            .await
            .unwrap();
    let acked = r.body["acknowledged_writes"].as_i64().unwrap();
    assert!(
        drill_runs >= acked - lost.len() as i64,
        "{drill_runs} runs for {acked} acks"
    );
    assert_eq!(us.get("/v1/regions").await.body["write_region"], "eu-west");
    new_primary.close().await;
    finish(c).await;
}

#[tokio::test]
async fn drills_are_refused_with_a_clear_error() {
    let (c, us, _eu) = cluster().await;
    let r = drill(&us, "switchover", "mars", 0.0).await;
    assert_eq!((r.status, r.code()), (400, "unknown_region"));
    let r = drill(&us, "switchover", "us-east", 0.0).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already the write region"));
    let r = us
        .send(
            us.http
                .post(format!("{}/v1/admin/drills", us.base))
                .json(&json!({"kind": "sideways", "to": "eu-west"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    // A target that lags beyond the bound: pause its replay, write, drill.
    let replica = sql(&c.cluster.regions[1].database_url).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica)
        .await
        .unwrap();
    us.submit(&json!({"goal": "lag", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    let r = us
        .send(
            us.http
                .post(format!("{}/v1/admin/drills", us.base))
                .json(&json!({"kind": "switchover", "to": "eu-west", "max_lag_ms": 200})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"), "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("lags"));
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .unwrap();
    // Nothing moved.
    assert_eq!(us.get("/v1/regions").await.body["write_region"], "us-east");
    replica.close().await;
    finish(c).await;
}

#[tokio::test]
async fn a_resurrected_old_primary_is_never_written_to() {
    // Two writable databases, as after a failover whose old primary came
    // back: epochs 1 (old) and 2 (new).
    let old_db = fresh_db().await;
    let new_db = fresh_db().await;
    let new_sql = sql(&new_db).await;
    sqlx::query("UPDATE swf.cluster_state SET epoch = 2")
        .execute(&new_sql)
        .await
        .unwrap();
    let regions = vec![
        RegionDb {
            name: "us-east".into(),
            store: Store::connect_lazy(&old_db, 2).unwrap(),
            api_url: None,
        },
        RegionDb {
            name: "eu-west".into(),
            store: Store::connect_lazy(&new_db, 2).unwrap(),
            api_url: None,
        },
    ];
    let old = regions[0].store.clone();
    let router = Router::new(
        "us-east",
        old.clone(),
        regions,
        Default::default(),
        "fence-test",
        old.token_key().await.unwrap(),
    );
    router.discover_primary().await.unwrap();
    assert_eq!(router.write_region(), "eu-west");
    assert_eq!(router.epoch(), 2);
    // A write through the router lands on the new primary...
    let (_, token) = router
        .write(std::time::Duration::from_secs(2), |s, e| async move {
            s.cancel_run(uuid::Uuid::nil(), e).await
        })
        .await
        .unwrap();
    assert_eq!(token.epoch, 2);
    // ...and the old primary refuses any write carrying the epoch the node has seen.
    let err = old
        .cancel_run(uuid::Uuid::nil(), router.epoch())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch(_)), "{err}");
    // A node that has seen epoch 3 accepts no primary of an older epoch.
    router.observe_epoch(3);
    assert!(router.discover_primary().await.is_err());
    new_sql.close().await;
}

#[tokio::test]
async fn switchover_can_be_delegated_to_hook_commands() {
    let (c, us, _eu) = cluster().await;
    let port = |i: usize| -> u16 {
        c.cluster.regions[i]
            .database_url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (us_port, eu_port) = (port(0), port(1));
    let psql = |p: u16, sql: &str| {
        format!("psql -h 127.0.0.1 -p {p} -U postgres -d postgres -v ON_ERROR_STOP=1 -qc \"{sql}\"")
    };
    let log_path =
        std::env::temp_dir().join(format!("swf-hooks-{}", uuid::Uuid::new_v4().simple()));
    let log = log_path.display().to_string();
    // An edge node whose drills call out to commands, as with an HA manager.
    let regions = vec![
        singularity_workflow::config::RegionSpec {
            name: "us-east".into(),
            database_url: c.cluster.regions[0].database_url.clone(),
            api_url: None,
        },
        singularity_workflow::config::RegionSpec {
            name: "eu-west".into(),
            database_url: c.cluster.regions[1].database_url.clone(),
            api_url: None,
        },
    ];
    let mut cfg = node_config("hooks-1", &c.cluster.regions[0].database_url);
    cfg.enable_executor = false;
    cfg.worker_pools.clear();
    cfg.regions = regions;
    cfg.drills.fence_command = Some(format!(
        "echo fence $SWF_DRILL_REGION >> {log} && {} && {}",
        psql(
            us_port,
            "ALTER SYSTEM SET default_transaction_read_only = on"
        ),
        psql(us_port, "SELECT pg_reload_conf()")
    ));
    cfg.drills.promote_command = Some(format!(
        "echo promote $SWF_DRILL_REGION $SWF_DRILL_FROM $SWF_DRILL_TO >> {log} && {}",
        psql(eu_port, "SELECT pg_promote()")
    ));
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let r = drill(&api, "switchover", "eu-west", 0.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["epoch_after"], 2, "{}", r.body);
    assert_eq!(r.body["old_primary_fenced"], true);
    let ran = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(ran, "fence us-east\npromote eu-west us-east eu-west\n");
    // The other nodes follow on their own (the hook fenced without ending
    // their sessions, so they notice at their next write).
    wait_for("us-east's node to follow the new primary", 30, || {
        let us = us.clone();
        async move {
            let r = us.get("/v1/regions").await.body;
            (r["write_region"] == "eu-west").then_some(())
        }
    })
    .await;
    // A failing hook is an error that shows the command's own words.
    let failing =
        singularity_workflow::drill::HookControl::new(singularity_workflow::config::DrillHooks {
            kill_command: Some("echo 'no such cluster' >&2; exit 3".into()),
            ..Default::default()
        });
    use singularity_workflow::drill::ClusterControl;
    let err = failing.kill("us-east").await.unwrap_err().to_string();
    assert!(
        err.contains("kill_command") && err.contains("no such cluster"),
        "{err}"
    );
    let none = singularity_workflow::drill::HookControl::new(Default::default());
    assert!(none
        .kill("us-east")
        .await
        .unwrap_err()
        .to_string()
        .contains("no drills.kill_command"));
    node.kill().await;
    let _ = std::fs::remove_file(&log_path);
    finish(c).await;
}

/// `POST /v1/admin/drills/recover` on `api`.
async fn recover(api: &Api) -> Answer {
    api.send(
        api.http
            .post(format!("{}/v1/admin/drills/recover", api.base))
            .timeout(std::time::Duration::from_secs(300)),
    )
    .await
}

#[tokio::test]
async fn two_drills_at_once_one_runs_and_the_other_is_refused_and_the_journal_lists_them() {
    let (c, us, eu) = cluster().await;
    // Started on both nodes at once: exactly one runs, the other answers
    // 409 drill_in_progress (never a 500), whichever claims first.
    let (a, b) = tokio::join!(
        drill(&us, "switchover", "eu-west", 5.0),
        drill(&eu, "switchover", "eu-west", 5.0)
    );
    let mut answers = [
        (a.status, a.code().to_string()),
        (b.status, b.code().to_string()),
    ];
    answers.sort();
    assert_eq!(
        answers,
        [(200, String::new()), (409, "drill_in_progress".to_string())],
        "{} / {}",
        a.body,
        b.body
    );
    let first = if a.status == 200 { &a.body } else { &b.body };
    assert_eq!(first["old_primary"], "replica", "{first}");
    assert_eq!(first["old_primary_fenced"], true);
    // And back: the journal holds both, newest first; the refused one
    // left no row.
    let back = drill(&eu, "switchover", "us-east", 0.0).await;
    assert_eq!(back.status, 200, "{}", back.body);
    let list = us.get("/v1/admin/drills").await;
    assert_eq!(list.status, 200);
    let drills = list.body["drills"].as_array().unwrap().clone();
    let summary: Vec<(&str, &str, &str, &str)> = drills
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["from_region"].as_str().unwrap(),
                d["to_region"].as_str().unwrap(),
                d["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("switchover", "eu-west", "us-east", "ok"),
            ("switchover", "us-east", "eu-west", "ok")
        ]
    );
    assert!(drills[0]["started_at"].as_str() > drills[1]["started_at"].as_str());
    assert_eq!(drills[1]["report"]["to_region"], "eu-west");
    assert!(drills[0]["finished_at"].is_string());
    // One drill: the same object; unknown 404; not an id 400.
    let id = drills[0]["id"].as_str().unwrap();
    let one = eu.get(&format!("/v1/admin/drills/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, drills[0]);
    let unknown = us
        .get(&format!("/v1/admin/drills/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let bad = us.get("/v1/admin/drills/not-an-id").await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_request"));
    finish(c).await;
}

#[tokio::test]
async fn recover_on_a_healthy_cluster_changes_nothing() {
    let (c, us, _eu) = cluster().await;
    let cluster_json = std::fs::read_to_string(&c.cluster_path).unwrap();
    let r = recover(&us).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["changed"], false, "{}", r.body);
    assert_eq!(r.body["actions"], json!([]));
    assert_eq!(r.body["drills"], json!([]));
    assert_eq!(r.body["write_region"], "us-east");
    assert_eq!(r.body["epoch"], 1);
    let found: Vec<(&str, &str)> = r.body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["region"].as_str().unwrap(), f["found"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [("us-east", "writable"), ("eu-west", "replica")]);
    assert_eq!(
        std::fs::read_to_string(&c.cluster_path).unwrap(),
        cluster_json
    );
    let regions = us.get("/v1/regions").await.body;
    assert_eq!(
        (regions["write_region"].as_str(), regions["epoch"].as_u64()),
        (Some("us-east"), Some(1))
    );
    assert_eq!(us.get("/v1/admin/drills").await.body["drills"], json!([]));
    finish(c).await;
}

#[tokio::test]
async fn a_drill_while_another_holds_the_primary_fenced_is_refused_and_recover_unfences() {
    let (c, us, eu) = cluster().await;
    // What a drill killed between fence and promotion leaves: its running
    // row, and the primary fenced.
    let old = sql(&c.cluster.regions[0].database_url).await;
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO swf.drills (id, kind, from_region, to_region, node_id, node_url, phase,
                                 epoch_before)
         VALUES ($1, 'switchover', 'us-east', 'eu-west', 'gone-1', 'http://127.0.0.1:9', 'fence', 1)",
    )
    .bind(id)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query("ALTER SYSTEM SET default_transaction_read_only = on")
        .execute(&old)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&old)
        .await
        .unwrap();
    old.close().await;
    for api in [&us, &eu] {
        let r = drill(api, "switchover", "eu-west", 0.0).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "drill_in_progress"),
            "{}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&id.to_string()),
            "{}",
            r.body
        );
    }
    // Its node is gone: recover unfences the old primary (the target is
    // still a replica) and marks the drill recovered.
    let r = recover(&eu).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["write_region"], "us-east", "{}", r.body);
    assert_eq!(r.body["drills"], json!([id.to_string()]));
    let actions = r.body["actions"].as_array().unwrap();
    assert!(
        actions[0]
            .as_str()
            .unwrap()
            .contains("unfenced region `us-east`"),
        "{}",
        r.body
    );
    let d = us.get(&format!("/v1/admin/drills/{id}")).await.body;
    assert_eq!(
        (d["state"].as_str(), d["active"].as_bool()),
        (Some("recovered"), Some(false))
    );
    for api in [&us, &eu] {
        wait_for("a submit to succeed", 30, || {
            let api = api.clone();
            async move {
                let a = api
                    .post(
                        "/v1/workflows",
                        &json!({"goal": "after", "steps": [{"id": "a", "handler": "noop"}]}),
                    )
                    .await;
                (a.status == 201).then_some(())
            }
        })
        .await;
    }
    // Nothing left to recover: a drill runs again.
    let r = drill(&us, "switchover", "eu-west", 0.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    finish(c).await;
}

#[tokio::test]
async fn an_old_primary_that_does_not_answer_is_reported_unreachable_not_fenced() {
    let (c, _us, _eu) = cluster().await;
    let eu_port: u16 = c.cluster.regions[1]
        .database_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let pid_file = c
        .cluster_path
        .parent()
        .unwrap()
        .join("pg/us-east/postmaster.pid");
    // An edge node whose fence hook stops the old primary's server outright.
    let mut cfg = edge_config(&c, "stopper-1");
    cfg.drills.fence_command = Some(format!(
        "kill -INT $(head -1 {}); while [ -f {} ]; do sleep 0.05; done",
        pid_file.display(),
        pid_file.display()
    ));
    cfg.drills.promote_command = Some(format!(
        "psql -h 127.0.0.1 -p {eu_port} -U postgres -d postgres -qc 'SELECT pg_promote()'"
    ));
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let r = drill(&api, "switchover", "eu-west", 0.0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["old_primary"], "unreachable", "{}", r.body);
    assert_eq!(r.body["old_primary_fenced"], false, "{}", r.body);
    assert_eq!(r.body["ok"], false, "{}", r.body);
    // The journal keeps the drill as failed, on the new primary.
    let list = api.get("/v1/admin/drills").await.body;
    assert_eq!(list["drills"][0]["state"], "failed", "{list}");
    assert_eq!(list["drills"][0]["report"]["old_primary"], "unreachable");
    node.kill().await;
    finish(c).await;
}

#[tokio::test]
async fn the_write_probe_tells_why_a_write_is_refused() {
    use singularity_workflow::store::WriteProbe;
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 2).unwrap();
    assert_eq!(store.write_probe(1).await.unwrap(), WriteProbe::Writable);
    // A database of an older epoch than the one the caller has seen.
    assert_eq!(store.write_probe(2).await.unwrap(), WriteProbe::StaleEpoch);
    // The probe changed nothing.
    assert_eq!(store.role().await.unwrap(), (1, false));
    // A replica.
    let replica_db = replica_url(&db);
    wait_db(&replica_db).await;
    let replica = Store::connect_lazy(&replica_db, 1).unwrap();
    assert_eq!(
        replica.write_probe(1).await.unwrap(),
        WriteProbe::InRecovery
    );
    // Nothing listening: an error, never a refusal.
    let nowhere = Store::connect_lazy("postgres://postgres@127.0.0.1:9/none", 1).unwrap();
    assert!(matches!(
        nowhere.write_probe(1).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_failed_drill_unfences_the_old_primary_only_while_the_target_is_a_replica() {
    let (c, _us, _eu) = cluster().await;
    let (us_db, eu_db) = (
        c.cluster.regions[0].database_url.clone(),
        c.cluster.regions[1].database_url.clone(),
    );
    let eu_port: u16 = eu_db
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    // Edge nodes that fence with SQL and promote through a hook that fails:
    // before promoting, and after.
    let hook_node = |id: &str, promote: String| {
        let mut cfg = edge_config(&c, id);
        cfg.drills.promote_command = Some(promote);
        start_node(cfg, Registry::with_builtins())
    };
    let psql_promote =
        format!("psql -h 127.0.0.1 -p {eu_port} -U postgres -d postgres -qc 'SELECT pg_promote()'");
    let before = hook_node("before-1", "echo refused >&2; exit 3".into()).await;
    let after = hook_node("after-1", format!("{psql_promote} && exit 3")).await;
    let (before_api, after_api) = (Api::new(&before.url()), Api::new(&after.url()));

    // The promotion never happened: the target is verified a replica, so
    // the old primary is unfenced and takes writes again.
    let r = drill(&before_api, "switchover", "eu-west", 0.0).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("refused") && msg.contains("is unfenced"),
        "{msg}"
    );
    assert!(accepts_writes(&us_db).await);
    assert!(!accepts_writes(&eu_db).await);
    let list = before_api.get("/v1/admin/drills").await.body;
    assert_eq!(list["drills"][0]["state"], "failed", "{list}");

    // The hook promoted the target, then failed: the old primary stays
    // fenced (never two writable primaries) and recover is asked for.
    let r = drill(&after_api, "switchover", "eu-west", 0.0).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("stays fenced") && msg.contains("swf drill recover"),
        "{msg}"
    );
    assert!(!accepts_writes(&us_db).await);
    assert!(accepts_writes(&eu_db).await);
    // Recover finishes forward; rebuilding the old primary is left to the
    // operator (no rejoin command).
    let r = recover(&after_api).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["write_region"].as_str(), r.body["epoch"].as_u64()),
        (Some("eu-west"), Some(2)),
        "{}",
        r.body
    );
    assert!(
        r.body["operator"][0]
            .as_str()
            .unwrap()
            .contains("region `us-east`'s database is a fenced primary"),
        "{}",
        r.body
    );
    assert!(!accepts_writes(&us_db).await);
    assert!(accepts_writes(&eu_db).await);
    let list = after_api.get("/v1/admin/drills").await.body;
    let states: Vec<&str> = list["drills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["recovered", "failed"], "{list}");
    before.kill().await;
    after.kill().await;
    finish(c).await;
}

/// A partition report that passed: nothing lost, duplicated or read stale,
/// every node agrees on the primary, and the load felt the cut.
fn check_partition(r: &Value, region: &str) {
    assert_eq!(r["kind"], "partition", "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["from_region"], "us-east", "{r}");
    assert_eq!(r["to_region"], region, "{r}");
    assert_eq!(r["epoch_after"], r["epoch_before"], "{r}");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["duplicate_writes"], 0, "{r}");
    assert_eq!(r["stale_reads"], 0, "{r}");
    assert_eq!(r["nodes_rerouted"], r["nodes_total"], "{r}");
    let p = &r["partition"];
    assert_eq!(p["region"], region, "{r}");
    assert_eq!(p["secs"], 3, "{r}");
    assert_eq!(p["stale_token_reads"], 0, "{r}");
    assert_eq!(p["writes_refused"], r["failed_writes"], "{r}");
    // Both databases, both APIs and replication cross the cut.
    assert!(p["links_cut"].as_u64().unwrap() >= 5, "{r}");
    assert!(r["acknowledged_writes"].as_u64().unwrap() > 20, "{r}");
    // The load felt it: the node across the cut refused writes, or held
    // them (retrying) until the links healed.
    let slowest = r["slowest_writes"][0]["ms"].as_u64().unwrap_or(0);
    assert!(
        r["failed_writes"].as_u64().unwrap() > 0 || slowest >= 1_000,
        "no write noticed the partition: {r}"
    );
    let names: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for phase in [
        "cut links",
        "partitioned",
        "heal links",
        "converge",
        "verify",
    ] {
        assert!(names.contains(&phase), "no phase `{phase}`: {r}");
    }
}

#[tokio::test]
async fn a_partition_of_either_region_loses_nothing_and_serves_no_stale_token_read() {
    let (c, us, eu) = cluster().await;
    for (body, code) in [
        (
            json!({"kind": "partition", "region": "mars", "secs": 3}),
            "unknown_region",
        ),
        (
            json!({"kind": "partition", "region": "eu-west", "secs": 0}),
            "invalid_state",
        ),
        (json!({"kind": "partition", "secs": 3}), "invalid_state"),
    ] {
        let r = post_drill(&us, body.clone()).await;
        assert_eq!(r.code(), code, "{body}: {}", r.body);
    }
    // The replica's region, then the primary's, each cut for 3 s under
    // load; driven from either side.
    for (api, region) in [(&us, "eu-west"), (&eu, "us-east")] {
        let r = post_drill(
            api,
            json!({"kind": "partition", "region": region, "secs": 3, "load": 30}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        check_partition(&r.body, region);
    }
    // Healed: a write through each node is taken and completes.
    for api in [&us, &eu] {
        let a = api
            .post(
                "/v1/workflows",
                &json!({"goal": "healed", "steps": [{"id": "a", "handler": "noop"}]}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        let id = a.body["run_id"].as_str().unwrap();
        assert_eq!(api.wait_terminal(id, 30).await["status"], "completed");
    }
    let journal = us.get("/v1/admin/drills").await.body;
    let kinds: Vec<&str> = journal["drills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["partition", "partition"], "{journal}");
    // A node that does not run the links (outside `swf dev`) refuses, and
    // cuts nothing.
    let mut node = start_node(edge_config(&c, "edge-1"), Registry::with_builtins()).await;
    let edge = Api::new(&node.url());
    let r = post_drill(
        &edge,
        json!({"kind": "partition", "region": "eu-west", "secs": 3}),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"), "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("swf dev"),
        "{}",
        r.body
    );
    assert_eq!(eu.get("/v1/regions").await.body["write_region"], "us-east");
    node.shutdown().await;
    finish(c).await;
}

/// `swf dev --ha patroni`: a real Patroni per region over a real etcd.
/// Drills go through Patroni (a switchover through its REST API, a failover
/// by killing the leader's Patroni and postmaster), and a promotion this
/// product did not ask for still starts a new epoch (Patroni's callback).
#[tokio::test]
async fn drills_go_through_patroni_and_its_own_promotions_move_the_epoch() {
    // Patroni's callback runs the swf binary, not this test binary.
    std::env::set_var("SWF_EXE", env!("CARGO_BIN_EXE_swf"));
    if std::env::var_os("TEST_LOG_PATRONI").is_some() {
        singularity_workflow::telemetry::init_logging(
            singularity_workflow::telemetry::LogFormat::Text,
        );
    }
    // Bounded, so that a stuck step fails the test instead of the run.
    tokio::time::timeout(std::time::Duration::from_secs(400), patroni_drills())
        .await
        .expect("the Patroni drills finished within 400 s");
}

/// A passing drill of `kind` from `from` to `to` that Patroni carried out,
/// its old primary back as a replica.
fn check_patroni_report(r: &Answer, kind: &str, from: &str, to: &str) {
    assert_eq!(r.status, 200, "{}", r.body);
    check_report(&r.body, kind, from, to);
    assert_eq!(r.body["manager"], "patroni", "{}", r.body);
    assert_eq!(r.body["old_primary"], "replica", "{}", r.body);
    assert_eq!(r.body["ok"], true, "{}", r.body);
}

async fn patroni_drills() {
    use singularity_workflow::drill::ClusterControl;
    let opts = DevOptions {
        ha: Some(singularity_workflow::dev::HaManager::Patroni),
        ..options()
    };
    let (c, us, eu) = start(&opts).await;
    assert_eq!(c.cluster.write_region, "us-east");

    let r = drill(&us, "switchover", "eu-west", 30.0).await;
    check_patroni_report(&r, "switchover", "us-east", "eu-west");
    assert_eq!(r.body["lost_writes"], 0, "{}", r.body);
    assert_eq!(us.get("/v1/regions").await.body["write_region"], "eu-west");

    let r = drill(&eu, "failover", "us-east", 30.0).await;
    check_patroni_report(&r, "failover", "eu-west", "us-east");

    // The leader lost without a drill: Patroni elects eu-west, and its
    // callback starts epoch 4 naming it.
    c.control
        .kill("us-east")
        .await
        .expect("kill us-east's Patroni");
    let eu_db = Store::connect_lazy(&c.cluster.regions[1].database_url, 1).unwrap();
    let moved = singularity_workflow::wait::until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(100),
        || async {
            match eu_db.epoch_region().await {
                Ok((4, Some(r))) if r == "eu-west" => Some(()),
                _ => None,
            }
        },
    )
    .await;
    assert!(moved.is_ok(), "{:?}", eu_db.epoch_region().await);
    // Writes through the surviving node land at the new epoch.
    let last = std::sync::Mutex::new(Value::Null);
    let token = singularity_workflow::wait::until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(200),
        || async {
            let a = eu
                .post(
                    "/v1/workflows",
                    &json!({"goal": "after", "steps": [{"id": "a", "handler": "noop"}]}),
                )
                .await;
            *last.lock().unwrap() = json!({"status": a.status, "body": a.body});
            (a.status == 201).then(|| a.body["consistency_token"].as_str().unwrap().to_string())
        },
    )
    .await;
    let Ok(token) = token else {
        let regions = eu.get("/v1/regions").await.body;
        let last = last.lock().unwrap().clone();
        panic!("no write through eu-west within 60 s of Patroni's own failover; last answer {last}; regions {regions}");
    };
    assert!(token.starts_with("4-"), "{token}");
    c.control
        .rejoin("us-east", "eu-west")
        .await
        .expect("us-east rejoins");
    eu_db.close().await;
    configured_patroni_drills(&c).await;
    finish(c).await;
}

/// A node outside `swf dev` with `drills.manager = "patroni"` drills
/// through the same Patroni by its REST API (eu-west leads at the start):
/// a switchover, then a failover that stops the leader hard with the
/// node's `kill_command`, while the test plays the host's service manager
/// and starts the killed Patroni again once the target leads.
async fn configured_patroni_drills(c: &DevCluster) {
    use singularity_workflow::config::{DrillManager, PatroniMember};
    let p = c.control.patroni().expect("a Patroni cluster");
    let urls = p.rest_urls();
    let mut cfg = edge_config(c, "patroni-1");
    cfg.drills.manager = DrillManager::Patroni;
    cfg.drills.patroni = urls
        .iter()
        .map(|(r, url)| {
            let m = PatroniMember {
                url: url.clone(),
                member: r.clone(),
            };
            (r.clone(), m)
        })
        .collect();
    cfg.drills.kill_command = Some(p.hard_stop_command());

    let mut node = start_node(cfg.clone(), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    assert_eq!(api.get("/v1/regions").await.body["write_region"], "eu-west");

    let r = drill(&api, "switchover", "us-east", 20.0).await;
    check_patroni_report(&r, "switchover", "eu-west", "us-east");
    assert_eq!(r.body["lost_writes"], 0, "{}", r.body);
    assert_eq!(r.body["epoch_after"], 5, "{}", r.body);

    // The service manager: once eu-west leads, us-east's killed Patroni is
    // started again (before that it could race the election).
    let service_manager = async {
        singularity_workflow::wait::until(
            std::time::Duration::from_secs(120),
            std::time::Duration::from_millis(200),
            || async {
                let leads = api
                    .http
                    .get(format!("{}/primary", urls["eu-west"]))
                    .send()
                    .await
                    .is_ok_and(|a| a.status().is_success());
                (leads && p.restart_exited("us-east").ok()?).then_some(())
            },
        )
        .await
    };
    let (r, restarted) = tokio::join!(drill(&api, "failover", "eu-west", 20.0), service_manager);
    assert!(restarted.is_ok(), "us-east's Patroni was never killed");
    check_patroni_report(&r, "failover", "us-east", "eu-west");
    assert_eq!(api.get("/v1/regions").await.body["write_region"], "eu-west");
    node.shutdown().await;

    // Member names that are not Patroni's: refused before anything moves.
    let mut wrong = cfg.clone();
    wrong.node_id = "patroni-wrong".into();
    wrong.drills.patroni.get_mut("eu-west").unwrap().member = "pg-eu-9".into();
    let mut bad = start_node(wrong, Registry::with_builtins()).await;
    let r = drill(&Api::new(&bad.url()), "switchover", "us-east", 0.0).await;
    assert!(
        r.status >= 400
            && r.status < 500
            && r.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("drills.patroni.eu-west.member"),
        "{} {}",
        r.status,
        r.body
    );
    bad.shutdown().await;
    let eu = Api::new(&c.cluster.regions[1].api_url);
    assert_eq!(eu.get("/v1/regions").await.body["write_region"], "eu-west");
}
