//! The phases of a drill, in the order they run: preflight (and the claim
//! of the journal's one running slot), load warm-up, fence (or lose) the old
//! primary, wait until the target has replayed its last write, promote the
//! target, bump the epoch (compare-and-set), re-route every node, rejoin the
//! old primary, stop the load and verify. Each phase records itself in the
//! drill's [`Timeline`]; the report's names and order of phases come from
//! here. The journal row is written on the old primary up to the fence and
//! on the new one from the epoch bump on; in between nothing is written.
//! Hold points (dev builds, [`hold_point`]) sit between the phases.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use uuid::Uuid;

use super::control::ClusterControl;
use super::error::{failed, DrillError};
use super::exclusive::hold_point;
use super::journal::{self, Journal, Runner};
use super::load::{self, Attempted, LoadHandle, LoadSpec};
use super::reroute::wait_rerouted;
use super::timeline::{ms, Timeline};
use crate::api::tls::ClientTls;
use crate::api::wire::{DrillKind, DrillRequest, DrillState, OldPrimary};
use crate::model::token::Lsn;
use crate::router::Router;
use crate::store::{DrillRow, Store, WriteProbe};

/// How long the write attempted on the old primary may take before it
/// counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the drilling node may take to bump the epoch on the promoted
/// target and to find it as the primary.
const REDISCOVER_DEADLINE: Duration = Duration::from_secs(15);

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

