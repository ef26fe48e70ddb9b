//! Primary discovery: which region's database takes writes (not in
//! recovery, highest epoch), probed concurrently with a deadline each, and
//! the epoch rule (a primary older than an epoch this node has seen is
//! refused).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use crate::router::core::{Primary, RegionDb, Router, PROBE_TIMEOUT};

impl Router {
    /// Finds the primary among the regions' databases: not in recovery,
    /// highest epoch. Single-region nodes use their local database.
    pub async fn discover_primary(&self) -> anyhow::Result<()> {
        if self.regions.is_empty() {
            let (epoch, _) = self.local.role().await?;
            self.observe_epoch(epoch);
            return Ok(());
        }
        // Probe every region at once, each with a short deadline: a dead
        // database must not hold up finding the live one. A primary newer
        // than any epoch seen so far is taken without waiting for the rest
        // (nothing unreachable can beat it for this node).
        let known = self.epoch();
        let mut probes: futures::stream::FuturesUnordered<_> = self
            .regions
            .iter()
            .map(|r| async move {
                let res = tokio::time::timeout(PROBE_TIMEOUT, r.store.probe_role()).await;
                (r, res)
            })
            .collect();
        let mut best: Option<(u64, &RegionDb)> = None;
        let mut errors = Vec::new();
        while let Some((r, res)) = futures::StreamExt::next(&mut probes).await {
            match res {
                Ok(Ok((epoch, false))) => {
                    if best.is_none_or(|(e, _)| epoch > e) {
                        best = Some((epoch, r));
                    }
                    if epoch > known {
                        break;
                    }
                }
                Ok(Ok((_, true))) => {}
                Ok(Err(e)) => errors.push(format!("{}: {e}", r.name)),
                Err(_) => errors.push(format!("{}: no answer within {PROBE_TIMEOUT:?}", r.name)),
            }
        }
        drop(probes);
        let Some((epoch, r)) = best else {
            anyhow::bail!(
                "no primary among the regions' databases (all in recovery or unreachable: {})",
                errors.join("; ")
            );
        };
        if epoch < self.epoch() {
            anyhow::bail!(
                "the only primary found ({}) has epoch {epoch}, older than epoch {} seen by this node",
                r.name,
                self.epoch()
            );
        }
        self.observe_epoch(epoch);
        let old = self.write_region();
        *self.primary.write().expect("primary lock") = Arc::new(Primary {
            region: r.name.clone(),
            store: r.store.clone(),
        });
        if old != r.name {
            info!(region = %r.name, epoch, "primary discovered");
            self.primary_gen.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    /// Highest epoch seen; writes carry it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records an epoch a database showed. A new epoch clears the lineage
    /// cache: what was read before a failover may be lost on the new primary.
    pub fn observe_epoch(&self, epoch: u64) {
        let before = self.epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch > before {
            self.cache().clear();
        }
    }

    /// Called after a write failed in a way that suggests the primary moved
    /// (or the tracker could not reach it): notes when, and rediscovers.
    /// Concurrent callers share one discovery.
    pub async fn write_failed(&self) {
        {
            let mut lost = self.primary_lost_at.lock().expect("lost lock");
            if lost.is_none() {
                *lost = Some(Instant::now());
            }
        }
        self.rediscover().await;
    }

    /// Whether the cluster has reached `epoch` (a caller's token names it).
    /// The node believes an epoch only when a database shows it: one newer
    /// than it knows makes it look for the primary again (shared with other
    /// callers), and never raises its epoch by itself.
    pub async fn epoch_reached(&self, epoch: u64) -> bool {
        if epoch <= self.epoch() {
            return true;
        }
        self.rediscover().await;
        epoch <= self.epoch()
    }

    /// Looks for the primary again. Callers that queued behind a discovery
    /// that started after they asked take its result instead of running
    /// another.
    pub(super) async fn rediscover(&self) {
        let asked_at = Instant::now();
        let mut last = self.discovering.lock().await;
        if last.is_some_and(|t| t >= asked_at) {
            return;
        }
        let started = Instant::now();
        match self.discover_primary().await {
            Ok(()) => {}
            Err(e) => debug!(error = %e, "rediscover the primary"),
        }
        // Recorded once it finished: a discovery dropped part way (a hanging
        // write's probe, cancelled when its attempt ends) gives no one a
        // result, so it must not let the callers queued behind it skip theirs.
        *last = Some(started);
    }

    /// When this node last noticed its write path failing (cleared by
    /// [`Router::take_primary_lost_at`]).
    pub fn take_primary_lost_at(&self) -> Option<Instant> {
        self.primary_lost_at.lock().expect("lost lock").take()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use uuid::Uuid;

    use crate::config::RoutingConfig;
    use crate::model::token::{Lsn, TokenKey};
    use crate::router::cache::CachedDoc;
    use crate::router::Router;
    use crate::store::{RunDoc, Store};

    #[tokio::test]
    async fn a_new_epoch_clears_the_lineage_cache() {
        // A lazy pool: nothing here connects.
        let store = Store::connect_lazy("postgres://127.0.0.1:9/none", 1).unwrap();
        let key = TokenKey::new(&[7; 32]).unwrap();
        let r = Router::new(
            "us-east",
            store,
            vec![],
            RoutingConfig::default(),
            "n1",
            key,
        );
        let run = Uuid::now_v7();
        let doc = CachedDoc {
            doc: Arc::new(serde_json::json!({"status": "completed"})),
            epoch: 1,
            lsn: Lsn(10),
            terminal: true,
            bytes: 24,
            stored_at: Instant::now(),
        };
        r.cache().put(run, RunDoc::Status, doc).await;
        r.observe_epoch(1);
        assert!(
            r.cache().get(run, RunDoc::Status, None).await.is_some(),
            "same epoch keeps it"
        );
        r.observe_epoch(2);
        assert!(
            r.cache().get(run, RunDoc::Status, None).await.is_none(),
            "epoch 2 clears it"
        );
        assert_eq!(r.epoch(), 2);
    }
}
