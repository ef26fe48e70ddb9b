//! `swf dev`: an embedded local cluster on real PostgreSQL servers.
//!
//! Starts a PostgreSQL primary from the machine's binaries under the data
//! dir (as an unprivileged user when run as root), migrates it, runs one
//! hybrid node, writes `cluster.json`, and stops everything it started on
//! Ctrl-C. Restarts reuse the data dir, whatever state a previous run left
//! it in (see [`restart`]); `--fresh` starts over. The same building blocks
//! ([`prepare_database`]) serve the integration tests.

pub mod bench;
pub mod pgserver;
pub mod pki;
pub mod proxy;
mod restart;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Config, RegionSpec};
use crate::dev::pgserver::{PgBinaries, PgServer};
use crate::dev::proxy::DelayProxy;
use crate::drill::ClusterControl;
use crate::executor::handlers::Registry;
use crate::node::Node;
use crate::store::Store;

/// Options of `swf dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub regions: Vec<String>,
    pub base_port: u16,
    pub wan_latency_ms: u64,
    pub fresh: bool,
    /// HTTPS on every API, TLS (verify-full) on every database link and
    /// replication, auth on with an admin token; all from a throwaway CA
    /// under `data_dir/tls`.
    pub tls: bool,
    /// Slots of every node's pools (None: the config's default).
    pub pool_size: Option<usize>,
}

/// `cluster.json`: what scripts need to reach the dev cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub write_region: String,
    pub regions: Vec<ClusterRegion>,
    /// With `--tls`: the CA that signed every certificate of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// With `--tls`: the file holding the admin token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRegion {
    pub name: String,
    pub api_url: String,
    pub database_url: String,
    pub role: String,
}

