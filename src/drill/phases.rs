//! The phases of a drill, in the order they run: preflight, load warm-up,
//! fence (or lose) the old primary, wait until the target has replayed its
//! last write, promote the target (out of recovery, epoch bumped), re-route
//! every node, rejoin the old primary, stop the load and verify. Each phase
//! records itself in the drill's [`Timeline`]; the report's names and
//! order of phases come from here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use uuid::Uuid;

use super::control::ClusterControl;
use super::error::{failed, DrillError};
use super::load::{self, Attempted, LoadHandle, LoadSpec};
use super::reroute::wait_rerouted;
use super::timeline::{ms, Timeline};
use crate::api::tls::ClientTls;
use crate::api::wire::{DrillKind, DrillRequest};
use crate::model::token::Lsn;
use crate::router::Router;
use crate::store::Store;

/// A drill in progress: what it acts through, and its timeline.
pub(super) struct Drill<'a> {
    pub router: &'a Router,
    pub control: Option<&'a dyn ClusterControl>,
    /// The caller's `Authorization` header, presented to every node.
    pub authorization: Option<HeaderValue>,
    pub tls: &'a ClientTls,
    pub tl: Timeline,
}

/// The regions a drill moves between, fixed by the preflight.
pub(super) struct Plan {
    pub from: String,
    pub to: String,
    pub epoch_before: u64,
    /// The old primary's database.
    pub old: Store,
    /// The target's database.
    pub target: Store,
}

/// The drill's load, if it runs one.
pub(super) struct Load {
    handle: Option<LoadHandle>,
    /// Put in every goal of the load, to find its runs again.
    pub label: String,
}

/// What the new primary holds of the load's writes, and whether the old
/// primary refuses writes at the new epoch.
pub(super) struct Found {
    pub present: HashSet<String>,
    pub duplicates: u64,
    pub old_primary_fenced: bool,
}

impl<'a> Drill<'a> {
    pub(super) fn new(
        router: &'a Router,
        control: Option<&'a dyn ClusterControl>,
        authorization: Option<HeaderValue>,
        tls: &'a ClientTls,
    ) -> Self {
        Drill {
            router,
            control,
            authorization,
            tls,
            tl: Timeline::new(),
        }
    }

    /// Refuses a request the drill cannot carry out, and a target that is
    /// not a healthy replica close behind the primary.
    pub(super) async fn preflight(&mut self, req: &DrillRequest) -> Result<Plan, DrillError> {
        let router = self.router;
        router.discover_primary().await.map_err(failed)?;
        let from = router.write_region();
        let epoch_before = router.epoch();
        let to = req.to.clone();
        let target = router
            .regions()
            .iter()
            .find(|r| r.name == to)
            .ok_or_else(|| DrillError::UnknownRegion(to.clone()))?
            .store
            .clone();
        if to == from {
            return Err(DrillError::Refused(format!(
                "region `{to}` is already the write region"
            )));
        }
        if req.kind == DrillKind::Failover && self.control.is_none() {
            return Err(DrillError::Refused(
                "a failover drill needs control of the databases (run it in `swf dev`)".into(),
            ));
        }
        if !(0.0..=10_000.0).contains(&req.load) {
            return Err(DrillError::Refused(
                "load must be between 0 and 10000 per second".into(),
            ));
        }
        let old = router.write_store();
        target_ready(&old, &target, &to, req.max_lag_ms).await?;
        self.tl.mark("preflight");
        Ok(Plan {
            from,
            to,
            epoch_before,
            old,
            target,
        })
    }

