//! The drill journal as the drill layer uses it: a drill's own row (claimed
//! on the old primary, saved on the new one after promotion, never written
//! on a fenced database), and the cluster-wide reads that merge every
//! reachable region's copy, because during a drill the freshest row may be
//! on a fenced old primary, on the promoted target, or on both.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::error::DrillError;
use super::exclusive;
use crate::api::wire::{DrillKind, DrillRecord, DrillReport, DrillState};
use crate::router::Router;
use crate::store::{DrillRow, Store, StoreError};

/// Tries of a journal write whose errors are transient, and the pause
/// before the n-th (n times this): at most about 2 s in all.
const SAVE_TRIES: u32 = 20;
const SAVE_RETRY: Duration = Duration::from_millis(10);

/// How long one region's journal may take to answer before it is skipped.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How many drills `GET /v1/admin/drills` lists.
pub const LIST_LIMIT: i64 = 100;

/// Who runs a drill: recorded in its row, so recovery can ask that node
/// whether the drill is still alive.
#[derive(Debug, Clone)]
pub struct Runner {
    pub node_id: String,
    /// The node's API (its public URL).
    pub node_url: String,
}

/// Every region's database (the node's own alone without a regions file),
/// named.
pub(super) fn stores(router: &Router) -> Vec<(String, Store)> {
    if router.regions().is_empty() {
        return vec![(router.region().to_string(), router.local_store().clone())];
    }
    router
        .regions()
        .iter()
        .map(|r| (r.name.clone(), r.store.clone()))
        .collect()
}

/// How far along a state is: a merged row keeps the most advanced copy.
fn rank(state: &str) -> u8 {
    match state {
        "running" => 0,
        "interrupted" => 1,
        "recovered" => 3,
        _ => 2,
    }
}

/// One row per drill from several databases' copies: the most advanced
/// state, then the latest update.
fn merge(rows: impl IntoIterator<Item = DrillRow>) -> Vec<DrillRow> {
    let mut by_id: HashMap<Uuid, DrillRow> = HashMap::new();
    for r in rows {
        match by_id.get(&r.id) {
            Some(have)
                if (rank(&have.state), have.updated_at) >= (rank(&r.state), r.updated_at) => {}
            _ => {
                by_id.insert(r.id, r);
            }
        }
    }
    let mut out: Vec<DrillRow> = by_id.into_values().collect();
    out.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
    out
}

/// Reads `f` from every region's database at once (each bounded by
/// [`READ_TIMEOUT`]; one that does not answer is skipped) and merges the rows.
async fn read_all<F, Fut>(router: &Router, f: F) -> Vec<DrillRow>
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = crate::store::Result<Vec<DrillRow>>>,
{
    let reads = stores(router).into_iter().map(|(name, s)| {
        let read = f(s);
        async move {
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::debug!(region = %name, error = %e, "read the drill journal");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            }
        }
    });
    merge(futures::future::join_all(reads).await.into_iter().flatten())
}

/// Running or interrupted drills, as any reachable region shows them.
/// A drill one database still shows unresolved may be resolved on another
/// (a replica behind the primary that recovery wrote to): every copy of each
/// candidate is read and merged before the state is judged.
pub(super) async fn unresolved(router: &Router) -> Vec<DrillRow> {
    let candidates = read_all(router, |s| async move { s.unresolved_drills().await }).await;
    if candidates.is_empty() {
        return candidates;
    }
    let ids: Vec<Uuid> = candidates.iter().map(|r| r.id).collect();
    let every_copy = read_all(router, |s| {
        let ids = ids.clone();
        async move {
            let mut rows = Vec::new();
            for id in ids {
                rows.extend(s.drill(id).await?);
            }
            Ok(rows)
        }
    })
    .await;
    merge(candidates.into_iter().chain(every_copy))
        .into_iter()
        .filter(|r| rank(&r.state) < 2)
        .collect()
}

/// The newest drills, newest first (`GET /v1/admin/drills`).
pub async fn list(router: &Router) -> Vec<DrillRecord> {
    let mut rows = read_all(router, |s| async move { s.drills(LIST_LIMIT).await }).await;
    rows.truncate(LIST_LIMIT as usize);
    rows.into_iter().filter_map(record).collect()
}

/// One drill (`GET /v1/admin/drills/{id}`), if any region has it.
pub async fn get(router: &Router, id: Uuid) -> Option<DrillRecord> {
    read_all(router, |s| async move {
        Ok(s.drill(id).await?.into_iter().collect())
    })
    .await
    .into_iter()
    .next()
    .and_then(record)
}

/// A journal row as the API shows it; `active` when this process runs it.
pub(super) fn record(r: DrillRow) -> Option<DrillRecord> {
    let kind = match r.kind.as_str() {
        "switchover" => DrillKind::Switchover,
        "failover" => DrillKind::Failover,
        "partition" => DrillKind::Partition,
        _ => return None,
    };
    let state = match r.state.as_str() {
        "running" => DrillState::Running,
        "ok" => DrillState::Ok,
        "failed" => DrillState::Failed,
        "interrupted" => DrillState::Interrupted,
        "recovered" => DrillState::Recovered,
        _ => return None,
    };
    Some(DrillRecord {
        active: exclusive::is_active(r.id),
        id: r.id,
        kind,
        from_region: r.from_region,
        to_region: r.to_region,
        state,
        started_at: r.started_at,
        finished_at: r.finished_at,
        report: r.report,
        node_id: r.node_id,
        phase: r.phase,
    })
}