impl ClusterFile {
    /// Makes `region` the write region and the only primary.
    pub fn set_primary(&mut self, region: &str) {
        self.write_region = region.to_string();
        for r in &mut self.regions {
            r.role = if r.name == region {
                "primary"
            } else {
                "replica"
            }
            .into();
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

/// Name of the application database inside each dev PostgreSQL server.
pub const DEV_DATABASE: &str = "swf";

/// Creates `database` on the server at `admin_url` if missing and migrates
/// it. A database already at this binary's schema is left untouched (a
/// fenced primary could not be migrated, and needs not be).
pub async fn prepare_database(
    admin_url: &str,
    database_url: &str,
    database: &str,
) -> anyhow::Result<()> {
    let admin = Store::connect_lazy(admin_url, 2)?;
    if !admin.database_exists(database).await? {
        admin
            .create_database(database)
            .await
            .with_context(|| format!("create database {database}"))?;
    }
    admin.close().await;
    let store = Store::connect_lazy(database_url, 2)?;
    let current = matches!(
        store.schema_compat().await,
        Ok(crate::store::SchemaCompat::Current(_))
    );
    if !current {
        store.migrate().await.context("migrate the database")?;
    }
    store.close().await;
    Ok(())
}

/// Locates the binaries, initialises (if needed) and starts a primary.
/// With `tls`, the server accepts TLS with those files.
pub async fn start_primary(
    data_dir: &Path,
    name: &str,
    tls: Option<&pgserver::PgTls>,
) -> anyhow::Result<PgServer> {
    start_server(data_dir, name, None, None, tls).await
}

/// Initialises (if needed) and starts a streaming replica of the primary
/// reachable at `upstream_port` (the primary, or a delay proxy before it).
/// With `tls`, it accepts TLS and replicates over TLS.
pub async fn start_replica(
    data_dir: &Path,
    name: &str,
    upstream_port: u16,
    port: Option<u16>,
    tls: Option<&pgserver::PgTls>,
) -> anyhow::Result<PgServer> {
    start_server(data_dir, name, Some(upstream_port), port, tls).await
}

/// A primary (`upstream` None) or a replica of the server at `upstream`,
/// on `port` or a free one.
async fn start_server(
    data_dir: &Path,
    name: &str,
    upstream: Option<u16>,
    port: Option<u16>,
    tls: Option<&pgserver::PgTls>,
) -> anyhow::Result<PgServer> {
    let bins = tokio::task::spawn_blocking(PgBinaries::locate).await??;
    let dir = data_dir.to_path_buf();
    let name = name.to_string();
    let tls = tls.cloned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<PgServer> {
        match upstream {
            None => pgserver::init_primary(&bins, &dir)?,
            Some(up) => pgserver::init_replica(&bins, up, &dir)?,
        }
        // TLS before primary_conninfo: a replica with TLS replicates over it.
        if let Some(t) = &tls {
            pgserver::install_server_tls(&dir, t)?;
        }
        if let Some(up) = upstream {
            pgserver::set_primary_conninfo(&dir, up, &name)?;
        }
        Ok(PgServer::start_on(&bins, &dir, &name, port)?)
    })
    .await?
}

/// One region's dev database.
struct DevDb {
    dir: PathBuf,
    port: u16,
    server: Option<PgServer>,
}

/// What drills may do to the dev cluster's databases: the
/// [`ClusterControl`] of `swf dev` and of the drill tests.
pub struct DevControl {
    dbs: tokio::sync::Mutex<std::collections::BTreeMap<String, DevDb>>,
    /// Cross-region links by name (`db A->B`, `api A->B`, `replication
    /// A->B`); a link made again (a replica re-pointed or re-cloned)
    /// replaces and stops the old one.
    proxies: std::sync::Mutex<std::collections::BTreeMap<String, DelayProxy>>,
    wan: Duration,
    cluster_path: PathBuf,
    tls: Option<DevTls>,
}

/// What `swf dev --tls` runs with.
#[derive(Debug, Clone)]
struct DevTls {
    pki: crate::dev::pki::DevPki,
    pg: pgserver::PgTls,
    /// The admin token (printed; its hash is the node's only token).
    token: String,
    token_file: PathBuf,
}

impl DevTls {
    /// Reuses or creates `data_dir/tls` and `data_dir/admin.token`.
    fn ensure(data_dir: &Path) -> anyhow::Result<DevTls> {
        let pki = crate::dev::pki::DevPki::ensure(&data_dir.join("tls"), "swf dev CA")
            .context("create the dev CA and certificates")?;
        let pg = pgserver::PgTls::from_pki(&pki)?;
        let token_file = data_dir.join("admin.token");
        let token = match std::fs::read_to_string(&token_file) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let bytes: [u8; 24] = rand::random();
                let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::dev::pki::write_private(&token_file, &format!("{t}\n"))
                    .with_context(|| format!("write {}", token_file.display()))?;
                t
            }
        };
        Ok(DevTls {
            pki,
            pg,
            token,
            token_file,
        })
    }

    /// Puts HTTPS, peer verification and auth with the admin token into a node's config.
    fn apply(&self, config: &mut Config) {
        config.api.tls_cert = Some(self.pki.cert.clone());
        config.api.tls_key = Some(self.pki.key.clone());
        config.api.peer_ca = Some(self.pki.ca_cert.clone());
        config.api.public_url = format!("https://{}", config.api.listen);
        config.auth.enabled = true;
        config.auth.tokens = vec![crate::config::TokenSpec {
            name: "dev-admin".into(),
            sha256: crate::api::auth::hash_token(&self.token),
            scopes: vec!["read".into(), "submit".into(), "admin".into()],
        }];
    }
}

impl DevControl {
    /// Keeps a started server as `region`'s database.
    async fn keep(&self, region: &str, dir: PathBuf, pg: PgServer) {
        let db = DevDb {
            dir,
            port: pg.port(),
            server: Some(pg),
        };
        self.dbs.lock().await.insert(region.to_string(), db);
    }

