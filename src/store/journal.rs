//! The drill journal (`swf.drills`): claiming the one running drill, saving
//! its progress and outcome, marking a killed node's drills interrupted, and
//! reading it back. Writes carry the node's epoch like every other write.

use serde_json::Value;
use uuid::Uuid;

use super::conn::{Result, Store};

/// One drill as the journal keeps it (states and phases: see the migration
/// `20261203000003_drill_journal.sql`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DrillRow {
    pub id: Uuid,
    pub kind: String,
    pub from_region: String,
    pub to_region: String,
    pub state: String,
    pub node_id: String,
    pub node_url: Option<String>,
    pub phase: String,
    pub epoch_before: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub report: Option<Value>,
}

const COLUMNS: &str = "id, kind, from_region, to_region, state, node_id, node_url, phase,
                       epoch_before, started_at, updated_at, finished_at, report";

/// Unique violation: `drills_one_running` refused a second running drill.
const UNIQUE_VIOLATION: &str = "23505";

impl Store {
    /// Records a new running drill; false when another drill is running
    /// (the one-running index refused it). A database of an older epoch
    /// than `epoch`, a replica or a fenced primary refuses it with an error.
    pub async fn drill_claim(&self, d: &DrillRow, epoch: u64) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO swf.drills (id, kind, from_region, to_region, state, node_id, node_url,
                                     phase, epoch_before, started_at, updated_at)
             SELECT $1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, now()
               FROM swf.assert_epoch($10)",
        )
        .bind(d.id)
        .bind(&d.kind)
        .bind(&d.from_region)
        .bind(&d.to_region)
        .bind(&d.node_id)
        .bind(&d.node_url)
        .bind(&d.phase)
        .bind(d.epoch_before)
        .bind(d.started_at)
        .bind(epoch as i64)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the drill's row as it is now: inserted if this database does
    /// not have it yet (a failover's target), else its state, phase, end and
    /// report updated.
    pub async fn drill_save(&self, d: &DrillRow, epoch: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO swf.drills (id, kind, from_region, to_region, state, node_id, node_url,
                                     phase, epoch_before, started_at, updated_at, finished_at,
                                     report)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11, $12
               FROM swf.assert_epoch($13)
             ON CONFLICT (id) DO UPDATE SET
                state = EXCLUDED.state, phase = EXCLUDED.phase, updated_at = now(),
                finished_at = EXCLUDED.finished_at, report = EXCLUDED.report",
        )
        .bind(d.id)
        .bind(&d.kind)
        .bind(&d.from_region)
        .bind(&d.to_region)
        .bind(&d.state)
        .bind(&d.node_id)
        .bind(&d.node_url)
        .bind(&d.phase)
        .bind(d.epoch_before)
        .bind(d.started_at)
        .bind(d.finished_at)
        .bind(&d.report)
        .bind(epoch as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the drills `node_id` was running as interrupted (the node
    /// restarted: whatever ran them is gone); returns their ids.
    pub async fn drill_interrupt(&self, node_id: &str, epoch: u64) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "UPDATE swf.drills SET state = 'interrupted', updated_at = now(), finished_at = now()
               FROM swf.assert_epoch($2)
              WHERE state = 'running' AND node_id = $1
             RETURNING id",
        )
        .bind(node_id)
        .bind(epoch as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest `limit` drills, newest first.
    pub async fn drills(&self, limit: i64) -> Result<Vec<DrillRow>> {
        Ok(sqlx::query_as::<_, DrillRow>(&format!(
            "SELECT {COLUMNS} FROM swf.drills ORDER BY started_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One drill, if this database has it.
    pub async fn drill(&self, id: Uuid) -> Result<Option<DrillRow>> {
        Ok(sqlx::query_as::<_, DrillRow>(&format!(
            "SELECT {COLUMNS} FROM swf.drills WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Drills not yet resolved: running or interrupted.
    pub async fn unresolved_drills(&self) -> Result<Vec<DrillRow>> {
        Ok(sqlx::query_as::<_, DrillRow>(&format!(
            "SELECT {COLUMNS} FROM swf.drills WHERE state IN ('running', 'interrupted')
              ORDER BY started_at DESC"
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}
