//! Concurrency keys (DESIGN 10.2): at most `limit` tasks of a key run at
//! once across every node, and a slot held by an executor that died frees
//! with its lease.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use singularity_workflow::executor::handlers::{Registry, TaskContext};
use singularity_workflow::store::{AttemptRef, ClaimedTask, Claimer, Finish, Leases, Store};

use crate::harness::*;

/// `track`: counts the tasks running at once (recording the most seen)
/// for a while, then returns.
fn tracking(now: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Registry {
    let mut reg = Registry::with_builtins();
    reg.register("track", move |_ctx: TaskContext| {
        let (now, most) = (now.clone(), most.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            // Work that takes a while, so tasks would overlap if allowed.
            tokio::time::sleep(Duration::from_millis(150)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(n))
        }
    });
    reg
}

#[tokio::test]
async fn a_key_limits_running_tasks_across_nodes() {
    let db = fresh_db().await;
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let a = start_node(
        node_config("keys-a", &db),
        tracking(now.clone(), most.clone()),
    )
    .await;
    let b = start_node(
        node_config("keys-b", &db),
        tracking(now.clone(), most.clone()),
    )
    .await;
    let api = Api::new(&a.url());
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            api.submit(&json!({"goal": format!("keyed {i}"),
                               "concurrency": {"key": "tenant-1", "limit": 2},
                               "steps": [{"id": "s", "handler": "track"}]}))
                .await,
        );
    }
    // Unkeyed work on the same queue is not held back by the key.
    let free = api
        .submit(&json!({"goal": "free", "steps": [{"id": "s", "handler": "noop"}]}))
        .await;
    assert_eq!(api.wait_terminal(&free, 30).await["status"], "completed");
    for id in &ids {
        assert_eq!(api.wait_terminal(id, 60).await["status"], "completed");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} tasks of a key with limit 2 ran at once");
    // Bad keys: 400 naming the field, nothing stored.
    for (wf, names) in [
        (
            json!({"goal": "g", "concurrency": {"key": "k", "limit": 0},
                   "steps": [{"id": "s", "handler": "noop"}]}),
            "concurrency.limit",
        ),
        (
            json!({"goal": "g", "steps": [{"id": "s", "handler": "noop",
                   "concurrency": {"key": "", "limit": 3}}]}),
            "concurrency.key",
        ),
    ] {
        let r = api.post("/v1/workflows", &wf).await;
        assert_eq!(r.status, 400, "{wf}: {}", r.body);
        assert!(r.body.to_string().contains(names), "{wf}: {}", r.body);
    }
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn a_slot_held_by_a_dead_executor_frees_with_its_lease() {
    let db = fresh_db().await;
    let mut reg_a = Registry::with_builtins();
    reg_a.register("work", |_ctx: TaskContext| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(json!("never"))
    });
    let mut reg_b = Registry::with_builtins();
    reg_b.register("work", |ctx: TaskContext| async move {
        Ok(json!({"by": "b", "attempt": ctx.attempt}))
    });
    let a = start_node(node_config("keys-dead-a", &db), reg_a).await;
    let api_a = Api::new(&a.url());
    let key = json!({"key": "only-one", "limit": 1});
    let first = api_a
        .submit(&json!({"goal": "holder", "concurrency": key,
                        "steps": [{"id": "w", "handler": "work", "timeout_ms": 2000}]}))
        .await;
    wait_for("node A to claim the task", 20, || {
        let api = api_a.clone();
        let id = first.clone();
        async move { (!attempts_of(&api.lineage(&id).await, "w").is_empty()).then_some(()) }
    })
    .await;
    let second = api_a
        .submit(&json!({"goal": "waiter", "concurrency": key,
                        "steps": [{"id": "w", "handler": "work", "timeout_ms": 2000}]}))
        .await;
    a.kill().await; // dies holding the key's only slot
    let b = start_node(node_config("keys-dead-b", &db), reg_b).await;
    let api_b = Api::new(&b.url());
    for id in [&first, &second] {
        let doc = api_b.wait_terminal(id, 30).await;
        assert_eq!(doc["status"], "completed", "{doc}");
    }
    let l = api_b.lineage(&first).await;
    assert_eq!(
        attempts_of(&l, "w"),
        vec![
            (1, "keys-dead-a".into(), "abandoned".into()),
            (2, "keys-dead-b".into(), "completed".into())
        ]
    );
    b.kill().await;
}

