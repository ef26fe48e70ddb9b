//! The claim's isolation path: when a set-based claim raises for a reason
//! that belongs to a message ([`super::ErrorClass::Item`]), the executor
//! lists the visible messages, claims each alone, and rejects the ones
//! whose claim raises, so one bad message never blocks its queue. Each is
//! one round trip; none is on the normal claim path.

use sqlx::Row;

use super::conn::{Result, Store};
use super::engine::{bind_claimer, ClaimedTask, Claimer, Leases};

/// What [`Store::reject_task`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Its step (and run) failed with the error code.
    Failed,
    /// It was not a task of this engine: moved to pgmq's archive.
    Archived,
    /// It was orphaned (its step gone or no longer current): deleted.
    Deleted,
    /// It was gone, claimed meanwhile, or its run or step was busy: left.
    Skipped,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Failed => "failed",
            Rejected::Archived => "archived",
            Rejected::Deleted => "deleted",
            Rejected::Skipped => "skipped",
        }
    }
}

impl Store {
    /// The visible messages of `mqs` as `(mq, msg_id)`, up to `qty` per
    /// queue, in the order a claim reads them. Locks and hides nothing.
    pub async fn peek_tasks(&self, mqs: &[String], qty: usize) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT mq, msg_id FROM swf.peek_tasks($1, $2)")
            .bind(mqs)
            .bind(qty as i32)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Claims message `msg_id` of queue `mq` alone (nothing when it is not
    /// visible or another claim holds it): `swf.claim_tasks` with `p_msg_id`.
    pub async fn claim_message(
        &self,
        mq: &str,
        msg_id: i64,
        by: Claimer<'_>,
        leases: Leases,
        epoch: u64,
    ) -> Result<Vec<ClaimedTask>> {
        let q = sqlx::query_as::<_, ClaimedTask>(
            "SELECT run_id, step_id, attempt, handler, timeout_ms, input
               FROM swf.claim_tasks(ARRAY[$1], 1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(mq);
        Ok(bind_claimer(q, by, leases, epoch)
            .bind(msg_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Fails the task of message `msg_id` of `mq`, whose claim raised
    /// `detail`: its step fails at once with error `code` (an attempt by
    /// `by` records it) and the message is removed.
    pub async fn reject_task(
        &self,
        mq: &str,
        msg_id: i64,
        code: &str,
        detail: &str,
        by: Claimer<'_>,
        epoch: u64,
    ) -> Result<Rejected> {
        let what: String =
            sqlx::query_scalar("SELECT swf.reject_task($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(mq)
                .bind(msg_id)
                .bind(code)
                .bind(detail)
                .bind(by.node_id)
                .bind(by.region)
                .bind(by.pool)
                .bind(epoch as i64)
                .fetch_one(&self.pool)
                .await?;
        Ok(match what.as_str() {
            "failed" => Rejected::Failed,
            "archived" => Rejected::Archived,
            "deleted" => Rejected::Deleted,
            _ => Rejected::Skipped,
        })
    }
}
