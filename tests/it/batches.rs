//! The set-based engine (issue 11) at the edges of a batch: one claim or
//! report carrying several outcomes, stale attempts next to current ones,
//! and tasks whose lease ran out while they waited in a prefetch buffer.

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::store::{AttemptRef, Finish, FinishResult, Leases, RunDoc, Store};

use crate::harness::*;

const LEASES: Leases = Leases {
    lease_ms: 15_000,
    margin_ms: 1,
    backoff_base_ms: 60_000,
    backoff_cap_ms: 60_000,
};

fn one_step(goal: &str, timeout_ms: u64) -> singularity_workflow::store::NewRun {
    new_run(json!({"goal": goal, "steps": [
        {"id": "s", "handler": "noop", "timeout_ms": timeout_ms, "max_attempts": 3}]}))
}

async fn doc(store: &Store, run_id: uuid::Uuid, kind: RunDoc) -> Value {
    store.run_document(run_id, kind).await.unwrap().unwrap()
}

#[tokio::test]
async fn one_report_carries_completions_retries_failures_and_stale_attempts() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    // A two-step chain (its first step completes and queues the second),
    // and four single steps.
    let chain = new_run(json!({"goal": "chain", "steps": [
        {"id": "a", "handler": "noop"}, {"id": "b", "handler": "noop", "depends_on": ["a"]}]}));
    let runs = vec![
        chain,
        one_step("retry", 60_000),
        one_step("fatal", 60_000),
        one_step("stale", 60_000),
        one_step("done", 60_000),
    ];
    let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.run_id).collect();
    store.submit_runs(&runs, None, 1).await.unwrap();
    let mqs = vec!["default".to_string()];
    let claimed = store
        .claim_tasks(&mqs, 100, "n1", "us-east", "default", LEASES, 1, None)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        5,
        "one claim statement takes every root task"
    );
    let at = |i: usize| {
        let t = claimed.iter().find(|t| t.run_id == ids[i]).unwrap();
        t.attempt_ref()
    };
    let stale = AttemptRef {
        attempt: 2,
        ..at(3)
    };
    let items = vec![
        (at(0), Finish::completed(json!("a out"))),
        (
            at(1),
            Finish::Failed {
                error: json!({"message": "try again"}),
                timed_out: false,
            },
        ),
        (
            at(2),
            Finish::Fatal {
                error: json!({"message": "never", "code": "output_too_large"}),
            },
        ),
        (stale, Finish::completed(json!("from nowhere"))),
        (at(4), Finish::completed(json!("done"))),
    ];
    let r = store.finish_tasks(&items, LEASES, 1).await.unwrap();
    assert_eq!(
        r,
        vec![
            FinishResult::Completed,
            FinishResult::Retrying,
            FinishResult::Failed,
            FinishResult::Stale,
            FinishResult::Completed,
        ]
    );
    // The chain's second step was queued by the batch, and runs.
    let next = store
        .claim_tasks(&mqs, 100, "n1", "us-east", "default", LEASES, 1, None)
        .await
        .unwrap();
    assert_eq!(
        next.len(),
        1,
        "only b is ready (retry waits out its backoff)"
    );
    assert_eq!((next[0].run_id, next[0].step_id.as_str()), (ids[0], "b"));
    assert_eq!(next[0].input["deps"], json!({"a": "a out"}));
    let r = store
        .finish_tasks(
            &[(next[0].attempt_ref(), Finish::completed(json!("b out")))],
            LEASES,
            1,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Completed]);

    let status = |i: usize| {
        let store = store.clone();
        let id = ids[i];
        async move { doc(&store, id, RunDoc::Status).await }
    };
    let chain = status(0).await;
    assert_eq!(chain["status"], "completed");
    assert_eq!(chain["output"], json!({"b": "b out"}));
    assert_eq!(status(1).await["status"], "running");
    let fatal = status(2).await;
    assert_eq!(fatal["status"], "failed");
    assert_eq!(fatal["error"]["error"]["code"], "output_too_large");
    // The stale report changed nothing: its step is still running attempt 1.
    assert_eq!(status(3).await["status"], "running");
    let lineage = doc(&store, ids[3], RunDoc::Lineage).await;
    assert_eq!(
        attempts_of(&lineage, "s"),
        [(1, "n1".to_string(), "running".to_string())]
    );
    assert_eq!(status(4).await["output"], json!({"s": "done"}));
    let lineage = doc(&store, ids[1], RunDoc::Lineage).await;
    assert_eq!(
        attempts_of(&lineage, "s"),
        [(1, "n1".to_string(), "failed".to_string())]
    );
    store.close().await;
}

