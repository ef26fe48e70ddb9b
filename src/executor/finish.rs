//! Completion and lease batching: outcomes from every pool go through one
//! micro-batcher into one `finish_tasks` round trip per batch, through the
//! router's write path. Outcomes are shared (`Arc`), so a batch split or a
//! report tried again copies no output. Lease extensions of running tasks
//! share round trips the same way ([`Extender`]): a node far from the
//! primary pays one round trip per batch, not one per task.
//!
//! Each round trip is measured per node: `swf_finish_round_trip_seconds`,
//! `swf_finish_batch_size`, `swf_extend_round_trip_seconds`,
//! `swf_extend_batch_size`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::batch::{Batcher, InFlight};
use crate::router::Router;
use crate::store::{AttemptRef, Finish, FinishResult, Leases};

pub(super) type Finisher = Batcher<(AttemptRef, Arc<Finish>), FinishResult, ReportError>;
/// Lease extensions: each attempt answers whether it is still current.
pub(super) type Extender = Batcher<AttemptRef, bool, ReportError>;

/// Batches of up to this many outcomes (or lease extensions).
const MAX_BATCH: usize = 500;
/// Reports in flight at once near the primary: one, so that outcomes
/// finishing meanwhile gather into the next report. Each report has a fixed
/// cost in PostgreSQL; measured with `swf bench --shapes one --concurrency
/// 8` (2026-12-05, submits also one batch at a time), one report in flight
/// gave 739-772 workflows/s against 701-708 with two; the burn-down did not
/// move (12,162-12,896 against 12,097-12,312).
const REPORTS_IN_FLIGHT: usize = 1;
/// With one report in flight, a report smaller than the last waits for
/// outcomes for up to this long (never longer than the last report took;
/// see [`crate::batch`]): fewer, larger reports leave PostgreSQL's CPU to
/// the submits callers wait for. Measured with `swf bench --shapes one
/// --concurrency 8` (2026-12-05): 1,429-1,648 workflows/s against
/// 1,312-1,471 without. The burn-down's reports are full anyway; it ran
/// 2-4% below the build before in each of three pairs (13,708 against
/// 14,357; 15,204-15,407 against 15,509-15,980), inside its usual spread.
const REPORT_GATHER: Duration = Duration::from_millis(5);
/// Lease extensions in flight at once.
const EXTENSIONS_IN_FLIGHT: usize = 2;
/// A node far from the primary keeps more reports in flight: one per this
/// much of the last report's round trip (at 120 ms, 6), up to
/// [`MAX_BATCHES_IN_FLIGHT`]; otherwise one report per round trip would
/// bound how fast its pools can finish tasks.
const ROUND_TRIP_PER_BATCH_IN_FLIGHT: Duration = Duration::from_millis(20);
const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// Why a report failed; `transient` errors belong to the write path, the
/// others to an item (the batcher then reports each item alone).
#[derive(Debug, Clone)]
pub(super) struct ReportError {
    pub(super) message: String,
    pub(super) transient: bool,
}

/// Starts the finisher; its task joins `tasks`.
pub(super) fn start(router: Arc<Router>, leases: Leases, tasks: &mut JoinSet<()>) -> Finisher {
    let in_flight = InFlight::new(REPORTS_IN_FLIGHT);
    let limit = in_flight.clone();
    Batcher::start_with_arrival(
        MAX_BATCH,
        in_flight,
        Some(REPORT_GATHER),
        |e: &ReportError| !e.transient,
        move |items: Vec<(AttemptRef, Arc<Finish>)>, _| {
            let (r, limit) = (router.clone(), limit.clone());
            async move {
                let sent = std::time::Instant::now();
                let out = finish_batch(&r, &items, leases).await;
                if out.is_ok() {
                    limit.set(in_flight_for(sent.elapsed()));
                }
                out
            }
        },
        tasks,
    )
}

/// Reports to keep in flight after one took `round_trip`.
fn in_flight_for(round_trip: Duration) -> usize {
    let n = round_trip.as_micros() / ROUND_TRIP_PER_BATCH_IN_FLIGHT.as_micros().max(1);
    (n as usize).clamp(REPORTS_IN_FLIGHT, MAX_BATCHES_IN_FLIGHT)
}

/// Starts the extender; its task joins `tasks`.
pub(super) fn start_extender(
    router: Arc<Router>,
    leases: Leases,
    tasks: &mut JoinSet<()>,
) -> Extender {
    Batcher::start(
        MAX_BATCH,
        EXTENSIONS_IN_FLIGHT,
        |e: &ReportError| !e.transient,
        move |items: Vec<AttemptRef>| {
            let r = router.clone();
            async move {
                let sent = std::time::Instant::now();
                let current = r
                    .write_store()
                    .extend_tasks(&items, leases, r.epoch())
                    .await
                    .map_err(|e| ReportError {
                        message: e.to_string(),
                        transient: e.is_transient(),
                    })?;
                metrics::histogram!("swf_extend_round_trip_seconds").record(sent.elapsed());
                metrics::histogram!("swf_extend_batch_size").record(items.len() as f64);
                let current: std::collections::HashSet<&AttemptRef> = current.iter().collect();
                Ok(items.iter().map(|a| current.contains(a)).collect())
            }
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
    let sent = std::time::Instant::now();
    let results = router
        .write(Duration::from_secs(10), |store, epoch| async move {
            store.finish_tasks(items, leases, epoch).await
        })
        .await
        .map_err(|e| ReportError {
            message: e.to_string(),
            transient: e.is_transient(),
        })?;
    metrics::histogram!("swf_finish_round_trip_seconds").record(sent.elapsed());
    metrics::histogram!("swf_finish_batch_size").record(items.len() as f64);
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
