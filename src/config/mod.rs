//! Node configuration: the TOML node file (DESIGN.md section 4), its `SWF_*` environment
//! overrides, validation, legacy-key handling and the `swf config check` / `swf config migrate`
//! output.
//!
//! Loading is a pipeline over a `toml::Table`, so every step can name the dotted key it is
//! looking at:
//!
//! 1. parse the text (syntax errors carry line and column);
//! 2. rewrite legacy `[[worker_pools]]` arrays into `[worker_pools.<name>]` tables;
//! 3. apply `SWF_<KEY>` environment overrides (nesting with `__`);
//! 4. resolve the legacy `mode` key into `enable_client` / `enable_executor`;
//! 5. deserialize with `deny_unknown_fields` (through `serde_path_to_error`, for the key path);
//! 6. validate values and fill in defaults.
//!
//! Deprecations and ignored settings come back as warnings in [`Loaded`]; the caller decides
//! how to show them (log line for `swf serve`, stderr for `swf config check`).
//! The database URL may hold a password: it is never printed unredacted, including by `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

/// Environment variables starting with `SWF_` that belong to other commands, not to the node
/// file. Any variable starting with `SWF_TEST_` is ignored as well.
pub const IGNORED_ENV: &[&str] = &[
    "SWF_PG_BIN",
    "SWF_LOG",
    "SWF_API_URL",
    "SWF_TOKEN",
    "SWF_CA_CERT",
    "SWF_CLIENT_CERT",
    "SWF_CLIENT_KEY",
    "SWF_TEST_KEEP",
];

/// Upper bound for every `*_ms` setting: one day.
const MAX_MS: i64 = 86_400_000;

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
}

/// How reads are routed (DESIGN section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Reads without a token go to the primary when the local replica lags more.
    pub max_replica_lag_ms: u64,
    /// How long a read with a token waits for the local replica to replay it.
    pub token_wait_ms: u64,
    pub cache_entries: u64,
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
            cache_running_ttl_ms: 250,
            forward_timeout_ms: 10_000,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionsFile {
    regions: Vec<RegionSpec>,
}

/// Reads a side file (regions, tokens) as `T`; errors name the file and `key`.
fn read_toml_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    key: &str,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        file: path.display().to_string(),
        key: key.into(),
        message: e.message().to_string(),
    })
}

/// Loads and validates a regions file: unique valid names, postgres URLs.
pub fn load_regions(path: &Path) -> Result<Vec<RegionSpec>, ConfigError> {
    let file = path.display().to_string();
    let parsed: RegionsFile = read_toml_file(path, "regions")?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in parsed.regions.iter().enumerate() {
        let key = format!("regions[{i}]");
        let bad = |message: String| ConfigError::Invalid {
            file: file.clone(),
            key: key.clone(),
            message,
        };
        if !valid_name(&r.name) {
            return Err(bad(format!("name {:?} is not a valid region name", r.name)));
        }
        if !seen.insert(r.name.clone()) {
            return Err(bad(format!("region `{}` is listed twice", r.name)));
        }
        if !(r.database_url.starts_with("postgres://")
            || r.database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url must start with postgres:// or postgresql://".into(),
            ));
        }
        if let Some(u) = &r.api_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad("api_url must start with http:// or https://".into()));
            }
        }
    }
    if parsed.regions.is_empty() {
        return Err(ConfigError::Invalid {
            file,
            key: "regions".into(),
            message: "lists no region".into(),
        });
    }
    Ok(parsed.regions)
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
}

impl ApiConfig {
    /// The server's TLS files, when the API serves HTTPS.
    pub fn server_tls(&self) -> Option<crate::api::tls::ServerTlsFiles> {
        Some(crate::api::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.client_ca.clone(),
        })
    }

    /// What this node trusts and presents when it calls other nodes.
    pub fn client_tls(&self) -> Result<crate::api::tls::ClientTls, crate::api::tls::TlsError> {
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        crate::api::tls::ClientTls::from_files(
            self.peer_ca.as_deref(),
            identity,
            ("api.peer_ca", "api.tls_cert", "api.tls_key"),
        )
    }
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
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            heartbeat_interval_ms: 5_000,
            poll_interval_ms: 1_000,
            visibility_margin_ms: 2_000,
            lease_ms: 15_000,
            shutdown_grace_ms: 10_000,
            claim_batch: 32,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenSpec>,
}

/// Loads and validates a tokens file.
pub fn load_tokens(path: &Path) -> Result<Vec<TokenSpec>, ConfigError> {
    let file = path.display().to_string();
    let parsed: TokensFile = read_toml_file(path, "tokens")?;
    for (i, t) in parsed.tokens.iter().enumerate() {
        let bad = |message: String| ConfigError::Invalid {
            file: file.clone(),
            key: format!("tokens[{i}]"),
            message,
        };
        if t.name.is_empty() {
            return Err(bad("name must not be empty".into()));
        }
        if t.sha256.len() != 64
            || !t
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "sha256 must be 64 lower-case hex digits (swf auth hash-token)".into(),
            ));
        }
        if let Some(s) = t
            .scopes
            .iter()
            .find(|s| !["read", "submit", "admin"].contains(&s.as_str()))
        {
            return Err(bad(format!(
                "unknown scope `{s}` (use read, submit, admin)"
            )));
        }
    }
    Ok(parsed.tokens)
}

/// Allow-lists for the built-in handlers; empty means the handler may run nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlersConfig {
    pub shell_allow: Vec<String>,
    pub http_allow: Vec<String>,
}

/// A loaded config plus the warnings found on the way (deprecated keys, ignored settings).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Why a config could not be loaded. Every message names the file and, where there is one,
/// the dotted key or the environment variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {}: cannot read: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {file}: invalid TOML at line {line} column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {file}: unknown key `{key}`{}", expected_suffix(.expected))]
    UnknownKey {
        file: String,
        key: String,
        expected: String,
    },
    #[error("config file {file}: key `{key}` is required")]
    Missing { file: String, key: String },
    #[error("config file {file}: key `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("config file {file}: environment variable {var}: {message}")]
    Env {
        file: String,
        var: String,
        message: String,
    },
    #[error(
        "config file {file}: node is disabled: enable_client and enable_executor are both false \
         (a node must have at least one role)"
    )]
    Disabled { file: String },
}

fn expected_suffix(expected: &str) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(" ({expected})")
    }
}

/// Whether `s` is a valid region, pool or queue name: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
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

    /// Reads `path` and applies the `SWF_*` variables of this process's environment.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let source = path.display().to_string();
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("SWF_") || ignored_env(name) {
                continue;
            }
            let value = value.into_string().map_err(|_| ConfigError::Env {
                file: source.clone(),
                var: name.to_string(),
                message: "value is not valid UTF-8".to_string(),
            })?;
            env.push((name.to_string(), value));
        }
        let mut loaded = Self::from_toml_str(&text, &source, &env)?;
        loaded.config.source = Some(path.to_path_buf());
        if let Some(file) = loaded.config.auth.tokens_file.clone() {
            loaded.config.auth.tokens = load_tokens(&file)?;
        }
        if loaded.config.auth.enabled && loaded.config.auth.tokens.is_empty() {
            loaded.warnings.push(
                "key `auth.tokens_file`: auth is enabled and no token is configured, so every \
                 /v1 call will be refused with 401 (set auth.tokens_file, or auth.enabled = false \
                 on a trusted network)"
                    .to_string(),
            );
        }
        if let Some(file) = loaded.config.regions_file.clone() {
            let regions = load_regions(&file)?;
            let c = &loaded.config;
            for (key, name) in [("region", &c.region), ("write_region", &c.write_region)] {
                if !regions.iter().any(|r| &r.name == name) {
                    return Err(ConfigError::Invalid {
                        file: source.clone(),
                        key: key.into(),
                        message: format!("region `{name}` is not listed in {}", file.display()),
                    });
                }
            }
            loaded.config.regions = regions;
        }
        Ok(loaded)
    }

    /// Parses and validates `text` as if read from the file `source`, with `env` as the
    /// environment (only `SWF_*` entries matter). Touches no files.
    pub fn from_toml_str(
        text: &str,
        source: &str,
        env: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let mut ctx = Ctx::new(source);
        let mut table = parse_table(text, source)?;
        let mut warnings = Vec::new();
        if convert_legacy_pools(&mut table, &ctx)? {
            warnings.push(LEGACY_POOLS_WARNING.to_string());
        }
        apply_env(&mut table, env, &mut ctx)?;
        if let Some(warning) = resolve_legacy_mode(&mut table, &ctx)? {
            warnings.push(warning);
        }
        let raw: RawConfig = serde_path_to_error::deserialize(Value::Table(table))
            .map_err(|e| ctx.serde_error(e))?;
        let config = build(raw, &ctx, &mut warnings)?;
        Ok(Loaded { config, warnings })
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
            regions: Vec::new(),
            source: None,
        }
    }
}

