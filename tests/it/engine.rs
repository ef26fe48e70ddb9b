//! Engine semantics: retries, exhaustion, cancel, idempotency, lost
//! executors, stale completions, graceful release.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use singularity_workflow::executor::handlers::{HandlerError, Registry, TaskContext};
use singularity_workflow::store::{AttemptRef, Finish, FinishResult, Leases, RunDoc, Store};

use crate::harness::*;

#[tokio::test]
async fn retry_then_success() {
    let db = fresh_db().await;
    let mut reg = Registry::with_builtins();
    // Fails on attempts 1 and 2, succeeds on 3.
    reg.register("flaky", |ctx: TaskContext| async move {
        if ctx.attempt < 3 {
            Err(HandlerError::message(format!("flake {}", ctx.attempt)))
        } else {
            Ok(json!({"ok_on": ctx.attempt}))
        }
    });
    let node = start_node(node_config("r1", &db), reg).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(&json!({"goal": "retry", "steps": [{"id": "s", "handler": "flaky", "max_attempts": 3}]}))
        .await;
    let doc = api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["steps"][0]["attempts"], 3);
    assert_eq!(doc["output"], json!({"s": {"ok_on": 3}}));
    let lineage = api.lineage(&id).await;
    let outcomes: Vec<String> = attempts_of(&lineage, "s")
        .into_iter()
        .map(|a| a.2)
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "completed"]);
    assert_eq!(lineage["execution_trace"][0]["error"]["message"], "flake 1");
    // Backoff: attempt 2 starts at least ~1 s after attempt 1 (base 1 s).
    let t = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(
            lineage["execution_trace"][i]["started_at"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    assert!((t(1) - t(0)).num_milliseconds() >= 900);
    node.kill().await;
}

#[tokio::test]
async fn retry_exhaustion_fails_the_run_and_drops_queued_work() {
    let db = fresh_db().await;
    let node = start_node(node_config("x1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // `bad` fails twice; `slow` is independent queued/running work that must
    // be cancelled; `after` never starts.
    let id = api
        .submit(&json!({"goal": "exhaust", "steps": [
            {"id": "bad", "handler": "fail", "max_attempts": 2, "input": {"message": "nope"}},
            {"id": "slow", "handler": "sleep", "input": {"ms": 60000}},
            {"id": "after", "handler": "noop", "depends_on": ["bad"]}]}))
        .await;
    let doc = api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["step_id"], "bad");
    assert_eq!(doc["error"]["error"]["message"], "nope");
    let status_of = |sid: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == sid)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of("bad"), "failed");
    assert_eq!(status_of("slow"), "cancelled");
    assert_eq!(status_of("after"), "cancelled");
    let pool = sql(&db).await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.q_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, 0, "the failed run's queued work was not removed");
    let lineage = api.lineage(&id).await;
    let outcomes: Vec<String> = attempts_of(&lineage, "bad")
        .into_iter()
        .map(|a| a.2)
        .collect();
    assert_eq!(outcomes, ["failed", "failed"]);
    assert_eq!(attempts_of(&lineage, "slow")[0].2, "abandoned");
    node.kill().await;
}