#[tokio::test]
async fn a_key_at_its_limit_does_not_hold_back_other_keys_behind_it() {
    let db = fresh_db().await;
    let mut reg = Registry::with_builtins();
    reg.register("slow", |_ctx: TaskContext| async move {
        // Work that takes a while, so key A's backlog lasts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(json!(null))
    });
    let mut cfg = node_config("keys-hol", &db);
    for p in cfg.worker_pools.values_mut() {
        p.size = 4;
    }
    // Claims of at most 4, so the head of the queue a claim looks at (twice
    // that) holds only key A's tasks.
    cfg.executor.claim_batch = 4;
    let node = start_node(cfg, reg).await;
    let api = Api::new(&node.url());
    let p = api.post("/v1/queues/default/pause", &json!({})).await;
    assert_eq!(p.status, 200, "{}", p.body);
    // Key A (limit 1): 40 tasks queued first, so they fill the head of the
    // queue; then one task of key B.
    let mut a_ids = Vec::new();
    for i in 0..40 {
        a_ids.push(
            api.submit(
                &json!({"goal": format!("a {i}"), "concurrency": {"key": "A", "limit": 1},
                               "steps": [{"id": "s", "handler": "slow"}]}),
            )
            .await,
        );
    }
    let b = api
        .submit(
            &json!({"goal": "b", "concurrency": {"key": "B", "limit": 1},
                        "steps": [{"id": "s", "handler": "noop"}]}),
        )
        .await;
    let r = api.post("/v1/queues/default/resume", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.wait_terminal(&b, 30).await["status"], "completed");
    let mut a_done = 0;
    for id in &a_ids {
        if api.status(id).await["status"] == "completed" {
            a_done += 1;
        }
    }
    // Without a look past the head of the queue, B would start only once
    // fewer of A's tasks than a claim's window were left (~32 done).
    assert!(
        a_done < 20,
        "key B waited behind key A's backlog ({a_done} of 40 done first)"
    );
    for id in &a_ids {
        assert_eq!(api.wait_terminal(id, 60).await["status"], "completed");
    }
    node.kill().await;
}

/// A node's claim may give the slots of its own attempts whose handlers
/// have ended (outcomes not recorded yet) to new tasks; nothing else frees
/// a slot early, and a late report of such an attempt frees nothing twice.
#[tokio::test]
async fn a_claim_reuses_the_slots_of_attempts_it_names_as_ended() {
    const LEASES: Leases = Leases {
        lease_ms: 60_000,
        margin_ms: 1,
        backoff_base_ms: 1_000,
        backoff_cap_ms: 1_000,
    };
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 4).unwrap();
    let keyed = |i: usize| {
        new_run(
            json!({"goal": format!("keyed {i}"), "concurrency": {"key": "r", "limit": 2},
                       "steps": [{"id": "s", "handler": "noop"}]}),
        )
    };
    let mut runs: Vec<_> = (0..4).map(keyed).collect();
    runs.push(new_run(
        json!({"goal": "free", "steps": [{"id": "s", "handler": "noop"}]}),
    ));
    store.submit_runs(&runs, None, 1).await.unwrap();
    let mqs = vec!["default".to_string()];
    let by = Claimer {
        node_id: "n1",
        region: "us-east",
        pool: "default",
    };
    let claim = |ended: Vec<String>| {
        let (store, mqs) = (store.clone(), mqs.clone());
        async move {
            store
                .claim_tasks_reusing(&mqs, 10, by, LEASES, 1, None, &ended)
                .await
                .unwrap()
        }
    };
    let first = claim(vec![]).await;
    let keys: Vec<Option<&str>> = first.iter().map(|t| t.concurrency_key.as_deref()).collect();
    assert_eq!(
        first.len(),
        3,
        "two keyed tasks (the limit) and the free one"
    );
    assert_eq!(
        keys.iter().filter(|k| **k == Some("r")).count(),
        2,
        "{keys:?}"
    );
    assert_eq!(keys.iter().filter(|k| k.is_none()).count(), 1, "{keys:?}");
    let held: Vec<&ClaimedTask> = first
        .iter()
        .filter(|t| t.concurrency_key.is_some())
        .collect();
    assert!(claim(vec![]).await.is_empty(), "the key is at its limit");
    // Naming an attempt that does not hold the slot frees nothing.
    let wrong = AttemptRef {
        attempt: 2,
        ..held[0].attempt_ref()
    };
    assert!(claim(vec![wrong.ended_name()]).await.is_empty());
    // Naming one that does gives its slot to the next task of the key.
    let reused = claim(vec![held[0].attempt_ref().ended_name()]).await;
    assert_eq!(reused.len(), 1, "one slot named, one task");
    assert_eq!(reused[0].concurrency_key.as_deref(), Some("r"));
    // The slot is the new task's now: naming the attempt again, or its
    // late report, frees nothing, and the key stays at its limit.
    assert!(claim(vec![]).await.is_empty());
    assert!(
        claim(vec![held[0].attempt_ref().ended_name()])
            .await
            .is_empty(),
        "a named attempt freed its old slot twice"
    );
    // A NULL among the names (a caller of the SQL function) frees nothing.
    let raw = sql(&db).await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM swf.claim_tasks_reusing(NULL, ARRAY[NULL]::text[],
             ARRAY['default'], 10, 'n1', 'us-east', 'default', 60000, 1, 1)",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(n, 0, "a NULL name freed the key's slots");
    raw.close().await;
    let done = store
        .finish_tasks(
            &[(held[0].attempt_ref(), Finish::completed(json!("late")))],
            LEASES,
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        done,
        vec![singularity_workflow::store::FinishResult::Completed]
    );
    assert!(
        claim(vec![]).await.is_empty(),
        "a late report of a reused slot's attempt freed it twice"
    );
    // The new task's own completion frees its slot, as before.
    store
        .finish_tasks(
            &[(reused[0].attempt_ref(), Finish::completed(json!("done")))],
            LEASES,
            1,
        )
        .await
        .unwrap();
    let last = claim(vec![]).await;
    assert_eq!(last.len(), 1, "the fourth keyed task takes the freed slot");
}
