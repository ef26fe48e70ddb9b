//! Completion batching: outcomes from every pool go through one
//! micro-batcher into one `finish_tasks` round trip per batch, through the
//! router's write path. Outcomes are shared (`Arc`), so a batch split or a
//! report tried again copies no output.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::router::Router;
use crate::store::{AttemptRef, Finish, FinishResult, Leases};

pub(super) type Finisher = Batcher<(AttemptRef, Arc<Finish>), FinishResult, ReportError>;

/// Batches of up to this many outcomes, this many batches at once.
const MAX_BATCH: usize = 500;
const BATCHES_IN_FLIGHT: usize = 2;

/// Why a report failed; `transient` errors belong to the write path, the
/// others to an item (the batcher then reports each item alone).
#[derive(Debug, Clone)]
pub(super) struct ReportError {
    pub(super) message: String,
    pub(super) transient: bool,
}

/// Starts the finisher; its task joins `tasks`.
pub(super) fn start(router: Arc<Router>, leases: Leases, tasks: &mut JoinSet<()>) -> Finisher {
    Batcher::start(
        MAX_BATCH,
        BATCHES_IN_FLIGHT,
        |e: &ReportError| !e.transient,
        move |items: Vec<(AttemptRef, Arc<Finish>)>| {
            let r = router.clone();
            async move { finish_batch(&r, &items, leases).await }
        },
        tasks,
    )
}

/// Reports a batch through the router's write path (transient errors are
/// retried there for up to 10 s; the reporting task tries again after that
/// while its lease lasts).
async fn finish_batch(
    router: &Router,
    items: &[(AttemptRef, Arc<Finish>)],
    leases: Leases,
) -> Result<Vec<FinishResult>, ReportError> {
    let results = router
        .write(Duration::from_secs(10), |store, epoch| async move {
            store.finish_tasks(items, leases, epoch).await
        })
        .await
        .map_err(|e| ReportError {
            message: e.to_string(),
            transient: e.is_transient(),
        })?;
    // This node saw these runs change: its cached reads of them are old.
    // Once per run of the batch.
    let mut changed: Vec<uuid::Uuid> = items
        .iter()
        .zip(&results)
        .filter(|(_, r)| **r != FinishResult::Stale)
        .map(|((a, _), _)| a.run_id)
        .collect();
    changed.sort_unstable();
    changed.dedup();
    let cache = router.cache();
    for run_id in changed {
        cache.invalidate(run_id).await;
    }
    Ok(results)
}
