//! pgmq queues: creating the ones an executor polls, their depths, pausing
//! and resuming them, the NOTIFY channels that wake pollers, and run counts
//! for metrics.

use sqlx::postgres::PgListener;
use sqlx::Row;

use super::conn::{Result, Store};

/// One queue as `GET /v1/queues` shows it (all of its mqs together).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueRow {
    pub name: String,
    pub depth: i64,
    pub in_flight: i64,
    pub delayed: i64,
    pub parked: i64,
    pub oldest_age_ms: Option<i64>,
    pub paused: bool,
}

/// The NOTIFY channel that wakes pollers of pgmq queue `mq` (the engine's
/// `pg_notify('swf_' || mq)`).
pub fn notify_channel(mq: &str) -> String {
    format!("swf_{mq}")
}

impl Store {
    /// Creates the pgmq queues an executor polls (idempotent), in one round
    /// trip. A database of an epoch older than `epoch` refuses it.
    pub async fn ensure_queues(&self, mqs: &[String], epoch: u64) -> Result<()> {
        sqlx::query("SELECT swf.ensure_queues($1, $2)")
            .bind(mqs)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Notes that pgmq queue `mqs[i]` holds tasks of queue `queues[i]`
    /// (idempotent), so pausing and listing `queues[i]` covers it before
    /// its first task. A database of an older epoch refuses it.
    pub async fn note_queue_mqs(
        &self,
        mqs: &[String],
        queues: &[String],
        epoch: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO swf.queue_mqs (mq, queue)
             SELECT u.mq, u.queue FROM swf.assert_epoch($3), unnest($1::text[], $2::text[]) AS u(mq, queue)
             ON CONFLICT DO NOTHING",
        )
        .bind(mqs)
        .bind(queues)
        .bind(epoch as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The names of every pgmq queue in the database (at most
    /// `limits.max_queues` where submits created them).
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT queue_name FROM pgmq.meta")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Visible (ready) messages per pgmq queue.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT queue_name, queue_length FROM pgmq.metrics_all()")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every queue that holds tasks or was paused, by name.
    pub async fn queue_overview(&self) -> Result<Vec<QueueRow>> {
        Ok(sqlx::query_as(
            "SELECT name, depth, in_flight, delayed, parked, oldest_age_ms, paused FROM swf.queue_overview()",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pauses (`paused`) or resumes queue `queue` cluster-wide; returns
    /// whether it was paused before. `mqs` are the queue's pgmq queues the
    /// caller knows of (noted as the queue's, so that a pause holds even
    /// their first task). A database of an older epoch refuses.
    pub async fn set_queue_paused(
        &self,
        queue: &str,
        mqs: &[String],
        paused: bool,
        epoch: u64,
    ) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT swf.set_queue_paused($1, $2, $3, $4)")
                .bind(queue)
                .bind(paused)
                .bind(epoch as i64)
                .bind(mqs)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Number of runs per status (all of history: a scan of the table).
    pub async fn runs_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, count(*) FROM swf.runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Number of live runs per status, running and paused (0 when none): a
    /// range of the status index, so its cost follows the live runs, not
    /// the history.
    pub async fn live_runs_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT 'running', (SELECT count(*) FROM swf.runs WHERE status = 'running')
             UNION ALL
             SELECT 'paused', (SELECT count(*) FROM swf.runs WHERE status = 'paused')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Number of running runs (a range of the status index, however much
    /// history the table holds).
    pub async fn runs_running(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM swf.runs WHERE status = 'running'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A listener on the channels that wake pollers of `mqs`.
    pub async fn listen(&self, mqs: &[String]) -> Result<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        let channels: Vec<String> = mqs.iter().map(|m| notify_channel(m)).collect();
        l.listen_all(channels.iter().map(String::as_str)).await?;
        Ok(l)
    }
}
