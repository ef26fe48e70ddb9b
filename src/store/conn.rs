//! The [`Store`] itself: one database's pool, how it connects and closes,
//! the schema (migrations, version, compatibility), and [`StoreError`], the
//! one place where database errors become domain errors.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::model::token::Lsn;

/// Migrations of the engine schema, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Advisory lock key held while migrating, so several nodes may run
/// `swf migrate` at once.
const MIGRATE_LOCK: i64 = 0x5357_465f_4d49_4752; // "SWF_MIGR"

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database is read-only (a replica or a fenced primary)")]
    ReadOnly,
    #[error("database epoch is older than one this node has seen: {0}")]
    StaleEpoch(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migrate(String),
}

impl StoreError {
    /// Errors of the write path rather than of the request (deadlock,
    /// lost connection, a replica or fenced or stale primary): retrying,
    /// possibly against a newly discovered primary, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::ReadOnly | StoreError::StaleEpoch(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("25006") => StoreError::ReadOnly,
                // Raised by swf.assert_epoch.
                Some("SWF01") => StoreError::StaleEpoch(db.message().to_string()),
                // deadlock, serialization failure, admin shutdown, cannot connect now
                Some("40P01") | Some("40001") | Some("57P01") | Some("57P03") => {
                    StoreError::Unavailable(db.message().to_string())
                }
                _ => StoreError::Database(e.to_string()),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A connection cut mid-handshake (a server stopping, a proxy
            // whose upstream is down) surfaces as a protocol error.
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An LSN as PostgreSQL prints it (`0/19A1D18`).
pub(super) fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse()
        .map_err(|_| StoreError::Database(format!("bad LSN {text}")))
}

/// The embedded migrations up to and including a version: the same files
/// (so the same checksums) as [`MIGRATOR`], cut where an older release ended.
#[derive(Debug)]
struct MigrationsThrough(i64);

impl MigrationSource<'static> for MigrationsThrough {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<
        'static,
        std::result::Result<Vec<Migration>, sqlx::error::BoxDynError>,
    > {
        let v: Vec<Migration> = MIGRATOR
            .iter()
            .filter(|m| m.version <= self.0)
            .cloned()
            .collect();
        Box::pin(async move { Ok(v) })
    }
}

/// How a database's schema relates to the one this binary was built for.
/// Only [`SchemaCompat::Current`] is served: an older schema needs
/// `swf migrate`, a newer one a newer binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCompat {
    Current(i64),
    Unmigrated { known: i64 },
    Older { found: i64, known: i64 },
    Newer { found: i64, known: i64 },
}

impl SchemaCompat {
    /// Why this binary cannot serve the schema, or None when it can.
    pub fn problem(&self) -> Option<String> {
        match *self {
            SchemaCompat::Current(_) => None,
            SchemaCompat::Unmigrated { known } => Some(format!(
                "the database is not migrated (this binary needs schema version {known}): run `swf migrate`"
            )),
            SchemaCompat::Older { found, known } => Some(format!(
                "database schema version {found} is older than {known}: run `swf migrate`"
            )),
            SchemaCompat::Newer { found, known } => Some(format!(
                "database schema version {found} is newer than this binary knows ({known}); upgrade swf"
            )),
        }
    }
}

/// One database: a pool plus the operations on it. The operations live in
/// the sibling files by concern (engine, reads, cluster, nodes, queues).
#[derive(Clone)]
pub struct Store {
    pub(super) pool: PgPool,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &crate::config::redact_url(&self.url))
            .finish()
    }
}

impl Store {
    /// Opens a lazily connecting pool to `url` with at most `max` connections.
    pub fn connect_lazy(url: &str, max: u32) -> Result<Store> {
        let opts: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?
            .application_name("swf")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            // No ping before each use: from a remote region it would double
            // every round trip. A dead connection fails its query instead,
            // which callers treat as transient.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        Ok(Store {
            pool,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Cheap liveness probe.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Installs pgmq (the extension where the server has it, otherwise the
    /// pgmq crate's embedded SQL) and applies the engine migrations, under an
    /// advisory lock so concurrent callers serialise. Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        self.migrate_to(Self::known_schema_version()).await
    }

    /// [`Store::migrate`], applying only the migrations up to and including
    /// `version`: what a database of an older release holds (upgrade tests).
    pub async fn migrate_to(&self, version: i64) -> Result<()> {
        let mut lock = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *lock)
            .await?;
        let result = self.migrate_locked(version).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn migrate_locked(&self, version: i64) -> Result<()> {
        let installed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')")
                .fetch_one(&self.pool)
                .await?;
        let available: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq')",
        )
        .fetch_one(&self.pool)
        .await?;
        if available {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pgmq")
                .execute(&self.pool)
                .await?;
        } else if !installed || self.pgmq_sql_installed().await? {
            pgmq::install::install_sql_from_embedded(&self.pool)
                .await
                .map_err(|e| StoreError::Migrate(format!("install pgmq SQL: {e}")))?;
        }
        let result = if version >= Self::known_schema_version() {
            MIGRATOR.run(&self.pool).await
        } else {
            match Migrator::new(MigrationsThrough(version)).await {
                Ok(older) => older.run(&self.pool).await,
                Err(e) => Err(e),
            }
        };
        result.map_err(|e| StoreError::Migrate(e.to_string()))
    }

    async fn pgmq_sql_installed(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgmq')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Latest applied migration version, or None on an unmigrated database.
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar("SELECT max(version) FROM public._sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Whether this binary can run against the database's schema: the one
    /// rule behind node start and `/health/ready`.
    pub async fn schema_compat(&self) -> Result<SchemaCompat> {
        let known = Self::known_schema_version();
        Ok(match self.schema_version().await? {
            None => SchemaCompat::Unmigrated { known },
            Some(v) if v == known => SchemaCompat::Current(v),
            Some(v) if v < known => SchemaCompat::Older { found: v, known },
            Some(v) => SchemaCompat::Newer { found: v, known },
        })
    }

    /// The newest migration this binary knows.
    pub fn known_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }
}
