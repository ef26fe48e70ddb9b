//! The scheduler task of a client node: about once a second, fires the
//! cron schedules that are due ([`Client::fire_due_schedules`]). Every
//! client node runs it; the schedules' idempotency keys make the nodes'
//! races harmless (one run per tick). A failed pass is logged and tried
//! again on the next; it never stops the node.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument, Span};

use crate::client::Client;

/// How often due schedules are looked for (cron's resolution is a minute).
const PASS: Duration = Duration::from_secs(1);

pub(super) fn spawn(
    client: Client,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) {
    let run = async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PASS) => {}
                _ = shutdown.cancelled() => return,
            }
            let pass = tokio::select! {
                r = client.fire_due_schedules() => r,
                _ = shutdown.cancelled() => return,
            };
            match pass {
                Ok(0) => {}
                Ok(n) => debug!(schedules = n, "schedules fired"),
                Err(e) => warn!(error = %e, "firing due schedules"),
            }
        }
    };
    tasks.spawn(run.instrument(span.clone()));
}
