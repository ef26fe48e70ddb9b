//! Test harness: one real PostgreSQL server per test binary (started from
//! the machine's binaries through the same code `swf dev` uses), a migrated
//! template database, and a fresh database per test. Nodes run in-process on
//! port 0 and are reached over real HTTP.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use singularity_workflow::api::client::{ApiClient, RetryPolicy};
use singularity_workflow::config::Config;
use singularity_workflow::dev::pgserver::{self, PgBinaries, PgServer};
use singularity_workflow::executor::handlers::Registry;
use singularity_workflow::node::Node;

const TEMPLATE: &str = "swf_template";

struct Pg {
    // Kept for the process lifetime; the servers die with the process.
    _server: Mutex<PgServer>,
    _replica: Mutex<PgServer>,
    port: u16,
    replica_port: u16,
    root: PathBuf,
}

static PG: OnceLock<Pg> = OnceLock::new();

fn pg() -> &'static Pg {
    PG.get_or_init(|| {
        // Runs on a plain thread with its own runtime, so no test's runtime
        // owns anything that outlives it.
        std::thread::spawn(|| {
            if std::env::var_os("TEST_LOG").is_some() {
                singularity_workflow::telemetry::init_logging(
                    singularity_workflow::telemetry::LogFormat::Text,
                );
            }
            let tmp = PathBuf::from("/tmp");
            pgserver::cleanup_stale_dirs(&tmp);
            let root = tmp.join(format!("swf-test-{}", std::process::id()));
            std::fs::create_dir_all(&root).expect("create test root");
            let bins = PgBinaries::locate().expect("PostgreSQL binaries");
            let data = root.join("primary");
            pgserver::init_primary(&bins, &data).expect("initdb");
            // TLS on the shared servers (clients choose it with sslmode; the
            // replicas replicate over verify-full TLS).
            let pki = singularity_workflow::dev::pki::DevPki::ensure(&root.join("tls"), "test CA")
                .expect("test PKI");
            let tls = pgserver::PgTls::from_pki(&pki).expect("PKI files");
            pgserver::install_server_tls(&data, &tls).expect("install TLS");
            let server =
                PgServer::start_on(&bins, &data, "test-primary", None).expect("start PostgreSQL");
            let port = server.port();
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                singularity_workflow::dev::prepare_database(
                    &server.url("postgres"),
                    &server.url(TEMPLATE),
                    TEMPLATE,
                )
                .await
                .expect("migrate template database");
            });
            // A streaming replica shared by the tests (the eu-west region).
            let replica_dir = root.join("replica");
            pgserver::init_replica(&bins, port, &replica_dir).expect("pg_basebackup");
            pgserver::set_primary_conninfo(&replica_dir, port, "eu-west").expect("conninfo");
            let replica = PgServer::start_on(&bins, &replica_dir, "test-replica", None)
                .expect("start the replica");
            Pg {
                _server: Mutex::new(server),
                port,
                replica_port: replica.port(),
                _replica: Mutex::new(replica),
                root,
            }
        })
        .join()
        .expect("start PostgreSQL for tests")
    })
}

/// The test CA and the certificate (localhost, 127.0.0.1) the shared
/// PostgreSQL servers present; also usable for test nodes' APIs.
pub fn pki() -> singularity_workflow::dev::pki::DevPki {
    singularity_workflow::dev::pki::DevPki::ensure(&pg().root.join("tls"), "test CA")
        .expect("test PKI")
}

/// A second, unrelated CA and certificate: what a rogue server presents.
pub fn rogue_pki() -> singularity_workflow::dev::pki::DevPki {
    static ROGUE: OnceLock<singularity_workflow::dev::pki::DevPki> = OnceLock::new();
    ROGUE
        .get_or_init(|| {
            singularity_workflow::dev::pki::DevPki::ensure(&pg().root.join("rogue-tls"), "rogue CA")
                .expect("rogue PKI")
        })
        .clone()
}

/// `url` with verify-full TLS against `ca`.
pub fn tls_url(url: &str, ca: &std::path::Path) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())
}

pub fn pg_url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{db}", pg().port)
}

/// The same database on the shared streaming replica.
pub fn replica_url(primary_url: &str) -> String {
    let db = primary_url.rsplit('/').next().unwrap_or_default();
    format!("postgres://postgres@127.0.0.1:{}/{db}", pg().replica_port)
}

