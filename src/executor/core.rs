//! The [`Executor`]: a node's worker pools, the listener that wakes them and
//! the finisher that reports outcomes; starting them, their status, the
//! shutdown drain and `kill`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::executor::finish::{self, Extender, Finisher};
use crate::executor::handlers::Registry;
use crate::executor::pool::Pool;
use crate::executor::settings::{ExecutorSettings, PoolStatus};
use crate::router::Router;

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

    /// Pool counters, in config order.
    /// The handlers this node runs beyond the built-ins (every pool runs
    /// every handler of the node's registry).
    pub fn advertised_handlers(&self) -> Vec<String> {
        advertised(&self.registry)
    }

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
