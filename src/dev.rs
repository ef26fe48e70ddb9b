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

use std::time::Duration;

use crate::config::{Config, RegionSpec};
use crate::handlers::Registry;
use crate::node::Node;
use crate::pgserver::{self, PgBinaries, PgServer, PgSettings};
use crate::proxy::DelayProxy;
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

/// Initialises (if needed) and starts a streaming replica of the primary
/// reachable at `upstream_port` (the primary, or a delay proxy before it).
pub async fn start_replica(
    data_dir: &Path,
    name: &str,
    upstream_port: u16,
) -> anyhow::Result<PgServer> {
    let bins = tokio::task::spawn_blocking(PgBinaries::locate).await??;
    let dir = data_dir.to_path_buf();
    let name = name.to_string();
    let server = tokio::task::spawn_blocking(move || -> anyhow::Result<PgServer> {
        pgserver::init_replica(&bins, upstream_port, &dir)?;
        pgserver::set_primary_conninfo(&dir, upstream_port, &name)?;
        let port = pgserver::free_port()?;
        Ok(PgServer::start(&bins, &dir, PgSettings { port, name })?)
    })
    .await??;
    Ok(server)
}

/// A link between regions: direct, or through a delay proxy.
async fn link(
    proxies: &mut Vec<DelayProxy>,
    target: SocketAddr,
    wan: Duration,
    name: String,
) -> anyhow::Result<SocketAddr> {
    if wan.is_zero() {
        return Ok(target);
    }
    let p = DelayProxy::start(([127, 0, 0, 1], 0).into(), target, wan, &name).await?;
    let addr = p.local_addr();
    proxies.push(p);
    Ok(addr)
}

