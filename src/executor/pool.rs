//! One worker pool: its slots, wakeup, counters and the tasks it runs.
//!
//! Every running task has an entry in the pool's in-flight map with a flag
//! that decides who owns its outcome: the task (once its handler is done,
//! it reports) or the shutdown drain (it aborts and releases the task).
//! Whoever sets the flag first owns it, so a task is never both reported
//! and released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::executor::settings::{PoolSpec, PoolStatus};
use crate::model::workflow::mq_name;
use crate::store::{AttemptRef, ClaimedTask};

/// Tasks a submit claimed for the pool, with the claim's send time.
pub(super) type Handoff = (Vec<ClaimedTask>, Instant);

pub(super) struct Pool {
    pub(super) spec: PoolSpec,
    /// The pgmq queues it claims from, region-pinned first.
    pub(super) mqs: Vec<String>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) wake: Notify,
    /// A keyed task's handler ended (its slot may be reused: see
    /// `Executor::key_slot_ended`).
    pub(super) key_ended: Notify,
    /// Keyed tasks started and whose handlers have not ended (counted from
    /// their start, before their first poll).
    pub(super) keyed_running: AtomicUsize,
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    /// How many tasks a submit may claim for the pool now through its
    /// queues, and how many it may start of the plain runs it stores (see
    /// `handoff.rs`).
    pub(super) offer: AtomicUsize,
    pub(super) start_offer: AtomicUsize,
    /// Tasks claimed by submits, to the claim loop.
    pub(super) handoff: mpsc::UnboundedSender<Handoff>,
    handoff_rx: Mutex<Option<mpsc::UnboundedReceiver<Handoff>>>,
    in_flight: Mutex<HashMap<AttemptRef, InFlight>>,
}

/// A running task: its abort handle and who owns its outcome.
struct InFlight {
    abort: AbortHandle,
    owned: Arc<AtomicBool>,
}

impl Pool {
    pub(super) fn new(spec: &PoolSpec, region: &str) -> Pool {
        let (handoff, handoff_rx) = mpsc::unbounded_channel();
        Pool {
            // Region-pinned variant first, so pinned work is not starved.
            mqs: vec![
                mq_name(&spec.queue, Some(region)),
                mq_name(&spec.queue, None),
            ],
            spec: spec.clone(),
            slots: Arc::new(Semaphore::new(spec.size)),
            wake: Notify::new(),
            key_ended: Notify::new(),
            keyed_running: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            offer: AtomicUsize::new(0),
            start_offer: AtomicUsize::new(0),
            handoff,
            handoff_rx: Mutex::new(Some(handoff_rx)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The receiving end of the hand-offs, for the pool's one claim loop.
    pub(super) fn take_handoffs(&self) -> Option<mpsc::UnboundedReceiver<Handoff>> {
        self.handoff_rx.lock().expect("handoff lock").take()
    }

    pub(super) fn status(&self) -> PoolStatus {
        PoolStatus {
            name: self.spec.name.clone(),
            queue: self.spec.queue.clone(),
            size: self.spec.size,
            busy: self.spec.size - self.slots.available_permits(),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Registers a running task. `start` spawns it and returns its abort
    /// handle; it runs under the map's lock, so the task's own removal
    /// (when it ends) cannot come before this insert.
    pub(super) fn track(
        &self,
        a: AttemptRef,
        owned: Arc<AtomicBool>,
        start: impl FnOnce() -> AbortHandle,
    ) {
        let mut map = self.in_flight.lock().expect("in_flight lock");
        let abort = start();
        map.insert(a, InFlight { abort, owned });
    }

    /// Tasks started and not yet ended (running or reporting).
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("in_flight lock").len()
    }

    /// The task of `a` ended.
    pub(super) fn untrack(&self, a: &AttemptRef) {
        self.in_flight.lock().expect("in_flight lock").remove(a);
    }

    /// Shutdown: takes every task whose outcome is not being reported yet,
    /// aborts it and returns its attempt (to be released).
    pub(super) fn take_unreported(&self) -> Vec<AttemptRef> {
        let mut map = self.in_flight.lock().expect("in_flight lock");
        let taken: Vec<AttemptRef> = map
            .iter()
            .filter(|(_, f)| !f.owned.swap(true, Ordering::SeqCst))
            .map(|(a, _)| a.clone())
            .collect();
        for a in &taken {
            if let Some(f) = map.remove(a) {
                f.abort.abort();
            }
        }
        taken
    }

    /// Aborts every task (a crash: nothing is released).
    pub(super) fn abort_all(&self) {
        for (_, f) in self.in_flight.lock().expect("in_flight lock").drain() {
            f.abort.abort();
        }
    }
}