#[tokio::test]
async fn cancel_stops_work_and_refuses_late_completions() {
    let db = fresh_db().await;
    let node = start_node(node_config("c1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let id = api
        .submit(&json!({"goal": "cancel", "steps": [
            {"id": "slow", "handler": "sleep", "input": {"ms": 1500}},
            {"id": "next", "handler": "noop", "depends_on": ["slow"]}]}))
        .await;
    // Wait until the slow step runs, then cancel.
    wait_for("slow step to start", 20, || {
        let api = api.clone();
        let id = id.clone();
        async move {
            let l = api.lineage(&id).await;
            (!attempts_of(&l, "slow").is_empty()).then_some(())
        }
    })
    .await;
    let c = api
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (c.status, c.body["status"].clone()),
        (200, json!("cancelled"))
    );
    // Cancelling again is a no-op; the run stays cancelled.
    let again = api
        .post(&format!("/v1/workflows/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(again.status, 200);
    // The sleeping handler finishes later; its completion must be refused.
    let node_info = api.clone();
    wait_for(
        "the cancelled attempt's completion to be refused",
        20,
        || {
            let api = node_info.clone();
            async move {
                let info = api.get("/health/info").await;
                (info.body["worker_pools"][0]["busy"] == 0).then_some(())
            }
        },
    )
    .await;
    let doc = api.status(&id).await;
    assert_eq!(doc["status"], "cancelled");
    for s in doc["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "cancelled", "{s}");
        assert!(s["output"].is_null());
    }
    let l = api.lineage(&id).await;
    assert_eq!(
        attempts_of(&l, "slow"),
        vec![(1, "c1".into(), "abandoned".into())]
    );
    assert!(attempts_of(&l, "next").is_empty());
    // A completed run cannot be cancelled.
    let done = api
        .submit(&json!({"goal": "quick", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    api.wait_terminal(&done, 20).await;
    let c = api
        .post(&format!("/v1/workflows/{done}/cancel"), &json!({}))
        .await;
    assert_eq!((c.status, c.code()), (409, "invalid_state"));
    node.kill().await;
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_run() {
    let db = fresh_db().await;
    let node = start_node(node_config("i1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let wf = json!({"goal": "idem", "idempotency_key": "order-42",
                    "steps": [{"id": "a", "handler": "noop"}]});
    let first = api.post("/v1/workflows", &wf).await;
    assert_eq!(first.status, 201);
    api.wait_terminal(first.body["run_id"].as_str().unwrap(), 20)
        .await;
    let second = api.post("/v1/workflows", &wf).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["run_id"], first.body["run_id"]);
    assert_eq!(second.body["status"], "completed");
    // Concurrent duplicates also collapse into one run.
    let wf2 = json!({"goal": "idem2", "idempotency_key": "order-43",
                     "steps": [{"id": "a", "handler": "noop"}]});
    let answers = futures::future::join_all((0..8).map(|_| api.post("/v1/workflows", &wf2))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| a.body["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
    let pool = sql(&db).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    node.kill().await;
}

#[tokio::test]
async fn killed_executor_task_completes_elsewhere() {
    let db = fresh_db().await;
    // Node A's `work` never finishes; node B's finishes at once.
    let mut reg_a = Registry::with_builtins();
    reg_a.register("work", |_ctx: TaskContext| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(json!("never"))
    });
    let mut reg_b = Registry::with_builtins();
    reg_b.register("work", |ctx: TaskContext| async move {
        Ok(json!({"done_by": "b", "attempt": ctx.attempt}))
    });
    let mut cfg_a = node_config("node-a", &db);
    cfg_a.enable_client = true;
    let a = start_node(cfg_a, reg_a).await;
    let api_a = Api::new(&a.url());
    let id = api_a
        .submit(&json!({"goal": "crash", "steps": [{"id": "w", "handler": "work", "timeout_ms": 3000}]}))
        .await;
    wait_for("node A to claim the task", 20, || {
        let api = api_a.clone();
        let id = id.clone();
        async move { (!attempts_of(&api.lineage(&id).await, "w").is_empty()).then_some(()) }
    })
    .await;
    a.kill().await; // the process dies: no release, no completion
    let b = start_node(node_config("node-b", &db), reg_b).await;
    let api_b = Api::new(&b.url());
    let doc = api_b.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["output"]["w"], json!({"done_by": "b", "attempt": 2}));
    let l = api_b.lineage(&id).await;
    assert_eq!(
        attempts_of(&l, "w"),
        vec![
            (1, "node-a".into(), "abandoned".into()),
            (2, "node-b".into(), "completed".into())
        ]
    );
    b.kill().await;
}

#[tokio::test]
async fn stale_completion_is_refused() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let run = new_run(
        json!({"goal": "stale", "steps": [{"id": "s", "handler": "noop", "timeout_ms": 200}]}),
    );
    let run_id = run.run_id;
    store.submit_runs(&[run], None, 1).await.unwrap();
    let leases = Leases {
        lease_ms: 15_000,
        margin_ms: 1,
        backoff_base_ms: 10,
        backoff_cap_ms: 10,
    };
    let mqs = vec!["default".to_string()];
    let first = store
        .claim_tasks(&mqs, 5, "slow-node", "us-east", "default", leases, 1, None)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    // The claim expires (timeout 200 ms + margin); another executor claims it.
    let second = wait_for("the expired claim to be re-delivered", 20, || {
        let store = store.clone();
        let mqs = mqs.clone();
        async move {
            let t = store
                .claim_tasks(&mqs, 5, "fast-node", "us-east", "default", leases, 1, None)
                .await
                .unwrap();
            (!t.is_empty()).then_some(t)
        }
    })
    .await;
    assert_eq!(second[0].attempt, 2);
    let stale = AttemptRef {
        run_id,
        step_id: "s".into(),
        attempt: 1,
    };
    let current = AttemptRef {
        run_id,
        step_id: "s".into(),
        attempt: 2,
    };
    let r = store
        .finish_tasks(
            &[(stale.clone(), Finish::completed(json!("late")))],
            leases,
            1,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Stale]);
    let r = store
        .finish_tasks(&[(current, Finish::completed(json!("on time")))], leases, 1)
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Completed]);
    // A second report of the stale attempt, now after completion, is refused too.
    let r = store
        .finish_tasks(
            &[(
                stale,
                Finish::Failed {
                    error: json!({}),
                    timed_out: false,
                },
            )],
            leases,
            1,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Stale]);
    let doc = store
        .run_document(run_id, RunDoc::Status)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["output"], json!({"s": "on time"}));
    let l = store
        .run_document(run_id, RunDoc::Lineage)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts_of(&l, "s")[0].2, "abandoned");
    // Writes carrying a newer epoch than the database's are refused (fencing).
    let err = store.cancel_run(run_id, 99).await.unwrap_err();
    assert!(err.to_string().contains("epoch"), "{err}");
    store.close().await;
}

