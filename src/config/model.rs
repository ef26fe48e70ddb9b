//! The typed node configuration: [`Config`] and its sections, with the defaults a key takes
//! when the file leaves it out, plus [`NodeType`] and the side-file records ([`RegionSpec`],
//! [`TokenSpec`]). Plain data: nothing here reads a file or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::names::redact_url;

/// Which roles a node runs, derived from `enable_client` and `enable_executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Client and executor.
    Hybrid,
    /// Client only: accepts API calls, runs no tasks.
    Edge,
    /// Executor only: runs tasks, serves no API calls.
    Worker,
}

impl NodeType {
    /// The lowercase name used in output and in DESIGN.md.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Hybrid => "hybrid",
            NodeType::Edge => "edge",
            NodeType::Worker => "worker",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated node configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node_id: String,
    pub region: String,
    /// The write region at start; the live value follows promotions.
    pub write_region: String,
    pub enable_client: bool,
    pub enable_executor: bool,
    /// Already resolved against the config file's directory when written as a relative path.
    pub regions_file: Option<PathBuf>,
    pub api: ApiConfig,
    pub database: DatabaseConfig,
    /// Empty on an edge node (pools there are ignored, with a warning).
    pub worker_pools: BTreeMap<String, PoolConfig>,
    pub executor: ExecutorConfig,
    pub limits: LimitsConfig,
    pub handlers: HandlersConfig,
    pub routing: RoutingConfig,
    pub drills: DrillHooks,
    pub auth: AuthConfig,
    pub retention: RetentionConfig,
    /// Every region and its database endpoint, from `regions_file`; empty
    /// when the node runs alone in its region (its database is the primary).
    pub regions: Vec<RegionSpec>,
    /// The file this came from; not a TOML key.
    pub source: Option<PathBuf>,
}

/// Shell commands a drill runs instead of its own steps, so a production
/// deployment can delegate fencing, promotion and fault injection to its HA
/// manager (Patroni, CloudNativePG, ...). Each runs with `sh -c` and the
/// environment `SWF_DRILL_REGION` (the region acted on), `SWF_DRILL_FROM`
/// and `SWF_DRILL_TO`; a non-zero exit fails the drill.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrillHooks {
    /// Make the old primary refuse writes (instead of SQL fencing).
    pub fence_command: Option<String>,
    /// Promote the target (instead of `pg_promote()`); the drill then
    /// waits for it to leave recovery and bumps the epoch itself.
    pub promote_command: Option<String>,
    /// Simulate the loss of the old primary (failover drills).
    pub kill_command: Option<String>,
    /// Turn the old primary into a replica of the new one afterwards.
    pub rejoin_command: Option<String>,
    /// `drills.manager`: who moves the primary in a drill.
    pub manager: DrillManager,
    /// `[drills.patroni.<region>]`: each region's Patroni REST API, with
    /// `drills.manager = "patroni"`.
    pub patroni: BTreeMap<String, PatroniMember>,
}

/// Who moves the primary in a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrillManager {
    /// The drill itself, with SQL (and any hook commands).
    #[default]
    Sql,
    /// Patroni, through each region's REST API: switchovers with
    /// `POST /switchover`, failovers by stopping the leader hard
    /// (`kill_command`) and letting Patroni elect the target.
    Patroni,
}

/// One region's Patroni.
#[derive(Clone, PartialEq, Eq)]
pub struct PatroniMember {
    /// Its REST API, e.g. `http://10.0.0.5:8008` (credentials for the
    /// API's basic auth may sit in the URL: `http://user:pass@host:8008`).
    pub url: String,
    /// Its member name in the Patroni cluster (default: the region's name).
    pub member: String,
}

impl fmt::Debug for PatroniMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatroniMember")
            .field("url", &redact_url(&self.url))
            .field("member", &self.member)
            .finish()
    }
}

/// How reads are routed (DESIGN section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Reads without a token go to the primary when the local replica lags more.
    pub max_replica_lag_ms: u64,
    /// How long a read with a token waits for the local replica to replay it.
    pub token_wait_ms: u64,
    /// Most documents the lineage cache keeps (0: none).
    pub cache_entries: u64,
    /// Most bytes of memory the lineage cache's documents hold (0: none).
    pub cache_max_bytes: u64,
    /// How long a running run's status or lineage may be served from the cache.
    pub cache_running_ttl_ms: u64,
    /// Timeout of a call forwarded to another region's node.
    pub forward_timeout_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            max_replica_lag_ms: 1_000,
            token_wait_ms: 500,
            cache_entries: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            cache_running_ttl_ms: 250,
            forward_timeout_ms: 10_000,
        }
    }
}

