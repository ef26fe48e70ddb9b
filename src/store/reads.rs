//! Reads of runs: the status and lineage documents (assembled in SQL next to
//! the data), the run list, and the checks drills make on what was stored.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::conn::{Result, Store, StoreError};

/// The two documents a run can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunDoc {
    Status,
    Lineage,
}

/// One row of `GET /v1/workflows`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub goal: String,
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// A run's status or lineage document (DESIGN section 6), or None.
    /// Sent as text: it costs the server what the binary jsonb form does.
    pub async fn run_document(&self, run_id: Uuid, kind: RunDoc) -> Result<Option<Value>> {
        let sql = match kind {
            RunDoc::Status => "SELECT swf.run_status($1)::text",
            RunDoc::Lineage => "SELECT swf.run_lineage($1)::text",
        };
        let text: Option<String> = sqlx::query_scalar(sql)
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Database(format!("run document of {run_id}: {e}")))
        })
        .transpose()
    }

    /// Runs newest first, optionally filtered by status, after a cursor
    /// `(created_at, run_id)` of the previous page's last row.
    pub async fn list_runs(
        &self,
        status: Option<&str>,
        limit: i64,
        after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    ) -> Result<Vec<RunSummary>> {
        let (after_ts, after_id) = match after {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        Ok(sqlx::query_as::<_, RunSummary>(
            "SELECT run_id, goal, status, created_at FROM swf.runs
              WHERE ($1::text IS NULL OR status = $1)
                AND ($2::timestamptz IS NULL OR (created_at, run_id) < ($2, $3))
              ORDER BY created_at DESC, run_id DESC
              LIMIT $4",
        )
        .bind(status)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Which of `run_ids` exist here.
    pub async fn existing_runs(&self, run_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT run_id FROM swf.runs WHERE run_id = ANY($1)")
                .bind(run_ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The status of each of `run_ids` that exists here.
    pub async fn run_statuses(&self, run_ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
        Ok(
            sqlx::query_as("SELECT run_id, status FROM swf.runs WHERE run_id = ANY($1)")
                .bind(run_ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Drill labels that name more than one run (a duplicated submit).
    pub async fn duplicate_goals(&self, prefix: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT goal FROM swf.runs WHERE goal LIKE $1 || '%'
                                    GROUP BY goal HAVING count(*) > 1) d",
        )
        .bind(prefix)
        .fetch_one(&self.pool)
        .await?)
    }
}