#[tokio::test]
async fn a_batch_refuses_the_stale_attempt_and_completes_the_current_one() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let runs = vec![one_step("x", 200), one_step("y", 200)];
    let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.run_id).collect();
    store.submit_runs(&runs, None, 1).await.unwrap();
    let mqs = vec!["default".to_string()];
    let first = store
        .claim_tasks(&mqs, 10, "lost", "us-east", "default", LEASES, 1, None)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    // Both claims expire (timeout 200 ms + margin); another node claims
    // them again: attempt 2 each, attempt 1 abandoned.
    let second = wait_for("the expired claims to be re-delivered", 20, || {
        let (store, mqs) = (store.clone(), mqs.clone());
        async move {
            let t = store
                .claim_tasks(&mqs, 10, "alive", "us-east", "default", LEASES, 1, None)
                .await
                .unwrap();
            (t.len() == 2).then_some(t)
        }
    })
    .await;
    assert!(second.iter().all(|t| t.attempt == 2));
    // One report: the lost node's late completions (and a duplicate of
    // one) next to the live node's.
    let mut items: Vec<(AttemptRef, Finish)> = Vec::new();
    for t in &first {
        items.push((t.attempt_ref(), Finish::completed(json!("late"))));
    }
    items.push((
        first[0].attempt_ref(),
        Finish::completed(json!("late again")),
    ));
    for t in &second {
        items.push((t.attempt_ref(), Finish::completed(json!("on time"))));
    }
    let r = store.finish_tasks(&items, LEASES, 1).await.unwrap();
    assert_eq!(
        r,
        vec![
            FinishResult::Stale,
            FinishResult::Stale,
            FinishResult::Stale,
            FinishResult::Completed,
            FinishResult::Completed,
        ]
    );
    for id in ids {
        let d = doc(&store, id, RunDoc::Status).await;
        assert_eq!(d["status"], "completed");
        assert_eq!(d["output"], json!({"s": "on time"}));
        let l = doc(&store, id, RunDoc::Lineage).await;
        assert_eq!(
            attempts_of(&l, "s"),
            [
                (1, "lost".to_string(), "abandoned".to_string()),
                (2, "alive".to_string(), "completed".to_string())
            ]
        );
    }
    store.close().await;
}

