//! The `swf` binary as a user runs it: client commands against a node,
//! config commands, and `swf dev` started and stopped with Ctrl-C.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use singularity_workflow::api::client::ApiClient;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

fn swf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swf"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run swf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn submit_status_lineage_commands() {
    let db = fresh_db().await;
    let node = start_node(node_config("cli-node", &db), Registry::with_builtins()).await;
    let url = node.url();
    let dir = tempdir();
    let wf = dir.join("wf.json");
    std::fs::write(
        &wf,
        json!({"goal": "cli", "steps": [{"id": "a", "handler": "noop", "input": 5},
                                        {"id": "b", "handler": "echo", "depends_on": ["a"]}]})
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        let wf = wf.clone();
        move || run(swf().args(["submit", "--api", &url, "--json"]).arg(&wf))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let run_id = doc["run_id"].as_str().unwrap().to_string();
    assert!(doc["consistency_token"].as_str().unwrap().contains('-'));

    let (code, out, err) = tokio::task::spawn_blocking({
        let (url, id) = (url.clone(), run_id.clone());
        move || run(swf().args(["status", "--api", &url, &id, "--wait"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("completed"), "{out}");
    assert!(out.contains("echo"), "{out}");

    let (code, out, _) = tokio::task::spawn_blocking({
        let (url, id) = (url.clone(), run_id.clone());
        move || run(swf().args(["lineage", "--api", &url, &id, "--json"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let l: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l["execution_trace"].as_array().unwrap().len(), 2);

    // Errors name the API's code and exit non-zero.
    let (code, _, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            run(swf().args([
                "status",
                "--api",
                &url,
                "00000000-0000-0000-0000-000000000000",
            ]))
        }
    })
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("not_found"), "{err}");
    // A failed run makes `status --wait` exit 3.
    let api = Api::new(&url);
    let failed = api
        .submit(&json!({"goal": "f", "steps": [{"id": "a", "handler": "fail", "max_attempts": 1}]}))
        .await;
    let (code, out, _) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run(swf().args(["status", "--api", &url, &failed, "--wait"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 3, "{out}");
    node.kill().await;
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("swf-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn config_check_and_migrate_commands() {
    let dir = tempdir();
    let legacy = dir.join("legacy.toml");
    std::fs::write(
        &legacy,
        "mode = \"orchestrator\"\nregion = \"us-east\"\n[database]\nurl = \"postgres://u:secret@db/swf\"\n[worker_pools.gpu]\nsize = 2\nqueue = \"gpu_tasks\"\n",
    )
    .unwrap();
    let (code, out, err) = run(swf().args(["config", "check"]).arg(&legacy));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hybrid"), "{out}");
    assert!(err.contains("deprecated"), "{err}");
    assert!(!out.contains("secret") && !err.contains("secret"));
    let (code, out, _) = run(swf().args(["config", "check", "--json"]).arg(&legacy));
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["node_type"], "hybrid");
    assert_eq!(doc["worker_pools"][0]["queue"], "gpu_tasks");

    let (code, migrated, _) = run(swf().args(["config", "migrate"]).arg(&legacy));
    assert_eq!(code, 0);
    assert!(!migrated.contains("mode"));
    let current = dir.join("current.toml");
    std::fs::write(&current, &migrated).unwrap();
    let (code, _, err) = run(swf().args(["config", "check"]).arg(&current));
    assert_eq!(code, 0);
    assert!(!err.contains("deprecated"), "{err}");

    // Every shipped config checks cleanly, so none can rot.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, _, err) = run(swf().args(["config", "check"]).arg(&path));
            assert_eq!(code, 0, "{}: {err}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 3);

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "region = \"us-east\"\n[database]\nurl = \"postgres://x\"\n[api]\nlistn = \"x\"\n",
    )
    .unwrap();
    let (code, _, err) = run(swf().args(["config", "check"]).arg(&bad));
    assert_ne!(code, 0);
    assert!(
        err.contains("api.listn") && err.contains("bad.toml"),
        "{err}"
    );
    // TLS files are loaded as the node would: a key given as the
    // certificate is refused naming the key; the right files pass.
    let pki = pki();
    let tls = |cert: &std::path::Path| {
        format!(
            "region = \"us-east\"\n[database]\nurl = \"postgres://x\"\n[auth]\nenabled = false\n\
             [api]\npublic_url = \"https://a:1\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            pki.key.display()
        )
    };
    std::fs::write(&bad, tls(&pki.key)).unwrap();
    let (code, _, err) = run(swf().args(["config", "check"]).arg(&bad));
    assert_ne!(code, 0);
    assert!(
        err.contains("api.tls_cert") && err.contains("no PEM certificate"),
        "{err}"
    );
    std::fs::write(&bad, tls(&pki.cert)).unwrap();
    let (code, out, err) = run(swf().args(["config", "check"]).arg(&bad));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("api.tls") && out.contains("on, certificate"),
        "{out}"
    );
}

fn start_dev(dir: &std::path::Path, port: u16, fresh: bool) -> std::process::Child {
    let mut cmd = swf();
    cmd.args([
        "dev",
        "--regions",
        "us-east,eu-west",
        "--wan-latency-ms",
        "5",
        "--tls",
    ])
    .args(["--base-port", &port.to_string(), "--data-dir"])
    .arg(dir.join("dev"))
    .stdout(std::fs::File::create(dir.join("dev.out")).unwrap())
    .stderr(Stdio::null());
    if fresh {
        cmd.arg("--fresh");
    }
    cmd.spawn().unwrap()
}

async fn stop_dev(mut child: std::process::Child) {
    // Ctrl-C: the nodes and PostgreSQL stop; the exit is clean.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_for("swf dev to exit", 60, || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn dev_cluster_with_two_regions_serves_and_stops_on_ctrl_c() {
    let dir = tempdir();
    let port = free_port_pair();
    let child = start_dev(&dir, port, true);
    let cluster = dir.join("dev/cluster.json");
    let doc: Value = wait_for("cluster.json", 120, || {
        let c = cluster.clone();
        async move {
            std::fs::read_to_string(&c)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        }
    })
    .await;
    assert_eq!(doc["write_region"], "us-east");
    assert_eq!(doc["regions"][1]["name"], "eu-west");
    assert_eq!(doc["regions"][1]["role"], "replica");
    // --tls: HTTPS from the dev CA, verify-full database URLs, auth on.
    let eu_url = doc["regions"][1]["api_url"].as_str().unwrap().to_string();
    assert!(eu_url.starts_with("https://"), "{eu_url}");
    assert!(
        doc["regions"][0]["database_url"]
            .as_str()
            .unwrap()
            .contains("sslmode=verify-full"),
        "{doc}"
    );
    let ca = std::path::PathBuf::from(doc["ca_cert"].as_str().expect("ca_cert"));
    let admin_token = std::fs::read_to_string(doc["token_file"].as_str().expect("token_file"))
        .unwrap()
        .trim()
        .to_string();
    let printed = std::fs::read_to_string(dir.join("dev.out")).unwrap();
    assert!(printed.contains(&admin_token), "the admin token is printed");
    let tls =
        singularity_workflow::api::tls::ClientTls::from_files(Some(&ca), None, ("ca", "", ""))
            .unwrap();
    let anonymous = Api::with_client(ApiClient::builder(&eu_url).tls(&tls).build());
    let a = anonymous.get("/v1/workflows").await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    let eu = Api::with_client(
        ApiClient::builder(&eu_url)
            .tls(&tls)
            .bearer(Some(&admin_token))
            .unwrap()
            .build(),
    );
    // Submitted in eu-west, read back at once in eu-west with the token.
    let a = eu
        .post(
            "/v1/workflows",
            &json!({"goal": "dev", "steps": [{"id": "a", "handler": "noop"}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["run_id"].as_str().unwrap().to_string();
    let token = a.body["consistency_token"].as_str().unwrap().to_string();
    let r = eu
        .send(
            eu.http
                .get(format!("{}/v1/workflows/{id}", eu.base))
                .header("swf-consistency-token", &token),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(matches!(
        r.header("swf-read-source"),
        Some("replica" | "cache")
    ));
    let pinned = eu.get_in("us-east", &format!("/v1/workflows/{id}")).await;
    assert_eq!(pinned.header("swf-region"), Some("us-east"));
    assert_eq!(eu.wait_terminal(&id, 30).await["status"], "completed");
    let regions = eu.get("/v1/regions").await.body;
    assert_eq!(regions["regions"][1]["role"], "replica");
    let pid_file = dir.join("dev/pg/us-east/postmaster.pid");
    let pg_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    stop_dev(child).await;
    assert!(!pid_file.exists(), "PostgreSQL left running");
    assert!(
        !dir.join("dev/pg/eu-west/postmaster.pid").exists(),
        "replica left running"
    );
    assert!(unsafe { libc::kill(pg_pid, 0) } != 0 || is_zombie(pg_pid));

    // A restart reuses the data dir (new PostgreSQL ports, the replica
    // re-pointed at the primary): the run is still there, in both regions.
    let child = start_dev(&dir, port, false);
    let id2 = id.clone();
    let doc = wait_for("the restarted dev cluster", 120, || {
        let api = eu.clone();
        let id = id2.clone();
        async move {
            let r = api
                .http
                .get(format!("{}/v1/workflows/{id}", api.base))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.json::<Value>().await.ok()
        }
    })
    .await;
    assert_eq!(doc["status"], "completed");
    // The drill command as an operator runs it.
    let us_url = eu
        .base
        .replace(&format!(":{}", port + 1), &format!(":{port}"));
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(swf()
            .env("SWF_CA_CERT", &ca)
            .env("SWF_TOKEN", &admin_token)
            .args([
                "drill",
                "switchover",
                "--to",
                "eu-west",
                "--api",
                &us_url,
                "--load",
                "20",
            ]))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("switchover us-east -> eu-west") && out.contains("OK"),
        "{out}"
    );
    assert_eq!(eu.get("/v1/regions").await.body["write_region"], "eu-west");
    let a = eu
        .post(
            "/v1/workflows",
            &json!({"goal": "again", "steps": [{"id": "a", "handler": "noop"}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        eu.wait_terminal(a.body["run_id"].as_str().unwrap(), 30)
            .await["status"],
        "completed"
    );
    stop_dev(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[tokio::test]
async fn concurrent_migrate_commands_all_succeed() {
    // An empty database (not from the migrated template).
    let name = format!("m_{}", uuid::Uuid::new_v4().simple());
    let admin = sql(&pg_url("postgres")).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = pg_url(&name);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                run(swf().args(["migrate", "--database-url", &url]))
            })
        })
        .collect();
    for r in runs {
        let (code, out, err) = r.await.unwrap();
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("database migrated"), "{out}");
    }
    // Migrated exactly once, and usable: a node starts on it.
    let pool = sql(&url).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        singularity_workflow::store::MIGRATOR.iter().count() as i64
    );
    pool.close().await;
    let node = start_node(node_config("migrated", &url), Registry::with_builtins()).await;
    assert_eq!(Api::new(&node.url()).get("/health/ready").await.status, 200);
    node.kill().await;
}

#[tokio::test]
async fn serve_logs_json_with_node_fields_and_stops_on_sigterm() {
    use std::io::BufRead;
    let db = fresh_db().await;
    let dir = tempdir();
    let cfg = dir.join("node.toml");
    let port = singularity_workflow::dev::pgserver::free_port().unwrap();
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"json-1\"\nregion = \"us-east\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"{db}\"\n[auth]\nenabled = false\n"
        ),
    )
    .unwrap();
    let mut child = swf()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("SWF_LOG", "info,singularity_workflow::api=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let next_line = |what: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no log line while waiting for {what}"))
    };
    let started: Value = loop {
        let line = next_line("node started");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["message"] == "node started" {
            break v;
        }
    };
    assert_eq!(started["node_id"], "json-1");
    assert_eq!(started["region"], "us-east");
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    assert_eq!(api.get("/health").await.status, 200);
    // A request handler's lines carry the node, region and run.
    let run_id = api
        .submit(&json!({"goal": "log", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    api.status(&run_id).await;
    loop {
        let line = next_line("the status request's log line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["message"] == "request served" && line.contains(&run_id) {
            assert_eq!(v["span"]["node_id"], "json-1", "{line}");
            assert_eq!(v["span"]["region"], "us-east", "{line}");
            assert_eq!(v["span"]["run_id"], run_id.as_str(), "{line}");
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        let line = next_line("node stopped");
        if line.contains("node stopped") {
            assert!(line.contains("json-1"), "{line}");
            break;
        }
    }
    let status = wait_for("swf serve to exit", 30, || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}