/// Waits until a database created on the primary has reached `url`'s server.
pub async fn wait_db(url: &str) {
    let u = url.to_string();
    wait_for("the database to replicate", 60, || {
        let u = u.clone();
        async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&u)
                .await
                .ok()?;
            let n: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM swf.cluster_state")
                .fetch_one(&pool)
                .await
                .ok();
            pool.close().await;
            n.filter(|n| *n == 1).map(|_| ())
        }
    })
    .await;
}

/// A replica of its own (for tests that pause replay), streaming from the
/// shared primary. Stopped when the returned server drops.
pub async fn own_replica(name: &str) -> PgServer {
    let dir = pg()
        .root
        .join(format!("replica-{name}-{}", uuid::Uuid::new_v4().simple()));
    singularity_workflow::dev::start_replica(&dir, name, pg().port, None, None)
        .await
        .expect("start replica")
}

/// Configs of two nodes: `us-east` on the primary database `db`, `eu-west`
/// on the replica database `eu_db`; both know both regions.
pub fn two_regions(db: &str, eu_db: &str) -> (Config, Config) {
    let regions = vec![
        singularity_workflow::config::RegionSpec {
            name: "us-east".into(),
            database_url: db.to_string(),
            api_url: None,
        },
        singularity_workflow::config::RegionSpec {
            name: "eu-west".into(),
            database_url: eu_db.to_string(),
            api_url: None,
        },
    ];
    let mut us = node_config("us-east-1", db);
    us.regions = regions.clone();
    let mut eu = node_config("eu-west-1", eu_db);
    eu.region = "eu-west".into();
    eu.regions = regions;
    (us, eu)
}

/// A fresh, migrated database for one test; returns its URL.
pub async fn fresh_db() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = singularity_workflow::store::Store::connect_lazy(&pg_url("postgres"), 1).unwrap();
    admin
        .create_database_from_template(&name, TEMPLATE)
        .await
        .expect("create test database");
    admin.close().await;
    pg_url(&name)
}

/// The port of a database URL on the test server.
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the database URL")
}

/// `url` (on the test server) through `proxy`.
pub fn through(url: &str, proxy: &singularity_workflow::dev::proxy::DelayProxy) -> String {
    let db = url.rsplit('/').next().unwrap();
    format!(
        "postgres://postgres@127.0.0.1:{}/{db}",
        proxy.local_addr().port()
    )
}

/// How much is stored: runs x 1,000,000 + steps, to check that refused
/// input stored nothing.
pub async fn stored(db: &str) -> i64 {
    let pool = sql(db).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.runs")
        .fetch_one(&pool)
        .await
        .expect("count runs");
    let m: i64 = sqlx::query_scalar("SELECT count(*) FROM swf.steps")
        .fetch_one(&pool)
        .await
        .expect("count steps");
    pool.close().await;
    n * 1_000_000 + m
}

/// A raw SQL pool for assertions on the database itself.
pub async fn sql(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect")
}

/// A node config for tests: fast polling, port 0, short margins.
pub fn node_config(id: &str, db: &str) -> Config {
    let mut c = Config::for_dev(id, "us-east", "us-east", ([127, 0, 0, 1], 0).into(), db);
    c.executor.poll_interval_ms = 200;
    c.executor.visibility_margin_ms = 500;
    c.executor.heartbeat_interval_ms = 1000;
    c.executor.shutdown_grace_ms = 2000;
    c
}