#[tokio::test]
async fn tasks_held_in_the_prefetch_buffer_past_their_safe_start_are_renewed_and_run_once() {
    let db = fresh_db().await;
    // One slot and five tasks always claimed ahead of it; a 500 ms margin,
    // so a buffered task is renewed after 125 ms and may not start
    // unrenewed after 250 ms.
    let mut cfg = node_config("prefetch-1", &db);
    cfg.worker_pools.get_mut("default").unwrap().size = 1;
    cfg.executor.prefetch_min = 5;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // The sleeper holds the only slot for 1.5 s while the five quick
    // tasks claimed with it wait in the buffer, well past their safe start
    // unless renewed.
    let sleeper = api
        .submit(&json!({"goal": "sleeper", "steps": [
            {"id": "s", "handler": "sleep", "input": {"ms": 1500}}]}))
        .await;
    let mut quick = Vec::new();
    for i in 0..5 {
        quick.push(
            api.submit(&json!({"goal": format!("quick {i}"), "steps": [
                {"id": "s", "handler": "noop", "timeout_ms": 1000}]}))
                .await,
        );
    }
    assert_eq!(api.wait_terminal(&sleeper, 30).await["status"], "completed");
    for id in &quick {
        assert_eq!(api.wait_terminal(id, 30).await["status"], "completed");
    }
    // Every quick task ran once, on its first attempt: renewed while it
    // waited, never dropped to be re-delivered (nor run twice).
    for id in &quick {
        let lineage = api.lineage(id).await;
        let attempts = attempts_of(&lineage, "s");
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0].2, "completed", "{attempts:?}");
    }
    let metrics = api.get("/metrics").await.body;
    let text = metrics.as_str().unwrap_or_default();
    let renewed: f64 = text
        .lines()
        .find(|l| l.starts_with("swf_tasks_renewed_in_buffer_total{pool=\"default\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(renewed >= 1.0, "no renewal counted: {text}");
    node.kill().await;
}

#[tokio::test]
async fn executors_wake_on_work_committed_by_the_deferred_notifications() {
    let db = fresh_db().await;
    // Polling every ten minutes: within the test's deadlines only a
    // notification can start a task. Runs are submitted through an edge
    // node (a hybrid node would start its own submits' tasks at once).
    let mut cfg = node_config("wake-1", &db);
    cfg.executor.poll_interval_ms = 600_000;
    cfg.enable_client = false;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let mut cfg = node_config("wake-edge-1", &db);
    cfg.enable_executor = false;
    let edge = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&edge.url());
    let first = api
        .submit(&json!({"goal": "first", "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    assert_eq!(api.wait_terminal(&first, 30).await["status"], "completed");
    // The executor is idle on an empty queue now: each of these runs, and
    // each step of the chain after its dependency, waits for a wake-up
    // sent after the COMMIT that queued it.
    for i in 0..3 {
        let chain = api
            .submit(&json!({"goal": format!("chain {i}"), "steps": [
                {"id": "a", "handler": "noop"},
                {"id": "b", "handler": "echo", "depends_on": ["a"]},
                {"id": "c", "handler": "echo", "depends_on": ["b"]}]}))
            .await;
        assert_eq!(api.wait_terminal(&chain, 30).await["status"], "completed");
    }
    node.kill().await;
    edge.kill().await;
}

#[tokio::test]
async fn a_hybrid_node_starts_what_it_submits_in_the_same_transaction() {
    let db = fresh_db().await;
    let mut cfg = node_config("eager-1", &db);
    cfg.executor.poll_interval_ms = 600_000;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // The first submit may come before the pool has published its free
    // slots; once it has run, the pool is idle with all of them free.
    let warm = api
        .submit(&json!({"goal": "warm-up", "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    assert_eq!(api.wait_terminal(&warm, 30).await["status"], "completed");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.submit(&json!({"goal": format!("eager {i}"), "steps": [
                {"id": "s", "handler": "echo", "input": {"i": i}}]}))
                .await,
        );
    }
    for id in &ids {
        let done = api.wait_terminal(id, 30).await;
        assert_eq!(done["status"], "completed", "{done}");
        // A step's start is its first claim's transaction time and a run's
        // creation its submit's: equal only when the submit claimed it.
        assert_eq!(
            done["steps"][0]["started_at"], done["created_at"],
            "the task was not claimed by its submit: {done}"
        );
        let lineage = api.lineage(id).await;
        let attempts = attempts_of(&lineage, "s");
        assert_eq!(
            attempts,
            [(1, "eager-1".to_string(), "completed".to_string())],
            "{lineage}"
        );
    }
    node.kill().await;
}

#[tokio::test]
async fn a_queue_without_its_own_statements_gets_them_at_its_first_claim() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    store.migrate().await.unwrap();
    // A queue made outside swf (pgmq.create alone) has no per-queue
    // functions; remove those of `default` too, as such a queue would be.
    let raw = sql(&db).await;
    sqlx::query("SELECT pgmq.create('side')")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(r#"DROP FUNCTION IF EXISTS swf."claim@default", swf."enqueue@default""#)
        .execute(&raw)
        .await
        .unwrap();
    let run = one_step("default queue", 60_000);
    let id = run.run_id;
    store.submit_runs(&[run], None, 1).await.unwrap();
    let mqs = vec!["side".to_string(), "default".to_string()];
    let claimed = store
        .claim_tasks(&mqs, 10, "n1", "us-east", "default", LEASES, 1, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].run_id, id);
    let made: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'swf'
              AND p.proname IN ('claim@side', 'enqueue@side', 'claim@default', 'enqueue@default')"#,
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(made, 4, "both queues have both functions again");
    let r = store
        .finish_tasks(
            &[(claimed[0].attempt_ref(), Finish::completed(json!("ok")))],
            LEASES,
            1,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Completed]);
    assert_eq!(doc(&store, id, RunDoc::Status).await["status"], "completed");
    raw.close().await;
    store.close().await;
}

