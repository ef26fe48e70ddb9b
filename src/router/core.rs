//! The [`Router`]: one node's view of where the primary is, the epoch it
//! has seen, the tracker's published local state, and the write path
//! (bounded attempts, rediscovery and retry when the primary moves).
//! Discovery lives in `discovery.rs`, the tracker in `tracker.rs`, the
//! read decision in `plan.rs`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::debug;

use crate::config::RoutingConfig;
use crate::model::token::{Token, TokenKey};
use crate::router::cache::{CacheSettings, CachedDoc, LineageCache};
use crate::router::plan::{plan_read, LocalState, ReadPlan};
use crate::store::{Store, StoreError};

/// How long a probe of a region's database may take before it counts as down.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one write attempt may take before the write path counts as
/// unavailable (and the primary is looked for again).
pub(super) const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a retried write may hang before the primary is looked for
/// again (while it keeps waiting).
const STALL: Duration = Duration::from_millis(100);

/// A rediscovery run next to a hanging write attempt.
type Probe<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// One region's database as this node reaches it.
#[derive(Clone)]
pub struct RegionDb {
    pub name: String,
    pub store: Store,
    pub api_url: Option<String>,
}

pub(super) struct Primary {
    pub(super) region: String,
    pub(super) store: Store,
}

/// Routes one node's database traffic.
pub struct Router {
    pub(super) region: String,
    pub(super) local: Store,
    pub(super) regions: Vec<RegionDb>,
    /// The regions' names (this one's alone without a regions file).
    pub(super) region_names: Vec<String>,
    pub(super) primary: RwLock<Arc<Primary>>,
    pub(super) epoch: AtomicU64,
    pub(super) state: watch::Receiver<LocalState>,
    pub(super) state_tx: watch::Sender<LocalState>,
    pub(super) settings: RoutingConfig,
    pub(super) cache: LineageCache,
    pub(super) primary_lost_at: Mutex<Option<Instant>>,
    /// Held while discovering; holds when the last discovery started.
    pub(super) discovering: tokio::sync::Mutex<Option<Instant>>,
    /// Bumped whenever the primary changes, so writes stuck on the old
    /// one give up at once and retry on the new one.
    pub(super) primary_gen: watch::Sender<u64>,
    /// The cluster's token key (loaded from the database at start).
    pub(super) token_key: TokenKey,
}

impl Router {
    /// `regions` lists every region's database (empty: the local database
    /// is the only one, and the primary). `token_key` is the cluster's
    /// ([`Store::token_key`]): tokens are signed and verified with it.
    pub fn new(
        region: &str,
        local: Store,
        regions: Vec<RegionDb>,
        settings: RoutingConfig,
        node_id: &str,
        token_key: TokenKey,
    ) -> Router {
        let (state_tx, state) = watch::channel(LocalState::default());
        let cache = LineageCache::new(CacheSettings {
            name: format!("lineage-{node_id}"),
            max_entries: settings.cache_entries,
            max_bytes: settings.cache_max_bytes,
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
            token_key,
        }
    }

    /// The cluster's token key: signs the tokens this node hands out and
    /// verifies the ones callers send (in memory).
    pub fn token_key(&self) -> &TokenKey {
        &self.token_key
    }

    /// Waits until the local replica has replayed `token` (true) or the
    /// deadline passes (false). Shares the tracker's channel.
    pub async fn wait_for_token(&self, token: &Token) -> bool {
        let mut rx = self.state.clone();
        let deadline = Duration::from_millis(self.settings.token_wait_ms);
        let ok = tokio::time::timeout(
            deadline,
            rx.wait_for(|s| token.satisfied_by(s.epoch, s.lsn)),
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

    /// Runs a write against the primary, rediscovering and retrying (with
    /// backoff, within `deadline`) while the write path is unavailable: a
    /// primary that moved, was fenced or is briefly unreachable.
    pub async fn write<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, StoreError>
    where
        F: Fn(Store, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.write_within(deadline, WRITE_ATTEMPT_TIMEOUT, f).await
    }

    /// [`Router::write`] for a write that may take longer than a usual one
    /// (a batch of runs): each attempt may take up to `attempt_timeout`
    /// before the write path counts as unavailable.
    pub async fn write_within<T, F, Fut>(
        &self,
        deadline: Duration,
        attempt_timeout: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Store, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let until = Instant::now() + deadline;
        let mut delay = Duration::from_millis(20);
        // Once an attempt failed, a retry that hangs looks for the primary.
        let mut failed = false;
        loop {
            let mut moved = self.primary_gen.subscribe();
            let attempt =
                tokio::time::timeout(attempt_timeout, f(self.write_store(), self.epoch()));
            tokio::pin!(attempt);
            // A rediscovery started while the attempt hangs, polled next to it.
            let mut probe: Option<Probe<'_>> = None;
            let result = loop {
                tokio::select! {
                    r = &mut attempt => {
                        break Some(r.unwrap_or_else(|_| {
                            Err(StoreError::Unavailable(format!(
                                "no answer from the primary within {attempt_timeout:?}"
                            )))
                        }));
                    }
                    // A write stuck on a primary that was just replaced (e.g.
                    // waiting to connect to a stopped server) retries on the
                    // new one at once: it is already re-routed.
                    _ = moved.changed() => break None,
                    // A retry that hangs (the pool retries a refused
                    // connection until its acquire timeout) looks for the
                    // primary every STALL while it waits, so it moves as
                    // soon as a new primary shows, not when the pool gives up.
                    _ = tokio::time::sleep(STALL), if failed && probe.is_none() => {
                        probe = Some(Box::pin(self.rediscover()));
                    }
                    _ = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                        probe = None;
                    }
                }
            };
            // A rediscovery still running here may hold the discovery lock:
            // dropped now, or the `write_failed` below would wait for it
            // while nothing polls it (the node would never rediscover).
            drop(probe);
            let attempt = match result {
                Some(r) => r,
                None if Instant::now() < until => continue,
                None => Err(StoreError::Unavailable("the primary moved".into())),
            };
            match attempt {
                Err(e) if e.is_transient() && Instant::now() + delay < until => {
                    debug!(error = %e, "write path unavailable; rediscovering the primary");
                    failed = true;
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::model::token::TokenKey;

    /// A server that accepts connections and never answers: a probe of it
    /// takes its whole deadline.
    async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        (format!("postgres://swf@127.0.0.1:{port}/swf"), task)
    }

    #[tokio::test]
    async fn a_write_that_fails_while_its_own_rediscovery_runs_does_not_wait_for_it() {
        let (url, server) = black_hole().await;
        let store = Store::connect_lazy(&url, 2).unwrap();
        let region = RegionDb {
            name: "us-east".into(),
            store: store.clone(),
            api_url: None,
        };
        let router = Router::new(
            "us-east",
            store,
            vec![region],
            RoutingConfig::default(),
            "n1",
            TokenKey::new(&[3; 32]).unwrap(),
        );
        // The first attempt fails at once; the next ones hang past STALL
        // (so a rediscovery starts beside them and takes the discovery
        // lock for PROBE_TIMEOUT), then fail while it still runs.
        let calls = AtomicUsize::new(0);
        let write = router.write(Duration::from_secs(1), |_, _| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n > 0 {
                    tokio::time::sleep(STALL * 3).await;
                }
                Err::<(), _>(StoreError::Unavailable("down".into()))
            }
        });
        let done = tokio::time::timeout(Duration::from_secs(20), write).await;
        server.abort();
        let result = done.expect("the write gave up within its deadline, not deadlocked");
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }
}