/// Retention of finished runs (`[retention]`): how long a completed, failed
/// or cancelled run is kept before a node deletes it with its steps,
/// attempts, dependency edges and signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// A finished run is deleted once it finished longer ago than this;
    /// `None` (`finished_after = "off"`) keeps every run.
    pub finished_after: Option<Duration>,
    /// Most runs deleted in one transaction.
    pub batch_size: usize,
    /// Pause between purges once a batch came back less than full.
    pub interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            finished_after: Some(Duration::from_secs(7 * 86_400)),
            batch_size: 1000,
            interval_ms: 60_000,
        }
    }
}

/// One region of a regions file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    /// This region's database (primary or replica) as this node reaches it.
    pub database_url: String,
    /// Where calls pinned to this region are forwarded; when absent, to a
    /// healthy client node of the region from the heartbeat table.
    #[serde(default)]
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// What peers use to forward pinned calls; no trailing slash.
    pub public_url: String,
    /// PEM certificate chain and key: the API serves HTTPS when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA: clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// PEM CA that peers' certificates are verified against when this node
    /// calls them (forwarding, drills); unset: the built-in web roots.
    pub peer_ca: Option<PathBuf>,
    /// Connections served at once; past it, new ones wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// A client that has not sent a whole request head within this long is
    /// disconnected (slow-header attacks).
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection idle between requests for longer than this
    /// is closed.
    pub idle_timeout_ms: u64,
    /// Requests served at once to callers that need no token (`/health*`,
    /// open `/metrics` and `/health/info`, paths outside `/v1` no route
    /// matches); past it they answer 503 `overloaded` at once.
    pub anonymous_concurrency: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 4000));
        ApiConfig {
            listen,
            public_url: format!("http://{listen}"),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            peer_ca: None,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            anonymous_concurrency: 4,
        }
    }
}

/// This region's database endpoint. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    /// The URL with any password replaced by `***`, safe to print or log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Concurrent executor slots.
    pub size: usize,
    /// The queue this pool polls.
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub heartbeat_interval_ms: u64,
    pub poll_interval_ms: u64,
    pub visibility_margin_ms: u64,
    pub lease_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Most tasks claimed in one round trip.
    pub claim_batch: usize,
    /// Tasks a pool always claims ahead of its free slots (the prefetch
    /// buffer's floor; its measured pace may ask for more).
    pub prefetch_min: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            heartbeat_interval_ms: 5_000,
            poll_interval_ms: 1_000,
            visibility_margin_ms: 2_000,
            lease_ms: 15_000,
            shutdown_grace_ms: 10_000,
            claim_batch: 500,
            prefetch_min: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_steps: usize,
    pub max_id_len: usize,
    pub max_goal_len: usize,
    pub max_json_depth: usize,
    /// A request still unanswered after this gets 408 (drills are exempt).
    pub request_timeout_ms: u64,
    /// Requests served at once; more are shed with 503 and Retry-After.
    pub max_concurrent_requests: usize,
    /// Requests per second per API token (a bucket of twice that); 429 past it.
    pub per_token_rate_per_s: u64,
    /// Largest handler output (serialized JSON) stored; a larger one fails
    /// its attempt with `output_too_large`, not retried.
    pub max_output_bytes: usize,
    /// Most pgmq queues in the cluster's database that submits may create;
    /// past it a submit answers 400 `too_many_queues`.
    pub max_queues: usize,
    /// Most workflows in one `POST /v1/workflows/batch`; more answer 400.
    pub max_batch: usize,
    /// Body limit of `POST /v1/workflows/batch` (each workflow in it is
    /// still held to `max_body_bytes`); 413 `payload_too_large` past it.
    pub max_batch_body_bytes: usize,
    /// Accept workflows naming handlers no executor advertises (DESIGN 10.4).
    pub allow_unadvertised_handlers: bool,
    /// Most items one `map` step may have (its source's length).
    pub max_map_items: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1 << 20,
            max_steps: 1000,
            max_id_len: 128,
            max_goal_len: 1024,
            max_json_depth: 32,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 1024,
            per_token_rate_per_s: 1000,
            max_output_bytes: 1 << 20,
            max_queues: 256,
            max_batch: 1000,
            max_batch_body_bytes: 16 << 20,
            allow_unadvertised_handlers: false,
            max_map_items: 10_000,
        }
    }
}

/// Bearer-token authentication of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// On by default; `swf dev` turns it off. With no tokens, every
    /// protected call is refused.
    pub enabled: bool,
    /// A TOML file of `[[tokens]]` with `name`, `sha256` (hex of the token)
    /// and `scopes` (`read`, `submit`, `admin`).
    pub tokens_file: Option<PathBuf>,
    /// Whether `/metrics` and `/health/info` need a `read` token too.
    pub protect_metrics: bool,
    pub protect_info: bool,
    /// Loaded from `tokens_file`; never printed.
    pub tokens: Vec<TokenSpec>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            tokens_file: None,
            protect_metrics: false,
            protect_info: false,
            tokens: Vec::new(),
        }
    }
}

