//! Running one claimed task: it takes a pool slot, runs in the claim loop's
//! `JoinSet`, calls its handler under the step timeout (a panic is the
//! attempt's failure), and reports the outcome unless the shutdown drain
//! took it first.
//!
//! Outputs are serialized once, here: one over `limits.max_output_bytes`
//! fails the attempt with `output_too_large` instead (not retried), and an
//! error that large is cut down, so no handler writes more than that to the
//! database. A report that fails on the write path is retried, with the
//! lease kept extended, until the lease would end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

use crate::api::wire::TaskErrorCode;
use crate::executor::core::Executor;
use crate::executor::handlers::{HandlerError, TaskContext};
use crate::executor::lease::{Lease, LeaseLost};
use crate::executor::pool::Pool;
use crate::store::{AttemptRef, ClaimedTask, Finish, FinishResult};

/// First and longest pause between attempts to report an outcome.
const REPORT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How much of an oversized error is kept in its replacement.
const ERROR_EXCERPT_CHARS: usize = 1024;

impl Executor {
    /// Starts a claimed task in `running` (the claim loop's set); its
    /// claim was sent at `sent`.
    pub(super) fn spawn_task(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        running: &mut JoinSet<()>,
        t: ClaimedTask,
        sent: Instant,
        permit: OwnedSemaphorePermit,
    ) {
        let a = t.attempt_ref();
        // Counted from here, not from the task's first poll: the claim
        // loop must not see a keyed task started but not yet running.
        let keyed = t
            .concurrency_key
            .is_some()
            .then(|| KeyedRunning::new(pool.clone()));
        let owned = Arc::new(AtomicBool::new(false));
        let lease = Lease::new(sent, t.timeout_ms, self.settings.leases);
        let span = tracing::info_span!("task", run_id = %t.run_id, step_id = %t.step_id,
                                       attempt = t.attempt, pool = %pool.spec.name);
        let job = self
            .clone()
            .run_task(pool.clone(), t, lease, owned.clone(), (permit, keyed))
            .instrument(span);
        pool.track(a, owned, || running.spawn(job));
    }

    async fn run_task(
        self: Arc<Self>,
        pool: Arc<Pool>,
        t: ClaimedTask,
        lease: Lease,
        owned: Arc<AtomicBool>,
        (permit, running): (OwnedSemaphorePermit, Option<KeyedRunning>),
    ) {
        let a = t.attempt_ref();
        let keyed = running.is_some();
        let finish = self.run_handler(&a, t, &lease).await;
        // The slot bounds handlers, not reports: the next task may start
        // while this outcome waits for its batch.
        drop(permit);
        // The drain may have taken the task (to release it) meanwhile.
        let reporting = !owned.swap(true, Ordering::SeqCst) && finish.is_some();
        // So does a concurrency key's slot, for this node's claims, until
        // the outcome is recorded: named before the task stops counting as
        // running, so the claim loop never sees it as neither.
        let _ended = (keyed && reporting).then(|| self.key_slot_ended(&a));
        drop(running);
        if keyed {
            pool.key_ended.notify_one();
        }
        if let (true, Some(finish)) = (reporting, finish) {
            self.report(&pool, &a, finish, &lease).await;
        }
        pool.untrack(&a);
    }