fn default_pools() -> BTreeMap<String, PoolConfig> {
    let pool = PoolConfig {
        size: 10,
        queue: "default".to_string(),
    };
    BTreeMap::from([("default".to_string(), pool)])
}

fn ignored_env(name: &str) -> bool {
    IGNORED_ENV.contains(&name) || name.starts_with("SWF_TEST_")
}

/// Error-building context: the file name, and which keys the environment set (so an error
/// about such a key says where the value came from).
struct Ctx {
    file: String,
    env_keys: BTreeMap<String, String>,
}

impl Ctx {
    /// A file named by `key`, relative to the config file's directory.
    fn path(&self, key: &str, v: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be empty")),
            Some(s) => Ok(Some(
                Path::new(&self.file)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(s.trim()),
            )),
        }
    }

    fn new(file: &str) -> Ctx {
        Ctx {
            file: file.to_string(),
            env_keys: BTreeMap::new(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        if let Some(var) = self.env_keys.get(key) {
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            file: self.file.clone(),
            key: key.to_string(),
        }
    }

    fn unknown(&self, key: &str, expected: &str) -> ConfigError {
        ConfigError::UnknownKey {
            file: self.file.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
        }
    }

    fn env(&self, var: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Env {
            file: self.file.clone(),
            var: var.to_string(),
            message: message.into(),
        }
    }

    /// Turns a deserialization error into one naming the dotted key.
    fn serde_error(&self, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        // serde's wording: "unknown field `x`, expected one of `a`, `b`".
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let key = if path == "." {
                field.to_string()
            } else if path == field || path.ends_with(&format!(".{field}")) {
                path
            } else {
                format!("{path}.{field}")
            };
            return self.unknown(&key, expected.trim_start_matches(',').trim());
        }
        self.invalid(&path, message)
    }

    /// Checks an integer setting against `lo..=hi` and converts it to its field's type.
    fn ranged<T: TryFrom<i64>>(
        &self,
        key: &str,
        value: Option<i64>,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        let v = value.unwrap_or(default);
        let range = if hi == i64::MAX {
            format!("must be at least {lo}")
        } else {
            format!("must be between {lo} and {hi}")
        };
        if v < lo || v > hi {
            return Err(self.invalid(key, format!("{range} (got {v})")));
        }
        T::try_from(v).map_err(|_| self.invalid(key, format!("{range} (got {v})")))
    }

    fn name(&self, key: &str, value: &str, what: &str) -> Result<(), ConfigError> {
        if valid_name(value) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!("{what} must be 1 to 64 characters of A-Z a-z 0-9 _ - (got {value:?})"),
            ))
        }
    }
}

fn parse_table(text: &str, source: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        ConfigError::Syntax {
            file: source.to_string(),
            line,
            column,
            // toml's messages can span lines ("invalid string\nexpected ..."): keep one line.
            message: e
                .message()
                .split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        }
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Legacy keys

const LEGACY_POOLS_WARNING: &str = "key `worker_pools` written as an array of tables \
     ([[worker_pools]] with name) is deprecated: write one [worker_pools.<name>] table per pool \
     with size and queue (swf config migrate does this)";

const MODES: &str = "\"orchestrator\", \"client\", \"edge\", \"worker\" or \"executor\"";

/// Rewrites `[[worker_pools]]` (name, size, queue) into `[worker_pools.<name>]` tables.
/// Returns whether there was anything to rewrite.
fn convert_legacy_pools(table: &mut Table, ctx: &Ctx) -> Result<bool, ConfigError> {
    let Some(Value::Array(entries)) = table.get("worker_pools") else {
        return Ok(false);
    };
    let mut pools = Table::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("worker_pools[{i}]");
        let Value::Table(entry) = entry else {
            return Err(ctx.invalid(&at, "each pool must be a table with name, size and queue"));
        };
        let mut pool = Table::new();
        let mut name = None;
        for (key, value) in entry {
            match (key.as_str(), value) {
                ("name", Value::String(s)) => name = Some(s.clone()),
                ("name", _) => return Err(ctx.invalid(&format!("{at}.name"), "must be a string")),
                ("size" | "queue", _) => {
                    pool.insert(key.clone(), value.clone());
                }
                _ => {
                    let expected = "expected `name`, `size` or `queue`";
                    return Err(ctx.unknown(&format!("{at}.{key}"), expected));
                }
            }
        }
        let name = name.ok_or_else(|| ctx.missing(&format!("{at}.name")))?;
        if pools.contains_key(&name) {
            return Err(ctx.invalid(&format!("{at}.name"), format!("duplicate pool {name:?}")));
        }
        pools.insert(name, Value::Table(pool));
    }
    table.insert("worker_pools".to_string(), Value::Table(pools));
    Ok(true)
}

/// Removes a legacy `mode` key, setting `enable_client`/`enable_executor` where they are not
/// set explicitly. Returns the deprecation warning, if there was a `mode`.
fn resolve_legacy_mode(table: &mut Table, ctx: &Ctx) -> Result<Option<String>, ConfigError> {
    let Some(mode) = table.remove("mode") else {
        return Ok(None);
    };
    let (client, executor) = match mode.as_str() {
        Some("orchestrator") => (true, true),
        Some("client" | "edge") => (true, false),
        Some("worker" | "executor") => (false, true),
        _ => return Err(ctx.invalid("mode", format!("must be one of {MODES} (got {mode})"))),
    };
    table
        .entry("enable_client")
        .or_insert(Value::Boolean(client));
    table
        .entry("enable_executor")
        .or_insert(Value::Boolean(executor));
    Ok(Some(format!(
        "key `mode` is deprecated: replace mode = {mode} with enable_client = {client} \
         and enable_executor = {executor}"
    )))
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

/// The type of a leaf key, which decides how an environment value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    StrList,
}

enum Slot {
    Leaf(Kind),
    Table,
    Unknown,
}

/// Where a dotted key path lands in the schema. Must agree with the `Raw*` structs below
/// (the test `schema_matches_structs` checks this).
fn slot(path: &[&str]) -> Slot {
    use Kind::*;
    match path {
        ["node_id" | "region" | "write_region" | "regions_file" | "mode"] => Slot::Leaf(Str),
        ["enable_client" | "enable_executor"] => Slot::Leaf(Bool),
        ["api" | "database" | "worker_pools" | "executor" | "limits" | "handlers" | "routing"
        | "drills" | "auth"] => Slot::Table,
        ["auth", "enabled" | "protect_metrics" | "protect_info"] => Slot::Leaf(Bool),
        ["auth", "tokens_file"] => Slot::Leaf(Str),
        ["limits", "request_timeout_ms" | "max_concurrent_requests" | "per_token_rate_per_s"] => {
            Slot::Leaf(Int)
        }
        ["drills", "fence_command" | "promote_command" | "kill_command" | "rejoin_command"] => {
            Slot::Leaf(Str)
        }
        ["routing", "max_replica_lag_ms"
        | "token_wait_ms"
        | "cache_entries"
        | "cache_running_ttl_ms"
        | "forward_timeout_ms"] => Slot::Leaf(Int),
        ["api", "listen" | "public_url" | "tls_cert" | "tls_key" | "client_ca" | "peer_ca"] => {
            Slot::Leaf(Str)
        }
        ["database", "url"] => Slot::Leaf(Str),
        ["database", "max_connections"] => Slot::Leaf(Int),
        ["worker_pools", _] => Slot::Table,
        ["worker_pools", _, "size"] => Slot::Leaf(Int),
        ["worker_pools", _, "queue"] => Slot::Leaf(Str),
        ["executor", "heartbeat_interval_ms"
        | "poll_interval_ms"
        | "visibility_margin_ms"
        | "lease_ms"
        | "shutdown_grace_ms"
        | "claim_batch"] => Slot::Leaf(Int),
        ["limits", "max_body_bytes" | "max_steps" | "max_id_len" | "max_goal_len" | "max_json_depth"] => {
            Slot::Leaf(Int)
        }
        ["handlers", "shell_allow" | "http_allow"] => Slot::Leaf(StrList),
        _ => Slot::Unknown,
    }
}

