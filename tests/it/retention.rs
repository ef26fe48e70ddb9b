//! Retention of finished runs: a node deletes completed, failed and
//! cancelled runs past `retention.finished_after` with everything they own,
//! in batches that never wait on locked runs, and keeps the rest.
//! Runs are made "old" by moving their timestamps back in SQL, so nothing
//! here depends on how fast the machine is.

use std::time::Duration;

use serde_json::{json, Value};
use singularity_workflow::config::Config;
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::store::{Store, StoreError};
use uuid::Uuid;

use crate::harness::*;

/// A test node whose retention deletes runs finished over an hour ago.
fn retaining(id: &str, db: &str, batch: usize, interval_ms: u64) -> Config {
    let mut cfg = node_config(id, db);
    cfg.retention.finished_after = Some(Duration::from_secs(3600));
    cfg.retention.batch_size = batch;
    cfg.retention.interval_ms = interval_ms;
    cfg
}

/// Moves the runs' creation (and finish, when they finished) two hours back.
async fn age(db: &str, runs: &[Uuid]) {
    let pool = sql(db).await;
    sqlx::query(
        "UPDATE swf.runs SET created_at = now() - interval '2 hours',
                completed_at = CASE WHEN completed_at IS NOT NULL
                                    THEN now() - interval '2 hours' + interval '1 second' END
          WHERE run_id = ANY ($1)",
    )
    .bind(runs)
    .execute(&pool)
    .await
    .expect("age runs");
    pool.close().await;
}

/// Rows of `runs` in each table a run owns: runs, steps, attempts, deps, signals.
async fn owned_rows(db: &str, runs: &[Uuid]) -> [i64; 5] {
    let pool = sql(db).await;
    let mut counts = [0; 5];
    for (i, table) in ["runs", "steps", "attempts", "deps", "signals"]
        .iter()
        .enumerate()
    {
        counts[i] = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM swf.{table} WHERE run_id = ANY ($1)"
        ))
        .bind(runs)
        .fetch_one(&pool)
        .await
        .expect("count owned rows");
    }
    pool.close().await;
    counts
}

async fn submit_finished(api: &Api, wf: &Value, want: &str) -> Uuid {
    let id = api.submit(wf).await;
    let doc = api.wait_terminal(&id, 30).await;
    assert_eq!(doc["status"], want, "{doc}");
    id.parse().expect("run id")
}

/// `n` completed one-step runs, made by a node without retention.
async fn completed_runs(db: &str, n: usize) -> Vec<Uuid> {
    let mut cfg = node_config("maker", db);
    cfg.retention.finished_after = None;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let mut runs = Vec::new();
    for _ in 0..n {
        let wf = json!({"goal": "old", "steps": [{"id": "a", "handler": "noop"}]});
        runs.push(submit_finished(&api, &wf, "completed").await);
    }
    node.kill().await;
    runs
}

