//! The `swf` command line: argument parsing, the HTTP calls of the client
//! commands, and human or `--json` output. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::api::wire::{DrillKind, DrillRequest};
use crate::config::{self, Config};
use crate::executor::handlers::Registry;
use crate::node::Node;
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "swf",
    version,
    about = "singularity-workflow: a geo-distributed workflow control plane on PostgreSQL + pgmq"
)]
pub struct Cli {
    /// Log format on stderr (filter with SWF_LOG or RUST_LOG, e.g. `info,swf=debug`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an embedded local cluster: real PostgreSQL plus one hybrid node per region.
    #[cfg(feature = "dev")]
    Dev(DevArgs),
    /// Run one node from a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply the database migrations (idempotent; safe from several nodes at once).
    Migrate {
        #[arg(long, env = "SWF_DATABASE__URL")]
        database_url: String,
    },
    /// Validate or rewrite node config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Submit a workflow JSON file (or - for stdin); prints run_id and token.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// Workflow JSON file, or - for standard input.
        file: String,
    },
    /// Print a run's status.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
        /// Wait until the run is completed, failed or cancelled (exit 0 only when completed).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Print a run's lineage: its DAG and every attempt.
    Lineage {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
    },
    /// Print regions, primary, epoch, lag and nodes.
    Regions {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End-to-end load benchmark against a running cluster (or one it starts).
    #[cfg(feature = "dev")]
    Bench(crate::dev::bench::BenchArgs),
    /// Failover drills: move the write region and report RTO and lost writes.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// API tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the SHA-256 of a token (read from stdin) for a tokens file.
    HashToken,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Planned move of the write region: fence, catch up, promote; zero loss.
    Switchover(DrillArgs),
    /// Simulated loss of the write region's primary: stop it hard, promote.
    Failover(DrillArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The region to move the write region to.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Workflows submitted per second through every region's node during the drill.
    #[arg(long, default_value_t = 0.0)]
    pub load: f64,
    /// Refuse when the target replica lags more than this.
    #[arg(long, default_value_t = crate::api::wire::DEFAULT_MAX_LAG_MS)]
    pub max_lag_ms: u64,
}

#[cfg(feature = "dev")]
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where PostgreSQL data, logs and cluster.json live.
    #[arg(long, default_value = ".swf/dev")]
    pub data_dir: PathBuf,
    /// Comma-separated region names; the first holds the primary.
    #[arg(long, value_delimiter = ',', default_value = "us-east")]
    pub regions: Vec<String>,
    /// API port of the first region's node (next regions use the next ports).
    #[arg(long, default_value_t = 4000)]
    pub base_port: u16,
    /// One-way delay added to every cross-region link.
    #[arg(long, default_value_t = 0)]
    pub wan_latency_ms: u64,
    /// Delete the data dir first and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Run everything over TLS from a throwaway CA under DATA_DIR/tls (HTTPS
    /// APIs, verify-full database links and replication) with auth on; the
    /// admin token is printed and kept in DATA_DIR/admin.token.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a node config; print node_type, roles, region, pools.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print a legacy config rewritten to the current keys.
    Migrate { file: PathBuf },
}

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Base URL of a node's API.
    #[arg(long, env = "SWF_API_URL", default_value = "http://127.0.0.1:4000")]
    pub api: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: crate::api::tls::AccessArgs,
}

/// Entry point of the binary: returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        #[cfg(feature = "dev")]
        Command::Dev(a) => {
            crate::dev::run(crate::dev::DevOptions {
                data_dir: a.data_dir,
                regions: a.regions,
                base_port: a.base_port,
                wan_latency_ms: a.wan_latency_ms,
                fresh: a.fresh,
                tls: a.tls,
            })
            .await?;
            Ok(0)
        }
        Command::Serve { config } => {
            let loaded = Config::load(&config)?;
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let stop = crate::node::signals::shutdown_signal();
            let node = Node::start(loaded.config, Registry::with_builtins()).await?;
            node.run_until(stop).await?;
            Ok(0)
        }
        Command::Migrate { database_url } => {
            let store = Store::connect_lazy(&database_url, 2)?;
            store
                .migrate()
                .await
                .with_context(|| format!("migrate {}", config::redact_url(&database_url)))?;
            let v = store.schema_version().await?;
            println!("database migrated (schema version {})", v.unwrap_or(0));
            Ok(0)
        }
        Command::Config(ConfigCommand::Check { file, json }) => {
            let loaded = Config::load(&file)?;
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            // The TLS files load as the node would load them.
            if let Some(files) = loaded.config.api.server_tls() {
                crate::api::tls::ServerTls::load(files)
                    .with_context(|| format!("{}: TLS", file.display()))?;
            }
            loaded
                .config
                .api
                .client_tls()
                .with_context(|| format!("{}: TLS", file.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&config::check_report(&loaded.config))?
                );
            } else {
                print!("{}", config::check_report_text(&loaded.config));
            }
            Ok(0)
        }
        Command::Config(ConfigCommand::Migrate { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let out = config::migrate_legacy(&text, &file.display().to_string())?;
            print!("{out}{}", if out.ends_with('\n') { "" } else { "\n" });
            Ok(0)
        }
        Command::Submit { api, file } => submit(&api, &file).await,
        Command::Status {
            api,
            run_id,
            wait,
            timeout_secs,
        } => status(&api, &run_id, wait, Duration::from_secs(timeout_secs)).await,
        Command::Lineage { api, run_id } => {
            let doc = get_json(&api, &format!("/v1/workflows/{run_id}/lineage")).await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_lineage(&doc));
            }
            Ok(0)
        }
        Command::Regions { api } => {
            let doc = get_json(&api, "/v1/regions").await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_regions(&doc));
            }
            Ok(0)
        }
        #[cfg(feature = "dev")]
        Command::Bench(args) => crate::dev::bench::run(args).await,
        Command::Drill(DrillCommand::Switchover(a)) => drill(DrillKind::Switchover, a).await,
        Command::Drill(DrillCommand::Failover(a)) => drill(DrillKind::Failover, a).await,
        Command::Auth(AuthCommand::HashToken) => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).context("read stdin")?;
            let t = t.trim();
            if t.is_empty() {
                bail!("no token on standard input");
            }
            println!("{}", crate::api::auth::hash_token(t));
            Ok(0)
        }
    }
}