/// Applies `SWF_*` overrides in name order, recording which key each one set.
fn apply_env(
    table: &mut Table,
    env: &[(String, String)],
    ctx: &mut Ctx,
) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with("SWF_") && !ignored_env(name))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let lower = var["SWF_".len()..].to_lowercase();
        let path: Vec<&str> = lower.split("__").collect();
        let key = path.join(".");
        let kind = match slot(&path) {
            Slot::Leaf(kind) => kind,
            Slot::Table => {
                let msg = format!("`{key}` is a table; set one of its keys, e.g. {var}__<KEY>");
                return Err(ctx.env(var, msg));
            }
            Slot::Unknown => return Err(ctx.env(var, format!("unknown key `{key}`"))),
        };
        let value = env_value(kind, raw).ok_or_else(|| {
            let want = match kind {
                Kind::Bool => "true or false",
                Kind::Int => "an integer",
                Kind::Str | Kind::StrList => "a list of strings",
            };
            ctx.env(var, format!("key `{key}`: expected {want} (got {raw:?})"))
        })?;
        let (leaf, parents) = path.split_last().ok_or_else(|| ctx.env(var, "empty key"))?;
        let mut node = &mut *table;
        for (depth, part) in parents.iter().enumerate() {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            node = match entry {
                Value::Table(t) => t,
                _ => {
                    let at = parents[..=depth].join(".");
                    return Err(ctx.env(var, format!("key `{at}` in the file is not a table")));
                }
            };
        }
        node.insert(leaf.to_string(), value);
        ctx.env_keys.insert(key, var.clone());
    }
    Ok(())
}

/// Reads an environment value as the TOML value for a key of type `kind`. Strings are taken
/// verbatim (so `SWF_NODE_ID=42` is the string "42"); lists are a TOML array or comma-separated.
fn env_value(kind: Kind, raw: &str) -> Option<Value> {
    let scalar = || {
        let doc = format!("v = {}", raw.trim());
        doc.parse::<Table>().ok()?.remove("v")
    };
    match kind {
        Kind::Str => Some(Value::String(raw.to_string())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Boolean(true)),
            "false" => Some(Value::Boolean(false)),
            _ => None,
        },
        Kind::Int => scalar().filter(Value::is_integer),
        Kind::StrList if raw.trim_start().starts_with('[') => {
            scalar().filter(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_str)))
        }
        Kind::StrList => Some(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Deserialization and validation

// Integers are read as i64 (TOML's integer type) so range errors can show the value given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Option<String>,
    region: Option<String>,
    write_region: Option<String>,
    enable_client: Option<bool>,
    enable_executor: Option<bool>,
    regions_file: Option<String>,
    api: Option<RawApi>,
    database: Option<RawDatabase>,
    worker_pools: Option<BTreeMap<String, RawPool>>,
    executor: Option<RawExecutor>,
    limits: Option<RawLimits>,
    handlers: Option<RawHandlers>,
    routing: Option<RawRouting>,
    drills: Option<RawDrills>,
    auth: Option<RawAuth>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    enabled: Option<bool>,
    tokens_file: Option<String>,
    protect_metrics: Option<bool>,
    protect_info: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDrills {
    fence_command: Option<String>,
    promote_command: Option<String>,
    kill_command: Option<String>,
    rejoin_command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    max_replica_lag_ms: Option<i64>,
    token_wait_ms: Option<i64>,
    cache_entries: Option<i64>,
    cache_running_ttl_ms: Option<i64>,
    forward_timeout_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
    public_url: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
    peer_ca: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    size: Option<i64>,
    queue: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExecutor {
    heartbeat_interval_ms: Option<i64>,
    poll_interval_ms: Option<i64>,
    visibility_margin_ms: Option<i64>,
    lease_ms: Option<i64>,
    shutdown_grace_ms: Option<i64>,
    claim_batch: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<i64>,
    max_steps: Option<i64>,
    max_id_len: Option<i64>,
    max_goal_len: Option<i64>,
    max_json_depth: Option<i64>,
    request_timeout_ms: Option<i64>,
    max_concurrent_requests: Option<i64>,
    per_token_rate_per_s: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHandlers {
    shell_allow: Option<Vec<String>>,
    http_allow: Option<Vec<String>>,
}

/// Validates a deserialized file and fills in defaults.
fn build(raw: RawConfig, ctx: &Ctx, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let enable_client = raw.enable_client.unwrap_or(true);
    let enable_executor = raw.enable_executor.unwrap_or(true);
    if !enable_client && !enable_executor {
        return Err(ConfigError::Disabled {
            file: ctx.file.clone(),
        });
    }

    let region = raw.region.ok_or_else(|| ctx.missing("region"))?;
    ctx.name("region", &region, "region")?;
    let write_region = raw.write_region.unwrap_or_else(|| region.clone());
    ctx.name("write_region", &write_region, "region")?;
    let node_id = raw
        .node_id
        .unwrap_or_else(|| format!("{}-{region}", hostname()));
    if node_id.is_empty()
        || node_id.chars().count() > 128
        || node_id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        let msg = format!("must be 1 to 128 characters without spaces (got {node_id:?})");
        return Err(ctx.invalid("node_id", msg));
    }

    let regions_file = ctx.path("regions_file", raw.regions_file)?;

    let api = build_api(raw.api.unwrap_or_default(), ctx, warnings)?;
    let database = build_database(raw.database.unwrap_or_default(), ctx)?;
    let executor = build_executor(raw.executor.unwrap_or_default(), ctx)?;
    let limits = build_limits(raw.limits.unwrap_or_default(), ctx)?;
    let handlers = build_handlers(raw.handlers.unwrap_or_default(), ctx)?;
    let routing = build_routing(raw.routing.unwrap_or_default(), ctx)?;
    let a = raw.auth.unwrap_or_default();
    let auth = AuthConfig {
        enabled: a.enabled.unwrap_or(true),
        tokens_file: ctx.path("auth.tokens_file", a.tokens_file)?,
        protect_metrics: a.protect_metrics.unwrap_or(false),
        protect_info: a.protect_info.unwrap_or(false),
        tokens: Vec::new(),
    };
    let d = raw.drills.unwrap_or_default();
    let mut drills = DrillHooks::default();
    for (key, v, slot) in [
        ("fence_command", d.fence_command, &mut drills.fence_command),
        (
            "promote_command",
            d.promote_command,
            &mut drills.promote_command,
        ),
        ("kill_command", d.kill_command, &mut drills.kill_command),
        (
            "rejoin_command",
            d.rejoin_command,
            &mut drills.rejoin_command,
        ),
    ] {
        if let Some(cmd) = v {
            if cmd.trim().is_empty() {
                return Err(ctx.invalid(&format!("drills.{key}"), "must not be empty"));
            }
            *slot = Some(cmd);
        }
    }

    let mut worker_pools = BTreeMap::new();
    let configured = raw.worker_pools.is_some();
    for (name, pool) in raw.worker_pools.unwrap_or_default() {
        let key = format!("worker_pools.{name}");
        ctx.name(&key, &name, "pool name")?;
        let size = ctx.ranged(&format!("{key}.size"), pool.size, 10, 1, 1024)?;
        let queue = pool.queue.unwrap_or_else(|| name.clone());
        ctx.name(&format!("{key}.queue"), &queue, "queue name")?;
        worker_pools.insert(name, PoolConfig { size, queue });
    }
    if !enable_executor {
        if !worker_pools.is_empty() {
            warnings.push(format!(
                "key `worker_pools`: ignored on an edge node (enable_executor = false); \
                 {} pool(s) will not run",
                worker_pools.len()
            ));
        }
        worker_pools.clear();
    } else if !configured {
        worker_pools = default_pools();
    } else if worker_pools.is_empty() {
        warnings
            .push("key `worker_pools`: empty, so this executor node will run no tasks".to_string());
    }

    let source = (!ctx.file.is_empty()).then(|| PathBuf::from(&ctx.file));
    Ok(Config {
        node_id,
        region,
        write_region,
        enable_client,
        enable_executor,
        regions_file,
        api,
        database,
        worker_pools,
        executor,
        limits,
        handlers,
        routing,
        drills,
        auth,
        regions: Vec::new(),
        source,
    })
}

fn build_routing(raw: RawRouting, ctx: &Ctx) -> Result<RoutingConfig, ConfigError> {
    let d = RoutingConfig::default();
    let ms = |key: &str, v: Option<i64>, default: u64| {
        ctx.ranged::<u64>(&format!("routing.{key}"), v, default as i64, 1, MAX_MS)
    };
    Ok(RoutingConfig {
        max_replica_lag_ms: ms(
            "max_replica_lag_ms",
            raw.max_replica_lag_ms,
            d.max_replica_lag_ms,
        )?,
        token_wait_ms: ms("token_wait_ms", raw.token_wait_ms, d.token_wait_ms)?,
        cache_entries: ctx.ranged(
            "routing.cache_entries",
            raw.cache_entries,
            d.cache_entries as i64,
            0,
            100_000_000,
        )?,
        cache_running_ttl_ms: ms(
            "cache_running_ttl_ms",
            raw.cache_running_ttl_ms,
            d.cache_running_ttl_ms,
        )?,
        forward_timeout_ms: ms(
            "forward_timeout_ms",
            raw.forward_timeout_ms,
            d.forward_timeout_ms,
        )?,
    })
}

fn build_api(raw: RawApi, ctx: &Ctx, warnings: &mut Vec<String>) -> Result<ApiConfig, ConfigError> {
    let listen = match raw.listen {
        None => ApiConfig::default().listen,
        Some(s) => s.trim().parse::<SocketAddr>().map_err(|_| {
            ctx.invalid(
                "api.listen",
                format!("must be an address like 127.0.0.1:4000 (got {s:?})"),
            )
        })?,
    };
    let public_url = match raw.public_url {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                let msg = format!("must be an http:// or https:// URL (got {url:?})");
                return Err(ctx.invalid("api.public_url", msg));
            }
            url.trim_end_matches('/').to_string()
        }
        None => {
            if listen.ip().is_unspecified() {
                warnings.push(format!(
                    "key `api.public_url` is not set and api.listen is {listen}: peers cannot \
                     reach http://{listen}; set api.public_url"
                ));
            }
            format!(
                "{}://{listen}",
                if raw.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                }
            )
        }
    };
    // TLS files must be readable when the config is loaded.
    let file = |key: &str, v: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
        let path = ctx.path(key, v)?;
        if let Some(p) = &path {
            if let Err(e) = std::fs::File::open(p) {
                return Err(ctx.invalid(key, format!("cannot read {}: {e}", p.display())));
            }
        }
        Ok(path)
    };
    let tls_cert = file("api.tls_cert", raw.tls_cert)?;
    let tls_key = file("api.tls_key", raw.tls_key)?;
    let client_ca = file("api.client_ca", raw.client_ca)?;
    let peer_ca = file("api.peer_ca", raw.peer_ca)?;
    match (&tls_cert, &tls_key) {
        (Some(_), None) => {
            return Err(ctx.invalid("api.tls_key", "must be set when api.tls_cert is set"))
        }
        (None, Some(_)) => {
            return Err(ctx.invalid("api.tls_cert", "must be set when api.tls_key is set"))
        }
        _ => {}
    }
    if client_ca.is_some() && tls_cert.is_none() {
        return Err(ctx.invalid(
            "api.client_ca",
            "needs api.tls_cert and api.tls_key (mutual TLS is TLS first)",
        ));
    }
    if tls_cert.is_some() && public_url.starts_with("http://") {
        warnings.push(format!(
            "key `api.public_url` is {public_url} but the API serves HTTPS (api.tls_cert is \
             set): peers forwarding to it will fail; use https://"
        ));
    }
    Ok(ApiConfig {
        listen,
        public_url,
        tls_cert,
        tls_key,
        client_ca,
        peer_ca,
    })
}

