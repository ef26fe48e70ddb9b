//! Parsing a node file: text and an environment map in, [`Loaded`] or [`ConfigError`] out,
//! with no I/O (the host name comes in with the input; `files.rs` gathers it). The pipeline
//! works on a `toml::Table`, so each step can name the dotted key it looks at:
//!
//! 1. parse the text (syntax errors carry line and column);
//! 2. rewrite legacy `[[worker_pools]]` arrays into `[worker_pools.<name>]` tables;
//! 3. apply `SWF_<KEY>` environment overrides (nesting with `__`);
//! 4. resolve the legacy `mode` key into `enable_client` / `enable_executor`;
//! 5. check every key and value type against the key table (`keys.rs`);
//! 6. read the values into [`Config`], validating them and filling in defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Table;

use super::env::apply_env;
use super::error::{ConfigError, Ctx};
use super::keys::{check_keys, Doc};
use super::legacy::{convert_legacy_pools, resolve_legacy_mode, LEGACY_POOLS_WARNING};
use super::model::{
    default_pools, ApiConfig, AuthConfig, CommandHandlerConfig, Config, DatabaseConfig, DrillHooks,
    DrillManager, ExecutorConfig, HandlersConfig, HttpHandlerConfig, LimitsConfig, Loaded,
    PatroniMember, PoolConfig, RoutingConfig,
};
use super::names::redact_url;

/// Upper bound for every `*_ms` setting: one day.
pub(super) const MAX_MS: i64 = 86_400_000;

/// Everything a node file's meaning depends on, gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    /// The file's name, for errors; relative paths in the file are resolved against its
    /// directory.
    pub file: &'a str,
    /// The environment; only `SWF_*` entries matter.
    pub env: &'a [(String, String)],
    /// This machine's host name: `node_id` defaults to `<hostname>-<region>`.
    pub hostname: &'a str,
}