/// An HTTP client that sends the API token, if one is given, and trusts
/// what `--ca-cert` says.
fn http(api: &ApiArgs, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(api.access.builder()?.timeout(timeout).build()?)
}

/// Turns an API answer into JSON, or an error that shows the API's code.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| anyhow!("HTTP {status}: the answer is not JSON: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        Err(ApiFailure {
            status: status.as_u16(),
            code: code.to_string(),
            message: msg.to_string(),
        }
        .into())
    }
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{code} (HTTP {status}): {message}")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

async fn get_json(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let resp = http(api, Duration::from_secs(30))?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    answer(resp).await
}

async fn submit(api: &ApiArgs, file: &str) -> anyhow::Result<i32> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("read stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))?
    };
    let mut body: Value =
        serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))?;
    // A key makes retries safe: a retried submit returns the same run.
    if body.is_object() && body.get("idempotency_key").is_none() {
        body["idempotency_key"] = json!(uuid::Uuid::new_v4().to_string());
    }
    let url = format!("{}/v1/workflows", api.api.trim_end_matches('/'));
    let client = http(api, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(100);
    let doc = loop {
        let attempt = client.post(&url).json(&body).send().await;
        let retry_reason = match attempt {
            Ok(resp) if resp.status().as_u16() == 503 => format!("HTTP 503 from {url}"),
            Ok(resp) => break answer(resp).await?,
            Err(e) if e.is_connect() || e.is_timeout() => crate::api::tls::error_chain(&e),
            Err(e) => return Err(e).with_context(|| format!("POST {url}")),
        };
        if Instant::now() + delay > deadline {
            bail!("submit failed after retrying for 30 s: {retry_reason}");
        }
        tracing::info!("submit: {retry_reason}; retrying with the same idempotency key");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    if api.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("run_id: {}", doc["run_id"].as_str().unwrap_or(""));
        println!("status: {}", doc["status"].as_str().unwrap_or(""));
        println!(
            "token:  {}",
            doc["consistency_token"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

async fn status(api: &ApiArgs, run_id: &str, wait: bool, timeout: Duration) -> anyhow::Result<i32> {
    let path = format!("/v1/workflows/{run_id}");
    let deadline = Instant::now() + timeout;
    let doc = loop {
        let doc = get_json(api, &path).await?;
        let done = doc["status"].as_str().is_some_and(|s| s != "running");
        if !wait || done {
            break doc;
        }
        if Instant::now() >= deadline {
            bail!("run {run_id} still running after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if api.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render_status(&doc));
    }
    let code = if wait && doc["status"] != "completed" {
        3
    } else {
        0
    };
    Ok(code)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Human rendering of a status document.
pub fn render_status(doc: &Value) -> String {
    let mut out = format!(
        "run {}  {}\n  goal: {}\n  created: {}  completed: {}\n",
        s(&doc["run_id"]),
        s(&doc["status"]),
        s(&doc["goal"]),
        s(&doc["created_at"]),
        s(&doc["completed_at"])
    );
    if !doc["error"].is_null() {
        out += &format!("  error: {}\n", doc["error"]);
    }
    out += &format!(
        "  {:<20} {:<10} {:<12} {:>8}  output\n",
        "step", "status", "handler", "attempts"
    );
    for st in doc["steps"].as_array().into_iter().flatten() {
        let mut output = s(&st["output"]);
        if output.len() > 60 {
            output = format!("{}…", output.chars().take(60).collect::<String>());
        }
        out += &format!(
            "  {:<20} {:<10} {:<12} {:>8}  {}\n",
            s(&st["id"]),
            s(&st["status"]),
            s(&st["handler"]),
            s(&st["attempts"]),
            output
        );
    }
    if !doc["output"].is_null() {
        out += &format!("  output: {}\n", doc["output"]);
    }
    out
}

/// Human rendering of a lineage document.
pub fn render_lineage(doc: &Value) -> String {
    let mut out = format!("run {}  {}\n  dag:\n", s(&doc["run_id"]), s(&doc["status"]));
    for st in doc["dag"]["steps"].as_array().into_iter().flatten() {
        let deps: Vec<String> = st["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        out += &format!(
            "    {}{}\n",
            s(&st["id"]),
            if deps.is_empty() {
                String::new()
            } else {
                format!(" <- {}", deps.join(", "))
            }
        );
    }
    out += "  trace:\n";
    out += &format!(
        "    {:<16} {:>3}  {:<10} {:<16} {:<10} {:<10} {}\n",
        "step", "try", "outcome", "node", "region", "pool", "started_at"
    );
    for a in doc["execution_trace"].as_array().into_iter().flatten() {
        out += &format!(
            "    {:<16} {:>3}  {:<10} {:<16} {:<10} {:<10} {}\n",
            s(&a["step_id"]),
            s(&a["attempt"]),
            s(&a["outcome"]),
            s(&a["node_id"]),
            s(&a["region"]),
            s(&a["worker_pool"]),
            s(&a["started_at"])
        );
    }
    out += &format!("  metrics: {}\n", doc["metrics"]);
    out
}

/// Human rendering of `/v1/regions`.
pub fn render_regions(doc: &Value) -> String {
    let mut out = format!(
        "write region: {}  epoch: {}\n",
        s(&doc["write_region"]),
        s(&doc["epoch"])
    );
    for r in doc["regions"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<12} {:<8} lag {} ms\n",
            s(&r["name"]),
            s(&r["role"]),
            s(&r["lag_ms"])
        );
        for n in r["nodes"].as_array().into_iter().flatten() {
            out += &format!(
                "    {:<20} {:<7} {:<28} {}\n",
                s(&n["node_id"]),
                s(&n["node_type"]),
                s(&n["api_url"]),
                if n["healthy"] == true {
                    "healthy"
                } else {
                    "UNHEALTHY"
                }
            );
        }
    }
    out
}

async fn drill(kind: DrillKind, a: DrillArgs) -> anyhow::Result<i32> {
    let url = format!("{}/v1/admin/drills", a.api.api.trim_end_matches('/'));
    let body = DrillRequest {
        kind,
        to: a.to.clone(),
        load: a.load,
        max_lag_ms: a.max_lag_ms,
    };
    let http = http(&a.api, Duration::from_secs(300))?;
    if !a.api.json {
        eprintln!(
            "drill: {} to {} (load {}/s) via {}",
            kind.as_str(),
            a.to,
            a.load,
            a.api.api
        );
    }
    let call = http.post(&url).json(&body).send();
    tokio::pin!(call);
    let start = Instant::now();
    let resp = loop {
        tokio::select! {
            r = &mut call => break r.with_context(|| format!("POST {url}"))?,
            _ = tokio::time::sleep(Duration::from_secs(1)), if !a.api.json => {
                eprint!("\r  running… {:>3} s", start.elapsed().as_secs());
            }
        }
    };
    if !a.api.json {
        eprintln!();
    }
    let report = answer(resp).await?;
    if a.api.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_drill(&report));
    }
    Ok(if report["ok"] == true { 0 } else { 4 })
}

/// Human rendering of a drill report: the timeline, then the measurements.
pub fn render_drill(r: &Value) -> String {
    let mut out = format!(
        "{} {} -> {}  epoch {} -> {}\n  timeline:\n",
        s(&r["kind"]),
        s(&r["from_region"]),
        s(&r["to_region"]),
        s(&r["epoch_before"]),
        s(&r["epoch_after"])
    );
    let mut total = 0;
    for p in r["phases"].as_array().into_iter().flatten() {
        let ms = p["ms"].as_u64().unwrap_or(0);
        total += ms;
        out += &format!("    {:>7} ms  {:>7} ms  {}\n", ms, total, s(&p["name"]));
    }
    out += &format!(
        "  detection {} ms, RTO {} ms\n  writes: {} acknowledged, {} lost, {} duplicated, {} indeterminate, {} failed\n  stale reads: {}; old primary fenced: {}; nodes re-routed: {}/{}\n  {}\n",
        s(&r["detection_ms"]),
        s(&r["rto_ms"]),
        s(&r["acknowledged_writes"]),
        s(&r["lost_writes"]),
        s(&r["duplicate_writes"]),
        s(&r["indeterminate_writes"]),
        s(&r["failed_writes"]),
        s(&r["stale_reads"]),
        s(&r["old_primary_fenced"]),
        s(&r["nodes_rerouted"]),
        s(&r["nodes_total"]),
        if r["ok"] == true { "OK" } else { "NOT OK" }
    );
    if let Some(f) = r["failures"].as_object().filter(|f| !f.is_empty()) {
        out += &format!("  failed writes by answer: {}\n", Value::Object(f.clone()));
    }
    out
}