    /// URL of database `db` behind `port`: verify-full TLS with `--tls`.
    fn url(&self, port: u16, db: &str) -> String {
        match &self.tls {
            Some(t) => format!(
                "postgres://postgres@127.0.0.1:{port}/{db}?sslmode=verify-full&sslrootcert={}",
                t.pki.ca_cert.display()
            ),
            None => format!("postgres://postgres@127.0.0.1:{port}/{db}"),
        }
    }

    fn pg_tls(&self) -> Option<&pgserver::PgTls> {
        self.tls.as_ref().map(|t| &t.pg)
    }

    /// A cross-region link to `target`: always through a proxy (without
    /// `--wan-latency-ms`, one that adds no delay), so that a partition
    /// drill can cut it.
    async fn link(&self, target: u16, name: String) -> anyhow::Result<u16> {
        let p = DelayProxy::start(
            ([127, 0, 0, 1], 0).into(),
            ([127, 0, 0, 1], target).into(),
            self.wan,
            &name,
        )
        .await?;
        let port = p.local_addr().port();
        let old = self.proxies.lock().expect("proxies lock").insert(name, p);
        if let Some(old) = old {
            old.shutdown().await;
        }
        Ok(port)
    }

    /// A replication link from `primary` to `region`'s database, and that
    /// database's directory and port.
    async fn upstream(&self, region: &str, primary: &str) -> anyhow::Result<(u16, PathBuf, u16)> {
        let upstream = self
            .link(
                self.port_of(primary).await?,
                format!("replication {primary}->{region}"),
            )
            .await?;
        let dbs = self.dbs.lock().await;
        let d = &dbs[region];
        Ok((upstream, d.dir.clone(), d.port))
    }

    async fn port_of(&self, region: &str) -> anyhow::Result<u16> {
        self.dbs
            .lock()
            .await
            .get(region)
            .map(|d| d.port)
            .with_context(|| format!("no dev database for region {region}"))
    }

    async fn take_server(&self, region: &str) -> anyhow::Result<Option<PgServer>> {
        let mut dbs = self.dbs.lock().await;
        let db = dbs
            .get_mut(region)
            .with_context(|| format!("no dev database for region {region}"))?;
        Ok(db.server.take())
    }

    /// Stops every database, replicas first.
    async fn stop_all(&self, primary_first_order: &[String]) {
        for r in primary_first_order.iter().rev() {
            if let Ok(Some(mut pg)) = self.take_server(r).await {
                eprintln!("stopping PostgreSQL ({r})");
                let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
            }
        }
        let proxies = std::mem::take(&mut *self.proxies.lock().expect("proxies lock"));
        for p in proxies.into_values() {
            p.shutdown().await;
        }
    }
}

impl ClusterControl for DevControl {
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.kill()).await?;
            }
            Ok(())
        })
    }

    fn stop(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            Ok(())
        })
    }

    fn rejoin(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (region, primary) = (region.to_string(), primary.to_string());
        Box::pin(async move {
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            let (upstream, dir, port) = self.upstream(&region, &primary).await?;
            // A fresh clone of the new primary: the old timeline may hold
            // WAL the new primary never saw (always so after a failover).
            // Renamed away first, so a crash never leaves it half deleted.
            restart::remove_dir(&dir)?;
            crate::drill::hold_point("rejoin").await;
            let server = start_replica(&dir, &region, upstream, Some(port), self.pg_tls()).await?;
            self.dbs
                .lock()
                .await
                .get_mut(&region)
                .expect("region")
                .server = Some(server);
            Ok(())
        })
    }

    fn repoint(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (region, primary) = (region.to_string(), primary.to_string());
        Box::pin(async move {
            let (upstream, dir, port) = self.upstream(&region, &primary).await?;
            pgserver::set_primary_conninfo(&dir, upstream, &region)?;
            // primary_conninfo is reloadable (PostgreSQL 13 and later).
            let store = Store::connect_lazy(&self.url(port, "postgres"), 1)?;
            store.reload_config().await?;
            store.close().await;
            Ok(())
        })
    }

    fn can_partition(&self) -> bool {
        true
    }

    fn partition(&self, region: &str, cut: bool) -> Option<usize> {
        let proxies = self.proxies.lock().expect("proxies lock");
        let mut n = 0;
        for (name, p) in proxies.iter() {
            if link_touches(name, region) {
                p.set_blocked(cut);
                n += 1;
            }
        }
        Some(n)
    }

    fn promoted(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            let text = std::fs::read_to_string(&self.cluster_path)?;
            let mut c: ClusterFile = serde_json::from_str(&text)?;
            c.set_primary(&region);
            c.write(&self.cluster_path)
        })
    }
}

