//! Tasks claimed by a submit: a hybrid node's client, storing runs, claims
//! up to its pool's free slots in the same transaction
//! ([`crate::store::Store::submit_and_claim`]) and hands the tasks to the
//! pool's claim loop, which buffers and starts them as if its own claim had
//! brought them. The run starts without the notification and the claim
//! round trip that would otherwise follow the submit.
//!
//! Each claim loop publishes its offer (free slots not taken by buffered
//! tasks); a submit takes the first pool's offer whole, so two submits do
//! not claim the same slots. A claim of the loop's own may be on its way
//! meanwhile: what both bring waits in the buffer for slots, under the
//! buffer's rule (started within half the visibility margin or dropped and
//! re-delivered).
//! Whatever the submit brings back (even nothing) goes to the loop, which
//! then publishes its next offer.
//!
//! Only a submit batch that reached an idle batcher takes the offer
//! ([`crate::batch::Arrival`]). A batch queued behind another, or one that
//! gathered callers back from the batch just finished, means submits arrive
//! faster than they commit: the pool's own claims keep up then, and
//! claiming inside the submit would only lengthen the one submit in flight
//! that every waiting caller is queued behind.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::executor::core::Executor;
use crate::store::{ClaimedTask, EagerClaim};

impl Executor {
    /// Takes the offer of the first pool that has one: the claim a submit
    /// may make for it, and the pool's index for [`Executor::hand_off`].
    pub fn eager_claim(&self) -> Option<(usize, EagerClaim)> {
        self.pools.iter().enumerate().find_map(|(i, p)| {
            let qty = p.offer.swap(0, Ordering::AcqRel);
            (qty > 0).then(|| {
                (
                    i,
                    EagerClaim {
                        mqs: p.mqs.clone(),
                        qty,
                        node_id: self.settings.node_id.clone(),
                        region: self.settings.region.clone(),
                        pool: p.spec.name.clone(),
                        leases: self.settings.leases,
                        handlers: self.claim_handlers.clone(),
                    },
                )
            })
        })
    }

    /// Gives pool `pool` the tasks a submit claimed for it (a claim sent at
    /// `sent`; possibly none). A pool whose loop has stopped (shutdown)
    /// drops them: they are re-delivered once their visibility ends, and
    /// the attempt is recorded abandoned.
    pub fn hand_off(&self, pool: usize, tasks: Vec<ClaimedTask>, sent: Instant) {
        if let Some(p) = self.pools.get(pool) {
            let n = tasks.len();
            if p.handoff.send((tasks, sent)).is_err() && n > 0 {
                tracing::debug!(pool = %p.spec.name, tasks = n,
                                "tasks claimed by a submit after the pool stopped; left to be re-delivered");
            }
        }
    }
}
