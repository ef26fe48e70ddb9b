//! The store against real databases: writes refused by a stale old primary,
//! and a database of the first schema upgrading in place with work in flight.

use serde_json::{json, Value};
use singularity_workflow::store::{
    AttemptRef, ClaimedTask, Finish, FinishResult, Leases, NodeRow, RunDoc, SchemaCompat, Store,
    StoreError,
};
use uuid::Uuid;

use crate::harness::*;

/// The first released schema.
const FIRST_SCHEMA: i64 = 20261128000001;

const LEASES: Leases = Leases {
    lease_ms: 60_000,
    margin_ms: 1_000,
    backoff_base_ms: 10,
    backoff_cap_ms: 10,
};

fn node_row(id: &str) -> NodeRow {
    NodeRow {
        node_id: id.into(),
        node_type: "hybrid".into(),
        roles: vec!["client".into(), "executor".into()],
        region: "us-east".into(),
        api_url: None,
        pools: json!([]),
        version: "test".into(),
        started_at: chrono::Utc::now(),
        last_heartbeat_at: chrono::Utc::now(),
    }
}

async fn claim(store: &Store, epoch: u64) -> Vec<ClaimedTask> {
    store
        .claim_tasks(
            &["default".to_string()],
            10,
            "n1",
            "us-east",
            "default",
            LEASES,
            epoch,
            None,
        )
        .await
        .unwrap()
}

async fn complete(store: &Store, t: &ClaimedTask, epoch: u64) {
    let r = store
        .finish_tasks(
            &[(t.attempt_ref(), Finish::completed(json!(t.step_id)))],
            LEASES,
            epoch,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![FinishResult::Completed],
        "{}/{}",
        t.run_id,
        t.step_id
    );
}

async fn status(store: &Store, run_id: Uuid) -> Value {
    store
        .run_document(run_id, RunDoc::Status)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_stale_primary_refuses_heartbeats_and_queue_creation() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 2).unwrap();
    // The database is at epoch 1; this node has seen epoch 2 elsewhere, so
    // this database is an old primary and must store nothing.
    let err = store.heartbeat(&node_row("stale"), 2).await.unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch(_)), "{err}");
    let err = store
        .ensure_queues(&["stale_q".to_string()], 2)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StaleEpoch(_)), "{err}");
    assert!(store.nodes().await.unwrap().is_empty());
    let queues = store.queue_depths().await.unwrap();
    assert!(!queues.iter().any(|(q, _)| q == "stale_q"), "{queues:?}");

    // The same writes carrying the database's own epoch are stored.
    store.heartbeat(&node_row("current"), 1).await.unwrap();
    store
        .ensure_queues(&["current_q".to_string()], 1)
        .await
        .unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node_id, "current");
    let queues = store.queue_depths().await.unwrap();
    assert!(queues.iter().any(|(q, _)| q == "current_q"), "{queues:?}");
    store.close().await;
}

#[tokio::test]
async fn a_database_of_the_first_schema_upgrades_in_place_with_work_in_flight() {
    let name = format!("u_{}", Uuid::new_v4().simple());
    let admin = Store::connect_lazy(&pg_url("postgres"), 1).unwrap();
    admin.create_database(&name).await.unwrap();
    admin.close().await;
    let store = Store::connect_lazy(&pg_url(&name), 4).unwrap();
    store.migrate_to(FIRST_SCHEMA).await.unwrap();
    assert_eq!(
        store.schema_compat().await.unwrap(),
        SchemaCompat::Older {
            found: FIRST_SCHEMA,
            known: Store::known_schema_version()
        }
    );

    // Work in every state, stored by the first schema: `done` completed,
    // `chain` with its first step completed and its second queued, `long`
    // with its only step claimed and running.
    let done = new_run(json!({"goal": "done", "steps": [{"id": "s", "handler": "noop"}]}));
    let chain = new_run(json!({"goal": "chain", "steps": [
        {"id": "a", "handler": "noop"},
        {"id": "b", "handler": "noop", "depends_on": ["a"]}]}));
    let long = new_run(json!({"goal": "long", "steps": [{"id": "l", "handler": "noop"}]}));
    let ids = [done.run_id, chain.run_id, long.run_id];
    store
        .submit_runs(&[done, chain, long], None, 1)
        .await
        .unwrap();
    // Claimed and completed the way that schema's executor did (this
    // binary's store calls functions that schema lacks).
    let raw = sql(&pg_url(&name)).await;
    let claimed: Vec<ClaimedTask> = sqlx::query_as(
        "SELECT run_id, step_id, attempt, handler, timeout_ms, input
           FROM swf.claim_tasks(ARRAY['default'], 10, 'n1', 'us-east', 'default', $1, $2, 1)",
    )
    .bind(LEASES.lease_ms)
    .bind(LEASES.margin_ms)
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(claimed.len(), 3);
    for t in claimed.iter().filter(|t| t.run_id != ids[2]) {
        let item = json!([{"run_id": t.run_id, "step_id": t.step_id,
                           "attempt": t.attempt, "output": t.step_id}]);
        let (result,): (String,) = sqlx::query_as("SELECT result FROM swf.complete_tasks($1, 1)")
            .bind(item)
            .fetch_one(&raw)
            .await
            .unwrap();
        assert_eq!(result, "completed", "{}/{}", t.run_id, t.step_id);
    }
    raw.close().await;
    let running = claimed.iter().find(|t| t.run_id == ids[2]).unwrap();
    assert_eq!(status(&store, ids[0]).await["status"], "completed");

    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_compat().await.unwrap(),
        SchemaCompat::Current(Store::known_schema_version())
    );

    // The running attempt is still current and finishes; the queued step
    // is claimed and finishes; every run completes.
    let extended = store
        .extend_tasks(&[running.attempt_ref()], LEASES, 1)
        .await
        .unwrap();
    assert_eq!(extended, vec![running.attempt_ref()]);
    let next = claim(&store, 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].run_id, next[0].step_id.as_str()), (ids[1], "b"));
    complete(&store, &next[0], 1).await;
    complete(&store, running, 1).await;
    for id in ids {
        assert_eq!(status(&store, id).await["status"], "completed", "{id}");
    }
    assert_eq!(
        status(&store, ids[1]).await["output"],
        json!({"b": "b"}),
        "the chain's output is its leaf's"
    );

    // The renamed entry points work: a new run is submitted (under the
    // queue cap) and cancelled, and queues are created with the epoch.
    let fresh = new_run(json!({"goal": "after", "steps": [{"id": "s", "handler": "noop"}]}));
    let fresh_id = fresh.run_id;
    store.submit_runs(&[fresh], Some(256), 1).await.unwrap();
    let (cancelled, token) = store.cancel_run(fresh_id, 1).await.unwrap();
    assert_eq!(cancelled.as_deref(), Some("cancelled"));
    assert_eq!(token.epoch, 1);
    store
        .ensure_queues(&["after_q".to_string()], 1)
        .await
        .unwrap();
    let stale = AttemptRef {
        run_id: fresh_id,
        step_id: "s".into(),
        attempt: 1,
    };
    assert_eq!(store.release_tasks(&[stale], 1).await.unwrap(), 0);
    store.close().await;
}

