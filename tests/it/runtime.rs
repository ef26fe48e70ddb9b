//! Node runtime: a node's shutdown finishes its in-flight tasks (waiting on
//! them, not on a clock), and the router never waits on a replica without a
//! deadline: a frozen replica turns unhealthy and reads go to the primary
//! until it answers again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::{Registry, TaskContext};
use tokio::sync::Notify;

use crate::harness::*;

/// A handler that runs until the test lets it finish.
fn gated(started: Arc<Notify>, finish: Arc<Notify>) -> Registry {
    let mut r = Registry::with_builtins();
    r.register("gated", move |ctx: TaskContext| {
        let (started, finish) = (started.clone(), finish.clone());
        async move {
            started.notify_one();
            finish.notified().await;
            Ok(json!({"finished_attempt": ctx.attempt}))
        }
    });
    r
}

/// True once nothing accepts connections at `base` any more.
async fn stopped_serving(base: &str) -> bool {
    // A fresh client each time: no pooled connection hides a closed listener.
    reqwest::Client::new()
        .get(format!("{base}/health"))
        .send()
        .await
        .is_err()
}

#[tokio::test]
async fn shutdown_finishes_in_flight_tasks_without_waiting_out_the_grace() {
    let db = fresh_db().await;
    let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut cfg = node_config("drain-a", &db);
    // Far longer than the test may take: a drain that waited for the grace
    // deadline instead of the task would not end within the deadline below.
    cfg.executor.shutdown_grace_ms = 600_000;
    let mut a = start_node(cfg, gated(started.clone(), finish.clone())).await;
    let base = a.url();
    let api = Api::new(&base);
    let id = api
        .submit(&json!({"goal": "drain", "steps": [{"id": "g", "handler": "gated", "timeout_ms": 600000, "max_attempts": 1}]}))
        .await;
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the gated task to start");

    // Shut down while the task runs; once the node has stopped serving (so
    // shutdown is under way), let the task finish.
    let release = async {
        wait_for("the node to stop serving", 30, || {
            let base = base.clone();
            async move { stopped_serving(&base).await.then_some(()) }
        })
        .await;
        finish.notify_one();
    };
    let (stopped, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), a.shutdown()),
        release
    );
    stopped.expect("shutdown to end once its in-flight task finished");

    // The task finished on the node that was stopping and its outcome was
    // stored before shutdown returned: completed, one attempt, not released.
    let b = start_node(node_config("drain-b", &db), Registry::with_builtins()).await;
    let api_b = Api::new(&b.url());
    let doc = api_b.status(&id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["output"]["g"], json!({"finished_attempt": 1}));
    let l = api_b.lineage(&id).await;
    assert_eq!(
        attempts_of(&l, "g"),
        vec![(1, "drain-a".into(), "completed".into())]
    );
    b.kill().await;
}

/// SIGSTOPs a PostgreSQL server (the postmaster, then every process it
/// forked: each backend runs in a session of its own, so signalling the
/// process group is not enough) until dropped, which SIGCONTs them (also
/// when the test fails).
struct Frozen(Vec<libc::pid_t>);

impl Frozen {
    fn freeze(postmaster: u32) -> Frozen {
        let postmaster = postmaster as libc::pid_t;
        // Stopped first, it forks no new backend while the others stop.
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        for &pid in &pids {
            // SAFETY: plain syscall on a process of a server this test started.
            let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
            assert_eq!(rc, 0, "SIGSTOP {pid}: {}", std::io::Error::last_os_error());
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Processes whose parent is `parent` (from /proc/<pid>/stat).
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Where a token-less list read was served from (lists are never cached).
async fn list_source(api: &Api) -> Option<String> {
    let a = api.get("/v1/workflows?limit=1").await;
    assert_eq!(a.status, 200, "list: {}", a.body);
    a.header("swf-read-source").map(str::to_string)
}

async fn local_healthy(api: &Api) -> Option<bool> {
    api.get("/health/info").await.body["database"]["local"]["healthy"].as_bool()
}

#[tokio::test]
async fn a_frozen_replica_turns_unhealthy_and_reads_go_to_the_primary() {
    let db = fresh_db().await;
    let (replica, eu_db) = replica_of("frozen", &db).await;
    let (_, mut eu) = two_regions(&db, &eu_db);
    eu.enable_executor = false;
    let mut node = start_node(eu, Registry::with_builtins()).await;
    let api = Api::new(&node.url());
    let wf: Value = json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}]});
    api.submit(&wf).await;
    wait_for("a read served by the replica", 30, || {
        let api = api.clone();
        async move { (list_source(&api).await.as_deref() == Some("replica")).then_some(()) }
    })
    .await;

    // Frozen: no answer, no error. The tracker's deadline marks it unhealthy.
    let frozen = Frozen::freeze(replica.pid());
    wait_for("the frozen replica to turn unhealthy", 20, || {
        let api = api.clone();
        async move { (local_healthy(&api).await == Some(false)).then_some(()) }
    })
    .await;
    let a = api.get("/v1/workflows?limit=1").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("swf-read-source"), Some("primary"));
    assert_eq!(
        a.body["runs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.body
    );

    // Thawed: it answers again and serves reads again.
    drop(frozen);
    wait_for("the replica to turn healthy again", 30, || {
        let api = api.clone();
        async move { (local_healthy(&api).await == Some(true)).then_some(()) }
    })
    .await;
    wait_for("a read served by the replica again", 30, || {
        let api = api.clone();
        async move { (list_source(&api).await.as_deref() == Some("replica")).then_some(()) }
    })
    .await;
    node.shutdown().await;
}
