//! The scheduler task of a client node: about once a second, fires the
//! cron schedules that are due ([`Client::fire_due_schedules`]) and fails
//! the signal waits whose timeout passed ([`Client::expire_waits`]). Every
//! client node runs it; the schedules' idempotency keys make the nodes'
//! races harmless (one run per tick). A failed pass (the primary out of
//! reach, say) is logged and tried again after a wait that doubles up to
//! [`MAX_WAIT`], so an outage logs a few lines, not one a second; it never
//! stops the node.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument, Span};

use crate::client::Client;

/// How often due schedules are looked for (cron's resolution is a minute).
const PASS: Duration = Duration::from_secs(1);
/// The longest wait after failed passes.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) fn spawn(
    client: Client,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) {
    let run = async move {
        let mut wait = PASS;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
            let pass = tokio::select! {
                r = async {
                    let fired = client.fire_due_schedules().await?;
                    let expired = client.expire_waits().await?;
                    Ok::<_, crate::client::ClientError>((fired, expired))
                } => r,
                _ = shutdown.cancelled() => return,
            };
            match pass {
                Ok((fired, expired)) => {
                    if fired > 0 || expired > 0 {
                        debug!(schedules = fired, waits_timed_out = expired, "timers fired");
                    }
                    wait = PASS;
                }
                Err(e) => {
                    wait = (wait * 2).min(MAX_WAIT);
                    warn!(error = %e, retry_in_s = wait.as_secs(), "firing due schedules and wait timeouts");
                }
            }
        }
    };
    tasks.spawn(run.instrument(span.clone()));
}
