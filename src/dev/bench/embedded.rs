//! The benchmark's own throwaway single-region cluster: one PostgreSQL
//! server under a temporary directory, migrated as `swf dev` does, and the
//! nodes a phase asks for, in this process.

use std::path::PathBuf;

use crate::config::Config;
use crate::dev::pgserver::PgServer;
use crate::executor::handlers::Registry;
use crate::node::Node;
use crate::store::Store;

/// Connections of each node the benchmark starts (32 executor slots and
/// the finisher share them).
const NODE_CONNECTIONS: u32 = 32;

/// What a node of the embedded cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Roles {
    /// Client and executor (what `swf dev` runs).
    Hybrid,
    /// Client only: accepts submits, runs nothing.
    Edge,
    /// Executor only: no `/v1`.
    Worker,
}

/// A running PostgreSQL server with a migrated database; nodes are started
/// on it with [`Embedded::node`] and must be shut down before [`Embedded::stop`].
pub(super) struct Embedded {
    pg: PgServer,
    dir: PathBuf,
    db: String,
    /// `routing.cache_max_bytes` of its nodes (None: the default).
    cache_max_bytes: Option<u64>,
}

impl Embedded {
    /// Starts PostgreSQL under a fresh temporary directory and migrates its database.
    pub(super) async fn start() -> anyhow::Result<Embedded> {
        let dir = std::env::temp_dir().join(format!("swf-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        eprintln!("starting an embedded cluster under {}", dir.display());
        let pg = crate::dev::start_primary(&dir.join("pg"), "bench", None).await?;
        let db = pg.url(crate::dev::DEV_DATABASE);
        crate::dev::prepare_database(&pg.url("postgres"), &db, crate::dev::DEV_DATABASE).await?;
        Ok(Embedded {
            pg,
            dir,
            db,
            cache_max_bytes: None,
        })
    }

    /// Its nodes' lineage cache holds at most `mib` MiB of documents (0: none).
    pub(super) fn with_cache_mib(mut self, mib: Option<u64>) -> Embedded {
        self.cache_max_bytes = mib.map(|m| m * 1024 * 1024);
        self
    }

    /// A node named `name` with `roles`; its one pool (queue `default`) has
    /// `pool_size` slots when it executes.
    pub(super) async fn node(
        &self,
        name: &str,
        roles: Roles,
        pool_size: usize,
    ) -> anyhow::Result<Node> {
        let mut cfg = Config::for_dev(
            name,
            "us-east",
            "us-east",
            ([127, 0, 0, 1], 0).into(),
            &self.db,
        );
        cfg.enable_client = roles != Roles::Worker;
        cfg.enable_executor = roles != Roles::Edge;
        if let Some(p) = cfg.worker_pools.get_mut("default") {
            p.size = pool_size;
        }
        cfg.database.max_connections = NODE_CONNECTIONS;
        if let Some(b) = self.cache_max_bytes {
            cfg.routing.cache_max_bytes = b;
        }
        Node::start(cfg, Registry::with_builtins()).await
    }

    /// A store on the benchmark's database with `max` connections, for the
    /// benchmark's own reads (counts), never the engine's.
    pub(super) fn store(&self, max: u32) -> anyhow::Result<Store> {
        Ok(Store::connect_lazy(&self.db, max)?)
    }

    /// Stops PostgreSQL and removes the directory.
    pub(super) async fn stop(self) {
        let Embedded { mut pg, dir, .. } = self;
        let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