/// The refusal of a drill while `d` is unresolved.
pub(super) fn in_progress(d: &DrillRow) -> DrillError {
    let what = format!(
        "drill {} ({} {} -> {}, started by node {})",
        d.id, d.kind, d.from_region, d.to_region, d.node_id
    );
    DrillError::InProgress(if d.state == "running" {
        format!(
            "{what} is running (phase `{}`); if its process was killed, run `swf drill recover`",
            d.phase
        )
    } else {
        format!(
            "{what} was interrupted at phase `{}`: run `swf drill recover` first",
            d.phase
        )
    })
}

/// Marks the drills this node was running when it last stopped as
/// interrupted, on the primary (best effort: with no writable primary they
/// stay `running` until `swf drill recover`).
pub async fn interrupt_own(router: &Router, node_id: &str) {
    let primary = router.write_store();
    match primary.drill_interrupt(node_id, router.epoch()).await {
        Ok(ids) => {
            for id in ids {
                tracing::warn!(drill = %id, "a drill this node was running when it stopped is marked interrupted: run `swf drill recover`");
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "mark this node's unfinished drills interrupted")
        }
    }
}

/// A drill's own row, kept as the drill writes it.
pub(super) struct Journal {
    pub row: DrillRow,
}

impl Journal {
    pub(super) fn new(row: DrillRow) -> Journal {
        Journal { row }
    }

    /// Claims the one running slot on the primary `db`; a second drill, or
    /// a primary fenced by one, is refused with [`DrillError::InProgress`].
    pub(super) async fn claim(&self, db: &Store, epoch: u64) -> Result<(), DrillError> {
        match db.drill_claim(&self.row, epoch).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DrillError::InProgress(
                "another drill is running (the journal holds a running drill)".into(),
            )),
            Err(StoreError::ReadOnly) => Err(DrillError::InProgress(
                "the primary is fenced: a drill is moving it (if none is, run `swf drill recover`)"
                    .into(),
            )),
            Err(e) => Err(DrillError::Failed(format!("record the drill: {e}"))),
        }
    }

    /// Records that the drill entered `phase`, on `db` at `epoch` (the old
    /// primary before the fence, the new one after promotion).
    pub(super) async fn phase(&mut self, db: &Store, epoch: u64, phase: &str) {
        self.row.phase = phase.to_string();
        self.save(db, epoch).await;
    }

    /// Records the end: `state` and `report`.
    pub(super) async fn finish(
        &mut self,
        db: &Store,
        epoch: u64,
        state: DrillState,
        report: Value,
    ) {
        self.row.state = state.as_str().to_string();
        self.row.finished_at = Some(chrono::Utc::now());
        self.row.report = Some(report);
        self.save(db, epoch).await;
    }

    /// Records a finished drill's report: `ok` or `failed` by its verdict.
    pub(super) async fn finish_report(&mut self, db: &Store, epoch: u64, report: &DrillReport) {
        let state = if report.ok {
            DrillState::Ok
        } else {
            DrillState::Failed
        };
        let json = serde_json::to_value(report).unwrap_or_default();
        self.finish(db, epoch, state, json).await;
    }

    /// Saves the row (best effort: a journal write never fails a drill).
    /// A transient error is tried again, a few times: a fence terminates
    /// every other session of the old primary, so the pool's idle
    /// connections to it are dead, and each fails once before the pool
    /// opens a new one (a failed drill's end went unrecorded that way).
    async fn save(&self, db: &Store, epoch: u64) {
        let mut tries: u32 = 1;
        loop {
            match db.drill_save(&self.row, epoch).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && tries < SAVE_TRIES => {
                    tries += 1;
                    tokio::time::sleep(SAVE_RETRY * tries).await;
                }
                Err(e) => {
                    tracing::warn!(drill = %self.row.id, error = %e, tries,
                                   "record the drill in the journal");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u128, state: &str, at: i64, updated: i64) -> DrillRow {
        let t = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        DrillRow {
            id: Uuid::from_u128(id),
            kind: "switchover".into(),
            from_region: "a".into(),
            to_region: "b".into(),
            state: state.into(),
            node_id: "n".into(),
            node_url: None,
            phase: "p".into(),
            epoch_before: 1,
            started_at: t(at),
            updated_at: t(updated),
            finished_at: None,
            report: None,
        }
    }

    #[test]
    fn merge_keeps_the_most_advanced_copy_newest_first() {
        let merged = merge([
            row(1, "running", 10, 12),
            row(2, "ok", 20, 25),
            row(1, "recovered", 10, 11),
            row(2, "running", 20, 30),
            row(3, "running", 30, 30),
            row(3, "running", 30, 31),
        ]);
        let got: Vec<(u128, &str, i64)> = merged
            .iter()
            .map(|r| (r.id.as_u128(), r.state.as_str(), r.updated_at.timestamp()))
            .collect();
        assert_eq!(
            got,
            [(3, "running", 31), (2, "ok", 25), (1, "recovered", 11)]
        );
    }
}
