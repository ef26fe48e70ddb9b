//! Claiming: the LISTEN connection that wakes pools when their queues get
//! work, each pool's claim loop, and a pool's drain at shutdown.
//!
//! A claim is one set-based round trip. When it fails, the error's class
//! ([`ErrorClass`]) decides: the write path being down or moved rediscovers
//! the primary; contention just waits; an error that belongs to a message
//! (a step input too large for the database, data it refuses) sets that
//! message apart: the pool claims the visible messages one by one, and each
//! whose claim raises has its step failed with a code (`input_too_large`,
//! `claim_failed`) and its message removed, so one bad message never blocks
//! a queue. The normal path pays nothing for this.
//!
//! A claim loop owns the `JoinSet` of its pool's running tasks. At shutdown
//! it stops claiming, waits for them (on their completion) until the grace
//! deadline, releases those whose outcome is not being reported yet, and
//! gives the rest a bounded time to report.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::wire::TaskErrorCode;
use crate::executor::core::Executor;
use crate::executor::pool::{Handoff, Pool};
use crate::executor::prefetch::{Prefetch, CLAIMS_IN_FLIGHT};
use crate::store::{AttemptRef, ClaimedTask, Claimer, ErrorClass, StoreError};

/// How long outcomes already being reported get after the grace deadline.
const REPORT_GRACE: Duration = Duration::from_secs(5);
/// How long releasing tasks at shutdown may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// A renewal of buffered tasks: its answer (the attempts still current),
/// the attempts it asked for, and when it was sent.
type Renewal = (
    Result<Vec<AttemptRef>, StoreError>,
    Vec<AttemptRef>,
    Instant,
);

/// Pause after a failed claim (no writable primary known, contention).
const CLAIM_RETRY: Duration = Duration::from_millis(500);
/// How long a notification's claim waits for the pool's keyed tasks still
/// running or buffered to end (so the claim names them all, and takes their
/// slots in one statement rather than two), while keyed tasks end in a
/// burst: the last one ended less than [`KEYED_BURST`] ago. A pool holding
/// one long keyed task claims for other work at once.
const KEYED_WAKE_DELAY: Duration = Duration::from_millis(5);
const KEYED_BURST: Duration = Duration::from_millis(50);

