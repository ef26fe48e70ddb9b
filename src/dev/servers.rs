//! The dev cluster's PostgreSQL servers: starting a primary or a streaming
//! replica (initialised when needed), and the application database on it.

use std::path::Path;

use anyhow::Context;

use super::pgserver::{self, PgBinaries, PgServer};
use crate::store::Store;

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
