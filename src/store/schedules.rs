//! Cron schedules (`swf.schedules`): create, read, delete, pause; the due
//! ones a node fires, and moving a fired one to its next tick.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::conn::{Result, Store};

/// One schedule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub workflow: Value,
    pub paused: bool,
    pub next_run_at: DateTime<Utc>,
    pub last_run_id: Option<Uuid>,
    pub last_tick_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "name, cron, workflow, paused, next_run_at, last_run_id, last_tick_at, created_at";

impl Store {
    /// Stores a new schedule; false when one of that name exists (nothing
    /// changes then). A database of an older epoch refuses.
    pub async fn create_schedule(
        &self,
        name: &str,
        cron: &str,
        workflow: &Value,
        paused: bool,
        next_run_at: DateTime<Utc>,
        epoch: u64,
    ) -> Result<bool> {
        let created: Option<String> = sqlx::query_scalar(
            "INSERT INTO swf.schedules (name, cron, workflow, paused, next_run_at)
             SELECT $1, $2, $3, $4, $5 FROM swf.assert_epoch($6)
             ON CONFLICT (name) DO NOTHING
             RETURNING name",
        )
        .bind(name)
        .bind(cron)
        .bind(workflow)
        .bind(paused)
        .bind(next_run_at)
        .bind(epoch as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(created.is_some())
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM swf.schedules ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM swf.schedules WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes a schedule (its runs stay); false when there was none.
    pub async fn delete_schedule(&self, name: &str, epoch: u64) -> Result<bool> {
        let n: Option<String> = sqlx::query_scalar(
            "DELETE FROM swf.schedules s USING swf.assert_epoch($2) e
              WHERE s.name = $1 RETURNING s.name",
        )
        .bind(name)
        .bind(epoch as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.is_some())
    }

    /// Pauses or resumes a schedule; a resumed one waits for its next tick
    /// after `now` (`next_run_at`), not for the ones it missed. Returns the
    /// schedule afterwards (None: no such schedule).
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
        epoch: u64,
    ) -> Result<Option<ScheduleRow>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE swf.schedules
                SET paused = $2, next_run_at = coalesce($3, next_run_at), updated_at = now()
               FROM swf.assert_epoch($4)
              WHERE name = $1
          RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(paused)
        .bind(next_run_at)
        .bind(epoch as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Up to `limit` schedules due at the database's now, oldest tick
    /// first, with that now (one round trip; None when none is due).
    pub async fn due_schedules(
        &self,
        limit: i64,
    ) -> Result<(Vec<ScheduleRow>, Option<DateTime<Utc>>)> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, now() AS db_now FROM swf.schedules
              WHERE NOT paused AND next_run_at <= now()
              ORDER BY next_run_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let now = rows.first().map(|r| r.try_get("db_now")).transpose()?;
        let due = rows
            .iter()
            .map(ScheduleRow::from_row)
            .collect::<std::result::Result<_, _>>()?;
        Ok((due, now))
    }

    /// Records that `tick` of schedule `name` started run `run_id` (None:
    /// its workflow was refused, the tick is skipped) and moves
    /// it to `next`, only if it still waits for `expected` (another node
    /// may have fired it meanwhile: then nothing changes and false). The
    /// run is marked as the schedule's.
    pub async fn schedule_fired(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        tick: DateTime<Utc>,
        next: DateTime<Utc>,
        run_id: Option<Uuid>,
        epoch: u64,
    ) -> Result<bool> {
        let moved: Option<String> = sqlx::query_scalar(
            "WITH s AS (
                UPDATE swf.schedules s
                   SET next_run_at = $4, last_run_id = coalesce($5, s.last_run_id), last_tick_at = $3,
                       updated_at = now()
                  FROM swf.assert_epoch($6) e
                 WHERE s.name = $1 AND s.next_run_at = $2
             RETURNING s.name),
             r AS (
                UPDATE swf.runs SET schedule = $1
                 WHERE run_id = $5 AND schedule IS NULL)
             SELECT name FROM s",
        )
        .bind(name)
        .bind(expected)
        .bind(tick)
        .bind(next)
        .bind(run_id)
        .bind(epoch as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(moved.is_some())
    }
}