fn build_database(raw: RawDatabase, ctx: &Ctx) -> Result<DatabaseConfig, ConfigError> {
    let url = raw.url.ok_or_else(|| ctx.missing("database.url"))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let msg = format!(
            "must start with postgres:// or postgresql:// (got {:?})",
            redact_url(&url)
        );
        return Err(ctx.invalid("database.url", msg));
    }
    let max_connections =
        ctx.ranged("database.max_connections", raw.max_connections, 16, 1, 1000)?;
    Ok(DatabaseConfig {
        url,
        max_connections,
    })
}

fn build_executor(raw: RawExecutor, ctx: &Ctx) -> Result<ExecutorConfig, ConfigError> {
    let d = ExecutorConfig::default();
    // Defaults are small constants, so the i64 conversions below cannot fail.
    let ms = |key: &str, v: Option<i64>, default: u64| {
        ctx.ranged::<u64>(&format!("executor.{key}"), v, default as i64, 1, MAX_MS)
    };
    let e = ExecutorConfig {
        heartbeat_interval_ms: ms(
            "heartbeat_interval_ms",
            raw.heartbeat_interval_ms,
            d.heartbeat_interval_ms,
        )?,
        poll_interval_ms: ms("poll_interval_ms", raw.poll_interval_ms, d.poll_interval_ms)?,
        visibility_margin_ms: ms(
            "visibility_margin_ms",
            raw.visibility_margin_ms,
            d.visibility_margin_ms,
        )?,
        lease_ms: ms("lease_ms", raw.lease_ms, d.lease_ms)?,
        shutdown_grace_ms: ms(
            "shutdown_grace_ms",
            raw.shutdown_grace_ms,
            d.shutdown_grace_ms,
        )?,
        claim_batch: ctx.ranged(
            "executor.claim_batch",
            raw.claim_batch,
            d.claim_batch as i64,
            1,
            1000,
        )?,
    };
    // A lease must outlive the heartbeat that renews it, or live tasks get re-claimed.
    if e.heartbeat_interval_ms >= e.lease_ms {
        let msg = format!(
            "must be less than executor.lease_ms ({} >= {})",
            e.heartbeat_interval_ms, e.lease_ms
        );
        return Err(ctx.invalid("executor.heartbeat_interval_ms", msg));
    }
    Ok(e)
}

fn build_limits(raw: RawLimits, ctx: &Ctx) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let positive = |key: &str, v: Option<i64>, default: usize| {
        ctx.ranged::<usize>(&format!("limits.{key}"), v, default as i64, 1, i64::MAX)
    };
    Ok(LimitsConfig {
        max_body_bytes: positive("max_body_bytes", raw.max_body_bytes, d.max_body_bytes)?,
        max_steps: positive("max_steps", raw.max_steps, d.max_steps)?,
        max_id_len: positive("max_id_len", raw.max_id_len, d.max_id_len)?,
        max_goal_len: positive("max_goal_len", raw.max_goal_len, d.max_goal_len)?,
        max_json_depth: positive("max_json_depth", raw.max_json_depth, d.max_json_depth)?,
        request_timeout_ms: ctx.ranged(
            "limits.request_timeout_ms",
            raw.request_timeout_ms,
            d.request_timeout_ms as i64,
            1,
            MAX_MS,
        )?,
        max_concurrent_requests: positive(
            "max_concurrent_requests",
            raw.max_concurrent_requests,
            d.max_concurrent_requests,
        )?,
        per_token_rate_per_s: ctx.ranged(
            "limits.per_token_rate_per_s",
            raw.per_token_rate_per_s,
            d.per_token_rate_per_s as i64,
            1,
            1_000_000,
        )?,
    })
}

fn build_handlers(raw: RawHandlers, ctx: &Ctx) -> Result<HandlersConfig, ConfigError> {
    let check = |key: &str, list: Option<Vec<String>>| {
        let list = list.unwrap_or_default();
        match list.iter().position(|s| s.trim().is_empty()) {
            Some(i) => Err(ctx.invalid(&format!("handlers.{key}[{i}]"), "must not be empty")),
            None => Ok(list),
        }
    };
    Ok(HandlersConfig {
        shell_allow: check("shell_allow", raw.shell_allow)?,
        http_allow: check("http_allow", raw.http_allow)?,
    })
}