/// Parses and validates a node file. Touches no file and no process state.
pub fn parse(input: &Input<'_>) -> Result<Loaded, ConfigError> {
    let mut ctx = Ctx::new(input.file);
    let mut table = parse_table(input.text, input.file)?;
    let mut warnings = Vec::new();
    if convert_legacy_pools(&mut table, &ctx)? {
        warnings.push(LEGACY_POOLS_WARNING.to_string());
    }
    apply_env(&mut table, input.env, &mut ctx)?;
    if let Some(warning) = resolve_legacy_mode(&mut table, &ctx)? {
        warnings.push(warning);
    }
    check_keys(&table, &ctx)?;
    let config = build(&Doc(&table), input.hostname, &ctx, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

pub(crate) fn parse_table(text: &str, source: &str) -> Result<Table, ConfigError> {
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

/// Validates a deserialized file and fills in defaults.
fn build(
    doc: &Doc<'_>,
    hostname: &str,
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let enable_client = doc.bool(&["enable_client"]).unwrap_or(true);
    let enable_executor = doc.bool(&["enable_executor"]).unwrap_or(true);
    if !enable_client && !enable_executor {
        return Err(ConfigError::Disabled {
            file: ctx.file.clone(),
        });
    }

    let region = doc.str(&["region"]).ok_or_else(|| ctx.missing("region"))?;
    ctx.name("region", &region, "region")?;
    let write_region = doc.str(&["write_region"]).unwrap_or_else(|| region.clone());
    ctx.name("write_region", &write_region, "region")?;
    let node_id = doc
        .str(&["node_id"])
        .unwrap_or_else(|| format!("{hostname}-{region}"));
    if node_id.is_empty()
        || node_id.chars().count() > 128
        || node_id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        let msg = format!("must be 1 to 128 characters without spaces (got {node_id:?})");
        return Err(ctx.invalid("node_id", msg));
    }

    let regions_file = ctx.path("regions_file", doc.str(&["regions_file"]))?;

    let api = build_api(doc, ctx, warnings)?;
    let database = build_database(doc, ctx)?;
    let executor = build_executor(doc, ctx)?;
    let limits = build_limits(doc, ctx)?;
    let handlers = build_handlers(doc, ctx)?;
    let routing = build_routing(doc, ctx)?;
    let auth = AuthConfig {
        enabled: doc.bool(&["auth", "enabled"]).unwrap_or(true),
        tokens_file: ctx.path("auth.tokens_file", doc.str(&["auth", "tokens_file"]))?,
        protect_metrics: doc.bool(&["auth", "protect_metrics"]).unwrap_or(false),
        protect_info: doc.bool(&["auth", "protect_info"]).unwrap_or(false),
        tokens: Vec::new(),
    };
    let drills = build_drills(doc, ctx)?;
    let retention = super::retention::build(doc, ctx)?;

    let mut worker_pools = BTreeMap::new();
    let names = doc.names(&["worker_pools"]);
    let configured = names.is_some();
    for name in names.unwrap_or_default() {
        let key = format!("worker_pools.{name}");
        ctx.name(&key, &name, "pool name")?;
        let size = doc.int(&["worker_pools", &name, "size"]);
        let size = ctx.ranged(&format!("{key}.size"), size, 10, 1, 1024)?;
        let queue = doc
            .str(&["worker_pools", &name, "queue"])
            .unwrap_or_else(|| name.clone());
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
        retention,
        regions: Vec::new(),
        source,
    })
}

fn build_routing(doc: &Doc<'_>, ctx: &Ctx) -> Result<RoutingConfig, ConfigError> {
    let d = RoutingConfig::default();
    let int = |key: &str| doc.int(&["routing", key]);
    let ms = |key: &str, default: u64| {
        ctx.ranged::<u64>(
            &format!("routing.{key}"),
            int(key),
            default as i64,
            1,
            MAX_MS,
        )
    };
    Ok(RoutingConfig {
        max_replica_lag_ms: ms("max_replica_lag_ms", d.max_replica_lag_ms)?,
        token_wait_ms: ms("token_wait_ms", d.token_wait_ms)?,
        cache_entries: ctx.ranged(
            "routing.cache_entries",
            int("cache_entries"),
            d.cache_entries as i64,
            0,
            100_000_000,
        )?,
        cache_max_bytes: ctx.ranged(
            "routing.cache_max_bytes",
            int("cache_max_bytes"),
            d.cache_max_bytes as i64,
            0,
            1 << 40,
        )?,
        cache_running_ttl_ms: ms("cache_running_ttl_ms", d.cache_running_ttl_ms)?,
        forward_timeout_ms: ms("forward_timeout_ms", d.forward_timeout_ms)?,
    })
}

fn build_api(
    doc: &Doc<'_>,
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<ApiConfig, ConfigError> {
    let text = |key: &str| doc.str(&["api", key]);
    let listen = match text("listen") {
        None => ApiConfig::default().listen,
        Some(s) => s.trim().parse::<SocketAddr>().map_err(|_| {
            ctx.invalid(
                "api.listen",
                format!("must be an address like 127.0.0.1:4000 (got {s:?})"),
            )
        })?,
    };
    let public_url = match text("public_url") {
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
                if text("tls_cert").is_some() {
                    "https"
                } else {
                    "http"
                }
            )
        }
    };
    // Whether these files can be read is checked at the edge (files.rs), after parsing.
    let file = |key: &str| ctx.path(&format!("api.{key}"), text(key));
    let tls_cert = file("tls_cert")?;
    let tls_key = file("tls_key")?;
    let client_ca = file("client_ca")?;
    let peer_ca = file("peer_ca")?;
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
    let d = ApiConfig::default();
    let int = |key: &str| doc.int(&["api", key]);
    let max_connections = ctx.ranged(
        "api.max_connections",
        int("max_connections"),
        d.max_connections as i64,
        1,
        1_000_000,
    )?;
    let header_read_timeout_ms = ctx.ranged(
        "api.header_read_timeout_ms",
        int("header_read_timeout_ms"),
        d.header_read_timeout_ms as i64,
        1,
        600_000,
    )?;
    let idle_timeout_ms = ctx.ranged(
        "api.idle_timeout_ms",
        int("idle_timeout_ms"),
        d.idle_timeout_ms as i64,
        1,
        3_600_000,
    )?;
    let anonymous_concurrency = ctx.ranged(
        "api.anonymous_concurrency",
        int("anonymous_concurrency"),
        d.anonymous_concurrency as i64,
        1,
        100_000,
    )?;
    Ok(ApiConfig {
        listen,
        public_url,
        tls_cert,
        tls_key,
        client_ca,
        peer_ca,
        max_connections,
        header_read_timeout_ms,
        idle_timeout_ms,
        anonymous_concurrency,
    })
}

fn build_database(doc: &Doc<'_>, ctx: &Ctx) -> Result<DatabaseConfig, ConfigError> {
    let url = doc
        .str(&["database", "url"])
        .ok_or_else(|| ctx.missing("database.url"))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let msg = format!(
            "must start with postgres:// or postgresql:// (got {:?})",
            redact_url(&url)
        );
        return Err(ctx.invalid("database.url", msg));
    }
    let max = doc.int(&["database", "max_connections"]);
    let max_connections = ctx.ranged("database.max_connections", max, 16, 1, 1000)?;
    Ok(DatabaseConfig {
        url,
        max_connections,
    })
}

