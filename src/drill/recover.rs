//! `swf drill recover`: after the process running a drill was killed at any
//! phase, find what it left (every region's database: reachable, in
//! recovery, fenced, epoch, timeline; and the journal) and leave exactly one
//! writable primary.
//!
//! The primary to keep is the drill's target when it was promoted (finish
//! forward), else the only database out of recovery (before promotion: the
//! old primary, unfenced only once the target answers that it is still a
//! replica), else the newest by epoch then timeline. Every other database
//! out of recovery is fenced first, so there are never two writable
//! primaries, not even for a moment; then the kept one is unfenced, its
//! epoch bumped (compare-and-set) where the drill had not, the deployment
//! told ([`ClusterControl::promoted`]) and the others rejoined as its
//! replicas where a control exists (else the report says what the operator
//! must do). The journal's unresolved drills are marked `recovered`.
//! Nothing wrong: nothing changes, and the report says so.
//!
//! Exclusive: one drill or recovery at a time per node (the API's lock);
//! recovery refuses while a journal drill is alive (run by this process, or
//! by a node that says so when asked), and a drill refuses to start while
//! the journal holds an unresolved drill, which recovery resolves last.

use std::time::Duration;

use serde_json::json;

use super::control::ClusterControl;
use super::error::{failed, DrillError};
use super::exclusive;
use super::journal::{self, in_progress};
use crate::api::client::ApiClient;
use crate::api::tls::ClientTls;
use crate::api::wire::{DbFound, DrillKind, DrillRecord, RecoverReport, RegionFound};
use crate::router::Router;
use crate::store::{DbState, DrillRow, Store};

/// How long one database may take to answer the inspection.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How recovery asks the node that ran a drill whether it still runs it.
pub struct Peers {
    /// This node's own API (its drills are known in-process).
    pub own_url: String,
    pub authorization: Option<reqwest::header::HeaderValue>,
    pub tls: ClientTls,
}

/// One region as found.
struct Region {
    name: String,
    store: Store,
    state: Result<DbState, String>,
}

impl Region {
    fn found(&self) -> RegionFound {
        let (found, epoch, timeline, error) = match &self.state {
            Ok(s) if s.in_recovery => (DbFound::Replica, Some(s.epoch), None, None),
            Ok(s) if s.read_only => (DbFound::Fenced, Some(s.epoch), s.timeline, None),
            Ok(s) => (DbFound::Writable, Some(s.epoch), s.timeline, None),
            Err(e) => (DbFound::Unreachable, None, None, Some(e.clone())),
        };
        RegionFound {
            region: self.name.clone(),
            found,
            epoch,
            timeline,
            error,
        }
    }

    /// Out of recovery: a primary, fenced or not.
    fn primary(&self) -> Option<&DbState> {
        self.state.as_ref().ok().filter(|s| !s.in_recovery)
    }
}

/// Inspects every region's database at once.
async fn inspect(router: &Router) -> Vec<Region> {
    let probes = journal::stores(router)
        .into_iter()
        .map(|(name, store)| async move {
            let state = match tokio::time::timeout(INSPECT_TIMEOUT, store.inspect()).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {INSPECT_TIMEOUT:?}")),
            };
            Region { name, store, state }
        });
    futures::future::join_all(probes).await
}

/// Refuses while a journal drill is still alive: run by this process, or
/// by the node that recorded it, which says so.
async fn refuse_live(rows: &[DrillRow], peers: &Peers) -> Result<(), DrillError> {
    for d in rows.iter().filter(|d| d.state == "running") {
        let live = exclusive::is_active(d.id)
            || match d.node_url.as_deref() {
                Some(url) if url != peers.own_url => asks_active(url, d, peers).await,
                _ => false,
            };
        if live {
            return Err(in_progress(d));
        }
    }
    Ok(())
}

/// Whether the node at `url` answers that its process runs drill `d`.
async fn asks_active(url: &str, d: &DrillRow, peers: &Peers) -> bool {
    let api = ApiClient::builder(url)
        .tls(&peers.tls)
        .authorization(peers.authorization.clone())
        .timeout(Duration::from_secs(3))
        .build();
    match api
        .get::<DrillRecord>(&format!("/v1/admin/drills/{}", d.id))
        .await
    {
        Ok(a) => a.body.active,
        Err(e) => {
            tracing::info!(drill = %d.id, node = %d.node_id, error = %e,
                "the node that ran the drill does not say it runs it: taken as dead");
            false
        }
    }
}

