//! A database's place in the cluster: recovery state, epoch and WAL
//! position, fencing, promotion, compare-and-set epoch bumps, what recovery
//! inspects (timeline, fence) and the write probe that tells why a write is
//! refused, and the replication lag a primary measures for its standbys.

use sqlx::{Connection, PgConnection, Row};

use super::conn::{parse_lsn, Result, Store, StoreError};
use crate::model::token::Lsn;

/// A database as recovery sees it ([`Store::inspect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbState {
    pub in_recovery: bool,
    /// Read-only by default: a fenced primary (or a replica).
    pub read_only: bool,
    pub epoch: u64,
    /// The WAL timeline a primary writes on (None in recovery).
    pub timeline: Option<u64>,
}

/// What became of a write attempted on a database ([`Store::write_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteProbe {
    /// Accepted (and rolled back).
    Writable,
    /// Refused: read-only, a fenced primary.
    ReadOnly,
    /// Refused: in recovery, a replica.
    InRecovery,
    /// Refused: the database's epoch is older than the one given.
    StaleEpoch,
}

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

    /// [`Store::role`] for finding the primary: a server that refuses the
    /// connection (stopped) is an error at once, where the pool would keep
    /// retrying a refused connection until its acquire timeout and hold up
    /// the search for the new primary.
    pub async fn probe_role(&self) -> Result<(u64, bool)> {
        let opts = self.pool.connect_options();
        let (host, port) = (opts.get_host().to_string(), opts.get_port());
        let refused = async move {
            // A Unix socket: the pool's own error is as quick.
            if !host.starts_with('/') {
                if let Err(e) = tokio::net::TcpStream::connect((host.as_str(), port)).await {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        return StoreError::Unavailable(format!(
                            "{host}:{port} refused the connection"
                        ));
                    }
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            r = self.role() => r,
            e = refused => Err(e),
        }
    }

    /// Fences a primary: new sessions are read-only and every other client
    /// session is terminated, so no write lands here after this returns.
    /// Returns the WAL position at which writes stopped.
    pub async fn fence(&self) -> Result<Lsn> {
        let mut c = self.own_connection().await?;
        sqlx::query("ALTER SYSTEM SET default_transaction_read_only = on")
            .execute(&mut c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut c)
            .await?;
        let mut c = read_only_reloaded(c, true).await?;
        // Sessions already open may be inside a transaction: end them.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .execute(&mut c)
        .await?;
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut c)
            .await?;
        let _ = c.close().await;
        parse_lsn(&lsn)
    }

    /// A connection of its own for fencing and unfencing, never one from
    /// the pool: a fence terminates every other session, so the pool's
    /// idle connections may be dead (the pool does not test them before
    /// use), and an unfence on one failed, leaving the primary fenced.
    async fn own_connection(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect_with(&self.pool.connect_options()).await?)
    }

    /// Undoes [`Store::fence`] (a drill that aborts before promotion, or a
    /// recovery). Returns once the reload has reached this session, so it
    /// has been signalled to every other one: their next statement is no
    /// longer read-only.
    pub async fn unfence(&self) -> Result<()> {
        let mut c = self.own_connection().await?;
        sqlx::query("ALTER SYSTEM RESET default_transaction_read_only")
            .execute(&mut c)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut c)
            .await?;
        let c = read_only_reloaded(c, false).await?;
        let _ = c.close().await;
        Ok(())
    }

    /// Promotes this replica (`pg_promote`, waiting up to 60 s). The epoch
    /// is bumped separately ([`Store::bump_epoch`]).
    pub async fn promote(&self) -> Result<()> {
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
            .fetch_one(&self.pool)
            .await?;
        if !promoted {
            return Err(StoreError::Database(
                "pg_promote did not finish within 60 s".into(),
            ));
        }
        Ok(())
    }

    /// Starts a new epoch on a freshly promoted primary, compare-and-set:
    /// the epoch becomes `expected + 1` (and the write region `region`) only
    /// if it is still `expected`. Answers the new epoch, or None when the
    /// epoch had moved (someone else bumped it: the caller lost).
    pub async fn bump_epoch(&self, region: &str, expected: u64) -> Result<Option<u64>> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE swf.cluster_state SET epoch = $2 + 1, write_region = $1, updated_at = now()
              WHERE epoch = $2
             RETURNING epoch",
        )
        .bind(region)
        .bind(expected as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch.map(|e| e as u64))
    }

    /// After a promotion this product did not perform (its HA manager's,
    /// e.g. Patroni electing a new leader): starts a new epoch naming
    /// `region` as the write region, unless the epoch already names it (the
    /// drill that asked for the promotion bumped it first). Answers the new
    /// epoch, or None when there was nothing to do.
    pub async fn bump_epoch_for(&self, region: &str) -> Result<Option<u64>> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE swf.cluster_state SET epoch = epoch + 1, write_region = $1, updated_at = now()
              WHERE write_region IS DISTINCT FROM $1
             RETURNING epoch",
        )
        .bind(region)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch.map(|e| e as u64))
    }

    /// The epoch and the write region it names.
    pub async fn epoch_region(&self) -> Result<(u64, Option<String>)> {
        let (epoch, region): (i64, Option<String>) =
            sqlx::query_as("SELECT epoch, write_region FROM swf.cluster_state")
                .fetch_one(&self.pool)
                .await?;
        Ok((epoch as u64, region))
    }

    /// What recovery needs to know of a database: whether it is in recovery
    /// (a replica), whether it is read-only by default (fenced), its epoch,
    /// and (not in recovery) the WAL timeline it writes on, which grows by
    /// one at every promotion.
    pub async fn inspect(&self) -> Result<DbState> {
        let row = sqlx::query(
            "SELECT pg_is_in_recovery(),
                    current_setting('default_transaction_read_only')::bool,
                    (SELECT epoch FROM swf.cluster_state),
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))
                                  ::bit(32)::bigint END",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(DbState {
            in_recovery: row.try_get(0)?,
            read_only: row.try_get(1)?,
            epoch: row.try_get::<i64, _>(2)? as u64,
            timeline: row.try_get::<Option<i64>, _>(3)?.map(|t| t as u64),
        })
    }

    /// Attempts a write that changes nothing (in a transaction rolled back)
    /// and says why it was refused, if it was: in recovery, read-only (a
    /// fenced primary), or an epoch older than `epoch`. An unreachable
    /// database is an error ([`StoreError::Unavailable`]).
    pub async fn write_probe(&self, epoch: u64) -> Result<WriteProbe> {
        let mut tx = self.pool.begin().await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut *tx)
            .await?;
        if in_recovery {
            return Ok(WriteProbe::InRecovery);
        }
        let wrote = sqlx::query("UPDATE swf.cluster_state SET updated_at = updated_at")
            .execute(&mut *tx)
            .await;
        match wrote.map_err(StoreError::from) {
            Ok(_) => {}
            Err(StoreError::ReadOnly) => return Ok(WriteProbe::ReadOnly),
            Err(e) => return Err(e),
        }
        let asserted = sqlx::query("SELECT swf.assert_epoch($1)")
            .bind(epoch as i64)
            .execute(&mut *tx)
            .await;
        let probe = match asserted.map_err(StoreError::from) {
            Ok(_) => WriteProbe::Writable,
            Err(StoreError::StaleEpoch(_)) => WriteProbe::StaleEpoch,
            Err(e) => return Err(e),
        };
        tx.rollback().await?;
        Ok(probe)
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