fn build_executor(doc: &Doc<'_>, ctx: &Ctx) -> Result<ExecutorConfig, ConfigError> {
    let d = ExecutorConfig::default();
    // Defaults are small constants, so the i64 conversions below cannot fail.
    let int = |key: &str| doc.int(&["executor", key]);
    let ms = |key: &str, default: u64| {
        ctx.ranged::<u64>(
            &format!("executor.{key}"),
            int(key),
            default as i64,
            1,
            MAX_MS,
        )
    };
    let e = ExecutorConfig {
        heartbeat_interval_ms: ms("heartbeat_interval_ms", d.heartbeat_interval_ms)?,
        poll_interval_ms: ms("poll_interval_ms", d.poll_interval_ms)?,
        visibility_margin_ms: ms("visibility_margin_ms", d.visibility_margin_ms)?,
        lease_ms: ms("lease_ms", d.lease_ms)?,
        shutdown_grace_ms: ms("shutdown_grace_ms", d.shutdown_grace_ms)?,
        claim_batch: ctx.ranged(
            "executor.claim_batch",
            int("claim_batch"),
            d.claim_batch as i64,
            1,
            1000,
        )?,
        prefetch_min: ctx.ranged(
            "executor.prefetch_min",
            int("prefetch_min"),
            d.prefetch_min as i64,
            0,
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

fn build_limits(doc: &Doc<'_>, ctx: &Ctx) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let int = |key: &str| doc.int(&["limits", key]);
    let positive = |key: &str, default: usize| {
        ctx.ranged::<usize>(
            &format!("limits.{key}"),
            int(key),
            default as i64,
            1,
            i64::MAX,
        )
    };
    Ok(LimitsConfig {
        max_body_bytes: positive("max_body_bytes", d.max_body_bytes)?,
        max_steps: positive("max_steps", d.max_steps)?,
        max_id_len: positive("max_id_len", d.max_id_len)?,
        max_goal_len: positive("max_goal_len", d.max_goal_len)?,
        max_json_depth: positive("max_json_depth", d.max_json_depth)?,
        request_timeout_ms: ctx.ranged(
            "limits.request_timeout_ms",
            int("request_timeout_ms"),
            d.request_timeout_ms as i64,
            1,
            MAX_MS,
        )?,
        max_concurrent_requests: positive("max_concurrent_requests", d.max_concurrent_requests)?,
        per_token_rate_per_s: ctx.ranged(
            "limits.per_token_rate_per_s",
            int("per_token_rate_per_s"),
            d.per_token_rate_per_s as i64,
            1,
            1_000_000,
        )?,
        max_output_bytes: positive("max_output_bytes", d.max_output_bytes)?,
        max_queues: ctx.ranged(
            "limits.max_queues",
            int("max_queues"),
            d.max_queues as i64,
            1,
            i32::MAX as i64,
        )?,
        max_batch: ctx.ranged(
            "limits.max_batch",
            int("max_batch"),
            d.max_batch as i64,
            1,
            100_000,
        )?,
        max_batch_body_bytes: positive("max_batch_body_bytes", d.max_batch_body_bytes)?,
        allow_unadvertised_handlers: doc
            .bool(&["limits", "allow_unadvertised_handlers"])
            .unwrap_or(d.allow_unadvertised_handlers),
        max_map_items: ctx.ranged(
            "limits.max_map_items",
            int("max_map_items"),
            d.max_map_items as i64,
            1,
            1_000_000,
        )?,
    })
}

fn build_handlers(doc: &Doc<'_>, ctx: &Ctx) -> Result<HandlersConfig, ConfigError> {
    let check = |key: &str| {
        let list = doc.list(&["handlers", key]).unwrap_or_default();
        match list.iter().position(|s| s.trim().is_empty()) {
            Some(i) => Err(ctx.invalid(&format!("handlers.{key}[{i}]"), "must not be empty")),
            None => Ok(list),
        }
    };
    let mut http = BTreeMap::new();
    for name in doc.names(&["handlers", "http"]).unwrap_or_default() {
        let key = format!("handlers.http.{name}");
        ctx.name(&key, &name, "handler name")?;
        let url = doc
            .str(&["handlers", "http", &name, "url"])
            .ok_or_else(|| ctx.invalid(&format!("{key}.url"), "is required"))?;
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(ctx.invalid(
                    &format!("{key}.url"),
                    format!("must be an http:// or https:// URL (got `{url}`)"),
                ))
            }
        }
        let timeout = doc.int(&["handlers", "http", &name, "timeout_ms"]);
        let timeout_ms =
            ctx.ranged(&format!("{key}.timeout_ms"), timeout, 30_000, 1, 86_400_000)?;
        let secret = doc.str(&["handlers", "http", &name, "secret"]);
        if secret.as_deref().is_some_and(|s| s.is_empty()) {
            return Err(ctx.invalid(&format!("{key}.secret"), "must not be empty"));
        }
        http.insert(
            name,
            HttpHandlerConfig {
                url,
                timeout_ms,
                secret,
            },
        );
    }
    let mut command = BTreeMap::new();
    for name in doc.names(&["handlers", "command"]).unwrap_or_default() {
        let key = format!("handlers.command.{name}");
        ctx.name(&key, &name, "handler name")?;
        let program = doc
            .str(&["handlers", "command", &name, "program"])
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| ctx.invalid(&format!("{key}.program"), "is required"))?;
        let args = doc
            .list(&["handlers", "command", &name, "args"])
            .unwrap_or_default();
        let timeout = doc.int(&["handlers", "command", &name, "timeout_ms"]);
        let timeout_ms =
            ctx.ranged(&format!("{key}.timeout_ms"), timeout, 60_000, 1, 86_400_000)?;
        let mut env = Vec::new();
        for (i, kv) in doc
            .list(&["handlers", "command", &name, "env"])
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(ctx.invalid(
                        &format!("{key}.env[{i}]"),
                        format!("must be KEY=VALUE (got `{kv}`)"),
                    ))
                }
            }
        }
        command.insert(
            name,
            CommandHandlerConfig {
                program,
                args,
                timeout_ms,
                env,
            },
        );
    }
    Ok(HandlersConfig {
        shell_allow: check("shell_allow")?,
        http_allow: check("http_allow")?,
        http,
        command,
    })
}

