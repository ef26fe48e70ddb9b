//! Lease extension: a task whose step timeout exceeds the lease has its
//! visibility extended every third of a lease while its handler runs, and
//! is stopped once its attempt is no longer current.

use std::time::Duration;

use tracing::{info, warn};

use crate::executor::core::Executor;
use crate::store::AttemptRef;

impl Executor {
    /// Extends the lease of `a` until the attempt stops being current
    /// (cancelled or re-claimed elsewhere), then returns. A failed extension
    /// is retried at the next period.
    pub(super) async fn keep_leased(&self, a: &AttemptRef) {
        let lease = self.settings.leases.lease_ms as u64;
        let every = Duration::from_millis((lease / 3).max(50));
        loop {
            tokio::time::sleep(every).await;
            let extended = self
                .router
                .write_store()
                .extend_tasks(
                    std::slice::from_ref(a),
                    self.settings.leases,
                    self.router.epoch(),
                )
                .await;
            match extended {
                Ok(current) if current.is_empty() => {
                    info!(run_id = %a.run_id, step_id = %a.step_id,
                          "attempt no longer current (cancelled or re-claimed); stopping it");
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "extend task lease"),
            }
        }
    }
}