    /// Starts submitting `rate_per_s` workflows a second to `targets` (none
    /// at 0), and lets the load run for a second before the fault.
    pub(super) async fn start_load(&mut self, targets: Vec<String>, rate_per_s: f64) -> Load {
        let label = format!("{}", Uuid::new_v4().simple());
        let handle = (rate_per_s > 0.0).then(|| {
            LoadHandle::start(LoadSpec {
                targets,
                rate_per_s,
                // Longer than a node's own write retries (5 s), so a slow answer
                // is an answer rather than an indeterminate write.
                request_timeout: Duration::from_secs(8),
                label: label.clone(),
                authorization: self.authorization.clone(),
                tls: self.tls.clone(),
            })
        });
        if handle.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.tl.mark("load warm-up");
        }
        Load { handle, label }
    }

    /// Moves the write region to the target and returns the new epoch. If
    /// the move fails after this drill fenced the old primary with SQL but
    /// before a promotion, the fence is lifted again so the cluster is not
    /// left without a writable primary.
    pub(super) async fn move_primary(
        &mut self,
        plan: &Plan,
        kind: DrillKind,
    ) -> Result<u64, DrillError> {
        let mut fenced_here = false;
        let moved = async {
            match kind {
                DrillKind::Switchover => {
                    let last = self.fence(plan, &mut fenced_here).await?;
                    self.stop_old(plan).await?;
                    if let Some(last) = last {
                        self.catch_up(plan, last).await?;
                    }
                }
                DrillKind::Failover => self.lose_old(plan).await?,
            }
            self.promote(plan).await
        }
        .await;
        if moved.is_err() && fenced_here {
            match plan.old.unfence().await {
                Ok(()) => {
                    tracing::warn!(region = %plan.from, "drill aborted: the old primary is unfenced")
                }
                Err(e) => tracing::error!(region = %plan.from, error = %e,
                    "drill aborted and the old primary could not be unfenced"),
            }
        }
        moved
    }

    /// Fences the old primary (by the control's hook, else with SQL, which
    /// sets `fenced_here` first) and returns the last WAL position it will
    /// ever have, read after a hook's fence too where it is still reachable.
    async fn fence(
        &mut self,
        plan: &Plan,
        fenced_here: &mut bool,
    ) -> Result<Option<Lsn>, DrillError> {
        let hooked = match self.control {
            Some(c) => c.fence(&plan.from, &plan.to).await.map_err(failed)?,
            None => false,
        };
        let last = if hooked {
            plan.old.position().await.ok().map(|(_, _, l)| l)
        } else {
            *fenced_here = true;
            Some(plan.old.fence().await.map_err(failed)?)
        };
        self.tl.mark("fence old primary");
        Ok(last)
    }

    /// Stops the fenced old primary cleanly, where the drill controls it.
    async fn stop_old(&mut self, plan: &Plan) -> Result<(), DrillError> {
        if let Some(c) = self.control {
            c.stop(&plan.from).await.map_err(failed)?;
            self.tl.mark("stop old primary");
        }
        Ok(())
    }

    /// Waits until the target has replayed the old primary's last write.
    async fn catch_up(&mut self, plan: &Plan, last: Lsn) -> Result<(), DrillError> {
        wait_replayed(&plan.target, last).await?;
        self.tl.mark("target caught up");
        Ok(())
    }

    /// Stops the old primary at once, without waiting for the target.
    async fn lose_old(&mut self, plan: &Plan) -> Result<(), DrillError> {
        if let Some(c) = self.control {
            c.kill(&plan.from).await.map_err(failed)?;
        }
        self.tl.mark("lose old primary");
        Ok(())
    }

    /// Promotes the target (by the control's hook, then waits until it is
    /// out of recovery and bumps the epoch; else `pg_promote()` and the
    /// epoch bump in one) and returns the new epoch.
    async fn promote(&mut self, plan: &Plan) -> Result<u64, DrillError> {
        let hooked = match self.control {
            Some(c) => c.promote(&plan.from, &plan.to).await.map_err(failed)?,
            None => false,
        };
        let epoch_after = if hooked {
            wait_out_of_recovery(&plan.target).await?;
            plan.target.bump_epoch(&plan.to).await.map_err(failed)?
        } else {
            plan.target.promote(&plan.to).await.map_err(failed)?
        };
        self.tl.mark("promote target");
        Ok(epoch_after)
    }

    /// Points the router, the deployment and the other replicas at the new
    /// primary, then waits until every node in `nodes` reports it:
    /// `(re-routed, total)`.
    pub(super) async fn reroute(
        &mut self,
        plan: &Plan,
        epoch_after: u64,
        nodes: &[String],
    ) -> Result<(usize, usize), DrillError> {
        let router = self.router;
        router.observe_epoch(epoch_after);
        router.discover_primary().await.map_err(failed)?;
        if let Some(c) = self.control {
            c.promoted(&plan.to).await.map_err(failed)?;
            for r in router
                .regions()
                .iter()
                .filter(|r| r.name != plan.to && r.name != plan.from)
            {
                c.repoint(&r.name, &plan.to).await.map_err(failed)?;
            }
        }
        let done = wait_rerouted(
            nodes,
            &plan.to,
            epoch_after,
            self.authorization.as_ref(),
            self.tls,
        )
        .await;
        self.tl.mark("re-route nodes");
        Ok(done)
    }

    /// Makes the old primary a replica of the new one, where the drill
    /// controls the databases.
    pub(super) async fn rejoin(&mut self, plan: &Plan) -> Result<(), DrillError> {
        if let Some(c) = self.control {
            c.rejoin(&plan.from, &plan.to).await.map_err(failed)?;
            self.tl.mark("rejoin old primary as replica");
        }
        Ok(())
    }

    /// Lets the load run one more second on the new primary, then stops it:
    /// its attempts, and how long it had been running at `fault` (its first
    /// failure is measured from its own start).
    pub(super) async fn stop_load(
        &mut self,
        load: &mut Load,
        fault: Instant,
    ) -> (Vec<Attempted>, Option<u64>) {
        let fault_offset = load
            .handle
            .as_ref()
            .map(|l| ms(fault.saturating_duration_since(l.started_at())));
        let attempts = match load.handle.take() {
            Some(l) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                l.stop().await
            }
            None => Vec::new(),
        };
        self.tl.mark("stop load");
        (attempts, fault_offset)
    }

    /// Looks up every acknowledged write on the new primary, counts runs of
    /// one attempt stored twice, and checks that the old primary refuses a
    /// write at the new epoch.
    pub(super) async fn verify(
        &mut self,
        plan: &Plan,
        attempts: &[Attempted],
        label: &str,
        epoch_after: u64,
    ) -> Result<Found, DrillError> {
        let new_primary = self.router.write_store();
        let acked: Vec<Uuid> = attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                load::Outcome::Acked { run_id, .. } => run_id.parse().ok(),
                _ => None,
            })
            .collect();
        let present: HashSet<String> = new_primary
            .existing_runs(&acked)
            .await
            .map_err(failed)?
            .into_iter()
            .map(|u| u.to_string())
            .collect();
        let duplicates = new_primary
            .duplicate_goals(&load::goal_prefix(label))
            .await
            .map_err(failed)? as u64;
        let old_primary_fenced = plan.old.cancel_run(Uuid::nil(), epoch_after).await.is_err();
        self.tl.mark("verify");
        Ok(Found {
            present,
            duplicates,
            old_primary_fenced,
        })
    }
}