impl Executor {
    /// Creates the queues, then LISTENs on their channels and wakes pools.
    pub(super) async fn listen_loop(
        self: Arc<Self>,
        shutdown: CancellationToken,
        ready: CancellationToken,
    ) {
        let mut by_channel: HashMap<String, Vec<Arc<Pool>>> = HashMap::new();
        for p in &self.pools {
            for mq in &p.mqs {
                by_channel
                    .entry(crate::store::notify_channel(mq))
                    .or_default()
                    .push(p.clone());
            }
        }
        let mqs: Vec<String> = self.pools.iter().flat_map(|p| p.mqs.clone()).collect();
        // Which queue each mq holds (queues are paused and listed by name).
        let queues: Vec<String> = self
            .pools
            .iter()
            .flat_map(|p| p.mqs.iter().map(|_| p.spec.queue.clone()))
            .collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let store = self.router.write_store().clone();
            let attempt = async {
                store.ensure_queues(&mqs, self.router.epoch()).await?;
                store
                    .note_queue_mqs(&mqs, &queues, self.router.epoch())
                    .await?;
                ready.cancel();
                store.listen(&mqs).await
            };
            let mut listener = tokio::select! {
                r = attempt => match r {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "listen for queue notifications; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            backoff = Duration::from_millis(100);
            // Anything enqueued while we were not listening is found by a claim.
            for p in &self.pools {
                p.wake.notify_one();
            }
            loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(n) => {
                            for p in by_channel.get(n.channel()).into_iter().flatten() {
                                p.wake.notify_one();
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "queue notification connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Claims and starts tasks for `pool` until `shutdown`, then drains it.
    ///
    /// Claims run in the background while buffered tasks start (see
    /// [`Prefetch`]): up to [`CLAIMS_IN_FLIGHT`] at a time (one after a
    /// keyed claim came back short), sent when the buffer is half empty,
    /// asking for the free slots plus the buffer's target. Keyed tasks
    /// whose handlers ended are named in each claim, which may give their
    /// slots to new tasks (see `Executor::key_slot_ended`).
    pub(super) async fn claim_loop(self: Arc<Self>, pool: Arc<Pool>, shutdown: CancellationToken) {
        let mut running = JoinSet::new();
        let mut claiming: JoinSet<(Result<Vec<ClaimedTask>, StoreError>, usize, Instant)> =
            JoinSet::new();
        let mut buffer = Prefetch::new(
            self.settings.claim_batch,
            self.settings.prefetch_min,
            Duration::from_millis(self.settings.leases.margin_ms.max(0) as u64),
        );
        // One renewal of aging buffered tasks at a time: (answer, asked, sent).
        let mut renewing: JoinSet<Renewal> = JoinSet::new();
        // Tasks claimed by this node's submits (see `handoff.rs`).
        let mut handoffs = pool.take_handoffs();
        // The queues may hold more than the last claim got.
        let mut more = true;
        // The last claim came back short with keyed tasks: a key had no
        // more slots for us, so claims go one at a time until one comes
        // back full (several at once find the key locked by each other).
        let mut short = false;
        // A notification's claim waiting for keyed tasks to end, until then.
        let mut deferred: Option<Instant> = None;
        // When a keyed task of the pool last ended.
        let mut key_end: Option<Instant> = None;
        // Tasks asked for by the claims on their way.
        let mut asked = 0usize;
        // Per pool: claim round trips and sizes, the buffer's depth and
        // how long tasks wait there.
        let name = pool.spec.name.clone();
        let claim_rtt = metrics::histogram!("swf_claim_round_trip_seconds", "pool" => name.clone());
        let claim_size = metrics::histogram!("swf_claim_batch_size", "pool" => name.clone());
        let buffer_wait = metrics::histogram!("swf_buffer_wait_seconds", "pool" => name.clone());
        let buffer_depth = metrics::gauge!("swf_buffer_depth", "pool" => name);
        loop {
            buffer_depth.set(buffer.len() as f64);
            while let Some(r) = running.try_join_next() {
                reaped(r);
            }
            if shutdown.is_cancelled() {
                break;
            }
            // Start what the free slots take.
            while buffer.len() > 0 {
                let Ok(permit) = pool.slots.clone().try_acquire_owned() else {
                    break;
                };
                let now = Instant::now();
                match buffer.next(now, |t| self.expired_in_buffer(&pool, t)) {
                    Some(s) => {
                        buffer_wait.record(s.waited);
                        self.spawn_task(&pool, &mut running, s.task, s.sent, permit)
                    }
                    None => break,
                }
            }
            // Buffered tasks waiting for slots past the horizon: renew them.
            if renewing.is_empty() {
                let aging = buffer.aging(Instant::now());
                if !aging.is_empty() {
                    let me = self.clone();
                    renewing.spawn(async move {
                        let sent = Instant::now();
                        let r = me
                            .router
                            .write_store()
                            .extend_tasks(&aging, me.settings.leases, me.router.epoch())
                            .await;
                        (r, aging, sent)
                    });
                }
            }
            let aging_at = buffer.next_aging_at();
            // Claim ahead, up to CLAIMS_IN_FLIGHT claims at a time, while
            // reports keep up.
            let free = pool.slots.available_permits();
            // Outcomes waiting for their report count too: a pool far from
            // the primary has a round trip's worth of them at any time, so
            // the bound grows with the claims that may be on their way.
            let keeping_up = pool.in_flight()
                < pool.spec.size + (CLAIMS_IN_FLIGHT + 2) * self.settings.claim_batch;
            let want = buffer.want(free, asked);
            let at_once = if short { 1 } else { CLAIMS_IN_FLIGHT };
            if more && claiming.len() < at_once && want > 0 && keeping_up {
                asked += want;
                deferred = None;
                let (me, p) = (self.clone(), pool.clone());
                claiming.spawn(async move {
                    let sent = Instant::now();
                    (me.claim(&p, want).await, want, sent)
                });
            }
            // What a submit may claim for us through our queues: free
            // slots not spoken for by buffered tasks. Also while our own
            // claim is on its way (our submits' notifications set one off
            // after each of them): what both bring waits in the buffer for
            // slots, as prefetched work does.
            pool.offer
                .store(free.saturating_sub(buffer.len()), Ordering::Release);
            // What a submit may start of the plain runs it stores: what our
            // own claim would ask for (the free slots and the buffer's
            // target, less what is buffered), but only while it would claim
            // (reports keep up) and our queues hold nothing visible for us
            // (our last claim came back short), so that runs stored now do
            // not pass work already waiting. (A submit batch is stored
            // while the tasks the last one brought start, so free slots
            // alone would cover one batch in two.)
            pool.start_offer.store(
                if more || !keeping_up {
                    0
                } else {
                    (free + buffer.target()).saturating_sub(buffer.len())
                },
                Ordering::Release,
            );
            let w = Waits::of(LoopState {
                buffered: buffer.len(),
                free,
                more,
                keeping_up,
                running: !running.is_empty(),
            });
            tokio::select! {
                Some(done) = claiming.join_next(), if !claiming.is_empty() => {
                    let Ok((result, want, sent)) = done else { continue };
                    asked -= want;
                    match result {
                        Ok(tasks) => {
                            let got = tasks.len();
                            claim_rtt.record(sent.elapsed());
                            claim_size.record(got as f64);
                            metrics::counter!("swf_tasks_claimed_total", "pool" => pool.spec.name.clone())
                                .increment(got as u64);
                            more = got == want;
                            short = !more && tasks.iter().any(|t| t.concurrency_key.is_some());
                            // Nothing buffered and every slot free: the
                            // pool waited for this claim (a slow pool's
                            // slots rarely all free at once).
                            let waiting = buffer.len() == 0
                                && pool.slots.available_permits() == pool.spec.size;
                            buffer.claimed(got, want, waiting);
                            debug!(pool = %pool.spec.name, want, got, rtt_ms = sent.elapsed().as_millis() as u64,
                                   buffered = buffer.len(), free = pool.slots.available_permits(),
                                   in_flight = claiming.len(), target = buffer.target(), "claim back");
                            buffer.push(tasks, sent, Instant::now());
                        }
                        Err(e) => {
                            // Claiming pauses while no writable primary is
                            // known; only the write path being down or moved
                            // looks for it.
                            warn!(pool = %pool.spec.name, error = %e, "claim tasks");
                            if e.class() == ErrorClass::Path {
                                self.router.write_failed().await;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(CLAIM_RETRY) => {}
                                _ = shutdown.cancelled() => break,
                            }
                        }
                    }
                }
                Some(done) = renewing.join_next(), if !renewing.is_empty() => {
                    let Ok((result, asked, sent)) = done else { continue };
                    if let Err(e) = &result {
                        warn!(pool = %pool.spec.name, error = %e, "renew buffered tasks");
                    }
                    let gone = buffer.renewed(result.as_deref().ok(), sent, Instant::now());
                    metrics::counter!("swf_tasks_renewed_in_buffer_total", "pool" => pool.spec.name.clone())
                        .increment((asked.len() - gone) as u64);
                }
                // A buffered task reaches the horizon: renew it (above).
                _ = tokio::time::sleep_until(aging_at.unwrap_or_else(Instant::now)),
                    if aging_at.is_some() && renewing.is_empty() => {}
                Some((tasks, sent)) = next_handoff(&mut handoffs) => {
                    metrics::counter!("swf_tasks_claimed_total", "pool" => pool.spec.name.clone())
                        .increment(tasks.len() as u64);
                    metrics::counter!("swf_tasks_claimed_at_submit_total", "pool" => pool.spec.name.clone())
                        .increment(tasks.len() as u64);
                    buffer.push(tasks, sent, Instant::now());
                }
                // A slot came free: start from the buffer, or claim.
                p = pool.slots.clone().acquire_owned(), if w.slot => drop(p),
                // Work (or a key's slots) came: claim, after a short wait
                // while keyed tasks of the pool are still to end.
                _ = pool.wake.notified(), if w.wake && deferred.is_none() => {
                    let burst = key_end.is_some_and(|t| t.elapsed() < KEYED_BURST);
                    if burst && keyed_pending(&buffer, &pool) {
                        deferred = Some(Instant::now() + KEYED_WAKE_DELAY);
                    } else {
                        more = true;
                    }
                }
                // Keyed handlers ended: once every keyed task the pool holds
                // has, claim, naming them (their slots are free to us).
                _ = pool.key_ended.notified() => {
                    key_end = Some(Instant::now());
                    if !keyed_pending(&buffer, &pool) {
                        more = true;
                    }
                }
                _ = tokio::time::sleep_until(deferred.unwrap_or_else(Instant::now)),
                    if w.wake && deferred.is_some() => {
                    more = true;
                    deferred = None;
                }
                _ = tokio::time::sleep(self.settings.poll_interval), if w.poll => {
                    more = true;
                    buffer.idle(Instant::now());
                }
                // Too many outcomes unreported: wait for tasks to end.
                r = running.join_next(), if w.reap => {
                    if let Some(r) = r {
                        reaped(r);
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        debug!(pool = %pool.spec.name, "claim loop stopped");
        pool.offer.store(0, Ordering::Release);
        pool.start_offer.store(0, Ordering::Release);
        // A claim still on its way, what submits handed over, and what is
        // buffered, go straight back.
        let mut back: Vec<AttemptRef> = Vec::new();
        while renewing.join_next().await.is_some() {}
        while let Some(done) = claiming.join_next().await {
            if let Ok((Ok(tasks), _, _)) = done {
                back.extend(tasks.iter().map(|t| t.attempt_ref()));
            }
        }
        if let Some(mut rx) = handoffs.take() {
            rx.close();
            while let Ok((tasks, _)) = rx.try_recv() {
                back.extend(tasks.iter().map(|t| t.attempt_ref()));
            }
        }
        back.extend(buffer.take_all().iter().map(|t| t.attempt_ref()));
        if !back.is_empty() {
            if let Err(e) = self.release(&back).await {
                warn!(error = %e, "release tasks claimed but not started at shutdown");
            }
        }
        self.drain_pool(&pool, running).await;
    }

    /// A buffered task waited past its safe start: dropped, to be
    /// re-delivered when its visibility ends.
    fn expired_in_buffer(&self, pool: &Pool, t: ClaimedTask) {
        warn!(pool = %pool.spec.name, run_id = %t.run_id, step_id = %t.step_id,
              attempt = t.attempt,
              "a prefetched task waited too long to start; left to be re-delivered");
        metrics::counter!("swf_tasks_expired_in_buffer_total", "pool" => pool.spec.name.clone())
            .increment(1);
    }

    /// How this node's claims for `pool` are recorded.
    fn claimer<'a>(&'a self, pool: &'a Pool) -> Claimer<'a> {
        Claimer {
            node_id: &self.settings.node_id,
            region: &self.settings.region,
            pool: &pool.spec.name,
        }
    }

    /// One claim round trip for up to `want` tasks; when it fails for a
    /// message's sake, the isolation path instead.
    async fn claim(&self, pool: &Pool, want: usize) -> Result<Vec<ClaimedTask>, StoreError> {
        let s = &self.settings;
        let claimed = self
            .router
            .write_store()
            .claim_tasks_reusing(
                &pool.mqs,
                want,
                self.claimer(pool),
                s.leases,
                self.router.epoch(),
                Some(&self.claim_handlers),
                &self.ended_names(),
            )
            .await;
        match claimed {
            Err(e) if matches!(e.class(), ErrorClass::Item | ErrorClass::Other) => {
                warn!(pool = %pool.spec.name, error = %e,
                      "claim tasks failed on a message; claiming them one by one");
                self.claim_one_by_one(pool, want).await
            }
            other => other,
        }
    }

    /// The isolation path: claims the visible messages one at a time; a
    /// message whose claim raises for its own sake has its step failed
    /// (`input_too_large` for a size limit, `claim_failed` otherwise) and is
    /// removed. A message failing otherwise is left (and logged).
    async fn claim_one_by_one(
        &self,
        pool: &Pool,
        want: usize,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let s = &self.settings;
        let store = self.router.write_store();
        let epoch = self.router.epoch();
        let by = self.claimer(pool);
        let mut got = Vec::new();
        for (mq, msg_id) in store.peek_tasks(&pool.mqs, want).await? {
            if got.len() >= want {
                break;
            }
            let e = match store.claim_message(&mq, msg_id, by, s.leases, epoch).await {
                Ok(tasks) => {
                    got.extend(tasks);
                    continue;
                }
                Err(e) => e,
            };
            if e.class() != ErrorClass::Item {
                warn!(pool = %pool.spec.name, mq = %mq, msg_id, error = %e,
                      "claim one message; left in its queue");
                if got.is_empty() && e.is_transient() {
                    return Err(e);
                }
                continue;
            }
            let code = match e {
                StoreError::TooLarge(_) => TaskErrorCode::InputTooLarge,
                _ => TaskErrorCode::ClaimFailed,
            };
            let detail = match &e {
                StoreError::TooLarge(m) | StoreError::Invalid(m) => m.clone(),
                other => other.to_string(),
            };
            match store
                .reject_task(&mq, msg_id, code.as_str(), &detail, by, epoch)
                .await
            {
                Ok(done) => warn!(pool = %pool.spec.name, mq = %mq, msg_id, code = code.as_str(),
                                  error = %detail, outcome = done.as_str(),
                                  "a task could not be claimed; its step failed"),
                Err(e2) => warn!(pool = %pool.spec.name, mq = %mq, msg_id, error = %e2,
                                 "fail a task that could not be claimed"),
            }
        }
        Ok(got)
    }

    /// Gives tasks back to their queue at once (bounded in time).
    async fn release(&self, refs: &[AttemptRef]) -> Result<i32, StoreError> {
        let store = self.router.write_store();
        let release = store.release_tasks(refs, self.router.epoch());
        tokio::time::timeout(RELEASE_TIMEOUT, release)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer within {RELEASE_TIMEOUT:?}"
                )))
            })
    }

    /// After the claim loop stopped: lets in-flight tasks finish until the
    /// grace deadline, then releases the rest so another executor runs
    /// them. Tasks already reporting an outcome are not aborted; their
    /// report gets [`REPORT_GRACE`]. Whatever is still running after that
    /// is aborted when `running` drops.
    async fn drain_pool(&self, pool: &Pool, mut running: JoinSet<()>) {
        let grace = Instant::now() + self.settings.shutdown_grace;
        join_until(&mut running, grace).await;
        if running.is_empty() {
            return;
        }
        let left = pool.take_unreported();
        if !left.is_empty() {
            match self.release(&left).await {
                Ok(n) => info!(released = n, "released unfinished tasks at shutdown"),
                Err(e) => {
                    warn!(error = %e, "release tasks at shutdown; their visibility timeout will re-deliver them")
                }
            }
        }
        // Outcomes already on their way to the database: let them land.
        join_until(&mut running, Instant::now() + REPORT_GRACE).await;
    }
}

/// Whether keyed tasks of `pool` are buffered or running (their slots are
/// this node's to reuse once they end).
fn keyed_pending(buffer: &Prefetch, pool: &Pool) -> bool {
    pool.keyed_running.load(Ordering::Acquire) > 0 || buffer.keyed() > 0
}

/// The next tasks handed over by a submit; never, without a receiver.
async fn next_handoff(rx: &mut Option<UnboundedReceiver<Handoff>>) -> Option<Handoff> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The claim loop's state once it has started what it could and sent the
/// claim it may send.
#[derive(Debug, Clone, Copy)]
struct LoopState {
    /// Tasks in the prefetch buffer.
    buffered: usize,
    /// Free slots, read after starting tasks (a slot may have come free
    /// since a start found none).
    free: usize,
    /// Whether the queues may hold more than the last claim got.
    more: bool,
    /// Whether reports keep up (tasks in flight below the bound).
    keeping_up: bool,
    /// Whether any task of the pool is running or reporting.
    running: bool,
}

/// Which events the claim loop waits for (besides a claim's answer and
/// shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waits {
    /// A free slot: buffered tasks start, or a claim fills it.
    slot: bool,
    /// A notification that the queues got work.
    wake: bool,
    /// The poll interval, when nothing is buffered or expected.
    poll: bool,
    /// A task's end, while reports lag.
    reap: bool,
}

impl Waits {
    /// Buffered tasks always wait for a slot, whatever `free` read: a slot
    /// freed between a failed start and that read would otherwise be
    /// missed, and a pool whose last claim came back short (waiting for a
    /// notification) stalled with tasks in its buffer.
    fn of(s: LoopState) -> Waits {
        Waits {
            slot: s.free == 0 || s.buffered > 0,
            wake: !s.more,
            poll: !s.more && s.buffered == 0,
            reap: s.running && !s.keeping_up,
        }
    }
}

/// Joins tasks of `set` as they end, until it is empty or `deadline` passes.
async fn join_until(set: &mut JoinSet<()>, deadline: Instant) {
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, set.join_next()).await {
        reaped(r);
    }
}

/// A task that panicked outside its handler (handler panics are the
/// attempt's failure) is a bug: say so.
fn reaped(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            error!(error = %e, "an executor task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the loop, in state `s`, waits for something that comes
    /// without outside help: a slot (when tasks are buffered or running
    /// hold them), the poll interval, or a running task's end. A
    /// notification does not count (no more work may ever be submitted),
    /// nor does a claim (the caller sends one only in some states; see
    /// `sends_claim`).
    fn live(s: LoopState, w: Waits, sends_claim: bool) -> bool {
        let slot_comes = w.slot && (s.free > 0 || s.running);
        sends_claim || slot_comes || w.poll || (w.reap && s.running)
    }

    #[test]
    fn the_claim_loop_always_waits_for_something_that_comes() {
        for buffered in [0, 1, 300] {
            for free in [0, 1, 32] {
                for more in [false, true] {
                    for keeping_up in [false, true] {
                        for running in [false, true] {
                            let s = LoopState {
                                buffered,
                                free,
                                more,
                                keeping_up,
                                running,
                            };
                            // Slots are held, and reports lag, only by
                            // tasks of the pool (in flight = running).
                            if (free < 32 || !keeping_up) && !running {
                                continue;
                            }
                            let w = Waits::of(s);
                            // A claim goes out when more is expected, reports
                            // keep up, and the buffer wants tasks (here: it
                            // is empty and a slot is free).
                            let sends_claim = more && keeping_up && buffered == 0 && free > 0;
                            assert!(live(s, w, sends_claim), "{s:?} waits only for {w:?}");
                            if buffered > 0 {
                                assert!(w.slot, "{s:?}: buffered tasks wait for a slot");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_short_claim_with_a_slot_freed_late_still_starts_its_buffer() {
        // The stall seen in a burn-down: the last claim came back short
        // (more = false), a start found no slot, a slot came free before
        // `free` was read.
        let s = LoopState {
            buffered: 282,
            free: 1,
            more: false,
            keeping_up: true,
            running: true,
        };
        assert!(Waits::of(s).slot);
    }
}
