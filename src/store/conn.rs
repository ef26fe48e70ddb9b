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
    /// Contention: a deadlock, a serialization failure, a lock not available.
    #[error("database conflict: {0}")]
    Conflict(String),
    /// A value past one of the database's size limits (a jsonb value over
    /// 256 MiB, an array over 1 GiB, memory).
    #[error("too large for the database: {0}")]
    TooLarge(String),
    /// Data the database refuses (a malformed value, a violated constraint).
    #[error("the database refused the data: {0}")]
    Invalid(String),
    /// Creating queues would pass `limits.max_queues` (`swf.ensure_queues`).
    #[error("{0}")]
    TooManyQueues(String),
}

/// What a caller does about a [`StoreError`]: the one classification of
/// database errors ([`StoreError::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The write path is down or moved: a lost or refused connection, a
    /// read-only database (a replica, one in recovery, a fenced primary), a
    /// primary of an older epoch. Rediscover the primary, then retry.
    Path,
    /// Contention (deadlock, serialization failure): retry as it is; the
    /// primary is fine.
    Conflict,
    /// The statement's data: a size limit or a value the database refuses.
    /// The same call fails again; the caller sets the item apart.
    Item,
    /// Anything else (a bug, a schema mismatch): neither retried at once nor
    /// blamed on an item.
    Other,
}

impl StoreError {
    /// How callers treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Unavailable(_) | StoreError::ReadOnly | StoreError::StaleEpoch(_) => {
                ErrorClass::Path
            }
            StoreError::Conflict(_) => ErrorClass::Conflict,
            StoreError::TooLarge(_) | StoreError::Invalid(_) | StoreError::TooManyQueues(_) => {
                ErrorClass::Item
            }
            StoreError::Database(_) | StoreError::Migrate(_) => ErrorClass::Other,
        }
    }

    /// Errors of the write path rather than of the request (deadlock,
    /// lost connection, a replica or fenced or stale primary): retrying,
    /// possibly against a newly discovered primary, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.class(), ErrorClass::Path | ErrorClass::Conflict)
    }
}

/// A database error by its SQLSTATE: the one table behind [`StoreError`].
fn from_sqlstate(code: &str, message: &str, full: impl FnOnce() -> String) -> StoreError {
    let m = || message.to_string();
    match code {
        "25006" => StoreError::ReadOnly,
        // Raised by swf.assert_epoch.
        "SWF01" => StoreError::StaleEpoch(m()),
        // Raised by swf.ensure_queues.
        "SWF02" => StoreError::TooManyQueues(m()),
        // admin or crash shutdown, cannot connect now, too many connections
        "57P01" | "57P02" | "57P03" | "53300" => StoreError::Unavailable(m()),
        _ if code.starts_with("08") => StoreError::Unavailable(m()),
        // deadlock, serialization failure, lock not available
        "40P01" | "40001" | "55P03" => StoreError::Conflict(m()),
        // program limit exceeded (jsonb or array size), out of memory
        "53200" => StoreError::TooLarge(m()),
        _ if code.starts_with("54") => StoreError::TooLarge(m()),
        // data exception, integrity constraint violation
        _ if code.starts_with("22") || code.starts_with("23") => StoreError::Invalid(m()),
        _ => StoreError::Database(full()),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code() {
                Some(code) => from_sqlstate(&code, db.message(), || e.to_string()),
                None => StoreError::Database(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(code: &str) -> ErrorClass {
        from_sqlstate(code, "m", || "full".into()).class()
    }

    #[test]
    fn sqlstates_are_classified_once() {
        // Only the write path being down or moved rediscovers the primary.
        for code in [
            "25006", "SWF01", "57P01", "57P02", "57P03", "53300", "08006", "08001",
        ] {
            assert_eq!(class_of(code), ErrorClass::Path, "{code}");
        }
        for code in ["40P01", "40001", "55P03"] {
            assert_eq!(class_of(code), ErrorClass::Conflict, "{code}");
        }
        // jsonb/array size limits, out of memory, bad data, the queue cap:
        // the statement's data, which a retry does not change.
        for code in [
            "54000", "54001", "53200", "22P02", "22023", "23514", "SWF02",
        ] {
            assert_eq!(class_of(code), ErrorClass::Item, "{code}");
        }
        for code in ["42883", "42P01", "XX000", "P0001"] {
            assert_eq!(class_of(code), ErrorClass::Other, "{code}");
        }
        assert!(matches!(
            from_sqlstate("SWF02", "too many queues", || unreachable!()),
            StoreError::TooManyQueues(m) if m == "too many queues"
        ));
        assert!(matches!(
            from_sqlstate("54000", "total size of jsonb", || unreachable!()),
            StoreError::TooLarge(_)
        ));
        assert!(matches!(
            from_sqlstate("42883", "m", || "full text".into()),
            StoreError::Database(m) if m == "full text"
        ));
    }

    #[test]
    fn connection_failures_are_the_write_path_and_the_rest_is_not() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for e in [
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("cut".into()),
        ] {
            let e = StoreError::from(e);
            assert_eq!(e.class(), ErrorClass::Path, "{e}");
            assert!(e.is_transient());
        }
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert_eq!(e.class(), ErrorClass::Other);
        assert!(!e.is_transient());
        assert!(StoreError::Conflict("deadlock".into()).is_transient());
        assert!(!StoreError::TooLarge("big".into()).is_transient());
    }
}
