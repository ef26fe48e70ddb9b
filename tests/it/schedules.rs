//! Cron schedules (DESIGN 10.3): create, list, get, pause, resume, delete,
//! refusals by name, and ticks fired by two nodes at once that start
//! exactly one run (missed ticks collapsing into the latest).

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

#[tokio::test]
async fn a_due_tick_starts_exactly_one_run_however_many_nodes_fire_it() {
    let db = fresh_db().await;
    let a = start_node(node_config("sched-a", &db), Registry::with_builtins()).await;
    let mut ecfg = node_config("sched-b", &db);
    ecfg.enable_executor = false;
    ecfg.worker_pools.clear();
    let b = start_node(ecfg, Registry::with_builtins()).await;
    let api = Api::new(&a.url());
    let api_b = Api::new(&b.url());
    let daily = json!({"name": "nightly", "cron": "0 0 * * *",
                       "workflow": {"goal": "nightly report", "steps": [{"id": "s", "handler": "noop"}]}});

    // Created from the CLI; the same name again is 409.
    let file = std::env::temp_dir().join(format!("swf-sched-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&file, daily.to_string()).unwrap();
    let (code, out, err) = swf_cli(&[
        "schedules",
        "--api",
        &a.url(),
        "create",
        file.to_str().unwrap(),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("schedule nightly created; next run at "),
        "{out}"
    );
    let again = api_b.post("/v1/schedules", &daily).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.code(), "already_exists");

    // Refusals name what is wrong and store nothing.
    let wf = json!({"goal": "g", "steps": [{"id": "s", "handler": "noop"}]});
    let bad: [(Value, &str, &str); 6] = [
        (
            json!({"name": "x", "cron": "61 * * * *", "workflow": wf}),
            "invalid_request",
            "cron",
        ),
        (
            json!({"name": "x", "cron": "* * * *", "workflow": wf}),
            "invalid_request",
            "cron",
        ),
        (
            json!({"name": "no good", "cron": "* * * * *", "workflow": wf}),
            "invalid_request",
            "name",
        ),
        (
            json!({"name": "x", "cron": "* * * * *"}),
            "invalid_request",
            "workflow",
        ),
        (
            json!({"name": "x", "cron": "* * * * *",
                   "workflow": {"goal": "g", "steps": [{"id": "s", "handler": "nope"}]}}),
            "unknown_handler",
            "nope",
        ),
        (
            json!({"name": "x", "cron": "* * * * *",
                   "workflow": {"goal": "g", "idempotency_key": "k", "steps": [{"id": "s", "handler": "noop"}]}}),
            "invalid_workflow",
            "idempotency_key",
        ),
    ];
    for (body, code, names) in bad {
        let r = api.post("/v1/schedules", &body).await;
        assert_eq!(r.status / 100, 4, "{body}: {}", r.body);
        assert_eq!(r.code(), code, "{body}: {}", r.body);
        assert!(r.body.to_string().contains(names), "{body}: {}", r.body);
    }
    let list = api.get("/v1/schedules").await;
    assert_eq!(
        list.body["schedules"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );

    // Three daily ticks missed (as if no node ran): both nodes see it due.
    let sql = sql(&db).await;
    sqlx::query(
        "UPDATE swf.schedules SET next_run_at = date_trunc('day', now()) - interval '3 days'",
    )
    .execute(&sql)
    .await
    .unwrap();
    let fired = wait_for("the missed ticks to fire", 30, || {
        let api = api.clone();
        async move {
            let s = api.get("/v1/schedules/nightly").await.body;
            s["last_run_id"].is_string().then_some(s)
        }
    })
    .await;
    // One run, for the latest tick (today 00:00 UTC), marked as the schedule's.
    let runs: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT run_id, idempotency_key FROM swf.runs WHERE schedule = 'nightly'")
            .fetch_all(&sql)
            .await
            .unwrap();
    let today: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT date_trunc('day', now())")
            .fetch_one(&sql)
            .await
            .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].1,
        format!(
            "schedule:nightly:{}",
            today.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
    assert_eq!(fired["last_run_id"], json!(runs[0].0), "{fired}");
    let next: chrono::DateTime<chrono::Utc> =
        fired["next_run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next, today + chrono::Duration::days(1), "{fired}");
    let doc = api.wait_terminal(&runs[0].0.to_string(), 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["schedule"], "nightly", "{doc}");
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.runs")
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(all, 1, "a tick started more than one run");

    // Pause, resume, delete.
    let p = api.post("/v1/schedules/nightly/pause", &json!({})).await;
    assert_eq!(
        (p.status, p.body["paused"].clone()),
        (200, json!(true)),
        "{}",
        p.body
    );
    let (code, out, _) = swf_cli(&["schedules", "--api", &b.url(), "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("nightly ") && l.contains("PAUSED")),
        "{out}"
    );
    let r = api.post("/v1/schedules/nightly/resume", &json!({})).await;
    assert_eq!(
        (r.status, r.body["paused"].clone()),
        (200, json!(false)),
        "{}",
        r.body
    );
    let (code, out, err) = swf_cli(&["schedules", "--api", &b.url(), "delete", "nightly"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let gone = api.get("/v1/schedules/nightly").await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    b.kill().await;
    a.kill().await;
}
