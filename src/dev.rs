//! `swf dev`: an embedded local cluster on real PostgreSQL servers.
//!
//! Starts a PostgreSQL primary from the machine's binaries under the data
//! dir (as an unprivileged user when run as root), migrates it, runs one
//! hybrid node, writes `cluster.json`, and stops everything it started on
//! Ctrl-C. Restarts reuse the data dir; `--fresh` starts over. The same
//! building blocks ([`prepare_database`]) serve the integration tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::handlers::Registry;
use crate::node::Node;
use crate::pgserver::{self, PgBinaries, PgServer, PgSettings};
use crate::store::Store;

/// Options of `swf dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub regions: Vec<String>,
    pub base_port: u16,
    pub wan_latency_ms: u64,
    pub fresh: bool,
}

/// `cluster.json`: what scripts need to reach the dev cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub write_region: String,
    pub regions: Vec<ClusterRegion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRegion {
    pub name: String,
    pub api_url: String,
    pub database_url: String,
    pub role: String,
}

/// Name of the application database inside each dev PostgreSQL server.
pub const DEV_DATABASE: &str = "swf";

/// Creates `database` on the server at `admin_url` if missing and migrates it.
pub async fn prepare_database(
    admin_url: &str,
    database_url: &str,
    database: &str,
) -> anyhow::Result<()> {
    let admin = Store::connect_lazy(admin_url, 2)?;
    if !admin.database_exists(database).await? {
        admin
            .execute_admin(&format!("CREATE DATABASE \"{database}\""))
            .await
            .with_context(|| format!("create database {database}"))?;
    }
    admin.close().await;
    let store = Store::connect_lazy(database_url, 2)?;
    store.migrate().await.context("migrate the database")?;
    store.close().await;
    Ok(())
}

/// Locates the binaries, initialises (if needed) and starts a primary.
pub async fn start_primary(data_dir: &Path, name: &str) -> anyhow::Result<PgServer> {
    let bins = tokio::task::spawn_blocking(PgBinaries::locate).await??;
    let dir = data_dir.to_path_buf();
    let name = name.to_string();
    let server = tokio::task::spawn_blocking(move || -> anyhow::Result<PgServer> {
        pgserver::init_primary(&bins, &dir)?;
        let port = pgserver::free_port()?;
        Ok(PgServer::start(&bins, &dir, PgSettings { port, name })?)
    })
    .await??;
    Ok(server)
}

/// Runs `swf dev` until Ctrl-C or SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    if opts.regions.is_empty() {
        bail!("--regions needs at least one region name");
    }
    for r in &opts.regions {
        if !crate::config::valid_name(r) {
            bail!("--regions: `{r}` is not a valid region name (1 to 64 of letters, digits, `_`, `-`)");
        }
    }
    if opts.regions.len() > 1 {
        bail!(
            "--regions {}: a multi-region dev cluster is not supported yet; run one region (e.g. --regions {})",
            opts.regions.join(","),
            opts.regions[0]
        );
    }
    if opts.wan_latency_ms > 0 {
        tracing::warn!("--wan-latency-ms has no effect with a single region");
    }
    let region = opts.regions[0].clone();
    if opts.fresh && opts.data_dir.exists() {
        std::fs::remove_dir_all(&opts.data_dir)
            .with_context(|| format!("remove {} (--fresh)", opts.data_dir.display()))?;
    }
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("create data dir {}", opts.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;

    eprintln!(
        "starting PostgreSQL primary for region {region} under {}",
        data_dir.display()
    );
    let mut pg = start_primary(&data_dir.join("pg").join(&region), &region).await?;
    let db_url = pg.url(DEV_DATABASE);
    prepare_database(&pg.url("postgres"), &db_url, DEV_DATABASE).await?;

    let listen: SocketAddr = ([127, 0, 0, 1], opts.base_port).into();
    let config = Config::for_dev(format!("{region}-1"), &region, &region, listen, &db_url);
    let node = Node::start(config, Registry::with_builtins()).await?;
    let api_url = node.url();
    let cluster = ClusterFile {
        write_region: region.clone(),
        regions: vec![ClusterRegion {
            name: region.clone(),
            api_url: api_url.clone(),
            database_url: db_url.clone(),
            role: "primary".into(),
        }],
    };
    let cluster_path = data_dir.join("cluster.json");
    std::fs::write(&cluster_path, serde_json::to_vec_pretty(&cluster)?)
        .with_context(|| format!("write {}", cluster_path.display()))?;

    println!("swf dev: 1 region, node {} (hybrid)", node.node_id());
    println!("  API        {api_url}");
    println!("  database   {db_url}");
    println!("  cluster    {}", cluster_path.display());
    println!();
    println!("Try it:");
    println!(
        "  curl -s -XPOST {api_url}/v1/workflows -H 'content-type: application/json' \\\n    -d '{{\"goal\":\"demo\",\"steps\":[{{\"id\":\"a\",\"handler\":\"noop\"}},{{\"id\":\"b\",\"handler\":\"echo\",\"depends_on\":[\"a\"]}}]}}'"
    );
    println!("  swf status --api {api_url} <run_id> --wait");
    println!();
    println!("Ctrl-C stops the node and PostgreSQL.");

    let result = node.run_until(shutdown_signal()).await;
    eprintln!("stopping PostgreSQL ({region})");
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
