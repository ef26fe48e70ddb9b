//! A node: assembles the subsystems its config's roles ask for, supervises
//! them and shuts them down.
//!
//! Every node runs the HTTP server (health, info and metrics are always
//! served; `/v1` only with the client role) and a heartbeat. The client role
//! adds the [`Client`]; the executor role adds the worker pools. Background
//! tasks live in one `JoinSet`; one that exits before shutdown is a fatal,
//! logged event that stops the node.

pub mod signals;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::api::{self, ApiState, NodeInfo};
use crate::client::Client;
use crate::config::Config;
use crate::drill::ClusterControl;
use crate::executor::handlers::Registry;
use crate::executor::{Executor, ExecutorSettings, PoolSpec};
use crate::model::workflow::Limits;
use crate::router::{RegionDb, Router};
use crate::store::{Leases, NodeRow, Store};
/// Retry backoff: base 1 s, doubling, capped at 60 s (DESIGN section 8).
const BACKOFF_BASE_MS: i32 = 1_000;
const BACKOFF_CAP_MS: i32 = 60_000;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A running node.
pub struct Node {
    info: Arc<NodeInfo>,
    addr: SocketAddr,
    server_tls: Option<Arc<crate::api::tls::ServerTls>>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    executor: Option<Arc<Executor>>,
    store: Store,
}

impl Node {
    /// Starts a node from its config. The database must be migrated to a
    /// schema this binary knows.
    pub async fn start(config: Config, registry: Registry) -> anyhow::Result<Node> {
        Self::start_with_control(config, registry, None).await
    }

