//! Region-aware routing of reads and writes (DESIGN section 7).
//!
//! Writes go to the primary, found among the regions' databases (not in
//! recovery, highest epoch). Reads go, in order, to: a cache entry at least
//! as new as the request's token; the local database if it is the primary;
//! the local replica if it has replayed past the token and its lag is under
//! the bound; the replica after a bounded wait for the token; the primary.
//!
//! One tracker task per node polls the local database's replay position and
//! samples the primary's WAL position, and publishes them on a watch
//! channel. Token waits subscribe to that channel: no per-request polling,
//! and the router never blocks on a replica without a deadline.
//!
//! The decision itself is [`plan_read`], a pure function tested as a table.

pub mod cache;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::RoutingConfig;
use crate::model::token::{Lsn, Token};
use crate::router::cache::{CacheSettings, CachedDoc, LineageCache};
use crate::store::{Store, StoreError};

/// Where a read was served from (the `swf-read-source` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    Cache,
    Replica,
    Primary,
}

impl ReadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::Cache => "cache",
            ReadSource::Replica => "replica",
            ReadSource::Primary => "primary",
        }
    }
}

/// What the tracker knows about the local database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalState {
    /// The tracker has heard from the local database recently.
    pub healthy: bool,
    pub is_primary: bool,
    pub epoch: u64,
    /// Replay position (replica) or WAL write position (primary).
    pub lsn: Lsn,
    /// How far behind the primary the replica is, in time (0 on the primary).
    pub lag_ms: u64,
}

/// Where one read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    Cache,
    /// The local database (primary or replica, as the source says).
    Local(ReadSource),
    /// Wait (bounded) for the local replica to replay the token, then read it.
    WaitForReplica,
    Primary,
}

/// Decides where a read goes. `cached` is an entry already known to be fresh.
pub fn plan_read(
    token: Option<&Token>,
    cached: Option<&CachedDoc>,
    local: &LocalState,
    max_lag_ms: u64,
) -> ReadPlan {
    if cached.is_some_and(|c| c.satisfies(token)) {
        return ReadPlan::Cache;
    }
    if !local.healthy {
        return ReadPlan::Primary;
    }
    if local.is_primary {
        return match token {
            // A token from another epoch was written on another timeline; the
            // local primary is only trusted if it is at least that new.
            Some(t) if t.epoch > local.epoch => ReadPlan::Primary,
            _ => ReadPlan::Local(ReadSource::Primary),
        };
    }
    let lag_ok = local.lag_ms <= max_lag_ms;
    match token {
        None if lag_ok => ReadPlan::Local(ReadSource::Replica),
        None => ReadPlan::Primary,
        // Tokens of other epochs never compare by LSN: go to the primary.
        Some(t) if t.epoch != local.epoch => ReadPlan::Primary,
        Some(t) if local.lsn >= t.lsn && lag_ok => ReadPlan::Local(ReadSource::Replica),
        Some(_) if lag_ok => ReadPlan::WaitForReplica,
        Some(_) => ReadPlan::Primary,
    }
}

/// How long a probe of a region's database may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one write attempt may take before the write path counts as
/// unavailable (and the primary is looked for again).
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One region's database as this node reaches it.
#[derive(Clone)]
pub struct RegionDb {
    pub name: String,
    pub store: Store,
    pub api_url: Option<String>,
}

struct Primary {
    region: String,
    store: Store,
}

/// Routes one node's database traffic.
pub struct Router {
    region: String,
    local: Store,
    regions: Vec<RegionDb>,
    /// The regions' names (this one's alone without a regions file).
    region_names: Vec<String>,
    primary: RwLock<Arc<Primary>>,
    epoch: AtomicU64,
    state: watch::Receiver<LocalState>,
    state_tx: watch::Sender<LocalState>,
    settings: RoutingConfig,
    cache: LineageCache,
    primary_lost_at: Mutex<Option<Instant>>,
    /// Held while discovering; holds when the last discovery started.
    discovering: tokio::sync::Mutex<Option<Instant>>,
    /// Bumped whenever the primary changes, so writes stuck on the old
    /// one give up at once and retry on the new one.
    primary_gen: watch::Sender<u64>,
}

impl Router {
    /// `regions` lists every region's database (empty: the local database
    /// is the only one, and the primary).
    pub fn new(
        region: &str,
        local: Store,
        regions: Vec<RegionDb>,
        settings: RoutingConfig,
        node_id: &str,
    ) -> Router {
        let (state_tx, state) = watch::channel(LocalState::default());
        let cache = LineageCache::new(CacheSettings {
            name: format!("lineage-{node_id}"),
            max_entries: settings.cache_entries,
            running_ttl: Duration::from_millis(settings.cache_running_ttl_ms),
            ..CacheSettings::default()
        });
        Router {
            region: region.to_string(),
            primary: RwLock::new(Arc::new(Primary {
                region: region.to_string(),
                store: local.clone(),
            })),
            local,
            region_names: if regions.is_empty() {
                vec![region.to_string()]
            } else {
                regions.iter().map(|r| r.name.clone()).collect()
            },
            regions,
            epoch: AtomicU64::new(1),
            state,
            state_tx,
            settings,
            cache,
            primary_lost_at: Mutex::new(None),
            discovering: tokio::sync::Mutex::new(None),
            primary_gen: watch::Sender::new(0),
        }
    }

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
                let res = tokio::time::timeout(PROBE_TIMEOUT, r.store.role()).await;
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