fn build_drills(doc: &Doc<'_>, ctx: &Ctx) -> Result<DrillHooks, ConfigError> {
    let mut drills = DrillHooks::default();
    for (key, slot) in [
        ("fence_command", &mut drills.fence_command),
        ("promote_command", &mut drills.promote_command),
        ("kill_command", &mut drills.kill_command),
        ("rejoin_command", &mut drills.rejoin_command),
    ] {
        if let Some(cmd) = doc.str(&["drills", key]) {
            if cmd.trim().is_empty() {
                return Err(ctx.invalid(&format!("drills.{key}"), "must not be empty"));
            }
            *slot = Some(cmd);
        }
    }
    drills.manager = match doc.str(&["drills", "manager"]).as_deref() {
        None | Some("sql") => DrillManager::Sql,
        Some("patroni") => DrillManager::Patroni,
        Some(other) => {
            return Err(ctx.invalid(
                "drills.manager",
                format!("must be \"patroni\" or \"sql\" (got {other:?})"),
            ))
        }
    };
    for region in doc.names(&["drills", "patroni"]).unwrap_or_default() {
        let key = format!("drills.patroni.{region}");
        ctx.name(&key, &region, "region")?;
        let url = doc
            .str(&["drills", "patroni", &region, "url"])
            .ok_or_else(|| ctx.missing(&format!("{key}.url")))?;
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(ctx.invalid(
                    &format!("{key}.url"),
                    format!(
                        "must be an http:// or https:// URL of Patroni's REST API (got {:?})",
                        redact_url(&url)
                    ),
                ))
            }
        }
        let member = doc
            .str(&["drills", "patroni", &region, "member"])
            .unwrap_or_else(|| region.clone());
        if member.trim().is_empty() {
            return Err(ctx.invalid(&format!("{key}.member"), "must not be empty"));
        }
        drills.patroni.insert(region, PatroniMember { url, member });
    }
    match drills.manager {
        DrillManager::Patroni => {
            if drills.patroni.is_empty() {
                return Err(ctx.invalid(
                    "drills.manager",
                    "\"patroni\" needs each region's Patroni REST API: [drills.patroni.<region>] url = \"http://...:8008\"",
                ));
            }
            for (key, set) in [
                ("fence_command", drills.fence_command.is_some()),
                ("promote_command", drills.promote_command.is_some()),
            ] {
                if set {
                    return Err(ctx.invalid(
                        &format!("drills.{key}"),
                        "cannot be combined with drills.manager = \"patroni\": Patroni promotes, and the drill fences with SQL",
                    ));
                }
            }
        }
        DrillManager::Sql => {
            if !drills.patroni.is_empty() {
                return Err(ctx.invalid(
                    "drills.patroni",
                    "is used only with drills.manager = \"patroni\" (set it, or remove [drills.patroni])",
                ));
            }
        }
    }
    Ok(drills)
}
