//! The batch submit (`POST /v1/workflows/batch`): many workflows validated
//! as single submits are, then stored whole in one transaction (one
//! [`crate::store::Store::submit_runs`] call, not through the micro-batcher)
//! or not at all.
//!
//! Idempotency keys keep their meaning: a key the database already holds
//! answers with that run, as it is now; a key repeated within the batch is
//! stored once, by its first workflow, and the later ones answer with that
//! run (as a retry of it would).

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use super::{Client, ClientError, WRITE_RETRY};
use crate::model::token::Token;
use crate::model::workflow::WorkflowSpec;
use crate::store::{NewRun, StoreError};

/// How long one attempt to store a batch may take before the write path
/// counts as unavailable: a thousand runs take longer than one, and the
/// request's own limit (`limits.request_timeout_ms`) still bounds the call.
const BATCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// One run of a stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRun {
    pub run_id: Uuid,
    /// False when the idempotency key named a run stored before (by an
    /// earlier call, or by an earlier workflow of the same batch).
    pub created: bool,
    /// The run's status column: `running` for a new run, the existing
    /// run's status now otherwise.
    pub status: String,
}

/// What a stored batch returns: one [`BatchRun`] per workflow, in request
/// order, and the token of the one transaction.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub runs: Vec<BatchRun>,
    pub token: Token,
}

/// Why a batch was refused; nothing of it was stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct BatchError {
    /// The position of the first workflow refused, when one is to blame.
    pub index: Option<usize>,
    pub error: ClientError,
}

impl BatchError {
    fn whole(error: ClientError) -> BatchError {
        BatchError { index: None, error }
    }
}

impl Client {
    /// Validates every workflow, then stores them all in one transaction.
    /// The first invalid one refuses the batch, with its index and the
    /// words a single submit would use; so does the database's queue cap
    /// (`limits.max_queues`), naming the first workflow whose queues no
    /// longer fit. A 2xx-worthy answer means every run is committed on the
    /// primary.
    pub async fn submit_batch(&self, specs: Vec<WorkflowSpec>) -> Result<BatchOutcome, BatchError> {
        if specs.is_empty() {
            return Err(BatchError::whole(ClientError::InvalidRequest(
                "`workflows` must contain at least one workflow".into(),
            )));
        }
        let refs: Vec<&WorkflowSpec> = specs.iter().collect();
        let advertised = self
            .advertised_for(&refs)
            .await
            .map_err(BatchError::whole)?;
        let runs = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                self.plan(spec, advertised.as_ref())
                    .map_err(|error| BatchError {
                        index: Some(i),
                        error,
                    })
            })
            .collect::<Result<Vec<NewRun>, BatchError>>()?;
        // Which earlier workflow of the batch each one repeats the key of.
        let mut first_with_key: HashMap<&str, usize> = HashMap::new();
        let repeats: Vec<Option<usize>> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.idempotency_key.as_deref().and_then(|k| {
                    first_with_key.get(k).copied().or_else(|| {
                        first_with_key.insert(k, i);
                        None
                    })
                })
            })
            .collect();
        // The runs sent, and each one's position in the request.
        let (send, sent_at): (Vec<NewRun>, Vec<usize>) = runs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| repeats[*i].is_none())
            .map(|(i, r)| (r, i))
            .unzip();
        let max_queues = self.limits.max_queues;
        let stored = self
            .router
            .write_within(WRITE_RETRY, BATCH_ATTEMPT_TIMEOUT, |store, epoch| {
                let send = &send;
                async move { store.submit_runs(send, Some(max_queues), epoch).await }
            })
            .await;
        let (out, token) = match stored {
            Ok(x) => x,
            Err(StoreError::TooManyQueues(m)) => {
                let index = self.over_queue_cap(&send).await.map(|k| sent_at[k]);
                return Err(BatchError {
                    index,
                    error: ClientError::TooManyQueues(m),
                });
            }
            Err(e) => return Err(BatchError::whole(ClientError::from_write(e))),
        };
        self.router.observe_epoch(token.epoch);
        // Runs an idempotency key named: their status now, from the primary
        // (which has them: the write just saw them).
        let seen: Vec<Uuid> = out
            .iter()
            .filter(|s| !s.created)
            .map(|s| s.run_id)
            .collect();
        let now: HashMap<Uuid, String> = if seen.is_empty() {
            HashMap::new()
        } else {
            self.router
                .write_store()
                .run_statuses(&seen)
                .await
                .map_err(|e| BatchError::whole(ClientError::from_read(e)))?
                .into_iter()
                .collect()
        };
        let mut by_position: Vec<Option<BatchRun>> = vec![None; repeats.len()];
        for (s, &i) in out.iter().zip(&sent_at) {
            let status = match s.created {
                true => "running".to_string(),
                false => now
                    .get(&s.run_id)
                    .cloned()
                    .unwrap_or_else(|| "running".into()),
            };
            by_position[i] = Some(BatchRun {
                run_id: s.run_id,
                created: s.created,
                status,
            });
        }
        let mut answer: Vec<BatchRun> = Vec::with_capacity(by_position.len());
        for (i, run) in by_position.into_iter().enumerate() {
            let run = match (run, repeats[i]) {
                (Some(run), _) => run,
                // Its key's first workflow comes earlier: already answered.
                (None, Some(first)) => BatchRun {
                    created: false,
                    ..answer[first].clone()
                },
                (None, None) => {
                    return Err(BatchError::whole(ClientError::Internal(format!(
                        "submit_runs answered for {} of {} runs",
                        out.len(),
                        send.len()
                    ))))
                }
            };
            answer.push(run);
        }
        Ok(BatchOutcome {
            runs: answer,
            token,
        })
    }

    /// After the database refused `runs` for the queue cap: the position
    /// of the first run whose queues, added to those that exist and those
    /// of the runs before it, pass `limits.max_queues`. None when they fit
    /// now (queues changed since) or the queues cannot be read.
    async fn over_queue_cap(&self, runs: &[NewRun]) -> Option<usize> {
        let existing = self.router.write_store().queue_names().await.ok()?;
        over_cap(runs, existing, self.limits.max_queues)
    }
}

