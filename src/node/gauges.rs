//! The gauges task: refreshes the database-derived gauges of `/metrics`
//! (`client::cluster::Gauges`) every `executor.heartbeat_interval_ms` until
//! shutdown, so scrapes cost no query however many arrive.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument, Span};

use crate::client::cluster::Gauges;
use crate::router::Router;

/// A refresh that takes longer than this is given up (the gauges keep their
/// values) and tried again at the next tick.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the gauges task in `tasks`.
pub(super) fn spawn(
    router: Arc<Router>,
    heartbeat_ms: u64,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) {
    let interval = Duration::from_millis(heartbeat_ms);
    let refresh = async move {
        let mut gauges = Gauges::default();
        loop {
            tokio::select! {
                r = tokio::time::timeout(REFRESH_TIMEOUT, gauges.refresh(&router, heartbeat_ms)) => {
                    if r.is_err() {
                        debug!("gauges: refresh did not finish within {REFRESH_TIMEOUT:?}");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    };
    tasks.spawn(refresh.instrument(span.clone()));
}
