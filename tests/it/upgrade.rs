//! In-place upgrade to engine v2: a database of the schema released binaries
//! run (migrations through 20261203000004), holding completed, failed and
//! running runs written through that schema's own entry points, is migrated;
//! its finished runs read back as they were, and its running runs complete
//! on a node of this version with their lineage intact.

use std::sync::Arc;

use serde_json::{json, Value};
use singularity_workflow::executor::handlers::{Registry, TaskContext};
use singularity_workflow::node::Node;
use singularity_workflow::store::{SchemaCompat, Store};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::harness::*;

/// The newest schema of a released binary, the one before engine v2.
const RELEASED_SCHEMA: i64 = 20261203000004;
/// The node of the released binary that wrote the work; it is gone after
/// the upgrade.
const OLD_NODE: &str = "old-node-1";
const NEW_NODE: &str = "v2-node-1";
const EPOCH: i64 = 1;
/// The lease the old node claims `c2` with: its attempt expires within
/// seconds of the upgrade, and the new node takes the task over.
const OLD_LEASE_MS: i32 = 2_000;

/// A node of the released binary, reduced to the SQL it sent: the calls
/// and JSON shapes of that version's `src/store/engine.rs`, verbatim.
struct OldNode {
    pool: sqlx::PgPool,
}

/// A claimed attempt: (run_id, step_id, attempt).
type Claimed = (Uuid, String, i32);

impl OldNode {
    /// `CALL swf.submit_runs` with one run; asserts it was stored.
    async fn submit(&self, run: &Value) {
        let row: (Value,) = sqlx::query_as("CALL swf.submit_runs($1, $2)")
            .bind(json!([run]))
            .bind(EPOCH)
            .fetch_one(&self.pool)
            .await
            .expect("old submit_runs");
        assert_eq!(row.0[0]["created"], true, "{:?}", row.0);
    }

    /// Claims from queue `default` as the old executor of pool `default`.
    async fn claim(&self, lease_ms: i32) -> Vec<Claimed> {
        sqlx::query_as(
            "SELECT run_id, step_id, attempt
               FROM swf.claim_tasks($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(vec!["default".to_string()])
        .bind(10_i32)
        .bind(OLD_NODE)
        .bind("us-east")
        .bind("default")
        .bind(lease_ms)
        .bind(0_i32)
        .bind(EPOCH)
        .fetch_all(&self.pool)
        .await
        .expect("old claim_tasks")
    }

    /// Reports completions and failures in the old binary's one statement;
    /// returns the engine's answer to the single item.
    async fn finish(&self, done: Value, failed: Value) -> String {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT result FROM swf.complete_tasks($1, $2)
             UNION ALL
             SELECT result FROM swf.fail_tasks($3, $2, $4, $5)",
        )
        .bind(done)
        .bind(EPOCH)
        .bind(failed)
        .bind(10_i32)
        .bind(10_i32)
        .fetch_all(&self.pool)
        .await
        .expect("finish_tasks");
        assert_eq!(rows.len(), 1, "one answer per item: {rows:?}");
        rows[0].0.clone()
    }

    async fn complete(&self, (run, step, attempt): &Claimed, output: Value) -> String {
        let item = json!([{"run_id": run, "step_id": step, "attempt": attempt, "output": output}]);
        self.finish(item, json!([])).await
    }

    async fn fail(&self, (run, step, attempt): &Claimed, error: Value) -> String {
        let item = json!([{"run_id": run, "step_id": step, "attempt": attempt,
                           "error": error, "outcome": "failed"}]);
        self.finish(json!([]), item).await
    }

    /// The run's status and lineage documents as the database assembles
    /// them for the API.
    async fn docs(&self, run: Uuid) -> (Value, Value) {
        sqlx::query_as("SELECT swf.run_status($1), swf.run_lineage($1)")
            .bind(run)
            .fetch_one(&self.pool)
            .await
            .expect("run documents")
    }
}

/// A run as the released binary's submit stored it: steps `(id, handler,
/// depends_on, max_attempts)` on queue `default`.
fn old_run(goal: &str, steps: &[(&str, &str, &[&str], u32)]) -> (Uuid, Value) {
    let run_id = Uuid::now_v7();
    let steps: Vec<Value> = steps
        .iter()
        .map(|(id, handler, deps, max_attempts)| {
            json!({"id": id, "handler": handler, "queue": "default", "region": null,
                   "mq": "default", "depends_on": deps, "input": {"step": id},
                   "max_attempts": max_attempts, "timeout_ms": 60_000})
        })
        .collect();
    let run = json!({"run_id": run_id, "goal": goal, "input": {"goal": goal},
                     "idempotency_key": null, "decomposer": null, "submitted_by": "old",
                     "submitted_region": "us-east", "steps": steps});
    (run_id, run)
}

/// Asserts that every field of `old` is in `new` with the same value:
/// objects may have gained fields (an absent one reads as null), arrays keep
/// their length and order.
fn assert_kept(new: &Value, old: &Value, at: &str) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                assert_kept(n.get(k).unwrap_or(&Value::Null), v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            assert_eq!(n.len(), o.len(), "{at}: {new} vs {old}");
            for (i, (n, o)) in n.iter().zip(o).enumerate() {
                assert_kept(n, o, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(new, old, "{at} changed"),
    }
}

/// The execution trace's entry of one attempt.
fn entry<'a>(lineage: &'a Value, step: &str, attempt: i64) -> &'a Value {
    lineage["execution_trace"]
        .as_array()
        .expect("trace")
        .iter()
        .find(|a| a["step_id"] == step && a["attempt"] == attempt)
        .unwrap_or_else(|| panic!("no attempt {attempt} of {step} in {lineage}"))
}

