//! Killed drills: `swf dev` (the real binary) is killed with SIGKILL while a
//! drill is held at a phase (`SWF_DEV_DRILL_HOLD_AT`), restarted on the data
//! dirs the crash left, and `swf drill recover` run against it. Afterwards
//! exactly one database accepts writes, a submit through each region's
//! node succeeds, and the journal says the drill was recovered.

use std::path::PathBuf;
use std::process::{Child, Command};

use serde_json::{json, Value};

use crate::harness::*;

fn swf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swf"))
}

/// One `swf dev` data dir and the processes started on it.
struct Dev {
    dir: PathBuf,
    starts: u32,
}

impl Dev {
    fn new() -> Dev {
        let dir =
            std::env::temp_dir().join(format!("swf-recover-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Dev { dir, starts: 0 }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("dev")
    }

    fn err_log(&self) -> PathBuf {
        self.dir.join(format!("dev-{}.err", self.starts))
    }

    fn out_log(&self) -> PathBuf {
        self.dir.join(format!("dev-{}.out", self.starts))
    }

    /// Region `i`'s API, as the running `swf dev` wrote it in cluster.json.
    fn url(&self, i: usize) -> String {
        self.cluster()["regions"][i]["api_url"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Starts `swf dev` (two regions, us-east primary on a new data dir);
    /// with `hold`, every drill stops for good at that phase. Returns once
    /// the cluster is up.
    async fn start(&mut self, hold: Option<&str>) -> Child {
        match self.start_once(hold).await {
            Ok(child) => child,
            Err(log) => panic!("swf dev exited while starting:\n{log}"),
        }
    }

    async fn start_once(&mut self, hold: Option<&str>) -> Result<Child, String> {
        self.starts += 1;
        let mut cmd = swf();
        cmd.args([
            "dev",
            "--regions",
            "us-east,eu-west",
            "--wan-latency-ms",
            "2",
        ])
        // Any free API ports, bound by swf dev itself (cluster.json names them).
        .args(["--base-port", "0", "--data-dir"])
        .arg(self.data())
        .env("SWF_LOG", "info")
        .env_remove(singularity_workflow::drill::HOLD_ENV)
        .stdout(std::fs::File::create(self.out_log()).unwrap())
        .stderr(std::fs::File::create(self.err_log()).unwrap());
        if let Some(h) = hold {
            cmd.env(singularity_workflow::drill::HOLD_ENV, h);
        }
        let mut child = cmd.spawn().unwrap();
        let out = self.out_log();
        let err = self.err_log();
        let exited = wait_for("swf dev to start", 180, || {
            let started = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("Ctrl-C stops");
            let exited = child.try_wait().unwrap().map(|status| {
                format!(
                    "({status}) {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                )
            });
            async move {
                match exited {
                    Some(log) => Some(Some(log)),
                    None => started.then_some(None),
                }
            }
        })
        .await;
        match exited {
            Some(log) => Err(log),
            None => Ok(child),
        }
    }

    fn cluster(&self) -> Value {
        let text = std::fs::read_to_string(self.data().join("cluster.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Runs `swf <args> --api <region 0's URL> --json` and reads its output.
    async fn cli(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli_text(&args).await).unwrap()
    }

    /// Runs `swf <args> --api <region 0's URL>`; its standard output.
    async fn cli_text(&self, args: &[&str]) -> String {
        let mut cmd = swf();
        cmd.args(args).args(["--api", &self.url(0)]);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "swf {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn gone(pid: i32) -> bool {
    let alive = unsafe { libc::kill(pid, 0) == 0 };
    !alive
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
}

/// Kills `swf dev` with SIGKILL and waits until it and its PostgreSQL
/// servers (which die with it) are gone.
async fn kill_9(dev: &Dev, mut child: Child) {
    let pids: Vec<i32> = ["us-east", "eu-west"]
        .iter()
        .filter_map(|r| {
            singularity_workflow::dev::pgserver::postmaster_pid(&dev.data().join("pg").join(r))
        })
        .collect();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    wait_for("swf dev to die", 30, || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    wait_for("its PostgreSQL servers to die", 60, || {
        let all = pids.iter().all(|p| gone(*p));
        async move { all.then_some(()) }
    })
    .await;
}

async fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_for("swf dev to exit", 60, || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
}

/// A drill of `kind` from us-east to eu-west, killed at `hold`; after the
/// restart and `swf drill recover`, `expect` is the one writable primary.
async fn killed_drill_is_recovered(kind: &str, hold: &str, expect: &str) {
    let mut dev = Dev::new();
    let child = dev.start(Some(hold)).await;
    let us = Api::new(&dev.url(0));
    let before = us
        .submit(&json!({"goal": "before", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    assert_eq!(us.wait_terminal(&before, 30).await["status"], "completed");
    // The drill never answers: it is held at the phase, then killed.
    let drill = tokio::spawn({
        let us = us.clone();
        let kind = kind.to_string();
        async move {
            let _ = us
                .http
                .post(format!("{}/v1/admin/drills", us.base))
                .json(&json!({"kind": kind, "to": "eu-west"}))
                .send()
                .await;
        }
    });
    let err = dev.err_log();
    let held = format!("drill held at phase `{hold}`");
    wait_for(&held, 120, || {
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        let h = held.clone();
        async move { log.contains(&h).then_some(()) }
    })
    .await;
    kill_9(&dev, child).await;
    drill.abort();

    // Restarted on whatever the crash left. The node that ran the drill
    // marked it interrupted where a primary takes writes (between fence and
    // promotion none does: it stays running); either way no drill starts
    // until it is recovered.
    let mut child = dev.start(None).await;
    // On new API ports (cluster.json names them).
    let us = Api::new(&dev.url(0));
    let left = us.get("/v1/admin/drills").await.body;
    let state = left["drills"][0]["state"].as_str().unwrap_or_default();
    match (kind, hold) {
        (_, "fenced") => assert_eq!(state, "running", "{left}"),
        ("switchover", _) => assert_eq!(state, "interrupted", "{left}"),
        _ => assert!(["running", "interrupted"].contains(&state), "{left}"),
    }
    let refused = us
        .send(
            us.http
                .post(format!("{}/v1/admin/drills", us.base))
                .json(&json!({"kind": "switchover", "to": "eu-west"})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (409, "drill_in_progress"),
        "{}",
        refused.body
    );
    let report = dev.cli(&["drill", "recover"]).await;
    assert_eq!(report["write_region"], expect, "{report:#}");
    assert_eq!(report["changed"], true, "{report:#}");
    assert_eq!(report["drills"].as_array().unwrap().len(), 1, "{report:#}");

    // Exactly one database accepts writes: the one recover names.
    let cluster = dev.cluster();
    let mut writable = Vec::new();
    for r in cluster["regions"].as_array().unwrap() {
        if accepts_writes(r["database_url"].as_str().unwrap()).await {
            writable.push(r["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(writable, [expect], "{report:#}");
    assert_eq!(cluster["write_region"], expect);

    // Both nodes take writes (each finds the primary), and work runs. The
    // run is read with its submit's token: a node's local database may be
    // a replica that has not replayed the submit yet.
    for i in 0..2 {
        let api = Api::new(&dev.url(i));
        let (run_id, token) = wait_for("a submit to succeed", 60, || {
            let api = api.clone();
            async move {
                let a = api
                    .post(
                        "/v1/workflows",
                        &json!({"goal": "after", "steps": [{"id": "a", "handler": "noop"}]}),
                    )
                    .await;
                (a.status == 201).then(|| {
                    let field = |k: &str| a.body[k].as_str().unwrap().to_string();
                    (field("run_id"), field("consistency_token"))
                })
            }
        })
        .await;
        let reader = Api::with_client(api.client.with_token(Some(&token)));
        assert_eq!(
            reader.wait_terminal(&run_id, 60).await["status"],
            "completed"
        );
    }
    // The journal: the drill was recovered; the run before is still there.
    let list = dev.cli(&["drill", "list"]).await;
    let drills = list["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "{list:#}");
    assert_eq!(drills[0]["state"], "recovered", "{list:#}");
    assert_eq!(drills[0]["kind"], kind);
    let id = drills[0]["id"].as_str().unwrap();
    let one = us.get(&format!("/v1/admin/drills/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["state"], "recovered");
    assert!(
        one.body["report"]["recovery"]["actions"].is_array(),
        "{}",
        one.body
    );
    assert_eq!(us.status(&before).await["status"], "completed");

    let table = dev.cli_text(&["drill", "list"]).await;
    assert!(table.contains(id) && table.contains("recovered"), "{table}");
    // A second recover finds nothing wrong and changes nothing.
    let again = dev.cli(&["drill", "recover"]).await;
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(again["write_region"], expect);
    let said = dev.cli_text(&["drill", "recover"]).await;
    assert!(said.contains("nothing to do"), "{said}");

    stop(&mut child).await;
    let _ = std::fs::remove_dir_all(&dev.dir);
}

#[tokio::test]
async fn a_switchover_killed_after_the_fence_is_recovered_by_unfencing() {
    killed_drill_is_recovered("switchover", "fenced", "us-east").await;
}

#[tokio::test]
async fn a_failover_killed_after_promotion_is_finished_forward() {
    killed_drill_is_recovered("failover", "promoted", "eu-west").await;
}

#[tokio::test]
async fn a_switchover_killed_after_the_epoch_bump_is_finished_forward() {
    killed_drill_is_recovered("switchover", "epoch-bumped", "eu-west").await;
}

#[tokio::test]
async fn a_switchover_killed_during_rejoin_is_recovered() {
    killed_drill_is_recovered("switchover", "rejoin", "eu-west").await;
}