/// Whether link `name` (`<kind> <from>-><to>`) has `region` at either end.
fn link_touches(name: &str, region: &str) -> bool {
    name.split_once(' ')
        .and_then(|(_, ends)| ends.split_once("->"))
        .is_some_and(|(a, b)| a == region || b == region)
}

/// A running dev cluster: databases, proxies and one node per region.
pub struct DevCluster {
    pub nodes: Vec<Node>,
    pub control: Arc<DevControl>,
    pub cluster: ClusterFile,
    pub cluster_path: PathBuf,
    order: Vec<String>,
}

impl DevCluster {
    /// Starts (or restarts, reusing `data_dir`) the cluster of `opts`.
    pub async fn start(opts: &DevOptions, registry: Registry) -> anyhow::Result<DevCluster> {
        let regions = &opts.regions;
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("create data dir {}", opts.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&opts.data_dir)?;
        let wan = Duration::from_millis(opts.wan_latency_ms);
        let pg_dir = |r: &str| data_dir.join("pg").join(r);
        let cluster_path = data_dir.join("cluster.json");
        // The primary: the first region on a new cluster; whichever a drill
        // promoted on a reused one (see `restart`).
        let mut states = Vec::new();
        for r in regions {
            let dir = pg_dir(r);
            restart::remove_dir(&restart::trash_path(&dir))?;
            let mut state = restart::dir_state(&dir);
            if state == restart::DirState::Incomplete {
                eprintln!(
                    "region {r}: {} is an incomplete data dir: cloned again",
                    dir.display()
                );
                restart::remove_dir(&dir)?;
                state = restart::DirState::Missing;
            }
            states.push((r.clone(), state));
        }
        let layout = restart::layout(&states, restart::recorded_primary(&cluster_path).as_deref())?;
        let primary = layout.primary.clone();
        let control = Arc::new(DevControl {
            dbs: tokio::sync::Mutex::new(Default::default()),
            proxies: std::sync::Mutex::new(Default::default()),
            wan,
            cluster_path,
            tls: if opts.tls {
                Some(DevTls::ensure(&data_dir)?)
            } else {
                None
            },
        });
        let mut order = vec![primary.clone()];
        order.extend(regions.iter().filter(|r| **r != primary).cloned());
        match Self::start_inner(opts, registry, &data_dir, &layout, &control, &order).await {
            Ok((nodes, cluster)) => Ok(DevCluster {
                nodes,
                control: control.clone(),
                cluster_path: control.cluster_path.clone(),
                cluster,
                order,
            }),
            Err(e) => {
                control.stop_all(&order).await;
                Err(e)
            }
        }
    }