#[tokio::test]
async fn finished_runs_past_the_cutoff_go_with_everything_they_own_and_the_rest_stay() {
    let db = fresh_db().await;
    let node = start_node(retaining("keeper", &db, 2, 100), Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let chain = json!({"goal": "chain", "steps": [
        {"id": "a", "handler": "noop"},
        {"id": "b", "handler": "noop", "depends_on": ["a"]}]});
    // A queue no pool serves: its runs stay running until cancelled.
    let idle = json!({"goal": "idle", "steps": [{"id": "a", "handler": "noop", "queue": "idle"}]});
    let fails = json!({"goal": "fails", "steps": [
        {"id": "a", "handler": "fail", "max_attempts": 1, "input": {"message": "no"}}]});

    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(submit_finished(&api, &chain, "completed").await);
    }
    old.push(submit_finished(&api, &fails, "failed").await);
    let cancelled = api.submit(&idle).await;
    let a = api
        .post(&format!("/v1/workflows/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(a.status, 200, "cancel: {}", a.body);
    assert_eq!(api.status(&cancelled).await["status"], "cancelled");
    old.push(cancelled.parse().unwrap());
    let recent = submit_finished(&api, &chain, "completed").await;
    let running: Uuid = api.submit(&idle).await.parse().unwrap();

    // Every old run has been read through the node (so its documents are
    // cached), owns rows in every table, and one has a signal.
    let pool = sql(&db).await;
    sqlx::query("INSERT INTO swf.signals (run_id, name, payload) VALUES ($1, 'go', '{}')")
        .bind(old[0])
        .execute(&pool)
        .await
        .expect("store a signal");
    // Concurrency slots: one whose lease ended days ago (dead; a key used
    // once), one whose lease has not ended.
    sqlx::query(
        "INSERT INTO swf.key_slots (key, slot, run_id, step_id, attempt, lease_until)
         VALUES ('gone', 1, $1, 's', 1, now() - interval '3 days'),
                ('held', 1, $1, 's', 1, now() + interval '1 hour')",
    )
    .bind(old[0])
    .execute(&pool)
    .await
    .expect("store slots");
    pool.close().await;
    for id in &old {
        assert_eq!(api.get(&format!("/v1/workflows/{id}")).await.status, 200);
        assert_eq!(
            api.get(&format!("/v1/workflows/{id}/lineage")).await.status,
            200
        );
    }
    let before = owned_rows(&db, &old).await;
    assert!(
        before.iter().all(|&n| n > 0),
        "old runs own rows: {before:?}"
    );
    let kept = [recent, running];
    let kept_before = owned_rows(&db, &kept).await;

    // Two hours back: past the cutoff, the running one included.
    let mut aged = old.clone();
    aged.push(running);
    age(&db, &aged).await;

    let db2 = db.clone();
    let old2 = old.clone();
    wait_for("retention to delete the old finished runs", 30, move || {
        let (db, old) = (db2.clone(), old2.clone());
        async move { (owned_rows(&db, &old).await[0] == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        owned_rows(&db, &old).await,
        [0; 5],
        "everything they own goes too"
    );
    assert_eq!(
        owned_rows(&db, &kept).await,
        kept_before,
        "the rest stays whole"
    );
    let slots: Vec<String> = sqlx::query_scalar("SELECT key FROM swf.key_slots ORDER BY key")
        .fetch_all(&sql(&db).await)
        .await
        .unwrap();
    assert_eq!(
        slots,
        ["held"],
        "slots dead before the cutoff go, the others stay"
    );

    // Through the API: a deleted run is gone, even from the node's cache.
    for id in &old {
        for path in [
            format!("/v1/workflows/{id}"),
            format!("/v1/workflows/{id}/lineage"),
        ] {
            let a = api.get(&path).await;
            assert_eq!((a.status, a.code()), (404, "not_found"), "{path}");
        }
    }
    assert_eq!(api.status(&recent.to_string()).await["status"], "completed");
    assert_eq!(api.status(&running.to_string()).await["status"], "running");

    let text = api.get("/metrics").await.body;
    let text = text.as_str().unwrap_or("");
    assert!(
        text.contains("# HELP swf_retention_deleted_runs_total "),
        "{text}"
    );
    let deleted: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("swf_retention_deleted_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the deleted-runs counter");
    assert!(deleted >= old.len() as f64, "counter {deleted}");
    node.kill().await;
}

#[tokio::test]
async fn a_backlog_is_deleted_batch_after_batch_without_waiting_for_the_interval() {
    let db = fresh_db().await;
    let runs = completed_runs(&db, 5).await;
    age(&db, &runs).await;
    // Batches of 2 and an interval longer than the test: only going on at
    // once after each full batch deletes all 5.
    let node = start_node(
        retaining("sweeper", &db, 2, 3_600_000),
        Registry::with_builtins(),
    )
    .await;
    let db2 = db.clone();
    let runs2 = runs.clone();
    wait_for("the whole backlog to be deleted", 30, move || {
        let (db, runs) = (db2.clone(), runs2.clone());
        async move { (owned_rows(&db, &runs).await == [0; 5]).then_some(()) }
    })
    .await;
    node.kill().await;
}

#[tokio::test]
async fn a_purge_skips_runs_others_hold_and_a_stale_epoch_deletes_nothing() {
    let db = fresh_db().await;
    let runs = completed_runs(&db, 3).await;
    age(&db, &runs).await;
    let store = Store::connect_lazy(&db, 2).expect("store");
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);

    // A database of epoch 1 refuses a node that has seen epoch 2.
    let stale = store.purge_finished(cutoff, 100, 2).await;
    assert!(matches!(stale, Err(StoreError::StaleEpoch(_))), "{stale:?}");
    assert_eq!(
        owned_rows(&db, &runs).await[0],
        3,
        "a refused purge deletes nothing"
    );

    // A run another transaction holds is skipped, not waited for.
    let pool = sql(&db).await;
    let mut held = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM swf.runs WHERE run_id = $1 FOR UPDATE")
        .bind(runs[0])
        .execute(&mut *held)
        .await
        .expect("hold a run");
    let purged = tokio::time::timeout(
        Duration::from_secs(30),
        store.purge_finished(cutoff, 100, 1),
    )
    .await
    .expect("the purge did not wait on the held run")
    .expect("purge");
    let mut want = runs[1..].to_vec();
    want.sort();
    let mut got = purged.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(owned_rows(&db, &runs[..1]).await[..3], [1, 1, 1]);
    held.commit().await.expect("commit");

    // Released, it goes with the next batch; then there is nothing left.
    assert_eq!(
        store.purge_finished(cutoff, 100, 1).await.unwrap(),
        vec![runs[0]]
    );
    assert!(store
        .purge_finished(cutoff, 100, 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(owned_rows(&db, &runs).await, [0; 5]);
    pool.close().await;
    store.close().await;
}
