//! Retention: deleting finished runs in bounded batches
//! (`swf.purge_finished`, migration `20261203000006_retention.sql`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::conn::{Result, Store};

impl Store {
    /// Deletes at most `limit` completed, failed or cancelled runs that
    /// finished before `before`, oldest first, with their steps, attempts,
    /// dependency edges and signals, in one transaction; runs another
    /// transaction holds are skipped, not waited for. Returns the ids
    /// deleted (fewer than `limit`: nothing more to delete now). A database
    /// of an epoch older than `epoch` refuses it.
    pub async fn purge_finished(
        &self,
        before: DateTime<Utc>,
        limit: usize,
        epoch: u64,
    ) -> Result<Vec<Uuid>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        Ok(sqlx::query_scalar("SELECT swf.purge_finished($1, $2, $3)")
            .bind(before)
            .bind(limit)
            .bind(epoch as i64)
            .fetch_one(&self.pool)
            .await?)
    }
}