    /// Starts a node that can run drills against databases it controls.
    pub async fn start_with_control(
        config: Config,
        registry: Registry,
        control: Option<Arc<dyn ClusterControl>>,
    ) -> anyhow::Result<Node> {
        let d = &config.drills;
        let hooks = d.fence_command.is_some()
            || d.promote_command.is_some()
            || d.kill_command.is_some()
            || d.rejoin_command.is_some();
        let control = control.or_else(|| {
            hooks.then(|| {
                Arc::new(crate::drill::HookControl::new(config.drills.clone()))
                    as Arc<dyn ClusterControl>
            })
        });
        // Every line this node logs carries its id and region.
        let span = tracing::info_span!("node", node_id = %config.node_id, region = %config.region);
        // Install the recorder before anything records.
        let _ = crate::telemetry::prometheus();
        let store = Store::connect_lazy(&config.database.url, config.database.max_connections)?;
        check_schema(&store).await?;
        let mut regions = Vec::new();
        for r in &config.regions {
            let db = if r.name == config.region {
                store.clone()
            } else {
                Store::connect_lazy(&r.database_url, config.database.max_connections)?
            };
            regions.push(RegionDb {
                name: r.name.clone(),
                store: db,
                api_url: r.api_url.clone(),
            });
        }
        let router = Arc::new(Router::new(
            &config.region,
            store.clone(),
            regions,
            config.routing.clone(),
            &config.node_id,
        ));
        router
            .discover_primary()
            .await
            .context("find the primary database")?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        {
            let router = router.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(router.track(shutdown).instrument(span.clone()));
        }

        let client = config.enable_client.then(|| {
            Client::new(
                router.clone(),
                registry.clone(),
                Limits {
                    max_steps: config.limits.max_steps,
                    max_id_len: config.limits.max_id_len,
                    max_goal_len: config.limits.max_goal_len,
                    max_json_depth: config.limits.max_json_depth,
                },
                &config.node_id,
            )
        });
        let executor = config.enable_executor.then(|| {
            let settings = ExecutorSettings {
                node_id: config.node_id.clone(),
                region: config.region.clone(),
                pools: config
                    .worker_pools
                    .iter()
                    .map(|(name, p)| PoolSpec {
                        name: name.clone(),
                        queue: p.queue.clone(),
                        size: p.size,
                    })
                    .collect(),
                claim_batch: config.executor.claim_batch,
                poll_interval: Duration::from_millis(config.executor.poll_interval_ms),
                shutdown_grace: Duration::from_millis(config.executor.shutdown_grace_ms),
                leases: Leases {
                    lease_ms: clamp_i32(config.executor.lease_ms),
                    margin_ms: clamp_i32(config.executor.visibility_margin_ms),
                    backoff_base_ms: BACKOFF_BASE_MS,
                    backoff_cap_ms: BACKOFF_CAP_MS,
                },
            };
            let _in_node = span.enter();
            Executor::start(
                router.clone(),
                registry.clone(),
                settings,
                shutdown.clone(),
                &mut tasks,
            )
        });

        let server_tls = match crate::api::tls::ServerTlsFiles::from_config(&config.api) {
            Some(files) => Some(Arc::new(crate::api::tls::ServerTls::load(files)?)),
            None => None,
        };
        let peer_tls = crate::api::tls::ClientTls::for_peers(&config.api)?;
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("listen on {} (api.listen)", config.api.listen))?;
        let addr = listener.local_addr()?;
        let public_url = if config.api.listen.port() == 0 {
            format!("{scheme}://{addr}")
        } else {
            config.api.public_url.clone()
        };
        let info = Arc::new(NodeInfo {
            node_id: config.node_id.clone(),
            node_type: config.node_type().as_str().to_string(),
            roles: config.roles().iter().map(|r| r.to_string()).collect(),
            region: config.region.clone(),
            public_url,
            version: VERSION.to_string(),
        });
        let app = api::router(ApiState {
            info: info.clone(),
            client,
            executor: executor.clone(),
            router: router.clone(),
            max_body_bytes: config.limits.max_body_bytes,
            forwarder: crate::api::Forwarder::new(
                std::time::Duration::from_millis(config.routing.forward_timeout_ms),
                &peer_tls,
            ),
            heartbeat_ms: config.executor.heartbeat_interval_ms,
            control,
            drill_running: Arc::default(),
            auth: Arc::new(crate::api::auth::Auth::new(
                &config.auth,
                config.limits.per_token_rate_per_s,
            )),
            inflight: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_requests,
            )),
            request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
            peer_tls,
        });
        {
            let shutdown = shutdown.clone();
            let server_tls = server_tls.clone();
            tasks.spawn(
                async move {
                    match server_tls {
                        Some(tls) => crate::api::tls::serve(listener, app, tls, shutdown).await,
                        None => {
                            let r = axum::serve(listener, app)
                                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                                .await;
                            if let Err(e) = r {
                                error!(error = %e, "HTTP server stopped");
                            }
                        }
                    }
                }
                .instrument(span.clone()),
            );
        }
        if let Some(tls) = server_tls.clone() {
            // SIGHUP re-reads the certificate files (after a renewal).
            let shutdown = shutdown.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("install the SIGHUP handler")?;
            tasks.spawn(
                async move {
                    loop {
                        tokio::select! {
                            _ = hup.recv() => match tls.reload() {
                                Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                                Err(e) => error!(error = %e,
                                    "SIGHUP: TLS reload failed; the certificate in use stays"),
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                .instrument(span.clone()),
            );
        }
        {
            let shutdown = shutdown.clone();
            let router = router.clone();
            let ex = executor.clone();
            let info = info.clone();
            let interval = Duration::from_millis(config.executor.heartbeat_interval_ms);
            let started_at = chrono::Utc::now();
            tasks.spawn(
                async move {
                    loop {
                        let pools = ex
                            .as_ref()
                            .map(|e| serde_json::to_value(e.status()).unwrap_or_default())
                            .unwrap_or_else(|| serde_json::json!([]));
                        let row = NodeRow {
                            node_id: info.node_id.clone(),
                            node_type: info.node_type.clone(),
                            roles: info.roles.clone(),
                            region: info.region.clone(),
                            api_url: Some(info.public_url.clone()),
                            pools,
                            version: info.version.clone(),
                            started_at,
                            last_heartbeat_at: chrono::Utc::now(),
                        };
                        // Through the router's write path: bounded attempts,
                        // rediscovery and retry when the primary moves.
                        let beat = router
                            .write(interval, |store, epoch| {
                                let row = &row;
                                async move { store.heartbeat(row, epoch).await }
                            })
                            .await;
                        if let Err(e) = beat {
                            warn!(error = %e, "heartbeat");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                .instrument(span.clone()),
            );
        }
        info!(node_id = %info.node_id, node_type = %info.node_type, region = %info.region,
              addr = %addr, "node started");
        Ok(Node {
            info,
            addr,
            server_tls,
            shutdown,
            tasks,
            executor,
            store,
        })
    }

    /// Base URL of the API (`http://host:port`, `https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Re-reads the API's certificate, key and client CA (what SIGHUP does).
    /// Open connections keep their session. Without TLS there is nothing to do.
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        if let Some(tls) = &self.server_tls {
            tls.reload()?;
            info!(node_id = %self.info.node_id, "TLS certificate reloaded");
        }
        Ok(())
    }

    pub fn node_id(&self) -> &str {
        &self.info.node_id
    }

    /// Runs until `stop` fires, then shuts down gracefully. A background task
    /// that exits early is an error.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let early = tokio::select! {
            _ = &mut stop => None,
            r = self.tasks.join_next() => Some(r),
        };
        self.shutdown().await;
        if let Some(r) = early {
            bail!(
                "a background task of node {} exited unexpectedly: {r:?}",
                self.info.node_id
            );
        }
        Ok(())
    }

    /// Graceful shutdown: stop claiming and serving, finish or release
    /// in-flight tasks, close the pool.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        if let Some(ex) = &self.executor {
            ex.drain().await;
        }
        while self.tasks.join_next().await.is_some() {}
        self.store.close().await;
        info!(node_id = %self.info.node_id, "node stopped");
    }

    /// Stops everything at once without telling the database, as a crash
    /// would: claimed tasks stay claimed until their visibility timeout.
    pub async fn kill(mut self) {
        if let Some(ex) = &self.executor {
            ex.kill();
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.store.close().await;
    }
}

fn clamp_i32(v: u64) -> i32 {
    v.min(i32::MAX as u64) as i32
}

/// Refuses to run against a database that is not migrated, or migrated by
/// a newer binary whose schema this one does not know.
async fn check_schema(store: &Store) -> anyhow::Result<()> {
    match store.schema_compat().await {
        Ok(c) => match c.problem() {
            None => Ok(()),
            Some(why) => bail!("database {}: {why}", crate::config::redact_url(store.url())),
        },
        Err(e) => Err(e).with_context(|| {
            format!(
                "connect to database {}",
                crate::config::redact_url(store.url())
            )
        }),
    }
}