/// Buffers one `complete_tasks` call for `tasks` touches, on `conn`.
async fn completion_hits(
    conn: &mut sqlx::PgConnection,
    tasks: &[singularity_workflow::store::ClaimedTask],
) -> i64 {
    let items: Vec<Value> = tasks
        .iter()
        .map(|t| {
            json!({"run_id": t.run_id, "step_id": t.step_id, "attempt": t.attempt,
                        "output": null})
        })
        .collect();
    let (plan,): (Value,) = sqlx::query_as(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM swf.complete_tasks($1, 1)",
    )
    .bind(Value::from(items))
    .fetch_one(conn)
    .await
    .unwrap();
    let top = &plan[0]["Plan"];
    assert_eq!(top["Actual Rows"], tasks.len(), "{plan}");
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

#[tokio::test]
async fn a_completion_batch_costs_what_its_size_does_whatever_the_statistics_say() {
    // Statistics taken over finished history only say almost no run is
    // running; then 2,000 are. A plan that trusted them started from the
    // running runs and walked every one of them for each batch.
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let raw = sql(&db).await;
    store.fill_history(5_000, "us-east").await.unwrap();
    sqlx::raw_sql(
        "ALTER TABLE swf.runs SET (autovacuum_enabled = false);
         ALTER TABLE swf.steps SET (autovacuum_enabled = false);",
    )
    .execute(&raw)
    .await
    .unwrap();
    const RUNNING: usize = 2_000;
    for chunk in 0..RUNNING / 500 {
        let runs: Vec<_> = (0..500)
            .map(|i| one_step(&format!("r{chunk}-{i}"), 60_000))
            .collect();
        store.submit_runs(&runs, None, 1).await.unwrap();
    }
    let mqs = vec!["default".to_string()];
    let claimed = store
        .claim_tasks(&mqs, 20, "n1", "us-east", "default", LEASES, 1, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    // The first call on a connection also loads catalogs and plans:
    // measure the second, on the same connection.
    let mut conn = raw.acquire().await.unwrap();
    completion_hits(&mut conn, &claimed[..10]).await;
    let hits = completion_hits(&mut conn, &claimed[10..]).await;
    drop(conn);
    assert!(
        hits < (RUNNING / 2) as i64,
        "completing 10 tasks touched {hits} buffers with {RUNNING} runs running: \
         its cost follows the running runs, not the batch"
    );
    raw.close().await;
    store.close().await;
}

/// The first notification on `listener` after a marker is sent on the same
/// channel: notifications arrive in commit order, so a wake-up committed
/// before the marker arrives first.
async fn first_after_marker(listener: &mut sqlx::postgres::PgListener, db: &str) -> String {
    sqlx::query("SELECT pg_notify('swf_default', 'marker')")
        .execute(&sql(db).await)
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), listener.recv())
        .await
        .expect("no notification within 30 s")
        .unwrap();
    n.payload().to_string()
}