/// This machine's host name: `gethostname(2)`, then `/etc/hostname`, then `"node"`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and gethostname writes at most
    // that many; the result is read only up to the first NUL (or the buffer's end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end]) {
            if !name.trim().is_empty() {
                return name.trim().to_string();
            }
        }
    }
    match std::fs::read_to_string("/etc/hostname") {
        Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
        _ => "node".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// swf config migrate

/// Top-level keys in the order `swf config migrate` writes them; tables after values.
const KEY_ORDER: &[&str] = &[
    "node_id",
    "region",
    "write_region",
    "enable_client",
    "enable_executor",
    "regions_file",
    "api",
    "database",
    "worker_pools",
    "executor",
    "limits",
    "handlers",
];

/// `swf config migrate`: `text` rewritten to the current keys. Drops `mode` in favour of
/// `enable_client`/`enable_executor`, turns `[[worker_pools]]` into `[worker_pools.<name>]`,
/// keeps everything else (comments are lost). The result is checked to load without
/// deprecation warnings; required keys may still come from the environment.
pub fn migrate_legacy(text: &str, source: &str) -> Result<String, ConfigError> {
    let ctx = Ctx::new(source);
    let mut table = parse_table(text, source)?;
    convert_legacy_pools(&mut table, &ctx)?;
    resolve_legacy_mode(&mut table, &ctx)?;

    let mut out = format!("# migrated by swf config migrate from {source}\n");
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort_by_key(|k| {
        (
            KEY_ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX),
            *k,
        )
    });
    let (tables, values): (Vec<&String>, Vec<&String>) = keys
        .into_iter()
        .partition(|k| table.get(*k).is_some_and(Value::is_table));
    for key in values {
        if let Some(value) = table.get(key) {
            out.push_str(&format!("{} = {value}\n", toml_key(key)));
        }
    }
    for key in tables {
        if let Some(value) = table.get(key) {
            let single = Table::from_iter([(key.clone(), value.clone())]);
            let body = toml::to_string(&single).map_err(|e| ctx.invalid(key, e.to_string()))?;
            out.push('\n');
            out.push_str(&body);
        }
    }

    // Check the result the way `swf serve` reads it. Required keys that are absent are
    // stood in for, since a deployment may supply them as SWF_REGION / SWF_DATABASE__URL.
    let mut stand_ins = Vec::new();
    if !table.contains_key("region") {
        stand_ins.push(("SWF_REGION".to_string(), "migrate-check".to_string()));
    }
    let has_url = table
        .get("database")
        .and_then(Value::as_table)
        .is_some_and(|db| db.contains_key("url"));
    if !has_url {
        stand_ins.push((
            "SWF_DATABASE__URL".to_string(),
            "postgres://migrate-check".to_string(),
        ));
    }
    Config::from_toml_str(&out, source, &stand_ins)?;
    Ok(out)
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// swf config check

/// `url` with the password (in the user-info part or a `password=` query parameter)
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    // User info ends at the last '@' (a password may itself contain an unescaped '@').
    let main = match main.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => main.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{main}?{q}"),
        None => format!("{scheme}://{main}"),
    }
}

/// What `swf config check --json` prints. The database password is replaced by `***`.
pub fn check_report(config: &Config) -> serde_json::Value {
    let pools: Vec<serde_json::Value> = config
        .worker_pools
        .iter()
        .map(|(name, p)| serde_json::json!({"name": name, "size": p.size, "queue": p.queue}))
        .collect();
    serde_json::json!({
        "file": config.source.as_ref().map(|p| p.display().to_string()),
        "node_id": config.node_id,
        "node_type": config.node_type(),
        "roles": config.roles(),
        "region": config.region,
        "write_region": config.write_region,
        "api": {
            "listen": config.api.listen.to_string(),
            "public_url": config.api.public_url,
            "tls_cert": config.api.tls_cert.as_ref().map(|p| p.display().to_string()),
            "tls_key": config.api.tls_key.as_ref().map(|p| p.display().to_string()),
            "client_ca": config.api.client_ca.as_ref().map(|p| p.display().to_string()),
            "peer_ca": config.api.peer_ca.as_ref().map(|p| p.display().to_string()),
        },
        "database": {"url": config.database.redacted_url()},
        "worker_pools": pools,
        "regions_file": config.regions_file.as_ref().map(|p| p.display().to_string()),
    })
}