/// The pure part of [`Client::over_queue_cap`].
fn over_cap(runs: &[NewRun], existing: Vec<String>, max_queues: usize) -> Option<usize> {
    let mut queues: std::collections::HashSet<String> = existing.into_iter().collect();
    runs.iter().position(|r| {
        for s in &r.steps {
            if !queues.contains(&s.mq) {
                queues.insert(s.mq.clone());
            }
        }
        queues.len() > max_queues
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::workflow::{validate, Limits};

    fn run_on(queues: &[&str]) -> NewRun {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "goal": "g",
            "steps": queues.iter().enumerate()
                .map(|(i, q)| serde_json::json!({"id": format!("s{i}"), "handler": "noop", "queue": q}))
                .collect::<Vec<_>>(),
        }))
        .unwrap();
        NewRun {
            run_id: Uuid::now_v7(),
            goal: spec.goal.clone(),
            input: None,
            idempotency_key: None,
            decomposer: None,
            submitted_by: "n".into(),
            submitted_region: "r".into(),
            run_at: None,
            priority: 0,
            concurrency_key: None,
            concurrency_limit: None,
            steps: validate(&spec, &Limits::default(), |_, _| true, |_| true).unwrap(),
        }
    }

    #[test]
    fn the_first_run_past_the_queue_cap_is_named() {
        let have = || vec!["a".to_string(), "b".to_string()];
        let runs = [
            run_on(&["a", "b"]),
            run_on(&["c"]),
            run_on(&["a", "c"]),
            run_on(&["d"]),
        ];
        // (cap, expected position)
        let cases = [(2, Some(1)), (3, Some(3)), (4, None), (1, Some(0))];
        for (cap, want) in cases {
            assert_eq!(over_cap(&runs, have(), cap), want, "cap {cap}");
        }
        // Queues every run already uses never count twice.
        assert_eq!(over_cap(&runs[..1], have(), 2), None);
    }
}