    async fn start_inner(
        opts: &DevOptions,
        registry: Registry,
        data_dir: &Path,
        layout: &restart::Layout,
        control: &Arc<DevControl>,
        order: &[String],
    ) -> anyhow::Result<(Vec<Node>, ClusterFile)> {
        let regions = &opts.regions;
        let primary = layout.primary.as_str();
        let pg_dir = |r: &str| data_dir.join("pg").join(r);
        eprintln!(
            "starting PostgreSQL primary for region {primary} under {}",
            data_dir.display()
        );
        let pg = start_primary(&pg_dir(primary), primary, control.pg_tls()).await?;
        let primary_port = pg.port();
        prepare_database(
            &control.url(primary_port, "postgres"),
            &control.url(primary_port, DEV_DATABASE),
            DEV_DATABASE,
        )
        .await?;
        control.keep(primary, pg_dir(primary), pg).await;
        for r in order.iter().skip(1) {
            if layout.fenced.contains(r) {
                // A primary too (a drill was interrupted after promoting the
                // primary): never a second writable one, never silently a
                // standby; `swf drill recover` rejoins it.
                eprintln!(
                    "region {r}'s database is a primary too (an interrupted drill): started fenced; run `swf drill recover`"
                );
                pgserver::fence_data_dir(&pg_dir(r))?;
                let pg = start_primary(&pg_dir(r), r, control.pg_tls()).await?;
                control.keep(r, pg_dir(r), pg).await;
                continue;
            }
            // Replication crosses the WAN too.
            let upstream = control
                .link(primary_port, format!("replication {primary}->{r}"))
                .await?;
            eprintln!("starting PostgreSQL replica for region {r}");
            let pg = start_replica(&pg_dir(r), r, upstream, None, control.pg_tls()).await?;
            control.keep(r, pg_dir(r), pg).await;
        }
        let ports: std::collections::BTreeMap<String, u16> = control
            .dbs
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.port))
            .collect();

        // Every node's API port is bound before any node starts (the nodes
        // reach each other through links made up front), so nothing else can
        // take one in between. Base port 0: any free ports.
        let mut listeners = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let port = if opts.base_port == 0 {
                0
            } else {
                opts.base_port
                    .checked_add(i as u16)
                    .context("--base-port: too high for this many regions")?
            };
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("listen on 127.0.0.1:{port} (the API of region {region})")
            })?;
            listeners.push(Some(l));
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .flatten()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        let api_addr = |i: usize| -> SocketAddr { addrs[i] };
        let mut nodes = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            // This node's view: its own database and API directly, every
            // other region's through the WAN link.
            let mut specs = Vec::new();
            for (j, other) in regions.iter().enumerate() {
                let (db, api) = if other == r {
                    (ports[other], None)
                } else {
                    let db = control
                        .link(ports[other], format!("db {r}->{other}"))
                        .await?;
                    let api = control
                        .link(api_addr(j).port(), format!("api {r}->{other}"))
                        .await?;
                    let scheme = if control.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    (db, Some(format!("{scheme}://127.0.0.1:{api}")))
                };
                specs.push(RegionSpec {
                    name: other.clone(),
                    database_url: control.url(db, DEV_DATABASE),
                    api_url: api,
                });
            }
            let mut config = Config::for_dev(
                format!("{r}-1"),
                r,
                primary,
                api_addr(i),
                control.url(ports[r], DEV_DATABASE),
            );
            if let Some(t) = &control.tls {
                t.apply(&mut config);
            }
            if let Some(n) = opts.pool_size {
                for p in config.worker_pools.values_mut() {
                    p.size = n;
                }
            }
            if regions.len() > 1 {
                config.regions = specs;
            }
            let ctl: Arc<dyn ClusterControl> = control.clone();
            let node = Node::start_on(config, registry.clone(), Some(ctl), listeners[i].take())
                .await
                .with_context(|| format!("start the node of region {r}"))?;
            nodes.push(node);
        }
        let mut cluster = ClusterFile {
            write_region: String::new(),
            regions: regions
                .iter()
                .zip(&nodes)
                .map(|(r, n)| ClusterRegion {
                    name: r.clone(),
                    api_url: n.url(),
                    database_url: control.url(ports[r], DEV_DATABASE),
                    role: String::new(),
                })
                .collect(),
            ca_cert: control.tls.as_ref().map(|t| t.pki.ca_cert.clone()),
            token_file: control.tls.as_ref().map(|t| t.token_file.clone()),
        };
        cluster.set_primary(primary);
        for r in &mut cluster.regions {
            if layout.fenced.contains(&r.name) {
                r.role = "fenced".into();
            }
        }
        cluster.write(&control.cluster_path)?;
        Ok((nodes, cluster))
    }

    /// Stops the nodes, then the databases and proxies.
    pub async fn stop(self) {
        for mut n in self.nodes {
            n.shutdown().await;
        }
        self.control.stop_all(&self.order).await;
    }
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
    let stop = crate::node::signals::shutdown_signal();
    let cluster = DevCluster::start(&opts, Registry::with_builtins()).await?;
    let c = &cluster.cluster;
    let wan = opts.wan_latency_ms;
    println!(
        "swf dev: {} region(s), primary in {}{}",
        c.regions.len(),
        c.write_region,
        if wan == 0 {
            String::new()
        } else {
            format!(", {wan} ms one-way between regions")
        }
    );
    for (r, n) in c.regions.iter().zip(&cluster.nodes) {
        println!(
            "  {:<10} {:<8} node {:<14} API {}   database {}",
            r.name,
            r.role,
            n.node_id(),
            r.api_url,
            r.database_url
        );
    }
    println!("  cluster    {}", cluster.cluster_path.display());
    let api_url = &c.regions[0].api_url;
    // With --tls, every example needs the CA and the token.
    let (curl, env) = match (&c.ca_cert, &cluster.control.tls) {
        (Some(ca), Some(t)) => {
            println!();
            println!("TLS on (CA {}); auth on. Admin token:", ca.display());
            println!("  {}", t.token);
            println!("  (also in {})", t.token_file.display());
            (
                format!(
                    "curl -s --cacert {} -H \"authorization: Bearer $SWF_TOKEN\"",
                    ca.display()
                ),
                Some(format!(
                    "export SWF_CA_CERT={} SWF_TOKEN=$(cat {})",
                    ca.display(),
                    t.token_file.display()
                )),
            )
        }
        _ => ("curl -s".to_string(), None),
    };
    println!();
    println!("Dashboard: {api_url}/ui/   (OpenAPI: {api_url}/openapi.json)");
    println!();
    println!("Try it:");
    if let Some(env) = env {
        println!("  {env}");
    }
    println!(
        "  {curl} -XPOST {api_url}/v1/workflows -H 'content-type: application/json' \\\n    -d '{{\"goal\":\"demo\",\"steps\":[{{\"id\":\"a\",\"handler\":\"noop\"}},{{\"id\":\"b\",\"handler\":\"echo\",\"depends_on\":[\"a\"]}}]}}'"
    );
    println!("  swf status --api {api_url} <run_id> --wait");
    if c.regions.len() > 1 {
        println!("  swf regions --api {api_url}");
        let other = &c
            .regions
            .iter()
            .find(|r| r.role == "replica")
            .map(|r| r.name.clone())
            .unwrap_or_default();
        println!("  swf drill switchover --to {other} --api {api_url} --load 50");
    }
    println!();
    println!("Ctrl-C stops the nodes and PostgreSQL.");
    stop.await;
    cluster.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::link_touches;

    #[test]
    fn a_partition_cuts_the_links_with_its_region_at_either_end() {
        for (name, region, cut) in [
            ("db eu-west->us-east", "eu-west", true),
            ("db us-east->eu-west", "eu-west", true),
            ("api us-east->eu-west", "eu-west", true),
            ("replication us-east->eu-west", "us-east", true),
            ("replication us-east->ap-south", "eu-west", false),
            ("db us-east->eu-west-2", "eu-west", false),
            ("db eu->us", "", false),
            ("garbage", "eu-west", false),
        ] {
            assert_eq!(link_touches(name, region), cut, "{name} / {region}");
        }
    }
}
