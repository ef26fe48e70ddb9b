//! `swf dev`: an embedded local cluster on real PostgreSQL servers.
//!
//! Starts a PostgreSQL primary from the machine's binaries under the data
//! dir (as an unprivileged user when run as root), migrates it, runs one
//! hybrid node, writes `cluster.json`, and stops everything it started on
//! Ctrl-C. Restarts reuse the data dir, whatever state a previous run left
//! it in (see [`restart`]); `--fresh` starts over. The same building blocks
//! ([`prepare_database`]) serve the integration tests.

pub mod bench;
mod cluster_file;
mod control;
pub mod patroni;
pub mod pgserver;
pub mod pki;
pub mod proxy;
mod restart;
mod servers;

pub use cluster_file::{ClusterFile, ClusterRegion};
pub use control::DevControl;
use control::{DevDb, DevTls};
pub use servers::{prepare_database, start_primary, start_replica, DEV_DATABASE};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, RegionSpec};
use crate::drill::ClusterControl;
use crate::executor::handlers::Registry;
use crate::node::Node;

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
    /// The HA manager of the regions' databases (None: `swf dev` runs
    /// them itself).
    pub ha: Option<HaManager>,
}

/// `swf dev --ha`: who manages the regions' PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HaManager {
    /// One Patroni per region over one etcd (Debian's `patroni` and
    /// `etcd-server`).
    Patroni,
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
        if opts.ha == Some(HaManager::Patroni) {
            return Self::start_patroni(opts, registry, &data_dir).await;
        }
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
            patroni: None,
        });
        let mut order = vec![primary.clone()];
        order.extend(regions.iter().filter(|r| **r != primary).cloned());
        let started = Self::start_inner(opts, registry, &data_dir, &layout, &control, &order).await;
        Self::assemble(control, order, started).await
    }

    /// The cluster its nodes `started` on; if they did not, its databases
    /// and proxies are stopped again.
    async fn assemble(
        control: Arc<DevControl>,
        order: Vec<String>,
        started: anyhow::Result<(Vec<Node>, ClusterFile)>,
    ) -> anyhow::Result<DevCluster> {
        match started {
            Ok((nodes, cluster)) => Ok(DevCluster {
                nodes,
                cluster_path: control.cluster_path.clone(),
                control,
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
        Self::start_nodes(opts, registry, primary, &layout.fenced, control).await
    }

    /// `--ha patroni`: etcd and a Patroni per region run the databases
    /// (under `data_dir/patroni`); the nodes start as without it.
    async fn start_patroni(
        opts: &DevOptions,
        registry: Registry,
        data_dir: &Path,
    ) -> anyhow::Result<DevCluster> {
        if opts.tls {
            anyhow::bail!("--ha patroni does not run with --tls yet");
        }
        // Patroni's callback runs this binary (`SWF_EXE` names another, e.g.
        // from a test binary).
        let exe = match std::env::var_os("SWF_EXE") {
            Some(p) => PathBuf::from(p),
            None => {
                std::env::current_exe().context("locate this swf binary (Patroni's callback)")?
            }
        };
        let dir = data_dir.join("patroni");
        eprintln!(
            "starting etcd and {} Patroni member(s) under {}",
            opts.regions.len(),
            dir.display()
        );
        let started = patroni::Patroni::start(&dir, &opts.regions, &exe).await?;
        let primary = started.leader.clone();
        let control = Arc::new(DevControl {
            dbs: tokio::sync::Mutex::new(Default::default()),
            proxies: std::sync::Mutex::new(Default::default()),
            wan: Duration::from_millis(opts.wan_latency_ms),
            cluster_path: data_dir.join("cluster.json"),
            tls: None,
            patroni: Some(started.patroni),
        });
        let mut order = vec![primary.clone()];
        order.extend(opts.regions.iter().filter(|r| **r != primary).cloned());
        let inner = async {
            let port = started.ports[&primary];
            prepare_database(
                &control.url(port, "postgres"),
                &control.url(port, DEV_DATABASE),
                DEV_DATABASE,
            )
            .await?;
            for (r, port) in &started.ports {
                let db = DevDb {
                    dir: dir.join("pg").join(r),
                    port: *port,
                    server: None,
                };
                control.dbs.lock().await.insert(r.clone(), db);
            }
            Self::start_nodes(opts, registry, &primary, &[], &control).await
        };
        let started = inner.await;
        Self::assemble(control, order, started).await
    }

    /// One node per region on the databases `control` holds, and
    /// `cluster.json`; regions in `fenced` are marked so.
    async fn start_nodes(
        opts: &DevOptions,
        registry: Registry,
        primary: &str,
        fenced: &[String],
        control: &Arc<DevControl>,
    ) -> anyhow::Result<(Vec<Node>, ClusterFile)> {
        let regions = &opts.regions;
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
            if fenced.contains(&r.name) {
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
