//! The kill -9 suite: a process dies hard in the middle of work, and a
//! Jepsen-style verdict classifies every write the load sent: acknowledged
//! ones must be present (never lost), refused ones absent, and ones whose
//! answer was lost (indeterminate) may go either way. Then the work left
//! behind must finish.
//!
//! - a client node (`swf serve`) SIGKILLed while 8 callers submit;
//! - an executor (`swf serve`, worker) SIGKILLed with tasks in flight: each
//!   runs exactly once more, the dead attempts recorded as abandoned;
//! - the primary's PostgreSQL SIGKILLed and restarted (crash recovery, no
//!   failover) while callers submit;
//! - a replica SIGKILLed and restarted while reads with tokens flow: no
//!   read is stale, and reads come back to the replica.
//!
//! The drilling process killed mid-drill, then `swf drill recover`, is in
//! `recover.rs`.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use singularity_workflow::dev::pgserver::{free_port, PgBinaries, PgServer};
use singularity_workflow::dev::proxy::DelayProxy;
use singularity_workflow::executor::handlers::Registry;
use uuid::Uuid;

use crate::harness::*;

/// What the load saw of each write, by idempotency key.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, Uuid>,
    refused: Vec<String>,
    indeterminate: Vec<String>,
}

/// Submitters that run until `stop`, each write with its own idempotency key.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(base: &str, callers: usize, prefix: &str, wf: fn(&str) -> Value) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        for c in 0..callers {
            let (stop, seen, http) = (stop.clone(), seen.clone(), http.clone());
            let url = format!("{base}/v1/workflows");
            let prefix = prefix.to_string();
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}-{c}-{i}");
                    i += 1;
                    let mut body = wf(&key);
                    body["idempotency_key"] = json!(key);
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = match r.json().await {
                                Ok(v) => v,
                                Err(_) => {
                                    seen.lock().unwrap().indeterminate.push(key);
                                    continue;
                                }
                            };
                            let id = Uuid::parse_str(v["run_id"].as_str().unwrap()).unwrap();
                            seen.lock().unwrap().acked.insert(key, id);
                        }
                        // An answer that says no: nothing may be stored.
                        Ok(r) if r.status().is_client_error() => {
                            seen.lock().unwrap().refused.push(key)
                        }
                        // A 5xx or no answer: either way.
                        _ => {
                            seen.lock().unwrap().indeterminate.push(key);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            });
        }
        Load { stop, seen, tasks }
    }

    fn acked(&self) -> usize {
        self.seen.lock().unwrap().acked.len()
    }

    async fn wait_acked(&self, n: usize, what: &str) {
        wait_for(what, 60, || async { (self.acked() >= n).then_some(()) }).await;
    }

    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The verdict over every write: acknowledged ones present with the run id
/// they were answered with, refused ones absent, no key stored twice.
/// Answers the stored runs by key.
async fn verdict(db: &str, prefix: &str, seen: &Seen) -> HashMap<String, Uuid> {
    let pool = sql(db).await;
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT idempotency_key, run_id FROM swf.runs WHERE idempotency_key LIKE $1 || '-%'",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stored: HashMap<String, Uuid> = rows.iter().cloned().collect();
    assert_eq!(stored.len(), rows.len(), "a key stored twice");
    let lost: Vec<&String> = seen
        .acked
        .iter()
        .filter(|(k, id)| stored.get(*k) != Some(id))
        .map(|(k, _)| k)
        .collect();
    let present_refused: Vec<&String> = seen
        .refused
        .iter()
        .filter(|k| stored.contains_key(*k))
        .collect();
    let indeterminate_present = seen
        .indeterminate
        .iter()
        .filter(|k| stored.contains_key(*k))
        .count();
    eprintln!(
        "verdict {prefix}: {} acknowledged ({} lost), {} refused ({} present), {} indeterminate ({} present)",
        seen.acked.len(),
        lost.len(),
        seen.refused.len(),
        present_refused.len(),
        seen.indeterminate.len(),
        indeterminate_present
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        present_refused.is_empty(),
        "refused writes stored: {present_refused:?}"
    );
    stored
}

/// Waits until no run of `prefix` is running; answers the count by status.
async fn all_finished(db: &str, prefix: &str, secs: u64) -> BTreeMap<String, i64> {
    let pool = sql(db).await;
    let done = wait_for("every run to finish", secs, || {
        let pool = &pool;
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, count(*) FROM swf.runs WHERE idempotency_key LIKE $1 || '-%'
                  GROUP BY status",
            )
            .bind(prefix)
            .fetch_all(pool)
            .await
            .ok()?;
            let by: BTreeMap<String, i64> = rows.into_iter().collect();
            (!by.contains_key("running")).then_some(by)
        }
    })
    .await;
    pool.close().await;
    done
}

