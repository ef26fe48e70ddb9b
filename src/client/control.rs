//! Run control: pause and resume a run, send it a signal, and fail the
//! waits whose timeout passed (the node's scheduler task calls
//! [`Client::expire_waits`] about once a second).
//!
//! Each is a write to the primary (from any region) that returns a
//! consistency token; the node drops the run from its lineage cache.
//! Pauses, resumes and signals of concurrent callers (and cancels) share
//! one transaction per batch (`swf.run_controls`).

use serde_json::Value;
use uuid::Uuid;

use super::{Client, ClientError, WRITE_RETRY};
use crate::model::token::Token;
use crate::model::workflow::valid_signal;
use crate::store::RunControl;

/// Waits failed per pass at most (the rest wait for the next pass).
const EXPIRE_BATCH: i32 = 100;

impl Client {
    /// Pauses (`paused`) or resumes a run. Pausing a paused run or resuming
    /// a running one changes nothing and succeeds; a finished run is
    /// `invalid_state`.
    pub async fn set_paused(&self, run_id: Uuid, paused: bool) -> Result<Token, ClientError> {
        let want = if paused { "paused" } else { "running" };
        let op = if paused {
            RunControl::Pause { run_id }
        } else {
            RunControl::Resume { run_id }
        };
        self.run_control(
            op,
            |s| s == want,
            |other| {
                format!("run {run_id} is {other}; only a running run can be paused and only a paused one resumed")
            },
        )
        .await
    }

    /// Sends signal `name` to a running or paused run (a finished run is
    /// `invalid_state`, and nothing is stored).
    pub async fn signal(
        &self,
        run_id: Uuid,
        name: &str,
        payload: Option<&Value>,
    ) -> Result<Token, ClientError> {
        if !valid_signal(name) {
            return Err(ClientError::InvalidRequest(format!(
                "signal name `{}` is invalid: use 1 to 128 characters of letters, digits, `_`, `-` or `.`",
                name.chars().take(64).collect::<String>()
            )));
        }
        if payload.is_some_and(crate::model::workflow::has_nul) {
            return Err(ClientError::InvalidRequest(
                "payload contains a NUL character (\\u0000), which cannot be stored".into(),
            ));
        }
        // The status before the signal: a running or paused run took it.
        let op = RunControl::Signal {
            run_id,
            name: name.to_string(),
            payload: payload.cloned(),
        };
        self.run_control(
            op,
            |s| matches!(s, "running" | "paused"),
            |other| {
                format!("run {run_id} is {other}; a signal goes only to a running or paused run")
            },
        )
        .await
    }

    /// Fails the waiting steps whose timeout passed (each fails its run);
    /// returns how many runs failed.
    pub async fn expire_waits(&self) -> Result<usize, ClientError> {
        let failed = self
            .router
            .write(WRITE_RETRY, |store, epoch| async move {
                store.expire_waits(EXPIRE_BATCH, epoch).await
            })
            .await
            .map_err(ClientError::from_write)?;
        for id in &failed {
            self.router.cache().invalidate(*id).await;
        }
        Ok(failed.len())
    }
}
