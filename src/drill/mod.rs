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
//! Exclusive cluster-wide, journaled, recoverable: a drill claims the one
//! `running` slot of the drill journal (`swf.drills`) on the primary before
//! it touches anything, and records its phases there (on the old primary
//! until the fence, on the new one from the epoch bump; see [`journal`]).
//! The epoch bump is a compare-and-set. After a failure the old primary is
//! unfenced only when the target is verified still a replica. When the
//! drilling process dies part way, [`recover`] inspects every region and
//! the journal and leaves exactly one writable primary.
//!
//! Measurement: an optional load submits workflows through every region's
//! client node during the drill ([`crate::drill::load`]); each acknowledged
//! run is then looked up on the new primary (present, lost, or
//! indeterminate when it never got an answer). RTO is the longest write
//! unavailability the load saw.

pub mod load;

mod control;
mod error;
mod exclusive;
mod journal;
mod partition;
mod patroni;
mod phases;
mod recover;
mod reroute;
mod timeline;
mod verdict;

use std::time::Instant;

use crate::api::wire::{DrillKind, DrillReport, DrillRequest, DrillState};
use crate::router::Router;

pub use control::{ClusterControl, HookControl};
pub use error::DrillError;
pub use exclusive::{hold_point, is_active, HOLD_ENV};
pub use journal::{get, interrupt_own, list, Runner, LIST_LIMIT};
pub use patroni::{follow_and_unfence, PatroniApi, PatroniControl, FOLLOW_DEADLINE};
pub use recover::{recover, Peers};

use error::failed;
use phases::{error_report, Drill};
use reroute::node_urls;
use timeline::ms;
use verdict::{verdict, Observed};

/// Runs a drill from this node, `me`.
/// `authorization` is the caller's `Authorization` header, which the load
/// presents to every node.
pub async fn run(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    req: &DrillRequest,
    authorization: Option<reqwest::header::HeaderValue>,
    tls: &crate::api::tls::ClientTls,
    heartbeat_ms: u64,
    me: &Runner,
) -> Result<DrillReport, DrillError> {
    if req.kind == DrillKind::Partition {
        return partition::run(router, control, req, authorization, tls, heartbeat_ms, me).await;
    }
    let mut d = Drill::new(router, control, authorization, tls);
    let id = uuid::Uuid::now_v7();
    let _live = exclusive::LiveDrill::enter(id);
    let (plan, mut j) = d.begin(req, me, id).await?;
    hold_point("claimed").await;
    let (targets, all_nodes) = match node_urls(router, heartbeat_ms).await {
        Ok(urls) => urls,
        Err(e) => {
            let e = failed(e);
            j.finish(
                &plan.old,
                plan.epoch_before,
                DrillState::Failed,
                error_report(&e),
            )
            .await;
            return Err(e);
        }
    };
    let mut load = d.start_load(targets, req.load).await;

    router.take_primary_lost_at();
    let fault = Instant::now();
    let epoch_after = d.move_primary(&plan, req.kind, &mut j).await?;
    // From here on the journal lives on the new primary.
    j.phase(&plan.target, epoch_after, "re-route").await;
    hold_point("epoch-bumped").await;
    let finished = async {
        let (rerouted, total) = d.reroute(&plan, epoch_after, &all_nodes).await?;
        let rerouted_at = Instant::now();
        d.rejoin(&plan, &mut j, epoch_after).await?;

        let (attempts, fault_offset_ms) = d.stop_load(&mut load, fault).await;
        let found = d.verify(&plan, &attempts, &load.label, epoch_after).await?;
        let noticed_ms = router
            .take_primary_lost_at()
            .filter(|t| *t >= fault)
            .map(|t| ms(t - fault));
        let seen = Observed {
            from: plan.from.clone(),
            to: plan.to.clone(),
            epoch_before: plan.epoch_before,
            epoch_after,
            old_primary: found.old_primary,
            nodes_rerouted: rerouted,
            nodes_total: total,
            fault_offset_ms,
            noticed_ms,
            rerouted_ms: ms(rerouted_at - fault),
            phases: std::mem::take(&mut d.tl).into_phases(),
            partition: None,
        };
        let mut report = verdict(req, &attempts, &found.present, found.duplicates, seen);
        report.manager = control.and_then(|c| c.manager()).map(str::to_string);
        Ok::<_, DrillError>(report)
    }
    .await;
    match finished {
        Ok(report) => {
            j.finish_report(&plan.target, epoch_after, &report).await;
            Ok(report)
        }
        Err(e) => {
            // The target is the one writable primary; the old one is fenced
            // (or stopped): `swf drill recover` rejoins it.
            let e = DrillError::Failed(format!(
                "{e} (after the target `{}` was promoted at epoch {epoch_after}; the old primary stays fenced: run `swf drill recover` to rejoin it)",
                plan.to
            ));
            j.finish(
                &plan.target,
                epoch_after,
                DrillState::Failed,
                error_report(&e),
            )
            .await;
            Err(e)
        }
    }
}