#[tokio::test]
async fn a_submit_whose_claim_took_all_it_stored_wakes_no_poller() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    store.migrate().await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db).await.unwrap();
    listener.listen("swf_default").await.unwrap();
    let claim = |qty| singularity_workflow::store::EagerClaim {
        mqs: vec!["default".into()],
        qty,
        node_id: "n1".into(),
        region: "us-east".into(),
        pool: "default".into(),
        leases: LEASES,
        handlers: ",".into(),
        start: false,
    };
    // Two runs, a claim for five: both claimed, the queue drained.
    let runs = [one_step("a", 60_000), one_step("b", 60_000)];
    let (_, _, tasks) = store
        .submit_and_claim(&runs, 100, Some(&claim(5)), 1)
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(
        first_after_marker(&mut listener, &db).await,
        "marker",
        "a drained queue was woken"
    );
    // Two runs, a claim for one: the other waits in the queue, and the
    // queue's pollers are woken for it.
    let runs = [one_step("c", 60_000), one_step("d", 60_000)];
    let (_, _, tasks) = store
        .submit_and_claim(&runs, 100, Some(&claim(1)), 1)
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        first_after_marker(&mut listener, &db).await,
        "",
        "a queue left with a task was not woken"
    );
    let left = store
        .claim_tasks(
            &["default".to_string()],
            10,
            "n2",
            "us-east",
            "default",
            LEASES,
            1,
            None,
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    // (The marker sent after that wake-up is still on its way.)
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), listener.recv())
        .await
        .expect("the marker")
        .unwrap();
    assert_eq!(n.payload(), "marker");
    // A run of a handler this node does not run: its claim takes nothing
    // though it asked for five, and the nodes that run it are woken.
    let runs = [new_run(json!({"goal": "e", "steps": [
        {"id": "s", "handler": "command:elsewhere"}]}))];
    let (_, _, tasks) = store
        .submit_and_claim(&runs, 100, Some(&claim(5)), 1)
        .await
        .unwrap();
    assert!(tasks.is_empty(), "{tasks:?}");
    assert_eq!(
        first_after_marker(&mut listener, &db).await,
        "",
        "a task only other nodes can run woke nobody"
    );
}

#[tokio::test]
async fn a_pool_of_slow_handlers_starts_every_buffered_task_without_abandoning_any() {
    // 48 tasks of 400 ms for 10 slots: they end in waves, so what a claim
    // brought beyond the free slots waits ~400 ms, past the drop point of
    // an unrenewed buffered task (half the 500 ms margin). Renewed, each
    // starts; dropped, each would sit out its 15 s lease and be abandoned.
    let db = fresh_db().await;
    let edge = start_node(
        edge_config_of(&node_config("slow-edge", &db)),
        Registry::with_builtins(),
    )
    .await;
    let api = Api::new(&edge.url());
    let mut runs = Vec::new();
    for i in 0..48 {
        runs.push(
            api.submit(&json!({"goal": format!("slow-{i}"), "steps": [
                {"id": "a", "handler": "sleep", "input": {"ms": 400}}]}))
                .await,
        );
    }
    let worker = start_node(node_config("slow-worker", &db), Registry::with_builtins()).await;
    for run in &runs {
        assert_eq!(api.wait_terminal(run, 60).await["status"], "completed");
    }
    let pool = sql(&db).await;
    let attempts: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM swf.attempts GROUP BY outcome")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        attempts,
        [("completed".to_string(), 48)],
        "one attempt each"
    );
    pool.close().await;
    worker.kill().await;
    edge.kill().await;
}