/// Recovers the cluster from whatever a drill left; see the module doc.
pub async fn recover(
    router: &Router,
    control: Option<&dyn ClusterControl>,
    peers: &Peers,
) -> Result<RecoverReport, DrillError> {
    let drills = journal::unresolved(router).await;
    refuse_live(&drills, peers).await?;
    // A partition drill cut short may have left its region's links cut:
    // healed before anything is inspected through them.
    let mut healed = Vec::new();
    for d in drills
        .iter()
        .filter(|d| d.kind == DrillKind::Partition.as_str())
    {
        if let Some(c) = control.filter(|c| c.can_partition()) {
            let n = c.partition(&d.to_region, false);
            healed.push(format!("healed the {n} links of region `{}`", d.to_region));
        }
    }
    let regions = inspect(router).await;
    // The drill to finish: the newest unresolved one.
    let drill = drills.first();
    let keep = choose(&regions, drill)?;
    let kept = regions.iter().find(|r| r.name == keep).expect("chosen");
    let kept_state = *kept.primary().expect("chosen is a primary");
    // A drill that started since (there was nothing to resolve) wins.
    if let Some(d) = journal::unresolved(router)
        .await
        .iter()
        .find(|d| drills.iter().all(|seen| seen.id != d.id))
    {
        return Err(in_progress(d));
    }
    let mut actions = healed;
    let mut operator = Vec::new();

    // 1. Every other primary stops taking writes first.
    for r in regions.iter().filter(|r| r.name != keep) {
        if matches!(r.primary(), Some(s) if !s.read_only) {
            r.store
                .fence()
                .await
                .map_err(|e| failed(format!("fence the database of region `{}`: {e}", r.name)))?;
            actions.push(format!(
                "fenced region `{}`'s database (a second writable primary)",
                r.name
            ));
        }
    }
    // 2. Then the kept one takes writes.
    if kept_state.read_only {
        kept.store
            .unfence()
            .await
            .map_err(|e| failed(format!("unfence the database of region `{keep}`: {e}")))?;
        actions.push(format!("unfenced region `{keep}`'s database"));
    }
    // 3. At an epoch above every other primary's.
    let mut epoch = kept_state.epoch;
    let others_top = regions
        .iter()
        .filter(|r| r.name != keep)
        .filter_map(|r| r.primary().map(|s| s.epoch))
        .max();
    let forward_unbumped =
        drill.is_some_and(|d| d.to_region == keep && d.epoch_before as u64 == epoch);
    if forward_unbumped || others_top.is_some_and(|e| e >= epoch) {
        let bumped = kept.store.bump_epoch(&keep, epoch).await.map_err(failed)?;
        let Some(new) = bumped else {
            return Err(DrillError::Failed(format!(
                "the epoch of region `{keep}` moved from {epoch} while recovering; run recover again"
            )));
        };
        if others_top.is_some_and(|e| e >= new) {
            return Err(DrillError::Failed(format!(
                "region `{keep}` is at epoch {new}, not above another primary's ({}): resolve by hand",
                others_top.unwrap_or_default()
            )));
        }
        actions.push(format!(
            "bumped the epoch in region `{keep}`: {epoch} -> {new}"
        ));
        epoch = new;
    }
    router.observe_epoch(epoch);
    if let Err(e) = router.discover_primary().await {
        tracing::warn!(error = %e, "recover: find the primary again");
    }
    // 4. The deployment and the other databases follow.
    let stale: Vec<&Region> = regions
        .iter()
        .filter(|r| r.name != keep && r.primary().is_some())
        .collect();
    let moved = drill.is_some() || !actions.is_empty();
    match control.filter(|c| c.can_rejoin()) {
        Some(c) => {
            if moved {
                c.promoted(&keep)
                    .await
                    .map_err(|e| failed(format!("record `{keep}` as the write region: {e}")))?;
                actions.push(format!("recorded `{keep}` as the write region"));
            }
            // Replicas of the old primary follow the new one.
            if drill.is_some_and(|d| d.from_region != keep) {
                for r in regions.iter().filter(|r| r.name != keep) {
                    if matches!(&r.state, Ok(s) if s.in_recovery) {
                        c.repoint(&r.name, &keep).await.map_err(|e| {
                            failed(format!("point region `{}` at `{keep}`: {e}", r.name))
                        })?;
                        actions.push(format!("pointed region `{}`'s replica at `{keep}`", r.name));
                    }
                }
            }
            for r in &stale {
                c.rejoin(&r.name, &keep).await.map_err(|e| {
                    failed(format!(
                        "rejoin region `{}` as a replica of `{keep}`: {e}",
                        r.name
                    ))
                })?;
                actions.push(format!(
                    "rejoined region `{}` as a replica of `{keep}`",
                    r.name
                ));
            }
        }
        None => {
            if drill.is_some_and(|d| d.from_region != keep) {
                for r in regions.iter().filter(|r| r.name != keep) {
                    if matches!(&r.state, Ok(s) if s.in_recovery) {
                        operator.push(format!(
                            "region `{}`'s replica: make sure it streams from `{keep}`",
                            r.name
                        ));
                    }
                }
            }
            for r in &stale {
                operator.push(format!(
                    "region `{}`'s database is a fenced primary: rebuild it as a replica of `{keep}` (e.g. pg_rewind or a fresh pg_basebackup)",
                    r.name
                ));
            }
        }
    }
    for r in regions.iter().filter(|r| r.state.is_err()) {
        operator.push(format!(
            "region `{}` was unreachable: once it is back, make sure its database is a replica of `{keep}`",
            r.name
        ));
    }
    // 5. The journal.
    let found: Vec<RegionFound> = regions.iter().map(Region::found).collect();
    let recovered: Vec<uuid::Uuid> = drills.iter().map(|d| d.id).collect();
    for d in &drills {
        let mut row = d.clone();
        row.state = "recovered".into();
        row.finished_at = Some(row.finished_at.unwrap_or_else(chrono::Utc::now));
        let mut report = row.report.take().unwrap_or_else(|| json!({}));
        report["recovery"] = json!({"found": found, "actions": actions, "operator": operator});
        row.report = Some(report);
        kept.store.drill_save(&row, epoch).await.map_err(|e| {
            failed(format!(
                "mark drill {} recovered in region `{keep}`: {e}",
                d.id
            ))
        })?;
    }
    for id in &recovered {
        actions.push(format!("marked drill {id} recovered"));
    }
    // 6. Exactly one writable primary, checked.
    let after = inspect(router).await;
    let writable: Vec<&str> = after
        .iter()
        .filter(|r| matches!(r.primary(), Some(s) if !s.read_only))
        .map(|r| r.name.as_str())
        .collect();
    if writable != [keep.as_str()] {
        return Err(DrillError::Failed(format!(
            "after recovery the writable databases are {writable:?}, not just `{keep}`; actions taken: {}",
            actions.join("; ")
        )));
    }
    Ok(RecoverReport {
        regions: found,
        drills: recovered,
        changed: !actions.is_empty(),
        actions,
        operator,
        write_region: keep,
        epoch,
    })
}