/// Refuses a target that is not a replica, or whose replay does not reach
/// the primary's current position within `max_lag_ms`.
async fn target_ready(
    old: &Store,
    target: &Store,
    to: &str,
    max_lag_ms: u64,
) -> Result<(), DrillError> {
    let (_, refuses_writes) = target
        .role()
        .await
        .map_err(|e| DrillError::Refused(format!("target region `{to}` is unreachable: {e}")))?;
    if !refuses_writes {
        return Err(DrillError::Refused(format!(
            "target region `{to}` is not a replica"
        )));
    }
    let (_, _, primary_lsn) = old
        .position()
        .await
        .map_err(|e| DrillError::Refused(format!("the current primary is unreachable: {e}")))?;
    // The target's last replay position, for the refusal.
    let replayed = AtomicU64::new(0);
    let replayed = &replayed;
    let caught_up = crate::wait::until(
        Duration::from_millis(max_lag_ms),
        Duration::from_millis(10),
        || async move {
            match target.position().await {
                Err(e) => Some(Err(failed(e))),
                Ok((_, _, at)) => {
                    replayed.store(at.0, Ordering::Relaxed);
                    (at >= primary_lsn).then_some(Ok(()))
                }
            }
        },
    )
    .await;
    caught_up.unwrap_or_else(|_| {
        Err(DrillError::Refused(format!(
            "target region `{to}` lags beyond {max_lag_ms} ms (replayed {}, primary at {primary_lsn})",
            Lsn(replayed.load(Ordering::Relaxed))
        )))
    })
}

/// Waits (60 s at most) until a target promoted by a hook has left recovery.
async fn wait_out_of_recovery(target: &Store) -> Result<(), DrillError> {
    crate::wait::until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { matches!(target.position().await, Ok((false, _, _))).then_some(()) },
    )
    .await
    .map_err(|_| {
        DrillError::Failed(
            "drills.promote_command ran but the target is still in recovery after 60 s".into(),
        )
    })
}

/// Waits (30 s at most) until the target has replayed up to `lsn`.
async fn wait_replayed(target: &Store, lsn: Lsn) -> Result<(), DrillError> {
    crate::wait::until(
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async {
            matches!(target.position().await, Ok((_, _, replayed)) if replayed >= lsn).then_some(())
        },
    )
    .await
    .map_err(|_| {
        DrillError::Failed(format!(
            "the target did not replay the old primary's last write ({lsn}) within 30 s"
        ))
    })
}