/// Issue 15: an executor 40 ms (one way) from its primary claims many
/// tasks per round trip and reports their outcomes many per round trip,
/// so its pace does not follow the distance. Each claim is one transaction
/// (its steps' `started_at` is that transaction's start), each report one
/// too (the attempts it finished carry its `xmin`).
#[tokio::test]
async fn an_executor_far_from_its_primary_claims_and_reports_many_tasks_per_round_trip() {
    let db = fresh_db().await;
    let proxy = singularity_workflow::dev::proxy::DelayProxy::start(
        ([127, 0, 0, 1], 0).into(),
        ([127, 0, 0, 1], port_of(&db)).into(),
        std::time::Duration::from_millis(40),
        "wan",
    )
    .await
    .unwrap();
    let edge = start_node(
        edge_config_of(&node_config("wan-edge", &db)),
        Registry::with_builtins(),
    )
    .await;
    let api = Api::new(&edge.url());
    // The backlog waits on the paused queue, so the worker finds all of it.
    assert_eq!(
        api.post("/v1/queues/default/pause", &json!({}))
            .await
            .status,
        200
    );
    let n = 300;
    let workflows: Vec<Value> = (0..n)
        .map(|i| json!({"goal": format!("far {i}"), "steps": [{"id": "s", "handler": "noop"}]}))
        .collect();
    let a = api
        .post("/v1/workflows/batch", &json!({"workflows": workflows}))
        .await;
    assert!(a.status < 300, "{}", a.body);
    let mut cfg = node_config("wan-worker", &through(&db, &proxy));
    cfg.enable_client = false;
    let worker = start_node(cfg, Registry::with_builtins()).await;
    assert_eq!(
        api.post("/v1/queues/default/resume", &json!({}))
            .await
            .status,
        200
    );
    let pool = sql(&db).await;
    wait_for("every run to complete", 60, || {
        let pool = &pool;
        async move {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM swf.runs WHERE status = 'completed'")
                    .fetch_one(pool)
                    .await
                    .ok()?;
            (done == n).then_some(())
        }
    })
    .await;
    let (attempts, claims, reports): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT st.started_at), count(DISTINCT a.xmin::text)
           FROM swf.attempts a JOIN swf.steps st USING (run_id, step_id)
          WHERE a.node_id = 'wan-worker' AND a.outcome = 'completed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, n, "every task ran once, on the far worker");
    assert!(
        claims * 5 <= n && reports * 5 <= n,
        "{n} tasks took {claims} claims and {reports} reports"
    );
    pool.close().await;
    worker.kill().await;
    edge.kill().await;
}

/// A run's stored rows as the engine reads them, without what differs
/// between two submits of the same spec (ids, times).
async fn stored_rows(pool: &sqlx::PgPool, run_id: uuid::Uuid) -> Value {
    let (run,): (Value,) = sqlx::query_as(
        "SELECT to_jsonb(r) - '{run_id,created_at}'::text[] FROM swf.runs r WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .unwrap();
    let (steps, messages): (Value, Value) = sqlx::query_as(
        "SELECT jsonb_agg(to_jsonb(s) - '{run_id,msg_id}'::text[] ORDER BY s.ordinal),
                jsonb_agg(q.message - 'run_id' ORDER BY s.ordinal)
           FROM swf.steps s JOIN pgmq.q_default q ON q.msg_id = s.msg_id
          WHERE s.run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .unwrap();
    json!({"run": run, "steps": steps, "messages": messages})
}

#[tokio::test]
async fn a_plain_batch_stores_in_one_statement_what_the_general_path_stores() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let pool = sql(&db).await;
    // Plain: every step ready at submit (here with inputs, a priority, a
    // handler of another node, and two independent steps).
    let spec = json!({"goal": "plain", "priority": 3, "steps": [
        {"id": "a", "handler": "echo", "input": {"x": 1}, "timeout_ms": 5000, "max_attempts": 2},
        {"id": "b", "handler": "command:elsewhere", "priority": -4}]});
    let mut general = new_run(spec.clone());
    general.input = Some(json!({"in": true}));
    general.idempotency_key = Some("general".into());
    let mut plain = general.clone();
    plain.run_id = uuid::Uuid::now_v7();
    plain.idempotency_key = Some("plain".into());
    assert!(plain.is_plain());
    // submit_runs without a queue cap takes the general path;
    // submit_and_claim with one queue and plain runs, the plain one.
    store
        .submit_runs(&[general.clone()], None, 1)
        .await
        .unwrap();
    let (out, _, _) = store
        .submit_and_claim(&[plain.clone()], 100, None, 1)
        .await
        .unwrap();
    assert_eq!((out[0].run_id, out[0].created), (plain.run_id, true));
    let (g, p) = (
        stored_rows(&pool, general.run_id).await,
        stored_rows(&pool, plain.run_id).await,
    );
    assert_eq!(g["run"]["idempotency_key"], "general");
    let strip = |mut v: Value| {
        v["run"]["idempotency_key"] = Value::Null;
        v
    };
    assert_eq!(strip(p), strip(g), "the plain path stored other rows");

    // Its answers: a retry of a stored run (same run id) is created, a new
    // run with a stored idempotency key is the stored run, not created, and
    // stores nothing; a new run is stored.
    let mut same_key = one_step("same key", 60_000);
    same_key.idempotency_key = Some("plain".into());
    let fresh = one_step("fresh", 60_000);
    let (out, _, _) = store
        .submit_and_claim(
            &[plain.clone(), same_key.clone(), fresh.clone()],
            100,
            None,
            1,
        )
        .await
        .unwrap();
    let got: Vec<_> = out.iter().map(|s| (s.run_id, s.created)).collect();
    assert_eq!(
        got,
        vec![
            (plain.run_id, true),
            (plain.run_id, false),
            (fresh.run_id, true)
        ]
    );
    let (runs, steps, messages): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM swf.runs), (SELECT count(*) FROM swf.steps),
                (SELECT count(*) FROM pgmq.q_default)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (runs, steps, messages),
        (3, 5, 5),
        "a skipped run left rows"
    );
    // A stale epoch is refused on this path too, storing nothing.
    let late = one_step("late", 60_000);
    let err = store
        .submit_and_claim(std::slice::from_ref(&late), 100, None, 99)
        .await;
    assert!(
        err.is_err(),
        "a submit with a newer epoch than the database's was stored"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM swf.runs WHERE run_id = $1")
        .bind(late.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    store.close().await;
}

/// A started step's rows as a claim leaves them, without what differs
/// between two runs (ids, times): the step, its attempts, and its
/// message's delivery count and visibility.
async fn started_rows(pool: &sqlx::PgPool, run_id: uuid::Uuid) -> Value {
    let (rows,): (Value,) = sqlx::query_as(
        "SELECT jsonb_agg(jsonb_build_object(
                    'step', to_jsonb(s) - '{run_id,msg_id,started_at}'::text[],
                    'started', s.started_at IS NOT NULL,
                    'attempts', (SELECT jsonb_agg(to_jsonb(a) - '{run_id,started_at}'::text[])
                                   FROM swf.attempts a
                                  WHERE a.run_id = s.run_id AND a.step_id = s.step_id),
                    'read_ct', q.read_ct,
                    'invisible', q.vt > now(),
                    'message', q.message - 'run_id') ORDER BY s.ordinal)
           FROM swf.steps s JOIN pgmq.q_default q ON q.msg_id = s.msg_id
          WHERE s.run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .unwrap();
    rows
}

