//! The partition drill (`swf drill partition`, `swf dev` only): every link
//! between one region and the others (its node to the other databases, the
//! other nodes to its database, replication, node to node) is cut for a
//! while under load, then healed. Nothing moves: the primary and the epoch
//! stay. What it shows: which writes the nodes refused while cut off (by
//! answer), that every acknowledged write is on the primary, that no read
//! with a write's token came back without it, and how long the cluster took
//! to converge after healing (every replica replayed the primary's position
//! at the heal, every node agrees on the primary and epoch).
//!
//! The links are healed however the drill ends: by its last phase, or by
//! [`Healer`]'s drop when it fails or its caller goes away.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use super::control::ClusterControl;
use super::error::{failed, DrillError};
use super::exclusive::{hold_point, LiveDrill};
use super::journal::{self, Runner};
use super::phases::{claim_journal, error_report, explained, Drill};
use super::reroute::{node_urls, wait_rerouted};
use super::timeline::ms;
use super::verdict::{verdict, Observed};
use crate::api::wire::{DrillReport, DrillRequest, DrillState, OldPrimary, PartitionReport};
use crate::model::token::Lsn;
use crate::router::Router;
use crate::store::Store;

/// Longest cut a drill accepts.
pub const MAX_SECS: u64 = 600;
/// How long the cluster may take to converge after healing.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// Heals the region's links when dropped, unless already healed.
struct Healer<'a> {
    control: &'a dyn ClusterControl,
    region: String,
    cut: bool,
}

impl Healer<'_> {
    fn heal(&mut self) {
        if std::mem::take(&mut self.cut) {
            self.control.partition(&self.region, false);
        }
    }
}

impl Drop for Healer<'_> {
    fn drop(&mut self) {
        if self.cut {
            tracing::warn!(region = %self.region, "partition drill ended early: links healed");
        }
        self.heal();
    }
}

/// Refuses what a partition drill cannot do: without control of the links,
/// without a known region or with a cut outside 1 to [`MAX_SECS`] seconds.
/// Answers the region and the cut's length.
fn check(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    req: &DrillRequest,
) -> Result<(String, u64), DrillError> {
    if !control.is_some_and(|c| c.can_partition()) {
        return Err(DrillError::Refused(
            "a partition drill needs control of the links between regions (run it in `swf dev`)"
                .into(),
        ));
    }
    let region = req
        .region
        .clone()
        .ok_or_else(|| DrillError::Refused("a partition drill needs `region`".into()))?;
    if !router.regions().iter().any(|r| r.name == region) {
        return Err(DrillError::UnknownRegion(region));
    }
    if router.regions().len() < 2 {
        return Err(DrillError::Refused(
            "a partition drill needs at least two regions".into(),
        ));
    }
    let secs = req.secs.unwrap_or(0);
    if !(1..=MAX_SECS).contains(&secs) {
        return Err(DrillError::Refused(format!(
            "secs must be between 1 and {MAX_SECS}"
        )));
    }
    if !(0.0..=10_000.0).contains(&req.load) {
        return Err(DrillError::Refused(
            "load must be between 0 and 10000 per second".into(),
        ));
    }
    Ok((region, secs))
}

