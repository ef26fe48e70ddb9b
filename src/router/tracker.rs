//! The LSN tracker: one task per node polls the local database's replay
//! position and samples the primary's WAL position, and publishes a
//! `LocalState` on a watch channel that token waits and read plans use.
//!
//! Every query the tracker makes has a deadline. A local database that does
//! not answer within [`TRACK_TIMEOUT`] (a hung or frozen replica) is marked
//! unhealthy at once, so reads go to the primary until it answers again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::model::token::Lsn;
use crate::router::core::{Router, PROBE_TIMEOUT};
use crate::store::StoreError;

/// How long one poll of the local database may take before the local
/// state turns unhealthy.
pub const TRACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Without a successful poll for this long, the local state is unhealthy
/// (a database that answers with errors).
const UNHEALTHY_AFTER: Duration = Duration::from_secs(2);

impl Router {
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
            let polled = tokio::time::timeout(TRACK_TIMEOUT, self.local.position()).await;
            match polled {
                Ok(Ok((in_recovery, epoch, lsn))) => {
                    last_ok = now;
                    st.healthy = true;
                    st.is_primary = !in_recovery;
                    st.epoch = epoch;
                    st.lsn = lsn;
                    self.observe_epoch(epoch);
                }
                Ok(Err(e)) => debug!(error = %e, "track local database"),
                // A database that does not answer in time (hung, frozen, cut
                // off) serves no reads until it answers again.
                Err(_) => {
                    debug!("track local database: no answer within {TRACK_TIMEOUT:?}");
                    st.healthy = false;
                }
            }
            if now.duration_since(last_ok) > UNHEALTHY_AFTER {
                st.healthy = false;
            }
            st.lag_ms = if st.is_primary {
                0
            } else {
                lag_ms(samples, st.lsn, now)
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
}

/// The replica's time lag: the age of the oldest primary position it has
/// not replayed yet (positions it has replayed are dropped).
fn lag_ms(samples: &Mutex<VecDeque<(Lsn, Instant)>>, replayed: Lsn, now: Instant) -> u64 {
    let mut q = samples.lock().expect("samples lock");
    while q.len() > 1 && q.front().is_some_and(|(l, _)| *l <= replayed) {
        q.pop_front();
    }
    match q.front() {
        Some((l, at)) if *l > replayed => now.duration_since(*at).as_millis() as u64,
        _ => 0,
    }
}
