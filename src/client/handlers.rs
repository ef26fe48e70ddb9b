//! Which handlers a submit may name (DESIGN 10.4): the built-ins and this
//! node's own on any queue; any other only on a queue some executor pool
//! advertises it for (its node's heartbeat lists the handlers it runs), so
//! an edge node refuses a handler no executor has (`unknown_handler`),
//! unless `limits.allow_unadvertised_handlers`.
//!
//! The advertised set is read from the nodes table (where reads go) only
//! for a workflow that names a handler this node does not have, and kept
//! for [`FRESH`]; a handler not in a set older than [`RECHECK`] is looked
//! up again before the submit is refused, so a worker that just started is
//! seen within one heartbeat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Advertised, Client, ClientError};
use crate::model::workflow::{WorkflowSpec, DEFAULT_QUEUE};

/// How long an advertised set is used without a new read.
const FRESH: Duration = Duration::from_secs(5);
/// A set at least this old is read again before a handler is refused.
const RECHECK: Duration = Duration::from_millis(500);
/// Nodes heard from within this long count (3 default heartbeats).
const WITHIN_MS: u64 = 15_000;

impl Client {
    /// The advertised set when some of `specs` name a handler this node
    /// does not have (or have a decomposer make their steps); None when
    /// none do or the node accepts unadvertised handlers.
    pub(super) async fn advertised_for(
        &self,
        specs: &[&WorkflowSpec],
    ) -> Result<Option<Advertised>, ClientError> {
        if self.limits.allow_unadvertised_handlers {
            return Ok(None);
        }
        let missing: Vec<(String, String)> = specs
            .iter()
            .flat_map(|s| s.steps.iter())
            .filter(|st| !self.registry.has_handler(&st.handler))
            .map(|st| {
                let q = st.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into());
                (q, st.handler.clone())
            })
            .collect();
        let decomposed = specs
            .iter()
            .any(|s| s.steps.is_empty() && s.decomposer.is_some());
        if missing.is_empty() && !decomposed {
            return Ok(None);
        }
        let mut cached = self.advertised.cached.lock().await;
        let stale = |age: Duration, set: &Advertised| {
            age > FRESH || (age > RECHECK && missing.iter().any(|m| !set.contains(m)))
        };
        match &*cached {
            Some((at, set)) if !stale(at.elapsed(), set) => return Ok(Some(set.clone())),
            _ => {}
        }
        let pairs = self
            .router
            .local_store()
            .advertised_handlers(WITHIN_MS)
            .await
            .map_err(ClientError::from_read)?;
        let set: Advertised = Arc::new(pairs.into_iter().collect());
        *cached = Some((Instant::now(), set.clone()));
        Ok(Some(set))
    }

    /// Whether a step may name `handler` on `queue`.
    pub(super) fn handler_known(
        &self,
        advertised: Option<&Advertised>,
        handler: &str,
        queue: &str,
    ) -> bool {
        self.registry.has_handler(handler)
            || self.limits.allow_unadvertised_handlers
            || advertised.is_some_and(|a| a.contains(&(queue.to_string(), handler.to_string())))
    }
}