/// Waits (5 s at most) until a configuration reload has made
/// `default_transaction_read_only` read `want` in the session `c`: the
/// server has then re-read its configuration and signalled every session,
/// so the next statement of any of them runs with it.
async fn read_only_reloaded(c: PgConnection, want: bool) -> Result<PgConnection> {
    let conn = tokio::sync::Mutex::new(c);
    let c = &conn;
    let reloaded = crate::wait::until(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(5),
        || async move {
            let mut c = c.lock().await;
            let read_only = sqlx::query_scalar::<_, bool>(
                "SELECT current_setting('default_transaction_read_only')::bool",
            )
            .fetch_one(&mut *c)
            .await;
            match read_only {
                Ok(now) if now == want => Some(Ok(())),
                Ok(_) => None,
                Err(e) => Some(Err(StoreError::from(e))),
            }
        },
    )
    .await
    .map_err(|_| {
        StoreError::Database(format!(
            "the configuration reload did not make default_transaction_read_only {want} within 5 s"
        ))
    })?;
    reloaded?;
    Ok(conn.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_of_a_server_that_refuses_connections_says_so_instead_of_waiting_for_the_pool()
    {
        // Nothing listens on a port just freed: the pool would retry the refused
        // connection until its acquire timeout and answer with that.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let store = Store::connect_lazy(&format!("postgres://127.0.0.1:{port}/none"), 1).unwrap();
        let e = store.probe_role().await.unwrap_err();
        assert!(e.to_string().contains("refused the connection"), "{e}");
    }
}