/// What the new primary holds of the load's writes, and what a write at the
/// new epoch met on the old primary.
pub(super) struct Found {
    pub present: HashSet<String>,
    pub duplicates: u64,
    pub old_primary: OldPrimary,
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
        router.discover_primary().await.map_err(|e| {
            DrillError::Refused(format!(
                "no writable primary to move ({e:#}); if a drill was interrupted, run `swf drill recover`"
            ))
        })?;
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
        if let Some(c) = self.control {
            c.preflight(&from, &to)
                .await
                .map_err(|e| DrillError::Refused(format!("{e:#}")))?;
        }
        self.tl.mark("preflight");
        Ok(Plan {
            from,
            to,
            epoch_before,
            old,
            target,
        })
    }

    /// Refuses while a drill is unresolved anywhere in the cluster, runs the
    /// preflight and claims the journal's one running slot on the primary.
    /// A refusal or failure that a concurrent drill explains (it fenced the
    /// primary, ended our sessions, took the slot) is answered as
    /// [`DrillError::InProgress`].
    pub(super) async fn begin(
        &mut self,
        req: &DrillRequest,
        me: &Runner,
        id: Uuid,
    ) -> Result<(Plan, Journal), DrillError> {
        if let Some(d) = journal::unresolved(self.router).await.first() {
            return Err(journal::in_progress(d));
        }
        let claimed = async {
            let plan = self.preflight(req).await?;
            let j = claim_journal(
                req.kind,
                &plan.from,
                &plan.to,
                plan.epoch_before,
                &plan.old,
                me,
                id,
            )
            .await?;
            Ok((plan, j))
        }
        .await;
        explained(self.router, claimed).await
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

    /// Moves the write region to the target and returns the new epoch. The
    /// last journal write on the old primary comes first; then the fence (or
    /// loss), promotion and the compare-and-set epoch bump. If the move
    /// fails once the old primary may be fenced, it is unfenced again only
    /// when the target is verified still a replica; otherwise it stays
    /// fenced (never two writable primaries) and the error says to run
    /// `swf drill recover`.
    pub(super) async fn move_primary(
        &mut self,
        plan: &Plan,
        kind: DrillKind,
        j: &mut Journal,
    ) -> Result<u64, DrillError> {
        j.phase(&plan.old, plan.epoch_before, "fence").await;
        let moved = async {
            match kind {
                DrillKind::Switchover => {
                    let last = self.fence(plan).await?;
                    self.stop_old(plan).await?;
                    if let Some(last) = last {
                        self.catch_up(plan, last).await?;
                    }
                }
                DrillKind::Failover => self.lose_old(plan).await?,
                DrillKind::Partition => {
                    return Err(DrillError::Refused(
                        "a partition drill does not move the write region".into(),
                    ))
                }
            }
            hold_point("fenced").await;
            self.promote(plan).await?;
            hold_point("promoted").await;
            self.bump(plan).await
        }
        .await;
        match moved {
            Ok(epoch) => Ok(epoch),
            Err(e) => Err(self.abort(plan, kind, j, e).await),
        }
    }

    /// After a failed move, which may have fenced (or lost) the old primary
    /// whatever step failed: unfences it only when the target answers that
    /// it is in recovery (unfencing a primary never fenced changes nothing).
    async fn abort(
        &mut self,
        plan: &Plan,
        kind: DrillKind,
        j: &mut Journal,
        e: DrillError,
    ) -> DrillError {
        let target = tokio::time::timeout(PROBE_TIMEOUT, plan.target.inspect()).await;
        let why = match target {
            Ok(Ok(t)) if t.in_recovery => None,
            Ok(Ok(_)) => Some(format!(
                "the target `{}` is out of recovery (promoted)",
                plan.to
            )),
            Ok(Err(err)) => Some(format!(
                "the target `{}` cannot be checked ({err})",
                plan.to
            )),
            Err(_) => Some(format!("the target `{}` does not answer", plan.to)),
        };
        if let Some(why) = why {
            tracing::error!(region = %plan.from, error = %e, "drill aborted; the old primary stays fenced: {why}");
            return DrillError::Failed(format!(
                "{e}; the old primary `{}` stays fenced because {why}: run `swf drill recover`",
                plan.from
            ));
        }
        if kind == DrillKind::Failover {
            return DrillError::Failed(format!(
                "{e}; the old primary `{}` was stopped (or was being stopped) and the target `{}` \
                 is still a replica: start the old primary again, then run `swf drill recover`",
                plan.from, plan.to
            ));
        }
        match plan.old.unfence().await {
            Ok(()) => {
                tracing::warn!(region = %plan.from, "drill aborted: the target is still a replica, the old primary is unfenced");
                j.finish(
                    &plan.old,
                    plan.epoch_before,
                    DrillState::Failed,
                    error_report(&e),
                )
                .await;
                DrillError::Failed(format!(
                    "{e}; the target is still a replica, so the old primary `{}` is unfenced",
                    plan.from
                ))
            }
            Err(err) => {
                tracing::error!(region = %plan.from, error = %err, "drill aborted and the old primary could not be unfenced");
                DrillError::Failed(format!(
                    "{e}; the old primary `{}` could not be unfenced ({err}): run `swf drill recover`",
                    plan.from
                ))
            }
        }
    }

    /// Fences the old primary (by the control's hook, else with SQL) and
    /// returns the last WAL position it will ever have, read after a hook's
    /// fence too where it is still reachable.
    async fn fence(&mut self, plan: &Plan) -> Result<Option<Lsn>, DrillError> {
        let hooked = match self.control {
            Some(c) => c.fence(&plan.from, &plan.to).await.map_err(failed)?,
            None => false,
        };
        let last = if hooked {
            plan.old.position().await.ok().map(|(_, _, l)| l)
        } else {
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

    /// Promotes the target: by the control's hook, then waits until it is
    /// out of recovery; else `pg_promote()`.
    async fn promote(&mut self, plan: &Plan) -> Result<(), DrillError> {
        let hooked = match self.control {
            Some(c) => c.promote(&plan.from, &plan.to).await.map_err(failed)?,
            None => false,
        };
        if hooked {
            let who = self
                .control
                .and_then(|c| c.manager())
                .unwrap_or("drills.promote_command");
            wait_out_of_recovery(&plan.target, who).await?;
        } else {
            plan.target.promote().await.map_err(failed)?;
        }
        self.tl.mark("promote target");
        Ok(())
    }

    /// Bumps the epoch on the promoted target, compare-and-set from the
    /// epoch the drill started at; a lost compare fails the drill.
    async fn bump(&mut self, plan: &Plan) -> Result<u64, DrillError> {
        // A compare-and-set, so trying again after a transient error (a
        // busy pool, a dropped connection) is safe: a bump that committed
        // unanswered shows as the epoch already at the target below.
        let until = Instant::now() + REDISCOVER_DEADLINE;
        let mut retried = false;
        let bumped = loop {
            match plan.target.bump_epoch(&plan.to, plan.epoch_before).await {
                Err(e) if e.is_transient() && Instant::now() < until => {
                    retried = true;
                    tracing::info!(error = %e, "bump the epoch: trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other.map_err(failed)?,
            }
        };
        let Some(epoch) = bumped else {
            // An HA manager's promotion callback may have bumped it for this
            // very promotion (or an attempt above committed unanswered):
            // once, to the target.
            if let Ok((e, Some(region))) = plan.target.epoch_region().await {
                if e == plan.epoch_before + 1 && region == plan.to {
                    self.tl.mark(if retried {
                        "bump epoch"
                    } else {
                        "bump epoch (by the HA manager's callback)"
                    });
                    return Ok(e);
                }
            }
            let now = plan.target.role().await.map(|(e, _)| e.to_string());
            return Err(DrillError::Failed(format!(
                "the epoch moved under the drill: expected {} on the target, found {}; \
                 another drill or a recovery bumped it",
                plan.epoch_before,
                now.unwrap_or_else(|e| format!("nothing readable ({e})"))
            )));
        };
        self.tl.mark("bump epoch");
        Ok(epoch)
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
        // The target is promoted and carries the new epoch: a probe that
        // misses its deadline (a new connection to a busy server) is tried
        // again rather than failing a drill that has already moved.
        let last = std::sync::Mutex::new(None);
        let found = crate::wait::until(REDISCOVER_DEADLINE, Duration::from_millis(100), || async {
            let why = match router.discover_primary().await {
                Ok(()) if router.write_region() == plan.to => return Some(()),
                Ok(()) => format!("found {} as the primary", router.write_region()),
                Err(e) => e.to_string(),
            };
            *last.lock().expect("last lock") = Some(why);
            None
        })
        .await;
        if found.is_err() {
            return Err(DrillError::Failed(format!(
                "this node did not find the new primary `{}` within {} s: {}",
                plan.to,
                REDISCOVER_DEADLINE.as_secs(),
                last.into_inner().expect("last lock").unwrap_or_default()
            )));
        }
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
    pub(super) async fn rejoin(
        &mut self,
        plan: &Plan,
        j: &mut Journal,
        epoch: u64,
    ) -> Result<(), DrillError> {
        if let Some(c) = self.control {
            j.phase(&plan.target, epoch, "rejoin").await;
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
    /// one attempt stored twice, and attempts a write at the new epoch on
    /// the old primary.
    pub(super) async fn verify(
        &mut self,
        plan: &Plan,
        attempts: &[Attempted],
        label: &str,
        epoch_after: u64,
    ) -> Result<Found, DrillError> {
        let (present, duplicates) = self.found(attempts, label).await?;
        let old_primary = old_primary(&plan.old, epoch_after).await;
        self.tl.mark("verify");
        Ok(Found {
            present,
            duplicates,
            old_primary,
        })
    }

    /// The load's acknowledged runs the (new) primary holds, and how many
    /// runs of one attempt it holds twice.
    pub(super) async fn found(
        &self,
        attempts: &[Attempted],
        label: &str,
    ) -> Result<(HashSet<String>, u64), DrillError> {
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
        Ok((present, duplicates))
    }
}

/// Claims the journal's one running slot on the primary `db` for drill `id`.
pub(super) async fn claim_journal(
    kind: DrillKind,
    from: &str,
    to: &str,
    epoch: u64,
    db: &Store,
    me: &Runner,
    id: Uuid,
) -> Result<Journal, DrillError> {
    let now = chrono::Utc::now();
    let j = Journal::new(DrillRow {
        id,
        kind: kind.as_str().to_string(),
        from_region: from.to_string(),
        to_region: to.to_string(),
        state: DrillState::Running.as_str().to_string(),
        node_id: me.node_id.clone(),
        node_url: Some(me.node_url.clone()),
        phase: "preflight".into(),
        epoch_before: epoch as i64,
        started_at: now,
        updated_at: now,
        finished_at: None,
        report: None,
    });
    j.claim(db, epoch).await?;
    Ok(j)
}

/// A refusal or failure of a drill's start that a concurrent drill explains
/// (it fenced the primary, ended our sessions, took the slot) is answered as
/// [`DrillError::InProgress`].
pub(super) async fn explained<T>(
    router: &Router,
    claimed: Result<T, DrillError>,
) -> Result<T, DrillError> {
    match claimed {
        Err(e @ (DrillError::Refused(_) | DrillError::Failed(_))) => {
            // A concurrent drill explains it better than its symptom.
            match journal::unresolved(router).await.first() {
                Some(d) => Err(journal::in_progress(d)),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// What a write at `epoch` (one that changes nothing) meets on the old
/// primary: refused as fenced, replica or stale epoch; accepted; or no
/// answer (unreachable, which is not fenced).
///
/// An error is tried again until [`PROBE_TIMEOUT`]: a connection pooled
/// before the old primary was stopped or restarted fails once, and a
/// server an HA manager has just restarted may still refuse connections.
async fn old_primary(old: &Store, epoch: u64) -> OldPrimary {
    let answer = crate::wait::until(PROBE_TIMEOUT, Duration::from_millis(200), || async {
        match tokio::time::timeout(Duration::from_secs(2), old.write_probe(epoch)).await {
            Ok(Ok(probe)) => Some(probe),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "the old primary did not answer the write probe; trying again");
                None
            }
            Err(_) => None,
        }
    })
    .await;
    match answer {
        Ok(WriteProbe::ReadOnly) => OldPrimary::Fenced,
        Ok(WriteProbe::InRecovery) => OldPrimary::Replica,
        Ok(WriteProbe::StaleEpoch) => OldPrimary::StaleEpoch,
        Ok(WriteProbe::Writable) => OldPrimary::Writable,
        Err(_) => {
            tracing::warn!(
                "the old primary did not answer the write probe within {PROBE_TIMEOUT:?}"
            );
            OldPrimary::Unreachable
        }
    }
}

/// The journal's report of a drill that ended in an error.
pub(super) fn error_report(e: &DrillError) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string() })
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
async fn wait_out_of_recovery(target: &Store, who: &str) -> Result<(), DrillError> {
    crate::wait::until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { matches!(target.position().await, Ok((false, _, _))).then_some(()) },
    )
    .await
    .map_err(|_| {
        DrillError::Failed(format!(
            "{who} was asked to promote the target, which is still in recovery after 60 s"
        ))
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