    /// The tracker: polls the local database and, with other regions,
    /// samples the primary in a concurrent loop of its own (a WAN round trip
    /// must not slow the local polling). Runs until `shutdown`; dropping the
    /// future (a node's JoinSet aborting it) stops both loops.
    pub async fn track(self: Arc<Self>, shutdown: CancellationToken) {
        // Primary WAL positions and when they were seen; the replica's time
        // lag is the age of the oldest position it has not replayed yet.
        let samples: Arc<Mutex<VecDeque<(Lsn, Instant)>>> = Arc::default();
        let sampler = async {
            if !self.regions.is_empty() {
                self.sample_primary(&samples, &shutdown).await;
            }
        };
        tokio::join!(sampler, self.poll_local(&samples, &shutdown));
    }

    async fn sample_primary(
        &self,
        samples: &Mutex<VecDeque<(Lsn, Instant)>>,
        shutdown: &CancellationToken,
    ) {
        loop {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, self.write_store().position()).await;
            match probe.unwrap_or_else(|_| Err(StoreError::Unavailable("no answer".into()))) {
                Ok((false, _, lsn)) if !self.local_state().is_primary => {
                    let mut q = samples.lock().expect("samples lock");
                    if q.back().is_none_or(|(l, _)| lsn > *l) {
                        q.push_back((lsn, Instant::now()));
                    }
                    if q.len() > 10_000 {
                        q.pop_front();
                    }
                }
                Ok((false, _, _)) => {}
                // The primary is gone or became a replica: find the new one.
                Ok((true, _, _)) => self.write_failed().await,
                Err(e) => {
                    debug!(error = %e, "sample the primary's WAL position");
                    self.write_failed().await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn poll_local(
        &self,
        samples: &Mutex<VecDeque<(Lsn, Instant)>>,
        shutdown: &CancellationToken,
    ) {
        let mut last_ok = Instant::now() - Duration::from_secs(60);
        let tick = Duration::from_millis(if self.regions.is_empty() { 50 } else { 2 });
        loop {
            let now = Instant::now();
            let mut st = *self.state.borrow();
            match self.local.position().await {
                Ok((in_recovery, epoch, lsn)) => {
                    last_ok = now;
                    st.healthy = true;
                    st.is_primary = !in_recovery;
                    st.epoch = epoch;
                    st.lsn = lsn;
                    self.observe_epoch(epoch);
                }
                Err(e) => debug!(error = %e, "track local database"),
            }
            if now.duration_since(last_ok) > Duration::from_secs(2) {
                st.healthy = false;
            }
            st.lag_ms = if st.is_primary {
                0
            } else {
                let mut q = samples.lock().expect("samples lock");
                while q.len() > 1 && q.front().is_some_and(|(l, _)| *l <= st.lsn) {
                    q.pop_front();
                }
                match q.front() {
                    Some((l, at)) if *l > st.lsn => now.duration_since(*at).as_millis() as u64,
                    _ => 0,
                }
            };
            metrics::gauge!("swf_replica_lag_ms", "region" => self.region.clone())
                .set(st.lag_ms as f64);
            self.state_tx.send_if_modified(|old| {
                let changed = *old != st;
                *old = st;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Waits until the local replica has replayed `token` (true) or the
    /// deadline passes (false). Shares the tracker's channel.
    pub async fn wait_for_token(&self, token: &Token) -> bool {
        let mut rx = self.state.clone();
        let deadline = Duration::from_millis(self.settings.token_wait_ms);
        let ok = tokio::time::timeout(
            deadline,
            rx.wait_for(|s| s.epoch == token.epoch && s.lsn >= token.lsn),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        metrics::counter!("swf_token_waits_total",
            "outcome" => if ok { "satisfied" } else { "timed_out_to_primary" })
        .increment(1);
        ok
    }

    /// Where a read with `token` should go, given an optional fresh cache entry.
    pub fn plan(&self, token: Option<&Token>, cached: Option<&CachedDoc>) -> ReadPlan {
        if let Some(t) = token {
            self.observe_epoch(t.epoch);
        }
        plan_read(
            token,
            cached,
            &self.local_state(),
            self.settings.max_replica_lag_ms,
        )
    }

    pub fn local_state(&self) -> LocalState {
        *self.state.borrow()
    }

    pub fn cache(&self) -> &LineageCache {
        &self.cache
    }

    /// The store writes go to (the current primary).
    pub fn write_store(&self) -> Store {
        self.primary.read().expect("primary lock").store.clone()
    }

    /// This region's database.
    pub fn local_store(&self) -> &Store {
        &self.local
    }

    /// Highest epoch seen; writes carry it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records an epoch seen in a token or a database.
    pub fn observe_epoch(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The region whose database is the primary now.
    pub fn write_region(&self) -> String {
        self.primary.read().expect("primary lock").region.clone()
    }

    /// Every region's name (this node's first when it runs alone).
    pub fn region_names(&self) -> &[String] {
        &self.region_names
    }

    pub fn regions(&self) -> &[RegionDb] {
        &self.regions
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
        // Callers that queued behind a discovery that started after they
        // failed take its result instead of running another.
        let asked_at = Instant::now();
        let mut last = self.discovering.lock().await;
        if last.is_some_and(|t| t >= asked_at) {
            return;
        }
        *last = Some(Instant::now());
        match self.discover_primary().await {
            Ok(()) => {}
            Err(e) => debug!(error = %e, "rediscover the primary"),
        }
    }

    /// When this node last noticed its write path failing (cleared by
    /// [`Router::take_primary_lost_at`]).
    pub fn take_primary_lost_at(&self) -> Option<Instant> {
        self.primary_lost_at.lock().expect("lost lock").take()
    }

    /// Runs a write against the primary, rediscovering and retrying (with
    /// backoff, within `deadline`) while the write path is unavailable: a
    /// primary that moved, was fenced or is briefly unreachable.
    pub async fn write<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, StoreError>
    where
        F: Fn(Store, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let until = Instant::now() + deadline;
        let mut delay = Duration::from_millis(20);
        loop {
            let mut moved = self.primary_gen.subscribe();
            let attempt = tokio::select! {
                r = tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, f(self.write_store(), self.epoch())) => {
                    r.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(format!(
                            "no answer from the primary within {WRITE_ATTEMPT_TIMEOUT:?}"
                        )))
                    })
                }
                // A write stuck on a primary that was just replaced (e.g.
                // waiting to connect to a stopped server) retries on the new
                // one at once: it is already re-routed.
                _ = moved.changed() => {
                    if Instant::now() < until {
                        continue;
                    }
                    Err(StoreError::Unavailable("the primary moved".into()))
                }
            };
            match attempt {
                Err(e) if e.is_transient() && Instant::now() + delay < until => {
                    debug!(error = %e, "write path unavailable; rediscovering the primary");
                    self.write_failed().await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(epoch: u64, lsn: u64) -> CachedDoc {
        CachedDoc {
            doc: Arc::new(json!({})),
            epoch,
            lsn: Lsn(lsn),
            terminal: true,
            stored_at: Instant::now(),
        }
    }

    #[test]
    fn read_plan_table() {
        let tok = |e, l| {
            Some(Token {
                epoch: e,
                lsn: Lsn(l),
            })
        };
        let replica = |lsn, lag| LocalState {
            healthy: true,
            is_primary: false,
            epoch: 1,
            lsn: Lsn(lsn),
            lag_ms: lag,
        };
        let primary = LocalState {
            healthy: true,
            is_primary: true,
            epoch: 1,
            lsn: Lsn(500),
            lag_ms: 0,
        };
        let down = LocalState::default();
        use ReadPlan::*;
        use ReadSource::{Primary as P, Replica as R};
        // (case, token, cache entry, local, expected) with max lag 1000 ms
        type Case = (
            &'static str,
            Option<Token>,
            Option<CachedDoc>,
            LocalState,
            ReadPlan,
        );
        let cases: Vec<Case> = vec![
            (
                "cache without token",
                None,
                Some(doc(1, 10)),
                replica(0, 0),
                Cache,
            ),
            (
                "cache as new as token",
                tok(1, 10),
                Some(doc(1, 10)),
                replica(0, 0),
                Cache,
            ),
            (
                "cache older than token",
                tok(1, 11),
                Some(doc(1, 10)),
                replica(100, 0),
                Local(R),
            ),
            (
                "cache of older epoch",
                tok(2, 1),
                Some(doc(1, 10)),
                primary,
                Primary,
            ),
            ("local primary", None, None, primary, Local(P)),
            ("local primary, token", tok(1, 900), None, primary, Local(P)),
            (
                "local primary, newer-epoch token",
                tok(2, 1),
                None,
                primary,
                Primary,
            ),
            ("replica, no token", None, None, replica(100, 10), Local(R)),
            (
                "replica lagging, no token",
                None,
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "replica replayed token",
                tok(1, 100),
                None,
                replica(100, 0),
                Local(R),
            ),
            (
                "replica behind token",
                tok(1, 101),
                None,
                replica(100, 0),
                WaitForReplica,
            ),
            (
                "replica behind token, lagging",
                tok(1, 101),
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "replica replayed, lagging",
                tok(1, 50),
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "token of another epoch",
                tok(2, 1),
                None,
                replica(100, 0),
                Primary,
            ),
            (
                "token of an older epoch",
                tok(1, 1),
                None,
                LocalState {
                    epoch: 2,
                    ..replica(100, 0)
                },
                Primary,
            ),
            ("local database down", None, None, down, Primary),
            ("local down, cache hit", None, Some(doc(1, 1)), down, Cache),
        ];
        for (name, token, cached, local, want) in cases {
            assert_eq!(
                plan_read(token.as_ref(), cached.as_ref(), &local, 1000),
                want,
                "{name}"
            );
        }
    }
}
