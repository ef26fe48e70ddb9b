//! What every handler shares: the node's facts, its roles' handles, limits,
//! the authenticator, and the forwarder for region-pinned calls.

use std::sync::Arc;

use crate::api::auth::Auth;
use crate::api::tls::ClientTls;
use crate::client::Client;
use crate::executor::Executor;
use crate::router::Router;

/// Facts about the serving node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    pub node_type: String,
    pub roles: Vec<String>,
    pub region: String,
    pub public_url: String,
    pub version: String,
}

/// Shared state of the API: one allocation that every request's handler
/// and middleware clone a pointer to (axum clones the state per extractor).
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl ApiState {
    pub fn new(shared: ApiShared) -> Self {
        ApiState(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiShared;
    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// What [`ApiState`] shares.
pub struct ApiShared {
    pub info: Arc<NodeInfo>,
    pub client: Option<Client>,
    pub executor: Option<Arc<Executor>>,
    pub router: Arc<Router>,
    pub max_body_bytes: usize,
    /// `limits.max_batch` and `limits.max_batch_body_bytes`: the batch submit's.
    pub max_batch: usize,
    pub max_batch_body_bytes: usize,
    pub forwarder: Forwarder,
    pub heartbeat_ms: u64,
    /// Control of the databases for drills (`swf dev`), if any.
    pub control: Option<Arc<dyn crate::drill::ClusterControl>>,
    /// Held while a drill or a recovery runs on this node (one at a time).
    pub drill_running: Arc<tokio::sync::Mutex<()>>,
    pub auth: Arc<Auth>,
    /// Permits for requests served at once (limits.max_concurrent_requests).
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Permits for requests that need no token (api.anonymous_concurrency).
    pub anonymous: Arc<tokio::sync::Semaphore>,
    pub request_timeout: std::time::Duration,
    /// What this node trusts and presents when it calls other nodes.
    pub peer_tls: ClientTls,
}

/// Forwards region-pinned calls to another region's node over a pooled
/// HTTP client (hyper underneath; rustls for https peers).
#[derive(Clone)]
pub struct Forwarder {
    pub(crate) http: reqwest::Client,
}

impl Forwarder {
    pub fn new(timeout: std::time::Duration, tls: &ClientTls) -> Forwarder {
        let http = tls
            .builder()
            .timeout(timeout)
            // Below the peers' api.idle_timeout_ms default (60 s): a pooled
            // connection is dropped here before the peer closes it.
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("HTTP client builds");
        Forwarder { http }
    }
}