/// Runs a partition drill from this node, `me` (see [`super::run`]).
pub(super) async fn run(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    req: &DrillRequest,
    authorization: Option<HeaderValue>,
    tls: &crate::api::tls::ClientTls,
    heartbeat_ms: u64,
    me: &Runner,
) -> Result<DrillReport, DrillError> {
    let (region, secs) = check(router, control, req)?;
    let control = control.expect("checked");
    let mut d = Drill::new(router, Some(control), authorization.clone(), tls);
    let id = uuid::Uuid::now_v7();
    let _live = LiveDrill::enter(id);
    if let Some(u) = journal::unresolved(router).await.first() {
        return Err(journal::in_progress(u));
    }
    let claimed = async {
        router.discover_primary().await.map_err(|e| {
            DrillError::Refused(format!(
                "no writable primary ({e:#}); if a drill was interrupted, run `swf drill recover`"
            ))
        })?;
        let (primary, epoch) = (router.write_region(), router.epoch());
        let db = router.write_store();
        let j = claim_journal(req.kind, &primary, &region, epoch, &db, me, id).await?;
        Ok((primary, epoch, db, j))
    }
    .await;
    let (primary, epoch, db, mut j) = explained(router, claimed).await?;
    d.tl.mark("preflight");
    hold_point("claimed").await;
    let finished = async {
        let (targets, nodes) = node_urls(router, heartbeat_ms).await.map_err(failed)?;
        let mut load = d.start_load(targets, req.load).await;
        j.phase(&db, epoch, "partition").await;

        router.take_primary_lost_at();
        let fault = Instant::now();
        let mut healer = Healer {
            control,
            region: region.clone(),
            cut: true,
        };
        let links_cut = control.partition(&region, true);
        d.tl.mark("cut links");
        tracing::info!(%region, links_cut, secs, "partition drill: links cut");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        d.tl.mark("partitioned");
        healer.heal();
        let healed = Instant::now();
        d.tl.mark("heal links");
        tracing::info!(%region, "partition drill: links healed");

        let (agreed, total) = converge(router, &nodes, &primary, epoch, &d).await?;
        let converge_ms = ms(healed.elapsed());
        d.tl.mark("converge");
        j.phase(&db, epoch, "verify").await;

        let (attempts, fault_offset_ms) = d.stop_load(&mut load, fault).await;
        let found = d.found(&attempts, &load.label).await?;
        d.tl.mark("verify");
        let noticed_ms = router
            .take_primary_lost_at()
            .filter(|t| *t >= fault)
            .map(|t| ms(t - fault));
        let seen = Observed {
            from: primary.clone(),
            to: region.clone(),
            epoch_before: epoch,
            epoch_after: router.epoch(),
            old_primary: OldPrimary::default(),
            nodes_rerouted: agreed,
            nodes_total: total,
            fault_offset_ms,
            noticed_ms,
            rerouted_ms: converge_ms,
            phases: std::mem::take(&mut d.tl).into_phases(),
            partition: Some(PartitionReport {
                region: region.clone(),
                secs,
                links_cut,
                writes_refused: 0,
                stale_token_reads: 0,
                converge_ms,
            }),
        };
        Ok::<_, DrillError>(verdict(req, &attempts, &found.0, found.1, seen))
    }
    .await;
    match finished {
        Ok(report) => {
            j.finish_report(&db, epoch, &report).await;
            Ok(report)
        }
        Err(e) => {
            j.finish(&db, epoch, DrillState::Failed, error_report(&e))
                .await;
            Err(e)
        }
    }
}

/// After healing: waits until every replica has replayed the primary's
/// position (read once the primary answers again), then until every node
/// reports the primary and epoch; answers (nodes that agree, nodes asked).
async fn converge(
    router: &Router,
    nodes: &[String],
    primary: &str,
    epoch: u64,
    d: &Drill<'_>,
) -> Result<(usize, usize), DrillError> {
    let db = router.write_store();
    let at: Lsn = crate::wait::until(CONVERGE_DEADLINE, Duration::from_millis(20), || async {
        db.position().await.ok().map(|(_, _, lsn)| lsn)
    })
    .await
    .map_err(|_| failed("the primary did not answer within 60 s of healing"))?;
    let replicas: Vec<(String, Store)> = router
        .regions()
        .iter()
        .filter(|r| r.name != primary)
        .map(|r| (r.name.clone(), r.store.clone()))
        .collect();
    for (name, store) in &replicas {
        crate::wait::until(CONVERGE_DEADLINE, Duration::from_millis(20), || async {
            matches!(store.position().await, Ok((true, _, replayed)) if replayed >= at)
                .then_some(())
        })
        .await
        .map_err(|_| {
            failed(format!(
                "region `{name}` did not replay the primary's position at the heal ({at}) within 60 s"
            ))
        })?;
    }
    Ok(wait_rerouted(nodes, primary, epoch, d.authorization.as_ref(), d.tls).await)
}
