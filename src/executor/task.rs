//! Running one claimed task: it takes a pool slot, runs in the claim loop's
//! `JoinSet`, calls its handler under the step timeout (a panic is the
//! attempt's failure), and reports the outcome unless the shutdown drain
//! took it first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use crate::executor::core::Executor;
use crate::executor::handlers::{HandlerError, TaskContext};
use crate::executor::pool::Pool;
use crate::store::{AttemptRef, ClaimedTask, Finish, FinishResult};

impl Executor {
    /// Starts a claimed task in `running` (the claim loop's set).
    pub(super) fn spawn_task(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        running: &mut JoinSet<()>,
        t: ClaimedTask,
    ) {
        let Ok(permit) = pool.slots.clone().try_acquire_owned() else {
            // Cannot happen: only the claim loop takes slots, and it asked for
            // no more than were free. Let the visibility timeout re-deliver.
            warn!(run_id = %t.run_id, step_id = %t.step_id, "no free slot for a claimed task");
            return;
        };
        let a = t.attempt_ref();
        let owned = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("task", run_id = %t.run_id, step_id = %t.step_id,
                                       attempt = t.attempt, pool = %pool.spec.name);
        let job = self
            .clone()
            .run_task(pool.clone(), t, owned.clone(), permit)
            .instrument(span);
        pool.track(a, owned, || running.spawn(job));
    }

    async fn run_task(
        self: Arc<Self>,
        pool: Arc<Pool>,
        t: ClaimedTask,
        owned: Arc<AtomicBool>,
        permit: OwnedSemaphorePermit,
    ) {
        let a = t.attempt_ref();
        let finish = self.run_handler(&a, t).await;
        // The drain may have taken the task (to release it) meanwhile.
        if !owned.swap(true, Ordering::SeqCst) {
            if let Some(finish) = finish {
                self.report(&pool, &a, finish).await;
            }
        }
        pool.untrack(&a);
        drop(permit);
    }

    /// Runs one handler under its timeout, extending the lease while it runs.
    /// None: the attempt stopped being current (cancelled or re-claimed).
    async fn run_handler(&self, a: &AttemptRef, t: ClaimedTask) -> Option<Finish> {
        let Some(handler) = self.registry.handler(&t.handler) else {
            return Some(Finish::Failed {
                error: json!({"message": format!("handler `{}` is not registered on node {}",
                                                  t.handler, self.settings.node_id)}),
                timed_out: false,
            });
        };
        let ctx = TaskContext {
            run_id: t.run_id,
            step_id: t.step_id.clone(),
            attempt: t.attempt,
            input: t.input,
        };
        let timeout = Duration::from_millis(t.timeout_ms.max(1) as u64);
        // The handler runs inside this task: dropping the task (abort, kill)
        // drops the handler with it.
        let job = std::panic::AssertUnwindSafe(handler.call(ctx)).catch_unwind();
        let needs_extension = t.timeout_ms as u64 > self.settings.leases.lease_ms as u64;
        tokio::select! {
            r = tokio::time::timeout(timeout, job) => Some(match r {
                Ok(Ok(Ok(output))) => Finish::Completed(output),
                Ok(Ok(Err(HandlerError(error)))) => Finish::Failed { error, timed_out: false },
                Ok(Err(panic)) => Finish::Failed {
                    error: json!({"message": format!("handler panicked: {}", panic_text(&panic))}),
                    timed_out: false,
                },
                Err(_) => Finish::Failed {
                    error: json!({"message": format!("timed out after {} ms", t.timeout_ms)}),
                    timed_out: true,
                },
            }),
            () = self.keep_leased(a), if needs_extension => None,
        }
    }
    /// Reports one task's outcome and counts it.
    async fn report(&self, pool: &Pool, a: &AttemptRef, finish: Finish) {
        let finish = finish.sanitized();
        let failed = matches!(finish, Finish::Failed { .. });
        match self.finisher.call((a.clone(), finish)).await {
            Ok(Ok(FinishResult::Stale)) => {
                debug!(run_id = %a.run_id, step_id = %a.step_id, attempt = a.attempt,
                       "completion refused: attempt is stale");
            }
            Ok(Ok(_)) => {
                // This node saw the run change: its cached reads are old.
                self.router.cache().invalidate(a.run_id).await;
                let (counter, name) = if failed {
                    (&pool.failed, "swf_tasks_failed_total")
                } else {
                    (&pool.completed, "swf_tasks_completed_total")
                };
                counter.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(name, "pool" => pool.spec.name.clone()).increment(1);
            }
            Ok(Err(e)) => {
                warn!(run_id = %a.run_id, step_id = %a.step_id, error = %e.message,
                      "report task outcome; the visibility timeout will re-deliver it");
            }
            Err(_) => {}
        }
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
