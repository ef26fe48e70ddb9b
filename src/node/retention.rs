//! The retention task: deletes finished runs older than
//! `retention.finished_after` in batches of `retention.batch_size`, through
//! the router's write path (the current primary, with the node's epoch).
//! A full batch is followed by the next at once (yielding in between); a
//! partial one means the backlog is gone, and the task waits
//! `retention.interval_ms`. A failed purge is logged and tried again after
//! the interval; it never stops the node. Every node runs it: batches skip
//! runs another node's batch holds, so nodes share the work instead of
//! waiting on each other.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument, Span};

use crate::config::RetentionConfig;
use crate::router::Router;

/// Counter of runs this node's retention deleted.
const DELETED_RUNS: &str = "swf_retention_deleted_runs_total";

/// How long one purge may take before the write path counts as unavailable;
/// a batch deletes many rows, so this is longer than an ordinary write's.
const PURGE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a purge keeps retrying while the primary is being looked for.
const PURGE_DEADLINE: Duration = Duration::from_secs(10);

/// Starts the retention task in `tasks`, unless retention is off.
pub(super) fn spawn(
    router: Arc<Router>,
    settings: &RetentionConfig,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) {
    let Some(age) = settings.finished_after else {
        return;
    };
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let (batch, interval) = (
        settings.batch_size,
        Duration::from_millis(settings.interval_ms),
    );
    metrics::describe_counter!(
        DELETED_RUNS,
        "Finished runs deleted by retention (with their steps, attempts, edges and signals)."
    );
    let purge = async move {
        loop {
            let before = chrono::Utc::now() - age;
            let purged = tokio::select! {
                r = router.write_within(PURGE_DEADLINE, PURGE_TIMEOUT, |store, epoch| async move {
                    store.purge_finished(before, batch, epoch).await
                }) => r,
                _ = shutdown.cancelled() => return,
            };
            let full = match purged {
                Ok(ids) => {
                    metrics::counter!(DELETED_RUNS).increment(ids.len() as u64);
                    // Documents of a deleted run must not outlive it here.
                    for id in &ids {
                        router.cache().invalidate(*id).await;
                    }
                    if !ids.is_empty() {
                        debug!(deleted = ids.len(), "retention: deleted finished runs");
                    }
                    ids.len() >= batch
                }
                Err(e) => {
                    warn!(error = %e, "retention: purge failed; trying again after the interval");
                    false
                }
            };
            if full {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    };
    tasks.spawn(purge.instrument(span.clone()));
}
