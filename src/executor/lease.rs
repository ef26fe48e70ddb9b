//! Leases: when an attempt's lease ends as this node knows it, and keeping
//! it: a task whose step timeout exceeds the lease has its visibility
//! extended every third of a lease while its handler runs, any task whose
//! outcome report takes a while has it extended while it reports, and
//! either stops once its attempt is no longer current.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::executor::core::Executor;
use crate::store::{AttemptRef, Leases};

/// Longest pause before a failed extension is tried again.
const EXTEND_RETRY: Duration = Duration::from_secs(1);

/// An attempt's lease as this node knows it. The database set the message's
/// visibility to `min(step timeout, lease) + margin` after the claim or
/// extension was sent; counting from the send leaves the round trip as
/// slack, so the message stays hidden at least until [`Lease::until`].
pub(super) struct Lease {
    /// `min(step timeout, lease)`: what an extension renews.
    len: Duration,
    margin: Duration,
    /// When the claim or the last successful extension was sent.
    set: Mutex<Instant>,
}

/// Why [`Executor::keep_leased`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseLost {
    /// The attempt is no longer current (cancelled, re-claimed, finished).
    NotCurrent,
    /// The lease ended without an extension (only when asked to stop then).
    Ended,
}

impl Lease {
    /// The lease of a task claimed by a claim sent at `sent`.
    pub(super) fn new(sent: Instant, timeout_ms: i32, leases: Leases) -> Lease {
        let ms = timeout_ms.min(leases.lease_ms).max(1) as u64;
        Lease {
            len: Duration::from_millis(ms),
            margin: Duration::from_millis(leases.margin_ms.max(0) as u64),
            set: Mutex::new(sent),
        }
    }

    fn set_at(&self) -> Instant {
        *self.set.lock().expect("lease lock")
    }

    /// When the lease ends (the task becomes visible to other claims)
    /// unless it is extended.
    pub(super) fn until(&self) -> Instant {
        self.set_at() + self.len + self.margin
    }

    /// An extension sent at `sent` succeeded.
    fn renewed(&self, sent: Instant) {
        let mut set = self.set.lock().expect("lease lock");
        *set = (*set).max(sent);
    }
}

impl Executor {
    /// Extends the lease of `a` a third of a lease after it was last set,
    /// until the attempt stops being current (cancelled or re-claimed
    /// elsewhere), then returns. A failed extension is retried soon.
    ///
    /// While an outcome is being reported (`reporting` since when), also
    /// returns once the lease has ended unextended, and extends only once
    /// the report has taken a while (a third of a lease, or half of what
    /// was left of it): a report that lands at once costs no extension.
    pub(super) async fn keep_leased(
        &self,
        a: &AttemptRef,
        lease: &Lease,
        reporting: Option<Instant>,
    ) -> LeaseLost {
        let every = (lease.len / 3).max(Duration::from_millis(50));
        let not_before =
            reporting.map(|t| t + every.min(lease.until().saturating_duration_since(t) / 2));
        let ends = reporting.is_some();
        let mut retry_at: Option<Instant> = None;
        loop {
            let mut due = retry_at.unwrap_or_else(|| lease.set_at() + every);
            if let Some(t) = not_before {
                due = due.max(t);
            }
            let wake = if ends { due.min(lease.until()) } else { due };
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            if ends && now >= lease.until() {
                return LeaseLost::Ended;
            }
            if now < due {
                continue;
            }
            // Batched with the node's other extensions (one round trip).
            let extended = self.extender.call(a.clone()).await;
            match extended {
                Ok(Ok(false)) => {
                    info!(run_id = %a.run_id, step_id = %a.step_id,
                          "attempt no longer current (cancelled or re-claimed); stopping it");
                    return LeaseLost::NotCurrent;
                }
                Ok(Ok(true)) => {
                    lease.renewed(now);
                    retry_at = None;
                }
                Ok(Err(e)) => {
                    warn!(error = %e.message, "extend task lease");
                    retry_at = Some(Instant::now() + every.min(EXTEND_RETRY));
                }
                Err(e) => {
                    warn!(error = %e, "extend task lease");
                    retry_at = Some(Instant::now() + every.min(EXTEND_RETRY));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_counts_from_its_last_send_and_never_moves_back() {
        let t0 = Instant::now();
        let leases = Leases {
            lease_ms: 15_000,
            margin_ms: 1_000,
            backoff_base_ms: 1,
            backoff_cap_ms: 1,
        };
        // The shorter of the step timeout and the lease, plus the margin.
        let l = Lease::new(t0, 60_000, leases);
        assert_eq!(l.until(), t0 + Duration::from_secs(16));
        assert_eq!(
            Lease::new(t0, 2_000, leases).until(),
            t0 + Duration::from_secs(3)
        );
        l.renewed(t0 + Duration::from_secs(5));
        assert_eq!(l.until(), t0 + Duration::from_secs(21));
        // An extension answered late (sent earlier) does not shorten it.
        l.renewed(t0 + Duration::from_secs(1));
        assert_eq!(l.until(), t0 + Duration::from_secs(21));
    }
}
