//! A node: assembles the subsystems its config's roles ask for, supervises
//! them and shuts them down.
//!
//! Every node runs the HTTP server (health, info and metrics are always
//! served; `/v1` only with the client role), a heartbeat, the task that
//! refreshes `/metrics`' database-derived gauges and, unless
//! `retention.finished_after` is off, the retention task. The client role
//! adds the [`Client`](crate::client::Client) and its submit batcher; the
//! executor role adds the worker pools, their listener and the finisher.
//! Every task the node starts belongs to one `JoinSet` (an executor pool's
//! running tasks to a set its claim loop owns); one that exits before
//! shutdown is a fatal, logged event that stops the node.
//!
//! Shutdown drains without polling: cancel the token (stop serving and
//! claiming), wait for the executor's pools to finish or release their
//! tasks, then join every task until a deadline, abort what is left and
//! close the pool.
//!
//! Files: `assemble.rs` store, router, client and executor from the config;
//! `server.rs` the HTTP server and SIGHUP TLS reload; `heartbeat.rs` the
//! heartbeat; `gauges.rs` the task behind `/metrics`' database gauges;
//! `signals.rs` the process signals that stop a node; `retention.rs` the
//! task that deletes finished runs past `retention.finished_after`.

mod assemble;
mod gauges;
mod heartbeat;
mod retention;
mod scheduler;
mod server;
pub mod signals;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::NodeInfo;
use crate::config::Config;
use crate::drill::ClusterControl;
use crate::executor::handlers::Registry;
use crate::executor::Executor;
use crate::store::Store;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long, after the executor drained, the node's other tasks get to end
/// (the HTTP server finishing its requests) before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(10);

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
        Self::start_on(config, registry, control, None).await
    }

    /// Starts a node that serves on `listener` (bound by the caller at
    /// `api.listen`'s address) instead of binding `api.listen` itself: a
    /// caller that must know every node's port before any node starts binds
    /// them all first, so no other process can take one in between.
    pub async fn start_on(
        config: Config,
        registry: Registry,
        control: Option<Arc<dyn ClusterControl>>,
        listener: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Node> {
        // Every line this node logs carries its id and region.
        let span = tracing::info_span!("node", node_id = %config.node_id, region = %config.region);
        // Install the recorder before anything records.
        let _ = crate::telemetry::prometheus();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // The config's http/command handlers join the caller's.
        let mut registry = registry;
        registry.register_configured(&config.handlers);
        let parts =
            assemble::assemble(&config, &registry, control, &shutdown, &mut tasks, &span).await?;
        let bound = server::bind(&config, listener).await?;
        let (addr, server_tls) = (bound.addr, bound.tls.clone());
        let info = Arc::new(NodeInfo {
            node_id: config.node_id.clone(),
            node_type: config.node_type().as_str().to_string(),
            roles: config.roles().iter().map(|r| r.to_string()).collect(),
            region: config.region.clone(),
            public_url: bound.public_url.clone(),
            version: VERSION.to_string(),
        });
        server::spawn(
            &config,
            info.clone(),
            &parts,
            bound,
            &shutdown,
            &mut tasks,
            &span,
        )?;
        heartbeat::spawn(
            parts.router.clone(),
            parts.executor.clone(),
            info.clone(),
            Duration::from_millis(config.executor.heartbeat_interval_ms),
            shutdown.clone(),
            &mut tasks,
            &span,
        );
        gauges::spawn(
            parts.router.clone(),
            config.executor.heartbeat_interval_ms,
            shutdown.clone(),
            &mut tasks,
            &span,
        );
        retention::spawn(
            parts.router.clone(),
            &config.retention,
            shutdown.clone(),
            &mut tasks,
            &span,
        );
        if let Some(client) = parts.client.clone() {
            scheduler::spawn(client, shutdown.clone(), &mut tasks, &span);
        }
        info!(node_id = %info.node_id, node_type = %info.node_type, region = %info.region,
              addr = %addr, "node started");
        // The client lives on in the server only, so its batcher's task ends
        // once the server has stopped.
        let assemble::Assembled {
            store, executor, ..
        } = parts;
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

    /// Tasks this node's executor has reported finished (completed or
    /// failed, over all pools); 0 without an executor. Costs no query.
    pub fn tasks_finished(&self) -> u64 {
        self.executor.as_ref().map_or(0, |e| {
            e.status()
                .iter()
                .map(|p| p.completed + p.failed)
                .sum::<u64>()
        })
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
    /// in-flight tasks, join every task (aborting what is left after a
    /// deadline), close the pool.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        if let Some(ex) = &self.executor {
            ex.drain().await;
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Err(e))) if e.is_panic() => error!(error = %e, "a node task panicked"),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        left = self.tasks.len(),
                        "node tasks still running after {STOP_GRACE:?}; aborting them"
                    );
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
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