/// The region whose database stays (or becomes) the writable primary.
fn choose(regions: &[Region], drill: Option<&DrillRow>) -> Result<String, DrillError> {
    let primaries: Vec<&Region> = regions.iter().filter(|r| r.primary().is_some()).collect();
    let describe = || {
        regions
            .iter()
            .map(|r| {
                let f = r.found();
                format!(
                    "{}: {}",
                    f.region,
                    serde_json::to_value(f.found).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if primaries.is_empty() {
        return Err(DrillError::Refused(format!(
            "no database is out of recovery ({}): nothing to unfence or finish; \
             bring the old primary's region back, then run recover again",
            describe()
        )));
    }
    // Finish forward: the target was promoted.
    if let Some(d) = drill {
        if primaries.iter().any(|r| r.name == d.to_region) {
            return Ok(d.to_region.clone());
        }
    }
    let unreachable: Vec<&str> = regions
        .iter()
        .filter(|r| r.state.is_err())
        .map(|r| r.name.as_str())
        .collect();
    let pick = if primaries.len() == 1 {
        primaries[0]
    } else {
        let mut by_age = primaries.clone();
        let key = |r: &&Region| r.primary().map(|s| (s.epoch, s.timeline));
        by_age.sort_by_key(|r| std::cmp::Reverse(key(r)));
        if key(&by_age[0]) == key(&by_age[1]) {
            return Err(DrillError::Refused(format!(
                "several primaries at the same epoch and timeline ({}) and no drill names one: resolve by hand",
                describe()
            )));
        }
        by_age[0]
    };
    // Unfencing must not make a second writable primary: the target (or,
    // with no drill to name it, any region) must answer.
    let needs_unfence = pick.primary().is_some_and(|s| s.read_only);
    let blocking: Vec<&str> = match drill {
        Some(d) => unreachable
            .iter()
            .copied()
            .filter(|r| *r == d.to_region)
            .collect(),
        None => unreachable.clone(),
    };
    if needs_unfence && !blocking.is_empty() {
        return Err(DrillError::Refused(format!(
            "region `{}`'s database is fenced, but {} cannot be checked (it may have been promoted): \
             it stays fenced; bring {} back and run recover again",
            pick.name,
            blocking.join(", "),
            blocking.join(", ")
        )));
    }
    Ok(pick.name.clone())
}
