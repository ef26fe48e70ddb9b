//! Queues as operators see them: the overview of every queue, and pausing
//! or resuming one cluster-wide (the claim of every executor leaves a
//! paused queue's tasks where they are).

use crate::model::token::Token;
use crate::model::workflow::{mq_name, valid_name};
use crate::router::ReadSource;
use crate::store::QueueRow;

use super::{Client, ClientError, WRITE_RETRY};

impl Client {
    /// Every queue that holds tasks or was paused, read where the router
    /// sends reads (a replica answers it).
    pub async fn queues(
        &self,
        token: Option<&Token>,
    ) -> Result<(Vec<QueueRow>, ReadSource), ClientError> {
        self.check_token(token).await?;
        let plan = self.router.plan(token, None);
        let (source, _, rows) = self
            .read_planned(plan, token, |store| async move {
                store.queue_overview().await.map(Some)
            })
            .await?;
        Ok((rows.unwrap_or_default(), source))
    }

    /// Pauses (`paused`) or resumes queue `queue`; returns whether it was
    /// paused before. Any well-formed name is accepted: a queue can be
    /// paused before its first task.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool, ClientError> {
        if !valid_name(queue) {
            return Err(ClientError::InvalidRequest(format!(
                "`{queue}` is not a queue name (1 to 64 of A-Z a-z 0-9 _ -)"
            )));
        }
        // The queue's own mq and one per region of the cluster.
        let mqs: Vec<String> = std::iter::once(mq_name(queue, None))
            .chain(
                self.router
                    .region_names()
                    .iter()
                    .map(|r| mq_name(queue, Some(r))),
            )
            .collect();
        let mqs = &mqs;
        let was = self
            .router
            .write(WRITE_RETRY, |store, epoch| async move {
                store.set_queue_paused(queue, mqs, paused, epoch).await
            })
            .await
            .map_err(ClientError::from_write)?;
        Ok(was)
    }
}