/// What another node's pool claims of the default queue (up to 10 tasks).
async fn claim_elsewhere(store: &Store) -> Vec<singularity_workflow::store::ClaimedTask> {
    let mqs = ["default".to_string()];
    store
        .claim_tasks(&mqs, 10, "n2", "us-east", "p2", LEASES, 1, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plain_batch_with_an_offer_starts_its_steps_as_a_claim_would() {
    use singularity_workflow::store::EagerClaim;
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let pool = sql(&db).await;
    let mqs = vec!["default".to_string()];
    let offer = |qty| EagerClaim {
        mqs: mqs.clone(),
        qty,
        node_id: "n1".into(),
        region: "us-east".into(),
        pool: "p1".into(),
        leases: LEASES,
        handlers: ",mine".into(),
        start: true,
    };
    // The same spec, claimed after a submit, and started by one: a
    // built-in handler with inputs, and a handler this node runs.
    let spec = json!({"goal": "offer", "steps": [
        {"id": "a", "handler": "echo", "input": {"x": 1}, "timeout_ms": 5000},
        {"id": "b", "handler": "mine", "priority": 2}]});
    let mut claimed_later = new_run(spec.clone());
    claimed_later.input = Some(json!({"in": true}));
    let mut started = claimed_later.clone();
    started.run_id = uuid::Uuid::now_v7();
    store
        .submit_and_claim(std::slice::from_ref(&claimed_later), 100, None, 1)
        .await
        .unwrap();
    let by_claim = store
        .claim_tasks(&mqs, 10, "n1", "us-east", "p1", LEASES, 1, Some(",mine"))
        .await
        .unwrap();
    let (out, _, by_submit) = store
        .submit_and_claim(std::slice::from_ref(&started), 100, Some(&offer(10)), 1)
        .await
        .unwrap();
    assert_eq!((out[0].run_id, out[0].created), (started.run_id, true));
    let task = |t: &singularity_workflow::store::ClaimedTask| {
        json!([t.step_id, t.attempt, t.handler, t.timeout_ms, t.input])
    };
    let mut a: Vec<Value> = by_claim.iter().map(task).collect();
    let mut b: Vec<Value> = by_submit.iter().map(task).collect();
    a.sort_by_key(|v| v.to_string());
    b.sort_by_key(|v| v.to_string());
    assert_eq!(a.len(), 2);
    assert_eq!(b, a, "the submit's tasks differ from a claim's");
    let (c, s) = (
        started_rows(&pool, claimed_later.run_id).await,
        started_rows(&pool, started.run_id).await,
    );
    assert_eq!(c[0]["step"]["status"], "started");
    assert_eq!(c[0]["attempts"][0]["worker_pool"], "p1");
    assert_eq!(s, c, "the submit stored other rows than a claim");
    // Nothing is left for a claim.
    let left = claim_elsewhere(&store).await;
    assert!(
        left.is_empty(),
        "a started step was claimed again: {left:?}"
    );

    // The offer covers the first steps the pool runs, in order; the others
    // are queued for any claim (a handler of another node, and the steps
    // past the offer).
    let mut elsewhere = one_step("elsewhere", 60_000);
    elsewhere.steps[0].handler = "command:elsewhere".into();
    let runs = vec![
        one_step("first", 60_000),
        elsewhere.clone(),
        one_step("second", 60_000),
        one_step("past the offer", 60_000),
    ];
    let (_, _, tasks) = store
        .submit_and_claim(&runs, 100, Some(&offer(2)), 1)
        .await
        .unwrap();
    let got: Vec<_> = tasks.iter().map(|t| t.run_id).collect();
    assert_eq!(got, vec![runs[0].run_id, runs[2].run_id]);
    let rest = claim_elsewhere(&store).await;
    let mut rest: Vec<_> = rest.iter().map(|t| t.run_id).collect();
    rest.sort();
    let mut want = vec![runs[1].run_id, runs[3].run_id];
    want.sort();
    assert_eq!(
        rest, want,
        "the steps the offer did not cover were not queued"
    );

    // The offer starts the batch's own steps: it does not scan the queue
    // (the node offers only while its queues hold nothing visible for it).
    let older = one_step("older", 60_000);
    store
        .submit_and_claim(std::slice::from_ref(&older), 100, None, 1)
        .await
        .unwrap();
    let newer = one_step("newer", 60_000);
    let (_, _, tasks) = store
        .submit_and_claim(std::slice::from_ref(&newer), 100, Some(&offer(1)), 1)
        .await
        .unwrap();
    let got: Vec<_> = tasks.iter().map(|t| t.run_id).collect();
    assert_eq!(got, vec![newer.run_id]);
    let rest = claim_elsewhere(&store).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].run_id, older.run_id);
    // A claim offer (not a start) claims through the queue, oldest first.
    let (older, newer) = (one_step("older", 60_000), one_step("newer", 60_000));
    store
        .submit_and_claim(std::slice::from_ref(&older), 100, None, 1)
        .await
        .unwrap();
    let claim = EagerClaim {
        start: false,
        ..offer(1)
    };
    let (_, _, tasks) = store
        .submit_and_claim(std::slice::from_ref(&newer), 100, Some(&claim), 1)
        .await
        .unwrap();
    let got: Vec<_> = tasks.iter().map(|t| t.run_id).collect();
    assert_eq!(got, vec![older.run_id], "a claim offer passed older work");
    claim_elsewhere(&store).await;

    // A paused queue starts nothing: its steps wait, queued.
    store
        .set_queue_paused("default", &mqs, true, 1)
        .await
        .unwrap();
    let held = one_step("held", 60_000);
    let (_, _, tasks) = store
        .submit_and_claim(std::slice::from_ref(&held), 100, Some(&offer(5)), 1)
        .await
        .unwrap();
    assert!(tasks.is_empty(), "a paused queue's step started");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM swf.steps WHERE run_id = $1")
        .bind(held.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "queued");
    store.close().await;
}
