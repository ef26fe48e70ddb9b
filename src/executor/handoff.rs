//! Tasks claimed by a submit: a hybrid node's client, storing runs, claims
//! up to its pool's free slots in the same transaction
//! ([`crate::store::Store::submit_and_claim`]) and hands the tasks to the
//! pool's claim loop, which buffers and starts them as if its own claim had
//! brought them. The run starts without the notification and the claim
//! round trip that would otherwise follow the submit.
//!
//! Each claim loop publishes two offers. A submit takes the first pool's,
//! so two submits do not claim the same slots; a claim of the loop's own
//! may be on its way meanwhile: what both bring waits in the buffer for
//! slots, under the buffer's rule (started within half the visibility
//! margin or dropped and re-delivered). Whatever the submit brings back
//! (even nothing) goes to the loop, which then publishes its next offers.
//!
//! - **Starts.** A batch of plain runs on one queue
//!   ([`crate::store::plain_mq`]) that the pool takes starts its steps in
//!   the statement that stores them (`swf."submit@<queue>"` stores the
//!   first ones the offer covers started, with their attempts): no scan of
//!   the queue, and no notification or claim of the pool's own follows. The
//!   offer is what the loop's own claim would ask for (free slots and the
//!   prefetch buffer's target, less the tasks buffered), taken only as far
//!   as the batch has steps: the next batch is stored while this one's
//!   tasks start. It stands only while the pool would claim (its reports
//!   keep up) and its last claim came back short (its queues hold nothing
//!   visible for it), so new runs never pass work already waiting.
//! - **Claims.** Any other batch claims through the queues
//!   (`swf.claim_tasks`, in claim order, up to the free slots not taken by
//!   buffered tasks), which costs a scan and lengthens the submit: only a
//!   batch that reached an idle batcher does ([`crate::batch::Arrival`]). A
//!   batch queued behind another, or one that gathered callers back from
//!   the batch just finished, means submits arrive faster than they commit:
//!   the pool's own claims keep up then, and that claim would only lengthen
//!   the one submit in flight that every waiting caller is queued behind.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::executor::core::Executor;
use crate::store::{ClaimedTask, EagerClaim};

impl Executor {
    /// Takes the first offer there is: the claim a submit may make, and
    /// the pool's index for [`Executor::hand_off`]. With `plain` (a plain
    /// batch's queue and its number of steps), the start offer of a pool
    /// that takes that queue, as far as the batch has steps (the rest stays
    /// offered); otherwise a pool's claim offer, whole.
    pub fn eager_claim(&self, plain: Option<(&str, usize)>) -> Option<(usize, EagerClaim)> {
        self.pools.iter().enumerate().find_map(|(i, p)| {
            let qty = match plain {
                None => p.offer.swap(0, Ordering::AcqRel),
                Some((mq, _)) if !p.mqs.iter().any(|m| m == mq) => 0,
                Some((_, steps)) => {
                    let taken =
                        p.start_offer
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                                Some(o.saturating_sub(steps))
                            });
                    taken.unwrap_or(0).min(steps)
                }
            };
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
                        start: plain.is_some(),
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