/// Opens a transaction on `c` and claims up to 10 tasks in it, as an
/// executor's claim does; the number claimed.
async fn begin_and_claim(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("BEGIN").execute(&mut *c).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM swf.claim_tasks_reusing(NULL, '{}', ARRAY['default'], 10,
             'n1', 'us-east', 'default', 60000, 1000, 1)",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap()
}

/// `synchronous_commit` as the transaction on `c` would commit now.
async fn commit_mode(c: &mut sqlx::PgConnection) -> String {
    sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *c)
        .await
        .unwrap()
}

/// A claim commits without waiting for its WAL flush, and leaves nothing of
/// that to the next transaction on its connection (a report must wait for
/// its flush); it moves its messages' visibility in place, so no index of
/// the queue gets new entries (migration 22).
#[tokio::test]
async fn a_claim_commits_without_the_flush_and_updates_its_messages_in_place() {
    let db = fresh_db().await;
    let store = Store::connect_lazy(&db, 2).unwrap();
    let runs: Vec<_> = (0..12)
        .map(|i| {
            new_run(json!({"goal": format!("light {i}"),
                           "steps": [{"id": "s", "handler": "noop"}]}))
        })
        .collect();
    store.submit_runs(&runs, None, 1).await.unwrap();
    let raw = sql(&db).await;
    let mut c = raw.acquire().await.unwrap();
    let n = begin_and_claim(&mut c).await;
    assert_eq!(n, 10);
    let (commit, updated, in_place): (String, i64, i64) = sqlx::query_as(
        "SELECT current_setting('synchronous_commit'), n_tup_upd, n_tup_hot_upd
           FROM pg_stat_xact_user_tables WHERE schemaname = 'pgmq' AND relname = 'q_default'",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!(commit, "off", "the claim's commit waits for the flush");
    assert_eq!(updated, 10, "one update per claimed message");
    assert_eq!(in_place, 10, "claimed messages got new index entries");
    sqlx::query("COMMIT").execute(&mut *c).await.unwrap();
    let next = commit_mode(&mut c).await;
    assert_eq!(
        next, "on",
        "the connection's next transaction would not wait"
    );
    // A claim that sets a message apart (here one of a run no longer
    // running) takes the one-message path, which may end steps and runs
    // for good: that claim waits for its flush.
    sqlx::query(
        "UPDATE swf.runs SET status = 'cancelled', completed_at = now()
          WHERE run_id = (SELECT run_id FROM swf.steps WHERE status = 'queued' LIMIT 1)",
    )
    .execute(&mut *c)
    .await
    .unwrap();
    let n = begin_and_claim(&mut c).await;
    assert_eq!(n, 1, "the running run's task");
    let commit = commit_mode(&mut c).await;
    assert_eq!(
        commit, "on",
        "a claim that set a message apart did not wait"
    );
    sqlx::query("COMMIT").execute(&mut *c).await.unwrap();
    drop(c);
    // The claims stand, and the queue has no index on visibility.
    let started: i64 =
        sqlx::query_scalar("SELECT count(*) FROM swf.steps WHERE status = 'started'")
            .fetch_one(&raw)
            .await
            .unwrap();
    assert_eq!(started, 11);
    let vt_indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'pgmq' AND indexdef LIKE '%(vt)%'",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(vt_indexes, 0);
    raw.close().await;
}
