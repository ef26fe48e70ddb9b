//! Cron schedules (DESIGN 10.3): create, list, get, delete, pause and
//! resume, and firing the due ones (the node's scheduler task calls
//! [`Client::fire_due_schedules`] about once a second).
//!
//! A tick is fired by submitting the schedule's workflow with idempotency
//! key `schedule:<name>:<tick>` through this node's ordinary submit path,
//! then moving the schedule to its next tick only if it still waits for
//! the one it was read with. Nodes racing for a tick store one run (the
//! key), and a tick missed while no node ran fires once, as the latest
//! tick at or before now.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Client, ClientError, WRITE_RETRY};
use crate::api::wire::{ScheduleInfo, ScheduleRequest};
use crate::model::schedule::{tick_key, CronExpr};
use crate::model::workflow::{valid_name, WorkflowSpec};
use crate::store::ScheduleRow;

/// Schedules fired per pass at most (the rest wait for the next pass).
const FIRE_BATCH: i64 = 100;

fn info(r: ScheduleRow) -> ScheduleInfo {
    ScheduleInfo {
        name: r.name,
        cron: r.cron,
        paused: r.paused,
        next_run_at: r
            .next_run_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        last_run_id: r.last_run_id,
        workflow: r.workflow,
    }
}

/// The schedule's workflow as a spec, its fields named on error.
fn workflow_spec(v: &Value) -> Result<WorkflowSpec, ClientError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        ClientError::InvalidWorkflow(format!(
            "`workflow` does not match the schema at `{}`: {}",
            e.path(),
            e.inner()
        ))
    })
}

impl Client {
    /// Validates and stores a schedule; its first tick is the first after now.
    pub async fn create_schedule(
        &self,
        req: &ScheduleRequest,
    ) -> Result<ScheduleInfo, ClientError> {
        if !valid_name(&req.name) {
            return Err(ClientError::InvalidRequest(format!(
                "`name` `{}` is invalid: use 1 to 64 of A-Z a-z 0-9 _ -",
                req.name
            )));
        }
        let cron = CronExpr::parse(&req.cron).map_err(ClientError::InvalidRequest)?;
        let spec = workflow_spec(&req.workflow)?;
        if spec.idempotency_key.is_some() {
            return Err(ClientError::InvalidWorkflow(
                "`workflow.idempotency_key` is set by the schedule (schedule:<name>:<tick>); leave it out"
                    .into(),
            ));
        }
        // Refused now, as a submit of it would be, rather than at each tick.
        let advertised = self.advertised_for(&[&spec]).await?;
        self.plan(spec, advertised.as_ref())?;
        let next = cron.next_after(Utc::now()).ok_or_else(|| {
            ClientError::InvalidRequest(format!("`cron` `{}` never fires", req.cron))
        })?;
        let paused = req.paused.unwrap_or(false);
        let cron_text = cron.as_str();
        let created = self
            .router
            .write(WRITE_RETRY, |store, epoch| async move {
                store
                    .create_schedule(&req.name, cron_text, &req.workflow, paused, next, epoch)
                    .await
            })
            .await
            .map_err(ClientError::from_write)?;
        if !created {
            return Err(ClientError::AlreadyExists(format!(
                "a schedule named `{}` exists",
                req.name
            )));
        }
        self.schedule(&req.name).await
    }

    /// Every schedule (read on the primary: a schedule just created is there).
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, ClientError> {
        let rows = self
            .router
            .write_store()
            .list_schedules()
            .await
            .map_err(ClientError::from_read)?;
        Ok(rows.into_iter().map(info).collect())
    }

    pub async fn schedule(&self, name: &str) -> Result<ScheduleInfo, ClientError> {
        self.router
            .write_store()
            .schedule(name)
            .await
            .map_err(ClientError::from_read)?
            .map(info)
            .ok_or_else(|| ClientError::NotFound(format!("schedule `{name}` not found")))
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), ClientError> {
        let gone = self
            .router
            .write(WRITE_RETRY, |store, epoch| async move {
                store.delete_schedule(name, epoch).await
            })
            .await
            .map_err(ClientError::from_write)?;
        if gone {
            Ok(())
        } else {
            Err(ClientError::NotFound(format!(
                "schedule `{name}` not found"
            )))
        }
    }

    /// Pauses or resumes a schedule; a resumed one waits for its next tick
    /// after now (the ticks it missed while paused do not run).
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, ClientError> {
        let next = if paused {
            None
        } else {
            let row = self.schedule(name).await?;
            let cron = CronExpr::parse(&row.cron).map_err(ClientError::Internal)?;
            cron.next_after(Utc::now())
        };
        let row = self
            .router
            .write(WRITE_RETRY, |store, epoch| async move {
                store.set_schedule_paused(name, paused, next, epoch).await
            })
            .await
            .map_err(ClientError::from_write)?;
        row.map(info)
            .ok_or_else(|| ClientError::NotFound(format!("schedule `{name}` not found")))
    }

    /// Fires every due schedule once; returns how many this node moved to
    /// their next tick.
    pub async fn fire_due_schedules(&self) -> Result<usize, ClientError> {
        let (due, now) = self
            .router
            .write_store()
            .due_schedules(FIRE_BATCH)
            .await
            .map_err(ClientError::from_read)?;
        let Some(now) = now else {
            return Ok(0);
        };
        let mut moved = 0;
        for row in due {
            if self.fire(&row, now).await? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Fires `row`'s latest tick at or before `now`.
    async fn fire(&self, row: &ScheduleRow, now: DateTime<Utc>) -> Result<bool, ClientError> {
        let cron = match CronExpr::parse(&row.cron) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(schedule = %row.name, error = %e, "schedule skipped");
                return Ok(false);
            }
        };
        let tick = cron
            .latest_at_or_before(now)
            .filter(|t| *t >= row.next_run_at)
            .unwrap_or(row.next_run_at);
        let next = cron
            .next_after(now)
            .unwrap_or(now + chrono::Duration::days(366));
        let run_id = match workflow_spec(&row.workflow) {
            Ok(mut spec) => {
                spec.idempotency_key = Some(tick_key(&row.name, tick));
                match self.submit(spec).await {
                    Ok(out) => Some(out.run_id),
                    // The write path is down: the tick stays due.
                    Err(e @ (ClientError::WriteUnavailable(_) | ClientError::Unavailable(_))) => {
                        return Err(e)
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %row.name, tick = %tick, error = %e,
                                       "the schedule's workflow was refused; tick skipped");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(schedule = %row.name, error = %e, "schedule's workflow is invalid");
                None
            }
        };
        let expected = row.next_run_at;
        let name = row.name.as_str();
        self.router
            .write(WRITE_RETRY, |store, epoch| async move {
                store
                    .schedule_fired(name, expected, tick, next, run_id, epoch)
                    .await
            })
            .await
            .map_err(ClientError::from_write)
    }
}