#[tokio::test]
async fn graceful_shutdown_releases_unfinished_tasks() {
    let db = fresh_db().await;
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let mut reg_a = Registry::with_builtins();
    reg_a.register("long", move |_ctx: TaskContext| {
        let s = s2.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json!("never"))
        }
    });
    let mut cfg = node_config("graceful-a", &db);
    cfg.executor.shutdown_grace_ms = 200;
    let mut a = start_node(cfg, reg_a).await;
    let api = Api::new(&a.url());
    let id = api
        .submit(&json!({"goal": "release", "steps": [{"id": "l", "handler": "long", "timeout_ms": 600000, "max_attempts": 1}]}))
        .await;
    wait_for("the long task to start", 20, || {
        let s = started.clone();
        async move { (s.load(Ordering::SeqCst) > 0).then_some(()) }
    })
    .await;
    a.shutdown().await;
    // Released at once: another node picks it up without waiting 10 minutes,
    // and the released attempt did not use up the step's only attempt.
    let mut reg_b = Registry::with_builtins();
    reg_b.register("long", |_ctx: TaskContext| async move {
        Ok(json!("finished by b"))
    });
    let b = start_node(node_config("graceful-b", &db), reg_b).await;
    let api_b = Api::new(&b.url());
    let doc = api_b.wait_terminal(&id, 20).await;
    assert_eq!(doc["output"]["l"], "finished by b");
    let l = api_b.lineage(&id).await;
    assert_eq!(
        attempts_of(&l, "l"),
        vec![
            (1, "graceful-a".into(), "abandoned".into()),
            (2, "graceful-b".into(), "completed".into())
        ]
    );
    b.kill().await;
}

#[tokio::test]
async fn long_tasks_extend_their_lease_instead_of_being_reclaimed() {
    let db = fresh_db().await;
    let registry = || {
        let mut r = Registry::with_builtins();
        r.register("slow", |ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(3000)).await;
            Ok(json!({"attempt": ctx.attempt}))
        });
        r
    };
    // A 1.2 s lease and 0.1 s margin: without extensions the task would be
    // visible again after 1.3 s and the other node would claim it.
    let config = |id: &str| {
        let mut c = node_config(id, &db);
        c.executor.lease_ms = 1200;
        c.executor.visibility_margin_ms = 100;
        c
    };
    let a = start_node(config("lease-a"), registry()).await;
    let b = start_node(config("lease-b"), registry()).await;
    let api = Api::new(&a.url());
    let id = api
        .submit(&json!({"goal": "lease", "steps": [{"id": "s", "handler": "slow", "timeout_ms": 20000}]}))
        .await;
    let doc = api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["output"]["s"], json!({"attempt": 1}));
    let l = api.lineage(&id).await;
    assert_eq!(attempts_of(&l, "s").len(), 1, "{l}");
    a.kill().await;
    b.kill().await;
}

/// A new cluster's first submits find their steps by key. Planned while
/// swf.steps was still empty, two statements of the submit path used to
/// scan the whole table on every submit, until the first autoanalyze of
/// the table (a minute or more) replaced the pooled connections' plans.
#[tokio::test]
async fn submits_on_a_fresh_database_do_not_scan_the_steps_table() {
    let db = fresh_db().await;
    let node = start_node(node_config("r1", &db), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    // Concurrent submits, so that the node's pooled connections plan them.
    let ids = futures::future::join_all((0..40).map(|i| {
        let api = api.clone();
        async move {
            api.submit(&json!({"goal": format!("fresh {i}"),
                               "steps": [{"id": "a", "handler": "noop"},
                                         {"id": "b", "handler": "noop", "depends_on": ["a"]}]}))
                .await
        }
    }))
    .await;
    for id in &ids {
        assert_eq!(api.wait_terminal(id, 30).await["status"], "completed");
    }
    // Backends report their table statistics about a second after they go
    // idle: wait until every submit's inserted steps are counted; the same
    // transactions' scans are reported with them.
    let pool = sql(&db).await;
    let stats = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT seq_scan, n_tup_ins FROM pg_stat_user_tables
              WHERE relid = 'swf.steps'::regclass",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    wait_for("the submits' statistics", 30, || async {
        (stats().await.1 >= 80).then_some(())
    })
    .await;
    let (seq_scans, inserted) = stats().await;
    assert_eq!(
        seq_scans, 0,
        "sequential scans of swf.steps after {inserted} steps stored"
    );
    node.kill().await;
}
