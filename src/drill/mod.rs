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

mod control;
mod error;
mod phases;
mod reroute;
mod timeline;
mod verdict;

use std::time::Instant;

use crate::api::wire::{DrillReport, DrillRequest};
use crate::router::Router;

pub use control::{ClusterControl, HookControl};
pub use error::DrillError;

use error::failed;
use phases::Drill;
use reroute::node_urls;
use timeline::ms;
use verdict::{verdict, Observed};

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
    let mut d = Drill::new(router, control, authorization, tls);
    let plan = d.preflight(req).await?;
    let (targets, all_nodes) = node_urls(router, heartbeat_ms).await.map_err(failed)?;
    let mut load = d.start_load(targets, req.load).await;

    router.take_primary_lost_at();
    let fault = Instant::now();
    let epoch_after = d.move_primary(&plan, req.kind).await?;
    let (rerouted, total) = d.reroute(&plan, epoch_after, &all_nodes).await?;
    let rerouted_at = Instant::now();
    d.rejoin(&plan).await?;

    let (attempts, fault_offset_ms) = d.stop_load(&mut load, fault).await;
    let found = d.verify(&plan, &attempts, &load.label, epoch_after).await?;
    let noticed_ms = router
        .take_primary_lost_at()
        .filter(|t| *t >= fault)
        .map(|t| ms(t - fault));
    let seen = Observed {
        from: plan.from,
        to: plan.to,
        epoch_before: plan.epoch_before,
        epoch_after,
        old_primary_fenced: found.old_primary_fenced,
        nodes_rerouted: rerouted,
        nodes_total: total,
        fault_offset_ms,
        noticed_ms,
        rerouted_ms: ms(rerouted_at - fault),
        phases: d.tl.into_phases(),
    };
    Ok(verdict(
        req,
        &attempts,
        &found.present,
        found.duplicates,
        seen,
    ))
}
