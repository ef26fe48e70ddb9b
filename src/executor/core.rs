//! The [`Executor`]: a node's worker pools, the listener that wakes them and
//! the finisher that reports outcomes; starting them, their status, the
//! shutdown drain and `kill`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::executor::finish::{self, Extender, Finisher};
use crate::executor::handlers::Registry;
use crate::executor::pool::Pool;
use crate::executor::settings::{ExecutorSettings, PoolStatus};
use crate::router::Router;
use crate::store::AttemptRef;

/// At most this many ended attempts are named in one claim (more is
/// unusual: a key's slots are few; leaving some out only makes the claim
/// see their slots as taken).
const MAX_ENDED_NAMED: usize = 1000;

/// Shared state of a node's executor.
pub struct Executor {
    pub(super) settings: ExecutorSettings,
    pub(super) router: Arc<Router>,
    pub(super) registry: Registry,
    pub(super) pools: Vec<Arc<Pool>>,
    pub(super) finisher: Finisher,
    /// Lease extensions of running tasks, batched per node.
    pub(super) extender: Extender,
    /// The handlers this node runs beyond the built-ins, as claims take
    /// them (`,` then the names): claims leave other handlers' tasks.
    pub(super) claim_handlers: String,
    /// Keyed attempts of this node whose handlers have ended and whose
    /// outcomes are not recorded yet: claims take their slots (see
    /// [`crate::store::Store::claim_tasks_reusing`]).
    ended_keyed: Mutex<HashSet<AttemptRef>>,
    /// Claim loops still running (each drains its pool before it ends);
    /// [`Executor::drain`] waits for it to reach zero.
    claiming: watch::Sender<usize>,
}

/// The handlers of `registry` beyond the built-ins, sorted.
fn advertised(registry: &Registry) -> Vec<String> {
    registry
        .handler_names()
        .into_iter()
        .filter(|h| !Registry::is_builtin(h))
        .collect()
}

/// Counts a claim loop out when its task ends, however it ends.
struct ClaimingGuard(Arc<Executor>);
impl Drop for ClaimingGuard {
    fn drop(&mut self) {
        self.0.claiming.send_modify(|n| *n -= 1);
    }
}

impl Executor {
    /// Starts the pools, the listener and the finisher; their tasks join
    /// `tasks` (the node's supervised set).
    pub fn start(
        router: Arc<Router>,
        registry: Registry,
        settings: ExecutorSettings,
        shutdown: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Arc<Executor> {
        let pools = settings
            .pools
            .iter()
            .map(|p| Arc::new(Pool::new(p, &settings.region)))
            .collect::<Vec<_>>();
        let finisher = finish::start(router.clone(), settings.leases, tasks);
        let extender = finish::start_extender(router.clone(), settings.leases, tasks);
        let claim_handlers = format!(",{}", advertised(&registry).join(","));
        let ex = Arc::new(Executor {
            settings,
            router,
            registry,
            pools,
            finisher,
            extender,
            claim_handlers,
            ended_keyed: Mutex::new(HashSet::new()),
            claiming: watch::Sender::new(0),
        });
        // Fired once the queues exist (a one-shot latch).
        let ready = CancellationToken::new();
        {
            let ex = ex.clone();
            let shutdown = shutdown.clone();
            let ready = ready.clone();
            tasks.spawn(async move { ex.listen_loop(shutdown, ready).await }.in_current_span());
        }
        for pool in ex.pools.clone() {
            ex.claiming.send_modify(|n| *n += 1);
            let guard = ClaimingGuard(ex.clone());
            let shutdown = shutdown.clone();
            let ready = ready.clone();
            tasks.spawn(
                async move {
                    let ex = guard.0.clone();
                    // Claim only once the queues exist (the listener creates them).
                    tokio::select! {
                        _ = ready.cancelled() => ex.claim_loop(pool, shutdown).await,
                        _ = shutdown.cancelled() => {}
                    }
                    drop(guard);
                }
                .in_current_span(),
            );
        }
        ex
    }

    /// The handler of keyed attempt `a` ended: until the guard drops (its
    /// outcome recorded, or given up), the node's claims may give its slot
    /// to another task.
    pub(super) fn key_slot_ended(&self, a: &AttemptRef) -> EndedSlot<'_> {
        self.ended_keyed
            .lock()
            .expect("ended_keyed lock")
            .insert(a.clone());
        EndedSlot {
            ex: self,
            a: a.clone(),
        }
    }

    /// The ended keyed attempts a claim names now.
    pub(super) fn ended_names(&self) -> Vec<String> {
        let set = self.ended_keyed.lock().expect("ended_keyed lock");
        set.iter()
            .take(MAX_ENDED_NAMED)
            .map(AttemptRef::ended_name)
            .collect()
    }

    /// The handlers this node runs beyond the built-ins (every pool runs
    /// every handler of the node's registry).
    pub fn advertised_handlers(&self) -> Vec<String> {
        advertised(&self.registry)
    }

    /// Pool counters, in config order.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools.iter().map(|p| p.status()).collect()
    }

    /// At shutdown, after cancelling: waits until every claim loop has
    /// stopped and drained its pool (in-flight tasks finished until the
    /// grace deadline, the rest released, outcomes being reported landed),
    /// then closes the finisher so its task ends. Waits on the loops'
    /// completion, never polls.
    pub async fn drain(&self) {
        let mut left = self.claiming.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = left.wait_for(|n| *n == 0).await;
        self.finisher.close();
        self.extender.close();
    }

    /// Drops every in-flight task without telling the database (a crash).
    pub fn kill(&self) {
        for p in &self.pools {
            p.abort_all();
        }
    }
}

/// A keyed attempt whose handler ended, named by claims while it lives.
pub(super) struct EndedSlot<'a> {
    ex: &'a Executor,
    a: AttemptRef,
}

impl Drop for EndedSlot<'_> {
    fn drop(&mut self) {
        self.ex
            .ended_keyed
            .lock()
            .expect("ended_keyed lock")
            .remove(&self.a);
    }
}