fn db_url(addr: SocketAddr) -> String {
    format!("postgres://postgres@{addr}/{DEV_DATABASE}")
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
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = opts.regions.iter().find(|r| !seen.insert(r.as_str())) {
        bail!("--regions lists `{dup}` twice");
    }
    if opts.regions.len() == 1 && opts.wan_latency_ms > 0 {
        tracing::warn!("--wan-latency-ms has no effect with a single region");
    }
    if opts.fresh && opts.data_dir.exists() {
        std::fs::remove_dir_all(&opts.data_dir)
            .with_context(|| format!("remove {} (--fresh)", opts.data_dir.display()))?;
    }
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("create data dir {}", opts.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;
    let wan = Duration::from_millis(opts.wan_latency_ms);
    let mut servers: Vec<(String, PgServer)> = Vec::new();
    let result = run_cluster(&opts, &data_dir, wan, &mut servers).await;
    // Replicas first, then the primary.
    for (name, mut pg) in servers.into_iter().rev() {
        eprintln!("stopping PostgreSQL ({name})");
        let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
    }
    result
}

async fn run_cluster(
    opts: &DevOptions,
    data_dir: &Path,
    wan: Duration,
    servers: &mut Vec<(String, PgServer)>,
) -> anyhow::Result<()> {
    let regions = &opts.regions;
    // The primary is the region whose data dir is not a standby: the first
    // region on a new cluster; whichever a drill promoted on a reused one.
    let pg_dir = |r: &str| data_dir.join("pg").join(r);
    let primary = regions
        .iter()
        .find(|r| {
            pg_dir(r).join("PG_VERSION").exists() && !pg_dir(r).join("standby.signal").exists()
        })
        .unwrap_or(&regions[0])
        .clone();
    eprintln!(
        "starting PostgreSQL primary for region {primary} under {}",
        data_dir.display()
    );
    let pg = start_primary(&pg_dir(&primary), &primary).await?;
    let primary_port = pg.port();
    prepare_database(&pg.url("postgres"), &pg.url(DEV_DATABASE), DEV_DATABASE).await?;
    servers.push((primary.clone(), pg));

    let mut proxies = Vec::new();
    let mut db_addr = std::collections::BTreeMap::new();
    db_addr.insert(
        primary.clone(),
        SocketAddr::from(([127, 0, 0, 1], primary_port)),
    );
    for r in regions.iter().filter(|r| **r != primary) {
        // Replication crosses the WAN too.
        let upstream = link(
            &mut proxies,
            ([127, 0, 0, 1], primary_port).into(),
            wan,
            format!("replication {primary}->{r}"),
        )
        .await?;
        eprintln!("starting PostgreSQL replica for region {r}");
        let pg = start_replica(&pg_dir(r), r, upstream.port()).await?;
        db_addr.insert(r.clone(), ([127, 0, 0, 1], pg.port()).into());
        servers.push((r.clone(), pg));
    }

    let api_addr = |i: usize| -> SocketAddr { ([127, 0, 0, 1], opts.base_port + i as u16).into() };
    let mut nodes = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        // This node's view: its own database and API directly, every other
        // region's through the WAN link.
        let mut specs = Vec::new();
        for (j, other) in regions.iter().enumerate() {
            let (db, api) = if other == r {
                (db_addr[other], None)
            } else {
                let db = link(
                    &mut proxies,
                    db_addr[other],
                    wan,
                    format!("db {r}->{other}"),
                )
                .await?;
                let api = link(&mut proxies, api_addr(j), wan, format!("api {r}->{other}")).await?;
                (db, Some(format!("http://{api}")))
            };
            specs.push(RegionSpec {
                name: other.clone(),
                database_url: db_url(db),
                api_url: api,
            });
        }
        let mut config = Config::for_dev(
            format!("{r}-1"),
            r,
            &primary,
            api_addr(i),
            db_url(db_addr[r]),
        );
        if regions.len() > 1 {
            config.regions = specs;
        }
        let node = Node::start(config, Registry::with_builtins())
            .await
            .with_context(|| format!("start the node of region {r}"))?;
        nodes.push(node);
    }

    let cluster = ClusterFile {
        write_region: primary.clone(),
        regions: regions
            .iter()
            .zip(&nodes)
            .map(|(r, n)| ClusterRegion {
                name: r.clone(),
                api_url: n.url(),
                database_url: db_url(db_addr[r]),
                role: if *r == primary {
                    "primary".into()
                } else {
                    "replica".into()
                },
            })
            .collect(),
    };
    let cluster_path = data_dir.join("cluster.json");
    std::fs::write(&cluster_path, serde_json::to_vec_pretty(&cluster)?)
        .with_context(|| format!("write {}", cluster_path.display()))?;

    println!(
        "swf dev: {} region(s), primary in {primary}{}",
        regions.len(),
        if wan.is_zero() {
            String::new()
        } else {
            format!(", {} ms one-way between regions", wan.as_millis())
        }
    );
    for (r, n) in cluster.regions.iter().zip(&nodes) {
        println!(
            "  {:<10} {:<8} node {:<14} API {}   database {}",
            r.name,
            r.role,
            n.node_id(),
            r.api_url,
            r.database_url
        );
    }
    println!("  cluster    {}", cluster_path.display());
    let api_url = &cluster.regions[0].api_url;
    println!();
    println!("Try it:");
    println!(
        "  curl -s -XPOST {api_url}/v1/workflows -H 'content-type: application/json' \\\n    -d '{{\"goal\":\"demo\",\"steps\":[{{\"id\":\"a\",\"handler\":\"noop\"}},{{\"id\":\"b\",\"handler\":\"echo\",\"depends_on\":[\"a\"]}}]}}'"
    );
    println!("  swf status --api {api_url} <run_id> --wait");
    if regions.len() > 1 {
        println!("  swf regions --api {api_url}");
    }
    println!();
    println!("Ctrl-C stops the nodes and PostgreSQL.");

    shutdown_signal().await;
    for mut n in nodes {
        n.shutdown().await;
    }
    for p in proxies {
        p.shutdown().await;
    }
    Ok(())
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