/// What `swf config check` prints without `--json`: one aligned `label  value` line per item.
pub fn check_report_text(config: &Config) -> String {
    let none = || "-".to_string();
    let mut lines: Vec<(&str, String)> = vec![
        (
            "file",
            config
                .source
                .as_ref()
                .map_or_else(none, |p| p.display().to_string()),
        ),
        ("node_id", config.node_id.clone()),
        ("node_type", config.node_type().to_string()),
        ("roles", config.roles().join(", ")),
        ("region", config.region.clone()),
        ("write_region", config.write_region.clone()),
        ("api.listen", config.api.listen.to_string()),
        ("api.public_url", config.api.public_url.clone()),
        (
            "api.tls",
            match (&config.api.tls_cert, &config.api.client_ca) {
                (None, _) => "off (plain HTTP)".to_string(),
                (Some(c), None) => format!("on, certificate {}", c.display()),
                (Some(c), Some(ca)) => format!(
                    "on, certificate {}, client certificates required (CA {})",
                    c.display(),
                    ca.display()
                ),
            },
        ),
        ("database.url", config.database.redacted_url()),
        (
            "regions_file",
            config
                .regions_file
                .as_ref()
                .map_or_else(none, |p| p.display().to_string()),
        ),
    ];
    if config.worker_pools.is_empty() {
        lines.push(("worker_pools", none()));
    }
    for (i, (name, pool)) in config.worker_pools.iter().enumerate() {
        let label = if i == 0 { "worker_pools" } else { "" };
        lines.push((
            label,
            format!("{name}: size {}, queue {}", pool.size, pool.queue),
        ));
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "deploy/x.toml";

    // The smallest valid file, split so cases can put top-level keys before its table.
    macro_rules! top {
        () => {
            "region = \"us-east\"\n"
        };
    }
    macro_rules! db {
        () => {
            "[database]\nurl = \"postgres://swf:secret@db:5432/swf\"\n"
        };
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        Config::from_toml_str(text, FILE, &env(pairs))
    }

    fn pools(c: &Config) -> Vec<(String, usize, String)> {
        c.worker_pools
            .iter()
            .map(|(n, p)| (n.clone(), p.size, p.queue.clone()))
            .collect()
    }

    type Pools = &'static [(&'static str, usize, &'static str)];
    const DEFAULT_POOL: Pools = &[("default", 10, "default")];

    enum Expect {
        /// Loads as this node type with exactly these pools; each listed text occurs in its
        /// own warning and there are no others; `check` holds.
        Ok {
            node_type: NodeType,
            pools: Pools,
            warnings: &'static [&'static str],
            check: fn(&Config) -> bool,
        },
        /// Fails with a message containing every listed text.
        Err(&'static [&'static str]),
    }
    use Expect::{Err as Fails, Ok as Loads};

    fn any(_: &Config) -> bool {
        true
    }

    struct Case {
        name: &'static str,
        text: &'static str,
        env: &'static [(&'static str, &'static str)],
        expect: Expect,
    }

    const ORCHESTRATOR_WARNING: &str = "key `mode` is deprecated: replace mode = \"orchestrator\" \
        with enable_client = true and enable_executor = true";

    const CASES: &[Case] = &[
        Case {
            name: "minimal file: hybrid with every default",
            text: concat!(top!(), db!()),
            env: &[],
            expect: Loads {
                node_type: NodeType::Hybrid,
                pools: DEFAULT_POOL,
                warnings: &[],
                check: |c| {
                    c.write_region == "us-east"
                        && c.node_id.ends_with("-us-east")
                        && c.api == ApiConfig::default()
                        && c.api.public_url == "http://127.0.0.1:4000"
                        && c.database.max_connections == 16
                        && c.executor == ExecutorConfig::default()
                        && c.limits == LimitsConfig::default()
                        && c.handlers == HandlersConfig::default()
                        && c.regions_file.is_none()
                        && c.source.as_deref() == Some(Path::new(FILE))
                        && c.roles() == ["client", "executor"]
                },
            },
        },
        Case {
            name: "the DESIGN.md example",
            text: r#"
node_id = "us-east-1"
region = "us-east"
write_region = "us-west"
enable_client = true
enable_executor = true
regions_file = "regions/local.toml"
[api]
listen = "127.0.0.1:4001"
public_url = "https://node.example:4001/"
[database]
url = "postgresql://db/swf"
[worker_pools.default]
size = 10
queue = "default"
[worker_pools.gpu]
size = 2
queue = "gpu_tasks"
"#,
            env: &[],
            expect: Loads {
                node_type: NodeType::Hybrid,
                pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks")],
                warnings: &[],
                check: |c| {
                    c.node_id == "us-east-1"
                        && c.write_region == "us-west"
                        && c.regions_file.as_deref() == Some(Path::new("deploy/regions/local.toml"))
                        && c.api.listen.port() == 4001
                        && c.api.public_url == "https://node.example:4001"
                },
            },
        },
        Case {
            name: "edge node",
            text: concat!("enable_executor = false\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &[], check: |c| c.roles() == ["client"] },
        },
        Case {
            name: "worker node",
            text: concat!("enable_client = false\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &[], check: |c| c.roles() == ["executor"] },
        },
        Case {
            name: "both roles off",
            text: concat!("enable_client = false\nenable_executor = false\n", top!(), db!()),
            env: &[],
            expect: Fails(&[
                "config file deploy/x.toml",
                "node is disabled: enable_client and enable_executor are both false (a node must have at least one role)",
            ]),
        },
        Case {
            name: "edge node with pools: ignored, with a warning",
            text: concat!("enable_executor = false\n", top!(), db!(), "[worker_pools.gpu]\nsize = 2\n"),
            env: &[],
            expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["ignored on an edge node"], check: any },
        },
        Case {
            name: "empty pool table on an executor: warning",
            text: concat!(top!(), db!(), "[worker_pools]\n"),
            env: &[],
            expect: Loads { node_type: NodeType::Hybrid, pools: &[], warnings: &["will run no tasks"], check: any },
        },
        Case {
            name: "legacy mode orchestrator",
            text: concat!("mode = \"orchestrator\"\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[ORCHESTRATOR_WARNING], check: any },
        },
        Case {
            name: "legacy mode with an explicit role key: the key wins",
            text: concat!("mode = \"orchestrator\"\nenable_executor = false\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &[ORCHESTRATOR_WARNING], check: any },
        },
        Case {
            name: "legacy mode client",
            text: concat!("mode = \"client\"\n", top!(), db!()),
            env: &[],
            expect: Loads {
                node_type: NodeType::Edge,
                pools: &[],
                warnings: &["replace mode = \"client\" with enable_client = true and enable_executor = false"],
                check: any,
            },
        },
        Case {
            name: "legacy mode edge",
            text: concat!("mode = \"edge\"\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["key `mode` is deprecated"], check: any },
        },
        Case {
            name: "legacy mode worker",
            text: concat!("mode = \"worker\"\n", top!(), db!()),
            env: &[],
            expect: Loads {
                node_type: NodeType::Worker,
                pools: DEFAULT_POOL,
                warnings: &["replace mode = \"worker\" with enable_client = false and enable_executor = true"],
                check: any,
            },
        },
        Case {
            name: "legacy mode executor",
            text: concat!("mode = \"executor\"\n", top!(), db!()),
            env: &[],
            expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &["key `mode` is deprecated"], check: any },
        },
        Case {
            name: "bad mode value",
            text: concat!("mode = \"boss\"\n", top!(), db!()),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `mode`: must be one of", "\"orchestrator\"", "(got \"boss\")"]),
        },
        Case {
            name: "mode of the wrong type",
            text: concat!("mode = 3\n", top!(), db!()),
            env: &[],
            expect: Fails(&["key `mode`", "(got 3)"]),
        },
        Case {
            name: "legacy array of pools",
            text: concat!(
                top!(),
                db!(),
                "[[worker_pools]]\nname = \"default\"\nsize = 10\nqueue = \"default\"\n",
                "[[worker_pools]]\nname = \"gpu\"\nsize = 2\nqueue = \"gpu_tasks\"\n",
                "[[worker_pools]]\nname = \"io\"\n",
            ),
            env: &[],
            expect: Loads {
                node_type: NodeType::Hybrid,
                pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks"), ("io", 10, "io")],
                warnings: &["array of tables"],
                check: any,
            },
        },
        Case {
            name: "legacy pool without a name",
            text: concat!(top!(), db!(), "[[worker_pools]]\nsize = 2\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `worker_pools[0].name` is required"]),
        },
        Case {
            name: "legacy pools with one name twice",
            text: concat!(top!(), db!(), "[[worker_pools]]\nname = \"a\"\n[[worker_pools]]\nname = \"a\"\n"),
            env: &[],
            expect: Fails(&["key `worker_pools[1].name`: duplicate pool \"a\""]),
        },
        Case {
            name: "legacy pool with an unknown key",
            text: concat!(top!(), db!(), "[[worker_pools]]\nname = \"a\"\nconcurrency = 2\n"),
            env: &[],
            expect: Fails(&["unknown key `worker_pools[0].concurrency`"]),
        },
        Case {
            name: "unknown top-level key",
            text: concat!("colour = \"blue\"\n", top!(), db!()),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: unknown key `colour`"]),
        },
        Case {
            name: "unknown nested key",
            text: concat!(top!(), db!(), "[api]\nlistn = \"127.0.0.1:1\"\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: unknown key `api.listn`", "`listen`"]),
        },
        Case {
            name: "unknown key in a pool",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nsise = 2\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: unknown key `worker_pools.gpu.sise`"]),
        },
        Case {
            name: "missing region",
            text: db!(),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `region` is required"]),
        },
        Case {
            name: "missing database table",
            text: top!(),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `database.url` is required"]),
        },
        Case {
            name: "database table without url",
            text: concat!(top!(), "[database]\nmax_connections = 4\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `database.url` is required"]),
        },
        Case {
            name: "database url of another scheme (password not echoed)",
            text: concat!(top!(), "[database]\nurl = \"mysql://swf:secret@db/swf\"\n"),
            env: &[],
            expect: Fails(&["key `database.url`: must start with postgres:// or postgresql://", "swf:***@db"]),
        },
        Case {
            name: "bad listen address",
            text: concat!(top!(), db!(), "[api]\nlisten = \"localhost\"\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `api.listen`: must be an address", "\"localhost\""]),
        },
        Case {
            name: "listen on all interfaces without public_url: warning",
            text: concat!(top!(), db!(), "[api]\nlisten = \"0.0.0.0:4000\"\n"),
            env: &[],
            expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &["peers cannot reach"], check: any },
        },
        Case {
            name: "public_url not http",
            text: concat!(top!(), db!(), "[api]\npublic_url = \"ftp://x\"\n"),
            env: &[],
            expect: Fails(&["key `api.public_url`: must be an http:// or https:// URL"]),
        },
        Case {
            name: "pool size 0",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 0\n"),
            env: &[],
            expect: Fails(&["config file deploy/x.toml: key `worker_pools.gpu.size`: must be between 1 and 1024 (got 0)"]),
        },
        Case {
            name: "pool size too big",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 1025\n"),
            env: &[],
            expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got 1025)"]),
        },
        Case {
            name: "pool size negative",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = -1\n"),
            env: &[],
            expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got -1)"]),
        },
        Case {
            name: "bad pool name",
            text: concat!(top!(), db!(), "[worker_pools.\"gpu pool\"]\nsize = 1\n"),
            env: &[],
            expect: Fails(&["key `worker_pools.gpu pool`: pool name must be 1 to 64 characters"]),
        },
        Case {
            name: "bad queue name",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nqueue = \"gpu/tasks\"\n"),
            env: &[],
            expect: Fails(&["key `worker_pools.gpu.queue`: queue name must be"]),
        },
        Case {
            name: "bad region name",
            text: concat!("region = \"us east\"\n", db!()),
            env: &[],
            expect: Fails(&["key `region`: region must be 1 to 64 characters"]),
        },
        Case {
            name: "bad write_region name",
            text: concat!("write_region = \"\"\n", top!(), db!()),
            env: &[],
            expect: Fails(&["key `write_region`"]),
        },
        Case {
            name: "region of the wrong type",
            text: concat!("region = 5\n", db!()),
            env: &[],
            expect: Fails(&["key `region`: invalid type: integer `5`"]),
        },
        Case {
            name: "max_connections out of range",
            text: concat!(top!(), "[database]\nurl = \"postgres://db\"\nmax_connections = 0\n"),
            env: &[],
            expect: Fails(&["key `database.max_connections`: must be between 1 and 1000 (got 0)"]),
        },
        Case {
            name: "ms value 0",
            text: concat!(top!(), db!(), "[executor]\npoll_interval_ms = 0\n"),
            env: &[],
            expect: Fails(&["key `executor.poll_interval_ms`: must be between 1 and 86400000 (got 0)"]),
        },
        Case {
            name: "ms value over a day",
            text: concat!(top!(), db!(), "[executor]\nshutdown_grace_ms = 86400001\n"),
            env: &[],
            expect: Fails(&["key `executor.shutdown_grace_ms`"]),
        },
        Case {
            name: "claim_batch too big",
            text: concat!(top!(), db!(), "[executor]\nclaim_batch = 1001\n"),
            env: &[],
            expect: Fails(&["key `executor.claim_batch`: must be between 1 and 1000"]),
        },
        Case {
            name: "heartbeat not shorter than the lease",
            text: concat!(top!(), db!(), "[executor]\nheartbeat_interval_ms = 15000\n"),
            env: &[],
            expect: Fails(&["key `executor.heartbeat_interval_ms`: must be less than executor.lease_ms"]),
        },
        Case {
            name: "limit 0",
            text: concat!(top!(), db!(), "[limits]\nmax_steps = 0\n"),
            env: &[],
            expect: Fails(&["key `limits.max_steps`: must be at least 1 (got 0)"]),
        },
        Case {
            name: "empty handler allow entry",
            text: concat!(top!(), db!(), "[handlers]\nshell_allow = [\"echo\", \"\"]\n"),
            env: &[],
            expect: Fails(&["key `handlers.shell_allow[1]`: must not be empty"]),
        },
        Case {
            name: "invalid TOML",
            text: "region = \"us-east\"\nnode_id = \n",
            env: &[],
            expect: Fails(&["config file deploy/x.toml: invalid TOML at line 2 column 11: "]),
        },
        Case {
            name: "env: SWF_API__LISTEN",
            text: concat!(top!(), db!()),
            env: &[("SWF_API__LISTEN", "127.0.0.1:5000")],
            expect: Loads {
                node_type: NodeType::Hybrid,
                pools: DEFAULT_POOL,
                warnings: &[],
                check: |c| c.api.listen.port() == 5000 && c.api.public_url == "http://127.0.0.1:5000",
            },
        },
        Case {
            name: "env: a pool override creates the pool table",
            text: concat!(top!(), db!()),
            env: &[("SWF_WORKER_POOLS__GPU__SIZE", "4")],
            expect: Loads { node_type: NodeType::Hybrid, pools: &[("gpu", 4, "gpu")], warnings: &[], check: any },
        },
        Case {
            name: "env: a pool override next to the file's pools",
            text: concat!(top!(), db!(), "[worker_pools.default]\n"),
            env: &[("SWF_WORKER_POOLS__GPU__QUEUE", "gpu_tasks"), ("SWF_WORKER_POOLS__DEFAULT__SIZE", "3")],
            expect: Loads { node_type: NodeType::Hybrid, pools: &[("default", 3, "default"), ("gpu", 10, "gpu_tasks")], warnings: &[], check: any },
        },
        Case {
            name: "env: SWF_ENABLE_EXECUTOR=false turns hybrid into edge",
            text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 2\n"),
            env: &[("SWF_ENABLE_EXECUTOR", "false")],
            expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["ignored on an edge node"], check: any },
        },
        Case {
            name: "env: role keys beat a legacy mode",
            text: concat!("mode = \"orchestrator\"\n", top!(), db!()),
            env: &[("SWF_ENABLE_CLIENT", "FALSE")],
            expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &[ORCHESTRATOR_WARNING], check: any },
        },
        Case {
            name: "env: legacy SWF_MODE",
            text: concat!(top!(), db!()),
            env: &[("SWF_MODE", "worker")],
            expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &["key `mode` is deprecated"], check: any },
        },
        Case {
            name: "env: both roles off",
            text: concat!("enable_client = false\n", top!(), db!()),
            env: &[("SWF_ENABLE_EXECUTOR", "false")],
            expect: Fails(&["node is disabled"]),
        },
        Case {
            name: "env: unknown SWF_ variable",
            text: concat!(top!(), db!()),
            env: &[("SWF_API__LISTN", "127.0.0.1:1")],
            expect: Fails(&["config file deploy/x.toml: environment variable SWF_API__LISTN: unknown key `api.listn`"]),
        },
        Case {
            name: "env: unknown top-level SWF_ variable",
            text: concat!(top!(), db!()),
            env: &[("SWF_DATA_DIR", "/tmp")],
            expect: Fails(&["environment variable SWF_DATA_DIR: unknown key `data_dir`"]),
        },
        Case {
            name: "env: a table, not a key",
            text: concat!(top!(), db!()),
            env: &[("SWF_WORKER_POOLS__GPU", "4")],
            expect: Fails(&["environment variable SWF_WORKER_POOLS__GPU: `worker_pools.gpu` is a table"]),
        },
        Case {
            name: "env: variables of other commands are ignored",
            text: concat!(top!(), db!()),
            env: &[
                ("SWF_PG_BIN", "/usr/lib/postgresql/16/bin"),
                ("SWF_LOG", "debug"),
                ("SWF_API_URL", "http://x"),
                ("SWF_TEST_KEEP", "1"),
                ("SWF_TEST_ANYTHING", "1"),
                ("PATH", "/usr/bin"),
            ],
            expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: any },
        },
        Case {
            name: "env: supplies a required key",
            text: top!(),
            env: &[("SWF_DATABASE__URL", "postgres://swf:secret@other/swf")],
            expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: |c| c.database.url.contains("@other/") },
        },
        Case {
            name: "env: strings are taken verbatim",
            text: concat!(top!(), db!()),
            env: &[("SWF_NODE_ID", "42"), ("SWF_HANDLERS__SHELL_ALLOW", "echo, ls"), ("SWF_HANDLERS__HTTP_ALLOW", "[\"https://a\"]")],
            expect: Loads {
                node_type: NodeType::Hybrid,
                pools: DEFAULT_POOL,
                warnings: &[],
                check: |c| c.node_id == "42" && c.handlers.shell_allow == ["echo", "ls"] && c.handlers.http_allow == ["https://a"],
            },
        },
        Case {
            name: "env: invalid value names the variable",
            text: concat!(top!(), db!()),
            env: &[("SWF_WORKER_POOLS__GPU__SIZE", "0")],
            expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got 0) (set by environment variable SWF_WORKER_POOLS__GPU__SIZE)"]),
        },
        Case {
            name: "env: integer expected",
            text: concat!(top!(), db!()),
            env: &[("SWF_EXECUTOR__LEASE_MS", "soon")],
            expect: Fails(&["environment variable SWF_EXECUTOR__LEASE_MS: key `executor.lease_ms`: expected an integer (got \"soon\")"]),
        },
        Case {
            name: "env: boolean expected",
            text: concat!(top!(), db!()),
            env: &[("SWF_ENABLE_CLIENT", "maybe")],
            expect: Fails(&["environment variable SWF_ENABLE_CLIENT: key `enable_client`: expected true or false"]),
        },
        Case {
            name: "env: cannot nest under a value",
            text: concat!("api = 5\n", top!(), db!()),
            env: &[("SWF_API__LISTEN", "127.0.0.1:1")],
            expect: Fails(&["environment variable SWF_API__LISTEN: key `api` in the file is not a table"]),
        },
    ];

    #[test]
    fn load_cases() {
        for case in CASES {
            let name = case.name;
            let result = load(case.text, case.env);
            match (&case.expect, result) {
                (
                    Loads {
                        node_type,
                        pools: want,
                        warnings,
                        check,
                    },
                    Ok(loaded),
                ) => {
                    let c = &loaded.config;
                    assert_eq!(c.node_type(), *node_type, "{name}");
                    let want: Vec<_> = want
                        .iter()
                        .map(|(n, s, q)| (n.to_string(), *s, q.to_string()))
                        .collect();
                    assert_eq!(pools(c), want, "{name}");
                    assert_eq!(
                        loaded.warnings.len(),
                        warnings.len(),
                        "{name}: {:?}",
                        loaded.warnings
                    );
                    for (got, want) in loaded.warnings.iter().zip(warnings.iter()) {
                        assert!(got.contains(want), "{name}: warning {got:?} lacks {want:?}");
                    }
                    assert!(check(c), "{name}: check failed on {c:?}");
                }
                (Fails(parts), Err(e)) => {
                    let msg = e.to_string();
                    for part in *parts {
                        assert!(msg.contains(part), "{name}: error {msg:?} lacks {part:?}");
                    }
                    assert!(
                        !msg.contains("secret"),
                        "{name}: error leaks the password: {msg}"
                    );
                    assert!(!msg.contains('\n'), "{name}: error spans lines: {msg:?}");
                }
                (Loads { .. }, Err(e)) => panic!("{name}: expected to load, got error: {e}"),
                (Fails(_), Ok(l)) => panic!("{name}: expected an error, loaded {:?}", l.config),
            }
        }
    }

    /// Every key of a file that sets all of them is known to the env schema, and can be
    /// overridden through its `SWF_` variable.
    #[test]
    fn schema_matches_structs() {
        let full = r#"
node_id = "n1"
region = "r1"
write_region = "r1"
enable_client = true
enable_executor = true
regions_file = "regions.toml"
[api]
listen = "127.0.0.1:4000"
public_url = "http://127.0.0.1:4000"
[database]
url = "postgres://db"
max_connections = 8
[worker_pools.p1]
size = 2
queue = "q1"
[executor]
heartbeat_interval_ms = 1000
poll_interval_ms = 1000
visibility_margin_ms = 1000
lease_ms = 9000
shutdown_grace_ms = 1000
claim_batch = 4
[limits]
max_body_bytes = 10
max_steps = 10
max_id_len = 10
max_goal_len = 10
max_json_depth = 10
[handlers]
shell_allow = ["echo"]
http_allow = ["https://x"]
"#;
        let loaded = load(full, &[]).expect("full file loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let table = parse_table(full, FILE).expect("parses");
        let mut leaves = Vec::new();
        collect_leaves(&table, &mut Vec::new(), &mut leaves);
        assert_eq!(leaves.len(), 25);
        for (path, value) in leaves {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            assert!(
                matches!(slot(&parts), Slot::Leaf(_)),
                "{path:?} unknown to slot()"
            );
            // Feeding each value back through its variable gives the same config.
            let var = format!("SWF_{}", path.join("__").to_uppercase());
            let raw = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let again = load(full, &[(var.as_str(), raw.as_str())]).expect("override loads");
            assert_eq!(again.config, loaded.config, "{var}");
        }
    }

    fn collect_leaves(table: &Table, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
        for (key, value) in table {
            at.push(key.clone());
            match value {
                Value::Table(t) => collect_leaves(t, at, out),
                v => out.push((at.clone(), v.clone())),
            }
            at.pop();
        }
    }

    struct MigrateCase {
        name: &'static str,
        text: &'static str,
        node_type: NodeType,
        pools: Pools,
    }

    const MIGRATE_CASES: &[MigrateCase] = &[
        MigrateCase {
            name: "orchestrator with array pools",
            text: concat!(
                "# old file\nmode = \"orchestrator\"\n",
                top!(),
                "regions_file = \"regions/local.toml\"\n",
                db!(),
                "[[worker_pools]]\nname = \"default\"\nsize = 10\nqueue = \"default\"\n",
                "[[worker_pools]]\nname = \"gpu\"\nsize = 2\nqueue = \"gpu_tasks\"\n",
                "[executor]\nlease_ms = 20000\n[handlers]\nshell_allow = [\"echo\"]\n",
            ),
            node_type: NodeType::Hybrid,
            pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks")],
        },
        MigrateCase {
            name: "client mode",
            text: concat!("mode = \"client\"\n", top!(), db!()),
            node_type: NodeType::Edge,
            pools: &[],
        },
        MigrateCase {
            name: "worker mode with an explicit role key",
            text: concat!("mode = \"worker\"\nenable_client = true\n", top!(), db!()),
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
        },
        MigrateCase {
            name: "already current",
            text: concat!(
                "node_id = \"n\"\nenable_client = false\n",
                top!(),
                db!(),
                "[worker_pools.\"a-b\"]\nsize = 3\n"
            ),
            node_type: NodeType::Worker,
            pools: &[("a-b", 3, "a-b")],
        },
        MigrateCase {
            name: "required keys left to the environment",
            text: "mode = \"worker\"\n[[worker_pools]]\nname = \"w\"\n",
            node_type: NodeType::Worker,
            pools: &[("w", 10, "w")],
        },
    ];

    #[test]
    fn migrate_round_trips() {
        let stand_ins = [
            ("SWF_REGION", "us-east"),
            ("SWF_DATABASE__URL", "postgres://db"),
        ];
        for case in MIGRATE_CASES {
            let name = case.name;
            let out =
                migrate_legacy(case.text, "old.toml").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                out.starts_with("# migrated by swf config migrate from old.toml\n"),
                "{name}: {out}"
            );
            assert!(!out.contains("mode"), "{name}: {out}");
            let env: &[(&str, &str)] = if case.text.contains("region") {
                &[]
            } else {
                &stand_ins
            };
            let before = load(case.text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
            let after = load(&out, env).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
            assert!(after.warnings.is_empty(), "{name}: {:?}", after.warnings);
            assert_eq!(after.config.node_type(), case.node_type, "{name}");
            let want: Vec<_> = case
                .pools
                .iter()
                .map(|(n, s, q)| (n.to_string(), *s, q.to_string()))
                .collect();
            assert_eq!(pools(&after.config), want, "{name}");
            // Same file name, so even the resolved regions_file and the default node_id agree.
            assert_eq!(after.config, before.config, "{name}\n{out}");
            // Migrating again changes nothing but the header.
            let twice = migrate_legacy(&out, "old.toml").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(twice, out, "{name}");
        }
    }

    #[test]
    fn migrate_rejects_what_load_rejects() {
        let cases: &[(&str, &str)] = &[
            (concat!("mode = \"boss\"\n", top!(), db!()), "key `mode`"),
            (
                concat!(top!(), db!(), "[api]\nlistn = 1\n"),
                "unknown key `api.listn`",
            ),
            ("region = ", "invalid TOML at line 1"),
            (
                concat!(top!(), db!(), "[[worker_pools]]\nname = \"g\"\nsize = 0\n"),
                "key `worker_pools.g.size`",
            ),
        ];
        for (text, want) in cases {
            let err = migrate_legacy(text, FILE).expect_err(text).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(err.contains(FILE), "{err:?}");
        }
    }

    #[test]
    fn check_report_redacts_the_password() {
        let text = concat!(
            "regions_file = \"r.toml\"\n",
            top!(),
            db!(),
            "[worker_pools.gpu]\nsize = 2\nqueue = \"gpu_tasks\"\n"
        );
        let config = load(text, &[]).expect("loads").config;
        let report = check_report(&config);
        let json = report.to_string();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(report["database"]["url"], "postgres://swf:***@db:5432/swf");
        assert_eq!(report["file"], FILE);
        assert_eq!(report["node_type"], "hybrid");
        assert_eq!(report["roles"], serde_json::json!(["client", "executor"]));
        assert_eq!(report["region"], "us-east");
        assert_eq!(report["write_region"], "us-east");
        assert_eq!(report["api"]["listen"], "127.0.0.1:4000");
        assert_eq!(report["api"]["public_url"], "http://127.0.0.1:4000");
        assert_eq!(
            report["worker_pools"],
            serde_json::json!([{"name": "gpu", "size": 2, "queue": "gpu_tasks"}])
        );
        assert_eq!(report["regions_file"], "deploy/r.toml");

        let text_report = check_report_text(&config);
        assert!(!text_report.contains("secret"), "{text_report}");
        assert!(
            text_report.contains("node_type       hybrid\n"),
            "{text_report}"
        );
        assert!(
            text_report.contains("worker_pools    gpu: size 2, queue gpu_tasks\n"),
            "{text_report}"
        );
        assert!(
            !format!("{config:?}").contains("secret"),
            "Debug leaks the password"
        );
    }

    #[test]
    fn redact_url_cases() {
        let cases = [
            ("postgres://u:pw@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://u:p@ss@h/d", "postgres://u:***@h/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgres://h/d?user=u&password=pw&sslmode=off",
                "postgres://h/d?user=u&password=***&sslmode=off",
            ),
            ("postgresql://h", "postgresql://h"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn valid_name_cases() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases = [
            ("us-east", true),
            ("gpu_tasks", true),
            ("A9", true),
            (long.as_str(), true),
            ("", false),
            (too_long.as_str(), false),
            ("us east", false),
            ("q.1", false),
            ("é", false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_name(name), want, "{name:?}");
        }
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("swf-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.toml");
        let text = concat!("regions_file = \"regions/a.toml\"\n", top!(), db!());
        std::fs::write(&path, text).expect("write");
        let loaded = Config::load(&path);
        let missing = Config::load(&dir.join("absent.toml"));
        let _ = std::fs::remove_dir_all(&dir);

        // The process env may carry SWF_* settings of its own; only check what they cannot move.
        if let Ok(loaded) = loaded {
            assert_eq!(loaded.config.source.as_deref(), Some(path.as_path()));
            assert_eq!(loaded.config.regions_file, Some(dir.join("regions/a.toml")));
        }
        let err = missing.expect_err("absent file").to_string();
        assert!(
            err.contains("absent.toml") && err.contains("cannot read"),
            "{err}"
        );
    }

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