fn at(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Asserts `step` started only after attempt `dep_attempt` of `dep` finished.
fn ran_after(lineage: &Value, step: &str, dep: &str, dep_attempt: i64) {
    let started = at(&entry(lineage, step, 1)["started_at"]);
    let dep_done = at(&entry(lineage, dep, dep_attempt)["finished_at"]);
    assert!(started >= dep_done, "{step} started before {dep} finished");
}

fn trace(lineage: &Value) -> Vec<(String, i64, String, String)> {
    lineage["execution_trace"]
        .as_array()
        .expect("trace")
        .iter()
        .map(|a| {
            assert_eq!(
                (&a["region"], &a["worker_pool"]),
                (&json!("us-east"), &json!("default")),
                "{a}"
            );
            (
                a["step_id"].as_str().unwrap_or("").to_string(),
                a["attempt"].as_i64().unwrap_or(0),
                a["node_id"].as_str().unwrap_or("").to_string(),
                a["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn t(step: &str, attempt: i64, node: &str, outcome: &str) -> (String, i64, String, String) {
    (step.into(), attempt, node.into(), outcome.into())
}

#[tokio::test]
async fn a_released_schema_with_finished_and_running_runs_upgrades_to_engine_v2() {
    let name = format!("up_{}", Uuid::new_v4().simple());
    let admin = Store::connect_lazy(&pg_url("postgres"), 1).unwrap();
    admin.create_database(&name).await.unwrap();
    admin.close().await;
    let db = pg_url(&name);
    let store = Store::connect_lazy(&db, 2).unwrap();
    store.migrate_to(RELEASED_SCHEMA).await.unwrap();
    let known = Store::known_schema_version();
    assert_eq!(
        store.schema_compat().await.unwrap(),
        SchemaCompat::Older {
            found: RELEASED_SCHEMA,
            known
        }
    );
    let old = OldNode {
        pool: sql(&db).await,
    };

    // (a) completed: a1 -> a2, both run by the old node.
    let (a, run) = old_run(
        "completed",
        &[("a1", "echo", &[], 3), ("a2", "echo", &["a1"], 3)],
    );
    old.submit(&run).await;
    for step in ["a1", "a2"] {
        let claimed = old.claim(60_000).await;
        assert_eq!(claimed, vec![(a, step.to_string(), 1)]);
        let answer = old.complete(&claimed[0], json!({"done": step})).await;
        assert_eq!(answer, "completed");
    }
    // (b) failed: b1 has one attempt and fails; b2 never runs.
    let (b, run) = old_run(
        "failed",
        &[("b1", "echo", &[], 1), ("b2", "echo", &["b1"], 3)],
    );
    old.submit(&run).await;
    let claimed = old.claim(60_000).await;
    assert_eq!(claimed, vec![(b, "b1".to_string(), 1)]);
    let answer = old.fail(&claimed[0], json!({"message": "boom"})).await;
    assert_eq!(answer, "failed");
    // (c) running: c1 completed, c2 claimed by the old node (its message in
    // flight), c3 waiting for c2. c2's handler runs on the new node only
    // when the test opens the gate.
    let (c, run) = old_run(
        "running-claimed",
        &[
            ("c1", "echo", &[], 3),
            ("c2", "gate", &["c1"], 3),
            ("c3", "echo", &["c2"], 3),
        ],
    );
    old.submit(&run).await;
    let claimed = old.claim(60_000).await;
    assert_eq!(claimed, vec![(c, "c1".to_string(), 1)]);
    assert_eq!(
        old.complete(&claimed[0], json!({"c1": "old"})).await,
        "completed"
    );
    let c2_old = old.claim(OLD_LEASE_MS).await;
    assert_eq!(c2_old, vec![(c, "c2".to_string(), 1)]);
    // (d) running: d1 queued, not claimed; d2 waits for d1.
    let (d, run) = old_run(
        "running-queued",
        &[("d1", "echo", &[], 3), ("d2", "echo", &["d1"], 3)],
    );
    old.submit(&run).await;

    let before: Vec<(Value, Value)> =
        [old.docs(a).await, old.docs(b).await, old.docs(c).await].into();
    assert_eq!(before[0].0["status"], "completed");
    assert_eq!(before[1].0["status"], "failed");
    assert_eq!(before[2].0["steps"][1]["status"], "started");
    assert_eq!(old.docs(d).await.0["steps"][0]["status"], "queued");

    // A node of this version refuses the old schema until it is migrated.
    let refused = Node::start(node_config(NEW_NODE, &db), Registry::with_builtins()).await;
    let err = refused
        .err()
        .expect("a node started on the released schema");
    assert!(format!("{err:#}").contains("swf migrate"), "{err:#}");

    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_compat().await.unwrap(),
        SchemaCompat::Current(known)
    );
    // Migrating changed no run (a running run's duration grows meanwhile);
    // the status document only gained `schedule` (20261204000014), null
    // for a run no schedule started, each step's `index`
    // (20261204000015), null for a step that is no map item, and each
    // step's `input` (20261205000016), the one the workflow gave it.
    let unscheduled = |(mut status, lineage): (serde_json::Value, serde_json::Value)| {
        status["schedule"] = serde_json::Value::Null;
        for step in status["steps"].as_array_mut().into_iter().flatten() {
            step["index"] = serde_json::Value::Null;
        }
        (status, lineage)
    };
    let inputs_gained = |(mut status, lineage): (serde_json::Value, serde_json::Value)| {
        for step in status["steps"].as_array_mut().into_iter().flatten() {
            let id = step["id"].as_str().unwrap().to_string();
            let input = step
                .as_object_mut()
                .unwrap()
                .remove("input")
                .expect("a step's input");
            assert_eq!(input, json!({ "step": id }), "{id}'s input");
        }
        (status, lineage)
    };
    assert_eq!(
        inputs_gained(old.docs(a).await),
        unscheduled(before[0].clone())
    );
    assert_eq!(
        inputs_gained(old.docs(b).await),
        unscheduled(before[1].clone())
    );
    let (status, lineage) = unscheduled(inputs_gained(old.docs(c).await));
    assert_eq!(status["steps"], unscheduled(before[2].clone()).0["steps"]);
    assert_eq!(lineage["execution_trace"], before[2].1["execution_trace"]);

    let gate = Arc::new(Semaphore::new(0));
    let mut registry = Registry::with_builtins();
    let g = gate.clone();
    registry.register("gate", move |ctx: TaskContext| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(ctx.input)
        }
    });
    let node = start_node(node_config(NEW_NODE, &db), registry).await;
    let api = Api::new(&node.url());

    // Finished runs read back through the API as they were stored.
    for (run, (status, lineage)) in [a, b].into_iter().zip(&before) {
        assert_kept(&api.status(&run.to_string()).await, status, "status");
        assert_kept(&api.lineage(&run.to_string()).await, lineage, "lineage");
    }
    let doc = api.status(&a.to_string()).await;
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["output"], json!({"a2": {"done": "a2"}}));
    let lineage = api.lineage(&a.to_string()).await;
    assert_eq!(
        trace(&lineage),
        [
            t("a1", 1, OLD_NODE, "completed"),
            t("a2", 1, OLD_NODE, "completed")
        ]
    );
    let doc = api.status(&b.to_string()).await;
    assert_eq!(doc["status"], "failed");
    assert_eq!(
        doc["error"],
        json!({"step_id": "b1", "error": {"message": "boom"}})
    );
    let steps: Vec<(&Value, &Value)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["status"], &s["attempts"]))
        .collect();
    assert_eq!(
        steps,
        [
            (&json!("failed"), &json!(1)),
            (&json!("cancelled"), &json!(0))
        ]
    );
    let lineage = api.lineage(&b.to_string()).await;
    assert_eq!(trace(&lineage), [t("b1", 1, OLD_NODE, "failed")]);
    assert_eq!(
        entry(&lineage, "b1", 1)["error"],
        json!({"message": "boom"})
    );

    // c2's old attempt expires; the new node abandons it and runs attempt 2.
    let c_id = c.to_string();
    let lineage = wait_for("the new node to take c2 over", 60, || {
        let api = api.clone();
        let id = c_id.clone();
        async move {
            let l = api.lineage(&id).await;
            let taken = attempts_of(&l, "c2").len() == 2;
            taken.then_some(l)
        }
    })
    .await;
    assert_eq!(
        attempts_of(&lineage, "c2"),
        [
            (1, OLD_NODE.to_string(), "abandoned".to_string()),
            (2, NEW_NODE.to_string(), "running".to_string())
        ]
    );
    // The old node's late completion of its attempt is refused by the
    // database and changes nothing.
    let (status, lineage) = old.docs(c).await;
    assert_eq!(old.complete(&c2_old[0], json!("late")).await, "stale");
    let after = old.docs(c).await;
    assert_eq!(after.0["steps"], status["steps"]);
    assert_eq!(after.1["execution_trace"], lineage["execution_trace"]);
    gate.add_permits(1);

    let doc = api.wait_terminal(&c_id, 60).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let lineage = api.lineage(&c_id).await;
    assert_eq!(
        trace(&lineage),
        [
            t("c1", 1, OLD_NODE, "completed"),
            t("c2", 1, OLD_NODE, "abandoned"),
            t("c2", 2, NEW_NODE, "completed"),
            t("c3", 1, NEW_NODE, "completed"),
        ]
    );
    // The old node's attempts keep their records: c1's entry exactly, c2's
    // first attempt its node and start, now ended as abandoned.
    let old_lineage = &before[2].1;
    assert_eq!(entry(&lineage, "c1", 1), entry(old_lineage, "c1", 1));
    let (was, now) = (entry(old_lineage, "c2", 1), entry(&lineage, "c2", 1));
    assert_eq!(was["outcome"], "running");
    assert_eq!(now["started_at"], was["started_at"]);
    let why = now["error"]["message"].as_str().unwrap_or("");
    assert!(why.contains("visibility timeout expired"), "{now}");
    assert!(at(&now["finished_at"]) <= at(&entry(&lineage, "c2", 2)["started_at"]));
    ran_after(&lineage, "c3", "c2", 2);
    let attempts: Vec<&Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["attempts"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(1)]);
    // Each handler saw its dependency's output: c1's from the old node,
    // c2's from its second attempt (echo and gate output their input).
    let c3 = &doc["output"]["c3"];
    assert_eq!(c3["step"], json!({"step": "c3"}));
    assert_eq!(c3["run"], json!({"goal": "running-claimed"}));
    assert_eq!(c3["deps"]["c2"]["step"], json!({"step": "c2"}));
    assert_eq!(c3["deps"]["c2"]["deps"], json!({"c1": {"c1": "old"}}));

    // (d) is claimed and completed by the new node, d2 after d1.
    let doc = api.wait_terminal(&d.to_string(), 60).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let lineage = api.lineage(&d.to_string()).await;
    assert_eq!(
        trace(&lineage),
        [
            t("d1", 1, NEW_NODE, "completed"),
            t("d2", 1, NEW_NODE, "completed")
        ]
    );
    ran_after(&lineage, "d2", "d1", 1);
    let d2 = &doc["output"]["d2"];
    assert_eq!(d2["run"], json!({"goal": "running-queued"}));
    assert_eq!(d2["deps"]["d1"]["step"], json!({"step": "d1"}));

    node.kill().await;
    old.pool.close().await;
    store.close().await;
}