fn one_step(key: &str) -> Value {
    json!({"goal": key, "steps": [{"id": "a", "handler": "noop"}]})
}

fn slow_step(key: &str) -> Value {
    json!({"goal": key, "steps": [{"id": "a", "handler": "sleep", "input": {"ms": 400}}]})
}

/// `swf serve` with `extra` config lines on `db`; its API URL.
fn serve(db: &str, id: &str, extra: &str) -> (std::process::Child, String, std::path::PathBuf) {
    serve_with(db, id, extra, "")
}

/// [`serve`], with `executor` lines in its `[executor]` table.
fn serve_with(
    db: &str,
    id: &str,
    extra: &str,
    executor: &str,
) -> (std::process::Child, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("swf-crash-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port().unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"{id}\"\nregion = \"us-east\"\n{extra}\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
             [database]\nurl = \"{db}\"\n[auth]\nenabled = false\n[executor]\nlease_ms = 1500\nheartbeat_interval_ms = 500\n{executor}\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_swf"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SWF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
        .spawn()
        .expect("run swf serve");
    (child, format!("http://127.0.0.1:{port}"), dir)
}

async fn wait_ready(base: &str, dir: &std::path::Path) {
    let http = reqwest::Client::new();
    let log = dir.join("node.log");
    let what = format!("the node to be ready (its log: {})", log.display());
    wait_for(&what, 60, || {
        let http = &http;
        async move {
            let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_node_killed_mid_submit_loses_no_acknowledged_run() {
    let db = fresh_db().await;
    let (mut child, base, dir) = serve(&db, "crash-client", "");
    wait_ready(&base, &dir).await;
    let load = Load::start(&base, 8, "kc", one_step);
    load.wait_acked(300, "300 acknowledged submits").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The callers now meet a dead port; give them a moment to see it.
    wait_for("the callers to meet the dead node", 20, || async {
        (load.seen.lock().unwrap().indeterminate.len() >= 8).then_some(())
    })
    .await;
    let seen = load.finish().await;
    let stored = verdict(&db, "kc", &seen).await;
    // What the dead node acknowledged (and claimed) is finished by another.
    let node = start_node(
        node_config("crash-client-2", &db),
        Registry::with_builtins(),
    )
    .await;
    let by = all_finished(&db, "kc", 60).await;
    assert_eq!(
        by.get("completed").copied(),
        Some(stored.len() as i64),
        "{by:?}"
    );
    node.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// After executor `dead` was killed holding the attempts `cut`: another
/// node finishes the work; every acknowledged run of `prefix` completes,
/// each task exactly once, those cut with their dead attempt recorded
/// (abandoned or timed out) and exactly one more after it.
async fn each_cut_task_runs_exactly_once_more(
    db: &str,
    prefix: &str,
    seen: &Seen,
    dead: &str,
    cut: &[(Uuid, String)],
) {
    let pool = sql(db).await;
    let stored = verdict(db, prefix, seen).await;
    // The node that finishes the work keeps what it buffers for its slots
    // longer before it lets a task go (a margin of 10 s: renewal from
    // 2.5 s, let go unrenewed at 5 s). With the default 2 s, a renewal slower
    // than half a second, as on a CI machine running every test at once,
    // let a task go and recorded it abandoned although it never ran; that
    // is this node's buffer, not the kill under test.
    let mut cfg = node_config("crash-worker-2", db);
    cfg.executor.visibility_margin_ms = 10_000;
    let other = start_node(cfg, Registry::with_builtins()).await;
    let by = all_finished(db, prefix, 90).await;
    assert_eq!(
        by.get("completed").copied(),
        Some(stored.len() as i64),
        "{by:?}"
    );
    // Every task completed exactly once; each one cut short has its dead
    // attempt recorded (not completed) and exactly one more after it.
    let per_step: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT a.run_id, a.step_id, count(*) FILTER (WHERE a.outcome = 'completed'),
                count(*)
           FROM swf.attempts a JOIN swf.runs r USING (run_id)
          WHERE r.idempotency_key LIKE $1 || '-%' GROUP BY 1, 2",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_step.len(), stored.len());
    for (run, step, completed, attempts) in &per_step {
        let history: Vec<(i32, String, String, Option<String>)> = sqlx::query_as(
            "SELECT attempt, node_id, outcome, error::text || ' ' || started_at::text || ' ' || coalesce(finished_at::text, '') FROM swf.attempts
              WHERE run_id = $1 AND step_id = $2 ORDER BY attempt",
        )
        .bind(run)
        .bind(step)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            *completed, 1,
            "{run}/{step} completed {completed} times: {history:?}"
        );
        let was_cut = cut.iter().any(|(r, s)| r == run && s == step);
        assert_eq!(
            *attempts,
            if was_cut { 2 } else { 1 },
            "{run}/{step}: {attempts} attempts: {history:?}"
        );
    }
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM swf.attempts WHERE node_id = $1 AND outcome <> 'completed'",
    )
    .bind(dead)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(outcomes.len(), cut.len());
    assert!(
        outcomes
            .iter()
            .all(|o| o == "abandoned" || o == "timed_out"),
        "{outcomes:?}"
    );
    pool.close().await;
    other.kill().await;
}

#[tokio::test]
async fn an_executor_killed_with_tasks_in_flight_runs_each_exactly_once_more() {
    let db = fresh_db().await;
    let edge = start_node(
        edge_config_of(&node_config("crash-edge", &db)),
        Registry::with_builtins(),
    )
    .await;
    let (mut worker, _, dir) = serve(
        &db,
        "crash-worker",
        "enable_client = false\n[worker_pools.default]\nsize = 8",
    );
    let load = Load::start(&edge.url(), 4, "kx", slow_step);
    load.wait_acked(40, "40 acknowledged submits").await;
    let seen = load.finish().await;
    let pool = sql(&db).await;
    // Kill it while it runs tasks (attempts started, not finished).
    wait_for("the worker to run tasks", 60, || {
        let pool = &pool;
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM swf.attempts WHERE node_id = 'crash-worker' AND finished_at IS NULL",
            )
            .fetch_one(pool)
            .await
            .ok()?;
            (n >= 4).then_some(())
        }
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let cut: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT run_id, step_id FROM swf.attempts WHERE node_id = 'crash-worker' AND finished_at IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!cut.is_empty());
    each_cut_task_runs_exactly_once_more(&db, "kx", &seen, "crash-worker", &cut).await;
    edge.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 15: an executor 40 ms (one way) from its primary, its prefetch
/// buffer full of claimed tasks waiting for its two slots, is SIGKILLed.
/// Every task it held, buffered or running, runs exactly once more
/// elsewhere, its dead attempt recorded.
#[tokio::test]
async fn a_remote_executor_killed_with_a_full_buffer_runs_each_held_task_exactly_once_more() {
    let db = fresh_db().await;
    let proxy = DelayProxy::start(
        ([127, 0, 0, 1], 0).into(),
        ([127, 0, 0, 1], port_of(&db)).into(),
        Duration::from_millis(40),
        "wan",
    )
    .await
    .unwrap();
    let far = through(&db, &proxy);
    let edge = start_node(
        edge_config_of(&node_config("crash-edge", &db)),
        Registry::with_builtins(),
    )
    .await;
    // Two slots, and a buffer of at least 16 claimed tasks ahead of them.
    let (mut worker, _, dir) = serve_with(
        &far,
        "remote-worker",
        "enable_client = false\n[worker_pools.default]\nsize = 2",
        "prefetch_min = 16",
    );
    let load = Load::start(&edge.url(), 4, "kb", slow_step);
    load.wait_acked(40, "40 acknowledged submits").await;
    let seen = load.finish().await;
    let pool = sql(&db).await;
    let held = || {
        let pool = &pool;
        async move {
            sqlx::query_as::<_, (Uuid, String)>(
                "SELECT run_id, step_id FROM swf.attempts
                  WHERE node_id = 'remote-worker' AND finished_at IS NULL",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        }
    };
    // Its claims hold more than its slots run: the rest wait in its buffer.
    wait_for("the remote worker to hold a full buffer", 60, || async {
        (held().await.len() >= 12).then_some(())
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let cut = held().await;
    assert!(cut.len() >= 12, "held {} tasks", cut.len());
    pool.close().await;
    each_cut_task_runs_exactly_once_more(&db, "kb", &seen, "remote-worker", &cut).await;
    edge.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_primary_killed_and_restarted_loses_no_acknowledged_run() {
    let dir = std::env::temp_dir().join(format!("swf-crash-pg-{}", Uuid::new_v4().simple()));
    let mut pg = singularity_workflow::dev::start_primary(&dir, "crash-pg", None)
        .await
        .unwrap();
    let port = pg.port();
    let db = pg.url(singularity_workflow::dev::DEV_DATABASE);
    singularity_workflow::dev::prepare_database(
        &pg.url("postgres"),
        &db,
        singularity_workflow::dev::DEV_DATABASE,
    )
    .await
    .unwrap();
    let node = start_node(node_config("crash-pg-node", &db), Registry::with_builtins()).await;
    let load = Load::start(&node.url(), 4, "kp", one_step);
    load.wait_acked(200, "200 acknowledged submits").await;
    let data = pg.data_dir().to_path_buf();
    tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .unwrap();
    let before = load.acked();
    // Crash recovery on the same port; the callers carry on meanwhile.
    let pg = tokio::task::spawn_blocking(move || {
        let bins = PgBinaries::locate().unwrap();
        PgServer::start_on(&bins, &data, "crash-pg", Some(port)).unwrap()
    })
    .await
    .unwrap();
    load.wait_acked(
        before + 200,
        "200 more acknowledged submits after the restart",
    )
    .await;
    let seen = load.finish().await;
    let stored = verdict(&db, "kp", &seen).await;
    let by = all_finished(&db, "kp", 60).await;
    assert_eq!(
        by.get("completed").copied(),
        Some(stored.len() as i64),
        "{by:?}"
    );
    node.kill().await;
    let mut pg = pg;
    let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_replica_killed_and_restarted_while_reads_flow_serves_no_stale_read() {
    let db = fresh_db().await;
    let (mut replica, eu_db) = replica_of("crash-replica", &db).await;
    let port = replica.port();
    let (us_cfg, eu_cfg) = two_regions(&db, &eu_db);
    let us = start_node(us_cfg, Registry::with_builtins()).await;
    let eu = start_node(eu_cfg, Registry::with_builtins()).await;
    let (us_api, eu_api) = (Api::new(&us.url()), Api::new(&eu.url()));

    // Readers: submit through us-east, read through eu-west with the token.
    let stop = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, tally) = (stop.clone(), tally.clone());
        let (us_api, eu_api) = (us_api.clone(), eu_api.clone());
        readers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = us_api.post("/v1/workflows", &one_step("kr")).await;
                let Some(token) = a.header("swf-consistency-token").map(str::to_string) else {
                    *tally
                        .lock()
                        .unwrap()
                        .entry("submit failed".into())
                        .or_default() += 1;
                    continue;
                };
                let id = a.body["run_id"].as_str().unwrap().to_string();
                let r = eu_api
                    .send(
                        eu_api
                            .http
                            .get(format!("{}/v1/workflows/{id}", eu_api.base))
                            .header("swf-consistency-token", token),
                    )
                    .await;
                let what = match r.status {
                    200 => format!("read from {}", r.header("swf-read-source").unwrap_or("?")),
                    404 => "stale".to_string(),
                    s => format!("failed {s} {}", r.code()),
                };
                *tally.lock().unwrap().entry(what).or_default() += 1;
            }
        });
    }
    let count = |what: &str| tally.lock().unwrap().get(what).copied().unwrap_or(0);
    wait_for("reads from the replica", 30, || async {
        (count("read from replica") >= 50).then_some(())
    })
    .await;
    replica.kill();
    let primary_before = count("read from primary");
    wait_for(
        "reads going to the primary while the replica is down",
        30,
        || async { (count("read from primary") >= primary_before + 50).then_some(()) },
    )
    .await;
    // Restarted on its port: it catches up and serves again.
    let data = replica.data_dir().to_path_buf();
    let replica = tokio::task::spawn_blocking(move || {
        let bins = PgBinaries::locate().unwrap();
        PgServer::start_on(&bins, &data, "crash-replica", Some(port)).unwrap()
    })
    .await
    .unwrap();
    let from_replica = count("read from replica");
    wait_for("reads from the restarted replica", 60, || async {
        (count("read from replica") >= from_replica + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while readers.join_next().await.is_some() {}
    let tally = tally.lock().unwrap().clone();
    eprintln!("replica crash reads: {tally:?}");
    assert_eq!(tally.get("stale"), None, "stale token reads: {tally:?}");
    drop(replica);
    us.kill().await;
    eu.kill().await;
}