    /// Runs one handler under its timeout, extending the lease while it runs.
    /// None: the attempt stopped being current (cancelled or re-claimed).
    async fn run_handler(&self, a: &AttemptRef, t: ClaimedTask, lease: &Lease) -> Option<Finish> {
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
                Ok(Ok(Ok(output))) => self.completion(&t.step_id, output),
                Ok(Ok(Err(HandlerError { error, retry: true }))) => Finish::Failed {
                    error: self.bounded_error(&t.step_id, error),
                    timed_out: false,
                },
                Ok(Ok(Err(HandlerError { error, retry: false }))) => Finish::Fatal {
                    error: self.bounded_error(&t.step_id, error),
                },
                Ok(Err(panic)) => Finish::Failed {
                    error: json!({"message": format!("handler panicked: {}", panic_text(&panic))}),
                    timed_out: false,
                },
                Err(_) => Finish::Failed {
                    error: json!({"message": format!("timed out after {} ms", t.timeout_ms)}),
                    timed_out: true,
                },
            }),
            _ = self.keep_leased(a, lease, None), if needs_extension => None,
        }
    }

    /// A completion with `output`, serialized once; over
    /// `limits.max_output_bytes` it is a failure that is not retried.
    fn completion(&self, step_id: &str, output: Value) -> Finish {
        let done = Finish::completed(output);
        let (bytes, max) = (done.output_bytes(), self.settings.max_output_bytes);
        if bytes <= max {
            return done;
        }
        Finish::Fatal {
            error: json!({
                "code": TaskErrorCode::OutputTooLarge.as_str(),
                "message": format!(
                    "the output of step `{step_id}` is {bytes} bytes; the limit is {max} \
                     (limits.max_output_bytes)"
                ),
                "bytes": bytes,
            }),
        }
    }

    /// A handler's error as stored: one over `limits.max_output_bytes`
    /// (measured only on this, the failure path) is replaced by its start.
    fn bounded_error(&self, step_id: &str, error: Value) -> Value {
        let max = self.settings.max_output_bytes;
        let text = error.to_string();
        if text.len() <= max {
            return error;
        }
        let excerpt: String = text.chars().take(ERROR_EXCERPT_CHARS.min(max)).collect();
        json!({
            "message": format!(
                "the error of step `{step_id}` was {} bytes, over limits.max_output_bytes \
                 ({max}); it began: {excerpt}",
                text.len()
            ),
            "bytes": text.len(),
        })
    }
    /// Reports one task's outcome and counts it. A report that fails on the
    /// write path is tried again (with backoff) while the lease is kept
    /// extended, until the lease would end: then the task legitimately runs
    /// again elsewhere, and a late answer is refused as stale.
    async fn report(&self, pool: &Pool, a: &AttemptRef, finish: Finish, lease: &Lease) {
        let finish = Arc::new(finish.sanitized());
        let failed = !matches!(*finish, Finish::Completed(_));
        let reporting = async {
            let mut backoff = REPORT_BACKOFF_MIN;
            loop {
                match self.finisher.call((a.clone(), finish.clone())).await {
                    Ok(Ok(r)) => return Some(r),
                    Ok(Err(e)) if e.transient => {
                        let left = lease.until().saturating_duration_since(Instant::now());
                        if left <= backoff {
                            warn!(run_id = %a.run_id, step_id = %a.step_id, error = %e.message,
                                  "report task outcome: giving up as its lease ends; the task will run again");
                            return None;
                        }
                        warn!(run_id = %a.run_id, step_id = %a.step_id, error = %e.message,
                              retry_in_ms = backoff.as_millis() as u64,
                              lease_left_ms = left.as_millis() as u64,
                              "report task outcome failed; retrying while the lease lasts");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(REPORT_BACKOFF_MAX);
                    }
                    Ok(Err(e)) => {
                        warn!(run_id = %a.run_id, step_id = %a.step_id, error = %e.message,
                              "report task outcome refused; the visibility timeout will re-deliver it");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
        };
        let answer = tokio::select! {
            r = reporting => r,
            lost = self.keep_leased(a, lease, Some(Instant::now())) => {
                match lost {
                    LeaseLost::NotCurrent => {}
                    LeaseLost::Ended => warn!(run_id = %a.run_id, step_id = %a.step_id,
                        "report task outcome: its lease ended unanswered; the task will run again"),
                }
                None
            }
        };
        match answer {
            Some(FinishResult::Stale) => {
                debug!(run_id = %a.run_id, step_id = %a.step_id, attempt = a.attempt,
                       "completion refused: attempt is stale");
            }
            Some(_) => {
                // (The finisher invalidated this node's cached reads of the
                // run, once per batch.)
                let (counter, name) = if failed {
                    (&pool.failed, "swf_tasks_failed_total")
                } else {
                    (&pool.completed, "swf_tasks_completed_total")
                };
                counter.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(name, "pool" => pool.spec.name.clone()).increment(1);
            }
            None => {}
        }
    }
}

/// A keyed task started and its handler not ended, counted in its pool
/// while it lives.
struct KeyedRunning(Arc<Pool>);

impl KeyedRunning {
    fn new(pool: Arc<Pool>) -> KeyedRunning {
        pool.keyed_running.fetch_add(1, Ordering::AcqRel);
        KeyedRunning(pool)
    }
}

impl Drop for KeyedRunning {
    fn drop(&mut self) {
        self.0.keyed_running.fetch_sub(1, Ordering::AcqRel);
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
