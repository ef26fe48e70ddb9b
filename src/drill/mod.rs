//! Failover drills: move the write region and measure what it cost.
//!
//! A switchover (planned) fences the old primary, waits until the target
//! has replayed the old primary's last write, promotes the target, bumps the
//! epoch and re-routes every node: zero loss. A failover (unplanned) stops
//! the old primary hard without waiting, then promotes: what the target had
//! not received is lost, and the drill says exactly which acknowledged
//! writes those were. Where the drill controls the databases (a
//! [`ClusterControl`], e.g. `swf dev`), the old primary then rejoins as a
//! replica of the new one.
//!
//! Measurement: an optional load submits workflows through every region's
//! client node during the drill ([`crate::drill::load`]); each acknowledged
//! run is then looked up on the new primary (present, lost, or
//! indeterminate when it never got an answer). RTO is the longest write
//! unavailability the load saw.

pub mod load;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::api::wire::{DrillKind, DrillReport, DrillRequest, Phase, SlowWrite};
use crate::config::DrillHooks;
use crate::drill::load::{LoadHandle, LoadSpec};
use crate::router::Router;
use crate::store::Store;

/// What a drill may do to the databases. `swf dev` implements it over the
/// PostgreSQL processes it runs; a production deployment would delegate to
/// its HA manager.
pub trait ClusterControl: Send + Sync {
    /// Stops a region's database at once (the simulated loss of the region).
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Stops a region's database cleanly.
    fn stop(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Makes `region`'s database a streaming replica of `primary`'s.
    fn rejoin(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Points a running replica at a new primary.
    fn repoint(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Records the new write region where the deployment keeps it.
    fn promoted(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Fences the old primary its own way; false: the drill fences with SQL.
    fn fence(&self, _from: &str, _to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// Promotes the target its own way; false: the drill calls `pg_promote()`.
    fn promote(&self, _from: &str, _to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
}

/// A [`ClusterControl`] that runs the node's `[drills]` hook commands (see
/// [`DrillHooks`]); steps without a command are left to the drill (fence,
/// promote) or to the HA manager (stop, repoint).
pub struct HookControl {
    hooks: DrillHooks,
    from_to: std::sync::Mutex<(String, String)>,
}

impl HookControl {
    pub fn new(hooks: DrillHooks) -> HookControl {
        HookControl {
            hooks,
            from_to: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Runs `cmd` with `sh -c` (60 s at most); Ok(false) when there is none.
    async fn run(&self, what: &str, cmd: &Option<String>, region: &str) -> anyhow::Result<bool> {
        let Some(cmd) = cmd else { return Ok(false) };
        let (from, to) = self.from_to.lock().expect("hook lock").clone();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("SWF_DRILL_REGION", region)
                .env("SWF_DRILL_FROM", from)
                .env("SWF_DRILL_TO", to)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("drills.{what}_command did not finish within 60 s"))??;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            anyhow::bail!("drills.{what}_command exited with {}: {tail}", out.status);
        }
        Ok(true)
    }
}

impl ClusterControl for HookControl {
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if !self.run("kill", &self.hooks.kill_command, &region).await? {
                anyhow::bail!("no drills.kill_command is configured: a failover drill cannot stop the primary");
            }
            Ok(())
        })
    }
    fn stop(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn rejoin(&self, region: &str, _primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            self.run("rejoin", &self.hooks.rejoin_command, &region)
                .await
                .map(|_| ())
        })
    }
    fn repoint(&self, _region: &str, _primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn promoted(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn fence(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        *self.from_to.lock().expect("hook lock") = (from.to_string(), to.to_string());
        let from = from.to_string();
        Box::pin(async move { self.run("fence", &self.hooks.fence_command, &from).await })
    }
    fn promote(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        *self.from_to.lock().expect("hook lock") = (from.to_string(), to.to_string());
        let to = to.to_string();
        Box::pin(async move { self.run("promote", &self.hooks.promote_command, &to).await })
    }
}

/// Why a drill was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
    #[error("{0}")]
    Refused(String),
    #[error("drill failed: {0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> DrillError {
    DrillError::Failed(e.to_string())
}

struct Timeline {
    last: Instant,
    phases: Vec<Phase>,
}

impl Timeline {
    fn new() -> Self {
        let now = Instant::now();
        Timeline {
            last: now,
            phases: Vec::new(),
        }
    }
    fn mark(&mut self, name: &str) {
        let now = Instant::now();
        tracing::info!(
            phase = name,
            ms = (now - self.last).as_millis() as u64,
            "drill phase"
        );
        self.phases.push(Phase {
            name: name.to_string(),
            ms: (now - self.last).as_millis() as u64,
        });
        self.last = now;
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs a drill from this node.
/// `authorization` is the caller's `Authorization` header, which the load
/// presents to every node.
pub async fn run(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    req: &DrillRequest,
    authorization: Option<reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
    heartbeat_ms: u64,
) -> Result<DrillReport, DrillError> {
    let mut tl = Timeline::new();
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
    if req.kind == DrillKind::Failover && control.is_none() {
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
    preflight(&old, &target, &to, req.max_lag_ms).await?;
    tl.mark("preflight");

    let (targets, all_nodes) = node_urls(router, heartbeat_ms).await.map_err(failed)?;
    let label = format!("{}", Uuid::new_v4().simple());
    let load = (req.load > 0.0).then(|| {
        LoadHandle::start(LoadSpec {
            targets: targets.clone(),
            rate_per_s: req.load,
            // Longer than a node's own write retries (5 s), so a slow answer
            // is an answer rather than an indeterminate write.
            request_timeout: Duration::from_secs(8),
            label: label.clone(),
            authorization: authorization.clone(),
            tls: tls.clone(),
        })
    });
    if load.is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tl.mark("load warm-up");
    }

    router.take_primary_lost_at();
    let fault = Instant::now();
    // Set once this drill has fenced the old primary with SQL: if the move
    // then fails before a promotion, the fence is lifted again so the
    // cluster is not left without a writable primary.
    let mut fenced_here = false;
    let moved = async {
        match req.kind {
            DrillKind::Switchover => {
                let hooked = match control {
                    Some(c) => c.fence(&from, &to).await.map_err(failed)?,
                    None => false,
                };
                // The last WAL position the old primary will ever have (read
                // after a hook's fence too, where it is still reachable).
                let last = if hooked {
                    old.position().await.ok().map(|(_, _, l)| l)
                } else {
                    fenced_here = true;
                    Some(old.fence().await.map_err(failed)?)
                };
                tl.mark("fence old primary");
                if let Some(c) = control {
                    c.stop(&from).await.map_err(failed)?;
                    tl.mark("stop old primary");
                }
                if let Some(last) = last {
                    wait_replayed(&target, last).await?;
                    tl.mark("target caught up");
                }
            }
            DrillKind::Failover => {
                if let Some(c) = control {
                    c.kill(&from).await.map_err(failed)?;
                }
                tl.mark("lose old primary");
            }
        }
        let hooked = match control {
            Some(c) => c.promote(&from, &to).await.map_err(failed)?,
            None => false,
        };
        let epoch_after = if hooked {
            wait_out_of_recovery(&target).await?;
            target.bump_epoch(&to).await.map_err(failed)?
        } else {
            target.promote(&to).await.map_err(failed)?
        };
        tl.mark("promote target");
        Ok::<u64, DrillError>(epoch_after)
    }
    .await;
    if moved.is_err() && fenced_here {
        match old.unfence().await {
            Ok(()) => tracing::warn!(region = %from, "drill aborted: the old primary is unfenced"),
            Err(e) => tracing::error!(region = %from, error = %e,
                "drill aborted and the old primary could not be unfenced"),
        }
    }
    let epoch_after = moved?;
    router.observe_epoch(epoch_after);
    router.discover_primary().await.map_err(failed)?;
    if let Some(c) = control {
        c.promoted(&to).await.map_err(failed)?;
        for r in router
            .regions()
            .iter()
            .filter(|r| r.name != to && r.name != from)
        {
            c.repoint(&r.name, &to).await.map_err(failed)?;
        }
    }
    let (rerouted, total) =
        wait_rerouted(&all_nodes, &to, epoch_after, authorization.as_ref(), tls).await;
    tl.mark("re-route nodes");
    let rerouted_at = Instant::now();

    if let Some(c) = control {
        c.rejoin(&from, &to).await.map_err(failed)?;
        tl.mark("rejoin old primary as replica");
    }
    // How long the load had been running when the fault came: its
    // first failure is measured from the load's own start.
    let fault_offset = load
        .as_ref()
        .map(|l| ms(fault.saturating_duration_since(l.started_at())));
    let attempts = match load {
        Some(l) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            l.stop().await
        }
        None => Vec::new(),
    };
    tl.mark("stop load");

    // Verify every acknowledged write on the new primary.
    let new_primary = router.write_store();
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
    let (_, lost) = load::classify(&attempts, &present);
    let duplicates = new_primary
        .duplicate_goals(&load::goal_prefix(&label))
        .await
        .map_err(failed)? as u64;
    let summary = load::summarize(&attempts);
    // A stale read misses a write that exists; a read that misses a lost
    // write is the loss, counted there.
    let stale_reads = attempts
        .iter()
        .filter(|a| a.stale_read == Some(true))
        .filter(|a| match &a.outcome {
            load::Outcome::Acked { run_id, .. } => present.contains(run_id),
            _ => false,
        })
        .count() as u64;
    let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
    for a in &attempts {
        if let load::Outcome::Failed { status, code } = &a.outcome {
            *failures.entry(format!("{status} {code}")).or_default() += 1;
        }
    }
    let fenced = old.cancel_run(Uuid::nil(), epoch_after).await.is_err();
    tl.mark("verify");

    let noticed = router
        .take_primary_lost_at()
        .filter(|t| *t >= fault)
        .map(|t| ms(t - fault));
    let load_noticed = summary
        .first_failure_ms
        .zip(fault_offset)
        .map(|(f, off)| f.saturating_sub(off));
    let detection_ms = match (noticed, load_noticed) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(0),
    };
    // Nodes retry writes while the primary moves, so the load may see no
    // failure at all: a write that waited for the new primary is the
    // unavailability it saw. RTO is the longer of the two.
    let mut by_latency: Vec<&load::Attempted> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, load::Outcome::Acked { .. }))
        .collect();
    by_latency.sort_by_key(|a| std::cmp::Reverse(a.done_at_ms.saturating_sub(a.sent_at_ms)));
    let slowest_writes: Vec<SlowWrite> = by_latency
        .iter()
        .take(3)
        .map(|a| SlowWrite {
            target: a.target.clone(),
            sent_at_ms: a.sent_at_ms,
            ms: a.done_at_ms.saturating_sub(a.sent_at_ms),
            retries: a.retries,
        })
        .collect();
    let slowest_write = slowest_writes.first().map_or(0, |w| w.ms);
    let rto_ms = if attempts.is_empty() {
        ms(rerouted_at - fault)
    } else {
        summary.rto_ms.max(slowest_write)
    };
    let ok = rerouted == total
        && fenced
        && duplicates == 0
        && stale_reads == 0
        && (req.kind == DrillKind::Failover || lost.is_empty())
        && (attempts.is_empty() || summary.recovered);
    Ok(DrillReport {
        kind: req.kind,
        from_region: from,
        to_region: to,
        epoch_before,
        epoch_after,
        detection_ms,
        rto_ms,
        acknowledged_writes: summary.acknowledged,
        lost_writes: lost.len() as u64,
        lost_run_ids: lost,
        indeterminate_writes: summary.indeterminate,
        failed_writes: summary.failed,
        duplicate_writes: duplicates,
        stale_reads,
        failures,
        slowest_writes,
        old_primary_fenced: fenced,
        nodes_rerouted: rerouted,
        nodes_total: total,
        phases: tl.phases,
        ok,
    })
}

/// Refuses a target that is not a healthy replica close behind the primary.
async fn preflight(
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
    let deadline = Instant::now() + Duration::from_millis(max_lag_ms);
    loop {
        let (_, _, replayed) = target.position().await.map_err(failed)?;
        if replayed >= primary_lsn {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DrillError::Refused(format!(
                "target region `{to}` lags beyond {max_lag_ms} ms (replayed {replayed}, primary at {primary_lsn})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_out_of_recovery(target: &Store) -> Result<(), DrillError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((false, _, _)) = target.position().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DrillError::Failed(
                "drills.promote_command ran but the target is still in recovery after 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_replayed(target: &Store, lsn: crate::model::token::Lsn) -> Result<(), DrillError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match target.position().await {
            Ok((_, _, replayed)) if replayed >= lsn => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(DrillError::Failed(format!(
                    "the target did not replay the old primary's last write ({lsn}) within 30 s"
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// API URLs of the healthy nodes: (client nodes: load targets, all: to re-route).
/// API URLs of the healthy client nodes, and of all healthy nodes (by the
/// same heartbeat rule as `/v1/regions`).
async fn node_urls(
    router: &Router,
    heartbeat_ms: u64,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let nodes = router.write_store().nodes().await?;
    let healthy: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.is_healthy(heartbeat_ms))
        .collect();
    let clients = healthy
        .iter()
        .filter(|n| n.is_client())
        .filter_map(|n| n.api_url.clone())
        .collect();
    let all = healthy.into_iter().filter_map(|n| n.api_url).collect();
    Ok((clients, all))
}

/// Waits until every node reports the new write region and epoch.
async fn wait_rerouted(
    urls: &[String],
    to: &str,
    epoch: u64,
    authorization: Option<&reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
) -> (usize, usize) {
    let api = crate::api::client::ApiClient::builder("")
        .tls(tls)
        .authorization(authorization.cloned())
        .timeout(Duration::from_secs(2))
        .build();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut done = 0;
        for u in urls {
            if let Ok(info) = api.at(u).health_info().await {
                if info.body.write_region == to && info.body.epoch >= epoch {
                    done += 1;
                }
            }
        }
        if done == urls.len() || Instant::now() >= deadline {
            return (done, urls.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
