//! A database's place in the cluster: recovery state, epoch and WAL
//! position, fencing, promotion, epoch bumps, and the replication lag a
//! primary measures for its standbys.

use sqlx::Row;

use super::conn::{parse_lsn, Result, Store, StoreError};
use crate::model::token::Lsn;

impl Store {
    /// Whether the database is in recovery (a replica), its epoch, and its
    /// replay position (replica) or WAL write position (primary).
    pub async fn position(&self) -> Result<(bool, u64, Lsn)> {
        let row = sqlx::query(
            "SELECT pg_is_in_recovery(), (SELECT epoch FROM swf.cluster_state),
                    coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                  ELSE pg_current_wal_lsn() END, '0/0')::text",
        )
        .fetch_one(&self.pool)
        .await?;
        let lsn: String = row.try_get(2)?;
        Ok((
            row.try_get(0)?,
            row.try_get::<i64, _>(1)? as u64,
            parse_lsn(&lsn)?,
        ))
    }

    /// The database's epoch and whether it refuses writes: in recovery (a
    /// replica) or fenced (read-only by default).
    pub async fn role(&self) -> Result<(u64, bool)> {
        let row = sqlx::query(
            "SELECT (SELECT epoch FROM swf.cluster_state),
                    pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get::<i64, _>(0) as u64, row.get(1)))
    }

    /// Fences a primary: new sessions are read-only and every other client
    /// session is terminated, so no write lands here after this returns.
    /// Returns the WAL position at which writes stopped.
    pub async fn fence(&self) -> Result<Lsn> {
        let mut c = self.pool.acquire().await?;
        sqlx::query("ALTER SYSTEM SET default_transaction_read_only = on")
            .execute(&mut *c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *c)
            .await?;
        // Sessions already open keep their settings: end them.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .execute(&mut *c)
        .await?;
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut *c)
            .await?;
        // This connection was opened before the fence: do not reuse it.
        c.detach();
        parse_lsn(&lsn)
    }

    /// Undoes [`Store::fence`] (a drill that aborts before promotion).
    pub async fn unfence(&self) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        sqlx::query("ALTER SYSTEM RESET default_transaction_read_only")
            .execute(&mut *c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *c)
            .await?;
        c.detach();
        Ok(())
    }

    /// Promotes this replica and bumps the epoch; returns the new epoch.
    pub async fn promote(&self, region: &str) -> Result<u64> {
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
            .fetch_one(&self.pool)
            .await?;
        if !promoted {
            return Err(StoreError::Database(
                "pg_promote did not finish within 60 s".into(),
            ));
        }
        self.bump_epoch(region).await
    }

    /// Starts a new epoch on a freshly promoted primary; returns it.
    pub async fn bump_epoch(&self, region: &str) -> Result<u64> {
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE swf.cluster_state SET epoch = epoch + 1, write_region = $1, updated_at = now()
             RETURNING epoch",
        )
        .bind(region)
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch as u64)
    }

    /// Replay lag per standby (by application_name) as the primary measures
    /// it; a caught-up, idle standby reports 0.
    pub async fn replication_lags(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT application_name,
                    coalesce(floor(extract(epoch FROM replay_lag) * 1000), 0)::bigint
               FROM pg_stat_replication",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