/// One API token: only a hash of it is stored.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub name: String,
    /// Lower-case hex SHA-256 of the token (`swf auth hash-token`).
    pub sha256: String,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Handlers for real work (DESIGN 10.4), declared by name: the node runs
/// `http:<name>` and `command:<name>` for exactly these (the config is the
/// allow-list). `shell_allow`/`http_allow` are the seed's unused lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlersConfig {
    pub shell_allow: Vec<String>,
    pub http_allow: Vec<String>,
    pub http: BTreeMap<String, HttpHandlerConfig>,
    pub command: BTreeMap<String, CommandHandlerConfig>,
}

/// `[handlers.http.<name>]`: POST the task input as JSON to `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpHandlerConfig {
    pub url: String,
    pub timeout_ms: u64,
    /// Signs each body: header `swf-signature: sha256=<hex HMAC-SHA256>`.
    pub secret: Option<String>,
}

impl std::fmt::Debug for HttpHandlerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHandlerConfig")
            .field("url", &self.url)
            .field("timeout_ms", &self.timeout_ms)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[handlers.command.<name>]`: run `program` with `args` (no shell), the
/// task input on stdin, the output read from stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandHandlerConfig {
    pub program: String,
    pub args: Vec<String>,
    pub timeout_ms: u64,
    /// Added to the node's environment: `KEY=VALUE` each.
    pub env: Vec<(String, String)>,
}

/// A loaded config plus the warnings found on the way (deprecated keys, ignored settings).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Which roles the node runs, as one name.
    pub fn node_type(&self) -> NodeType {
        match (self.enable_client, self.enable_executor) {
            (true, false) => NodeType::Edge,
            (false, true) => NodeType::Worker,
            // Both false cannot be loaded; a hand-built one reads as hybrid rather than panic.
            _ => NodeType::Hybrid,
        }
    }

    /// The enabled roles, `client` before `executor`.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::with_capacity(2);
        if self.enable_client {
            roles.push("client");
        }
        if self.enable_executor {
            roles.push("executor");
        }
        roles
    }

    /// A hybrid node with every default, as `swf dev` and the tests run it.
    pub fn for_dev(
        node_id: impl Into<String>,
        region: impl Into<String>,
        write_region: impl Into<String>,
        listen: SocketAddr,
        database_url: impl Into<String>,
    ) -> Config {
        Config {
            node_id: node_id.into(),
            region: region.into(),
            write_region: write_region.into(),
            enable_client: true,
            enable_executor: true,
            regions_file: None,
            api: ApiConfig {
                listen,
                public_url: format!("http://{listen}"),
                ..ApiConfig::default()
            },
            database: DatabaseConfig {
                url: database_url.into(),
                max_connections: 16,
            },
            worker_pools: default_pools(),
            executor: ExecutorConfig::default(),
            limits: LimitsConfig::default(),
            handlers: HandlersConfig::default(),
            routing: RoutingConfig::default(),
            drills: DrillHooks::default(),
            auth: AuthConfig {
                enabled: false,
                ..AuthConfig::default()
            },
            retention: RetentionConfig::default(),
            regions: Vec::new(),
            source: None,
        }
    }
}

/// The pools an executor runs when its file names none: `default`, 10 slots, queue `default`.
pub(crate) fn default_pools() -> BTreeMap<String, PoolConfig> {
    let pool = PoolConfig {
        size: 10,
        queue: "default".to_string(),
    };
    BTreeMap::from([("default".to_string(), pool)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_dev_and_node_types() {
        let listen: SocketAddr = "127.0.0.1:4100".parse().expect("addr");
        let mut c = Config::for_dev("dev-1", "us-east", "us-east", listen, "postgres://db");
        assert_eq!(
            (c.node_type(), c.roles()),
            (NodeType::Hybrid, vec!["client", "executor"])
        );
        assert_eq!(c.api.public_url, "http://127.0.0.1:4100");
        assert_eq!(c.worker_pools, default_pools());
        c.enable_client = false;
        assert_eq!(c.node_type(), NodeType::Worker);
        for (t, s) in [
            (NodeType::Hybrid, "hybrid"),
            (NodeType::Edge, "edge"),
            (NodeType::Worker, "worker"),
        ] {
            assert_eq!((t.as_str(), t.to_string()), (s, s.to_string()));
            assert_eq!(serde_json::to_value(t).expect("serializes"), s);
        }
    }
}