/// A test token of the tokens file: `name`, the hash of `secret`, `scopes`.
pub fn token(name: &str, secret: &str, scopes: &[&str]) -> singularity_workflow::config::TokenSpec {
    singularity_workflow::config::TokenSpec {
        name: name.into(),
        sha256: singularity_workflow::api::auth::hash_token(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// `base` as an edge node: client only, no pools; it accepts any handler
/// name (the executors that run them start later or elsewhere).
pub fn edge_config_of(base: &Config) -> Config {
    let mut c = base.clone();
    c.enable_executor = false;
    c.worker_pools.clear();
    c.limits.allow_unadvertised_handlers = true;
    c
}

pub async fn start_node(config: Config, registry: Registry) -> Node {
    Node::start(config, registry).await.expect("start node")
}

/// Runs the `swf` CLI with `args` without blocking the runtime a node of
/// the test serves on; returns its exit code, stdout and stderr.
pub async fn swf_cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_swf"))
        .args(args)
        .output()
        .await
        .expect("run swf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it yields Some, failing the test after `secs` seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    singularity_workflow::wait::until(Duration::from_secs(secs), Duration::from_millis(25), f)
        .await
        .unwrap_or_else(|e| panic!("timed out waiting for {what} ({e})"))
}

/// A node's API for tests: the typed [`ApiClient`] for ordinary calls, and
/// raw requests through the same client for tests that send odd ones.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: ApiClient,
    /// The client's HTTP client, for requests built by hand.
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api::with_client(ApiClient::new(base))
    }

    /// An `Api` over a client built elsewhere (TLS, token).
    pub fn with_client(client: ApiClient) -> Api {
        Api {
            base: client.base().to_string(),
            http: client.http().clone(),
            client,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.request(Method::POST, path).json(body))
            .await
    }

    /// GET pinned to `region` (`swf-region`).
    pub async fn get_in(&self, region: &str, path: &str) -> Answer {
        let pinned = self.client.in_region(Some(region));
        self.send(pinned.request(Method::GET, path)).await
    }

    /// POST pinned to `region` (`swf-region`).
    pub async fn post_in(&self, region: &str, path: &str, body: &Value) -> Answer {
        let pinned = self.client.in_region(Some(region));
        self.send(pinned.request(Method::POST, path).json(body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.client
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Submits once and asserts 201; returns run_id.
    pub async fn submit(&self, wf: &Value) -> String {
        let a = self
            .client
            .submit(wf, RetryPolicy::ONCE, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        assert_eq!(a.status, 201, "submit: {:?}", a.body);
        a.body.run_id.to_string()
    }

    /// The status document (read as the strict wire type, shown as JSON).
    pub async fn status(&self, run_id: &str) -> Value {
        let a = self
            .client
            .status(run_id)
            .await
            .unwrap_or_else(|e| panic!("status: {e}"));
        serde_json::to_value(a.body).expect("status as JSON")
    }

    /// Waits until the run leaves `running`; returns its status document.
    pub async fn wait_terminal(&self, run_id: &str, secs: u64) -> Value {
        let api = self.clone();
        let id = run_id.to_string();
        wait_for(&format!("run {run_id} to finish"), secs, move || {
            let api = api.clone();
            let id = id.clone();
            async move {
                let doc = api.status(&id).await;
                (doc["status"] != "running").then_some(doc)
            }
        })
        .await
    }

    /// The lineage document (read as the strict wire type, shown as JSON).
    pub async fn lineage(&self, run_id: &str) -> Value {
        let a = self
            .client
            .lineage(run_id)
            .await
            .unwrap_or_else(|e| panic!("lineage: {e}"));
        serde_json::to_value(a.body).expect("lineage as JSON")
    }
}

/// Attempts of `step` in a lineage document as (attempt, node_id, outcome).
pub fn attempts_of(lineage: &Value, step: &str) -> Vec<(i64, String, String)> {
    lineage["execution_trace"]
        .as_array()
        .expect("trace")
        .iter()
        .filter(|a| a["step_id"] == step)
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap_or(0),
                a["node_id"].as_str().unwrap_or("").to_string(),
                a["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Two consecutive free ports (a dev cluster's nodes use base, base + 1).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let p = pgserver::free_port().expect("free port");
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

/// A run of `spec` (JSON) for the store's own calls, validated as submit does.
pub fn new_run(spec: Value) -> singularity_workflow::store::NewRun {
    use singularity_workflow::model::workflow::{validate, Limits, WorkflowSpec};
    let spec: WorkflowSpec = serde_json::from_value(spec).unwrap();
    let steps = validate(&spec, &Limits::default(), |_, _| true, |_| true).unwrap();
    singularity_workflow::store::NewRun {
        run_id: uuid::Uuid::now_v7(),
        goal: spec.goal.clone(),
        input: None,
        idempotency_key: None,
        decomposer: None,
        submitted_by: "test".into(),
        submitted_region: "us-east".into(),
        run_at: singularity_workflow::model::workflow::run_at(&spec).unwrap(),
        priority: spec.priority.unwrap_or(0) as i32,
        concurrency_key: spec.concurrency.as_ref().map(|c| c.key.clone()),
        concurrency_limit: spec.concurrency.as_ref().map(|c| c.limit as i32),
        steps,
    }
}

/// A replica of the test primary under `name`, and the URL of database
/// `db` (a URL on the primary) on it, once it answers.
pub async fn replica_of(name: &str, db: &str) -> (PgServer, String) {
    let replica = own_replica(name).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        replica.port(),
        db.rsplit('/').next().unwrap()
    );
    wait_db(&url).await;
    (replica, url)
}

/// Whether a database accepts a write (one that changes nothing); false
/// when it cannot be reached.
pub async fn accepts_writes(url: &str) -> bool {
    let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
    else {
        return false;
    };
    let ok = async {
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE swf.cluster_state SET updated_at = updated_at")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await
    }
    .await
    .is_ok();
    pool.close().await;
    ok
}
